namespace Lockstep.Contracts.Locking;

/// <summary>Marker for every DLM message that may cross a node boundary.</summary>
public interface ILockProtocol : IProtocolMessage
{
}

/// <summary>A message to one lock resource entity, id <c>{lockspace}/{resource}</c>.</summary>
public interface ILockResourceCommand : ILockProtocol, IWithEntityId
{
}

/// <summary>A new lock on a resource; answered with <see cref="LockCompleted"/> (now or when granted).</summary>
/// <param name="EntityId"><c>{lockspace}/{resource}</c>.</param>
/// <param name="LockId">Chosen by the requesting lock client, unique on the resource.</param>
/// <param name="Owner">Node, slot and session that will hold it.</param>
/// <param name="Mode">Requested mode.</param>
/// <param name="Flags">Request flags.</param>
/// <param name="LvbLength">The lockspace's LVB length; the resource adopts it when it is created.</param>
/// <param name="TimeoutMs">How long the request may stay queued; 0 for no limit.</param>
public sealed record LockRequest(string EntityId, long LockId, LockOwner Owner, LockMode Mode, LockFlags Flags, int LvbLength, long TimeoutMs) : ILockResourceCommand;

/// <summary>
/// Converts a granted lock to another mode; answered with <see cref="LockCompleted"/>. <c>Lvb</c> is the
/// caller's LVB to write on a down-conversion from PW/EX with VALBLK, or null.
/// </summary>
public sealed record ConvertLock(string EntityId, long LockId, LockMode Mode, LockFlags Flags, byte[]? Lvb, long TimeoutMs) : ILockResourceCommand;

/// <summary>
/// Releases a lock; answered with <see cref="LockCompleted"/> (Unlocked, Busy or Invalid). <c>Lvb</c> is
/// the caller's LVB to write when releasing PW/EX with VALBLK, or null. <c>AnsweredByClient</c>: the lock
/// client already told its caller Unlocked (nothing the resource knows could refuse it), so the resource
/// answers only a refusal — one remote message less per cycle.
/// </summary>
public sealed record UnlockLock(string EntityId, long LockId, LockFlags Flags, byte[]? Lvb, bool AnsweredByClient = false) : ILockResourceCommand;

/// <summary>Cancels the pending request or conversion of a lock; the pending operation completes with Cancelled.</summary>
public sealed record CancelLock(string EntityId, long LockId) : ILockResourceCommand;

/// <summary>Removes every lock of a node, or of one of its sessions when <paramref name="Session"/> is not empty.</summary>
public sealed record PurgeLockOwner(string EntityId, string NodeId, Guid Session) : ILockResourceCommand;

/// <summary>Recovery: a holder re-asserts a granted lock (and its LVB copy) on a restarted resource.</summary>
public sealed record ReassertLock(string EntityId, long LockId, LockOwner Owner, LockMode Mode, LockFlags Flags, int LvbLength, byte[]? Lvb, long LvbSeq) : ILockResourceCommand;

/// <summary>
/// The answer to <see cref="ReassertLock"/>: <c>Granted</c> when the resource holds the lock now, with
/// <paramref name="Fresh"/> true when it did not know it before (the resource was rebuilt); <c>Invalid</c>
/// when the lock does not fit the locks already there; <c>NotFound</c> for an orphan (ORPHAN flag) that a
/// surviving resource no longer has (it was adopted).
/// </summary>
public sealed record LockReasserted(string EntityId, long LockId, LockStatus Status, bool Fresh) : ILockProtocol;

/// <summary>
/// From a resource to the lock client of the node whose session orphaned lock <paramref name="LockId"/>:
/// the orphan was adopted (or dropped in a rebuild), so that node stops re-asserting it after recoveries.
/// </summary>
public sealed record OrphanGone(string EntityId, long LockId) : ILockProtocol;

/// <summary>
/// Recovery: a node's coordinator tells another which node id its unique address belongs to, and where
/// its recovery stands (a joining node grants only once every member's status is settled and acknowledged).
/// A hello that is not a <paramref name="Reply"/> is answered with one.
/// </summary>
/// <param name="NodeId">The stable node id lock owners are recorded by.</param>
/// <param name="Member">The sender's unique address (address#uid).</param>
/// <param name="Reply">An answer to a hello (not answered again).</param>
/// <param name="Settled">The sender sees no member unreachable or leaving.</param>
/// <param name="Generation">The sender's recovery generation.</param>
/// <param name="Recovering">Unique addresses of removed members the sender is still recovering.</param>
/// <param name="Covered">Unique addresses of removed members whose recovery the sender finished.</param>
public sealed record RecoveryHello(string NodeId, string Member, bool Reply, bool Settled, long Generation, IReadOnlyList<string> Recovering, IReadOnlyList<string> Covered) : ILockProtocol;

/// <summary>
/// Recovery: the sender purged every removed member in <paramref name="Covered"/> (cumulative) from the
/// resources it hosts and re-asserted its own locks afterwards.
/// </summary>
/// <param name="From">The sender's unique address (address#uid).</param>
/// <param name="Generation">The sender's recovery generation; a receiver keeps only the newest.</param>
/// <param name="Covered">Unique addresses of the removed members the sender finished.</param>
public sealed record RecoveryAck(string From, long Generation, IReadOnlyList<string> Covered) : ILockProtocol;

/// <summary>Asks a resource for its <see cref="LockResourceDump"/>.</summary>
public sealed record DumpLockResource(string EntityId) : ILockResourceCommand;

/// <summary>The completion AST of one lock operation.</summary>
/// <param name="EntityId">The resource.</param>
/// <param name="LockId">The lock.</param>
/// <param name="Operation">What completed.</param>
/// <param name="Status">How it ended.</param>
/// <param name="GrantedMode">The mode the lock holds now (NL once it is gone).</param>
/// <param name="Lvb">The resource's LVB when the grant returned it (VALBLK), else null.</param>
/// <param name="LvbSeq">The LVB write sequence the lock last saw.</param>
/// <param name="Flags">VALNOTVALID, DEMOTED, ALTMODE.</param>
public sealed record LockCompleted(string EntityId, long LockId, LockOperation Operation, LockStatus Status, LockMode GrantedMode, byte[]? Lvb, long LvbSeq, LockResultFlags Flags) : ILockProtocol;

/// <summary>The blocking AST: this lock is in the way of a request for <paramref name="BlockedMode"/>.</summary>
public sealed record BlockingAst(string EntityId, long LockId, LockMode BlockedMode) : ILockProtocol;

/// <summary>One lock in a <see cref="LockResourceDump"/>; <c>GrantedMode</c> is meaningless when <c>HasGranted</c> is false (a waiting new request).</summary>
public sealed record LockDump(long LockId, string NodeId, int Slot, Guid Session, bool HasGranted, LockMode GrantedMode, LockMode RequestedMode, LockFlags Flags, bool Orphan);

/// <summary>A <c>dlm_tool lockdebug</c> view of one resource; <c>MasterNode</c> is the id of the node the entity runs on.</summary>
public sealed record LockResourceDump(
    string EntityId,
    string MasterNode,
    int LvbLength,
    byte[] Lvb,
    long LvbSeq,
    bool ValueNotValid,
    IReadOnlyList<LockDump> Granted,
    IReadOnlyList<LockDump> Converting,
    IReadOnlyList<LockDump> Waiting) : ILockProtocol;

/// <summary>
/// Joins a lockspace (created on first join); answered with <see cref="LockspaceJoined"/> or
/// <see cref="LockspaceRejected"/>. <c>LvbLength</c> 0 accepts the lockspace's (or the default for a new one).
/// </summary>
public sealed record JoinLockspace(string Lockspace, int LvbLength, string NodeId) : ILockProtocol;

/// <summary>The node's slot in the lockspace; the same node id always gets the same slot.</summary>
public sealed record LockspaceJoined(string Lockspace, int LvbLength, int Slot) : ILockProtocol;

/// <summary>A join that cannot be honoured (bad name, LVB length mismatch).</summary>
public sealed record LockspaceRejected(string Lockspace, string Reason) : ILockProtocol;

/// <summary>Asks the registry for every lockspace; answered with <see cref="LockspaceTable"/>.</summary>
public sealed record ListLockspaces : ILockProtocol
{
    public static readonly ListLockspaces Instance = new();
}

/// <summary>A node's slot in a lockspace.</summary>
public sealed record LockspaceSlot(string NodeId, int Slot);

/// <summary>One lockspace: its LVB length and the slots handed out so far.</summary>
public sealed record LockspaceInfo(string Name, int LvbLength, IReadOnlyList<LockspaceSlot> Slots);

/// <summary>Every lockspace the registry knows; also the value it replicates through DistributedData.</summary>
public sealed record LockspaceTable(IReadOnlyList<LockspaceInfo> Lockspaces) : ILockProtocol;

/// <summary>Asks a node's lock client for dumps of the resources of <paramref name="Lockspace"/> hosted on that node.</summary>
public sealed record ListLocalLockResources(string Lockspace) : ILockProtocol;

/// <summary>The resources of a lockspace that one node masters.</summary>
public sealed record LocalLockResources(string NodeId, IReadOnlyList<LockResourceDump> Resources) : ILockProtocol;

/// <summary>Asks a node's torture runner to run <paramref name="Clients"/> counter clients against one resource.</summary>
/// <param name="Lockspace">Lockspace of the counter.</param>
/// <param name="Resource">The counter resource; its LVB holds a little-endian 64-bit count.</param>
/// <param name="Clients">Concurrent clients on this node.</param>
/// <param name="Iterations">Increments per client.</param>
/// <param name="TimeoutMs">Bound on the whole run and on every lock request.</param>
public sealed record RunLockTorture(string Lockspace, string Resource, int Clients, int Iterations, long TimeoutMs) : ILockProtocol;

/// <summary>What one node's torture clients did.</summary>
/// <param name="NodeId">The node.</param>
/// <param name="Increments">Increments that completed (lock, read, write back, unlock).</param>
/// <param name="Error">The first failure, or empty.</param>
public sealed record LockTortureDone(string NodeId, long Increments, string Error) : ILockProtocol;

/// <summary>
/// The status of a DLM message carried by the reliable messaging layer (<c>Lockstep:Locking:Transport=reliable</c>):
/// the receiving node handed it to its local target (<paramref name="Applied"/>), or skipped a possibly repeated copy
/// that was already applied (see <c>RepeatedLockCommands</c>). The answer itself (completion, bast) travels separately.
/// </summary>
/// <param name="Applied">False only for a possibly repeated command that the receiver found already applied.</param>
public sealed record LockTrafficAccepted(bool Applied) : ILockProtocol
{
    /// <summary>Handed to the target.</summary>
    public static readonly LockTrafficAccepted Delivered = new(true);

    /// <summary>A repeat that was already applied: not handed on.</summary>
    public static readonly LockTrafficAccepted Skipped = new(false);
}
