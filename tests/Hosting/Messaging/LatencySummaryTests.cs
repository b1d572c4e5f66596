using Lockstep.Hosting.Messaging;
using Xunit;

namespace Lockstep.Hosting.Tests.Messaging;

public sealed class LatencySummaryTests
{
    [Fact]
    public void Percentiles_use_the_nearest_rank_of_the_sorted_latencies()
    {
        var latencies = Enumerable.Range(1, 200).Select(i => (double)(201 - i)).ToArray();

        var summary = LatencySummary.From("x", latencies, failed: 3, TimeSpan.FromSeconds(2));

        Assert.Equal(100, summary.P50Ms);
        Assert.Equal(198, summary.P99Ms);
        Assert.Equal(200, summary.MaxMs);
        Assert.Equal(200, summary.Calls);
        Assert.Equal(3, summary.Failed);
        Assert.Equal(100, summary.PerSecond);
    }

    [Fact]
    public void No_calls_give_zeroes_instead_of_an_exception()
    {
        var summary = LatencySummary.From("none", [], failed: 5, TimeSpan.Zero);

        Assert.Equal((0, 0d, 0d, 0d), (summary.Calls, summary.P50Ms, summary.P99Ms, summary.PerSecond));
    }

    [Fact]
    public void The_table_shows_each_run_as_a_share_of_the_first()
    {
        var runs = new[]
        {
            new LatencySummary("plain", 1000, 0, TimeSpan.FromSeconds(1), 1.5, 4, 9),
            new LatencySummary("layer", 800, 2, TimeSpan.FromSeconds(1), 2.25, 6, 12),
        };

        var lines = LatencySummary.Table(runs).Split(Environment.NewLine);

        Assert.Equal(4, lines.Length);
        Assert.Equal("| plain | 1000 | 0 | 1000 | 100% | 1.50 | 4.00 | 9.0 |", lines[2]);
        Assert.Equal("| layer | 800 | 2 | 800 | 80% | 2.25 | 6.00 | 12.0 |", lines[3]);
    }

    [Fact]
    public async Task Measure_counts_wrong_answers_and_failures_apart_from_completed_calls()
    {
        var summary = await MessagingBench.MeasureAsync("m", 100, 8, i => i % 10 == 0
            ? Task.FromException<bool>(new TaskCanceledException())
            : Task.FromResult(i % 10 != 1));

        Assert.Equal(80, summary.Calls);
        Assert.Equal(20, summary.Failed);
    }
}
