using Lockstep.Hosting.Locking;
using Xunit;

namespace Lockstep.Hosting.Tests.Locking;

public sealed class LockBenchStatsTests
{
    [Fact]
    public void Small_values_are_exact_and_percentiles_follow_the_nearest_rank_rule()
    {
        var h = new LatencyHistogram();
        for (var v = 100; v >= 1; v--)
        {
            h.Record(v);
        }

        Assert.Equal((100L, 1L, 100L), (h.Count, h.Min, h.Max));
        Assert.Equal(50, h.Percentile(50));
        Assert.Equal(99, h.Percentile(99));
        Assert.Equal(100, h.Percentile(100));
        Assert.Equal(1, h.Percentile(0.5));
        Assert.Equal(2, h.Percentile(1.01));
    }

    [Fact]
    public void Large_values_come_out_at_most_one_sixty_fourth_too_high()
    {
        var random = new Random(7);
        var values = Enumerable.Range(0, 20_000).Select(_ => (long)Math.Exp(random.NextDouble() * Math.Log(5e9))).ToArray();
        var h = new LatencyHistogram();
        foreach (var v in values)
        {
            h.Record(v);
        }

        Array.Sort(values);
        foreach (var p in new[] { 1.0, 10, 50, 90, 99, 99.9, 100 })
        {
            var exact = values[(int)Math.Ceiling(p / 100 * values.Length) - 1];
            var got = h.Percentile(p);
            Assert.True(got >= exact && got <= exact + (exact / 64) + 1, $"p{p}: histogram {got}, exact {exact}");
        }
    }

    [Fact]
    public void Buckets_are_contiguous_and_each_value_lies_in_its_own()
    {
        var random = new Random(11);
        for (var i = 0; i < 50_000; i++)
        {
            var v = i < 1000 ? i : random.NextInt64(0, long.MaxValue >> random.Next(0, 62));
            var index = LatencyHistogram.Index(v);
            Assert.True(LatencyHistogram.HighestEquivalent(index) >= v, $"{v} above its bucket {index}");
            Assert.True(index == 0 || LatencyHistogram.HighestEquivalent(index - 1) < v, $"{v} also fits bucket {index - 1}");
        }

        Assert.Equal(long.MaxValue, LatencyHistogram.HighestEquivalent(LatencyHistogram.Index(long.MaxValue)));
    }

    [Fact]
    public void Merging_equals_recording_everything_in_one()
    {
        var a = new LatencyHistogram();
        var b = new LatencyHistogram();
        var all = new LatencyHistogram();
        for (var v = 0L; v < 3000; v++)
        {
            (v % 3 == 0 ? a : b).Record(v * 997);
            all.Record(v * 997);
        }

        var merged = new LatencyHistogram();
        merged.Merge(new LatencyHistogram());
        merged.Merge(a);
        merged.Merge(b);
        Assert.Equal((all.Count, all.Min, all.Max), (merged.Count, merged.Min, merged.Max));
        foreach (var p in new[] { 1.0, 50, 99, 100 })
        {
            Assert.Equal(all.Percentile(p), merged.Percentile(p));
        }
    }

    [Fact]
    public void A_histogram_sent_as_its_sparse_buckets_comes_back_equal_and_bad_buckets_are_refused()
    {
        var sent = new LatencyHistogram();
        for (var v = 1L; v < 5000; v += 7)
        {
            sent.Record(v * v);
        }

        var sparse = sent.ToSparse();
        Assert.True(sparse.Indexes.Length < 5000 / 7, "a sparse histogram keeps only non-empty buckets");
        var back = LatencyHistogram.FromSparse(System.Text.Json.JsonSerializer.Deserialize<SparseHistogram>(System.Text.Json.JsonSerializer.Serialize(sparse))!);
        Assert.Equal((sent.Count, sent.Min, sent.Max), (back.Count, back.Min, back.Max));
        foreach (var p in new[] { 1.0, 50, 99, 99.9, 100 })
        {
            Assert.Equal(sent.Percentile(p), back.Percentile(p));
        }

        Assert.Equal(0, LatencyHistogram.FromSparse(new LatencyHistogram().ToSparse()).Count);
        Assert.Throws<ArgumentException>(() => LatencyHistogram.FromSparse(new SparseHistogram(1, 2, [1, 2], [1])));
        Assert.Throws<ArgumentException>(() => LatencyHistogram.FromSparse(new SparseHistogram(1, 2, [-1], [1])));
        Assert.Throws<ArgumentException>(() => LatencyHistogram.FromSparse(new SparseHistogram(1, 2, [int.MaxValue], [1])));
        Assert.Throws<ArgumentException>(() => LatencyHistogram.FromSparse(new SparseHistogram(1, 2, [3], [0])));
    }

    [Fact]
    public void Empty_histogram_reports_zero_and_bad_percentiles_are_refused()
    {
        var h = new LatencyHistogram();
        Assert.Equal(0, h.Percentile(99));
        h.Record(-5);
        Assert.Equal((0L, 0L), (h.Min, h.Percentile(100)));
        Assert.Throws<ArgumentOutOfRangeException>(() => h.Percentile(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => h.Percentile(100.1));
        Assert.Throws<ArgumentOutOfRangeException>(() => h.Percentile(double.NaN));
    }

    [Fact]
    public void Table_has_a_row_per_result_with_rate_percentiles_and_the_counter_check()
    {
        var fast = new LatencyHistogram();
        for (var i = 0; i < 99; i++)
        {
            fast.Record(80_000);
        }

        fast.Record(2_000_000);
        var results = new[]
        {
            new LockBenchResult("Lockstep", LockBenchShape.Uncontended, 16, "master: client's node (16/16 resources placed there)", 100, TimeSpan.FromSeconds(2), fast, null, null, string.Empty),
            new LockBenchResult("PostgreSQL", LockBenchShape.Counter, 16, "server a|b", 100, TimeSpan.FromSeconds(4), fast, 120, 120, string.Empty),
            new LockBenchResult("Lockstep", LockBenchShape.Counter, 16, "x", 100, TimeSpan.FromSeconds(1), fast, 120, 119, string.Empty),
            LockBenchResult.Failed("PostgreSQL", LockBenchShape.Contended, 16, "server", "connection refused\nretry"),
        };

        var lines = LockBenchReport.Render(results).TrimEnd().Split('\n');
        Assert.Equal(2 + results.Length, lines.Length);
        Assert.StartsWith("| system | shape | clients | where | cycles | cycles/s | p50 µs | p99 µs | check |", lines[0]);
        Assert.Equal("| Lockstep | uncontended EX | 16 | master: client's node (16/16 resources placed there) | 100 | 50 | 80.9 | 80.9 | ok |", lines[2]);
        Assert.Equal("| PostgreSQL | counter (EX + read/write) | 16 | server a/b | 100 | 25 | 80.9 | 80.9 | counter 120 = 120 increments |", lines[3]);
        Assert.EndsWith("| 100 | 100 | 80.9 | 80.9 | MISMATCH: counter 119, 120 increments |", lines[4]);
        Assert.Equal("| PostgreSQL | contended EX (1 resource) | 16 | server | 0 | 0 | – | – | ERROR: connection refused retry |", lines[5]);
        Assert.True(results[0].Ok && results[1].Ok);
        Assert.False(results[2].Ok || results[3].Ok);
        Assert.Equal("2000", LockBenchReport.Render([results[0] with { Latency = Only(2_000_000) }]).Split('\n')[2].Split(" | ")[6]);
    }

    [Fact]
    public async Task Loop_counts_every_measured_cycle_and_leaves_the_warmup_out()
    {
        var calls = new int[3];
        var cycles = Enumerable.Range(0, 3).Select<int, Func<CancellationToken, Task>>(i => async _ =>
        {
            await Task.Yield();
            Interlocked.Increment(ref calls[i]);
        }).ToList();

        var outcome = await LockBenchLoop.RunAsync(cycles, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(300), CancellationToken.None);

        Assert.Equal(string.Empty, outcome.Error);
        Assert.True(outcome.Cycles > 0, "no cycle was measured");
        Assert.True(outcome.WarmupCycles >= 3, $"{outcome.WarmupCycles} warm-up cycles: every client warms up at least once");
        Assert.Equal(calls.Sum(), outcome.Cycles + outcome.WarmupCycles);
        Assert.Equal(outcome.Cycles, outcome.Latency.Count);
        Assert.True(outcome.Elapsed >= TimeSpan.FromMilliseconds(300), $"the window closed after {outcome.Elapsed}");
    }

    [Fact]
    public async Task Loop_stops_every_client_at_the_first_failure_and_reports_it()
    {
        var calls = 0;
        var failing = 0;
        var cycles = new List<Func<CancellationToken, Task>>
        {
            async _ =>
            {
                await Task.Yield();
                if (Interlocked.Increment(ref failing) == 10)
                {
                    throw new InvalidOperationException("lock EX: Deadlock");
                }
            },
            async _ =>
            {
                await Task.Yield();
                Interlocked.Increment(ref calls);
            },
        };

        var outcome = await LockBenchLoop.RunAsync(cycles, TimeSpan.Zero, TimeSpan.FromMinutes(10), CancellationToken.None);

        Assert.Equal("lock EX: Deadlock", outcome.Error);
        Assert.True(outcome.Elapsed < TimeSpan.FromMinutes(10), "the other client kept going after the failure");
        Assert.Equal(10, failing);
        Assert.Equal(2, outcome.WarmupCycles);

        var early = await LockBenchLoop.RunAsync([_ => throw new InvalidOperationException("refused")], TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(10), CancellationToken.None);
        Assert.Equal((0L, "refused"), (early.Cycles, early.Error));
    }

    private static LatencyHistogram Only(long value)
    {
        var h = new LatencyHistogram();
        h.Record(value);
        return h;
    }
}
