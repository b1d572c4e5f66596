using System.Diagnostics;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace Lockstep.Hosting.Locking;

/// <summary>
/// A log-linear latency histogram in nanoseconds (the HdrHistogram layout with 64 sub-buckets per
/// power of two): exact below 128 ns, at most 1/64 (1.6 %) too high above, fixed size whatever the
/// run length, and mergeable, so every bench client records into its own and nothing is shared.
/// </summary>
public sealed class LatencyHistogram
{
    private const int SubBits = 6;
    private const int Sub = 1 << SubBits;
    private const int Linear = 2 * Sub;
    private readonly long[] _counts = new long[Linear + ((63 - SubBits) * Sub)];

    /// <summary>Values recorded.</summary>
    public long Count { get; private set; }

    /// <summary>Smallest value recorded (0 when empty).</summary>
    public long Min { get; private set; }

    /// <summary>Largest value recorded (0 when empty).</summary>
    public long Max { get; private set; }

    /// <summary>Records one latency; negative values count as 0.</summary>
    public void Record(long nanoseconds)
    {
        var value = Math.Max(0, nanoseconds);
        _counts[Index(value)]++;
        Min = Count == 0 ? value : Math.Min(Min, value);
        Max = Count == 0 ? value : Math.Max(Max, value);
        Count++;
    }

    /// <summary>Adds every value of <paramref name="other"/> to this histogram.</summary>
    public void Merge(LatencyHistogram other)
    {
        if (other.Count == 0)
        {
            return;
        }

        for (var i = 0; i < _counts.Length; i++)
        {
            _counts[i] += other._counts[i];
        }

        Min = Count == 0 ? other.Min : Math.Min(Min, other.Min);
        Max = Count == 0 ? other.Max : Math.Max(Max, other.Max);
        Count += other.Count;
    }

    /// <summary>
    /// The smallest recorded value (to bucket precision) that at least <paramref name="percent"/> % of
    /// the values do not exceed; 0 when empty.
    /// </summary>
    public long Percentile(double percent)
    {
        if (percent is <= 0 or > 100 || double.IsNaN(percent))
        {
            throw new ArgumentOutOfRangeException(nameof(percent), percent, "a percentile is in (0, 100]");
        }

        if (Count == 0)
        {
            return 0;
        }

        var rank = Math.Max(1, (long)Math.Ceiling(percent / 100 * Count));
        long seen = 0;
        for (var i = 0; i < _counts.Length; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
            {
                return Math.Clamp(HighestEquivalent(i), Min, Max);
            }
        }

        return Max;
    }

    /// <summary>The non-empty buckets, for sending a histogram to another process (<see cref="FromSparse"/> rebuilds it).</summary>
    public SparseHistogram ToSparse()
    {
        var indexes = new List<int>();
        var counts = new List<long>();
        for (var i = 0; i < _counts.Length; i++)
        {
            if (_counts[i] != 0)
            {
                indexes.Add(i);
                counts.Add(_counts[i]);
            }
        }

        return new SparseHistogram(Min, Max, [.. indexes], [.. counts]);
    }

    /// <summary>The histogram <paramref name="sparse"/> was made from.</summary>
    /// <exception cref="ArgumentException">Indexes and counts differ in length, an index is out of range, or a count is not positive.</exception>
    public static LatencyHistogram FromSparse(SparseHistogram sparse)
    {
        ArgumentNullException.ThrowIfNull(sparse);
        var histogram = new LatencyHistogram();
        if (sparse.Indexes.Length != sparse.Counts.Length)
        {
            throw new ArgumentException("a sparse histogram needs one count per index", nameof(sparse));
        }

        for (var i = 0; i < sparse.Indexes.Length; i++)
        {
            if (sparse.Indexes[i] < 0 || sparse.Indexes[i] >= histogram._counts.Length || sparse.Counts[i] <= 0)
            {
                throw new ArgumentException($"bucket {sparse.Indexes[i]} with count {sparse.Counts[i]} is not a bucket of this layout", nameof(sparse));
            }

            histogram._counts[sparse.Indexes[i]] += sparse.Counts[i];
            histogram.Count += sparse.Counts[i];
        }

        histogram.Min = histogram.Count == 0 ? 0 : sparse.Min;
        histogram.Max = histogram.Count == 0 ? 0 : sparse.Max;
        return histogram;
    }

    /// <summary>Bucket of a value: itself below 128, else 64 sub-buckets per power of two.</summary>
    internal static int Index(long value)
    {
        if (value < Linear)
        {
            return (int)value;
        }

        var shift = BitOperations.Log2((ulong)value) - SubBits;
        return Linear + ((shift - 1) * Sub) + (int)((value >> shift) - Sub);
    }

    /// <summary>Largest value that falls into bucket <paramref name="index"/>.</summary>
    internal static long HighestEquivalent(int index)
    {
        if (index < Linear)
        {
            return index;
        }

        var shift = ((index - Linear) / Sub) + 1;
        var sub = ((index - Linear) % Sub) + Sub;
        return ((sub + 1L) << shift) - 1;
    }

    /// <summary>Nanoseconds between two <see cref="Stopwatch.GetTimestamp"/> readings.</summary>
    public static long Nanoseconds(long startTimestamp, long endTimestamp) =>
        (long)((endTimestamp - startTimestamp) * (1_000_000_000.0 / Stopwatch.Frequency));
}

/// <summary>A <see cref="LatencyHistogram"/> on the wire: its extremes and its non-empty buckets.</summary>
public sealed record SparseHistogram(long Min, long Max, int[] Indexes, long[] Counts);

/// <summary>The workloads the bench runs on each system, in this order.</summary>
public enum LockBenchShape
{
    /// <summary>
    /// No lock: the round trips under an uncontended cycle. Lockstep: a gRPC ping that passes through the
    /// client's resource's master (the path of a lock request), then a plain gRPC ping (the path of an
    /// unlock, which the serving node answers); PostgreSQL: SELECT 1 twice.
    /// </summary>
    Floor,

    /// <summary>Every client locks EX and unlocks its own resource (key): no waiting, pure round trips.</summary>
    Uncontended,

    /// <summary>Every client locks EX and unlocks the same resource: a queue, one holder at a time.</summary>
    Contended,

    /// <summary>Every client locks one resource, reads a counter, writes it back plus one, unlocks.</summary>
    Counter,
}

/// <summary>One row of the bench: a system running one shape with some clients for a while.</summary>
/// <param name="System">"Lockstep" or "PostgreSQL".</param>
/// <param name="Shape">The workload.</param>
/// <param name="Clients">Concurrent clients.</param>
/// <param name="Where">Where the resources lived (Lockstep: master placement; PostgreSQL: the server).</param>
/// <param name="Cycles">Lock+unlock cycles completed in the measured window.</param>
/// <param name="Elapsed">Measured window, from the common start to the last client's last cycle.</param>
/// <param name="Latency">Per-cycle latency (lock request sent to unlock answered).</param>
/// <param name="CounterExpected">Counter shape: increments completed (warm-up included); else null.</param>
/// <param name="CounterFound">Counter shape: the counter read back at the end; else null.</param>
/// <param name="Error">First error of the run; empty if none.</param>
/// <param name="ClientCpu">CPU time of the bench process during the window (zero when not measured).</param>
/// <param name="WarmupCycles">Unmeasured cycles run before the window.</param>
public sealed record LockBenchResult(
    string System,
    LockBenchShape Shape,
    int Clients,
    string Where,
    long Cycles,
    TimeSpan Elapsed,
    LatencyHistogram Latency,
    long? CounterExpected,
    long? CounterFound,
    string Error,
    TimeSpan ClientCpu = default,
    long WarmupCycles = 0)
{
    /// <summary>CPU the bench process itself spent per measured cycle (its clients share the machine with the servers).</summary>
    public double ClientCpuMicrosecondsPerCycle => Cycles > 0 ? ClientCpu.TotalMicroseconds / Cycles : 0;

    /// <summary>Cycles per second over the measured window.</summary>
    public double CyclesPerSecond => Elapsed > TimeSpan.Zero ? Cycles / Elapsed.TotalSeconds : 0;

    /// <summary>No error, at least one cycle, and (counter shape) the counter equals the increments.</summary>
    public bool Ok => Error.Length == 0 && Cycles > 0 && CounterExpected == CounterFound;

    /// <summary>A row for a run that could not start at all.</summary>
    public static LockBenchResult Failed(string system, LockBenchShape shape, int clients, string where, string error) =>
        new(system, shape, clients, where, 0, TimeSpan.Zero, new LatencyHistogram(), null, null, error);
}

/// <summary>Renders bench results as the Markdown table that goes into docs/benchmarks.md.</summary>
public static class LockBenchReport
{
    /// <summary>One Markdown table, a row per result in the given order.</summary>
    public static string Render(IEnumerable<LockBenchResult> results)
    {
        var text = new StringBuilder();
        text.AppendLine("| system | shape | clients | where | cycles | cycles/s | p50 µs | p99 µs | check |");
        text.AppendLine("|---|---|---:|---|---:|---:|---:|---:|---|");
        foreach (var r in results)
        {
            text.Append(CultureInfo.InvariantCulture, $"| {r.System} | {Shape(r.Shape)} | {r.Clients} | {Cell(r.Where)} | {r.Cycles} | {r.CyclesPerSecond:F0} | ");
            text.Append(CultureInfo.InvariantCulture, $"{Micros(r.Latency, 50)} | {Micros(r.Latency, 99)} | {Cell(Check(r))} |");
            text.AppendLine();
        }

        return text.ToString();
    }

    /// <summary>The check column: errors, the counter comparison, or "ok".</summary>
    public static string Check(LockBenchResult r)
    {
        var parts = new List<string>();
        if (r.CounterExpected is { } expected)
        {
            parts.Add(expected == r.CounterFound
                ? $"counter {r.CounterFound} = {expected} increments"
                : $"MISMATCH: counter {(r.CounterFound is { } found ? found.ToString(CultureInfo.InvariantCulture) : "unread")}, {expected} increments");
        }

        if (r.Error.Length > 0)
        {
            parts.Add($"ERROR: {r.Error}");
        }
        else if (r.Cycles == 0)
        {
            parts.Add("ERROR: no cycle completed");
        }

        return parts.Count == 0 ? "ok" : string.Join("; ", parts);
    }

    private static string Shape(LockBenchShape shape) => shape switch
    {
        LockBenchShape.Floor => "floor: 2 round trips, no lock",
        LockBenchShape.Uncontended => "uncontended EX",
        LockBenchShape.Contended => "contended EX (1 resource)",
        _ => "counter (EX + read/write)",
    };

    private static string Micros(LatencyHistogram latency, double percent) =>
        latency.Count == 0 ? "–" : (latency.Percentile(percent) / 1000.0).ToString(latency.Percentile(percent) < 100_000 ? "F1" : "F0", CultureInfo.InvariantCulture);

    // A pipe or line break inside a cell would break the table.
    private static string Cell(string text) => text.Replace("|", "/", StringComparison.Ordinal).ReplaceLineEndings(" ");
}

/// <summary>
/// The measuring loop, independent of what a cycle does: warm-up, a common start, each client
/// cycling until the window closes, one histogram per client merged at the end.
/// </summary>
public static class LockBenchLoop
{
    /// <summary>What the loop measured.</summary>
    /// <param name="Cycles">Cycles in the window.</param>
    /// <param name="Elapsed">Window length (common start to the last cycle's end).</param>
    /// <param name="Latency">Merged per-cycle latencies.</param>
    /// <param name="Error">First failure of any client (that stops every client); empty if none.</param>
    /// <param name="WarmupCycles">Cycles run before the window, not measured.</param>
    /// <param name="ClientCpu">CPU time of this process (all its clients) during the window.</param>
    public sealed record Outcome(long Cycles, TimeSpan Elapsed, LatencyHistogram Latency, string Error, long WarmupCycles, TimeSpan ClientCpu = default);

    /// <summary>
    /// Warms up (every client cycles unmeasured, at least once, until <paramref name="warmup"/> has
    /// passed: JIT tiering and connection set-up on both ends settle), then runs all clients together
    /// for <paramref name="window"/>; a cycle in flight when the window closes finishes and counts.
    /// The first exception stops all clients and is reported.
    /// </summary>
    public static async Task<Outcome> RunAsync(IReadOnlyList<Func<CancellationToken, Task>> cycles, TimeSpan warmup, TimeSpan window, CancellationToken cancellationToken)
    {
        string? error = null;
        long warmupCycles = 0;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);

        async Task Guard(Func<Task> body)
        {
            try
            {
                await body();
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                if (Interlocked.CompareExchange(ref error, ex.GetBaseException().Message, null) is null)
                {
                    await stop.CancelAsync();
                }
            }
        }

        var warm = Stopwatch.GetTimestamp() + (long)(warmup.TotalSeconds * Stopwatch.Frequency);
        await Task.WhenAll(cycles.Select(cycle => Guard(async () =>
        {
            do
            {
                await cycle(stop.Token);
                Interlocked.Increment(ref warmupCycles);
            }
            while (!stop.IsCancellationRequested && Stopwatch.GetTimestamp() < warm);
        })));
        cancellationToken.ThrowIfCancellationRequested();
        if (error is not null)
        {
            return new Outcome(0, TimeSpan.Zero, new LatencyHistogram(), error, warmupCycles);
        }

        var histograms = cycles.Select(_ => new LatencyHistogram()).ToArray();
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var start = Stopwatch.GetTimestamp();
        var end = start + (long)(window.TotalSeconds * Stopwatch.Frequency);
        await Task.WhenAll(cycles.Select((cycle, index) => Guard(async () =>
        {
            var histogram = histograms[index];
            while (!stop.IsCancellationRequested)
            {
                var before = Stopwatch.GetTimestamp();
                if (before >= end)
                {
                    return;
                }

                await cycle(stop.Token);
                histogram.Record(LatencyHistogram.Nanoseconds(before, Stopwatch.GetTimestamp()));
            }
        })));
        var elapsed = Stopwatch.GetElapsedTime(start);
        var clientCpu = Process.GetCurrentProcess().TotalProcessorTime - cpuBefore;
        cancellationToken.ThrowIfCancellationRequested();

        var merged = new LatencyHistogram();
        foreach (var histogram in histograms)
        {
            merged.Merge(histogram);
        }

        return new Outcome(merged.Count, elapsed, merged, error ?? string.Empty, warmupCycles, clientCpu);
    }
}
