using System.Buffers.Binary;
using System.Text;

namespace Lockstep.Contracts.Broadcast;

/// <summary>
/// One round of a broadcast stream: the messages one sender published under one sequence number, in the order every
/// node delivers them. It is what the MESSAGE lock's LVB carries (docs/broadcast.md, "Wire").
/// </summary>
/// <param name="Seq">The round's place in its stream: 1, 2, 3, … with no gaps.</param>
/// <param name="Origin">Node id of the node that published it (a healing round keeps the original origin).</param>
/// <param name="Messages">At least one message.</param>
public sealed record BroadcastRound(long Seq, string Origin, IReadOnlyList<ClusterMessage> Messages);

/// <summary>What the TOKEN lock's LVB says about its stream when the last sender let go of it.</summary>
/// <param name="CompletedSeq">The last round every live node acknowledged.</param>
/// <param name="Dirty">A sender gave the token up without knowing every node processed its last round (its ACK wait timed out): the next holder must gather.</param>
public readonly record struct TokenRecord(long CompletedSeq, bool Dirty);

/// <summary>
/// Binary forms of cluster messages, rounds and token records. Little-endian; strings are a u16 byte count and UTF-8.
/// Decoding never trusts a length: a malformed buffer is a <see cref="FormatException"/>.
/// </summary>
public static class BroadcastWire
{
    /// <summary>"BMSG" little-endian: the first four bytes of a round in a MESSAGE LVB.</summary>
    public const uint RoundMagic = 0x47534D42;

    /// <summary>"BTOK" little-endian: the first four bytes of a TOKEN LVB.</summary>
    public const uint TokenMagic = 0x4B4F5442;

    public const ushort Version = 1;

    /// <summary>Magic, version, flags, seq, message count, body length (then origin and messages).</summary>
    public const int RoundHeaderBytes = 4 + 2 + 2 + 8 + 2 + 4;

    public const int TokenBytes = 4 + 2 + 2 + 8;

    /// <summary>Longest origin or volume name a message carries, in UTF-8 bytes.</summary>
    public const int MaxNameBytes = 255;

    /// <summary>The bytes <paramref name="message"/> takes inside a round (type, length, body).</summary>
    public static int EncodedLength(ClusterMessage message) => 2 + 2 + Body(message).Length;

    /// <summary>The bytes a round of <paramref name="messages"/> from <paramref name="origin"/> takes.</summary>
    public static int RoundLength(string origin, IEnumerable<ClusterMessage> messages) =>
        RoundHeaderBytes + 2 + Utf8(origin).Length + messages.Sum(EncodedLength);

    /// <summary>Encodes a round into an LVB of <paramref name="lvbLength"/> bytes (zero-padded).</summary>
    /// <exception cref="ArgumentException">The round does not fit.</exception>
    public static byte[] EncodeRound(BroadcastRound round, int lvbLength)
    {
        ArgumentNullException.ThrowIfNull(round);
        if (round.Messages.Count is 0 or > ushort.MaxValue)
        {
            throw new ArgumentException($"a round carries 1..{ushort.MaxValue} messages, not {round.Messages.Count}", nameof(round));
        }

        var body = new List<byte>(256);
        AppendString(body, round.Origin);
        foreach (var message in round.Messages)
        {
            var encoded = Body(message);
            if (encoded.Length > ushort.MaxValue)
            {
                throw new ArgumentException($"a {message.Type} message of {encoded.Length} bytes is too long", nameof(round));
            }

            AppendU16(body, (ushort)message.Type);
            AppendU16(body, (ushort)encoded.Length);
            body.AddRange(encoded);
        }

        var total = RoundHeaderBytes + body.Count;
        if (total > lvbLength)
        {
            throw new ArgumentException($"round of {round.Messages.Count} message(s) takes {total} bytes; the LVB has {lvbLength}", nameof(round));
        }

        var buffer = new byte[lvbLength];
        var span = buffer.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(span, RoundMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(span[4..], Version);
        BinaryPrimitives.WriteUInt16LittleEndian(span[6..], 0);
        BinaryPrimitives.WriteInt64LittleEndian(span[8..], round.Seq);
        BinaryPrimitives.WriteUInt16LittleEndian(span[16..], (ushort)round.Messages.Count);
        BinaryPrimitives.WriteInt32LittleEndian(span[18..], body.Count);
        body.CopyTo(buffer, RoundHeaderBytes);
        return buffer;
    }

    /// <summary>
    /// Reads a round from a MESSAGE LVB. An LVB that was never written (no magic) is no round: <c>null</c>.
    /// </summary>
    /// <exception cref="FormatException">The LVB has the magic but not a well-formed round.</exception>
    public static BroadcastRound? DecodeRound(ReadOnlySpan<byte> lvb)
    {
        if (lvb.Length < RoundHeaderBytes || BinaryPrimitives.ReadUInt32LittleEndian(lvb) != RoundMagic)
        {
            return null;
        }

        var version = BinaryPrimitives.ReadUInt16LittleEndian(lvb[4..]);
        if (version != Version)
        {
            throw new FormatException($"round version {version}; this node reads {Version}");
        }

        var seq = BinaryPrimitives.ReadInt64LittleEndian(lvb[8..]);
        int count = BinaryPrimitives.ReadUInt16LittleEndian(lvb[16..]);
        var length = BinaryPrimitives.ReadInt32LittleEndian(lvb[18..]);
        if (seq < 1 || count == 0 || length < 0 || length > lvb.Length - RoundHeaderBytes)
        {
            throw new FormatException($"round header (seq {seq}, {count} messages, {length} bytes) does not fit an LVB of {lvb.Length}");
        }

        var reader = new Reader(lvb.Slice(RoundHeaderBytes, length));
        var origin = reader.String();
        var messages = new List<ClusterMessage>(count);
        for (var i = 0; i < count; i++)
        {
            var type = reader.U16();
            var bodyLength = reader.U16();
            messages.Add(DecodeBody(type, reader.Bytes(bodyLength)));
        }

        if (!reader.AtEnd)
        {
            throw new FormatException("round has bytes after its last message");
        }

        return new BroadcastRound(seq, origin, messages);
    }

    /// <summary>Encodes a token record into an LVB of <paramref name="lvbLength"/> bytes.</summary>
    public static byte[] EncodeToken(TokenRecord token, int lvbLength)
    {
        var buffer = new byte[Math.Max(lvbLength, TokenBytes)];
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, TokenMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(4), Version);
        BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(6), token.Dirty ? (ushort)1 : (ushort)0);
        BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(8), token.CompletedSeq);
        return buffer;
    }

    /// <summary>Reads a token record; <c>null</c> when the LVB was never written or is not one.</summary>
    public static TokenRecord? DecodeToken(ReadOnlySpan<byte> lvb)
    {
        if (lvb.Length < TokenBytes || BinaryPrimitives.ReadUInt32LittleEndian(lvb) != TokenMagic
            || BinaryPrimitives.ReadUInt16LittleEndian(lvb[4..]) != Version)
        {
            return null;
        }

        var completed = BinaryPrimitives.ReadInt64LittleEndian(lvb[8..]);
        return completed < 0 ? null : new TokenRecord(completed, (BinaryPrimitives.ReadUInt16LittleEndian(lvb[6..]) & 1) != 0);
    }

    /// <summary>Encodes one message on its own (type, then the body to the end): what a stored payload holds.</summary>
    public static byte[] EncodeMessage(ClusterMessage message)
    {
        var body = Body(message);
        var buffer = new byte[2 + body.Length];
        BinaryPrimitives.WriteUInt16LittleEndian(buffer, (ushort)message.Type);
        body.CopyTo(buffer, 2);
        return buffer;
    }

    /// <summary>Reads what <see cref="EncodeMessage"/> wrote.</summary>
    public static ClusterMessage DecodeMessage(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < 2)
        {
            throw new FormatException("a stored message needs at least its type");
        }

        return DecodeBody(BinaryPrimitives.ReadUInt16LittleEndian(bytes), bytes[2..]);
    }

    private static byte[] Body(ClusterMessage message)
    {
        var body = new List<byte>(64);
        switch (message)
        {
            case NoopMessage m:
                AppendString(body, m.Origin);
                AppendI64(body, m.Tag);
                break;
            case MetadataUpdatedMessage m:
                AppendString(body, m.Volume);
                AppendI64(body, m.Generation);
                break;
            case ResyncingMessage m:
                AppendString(body, m.Volume);
                AppendI64(body, m.Slot);
                AppendI64(body, m.Lo);
                AppendI64(body, m.Hi);
                break;
            case NewDiskMessage m:
                AppendVolumeLeg(body, m.Volume, m.Leg);
                break;
            case RemoveMessage m:
                AppendVolumeLeg(body, m.Volume, m.Leg);
                break;
            case ReAddMessage m:
                AppendVolumeLeg(body, m.Volume, m.Leg);
                break;
            case BitmapNeedsSyncMessage m:
                AppendString(body, m.Volume);
                AppendI64(body, m.Slot);
                break;
            case ChangeCapacityMessage m:
                AppendString(body, m.Volume);
                AppendI64(body, m.SizeBytes);
                break;
            case VolumeCommandMessage m when VolumeCommandMessage.IsCommand(m.Command):
                AppendString(body, m.Volume);
                break;
            case UnknownClusterMessage m:
                body.AddRange(m.Body);
                break;
            case StoredPayloadReference m:
                body.AddRange(m.Key.ToByteArray());
                AppendI64(body, m.Length);
                break;
            default:
                throw new ArgumentException($"cannot encode {message.GetType().Name} ({message.Type})", nameof(message));
        }

        return [.. body];
    }

    private static ClusterMessage DecodeBody(ushort rawType, ReadOnlySpan<byte> body)
    {
        var r = new Reader(body);
        ClusterMessage message = (ClusterMessageType)rawType switch
        {
            ClusterMessageType.Noop => new NoopMessage(r.String(), r.I64()),
            ClusterMessageType.MetadataUpdated => new MetadataUpdatedMessage(r.String(), r.I64()),
            ClusterMessageType.Resyncing => new ResyncingMessage(r.String(), checked((int)r.I64()), r.I64(), r.I64()),
            ClusterMessageType.NewDisk => new NewDiskMessage(r.String(), r.Guid()),
            ClusterMessageType.Remove => new RemoveMessage(r.String(), r.Guid()),
            ClusterMessageType.ReAdd => new ReAddMessage(r.String(), r.Guid()),
            ClusterMessageType.BitmapNeedsSync => new BitmapNeedsSyncMessage(r.String(), checked((int)r.I64())),
            ClusterMessageType.ChangeCapacity => new ChangeCapacityMessage(r.String(), r.I64()),
            var t when VolumeCommandMessage.IsCommand(t) => new VolumeCommandMessage(t, r.String()),
            (ClusterMessageType)StoredPayloadReference.WireType => new StoredPayloadReference(r.Guid(), checked((int)r.I64())),
            _ => new UnknownClusterMessage(rawType, body.ToArray()),
        };

        if (message is not UnknownClusterMessage && !r.AtEnd)
        {
            throw new FormatException($"{(ClusterMessageType)rawType} message has trailing bytes");
        }

        return message;
    }

    private static byte[] Utf8(string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        return bytes.Length <= MaxNameBytes ? bytes : throw new ArgumentException($"'{value[..Math.Min(value.Length, 40)]}…' is longer than {MaxNameBytes} UTF-8 bytes");
    }

    private static void AppendVolumeLeg(List<byte> body, string volume, Guid leg)
    {
        AppendString(body, volume);
        body.AddRange(leg.ToByteArray());
    }

    private static void AppendString(List<byte> body, string value)
    {
        var bytes = Utf8(value);
        AppendU16(body, (ushort)bytes.Length);
        body.AddRange(bytes);
    }

    private static void AppendU16(List<byte> body, ushort value)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        body.AddRange(b);
    }

    private static void AppendI64(List<byte> body, long value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, value);
        body.AddRange(b);
    }

    /// <summary>A bounds-checked little-endian reader: running past the end is a <see cref="FormatException"/>.</summary>
    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _at;

        public readonly bool AtEnd => _at == _data.Length;

        public ReadOnlySpan<byte> Bytes(int count)
        {
            if (count < 0 || count > _data.Length - _at)
            {
                throw new FormatException($"needs {count} bytes at offset {_at}, has {_data.Length - _at}");
            }

            var slice = _data.Slice(_at, count);
            _at += count;
            return slice;
        }

        public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Bytes(2));

        public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Bytes(8));

        public Guid Guid() => new(Bytes(16));

        public string String() => Encoding.UTF8.GetString(Bytes(U16()));
    }
}
