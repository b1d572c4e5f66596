using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Text;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Nbd;

namespace Lockstep.Hosting.Nbd;

/// <summary>A violation of the protocol that ends the connection (bad magic, oversized length, unknown client flags).</summary>
public sealed class NbdProtocolException(string message) : Exception(message);

/// <summary>One transmission-phase request header. <see cref="Command"/> keeps unknown values as sent.</summary>
public readonly record struct NbdRequest(NbdCommandFlags Flags, NbdCommand Command, ulong Handle, ulong Offset, uint Length);

/// <summary>One handshake option header; its <see cref="Length"/> bytes of data follow.</summary>
public readonly record struct NbdOptionHeader(NbdOption Option, uint Length);

/// <summary>What a client asked for with NBD_OPT_INFO / NBD_OPT_GO.</summary>
public sealed record NbdInfoRequest(string ExportName, IReadOnlyList<NbdInfoType> Requested);

/// <summary>What a client asked for with NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.</summary>
public sealed record NbdMetaContextRequest(string ExportName, IReadOnlyList<string> Queries);

/// <summary>
/// Pure encoder and decoder of NBD messages. Readers follow the System.IO.Pipelines habit: they take the
/// unread buffer by reference, and either consume one whole message from it and return true, or leave it
/// untouched and say how many more bytes they need. Nothing here allocates on the transmission path.
/// </summary>
public static class NbdCodec
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    // ------------------------------------------------------------------ handshake

    /// <summary>Writes the fixed-newstyle greeting (<see cref="NbdSizes.Greeting"/> bytes).</summary>
    public static void WriteGreeting(Span<byte> destination, NbdHandshakeFlags flags)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.InitPassword);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], NbdMagic.OptionMagic);
        BinaryPrimitives.WriteUInt16BigEndian(destination[16..], (ushort)flags);
    }

    /// <summary>Reads the client's 32-bit flags; throws on bits the server did not offer.</summary>
    public static bool TryReadClientFlags(ref ReadOnlySequence<byte> buffer, NbdHandshakeFlags offered, out NbdClientFlags flags, out int bytesNeeded)
    {
        Span<byte> scratch = stackalloc byte[NbdSizes.ClientFlags];
        if (!TryPeek(buffer, scratch, out var bytes, out bytesNeeded))
        {
            flags = default;
            return false;
        }

        flags = (NbdClientFlags)BinaryPrimitives.ReadUInt32BigEndian(bytes);
        var allowed = NbdClientFlags.FixedNewstyle | ((offered & NbdHandshakeFlags.NoZeroes) != 0 ? NbdClientFlags.NoZeroes : 0);
        if ((flags & ~allowed) != 0)
        {
            NbdThrow.UnknownClientFlags((uint)flags);
        }

        buffer = buffer.Slice(NbdSizes.ClientFlags);
        return true;
    }

    /// <summary>
    /// Reads one option with its whole data. Throws on a bad magic or on data longer than
    /// <paramref name="maxLength"/> (options are small; a huge one is an attack, not a request).
    /// </summary>
    public static bool TryReadOption(ref ReadOnlySequence<byte> buffer, int maxLength, out NbdOptionHeader header, out ReadOnlySequence<byte> data, out int bytesNeeded)
    {
        Span<byte> scratch = stackalloc byte[NbdSizes.OptionHeader];
        data = default;
        header = default;
        if (!TryPeek(buffer, scratch, out var bytes, out bytesNeeded))
        {
            return false;
        }

        var magic = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        if (magic != NbdMagic.OptionMagic)
        {
            NbdThrow.BadOptionMagic(magic);
        }

        var option = BinaryPrimitives.ReadUInt32BigEndian(bytes[8..]);
        var length = BinaryPrimitives.ReadUInt32BigEndian(bytes[12..]);
        if (length > (uint)maxLength)
        {
            NbdThrow.OptionTooLong(option, length, maxLength);
        }

        var total = NbdSizes.OptionHeader + (long)length;
        if (buffer.Length < total)
        {
            bytesNeeded = (int)(total - buffer.Length);
            return false;
        }

        header = new NbdOptionHeader((NbdOption)option, length);
        data = buffer.Slice(NbdSizes.OptionHeader, length);
        buffer = buffer.Slice(total);
        bytesNeeded = 0;
        return true;
    }

    /// <summary>Parses the data of NBD_OPT_INFO / NBD_OPT_GO; false when it is malformed (NBD_REP_ERR_INVALID).</summary>
    public static bool TryParseInfoRequest(ReadOnlySpan<byte> data, [NotNullWhen(true)] out NbdInfoRequest? request)
    {
        request = null;
        if (!TryReadString32(ref data, out var name) || data.Length < 2)
        {
            return false;
        }

        int count = BinaryPrimitives.ReadUInt16BigEndian(data);
        data = data[2..];
        if (data.Length != count * 2)
        {
            return false;
        }

        var items = new NbdInfoType[count];
        for (var i = 0; i < count; i++)
        {
            items[i] = (NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(data[(i * 2)..]);
        }

        request = new NbdInfoRequest(name, items);
        return true;
    }

    /// <summary>Parses the data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT; false when malformed.</summary>
    public static bool TryParseMetaContextRequest(ReadOnlySpan<byte> data, [NotNullWhen(true)] out NbdMetaContextRequest? request)
    {
        request = null;
        if (!TryReadString32(ref data, out var name) || data.Length < 4)
        {
            return false;
        }

        var count = BinaryPrimitives.ReadUInt32BigEndian(data);
        data = data[4..];
        // Each query costs at least its 4-byte length, so a count the data cannot hold is malformed.
        if (count > (uint)data.Length / 4)
        {
            return false;
        }

        var queries = new string[count];
        for (var i = 0; i < queries.Length; i++)
        {
            if (!TryReadString32(ref data, out queries[i]!))
            {
                return false;
            }
        }

        if (!data.IsEmpty)
        {
            return false;
        }

        request = new NbdMetaContextRequest(name, queries);
        return true;
    }

    /// <summary>Decodes a whole-option string (NBD_OPT_EXPORT_NAME); false when it is not valid UTF-8 or too long.</summary>
    public static bool TryDecodeString(ReadOnlySpan<byte> bytes, [NotNullWhen(true)] out string? value)
    {
        value = null;
        if (bytes.Length > NbdSizes.MaxString || bytes.Contains((byte)0))
        {
            return false;
        }

        try
        {
            value = StrictUtf8.GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
    }

    /// <summary>Writes one option reply with its data.</summary>
    public static void WriteOptionReply(IBufferWriter<byte> output, NbdOption option, NbdOptionReply reply, ReadOnlySpan<byte> data)
    {
        var span = output.GetSpan(NbdSizes.OptionReplyHeader + data.Length);
        BinaryPrimitives.WriteUInt64BigEndian(span, NbdMagic.OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(span[8..], (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(span[12..], (uint)reply);
        BinaryPrimitives.WriteUInt32BigEndian(span[16..], (uint)data.Length);
        data.CopyTo(span[NbdSizes.OptionReplyHeader..]);
        output.Advance(NbdSizes.OptionReplyHeader + data.Length);
    }

    /// <summary>Writes an error reply with a message for a human.</summary>
    public static void WriteOptionError(IBufferWriter<byte> output, NbdOption option, NbdOptionReply error, string message) =>
        WriteOptionReply(output, option, error, Utf8Truncated(message));

    /// <summary>Writes NBD_REP_SERVER for NBD_OPT_LIST: name, then the description for display.</summary>
    public static void WriteServerReply(IBufferWriter<byte> output, string name, string description)
    {
        var nameBytes = Utf8Truncated(name);
        var descriptionBytes = Utf8Truncated(description);
        var data = new byte[4 + nameBytes.Length + descriptionBytes.Length];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)nameBytes.Length);
        nameBytes.CopyTo(data, 4);
        descriptionBytes.CopyTo(data, 4 + nameBytes.Length);
        WriteOptionReply(output, NbdOption.List, NbdOptionReply.Server, data);
    }

    /// <summary>Writes NBD_REP_INFO / NBD_INFO_EXPORT: size and transmission flags.</summary>
    public static void WriteInfoExport(IBufferWriter<byte> output, NbdOption option, ulong size, NbdTransmissionFlags flags)
    {
        Span<byte> data = stackalloc byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(data, (ushort)NbdInfoType.Export);
        BinaryPrimitives.WriteUInt64BigEndian(data[2..], size);
        BinaryPrimitives.WriteUInt16BigEndian(data[10..], (ushort)flags);
        WriteOptionReply(output, option, NbdOptionReply.Info, data);
    }

    /// <summary>Writes NBD_REP_INFO / NBD_INFO_NAME or NBD_INFO_DESCRIPTION.</summary>
    public static void WriteInfoString(IBufferWriter<byte> output, NbdOption option, NbdInfoType type, string value)
    {
        var bytes = Utf8Truncated(value);
        var data = new byte[2 + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(data, (ushort)type);
        bytes.CopyTo(data, 2);
        WriteOptionReply(output, option, NbdOptionReply.Info, data);
    }

    /// <summary>Writes NBD_REP_INFO / NBD_INFO_BLOCK_SIZE.</summary>
    public static void WriteInfoBlockSize(IBufferWriter<byte> output, NbdOption option, NbdBlockSizes sizes)
    {
        Span<byte> data = stackalloc byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(data, (ushort)NbdInfoType.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(data[2..], sizes.Minimum);
        BinaryPrimitives.WriteUInt32BigEndian(data[6..], sizes.Preferred);
        BinaryPrimitives.WriteUInt32BigEndian(data[10..], sizes.Maximum);
        WriteOptionReply(output, option, NbdOptionReply.Info, data);
    }

    /// <summary>Writes NBD_REP_META_CONTEXT: context id and name.</summary>
    public static void WriteMetaContextReply(IBufferWriter<byte> output, NbdOption option, uint contextId, string name)
    {
        var bytes = Encoding.UTF8.GetBytes(name);
        var data = new byte[4 + bytes.Length];
        BinaryPrimitives.WriteUInt32BigEndian(data, contextId);
        bytes.CopyTo(data, 4);
        WriteOptionReply(output, option, NbdOptionReply.MetaContext, data);
    }

    /// <summary>Writes the reply to NBD_OPT_EXPORT_NAME: size, flags and (unless NO_ZEROES) 124 zero bytes.</summary>
    public static void WriteExportNameReply(IBufferWriter<byte> output, ulong size, NbdTransmissionFlags flags, bool noZeroes)
    {
        var length = NbdSizes.ExportNameReply + (noZeroes ? 0 : NbdSizes.ExportNameReplyPadding);
        var span = output.GetSpan(length)[..length];
        span.Clear();
        BinaryPrimitives.WriteUInt64BigEndian(span, size);
        BinaryPrimitives.WriteUInt16BigEndian(span[8..], (ushort)flags);
        output.Advance(length);
    }

    // ------------------------------------------------------------------ transmission

    /// <summary>
    /// Reads one request header (<see cref="NbdSizes.RequestHeader"/> bytes). The payload of a WRITE is not
    /// part of it: <see cref="NbdRequest.Length"/> bytes follow. Throws on a bad magic and on a WRITE whose
    /// payload exceeds <paramref name="maxWritePayload"/>, since neither can be answered without trusting
    /// the stream any further.
    /// </summary>
    public static bool TryReadRequest(ref ReadOnlySequence<byte> buffer, uint maxWritePayload, out NbdRequest request, out int bytesNeeded)
    {
        Span<byte> scratch = stackalloc byte[NbdSizes.RequestHeader];
        if (!TryPeek(buffer, scratch, out var bytes, out bytesNeeded))
        {
            request = default;
            return false;
        }

        var magic = BinaryPrimitives.ReadUInt32BigEndian(bytes);
        if (magic != NbdMagic.RequestMagic)
        {
            NbdThrow.BadRequestMagic(magic);
        }

        request = new NbdRequest(
            (NbdCommandFlags)BinaryPrimitives.ReadUInt16BigEndian(bytes[4..]),
            (NbdCommand)BinaryPrimitives.ReadUInt16BigEndian(bytes[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]),
            BinaryPrimitives.ReadUInt32BigEndian(bytes[24..]));
        if (request.Command == NbdCommand.Write && request.Length > maxWritePayload)
        {
            NbdThrow.PayloadTooLarge(request.Length, maxWritePayload);
        }

        buffer = buffer.Slice(NbdSizes.RequestHeader);
        return true;
    }

    /// <summary>Writes a request header (used by tests and tools that act as a client).</summary>
    public static void WriteRequest(Span<byte> destination, in NbdRequest request)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.RequestMagic);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)request.Flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)request.Command);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], request.Handle);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], request.Offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[24..], request.Length);
    }

    /// <summary>Writes a simple reply header (<see cref="NbdSizes.SimpleReplyHeader"/> bytes); READ data follows it.</summary>
    public static void WriteSimpleReply(Span<byte> destination, NbdError error, ulong handle)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], (uint)error);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], handle);
    }

    /// <summary>Writes a structured chunk header (<see cref="NbdSizes.StructuredReplyHeader"/> bytes).</summary>
    public static void WriteChunkHeader(Span<byte> destination, NbdReplyFlags flags, NbdReplyType type, ulong handle, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)type);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], handle);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], length);
    }

    /// <summary>Bytes before the data of an OFFSET_DATA chunk: chunk header plus the 64-bit offset.</summary>
    public const int OffsetDataHeader = NbdSizes.StructuredReplyHeader + 8;

    /// <summary>Writes the header of a final OFFSET_DATA chunk; <paramref name="dataLength"/> bytes of data follow.</summary>
    public static void WriteOffsetDataHeader(Span<byte> destination, ulong handle, ulong offset, int dataLength)
    {
        WriteChunkHeader(destination, NbdReplyFlags.Done, NbdReplyType.OffsetData, handle, (uint)(8 + dataLength));
        BinaryPrimitives.WriteUInt64BigEndian(destination[NbdSizes.StructuredReplyHeader..], offset);
    }

    /// <summary>Size of a final NBD_REPLY_TYPE_ERROR chunk carrying <paramref name="message"/> (truncated to fit).</summary>
    public static int ErrorChunkLength(string message) =>
        NbdSizes.StructuredReplyHeader + 6 + Math.Min(Encoding.UTF8.GetByteCount(message), MaxErrorMessage);

    /// <summary>Longest error message we put into an error chunk.</summary>
    public const int MaxErrorMessage = 1024;

    /// <summary>Writes a final NBD_REPLY_TYPE_ERROR chunk; returns its length.</summary>
    public static int WriteErrorChunk(Span<byte> destination, ulong handle, NbdError error, string message)
    {
        var body = destination[(NbdSizes.StructuredReplyHeader + 6)..];
        int messageLength;
        if (Encoding.UTF8.GetByteCount(message) <= Math.Min(body.Length, MaxErrorMessage))
        {
            messageLength = Encoding.UTF8.GetBytes(message, body);
        }
        else
        {
            var bytes = Utf8Truncated(message, Math.Min(body.Length, MaxErrorMessage));
            bytes.CopyTo(body);
            messageLength = bytes.Length;
        }

        WriteChunkHeader(destination, NbdReplyFlags.Done, NbdReplyType.Error, handle, (uint)(6 + messageLength));
        BinaryPrimitives.WriteUInt32BigEndian(destination[NbdSizes.StructuredReplyHeader..], (uint)error);
        BinaryPrimitives.WriteUInt16BigEndian(destination[(NbdSizes.StructuredReplyHeader + 4)..], (ushort)messageLength);
        return NbdSizes.StructuredReplyHeader + 6 + messageLength;
    }

    /// <summary>Most descriptors we send in one BLOCK_STATUS chunk; the client asks again for the rest.</summary>
    public const int MaxBlockStatusDescriptors = 2048;

    /// <summary>Upper bound of the size of a BLOCK_STATUS chunk for <paramref name="extentCount"/> extents.</summary>
    public static int BlockStatusChunkCapacity(int extentCount) =>
        NbdSizes.StructuredReplyHeader + 4 + (8 * Math.Clamp(extentCount, 1, MaxBlockStatusDescriptors));

    /// <summary>
    /// Writes a final BLOCK_STATUS chunk for one context. Extents are clipped to <paramref name="requestLength"/>,
    /// neighbours with the same status merged, and at least one descriptor is sent (status 0 over the whole
    /// request when the device reported nothing, which the spec allows). Returns the chunk length.
    /// </summary>
    public static int WriteBlockStatus(Span<byte> destination, ulong handle, uint contextId, IReadOnlyList<BlockExtent> extents, uint requestLength, bool requestOne)
    {
        var descriptors = destination[(NbdSizes.StructuredReplyHeader + 4)..];
        var capacity = Math.Min(descriptors.Length / 8, requestOne ? 1 : MaxBlockStatusDescriptors);
        var count = 0;
        long covered = 0;
        uint lastFlags = uint.MaxValue;
        for (var i = 0; i < extents.Count && covered < requestLength; i++)
        {
            var extent = extents[i];
            if (extent.Length <= 0)
            {
                continue;
            }

            var length = (uint)Math.Min(extent.Length, requestLength - covered);
            var flags = (uint)extent.Kind & (uint)(NbdAllocationFlags.Hole | NbdAllocationFlags.Zero);
            if (count > 0 && flags == lastFlags)
            {
                var merged = BinaryPrimitives.ReadUInt32BigEndian(descriptors[((count - 1) * 8)..]) + length;
                BinaryPrimitives.WriteUInt32BigEndian(descriptors[((count - 1) * 8)..], merged);
            }
            else
            {
                if (count == capacity)
                {
                    break;
                }

                BinaryPrimitives.WriteUInt32BigEndian(descriptors[(count * 8)..], length);
                BinaryPrimitives.WriteUInt32BigEndian(descriptors[((count * 8) + 4)..], flags);
                lastFlags = flags;
                count++;
            }

            covered += length;
        }

        if (count == 0)
        {
            BinaryPrimitives.WriteUInt32BigEndian(descriptors, requestLength);
            BinaryPrimitives.WriteUInt32BigEndian(descriptors[4..], (uint)NbdAllocationFlags.Data);
            count = 1;
        }

        var payload = 4 + (count * 8);
        WriteChunkHeader(destination, NbdReplyFlags.Done, NbdReplyType.BlockStatus, handle, (uint)payload);
        BinaryPrimitives.WriteUInt32BigEndian(destination[NbdSizes.StructuredReplyHeader..], contextId);
        return NbdSizes.StructuredReplyHeader + payload;
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Returns the first <paramref name="scratch"/>.Length bytes without consuming them, copying only when they span segments.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryPeek(in ReadOnlySequence<byte> buffer, Span<byte> scratch, out ReadOnlySpan<byte> bytes, out int bytesNeeded)
    {
        if (buffer.Length < scratch.Length)
        {
            bytes = default;
            bytesNeeded = scratch.Length - (int)buffer.Length;
            return false;
        }

        bytesNeeded = 0;
        var first = buffer.FirstSpan;
        if (first.Length >= scratch.Length)
        {
            bytes = first[..scratch.Length];
            return true;
        }

        buffer.Slice(0, scratch.Length).CopyTo(scratch);
        bytes = scratch;
        return true;
    }

    private static bool TryReadString32(ref ReadOnlySpan<byte> data, out string value)
    {
        value = string.Empty;
        if (data.Length < 4)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (length > (uint)(data.Length - 4) || !TryDecodeString(data.Slice(4, (int)length), out var decoded))
        {
            return false;
        }

        value = decoded;
        data = data[(4 + (int)length)..];
        return true;
    }

    private static byte[] Utf8Truncated(string value, int maxBytes = NbdSizes.MaxString)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        if (bytes.Length <= maxBytes)
        {
            return bytes;
        }

        // Cut on a character boundary so the client still gets valid UTF-8.
        var cut = maxBytes;
        while (cut > 0 && (bytes[cut] & 0xC0) == 0x80)
        {
            cut--;
        }

        return bytes[..cut];
    }
}

/// <summary>Block-size constraints advertised with NBD_INFO_BLOCK_SIZE.</summary>
public readonly record struct NbdBlockSizes(uint Minimum, uint Preferred, uint Maximum)
{
    /// <summary>
    /// Sizes of <paramref name="device"/>, made to satisfy the spec (minimum a power of two up to 64 KiB,
    /// preferred a power of two at least the minimum, maximum a multiple of the minimum) and capped by the
    /// server's own request limit.
    /// </summary>
    public static NbdBlockSizes For(IBlockDevice device, int serverLimit)
    {
        var minimum = (uint)Math.Clamp(device.MinimumBlockSize, 1, 64 * 1024);
        minimum = System.Numerics.BitOperations.RoundUpToPowerOf2(minimum);
        var preferred = System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(device.PreferredBlockSize, (int)minimum));
        var maximum = (uint)Math.Min(Math.Max(device.MaximumRequestSize, (int)minimum), serverLimit);
        maximum = Math.Max(maximum / minimum * minimum, minimum);
        return new NbdBlockSizes(minimum, preferred, maximum);
    }
}

/// <summary>Throw helpers, kept out of line so the parsing fast paths stay small.</summary>
internal static class NbdThrow
{
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void BadRequestMagic(uint magic) =>
        throw new NbdProtocolException($"bad request magic 0x{magic:x8} (expected 0x{NbdMagic.RequestMagic:x8})");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void BadOptionMagic(ulong magic) =>
        throw new NbdProtocolException($"bad option magic 0x{magic:x16} (expected IHAVEOPT)");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void OptionTooLong(uint option, uint length, int limit) =>
        throw new NbdProtocolException($"option {option} carries {length} bytes, more than the {limit} this server accepts");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void PayloadTooLarge(uint length, uint limit) =>
        throw new NbdProtocolException($"write payload of {length} bytes exceeds the hard limit of {limit}");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void UnknownClientFlags(uint flags) =>
        throw new NbdProtocolException($"client flags 0x{flags:x8} include bits the server did not offer");
}
