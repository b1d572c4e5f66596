using System.Buffers.Binary;
using Lockstep.Actors.Messaging.Link;
using Xunit;

namespace Lockstep.Actors.Tests.Messaging;

public sealed class PeerLinkWireTests
{
    [Fact]
    public void A_hello_round_trips_and_needs_all_its_bytes()
    {
        var buffer = new LinkBuffer();
        var hello = new PeerLinkHello("akka.tcp://lockstep@10.0.0.1:4053", 42, "akka.tcp://lockstep@10.0.0.2:4053", -7);
        PeerLinkWire.WriteHello(buffer, hello);
        var bytes = buffer.Written.ToArray();

        for (var cut = 0; cut < bytes.Length; cut++)
        {
            Assert.False(PeerLinkWire.TryReadHello(bytes.AsSpan(0, cut), out _, out var none));
            Assert.Equal(0, none);
        }

        Assert.True(PeerLinkWire.TryReadHello(bytes, out var read, out var used));
        Assert.Equal(hello, read);
        Assert.Equal(bytes.Length, used);
    }

    [Fact]
    public void Bytes_that_are_not_a_link_or_another_version_are_refused_at_once()
    {
        Assert.Throws<PeerLinkProtocolException>(() => PeerLinkWire.TryReadHello("GET / HTTP/1.1\r\n"u8, out _, out _));
        Assert.Throws<PeerLinkProtocolException>(() => PeerLinkWire.TryReadHello("LX"u8, out _, out _));
        var otherVersion = "LSLK\u0009"u8.ToArray();
        var ex = Assert.Throws<PeerLinkProtocolException>(() => PeerLinkWire.TryReadHello(otherVersion, out _, out _));
        Assert.Contains("version 9", ex.Message);
    }

    [Fact]
    public void Frames_round_trip_in_order_and_a_cut_frame_waits_for_its_rest()
    {
        var buffer = new LinkBuffer(16);
        PeerLinkWire.WriteDefine(buffer, 1, "akka.tcp://lockstep@127.0.0.1:1/user/lockstep-outbox#5");
        PeerLinkWire.WriteMessage(buffer, 1, 0, 743, "b", [1, 2, 3]);
        PeerLinkWire.WriteMessage(buffer, 1, 1, 743, "o", new byte[70_000]);
        var bytes = buffer.Written.ToArray();

        var frames = new List<PeerLinkFrame>();
        var at = 0;
        while (PeerLinkWire.TryReadFrame(bytes.AsSpan(at), out var frame, out var used))
        {
            frames.Add(frame!);
            at += used;
        }

        Assert.Equal(bytes.Length, at);
        Assert.Equal(new PeerLinkDefine(1, "akka.tcp://lockstep@127.0.0.1:1/user/lockstep-outbox#5"), frames[0]);
        var small = Assert.IsType<PeerLinkMessage>(frames[1]);
        Assert.Equal((1u, 0u, 743, "b"), (small.RecipientId, small.SenderId, small.SerializerId, small.Manifest));
        Assert.Equal([1, 2, 3], small.Payload);
        var large = Assert.IsType<PeerLinkMessage>(frames[2]);
        Assert.Equal((1u, 1u, "o", 70_000), (large.RecipientId, large.SenderId, large.Manifest, large.Payload.Length));

        var lastStart = bytes.Length - PeerLinkWire.MessageFrameLength("o", 70_000);
        Assert.True(PeerLinkWire.TryReadFrame(bytes.AsSpan(lastStart), out _, out _));
        Assert.False(PeerLinkWire.TryReadFrame(bytes.AsSpan(lastStart, bytes.Length - lastStart - 1), out _, out var none));
        Assert.Equal(0, none);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(PeerLinkWire.MaxFrame + 1)]
    public void A_frame_length_outside_the_limit_breaks_the_stream(int length)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, length);
        Assert.Throws<PeerLinkProtocolException>(() => PeerLinkWire.TryReadFrame(bytes, out _, out _));
    }

    [Fact]
    public void Unknown_kinds_short_headers_bad_ids_and_bad_utf8_break_the_stream()
    {
        Assert.Contains("unknown frame kind", Broken(9, [0, 0, 0, 0]));
        Assert.Contains("shorter than its header", Broken(2, [1, 0, 0, 0]));
        Assert.Contains("ends inside its manifest", Broken(2, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, (byte)'x']));
        Assert.Contains("path id 0", Broken(1, [0, 0, 0, 0, (byte)'/']));
        Assert.Contains("UTF-8", Broken(1, [1, 0, 0, 0, 0xff, 0xfe]));
    }

    [Fact]
    public void Path_ids_are_handed_out_once_and_the_receiver_refuses_undefined_or_redefined_ids()
    {
        var ids = new PeerLinkPathIds<string>();
        Assert.False(ids.TryGet("a", out _));
        Assert.Equal(1u, ids.NextId);
        var a = ids.Add("a");
        var b = ids.Add("b");
        Assert.True(ids.TryGet("a", out var again));
        Assert.Equal((1u, 2u, 1u, 3u), (a, b, again, ids.NextId));
        Assert.Throws<ArgumentException>(() => ids.Add("a"));
        Assert.True(PeerLinkWire.PathFits(new string('x', PeerLinkWire.MaxPath)));
        Assert.False(PeerLinkWire.PathFits(new string('é', PeerLinkWire.MaxPath / 2 + 1)));
        Assert.True(PeerLinkWire.MessageFits("b", 100));
        Assert.False(PeerLinkWire.MessageFits(new string('m', 256), 100));
        Assert.False(PeerLinkWire.MessageFits("b", PeerLinkWire.MaxFrame));

        var table = new PeerLinkPathTable<string>();
        table.Define(1, "outbox");
        Assert.Equal("outbox", table.Get(1));
        Assert.Throws<PeerLinkProtocolException>(() => table.Get(2));
        Assert.Throws<PeerLinkProtocolException>(() => table.Define(1, "other"));
    }

    private static string Broken(byte kind, byte[] body)
    {
        var bytes = new byte[4 + 1 + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, 1 + body.Length);
        bytes[4] = kind;
        body.CopyTo(bytes, 5);
        return Assert.Throws<PeerLinkProtocolException>(() => PeerLinkWire.TryReadFrame(bytes, out _, out _)).Message;
    }
}
