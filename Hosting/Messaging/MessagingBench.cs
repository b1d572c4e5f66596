using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;
using Akka.Configuration;
using Lockstep.Actors.Messaging;
using Lockstep.Actors.Serialization;
using Lockstep.Contracts;
using Lockstep.Contracts.Messaging;
using Lockstep.Hosting.Node;

namespace Lockstep.Hosting.Messaging;

/// <summary>What <see cref="MessagingBench"/> runs.</summary>
/// <param name="Requests">Measured calls per run (after a warm-up of a fifth of that, at most 5,000).</param>
/// <param name="Callers">Concurrent callers, each waiting for its answer before the next call (closed loop).</param>
/// <param name="Faults">Also run the layer with 2 % of its envelopes dropped, 2 % duplicated and 2 % delayed.</param>
public sealed record MessagingBenchOptions(int Requests, int Callers, bool Faults);

/// <summary>
/// Reliable layer versus plain Ask, in one run: three cluster nodes in this process talking over real
/// remoting on loopback with the product's failure-detector tuning. The sender is a node whose channel
/// holder lives on another node; the plain Ask goes from the same node to sharded echo entities that live
/// on other nodes, so both cross the wire once each way (the layer adds the drop/confirm round trip).
/// </summary>
public static class MessagingBench
{
    // Several entity types, so several channels per node: shard allocation spreads their holders and at least one
    // (sender, type) pair has its holder on another node.
    private static readonly string[] EntityTypes = Enumerable.Range(0, 6).Select(i => $"bench-{i}").ToArray();
    private const string EchoRegion = "bench-echo";
    private const int EchoEntities = 300;

    /// <summary>Runs the benchmark and returns one summary per run, plain Ask first.</summary>
    public static async Task<IReadOnlyList<LatencySummary>> RunAsync(MessagingBenchOptions options, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(log);
        if (options.Requests < 1 || options.Callers < 1)
        {
            throw new ArgumentException("requests and callers must be at least 1");
        }

        var transport = new FaultInjectingTransport(seed: 7);
        var nodes = new List<ActorSystem>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var node = ActorSystem.Create(ClusterSetup.SystemName, NodeConfig());
                nodes.Add(node);
                var messaging = LockstepMessaging.Start(node, new MessagingOptions { Transport = transport });
                foreach (var type in EntityTypes)
                {
                    messaging.Handlers.Register(type, (_, payload) => Task.FromResult<IProtocolMessage>(new BenchPong(((BenchPing)payload).Value)));
                }
                ClusterSharding.Get(node).Start(EchoRegion, Props.Create(() => new EchoEntity()), ClusterShardingSettings.Create(node), new EchoExtractor());
            }

            await JoinAsync(nodes, cancellationToken).ConfigureAwait(false);
            log.WriteLine("3 nodes up on loopback");

            var (sender, entityType) = await PickSenderWithRemoteHolderAsync(nodes, cancellationToken).ConfigureAwait(false);
            var remoteEcho = await RemoteEchoIdsAsync(sender, cancellationToken).ConfigureAwait(false);
            log.WriteLine($"sender {Cluster.Get(sender).SelfAddress}; its holder and {remoteEcho.Count} echo entities live on other nodes");

            var echo = ClusterSharding.Get(sender).ShardRegion(EchoRegion);
            var layer = LockstepMessaging.Get(sender).Sender;
            var timeout = TimeSpan.FromSeconds(30);
            async Task<bool> PlainAsk(long i)
            {
                var pong = await echo.Ask<BenchPong>(new BenchPing(remoteEcho[(int)(i % remoteEcho.Count)], i), timeout, cancellationToken).ConfigureAwait(false);
                return pong.Value == i;
            }

            async Task<bool> ThroughLayer(long i)
            {
                var pong = await layer.SendAsync<BenchPong>(entityType, "e", new BenchPing("e", i), cancellationToken).ConfigureAwait(false);
                return pong.Value == i;
            }

            var warmUp = Math.Min(5_000, Math.Max(1, options.Requests / 5));
            await MeasureAsync("warm-up", warmUp, options.Callers, PlainAsk).ConfigureAwait(false);
            await MeasureAsync("warm-up", warmUp, options.Callers, ThroughLayer).ConfigureAwait(false);

            var runs = new List<LatencySummary>
            {
                await MeasureAsync("plain Ask (sharded remote entity)", options.Requests, options.Callers, PlainAsk).ConfigureAwait(false),
                await MeasureAsync("reliable layer, no faults", options.Requests, options.Callers, ThroughLayer).ConfigureAwait(false),
            };
            if (options.Faults)
            {
                transport.Enabled = true;
                runs.Add(await MeasureAsync("reliable layer, 2% drop + 2% dup + 2% delay", options.Requests, options.Callers, ThroughLayer).ConfigureAwait(false));
                transport.Enabled = false;
                log.WriteLine($"faults injected: {transport.Dropped} dropped, {transport.Duplicated} duplicated, {transport.Delayed} delayed");
            }

            return runs;
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.Terminate().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Runs <paramref name="count"/> calls from <paramref name="callers"/> closed-loop callers and times each.</summary>
    public static async Task<LatencySummary> MeasureAsync(string name, int count, int callers, Func<long, Task<bool>> call)
    {
        ArgumentNullException.ThrowIfNull(call);
        var latencies = new double[count];
        var ok = new bool[count];
        var next = -1;
        var failed = 0;
        var clock = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, Math.Min(callers, count)).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                var start = Stopwatch.GetTimestamp();
                try
                {
                    ok[i] = await call(i).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is AskTimeoutException or ReliableMessagingException or TaskCanceledException)
                {
                    ok[i] = false;
                }

                latencies[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                if (!ok[i])
                {
                    Interlocked.Increment(ref failed);
                }
            }
        })).ToArray();
        await Task.WhenAll(workers).ConfigureAwait(false);
        clock.Stop();
        return LatencySummary.From(name, latencies.Where((_, i) => ok[i]).ToArray(), failed, clock.Elapsed);
    }

    private static async Task<(ActorSystem Sender, string EntityType)> PickSenderWithRemoteHolderAsync(List<ActorSystem> nodes, CancellationToken cancellationToken)
    {
        foreach (var type in EntityTypes)
        {
            foreach (var node in nodes)
            {
                var messaging = LockstepMessaging.Get(node);
                await messaging.Sender.SendAsync<BenchPong>(type, "e", new BenchPing("e", -1), cancellationToken).ConfigureAwait(false);
                var self = Cluster.Get(node).SelfUniqueAddress;
                var channel = MessagingChannel.Format(type, self.Address.ToString(), self.Uid);
                var local = await messaging.MemoryRegion.Ask<CurrentShardRegionState>(GetShardRegionState.Instance, TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
                if (!local.Shards.Any(s => s.EntityIds.Contains(channel)))
                {
                    return (node, type);
                }
            }
        }

        throw new InvalidOperationException("every node's channel holder landed on the node itself; run the bench again");
    }

    private static async Task<List<string>> RemoteEchoIdsAsync(ActorSystem sender, CancellationToken cancellationToken)
    {
        var region = ClusterSharding.Get(sender).ShardRegion(EchoRegion);
        var ids = Enumerable.Range(0, EchoEntities).Select(i => $"echo-{i}").ToArray();
        await Task.WhenAll(ids.Select(id => region.Ask<BenchPong>(new BenchPing(id, 0), TimeSpan.FromSeconds(30), cancellationToken))).ConfigureAwait(false);
        var local = await region.Ask<CurrentShardRegionState>(GetShardRegionState.Instance, TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        var here = local.Shards.SelectMany(s => s.EntityIds).ToHashSet(StringComparer.Ordinal);
        var remote = ids.Where(id => !here.Contains(id)).ToList();
        return remote.Count > 0 ? remote : throw new InvalidOperationException("every echo entity landed on the sending node; run the bench again");
    }

    internal static async Task JoinAsync(List<ActorSystem> nodes, CancellationToken cancellationToken)
    {
        var seed = Cluster.Get(nodes[0]).SelfAddress;
        foreach (var node in nodes)
        {
            await Cluster.Get(node).JoinAsync(seed, cancellationToken).ConfigureAwait(false);
        }

        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (nodes.Any(n => Cluster.Get(n).State.Members.Count(m => m.Status == MemberStatus.Up) < nodes.Count))
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("the three bench nodes did not see each other Up within 30 s");
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>One in-process bench member: loopback remoting on an ephemeral port, the product's cluster tuning and serializer.</summary>
    internal static Config NodeConfig() => ConfigurationFactory.ParseString("""
        akka.loglevel = WARNING
        # The bench stops its members one by one; the survivors' disassociation stack traces are not results.
        akka.remote.log-remote-lifecycle-events = off
        akka.actor.provider = cluster
        akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
        akka.cluster.downing-provider-class = "Akka.Cluster.SBR.SplitBrainResolverProvider, Akka.Cluster"
        akka.cluster.split-brain-resolver.active-strategy = keep-majority
        akka.coordinated-shutdown.run-by-actor-system-terminate = on
        """)
        .WithFallback(ConfigurationFactory.ParseString(ClusterSetup.TuningHocon(new LockstepOptions())))
        .WithFallback(SerializationConfig.Hocon);

    /// <summary>The plain-Ask receiver: answers every ping with its value.</summary>
    private sealed class EchoEntity : ReceiveActor
    {
        public EchoEntity() => Receive<BenchPing>(p => Sender.Tell(new BenchPong(p.Value)));
    }

    private sealed class EchoExtractor() : HashCodeMessageExtractor(30)
    {
        public override string EntityId(object message) => (message as IWithEntityId)?.EntityId!;
    }
}
