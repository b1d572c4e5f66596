using System.Runtime.Serialization;
using Akka.Actor;
using Lockstep.Actors.Serialization;
using Lockstep.Contracts.Locking;
using Lockstep.Contracts.Messaging;
using Xunit;

namespace Lockstep.Actors.Tests.Serialization;

/// <summary>The compact format of the messaging layer's per-call envelopes: every field survives, bad bytes fail clearly.</summary>
public sealed class MessagingWireSerializerTests : IDisposable
{
    private const string ChannelA = "lock#17|akka.tcp://lockstep@127.0.0.1:40123|-1234567890123";
    private const string ChannelB = "probe-3|akka.tcp://lockstep@10.0.0.2:4053|77";

    private readonly ActorSystem _system = ActorSystem.Create("messagingwire", SerializationConfig.Hocon);

    private static readonly SerializedPayload Payload = new(742, "R", [1, 2, 3, 250]);
    private static readonly SerializedPayload Empty = new(741, string.Empty, []);

    private static HolderDeliver Deliver(string channel, long seq, bool mayHaveRun = false) =>
        new(channel, seq, seq - 1, long.MaxValue, new Guid("0c0ffee0-0000-4000-8000-0000000000" + seq.ToString("00")), mayHaveRun, (int)seq + 1, "ls/résource-" + seq, seq % 2 == 0 ? Payload : Empty);

    public static TheoryData<object> Messages() =>
    [
        Deliver(ChannelA, 1),
        Deliver(ChannelB, 2, mayHaveRun: true) with { KnownIncarnation = Guid.Empty, Floor = 0, RunHorizon = 0 },
        new HolderStatus(ChannelA, long.MaxValue, Guid.NewGuid(), Payload),
        new HolderDrop(ChannelB, 0),
        new HolderDropConfirmed(ChannelA, 9, Guid.NewGuid()),
        new HolderBatch(ChannelA, [Deliver(ChannelA, 3), Deliver(ChannelA, 4)], [new HolderDrop(ChannelA, 1), new HolderDrop(ChannelA, 2)]),
        new HolderBatch(ChannelA, [], [new HolderDrop(ChannelA, 1)]),
        // Not produced by the batcher (one channel per batch), but the format must not assume it.
        new HolderBatch(ChannelA, [Deliver(ChannelB, 5), Deliver(ChannelA, 6)], [new HolderDrop(ChannelB, 4)]),
        new OutboxBatch([new HolderStatus(ChannelA, 1, Guid.NewGuid(), Payload), new HolderStatus(ChannelB, 2, Guid.NewGuid(), Empty)], [new HolderDropConfirmed(ChannelB, 1, Guid.NewGuid())]),
        new OutboxBatch([], []),
    ];

    [Theory]
    [MemberData(nameof(Messages))]
    public void Every_field_survives_through_the_systems_serialization(object message)
    {
        var serializer = _system.Serialization.FindSerializerFor(message);
        Assert.IsType<MessagingWireSerializer>(serializer);
        var bytes = serializer.ToBinary(message);
        var back = _system.Serialization.Deserialize(bytes, serializer.Identifier, Akka.Serialization.Serialization.ManifestFor(serializer, message));

        Assert.Equal(message.GetType(), back.GetType());
        Assert.Equal(Describe(message), Describe(back));
    }

    [Fact]
    public void A_batch_writes_its_channel_once_and_stays_far_below_hyperions_size()
    {
        var batch = new HolderBatch(ChannelA, [Deliver(ChannelA, 2), Deliver(ChannelA, 4)], [new HolderDrop(ChannelA, 1)]);
        var bytes = _system.Serialization.FindSerializerFor(batch).ToBinary(batch);
        var hyperion = new LockstepHyperionSerializer((ExtendedActorSystem)_system).ToBinary(batch);

        // Channel once (~60 bytes), per deliver ~70 bytes of fields and payload, the drop 9 bytes.
        Assert.InRange(bytes.Length, 150, 260);
        Assert.True(bytes.Length * 4 < hyperion.Length, $"{bytes.Length} bytes here, {hyperion.Length} with Hyperion");
    }

    [Fact]
    public void The_status_of_a_lock_command_is_a_few_bytes_on_the_lock_wire_format()
    {
        var status = _system.Serialization.FindSerializerFor(LockTrafficAccepted.Delivered);
        Assert.IsType<LockWireSerializer>(status);
        Assert.Single(status.ToBinary(LockTrafficAccepted.Delivered));
    }

    [Fact]
    public void Bad_input_fails_with_a_serialization_exception_naming_the_problem()
    {
        var serializer = (MessagingWireSerializer)_system.Serialization.FindSerializerForType(typeof(HolderBatch));
        var batch = serializer.ToBinary(new HolderBatch(ChannelA, [Deliver(ChannelA, 2)], [new HolderDrop(ChannelA, 1)]));

        Assert.Contains("cannot read", Assert.Throws<SerializationException>(() => serializer.FromBinary(batch[..^3], "b")).Message);
        Assert.Contains("left over", Assert.Throws<SerializationException>(() => serializer.FromBinary([.. batch, 0], "b")).Message);
        Assert.Contains("unknown manifest 'Z'", Assert.Throws<SerializationException>(() => serializer.FromBinary(batch, "Z")).Message);

        // A drop whose channel marker says "same as before" with nothing before it.
        byte[] orphanMarker = [0, .. BitConverter.GetBytes(5L)];
        Assert.Contains("bad channel marker", Assert.Throws<SerializationException>(() => serializer.FromBinary(orphanMarker, "p")).Message);

        // A batch claiming more delivers than it has bytes for.
        byte[] lyingCount = [.. serializer.ToBinary(new HolderBatch(ChannelA, [], []))[..^8], .. BitConverter.GetBytes(1_000_000), .. BitConverter.GetBytes(0)];
        Assert.Contains("bad element count", Assert.Throws<SerializationException>(() => serializer.FromBinary(lyingCount, "b")).Message);

        // A status whose payload length claims more than is there (its last four bytes are the payload).
        var status = serializer.ToBinary(new HolderStatus(ChannelA, 1, Guid.Empty, Payload));
        byte[] lyingPayload = [.. status[..^8], .. BitConverter.GetBytes(1000), .. status[^4..]];
        Assert.Contains("bad payload length", Assert.Throws<SerializationException>(() => serializer.FromBinary(lyingPayload, "s")).Message);

        Assert.Throws<SerializationException>(() => serializer.ToBinary(new HolderGap(ChannelA, 1, Guid.Empty)));
    }

    /// <summary>Records holding lists and byte arrays compare by reference: compare a full textual rendering instead.</summary>
    private static string Describe(object message) => message switch
    {
        HolderDeliver d => $"D({d.ChannelId},{d.Seq},{d.Floor},{d.RunHorizon},{d.KnownIncarnation},{d.MayHaveRun},{d.Attempt},{d.TargetId},{Describe(d.Payload)})",
        HolderStatus s => $"S({s.ChannelId},{s.Seq},{s.HolderIncarnation},{Describe(s.Status)})",
        HolderDrop p => $"P({p.ChannelId},{p.Seq})",
        HolderDropConfirmed c => $"C({c.ChannelId},{c.Seq},{c.HolderIncarnation})",
        HolderBatch b => $"B({b.ChannelId};{string.Join(";", b.Delivers.Select(Describe))};{string.Join(";", b.Drops.Select(Describe))})",
        OutboxBatch o => $"O({string.Join(";", o.Statuses.Select(Describe))};{string.Join(";", o.Confirms.Select(Describe))})",
        SerializedPayload p => $"{p.SerializerId}/{p.Manifest}/{Convert.ToHexString(p.Bytes)}",
        _ => throw new InvalidOperationException(message.GetType().Name),
    };

    public void Dispose() => _system.Terminate().Wait(TimeSpan.FromSeconds(10));
}
