using CsCheck;
using Lockstep.Actors.Messaging;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Messaging;

/// <summary>
/// Random schedules of sends, deliveries in any order, duplicates, losses, timer ticks, association drops and
/// holder moves, on the real outbox and holder state. After the faults stop and the system drains, the
/// three promises of the layer must hold.
/// </summary>
public sealed class MessagingPropertyTests(ITestOutputHelper output)
{
    private static readonly Gen<(int Seed, int[] Ops)> Schedules =
        Gen.Select(Gen.Int, Gen.Int[0, 9].Array[20, 400], (seed, ops) => (seed, ops));

    [Fact]
    public void Every_request_runs_exactly_once_in_order_and_every_caller_gets_its_status()
    {
        var totals = (Requests: 0, Runs: 0);
        Schedules.Sample(schedule =>
        {
            var sim = Run(schedule, allowCrash: false, holderCap: 6, new OutboxLimits(MaxInFlightPerChannel: 4, MaxQueuedPerChannel: 10_000));
            var perRequest = sim.Runs.GroupBy(r => r.Request).ToDictionary(g => g.Key, g => g.Count());
            Assert.True(sim.Runs.Count == sim.Requests, $"{sim.Runs.Count} handler runs for {sim.Requests} requests");
            Assert.All(Enumerable.Range(0, sim.Requests), r => Assert.Equal(1, perRequest.GetValueOrDefault(r)));
            Assert.DoesNotContain(sim.Runs, r => r.PossiblyRepeated);
            AssertCallersAndOrder(sim);
            totals.Requests += sim.Requests;
            totals.Runs += sim.Runs.Count;
        }, iter: 400);
        output.WriteLine($"{totals.Requests} requests over 400 schedules, {totals.Runs} handler runs");
        Assert.True(totals.Requests > 1000, "the generator produced too few requests to mean anything");
    }

    [Fact]
    public void A_tight_cap_rejects_but_never_deadlocks()
    {
        // The sender's window is larger than the holder's cap, so gaps plus stored statuses hit the cap.
        Schedules.Sample(schedule =>
        {
            var sim = Run(schedule, allowCrash: false, holderCap: 2, new OutboxLimits(MaxInFlightPerChannel: 8, MaxQueuedPerChannel: 10_000));
            Assert.Equal(sim.Requests, sim.Runs.Count);
            AssertCallersAndOrder(sim);
        }, iter: 300);
    }

    [Fact]
    public void After_holder_crashes_only_flagged_runs_repeat()
    {
        Gen.Select(Gen.Int, Gen.Int[0, 10].Array[20, 400], (seed, ops) => (seed, ops)).Sample(schedule =>
        {
            var sim = Run(schedule, allowCrash: true, holderCap: 6, new OutboxLimits(MaxInFlightPerChannel: 4, MaxQueuedPerChannel: 10_000));
            foreach (var group in sim.Runs.GroupBy(r => r.Request))
            {
                Assert.True(group.Count(r => !r.PossiblyRepeated) <= 1, $"request {group.Key} ran unflagged more than once: {string.Join("\n", sim.Trace)}");
            }

            Assert.All(Enumerable.Range(0, sim.Requests), r => Assert.Contains(sim.Runs, run => run.Request == r));
            AssertCallersAndOrder(sim);
        }, iter: 300);
    }

    private static ProtocolSimulation Run((int Seed, int[] Ops) schedule, bool allowCrash, int holderCap, OutboxLimits limits)
    {
        var sim = new ProtocolSimulation(schedule.Seed, holderCap, limits);
        foreach (var op in schedule.Ops)
        {
            sim.Step(op, allowCrash);
        }

        Assert.True(sim.Quiesce(), "the protocol did not drain after the faults stopped (livelock or deadlock)");
        Assert.Empty(sim.Violations);
        Assert.Empty(sim.Failures);
        Assert.Equal(0, sim.Sender.Pending);
        return sim;
    }

    private static void AssertCallersAndOrder(ProtocolSimulation sim)
    {
        Assert.Equal(sim.Requests, sim.Completed.Count);
        foreach (var (request, status) in sim.Completed)
        {
            Assert.Equal(ProtocolSimulation.ExpectedStatus(request), status);
        }

        // Per channel, the first run of each seq happens in seq order 1, 2, 3, …
        foreach (var channel in sim.Runs.GroupBy(r => r.Channel))
        {
            var firstRuns = channel.Select(r => r.Seq).Distinct().ToArray();
            Assert.Equal(Enumerable.Range(1, firstRuns.Length).Select(i => (long)i), firstRuns);
        }
    }
}
