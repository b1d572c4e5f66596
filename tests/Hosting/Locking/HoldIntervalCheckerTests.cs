using System.Globalization;
using Lockstep.Hosting.Locking;
using Xunit;

namespace Lockstep.Hosting.Tests.Locking;

public sealed class HoldIntervalCheckerTests
{
    private static HoldInterval Hold(long start, long end, string node = "node-1", string client = "c0", string resource = "counter") =>
        new(resource, node, client, start, end, "unlock");

    [Fact]
    public void Back_to_back_and_touching_holds_do_not_overlap()
    {
        var holds = new[] { Hold(30, 40, "node-3"), Hold(0, 10), Hold(10, 20, "node-2"), Hold(21, 29) };
        Assert.Empty(HoldIntervalChecker.FindOverlaps(holds));
    }

    [Fact]
    public void A_hold_starting_before_the_previous_one_ended_is_an_overlap()
    {
        var first = Hold(0, 100, "node-1");
        var second = Hold(99, 150, "node-2");
        var overlap = Assert.Single(HoldIntervalChecker.FindOverlaps([second, first]));
        Assert.Equal(first, overlap.First);
        Assert.Equal(second, overlap.Second);
        Assert.Equal(1, overlap.OverlapNs);
    }

    [Fact]
    public void A_hold_nested_in_a_long_one_is_caught_even_after_short_ones_in_between()
    {
        // The long hold reaches past both later ones; comparing only neighbours would miss the third.
        var holds = new[] { Hold(0, 1000, "node-3"), Hold(10, 20), Hold(500, 600, "node-2") };
        var overlaps = HoldIntervalChecker.FindOverlaps(holds);
        Assert.Equal(2, overlaps.Count);
        Assert.All(overlaps, o => Assert.Equal("node-3", o.First.Node));
    }

    [Fact]
    public void Holds_of_different_resources_never_conflict()
    {
        Assert.Empty(HoldIntervalChecker.FindOverlaps([Hold(0, 100, resource: "a"), Hold(50, 150, resource: "b")]));
    }

    [Fact]
    public void Random_disjoint_holds_pass_and_any_widened_hold_fails()
    {
        var random = new Random(42);
        var holds = new List<HoldInterval>();
        long t = 0;
        for (var i = 0; i < 500; i++)
        {
            t += random.Next(1, 50);
            var end = t + random.Next(0, 50);
            holds.Add(Hold(t, end, $"node-{random.Next(1, 4)}", $"c{i % 7}"));
            t = end;
        }

        var shuffled = holds.OrderBy(_ => random.Next()).ToList();
        Assert.Empty(HoldIntervalChecker.FindOverlaps(shuffled));

        var victim = random.Next(0, holds.Count - 1);
        shuffled[shuffled.IndexOf(holds[victim])] = holds[victim] with { EndNs = holds[victim + 1].StartNs + 1 };
        var overlap = Assert.Single(HoldIntervalChecker.FindOverlaps(shuffled));
        Assert.Equal(holds[victim + 1], overlap.Second);
    }

    [Fact]
    public void The_log_round_trips_and_bad_lines_name_their_number()
    {
        var hold = new HoldInterval("counter", "node-2", "n2c1", 123, 456, "lost");
        var lines = new[] { "# comment", HoldIntervalLog.Format(hold), string.Empty };
        Assert.Equal([hold], HoldIntervalLog.Parse(lines));

        var broken = Assert.Throws<FormatException>(() => HoldIntervalLog.Parse([HoldIntervalLog.Format(hold), "hold counter node-1 c0 12x 15 unlock"]));
        Assert.StartsWith("line 2:", broken.Message, StringComparison.Ordinal);
        var backwards = Assert.Throws<FormatException>(() => HoldIntervalLog.Parse(["hold counter node-1 c0 20 10 unlock"]));
        Assert.Contains("ends (10) before it starts (20)", backwards.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => HoldIntervalLog.Format(hold with { Node = "node 2" }));
    }

    [Fact]
    public void The_clock_is_nanoseconds_of_the_monotonic_clock()
    {
        var before = HoldClock.NowNs();
        Thread.Sleep(20);
        var elapsed = HoldClock.NowNs() - before;
        Assert.InRange(elapsed, 15_000_000, 60_000_000_000);
        // Same clock as /proc/uptime (CLOCK_BOOTTIME = CLOCK_MONOTONIC plus suspended time, none on a server).
        var uptimeNs = (long)(double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture) * 1e9);
        Assert.InRange(HoldClock.NowNs() - uptimeNs, -2_000_000_000L, 2_000_000_000L);
    }

    [Fact]
    public void Lines_are_appended_through_an_o_append_handle_by_concurrent_writers()
    {
        var path = Path.Combine(Path.GetTempPath(), $"lockstep-intervals-{Guid.NewGuid():N}.log");
        try
        {
            using (var a = new AppendOnlyLineLog(path))
            using (var b = new AppendOnlyLineLog(path))
            {
                // O_APPEND (octal 02000) in the open flags: the kernel puts each write at the end, whoever wrote last.
                var flags = File.ReadLines($"/proc/self/fdinfo/{a.Handle.DangerousGetHandle()}").First(l => l.StartsWith("flags:", StringComparison.Ordinal));
                Assert.True((Convert.ToInt64(flags["flags:".Length..].Trim(), 8) & 0x400) != 0, $"handle opened without O_APPEND: {flags}");
                Parallel.For(0, 400, i => (i % 2 == 0 ? a : b).AppendLine(HoldIntervalLog.Format(Hold(i * 10, i * 10 + 5, client: $"c{i}"))));
            }

            var holds = HoldIntervalLog.Parse(File.ReadLines(path));
            Assert.Equal(400, holds.Count);
            Assert.Equal(400, holds.Select(h => h.Client).Distinct().Count());
        }
        finally
        {
            File.Delete(path);
        }
    }
}
