using Lockstep.Contracts.Broadcast;
using Xunit;

namespace Lockstep.Contracts.Tests.Broadcast;

public sealed class BroadcastWireTests
{
    public static TheoryData<ClusterMessage> EveryType() =>
    [
        new NoopMessage("n1", -5),
        new MetadataUpdatedMessage("vm1", 42),
        new ResyncingMessage("vm1", 3, 100, 228),
        new NewDiskMessage("vm1", Guid.NewGuid()),
        new RemoveMessage("vm1", Guid.NewGuid()),
        new ReAddMessage("vm1", Guid.NewGuid()),
        new BitmapNeedsSyncMessage("vm1", 2),
        new ChangeCapacityMessage("vm1", 1L << 40),
        new VolumeCommandMessage(ClusterMessageType.Suspend, "vm1"),
        new VolumeCommandMessage(ClusterMessageType.Refresh, "vm1"),
        new VolumeCommandMessage(ClusterMessageType.Resume, "vm1"),
        new VolumeCommandMessage(ClusterMessageType.Activate, "vm1"),
        new VolumeCommandMessage(ClusterMessageType.Deactivate, "vm1"),
    ];

    [Theory]
    [MemberData(nameof(EveryType))]
    public void Every_message_type_round_trips_alone_and_in_a_round(ClusterMessage message)
    {
        Assert.Equal(message, BroadcastWire.DecodeMessage(BroadcastWire.EncodeMessage(message)));
        var round = new BroadcastRound(9, "node-ä", [message, new NoopMessage("x", 1)]);
        var lvb = BroadcastWire.EncodeRound(round, 1024);
        Assert.Equal(1024, lvb.Length);
        var decoded = BroadcastWire.DecodeRound(lvb)!;
        Assert.Equal(round.Seq, decoded.Seq);
        Assert.Equal(round.Origin, decoded.Origin);
        Assert.Equal(round.Messages, decoded.Messages);
        Assert.Equal(BroadcastWire.RoundLength(round.Origin, round.Messages), BroadcastWire.RoundHeaderBytes + BitConverter.ToInt32(lvb, 18));
    }

    [Fact]
    public void The_type_numbers_are_fixed()
    {
        // Append-only: nodes of different versions read each other's rounds.
        Assert.Equal(
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            Enum.GetValues<ClusterMessageType>().Select(t => (int)t));
        Assert.Equal("Noop MetadataUpdated Resyncing NewDisk Remove ReAdd BitmapNeedsSync ChangeCapacity Suspend Refresh Resume Activate Deactivate", string.Join(' ', Enum.GetNames<ClusterMessageType>()));
    }

    [Fact]
    public void An_unknown_type_from_a_newer_node_is_kept_as_bytes()
    {
        var unknown = new UnknownClusterMessage(999, [1, 2, 3]);
        var lvb = BroadcastWire.EncodeRound(new BroadcastRound(1, "n9", [unknown]), 256);
        var decoded = Assert.IsType<UnknownClusterMessage>(Assert.Single(BroadcastWire.DecodeRound(lvb)!.Messages));
        Assert.Equal(999, decoded.RawType);
        Assert.Equal([1, 2, 3], decoded.Body);
    }

    [Fact]
    public void A_never_written_lvb_is_no_round_and_no_token()
    {
        Assert.Null(BroadcastWire.DecodeRound(new byte[256]));
        Assert.Null(BroadcastWire.DecodeToken(new byte[256]));
    }

    [Fact]
    public void Malformed_rounds_are_format_errors()
    {
        var lvb = BroadcastWire.EncodeRound(new BroadcastRound(3, "n1", [new MetadataUpdatedMessage("vm", 1)]), 256);
        var longer = (byte[])lvb.Clone();
        BitConverter.GetBytes(10_000).CopyTo(longer, 18);
        Assert.Throws<FormatException>(() => BroadcastWire.DecodeRound(longer));
        var zeroSeq = (byte[])lvb.Clone();
        BitConverter.GetBytes(0L).CopyTo(zeroSeq, 8);
        Assert.Throws<FormatException>(() => BroadcastWire.DecodeRound(zeroSeq));
        var moreMessages = (byte[])lvb.Clone();
        moreMessages[16] = 2;
        Assert.Throws<FormatException>(() => BroadcastWire.DecodeRound(moreMessages));
        var badVersion = (byte[])lvb.Clone();
        badVersion[4] = 7;
        Assert.Throws<FormatException>(() => BroadcastWire.DecodeRound(badVersion));
    }

    [Fact]
    public void A_round_that_does_not_fit_the_lvb_is_refused()
    {
        var many = Enumerable.Range(0, 40).Select(i => (ClusterMessage)new MetadataUpdatedMessage("volume-" + i, i)).ToList();
        Assert.Throws<ArgumentException>(() => BroadcastWire.EncodeRound(new BroadcastRound(1, "n1", many), 256));
        Assert.Throws<ArgumentException>(() => BroadcastWire.EncodeRound(new BroadcastRound(1, "n1", []), 256));
        Assert.Throws<ArgumentException>(() => BroadcastWire.EncodeMessage(new MetadataUpdatedMessage(new string('v', 300), 1)));
    }

    [Fact]
    public void Token_records_round_trip()
    {
        Assert.Equal(new TokenRecord(77, true), BroadcastWire.DecodeToken(BroadcastWire.EncodeToken(new TokenRecord(77, true), 64)));
        Assert.Equal(new TokenRecord(0, false), BroadcastWire.DecodeToken(BroadcastWire.EncodeToken(new TokenRecord(0, false), 64)));
    }
}
