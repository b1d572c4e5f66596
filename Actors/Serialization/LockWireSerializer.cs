using System.Runtime.Serialization;
using Akka.Actor;
using Akka.Serialization;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Serialization;

/// <summary>
/// A compact binary format for the DLM messages on the lock+unlock path (request, convert, unlock,
/// cancel, completion, blocking AST). Hyperion with version tolerance writes type and field names:
/// ~600 bytes and ~18 µs (serialize + deserialize, measured on this machine) for one request or
/// completion, three of which cross the wire per remote cycle. Here a message is a one-letter manifest
/// and a few dozen bytes. <see cref="LockTrafficAccepted"/> is here too: it is the reliable layer's status of every
/// lock command, serialized by the receiving holder and read back by the sender once per command. The layout is positional: a field added to one of these records needs a new
/// manifest (and both must be read while a cluster runs mixed versions).
/// </summary>
public sealed class LockWireSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
{
    /// <summary>Fixed serializer id, next to <see cref="LockstepHyperionSerializer.SerializerId"/>.</summary>
    public const int SerializerId = 742;

    /// <summary>The message types this serializer is bound to (the rest of the protocol stays on Hyperion).</summary>
    public static readonly IReadOnlyList<Type> Types = [typeof(LockRequest), typeof(ConvertLock), typeof(UnlockLock), typeof(CancelLock), typeof(LockCompleted), typeof(BlockingAst), typeof(LockTrafficAccepted)];

    private const string Request = "R";
    private const string Convert = "V";
    private const string Unlock = "U";
    private const string Cancel = "C";
    private const string Completed = "D";
    private const string Bast = "B";
    private const string Accepted = "A";

    private static readonly Dictionary<string, string> ByTypeName = new()
    {
        [Qualified(typeof(LockRequest))] = Request,
        [Qualified(typeof(ConvertLock))] = Convert,
        [Qualified(typeof(UnlockLock))] = Unlock,
        [Qualified(typeof(CancelLock))] = Cancel,
        [Qualified(typeof(LockCompleted))] = Completed,
        [Qualified(typeof(BlockingAst))] = Bast,
        [Qualified(typeof(LockTrafficAccepted))] = Accepted,
    };

    public LockWireSerializer(ExtendedActorSystem system, Akka.Configuration.Config config) : this(system)
    {
    }

    public override int Identifier => SerializerId;

    public override string Manifest(object o) => o switch
    {
        LockRequest => Request,
        ConvertLock => Convert,
        UnlockLock => Unlock,
        CancelLock => Cancel,
        LockCompleted => Completed,
        BlockingAst => Bast,
        LockTrafficAccepted => Accepted,
        _ => throw new SerializationException($"{nameof(LockWireSerializer)} cannot serialize {o?.GetType().FullName ?? "null"}"),
    };

    public override byte[] ToBinary(object obj)
    {
        using var stream = new MemoryStream(64);
        using (var w = new BinaryWriter(stream))
        {
            switch (obj)
            {
                case LockRequest m:
                    w.Write(m.EntityId);
                    w.Write(m.LockId);
                    w.Write(m.Owner.NodeId);
                    w.Write(m.Owner.Slot);
                    w.Write(m.Owner.Session.ToByteArray());
                    w.Write((byte)m.Mode);
                    w.Write((uint)m.Flags);
                    w.Write(m.LvbLength);
                    w.Write(m.TimeoutMs);
                    break;
                case ConvertLock m:
                    w.Write(m.EntityId);
                    w.Write(m.LockId);
                    w.Write((byte)m.Mode);
                    w.Write((uint)m.Flags);
                    WriteBytes(w, m.Lvb);
                    w.Write(m.TimeoutMs);
                    break;
                case UnlockLock m:
                    w.Write(m.EntityId);
                    w.Write(m.LockId);
                    w.Write((uint)m.Flags);
                    WriteBytes(w, m.Lvb);
                    w.Write(m.AnsweredByClient);
                    break;
                case CancelLock m:
                    w.Write(m.EntityId);
                    w.Write(m.LockId);
                    break;
                case LockCompleted m:
                    w.Write(m.EntityId);
                    w.Write(m.LockId);
                    w.Write((byte)m.Operation);
                    w.Write((byte)m.Status);
                    w.Write((byte)m.GrantedMode);
                    WriteBytes(w, m.Lvb);
                    w.Write(m.LvbSeq);
                    w.Write((byte)m.Flags);
                    break;
                case BlockingAst m:
                    w.Write(m.EntityId);
                    w.Write(m.LockId);
                    w.Write((byte)m.BlockedMode);
                    break;
                case LockTrafficAccepted m:
                    w.Write(m.Applied);
                    break;
                default:
                    throw new SerializationException($"{nameof(LockWireSerializer)} cannot serialize {obj?.GetType().FullName ?? "null"}");
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
            object message = manifest switch
            {
                Request => new LockRequest(r.ReadString(), r.ReadInt64(), new LockOwner(r.ReadString(), r.ReadInt32(), new Guid(r.ReadBytes(16))), (LockMode)r.ReadByte(), (LockFlags)r.ReadUInt32(), r.ReadInt32(), r.ReadInt64()),
                Convert => new ConvertLock(r.ReadString(), r.ReadInt64(), (LockMode)r.ReadByte(), (LockFlags)r.ReadUInt32(), ReadBytes(r), r.ReadInt64()),
                Unlock => new UnlockLock(r.ReadString(), r.ReadInt64(), (LockFlags)r.ReadUInt32(), ReadBytes(r), r.ReadBoolean()),
                Cancel => new CancelLock(r.ReadString(), r.ReadInt64()),
                Completed => new LockCompleted(r.ReadString(), r.ReadInt64(), (LockOperation)r.ReadByte(), (LockStatus)r.ReadByte(), (LockMode)r.ReadByte(), ReadBytes(r), r.ReadInt64(), (LockResultFlags)r.ReadByte()),
                Bast => new BlockingAst(r.ReadString(), r.ReadInt64(), (LockMode)r.ReadByte()),
                Accepted => r.ReadBoolean() ? LockTrafficAccepted.Delivered : LockTrafficAccepted.Skipped,
                _ => throw new SerializationException($"{nameof(LockWireSerializer)}: unknown manifest '{manifest}' ({bytes.Length} bytes)"),
            };
            if (r.BaseStream.Position != bytes.Length)
            {
                throw new SerializationException($"{nameof(LockWireSerializer)}: {bytes.Length - r.BaseStream.Position} bytes left over after a '{manifest}' message");
            }

            return message;
        }
        catch (Exception ex) when (ex is EndOfStreamException or ArgumentException or IOException or FormatException)
        {
            throw new SerializationException($"{nameof(LockWireSerializer)}: cannot read a '{manifest}' message from {bytes.Length} bytes: {ex.Message}", ex);
        }
    }

    private static string Qualified(Type type) => $"{type.FullName}, {type.Assembly.GetName().Name}";

    private static void WriteBytes(BinaryWriter w, byte[]? bytes)
    {
        // -1 keeps "no LVB" apart from an empty one.
        w.Write(bytes?.Length ?? -1);
        if (bytes is not null)
        {
            w.Write(bytes);
        }
    }

    private static byte[]? ReadBytes(BinaryReader r)
    {
        var length = r.ReadInt32();
        if (length < -1 || length > r.BaseStream.Length - r.BaseStream.Position)
        {
            throw new SerializationException($"{nameof(LockWireSerializer)}: bad byte-array length {length}");
        }

        return length < 0 ? null : r.ReadBytes(length);
    }
}
