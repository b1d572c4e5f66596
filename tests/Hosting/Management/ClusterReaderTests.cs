using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;
using Akka.Configuration;
using Akka.TestKit.Xunit2;
using Lockstep.Actors.Serialization;
using Lockstep.Hosting.Management;
using Xunit;

namespace Lockstep.Hosting.Tests.Management;

/// <summary>Reads a real one-node cluster with a real shard region.</summary>
public sealed class ClusterReaderTests : TestKit
{
    private static readonly Config Config = ConfigurationFactory.ParseString("""
        akka.actor.provider = cluster
        akka.actor.serialize-messages = on
        akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
        akka.cluster.sharding.state-store-mode = ddata
        akka.loglevel = WARNING
        """).WithFallback(SerializationConfig.Hocon);

    public ClusterReaderTests()
        : base(Config, "lockstep")
    {
        var cluster = Cluster.Get(Sys);
        cluster.Join(cluster.SelfAddress);
        // The read view the reader uses follows cluster events, so wait for it, not for the core.
        AwaitAssert(
            () => Assert.Equal("Up", ClusterReader.Read(cluster).SelfStatus),
            TimeSpan.FromSeconds(20),
            TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void Reads_self_as_the_Up_leader_and_the_internal_observer_view()
    {
        var cluster = Cluster.Get(Sys);
        var snapshot = ClusterReader.Read(cluster);

        var self = Assert.Single(snapshot.Members);
        Assert.Equal(cluster.SelfAddress.ToString(), self.Address);
        Assert.Equal(cluster.SelfUniqueAddress.Uid, self.Uid);
        Assert.Equal(cluster.SelfAddress.ToString(), snapshot.Leader);
        // Null would mean Akka renamed its internal reachability view and observedBy went blind.
        Assert.NotNull(ClusterReader.ObservedBy(cluster));
    }

    [Fact]
    public async Task Shard_stats_count_the_entities_of_a_started_region_per_node()
    {
        var region = await ClusterSharding.Get(Sys).StartAsync(
            "echo", Props.Create(() => new Echo()), ClusterShardingSettings.Create(Sys), new Extractor());
        foreach (var id in new[] { "a", "b", "c" })
        {
            Assert.Equal(id, await region.Ask<string>(id, TimeSpan.FromSeconds(10)));
        }

        var details = await ClusterReader.ShardsAsync(Sys, "echo", TimeSpan.FromSeconds(5), CancellationToken.None);

        Assert.NotNull(details);
        Assert.Equal(3, details.Regions.Sum(r => r.NumEntities));
        var node = Assert.Single(details.Nodes);
        Assert.Equal(Cluster.Get(Sys).SelfAddress.ToString(), node.Node);
        Assert.Equal(3, node.Shards.Sum(s => s.NumEntities));
        Assert.Contains("echo", ClusterReader.ShardTypeNames(Sys));
        Assert.Null(await ClusterReader.ShardsAsync(Sys, "absent", TimeSpan.FromSeconds(5), CancellationToken.None));
    }

    private sealed class Echo : ReceiveActor
    {
        public Echo() => Receive<string>(s => Sender.Tell(s));
    }

    private sealed class Extractor : HashCodeMessageExtractor
    {
        // Three shards are enough to spread three entities in a test.
        public Extractor()
            : base(3)
        {
        }

        public override string EntityId(object message) => (string)message;
    }
}
