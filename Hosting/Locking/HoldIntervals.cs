using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Lockstep.Hosting.Locking;

/// <summary>
/// One EX hold as its holder saw it: from the moment the grant reached the client to the moment it
/// stopped acting on the lock — recorded before the unlock was sent, or the moment it learned the
/// lock was lost (its node's stream broke, or the node told it FENCED).
/// </summary>
/// <param name="Resource">Locked resource.</param>
/// <param name="Node">Node whose session held the lock.</param>
/// <param name="Client">Client within the process that logged it.</param>
/// <param name="StartNs">Grant received, in <see cref="HoldClock"/> nanoseconds.</param>
/// <param name="EndNs">Stopped acting, same clock.</param>
/// <param name="How"><c>unlock</c> or <c>lost</c>.</param>
public sealed record HoldInterval(string Resource, string Node, string Client, long StartNs, long EndNs, string How)
{
    public override string ToString() =>
        $"{Resource} {Node}/{Client} [{StartNs}, {EndNs}] ({How}, {(EndNs - StartNs) / 1e6:F3} ms)";
}

/// <summary>Two holds of one resource that were both acting at once.</summary>
public sealed record HoldOverlap(HoldInterval First, HoldInterval Second)
{
    /// <summary>How long both held, in nanoseconds.</summary>
    public long OverlapNs => Math.Min(First.EndNs, Second.EndNs) - Second.StartNs;
}

/// <summary>
/// The clock of the interval logs: CLOCK_MONOTONIC (what <see cref="Stopwatch.GetTimestamp"/> reads on
/// Linux) in nanoseconds. It is one clock for every process on the machine — network namespaces do
/// not change it — and unlike the real-time clock it never steps when NTP or an operator sets the
/// time, so an end written by one process compares with a start written by another. It does not
/// compare across machines: the logs prove exclusion for processes on one host.
/// </summary>
public static class HoldClock
{
    /// <summary>Now, in nanoseconds.</summary>
    public static long NowNs() => ToNs(Stopwatch.GetTimestamp());

    /// <summary>A <see cref="Stopwatch"/> timestamp in nanoseconds.</summary>
    public static long ToNs(long timestamp) =>
        Stopwatch.Frequency == 1_000_000_000 ? timestamp : (long)((Int128)timestamp * 1_000_000_000 / Stopwatch.Frequency);
}

/// <summary>
/// The interval log: one line per hold, <c>hold RESOURCE NODE CLIENT START_NS END_NS HOW</c>, appended
/// by every holder of every process to one file.
/// </summary>
public static class HoldIntervalLog
{
    /// <summary>One log line (no newline).</summary>
    public static string Format(HoldInterval hold)
    {
        foreach (var field in new[] { hold.Resource, hold.Node, hold.Client, hold.How })
        {
            if (field.Length == 0 || field.Any(char.IsWhiteSpace))
            {
                throw new ArgumentException($"interval log fields must be non-empty and without spaces: '{field}'");
            }
        }

        return string.Create(CultureInfo.InvariantCulture, $"hold {hold.Resource} {hold.Node} {hold.Client} {hold.StartNs} {hold.EndNs} {hold.How}");
    }

    /// <summary>Parses a whole log; a malformed line is an error naming its number (lines not starting with <c>hold</c> are skipped).</summary>
    public static List<HoldInterval> Parse(IEnumerable<string> lines)
    {
        var holds = new List<HoldInterval>();
        var number = 0;
        foreach (var line in lines)
        {
            number++;
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length == 0 || fields[0] != "hold")
            {
                continue;
            }

            if (fields.Length != 7
                || !long.TryParse(fields[4], NumberStyles.None, CultureInfo.InvariantCulture, out var start)
                || !long.TryParse(fields[5], NumberStyles.None, CultureInfo.InvariantCulture, out var end))
            {
                throw new FormatException($"line {number}: expected 'hold RESOURCE NODE CLIENT START_NS END_NS HOW', got '{line}'");
            }

            if (end < start)
            {
                throw new FormatException($"line {number}: the hold ends ({end}) before it starts ({start})");
            }

            holds.Add(new HoldInterval(fields[1], fields[2], fields[3], start, end, fields[6]));
        }

        return holds;
    }
}

/// <summary>Finds EX holds of one resource that overlap: if the DLM never grants EX twice, there are none.</summary>
public static class HoldIntervalChecker
{
    /// <summary>
    /// Every hold that started before an earlier-starting hold of the same resource had ended, paired
    /// with the hold reaching furthest at that moment. Holds that merely touch (one ends at the instant
    /// the next starts) do not overlap: the end is written before the unlock is sent.
    /// </summary>
    public static List<HoldOverlap> FindOverlaps(IEnumerable<HoldInterval> holds)
    {
        var overlaps = new List<HoldOverlap>();
        foreach (var resource in holds.GroupBy(h => h.Resource, StringComparer.Ordinal))
        {
            HoldInterval? furthest = null;
            foreach (var hold in resource.OrderBy(h => h.StartNs).ThenBy(h => h.EndNs))
            {
                if (furthest is not null && hold.StartNs < furthest.EndNs)
                {
                    overlaps.Add(new HoldOverlap(furthest, hold));
                }

                if (furthest is null || hold.EndNs > furthest.EndNs)
                {
                    furthest = hold;
                }
            }
        }

        return overlaps;
    }

    /// <summary>A summary for people: counts per node and how, then the first overlaps.</summary>
    public static string Report(IReadOnlyList<HoldInterval> holds, IReadOnlyList<HoldOverlap> overlaps, int show = 10)
    {
        var text = new StringBuilder();
        foreach (var node in holds.GroupBy(h => h.Node, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"node {node.Key}: {node.Count()} holds ({node.Count(h => h.How == "lost")} lost)");
        }

        foreach (var overlap in overlaps.Take(show))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"OVERLAP {overlap.OverlapNs / 1e6:F3} ms: {overlap.First} and {overlap.Second}");
        }

        text.AppendLine(CultureInfo.InvariantCulture, $"{holds.Count} holds of {holds.Select(h => h.Resource).Distinct().Count()} resource(s), {overlaps.Count} overlaps");
        return text.ToString();
    }
}

/// <summary>
/// Appends whole lines to a log file that other processes append to as well: each line is one
/// write on a handle with O_APPEND, so the kernel places every line at the end and lines of different
/// writers never overwrite each other. .NET's <see cref="FileMode.Append"/> does not set O_APPEND (it
/// seeks to the end once at open), hence the fcntl.
/// </summary>
public sealed partial class AppendOnlyLineLog : IDisposable
{
    private const int GetFlags = 3; // F_GETFL
    private const int SetFlags = 4; // F_SETFL
    private const int Append = 0x400; // O_APPEND on Linux

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command, int argument);

    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _handle;
    private readonly Lock _gate = new();

    public AppendOnlyLineLog(string path)
    {
        var full = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        _handle = File.OpenHandle(full, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
        var fd = (int)_handle.DangerousGetHandle();
        var flags = Fcntl(fd, GetFlags, 0);
        if (flags < 0 || Fcntl(fd, SetFlags, flags | Append) < 0)
        {
            var errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            _handle.Dispose();
            throw new IOException($"{full}: cannot set O_APPEND (errno {errno})");
        }

        Path = full;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>The handle, for checking how it was opened.</summary>
    public Microsoft.Win32.SafeHandles.SafeFileHandle Handle => _handle;

    /// <summary>Appends <paramref name="line"/> and a newline in one write.</summary>
    public void AppendLine(string line)
    {
        var bytes = Encoding.UTF8.GetBytes(line + "\n");
        lock (_gate)
        {
            // The offset is ignored for a handle opened with O_APPEND; the kernel writes at the end.
            RandomAccess.Write(_handle, bytes, RandomAccess.GetLength(_handle));
        }
    }

    public void Dispose() => _handle.Dispose();
}
