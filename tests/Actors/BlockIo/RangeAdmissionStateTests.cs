using CsCheck;
using Lockstep.Actors.BlockIo;
using Xunit;

namespace Lockstep.Actors.Tests.BlockIo;

public sealed class RangeAdmissionStateTests
{
    private sealed class Req(int id, long start, long end)
    {
        public int Id { get; } = id;

        public long Start { get; } = start;

        public long End { get; } = end;

        public override string ToString() => $"#{Id}[{Start},{End})";
    }

    [Fact]
    public void Disjoint_requests_run_at_once_and_overlapping_ones_wait_in_arrival_order()
    {
        var state = new RangeAdmissionState<Req>();
        var a = new Req(1, 0, 100);
        var b = new Req(2, 100, 200);
        var c = new Req(3, 50, 150);
        var d = new Req(4, 60, 70);
        Assert.True(state.Enter(a, a.Start, a.End));
        Assert.True(state.Enter(b, b.Start, b.End)); // touching is not overlapping
        Assert.False(state.Enter(c, c.Start, c.End));
        Assert.False(state.Enter(d, d.Start, d.End));

        var woken = new List<Req>();
        state.Exit(a, woken);
        Assert.Empty(woken); // c still overlaps b; d must not overtake c
        state.Exit(b, woken);
        Assert.Equal([c], woken);
        woken.Clear();
        state.Exit(c, woken);
        Assert.Equal([d], woken);
    }

    [Fact]
    public void A_later_request_does_not_overtake_an_earlier_waiting_one_it_overlaps()
    {
        var state = new RangeAdmissionState<Req>();
        var a = new Req(1, 0, 10);
        var b = new Req(2, 5, 20);
        var c = new Req(3, 15, 30);
        Assert.True(state.Enter(a, a.Start, a.End));
        Assert.False(state.Enter(b, b.Start, b.End));
        // c does not overlap a (the running one) but overlaps b, which came first: it waits.
        Assert.False(state.Enter(c, c.Start, c.End));
    }

    [Fact]
    public void Misuse_is_refused()
    {
        var state = new RangeAdmissionState<Req>();
        var a = new Req(1, 0, 10);
        var b = new Req(2, 0, 10);
        Assert.Throws<ArgumentException>(() => state.Enter(a, 10, 10));
        state.Enter(a, 0, 10);
        Assert.Throws<InvalidOperationException>(() => state.Enter(a, 20, 30));
        state.Enter(b, 0, 10);
        Assert.Throws<InvalidOperationException>(() => state.Exit(b, [])); // waiting, not admitted
        Assert.Throws<InvalidOperationException>(() => state.Exit(new Req(3, 0, 1), []));
    }

    /// <summary>
    /// Random arrivals and completions: admitted requests never overlap, overlapping requests are admitted in
    /// arrival order, and once everything completes nothing is left waiting.
    /// </summary>
    [Fact]
    public void Property_no_overlap_fifo_among_overlapping_and_progress()
    {
        var ops = Gen.Select(Gen.Bool, Gen.Long[0, 60], Gen.Long[1, 20], Gen.Int[0, 1000]).Array[1, 80];
        ops.Sample(script =>
        {
            var state = new RangeAdmissionState<Req>();
            var running = new List<Req>();
            var waiting = new List<Req>();
            var admittedOrder = new List<Req>();
            var next = 0;

            void Admit(Req r)
            {
                foreach (var other in running)
                {
                    Assert.False(other.Start < r.End && r.Start < other.End, $"{r} admitted while {other} runs");
                }

                // Every earlier overlapping request was admitted before this one.
                foreach (var earlier in waiting.Where(w => w.Id < r.Id && w.Start < r.End && r.Start < w.End))
                {
                    Assert.Fail($"{r} admitted before earlier overlapping {earlier}");
                }

                waiting.Remove(r);
                running.Add(r);
                admittedOrder.Add(r);
            }

            void Complete(Req r)
            {
                running.Remove(r);
                var woken = new List<Req>();
                state.Exit(r, woken);
                foreach (var w in woken)
                {
                    Admit(w);
                }
            }

            foreach (var (arrive, start, length, pick) in script)
            {
                if (arrive || running.Count == 0)
                {
                    var r = new Req(next++, start, start + length);
                    waiting.Add(r);
                    if (state.Enter(r, r.Start, r.End))
                    {
                        Admit(r);
                    }
                }
                else
                {
                    Complete(running[pick % running.Count]);
                }
            }

            while (running.Count > 0)
            {
                Complete(running[0]);
            }

            Assert.Empty(waiting);
            Assert.Equal(0, state.Count);
        });
    }
}
