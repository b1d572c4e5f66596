using System.Buffers.Binary;
using System.Text;

namespace Lockstep.Actors.Messaging.Link;

/// <summary>The peer link's byte stream broke a rule: the connection is closed, nothing it carried is delivered after it.</summary>
public sealed class PeerLinkProtocolException(string message) : Exception(message);

/// <summary>Who opens a link connection to whom: the first bytes of every connection (client to server).</summary>
/// <param name="FromAddress">The connecting node's Akka address.</param>
/// <param name="FromUid">The connecting node's incarnation.</param>
/// <param name="ToAddress">The Akka address the client means to reach.</param>
/// <param name="ToUid">The incarnation the client means to reach (from <c>PeerLinkEndpoint</c>).</param>
public sealed record PeerLinkHello(string FromAddress, long FromUid, string ToAddress, long ToUid);

/// <summary>One decoded frame of a link connection.</summary>
public abstract record PeerLinkFrame;

/// <summary>Names an actor path once; later frames refer to it by <paramref name="Id"/>.</summary>
public sealed record PeerLinkDefine(uint Id, string Path) : PeerLinkFrame;

/// <summary>A message for the actor <paramref name="RecipientId"/> from <paramref name="SenderId"/> (0: no sender).</summary>
public sealed record PeerLinkMessage(uint RecipientId, uint SenderId, int SerializerId, string Manifest, byte[] Payload) : PeerLinkFrame;

/// <summary>
/// The peer link's wire format. A connection carries one direction only: the client sends <see cref="PeerLinkHello"/>,
/// the server answers one byte (<see cref="Accepted"/>, or <see cref="Refused"/> and a reason) and from then on the client
/// sends frames: a 4-byte little-endian length of the rest, a kind byte, then either a path definition (id, UTF-8
/// path) or a message (recipient id, sender id, serializer id, manifest, payload). Paths travel once per connection;
/// TCP's order makes a definition arrive before its first use. Pure: no sockets here.
/// </summary>
public static class PeerLinkWire
{
    /// <summary>The first four bytes of a connection.</summary>
    public static ReadOnlySpan<byte> Magic => "LSLK"u8;

    /// <summary>Wire version; a server refuses any other.</summary>
    public const byte Version = 1;

    /// <summary>The server's answer: the connection may carry frames.</summary>
    public const byte Accepted = 1;

    /// <summary>The server's answer: refused; a 2-byte length and a UTF-8 reason follow, then the server closes.</summary>
    public const byte Refused = 2;

    /// <summary>Largest frame (length field) a reader accepts; larger messages go over Akka.Remote.</summary>
    public const int MaxFrame = 16 << 20;

    /// <summary>Longest actor path or Akka address on the wire.</summary>
    public const int MaxPath = 4096;

    /// <summary>
    /// Most path ids one connection may define: a sender past it opens a new connection with fresh tables, so the refs of
    /// stopped actors (holders of past incarnations) do not pile up on either side.
    /// </summary>
    public const uint MaxIds = 1 << 16;

    /// <summary>Whether <paramref name="path"/> fits a path definition.</summary>
    public static bool PathFits(string path) => Encoding.UTF8.GetByteCount(path) <= MaxPath;

    /// <summary>Whether a message with this manifest and payload fits one frame.</summary>
    public static bool MessageFits(string manifest, int payloadLength)
    {
        var manifestBytes = Encoding.UTF8.GetByteCount(manifest);
        return manifestBytes <= byte.MaxValue && MessageHeaderBytes + manifestBytes + payloadLength <= MaxFrame;
    }

    private const byte DefineKind = 1;
    private const byte MessageKind = 2;

    /// <summary>A message frame's body before its manifest: kind, recipient id, sender id, serializer id, manifest length.</summary>
    private const int MessageHeaderBytes = 1 + 4 + 4 + 4 + 1;

    /// <summary>Appends the client's opening bytes.</summary>
    public static void WriteHello(LinkBuffer to, PeerLinkHello hello)
    {
        ArgumentNullException.ThrowIfNull(to);
        ArgumentNullException.ThrowIfNull(hello);
        to.Write(Magic);
        to.WriteByte(Version);
        WriteShortString(to, hello.FromAddress);
        to.WriteInt64(hello.FromUid);
        WriteShortString(to, hello.ToAddress);
        to.WriteInt64(hello.ToUid);
    }

    /// <summary>
    /// Reads a complete hello from the start of <paramref name="data"/>: false (nothing consumed) if more bytes are
    /// needed; throws <see cref="PeerLinkProtocolException"/> when the bytes cannot be a hello.
    /// </summary>
    public static bool TryReadHello(ReadOnlySpan<byte> data, out PeerLinkHello? hello, out int consumed)
    {
        hello = null;
        consumed = 0;
        var check = Math.Min(data.Length, Magic.Length);
        if (!data[..check].SequenceEqual(Magic[..check]))
        {
            throw new PeerLinkProtocolException("not a Lockstep peer link (bad magic)");
        }

        if (data.Length < Magic.Length + 1)
        {
            return false;
        }

        if (data[Magic.Length] != Version)
        {
            throw new PeerLinkProtocolException($"peer link version {data[Magic.Length]} is not {Version}");
        }

        var at = Magic.Length + 1;
        if (!TryReadShortString(data, ref at, out var from) || at + 8 > data.Length)
        {
            return false;
        }

        var fromUid = BinaryPrimitives.ReadInt64LittleEndian(data[at..]);
        at += 8;
        if (!TryReadShortString(data, ref at, out var to) || at + 8 > data.Length)
        {
            return false;
        }

        var toUid = BinaryPrimitives.ReadInt64LittleEndian(data[at..]);
        at += 8;
        hello = new PeerLinkHello(from!, fromUid, to!, toUid);
        consumed = at;
        return true;
    }

    /// <summary>Appends the server's refusal with its reason (cut to the path limit).</summary>
    public static void WriteRefusal(LinkBuffer to, string reason)
    {
        ArgumentNullException.ThrowIfNull(to);
        to.WriteByte(Refused);
        WriteShortString(to, reason.Length > 512 ? reason[..512] : reason);
    }

    /// <summary>Appends a path definition.</summary>
    public static void WriteDefine(LinkBuffer to, uint id, string path)
    {
        ArgumentNullException.ThrowIfNull(to);
        var bytes = Encoding.UTF8.GetByteCount(path);
        if (bytes > MaxPath)
        {
            throw new ArgumentException($"actor path longer than {MaxPath} bytes", nameof(path));
        }

        to.WriteInt32(1 + 4 + bytes);
        to.WriteByte(DefineKind);
        to.WriteUInt32(id);
        to.WriteUtf8(path, bytes);
    }

    /// <summary>Appends a message; <paramref name="manifest"/> is at most 255 UTF-8 bytes.</summary>
    public static void WriteMessage(LinkBuffer to, uint recipientId, uint senderId, int serializerId, string manifest, ReadOnlySpan<byte> payload)
    {
        ArgumentNullException.ThrowIfNull(to);
        var manifestBytes = Encoding.UTF8.GetByteCount(manifest);
        if (manifestBytes > byte.MaxValue)
        {
            throw new ArgumentException("manifest longer than 255 bytes", nameof(manifest));
        }

        var length = MessageHeaderBytes + manifestBytes + payload.Length;
        if (length > MaxFrame)
        {
            throw new ArgumentException($"message of {payload.Length} bytes is over the link's frame limit", nameof(payload));
        }

        to.WriteInt32(length);
        to.WriteByte(MessageKind);
        to.WriteUInt32(recipientId);
        to.WriteUInt32(senderId);
        to.WriteInt32(serializerId);
        to.WriteByte((byte)manifestBytes);
        to.WriteUtf8(manifest, manifestBytes);
        to.Write(payload);
    }

    /// <summary>Bytes a message frame takes on the wire (to keep it under <see cref="MaxFrame"/> before writing).</summary>
    public static int MessageFrameLength(string manifest, int payloadLength) => 4 + MessageHeaderBytes + Encoding.UTF8.GetByteCount(manifest) + payloadLength;

    /// <summary>
    /// Reads one complete frame from the start of <paramref name="data"/>: false (nothing consumed) if more bytes are
    /// needed; throws <see cref="PeerLinkProtocolException"/> on a frame that breaks the format.
    /// </summary>
    public static bool TryReadFrame(ReadOnlySpan<byte> data, out PeerLinkFrame? frame, out int consumed)
    {
        frame = null;
        consumed = 0;
        if (data.Length < 4)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (length < 1 || length > MaxFrame)
        {
            throw new PeerLinkProtocolException($"frame length {length} is outside 1..{MaxFrame}");
        }

        if (data.Length < 4 + length)
        {
            return false;
        }

        var body = data.Slice(4, length);
        frame = body[0] switch
        {
            DefineKind => ReadDefine(body),
            MessageKind => ReadMessage(body),
            var kind => throw new PeerLinkProtocolException($"unknown frame kind {kind}"),
        };
        consumed = 4 + length;
        return true;
    }

    private static PeerLinkDefine ReadDefine(ReadOnlySpan<byte> body)
    {
        if (body.Length < 5 || body.Length - 5 > MaxPath)
        {
            throw new PeerLinkProtocolException($"path definition of {body.Length} bytes");
        }

        var id = BinaryPrimitives.ReadUInt32LittleEndian(body[1..]);
        if (id == 0 || id > MaxIds)
        {
            throw new PeerLinkProtocolException($"path id {id} is outside 1..{MaxIds}");
        }

        return new PeerLinkDefine(id, Utf8(body[5..]));
    }

    private static PeerLinkMessage ReadMessage(ReadOnlySpan<byte> body)
    {
        if (body.Length < MessageHeaderBytes)
        {
            throw new PeerLinkProtocolException($"message frame of {body.Length} bytes is shorter than its header");
        }

        var recipient = BinaryPrimitives.ReadUInt32LittleEndian(body[1..]);
        var sender = BinaryPrimitives.ReadUInt32LittleEndian(body[5..]);
        var serializer = BinaryPrimitives.ReadInt32LittleEndian(body[9..]);
        var manifestLength = body[MessageHeaderBytes - 1];
        if (body.Length < MessageHeaderBytes + manifestLength)
        {
            throw new PeerLinkProtocolException("message frame ends inside its manifest");
        }

        var manifest = Utf8(body.Slice(MessageHeaderBytes, manifestLength));
        return new PeerLinkMessage(recipient, sender, serializer, manifest, body[(MessageHeaderBytes + manifestLength)..].ToArray());
    }

    private static string Utf8(ReadOnlySpan<byte> bytes)
    {
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new PeerLinkProtocolException("a path or manifest is not valid UTF-8");
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static void WriteShortString(LinkBuffer to, string value)
    {
        var bytes = Encoding.UTF8.GetByteCount(value);
        if (bytes > MaxPath)
        {
            throw new ArgumentException($"string longer than {MaxPath} bytes", nameof(value));
        }

        to.WriteUInt16((ushort)bytes);
        to.WriteUtf8(value, bytes);
    }

    /// <summary>A 2-byte length and UTF-8 bytes; false when they are not all there yet.</summary>
    internal static bool TryReadShortString(ReadOnlySpan<byte> data, ref int at, out string? value)
    {
        value = null;
        if (at + 2 > data.Length)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadUInt16LittleEndian(data[at..]);
        if (length > MaxPath)
        {
            throw new PeerLinkProtocolException($"string of {length} bytes is over {MaxPath}");
        }

        if (at + 2 + length > data.Length)
        {
            return false;
        }

        value = Utf8(data.Slice(at + 2, length));
        at += 2 + length;
        return true;
    }
}

/// <summary>A growable byte buffer the link writes frames into (one per connection direction, reused).</summary>
public sealed class LinkBuffer(int capacity = 4096)
{
    private byte[] _bytes = new byte[Math.Max(16, capacity)];

    /// <summary>Bytes written so far.</summary>
    public int Length { get; private set; }

    /// <summary>What was written.</summary>
    public ReadOnlyMemory<byte> Written => _bytes.AsMemory(0, Length);

    /// <summary>Forgets what was written (keeps the memory; gives back a very large one).</summary>
    public void Clear()
    {
        Length = 0;
        if (_bytes.Length > 1 << 20)
        {
            _bytes = new byte[4096];
        }
    }

    public void WriteByte(byte value) => Reserve(1)[0] = value;

    public void WriteUInt16(ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(Reserve(2), value);

    public void WriteInt32(int value) => BinaryPrimitives.WriteInt32LittleEndian(Reserve(4), value);

    public void WriteUInt32(uint value) => BinaryPrimitives.WriteUInt32LittleEndian(Reserve(4), value);

    public void WriteInt64(long value) => BinaryPrimitives.WriteInt64LittleEndian(Reserve(8), value);

    public void Write(ReadOnlySpan<byte> bytes) => bytes.CopyTo(Reserve(bytes.Length));

    public void WriteUtf8(string value, int byteCount) => Encoding.UTF8.GetBytes(value, Reserve(byteCount));

    private Span<byte> Reserve(int count)
    {
        if (Length + count > _bytes.Length)
        {
            Array.Resize(ref _bytes, Math.Max(_bytes.Length * 2, Length + count));
        }

        var span = _bytes.AsSpan(Length, count);
        Length += count;
        return span;
    }
}
