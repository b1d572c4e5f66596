using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Nbd;
using Lockstep.Hosting.Nbd;
using Xunit;

namespace Lockstep.Hosting.Tests.Nbd;

public sealed class NbdCodecTests
{
    // ------------------------------------------------------------------ handshake

    [Fact]
    public void Greeting_is_NBDMAGIC_IHAVEOPT_and_the_flags()
    {
        var bytes = new byte[NbdSizes.Greeting];
        NbdCodec.WriteGreeting(bytes, NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes);

        Assert.Equal("NBDMAGICIHAVEOPT", Encoding.ASCII.GetString(bytes, 0, 16));
        Assert.Equal(new byte[] { 0, 3 }, bytes[16..]);
    }

    [Fact]
    public void Client_flags_need_four_bytes_and_refuse_bits_not_offered()
    {
        var offered = NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes;
        var partial = new ReadOnlySequence<byte>(new byte[] { 0, 0 });
        Assert.False(NbdCodec.TryReadClientFlags(ref partial, offered, out _, out var needed));
        Assert.Equal(2, needed);
        Assert.Equal(2, partial.Length);

        var good = new ReadOnlySequence<byte>(new byte[] { 0, 0, 0, 3, 0xFF });
        Assert.True(NbdCodec.TryReadClientFlags(ref good, offered, out var flags, out _));
        Assert.Equal(NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes, flags);
        Assert.Equal(1, good.Length);

        var unknown = new ReadOnlySequence<byte>(new byte[] { 0, 0, 0, 4 });
        Assert.Throws<NbdProtocolException>(() => NbdCodec.TryReadClientFlags(ref unknown, offered, out _, out _));
        var notOffered = new ReadOnlySequence<byte>(new byte[] { 0, 0, 0, 2 });
        Assert.Throws<NbdProtocolException>(() => NbdCodec.TryReadClientFlags(ref notOffered, NbdHandshakeFlags.FixedNewstyle, out _, out _));
    }

    [Fact]
    public void Option_is_read_whole_and_partial_input_says_how_much_is_missing()
    {
        var data = "export"u8.ToArray();
        var bytes = Option(NbdOption.ExportName, data).Concat(Option(NbdOption.Abort, [])).ToArray();
        var one = Option(NbdOption.ExportName, data).Length;

        for (var cut = 0; cut < one; cut++)
        {
            var partial = new ReadOnlySequence<byte>(bytes, 0, cut);
            Assert.False(NbdCodec.TryReadOption(ref partial, 1024, out _, out _, out var needed));
            Assert.Equal(cut < NbdSizes.OptionHeader ? NbdSizes.OptionHeader - cut : one - cut, needed);
            Assert.Equal(cut, partial.Length);
        }

        var buffer = TestSegment.Split(bytes, 3, 17, 20);
        Assert.True(NbdCodec.TryReadOption(ref buffer, 1024, out var header, out var payload, out _));
        Assert.Equal(new NbdOptionHeader(NbdOption.ExportName, (uint)data.Length), header);
        Assert.Equal(data, payload.ToArray());
        Assert.True(NbdCodec.TryReadOption(ref buffer, 1024, out header, out payload, out _));
        Assert.Equal(NbdOption.Abort, header.Option);
        Assert.True(payload.IsEmpty);
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void Option_with_bad_magic_or_oversized_data_is_a_protocol_violation()
    {
        var bad = Option(NbdOption.Go, []);
        bad[0] ^= 0xFF;
        var badBuffer = new ReadOnlySequence<byte>(bad);
        Assert.Throws<NbdProtocolException>(() => NbdCodec.TryReadOption(ref badBuffer, 1024, out _, out _, out _));

        // Refused from the header alone: the server never waits for (or buffers) the announced data.
        var huge = Option(NbdOption.Go, [])[..NbdSizes.OptionHeader];
        BinaryPrimitives.WriteUInt32BigEndian(huge.AsSpan(12), 1025);
        var hugeBuffer = new ReadOnlySequence<byte>(huge);
        var e = Assert.Throws<NbdProtocolException>(() => NbdCodec.TryReadOption(ref hugeBuffer, 1024, out _, out _, out _));
        Assert.Contains("1025", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Info_request_parses_name_and_items_and_refuses_malformed_data()
    {
        Assert.True(NbdCodec.TryParseInfoRequest(InfoData("vol", 1, 3), out var request));
        Assert.Equal("vol", request.ExportName);
        Assert.Equal([NbdInfoType.Name, NbdInfoType.BlockSize], request.Requested);

        Assert.True(NbdCodec.TryParseInfoRequest(InfoData(""), out var empty));
        Assert.Equal("", empty.ExportName);
        Assert.Empty(empty.Requested);

        var longName = InfoData("vol", 1);
        BinaryPrimitives.WriteUInt32BigEndian(longName, 1000);
        Assert.False(NbdCodec.TryParseInfoRequest(longName, out _));
        Assert.False(NbdCodec.TryParseInfoRequest(InfoData("vol", 1)[..^1], out _));
        Assert.False(NbdCodec.TryParseInfoRequest([.. InfoData("vol", 1), 0], out _));
        Assert.False(NbdCodec.TryParseInfoRequest([0, 0], out _));
        var invalidUtf8 = InfoData("vol");
        invalidUtf8[4] = 0xFF;
        Assert.False(NbdCodec.TryParseInfoRequest(invalidUtf8, out _));
        var nul = InfoData("vol");
        nul[5] = 0;
        Assert.False(NbdCodec.TryParseInfoRequest(nul, out _));
    }

    [Fact]
    public void Meta_context_request_parses_queries_and_refuses_malformed_data()
    {
        Assert.True(NbdCodec.TryParseMetaContextRequest(MetaData("vol", "base:allocation", "x-test:thing"), out var request));
        Assert.Equal("vol", request.ExportName);
        Assert.Equal(["base:allocation", "x-test:thing"], request.Queries);

        Assert.True(NbdCodec.TryParseMetaContextRequest(MetaData("vol"), out var none));
        Assert.Empty(none.Queries);

        var hugeCount = MetaData("vol");
        BinaryPrimitives.WriteUInt32BigEndian(hugeCount.AsSpan(7), uint.MaxValue);
        Assert.False(NbdCodec.TryParseMetaContextRequest(hugeCount, out _));
        Assert.False(NbdCodec.TryParseMetaContextRequest(MetaData("vol", "base:allocation")[..^1], out _));
        Assert.False(NbdCodec.TryParseMetaContextRequest([.. MetaData("vol", "base:allocation"), 1], out _));
        Assert.False(NbdCodec.TryParseMetaContextRequest(MetaData("vol")[..6], out _));
    }

    [Fact]
    public void Option_replies_have_the_reply_magic_option_type_and_length()
    {
        var output = new ArrayBufferWriter<byte>();
        NbdCodec.WriteOptionReply(output, NbdOption.Go, NbdOptionReply.Ack, default);
        NbdCodec.WriteInfoExport(output, NbdOption.Info, 1 << 30, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush);
        NbdCodec.WriteInfoBlockSize(output, NbdOption.Go, new NbdBlockSizes(512, 4096, 1 << 20));
        NbdCodec.WriteServerReply(output, "vol", "two legs");
        NbdCodec.WriteMetaContextReply(output, NbdOption.SetMetaContext, 1, "base:allocation");
        var bytes = output.WrittenSpan;

        var replies = OptionReplies(bytes.ToArray());
        Assert.Equal((NbdOption.Go, NbdOptionReply.Ack, 0), (replies[0].Option, replies[0].Reply, replies[0].Data.Length));
        Assert.Equal((NbdOption.Info, NbdOptionReply.Info), (replies[1].Option, replies[1].Reply));
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 5 }, replies[1].Data);
        Assert.Equal(new byte[] { 0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0, 0x10, 0, 0 }, replies[2].Data);
        Assert.Equal(NbdOptionReply.Server, replies[3].Reply);
        Assert.Equal("\0\0\0\u0003voltwo legs", Encoding.UTF8.GetString(replies[3].Data));
        Assert.Equal(NbdOptionReply.MetaContext, replies[4].Reply);
        Assert.Equal("\0\0\0\u0001base:allocation", Encoding.UTF8.GetString(replies[4].Data));
    }

    [Fact]
    public void Export_name_reply_pads_with_124_zeroes_unless_no_zeroes()
    {
        var padded = new ArrayBufferWriter<byte>();
        NbdCodec.WriteExportNameReply(padded, 4096, NbdTransmissionFlags.HasFlags, noZeroes: false);
        var bare = new ArrayBufferWriter<byte>();
        NbdCodec.WriteExportNameReply(bare, 4096, NbdTransmissionFlags.HasFlags, noZeroes: true);

        Assert.Equal(134, padded.WrittenCount);
        Assert.Equal(10, bare.WrittenCount);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 1 }, bare.WrittenSpan.ToArray());
        Assert.All(padded.WrittenSpan[10..].ToArray(), b => Assert.Equal(0, b));
    }

    // ------------------------------------------------------------------ transmission

    [Theory]
    [InlineData(NbdCommand.Read, NbdCommandFlags.Fua | NbdCommandFlags.DontFragment)]
    [InlineData(NbdCommand.Write, NbdCommandFlags.Fua)]
    [InlineData(NbdCommand.Disconnect, NbdCommandFlags.None)]
    [InlineData(NbdCommand.Flush, NbdCommandFlags.None)]
    [InlineData(NbdCommand.Trim, NbdCommandFlags.Fua)]
    [InlineData(NbdCommand.WriteZeroes, NbdCommandFlags.NoHole | NbdCommandFlags.FastZero)]
    [InlineData(NbdCommand.BlockStatus, NbdCommandFlags.RequestOne)]
    [InlineData((NbdCommand)99, (NbdCommandFlags)0x8000)]
    public void Every_command_round_trips_through_the_request_header(NbdCommand command, NbdCommandFlags flags)
    {
        var request = new NbdRequest(flags, command, 0x0102030405060708, 0x1122334455667788, 65536);
        var bytes = new byte[NbdSizes.RequestHeader + 3];
        NbdCodec.WriteRequest(bytes, request);

        var buffer = new ReadOnlySequence<byte>(bytes);
        Assert.True(NbdCodec.TryReadRequest(ref buffer, 1 << 20, out var parsed, out _));
        Assert.Equal(request, parsed);
        Assert.Equal(3, buffer.Length);
    }

    [Fact]
    public void Request_split_anywhere_needs_exactly_the_missing_bytes_and_parses_across_segments()
    {
        var request = new NbdRequest(NbdCommandFlags.Fua, NbdCommand.Write, 42, 4096, 512);
        var bytes = new byte[NbdSizes.RequestHeader];
        NbdCodec.WriteRequest(bytes, request);

        for (var cut = 0; cut < bytes.Length; cut++)
        {
            var partial = new ReadOnlySequence<byte>(bytes, 0, cut);
            Assert.False(NbdCodec.TryReadRequest(ref partial, 1 << 20, out _, out var needed));
            Assert.Equal(NbdSizes.RequestHeader - cut, needed);

            var split = TestSegment.Split(bytes, cut, cut + 5);
            Assert.True(NbdCodec.TryReadRequest(ref split, 1 << 20, out var parsed, out _));
            Assert.Equal(request, parsed);
            Assert.True(split.IsEmpty);
        }
    }

    [Fact]
    public void Bad_request_magic_and_oversized_write_are_protocol_violations()
    {
        var bytes = new byte[NbdSizes.RequestHeader];
        NbdCodec.WriteRequest(bytes, new NbdRequest(0, NbdCommand.Read, 1, 0, 512));
        bytes[3] ^= 1;
        var bad = new ReadOnlySequence<byte>(bytes);
        Assert.Throws<NbdProtocolException>(() => NbdCodec.TryReadRequest(ref bad, 1 << 20, out _, out _));

        NbdCodec.WriteRequest(bytes, new NbdRequest(0, NbdCommand.Write, 1, 0, (1 << 20) + 1));
        var big = new ReadOnlySequence<byte>(bytes);
        Assert.Throws<NbdProtocolException>(() => NbdCodec.TryReadRequest(ref big, 1 << 20, out _, out _));

        // A big READ has no payload to skip: the codec passes it on and the rules answer EINVAL.
        NbdCodec.WriteRequest(bytes, new NbdRequest(0, NbdCommand.Read, 1, 0, uint.MaxValue));
        var bigRead = new ReadOnlySequence<byte>(bytes);
        Assert.True(NbdCodec.TryReadRequest(ref bigRead, 1 << 20, out var read, out _));
        Assert.Equal(uint.MaxValue, read.Length);
    }

    [Fact]
    public void Random_bytes_either_parse_or_raise_a_protocol_violation_never_anything_else()
    {
        var random = new Random(7);
        for (var i = 0; i < 20_000; i++)
        {
            var bytes = new byte[random.Next(0, 80)];
            random.NextBytes(bytes);
            if (random.Next(2) == 0 && bytes.Length >= 4)
            {
                BinaryPrimitives.WriteUInt32BigEndian(bytes, NbdMagic.RequestMagic);
            }

            var buffer = TestSegment.Split(bytes, random.Next(0, bytes.Length + 1));
            try
            {
                while (NbdCodec.TryReadRequest(ref buffer, 1 << 20, out _, out _))
                {
                }
            }
            catch (NbdProtocolException)
            {
            }

            NbdCodec.TryParseInfoRequest(bytes, out _);
            NbdCodec.TryParseMetaContextRequest(bytes, out _);
        }
    }

    [Fact]
    public void Simple_reply_and_offset_data_header_are_byte_exact()
    {
        var simple = new byte[NbdSizes.SimpleReplyHeader];
        NbdCodec.WriteSimpleReply(simple, NbdError.NoSpace, 0xAABBCCDD00112233);
        Assert.Equal(Convert.FromHexString("67446698" + "0000001C" + "AABBCCDD00112233"), simple);

        var data = new byte[NbdCodec.OffsetDataHeader];
        NbdCodec.WriteOffsetDataHeader(data, 5, 4096, 512);
        Assert.Equal(Convert.FromHexString("668E33EF" + "0001" + "0001" + "0000000000000005" + "00000208" + "0000000000001000"), data);
    }

    [Fact]
    public void Error_chunk_carries_errno_and_a_bounded_message()
    {
        var message = "read failed";
        var chunk = new byte[NbdCodec.ErrorChunkLength(message)];
        var length = NbdCodec.WriteErrorChunk(chunk, 9, NbdError.Io, message);

        Assert.Equal(chunk.Length, length);
        Assert.Equal((ushort)NbdReplyType.Error, BinaryPrimitives.ReadUInt16BigEndian(chunk.AsSpan(6)));
        Assert.Equal((ushort)NbdReplyFlags.Done, BinaryPrimitives.ReadUInt16BigEndian(chunk.AsSpan(4)));
        Assert.Equal((uint)(6 + message.Length), BinaryPrimitives.ReadUInt32BigEndian(chunk.AsSpan(16)));
        Assert.Equal(5u, BinaryPrimitives.ReadUInt32BigEndian(chunk.AsSpan(20)));
        Assert.Equal(message.Length, BinaryPrimitives.ReadUInt16BigEndian(chunk.AsSpan(24)));
        Assert.Equal(message, Encoding.UTF8.GetString(chunk, 26, message.Length));

        var huge = new string('é', 5000);
        var big = new byte[NbdCodec.ErrorChunkLength(huge)];
        var bigLength = NbdCodec.WriteErrorChunk(big, 9, NbdError.Io, huge);
        var messageLength = BinaryPrimitives.ReadUInt16BigEndian(big.AsSpan(24));
        Assert.True(messageLength <= NbdCodec.MaxErrorMessage);
        Assert.Equal(26 + messageLength, bigLength);
        Assert.Equal(new string('é', messageLength / 2), Encoding.UTF8.GetString(big, 26, messageLength));
    }

    [Fact]
    public void Block_status_merges_equal_neighbours_clips_to_the_request_and_honours_req_one()
    {
        BlockExtent[] extents =
        [
            new(4096, BlockExtentKind.Data), new(4096, BlockExtentKind.Data), new(0, BlockExtentKind.HoleAndZero),
            new(8192, BlockExtentKind.HoleAndZero), new(1 << 20, BlockExtentKind.Data),
        ];

        Assert.Equal([(8192u, 0u), (8192u, 3u), (4096u, 0u)], Descriptors(extents, 20480, requestOne: false));
        Assert.Equal([(8192u, 0u)], Descriptors(extents, 20480, requestOne: true));
        Assert.Equal([(20480u, 0u)], Descriptors([], 20480, requestOne: false));
        Assert.Equal([(100u, 3u)], Descriptors([new(4096, BlockExtentKind.HoleAndZero)], 100, requestOne: false));
    }

    [Fact]
    public void Block_status_stops_at_the_descriptor_limit()
    {
        var extents = Enumerable.Range(0, 5000).Select(i => new BlockExtent(512, i % 2 == 0 ? BlockExtentKind.Data : BlockExtentKind.HoleAndZero)).ToArray();
        var descriptors = Descriptors(extents, 5000 * 512, requestOne: false);

        Assert.Equal(NbdCodec.MaxBlockStatusDescriptors, descriptors.Length);
        Assert.All(descriptors, d => Assert.Equal(512u, d.Length));
    }

    [Theory]
    [InlineData(512, 4096, 32 << 20, 64 << 20, 512, 4096, 32 << 20)]
    [InlineData(4096, 4096, 64 << 20, 32 << 20, 4096, 4096, 32 << 20)]
    [InlineData(3000, 1000, 10000, 1 << 20, 4096, 4096, 8192)]
    [InlineData(0, 0, 0, 1 << 20, 1, 1, 1)]
    [InlineData(1 << 20, 4096, 1 << 20, 32 << 20, 65536, 65536, 1 << 20)]
    public void Block_sizes_are_made_valid_for_the_spec(int min, int preferred, int max, int limit, uint eMin, uint ePreferred, uint eMax)
    {
        var sizes = NbdBlockSizes.For(new MemoryBlockDevice("d", 1 << 30, minimum: min, preferred: preferred, maximum: max), limit);

        Assert.Equal(new NbdBlockSizes(eMin, ePreferred, eMax), sizes);
    }

    // ------------------------------------------------------------------ helpers

    internal static byte[] Option(NbdOption option, byte[] data)
    {
        var bytes = new byte[NbdSizes.OptionHeader + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, NbdMagic.OptionMagic);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(8), (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(12), (uint)data.Length);
        data.CopyTo(bytes, NbdSizes.OptionHeader);
        return bytes;
    }

    internal static byte[] InfoData(string name, params ushort[] items)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var bytes = new byte[4 + nameBytes.Length + 2 + (2 * items.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, (uint)nameBytes.Length);
        nameBytes.CopyTo(bytes, 4);
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(4 + nameBytes.Length), (ushort)items.Length);
        for (var i = 0; i < items.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(6 + nameBytes.Length + (2 * i)), items[i]);
        }

        return bytes;
    }

    internal static byte[] MetaData(string name, params string[] queries)
    {
        var stream = new MemoryStream();
        void String(string value)
        {
            var b = Encoding.UTF8.GetBytes(value);
            Span<byte> length = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(length, (uint)b.Length);
            stream.Write(length);
            stream.Write(b);
        }

        String(name);
        Span<byte> count = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(count, (uint)queries.Length);
        stream.Write(count);
        foreach (var query in queries)
        {
            String(query);
        }

        return stream.ToArray();
    }

    internal static List<(NbdOption Option, NbdOptionReply Reply, byte[] Data)> OptionReplies(byte[] bytes)
    {
        var replies = new List<(NbdOption, NbdOptionReply, byte[])>();
        var span = bytes.AsSpan();
        while (!span.IsEmpty)
        {
            Assert.Equal(NbdMagic.OptionReplyMagic, BinaryPrimitives.ReadUInt64BigEndian(span));
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(span[16..]);
            replies.Add(((NbdOption)BinaryPrimitives.ReadUInt32BigEndian(span[8..]), (NbdOptionReply)BinaryPrimitives.ReadUInt32BigEndian(span[12..]), span.Slice(20, length).ToArray()));
            span = span[(20 + length)..];
        }

        return replies;
    }

    private static (uint Length, uint Flags)[] Descriptors(IReadOnlyList<BlockExtent> extents, uint requestLength, bool requestOne)
    {
        var chunk = new byte[NbdCodec.BlockStatusChunkCapacity(extents.Count)];
        var length = NbdCodec.WriteBlockStatus(chunk, 1, 7, extents, requestLength, requestOne);
        Assert.Equal((ushort)NbdReplyType.BlockStatus, BinaryPrimitives.ReadUInt16BigEndian(chunk.AsSpan(6)));
        Assert.Equal((uint)(length - 20), BinaryPrimitives.ReadUInt32BigEndian(chunk.AsSpan(16)));
        Assert.Equal(7u, BinaryPrimitives.ReadUInt32BigEndian(chunk.AsSpan(20)));
        return Enumerable.Range(0, (length - 24) / 8)
            .Select(i => (BinaryPrimitives.ReadUInt32BigEndian(chunk.AsSpan(24 + (8 * i))), BinaryPrimitives.ReadUInt32BigEndian(chunk.AsSpan(28 + (8 * i)))))
            .ToArray();
    }
}
