using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Messaging;
using Xunit;

namespace Lockstep.Actors.Tests.Messaging;

public sealed class ProbeLedgerTests
{
    private static HandlerContext Context(string channel, long seq, bool repeated = false) => new(channel, seq, "probe-0", "e", repeated);

    [Fact]
    public void Handle_records_the_run_and_answers_with_the_request_and_the_node()
    {
        var ledger = new ProbeLedger("n1");
        var status = ledger.Handle(Context("c", 1), new ProbeRequest("r", 7));
        Assert.Equal(new ProbeDone("r", 7, "n1"), status);
        var view = ledger.Snapshot();
        Assert.Equal("n1", view.Node);
        Assert.Equal(new ProbeChannelView("c", 1, 1, 1, 0, 0, 0), Assert.Single(view.Channels));
        var run = Assert.Single(view.Runs);
        Assert.Equal(("r", 1L, 1), (run.RunId, run.Runs, run.Distinct));
        Assert.Equal([7, 7], Assert.Single(run.Ranges));
        Assert.Empty(run.Repeated);
    }

    [Fact]
    public void Handle_refuses_a_payload_that_is_not_a_probe_request()
    {
        var ledger = new ProbeLedger("n1");
        Assert.Throws<ArgumentException>(() => ledger.Handle(Context("c", 1), new ProbeDone("r", 1, "x")));
        Assert.Empty(ledger.Snapshot().Channels);
    }

    [Fact]
    public void Consecutive_seqs_are_in_order_a_repeat_or_overtaking_is_backwards_and_a_jump_is_a_skip()
    {
        var ledger = new ProbeLedger("n1");
        ledger.Record("c", 5, false, "r", 0);  // a holder that moved here starts mid-channel: no violation
        ledger.Record("c", 6, false, "r", 1);
        ledger.Record("c", 6, true, "r", 1);   // re-run of seq 6
        ledger.Record("c", 9, false, "r", 2);  // 7 and 8 never ran here
        ledger.Record("c", 8, false, "r", 3);  // overtaken
        var channel = Assert.Single(ledger.Snapshot().Channels);
        Assert.Equal(new ProbeChannelView("c", Runs: 5, FirstSeq: 5, LastSeq: 9, Backwards: 2, Skips: 1, Flagged: 1), channel);
    }

    [Fact]
    public void Channels_are_checked_separately()
    {
        var ledger = new ProbeLedger("n1");
        ledger.Record("a", 1, false, "r", 0);
        ledger.Record("b", 1, false, "r", 1);
        ledger.Record("a", 2, false, "r", 2);
        ledger.Record("b", 2, false, "r", 3);
        Assert.All(ledger.Snapshot().Channels, c => Assert.Equal((2L, 0L, 0L), (c.Runs, c.Backwards, c.Skips)));
    }

    [Fact]
    public void Runs_are_kept_apart_and_a_snapshot_can_ask_for_one()
    {
        var ledger = new ProbeLedger("n1");
        ledger.Record("c", 1, false, "r1", 0);
        ledger.Record("c", 2, false, "r2", 0);
        ledger.Record("c", 3, false, "r2", 0);
        var only = Assert.Single(ledger.Snapshot("r2").Runs);
        Assert.Equal(("r2", 2L, 1), (only.RunId, only.Runs, only.Distinct));
        Assert.Equal([0], only.Repeated);
        Assert.Equal(2, ledger.Snapshot().Runs.Count);
    }

    [Fact]
    public void Ranges_compress_sorted_indices()
    {
        Assert.Equal([[0, 2], [5, 6], [9, 9]], ProbeLedger.Ranges([0, 1, 2, 5, 6, 9]));
        Assert.Empty(ProbeLedger.Ranges([]));
    }

    [Fact]
    public void Concurrent_records_all_count()
    {
        var ledger = new ProbeLedger("n1");
        Parallel.For(0, 8, channel =>
        {
            for (var seq = 1; seq <= 1000; seq++)
            {
                ledger.Record($"c{channel}", seq, false, "r", (channel * 1000) + seq - 1);
            }
        });
        var view = ledger.Snapshot();
        Assert.All(view.Channels, c => Assert.Equal((1000L, 0L, 0L), (c.Runs, c.Backwards, c.Skips)));
        Assert.Equal([0, 7999], Assert.Single(Assert.Single(view.Runs).Ranges));
    }
}

public sealed class ProbeTallyTests
{
    private static ProbeLedgerView Node(string node, params ProbeRunRecordView[] runs) =>
        new(node, [new ProbeChannelView("c|" + node, 1, 1, 1, 0, 0, 0)], runs);

    private static ProbeRunRecordView Run(string runId, long runs, int[][] ranges, params int[] repeated) =>
        new(runId, runs, ranges.Sum(r => r[1] - r[0] + 1), ranges, repeated);

    [Fact]
    public void Requests_split_over_the_nodes_each_ran_exactly_once()
    {
        var tally = ProbeTally.Of([Node("n1", Run("r", 3, [[0, 2]])), Node("n2", Run("r", 2, [[3, 4]]))], "r", 5);
        Assert.Equal(new ProbeTally(5, RanExactlyOnce: 5, RanMoreThanOnce: 0, NeverRan: 0, Unknown: 0, TotalRuns: 5, OrderViolations: 0), tally);
    }

    [Fact]
    public void A_request_on_two_nodes_or_twice_on_one_ran_more_than_once_and_a_missing_one_never()
    {
        var tally = ProbeTally.Of([Node("n1", Run("r", 4, [[0, 2]], 2)), Node("n2", Run("r", 1, [[1, 1]]))], "r", 4);
        Assert.Equal((1, 2, 1), (tally.RanExactlyOnce, tally.RanMoreThanOnce, tally.NeverRan));
    }

    [Fact]
    public void Other_runs_do_not_count_and_indices_beyond_the_run_are_unknown()
    {
        var tally = ProbeTally.Of([Node("n1", Run("other", 2, [[0, 1]]), Run("r", 2, [[0, 0], [9, 9]]))], "r", 2);
        Assert.Equal((1, 1, 1, 2L), (tally.RanExactlyOnce, tally.NeverRan, tally.Unknown, tally.TotalRuns));
    }

    [Fact]
    public void Order_violations_are_summed_over_every_channel_of_every_node()
    {
        var a = new ProbeLedgerView("n1", [new ProbeChannelView("x", 5, 1, 5, 1, 2, 0)], []);
        var b = new ProbeLedgerView("n2", [new ProbeChannelView("y", 5, 1, 5, 0, 1, 0)], []);
        Assert.Equal(4, ProbeTally.Of([a, b], "r", 0).OrderViolations);
    }
}

public sealed class MessagingNodeStatsTests
{
    [Fact]
    public void Holders_publish_their_tables_and_the_summary_counts_them_against_the_cap()
    {
        var stats = new MessagingNodeStats(holderCap: 4);
        stats.HolderStarted("a", persisted: false).Update(entries: 4, nextToRun: 10, runs: 9, rejections: 1);
        stats.HolderStarted("b", persisted: true).Update(entries: 1, nextToRun: 3, runs: 2, rejections: 0);
        stats.OutboxUpdated(pending: 7, resends: 12, completed: 30);
        var view = stats.Snapshot();
        Assert.Equal(["a", "b"], view.Holders.Select(h => h.Channel));
        Assert.Equal(new HolderTableView("a", false, 4, 10, 9, 1), view.Holders[0]);
        Assert.Equal((4, 5L, 4, 1), (view.HolderCap, view.HolderEntries, view.LargestHolder, view.HoldersAtCap));
        Assert.Equal((7, 12L, 30L), (view.OutboxPending, view.Resends, view.Completed));
    }

    [Fact]
    public void A_stopped_holder_leaves_the_table_but_not_a_newer_incarnation_of_its_channel()
    {
        var stats = new MessagingNodeStats(holderCap: 4);
        var old = stats.HolderStarted("a", persisted: false);
        var next = stats.HolderStarted("a", persisted: false);
        next.Update(2, 1, 0, 0);
        stats.HolderStopped(old);
        Assert.Equal(2, Assert.Single(stats.Snapshot().Holders).Entries);
        stats.HolderStopped(next);
        Assert.Empty(stats.Snapshot().Holders);
        Assert.Equal(0, stats.Snapshot().LargestHolder);
    }
}
