using Lockstep.Actors.Broadcast;
using Lockstep.Contracts.Broadcast;
using Xunit;

namespace Lockstep.Actors.Tests.Broadcast;

public sealed class BroadcastSenderStateTests
{
    private const int Lvb = 512;

    private static PendingMessage Message(long id) => new(id, new NoopMessage("n1", id), BroadcastWire.EncodedLength(new NoopMessage("n1", id)));

    private static void SameRound(BroadcastRound expected, BroadcastRound actual)
    {
        Assert.Equal((expected.Seq, expected.Origin), (actual.Seq, actual.Origin));
        Assert.Equal(expected.Messages, actual.Messages);
    }

    private static BroadcastSenderState Sender(DeliveryCursor cursor, int maxBatch = 64, int maxRounds = 4) => new(cursor, "n1", Lvb, maxBatch, maxRounds);

    private static byte[] Token(long completed, bool dirty = false) => BroadcastWire.EncodeToken(new TokenRecord(completed, dirty), Lvb);

    private static (BroadcastRound Round, byte[] Bytes) RoundBytes(long seq, string origin = "n2")
    {
        var round = new BroadcastRound(seq, origin, [new NoopMessage(origin, seq)]);
        return (round, BroadcastWire.EncodeRound(round, Lvb));
    }

    /// <summary>A node joined at <paramref name="at"/> whose sender holds TOKEN and MESSAGE, the previous round complete.</summary>
    private static (BroadcastSenderState Sender, DeliveryCursor Cursor) HoldingMessage(long at, params PendingMessage[] queued)
    {
        var cursor = new DeliveryCursor();
        var (_, last) = RoundBytes(at);
        cursor.JoinAt(at, last);
        var sender = Sender(cursor);
        foreach (var m in queued)
        {
            sender.Submit(m);
        }

        sender.TokenGranted(Token(at), valueNotValid: false);
        Assert.IsType<TakeMessageEffect>(sender.ReceiverPaused());
        return (sender, cursor);
    }

    [Fact]
    public void A_submission_runs_one_round_and_completes_after_ack()
    {
        var cursor = new DeliveryCursor();
        cursor.JoinAt(3, RoundBytes(3).Bytes);
        var sender = Sender(cursor);
        Assert.IsType<TakeTokenEffect>(sender.Submit(Message(1)));
        Assert.Null(sender.Submit(Message(2)));
        Assert.IsType<PauseReceiverEffect>(sender.TokenGranted(Token(3), false));
        Assert.IsType<TakeMessageEffect>(sender.ReceiverPaused());
        var (round, bytes) = RoundBytes(3);
        var publish = Assert.IsType<PublishRoundEffect>(sender.MessageGranted(bytes, false, round));
        Assert.Equal(4, publish.Round.Seq);
        Assert.Equal(2, publish.Round.Messages.Count);
        Assert.False(publish.Healing);
        SameRound(publish.Round, BroadcastWire.DecodeRound(publish.Lvb)!);
        Assert.IsType<AwaitAckEffect>(sender.Published());
        Assert.Equal(3, cursor.LastSeq);
        Assert.IsType<DeliverLocallyEffect>(Assert.Single(sender.AckGranted()));
        var afterAck = sender.DeliveredLocally();
        Assert.Equal(4, cursor.LastSeq);
        var complete = Assert.IsType<CompleteEffect>(afterAck[0]);
        Assert.Equal([1L, 2L], complete.Ids);
        Assert.Equal(4, complete.Seq);
        Assert.IsType<DropAckEffect>(afterAck[1]);
        Assert.Null(Assert.IsType<DropMessageEffect>(sender.AckDropped()).Lvb);
        var release = Assert.IsType<ReleaseTokenEffect>(sender.MessageDropped());
        Assert.Equal(new TokenRecord(4, false), release.Token);
        Assert.Equal(release.Token, BroadcastWire.DecodeToken(release.Lvb));
        Assert.Null(sender.TokenReleased());
        Assert.Equal(BroadcastSenderState.Phase.Idle, sender.Current);
        Assert.Equal(1, sender.RoundsPublished);
    }

    [Fact]
    public void Batches_are_cut_at_max_batch_and_more_rounds_follow_under_the_same_token()
    {
        var cursor = new DeliveryCursor();
        cursor.JoinAt(0, null);
        var two = Sender(cursor, maxBatch: 2);
        two.Submit(Message(1));
        two.Submit(Message(2));
        two.Submit(Message(3));
        two.TokenGranted(Token(0), false);
        two.ReceiverPaused();
        Assert.Equal(2, Assert.IsType<PublishRoundEffect>(two.MessageGranted(new byte[Lvb], false, null)).Round.Messages.Count);
        two.Published();
        two.AckGranted();
        two.DeliveredLocally();
        two.AckDropped();
        Assert.IsType<TakeMessageEffect>(two.MessageDropped());
        var second = Assert.IsType<PublishRoundEffect>(two.MessageGranted(new byte[Lvb], false, null));
        Assert.Equal(2, second.Round.Seq);
        Assert.Single(second.Round.Messages);
    }

    [Fact]
    public void A_dirty_or_invalid_token_makes_the_sender_gather()
    {
        var cursor = new DeliveryCursor();
        cursor.JoinAt(2, RoundBytes(2).Bytes);
        var sender = Sender(cursor);
        sender.Submit(Message(1));
        sender.TokenGranted(Token(2, dirty: true), false);
        sender.ReceiverPaused();
        var (round, bytes) = RoundBytes(2);
        Assert.IsType<GatherEffect>(sender.MessageGranted(bytes, false, round));

        var other = Sender(cursor);
        other.Submit(Message(1));
        other.TokenGranted(Token(2), valueNotValid: true);
        other.ReceiverPaused();
        Assert.IsType<GatherEffect>(other.MessageGranted(bytes, false, round));
    }

    [Fact]
    public void A_message_lvb_that_disagrees_with_the_token_makes_the_sender_gather()
    {
        var (sender, _) = HoldingMessage(2, Message(1));
        var (round, bytes) = RoundBytes(3);
        Assert.IsType<GatherEffect>(sender.MessageGranted(bytes, false, round));
    }

    [Fact]
    public void A_member_removed_since_the_last_round_makes_the_next_token_holder_gather_even_when_idle()
    {
        var cursor = new DeliveryCursor();
        cursor.JoinAt(2, RoundBytes(2).Bytes);
        var sender = Sender(cursor);
        Assert.IsType<TakeTokenEffect>(sender.MemberRemoved());
        sender.TokenGranted(Token(2), false);
        sender.ReceiverPaused();
        var (round, bytes) = RoundBytes(2);
        Assert.IsType<GatherEffect>(sender.MessageGranted(bytes, false, round));
        Assert.IsType<DropMessageEffect>(sender.Gathered([new StreamPosition("n2", "s", true, 2, bytes)]));
        Assert.IsType<ReleaseTokenEffect>(sender.MessageDropped());
        Assert.Null(sender.TokenReleased());
    }

    [Fact]
    public void A_gather_that_finds_a_node_behind_republishes_the_last_round_before_the_new_one()
    {
        var cursor = new DeliveryCursor();
        cursor.JoinAt(4, RoundBytes(4).Bytes);
        var sender = Sender(cursor);
        sender.Submit(Message(9));
        sender.TokenGranted(Token(4), valueNotValid: true);
        sender.ReceiverPaused();
        Assert.IsType<GatherEffect>(sender.MessageGranted(RoundBytes(5).Bytes, false, RoundBytes(5).Round));

        var (five, fiveBytes) = RoundBytes(5, origin: "n3");
        var heal = Assert.IsType<PublishRoundEffect>(sender.Gathered([new StreamPosition("n2", "s", true, 5, fiveBytes), new StreamPosition("n4", "s", false, 0, null)]));
        Assert.True(heal.Healing);
        SameRound(five, heal.Round);
        Assert.IsType<AwaitAckEffect>(sender.Published());
        Assert.IsType<DeliverLocallyEffect>(Assert.Single(sender.AckGranted()));
        var afterAck = sender.DeliveredLocally();
        Assert.Equal(5, cursor.LastSeq);
        Assert.IsType<DropAckEffect>(Assert.Single(afterAck));
        sender.AckDropped();
        Assert.IsType<TakeMessageEffect>(sender.MessageDropped());
        var own = Assert.IsType<PublishRoundEffect>(sender.MessageGranted(fiveBytes, false, five));
        Assert.Equal(6, own.Round.Seq);
        Assert.Equal(1, sender.RoundsHealed);
    }

    [Fact]
    public void A_healing_round_this_node_already_has_is_not_delivered_again()
    {
        var (four, fourBytes) = RoundBytes(4);
        var cursor = new DeliveryCursor();
        cursor.JoinAt(4, fourBytes);
        var sender = Sender(cursor);
        sender.MemberRemoved();
        sender.TokenGranted(Token(3), valueNotValid: true);
        sender.ReceiverPaused();
        sender.MessageGranted(fourBytes, false, four);
        var heal = Assert.IsType<PublishRoundEffect>(sender.Gathered([new StreamPosition("n2", "s", true, 3, null)]));
        Assert.Equal(4, heal.Round.Seq);
        Assert.IsType<AwaitAckEffect>(sender.Published());
        Assert.IsType<DropAckEffect>(Assert.Single(sender.AckGranted()));
    }

    [Fact]
    public void A_joining_node_starts_after_the_completed_round_when_the_token_is_trusted()
    {
        var cursor = new DeliveryCursor();
        var sender = Sender(cursor);
        Assert.IsType<TakeTokenEffect>(sender.Join());
        sender.TokenGranted(Token(7), false);
        Assert.IsType<JoinAckEffect>(sender.ReceiverPaused());
        Assert.IsType<TakeMessageEffect>(sender.AckJoined());
        var (seven, bytes) = RoundBytes(7);
        Assert.IsType<DropMessageEffect>(sender.MessageGranted(bytes, false, seven));
        Assert.True(cursor.Joined);
        Assert.Equal(7, cursor.LastSeq);
        Assert.Equal(0, cursor.Skipped);
    }

    [Fact]
    public void A_joining_node_on_a_fresh_stream_gathers_once_and_starts_at_zero()
    {
        var cursor = new DeliveryCursor();
        var sender = Sender(cursor);
        sender.Submit(Message(1));
        sender.TokenGranted(new byte[Lvb], false);
        sender.ReceiverPaused();
        sender.AckJoined();
        Assert.IsType<GatherEffect>(sender.MessageGranted(new byte[Lvb], false, null));
        var first = Assert.IsType<PublishRoundEffect>(sender.Gathered([new StreamPosition("n2", "s", false, 0, null)]));
        Assert.Equal(1, first.Round.Seq);
    }

    [Fact]
    public void An_ack_timeout_fails_the_round_as_unknown_and_releases_the_token_dirty()
    {
        var (sender, cursor) = HoldingMessage(1, Message(1), Message(2));
        var (one, bytes) = RoundBytes(1);
        sender.MessageGranted(bytes, false, one);
        sender.Published();
        var effects = sender.AckTimedOut("slow");
        Assert.Equal(1, cursor.LastSeq); // the sender processes a round only after every other node did
        var fail = Assert.IsType<FailEffect>(effects[0]);
        Assert.True(fail.Unknown);
        Assert.Equal([1L, 2L], fail.Ids);
        Assert.IsType<DropMessageEffect>(effects[1]);
        var release = Assert.IsType<ReleaseTokenEffect>(sender.MessageDropped());
        Assert.True(release.Token.Dirty);
    }

    [Fact]
    public void A_failed_gather_fails_what_is_queued_and_releases_the_token_dirty()
    {
        var (one, bytes) = RoundBytes(1);
        var s2 = new DeliveryCursor();
        s2.JoinAt(1, bytes);
        var gathering = Sender(s2);
        gathering.MemberRemoved();
        gathering.Submit(Message(5));
        gathering.TokenGranted(Token(1), false);
        gathering.ReceiverPaused();
        Assert.IsType<GatherEffect>(gathering.MessageGranted(bytes, false, one));
        var effects = gathering.GatherFailed("n3 did not answer");
        Assert.False(Assert.IsType<FailEffect>(effects[0]).Unknown);
        Assert.Equal(bytes, Assert.IsType<DropMessageEffect>(effects[1]).Lvb);
        Assert.True(Assert.IsType<ReleaseTokenEffect>(gathering.MessageDropped()).Token.Dirty);
    }

    [Fact]
    public void A_fault_fails_everything_and_breaks_the_sender()
    {
        var (sender, cursor) = HoldingMessage(1, Message(1), Message(2));
        var fail = sender.Fault("fenced");
        Assert.NotNull(fail);
        Assert.Equal(2, fail.Ids.Count);
        Assert.Equal(BroadcastSenderState.Phase.Broken, sender.Current);
        Assert.False(cursor.Joined);
        Assert.Throws<InvalidOperationException>(() => sender.Submit(Message(3)));
    }

    [Fact]
    public void A_message_too_large_for_a_round_is_refused()
    {
        var sender = Sender(new DeliveryCursor());
        var big = new NoopMessage(new string('x', 200), 1);
        var small = new BroadcastSenderState(new DeliveryCursor(), "n1", 256, 64, 4);
        Assert.Throws<ArgumentException>(() => small.Submit(new PendingMessage(1, big, BroadcastWire.EncodedLength(big) + 100)));
        Assert.IsType<TakeTokenEffect>(sender.Submit(new PendingMessage(1, big, BroadcastWire.EncodedLength(big))));
    }

    [Fact]
    public void Events_out_of_their_phase_throw()
    {
        var sender = Sender(new DeliveryCursor());
        Assert.Throws<InvalidOperationException>(() => sender.TokenGranted(Token(0), false));
        Assert.Throws<InvalidOperationException>(() => sender.ReceiverPaused());
        Assert.Throws<InvalidOperationException>(() => sender.AckJoined());
        Assert.Throws<InvalidOperationException>(() => sender.MessageGranted(new byte[Lvb], false, null));
        Assert.Throws<InvalidOperationException>(() => sender.Gathered([]));
        Assert.Throws<InvalidOperationException>(() => sender.Published());
        Assert.Throws<InvalidOperationException>(() => sender.DeliveredLocally());
        Assert.Throws<InvalidOperationException>(() => sender.AckGranted());
        Assert.Throws<InvalidOperationException>(() => sender.AckTimedOut("x"));
        Assert.Throws<InvalidOperationException>(() => sender.AckDropped());
        Assert.Throws<InvalidOperationException>(() => sender.MessageDropped());
        Assert.Throws<InvalidOperationException>(() => sender.TokenReleased());
        Assert.Throws<InvalidOperationException>(() => sender.GatherFailed("x"));
    }
}
