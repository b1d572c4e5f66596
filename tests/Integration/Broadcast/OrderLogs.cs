using System.Diagnostics;
using Xunit;

namespace Lockstep.Integration.Tests.Broadcast;

/// <summary>
/// The nodes' order logs (<c>Lockstep:Broadcast:OrderLog</c>, one line per delivered message:
/// <c>stream seq index origin message…</c>) and the checks the broadcast fault tests make on them. One order per stream
/// is promised, not across streams, so a log is read with its streams one after another.
/// </summary>
internal static class OrderLogs
{
    /// <summary>A node's log, streams one after another (each in its delivery order), without the ping stream.</summary>
    public static string[] Read(string path) =>
        File.Exists(path)
            ? File.ReadAllLines(path).Where(l => l.Length > 0 && !l.StartsWith("global ", StringComparison.Ordinal)).OrderBy(l => l.Split(' ')[0], StringComparer.Ordinal).ToArray()
            : [];

    /// <summary>A log line without its stream, round, position and origin: "Noop origin tag".</summary>
    public static string Message(string line) => string.Join(' ', line.Split(' ').Skip(4));

    /// <summary>
    /// The two survivors' logs once they agree: a round the lost node left half-delivered is published again after its
    /// removal, so they may differ for a moment. Asserts they agree within <paramref name="bound"/>, and prints where
    /// they differ when they do not.
    /// </summary>
    public static async Task<string[]> AgreedAsync(string firstPath, string secondPath, TimeSpan bound, Action<string> output)
    {
        string[][] logs = [Read(firstPath), Read(secondPath)];
        var settle = Stopwatch.StartNew();
        while (!logs[0].SequenceEqual(logs[1]) && settle.Elapsed < bound)
        {
            await Task.Delay(500);
            logs = [Read(firstPath), Read(secondPath)];
        }

        if (!logs[0].SequenceEqual(logs[1]))
        {
            var shorter = Math.Min(logs[0].Length, logs[1].Length);
            var first = Enumerable.Range(0, shorter).FirstOrDefault(i => logs[0][i] != logs[1][i], shorter);
            output($"logs differ at line {first} ({logs[0].Length} vs {logs[1].Length} lines)");
            foreach (var n in new[] { 0, 1 })
            {
                output($"--- survivor {n + 1}");
                logs[n].Skip(Math.Max(0, first - 3)).Take(8).ToList().ForEach(output);
            }
        }

        Assert.Equal(logs[0], logs[1]);
        return logs[0];
    }

    /// <summary>Per stream: every message once in the survivors' log, and the lost node's log a prefix of it.</summary>
    public static void AssertLostNodeDeliveredAPrefix(string[] survivors, string[] lost, IEnumerable<string> streams, Action<string> output)
    {
        foreach (var stream in streams)
        {
            var ours = survivors.Where(l => l.StartsWith(stream + " ", StringComparison.Ordinal)).ToArray();
            var theirs = lost.Where(l => l.StartsWith(stream + " ", StringComparison.Ordinal)).ToArray();
            output($"{stream}: survivors {ours.Length} messages in {ours.Select(l => l.Split(' ')[1]).Distinct().Count()} rounds; the lost node had {theirs.Length}");
            Assert.Equal(ours.Length, ours.Distinct().Count());
            Assert.Equal(ours.Length, ours.Select(Message).Distinct().Count());
            Assert.Equal(theirs, ours.Take(theirs.Length));
        }
    }

    /// <summary>Asserts that every no-op <paramref name="origin"/> sent with a tag below <paramref name="sent"/> is in the log, except the calls that failed (their outcome is unknown).</summary>
    public static void AssertEverySuccessfulCallDelivered(string[] survivors, string origin, int sent, IReadOnlySet<int> failedTags)
    {
        var delivered = survivors.Select(Message).ToHashSet();
        Assert.Equal(0, Enumerable.Range(0, sent).Count(tag => !failedTags.Contains(tag) && !delivered.Contains($"Noop {origin} {tag}")));
    }
}
