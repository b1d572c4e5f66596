using Xunit;
using Xunit.Sdk;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>
/// Three <c>lockstep serve</c> processes, each in its own network namespace (<c>{prefix}-n1..3</c>, veth pairs
/// <c>{prefix}-v{i}</c>/<c>{prefix}-p{i}</c> on bridge <c>{prefix}-br0</c>, addresses <c>{subnet}.11..13</c>), every
/// node on the default ports inside its namespace (remoting 4053, HTTP 8558, gRPC 9558, NBD 10809), node 1 the seed.
/// For tests that break one node's link for real (needs root). Everything it creates is removed by
/// <see cref="DisposeAsync"/>, also after a failed start.
/// </summary>
public sealed class NamespaceCluster : IAsyncDisposable
{
    public const int RemotingPort = 4053;

    /// <summary>The reliable layer's peer link listens here (fixed, so a test can reset its connections like remoting's).</summary>
    public const int LinkPort = 4054;
    public const int HttpPort = 8558;
    private readonly string _prefix;
    private readonly string _subnet;
    private readonly NamespaceNetwork _network;
    private readonly ChildProcess?[] _nodes = new ChildProcess?[3];
    private readonly List<string> _data = [];

    public NamespaceCluster(string prefix, string subnet)
    {
        _prefix = prefix;
        _subnet = subnet;
        _network = new NamespaceNetwork($"{prefix}-br0", $"{subnet}.1/24",
            [.. Enumerable.Range(0, 3).Select(i => new NamespaceHost(Namespace(i), $"{prefix}-v{i + 1}", InnerVeth(i), Ip(i)))]);
    }

    /// <summary>The node processes (null before <see cref="StartAsync"/>).</summary>
    public IReadOnlyList<ChildProcess?> Nodes => _nodes;

    /// <summary>Namespace of node <paramref name="node"/> (0-based).</summary>
    public string Namespace(int node) => $"{_prefix}-n{node + 1}";

    /// <summary>The veth end inside node <paramref name="node"/>'s namespace: setting it down cuts that node off.</summary>
    public string InnerVeth(int node) => $"{_prefix}-p{node + 1}";

    public string Ip(int node) => $"{_subnet}.{11 + node}";

    /// <summary>The data directory of node <paramref name="node"/> (its <c>--data</c>).</summary>
    public string DataDirectory(int node) => _data[node];

    /// <summary>Management HTTP address of node <paramref name="node"/> (gRPC is on the port + 1000).</summary>
    public string Http(int node) => $"http://{Ip(node)}:{HttpPort}";

    public string Url(int node, string path) => $"{Http(node)}{path}";

    /// <summary>
    /// Fails with <paramref name="what"/> unless this process runs as root; builds the network and starts the three
    /// nodes with <paramref name="environment"/> (e.g. resolver timing) and waits until all list three Up members.
    /// </summary>
    public async Task StartAsync(string what, IReadOnlyDictionary<string, string> environment, TimeSpan timeout)
    {
        if (!NamespaceNetwork.IsRoot())
        {
            Assert.Fail($"{what} needs root: it creates network namespaces {Namespace(0)}..3, bridge {_prefix}-br0 and nftables rules. Run the suite as root.");
        }

        try
        {
            await _network.CreateAsync();
            for (var i = 0; i < 3; i++)
            {
                var data = Directory.CreateTempSubdirectory($"lockstep-{_prefix}-").FullName;
                _data.Add(data);
                _nodes[i] = ChildProcess.Start("ip",
                [
                    "netns", "exec", Namespace(i), "env", $"Lockstep__Http__Host={Ip(i)}", $"Lockstep__Messaging__LinkPort={LinkPort}",
                    .. environment.Select(e => $"{e.Key}={e.Value}"),
                    Repo.Lockstep, "serve", "--host", Ip(i), "--port", $"{RemotingPort}", "--http-port", $"{HttpPort}",
                    "--nbd-port", "10809", "--node-id", $"n{i + 1}", "--data", data, "--seed", $"{Ip(0)}:{RemotingPort}",
                ]);
            }

            await ExplainedAsync(() => UntilAllUpAsync(timeout));
        }
        catch
        {
            // xUnit does not dispose a test class whose initialisation failed: leave no namespace or node behind.
            await DisposeAsync();
            throw;
        }
    }

    /// <summary>Waits until every node lists three Up members and none unreachable; fails at once if a node exited.</summary>
    public async Task UntilAllUpAsync(TimeSpan timeout)
    {
        using var quick = new HttpClient { Timeout = TimeSpan.FromSeconds(3) };
        await Eventually.UntilAsync("all three nodes to list three Up members and none unreachable", timeout, async () =>
        {
            foreach (var n in _nodes.Where(n => n is { HasExited: true }))
            {
                Assert.Fail($"node {Array.IndexOf(_nodes, n) + 1} exited with code {n!.ExitCode}");
            }

            try
            {
                var bodies = await Task.WhenAll(Enumerable.Range(0, 3).Select(i => quick.GetStringAsync(Url(i, "/cluster/members"))));
                var up = bodies.Select(b => b.Split("\"status\":\"Up\"").Length - 1).ToArray();
                var unreachable = bodies.Select(b => b.Contains("\"unreachable\":[]", StringComparison.Ordinal)).ToArray();
                return (up.All(c => c == 3) && unreachable.All(u => u), $"Up counts {string.Join(",", up)}; unreachable-free {string.Join(",", unreachable)}");
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                return (false, ex.Message);
            }
        });
    }

    /// <summary>Whether every node process still runs.</summary>
    public bool AllRunning => _nodes.All(n => n is { HasExited: false });

    /// <summary>
    /// Runs <paramref name="body"/>; when it fails, the failure carries every node's post-mortem (exit code, stderr,
    /// the stdout lines about downing/fencing/unreachability, stdout tail), so a rare failure explains itself.
    /// </summary>
    public async Task ExplainedAsync(Func<Task> body)
    {
        try
        {
            await body();
        }
        catch (Exception ex)
        {
            throw new XunitException($"{ex.GetType().Name}: {ex.Message}\n\n{PostMortem()}", ex);
        }
    }

    /// <summary>Every node's <see cref="ChildProcess.Describe"/>.</summary>
    public string PostMortem() =>
        string.Join('\n', _nodes.Select((n, i) => n?.Describe($"node {i + 1} ({Ip(i)})") ?? $"node {i + 1}: not started"));

    /// <summary>
    /// <c>Lockstep__Cluster__StableAfter</c> for a test that breaks a link for <paramref name="faultTime"/> and must not
    /// see anybody downed: the fault time + 20 s, so the split-brain resolver cannot reach a decision while the link
    /// flaps (every change of reachability restarts its wait). Its "down all when unstable" guard (3/4 of that on top)
    /// then lies beyond the window as well.
    /// </summary>
    public static string ResolverHeldOffFor(TimeSpan faultTime) => (faultTime + TimeSpan.FromSeconds(20)).ToString(@"hh\:mm\:ss");

    /// <summary>The resolver's log lines of node <paramref name="node"/> (Akka's split-brain resolver prefixes them "SBR").</summary>
    public IReadOnlyList<string> ResolverLines(int node) =>
        _nodes[node]?.Outcome(-1).Stdout.Split('\n').Where(l => l.Contains("SBR", StringComparison.Ordinal)).Select(l => l.Trim()).ToList() ?? [];

    /// <summary>Every downing decision any node's resolver logged ("SBR took decision …", "SBR detected instability …").</summary>
    public IReadOnlyList<string> ResolverDecisions() =>
        [.. Enumerable.Range(0, 3).SelectMany(i => ResolverLines(i).Where(l => l.Contains("SBR took decision", StringComparison.Ordinal) || l.Contains("SBR detected instability", StringComparison.Ordinal)).Select(l => $"node {i + 1}: {l}"))];

    /// <summary>
    /// Per node: how often its resolver saw members become unreachable, how often two at once (a pair marking each other:
    /// what makes Akka's resolver down both as "indirectly connected"), and how often all healed.
    /// </summary>
    public string ResolverSummary() => string.Join('\n', Enumerable.Range(0, 3).Select(i =>
    {
        var lines = ResolverLines(i);
        int Count(string text) => lines.Count(l => l.Contains(text, StringComparison.Ordinal));
        return $"node {i + 1} resolver: {Count("Now 1 unreachable")} times 1 unreachable, {Count("Now 2 unreachable")} times 2, {Count("all unreachable members healed")} times all healed, {Count("SBR took decision") + Count("SBR detected instability")} decisions";
    }));

    public async ValueTask DisposeAsync()
    {
        var nodes = _nodes.Select((n, i) => (Process: n, Index: i)).Where(n => n.Process is not null).ToList();
        Array.Clear(_nodes);
        foreach (var (node, _) in nodes)
        {
            await node!.DisposeAsync();
        }

        // The post-mortem in a failure message has tails only; LOCKSTEP_NETNS_LOG_DIR keeps every node's whole output.
        if (Environment.GetEnvironmentVariable("LOCKSTEP_NETNS_LOG_DIR") is { Length: > 0 } logs)
        {
            Directory.CreateDirectory(logs);
            foreach (var (node, i) in nodes)
            {
                var outcome = node!.Outcome(-1);
                await File.WriteAllTextAsync(Path.Combine(logs, $"{Namespace(i)}-{DateTime.UtcNow:HHmmss}.log"), $"{outcome.Stdout}\n--- stderr\n{outcome.Stderr}");
            }
        }

        await _network.RemoveAsync();
        foreach (var dir in _data.Where(Directory.Exists))
        {
            Directory.Delete(dir, recursive: true);
        }

        _data.Clear();
    }
}
