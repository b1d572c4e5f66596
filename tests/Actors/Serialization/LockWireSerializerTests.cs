using System.Runtime.Serialization;
using Akka.Actor;
using Akka.Serialization;
using Lockstep.Actors.Serialization;
using Lockstep.Contracts.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Serialization;

/// <summary>The compact format of the DLM's hot-path messages: every field survives, bad bytes fail clearly.</summary>
public sealed class LockWireSerializerTests : IDisposable
{
    private readonly ActorSystem _system = ActorSystem.Create("lockwire", SerializationConfig.Hocon);

    private static readonly byte[] Lvb = [1, 2, 3, 4, 5, 6, 7, 8];

    public static TheoryData<object> Messages() =>
    [
        new LockRequest("ls/r", long.MinValue + 7, new LockOwner("node-ä", 3, Guid.NewGuid()), LockMode.PW, LockFlags.NoQueue | LockFlags.ValBlk | LockFlags.Persistent, 64, 1500),
        new ConvertLock("ls/r", 42, LockMode.NL, LockFlags.ValBlk | LockFlags.ConvDeadlk, Lvb, 0),
        new ConvertLock("ls/r", 42, LockMode.EX, LockFlags.None, null, 9),
        new UnlockLock("ls/r", -1, LockFlags.ForceUnlock, null, AnsweredByClient: true),
        new UnlockLock("ls/r", 5, LockFlags.ValBlk, [], AnsweredByClient: false),
        new CancelLock("ls/" + new string('x', 64), 8),
        new LockCompleted("ls/r", 9, LockOperation.Convert, LockStatus.Fenced, LockMode.CR, Lvb, long.MaxValue, LockResultFlags.ValNotValid | LockResultFlags.Demoted),
        new LockCompleted("ls/r", 9, LockOperation.Unlock, LockStatus.Unlocked, LockMode.NL, null, 0, LockResultFlags.None),
        new BlockingAst("ls/r", 10, LockMode.PR),
        LockTrafficAccepted.Delivered,
        LockTrafficAccepted.Skipped,
    ];

    [Theory]
    [MemberData(nameof(Messages))]
    public void Every_field_survives_through_the_systems_serialization(object message)
    {
        var serializer = _system.Serialization.FindSerializerFor(message);
        Assert.IsType<LockWireSerializer>(serializer);
        var bytes = serializer.ToBinary(message);
        var back = _system.Serialization.Deserialize(bytes, serializer.Identifier, Akka.Serialization.Serialization.ManifestFor(serializer, message));

        // Records with byte arrays compare by reference: compare the arrays, then the rest with the arrays swapped in.
        Assert.Equal(message.GetType(), back.GetType());
        Assert.Equal(Bytes(message), Bytes(back));
        Assert.Equal(WithBytesOf(message, back), back);
        Assert.True(bytes.Length < 100, $"{message.GetType().Name} took {bytes.Length} bytes");
    }

    [Fact]
    public void Bad_input_fails_with_a_serialization_exception_naming_the_problem()
    {
        var serializer = (LockWireSerializer)_system.Serialization.FindSerializerForType(typeof(LockRequest));
        var request = serializer.ToBinary(new LockRequest("ls/r", 1, new LockOwner("n1", 1, Guid.Empty), LockMode.EX, LockFlags.None, 64, 0));

        Assert.Contains("cannot read", Assert.Throws<SerializationException>(() => serializer.FromBinary(request[..^3], "R")).Message);
        Assert.Contains("left over", Assert.Throws<SerializationException>(() => serializer.FromBinary([.. request, 0], "R")).Message);
        Assert.Contains("unknown manifest 'Q'", Assert.Throws<SerializationException>(() => serializer.FromBinary(request, "Q")).Message);

        // An unlock whose LVB length (the last 5 bytes are length -1 and the flag) claims more than is there.
        var unlock = serializer.ToBinary(new UnlockLock("ls/r", 1, LockFlags.None, null));
        byte[] lying = [.. unlock[..^5], .. BitConverter.GetBytes(1000), 0];
        Assert.Contains("bad byte-array length", Assert.Throws<SerializationException>(() => serializer.FromBinary(lying, "U")).Message);
        Assert.Throws<SerializationException>(() => serializer.ToBinary(new DumpLockResource("ls/r")));
    }

    private static byte[]? Bytes(object message) => message switch
    {
        ConvertLock m => m.Lvb,
        UnlockLock m => m.Lvb,
        LockCompleted m => m.Lvb,
        _ => null,
    };

    private static object WithBytesOf(object message, object source) => message switch
    {
        ConvertLock m => m with { Lvb = Bytes(source) },
        UnlockLock m => m with { Lvb = Bytes(source) },
        LockCompleted m => m with { Lvb = Bytes(source) },
        _ => message,
    };

    public void Dispose() => _system.Terminate().Wait(TimeSpan.FromSeconds(10));
}
