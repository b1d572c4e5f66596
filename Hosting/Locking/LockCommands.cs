using System.CommandLine;
using System.Text;
using System.Text.Json;

namespace Lockstep.Hosting.Locking;

/// <summary>
/// <c>lockstep lock list|dump|torture|bench</c>: the DLM over one node's management HTTP API.
/// <code>
/// lockstep lock list --node 127.0.0.1:8559
/// lockstep lock dump torture --node 127.0.0.1:8559
/// lockstep lock torture --clients 12 --iterations 1000 --node 127.0.0.1:8559
/// </code>
/// Exit codes: 0 done, 1 the node answered with an error (or the torture count mismatched),
/// 2 usage, 3 node unreachable.
/// </summary>
public static class LockCommands
{
    private static readonly JsonSerializerOptions Web = new(JsonSerializerDefaults.Web);

    /// <summary>The <c>lock</c> command group.</summary>
    public static Command Create()
    {
        var group = new Command("lock", "Inspect and exercise the distributed lock manager.");

        var node = NodeOption();
        var json = new Option<bool>("--json") { Description = "Print the node's JSON answer as is." };
        var list = new Command("list", "List lockspaces with their LVB length and node slots.") { node, json };
        list.SetAction((parse, ct) => Run(parse.GetValue(node), TimeSpan.FromSeconds(30), client => ListAsync(client, parse.GetValue(json), Console.Out, ct)));
        group.Subcommands.Add(list);

        var dumpNode = NodeOption();
        var dumpJson = new Option<bool>("--json") { Description = "Print the node's JSON answer as is." };
        var lockspace = new Argument<string>("lockspace") { Description = "Lockspace to dump." };
        var dump = new Command("dump", "Show every resource of a lockspace: master, LVB, granted/convert/wait queues (dlm_tool lockdebug).") { lockspace, dumpNode, dumpJson };
        dump.SetAction((parse, ct) => Run(parse.GetValue(dumpNode), TimeSpan.FromSeconds(30), client => DumpAsync(client, parse.GetValue(lockspace)!, parse.GetValue(dumpJson), Console.Out, ct)));
        group.Subcommands.Add(dump);

        var tortureNode = NodeOption();
        var clients = new Option<int>("--clients") { Description = "Concurrent clients, spread over every member.", DefaultValueFactory = _ => 3 };
        var iterations = new Option<int>("--iterations") { Description = "Increments per client.", DefaultValueFactory = _ => 1000 };
        var timeout = new Option<int>("--timeout") { Description = "Seconds the run may take.", DefaultValueFactory = _ => 300 };
        var torture = new Command("torture", "Counter torture: clients on every node lock EX, increment a counter in the LVB, unlock; prints expected and found.") { tortureNode, clients, iterations, timeout };
        torture.SetAction((parse, ct) => Run(parse.GetValue(tortureNode), TimeSpan.FromSeconds(parse.GetValue(timeout) + 30), client => TortureAsync(client, parse.GetValue(clients), parse.GetValue(iterations), parse.GetValue(timeout), Console.Out, ct)));
        group.Subcommands.Add(torture);
        group.Subcommands.Add(SessionTortureCommand());
        group.Subcommands.Add(CheckIntervalsCommand());
        group.Subcommands.Add(HoldCommand());
        group.Subcommands.Add(LockBench.Command());
        group.Subcommands.Add(LockProbe.Command());
        return group;
    }

    private static Command SessionTortureCommand()
    {
        var nodes = new Option<string[]>("--node") { Description = "Management HTTP address of a node (gRPC on port + 1000); repeat for each node. The first masters the counter and must stay up.", Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false };
        var perNode = new Option<int>("--clients-per-node") { Description = "gRPC sessions per node.", DefaultValueFactory = _ => 3 };
        var iterations = new Option<int>("--iterations") { Description = "Increments each client completes.", DefaultValueFactory = _ => 100 };
        var holdMs = new Option<int>("--max-hold-ms") { Description = "Each EX hold lasts a random time up to this.", DefaultValueFactory = _ => 2 };
        var intervalLog = new Option<string?>("--interval-log") { Description = "Append every EX hold (node, client, start, end) to this file; check it with `lockstep lock check-intervals`." };
        var timeout = new Option<int>("--timeout") { Description = "Seconds the run may take.", DefaultValueFactory = _ => 300 };
        var patience = new Option<int>("--patience") { Description = "Seconds a request may go unanswered on a live stream before it counts as never returned.", DefaultValueFactory = _ => 60 };
        var shared = new Option<bool>("--shared-counter") { Description = "Other runs (e.g. one per node) increment the same counter meanwhile: check only found >= completed here; whoever started them checks the total." };
        var command = new Command("torture-sessions", "Counter torture from this process through gRPC sessions on every --node; survives nodes dying and coming back (clients reconnect). Exit 1 unless every request returned and the counter is within the completed increments.")
        {
            nodes, perNode, iterations, holdMs, intervalLog, timeout, patience, shared,
        };
        command.SetAction(async (parse, ct) =>
        {
            var parsed = (parse.GetValue(nodes) ?? []).Select(n => (Text: n, Uri: ParseNode(n))).ToList();
            if (parsed.Count == 0)
            {
                await Console.Error.WriteLineAsync("lockstep: torture-sessions needs at least one --node");
                return 2;
            }

            if (parsed.FirstOrDefault(p => p.Uri is null).Text is { } bad)
            {
                await Console.Error.WriteLineAsync($"lockstep: --node '{bad}' is neither a URL nor host:port");
                return 2;
            }

            if (parse.GetValue(perNode) < 1 || parse.GetValue(iterations) < 1 || parse.GetValue(holdMs) < 0 || parse.GetValue(timeout) < 1 || parse.GetValue(patience) < 1)
            {
                await Console.Error.WriteLineAsync("lockstep: --clients-per-node, --iterations, --timeout and --patience must be at least 1, --max-hold-ms at least 0");
                return 2;
            }

            var settings = new LockSessionTortureSettings(parsed.Select(p => p.Uri!).ToList(), parse.GetValue(perNode), parse.GetValue(iterations),
                TimeSpan.FromMilliseconds(parse.GetValue(holdMs)), parse.GetValue(intervalLog), TimeSpan.FromSeconds(parse.GetValue(timeout)), TimeSpan.FromSeconds(parse.GetValue(patience)),
                SharedCounter: parse.GetValue(shared));
            try
            {
                var result = await LockSessionTorture.RunAsync(settings, Console.Out, ct);
                foreach (var error in result.Errors)
                {
                    await Console.Out.WriteLineAsync($"error: {error}");
                }

                await Console.Out.WriteLineAsync(result.ToString());
                if (!result.Ok)
                {
                    await Console.Error.WriteLineAsync($"lockstep: torture FAILED: {result}");
                }

                return result.Ok ? 0 : 1;
            }
            catch (Exception ex) when (ex is global::Grpc.Core.RpcException or LockBenchException or OperationCanceledException or SessionLostException or TimeoutException)
            {
                await Console.Error.WriteLineAsync($"lockstep: torture-sessions: {ex.GetBaseException().Message}");
                return 3;
            }
        });
        return command;
    }

    private static Command CheckIntervalsCommand()
    {
        var file = new Argument<string>("file") { Description = "Interval log written by `lockstep lock torture-sessions --interval-log`." };
        var command = new Command("check-intervals", "Check that no two EX holds of a resource in an interval log overlap. Exit 1 on an overlap, 2 on an unreadable log.") { file };
        command.SetAction(async parse =>
        {
            var path = parse.GetValue(file)!;
            List<HoldInterval> holds;
            try
            {
                holds = HoldIntervalLog.Parse(File.ReadLines(path));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
            {
                await Console.Error.WriteLineAsync($"lockstep: {path}: {ex.Message}");
                return 2;
            }

            var overlaps = HoldIntervalChecker.FindOverlaps(holds);
            await Console.Out.WriteAsync(HoldIntervalChecker.Report(holds, overlaps));
            if (holds.Count == 0)
            {
                await Console.Error.WriteLineAsync($"lockstep: {path} holds no intervals");
                return 1;
            }

            return overlaps.Count == 0 ? 0 : 1;
        });
        return command;
    }

    private static Command HoldCommand()
    {
        var node = NodeOption();
        var resource = new Argument<string>("resource") { Description = "Resource to hold EX." };
        var lockspace = new Option<string>("--lockspace") { Description = "Lockspace.", DefaultValueFactory = _ => "torture" };
        var eventLog = new Option<string>("--event-log") { Description = "File the events are appended to (monotonic ns, event).", Required = true };
        var seconds = new Option<int>("--seconds") { Description = "How long to run.", DefaultValueFactory = _ => 60 };
        var probeMs = new Option<int>("--probe-ms") { Description = "After losing the lock, ask for it again (NOQUEUE) this often.", DefaultValueFactory = _ => 300 };
        var valBlk = new Option<bool>("--valblk") { Description = "Ask with VALBLK; the grant line says valnotvalid when the LVB was not valid." };
        var command = new Command("hold", "Hold one EX lock and log when it is granted, lost (FENCED or the node's stream broke) and every later attempt at it. Exit 1 if anything was granted after the loss.")
        {
            resource, node, lockspace, eventLog, seconds, probeMs, valBlk,
        };
        command.SetAction(async (parse, ct) =>
        {
            var text = parse.GetValue(node) ?? DefaultNode;
            if (ParseNode(text) is not { } uri)
            {
                await Console.Error.WriteLineAsync($"lockstep: --node '{text}' is neither a URL nor host:port");
                return 2;
            }

            if (parse.GetValue(seconds) < 1 || parse.GetValue(probeMs) < 10)
            {
                await Console.Error.WriteLineAsync("lockstep: --seconds must be at least 1 and --probe-ms at least 10");
                return 2;
            }

            try
            {
                var stale = await LockHolder.RunAsync(new LockHolderSettings(uri, parse.GetValue(resource)!, parse.GetValue(eventLog)!,
                    TimeSpan.FromSeconds(parse.GetValue(seconds)), TimeSpan.FromMilliseconds(parse.GetValue(probeMs)), parse.GetValue(lockspace)!, parse.GetValue(valBlk)), Console.Out, ct);
                if (stale)
                {
                    await Console.Error.WriteLineAsync("lockstep: a lock was granted to this client after it had lost it (stale grant)");
                }

                return stale ? 1 : 0;
            }
            catch (Exception ex) when (ex is global::Grpc.Core.RpcException or LockBenchException or SessionLostException or TimeoutException)
            {
                await Console.Error.WriteLineAsync($"lockstep: hold: {ex.GetBaseException().Message}");
                return 3;
            }
        });
        return command;
    }

    /// <summary>Default node: <c>LOCKSTEP_NODE</c>, else the default management port on this host.</summary>
    public static string DefaultNode => Environment.GetEnvironmentVariable("LOCKSTEP_NODE") is { Length: > 0 } env ? env : "http://127.0.0.1:8558";

    /// <summary>Turns <c>host:port</c> or a URL into the node's base address; null if it is neither.</summary>
    public static Uri? ParseNode(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        var withScheme = text.Contains("://", StringComparison.Ordinal) ? text : "http://" + text;
        return Uri.TryCreate(withScheme, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" && uri.Port > 0 ? uri : null;
    }

    public static async Task<int> ListAsync(HttpClient client, bool json, TextWriter output, CancellationToken ct)
    {
        var (text, lockspaces) = await GetAsync<List<LockspaceView>>(client, "/v1/lockspaces", ct);
        if (json)
        {
            await output.WriteLineAsync(text);
            return 0;
        }

        await output.WriteLineAsync($"{"LOCKSPACE",-24} {"LVB",4}  SLOTS");
        foreach (var ls in lockspaces)
        {
            await output.WriteLineAsync($"{ls.Name,-24} {ls.LvbLength,4}  {string.Join(' ', ls.Slots.Select(s => $"{s.Slot}:{s.NodeId}"))}");
        }

        return 0;
    }

    public static async Task<int> DumpAsync(HttpClient client, string lockspace, bool json, TextWriter output, CancellationToken ct)
    {
        var (text, view) = await GetAsync<LocksView>(client, $"/v1/locks?lockspace={Uri.EscapeDataString(lockspace)}", ct);
        if (json)
        {
            await output.WriteLineAsync(text);
            return 0;
        }

        await output.WriteAsync(Render(view));
        return 0;
    }

    /// <summary>Renders a dump the way <c>dlm_tool lockdebug -v</c> lays it out.</summary>
    public static string Render(LocksView view)
    {
        var text = new StringBuilder();
        foreach (var r in view.Resources)
        {
            text.Append($"Resource {r.Resource}  master {r.Master}  lvb seq {r.LvbSeq}");
            text.AppendLine(r.ValueNotValid ? "  VALNOTVALID" : string.Empty);
            text.AppendLine($"LVB {string.Join(' ', Chunks(r.Lvb, 16))}");
            Queue(text, "Granted", r.Granted, l => l.Granted ?? "--");
            Queue(text, "Conversion", r.Converting, l => $"{l.Granted} ({l.Requested})");
            Queue(text, "Waiting", r.Waiting, l => $"-- ({l.Requested})");
            text.AppendLine();
        }

        if (view.Resources.Count == 0)
        {
            text.AppendLine($"lockspace {view.Lockspace}: no resource holds a lock");
        }

        foreach (var missing in view.MissingNodes)
        {
            text.AppendLine($"warning: {missing} did not answer; its resources are missing");
        }

        return text.ToString();
    }

    public static async Task<int> TortureAsync(HttpClient client, int clients, int iterations, int timeoutSeconds, TextWriter output, CancellationToken ct)
    {
        var (_, result) = await SendAsync<TortureView>(client, HttpMethod.Post, $"/v1/locks/torture?clients={clients}&iterations={iterations}&timeoutSeconds={timeoutSeconds}", ct);
        foreach (var n in result.Nodes)
        {
            await output.WriteLineAsync($"node {n.Node}: {n.Increments} increments{(n.Error.Length > 0 ? $", error: {n.Error}" : string.Empty)}");
        }

        var lost = result.Lost ?? [];
        foreach (var l in lost)
        {
            await output.WriteLineAsync($"node {l.Node}: LOST, {l.Clients} clients unanswered: {l.Reason}");
        }

        var rate = result.Seconds > 0 ? result.Expected / result.Seconds : 0;
        await output.WriteLineAsync($"expected {result.Expected} found {result.Found} ({result.Seconds:F2} s, {rate:F0} increments/s)");
        if (lost.Count > 0)
        {
            // The lost clients' answers died with their node; their completed writes are in the counter.
            await output.WriteLineAsync($"lost clients: {lost.Sum(l => l.Clients)}, their increments in the counter: {result.Found - result.Expected} (at most {result.LostMaximum})");
        }

        if (!result.Ok)
        {
            var allowed = lost.Count > 0 ? $" (allowed {result.Expected}..{result.Expected + result.LostMaximum} with lost clients)" : string.Empty;
            await Console.Error.WriteLineAsync($"lockstep: torture FAILED: expected {result.Expected}, found {result.Found}{allowed}");
        }

        return result.Ok ? 0 : 1;
    }

    private static void Queue(StringBuilder text, string title, IReadOnlyList<LockView> locks, Func<LockView, string> modes)
    {
        text.AppendLine(title);
        foreach (var l in locks)
        {
            var flags = l.Flags.Length > 0 ? $" {l.Flags}" : string.Empty;
            text.AppendLine($"{l.LockId,16} {modes(l),-10} node {l.Node} slot {l.Slot}{(l.Orphan ? " ORPHAN" : string.Empty)}{flags}");
        }
    }

    private static IEnumerable<string> Chunks(string hex, int size)
    {
        for (var i = 0; i < hex.Length; i += size)
        {
            yield return hex.Substring(i, Math.Min(size, hex.Length - i));
        }
    }

    private static Option<string> NodeOption() => new("--node")
    {
        Description = "Management HTTP address of a node (URL or host:port; default $LOCKSTEP_NODE or 127.0.0.1:8558).",
    };

    private static async Task<int> Run(string? nodeText, TimeSpan timeout, Func<HttpClient, Task<int>> body)
    {
        var text = nodeText ?? DefaultNode;
        var node = ParseNode(text);
        if (node is null)
        {
            await Console.Error.WriteLineAsync($"lockstep: --node '{text}' is neither a URL nor host:port");
            return 2;
        }

        using var client = new HttpClient { BaseAddress = node, Timeout = timeout };
        try
        {
            return await body(client);
        }
        catch (LockCliException ex)
        {
            await Console.Error.WriteLineAsync($"lockstep: {ex.Message}");
            return 1;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            await Console.Error.WriteLineAsync($"lockstep: no answer from {node}: {ex.GetBaseException().Message}");
            return 3;
        }
    }

    private static Task<(string Text, T Value)> GetAsync<T>(HttpClient client, string path, CancellationToken ct) =>
        SendAsync<T>(client, HttpMethod.Get, path, ct);

    private static async Task<(string Text, T Value)> SendAsync<T>(HttpClient client, HttpMethod method, string path, CancellationToken ct)
    {
        using var response = await client.SendAsync(new HttpRequestMessage(method, path), ct);
        var text = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode)
        {
            var error = TryError(text) ?? $"HTTP {(int)response.StatusCode}";
            throw new LockCliException(error);
        }

        var value = JsonSerializer.Deserialize<T>(text, Web) ?? throw new LockCliException($"empty answer from {path}");
        return (text, value);
    }

    private static string? TryError(string text)
    {
        try
        {
            return JsonSerializer.Deserialize<LockError>(text, Web)?.Error;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private sealed class LockCliException(string message) : Exception(message);
}
