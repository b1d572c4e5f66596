using System.Collections.Concurrent;
using Lockstep.Actors.Broadcast;
using Lockstep.Actors.Tests.Locking;
using Lockstep.Contracts.Broadcast;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Broadcast;

/// <summary>The broadcast on three in-process members: one order per stream on every node, every message once.</summary>
public sealed class BroadcastClusterTests : IClassFixture<ThreeNodeCluster>
{
    private readonly ThreeNodeCluster _cluster;

    private readonly ITestOutputHelper _output;

    public BroadcastClusterTests(ThreeNodeCluster cluster, ITestOutputHelper output) => (_cluster, _output) = (cluster, output);

    [Fact]
    public async Task Every_node_delivers_every_stream_in_one_order_exactly_once()
    {
        const int perNode = 150;
        string[] streams = ["order-a", "order-b", "order-c"];
        var logs = new ConcurrentDictionary<(int Node, string Stream), ConcurrentQueue<string>>();
        var managers = Enumerable.Range(0, 3).Select(i => BroadcastManager.Start(_cluster.Systems[i], _cluster.Managers[i], new BroadcastOptions { Lockspace = "bcast-order", MaxBatch = 8 })).ToArray();
        for (var i = 0; i < 3; i++)
        {
            var node = i;
            managers[i].Subscribe((m, _) =>
            {
                if (m.Message is NoopMessage noop)
                {
                    logs.GetOrAdd((node, m.Stream), _ => new ConcurrentQueue<string>()).Enqueue($"{m.Seq}.{m.Index} {noop.Origin}:{noop.Tag}");
                }

                return Task.CompletedTask;
            });
        }

        var joined = await managers[0].JoinEverywhereAsync(streams, TimeSpan.FromSeconds(60));
        Assert.All(joined, j => Assert.Null(j.Error));
        Assert.Equal(3, joined.Count);

        var sends = Enumerable.Range(0, 3).SelectMany(node => Enumerable.Range(0, perNode).Select(async k =>
        {
            var stream = streams[k % streams.Length];
            return await managers[node].BroadcastAsync(stream, new NoopMessage($"n{node + 1}", k)).WaitAsync(TimeSpan.FromSeconds(120));
        })).ToList();
        await Task.WhenAll(sends);

        foreach (var stream in streams)
        {
            var expected = 3 * perNode / streams.Length;
            var reference = logs[(0, stream)].ToArray();
            Assert.Equal(expected, reference.Length);
            Assert.Equal(expected, reference.Distinct().Count());
            for (var node = 1; node < 3; node++)
            {
                Assert.Equal(reference, logs[(node, stream)].ToArray());
            }
        }

        var stats = await managers[1].ClusterStatsAsync(TimeSpan.FromSeconds(10));
        Assert.Empty(stats.Missing);
        foreach (var s in stats.Nodes.SelectMany(n => n.Streams.Select(s => (n.NodeId, s))))
        {
            _output.WriteLine($"{s.NodeId} {s.s.Stream}: last {s.s.LastSeq}, published {s.s.RoundsSent}, healed {s.s.RoundsHealed}, delivered {s.s.RoundsDelivered}, dup {s.s.Duplicates}, gathers {s.s.Gathers}, p50 {s.s.CompletionP50Ms:0.0} ms, p99 {s.s.CompletionP99Ms:0.0} ms");
        }

        Assert.All(stats.Nodes.SelectMany(n => n.Streams).Where(s => streams.Contains(s.Stream)), s => Assert.Equal(0, s.Gaps));

        var ping = await managers[2].PingAsync(BroadcastOptions.GlobalStream, TimeSpan.FromSeconds(30));
        Assert.Equal(3, ping.Nodes.Count(p => p.Found));
    }
}
