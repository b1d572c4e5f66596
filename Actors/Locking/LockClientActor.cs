using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>A handle's command on its way to the resource; local only.</summary>
internal sealed record ClientSend(LockHandle Handle, ILockResourceCommand Command, TaskCompletionSource<LockCompleted> Reply) : INoSerializationVerificationNeeded;

/// <summary>Recovery: re-assert every lock this node holds, then answer <see cref="HeldLocksReasserted"/>; local only.</summary>
internal sealed record ReassertHeldLocks(long Generation) : INoSerializationVerificationNeeded;

/// <summary>Every held lock was confirmed by its resource (or the retries ran out).</summary>
internal sealed record HeldLocksReasserted(long Generation, int Locks, int Failed) : INoSerializationVerificationNeeded;

/// <summary>A session ended: its PERSISTENT locks become orphans on their resources; local only.</summary>
internal sealed record OrphanHandles(LockOwner Session, IReadOnlyList<LockHandle> Handles) : INoSerializationVerificationNeeded;

/// <summary>Self-fencing: cancel every handle's LostToken; local only.</summary>
internal sealed class FenceHandles : INoSerializationVerificationNeeded
{
    public static readonly FenceHandles Instance = new();
}

/// <summary>
/// The node's lock client (fs/dlm's per-node lock table): it owns the node's lock handles, sends
/// their commands to the resource entities, and turns completion and blocking ASTs into completed
/// tasks and bast callbacks. All handle state changes happen here, on the actor's thread.
/// </summary>
internal sealed class LockClientActor : ReceiveActor, IWithTimers
{
    private const string ReassertTimer = "reassert";

    private readonly IActorRef _region;
    private readonly ILockCommandPath _commands;
    private readonly LockingOptions _options;
    private readonly RecoveryGate _gate;
    private readonly Dictionary<long, LockHandle> _handles = [];

    // Orphans our sessions left (granted PERSISTENT locks of ended sessions), kept until their resource
    // says one was adopted (OrphanGone) or no longer has it: recovery re-asserts them as orphans, so a
    // resource rebuilt after its node died gets them back.
    private readonly Dictionary<long, LockHandle> _orphans = [];
    private readonly ILoggingAdapter _log = Context.GetLogger();

    // The re-assertion round in progress: locks whose resource has not confirmed yet.
    private readonly Dictionary<long, ReassertLock> _reasserting = [];

    // Requests still waiting for a first grant, sent again: each with a dump of its resource behind
    // it, whose answer proves (same sender, same path, same order) that the request arrived.
    private readonly Dictionary<long, LockRequest> _resending = [];

    /// <summary>Locks whose request or conversion was in flight when a recovery began: it may reach the resource twice.</summary>
    private readonly HashSet<long> _repeated = [];
    private IActorRef _reassertReplyTo = ActorRefs.Nobody;
    private long _reassertGeneration;
    private DateTime _reassertDeadline;
    private int _reassertCount;
    private int _reassertFailed;

    public LockClientActor(IActorRef region, LockingOptions options, RecoveryGate gate, ILockCommandPath commands)
    {
        _region = region;
        _commands = commands;
        _options = options;
        _gate = gate;

        Receive<ClientSend>(Send);
        Receive<LockCompleted>(Completed);
        Receive<LockCommandLost>(Lost);
        Receive<BlockingAst>(b =>
        {
            if (_handles.TryGetValue(b.LockId, out var handle))
            {
                handle.DeliverBast(b.BlockedMode);
            }
        });
        Receive<ListLocalLockResources>(m => ListLocal(m.Lockspace).PipeTo(Sender));
        Receive<ReassertHeldLocks>(StartReassert);
        Receive<LockReasserted>(Reasserted);
        Receive<LockResourceDump>(d =>
        {
            foreach (var id in _resending.Where(r => r.Value.EntityId == d.EntityId).Select(r => r.Key).ToList())
            {
                _resending.Remove(id);
            }

            if (_reasserting.Count == 0 && _resending.Count == 0)
            {
                FinishReassert();
            }
        });
        Receive<ReassertTick>(_ => ResendReasserts());
        Receive<OrphanHandles>(Orphan);
        Receive<OrphanGone>(m =>
        {
            _orphans.Remove(m.LockId);
            if (_reasserting.Remove(m.LockId) && _reasserting.Count == 0 && _resending.Count == 0)
            {
                FinishReassert();
            }
        });
        Receive<FenceHandles>(_ =>
        {
            foreach (var handle in _handles.Values)
            {
                handle.Fence();
            }
        });
    }

    public ITimerScheduler Timers { get; set; } = null!;

    public static Props Props(IActorRef region, LockingOptions options, RecoveryGate gate, ILockCommandPath commands) =>
        Akka.Actor.Props.Create(() => new LockClientActor(region, options, gate, commands));

    /// <summary>
    /// recover_slot on this node: every lock we hold is re-asserted (a resource that survived confirms
    /// it, one rebuilt after its node died takes it back with our LVB copy), and every request still
    /// waiting for its first grant is sent again (a surviving resource ignores the copy). A second
    /// round (another failure) replaces the first.
    /// </summary>
    private void StartReassert(ReassertHeldLocks m)
    {
        _reasserting.Clear();
        _resending.Clear();
        _reassertReplyTo = Sender;
        _reassertGeneration = m.Generation;
        _reassertDeadline = DateTime.UtcNow + _options.AskTimeout;
        _reassertFailed = 0;
        foreach (var handle in _handles.Values.Where(h => !h.Released))
        {
            if (handle.PendingOperation is not null)
            {
                _repeated.Add(handle.LockId);
            }

            if (handle.HasGrant)
            {
                var flags = handle.Persistent ? LockFlags.Persistent : LockFlags.None;
                _reasserting[handle.LockId] = Reassertion(handle, flags);
            }
            else if (handle.PendingOperation is LockRequest request)
            {
                _resending[handle.LockId] = request;
            }
        }

        foreach (var orphan in _orphans.Values)
        {
            _reasserting[orphan.LockId] = Reassertion(orphan, LockFlags.Persistent | LockFlags.Orphan);
        }

        _reassertCount = _reasserting.Count;
        ResendReasserts();
    }

    /// <summary>A held lock as it is re-asserted: with VALBLK when it holds a copy of the LVB, which a rebuilt resource may take back.</summary>
    private static ReassertLock Reassertion(LockHandle handle, LockFlags flags) =>
        new(handle.EntityId, handle.LockId, handle.Owner, handle.Mode, flags | (handle.ValBlk ? LockFlags.ValBlk : LockFlags.None),
            handle.LvbLength, handle.ValBlk ? handle.LvbCopy.ToArray() : null, handle.LvbSeq);

    /// <summary>
    /// A session ended with PERSISTENT locks: the resources turn them into orphans (one purge per resource
    /// and session, behind every earlier command of ours there). Granted ones are kept for re-assertion.
    /// </summary>
    private void Orphan(OrphanHandles m)
    {
        foreach (var entityId in m.Handles.Select(h => h.EntityId).Distinct())
        {
            _region.Tell(new PurgeLockOwner(entityId, m.Session.NodeId, m.Session.Session), Self);
        }

        foreach (var handle in m.Handles.Where(h => h.HasGrant))
        {
            _orphans[handle.LockId] = handle;
        }
    }

    private void ResendReasserts()
    {
        if (_reasserting.Count == 0 && _resending.Count == 0)
        {
            FinishReassert();
            return;
        }

        if (DateTime.UtcNow > _reassertDeadline)
        {
            _log.Warning("Recovery {0}: {1} re-asserted locks unconfirmed after {2}", _reassertGeneration, _reasserting.Count, _options.AskTimeout);
            _reassertFailed += _reasserting.Count + _resending.Count;
            _reasserting.Clear();
            _resending.Clear();
            FinishReassert();
            return;
        }

        // A re-assertion sent while the region still routes to the dead node is lost; sending it again is harmless.
        foreach (var reassert in _reasserting.Values)
        {
            _region.Tell(reassert, Self);
        }

        // The resource ignores a request it already has from the same owner.
        foreach (var request in _resending.Values)
        {
            _repeated.Add(request.LockId);
            _region.Tell(request, Self);
            _region.Tell(new DumpLockResource(request.EntityId), Self);
        }

        Timers.StartSingleTimer(ReassertTimer, ReassertTick.Instance, ReassertRetry);
    }

    // As often as the lock region asks the coordinator for a moved shard's new home (retry-interval).
    private static TimeSpan ReassertRetry => TimeSpan.FromMilliseconds(200);

    private void Reasserted(LockReasserted m)
    {
        if (!_reasserting.Remove(m.LockId))
        {
            return;
        }

        if (_orphans.ContainsKey(m.LockId))
        {
            if (m.Status != LockStatus.Granted)
            {
                // Adopted while we were not told, or a live lock took its place in the rebuild.
                _log.Info("Recovery {0}: orphan {1} on {2} is gone ({3})", _reassertGeneration, m.LockId, m.EntityId, m.Status);
                _orphans.Remove(m.LockId);
            }
        }
        else if (_handles.TryGetValue(m.LockId, out var handle))
        {
            if (m.Status != LockStatus.Granted)
            {
                // Someone else holds a conflicting lock on the rebuilt resource: ours is gone.
                _log.Error("Recovery {0}: re-asserting lock {1} on {2} failed with {3}", _reassertGeneration, m.LockId, m.EntityId, m.Status);
                _reassertFailed++;
                handle.Fence();
            }
            else if (m.Fresh && handle.PendingOperation is ConvertLock convert)
            {
                // The conversion waited on the dead node's copy of the resource.
                _repeated.Add(m.LockId);
                _region.Tell(convert, Self);
            }
        }

        if (_reasserting.Count == 0 && _resending.Count == 0)
        {
            FinishReassert();
        }
    }

    private void FinishReassert()
    {
        Timers.Cancel(ReassertTimer);
        if (!_reassertReplyTo.IsNobody())
        {
            _reassertReplyTo.Tell(new HeldLocksReasserted(_reassertGeneration, _reassertCount, _reassertFailed));
            _reassertReplyTo = ActorRefs.Nobody;
        }
    }

    private void Send(ClientSend send)
    {
        var handle = send.Handle;
        var slot = send.Command switch
        {
            LockRequest or ConvertLock => LockHandle.Slot.Operation,
            UnlockLock => LockHandle.Slot.Unlock,
            _ => LockHandle.Slot.Cancel,
        };
        if (_gate.IsFenced && send.Command is LockRequest or ConvertLock)
        {
            // Self-fenced: whatever we were granted now might be granted to another node soon.
            send.Reply.TrySetResult(Refusal(send.Command, handle, LockStatus.Fenced));
            return;
        }

        if (!_gate.IsGranting && send.Command is LockRequest { Flags: var f } && f.HasFlag(LockFlags.NoQueue))
        {
            send.Reply.TrySetResult(Refusal(send.Command, handle, LockStatus.Recovering));
            return;
        }

        // Decided before arming: an unlock the resource cannot refuse is answered here (see UnlocksWithoutAnswer).
        var answerHere = send.Command is UnlockLock unlock && handle.UnlocksWithoutAnswer(unlock.Flags);
        if (!handle.TryArm(slot, send.Reply, send.Command))
        {
            // One operation of a kind at a time; the resource would say Busy too.
            send.Reply.TrySetResult(Refusal(send.Command, handle, LockStatus.Busy));
            return;
        }

        if (handle.Released && send.Command is not LockRequest)
        {
            handle.Complete(slot, Refusal(send.Command, handle, LockStatus.Invalid));
            return;
        }

        if (answerHere)
        {
            // The unlock is on its way, behind every earlier command of this node to the resource, and
            // nothing the resource knows could refuse it: the caller need not wait a round trip (fs/dlm's
            // dlm_unlock returns before the unlock AST too). The resource answers only a refusal, which
            // Completed logs: the handle is released and forgotten here, so recovery does not re-assert it.
            _commands.Send(((UnlockLock)send.Command) with { AnsweredByClient = true }, Self);
            handle.Apply(new LockCompleted(handle.EntityId, handle.LockId, LockOperation.Unlock, LockStatus.Unlocked, LockMode.NL, null, handle.LvbSeq, LockResultFlags.None));
            _handles.Remove(handle.LockId);
            _repeated.Remove(handle.LockId);
            return;
        }

        _handles[handle.LockId] = handle;
        _commands.Send(send.Command, Self);
    }

    /// <summary>
    /// The reliable layer gave up on a command (this node was removed, the handler threw): it may or may not have run,
    /// and no answer will come, so its caller gets <see cref="LockStatus.Fenced"/> instead of waiting forever.
    /// </summary>
    private void Lost(LockCommandLost lost)
    {
        var lockId = lost.Command switch
        {
            LockRequest r => r.LockId,
            ConvertLock c => c.LockId,
            UnlockLock u => u.LockId,
            CancelLock c => c.LockId,
            _ => 0,
        };
        _log.Error("Lock command {0} of lock {1} on {2} was not delivered: {3}", lost.Command.GetType().Name, lockId, lost.Command.EntityId, lost.Reason);
        if (!_handles.TryGetValue(lockId, out var handle))
        {
            return;
        }

        var slot = lost.Command switch
        {
            LockRequest or ConvertLock => LockHandle.Slot.Operation,
            UnlockLock => LockHandle.Slot.Unlock,
            _ => LockHandle.Slot.Cancel,
        };
        handle.Complete(slot, Refusal(lost.Command, handle, LockStatus.Fenced));
    }

    private static LockCompleted Refusal(ILockResourceCommand command, LockHandle handle, LockStatus status)
    {
        var op = command switch
        {
            LockRequest => LockOperation.Request,
            ConvertLock => LockOperation.Convert,
            UnlockLock => LockOperation.Unlock,
            _ => LockOperation.Cancel,
        };
        return new LockCompleted(handle.EntityId, handle.LockId, op, status, handle.Mode, null, 0, LockResultFlags.None);
    }

    private void Completed(LockCompleted done)
    {
        // An answer straight from an entity of this node's region: that resource's shard lives here, and later commands
        // to it can skip the layer (ILockCommandPath.AnsweredInProcess).
        if (Sender.Path.Parent.Parent.Equals(_region.Path))
        {
            _commands.AnsweredInProcess(done.EntityId);
        }

        if (!_handles.TryGetValue(done.LockId, out var handle))
        {
            if (done.Operation == LockOperation.Unlock && done.Status != LockStatus.Unlocked)
            {
                // Only an unlock answered here at once (AnsweredByClient) gets a late answer for a forgotten lock.
                _log.Warning("Resource {0} refused unlock of lock {1}, already answered Unlocked: {2}", done.EntityId, done.LockId, done.Status);
                return;
            }

            _log.Debug("Completion for unknown lock {0} on {1}: {2} {3}", done.LockId, done.EntityId, done.Operation, done.Status);
            if (done.Status == LockStatus.Granted && done.Operation == LockOperation.Request)
            {
                // A request repeated after its holder's node crashed (RepeatedLockCommands) was granted again although
                // its handle had ended: release it, or it would block the resource for good.
                _log.Warning("Releasing lock {0} on {1}: granted again after its handle ended", done.LockId, done.EntityId);
                _commands.Send(new UnlockLock(done.EntityId, done.LockId, LockFlags.ForceUnlock, null, AnsweredByClient: true), Self);
            }

            return;
        }

        if (_repeated.Contains(done.LockId) && IsAnswerToACopy(done, handle))
        {
            // A request or conversion in flight across a remaster reaches the rebuilt resource twice: the client
            // re-sends it (ResendReasserts, Reasserted) and the reliable layer re-delivers the original. The second copy
            // is refused — Busy (a conversion is pending) or Invalid (the lock id exists) — and changes nothing; the
            // first copy's answer is the caller's. Taken as the caller's, it ended a live lock here while the resource
            // kept it granted, and nobody released it.
            _log.Debug("Ignoring {0} for a repeated {1} of lock {2} on {3}", done.Status, done.Operation, done.LockId, done.EntityId);
            return;
        }

        if (done.Operation is LockOperation.Request or LockOperation.Convert)
        {
            _repeated.Remove(done.LockId);
        }

        handle.Apply(done);
        if (handle.Released)
        {
            _handles.Remove(done.LockId);
            _repeated.Remove(done.LockId);
        }
    }

    /// <summary>A refusal that only a second copy of the operation in flight on <paramref name="handle"/> gets.</summary>
    private static bool IsAnswerToACopy(LockCompleted done, LockHandle handle) => done switch
    {
        { Status: LockStatus.Busy, Operation: LockOperation.Convert } => handle.PendingOperation is ConvertLock,
        { Status: LockStatus.Invalid, Operation: LockOperation.Request } => handle.PendingOperation is LockRequest,
        _ => false,
    };

    private sealed class ReassertTick : INoSerializationVerificationNeeded
    {
        public static readonly ReassertTick Instance = new();
    }

    private async Task<LocalLockResources> ListLocal(string lockspace)
    {
        var prefix = lockspace + "/";
        var state = await _region.Ask<CurrentShardRegionState>(GetShardRegionState.Instance, _options.AskTimeout);
        var ids = state.Shards.SelectMany(s => s.EntityIds).Where(id => id.StartsWith(prefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        var dumps = await Task.WhenAll(ids.Select(id => _region.Ask<LockResourceDump>(new DumpLockResource(id), _options.AskTimeout)));
        var withLocks = dumps.Where(d => d.Granted.Count + d.Converting.Count + d.Waiting.Count > 0).ToList();
        return new LocalLockResources(_options.NodeId, withLocks);
    }
}
