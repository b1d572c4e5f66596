using System.Text.Json;
using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>
/// The acceptance run, with real processes: <c>scripts/cluster up 3</c>, <c>lockstep cluster show</c>,
/// <c>scripts/cluster kill 2</c>, survivors converge, <c>scripts/cluster down</c> leaves nothing behind.
/// </summary>
[Collection(RealProcessesCollection.Name)]
public sealed class ClusterScriptTests
{
    private static readonly string Script = Path.Combine(Repo.Root, "scripts", "cluster");
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromSeconds(150);

    private static string Node(int i) => $"akka.tcp://lockstep@127.0.0.1:{4053 + i}";

    private static string Http(int i) => $"http://127.0.0.1:{8558 + i}";

    [Fact]
    public async Task Three_nodes_come_up_survive_a_kill_and_go_down_without_leftovers()
    {
        var binary = Repo.Lockstep;
        // A cluster left over from an earlier, interrupted run would hold the fixed ports.
        await ChildProcess.RunAsync(Script, ["down"], ScriptTimeout);
        try
        {
            var up = await ChildProcess.RunAsync(Script, ["up", "3"], ScriptTimeout);
            Assert.True(up.ExitCode == 0, $"scripts/cluster up 3 failed: {up}");
            var pids = RecordedPids();
            Assert.Equal(3, pids.Count);
            Assert.All(pids.Values, pid => Assert.True(Signal.IsLockstepAlive(pid), $"pid {pid} from .cluster/pids is not a running node"));

            var show = await ChildProcess.RunAsync(binary, ["cluster", "show", "--json", "--node", Http(1)], TimeSpan.FromSeconds(30));
            Assert.True(show.ExitCode == 0, $"lockstep cluster show failed: {show}");
            Assert.Equal([Node(1), Node(2), Node(3)], UpMembers(show.Stdout));

            var kill = await ChildProcess.RunAsync(Script, ["kill", "2"], ScriptTimeout);
            Assert.True(kill.ExitCode == 0, $"scripts/cluster kill 2 failed: {kill}");
            Assert.False(Signal.IsLockstepAlive(pids[2]), "node-2 still runs after kill");

            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(3) };
            foreach (var survivor in new[] { 1, 3 })
            {
                await Eventually.UntilAsync(
                    $"node-{survivor} to list exactly node-1 and node-3 as Up after node-2 was SIGKILLed",
                    TimeSpan.FromSeconds(15),
                    async () =>
                    {
                        try
                        {
                            var body = await http.GetStringAsync($"{Http(survivor)}/cluster/members");
                            var upMembers = UpMembers(body);
                            var all = Members(body);
                            return (upMembers.SequenceEqual([Node(1), Node(3)]) && all.Count == 2, body);
                        }
                        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
                        {
                            // Refused, or no answer within the client timeout: a node starting on a loaded machine is not ready yet.
                            return (false, ex.Message);
                        }
                    });
            }

            foreach (var survivor in new[] { 1, 3 })
            {
                var ready = await http.GetAsync($"{Http(survivor)}/ready");
                Assert.True(ready.IsSuccessStatusCode, $"node-{survivor} /ready answered {(int)ready.StatusCode} after the kill");
                var cli = await ChildProcess.RunAsync(binary, ["cluster", "show", "--node", Http(survivor)], TimeSpan.FromSeconds(30));
                Assert.True(cli.ExitCode == 0, $"cluster show on node-{survivor} failed: {cli}");
                Assert.Contains("2 members (2 Up), 0 unreachable", cli.Stdout, StringComparison.Ordinal);
            }
        }
        finally
        {
            var pids = File.Exists(PidsFile) ? RecordedPids() : new Dictionary<int, int>();
            var down = await ChildProcess.RunAsync(Script, ["down"], ScriptTimeout);
            Assert.True(down.ExitCode == 0, $"scripts/cluster down failed: {down}");
            Assert.All(pids, p => Assert.False(Signal.IsLockstepAlive(p.Value), $"node-{p.Key} (pid {p.Value}) survived scripts/cluster down"));
            Assert.False(File.Exists(PidsFile), ".cluster/pids is still there after down");
        }
    }

    private static string PidsFile => Path.Combine(Repo.Root, ".cluster", "pids");

    private static Dictionary<int, int> RecordedPids() =>
        File.ReadAllLines(PidsFile)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .ToDictionary(p => int.Parse(p[0], System.Globalization.CultureInfo.InvariantCulture), p => int.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));

    private static List<string> Members(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("members").EnumerateArray().Select(m => m.GetProperty("node").GetString()!).ToList();
    }

    private static List<string> UpMembers(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("members").EnumerateArray()
            .Where(m => m.GetProperty("status").GetString() == "Up")
            .Select(m => m.GetProperty("node").GetString()!)
            .Order(StringComparer.Ordinal)
            .ToList();
    }
}
