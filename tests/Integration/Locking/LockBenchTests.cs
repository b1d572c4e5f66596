using System.Net.Http.Json;
using Lockstep.Hosting.Locking;
using Lockstep.Integration.Tests.Cluster;
using Xunit;

namespace Lockstep.Integration.Tests.Locking;

/// <summary><c>lockstep lock bench</c> against a real node and the test PostgreSQL (scripts/postgres-test-server).</summary>
public sealed class LockBenchTests : IAsyncLifetime
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private readonly string _data = Directory.CreateTempSubdirectory("lockstep-bench-").FullName;
    private ReadyNode? _node;

    private HttpClient Http => _node!.Http;

    private int HttpPort => _node!.HttpPort;

    public async Task InitializeAsync()
    {
        try
        {
            _node = await ReadyNode.StartAsync("bench1", _data, Patience);
        }
        catch
        {
            // xUnit does not dispose a fixture whose initialisation failed: leave no data folder behind.
            await DisposeAsync();
            throw;
        }
    }

    public async Task DisposeAsync()
    {
        if (_node is not null)
        {
            await _node.DisposeAsync();
        }

        Directory.Delete(_data, recursive: true);
    }

    [Fact]
    public async Task Bench_runs_every_shape_on_lockstep_and_postgres_with_exact_counters()
    {
        var postgres = Environment.GetEnvironmentVariable("LOCKSTEP_TEST_PG");
        Assert.False(string.IsNullOrWhiteSpace(postgres),
            "LOCKSTEP_TEST_PG is not set: run the tests through scripts/test, which starts PostgreSQL (scripts/postgres-test-server).");

        var settings = new LockBenchSettings([new Uri($"http://127.0.0.1:{HttpPort}")], null, postgres, Clients: 3, Window: TimeSpan.FromSeconds(1), Warmup: TimeSpan.FromSeconds(0.3));
        var results = await LockBench.RunAsync(settings, TextWriter.Null, CancellationToken.None);
        var table = LockBenchReport.Render(results);

        Assert.Equal(
            [(LockBench.LockstepName, LockBenchShape.Floor), (LockBench.PostgresName, LockBenchShape.Floor), (LockBench.LockstepName, LockBenchShape.Uncontended), (LockBench.PostgresName, LockBenchShape.Uncontended), (LockBench.LockstepName, LockBenchShape.Contended), (LockBench.PostgresName, LockBenchShape.Contended), (LockBench.LockstepName, LockBenchShape.Counter), (LockBench.PostgresName, LockBenchShape.Counter)],
            results.Select(r => (r.System, r.Shape)));
        foreach (var r in results)
        {
            Assert.True(r.Ok, table);
            Assert.True(r.Cycles > 0 && r.Latency.Count == r.Cycles, table);
        }

        foreach (var counter in results.Where(r => r.Shape == LockBenchShape.Counter))
        {
            // Warm-up increments count too, so the counter holds at least the measured cycles.
            Assert.True(counter.CounterExpected >= counter.Cycles, table);
            Assert.Equal(counter.CounterExpected, counter.CounterFound);
        }

        Assert.Contains("(3/3 resources placed there)", results[0].Where);
        Assert.Contains("(3/3 resources placed there)", results[2].Where);
        Assert.Contains("(1/1 resources placed there)", results[4].Where);

        // Every bench session closed, so no lock is left behind in the lockspace.
        await Eventually.UntilAsync("the bench's locks to be released", Patience, async () =>
        {
            var view = await Http.GetFromJsonAsync<LocksView>("/v1/locks?lockspace=bench");
            return (view!.Resources.Count == 0, $"{view.Resources.Count} resources");
        });
    }

    [Fact]
    public async Task Bench_with_shared_sessions_batches_requests_and_keeps_counters_exact()
    {
        // Lockstep only, two shapes: 6 clients over 2 multiplexed sessions (3 callers each).
        var settings = new LockBenchSettings([new Uri($"http://127.0.0.1:{HttpPort}")], null, null, Clients: 6, Window: TimeSpan.FromSeconds(1), Warmup: TimeSpan.FromSeconds(0.3),
            Shapes: new HashSet<LockBenchShape> { LockBenchShape.Uncontended, LockBenchShape.Counter }, CallersPerSession: 3);
        var results = await LockBench.RunAsync(settings, TextWriter.Null, CancellationToken.None);
        var table = LockBenchReport.Render(results);

        Assert.Equal([LockBenchShape.Uncontended, LockBenchShape.Counter], results.Select(r => r.Shape));
        foreach (var r in results)
        {
            Assert.True(r.Ok, table);
            Assert.Contains("2 shared sessions", r.Where);
            Assert.True(r.ClientCpu > TimeSpan.Zero, table);
        }

        var counter = results[1];
        Assert.True(counter.CounterExpected >= counter.Cycles, table);
        Assert.Equal(counter.CounterExpected, counter.CounterFound);
        await Eventually.UntilAsync("the bench's locks to be released", Patience, async () =>
        {
            var view = await Http.GetFromJsonAsync<LocksView>("/v1/locks?lockspace=bench");
            return (view!.Resources.Count == 0, $"{view.Resources.Count} resources");
        });
    }

    [Fact]
    public async Task In_node_callers_run_inside_the_node_with_exact_counters_and_bad_requests_get_a_clear_400()
    {
        var settings = new LockBenchSettings([new Uri($"http://127.0.0.1:{HttpPort}")], null, null, Clients: 4, Window: TimeSpan.FromSeconds(1), Warmup: TimeSpan.FromSeconds(0.3),
            Shapes: new HashSet<LockBenchShape> { LockBenchShape.Uncontended, LockBenchShape.Contended, LockBenchShape.Counter }, InNode: true);
        var results = await LockBench.RunAsync(settings, TextWriter.Null, CancellationToken.None);
        var table = LockBenchReport.Render(results);

        Assert.Equal([LockBenchShape.Uncontended, LockBenchShape.Contended, LockBenchShape.Counter], results.Select(r => r.Shape));
        foreach (var r in results)
        {
            Assert.True(r.Ok, table);
            Assert.StartsWith("callers in node, master: client's node", r.Where);
            Assert.True(r.Cycles > 0 && r.Latency.Count == r.Cycles && r.Latency.Percentile(50) > 0, table);
            Assert.True(r.ClientCpu > TimeSpan.Zero, table);
        }

        var counter = results[2];
        Assert.True(counter.CounterExpected >= counter.Cycles, table);
        Assert.Equal(counter.CounterExpected, counter.CounterFound);

        async Task<string> Refused(object body)
        {
            using var answer = await Http.PostAsJsonAsync("/v1/locks/bench", body);
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, answer.StatusCode);
            return (await answer.Content.ReadFromJsonAsync<LockError>())!.Error;
        }

        Assert.Contains("shape must be uncontended, contended or counter, not 'sideways'", await Refused(new InNodeBenchRequest("bench", "sideways", ["x"], 0, 1)));
        Assert.Contains("resources must name 1..1024 resources", await Refused(new InNodeBenchRequest("bench", "uncontended", [], 0, 1)));
        Assert.Contains("windowSeconds must be in (0, 600]", await Refused(new InNodeBenchRequest("bench", "uncontended", ["x"], 0, 0)));
        Assert.Contains("lockspace:", await Refused(new InNodeBenchRequest("bad/space", "uncontended", ["x"], 0, 1)));
        using (var garbage = await Http.PostAsync("/v1/locks/bench", new StringContent("{not json", System.Text.Encoding.UTF8, "application/json")))
        {
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, garbage.StatusCode);
            Assert.Contains("the body is not a bench request", await garbage.Content.ReadAsStringAsync());
        }

        using (var plain = await Http.PostAsync("/v1/locks/bench", new StringContent("uncontended please")))
        {
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, plain.StatusCode);
            Assert.Contains("the body must be JSON", await plain.Content.ReadAsStringAsync());
        }

        var badCallers = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "bench", "--node", $"127.0.0.1:{HttpPort}", "--callers", "sideways"], Patience);
        Assert.Equal(2, badCallers.ExitCode);
        Assert.Contains("--callers must be grpc or in-node, not 'sideways'", badCallers.Stderr);
        var floorInNode = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "bench", "--node", $"127.0.0.1:{HttpPort}", "--callers", "in-node", "--shape", "floor"], Patience);
        Assert.Equal(2, floorInNode.ExitCode);
        Assert.Contains("--shape floor measures client round trips", floorInNode.Stderr);

        // The node still serves, and every bench lock is gone.
        await Eventually.UntilAsync("the bench's locks to be released", Patience, async () =>
        {
            var view = await Http.GetFromJsonAsync<LocksView>("/v1/locks?lockspace=bench");
            return (view!.Resources.Count == 0, $"{view.Resources.Count} resources");
        });
    }

    [Fact]
    public async Task Cli_bench_prints_the_table_and_refuses_bad_usage()
    {
        var postgres = Environment.GetEnvironmentVariable("LOCKSTEP_TEST_PG");
        Assert.False(string.IsNullOrWhiteSpace(postgres),
            "LOCKSTEP_TEST_PG is not set: run the tests through scripts/test, which starts PostgreSQL (scripts/postgres-test-server).");

        var run = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "bench", "--node", $"127.0.0.1:{HttpPort}", "--postgres", postgres!, "--seconds", "0.3", "--clients", "2", "--warmup", "0.2"], TimeSpan.FromSeconds(120));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("| system | shape | clients |", run.Stdout);
        Assert.Matches(@"\| Lockstep \| counter \(EX \+ read/write\) \| 2 \|.*\| counter (\d+) = \1 increments \|", run.Stdout);
        Assert.Matches(@"\| PostgreSQL \| counter \(EX \+ read/write\) \| 2 \|.*\| counter (\d+) = \1 increments \|", run.Stdout);

        var usage = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "bench"], Patience);
        Assert.Equal(2, usage.ExitCode);
        Assert.Contains("give --node (Lockstep) and/or --postgres (PostgreSQL)", usage.Stderr);

        var badShape = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "bench", "--node", $"127.0.0.1:{HttpPort}", "--shape", "sideways"], Patience);
        Assert.Equal(2, badShape.ExitCode);
        Assert.Contains("--shape 'sideways' is not one of floor, uncontended, contended, counter", badShape.Stderr);
        var badSharing = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "bench", "--node", $"127.0.0.1:{HttpPort}", "--callers-per-session", "0"], Patience);
        Assert.Equal(2, badSharing.ExitCode);
        Assert.Contains("--callers-per-session must be 1..1024", badSharing.Stderr);

        var one = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "bench", "--node", $"127.0.0.1:{HttpPort}", "--shape", "FLOOR", "--seconds", "0.3", "--clients", "2", "--warmup", "0.1"], TimeSpan.FromSeconds(120));
        Assert.True(one.ExitCode == 0, one.ToString());
        Assert.Contains("| Lockstep | floor: 2 round trips, no lock | 2 |", one.Stdout);
        Assert.DoesNotContain("uncontended", one.Stdout);
        Assert.Matches(@"bench client CPU [0-9.]+ s = [0-9.]+ µs/cycle", one.Stderr);

        var unreachable = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "bench", "--postgres", "Host=127.0.0.1;Port=1;Username=postgres;Timeout=2", "--seconds", "0.2", "--clients", "1"], Patience);
        Assert.Equal(1, unreachable.ExitCode);
        Assert.Contains("| PostgreSQL | uncontended EX | 1 | server 127.0.0.1:1 | 0 | 0 | – | – | ERROR:", unreachable.Stdout);
    }
}
