using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Akka.Remote;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>A caller's request to the node's outbox (local only: it carries the caller's completion).</summary>
internal sealed record OutboxSend(string EntityType, string EntityId, SerializedPayload Payload, TaskCompletionSource<SerializedPayload> Completion, bool CompletesAtStatus = false)
    : INoSerializationVerificationNeeded;

/// <summary>
/// The node's sender side: one per node incarnation, for all channels. It keeps every request until the
/// holder confirmed its drop, and re-sends on the resend timer (with back-off), when an association comes
/// (back) up, and when cluster membership changes (a holder's shard may have moved). When a member is
/// removed it purges the holders of that member's channels (recover_slot).
/// </summary>
internal sealed class OutboxActor : ReceiveActor, IWithTimers
{
    private readonly MessagingOptions _options;
    private readonly IActorRef _memoryRegion;
    private readonly IActorRef _persistedRegion;
    private readonly OutboxState<TaskCompletionSource<SerializedPayload>> _state;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly MessagingNodeStats _stats;
    private long _resendsReported;
    private readonly EnvelopeBatcher<IActorRef> _outgoing = new(MaxBatch);
    private long _completed;

    // The holder actor last heard from per channel, with its incarnation. First transmissions go straight to it,
    // skipping the two shard-region hops; every re-send goes through the region, so a holder that moved or died
    // costs one resend interval, never a lost call (the protocol already absorbs any lost envelope).
    private readonly Dictionary<string, (Guid Incarnation, IActorRef Holder)> _knownHolders = new(StringComparer.Ordinal);

    private readonly MessagingRoutes _routes;
    private readonly Dictionary<string, IActorRef> _pinnedHosts = new(StringComparer.Ordinal);
    private readonly ILoggingAdapter _log = Context.GetLogger();

    public OutboxActor(MessagingOptions options, IActorRef memoryRegion, IActorRef persistedRegion, MessagingNodeStats stats, MessagingRoutes routes)
    {
        _routes = routes;
        _stats = stats;
        _options = options;
        _memoryRegion = memoryRegion;
        _persistedRegion = persistedRegion;
        var self = Cluster.Get(Context.System).SelfUniqueAddress;
        _state = new OutboxState<TaskCompletionSource<SerializedPayload>>(self.Address.ToString(), self.Uid, options.Outbox);

        Receive<OutboxSend>(s => Apply(_state.Send(s.EntityType, s.EntityId, s.Payload, s.Completion, Now, s.CompletesAtStatus), direct: true));
        Receive<HolderStatus>(OnStatus);
        Receive<HolderDropConfirmed>(OnDropConfirmed);
        Receive<OutboxBatch>(batch =>
        {
            foreach (var status in batch.Statuses)
            {
                OnStatus(status);
            }

            foreach (var confirm in batch.Confirms)
            {
                OnDropConfirmed(confirm);
            }
        });
        Receive<FlushEnvelopes>(_ => Flush());
        Receive<HolderRejected>(r => Apply(_state.OnRejected(r, Now)));
        Receive<HolderGap>(g => Apply(_state.OnGap(g, Now)));
        Receive<HolderHandOver>(h => Apply(_state.OnHandOver(h, Now), handOverFrom: Sender));
        Receive<Tick>(_ => Apply(_state.Tick(Now)));
        Receive<AssociatedEvent>(_ =>
        {
            _knownHolders.Clear();
            Apply(_state.ResendAll(Now));
        });
        Receive<DisassociatedEvent>(_ => _knownHolders.Clear());
        Receive<ClusterEvent.MemberUp>(_ =>
        {
            _knownHolders.Clear();
            Apply(_state.ResendAll(Now));
        });
        // A member the failure detector had given up on answers again: what was sent to it meanwhile was probably
        // lost and has backed off up to MaxResendMs; re-send now instead of waiting out the back-off (measured between
        // real processes with TCP resets: calls stalled ~4 s after every heal without this).
        Receive<ClusterEvent.ReachableMember>(_ => Apply(_state.ResendAll(Now)));
        Receive<ClusterEvent.IReachabilityEvent>(_ => { });
        Receive<SelfRemoved>(_ => Apply(_state.Close("this node was removed from the cluster (left or downed); the request may or may not have run")));
        Receive<ClusterEvent.MemberRemoved>(removed =>
        {
            _knownHolders.Clear();
            PurgeChannelsOf(removed.Member.UniqueAddress);
            AbandonPinnedTo(removed.Member.UniqueAddress);
            Apply(_state.ResendAll(Now));
        });
        Receive<ClusterEvent.IMemberEvent>(_ => { });
        Receive<ClusterEvent.CurrentClusterState>(_ => { });
        Receive<ChannelPurged>(_ => { });
        Receive<Status.Failure>(_ => { });
    }

    public ITimerScheduler Timers { get; set; } = null!;

    /// <summary>Most envelopes in one batch to a holder.</summary>
    internal const int MaxBatch = 64;

    /// <summary>Pending calls (for stats).</summary>
    internal int Pending => _state.Pending;

    private long Now => _clock.ElapsedMilliseconds;

    protected override void PreStart()
    {
        Context.System.EventStream.Subscribe(Self, typeof(AssociatedEvent));
        Context.System.EventStream.Subscribe(Self, typeof(DisassociatedEvent));
        Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
        Timers.StartPeriodicTimer("resend", Tick.Instance, _options.TickInterval);

        // Fires when this node is removed (left, or downed by the split-brain resolver) or its cluster shuts down.
        var self = Self;
        Cluster.Get(Context.System).RegisterOnMemberRemoved(() => self.Tell(SelfRemoved.Instance));
    }

    protected override void PostStop()
    {
        Flush();
        // The actor system is stopping: no status can arrive any more, so nobody may be left waiting.
        Apply(_state.Close("the node's actor system is shutting down; the request may or may not have run"));
        Context.System.EventStream.Unsubscribe(Self);
        Cluster.Get(Context.System).Unsubscribe(Self);
    }

    private void OnStatus(HolderStatus status)
    {
        LearnHolder(status.ChannelId, status.HolderIncarnation);
        Apply(_state.OnStatus(status, Now), direct: true);
    }

    private void OnDropConfirmed(HolderDropConfirmed confirm)
    {
        LearnHolder(confirm.ChannelId, confirm.HolderIncarnation);
        Apply(_state.OnDropConfirmed(confirm, Now), direct: true);
    }

    private void Enqueue(IActorRef to, string channelId, object envelope)
    {
        if (_outgoing.Add(to, channelId, envelope))
        {
            Self.Tell(FlushEnvelopes.Instance);
        }
    }

    private void Flush()
    {
        // One flush sends a batch per channel (lock#S: per resource shard); held, they reach each peer as one write.
        using var held = _options.Transport.HoldSends();
        foreach (var (to, message) in _outgoing.Drain(static (channel, items) =>
                     new HolderBatch(channel, items.OfType<HolderDeliver>().ToList(), items.OfType<HolderDrop>().ToList())))
        {
            _options.Transport.Send(to, message, Self);
        }
    }

    private void PurgeChannelsOf(UniqueAddress removed)
    {
        // Only persisted holders: their purge is journaled, so it must be a command. In-memory holders purge and stop
        // themselves when their sender is removed (stopWhenSenderRemoved). Only the oldest remaining member does it, so
        // one purge per channel is sent rather than one per node.
        if (_options.PersistedEntityTypes.Count == 0)
        {
            return;
        }

        var cluster = Cluster.Get(Context.System);
        var oldest = cluster.State.Members.Where(m => m.Status == MemberStatus.Up && !m.UniqueAddress.Equals(removed))
            .OrderBy(m => m, Member.AgeOrdering).FirstOrDefault();
        if (oldest is null || !oldest.UniqueAddress.Equals(cluster.SelfUniqueAddress))
        {
            return;
        }

        foreach (var entityType in _options.PersistedEntityTypes)
        {
            var channel = MessagingChannel.Format(entityType, removed.Address.ToString(), removed.Uid);
            RegionFor(entityType).Tell(new PurgeChannel(channel));
        }
    }

    /// <summary>
    /// Calls on channels pinned to a removed node incarnation can never complete (their holders died with it, and a
    /// restarted node at the same address is another incarnation): fail them now rather than re-send forever.
    /// </summary>
    private void AbandonPinnedTo(UniqueAddress removed)
    {
        var effects = _state.Abandon(type => PinnedEntityType.IsPinnedTo(type, removed.Uid),
            $"the receiving node {removed.Address} (uid {removed.Uid}) was removed from the cluster; the request may or may not have run");
        if (effects.Count > 0)
        {
            _log.Warning("Failing {0} calls to removed node {1}", effects.Count, removed.Address);
        }

        Apply(effects);
    }

    private IActorRef RegionFor(string entityType)
    {
        if (_options.PersistedEntityTypes.Contains(entityType))
        {
            return _persistedRegion;
        }

        if (_routes.TryGetColocated(entityType, out var region))
        {
            return region;
        }

        if (PinnedEntityType.TryParse(entityType, out _, out _, out var address))
        {
            if (!_pinnedHosts.TryGetValue(address, out var host))
            {
                var path = new RootActorPath(Address.Parse(address)) / "user" / PinnedHolderHost.Name;
                host = ((ExtendedActorSystem)Context.System).Provider.ResolveActorRef(path);
                _pinnedHosts[address] = host;
            }

            return host;
        }

        return _memoryRegion;
    }

    private IActorRef RegionForChannel(string channelId) =>
        RegionFor(MessagingChannel.TryParse(channelId, out var type, out _, out _) ? type : string.Empty);

    private void LearnHolder(string channelId, Guid incarnation)
    {
        if (!Sender.IsNobody() && !Sender.Equals(Context.System.DeadLetters))
        {
            _knownHolders[channelId] = (incarnation, Sender);
        }
    }

    /// <summary>
    /// The holder itself when <paramref name="direct"/> (a first transmission) and it is known — for a request,
    /// only if it is the incarnation the request names — else the channel's shard region.
    /// </summary>
    private IActorRef Route(string channelId, bool direct, Guid? incarnation) =>
        direct && _knownHolders.TryGetValue(channelId, out var known) && (incarnation is null || known.Incarnation == incarnation)
            ? known.Holder
            : RegionForChannel(channelId);

    private void Apply(IReadOnlyList<OutboxEffect<TaskCompletionSource<SerializedPayload>>> effects, IActorRef? handOverFrom = null, bool direct = false)
    {
        foreach (var effect in effects)
        {
            switch (effect)
            {
                case OutboxTransmit<TaskCompletionSource<SerializedPayload>> t:
                    Enqueue(Route(t.Request.ChannelId, direct && t.Request.Attempt == 1, t.Request.KnownIncarnation), t.Request.ChannelId, t.Request);
                    break;
                case OutboxTransmitDrop<TaskCompletionSource<SerializedPayload>> d:
                    Enqueue(Route(d.Drop.ChannelId, direct, incarnation: null), d.Drop.ChannelId, d.Drop);
                    break;
                case OutboxComplete<TaskCompletionSource<SerializedPayload>> c:
                    c.Caller.TrySetResult(c.Status);
                    _completed++;
                    break;
                case OutboxFail<TaskCompletionSource<SerializedPayload>> f:
                    f.Caller.TrySetException(new ReliableMessagingException(f.Reason));
                    break;
                case OutboxAckHandOver<TaskCompletionSource<SerializedPayload>> a when handOverFrom is not null:
                    _options.Transport.Send(handOverFrom, a.Ack, Self);
                    break;
            }
        }

        if (_state.Resends != _resendsReported)
        {
            MessagingMetrics.Resends.Add(_state.Resends - _resendsReported);
            _resendsReported = _state.Resends;
        }

        _stats.OutboxUpdated(_state.Pending, _state.Resends, _completed);
    }

    private sealed record SelfRemoved
    {
        public static readonly SelfRemoved Instance = new();
    }

    /// <summary>Sent to itself when the first envelope is queued: everything queued by then goes out in batches.</summary>
    private sealed record FlushEnvelopes : INoSerializationVerificationNeeded
    {
        public static readonly FlushEnvelopes Instance = new();
    }

    private sealed record Tick
    {
        public static readonly Tick Instance = new();
    }
}

/// <summary>The layer could not complete a call (outbox full, or this node was removed from the cluster).</summary>
public sealed class ReliableMessagingException(string message) : Exception(message);

/// <summary>The receiver's handler threw; the message names its exception. It ran (once).</summary>
public sealed class ReliableHandlerException(string exceptionType, string message)
    : Exception($"the handler failed with {exceptionType}: {message}")
{
    /// <summary>The handler exception's type name.</summary>
    public string ExceptionType { get; } = exceptionType;
}
