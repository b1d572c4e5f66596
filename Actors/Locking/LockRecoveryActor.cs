using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;
using Akka.DistributedData;
using Akka.Event;
using Lockstep.Actors.Membership;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>
/// The node's DLM recovery coordinator: feeds cluster membership events and survivors'
/// acknowledgements into a <see cref="LockspaceRecoveryState"/> and carries out its effects — the
/// gate the node's resources consult, the slot work (purge the dead nodes' locks from every resource
/// this node hosts, re-assert this node's locks), acknowledgements to every survivor's coordinator,
/// and the applications' callbacks. It also fences the node when it has not seen a majority for
/// <see cref="LockingOptions.FenceTimeout"/>.
/// </summary>
internal sealed class LockRecoveryActor : ReceiveActor, IWithTimers
{
    /// <summary>Name under <c>/user</c>; coordinators address each other by it.</summary>
    public const string Name = "lock-recovery";

    private const string FenceTimer = "fence";
    private const string AckTimer = "ack";
    private const string HelloTimer = "hello";

    private readonly LockManager _manager;
    private readonly RecoveryGate _gate;
    private readonly LockingOptions _options;
    private readonly Cluster _cluster;
    private readonly IActorRef _replicator;
    private readonly string _self;
    private readonly LockspaceRecoveryState _state;
    private readonly Dictionary<string, Address> _addresses = [];
    private readonly Dictionary<string, string> _nodeIds = [];
    private readonly ILoggingAdapter _log = Context.GetLogger();
    // Every slot this node has seen handed out (slots never move, so merging replicas' tables is safe).
    private LockspaceRegistryState _known = LockspaceRegistryState.Empty;
    private RecoveryAck? _lastAck;
    private bool _fenced;
    private bool _stayFencedLogged;
    private bool _viewSeen;

    public LockRecoveryActor(LockManager manager, RecoveryGate gate, LockingOptions options)
    {
        _manager = manager;
        _gate = gate;
        _options = options;
        _cluster = Cluster.Get(Context.System);
        _replicator = DistributedData.Get(Context.System).Replicator;
        _self = Key(_cluster.SelfUniqueAddress);
        // Joining: the gate stays closed until every member told us it is not recovering anything we missed.
        _state = new LockspaceRecoveryState(_self, joining: true);
        gate.Close();
        _addresses[_self] = _cluster.SelfAddress;
        _nodeIds[_self] = options.NodeId;

        Receive<ClusterEvent.CurrentClusterState>(InitialView);
        Receive<ClusterEvent.MemberUp>(m => MemberUp(m.Member));
        Receive<ClusterEvent.MemberLeft>(m => Apply(_state.Leaving(Key(m.Member.UniqueAddress))));
        Receive<ClusterEvent.MemberExited>(m => Apply(_state.Leaving(Key(m.Member.UniqueAddress))));
        Receive<ClusterEvent.UnreachableMember>(m => Apply(_state.Unreachable(Learn(m.Member))));
        Receive<ClusterEvent.ReachableMember>(m => Apply(_state.Reachable(Learn(m.Member))));
        Receive<ClusterEvent.MemberDowned>(m => Apply(_state.Downed(Learn(m.Member))));
        Receive<ClusterEvent.MemberRemoved>(m => Apply(_state.Removed(Learn(m.Member))));
        Receive<ClusterEvent.IMemberEvent>(_ => { });
        Receive<MemberProcessGone>(m =>
        {
            if (m.Gone)
            {
                Apply(_state.ProcessGone(Key(m.Member)));
            }
            else
            {
                _state.ProcessGoneWithdrawn(Key(m.Member));
            }
        });
        Receive<RecoveryHello>(m =>
        {
            _nodeIds[m.Member] = m.NodeId;
            _addresses[m.Member] = Sender.Path.Address;
            if (!m.Reply)
            {
                // It may have greeted us before our coordinator existed, or be joining and need our status.
                Sender.Tell(Hello(reply: true));
            }

            Apply(_state.Hello(m.Member, m.Settled, m.Recovering, m.Covered));
        });
        Receive<ResendHello>(_ =>
        {
            // A hello can reach a coordinator that does not exist yet, and a status can be unsettled: ask again.
            if (_state.IsJoining)
            {
                foreach (var member in _state.Members.Where(m => m != _self && _addresses.ContainsKey(m)))
                {
                    Coordinator(_addresses[member]).Tell(Hello(reply: false));
                }

                Timers.StartSingleTimer(HelloTimer, ResendHello.Instance, AckResendInterval);
            }
        });
        Receive<RecoveryAck>(m => Apply(_state.Ack(m.From, m.Generation, m.Covered)));
        Receive<SlotWorkDone>(m =>
        {
            _log.Info("Recovery {0}: slot work done ({1} local resources purged, {2} locks re-asserted, {3} failed)", m.Generation, m.Resources, m.Reasserted, m.Failed);
            Apply(_state.SlotDone(m.Generation));
        });
        Receive<ResendAck>(_ =>
        {
            // An acknowledgement can be lost to a link that was down; the receiver ignores repeats.
            if (_state.Phase != RecoveryPhase.Normal)
            {
                if (_lastAck is not null)
                {
                    Broadcast(_lastAck, _state.Members);
                }

                Timers.StartSingleTimer(AckTimer, ResendAck.Instance, AckResendInterval);
            }
        });
        Receive<FenceTick>(_ => Fence());
        Receive<Changed>(c =>
        {
            if (c.Key.Equals(LockspaceRegistryActor.Key))
            {
                _known = _known.Merge(c.Get(LockspaceRegistryActor.Key).Value);
            }
        });
        Receive<SlotTableRead>(m =>
        {
            if (m.Table is not null)
            {
                _known = _known.Merge(m.Table);
            }

            var dead = NodeIds(m.Dead);
            _log.Info("Recovery {0}: recover_slot for [{1}]", m.Generation, string.Join(", ", dead));
            _manager.RaiseRecovery(RecoveryStage.Slot, m.Generation, dead, _known.Table);
            RunSlotAsync(m.Generation, dead).PipeTo(Self);
        });
        Receive<GetRecoveryStatus>(_ => Sender.Tell(new RecoveryStatus(_state.Phase, _state.Generation, _fenced, _state.Waiting())));
    }

    public ITimerScheduler Timers { get; set; } = null!;

    private static TimeSpan AckResendInterval => TimeSpan.FromSeconds(1);

    public static Props Props(LockManager manager, RecoveryGate gate, LockingOptions options) =>
        Akka.Actor.Props.Create(() => new LockRecoveryActor(manager, gate, options));

    /// <summary>The member's key; its node id too when it carries the role (<see cref="NodeIdRole"/>).</summary>
    private string Learn(Member member)
    {
        var key = Key(member.UniqueAddress);
        if (NodeIdRole.TryFind(member.Roles, out var nodeId))
        {
            _nodeIds[key] = nodeId;
        }

        return key;
    }

    /// <summary>A member's key: address and uid, so a node restarted on the same port is another member.</summary>
    public static string Key(UniqueAddress address) => $"{address.Address}#{address.Uid}";

    protected override void PreStart()
    {
        // A snapshot first, so the joining state knows when it has seen the whole first view.
        _cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot, typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
        Timers.StartSingleTimer(HelloTimer, ResendHello.Instance, AckResendInterval);
        _replicator.Tell(Dsl.Subscribe(LockspaceRegistryActor.Key, Self));
        // Proofs that a member's process is gone (Membership.RefusedConnectDowningActor, where it runs).
        Context.System.EventStream.Subscribe(Self, typeof(MemberProcessGone));
    }

    protected override void PostStop()
    {
        _cluster.Unsubscribe(Self);
        Context.System.EventStream.Unsubscribe(Self);
    }

    /// <summary>The first membership view: members that are (or were) Up, then those unreachable or leaving.</summary>
    private void InitialView(ClusterEvent.CurrentClusterState view)
    {
        var members = view.Members.Where(m => m.Status is MemberStatus.Up or MemberStatus.Leaving or MemberStatus.Exiting or MemberStatus.Down).ToList();
        foreach (var member in members.Where(m => !m.UniqueAddress.Equals(_cluster.SelfUniqueAddress)))
        {
            MemberUp(member);
        }

        foreach (var member in members.Where(m => m.Status is MemberStatus.Leaving or MemberStatus.Exiting))
        {
            Apply(_state.Leaving(Key(member.UniqueAddress)));
        }

        foreach (var member in view.Unreachable)
        {
            Apply(_state.Unreachable(Key(member.UniqueAddress)));
        }

        // A node started before it joined (every `lockstep serve`: the DLM starts with the actor system) gets an
        // empty first view, which would count as "every member greeted" at once and open the gate before the node
        // even knew the cluster. The first view that counts is the one in which this node is Up: the gossip that made
        // it Up carried every member, and their MemberUp events came before ours.
        if (members.Any(m => m.UniqueAddress.Equals(_cluster.SelfUniqueAddress)))
        {
            ViewSeen();
        }
    }

    private void ViewSeen()
    {
        if (!_viewSeen)
        {
            _viewSeen = true;
            Apply(_state.InitialViewSeen());
        }
    }

    private void MemberUp(Member member)
    {
        if (member.UniqueAddress.Equals(_cluster.SelfUniqueAddress))
        {
            ViewSeen();
            return;
        }

        var key = Learn(member);
        _addresses[key] = member.Address;
        Apply(_state.MemberUp(key));
        if (key != _self)
        {
            Coordinator(member.Address).Tell(Hello(reply: false));
        }
    }

    private RecoveryHello Hello(bool reply)
    {
        var report = _state.Report();
        return new RecoveryHello(_options.NodeId, _self, reply, report.Settled, report.Generation, report.Recovering, report.Covered);
    }

    private ActorSelection Coordinator(Address address) => Context.ActorSelection(new RootActorPath(address) / "user" / Name);

    private void Apply(IReadOnlyList<RecoveryEffect> effects)
    {
        foreach (var effect in effects)
        {
            switch (effect)
            {
                case EnterPrepEffect prep:
                    _gate.Close();
                    _log.Info("Recovery: recover_prep (generation {0}), granting stops", prep.Generation);
                    _manager.RaiseRecovery(RecoveryStage.Prep, prep.Generation, [], _known.Table);
                    Timers.StartSingleTimer(AckTimer, ResendAck.Instance, AckResendInterval);
                    break;
                case RunSlotEffect slot:
                    // The registry writes a join to a majority only; this replica may not have the dead node's slot yet
                    // (it joined just before dying), and recover_slot/recover_done must name it: read a majority first.
                    ReadSlotTableAsync(slot.Generation, slot.Dead).PipeTo(Self);
                    break;
                case SendAckEffect ack:
                    _lastAck = new RecoveryAck(_self, ack.Generation, ack.Covered);
                    Broadcast(_lastAck, ack.To);
                    break;
                case JoinSettledEffect:
                    _gate.Open();
                    Timers.Cancel(HelloTimer);
                    _log.Info("Recovery: joined; every member's recovery status is settled, granting starts");
                    break;
                case RecoveryDoneEffect done:
                    _gate.Open();
                    var slots = NodeIds(done.Dead);
                    _log.Info("Recovery {0}: recover_done for [{1}], granting resumes", done.Generation, string.Join(", ", slots));
                    _manager.RaiseRecovery(RecoveryStage.Done, done.Generation, slots, _known.Table);
                    break;
            }
        }

        CheckMajority();
    }

    private void Broadcast(RecoveryAck ack, IEnumerable<string> members)
    {
        foreach (var member in members.Where(m => m != _self))
        {
            if (_addresses.TryGetValue(member, out var address))
            {
                Coordinator(address).Tell(ack);
            }
        }
    }

    private List<string> NodeIds(IEnumerable<string> members)
    {
        var ids = new List<string>();
        foreach (var member in members)
        {
            if (_nodeIds.TryGetValue(member, out var id))
            {
                ids.Add(id);
            }
            else
            {
                // It died before its coordinator greeted us: we cannot tell which locks were its.
                _log.Warning("Recovery: no node id known for removed member {0}; its locks are not purged", member);
            }
        }

        return ids;
    }

    /// <summary>
    /// recover_slot on this node. Purges go to every resource entity hosted here (a dump sent after
    /// them confirms they were applied: same path, same order); the lock client re-asserts our locks.
    /// Runs off the actor thread and touches only what it was given.
    /// </summary>
    private async Task<SlotWorkDone> RunSlotAsync(long generation, List<string> deadNodeIds)
    {
        var region = _manager.Region;
        var client = _manager.Client;
        var timeout = _options.AskTimeout;
        var resources = 0;
        try
        {
            var regionState = await region.Ask<CurrentShardRegionState>(GetShardRegionState.Instance, timeout);
            // The region also hosts the holders of the reliable transport's lock#S channels: not resources.
            var ids = regionState.Shards.SelectMany(s => s.EntityIds).Where(id => !LockChannels.TryHolderShard(id, out _)).ToList();
            resources = ids.Count;
            foreach (var id in ids)
            {
                foreach (var node in deadNodeIds)
                {
                    region.Tell(new PurgeLockOwner(id, node, Guid.Empty));
                }
            }

            await Task.WhenAll(ids.Select(id => region.Ask<LockResourceDump>(new DumpLockResource(id), timeout)));
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            // Resources that did not answer still got their purge; we do not hold recovery for them.
        }

        try
        {
            var reasserted = await client.Ask<HeldLocksReasserted>(new ReassertHeldLocks(generation), timeout + timeout);
            return new SlotWorkDone(generation, resources, reasserted.Locks, reasserted.Failed);
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            // The lock client gives up on its own before this; report rather than wedge recovery.
            return new SlotWorkDone(generation, resources, 0, -1);
        }
    }

    private void CheckMajority()
    {
        if (!_state.HasMajority)
        {
            if (!_fenced && !Timers.IsTimerActive(FenceTimer))
            {
                Timers.StartSingleTimer(FenceTimer, FenceTick.Instance, _options.FenceTimeout);
            }

            return;
        }

        Timers.Cancel(FenceTimer);
        if (_fenced && !_state.MayUnfence)
        {
            if (!_stayFencedLogged)
            {
                _stayFencedLogged = true;
                _log.Warning("Recovery: members it fenced among were removed; staying fenced until restarted");
            }

            return;
        }

        if (_fenced)
        {
            _fenced = false;
            _state.Unfenced();
            _gate.Fence(false);
            _log.Warning("Recovery: a majority is reachable again; taking new lock requests");
            _manager.RaiseRecovery(RecoveryStage.Unfenced, _state.Generation, [], _known.Table);
        }
    }

    private void Fence()
    {
        if (_state.HasMajority || _fenced)
        {
            return;
        }

        _fenced = true;
        _state.Fenced();
        _gate.Fence(true);
        _manager.Client.Tell(FenceHandles.Instance);
        _log.Warning("Recovery: no majority for {0}; fenced (every lock handle is lost, new requests are refused)", _options.FenceTimeout);
        _manager.RaiseRecovery(RecoveryStage.Fenced, _state.Generation, [], _known.Table);
    }

    private async Task<SlotTableRead> ReadSlotTableAsync(long generation, IReadOnlyList<string> dead)
    {
        // Short: the survivors are reachable (recovery cannot finish otherwise) and recover_slot should not wait long.
        var wait = TimeSpan.FromSeconds(1) < _options.AskTimeout ? TimeSpan.FromSeconds(1) : _options.AskTimeout;
        try
        {
            var answer = await _replicator.Ask<IGetResponse>(Dsl.Get(LockspaceRegistryActor.Key, new ReadMajority(wait)), wait + wait);
            return new SlotTableRead(generation, dead, answer is GetSuccess success ? success.Get(LockspaceRegistryActor.Key).Value : null);
        }
        catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
        {
            // Recovery does not wait on the registry: what this replica knows names the slots.
            return new SlotTableRead(generation, dead, null);
        }
    }

    private sealed record SlotTableRead(long Generation, IReadOnlyList<string> Dead, LockspaceTable? Table) : INoSerializationVerificationNeeded;

    private sealed record SlotWorkDone(long Generation, int Resources, int Reasserted, int Failed) : INoSerializationVerificationNeeded;

    private sealed class ResendAck : INoSerializationVerificationNeeded
    {
        public static readonly ResendAck Instance = new();
    }

    private sealed class ResendHello : INoSerializationVerificationNeeded
    {
        public static readonly ResendHello Instance = new();
    }

    private sealed class FenceTick : INoSerializationVerificationNeeded
    {
        public static readonly FenceTick Instance = new();
    }
}

/// <summary>Asks the node's recovery coordinator for its <see cref="RecoveryStatus"/>; local only.</summary>
internal sealed class GetRecoveryStatus : INoSerializationVerificationNeeded
{
    public static readonly GetRecoveryStatus Instance = new();
}

/// <summary>Where the node's recovery stands.</summary>
/// <param name="Phase">Normal, Prep or Recovering.</param>
/// <param name="Generation">Bumped by every removal.</param>
/// <param name="Fenced">The node fenced itself.</param>
/// <param name="Waiting">Survivors whose acknowledgement is missing.</param>
public sealed record RecoveryStatus(RecoveryPhase Phase, long Generation, bool Fenced, IReadOnlyList<string> Waiting);
