using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Messaging;
using Xunit;

namespace Lockstep.Actors.Tests.Messaging;

public sealed class MessageHolderStateTests
{
    private static readonly Guid Me = new("11111111-1111-4111-8111-111111111111");
    private static readonly SerializedPayload Body = new(1, "", [1]);
    private static readonly SerializedPayload Ok = new(1, "", [42]);

    private static HolderDeliver Req(long seq, long floor = 1, Guid? known = null, long horizon = 1) =>
        new("lock|node|1", seq, floor, horizon, known ?? Me, false, 1, "r", Body);

    [Fact]
    public void Not_found_runs_once_and_a_duplicate_while_running_gets_the_status_when_done()
    {
        var h = new MessageHolderState<string>(8, Me);
        Assert.IsType<HolderRun<string>>(Assert.Single(h.Lookup(Req(1), "a")));
        Assert.Empty(h.Lookup(Req(1), "b"));
        var reply = Assert.IsType<HolderReply<string>>(Assert.Single(h.Completed(1, Ok)));
        Assert.Equal("b", reply.To);
        Assert.Equal(Ok, reply.Status);
        Assert.Equal(1, h.Runs);
    }

    [Fact]
    public void A_seq_arriving_above_a_missing_one_reports_the_gap_once_and_runs_nothing_yet()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.Lookup(Req(1), "a");

        var gap = Assert.IsType<HolderReportGap<string>>(Assert.Single(h.Lookup(Req(3), "a")));
        Assert.Equal(("a", 2L), (gap.To, gap.Seq));
        Assert.Empty(h.Lookup(Req(4), "a"));

        // The missing one arrives: 2, 3 and 4 start in order and nothing more is reported.
        Assert.Equal([2L, 3L, 4L], h.Lookup(Req(2), "a").Select(e => Assert.IsType<HolderRun<string>>(e).Seq));
        Assert.Equal(4, h.Runs);
    }

    [Fact]
    public void Found_done_replies_the_stored_status_without_running()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.Lookup(Req(1), "a");
        h.Completed(1, Ok);
        var reply = Assert.IsType<HolderReply<string>>(Assert.Single(h.Lookup(Req(1), "a")));
        Assert.Equal(Ok, reply.Status);
        Assert.Equal(1, h.Runs);
    }

    [Fact]
    public void Drop_removes_and_confirms_and_a_late_duplicate_is_never_run_again()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.Lookup(Req(1), "a");
        h.Completed(1, Ok);
        Assert.IsType<HolderConfirmDrop<string>>(Assert.Single(h.Drop(1, "a")));
        Assert.Equal(0, h.Count);
        Assert.IsType<HolderConfirmDrop<string>>(Assert.Single(h.Lookup(Req(1), "a")));
        Assert.Equal(1, h.Runs);
    }

    [Fact]
    public void The_senders_floor_forgets_done_entries_below_it_but_keeps_the_one_at_the_floor_for_a_lost_status()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.Lookup(Req(1), "a");
        h.Completed(1, Ok);
        h.Lookup(Req(2), "a");
        h.Completed(2, Ok);

        // Seq 1's status may be lost: the sender's floor is still 1, so a re-send of 1 gets the stored status.
        h.Lookup(Req(3, floor: 1), "a");
        Assert.Equal(Ok, Assert.IsType<HolderReply<string>>(Assert.Single(h.Lookup(Req(1, floor: 1), "a"))).Status);

        // Floor 3: the sender has the statuses of 1 and 2. Both go; 3 (running) stays; a late duplicate of 1 is never re-run.
        h.Lookup(Req(4, floor: 3), "a");
        Assert.Equal(2, h.Count);
        Assert.IsType<HolderConfirmDrop<string>>(Assert.Single(h.Lookup(Req(1, floor: 3), "a")));
        Assert.IsType<HolderConfirmDrop<string>>(Assert.Single(h.Lookup(Req(2, floor: 3), "a")));
        Assert.Equal(4, h.Runs);

        // A running entry below a floor is not the sender's to forget yet (it has no status): it stays until done.
        h.Lookup(Req(5, floor: 5), "a");
        Assert.Equal(3, h.Count);
        h.Completed(3, Ok);
        h.Completed(4, Ok);
        h.Lookup(Req(6, floor: 6), "a");
        Assert.Equal(2, h.Count);
    }

    [Fact]
    public void Dropping_a_running_entry_is_ignored()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.Lookup(Req(1), "a");
        Assert.Empty(h.Drop(1, "a"));
        Assert.Equal(1, h.Count);
    }

    [Fact]
    public void A_seq_after_a_gap_waits_until_the_gap_is_filled_then_both_run_in_order()
    {
        var h = new MessageHolderState<string>(8, Me);
        Assert.Equal(1, Assert.IsType<HolderReportGap<string>>(Assert.Single(h.Lookup(Req(2), "a"))).Seq);
        Assert.Empty(h.Lookup(Req(3), "a"));
        var runs = h.Lookup(Req(1), "a").OfType<HolderRun<string>>().Select(r => r.Seq);
        Assert.Equal([1L, 2L, 3L], runs);
        Assert.Equal(4, h.NextToRun);
    }

    [Fact]
    public void The_senders_floor_closes_a_gap_that_was_already_run_and_dropped()
    {
        var h = new MessageHolderState<string>(8, Me);
        Assert.Equal(1, Assert.IsType<HolderReportGap<string>>(Assert.Single(h.Lookup(Req(5), "a"))).Seq);
        var run = Assert.IsType<HolderRun<string>>(Assert.Single(h.Lookup(Req(5, floor: 5), "a")));
        Assert.Equal(5, run.Seq);
    }

    [Fact]
    public void Beyond_the_cap_requests_are_rejected_but_the_gap_seq_keeps_a_slot()
    {
        var h = new MessageHolderState<string>(3, Me);
        Assert.IsType<HolderReportGap<string>>(Assert.Single(h.Lookup(Req(2), "a")));
        Assert.Empty(h.Lookup(Req(3), "a"));
        var reject = Assert.IsType<HolderReject<string>>(Assert.Single(h.Lookup(Req(4), "a")));
        Assert.Equal(HolderRejectReason.ChannelFull, reject.Reason);
        Assert.Equal(3, reject.Cap);
        Assert.Equal(1, h.Rejections);
        Assert.Equal(3, h.Lookup(Req(1), "a").OfType<HolderRun<string>>().Count());
    }

    [Fact]
    public void A_request_naming_another_incarnation_is_refused_with_this_one()
    {
        var h = new MessageHolderState<string>(8, Me);
        var reject = Assert.IsType<HolderReject<string>>(Assert.Single(h.Lookup(Req(1, known: Guid.Empty), "a")));
        Assert.Equal(HolderRejectReason.StaleIncarnation, reject.Reason);
        Assert.Equal(0, h.Runs);
    }

    [Fact]
    public void Without_a_handler_the_request_is_refused_for_a_later_resend()
    {
        var h = new MessageHolderState<string>(8, Me);
        var reject = Assert.IsType<HolderReject<string>>(Assert.Single(h.Lookup(Req(1), "a", handlerAvailable: false)));
        Assert.Equal(HolderRejectReason.NoHandler, reject.Reason);
    }

    [Fact]
    public void Purge_drops_everything_and_refuses_the_dead_sender_afterwards()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.Lookup(Req(1), "a");
        h.Lookup(Req(3), "a");
        Assert.Equal(2, h.Purge());
        Assert.Empty(h.Completed(1, Ok));
        var reject = Assert.IsType<HolderReject<string>>(Assert.Single(h.Lookup(Req(4), "a")));
        Assert.Equal(HolderRejectReason.SenderGone, reject.Reason);
    }

    [Fact]
    public void Hand_over_waits_for_running_handlers_then_hands_statuses_to_the_sender()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.Lookup(Req(1), "a");
        h.Lookup(Req(2), "a");
        h.Completed(1, Ok);
        h.Lookup(Req(4), "a");
        Assert.Empty(h.BeginHandOver(handOverToSender: true));
        Assert.Equal(HolderRejectReason.Moving, Assert.IsType<HolderReject<string>>(Assert.Single(h.Lookup(Req(3), "a"))).Reason);
        var effects = h.Completed(2, Ok);
        var handOver = Assert.IsType<HolderHandOverTo<string>>(effects.Last());
        Assert.Equal(3, handOver.NextToRun);
        Assert.Equal([1L, 2L], handOver.Completed.Select(c => c.Seq));
    }

    [Fact]
    public void A_persisted_holder_reruns_only_what_was_running_at_the_crash_and_flags_it()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.ApplyStarted(1, "r", Body);
        h.ApplyCompleted(1, Ok);
        h.ApplyStarted(2, "r", Body);
        h.ApplyStarted(3, "r", Body);
        h.ApplyDropped(1);
        var runs = h.ResumeAfterRecovery().Cast<HolderRun<string>>().ToArray();
        Assert.Equal([2L, 3L], runs.Select(r => r.Seq));
        Assert.All(runs, r => Assert.True(r.PossiblyRepeated));
        Assert.Equal(4, h.NextToRun);
        Assert.IsType<HolderConfirmDrop<string>>(Assert.Single(h.Lookup(Req(1), "a")));
    }

    [Fact]
    public void Snapshot_round_trips_watermark_and_entries()
    {
        var h = new MessageHolderState<string>(8, Me);
        h.Lookup(Req(1), "a");
        h.Lookup(Req(2), "a");
        h.Completed(1, Ok);
        h.Lookup(Req(5), "a");
        var copy = new MessageHolderState<string>(8, Me);
        copy.ApplySnapshot(h.ToSnapshot());
        Assert.Equal(3, copy.NextToRun);
        Assert.Equal([(1L, "Done"), (2L, "Running")], copy.Describe());
    }

    [Fact]
    public void A_cap_below_two_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new MessageHolderState<string>(1, Me));
    }
}
