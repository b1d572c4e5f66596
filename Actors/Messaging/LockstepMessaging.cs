using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Hosting;
using Lockstep.Actors.Messaging.Link;
using Lockstep.Contracts;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// The reliable-messaging layer of one node: the holder regions (<c>message-holder</c> in memory,
/// <c>message-holder-persistent</c> journaled), the outbox, the sender API and the handler registry.
/// Started once per actor system by <see cref="Start"/> (or <c>WithLockstepMessaging</c>); found again with
/// <see cref="Get"/>.
/// </summary>
public sealed class LockstepMessaging : IExtension
{
    /// <summary>Region of in-memory holders.</summary>
    public const string MemoryRegionName = "message-holder";

    /// <summary>Region of persisted holders.</summary>
    public const string PersistedRegionName = "message-holder-persistent";

    private LockstepMessaging(ExtendedActorSystem system, MessagingOptions configured)
    {
        // The peer link sits under a plain transport only: a test's fault-injecting transport keeps Akka.Remote, whose
        // faults it simulates.
        Link = configured.PeerLink is { } linkOptions && configured.Transport is DirectTransport
            ? PeerLinkTransport.Start(system, linkOptions, DirectTransport.Instance)
            : null;
        var options = Link is null ? configured : configured.WithTransport(Link);
        Options = options;
        MessagingMetrics.ReportedCap = options.HolderCap;
        Stats = new MessagingNodeStats(options.HolderCap);
        var sharding = ClusterSharding.Get(system);

        // Holders must never be passivated while idle: an in-memory holder would forget what it ran.
        var settings = ClusterShardingSettings.Create(system).WithPassivateIdleAfter(TimeSpan.Zero).WithRememberEntities(false);
        var extractor = new HolderMessageExtractor(options.HolderShards);
        MemoryRegion = sharding.Start(MemoryRegionName,
            // In-memory holders purge and stop themselves when their sender is removed, as co-located ones do: a purge
            // sent through the region would create (and allocate a shard for) every holder it names, and a node stopping
            // right after a removal kept those purges buffered until its region's hand-off timed out (docs/messaging.md).
            channel => Props.Create(() => new MessageHolderActor(new HolderRuntime(system, options, Handlers, channel, Stats, persisted: false), null, true)),
            settings, extractor, ShardAllocationStrategy.LeastShardAllocationStrategy(1, 0.1), Contracts.Messaging.HolderHandOffStop.Instance);
        PersistedRegion = sharding.Start(PersistedRegionName,
            channel => Props.Create(() => new PersistentMessageHolderActor(new HolderRuntime(system, options, Handlers, channel, Stats, persisted: true))),
            settings, extractor, ShardAllocationStrategy.LeastShardAllocationStrategy(1, 0.1), Contracts.Messaging.HolderHandOffStop.Instance);
        _system = system;
        PinnedHost = system.ActorOf(Props.Create(() => new PinnedHolderHost(channel => HolderProps(channel, null))), PinnedHolderHost.Name);
        Outbox = system.ActorOf(Props.Create(() => new OutboxActor(options, MemoryRegion, PersistedRegion, Stats, Routes)), "lockstep-outbox");
        Poster = new ReliableSender(system, Outbox);
        Sender = Poster;
        // Last: peers connect only once the outbox, the regions and the pinned host they deliver to exist.
        Link?.Announce();
    }

    private readonly ActorSystem _system;

    /// <summary>Where holders of co-located entity types live (registered by the subsystems owning those regions).</summary>
    public MessagingRoutes Routes { get; } = new();

    /// <summary>This node's host of node-pinned holders (<see cref="PinnedEntityType"/>).</summary>
    public IActorRef PinnedHost { get; }

    /// <summary>
    /// Props of an in-memory holder of <paramref name="channelId"/>, for a region of another subsystem that hosts
    /// co-located holders (<see cref="MessagingRoutes.RegisterColocated"/>); <paramref name="handOffStop"/> is that
    /// region's hand-off stop message type. Such a holder purges and stops itself when its sender is removed (the
    /// outbox's purge does not reach prefix-registered entity types).
    /// </summary>
    internal Props HolderProps(string channelId, Type? handOffStop) =>
        Props.Create(() => new MessageHolderActor(new HolderRuntime(_system, Options, Handlers, channelId, Stats, false), handOffStop, stopWhenSenderRemoved: true));

    /// <summary>The node's own TCP link to its peers, when <see cref="MessagingOptions.PeerLink"/> turned it on.</summary>
    public PeerLinkTransport? Link { get; }

    /// <summary>The options the layer runs with (its <see cref="MessagingOptions.Transport"/> is the peer link when that is on).</summary>
    public MessagingOptions Options { get; }

    /// <summary>This node's live numbers: holder tables, pending calls, re-sends.</summary>
    public MessagingNodeStats Stats { get; }

    /// <summary>Send requests through the layer.</summary>
    public IReliableSender Sender { get; }

    /// <summary>The same sender, with <see cref="ReliableSender.Post"/> for callers that need no status (the DLM).</summary>
    internal ReliableSender Poster { get; }

    /// <summary>Register this node's receiver-side handlers, by entity type.</summary>
    public MessageHandlerRegistry Handlers { get; } = new();

    /// <summary>The in-memory holder region.</summary>
    public IActorRef MemoryRegion { get; }

    /// <summary>The persisted holder region.</summary>
    public IActorRef PersistedRegion { get; }

    /// <summary>The node's outbox actor.</summary>
    public IActorRef Outbox { get; }

    /// <summary>Starts the layer on <paramref name="system"/> (idempotent: a second call returns the running one).</summary>
    public static LockstepMessaging Start(ActorSystem system, MessagingOptions options) =>
        (LockstepMessaging)system.RegisterExtension(new Id(options));

    /// <summary>The running layer; throws if it was not started on this system.</summary>
    public static LockstepMessaging Get(ActorSystem system) =>
        system.HasExtension<LockstepMessaging>()
            ? system.GetExtension<LockstepMessaging>()
            : throw new InvalidOperationException("Reliable messaging is not started on this node: call WithLockstepMessaging (or LockstepMessaging.Start).");

    private sealed class Id(MessagingOptions options) : ExtensionIdProvider<LockstepMessaging>
    {
        public override LockstepMessaging CreateExtension(ExtendedActorSystem system) => new(system, options);
    }

    /// <summary>Routes holder messages by channel; shards by the channel's hash.</summary>
    private sealed class HolderMessageExtractor(int shards) : HashCodeMessageExtractor(shards)
    {
        public override string EntityId(object message) => (message as IWithEntityId)?.EntityId!;
    }
}

/// <summary>Node wiring of the layer.</summary>
public static class MessagingSetup
{
    /// <summary>
    /// Starts reliable messaging when the node's actor system starts. One line in NodeModules:
    /// <c>akka.WithLockstepMessaging(new MessagingOptions());</c>. Other subsystems then use
    /// <c>LockstepMessaging.Get(system)</c> for the sender and to register handlers.
    /// </summary>
    public static AkkaConfigurationBuilder WithLockstepMessaging(this AkkaConfigurationBuilder builder, MessagingOptions options) =>
        builder.WithActors((system, registry) =>
        {
            var messaging = LockstepMessaging.Start(system, options);
            registry.TryRegister<LockstepMessaging>(messaging.Outbox);
        });
}
