using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Messaging;
using Xunit;

namespace Lockstep.Actors.Tests.Messaging;

public sealed class OutboxStateTests
{
    private static readonly SerializedPayload Body = new(1, "", [1]);
    private static readonly SerializedPayload Ok = new(1, "", [42]);
    private static readonly Guid H1 = Guid.NewGuid();

    private static OutboxState<string> NewOutbox(int window = 4, int queue = 100) =>
        new("akka.tcp://lockstep@n1:1", 7, new OutboxLimits(window, queue, 100, 800));

    [Fact]
    public void Seqs_are_assigned_in_order_and_the_window_queues_the_rest()
    {
        var o = NewOutbox(window: 2);
        var sent = Enumerable.Range(0, 3).SelectMany(i => o.Send("lock", "r", Body, $"c{i}", 0)).OfType<OutboxTransmit<string>>().ToArray();
        Assert.Equal([1L, 2L], sent.Select(s => s.Request.Seq));
        Assert.Equal("lock|akka.tcp://lockstep@n1:1|7", sent[0].Request.ChannelId);
        Assert.Equal((1, 2, 0), o.Describe("lock"));
    }

    [Fact]
    public void A_call_completes_only_after_the_drop_is_confirmed()
    {
        var o = NewOutbox();
        var channel = o.ChannelFor("lock");
        o.Send("lock", "r", Body, "c", 0);
        Introduce(o, 0);
        var drop = Assert.IsType<OutboxTransmitDrop<string>>(Assert.Single(o.OnStatus(new HolderStatus(channel, 1, H1, Ok), 1)));
        Assert.Equal(1, drop.Drop.Seq);
        var done = Assert.IsType<OutboxComplete<string>>(Assert.Single(o.OnDropConfirmed(new HolderDropConfirmed(channel, 1, H1), 2)));
        Assert.Equal(("c", Ok), (done.Caller, done.Status));
        Assert.Equal(0, o.Pending);
        Assert.Empty(o.OnDropConfirmed(new HolderDropConfirmed(channel, 1, H1), 3));
    }

    [Fact]
    public void A_call_that_completes_at_its_status_sends_no_drop_and_the_next_requests_floor_covers_it()
    {
        var o = NewOutbox();
        var channel = o.ChannelFor("lock");
        o.Send("lock", "r", Body, "c1", 0, completesAtStatus: true);
        Introduce(o, 0);
        var done = Assert.IsType<OutboxComplete<string>>(Assert.Single(o.OnStatus(new HolderStatus(channel, 1, H1, Ok), 1)));
        Assert.Equal(("c1", Ok), (done.Caller, done.Status));
        Assert.Equal((0, 1), (o.Pending, o.Undropped));
        Assert.Equal((0, 0, 0), o.Describe("lock"));

        // The next request carries floor 2: the holder forgets seq 1 from it, so the timer has nothing to drop.
        var next = Assert.IsType<OutboxTransmit<string>>(Assert.Single(o.Send("lock", "r", Body, "c2", 2, completesAtStatus: true)));
        Assert.Equal((2L, 2L), (next.Request.Seq, next.Request.Floor));
        Assert.Equal(0, o.Undropped);
        Assert.Empty(o.Tick(1_000).OfType<OutboxTransmitDrop<string>>());

        // A late duplicate status changes nothing.
        Assert.Empty(o.OnStatus(new HolderStatus(channel, 1, H1, Ok), 3));
    }

    [Fact]
    public void A_status_completed_seq_no_floor_covered_gets_one_drop_from_the_timer_after_the_initial_interval()
    {
        var o = NewOutbox();
        var channel = o.ChannelFor("lock");
        o.Send("lock", "r", Body, "waits", 0);
        o.Send("lock", "r", Body, "posted", 0, completesAtStatus: true);
        Introduce(o, 0);

        // Seq 2 completes at its status while seq 1 (an ordinary call) is still open: the floor stays at 1.
        Assert.IsType<OutboxComplete<string>>(Assert.Single(o.OnStatus(new HolderStatus(channel, 2, H1, Ok), 10)));
        var third = Assert.IsType<OutboxTransmit<string>>(Assert.Single(o.Send("lock", "r", Body, "c3", 20)));
        Assert.Equal(1, third.Request.Floor);
        Assert.Equal(1, o.Undropped);

        Assert.DoesNotContain(o.Tick(100).OfType<OutboxTransmitDrop<string>>(), d => d.Drop.Seq == 2);
        var drop = Assert.Single(o.Tick(110).OfType<OutboxTransmitDrop<string>>(), d => d.Drop.Seq == 2);
        Assert.Equal(channel, drop.Drop.ChannelId);
        Assert.Equal(0, o.Undropped);
        Assert.DoesNotContain(o.Tick(5_000).OfType<OutboxTransmitDrop<string>>(), d => d.Drop.Seq == 2);

        // Its confirmation is for a call that is already complete: ignored.
        Assert.Empty(o.OnDropConfirmed(new HolderDropConfirmed(channel, 2, H1), 5_001));
        Assert.Equal(2, o.Pending);
    }

    [Fact]
    public void Abandoning_a_receiver_forgets_the_seqs_its_holder_was_still_to_be_told()
    {
        var o = NewOutbox();
        o.Send("lock", "r", Body, "posted", 0, completesAtStatus: true);
        Introduce(o, 0);
        o.OnStatus(new HolderStatus(o.ChannelFor("lock"), 1, H1, Ok), 1);
        Assert.Equal(1, o.Undropped);

        o.Abandon(type => type == "lock", "the receiver was removed");
        Assert.Equal((0, 0), (o.Pending, o.Undropped));
        Assert.Empty(o.Tick(10_000));
    }

    private static IReadOnlyList<OutboxEffect<string>> Introduce(OutboxState<string> o, long now) =>
        o.OnRejected(new HolderRejected(o.ChannelFor("lock"), 1, HolderRejectReason.StaleIncarnation, 8, 0, H1), now);

    [Fact]
    public void A_confirmation_for_a_request_still_awaiting_status_does_not_complete_it()
    {
        var o = NewOutbox();
        o.Send("lock", "r", Body, "c", 0);
        Assert.Empty(o.OnDropConfirmed(new HolderDropConfirmed(o.ChannelFor("lock"), 1, H1), 1).OfType<OutboxComplete<string>>());
        Assert.Equal(1, o.Pending);
    }

    [Fact]
    public void A_burst_of_association_events_resends_each_entry_at_most_once_per_initial_interval()
    {
        var o = NewOutbox();
        o.Send("lock", "r", Body, "c1", 0);
        o.Send("lock", "r", Body, "c2", 50);

        // Both were just sent: a re-association now sends nothing and leaves them to the timer.
        Assert.Empty(o.ResendAll(60));
        Assert.Equal(2, o.ResendsDebounced);

        // At 100 ms c1 is quiet long enough; c2 (sent at 50) is not. Further events in the burst add nothing.
        Assert.Equal([1L], o.ResendAll(100).OfType<OutboxTransmit<string>>().Select(t => t.Request.Seq));
        Assert.Empty(o.ResendAll(120));

        // The timer still owes c2 its re-send at 150 ms, back-off reset by the association event.
        Assert.DoesNotContain(o.Tick(149).OfType<OutboxTransmit<string>>(), t => t.Request.Seq == 2);
        Assert.Equal([2L], o.Tick(150).OfType<OutboxTransmit<string>>().Select(t => t.Request.Seq));
    }

    [Fact]
    public void A_gap_report_resends_the_missing_request_unless_it_was_sent_a_moment_ago()
    {
        var o = NewOutbox();
        var channel = o.ChannelFor("lock");
        o.Send("lock", "r", Body, "c1", 0);
        o.Send("lock", "r", Body, "c2", 0);

        // Sent at 0, reported missing at 10: maybe only overtaken, so the re-send is due at 0 + 100 / 4, not at 100.
        Assert.Empty(o.OnGap(new HolderGap(channel, 1, H1), 10));
        Assert.Empty(o.Tick(24));
        Assert.Equal([1L], o.Tick(25).OfType<OutboxTransmit<string>>().Select(t => t.Request.Seq));

        // Reported again long after its last send: re-sent at once.
        var resent = Assert.IsType<OutboxTransmit<string>>(Assert.Single(o.OnGap(new HolderGap(channel, 1, H1), 60)));
        Assert.Equal(1, resent.Request.Seq);
        Assert.Equal(2, o.GapResends);

        // A gap for a seq that already has its status, or of an unknown channel, changes nothing.
        o.OnStatus(new HolderStatus(channel, 2, H1, Ok), 30);
        Assert.Empty(o.OnGap(new HolderGap(channel, 2, H1), 90));
        Assert.Empty(o.OnGap(new HolderGap("lock|elsewhere|1", 1, H1), 90));
    }

    [Fact]
    public void The_timer_resends_with_doubling_backoff_and_the_current_floor()
    {
        var o = NewOutbox();
        var channel = o.ChannelFor("lock");
        o.Send("lock", "r", Body, "c1", 0);
        o.Send("lock", "r", Body, "c2", 0);
        Assert.Empty(o.Tick(99));
        Assert.Equal(2, o.Tick(100).Count);
        Assert.Equal(2, Introduce(o, 150).Count);
        Assert.Empty(o.Tick(549));
        o.OnStatus(new HolderStatus(channel, 1, H1, Ok), 250);
        o.OnDropConfirmed(new HolderDropConfirmed(channel, 1, H1), 250);
        var resend = Assert.IsType<OutboxTransmit<string>>(Assert.Single(o.Tick(550)));
        Assert.Equal((2L, 2L, 4), (resend.Request.Seq, resend.Request.Floor, resend.Request.Attempt));
        Assert.Empty(o.Tick(1349));
        Assert.Single(o.Tick(1350));
    }

    [Fact]
    public void Learning_a_new_incarnation_after_a_crash_resends_and_flags_what_may_have_run()
    {
        var o = NewOutbox();
        var channel = o.ChannelFor("lock");
        o.Send("lock", "r", Body, "c1", 0);
        o.OnRejected(new HolderRejected(channel, 1, HolderRejectReason.StaleIncarnation, 8, 0, H1), 1);
        var h2 = Guid.NewGuid();
        var resent = o.OnRejected(new HolderRejected(channel, 1, HolderRejectReason.StaleIncarnation, 8, 0, h2), 2).OfType<OutboxTransmit<string>>().Single();
        Assert.Equal(h2, resent.Request.KnownIncarnation);
        Assert.True(resent.Request.MayHaveRun);
    }

    [Fact]
    public void A_hand_over_turns_statuses_into_drops_and_raises_the_run_horizon_without_flags()
    {
        var o = NewOutbox();
        var channel = o.ChannelFor("lock");
        o.Send("lock", "r", Body, "c1", 0);
        o.Send("lock", "r", Body, "c2", 0);
        o.OnRejected(new HolderRejected(channel, 1, HolderRejectReason.StaleIncarnation, 8, 0, H1), 1);
        var effects = o.OnHandOver(new HolderHandOver(channel, H1, 2, [new HandedOverStatus(1, Ok)]), 2);
        Assert.IsType<OutboxAckHandOver<string>>(effects[0]);
        Assert.Equal(1, Assert.Single(effects.OfType<OutboxTransmitDrop<string>>()).Drop.Seq);
        var request = Assert.Single(effects.OfType<OutboxTransmit<string>>()).Request;
        Assert.Equal((2L, 2L, false, Guid.Empty), (request.Seq, request.RunHorizon, request.MayHaveRun, request.KnownIncarnation));
    }

    [Fact]
    public void A_purged_channel_fails_every_call_and_a_full_queue_fails_at_once()
    {
        var o = NewOutbox(window: 1, queue: 1);
        o.Send("lock", "r", Body, "c1", 0);
        o.Send("lock", "r", Body, "c2", 0);
        Assert.IsType<OutboxFail<string>>(Assert.Single(o.Send("lock", "r", Body, "c3", 0)));
        var channel = o.ChannelFor("lock");
        o.OnRejected(new HolderRejected(channel, 1, HolderRejectReason.StaleIncarnation, 8, 0, H1), 1);
        var fails = o.OnRejected(new HolderRejected(channel, 1, HolderRejectReason.SenderGone, 8, 0, H1), 2).OfType<OutboxFail<string>>();
        Assert.Equal(["c1", "c2"], fails.Select(f => f.Caller));
        Assert.Equal(0, o.Pending);
    }

    [Fact]
    public void A_full_holder_delays_the_resend_by_backoff()
    {
        var o = NewOutbox();
        var channel = o.ChannelFor("lock");
        o.Send("lock", "r", Body, "c1", 0);
        o.OnRejected(new HolderRejected(channel, 1, HolderRejectReason.StaleIncarnation, 8, 0, H1), 0);
        Assert.Empty(o.OnRejected(new HolderRejected(channel, 1, HolderRejectReason.ChannelFull, 8, 8, H1), 10));
        Assert.Empty(o.Tick(150));
        Assert.Single(o.Tick(400));
    }

    [Fact]
    public void Closing_fails_every_outstanding_caller_once_and_refuses_later_sends()
    {
        var o = NewOutbox(window: 1);
        o.Send("lock", "r", Body, "in-flight", 0);
        o.Send("lock", "r", Body, "queued", 0);
        o.Send("other", "r", Body, "other", 0);
        var failed = o.Close("node removed").OfType<OutboxFail<string>>().ToArray();
        Assert.Equal(["in-flight", "other", "queued"], failed.Select(f => f.Caller).Order(StringComparer.Ordinal));
        Assert.All(failed, f => Assert.Equal("node removed", f.Reason));
        Assert.Equal(0, o.Pending);
        Assert.Empty(o.Close("again"));
        Assert.Empty(o.Tick(10_000));
        var late = Assert.IsType<OutboxFail<string>>(Assert.Single(o.Send("lock", "r", Body, "late", 1)));
        Assert.Equal(("late", "node removed"), (late.Caller, late.Reason));
    }
}
