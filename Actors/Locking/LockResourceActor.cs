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
internal sealed class LockResourceActor : ReceiveActor, IWithTimers
{
    private const string PassivateTimer = "passivate";

    private readonly string _entityId;
    private readonly string _nodeId;
    private readonly LockingOptions _options;
    private readonly Dictionary<long, IActorRef> _clients = [];
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly List<(object Message, IActorRef Sender)> _heldDuringPassivation = [];
    private LockResourceState? _state;

    public LockResourceActor(string entityId, string nodeId, LockingOptions options)
    {
        _entityId = entityId;
        _nodeId = nodeId;
        _options = options;
        Active();
    }

    public ITimerScheduler Timers { get; set; } = null!;

    public static Props Props(string entityId, string nodeId, LockingOptions options) =>
        Akka.Actor.Props.Create(() => new LockResourceActor(entityId, nodeId, options));

    private static long Now => DateTime.UtcNow.Ticks;

    private void Active()
    {
        Receive<LockRequest>(m =>
        {
            var state = State(m.LvbLength);
            if (state is null || m.LvbLength != state.LvbLength)
            {
                Sender.Tell(new LockCompleted(_entityId, m.LockId, LockOperation.Request, LockStatus.Invalid, LockMode.NL, null, 0, LockResultFlags.None));
                AfterCommand();
                return;
            }

            // Register the reply target first: a grant is among the effects of this very command.
            var known = state.Find(m.LockId) is not null;
            if (!known)
            {
                _clients[m.LockId] = Sender;
            }

            Run(state.Request(m.LockId, m.Owner, m.Mode, m.Flags, Timeout(m.TimeoutMs), Now));
        });
        Receive<ConvertLock>(m => Run(State(0)?.Convert(m.LockId, m.Mode, m.Flags, m.Lvb, Timeout(m.TimeoutMs), Now), m.LockId, LockOperation.Convert));
        Receive<UnlockLock>(m => Run(State(0)?.Unlock(m.LockId, m.Flags, m.Lvb), m.LockId, LockOperation.Unlock));
        Receive<CancelLock>(m => Run(State(0)?.Cancel(m.LockId), m.LockId, LockOperation.Cancel));
        Receive<PurgeLockOwner>(m => Run(State(0)?.PurgeOwner(m.NodeId, m.Session == Guid.Empty ? null : m.Session), 0, LockOperation.Unlock));
        Receive<ReassertLock>(m =>
        {
            var state = State(m.LvbLength);
            if (state is not null && state.Find(m.LockId) is null)
            {
                _clients[m.LockId] = Sender;
            }

            Run(state?.Reassert(m.LockId, m.Owner, m.Mode, m.Flags, m.Lvb, m.LvbSeq), m.LockId, LockOperation.Request);
        });
        Receive<ExpireLock>(m => Run(_state?.Expire(m.LockId, Now), m.LockId, LockOperation.Request));
        Receive<DumpLockResource>(_ =>
        {
            Sender.Tell(Dump());
            AfterCommand();
        });
        Receive<PassivateTick>(_ =>
        {
            if (_state is null || _state.IsEmpty)
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
        ReceiveAny(m => _heldDuringPassivation.Add((m, Sender)));
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
                Sender.Tell(new LockCompleted(_entityId, lockId, op, LockStatus.Invalid, LockMode.NL, null, 0, LockResultFlags.None));
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
                    target.Tell(new LockCompleted(_entityId, c.LockId, c.Operation, c.Status, c.GrantedMode, c.Lvb, c.LvbSeq, c.Flags));
                    break;
                case BastEffect b when _clients.TryGetValue(b.LockId, out var holder):
                    holder.Tell(new BlockingAst(_entityId, b.LockId, b.BlockedMode));
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
