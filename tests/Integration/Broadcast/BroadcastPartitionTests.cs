using System.Diagnostics;
using System.Text.Json;
using Lockstep.Integration.Tests.Cluster;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Integration.Tests.Broadcast;

/// <summary>
/// The ordered broadcast across a partition: three real nodes, one per network namespace (lsbc-n1..3 on lsbc-br0,
/// 10.231.4.0/24; needs root). Every node loads two streams; node 3's link is cut mid-load and stays cut. The majority's
/// calls must all end (success or a clear error) within a bound, its two logs must agree per stream, and node 3 — cut
/// off, fenced, downed — must have delivered nothing the majority did not: its log is a prefix of theirs per stream.
/// Node settings as in LockPartitionTests (stable-after 3 s, fence 1 s), for the same reason.
/// </summary>
[Collection(RealProcessesCollection.Name)]
public sealed class BroadcastPartitionTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int PerNode = 2000;
    private static readonly string[] Streams = ["p0", "p1"];
    private static readonly TimeSpan CallBound = TimeSpan.FromSeconds(60);
    private readonly NamespaceCluster _cluster = new("lsbc", "10.231.4");

    public Task InitializeAsync() => _cluster.StartAsync(nameof(BroadcastPartitionTests), new Dictionary<string, string>
    {
        ["Lockstep__Broadcast__OrderLog"] = "order.log",
        ["Lockstep__Http__AllowWrite"] = "true",
        ["Lockstep__Cluster__StableAfter"] = "00:00:03",
        ["Lockstep__Cluster__FenceTimeout"] = "00:00:01",
    }, TimeSpan.FromSeconds(120));

    public async Task DisposeAsync() => await _cluster.DisposeAsync();

    [Fact]
    public Task The_cut_off_node_delivers_nothing_the_majority_did_not() => _cluster.ExplainedAsync(async () =>
    {
        using var http = new HttpClient { Timeout = CallBound + TimeSpan.FromSeconds(60) };
        var join = await http.PostAsync(_cluster.Url(0, $"/v1/broadcast/streams?{string.Join('&', Streams.Select(s => "name=" + s))}"), null);
        Assert.True(join.IsSuccessStatusCode, await join.Content.ReadAsStringAsync());

        var clock = Stopwatch.StartNew();
        var query = $"/v1/broadcast/load?messages={PerNode}&streams={string.Join(',', Streams)}&concurrency=16&timeoutSeconds={(int)CallBound.TotalSeconds}";
        var loads = Enumerable.Range(0, 3).Select(i => http.PostAsync(_cluster.Url(i, query), null)).ToArray();
        await Eventually.UntilAsync("node 3 to have delivered some rounds", TimeSpan.FromSeconds(60), async () =>
        {
            await Task.Yield();
            var lines = OrderLogs.Read(Log(2)).Length;
            return (lines > PerNode / 4, $"{lines} lines");
        });
        await NamespaceNetwork.Ip("link", "set", "lsbc-v3", "down");
        output.WriteLine($"node 3 cut off {clock.ElapsedMilliseconds} ms into the load");

        var unknown = new HashSet<int>[2];
        for (var i = 0; i < 2; i++)
        {
            var answer = await loads[i];
            var body = await answer.Content.ReadAsStringAsync();
            output.WriteLine($"node {i + 1} load ended at {clock.ElapsedMilliseconds} ms: {Shorten(body)}");
            Assert.True(answer.IsSuccessStatusCode, body);
            using var result = JsonDocument.Parse(body);
            var failed = result.RootElement.GetProperty("failed").GetInt32();
            Assert.Equal(PerNode, result.RootElement.GetProperty("sent").GetInt32() + failed);
            unknown[i] = result.RootElement.GetProperty("failedTags").EnumerateArray().Select(t => t.GetInt32()).ToHashSet();
        }

        Assert.True(clock.Elapsed < CallBound + TimeSpan.FromSeconds(60), $"the majority's loads took {clock.Elapsed}");

        var majority = await OrderLogs.AgreedAsync(Log(0), Log(1), TimeSpan.FromSeconds(30), output.WriteLine);
        OrderLogs.AssertLostNodeDeliveredAPrefix(majority, OrderLogs.Read(Log(2)), Streams, output.WriteLine);
        for (var node = 1; node <= 2; node++)
        {
            OrderLogs.AssertEverySuccessfulCallDelivered(majority, $"n{node}", PerNode, unknown[node - 1]);
        }
    });

    private static string Shorten(string body) => body.Length <= 600 ? body : body[..600] + "…";

    private string Log(int node) => Path.Combine(_cluster.DataDirectory(node), "order.log");
}
