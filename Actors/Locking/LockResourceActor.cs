using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>Sent by the shard to stop a resource entity (passivation or hand-off); local only.</summary>
internal sealed class StopLockResource : INoSerializationVerificationNeeded
{
    public static readonly StopLockResource Instance = new();
}

/// <summary>
/// One lock resource as a sharded entity. It owns a <see cref="LockResourceState"/>, remembers
/// which lock client to send each lock's ASTs to, runs timeout timers, and passivates after
/// <see cref="LockingOptions.PassivateAfter"/> without any lock.
/// </summary>
internal sealed class LockResourceActor : ReceiveActor, IWithTimers, IWithUnboundedStash
{
    private const string PassivateTimer = "passivate";

    private readonly string _entityId;
    private readonly string _nodeId;
    private readonly LockingOptions _options;
    private readonly RecoveryGate _gate;
    private readonly ILockReplyPath _replies;
    private readonly Dictionary<long, IActorRef> _clients = [];
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly List<(object Message, IActorRef Sender)> _heldDuringPassivation = [];
    private LockResourceState? _state;
    private int _held;

    // Started while the node recovers: this may be a resource whose node just died, rebuilt from
    // whatever reaches it first. Its old LVB is gone: only re-asserted copies may bring it back (BeginRebuild).
    private readonly bool _bornDuringRecovery;

    // Born during recovery and the gate has not opened since: re-assertions are still rebuilding it,
    // so an orphan it does not know is taken back; later (or on a resource that survived) such an
    // orphan was adopted in the meantime.
    private bool _rebuilding;

    public LockResourceActor(string entityId, string nodeId, LockingOptions options, RecoveryGate gate, ILockReplyPath replies)
    {
        _replies = replies;
        _entityId = entityId;
        _nodeId = nodeId;
        _options = options;
        _gate = gate;
        _bornDuringRecovery = !gate.IsGranting;
        _rebuilding = _bornDuringRecovery;
        Active();
    }

    public ITimerScheduler Timers { get; set; } = null!;

    public IStash Stash { get; set; } = null!;

    public static Props Props(string entityId, string nodeId, LockingOptions options, RecoveryGate gate, ILockReplyPath replies) =>
        Akka.Actor.Props.Create(() => new LockResourceActor(entityId, nodeId, options, gate, replies));

    protected override void PreStart() => Context.System.EventStream.Subscribe(Self, typeof(RecoveryGateOpened));

    protected override void PostStop() => Context.System.EventStream.Unsubscribe(Self);

    /// <summary>
    /// While the node recovers, new requests and conversions wait here (NOQUEUE ones fail with
    /// Recovering) and the state grants nothing; returns true when the message was dealt with so.
    /// </summary>
    private bool HeldForRecovery(long lockId, LockFlags flags, LockOperation op)
    {
        if (_state is not null)
        {
            _state.GrantsSuspended |= !_gate.IsGranting;
        }

        if (_gate.IsGranting)
        {
            return false;
        }

        if (flags.HasFlag(LockFlags.NoQueue))
        {
            var mode = _state?.Find(lockId)?.Granted ?? LockMode.NL;
            _replies.Send(Sender, new LockCompleted(_entityId, lockId, op, LockStatus.Recovering, mode, null, _state?.LvbSeq ?? 0, LockResultFlags.None), Self);
            AfterCommand();
            return true;
        }

        Stash.Stash();
        _held++;
        return true;
    }

    private void GateOpened()
    {
        if (!_gate.IsGranting)
        {
            // Closed again by a second failure before we got here.
            return;
        }

        _rebuilding = false;
        if (_state is { GrantsSuspended: true } state)
        {
            Run(state.ResumeGrants());
        }

        _held = 0;
        Stash.UnstashAll();
    }

    private static long Now => DateTime.UtcNow.Ticks;

    private void Active()
    {
        Receive<LockRequest>(m =>
        {
            if (HeldForRecovery(m.LockId, m.Flags, LockOperation.Request))
            {
                return;
            }

            var state = State(m.LvbLength);
            if (state is null || m.LvbLength != state.LvbLength)
            {
                _replies.Send(Sender, new LockCompleted(_entityId, m.LockId, LockOperation.Request, LockStatus.Invalid, LockMode.NL, null, 0, LockResultFlags.None), Self);
                AfterCommand();
                return;
            }

            // A lock client re-sends a pending request after a recovery (its first copy may have died
            // with the resource's old node); the copy that is still queued here answers it.
            var known = state.Find(m.LockId);
            if (known is not null && known.Owner == m.Owner)
            {
                AfterCommand();
                return;
            }

            // Register the reply target first: a grant is among the effects of this very command.
            if (known is null)
            {
                _clients[m.LockId] = Sender;
            }

            Run(state.Request(m.LockId, m.Owner, m.Mode, m.Flags, Timeout(m.TimeoutMs), Now));
        });
        Receive<ConvertLock>(m =>
        {
            if (!HeldForRecovery(m.LockId, m.Flags, LockOperation.Convert))
            {
                Run(_state?.Convert(m.LockId, m.Mode, m.Flags, m.Lvb, Timeout(m.TimeoutMs), Now), m.LockId, LockOperation.Convert);
            }
        });
        Receive<UnlockLock>(m =>
        {
            var effects = Suspended(_state)?.Unlock(m.LockId, m.Flags, m.Lvb);
            if (m.AnsweredByClient && effects is not null)
            {
                // The caller already has its Unlocked; only a refusal (or other locks' grants) goes out.
                effects = effects.Where(e => e is not CompleteEffect { Operation: LockOperation.Unlock, Status: LockStatus.Unlocked } c || c.LockId != m.LockId).ToList();
            }

            Run(effects, m.LockId, LockOperation.Unlock);
        });
        // Only a request or a re-assertion creates the resource, with the LVB length they carry. A conversion, unlock or
        // cancel reaching a resource that has no state names a lock it cannot have (a late copy after a passivation or a
        // remaster): answered Invalid. Creating the state here gave it the default LVB length, and every later request
        // with the lockspace's own length was refused Invalid until the resource passivated.
        Receive<CancelLock>(m => Run(Suspended(_state)?.Cancel(m.LockId), m.LockId, LockOperation.Cancel));
        Receive<PurgeLockOwner>(m =>
        {
            if (_state is null)
            {
                // Nothing recorded here yet (e.g. only requests held back by recovery): nothing to purge.
                AfterCommand();
                return;
            }

            Run(Suspended(_state).PurgeOwner(m.NodeId, m.Session == Guid.Empty ? null : m.Session), 0, LockOperation.Unlock);
        });
        Receive<ReassertLock>(Reassert);
        Receive<ExpireLock>(m => Run(Suspended(_state)?.Expire(m.LockId, Now), m.LockId, LockOperation.Request));
        Receive<RecoveryGateOpened>(_ => GateOpened());
        Receive<DumpLockResource>(_ =>
        {
            Sender.Tell(Dump());
            AfterCommand();
        });
        Receive<PassivateTick>(_ =>
        {
            if ((_state is null || _state.IsEmpty) && _held == 0)
            {
                Context.Parent.Tell(new Passivate(StopLockResource.Instance));
                Become(Passivating);
            }
        });
        Receive<StopLockResource>(_ => Context.Stop(Self));
    }

    /// <summary>
    /// Between asking the shard to passivate us and its stop message, commands may still reach our
    /// mailbox. They are sent back through the region after we stop, so the shard delivers them to
    /// the next incarnation instead of letting them change a state that is about to vanish.
    /// </summary>
    private void Passivating()
    {
        Receive<StopLockResource>(_ =>
        {
            var region = ClusterSharding.Get(Context.System).ShardRegion(LockManager.RegionName);
            foreach (var (message, sender) in _heldDuringPassivation)
            {
                region.Tell(message, sender);
            }

            Context.Stop(Self);
        });
        Receive<PassivateTick>(_ => { });
        Receive<ExpireLock>(_ => { });
        Receive<RecoveryGateOpened>(_ => { });
        ReceiveAny(m => _heldDuringPassivation.Add((m, Sender)));
    }

    /// <summary>Marks the state suspended while the node recovers, so the command grants nothing that waits.</summary>
    [return: System.Diagnostics.CodeAnalysis.NotNullIfNotNull(nameof(state))]
    private LockResourceState? Suspended(LockResourceState? state)
    {
        if (state is not null && !_gate.IsGranting)
        {
            state.GrantsSuspended = true;
        }

        return state;
    }

    /// <summary>
    /// A survivor re-asserts a lock it holds. Answered with <see cref="LockReasserted"/> (never a
    /// completion: the lock client must not take it for the answer of a pending operation). A lock
    /// already here is confirmed as it is; a resource that did not exist before is rebuilt after its
    /// node died, and takes its LVB from the re-asserted copies as fs/dlm does (<see cref="LockResourceState.Reassert"/>).
    /// </summary>
    private void Reassert(ReassertLock m)
    {
        var rebuilt = _state is null;
        var state = Suspended(State(m.LvbLength));
        if (state is null || state.LvbLength != m.LvbLength)
        {
            Sender.Tell(new LockReasserted(_entityId, m.LockId, LockStatus.Invalid, false));
            AfterCommand();
            return;
        }

        if (rebuilt)
        {
            state.BeginRebuild();
        }

        if (state.Find(m.LockId) is { } existing)
        {
            Sender.Tell(new LockReasserted(_entityId, m.LockId, existing.Owner == m.Owner ? LockStatus.Granted : LockStatus.Invalid, false));
            AfterCommand();
            return;
        }

        if (m.Flags.HasFlag(LockFlags.Orphan) && !_rebuilding)
        {
            // This resource kept its orphans through the failure: one it does not have was adopted.
            Sender.Tell(new LockReasserted(_entityId, m.LockId, LockStatus.NotFound, false));
            AfterCommand();
            return;
        }

        var effects = state.Reassert(m.LockId, m.Owner, m.Mode, m.Flags, m.Lvb, m.LvbSeq);
        var status = effects.OfType<CompleteEffect>().FirstOrDefault(c => c.LockId == m.LockId)?.Status ?? LockStatus.Invalid;
        if (status == LockStatus.Granted)
        {
            _clients[m.LockId] = Sender;
        }
        else
        {
            _log.Error("Re-asserted lock {0} of {1} does not fit {2}: {3}", m.LockId, m.Owner.NodeId, _entityId, status);
        }

        Sender.Tell(new LockReasserted(_entityId, m.LockId, status, status == LockStatus.Granted));
        Run(effects.Where(e => e is not CompleteEffect c || c.LockId != m.LockId).ToList());
    }

    private LockResourceState? State(int lvbLength)
    {
        if (_state is null)
        {
            var length = lvbLength > 0 ? lvbLength : _options.DefaultLvbLength;
            if (!LockNames.TrySplit(_entityId, out _, out var resource) || length % 8 != 0 || length > 4096)
            {
                _log.Warning("Refusing lock resource {0} with LVB length {1}", _entityId, lvbLength);
                return null;
            }

            _state = new LockResourceState(resource, length);
            if (_bornDuringRecovery)
            {
                _state.BeginRebuild();
            }
        }

        return _state;
    }

    private static TimeSpan? Timeout(long ms) => ms > 0 ? TimeSpan.FromMilliseconds(ms) : null;

    private void Run(IReadOnlyList<LockEffect>? effects, long lockId, LockOperation op)
    {
        if (effects is null)
        {
            // Not a valid resource (bad entity id): answer, never crash the shard.
            if (op != LockOperation.Unlock || lockId != 0)
            {
                _replies.Send(Sender, new LockCompleted(_entityId, lockId, op, LockStatus.Invalid, LockMode.NL, null, 0, LockResultFlags.None), Self);
            }

            AfterCommand();
            return;
        }

        Run(effects);
    }

    private void Run(IReadOnlyList<LockEffect> effects)
    {
        foreach (var effect in effects)
        {
            switch (effect)
            {
                case CompleteEffect c:
                    var target = _clients.GetValueOrDefault(c.LockId) ?? Sender;
                    _replies.Send(target, new LockCompleted(_entityId, c.LockId, c.Operation, c.Status, c.GrantedMode, c.Lvb, c.LvbSeq, c.Flags), Self);
                    break;
                case BastEffect b when _clients.TryGetValue(b.LockId, out var holder):
                    _replies.Send(holder, new BlockingAst(_entityId, b.LockId, b.BlockedMode), Self);
                    break;
                case OrphanGoneEffect o when _clients.TryGetValue(o.LockId, out var orphaner):
                    // The lock client of the orphaning node keeps the orphan for re-assertion until told.
                    orphaner.Tell(new OrphanGone(_entityId, o.LockId));
                    break;
                case ScheduleTimeoutEffect t:
                    var delay = TimeSpan.FromTicks(Math.Max(0, t.DeadlineTicks - Now));
                    Timers.StartSingleTimer(("timeout", t.LockId), new ExpireLock(t.LockId), delay);
                    break;
            }
        }

        AfterCommand();
    }

    private void AfterCommand()
    {
        if (_state is not null && _clients.Count > 0)
        {
            // Forget reply targets of locks that are gone (unlocked, failed, adopted under a new id).
            foreach (var id in _clients.Keys.Where(id => _state.Find(id) is null).ToList())
            {
                _clients.Remove(id);
            }
        }

        if (_state is null || _state.IsEmpty)
        {
            if (!Timers.IsTimerActive(PassivateTimer))
            {
                Timers.StartSingleTimer(PassivateTimer, PassivateTick.Instance, _options.PassivateAfter);
            }
        }
        else if (Timers.IsTimerActive(PassivateTimer))
        {
            Timers.Cancel(PassivateTimer);
        }
    }

    private LockResourceDump Dump()
    {
        static LockDump One(LockEntry l) => new(l.Id, l.Owner.NodeId, l.Owner.Slot, l.Owner.Session, l.Granted is not null, l.Granted ?? LockMode.NL, l.Requested, l.Flags, l.IsOrphan);
        var s = _state;
        return new LockResourceDump(
            _entityId,
            _nodeId,
            s?.LvbLength ?? 0,
            s?.Lvb.ToArray() ?? [],
            s?.LvbSeq ?? 0,
            s?.ValueNotValid ?? false,
            s?.GrantQueue.Select(One).ToList() ?? [],
            s?.ConvertQueue.Select(One).ToList() ?? [],
            s?.WaitQueue.Select(One).ToList() ?? []);
    }

    private sealed record ExpireLock(long LockId) : INoSerializationVerificationNeeded;

    private sealed class PassivateTick : INoSerializationVerificationNeeded
    {
        public static readonly PassivateTick Instance = new();
    }
}
