using Akka.Actor;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>
/// A lock as its owner sees it. The lock client actor changes it when completions arrive; the
/// application reads it after awaiting an operation (the task completion orders the two).
/// </summary>
internal sealed class LockHandle : ILockHandle
{
    private readonly Lockspace _space;
    private readonly Action<LockMode>? _bast;
    private readonly CancellationTokenSource _lost = new();
    private readonly TaskCompletionSource<LockCompleted>?[] _pending = new TaskCompletionSource<LockCompleted>?[3];
    private volatile bool _released;
    private byte[] _lvb;

    public LockHandle(Lockspace space, string resource, string entityId, long lockId, byte[] lvb, Action<LockMode>? bast)
    {
        _space = space;
        Resource = resource;
        EntityId = entityId;
        LockId = lockId;
        _lvb = lvb;
        _bast = bast;
    }

    /// <summary>Which outstanding operation a reply belongs to.</summary>
    public enum Slot
    {
        Operation = 0,
        Unlock = 1,
        Cancel = 2,
    }

    public string Resource { get; }

    public string EntityId { get; }

    public long LockId { get; }

    public LockMode Mode { get; private set; }

    public long LvbSeq { get; private set; }

    public ReadOnlyMemory<byte> Lvb
    {
        get => _lvb;
        set
        {
            if (value.Length > _space.LvbLength)
            {
                throw new ArgumentException($"LVB is {value.Length} bytes; the lockspace allows {_space.LvbLength}.", nameof(value));
            }

            var copy = new byte[_space.LvbLength];
            value.Span.CopyTo(copy);
            _lvb = copy;
        }
    }

    public LockResultFlags Flags { get; private set; }

    public bool ValueNotValid => Flags.HasFlag(LockResultFlags.ValNotValid);

    public bool Demoted => Flags.HasFlag(LockResultFlags.Demoted);

    public CancellationToken LostToken => _lost.Token;

    public bool Released => _released;

    /// <summary>A grant has been received, so the resource holds this lock in <see cref="Mode"/> (recovery re-asserts it).</summary>
    public bool HasGrant { get; private set; }

    /// <summary>The request or conversion in flight, if any (recovery re-sends it if the resource was rebuilt).</summary>
    public ILockResourceCommand? PendingOperation { get; private set; }

    /// <summary>Owner recorded on the resource.</summary>
    public LockOwner Owner => _space.Owner;

    public int LvbLength => _space.LvbLength;

    /// <summary>The LVB copy this holder re-asserts after a recovery.</summary>
    internal byte[] LvbCopy => _lvb;

    /// <summary>
    /// The last granted request or conversion asked VALBLK, as the resource records it (fs/dlm's lkb_exflags): only such
    /// a lock's <see cref="LvbCopy"/> is a copy of the LVB, so only it counts when a resource is rebuilt.
    /// </summary>
    internal bool ValBlk { get; private set; }

    /// <summary>Self-fencing: the lock may no longer be acted on. It stays recorded at the resource until unlocked or purged.</summary>
    internal void Fence() => _lost.Cancel();

    /// <summary>Requested with PERSISTENT: survives the session as an orphan.</summary>
    public bool Persistent { get; init; }

    /// <summary>The session ended and left this lock to the resource as an orphan.</summary>
    internal void Abandon() => MarkReleased();

    public async Task ConvertAsync(LockMode mode, LockFlags flags = LockFlags.None, ReadOnlyMemory<byte>? lvb = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        if (lvb is { } value)
        {
            Lvb = value;
        }

        var done = await _space.Run(this, new ConvertLock(EntityId, LockId, mode, flags, WrittenLvb(flags), Milliseconds(timeout)), cancellationToken);
        if (done.Status != LockStatus.Granted)
        {
            throw new LockRequestException(Resource, LockOperation.Convert, done.Status);
        }
    }

    public async Task UnlockAsync(LockFlags flags = LockFlags.None, ReadOnlyMemory<byte>? lvb = null)
    {
        if (lvb is { } value)
        {
            Lvb = value;
        }

        var done = await _space.Run(this, new UnlockLock(EntityId, LockId, flags, WrittenLvb(flags)), CancellationToken.None);
        if (done.Status != LockStatus.Unlocked)
        {
            throw new LockRequestException(Resource, LockOperation.Unlock, done.Status);
        }

        _space.Forget(this);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_released)
        {
            // FORCEUNLOCK: also ends a conversion someone abandoned mid-way.
            await _space.Run(this, new UnlockLock(EntityId, LockId, LockFlags.ForceUnlock, null), CancellationToken.None);
        }

        _space.Forget(this);
    }

    /// <summary>The resource writes a caller's LVB only with VALBLK; without it the bytes need not travel.</summary>
    private byte[]? WrittenLvb(LockFlags flags) => flags.HasFlag(LockFlags.ValBlk) ? _lvb : null;

    internal static long Milliseconds(TimeSpan? timeout) => timeout is { } t ? Math.Max(1, (long)Math.Ceiling(t.TotalMilliseconds)) : 0;

    // ---- called on the lock client's thread ----

    /// <summary>
    /// Whether the resource can only answer <see cref="LockStatus.Unlocked"/> to an unlock with
    /// <paramref name="flags"/>: the lock is granted, nothing of it is pending (a pending request or
    /// conversion makes the unlock Busy, or with FORCEUNLOCK cancels it first, whose answer the caller
    /// must see), it is not released, and the flags are valid for an unlock. The resource checks the
    /// same (<see cref="LockResourceState.Unlock"/>); the LVB length is checked by <see cref="Lvb"/>.
    /// </summary>
    /// An unlock that writes (or invalidates) the LVB from PW/EX is never answered early: the LVB is the data
    /// the caller hands over, and if this node died between the early answer and the unlock leaving it, the
    /// caller would believe in a write that never happened (found by the SIGKILL counter torture: one
    /// completed increment missing). It waits for the resource, which has applied it when it answers.
    internal bool UnlocksWithoutAnswer(LockFlags flags) =>
        HasGrant && !_released && PendingOperation is null && _pending[(int)Slot.Operation] is null && _pending[(int)Slot.Unlock] is null
        && (flags & ~(LockFlags.ValBlk | LockFlags.IvValBlk | LockFlags.ForceUnlock)) == 0
        && !UnlockWritesLvb(Mode, flags);

    /// <summary>Whether an unlock of a lock held in <paramref name="held"/> with <paramref name="flags"/> writes or invalidates the LVB.</summary>
    internal static bool UnlockWritesLvb(LockMode held, LockFlags flags) =>
        held >= LockMode.PW && (flags & (LockFlags.ValBlk | LockFlags.IvValBlk)) != 0;

    internal bool TryArm(Slot slot, TaskCompletionSource<LockCompleted> reply, ILockResourceCommand command)
    {
        if (_pending[(int)slot] is not null)
        {
            return false;
        }

        _pending[(int)slot] = reply;
        if (slot == Slot.Operation)
        {
            PendingOperation = command;
        }

        return true;
    }

    internal void Complete(Slot slot, LockCompleted done)
    {
        var tcs = _pending[(int)slot];
        _pending[(int)slot] = null;
        if (slot == Slot.Operation)
        {
            PendingOperation = null;
        }

        tcs?.TrySetResult(done);
    }

    internal void Apply(LockCompleted done)
    {
        switch (done.Operation)
        {
            case LockOperation.Request or LockOperation.Convert:
                if (done.Status == LockStatus.Granted || done.Operation == LockOperation.Convert)
                {
                    HasGrant |= done.Status == LockStatus.Granted;
                    if (done.Status == LockStatus.Granted)
                    {
                        ValBlk = PendingOperation switch
                        {
                            LockRequest r => r.Flags.HasFlag(LockFlags.ValBlk),
                            ConvertLock c => c.Flags.HasFlag(LockFlags.ValBlk),
                            _ => ValBlk,
                        };
                    }

                    Mode = done.GrantedMode;
                    Flags = done.Flags;
                    if (done.Lvb is not null)
                    {
                        _lvb = done.Lvb;
                    }

                    if (done.Status == LockStatus.Granted)
                    {
                        // The resource's record of the copy this lock holds (fs/dlm's lkb_lvbseq, set, not maxed): after a
                        // rebuild from an older copy the sequence can go down, and a maximum would label a newer read with
                        // an older, higher number. Refusals carry other numbers (the client's own say 0) and change nothing.
                        LvbSeq = done.LvbSeq;
                    }
                }
                else
                {
                    MarkReleased();
                }

                Complete(Slot.Operation, done);
                if (done.Status == LockStatus.Cancelled)
                {
                    Complete(Slot.Cancel, done);
                }

                break;
            case LockOperation.Unlock:
                if (done.Status == LockStatus.Unlocked)
                {
                    MarkReleased();
                }

                Complete(Slot.Unlock, done);
                break;
            case LockOperation.Cancel:
                Complete(Slot.Cancel, done);
                break;
        }
    }

    internal void DeliverBast(LockMode blocked)
    {
        if (_bast is { } bast && !_released)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static state => state.Bast(state.Mode), (Bast: bast, Mode: blocked), preferLocal: false);
        }
    }

    private void MarkReleased()
    {
        _released = true;
        _lost.Cancel();
    }
}

/// <summary>One session in a lockspace.</summary>
internal sealed class Lockspace : ILockspace
{
    private readonly LockManager _manager;
    private readonly HashSet<LockHandle> _handles = [];
    private readonly object _gate = new();
    private Task _callbacks = Task.CompletedTask;

    public Lockspace(LockManager manager, string name, int slot, int lvbLength)
    {
        _manager = manager;
        Name = name;
        Slot = slot;
        LvbLength = lvbLength;
        Session = Guid.NewGuid();
        Owner = new LockOwner(manager.NodeId, slot, Session);
    }

    public string Name { get; }

    public int Slot { get; }

    public int LvbLength { get; }

    public Guid Session { get; }

    public LockOwner Owner { get; }

    public event Action<LockspaceRecoveryEvent>? Recovery;

    /// <summary>Runs the recovery handlers off the coordinator's thread, one event after the other.</summary>
    internal void Raise(LockspaceRecoveryEvent e)
    {
        lock (_gate)
        {
            _callbacks = _callbacks.ContinueWith(
                _ =>
                {
                    try
                    {
                        Recovery?.Invoke(e);
                    }
                    catch (Exception)
                    {
                        // An application's handler failing must not stop the callbacks of later steps.
                    }
                },
                CancellationToken.None,
                TaskContinuationOptions.None,
                TaskScheduler.Default);
        }
    }

    public async Task<ILockHandle> LockAsync(string resource, LockMode mode, LockFlags flags = LockFlags.None, ReadOnlyMemory<byte>? lvb = null, TimeSpan? timeout = null, Action<LockMode>? bast = null, CancellationToken cancellationToken = default)
    {
        var entityId = LockNames.EntityId(Name, resource);
        var initial = new byte[LvbLength];
        if (lvb is { } value)
        {
            if (value.Length > LvbLength)
            {
                throw new ArgumentException($"LVB is {value.Length} bytes; the lockspace allows {LvbLength}.", nameof(lvb));
            }

            value.Span.CopyTo(initial);
        }

        var handle = new LockHandle(this, resource, entityId, _manager.NextLockId(), initial, bast) { Persistent = flags.HasFlag(LockFlags.Persistent) };
        lock (_gate)
        {
            _handles.Add(handle);
        }

        var done = await Run(handle, new LockRequest(entityId, handle.LockId, Owner, mode, flags, LvbLength, LockHandle.Milliseconds(timeout)), cancellationToken);
        if (done.Status != LockStatus.Granted)
        {
            Forget(handle);
            throw new LockRequestException(resource, LockOperation.Request, done.Status);
        }

        return handle;
    }

    /// <summary>Sends one command and waits for its completion; cancellation sends CANCEL (the completion still decides).</summary>
    internal async Task<LockCompleted> Run(LockHandle handle, ILockResourceCommand command, CancellationToken cancellationToken)
    {
        var reply = new TaskCompletionSource<LockCompleted>(TaskCreationOptions.RunContinuationsAsynchronously);
        _manager.Client.Tell(new ClientSend(handle, command, reply));
        if (!cancellationToken.CanBeCanceled)
        {
            return await reply.Task.ConfigureAwait(false);
        }

        await using (cancellationToken.Register(() =>
        {
            var cancelled = new TaskCompletionSource<LockCompleted>(TaskCreationOptions.RunContinuationsAsynchronously);
            _manager.Client.Tell(new ClientSend(handle, new CancelLock(handle.EntityId, handle.LockId), cancelled));
        }))
        {
            return await reply.Task.ConfigureAwait(false);
        }
    }

    internal void Forget(LockHandle handle)
    {
        lock (_gate)
        {
            _handles.Remove(handle);
        }
    }

    /// <summary>Ends the session: every lock it still holds or waits for is force-unlocked.</summary>
    public async ValueTask DisposeAsync()
    {
        _manager.Closed(this);
        LockHandle[] handles;
        lock (_gate)
        {
            handles = [.. _handles];
            _handles.Clear();
        }

        // PERSISTENT locks outlive the session as orphans (the resource keeps them granted); the rest are
        // released. The lock client orphans them, and keeps them to re-assert if their resource's node dies.
        var orphaned = handles.Where(h => h.Persistent && !h.Released).ToList();
        foreach (var handle in orphaned)
        {
            // The session no longer holds it: its LostToken fires before DisposeAsync returns.
            handle.Abandon();
        }

        if (orphaned.Count > 0)
        {
            _manager.Client.Tell(new OrphanHandles(Owner, orphaned));
        }

        await Task.WhenAll(handles.Where(h => !h.Persistent && !h.Released).Select(h => h.DisposeAsync().AsTask()));
    }
}
