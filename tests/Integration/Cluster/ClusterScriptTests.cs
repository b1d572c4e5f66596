using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>
/// The issue's acceptance run, with real processes: <c>scripts/cluster up 3</c>, <c>lockstep cluster show</c>,
/// <c>scripts/cluster kill 2</c>, survivors converge; then node-2 and node-1 are restarted, and
/// <c>scripts/cluster down</c> stops them youngest first, each within the stop timeout, and leaves nothing behind.
/// </summary>
[Collection(RealProcessesCollection.Name)]
public sealed partial class ClusterScriptTests
{
    private static readonly string Script = Path.Combine(Repo.Root, "scripts", "cluster");
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromSeconds(150);

    private static string Node(int i) => $"akka.tcp://lockstep@127.0.0.1:{4053 + i}";

    private static string Http(int i) => $"http://127.0.0.1:{8558 + i}";

    [Fact]
    public async Task Three_nodes_come_up_survive_a_kill_restart_and_go_down_youngest_first_without_leftovers()
    {
        var binary = Repo.Lockstep;
        // A cluster left over from an earlier, interrupted run would hold the fixed ports.
        await ChildProcess.RunAsync(Script, ["down"], ScriptTimeout);
        var restartedBoth = false;
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

            // Restart node-2, then node-1: node-1 is now the youngest, node-3 the oldest. `down` used to stop by node
            // number (3, 2, 1), so node-1 was stopped last and took over the singletons and shard coordinators only
            // while it stopped; it overran the 10 s stop timeout (see the down assertions below and docs/operations.md).
            foreach (var restarted in new[] { 2, 1 })
            {
                if (restarted == 1)
                {
                    var killOne = await ChildProcess.RunAsync(Script, ["kill", "1"], ScriptTimeout);
                    Assert.True(killOne.ExitCode == 0, $"scripts/cluster kill 1 failed: {killOne}");
                }

                var start = await ChildProcess.RunAsync(Script, ["start", $"{restarted}"], ScriptTimeout);
                Assert.True(start.ExitCode == 0, $"scripts/cluster start {restarted} failed: {start}");
                Assert.Contains($"node-{restarted} (pid {RecordedPids()[restarted]}) restarted and Up with 3 members", start.Stdout, StringComparison.Ordinal);
            }

            restartedBoth = true;
        }
        finally
        {
            var pids = File.Exists(PidsFile) ? RecordedPids() : new Dictionary<int, int>();
            var down = await ChildProcess.RunAsync(Script, ["down"], ScriptTimeout);
            Assert.True(down.ExitCode == 0, $"scripts/cluster down failed: {down}");
            Assert.All(pids, p => Assert.False(Signal.IsLockstepAlive(p.Value), $"node-{p.Key} (pid {p.Value}) survived scripts/cluster down"));
            Assert.False(File.Exists(PidsFile), ".cluster/pids is still there after down");
            if (restartedBoth)
            {
                // Youngest first: the restarted node-1, then node-2, then the oldest, node-3; each stopped by SIGTERM.
                Assert.True(!down.Stderr.Contains("SIGKILL", StringComparison.Ordinal), $"a node overran the stop timeout: {down}");
                var order = StopLine().Matches(down.Stdout).Select(m => (Node: int.Parse(m.Groups["node"].Value, CultureInfo.InvariantCulture), How: m.Groups["how"].Value)).ToList();
                Assert.Equal([(1, "stopped"), (2, "stopped"), (3, "stopped")], order);
            }
        }
    }

    [GeneratedRegex(@"cluster: node-(?<node>\d+) \(pid \d+\) (?<how>stopped|killed) after")]
    private static partial Regex StopLine();

    private static string PidsFile => Path.Combine(Repo.Root, ".cluster", "pids");

    private static Dictionary<int, int> RecordedPids() =>
        File.ReadAllLines(PidsFile)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .ToDictionary(p => int.Parse(p[0], CultureInfo.InvariantCulture), p => int.Parse(p[1], CultureInfo.InvariantCulture));

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
