using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Lockstep.Integration.Tests.Cluster;
using Xunit;

namespace Lockstep.Integration.Tests.Volumes;

/// <summary>
/// A real <c>lockstep serve</c> with the SQLite journal in a temp data folder: volumes created and changed over HTTP
/// are still there after the process is SIGKILLed and started again; the CLI reads them.
/// </summary>
[Collection(RealProcessesCollection.Name)]
public sealed class VolumeRestartTests : IDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private readonly string _data = Path.Combine("/var/tmp", "lockstep-tests", "volint-" + Guid.NewGuid().ToString("N"));

    public VolumeRestartTests() => Directory.CreateDirectory(Path.Combine(_data, "legs"));

    private static async Task<(ChildProcess Node, HttpClient Http, int HttpPort)> StartAsync(string data)
    {
        var ports = FreePorts.Take(3);
        var node = ChildProcess.Start(Repo.Lockstep,
            ["serve", "--data", data, "--port", $"{ports[0]}", "--http-port", $"{ports[1]}", "--nbd-port", $"{ports[2]}", "--node-id", "volint"]);
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{ports[1]}/"), Timeout = TimeSpan.FromSeconds(60) };
        await Eventually.UntilAsync("the node to answer GET /v1/volumes", StartTimeout, async () =>
        {
            if (node.HasExited)
            {
                Assert.Fail($"lockstep serve exited early: {node.Outcome(-1)}");
            }

            try
            {
                using var response = await http.GetAsync("v1/volumes");
                return (response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                // Refused, or no answer within the client timeout: a node starting on a loaded machine is not ready yet.
                return (false, e.Message);
            }
        });
        return (node, http, ports[1]);
    }

    [Fact]
    public async Task Volumes_survive_a_sigkill_of_the_node()
    {
        var legA = Path.Combine(_data, "legs", "keep-a.leg");
        var legB = Path.Combine(_data, "legs", "keep-b.leg");
        string legBId;
        var (node, http, _) = await StartAsync(_data);
        await using (node)
        using (http)
        {
            using var created = await http.PostAsJsonAsync("v1/volumes", new { name = "keep", size = "16M", chunkSizeBytes = 65536, legs = new[] { legA, legB } });
            var body = await created.Content.ReadAsStringAsync();
            Assert.True(created.StatusCode == HttpStatusCode.Created, body);
            using var doc = JsonDocument.Parse(body);
            Assert.Equal("active", doc.RootElement.GetProperty("status").GetString());
            legBId = doc.RootElement.GetProperty("legs")[1].GetProperty("legId").GetString()!;

            using var failed = await http.PostAsJsonAsync($"v1/volumes/keep/legs/{legBId}/fail", new { reason = "test" });
            Assert.Equal(HttpStatusCode.OK, failed.StatusCode);

            using var duplicate = await http.PostAsJsonAsync("v1/volumes", new { name = "keep", size = "16M", legs = new[] { legA } });
            Assert.Equal(HttpStatusCode.Conflict, duplicate.StatusCode);

            // A crash, not a clean stop: only what the journal committed may come back.
            Assert.Equal(0, Signal.Kill(node.Id, 9));
            await node.WaitAsync(TimeSpan.FromSeconds(20), "the SIGKILLed node to exit");
        }

        var (again, http2, httpPort) = await StartAsync(_data);
        await using (again)
        using (http2)
        {
            using var shown = await http2.GetAsync("v1/volumes/keep");
            var text = await shown.Content.ReadAsStringAsync();
            Assert.True(shown.StatusCode == HttpStatusCode.OK, text);
            using var doc = JsonDocument.Parse(text);
            Assert.Equal(2, doc.RootElement.GetProperty("generation").GetInt64());
            Assert.Equal(16L << 20, doc.RootElement.GetProperty("sizeBytes").GetInt64());
            var legs = doc.RootElement.GetProperty("legs");
            Assert.Equal(("inSync", legA), (legs[0].GetProperty("state").GetString(), legs[0].GetProperty("path").GetString()));
            Assert.Equal(("failed", legBId), (legs[1].GetProperty("state").GetString(), legs[1].GetProperty("legId").GetString()));

            var list = await ChildProcess.RunAsync(Repo.Lockstep, ["volume", "list", "--node", $"127.0.0.1:{httpPort}"], TimeSpan.FromSeconds(60));
            Assert.True(list.ExitCode == 0, list.ToString());
            var row = list.Stdout.Split('\n').Single(l => l.Contains("keep"));
            Assert.Contains("16 MiB", row);
            Assert.Contains("1/2 in sync", row);

            var missing = await ChildProcess.RunAsync(Repo.Lockstep, ["volume", "show", "nope", "--node", $"127.0.0.1:{httpPort}"], TimeSpan.FromSeconds(60));
            Assert.Equal(1, missing.ExitCode);
            Assert.Contains("volume 'nope' does not exist", missing.Stderr);
        }
    }

    [Fact]
    public async Task The_cache_mode_is_chosen_changed_and_kept_across_a_restart_and_recovery_runs_at_start()
    {
        var legA = Path.Combine(_data, "legs", "wb-a.leg");
        var legB = Path.Combine(_data, "legs", "wb-b.leg");
        var (node, http, httpPort) = await StartAsync(_data);
        Task<ProcessOutcome> Cli(int port, params string[] args) => ChildProcess.RunAsync(Repo.Lockstep, [.. args, "--node", $"127.0.0.1:{port}"], TimeSpan.FromSeconds(60));
        await using (node)
        using (http)
        {
            var created = await Cli(httpPort, "volume", "create", "wb", "--size", "16M", "--chunk", "64K", "--cache", "writeback", "--leg", legA, "--leg", legB);
            Assert.True(created.ExitCode == 0, created.ToString());
            Assert.Contains("writeback", created.Stdout.Split('\n').Single(l => l.TrimStart().StartsWith("Cache", StringComparison.Ordinal)));

            var badCli = await Cli(httpPort, "volume", "create", "bad", "--size", "16M", "--cache", "none", "--leg", Path.Combine(_data, "legs", "bad.leg"));
            Assert.Equal(2, badCli.ExitCode);
            Assert.Contains("--cache: 'none' is neither direct nor writeback", badCli.Stderr);
            using (var badHttp = await http.PostAsJsonAsync("v1/volumes", new { name = "bad", size = "16M", legs = new[] { Path.Combine(_data, "legs", "bad.leg") }, cache = "sometimes" }))
            {
                Assert.Equal(HttpStatusCode.BadRequest, badHttp.StatusCode);
                using var error = JsonDocument.Parse(await badHttp.Content.ReadAsStringAsync());
                Assert.Equal("cache mode 'sometimes' is unknown; use direct or writeback", error.RootElement.GetProperty("message").GetString());
            }

            var list = await Cli(httpPort, "volume", "list");
            Assert.Contains("writeback", list.Stdout.Split('\n').Single(l => l.Contains("wb")));

            var noChange = await Cli(httpPort, "volume", "set", "wb");
            Assert.Equal(2, noChange.ExitCode);
            var set = await Cli(httpPort, "volume", "set", "wb", "--cache", "direct", "--json");
            Assert.True(set.ExitCode == 0, set.ToString());
            using var setDoc = JsonDocument.Parse(set.Stdout);
            Assert.Equal("direct", setDoc.RootElement.GetProperty("cache").GetString());
            Assert.Equal(2, setDoc.RootElement.GetProperty("generation").GetInt64());

            Assert.Equal(0, Signal.Kill(node.Id, 9));
            await node.WaitAsync(TimeSpan.FromSeconds(20), "the SIGKILLed node to exit");
        }

        var (again, http2, httpPort2) = await StartAsync(_data);
        await using (again)
        using (http2)
        {
            // Recovery runs at start for every volume whose legs are present, opened by a client or not.
            JsonElement shown = default;
            await Eventually.UntilAsync("crash recovery at node start to be reported for 'wb'", TimeSpan.FromSeconds(60), async () =>
            {
                using var response = await http2.GetAsync("v1/volumes/wb");
                var text = await response.Content.ReadAsStringAsync();
                shown = JsonDocument.Parse(text).RootElement.Clone();
                return (shown.TryGetProperty("recovery", out var r) && r.ValueKind == JsonValueKind.Object, text);
            });
            Assert.Equal("start", shown.GetProperty("recovery").GetProperty("trigger").GetString());
            Assert.Equal(0, shown.GetProperty("recovery").GetProperty("chunksResynced").GetInt64());
            Assert.Equal("direct", shown.GetProperty("cache").GetString());
            Assert.Equal(2, shown.GetProperty("generation").GetInt64());
            Assert.False(shown.GetProperty("openHere").GetBoolean());
            // The console logger writes from its own queue: the line may reach stdout just after HTTP shows the report.
            const string logged = "Volume wb: crash recovery at node start (slot 0, generation 2): 0 chunk(s) resynced";
            await Eventually.UntilAsync("the start recovery's log line", TimeSpan.FromSeconds(30), () =>
            {
                var output = again.Outcome(-1).Stdout + again.Outcome(-1).Stderr;
                return Task.FromResult((output.Contains(logged, StringComparison.Ordinal), output[Math.Max(0, output.Length - 4000)..]));
            });

            // The bitmap slot came from the DLM: the node joined the volume's lockspace and holds slot 1 there (bitmap slot 0).
            var lockspace = "volume-" + Guid.Parse(shown.GetProperty("volumeId").GetString()!).ToString("N");
            using (var lockspaces = JsonDocument.Parse(await http2.GetStringAsync("v1/lockspaces")))
            {
                var entry = lockspaces.RootElement.EnumerateArray().SingleOrDefault(l => l.GetProperty("name").GetString() == lockspace);
                Assert.True(entry.ValueKind == JsonValueKind.Object, $"lockspace {lockspace} not in {lockspaces.RootElement}");
                Assert.Equal([1], entry.GetProperty("slots").EnumerateArray().Select(x => x.GetProperty("slot").GetInt32()));
            }

            var show = await Cli(httpPort2, "volume", "show", "wb");
            Assert.Contains("0 chunk(s) resynced at node start", show.Stdout);
        }
    }

    [Fact]
    public async Task Serve_demo_prints_the_nbd_url_and_verify_finds_identical_legs()
    {
        var ports = FreePorts.Take(3);
        await using var node = ChildProcess.Start(Repo.Lockstep,
            ["serve", "--demo", "--data", _data, "--port", $"{ports[0]}", "--http-port", $"{ports[1]}", "--nbd-port", $"{ports[2]}"]);
        var url = $"nbd://127.0.0.1:{ports[2]}/demo";
        await UntilPrintedAsync(node, url);

        Assert.True(File.Exists(Path.Combine(_data, "legs", "demo-a.leg")));
        Assert.True(File.Exists(Path.Combine(_data, "legs", "demo-b.leg")));
        var verify = await ChildProcess.RunAsync(Repo.Lockstep, ["volume", "verify", "demo", "--node", $"127.0.0.1:{ports[1]}"], TimeSpan.FromSeconds(120));
        Assert.True(verify.ExitCode == 0, verify.ToString());
        Assert.Contains("volume 'demo': 2 legs identical over 1024 chunks", verify.Stdout);
        Assert.Single(node.Outcome(-1).Stdout.Split('\n'), l => l.Trim() == url);
    }

    /// <summary>Waits until <c>serve --demo</c> printed <paramref name="url"/> on a line of its own; fails if it exited first.</summary>
    private static Task UntilPrintedAsync(ChildProcess node, string url) =>
        Eventually.UntilAsync($"{url} on stdout", StartTimeout, () =>
        {
            var outcome = node.Outcome(-1);
            if (node.HasExited)
            {
                Assert.Fail($"lockstep serve --demo exited early: {outcome}");
            }

            return Task.FromResult((outcome.Stdout.Split('\n').Any(l => l.Trim() == url), "no URL yet"));
        });

    [Fact]
    public async Task A_node_serving_legs_under_its_working_directory_watches_no_files()
    {
        // The default --data is ./data: a node started in its own folder has its legs under its working directory.
        // A host that watched that directory for configuration changes woke a thread for every leg write.
        var ports = FreePorts.Take(3);
        await using var node = ChildProcess.Start(Repo.Lockstep,
            ["serve", "--demo", "--port", $"{ports[0]}", "--http-port", $"{ports[1]}", "--nbd-port", $"{ports[2]}"], workingDirectory: _data);
        var url = $"nbd://127.0.0.1:{ports[2]}/demo";
        await UntilPrintedAsync(node, url);

        Assert.True(File.Exists(Path.Combine(_data, "data", "legs", "demo-a.leg")), "the demo legs are under the working directory");
        Assert.Equal(0, InotifyWatches(node.Id));
    }

    /// <summary>inotify watches the process holds, over all its inotify descriptors (/proc/PID/fdinfo).</summary>
    private static int InotifyWatches(int pid)
    {
        var watches = 0;
        foreach (var fd in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(fd).LinkTarget;
            }
            catch (IOException)
            {
                continue; // closed meanwhile
            }

            if (target == "anon_inode:inotify")
            {
                watches += File.ReadLines($"/proc/{pid}/fdinfo/{Path.GetFileName(fd)}").Count(l => l.StartsWith("inotify wd:", StringComparison.Ordinal));
            }
        }

        return watches;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_data, recursive: true);
        }
        catch (IOException)
        {
            // Best effort.
        }
    }
}
