using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>The node's entry to the DLM: opens lockspaces and inspects them.</summary>
public interface ILockManager
{
    /// <summary>This node's stable id.</summary>
    string NodeId { get; }

    /// <summary>
    /// Joins <paramref name="name"/> (creating it with <paramref name="lvbLength"/> bytes of LVB, 0 for
    /// the default 64) and opens a new session in it. Every lock taken through the returned lockspace
    /// belongs to that session; disposing it releases them.
    /// </summary>
    /// <exception cref="ArgumentException">The name or LVB length is not acceptable, or the lockspace has another LVB length.</exception>
    Task<ILockspace> OpenLockspaceAsync(string name, int lvbLength = 0, CancellationToken cancellationToken = default);

    /// <summary>Every lockspace in the cluster, with its slots.</summary>
    Task<IReadOnlyList<LockspaceInfo>> ListLockspacesAsync(CancellationToken cancellationToken = default);

    /// <summary>The <c>dlm_tool lockdebug</c> view of a lockspace, gathered from every node that masters some of its resources.</summary>
    Task<LockspaceDump> DumpLockspaceAsync(string lockspace, CancellationToken cancellationToken = default);
}

/// <summary>What <see cref="ILockManager.DumpLockspaceAsync"/> found.</summary>
/// <param name="Resources">Resources with at least one lock, by entity id.</param>
/// <param name="MissingNodes">Members that did not answer in time (their resources are missing).</param>
public sealed record LockspaceDump(IReadOnlyList<LockResourceDump> Resources, IReadOnlyList<string> MissingNodes);

/// <summary>
/// One session in a lockspace: takes locks on its resources.
/// <code>
/// await using var space = await locks.OpenLockspaceAsync("demo");
/// await using (var counter = await space.LockAsync("counter", LockMode.EX, LockFlags.ValBlk))
/// {
///     var value = BinaryPrimitives.ReadInt64LittleEndian(counter.Lvb.Span) + 1;
///     var lvb = new byte[8];
///     BinaryPrimitives.WriteInt64LittleEndian(lvb, value);
///     await counter.UnlockAsync(LockFlags.ValBlk, lvb);   // the next EX/VALBLK holder reads it
/// }
///
/// // Hold a shared lock until someone needs it: the bast says which mode is blocked.
/// var shared = await space.LockAsync("meta", LockMode.PR, bast: blocked => invalidate.Set());
/// </code>
/// </summary>
public interface ILockspace : IAsyncDisposable
{
    string Name { get; }

    /// <summary>This node's slot in the lockspace, 1..N, the same after a restart.</summary>
    int Slot { get; }

    /// <summary>LVB length in bytes.</summary>
    int LvbLength { get; }

    /// <summary>The session id that owns this lockspace handle's locks.</summary>
    Guid Session { get; }

    /// <summary>
    /// The recovery callbacks (fs/dlm's recover_prep, recover_slot, recover_done) and self-fencing, in
    /// the order they happen, on a thread-pool thread; a handler must not block.
    /// <code>
    /// space.Recovery += e =>
    /// {
    ///     if (e.Stage == RecoveryStage.Slot) { foreach (var slot in e.Slots) bitmaps.Recover(slot); }
    ///     if (e.Stage == RecoveryStage.Done) log.Info($"recovered slots {string.Join(",", e.Slots)} in generation {e.Generation}");
    /// };
    /// </code>
    /// </summary>
    event Action<LockspaceRecoveryEvent>? Recovery;

    /// <summary>
    /// Requests a new lock and waits until it is granted.
    /// </summary>
    /// <param name="resource">Resource name, 1..64 UTF-8 bytes.</param>
    /// <param name="mode">Requested mode.</param>
    /// <param name="flags">NOQUEUE, VALBLK, EXPEDITE, NOQUEUEBAST, ALTPR, ALTCW, PERSISTENT, ORPHAN.</param>
    /// <param name="lvb">Initial contents of the handle's LVB buffer (replaced by the resource's LVB on a VALBLK grant).</param>
    /// <param name="timeout">How long the request may wait in the queue before it fails with <see cref="LockStatus.TimedOut"/>.</param>
    /// <param name="bast">Blocking AST: called on a thread-pool thread with the mode another request waits for; must not block.</param>
    /// <param name="cancellationToken">Cancels the request while it waits (CANCEL).</param>
    /// <returns>The granted lock; dispose it to unlock.</returns>
    /// <exception cref="LockRequestException">The request was not granted (would block, timed out, cancelled, invalid, …).</exception>
    Task<ILockHandle> LockAsync(string resource, LockMode mode, LockFlags flags = LockFlags.None, ReadOnlyMemory<byte>? lvb = null, TimeSpan? timeout = null, Action<LockMode>? bast = null, CancellationToken cancellationToken = default);
}

/// <summary>A granted lock. Not thread-safe: one operation at a time.</summary>
public interface ILockHandle : IAsyncDisposable
{
    string Resource { get; }

    long LockId { get; }

    /// <summary>The granted mode (after a DEMOTED or ALTMODE grant, not necessarily the one asked for).</summary>
    LockMode Mode { get; }

    /// <summary>The LVB as last returned by a VALBLK grant, or set by the caller for the next VALBLK write.</summary>
    ReadOnlyMemory<byte> Lvb { get; set; }

    /// <summary>Flags of the last completion: VALNOTVALID, DEMOTED, ALTMODE.</summary>
    LockResultFlags Flags { get; }

    /// <summary>The LVB is not valid: a PW/EX holder vanished or invalidated it and nobody wrote it since.</summary>
    bool ValueNotValid { get; }

    /// <summary>The last conversion was granted only after CONVDEADLK demoted the lock to NL.</summary>
    bool Demoted { get; }

    /// <summary>Cancelled when the lock is no longer held: unlocked, or lost (its session or node was purged).</summary>
    CancellationToken LostToken { get; }

    /// <summary>
    /// Converts the lock and waits for the grant. A down-conversion from PW/EX with VALBLK writes
    /// <paramref name="lvb"/> (or <see cref="Lvb"/>); an up-conversion with VALBLK reads the LVB.
    /// </summary>
    /// <exception cref="LockRequestException">Not granted; the lock keeps its previous (or, with CONVDEADLK, demoted) mode.</exception>
    Task ConvertAsync(LockMode mode, LockFlags flags = LockFlags.None, ReadOnlyMemory<byte>? lvb = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Releases the lock; from PW/EX with VALBLK writes <paramref name="lvb"/> (or <see cref="Lvb"/>) to the resource.
    /// An unlock of a granted lock with nothing pending cannot be refused, so it completes as soon as it is sent
    /// (like fs/dlm's dlm_unlock): every later request or dump through this node reaches the resource after it,
    /// but a request from another node may still find the lock held for a moment (a NOQUEUE one gets WouldBlock).
    /// An unlock the resource may refuse (a request or conversion pending, flags an unlock does not take) waits
    /// for the resource's answer.
    /// </summary>
    Task UnlockAsync(LockFlags flags = LockFlags.None, ReadOnlyMemory<byte>? lvb = null);
}

/// <summary>A lock operation ended with something other than a grant.</summary>
public sealed class LockRequestException(string resource, LockOperation operation, LockStatus status)
    : Exception($"{operation} on '{resource}' failed: {status}")
{
    public string Resource { get; } = resource;

    public LockOperation Operation { get; } = operation;

    public LockStatus Status { get; } = status;
}
