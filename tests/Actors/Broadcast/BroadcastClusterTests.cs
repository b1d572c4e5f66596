using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Lockstep.Actors.Broadcast;
using Lockstep.Actors.Tests.Locking;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Broadcast;
using Lockstep.Contracts.Locking;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Broadcast;

/// <summary>The broadcast on three in-process members: one order per stream on every node, every message once.</summary>
public sealed class BroadcastClusterTests : IClassFixture<ThreeNodeCluster>, IDisposable
{
    private readonly ThreeNodeCluster _cluster;

    /// <summary>One broadcast per member for every test of the class (its actor name is fixed per actor system).</summary>
    private static readonly ConditionalWeakTable<ThreeNodeCluster, BroadcastManager[]> Started = [];

    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _subscriptions = [];

    public void Dispose() => _subscriptions.ForEach(s => s.Dispose());

    private BroadcastManager[] Managers()
    {
        lock (Started)
        {
            return Started.GetValue(_cluster, c => Enumerable.Range(0, 3)
                .Select(i => BroadcastManager.Start(c.Systems[i], c.Managers[i], new BroadcastOptions { Lockspace = "bcast-test", MaxBatch = 8 })).ToArray());
        }
    }

    public BroadcastClusterTests(ThreeNodeCluster cluster, ITestOutputHelper output) => (_cluster, _output) = (cluster, output);

    [Fact]
    public async Task Every_node_delivers_every_stream_in_one_order_exactly_once()
    {
        const int perNode = 150;
        string[] streams = ["order-a", "order-b", "order-c"];
        var logs = new ConcurrentDictionary<(int Node, string Stream), ConcurrentQueue<string>>();
        var managers = Managers();
        for (var i = 0; i < 3; i++)
        {
            var node = i;
            _subscriptions.Add(managers[i].Subscribe((m, _) =>
            {
                if (m.Message is NoopMessage noop)
                {
                    logs.GetOrAdd((node, m.Stream), _ => new ConcurrentQueue<string>()).Enqueue($"{m.Seq}.{m.Index} {noop.Origin}:{noop.Tag}");
                }

                return Task.CompletedTask;
            }));
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

    [Fact]
    public async Task A_message_larger_than_the_lvb_is_stored_first_and_delivered_whole_everywhere()
    {
        var body = new byte[20_000];
        Random.Shared.NextBytes(body);
        var received = new ConcurrentDictionary<int, byte[]>();
        var managers = Managers();
        for (var i = 0; i < 3; i++)
        {
            var node = i;
            _subscriptions.Add(managers[i].Subscribe((m, _) =>
            {
                if (m.Stream == "large" && m.Message is UnknownClusterMessage { RawType: 999 } big)
                {
                    received[node] = big.Body;
                }

                return Task.CompletedTask;
            }));
        }

        Assert.All(await managers[0].JoinEverywhereAsync(["large"], TimeSpan.FromSeconds(60)), j => Assert.Null(j.Error));
        await managers[1].BroadcastAsync("large", new UnknownClusterMessage(999, body)).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(3, received.Count);
        Assert.All(received.Values, b => Assert.Equal(body, b));
        await Assert.ThrowsAsync<ArgumentException>(() => managers[0].BroadcastAsync("large", new StoredPayloadReference(Guid.NewGuid(), 1)));
    }

    [Fact]
    public async Task Cluster_operations_suspend_refresh_resume_everywhere_and_resume_after_a_failed_change()
    {
        var managers = Managers();
        var seen = new ConcurrentDictionary<int, ConcurrentQueue<string>>();
        for (var i = 0; i < 3; i++)
        {
            var node = i;
            _subscriptions.Add(managers[i].Subscribe((m, _) =>
            {
                if (m.Stream == "clvmd" && m.Message is VolumeCommandMessage command)
                {
                    seen.GetOrAdd(node, _ => new ConcurrentQueue<string>()).Enqueue($"{command.Command} {command.Volume}");
                }

                return Task.CompletedTask;
            }));
        }

        Assert.All(await managers[0].JoinEverywhereAsync(["clvmd"], TimeSpan.FromSeconds(60)), j => Assert.Null(j.Error));
        var cluster = new ClusterOperations(_cluster.Systems[0], managers[0], _cluster.Managers[0]);
        var changedWhileSuspended = false;
        await cluster.RunSuspendedAsync("clvmd", "vm1", _ =>
        {
            // Every node processed SUSPEND before the change runs.
            changedWhileSuspended = Enumerable.Range(0, 3).All(n => seen.TryGetValue(n, out var q) && q.LastOrDefault() == "Suspend vm1");
            return Task.CompletedTask;
        });
        await Assert.ThrowsAsync<InvalidOperationException>(() => cluster.RunSuspendedAsync("clvmd", "vm2", _ => throw new InvalidOperationException("the change failed")));

        Assert.True(changedWhileSuspended);
        for (var node = 0; node < 3; node++)
        {
            Assert.Equal(["Suspend vm1", "Refresh vm1", "Resume vm1", "Suspend vm2", "Resume vm2"], seen[node].ToArray());
        }

        Assert.True(cluster.IsQuorate);
        Assert.Equal(3, cluster.Nodes.Count);
        Assert.Equal("n2", cluster.NodeId(cluster.NodeName("n2")!));
        Assert.Equal(_cluster.Systems[0].Name, cluster.ClusterName);
    }

    [Fact]
    public async Task Cluster_operations_sync_lock_takes_pw_and_cr_as_the_dlm_grants_them()
    {
        var managers = Managers();
        var one = new ClusterOperations(_cluster.Systems[0], managers[0], _cluster.Managers[0]);
        var two = new ClusterOperations(_cluster.Systems[1], managers[1], _cluster.Managers[1]);
        var pw = await one.SyncLockAsync("vg-meta", LockMode.PW).WaitAsync(TimeSpan.FromSeconds(30));

        // PW lets CR readers in and keeps a second PW out (clvmd's use of PW: change while others keep it cached).
        var cr = await two.SyncLockAsync("vg-meta", LockMode.CR).WaitAsync(TimeSpan.FromSeconds(30));
        var secondPw = await Assert.ThrowsAsync<LockRequestException>(() => two.SyncLockAsync("vg-meta", LockMode.PW, LockFlags.NoQueue));
        Assert.Equal(LockStatus.WouldBlock, secondPw.Status);

        await one.SyncUnlockAsync(pw);
        await two.SyncConvertAsync(cr, LockMode.PW).WaitAsync(TimeSpan.FromSeconds(30));
        await two.SyncUnlockAsync(cr);
        await Assert.ThrowsAsync<ArgumentException>(() => two.SyncUnlockAsync(cr));
    }
}
