using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;
using Akka.Cluster.Tools.Singleton;
using Akka.Configuration;
using Akka.DistributedData;
using Akka.Pattern;
using Lockstep.Actors.Membership;
using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>
/// Starts the DLM on one node — the <c>lock</c> shard region, the lockspace registry singleton and
/// the node's lock client — and is the node's <see cref="ILockManager"/>.
/// </summary>
public sealed class LockManager : ILockManager
{
    /// <summary>The shard region every lock resource lives in.</summary>
    public const string RegionName = "lock";

    /// <summary>Name of the lock client actor under <c>/user</c>; other nodes address it for dumps.</summary>
    public const string ClientName = "lock-client";

    /// <summary>Name of the torture runner under <c>/user</c>.</summary>
    public const string TortureName = "lock-torture";

    private const string RegistryName = "lock-registry";

    /// <summary>How long one lockspace join waits for the registry before asking again (within <see cref="LockingOptions.AskTimeout"/>).</summary>
    private static readonly TimeSpan JoinAttempt = TimeSpan.FromSeconds(2);

    private readonly ActorSystem _system;
    private readonly LockingOptions _options;
    private readonly IActorRef _registry;
    private readonly Dictionary<Lockspace, byte> _open = [];
    private long _nextLockId;

    private readonly LockstepMessaging? _messaging;
    private readonly LockMessageExtractor _extractor;
    private LocalShardRoutes? _localRoutes;

    private LockManager(ActorSystem system, LockingOptions options, IActorRef region, IActorRef registry, IActorRef client, RecoveryGate gate, LockstepMessaging? messaging, LockMessageExtractor extractor)
    {
        _messaging = messaging;
        _extractor = extractor;
        _system = system;
        _options = options;
        Region = region;
        _registry = registry;
        Client = client;
        Gate = gate;

        // Random high bits keep ids of different nodes and incarnations apart on a shared resource
        // (the resource also refuses a duplicate id); the low 32 bits count.
        _nextLockId = (long)Random.Shared.Next(1, int.MaxValue) << 32;
    }

    public string NodeId => _options.NodeId;

    /// <summary>
    /// Whether this node's commands to <paramref name="resource"/> now go to its resource by plain in-process <c>Tell</c>
    /// (its shard lives here and answered once; <see cref="LocalShardRoutes"/>); always false on the direct transport.
    /// </summary>
    internal bool CommandsSkipLayer(string lockspace, string resource) =>
        _localRoutes?.IsDirect(_extractor.ShardId(LockNames.EntityId(lockspace, resource))) ?? false;

    /// <summary>The <c>lock</c> shard region of this node.</summary>
    public IActorRef Region { get; }

    internal IActorRef Client { get; }

    /// <summary>Whether this node's resources grant now, and whether the node fenced itself.</summary>
    public RecoveryGate Gate { get; }

    internal IActorRef Recovery { get; private set; } = ActorRefs.Nobody;

    /// <summary>Starts the DLM in <paramref name="system"/> (which must be a cluster member) and returns its manager.</summary>
    public static LockManager Start(ActorSystem system, LockingOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.NodeId))
        {
            throw new ArgumentException("Locking needs a node id.", nameof(options));
        }

        system.Settings.InjectTopLevelFallback(ClusterSingleton.DefaultConfig());

        // Every node must run the replicator, or the registry's majority writes cannot succeed.
        _ = DistributedData.Get(system);
        var gate = new RecoveryGate(system.EventStream);
        var extractor = new LockMessageExtractor(options.ShardCount);

        // Reliable transport: the layer (started here with defaults unless the node started it first) hosts the holders
        // of the lock#S channels in this region, next to the resources they deliver to.
        var messaging = options.Transport == LockTransport.Reliable ? LockstepMessaging.Start(system, new MessagingOptions()) : null;
        ILockReplyPath replies = messaging is null ? DirectLockReplyPath.Instance : new ReliableLockReplyPath(system, messaging.Poster);
        var region = ClusterSharding.Get(system).Start(
            RegionName,
            entityId => messaging is not null && LockChannels.TryHolderShard(entityId, out _)
                ? messaging.HolderProps(entityId, typeof(StopLockResource))
                : LockResourceActor.Props(entityId, options.NodeId, options, gate, replies),
            RegionSettings(system),
            extractor,
            new RequesterShardAllocationStrategy(),
            StopLockResource.Instance);
        system.ActorOf(
            // A singleton that stops is not restarted by the manager: the backoff supervisor restarts
            // the registry when its journal fails (it recovers the table again), and forwards to it.
            ClusterSingletonManager.Props(
                BackoffSupervisor.Props(Backoff.OnStop(LockspaceRegistryActor.Props(options), "registry", TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(5), 0.2, -1)),
                PoisonPill.Instance,
                ClusterSingletonManagerSettings.Create(system)),
            RegistryName);
        var registry = system.ActorOf(ClusterSingletonProxy.Props($"/user/{RegistryName}", ClusterSingletonProxySettings.Create(system)), RegistryName + "-proxy");
        ILockCommandPath commands = messaging is null ? new DirectLockCommandPath(region) : new ReliableLockCommandPath(messaging.Poster, extractor, region);
        var client = system.ActorOf(LockClientActor.Props(region, options, gate, commands), ClientName);
        if (messaging is not null)
        {
            messaging.Routes.RegisterColocated(LockChannels.CommandPrefix, region);
            LockMessagingHandlers.Register(system, messaging, region, client, options);
        }

        var manager = new LockManager(system, options, region, registry, client, gate, messaging, extractor);
        system.ActorOf(Props.Create(() => new LockTortureActor(manager)), TortureName);
        manager._localRoutes = (commands as ReliableLockCommandPath)?.Routes;
        manager.Recovery = system.ActorOf(LockRecoveryActor.Props(manager, gate, options), LockRecoveryActor.Name);
        return manager;
    }

    /// <summary>
    /// Recovery waits for resources whose shard lived on a dead node to come back elsewhere, and a
    /// region asks the coordinator for a shard's new home only every <c>retry-interval</c> (2 s by
    /// default). The coordinator stores the dead region's removal in ddata to all nodes
    /// (<c>write-majority-plus = 3</c>); a write issued before the replicator dropped the dead node
    /// fails after <c>updating-state-timeout</c> (5 s) and is retried — that alone used to hold
    /// recovery 5 s. All three are shortened for the lock region only.
    /// </summary>
    private static ClusterShardingSettings RegionSettings(ActorSystem system)
    {
        var sharding = ConfigurationFactory.ParseString("retry-interval = 200ms\ncoordinator-failure-backoff = 1s\nupdating-state-timeout = 1s")
            .WithFallback(system.Settings.Config.GetConfig("akka.cluster.sharding"));
        // No idle passivation by sharding: a resource passivates itself once it has no lock (PassivateAfter), and the
        // holders of lock#S channels must not passivate at all (an in-memory holder would forget what it ran).
        return ClusterShardingSettings.Create(sharding, system.Settings.Config.GetConfig(sharding.GetString("coordinator-singleton")))
            .WithPassivateIdleAfter(TimeSpan.Zero);
    }

    public async Task<ILockspace> OpenLockspaceAsync(string name, int lvbLength = 0, CancellationToken cancellationToken = default)
    {
        if (LockNames.LockspaceError(name) is { } error)
        {
            throw new ArgumentException(error, nameof(name));
        }

        // The registry is a singleton across remoting; a join (or its answer) lost with an association is asked again.
        // Joining is idempotent: the same node id gets its slot back.
        var reply = await IdempotentAsk.AskAsync<ILockProtocol>(_registry, new JoinLockspace(name, lvbLength, NodeId), _options.AskTimeout,
            JoinAttempt < _options.AskTimeout ? JoinAttempt : _options.AskTimeout, "the lockspace registry", cancellationToken);
        return reply switch
        {
            LockspaceJoined joined => Opened(new Lockspace(this, joined.Lockspace, joined.Slot, joined.LvbLength)),
            LockspaceRejected rejected => throw new ArgumentException(rejected.Reason, nameof(name)),
            _ => throw new InvalidOperationException($"Unexpected registry reply {reply.GetType().Name}"),
        };
    }

    public async Task<IReadOnlyList<LockspaceInfo>> ListLockspacesAsync(CancellationToken cancellationToken = default)
    {
        var table = await _registry.Ask<LockspaceTable>(ListLockspaces.Instance, _options.AskTimeout, cancellationToken);
        return table.Lockspaces;
    }

    public async Task<LockspaceDump> DumpLockspaceAsync(string lockspace, CancellationToken cancellationToken = default)
    {
        if (LockNames.LockspaceError(lockspace) is { } error)
        {
            throw new ArgumentException(error, nameof(lockspace));
        }

        var members = Cluster.Get(_system).State.Members.Where(m => m.Status == MemberStatus.Up).Select(m => m.Address);
        var answers = await MemberAsk.EachAsync<LocalLockResources>(_system, members, ClientName, new ListLocalLockResources(lockspace), _options.AskTimeout, cancellationToken);
        var resources = answers.Answered().SelectMany(a => a.Resources).OrderBy(r => r.EntityId, StringComparer.Ordinal).ToList();
        return new LockspaceDump(resources, answers.Missing());
    }

    /// <summary>
    /// Asks the resource entity for its dump (wherever it lives). With the reliable transport the request travels the
    /// node's <c>lock#S</c> channel, behind every command this node sent to the resource before (an unlock answered
    /// early included), as the direct transport's region does.
    /// </summary>
    public Task<LockResourceDump> DumpResourceAsync(string lockspace, string resource, CancellationToken cancellationToken = default)
    {
        var dump = new DumpLockResource(LockNames.EntityId(lockspace, resource));
        return _messaging is null
            ? Region.Ask<LockResourceDump>(dump, _options.AskTimeout, cancellationToken)
            : _messaging.Sender.SendAsync<LockResourceDump>(LockChannels.CommandEntityType(_extractor.ShardId(dump.EntityId, dump)), dump.EntityId, dump, cancellationToken)
                .WaitAsync(_options.AskTimeout, cancellationToken);
    }

    /// <summary>Runs the counter torture with clients on every member; see <see cref="LockTorture"/>.</summary>
    public Task<LockTortureResult> RunTortureAsync(int clients, int iterations, TimeSpan timeout) =>
        LockTorture.RunClusterAsync(_system, this, clients, iterations, timeout);

    /// <summary>Where this node's recovery stands (phase, generation, fenced, survivors not yet acknowledged).</summary>
    public Task<RecoveryStatus> RecoveryStatusAsync(CancellationToken cancellationToken = default) =>
        Recovery.Ask<RecoveryStatus>(GetRecoveryStatus.Instance, _options.AskTimeout, cancellationToken);

    internal long NextLockId() => Interlocked.Increment(ref _nextLockId);

    private Lockspace Opened(Lockspace space)
    {
        lock (_open)
        {
            _open[space] = 0;
        }

        return space;
    }

    internal void Closed(Lockspace space)
    {
        lock (_open)
        {
            _open.Remove(space);
        }
    }

    /// <summary>
    /// Tells every open lockspace session of a recovery step. <paramref name="deadNodeIds"/> become
    /// slots through the replicated lockspace table (the registry singleton may have died with them).
    /// </summary>
    internal void RaiseRecovery(RecoveryStage stage, long generation, IReadOnlyList<string> deadNodeIds, LockspaceTable? table)
    {
        Lockspace[] spaces;
        lock (_open)
        {
            spaces = [.. _open.Keys];
        }

        foreach (var space in spaces)
        {
            var info = table?.Lockspaces.FirstOrDefault(l => l.Name == space.Name);
            var slots = info?.Slots.Where(s => deadNodeIds.Contains(s.NodeId)).Select(s => s.Slot).Order().ToList() ?? [];
            space.Raise(new LockspaceRecoveryEvent(stage, slots, space.Slot, generation));
        }
    }
}
