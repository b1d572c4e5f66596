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
    public async Task Serve_demo_prints_the_nbd_url_and_verify_finds_identical_legs()
    {
        var ports = FreePorts.Take(3);
        await using var node = ChildProcess.Start(Repo.Lockstep,
            ["serve", "--demo", "--data", _data, "--port", $"{ports[0]}", "--http-port", $"{ports[1]}", "--nbd-port", $"{ports[2]}"]);
        var url = $"nbd://127.0.0.1:{ports[2]}/demo";
        await Eventually.UntilAsync($"{url} on stdout", StartTimeout, () =>
        {
            var outcome = node.Outcome(-1);
            if (node.HasExited)
            {
                Assert.Fail($"lockstep serve --demo exited early: {outcome}");
            }

            return Task.FromResult((outcome.Stdout.Split('\n').Any(l => l.Trim() == url), "no URL yet"));
        });

        Assert.True(File.Exists(Path.Combine(_data, "legs", "demo-a.leg")));
        Assert.True(File.Exists(Path.Combine(_data, "legs", "demo-b.leg")));
        var verify = await ChildProcess.RunAsync(Repo.Lockstep, ["volume", "verify", "demo", "--node", $"127.0.0.1:{ports[1]}"], TimeSpan.FromSeconds(120));
        Assert.True(verify.ExitCode == 0, verify.ToString());
        Assert.Contains("volume 'demo': 2 legs identical over 1024 chunks", verify.Stdout);
        Assert.Single(node.Outcome(-1).Stdout.Split('\n'), l => l.Trim() == url);
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
