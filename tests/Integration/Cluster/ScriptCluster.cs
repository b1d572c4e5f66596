using System.Globalization;
using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>
/// A cluster run by <c>scripts/cluster</c> with its own <c>LOCKSTEP_PORT_OFFSET</c> and
/// <c>LOCKSTEP_CLUSTER_DIR</c>, so it runs beside the default cluster and other engineers' ones. The
/// offset is drawn from 20000–21890: every port then lies below Linux's ephemeral range (32768+), where
/// the OS never hands one out to a client socket, and is checked free before the cluster starts.
/// </summary>
public sealed class ScriptCluster : IAsyncDisposable
{
    private static readonly string Script = Path.Combine(Repo.Root, "scripts", "cluster");
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromSeconds(150);
    private readonly Dictionary<string, string> _environment;

    private ScriptCluster(int offset, string directory)
    {
        Offset = offset;
        Directory = directory;
        _environment = new Dictionary<string, string>
        {
            ["LOCKSTEP_PORT_OFFSET"] = offset.ToString(CultureInfo.InvariantCulture),
            ["LOCKSTEP_CLUSTER_DIR"] = directory,
        };
    }

    /// <summary>Added to every port of the default layout.</summary>
    public int Offset { get; }

    /// <summary>The cluster's folder: node-i, shared, disks, pids.</summary>
    public string Directory { get; }

    /// <summary>The shared disks folder every node sees.</summary>
    public string Disks => Path.Combine(Directory, "disks");

    /// <summary>Management HTTP base address of node <paramref name="i"/> (1-based).</summary>
    public string Http(int i) => $"http://127.0.0.1:{8558 + Offset + i}";

    /// <summary>Picks a free offset and a fresh folder; nothing runs yet.</summary>
    public static ScriptCluster Create(int nodes)
    {
        var random = new Random();
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var offset = 20000 + random.Next(0, 190) * 10;
            var ports = Enumerable.Range(1, nodes).SelectMany(i => new[] { 4053, 8558, 9558, 10809 }.Select(b => b + offset + i));
            if (ports.All(FreePorts.IsFree))
            {
                return new ScriptCluster(offset, System.IO.Directory.CreateTempSubdirectory("lockstep-cluster-").FullName);
            }
        }

        throw new InvalidOperationException("no free port offset for a script cluster in 50 attempts");
    }

    /// <summary>Runs <c>scripts/cluster ARGS</c> with this cluster's offset and folder; fails the test unless it exits 0.</summary>
    public async Task<ProcessOutcome> RunAsync(params string[] args)
    {
        var outcome = await ChildProcess.RunAsync(Script, args, ScriptTimeout, _environment);
        Assert.True(outcome.ExitCode == 0, $"scripts/cluster {string.Join(' ', args)} (offset {Offset}) failed: {outcome}");
        return outcome;
    }

    /// <summary>Recorded pid of node <paramref name="i"/>.</summary>
    public int Pid(int i) =>
        File.ReadAllLines(Path.Combine(Directory, "pids"))
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(p => p[0] == i.ToString(CultureInfo.InvariantCulture))
            .Select(p => int.Parse(p[1], CultureInfo.InvariantCulture))
            .Single();

    /// <summary>Stops every node and removes the folder (the node logs are printed by the test on failure, not kept).</summary>
    public async ValueTask DisposeAsync()
    {
        if (File.Exists(Path.Combine(Directory, "pids")))
        {
            await ChildProcess.RunAsync(Script, ["down"], ScriptTimeout, _environment);
        }

        System.IO.Directory.Delete(Directory, recursive: true);
    }
}
