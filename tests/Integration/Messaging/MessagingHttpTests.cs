using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Lockstep.Actors.Messaging;
using Lockstep.Actors.Messaging.Link;
using Lockstep.Hosting.Messaging;
using Lockstep.Integration.Tests.Cluster;
using Xunit;

namespace Lockstep.Integration.Tests.Messaging;

/// <summary>The layer as <c>lockstep serve</c> starts it: a real one-node process, its probe and stats routes and metrics.</summary>
[Collection(RealProcessesCollection.Name)]
public sealed class MessagingHttpTests
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    [Fact]
    public async Task Serve_runs_the_layer_the_probe_counts_every_run_and_the_stats_and_metrics_report_the_holders()
    {
        var ports = FreePorts.Take(3);
        var data = Directory.CreateTempSubdirectory("lockstep-msg-http-").FullName;
        try
        {
            await using var node = ChildProcess.Start(Repo.Lockstep,
                ["serve", "--port", $"{ports[0]}", "--http-port", $"{ports[1]}", "--nbd-port", $"{ports[2]}", "--data", data, "--node-id", "m1", "--holder-cap", "64"]);
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{ports[1]}"), Timeout = TimeSpan.FromMinutes(2) };
            using (var quick = new HttpClient { BaseAddress = http.BaseAddress, Timeout = TimeSpan.FromSeconds(3) })
            {
                await Eventually.UntilReadyAsync(quick, TimeSpan.FromSeconds(60));
            }

            var run = await (await http.PostAsJsonAsync("/v1/messaging/probe/run", new ProbeRunRequest(2000, 16, 120))).Content.ReadFromJsonAsync<ProbeRunResult>(Json);
            Assert.NotNull(run);
            Assert.Equal((2000, 2000, 0, 0), (run.Requests, run.WithStatus, run.WrongStatus, run.Failed));
            Assert.Equal(2000, run.RanOn["m1"]);

            var ledger = await http.GetFromJsonAsync<ProbeLedgerView>($"/v1/messaging/probe/stats?runId={run.RunId}", Json);
            var tally = ProbeTally.Of([ledger!], run.RunId, run.Requests);
            Assert.Equal((2000, 0, 0L), (tally.RanExactlyOnce, tally.NeverRan, tally.OrderViolations));
            Assert.Equal(ProbeLedger.EntityTypes.Count, ledger!.Channels.Count);

            var stats = await http.GetFromJsonAsync<MessagingStatsView>("/v1/messaging/stats", Json);
            Assert.Equal(64, stats!.HolderCap);
            // The node's own DLM traffic (the broadcast joins its 'global' stream at start) has holders of its own.
            var probeHolders = stats.Holders.Where(h => ProbeLedger.EntityTypes.Any(t => h.Channel.StartsWith(t, StringComparison.Ordinal))).ToList();
            Assert.Equal(ProbeLedger.EntityTypes.Count, probeHolders.Count);
            Assert.Equal(2000, probeHolders.Sum(h => h.Runs));
            Assert.Equal(0, stats.OutboxPending);
            Assert.True(stats.Completed >= 2000, $"outbox completed {stats.Completed}");

            // One node: the link listens but has no peer to carry anything to.
            var link = await http.GetFromJsonAsync<PeerLinkStats>("/v1/messaging/link", Json);
            Assert.True(link!.Port > 0, $"link port {link.Port}");
            Assert.Equal((0L, 0, 0), (link.SentOverLink, link.OutgoingConnections, link.IncomingConnections));

            var metrics = await http.GetStringAsync("/metrics");
            Assert.Contains("lockstep_messaging_node_holder_cap 64", metrics);
            var memoryHolders = System.Text.RegularExpressions.Regex.Match(metrics, "lockstep_messaging_node_holders\\{kind=\"memory\"\\} (\\d+)");
            Assert.True(memoryHolders.Success && int.Parse(memoryHolders.Groups[1].Value) >= ProbeLedger.EntityTypes.Count, $"memory holders: {memoryHolders.Value}");
            Assert.Contains("lockstep_messaging_node_outbox_completed ", metrics);
            Assert.Contains("lockstep_messaging_link_connections{direction=\"out\"} 0", metrics);

            // The CLI drives the same route and combines the ledgers.
            var address = $"127.0.0.1:{ports[1]}";
            var cli = await ChildProcess.RunAsync(Repo.Lockstep, ["messaging", "probe", "--node", address, "--requests", "300", "--callers", "4", "--ledger", address], TimeSpan.FromSeconds(120));
            Assert.True(cli.ExitCode == 0, cli.ToString());
            Assert.Contains("300/300 callers got their status", cli.Stdout);
            Assert.Contains("ran exactly once 300/300 (more than once 0, never 0); order violations 0", cli.Stdout);
            var usage = await ChildProcess.RunAsync(Repo.Lockstep, ["messaging", "probe", "--node", address, "--requests", "0"], TimeSpan.FromSeconds(60));
            Assert.Equal(2, usage.ExitCode);
            Assert.Contains("requests must be 1..", usage.Stderr);

            using var bad = await http.PostAsync("/v1/messaging/probe/run", new StringContent("{\"requests\":0}", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
            Assert.Contains("requests must be 1..", await bad.Content.ReadAsStringAsync());
            using var garbage = await http.PostAsync("/v1/messaging/probe/run", new StringContent("{nope", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.BadRequest, garbage.StatusCode);
            Assert.Contains("is not a probe run", await garbage.Content.ReadAsStringAsync());
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task A_bad_holder_cap_stops_serve_before_start_with_one_line()
    {
        var outcome = await ChildProcess.RunAsync(Repo.Lockstep, ["serve", "--port", "0", "--http-port", "0", "--nbd-port", "0", "--holder-cap", "1"], TimeSpan.FromSeconds(60));
        Assert.Equal(2, outcome.ExitCode);
        Assert.Equal("lockstep: Messaging:HolderCap must be at least 2 (--holder-cap), not 1", outcome.StderrLines.Last());
    }

    [Fact]
    public async Task A_bad_link_setting_stops_serve_before_start_with_one_line()
    {
        var outcome = await ChildProcess.RunAsync(
            Repo.Lockstep, ["serve", "--port", "0", "--http-port", "0", "--nbd-port", "0"], TimeSpan.FromSeconds(60),
            new Dictionary<string, string> { ["Lockstep__Messaging__Link"] = "udp" });
        Assert.Equal(2, outcome.ExitCode);
        Assert.Equal("lockstep: Messaging:Link must be tcp or akka, not 'udp'", outcome.StderrLines.Last());
    }

    [Fact]
    public async Task A_bad_lock_transport_stops_serve_before_start_with_one_line()
    {
        var outcome = await ChildProcess.RunAsync(
            Repo.Lockstep, ["serve", "--port", "0", "--http-port", "0", "--nbd-port", "0"], TimeSpan.FromSeconds(60),
            new Dictionary<string, string> { ["Lockstep__Locking__Transport"] = "bogus" });
        Assert.Equal(2, outcome.ExitCode);
        Assert.Equal(
            "lockstep: Locking:Transport must be reliable or direct (Lockstep:Locking:Transport, env Lockstep__Locking__Transport), not 'bogus'",
            outcome.StderrLines.Last());
    }
}
