using System.CommandLine;
using System.Text.Json;
using Lockstep.Hosting.Management;
using Spectre.Console;

namespace Lockstep.Hosting.Cli;

/// <summary>
/// <c>lockstep cluster …</c> and <c>lockstep cluster-sharding …</c>: Petabridge.Cmd's cluster commands
/// over the management HTTP API of one node (<c>--node</c>), tables for people, <c>--json</c> for scripts.
/// </summary>
/// <example><code>
/// lockstep cluster show --node 127.0.0.1:8559
/// lockstep cluster down 127.0.0.1:4055 --node http://127.0.0.1:8559
/// lockstep cluster-sharding region-stats -r lock --json
/// </code></example>
public static class ClusterCommands
{
    /// <summary>Default node when neither <c>--node</c> nor <c>LOCKSTEP_NODE</c> is given.</summary>
    public const string DefaultNode = "http://127.0.0.1:8558";

    /// <summary><c>--node URL</c>, on every subcommand of a group.</summary>
    public static Option<string> NodeOption() => new("--node")
    {
        Description = $"Management URL of the node to ask, or host:port (default $LOCKSTEP_NODE or {DefaultNode}).",
        Recursive = true,
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("LOCKSTEP_NODE") is { Length: > 0 } env ? env : DefaultNode,
    };

    /// <summary><c>--json</c>: print the node's JSON answer unchanged.</summary>
    public static Option<bool> JsonOption() => new("--json")
    {
        Description = "Print the node's JSON answer instead of a table.",
        Recursive = true,
    };

    /// <summary>The <c>cluster</c> command group.</summary>
    public static Command Cluster()
    {
        var node = NodeOption();
        var json = JsonOption();
        var group = new Command("cluster", "Show and change cluster membership through a node's management API.") { node, json };

        var show = new Command("show", "List the members as the node sees them.");
        show.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.MembersAsync(ct);
            if (parse.GetValue(json))
            {
                output.WriteRawJson(answer.Json);
            }
            else
            {
                output.Console.Write(ClusterRendering.MembersTable(answer.Value));
                output.Console.WriteLine(ClusterRendering.Summary(answer.Value));
            }
        }));

        var leaveAddress = AddressArgument();
        var leave = new Command("leave", "Ask a member to leave the cluster gracefully.") { leaveAddress };
        leave.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
            output.Message(await client.LeaveAsync(parse.GetValue(leaveAddress)!, ct), parse.GetValue(json))));

        var downAddress = AddressArgument();
        var down = new Command("down", "Mark a member Down; it is removed without a handover.") { downAddress };
        down.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
            output.Message(await client.DownAsync(parse.GetValue(downAddress)!, ct), parse.GetValue(json))));

        var downUnreachable = new Command("down-unreachable", "Mark every member the node sees as unreachable Down.");
        downUnreachable.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var members = await client.MembersAsync(ct);
            var answers = new List<ManagementMessage>();
            foreach (var unreachable in members.Value.Unreachable)
            {
                answers.Add((await client.DownAsync(unreachable.Node, ct)).Value);
            }

            if (parse.GetValue(json))
            {
                output.WriteRawJson(JsonSerializer.Serialize(answers, ManagementJson.Options));
            }
            else if (answers.Count == 0)
            {
                output.Console.WriteLine("No unreachable members.");
            }
            else
            {
                answers.ForEach(a => output.Console.WriteLine(a.Message));
            }
        }));

        var broadcastStats = new Command("broadcast-stats", "Ordered broadcast per node and stream: rounds, messages by type, in flight, completion p50/p99.");
        broadcastStats.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.BroadcastAsync(ct);
            if (parse.GetValue(json))
            {
                output.WriteRawJson(answer.Json);
            }
            else
            {
                output.Console.Write(ClusterRendering.BroadcastTable(answer.Value));
                answer.Value.Missing.ToList().ForEach(m => output.Console.WriteLine($"{m} did not answer"));
            }
        }));

        var pingStream = new Option<string>("--stream") { Description = "Stream to ping (every node joins 'global').", DefaultValueFactory = _ => "global" };
        var broadcastPing = new Command("broadcast-ping", "Send a no-op through the ordered broadcast and print how long each node took to process it.") { pingStream };
        broadcastPing.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.BroadcastPingAsync(parse.GetValue(pingStream)!, ct);
            if (parse.GetValue(json))
            {
                output.WriteRawJson(answer.Json);
            }
            else
            {
                output.Console.Write(ClusterRendering.PingTable(answer.Value));
                output.Console.WriteLine($"round {answer.Value.Seq} on '{answer.Value.Stream}' processed everywhere in {answer.Value.CompletionMs:0.0} ms");
                answer.Value.Missing.ToList().ForEach(m => output.Console.WriteLine($"{m} did not answer"));
            }
        }));

        group.Subcommands.Add(show);
        group.Subcommands.Add(broadcastStats);
        group.Subcommands.Add(broadcastPing);
        group.Subcommands.Add(leave);
        group.Subcommands.Add(down);
        group.Subcommands.Add(downUnreachable);
        return group;
    }

    /// <summary>The <c>cluster-sharding</c> command group.</summary>
    public static Command ClusterSharding()
    {
        var node = NodeOption();
        var json = JsonOption();
        var group = new Command("cluster-sharding", "Inspect shard regions through a node's management API.") { node, json };

        var region = new Option<string>("--region", "-r") { Description = "Shard region (entity type) name.", Required = true };
        var stats = new Command("region-stats", "Shards and entity counts of a region, per node.") { region };
        stats.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var name = parse.GetValue(region)!;
            var answer = await client.ShardsAsync(name, ct);
            if (parse.GetValue(json))
            {
                output.WriteRawJson(answer.Json);
            }
            else
            {
                output.Console.Write(ClusterRendering.ShardsTable(answer.Value));
                output.Console.WriteLine(ClusterRendering.ShardsSummary(name, answer.Value));
            }
        }));

        group.Subcommands.Add(stats);
        return group;
    }

    private static Argument<string> AddressArgument() => new("address")
    {
        Description = "Member address, akka.tcp://lockstep@host:port or host:port.",
    };

    /// <summary>Runs one command: resolves <c>--node</c>, maps failures to one line and an exit code.</summary>
    private static async Task<int> RunAsync(ParseResult parse, Option<string> node, Func<ManagementClient, CommandOutput, Task> body)
    {
        var text = parse.GetValue(node) ?? DefaultNode;
        if (ManagementClient.ParseNode(text) is not { } url)
        {
            Console.Error.WriteLine($"lockstep: --node '{text}' is neither a URL nor host:port");
            return CliExit.Usage;
        }

        using var client = new ManagementClient(url);
        try
        {
            var console = AnsiConsole.Console;
            if (Console.IsOutputRedirected)
            {
                // Spectre assumes 80 columns when piped; addresses alone are ~35, so give tables room.
                console.Profile.Width = 200;
            }

            await body(client, new CommandOutput(console, Console.Out));
            return CliExit.Ok;
        }
        catch (CliException ex)
        {
            Console.Error.WriteLine($"lockstep: {ex.Message}");
            return ex.ExitCode;
        }
    }

    /// <summary>Where a command writes: the Spectre console for people, stdout for raw JSON.</summary>
    private sealed record CommandOutput(IAnsiConsole Console, TextWriter Raw)
    {
        public void WriteRawJson(string json) => Raw.WriteLine(json);

        public void Message(ApiAnswer<ManagementMessage> answer, bool json)
        {
            if (json)
            {
                WriteRawJson(answer.Json);
            }
            else
            {
                Console.WriteLine(answer.Value.Message);
            }
        }
    }
}
