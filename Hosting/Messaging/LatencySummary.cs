namespace Lockstep.Hosting.Messaging;

/// <summary>Throughput and latency percentiles of one benchmark run, from the raw per-call latencies.</summary>
/// <param name="Name">What was measured.</param>
/// <param name="Calls">Calls that completed with the right answer.</param>
/// <param name="Failed">Calls that failed or answered wrongly.</param>
/// <param name="Elapsed">Wall time of the run.</param>
/// <param name="P50Ms">Median latency in milliseconds.</param>
/// <param name="P99Ms">99th percentile latency in milliseconds.</param>
/// <param name="MaxMs">Slowest call in milliseconds.</param>
public sealed record LatencySummary(string Name, int Calls, int Failed, TimeSpan Elapsed, double P50Ms, double P99Ms, double MaxMs)
{
    /// <summary>Completed calls per second of wall time.</summary>
    public double PerSecond => Elapsed > TimeSpan.Zero ? Calls / Elapsed.TotalSeconds : 0;

    /// <summary>
    /// Summarises <paramref name="latenciesMs"/> (one entry per completed call; the array is sorted in place).
    /// Percentiles use the nearest-rank method: the value at rank ceil(p × n).
    /// </summary>
    public static LatencySummary From(string name, double[] latenciesMs, int failed, TimeSpan elapsed)
    {
        ArgumentNullException.ThrowIfNull(latenciesMs);
        Array.Sort(latenciesMs);
        return new LatencySummary(name, latenciesMs.Length, failed, elapsed, Rank(latenciesMs, 0.50), Rank(latenciesMs, 0.99), latenciesMs.Length == 0 ? 0 : latenciesMs[^1]);
    }

    /// <summary>Nearest-rank percentile of sorted values; 0 for no values.</summary>
    public static double Rank(double[] sorted, double p)
    {
        ArgumentNullException.ThrowIfNull(sorted);
        if (sorted.Length == 0)
        {
            return 0;
        }

        var rank = (int)Math.Ceiling(p * sorted.Length);
        return sorted[Math.Clamp(rank, 1, sorted.Length) - 1];
    }

    /// <summary>A Markdown table of the runs, each row's throughput also as a share of the first row's.</summary>
    public static string Table(IReadOnlyList<LatencySummary> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var lines = new List<string>
        {
            "| run | calls | failed | calls/s | vs first | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|---|",
        };
        var baseline = runs.Count > 0 ? runs[0].PerSecond : 0;
        foreach (var r in runs)
        {
            var share = baseline > 0 ? $"{100 * r.PerSecond / baseline:F0}%" : "-";
            lines.Add(FormattableString.Invariant($"| {r.Name} | {r.Calls} | {r.Failed} | {r.PerSecond:F0} | {share} | {r.P50Ms:F2} | {r.P99Ms:F2} | {r.MaxMs:F1} |"));
        }

        return string.Join(Environment.NewLine, lines);
    }
}
