using System.CommandLine;

namespace Lockstep.Hosting.Messaging;

/// <summary>
/// <c>lockstep messaging bench</c>: the reliable layer against plain Ask, three nodes in one process.
/// <code>
/// lockstep messaging bench --requests 20000 --callers 64 --faults
/// </code>
/// Exit codes: 0 done, 1 some call failed or answered wrongly, 2 usage.
/// </summary>
public static class MessagingCommands
{
    /// <summary>The <c>messaging</c> command group.</summary>
    public static Command Create()
    {
        var group = new Command("messaging", "Exercise the reliable message layer.");
        var requests = new Option<int>("--requests") { Description = "Measured calls per run.", DefaultValueFactory = _ => 20_000 };
        var callers = new Option<int>("--callers") { Description = "Concurrent closed-loop callers.", DefaultValueFactory = _ => 64 };
        var faults = new Option<bool>("--faults") { Description = "Also run the layer with 2% drops, 2% duplicates and 2% delays injected." };
        var bench = new Command("bench", "Requests/s and p50/p99 through the layer versus plain Ask to a remote sharded entity, in one run (3 nodes in this process, real remoting on loopback).")
        {
            requests, callers, faults,
        };
        bench.SetAction(async (parse, ct) =>
        {
            var options = new MessagingBenchOptions(parse.GetValue(requests), parse.GetValue(callers), parse.GetValue(faults));
            if (options.Requests < 1 || options.Callers < 1)
            {
                Console.Error.WriteLine("lockstep: --requests and --callers must be at least 1");
                return 2;
            }

            var runs = await MessagingBench.RunAsync(options, Console.Out, ct);
            Console.WriteLine(LatencySummary.Table(runs));
            return runs.Any(r => r.Failed > 0) ? 1 : 0;
        });
        group.Subcommands.Add(bench);
        group.Subcommands.Add(ProbeCommand());
        return group;
    }

    /// <summary>
    /// <c>lockstep messaging probe</c>: a probe run from one running node through the layer
    /// (<c>POST /v1/messaging/probe/run</c>); with <c>--ledger</c> for every node it also combines their probe ledgers
    /// into the three numbers. Exit 1 unless every caller got its own status (and, with ledgers, every request ran
    /// exactly once in order); 2 usage; 3 a node did not answer.
    /// <code>
    /// lockstep messaging probe --node 127.0.0.1:8559 --requests 20000 --callers 32 --ledger 127.0.0.1:8559 --ledger 127.0.0.1:8560 --ledger 127.0.0.1:8561
    /// </code>
    /// </summary>
    private static Command ProbeCommand()
    {
        var node = new Option<string>("--node") { Description = "Management address of the sending node (host:port or URL; default LOCKSTEP_NODE or 127.0.0.1:8558)." };
        var requests = new Option<int>("--requests") { Description = "Requests to send.", DefaultValueFactory = _ => 1000 };
        var callers = new Option<int>("--callers") { Description = "Concurrent closed-loop callers.", DefaultValueFactory = _ => 16 };
        var timeout = new Option<int>("--timeout") { Description = "Seconds a caller waits for its status.", DefaultValueFactory = _ => 300 };
        var ledgers = new Option<string[]>("--ledger") { Description = "Management address of a node whose probe ledger counts (repeat for every node).", AllowMultipleArgumentsPerToken = false };
        var probe = new Command("probe", "Send probe requests through the reliable layer from a running node; with --ledger for every node, count runs per request and order.")
        {
            node, requests, callers, timeout, ledgers,
        };
        probe.SetAction(async (parse, ct) =>
        {
            var options = new ProbeRunOptions(parse.GetValue(requests), parse.GetValue(callers), TimeSpan.FromSeconds(parse.GetValue(timeout)));
            if (options.Validate() is { } problem)
            {
                Console.Error.WriteLine($"lockstep: {problem}");
                return 2;
            }

            var nodeText = parse.GetValue(node) ?? Locking.LockCommands.DefaultNode;
            var ledgerTexts = parse.GetValue(ledgers) ?? [];
            var addresses = new[] { nodeText }.Concat(ledgerTexts).Select(t => (Text: t, Uri: Locking.LockCommands.ParseNode(t))).ToList();
            if (addresses.FirstOrDefault(a => a.Uri is null) is { Text: { } bad })
            {
                Console.Error.WriteLine($"lockstep: '{bad}' is neither a URL nor host:port");
                return 2;
            }

            using var http = new HttpClient { Timeout = options.Timeout + TimeSpan.FromSeconds(30) };
            var web = new System.Text.Json.JsonSerializerOptions(System.Text.Json.JsonSerializerDefaults.Web);
            try
            {
                var response = await http.PostAsync(new Uri(addresses[0].Uri!, "/v1/messaging/probe/run"),
                    System.Net.Http.Json.JsonContent.Create(new ProbeRunRequest(options.Requests, options.Callers, (int)options.Timeout.TotalSeconds)), ct);
                var body = await response.Content.ReadAsStringAsync(ct);
                if (!response.IsSuccessStatusCode)
                {
                    Console.Error.WriteLine($"lockstep: HTTP {(int)response.StatusCode}: {body}");
                    return 1;
                }

                var run = System.Text.Json.JsonSerializer.Deserialize<ProbeRunResult>(body, web)!;
                Console.WriteLine(FormattableString.Invariant($"run {run.RunId}: {run.WithStatus}/{run.Requests} callers got their status in {run.Seconds:F1} s ({run.PerSecond:F0}/s); wrong status {run.WrongStatus}, failed {run.Failed}"));
                Console.WriteLine($"ran on: {string.Join(", ", run.RanOn.Select(p => $"{p.Key} {p.Value}"))}");
                foreach (var (error, count) in run.Errors)
                {
                    Console.WriteLine($"  {count}x {error}");
                }

                var ok = run.WithStatus == run.Requests;
                if (ledgerTexts.Length > 0)
                {
                    var views = new List<Lockstep.Actors.Messaging.ProbeLedgerView>();
                    foreach (var (_, uri) in addresses.Skip(1))
                    {
                        views.Add((await System.Net.Http.Json.HttpClientJsonExtensions.GetFromJsonAsync<Lockstep.Actors.Messaging.ProbeLedgerView>(http, new Uri(uri!, $"/v1/messaging/probe/stats?runId={run.RunId}"), web, ct))!);
                    }

                    var tally = Lockstep.Actors.Messaging.ProbeTally.Of(views, run.RunId, run.Requests);
                    Console.WriteLine($"ran exactly once {tally.RanExactlyOnce}/{tally.Requests} (more than once {tally.RanMoreThanOnce}, never {tally.NeverRan}); order violations {tally.OrderViolations} (all runs, {views.Sum(v => v.Channels.Count)} channels)");
                    ok &= tally.RanExactlyOnce == tally.Requests && tally.OrderViolations == 0;
                }

                return ok ? 0 : 1;
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                Console.Error.WriteLine($"lockstep: no answer: {ex.GetBaseException().Message}");
                return 3;
            }
        });
        return probe;
    }
}
