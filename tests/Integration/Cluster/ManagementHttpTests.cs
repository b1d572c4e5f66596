using System.Net;
using System.Text.Json;
using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>The management API of a real one-node process, checked field by field.</summary>
[Collection(RealProcessesCollection.Name)]
public sealed class ManagementHttpTests
{
    private sealed record Node(ChildProcess Process, string Http, string Address, string Data) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await Process.DisposeAsync();
            Directory.Delete(Data, recursive: true);
        }
    }

    private static async Task<Node> StartAsync(bool allowWrite)
    {
        var ports = FreePorts.Take(3);
        var data = Directory.CreateTempSubdirectory("lockstep-http-").FullName;
        List<string> args = ["serve", "--port", $"{ports[0]}", "--http-port", $"{ports[1]}", "--nbd-port", $"{ports[2]}", "--data", data, "--node-id", "shape"];
        if (allowWrite)
        {
            args.Add("--http-write");
        }

        var process = ChildProcess.Start(Repo.Lockstep, args);
        var node = new Node(process, $"http://127.0.0.1:{ports[1]}", $"akka.tcp://lockstep@127.0.0.1:{ports[0]}", data);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        await Eventually.UntilAsync($"a fresh node to answer /ready with 200 on {node.Http}", TimeSpan.FromSeconds(45), async () =>
        {
            Assert.False(process.HasExited, $"lockstep serve exited during start-up: {process.Outcome(-1)}");
            try
            {
                var ready = await http.GetAsync($"{node.Http}/ready");
                return (ready.StatusCode == HttpStatusCode.OK, $"{(int)ready.StatusCode} {await ready.Content.ReadAsStringAsync()}");
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                // Refused, or no answer within the client timeout: a node starting on a loaded machine is not ready yet.
                return (false, ex.Message);
            }
        });
        return node;
    }

    private static async Task<(HttpStatusCode Status, JsonElement Body)> JsonAsync(HttpClient http, HttpRequestMessage request)
    {
        using var response = await http.SendAsync(request);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return (response.StatusCode, doc.RootElement.Clone());
    }

    private static string[] Names(JsonElement element) => element.EnumerateObject().Select(p => p.Name).ToArray();

    [Fact]
    public async Task Read_routes_have_Akka_Managements_shapes_and_mutations_are_refused_by_default()
    {
        await using var node = await StartAsync(allowWrite: false);
        using var http = new HttpClient { BaseAddress = new Uri(node.Http), Timeout = TimeSpan.FromSeconds(10) };

        var (status, members) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Get, "/cluster/members"));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(["selfNode", "members", "unreachable", "leader", "oldest", "oldestPerRole"], Names(members));
        Assert.Equal(node.Address, members.GetProperty("selfNode").GetString());
        Assert.Equal(node.Address, members.GetProperty("leader").GetString());
        Assert.Equal(node.Address, members.GetProperty("oldest").GetString());
        Assert.Equal(node.Address, members.GetProperty("oldestPerRole").GetProperty("lockstep").GetString());
        Assert.Equal(0, members.GetProperty("unreachable").GetArrayLength());
        var self = Assert.Single(members.GetProperty("members").EnumerateArray());
        Assert.Equal(["node", "nodeUid", "status", "roles"], Names(self));
        Assert.Equal(node.Address, self.GetProperty("node").GetString());
        Assert.True(long.TryParse(self.GetProperty("nodeUid").GetString(), out _), "nodeUid is a number written as a string");
        Assert.Equal("Up", self.GetProperty("status").GetString());
        Assert.Equal(["lockstep", "nodeid-shape"], self.GetProperty("roles").EnumerateArray().Select(r => r.GetString()));

        foreach (var address in new[] { Uri.EscapeDataString(node.Address), node.Address["akka.tcp://lockstep@".Length..] })
        {
            var (memberStatus, member) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Get, $"/cluster/members/{address}"));
            Assert.Equal(HttpStatusCode.OK, memberStatus);
            Assert.Equal(self.ToString(), member.ToString());
        }

        var (missingStatus, missing) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Get, "/cluster/members/127.0.0.1:1"));
        Assert.Equal(HttpStatusCode.NotFound, missingStatus);
        Assert.Equal("Member 127.0.0.1:1 not found", missing.GetProperty("message").GetString());

        var (shardStatus, shard) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Get, "/cluster/shards/nosuchregion"));
        Assert.Equal(HttpStatusCode.NotFound, shardStatus);
        Assert.Equal("Shard type [nosuchregion] must be started first", shard.GetProperty("message").GetString());

        var target = Uri.EscapeDataString(node.Address);
        foreach (var request in new[]
        {
            new HttpRequestMessage(HttpMethod.Put, $"/cluster/members/{target}") { Content = new FormUrlEncodedContent([new("operation", "Down")]) },
            new HttpRequestMessage(HttpMethod.Delete, $"/cluster/members/{target}"),
            new HttpRequestMessage(HttpMethod.Post, "/cluster/members") { Content = new FormUrlEncodedContent([new("address", node.Address)]) },
        })
        {
            var (refusedStatus, refused) = await JsonAsync(http, request);
            Assert.Equal(HttpStatusCode.Forbidden, refusedStatus);
            Assert.Contains("--http-write", refused.GetProperty("message").GetString(), StringComparison.Ordinal);
        }

        // The CLI turns the refusal into one line and exit code 4.
        var cli = await ChildProcess.RunAsync(Repo.Lockstep, ["cluster", "down", node.Address, "--node", node.Http], TimeSpan.FromSeconds(30));
        Assert.True(cli.ExitCode == 4, $"expected exit 4 for a refused down: {cli}");
        Assert.StartsWith($"lockstep: refused by {node.Http}/: ", Assert.Single(cli.StderrLines), StringComparison.Ordinal);

        var (readyStatus, ready) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Get, "/ready"));
        Assert.Equal(HttpStatusCode.OK, readyStatus);
        Assert.Equal("Up", ready.GetProperty("status").GetString());
        var (aliveStatus, _) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Get, "/alive"));
        Assert.Equal(HttpStatusCode.OK, aliveStatus);

        var metrics = await http.GetStringAsync("/metrics");
        Assert.Contains("lockstep_cluster_members{status=\"Up\"} 1", metrics, StringComparison.Ordinal);
        Assert.Contains("lockstep_cluster_unreachable_members 0", metrics, StringComparison.Ordinal);
        Assert.Contains("lockstep_cluster_self_up 1", metrics, StringComparison.Ordinal);

        // The node refused everything above, so it is still the one Up member.
        var (_, after) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Get, "/cluster/members"));
        Assert.Equal("Up", after.GetProperty("members")[0].GetProperty("status").GetString());
    }

    [Fact]
    public async Task With_http_write_an_unknown_operation_is_400_and_leave_makes_the_node_exit_cleanly()
    {
        await using var node = await StartAsync(allowWrite: true);
        using var http = new HttpClient { BaseAddress = new Uri(node.Http), Timeout = TimeSpan.FromSeconds(10) };
        var target = Uri.EscapeDataString(node.Address);

        var (badStatus, bad) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Put, $"/cluster/members/{target}?operation=Explode"));
        Assert.Equal(HttpStatusCode.BadRequest, badStatus);
        Assert.Equal("Operation not supported", bad.GetProperty("message").GetString());

        var (leaveStatus, leave) = await JsonAsync(http, new HttpRequestMessage(HttpMethod.Put, $"/cluster/members/{target}")
        {
            Content = new FormUrlEncodedContent([new("operation", "Leave")]),
        });
        Assert.Equal(HttpStatusCode.OK, leaveStatus);
        Assert.Equal($"Leaving {node.Address}", leave.GetProperty("message").GetString());

        var outcome = await node.Process.WaitAsync(TimeSpan.FromSeconds(30), "a node that was asked to leave");
        Assert.True(outcome.ExitCode == 0, $"a node that left should exit 0: {outcome}");
        Assert.Empty(outcome.StderrLines);
    }
}
