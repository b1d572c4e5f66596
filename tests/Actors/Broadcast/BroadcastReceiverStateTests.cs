using Lockstep.Actors.Broadcast;
using Lockstep.Contracts.Broadcast;
using Xunit;

namespace Lockstep.Actors.Tests.Broadcast;

public sealed class BroadcastReceiverStateTests
{
    private const int Lvb = 512;

    private static (BroadcastReceiverState Receiver, DeliveryCursor Cursor) Joined(long at = 0)
    {
        var cursor = new DeliveryCursor();
        cursor.JoinAt(at, null);
        var receiver = new BroadcastReceiverState(cursor);
        Assert.Null(receiver.Resume());
        return (receiver, cursor);
    }

    private static (BroadcastRound Round, byte[] Bytes) Round(long seq)
    {
        var round = new BroadcastRound(seq, "n2", [new NoopMessage("n2", seq)]);
        return (round, BroadcastWire.EncodeRound(round, Lvb));
    }

    [Fact]
    public void A_new_round_runs_the_whole_cycle_and_advances_the_cursor()
    {
        var (receiver, cursor) = Joined();
        Assert.IsType<ReadMessageEffect>(receiver.AckBast(receiver.AckGeneration, blockedIsExclusive: true));
        var (round, bytes) = Round(1);
        Assert.Equal(round, Assert.IsType<DeliverRoundEffect>(receiver.MessageRead(bytes, round)).Round);
        Assert.IsType<ReleaseAckEffect>(receiver.Delivered());
        Assert.Equal(1, cursor.LastSeq);
        Assert.IsType<ProtectMessageEffect>(receiver.AckReleased());
        var before = receiver.AckGeneration;
        Assert.IsType<RetakeAckEffect>(receiver.MessageProtected());
        Assert.Equal(before + 1, receiver.AckGeneration);
        Assert.IsType<SettleMessageEffect>(receiver.AckRetaken());
        Assert.Null(receiver.Settled());
        Assert.Equal(BroadcastReceiverState.Phase.Idle, receiver.Current);
        Assert.Equal(1, cursor.Delivered);
    }

    [Fact]
    public void A_round_already_delivered_is_acknowledged_without_delivery()
    {
        var (receiver, cursor) = Joined(at: 5);
        receiver.AckBast(receiver.AckGeneration, true);
        var (round, bytes) = Round(5);
        Assert.IsType<ReleaseAckEffect>(receiver.MessageRead(bytes, round));
        Assert.Equal(1, cursor.Duplicates);
        Assert.Equal(0, cursor.Delivered);
    }

    [Fact]
    public void An_empty_lvb_is_acknowledged_without_delivery()
    {
        var (receiver, _) = Joined();
        receiver.AckBast(receiver.AckGeneration, true);
        Assert.IsType<ReleaseAckEffect>(receiver.MessageRead(new byte[Lvb], null));
    }

    [Fact]
    public void A_round_after_a_hole_is_delivered_and_the_hole_counted()
    {
        var (receiver, cursor) = Joined(at: 1);
        receiver.AckBast(receiver.AckGeneration, true);
        var (round, bytes) = Round(4);
        Assert.IsType<DeliverRoundEffect>(receiver.MessageRead(bytes, round));
        receiver.Delivered();
        Assert.Equal(2, cursor.Gaps);
        Assert.Equal(4, cursor.LastSeq);
    }

    [Fact]
    public void Basts_for_an_old_ack_or_a_weaker_mode_are_ignored()
    {
        var (receiver, _) = Joined();
        Assert.Null(receiver.AckBast(receiver.AckGeneration - 1, true));
        Assert.Null(receiver.AckBast(receiver.AckGeneration, blockedIsExclusive: false));
        Assert.Equal(BroadcastReceiverState.Phase.Idle, receiver.Current);
    }

    [Fact]
    public void A_bast_for_the_retaken_ack_during_the_cycle_runs_another_cycle()
    {
        var (receiver, _) = Joined();
        receiver.AckBast(receiver.AckGeneration, true);
        var (round, bytes) = Round(1);
        receiver.MessageRead(bytes, round);
        receiver.Delivered();
        receiver.AckReleased();
        receiver.MessageProtected();
        receiver.AckRetaken();
        Assert.Null(receiver.AckBast(receiver.AckGeneration, true));
        Assert.IsType<ReadMessageEffect>(receiver.Settled());
        Assert.Equal(BroadcastReceiverState.Phase.Reading, receiver.Current);
    }

    [Fact]
    public void Pause_waits_for_the_cycle_to_end_and_a_bast_while_paused_reads_on_resume()
    {
        var (receiver, _) = Joined();
        receiver.AckBast(receiver.AckGeneration, true);
        Assert.Null(receiver.Pause());
        var (round, bytes) = Round(1);
        receiver.MessageRead(bytes, round);
        receiver.Delivered();
        receiver.AckReleased();
        receiver.MessageProtected();
        receiver.AckRetaken();
        Assert.IsType<ReceiverPausedEffect>(receiver.Settled());
        Assert.Equal(BroadcastReceiverState.Phase.Paused, receiver.Current);

        Assert.Null(receiver.AckBast(receiver.AckGeneration, true));
        Assert.IsType<ReadMessageEffect>(receiver.Resume());
    }

    [Fact]
    public void Pause_when_idle_is_immediate_and_resume_without_a_bast_goes_idle()
    {
        var (receiver, _) = Joined();
        Assert.IsType<ReceiverPausedEffect>(receiver.Pause());
        Assert.IsType<ReceiverPausedEffect>(receiver.Pause());
        Assert.Null(receiver.Resume());
        Assert.Equal(BroadcastReceiverState.Phase.Idle, receiver.Current);
    }

    [Fact]
    public void A_receiver_that_never_joined_stays_paused()
    {
        var receiver = new BroadcastReceiverState(new DeliveryCursor());
        Assert.Null(receiver.Resume());
        Assert.Equal(BroadcastReceiverState.Phase.Paused, receiver.Current);
        Assert.Null(receiver.AckBast(receiver.AckGeneration, true));
    }

    [Fact]
    public void Events_out_of_their_phase_throw()
    {
        var (receiver, _) = Joined();
        var (round, bytes) = Round(1);
        Assert.Throws<InvalidOperationException>(() => receiver.MessageRead(bytes, round));
        Assert.Throws<InvalidOperationException>(() => receiver.Delivered());
        Assert.Throws<InvalidOperationException>(() => receiver.AckReleased());
        Assert.Throws<InvalidOperationException>(() => receiver.MessageProtected());
        Assert.Throws<InvalidOperationException>(() => receiver.AckRetaken());
        Assert.Throws<InvalidOperationException>(() => receiver.Settled());
        Assert.Throws<InvalidOperationException>(() => receiver.Resume());
    }
}
