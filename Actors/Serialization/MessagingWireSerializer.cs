using System.Runtime.Serialization;
using Akka.Actor;
using Akka.Serialization;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Serialization;

/// <summary>
/// A compact binary format for the reliable messaging layer's per-call envelopes (deliver, status, drop, drop
/// confirmation and their batches). On Hyperion with version tolerance these cost more than the lock traffic they
/// carry: a batch of two delivers and a drop was ~1,500 bytes and ~70 µs to serialize and read back on this machine,
/// and a lock+unlock cycle on another node moves about four such batches, while the lock messages inside them take
/// ~1 µs (<see cref="LockWireSerializer"/>). Here an envelope is a one-letter manifest and its fields in order; inside
/// a batch a channel id equal to the previous one is written as one byte. The layout is positional: a field added to
/// one of these records needs a new manifest (and a cluster must not mix nodes with different layouts).
/// </summary>
public sealed class MessagingWireSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
{
    /// <summary>Fixed serializer id, next to <see cref="LockWireSerializer.SerializerId"/>.</summary>
    public const int SerializerId = 743;

    /// <summary>The envelope types this serializer is bound to (the layer's rarer messages stay on Hyperion).</summary>
    public static readonly IReadOnlyList<Type> Types =
        [typeof(HolderDeliver), typeof(HolderStatus), typeof(HolderDrop), typeof(HolderDropConfirmed), typeof(HolderBatch), typeof(OutboxBatch)];

    private const string Deliver = "d";
    private const string Status = "s";
    private const string Drop = "p";
    private const string Confirm = "c";
    private const string Batch = "b";
    private const string Replies = "o";

    /// <summary>Channel marker inside a message: the same channel as the previous envelope (or the batch's).</summary>
    private const byte SameChannel = 0;

    /// <summary>Channel marker inside a message: a channel id follows.</summary>
    private const byte NewChannel = 1;

    private static readonly Dictionary<string, string> ByTypeName = new()
    {
        [Qualified(typeof(HolderDeliver))] = Deliver,
        [Qualified(typeof(HolderStatus))] = Status,
        [Qualified(typeof(HolderDrop))] = Drop,
        [Qualified(typeof(HolderDropConfirmed))] = Confirm,
        [Qualified(typeof(HolderBatch))] = Batch,
        [Qualified(typeof(OutboxBatch))] = Replies,
    };

    public MessagingWireSerializer(ExtendedActorSystem system, Akka.Configuration.Config config) : this(system)
    {
    }

    public override int Identifier => SerializerId;

    public override string Manifest(object o) => o switch
    {
        HolderDeliver => Deliver,
        HolderStatus => Status,
        HolderDrop => Drop,
        HolderDropConfirmed => Confirm,
        HolderBatch => Batch,
        OutboxBatch => Replies,
        _ => throw new SerializationException($"{nameof(MessagingWireSerializer)} cannot serialize {o?.GetType().FullName ?? "null"}"),
    };

    public override byte[] ToBinary(object obj)
    {
        using var stream = new MemoryStream(128);
        using (var w = new BinaryWriter(stream))
        {
            string? channel = null;
            switch (obj)
            {
                case HolderDeliver m:
                    WriteDeliver(w, m, ref channel);
                    break;
                case HolderStatus m:
                    WriteStatus(w, m, ref channel);
                    break;
                case HolderDrop m:
                    WriteChannel(w, m.ChannelId, ref channel);
                    w.Write(m.Seq);
                    break;
                case HolderDropConfirmed m:
                    WriteConfirm(w, m, ref channel);
                    break;
                case HolderBatch m:
                    WriteChannel(w, m.ChannelId, ref channel);
                    w.Write(m.Delivers.Count);
                    foreach (var deliver in m.Delivers)
                    {
                        WriteDeliver(w, deliver, ref channel);
                    }

                    w.Write(m.Drops.Count);
                    foreach (var drop in m.Drops)
                    {
                        WriteChannel(w, drop.ChannelId, ref channel);
                        w.Write(drop.Seq);
                    }

                    break;
                case OutboxBatch m:
                    w.Write(m.Statuses.Count);
                    foreach (var status in m.Statuses)
                    {
                        WriteStatus(w, status, ref channel);
                    }

                    w.Write(m.Confirms.Count);
                    foreach (var confirm in m.Confirms)
                    {
                        WriteConfirm(w, confirm, ref channel);
                    }

                    break;
                default:
                    throw new SerializationException($"{nameof(MessagingWireSerializer)} cannot serialize {obj?.GetType().FullName ?? "null"}");
            }
        }

        return stream.ToArray();
    }

    public override object FromBinary(byte[] bytes, string manifest)
    {
        try
        {
            // Akka's FromBinary(bytes, type) passes the type's qualified name instead of our manifest.
            manifest = ByTypeName.GetValueOrDefault(manifest, manifest);
            using var r = new BinaryReader(new MemoryStream(bytes, writable: false));
            string? channel = null;
            object message;
            switch (manifest)
            {
                case Deliver:
                    message = ReadDeliver(r, ref channel);
                    break;
                case Status:
                    message = ReadStatus(r, ref channel);
                    break;
                case Drop:
                    message = new HolderDrop(ReadChannel(r, ref channel), r.ReadInt64());
                    break;
                case Confirm:
                    message = ReadConfirm(r, ref channel);
                    break;
                case Batch:
                {
                    var batchChannel = ReadChannel(r, ref channel);
                    var deliversCount = ReadCount(r);
                    var delivers = new List<HolderDeliver>(deliversCount);
                    for (var i = 0; i < deliversCount; i++)
                    {
                        delivers.Add(ReadDeliver(r, ref channel));
                    }

                    var dropsCount = ReadCount(r);
                    var drops = new List<HolderDrop>(dropsCount);
                    for (var i = 0; i < dropsCount; i++)
                    {
                        drops.Add(new HolderDrop(ReadChannel(r, ref channel), r.ReadInt64()));
                    }

                    message = new HolderBatch(batchChannel, delivers, drops);
                    break;
                }

                case Replies:
                {
                    var statusesCount = ReadCount(r);
                    var statuses = new List<HolderStatus>(statusesCount);
                    for (var i = 0; i < statusesCount; i++)
                    {
                        statuses.Add(ReadStatus(r, ref channel));
                    }

                    var confirmsCount = ReadCount(r);
                    var confirms = new List<HolderDropConfirmed>(confirmsCount);
                    for (var i = 0; i < confirmsCount; i++)
                    {
                        confirms.Add(ReadConfirm(r, ref channel));
                    }

                    message = new OutboxBatch(statuses, confirms);
                    break;
                }

                default:
                    throw new SerializationException($"{nameof(MessagingWireSerializer)}: unknown manifest '{manifest}' ({bytes.Length} bytes)");
            }

            if (r.BaseStream.Position != bytes.Length)
            {
                throw new SerializationException($"{nameof(MessagingWireSerializer)}: {bytes.Length - r.BaseStream.Position} bytes left over after a '{manifest}' message");
            }

            return message;
        }
        catch (Exception ex) when (ex is EndOfStreamException or ArgumentException or IOException or FormatException)
        {
            throw new SerializationException($"{nameof(MessagingWireSerializer)}: cannot read a '{manifest}' message from {bytes.Length} bytes: {ex.Message}", ex);
        }
    }

    private static void WriteDeliver(BinaryWriter w, HolderDeliver m, ref string? channel)
    {
        WriteChannel(w, m.ChannelId, ref channel);
        w.Write(m.Seq);
        w.Write(m.Floor);
        w.Write(m.RunHorizon);
        WriteGuid(w, m.KnownIncarnation);
        w.Write(m.MayHaveRun);
        w.Write(m.Attempt);
        w.Write(m.TargetId);
        WritePayload(w, m.Payload);
    }

    private static HolderDeliver ReadDeliver(BinaryReader r, ref string? channel) =>
        new(ReadChannel(r, ref channel), r.ReadInt64(), r.ReadInt64(), r.ReadInt64(), ReadGuid(r), r.ReadBoolean(), r.ReadInt32(), r.ReadString(), ReadPayload(r));

    private static void WriteStatus(BinaryWriter w, HolderStatus m, ref string? channel)
    {
        WriteChannel(w, m.ChannelId, ref channel);
        w.Write(m.Seq);
        WriteGuid(w, m.HolderIncarnation);
        WritePayload(w, m.Status);
    }

    private static HolderStatus ReadStatus(BinaryReader r, ref string? channel) =>
        new(ReadChannel(r, ref channel), r.ReadInt64(), ReadGuid(r), ReadPayload(r));

    private static void WriteConfirm(BinaryWriter w, HolderDropConfirmed m, ref string? channel)
    {
        WriteChannel(w, m.ChannelId, ref channel);
        w.Write(m.Seq);
        WriteGuid(w, m.HolderIncarnation);
    }

    private static HolderDropConfirmed ReadConfirm(BinaryReader r, ref string? channel) =>
        new(ReadChannel(r, ref channel), r.ReadInt64(), ReadGuid(r));

    private static void WriteChannel(BinaryWriter w, string channelId, ref string? previous)
    {
        ArgumentNullException.ThrowIfNull(channelId);
        if (string.Equals(channelId, previous, StringComparison.Ordinal))
        {
            w.Write(SameChannel);
            return;
        }

        w.Write(NewChannel);
        w.Write(channelId);
        previous = channelId;
    }

    private static string ReadChannel(BinaryReader r, ref string? previous)
    {
        switch (r.ReadByte())
        {
            case SameChannel when previous is not null:
                return previous;
            case NewChannel:
                previous = r.ReadString();
                return previous;
            case var marker:
                throw new SerializationException($"{nameof(MessagingWireSerializer)}: bad channel marker {marker}");
        }
    }

    private static void WritePayload(BinaryWriter w, SerializedPayload payload)
    {
        w.Write(payload.SerializerId);
        w.Write(payload.Manifest);
        w.Write(payload.Bytes.Length);
        w.Write(payload.Bytes);
    }

    private static SerializedPayload ReadPayload(BinaryReader r)
    {
        var serializerId = r.ReadInt32();
        var manifest = r.ReadString();
        var length = r.ReadInt32();
        if (length < 0 || length > r.BaseStream.Length - r.BaseStream.Position)
        {
            throw new SerializationException($"{nameof(MessagingWireSerializer)}: bad payload length {length}");
        }

        return new SerializedPayload(serializerId, manifest, r.ReadBytes(length));
    }

    private static int ReadCount(BinaryReader r)
    {
        // Every element takes at least two bytes, so a count above the bytes left is a lie, not a big batch.
        var count = r.ReadInt32();
        if (count < 0 || count > r.BaseStream.Length - r.BaseStream.Position)
        {
            throw new SerializationException($"{nameof(MessagingWireSerializer)}: bad element count {count}");
        }

        return count;
    }

    private static void WriteGuid(BinaryWriter w, Guid value)
    {
        Span<byte> bytes = stackalloc byte[16];
        value.TryWriteBytes(bytes);
        w.Write(bytes);
    }

    private static Guid ReadGuid(BinaryReader r)
    {
        Span<byte> bytes = stackalloc byte[16];
        r.BaseStream.ReadExactly(bytes);
        return new Guid(bytes);
    }

    private static string Qualified(Type type) => $"{type.FullName}, {type.Assembly.GetName().Name}";
}
