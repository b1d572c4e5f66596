using System.CommandLine;
using Spectre.Console;

namespace Lockstep.Hosting.Volumes;

/// <summary>
/// <c>lockstep volume …</c>: create, list, show, verify, add-leg, fail-leg, remove-leg, delete over a node's
/// <c>/v1/volumes</c> API. Leg paths are made absolute on this side (the node does not know the caller's folder).
/// </summary>
/// <example><code>
/// lockstep volume create vm1 --size 4G --leg /srv/a/vm1.leg --leg /srv/b/vm1.leg
/// lockstep volume list
/// lockstep volume verify vm1 || echo "legs differ"
/// </code></example>
public static class VolumeCommands
{
    /// <summary>Default node URL.</summary>
    public const string DefaultNode = "http://127.0.0.1:8558";

    /// <summary>The <c>volume</c> command group.</summary>
    public static Command Create()
    {
        var node = new Option<string>("--node")
        {
            Description = $"Management URL of the node to ask, or host:port (default $LOCKSTEP_NODE or {DefaultNode}).",
            Recursive = true,
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable("LOCKSTEP_NODE") is { Length: > 0 } env ? env : DefaultNode,
        };
        var json = new Option<bool>("--json") { Description = "Print the node's JSON answer instead of a table.", Recursive = true };
        var group = new Command("volume", "Create, inspect and verify mirrored volumes.") { node, json };

        var name = () => new Argument<string>("name") { Description = "Volume name (also the NBD export name)." };

        // create
        var createName = name();
        var size = new Option<string>("--size") { Description = "Size, e.g. 4G (K, M, G, T are powers of 1024).", Required = true };
        var legs = new Option<string[]>("--leg") { Description = "Leg file (created if missing) or block device; repeat for each leg.", Required = true, AllowMultipleArgumentsPerToken = false };
        var chunk = new Option<string>("--chunk") { Description = "Bitmap chunk, a power of two ≥ 64K (default 1M).", DefaultValueFactory = _ => "1M" };
        var maxNodes = new Option<int>("--max-nodes") { Description = "Nodes that may ever write the volume, 1..64 (default 8).", DefaultValueFactory = _ => 8 };
        var cache = () => new Option<string>("--cache")
        {
            Description = "direct (O_DIRECT, the default; required when legs are shared between hosts) or writeback (page cache; only when every node opening the volume shares one kernel).",
        };
        var createCache = cache();
        createCache.DefaultValueFactory = _ => "direct";
        var create = new Command("create", "Create a volume mirrored over the given legs.") { createName, size, legs, chunk, maxNodes, createCache };
        create.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            if (!SizeText.TryParse(parse.GetValue(size), out var bytes, out var sizeError))
            {
                throw new VolumeCliException($"--size: {sizeError}", VolumeExit.Usage);
            }

            if (!SizeText.TryParse(parse.GetValue(chunk), out var chunkBytes, out var chunkError) || chunkBytes > int.MaxValue)
            {
                throw new VolumeCliException($"--chunk: {chunkError ?? "too large"}", VolumeExit.Usage);
            }

            var paths = (parse.GetValue(legs) ?? []).Select(Path.GetFullPath).ToArray();
            var mode = CacheMode(parse.GetValue(createCache));
            var answer = await client.CreateAsync(new CreateVolumeRequest(parse.GetValue(createName), bytes, null, (int)chunkBytes, parse.GetValue(maxNodes), paths, mode), ct);
            output.Write(answer.Json, parse.GetValue(json), c =>
            {
                c.MarkupLine($"created volume [bold]{Markup.Escape(answer.Value.Name)}[/] ({SizeText.Format(answer.Value.SizeBytes)}, {answer.Value.Legs.Count} legs)");
                foreach (var part in VolumeRendering.Show(answer.Value))
                {
                    c.Write(part);
                }
            });
        }));

        // list
        var list = new Command("list", "List every volume of the cluster.");
        list.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.ListAsync(ct);
            output.Write(answer.Json, parse.GetValue(json), c =>
            {
                if (answer.Value.Volumes.Count == 0)
                {
                    c.WriteLine("no volumes (create one with `lockstep volume create NAME --size 4G --leg PATH --leg PATH`)");
                }
                else
                {
                    c.Write(VolumeRendering.ListTable(answer.Value));
                }
            });
        }));

        // show
        var showName = name();
        var show = new Command("show", "Show a volume and its legs.") { showName };
        show.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.ShowAsync(parse.GetValue(showName)!, ct);
            output.Write(answer.Json, parse.GetValue(json), c =>
            {
                foreach (var part in VolumeRendering.Show(answer.Value))
                {
                    c.Write(part);
                }
            });
        }));

        // set
        var setName = name();
        var setCache = cache();
        var set = new Command("set", "Change a volume's settings (applied when a node next opens the volume).") { setName, setCache };
        set.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            if (parse.GetValue(setCache) is not { } given)
            {
                throw new VolumeCliException("nothing to change: give --cache direct|writeback", VolumeExit.Usage);
            }

            var answer = await client.SetAsync(parse.GetValue(setName)!, new VolumeSettingsRequest(CacheMode(given)), ct);
            output.Write(answer.Json, parse.GetValue(json), c => Render(c, answer.Value));
        }));

        // verify
        var verifyName = name();
        var verify = new Command("verify", "Compare the legs chunk by chunk; exits 5 if any chunk differs.") { verifyName };
        verify.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.VerifyAsync(parse.GetValue(verifyName)!, ct);
            output.Write(answer.Json, parse.GetValue(json), c =>
            {
                foreach (var line in VolumeRendering.VerifyLines(answer.Value))
                {
                    c.WriteLine(line);
                }
            });
            if (!answer.Value.Identical)
            {
                throw new VolumeCliException(answer.Value.DifferingChunks.Count > 0
                    ? $"volume '{answer.Value.Name}': {answer.Value.DifferingChunks.Count} chunk(s) differ"
                    : $"volume '{answer.Value.Name}': fewer than two legs compared", VolumeExit.LegsDiffer);
            }
        }));

        // add-leg, fail-leg, remove-leg, delete
        var addName = name();
        var addPath = new Argument<string>("path") { Description = "New leg file or block device." };
        var addLeg = new Command("add-leg", "Add a leg; the data is copied onto it before it counts as in sync.") { addName, addPath };
        addLeg.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.AddLegAsync(parse.GetValue(addName)!, Path.GetFullPath(parse.GetValue(addPath)!), ct);
            output.Write(answer.Json, parse.GetValue(json), c => Render(c, answer.Value));
        }));

        var failName = name();
        var failLeg = LegCommand("fail-leg", "Take a leg out of the mirror.", failName, out var failId);
        var reason = new Option<string>("--reason") { Description = "Why (kept in the journal)." };
        failLeg.Options.Add(reason);
        failLeg.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.FailLegAsync(parse.GetValue(failName)!, LegId(parse, failId), parse.GetValue(reason), ct);
            output.Write(answer.Json, parse.GetValue(json), c => Render(c, answer.Value));
        }));

        var removeName = name();
        var removeLeg = LegCommand("remove-leg", "Remove a failed or missing leg.", removeName, out var removeId);
        removeLeg.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.RemoveLegAsync(parse.GetValue(removeName)!, LegId(parse, removeId), ct);
            output.Write(answer.Json, parse.GetValue(json), c => Render(c, answer.Value));
        }));

        var deleteName = name();
        var delete = new Command("delete", "Delete a volume (its legs' superblocks are wiped; the data stays in the files).") { deleteName };
        delete.SetAction((parse, ct) => RunAsync(parse, node, async (client, output) =>
        {
            var answer = await client.DeleteAsync(parse.GetValue(deleteName)!, ct);
            output.Write(answer.Json, parse.GetValue(json), c =>
                c.WriteLine($"deleted volume '{answer.Value.Name}'" + (answer.Value.Pending is { } p ? $" ({p})" : "")));
        }));

        foreach (var command in new[] { create, list, show, set, verify, addLeg, failLeg, removeLeg, delete })
        {
            group.Subcommands.Add(command);
        }

        return group;
    }

    private static string CacheMode(string? text) =>
        Actors.Volumes.VolumeState.ParseCacheMode(text) is { } mode
            ? Actors.Volumes.VolumeState.CacheModeName(mode)
            : throw new VolumeCliException($"--cache: '{text}' is neither direct nor writeback", VolumeExit.Usage);

    private static Command LegCommand(string verb, string description, Argument<string> volume, out Argument<string> legId)
    {
        legId = new Argument<string>("leg-id") { Description = "Leg UUID (see volume show)." };
        return new Command(verb, description) { volume, legId };
    }

    private static Guid LegId(ParseResult parse, Argument<string> argument) =>
        Guid.TryParse(parse.GetValue(argument), out var id) ? id : throw new VolumeCliException($"'{parse.GetValue(argument)}' is not a leg UUID (see volume show)", VolumeExit.Usage);

    private static void Render(IAnsiConsole console, VolumeView view)
    {
        foreach (var part in VolumeRendering.Show(view))
        {
            console.Write(part);
        }
    }

    private static async Task<int> RunAsync(ParseResult parse, Option<string> node, Func<VolumeHttpClient, Output, Task> body)
    {
        var text = parse.GetValue(node) ?? DefaultNode;
        if (VolumeHttpClient.ParseNode(text) is not { } url)
        {
            Console.Error.WriteLine($"lockstep: --node '{text}' is neither a URL nor host:port");
            return VolumeExit.Usage;
        }

        using var client = new VolumeHttpClient(url);
        var console = AnsiConsole.Console;
        if (Console.IsOutputRedirected)
        {
            // Spectre assumes 80 columns when piped; leg paths and UUIDs need more.
            console.Profile.Width = 200;
        }

        try
        {
            await body(client, new Output(console));
            return VolumeExit.Ok;
        }
        catch (VolumeCliException e)
        {
            Console.Error.WriteLine($"lockstep: {e.Message}");
            return e.ExitCode;
        }
    }

    private sealed record Output(IAnsiConsole Console)
    {
        public void Write(string json, bool raw, Action<IAnsiConsole> render)
        {
            if (raw)
            {
                System.Console.Out.WriteLine(json);
            }
            else
            {
                render(Console);
            }
        }
    }
}
