using System.Net.Http.Json;
using System.Text.Json;
using Lockstep.Actors.Messaging;
using Lockstep.Actors.Messaging.Link;
using Lockstep.Hosting.Messaging;
using Lockstep.Integration.Tests.Cluster;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Integration.Tests.Messaging;

/// <summary>
/// The reliable layer between three real <c>lockstep serve</c> processes, each in its own network namespace
/// (<c>lsmsg-n1..3</c>, veth pairs on bridge <c>lsmsg-br0</c>, 10.231.2.0/24), while node 3's link really breaks:
/// alternately its interface goes down for a few hundred milliseconds (TCP stalls and retransmits) and an nftables
/// rule in its namespace answers everything on the remoting port with a TCP reset for a few hundred milliseconds
/// (the associations drop; whatever Akka.Remote had in flight is lost). Meanwhile every node sends probe runs through
/// the layer to probe holders spread over the cluster (<c>POST /v1/messaging/probe/run</c>). Afterwards the nodes'
/// probe ledgers (<c>GET /v1/messaging/probe/stats</c>) are combined: every request's handler ran exactly once in the
/// whole cluster, every caller got its own status, per-channel order held. All three numbers are printed and asserted.
/// </summary>
/// <remarks>
/// The split-brain resolver is held off for the fault window: <c>stable-after</c> is the fault time + 20 s, so it cannot
/// reach a decision while node 3's link flaps. With 20 s this test failed twice in fifteen runs: node 1 and node 3 were
/// removed at the same moment (~24 s into the faults) and node 2 kept — Akka's resolver downs every member that is both
/// observer and subject of an unreachability record ("indirectly connected"), and under load node 1 and node 3 had
/// marked each other unreachable for 20 s (records relayed through node 2's gossip) although node 1's link was fine.
/// A removed node is a crash for in-memory holders (re-runs flagged, not exactly once — PersistedHolderCrashTests' and
/// ReliableMessagingClusterTests' case); this test is about association drops, so it asserts that the resolver never
/// decided and nobody was downed, and on any failure it appends every node's post-mortem (exit code, stderr, the
/// resolver/downing lines). Needs root; fails (never skips) without it. Duration: <c>LOCKSTEP_NETNS_FAULT_S</c>
/// (default 40 s of faults).
/// </remarks>
[Collection(RealProcessesCollection.Name)]
public sealed class LinkFaultProcessTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int RequestsPerRun = 400;
    private const int CallersPerRun = 24;
    private readonly NamespaceCluster _cluster = new("lsmsg", "10.231.2");
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromMinutes(10) };

    private string Url(int node, string path) => _cluster.Url(node, path);

    private static readonly TimeSpan FaultTime = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("LOCKSTEP_NETNS_FAULT_S"), out var s) && s > 0 ? s : 40);

    public Task InitializeAsync() => _cluster.StartAsync(nameof(LinkFaultProcessTests),
        new Dictionary<string, string> { ["Lockstep__Cluster__StableAfter"] = NamespaceCluster.ResolverHeldOffFor(FaultTime) }, TimeSpan.FromSeconds(120));

    public async Task DisposeAsync()
    {
        await _cluster.DisposeAsync();
        _http.Dispose();
    }

    [Fact]
    public Task Every_request_runs_once_and_every_caller_gets_its_status_while_a_link_flaps() =>
        _cluster.ExplainedAsync(RunAsync);

    private async Task RunAsync()
    {
        var faultTime = FaultTime;
        output.WriteLine($"faults on node 3's link for {faultTime.TotalSeconds} s; probe runs of {RequestsPerRun} requests, {CallersPerRun} callers, from every node");

        // Traffic first, so the faults hit a layer under load; each node keeps sending runs until the faults stop.
        using var faultsOver = new CancellationTokenSource();
        var senders = Enumerable.Range(0, 3).Select(node => Task.Run(() => SendRunsAsync(node, faultsOver.Token))).ToArray();
        var flapper = new LinkFlapper(_cluster.Namespace(2), _cluster.InnerVeth(2), [NamespaceCluster.RemotingPort, NamespaceCluster.LinkPort], "lsmsg");
        var faults = await flapper.RunAsync(faultTime, Environment.GetEnvironmentVariable("LOCKSTEP_NETNS_FAULTS") ?? "both");
        faultsOver.Cancel();
        var runs = (await Task.WhenAll(senders)).SelectMany(r => r).ToList();
        output.WriteLine($"faults: {faults} on the remoting and link ports");
        output.WriteLine(_cluster.ResolverSummary());

        // Nobody was downed: the resolver never decided, three live processes, each sees three Up members.
        Assert.Empty(_cluster.ResolverDecisions());
        await _cluster.UntilAllUpAsync(TimeSpan.FromSeconds(60));
        Assert.True(_cluster.AllRunning, "a node exited");

        var ledgers = new List<ProbeLedgerView>();
        for (var i = 0; i < 3; i++)
        {
            ledgers.Add((await _http.GetFromJsonAsync<ProbeLedgerView>(Url(i, "/v1/messaging/probe/stats"), Json))!);
        }

        var requests = runs.Sum(r => r.Requests);
        var withStatus = runs.Sum(r => r.WithStatus);
        var tallies = runs.Select(r => ProbeTally.Of(ledgers, r.RunId, r.Requests)).ToList();
        var exactlyOnce = tallies.Sum(t => t.RanExactlyOnce);
        var order = ledgers.Sum(l => l.Channels.Sum(c => c.Backwards + c.Skips));
        var resends = 0L;
        for (var i = 0; i < 3; i++)
        {
            resends += (await _http.GetFromJsonAsync<MessagingStatsView>(Url(i, "/v1/messaging/stats"), Json))!.Resends;
        }

        // The layer's envelopes rode its own peer link (serve's default), whose port the faults reset as well.
        var links = new List<PeerLinkStats>();
        for (var i = 0; i < 3; i++)
        {
            links.Add((await _http.GetFromJsonAsync<PeerLinkStats>(Url(i, "/v1/messaging/link"), Json))!);
            output.WriteLine($"node {i + 1} link: {links[^1]}");
        }

        output.WriteLine($"{runs.Count} runs, {requests} requests in {runs.Sum(r => r.Seconds):F0} s of calls; ran on: {string.Join(", ", runs.SelectMany(r => r.RanOn).GroupBy(p => p.Key).Select(g => $"{g.Key} {g.Sum(p => p.Value)}"))}; {resends} re-sends");
        output.WriteLine($"ran exactly once:     {exactlyOnce}/{requests} (more than once {tallies.Sum(t => t.RanMoreThanOnce)}, never {tallies.Sum(t => t.NeverRan)}, unknown {tallies.Sum(t => t.Unknown)})");
        output.WriteLine($"callers with status:  {withStatus}/{requests} (wrong status {runs.Sum(r => r.WrongStatus)}, failed {runs.Sum(r => r.Failed)}: {string.Join("; ", runs.SelectMany(r => r.Errors).GroupBy(e => e.Key).Select(g => $"{g.Sum(e => e.Value)}x {g.Key}"))})");
        output.WriteLine($"order violations:     {order} over {ledgers.Sum(l => l.Channels.Count)} channels");

        Assert.True(faults.LinkDowns + faults.Resets > 0, "link faults were injected");
        Assert.True(runs.Count >= 3, $"traffic flowed during the faults ({runs.Count} runs)");
        Assert.Equal(requests, exactlyOnce);
        Assert.Equal(requests, withStatus);
        Assert.Equal(0, order);
        Assert.Equal(0, tallies.Sum(t => t.Unknown));
        Assert.All(ledgers, l => Assert.All(l.Channels, c => Assert.Equal(0, c.Flagged)));
        Assert.All(links, l => Assert.Equal(NamespaceCluster.LinkPort, l.Port));
        Assert.True(links.Sum(l => l.SentOverLink) > links.Sum(l => l.SentOverAkka), $"the link carried less than Akka.Remote: {string.Join("; ", links)}");
    }

    /// <summary>Probe runs from <paramref name="node"/> until <paramref name="stop"/>; the run in progress finishes.</summary>
    private async Task<List<ProbeRunResult>> SendRunsAsync(int node, CancellationToken stop)
    {
        var results = new List<ProbeRunResult>();
        while (!stop.IsCancellationRequested)
        {
            var response = await _http.PostAsJsonAsync(Url(node, "/v1/messaging/probe/run"), new ProbeRunRequest(RequestsPerRun, CallersPerRun, 300), CancellationToken.None);
            var body = await response.Content.ReadAsStringAsync(CancellationToken.None);
            Assert.True(response.IsSuccessStatusCode, $"probe run on node {node + 1}: HTTP {(int)response.StatusCode} {body}");
            var result = JsonSerializer.Deserialize<ProbeRunResult>(body, Json)!;
            results.Add(result);
            output.WriteLine($"{DateTime.UtcNow:HH:mm:ss.f} node {node + 1} run {result.RunId}: {result.Seconds:F1} s");
            if (result.WithStatus != result.Requests)
            {
                output.WriteLine($"node {node + 1} run {result.RunId}: {result.WithStatus}/{result.Requests} with status, errors {string.Join("; ", result.Errors.Select(e => $"{e.Value}x {e.Key}"))}");
            }
        }

        return results;
    }

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
}
