using System.Reflection;
using System.Runtime.CompilerServices;
using Akka.Actor;
using Akka.Configuration;
using Lockstep.Actors.Serialization;
using Lockstep.Contracts;
using Xunit;

namespace Lockstep.Actors.Tests.Serialization;

/// <summary>
/// Every concrete protocol message in Contracts must survive our serializer. Types are found by
/// reflection so a new message cannot be forgotten; sample values are built from the constructor.
/// </summary>
public sealed class ProtocolRoundTripTests : IDisposable
{
    private readonly ActorSystem _system = ActorSystem.Create("roundtrip", SerializationConfig.Hocon);

    public static TheoryData<Type> ProtocolTypes()
    {
        var data = new TheoryData<Type>();
        // Contracts holds the protocols; actor-internal messages that cross nodes live in Actors.
        var assemblies = new[] { typeof(IProtocolMessage).Assembly, typeof(LockstepHyperionSerializer).Assembly };
        foreach (var type in assemblies.SelectMany(a => a.GetTypes())
                     .Where(t => typeof(IProtocolMessage).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false, IsGenericTypeDefinition: false })
                     .OrderBy(t => t.FullName, StringComparer.Ordinal))
        {
            data.Add(type);
        }

        return data;
    }

    [Fact]
    public void Protocol_messages_are_bound_to_the_lockstep_serializer()
    {
        var serializer = _system.Serialization.FindSerializerForType(typeof(Lockstep.Contracts.Cluster.NodeIdentity));
        Assert.IsType<LockstepHyperionSerializer>(serializer);
        Assert.Equal(LockstepHyperionSerializer.SerializerId, serializer.Identifier);
    }

    [Theory]
    [MemberData(nameof(ProtocolTypes))]
    public void Every_protocol_message_round_trips(Type type)
    {
        var sample = SampleFactory.Create(type, _system);
        var serializer = _system.Serialization.FindSerializerFor(sample);
        if (LockWireSerializer.Types.Contains(type))
        {
            Assert.IsType<LockWireSerializer>(serializer);
        }
        else if (MessagingWireSerializer.Types.Contains(type))
        {
            Assert.IsType<MessagingWireSerializer>(serializer);
        }
        else
        {
            Assert.IsType<LockstepHyperionSerializer>(serializer);
        }

        var bytes = serializer.ToBinary(sample);
        var back = serializer.FromBinary(bytes, type);

        Assert.Equal(type, back.GetType());
        // Records compare by value; re-serializing proves collections and byte arrays survived too.
        Assert.Equal(bytes, serializer.ToBinary(back));
    }

    [Fact]
    public void Actor_references_resolve_on_the_receiving_side()
    {
        var probe = _system.ActorOf(Props.Empty, "target");
        var serializer = new LockstepHyperionSerializer((ExtendedActorSystem)_system);
        var back = (Holder)serializer.FromBinary(serializer.ToBinary(new Holder(probe)), typeof(Holder));
        Assert.Equal(probe.Path, back.Ref.Path);
    }

    [Fact]
    public void Garbage_input_fails_with_a_serialization_exception()
    {
        var serializer = new LockstepHyperionSerializer((ExtendedActorSystem)_system);
        Assert.Throws<System.Runtime.Serialization.SerializationException>(() => serializer.FromBinary([0xFF, 0x13, 0x37], typeof(object)));
    }

    public void Dispose() => _system.Terminate().Wait(TimeSpan.FromSeconds(10));

    private sealed record Holder(IActorRef Ref);
}

/// <summary>Builds a non-default value of any protocol type by filling its widest constructor.</summary>
internal static class SampleFactory
{
    public static object Create(Type type, ActorSystem system, int depth = 0)
    {
        if (depth > 6)
        {
            throw new InvalidOperationException($"Sample for {type} nests too deeply.");
        }

        var staticInstance = type.GetField("Instance", BindingFlags.Public | BindingFlags.Static);
        if (staticInstance?.FieldType == type)
        {
            return staticInstance.GetValue(null)!;
        }

        var ctor = type.GetConstructors().OrderByDescending(c => c.GetParameters().Length).FirstOrDefault();
        if (ctor is null)
        {
            return RuntimeHelpers.GetUninitializedObject(type);
        }

        var args = ctor.GetParameters().Select(p => Value(p.ParameterType, system, depth + 1)).ToArray();
        return ctor.Invoke(args);
    }

    private static object? Value(Type type, ActorSystem system, int depth)
    {
        var nullable = Nullable.GetUnderlyingType(type);
        if (nullable is not null)
        {
            return Value(nullable, system, depth);
        }

        if (type == typeof(string)) return "sample";
        if (type == typeof(int)) return 7;
        if (type == typeof(uint)) return 7u;
        if (type == typeof(long)) return 42L;
        if (type == typeof(ulong)) return 42UL;
        if (type == typeof(short)) return (short)3;
        if (type == typeof(ushort)) return (ushort)3;
        if (type == typeof(byte)) return (byte)9;
        if (type == typeof(bool)) return true;
        if (type == typeof(double)) return 1.5;
        if (type == typeof(Guid)) return new Guid("0c0ffee0-0000-4000-8000-000000000001");
        if (type == typeof(DateTimeOffset)) return new DateTimeOffset(2026, 11, 23, 0, 0, 0, TimeSpan.Zero);
        if (type == typeof(DateTime)) return new DateTime(2026, 11, 23, 0, 0, 0, DateTimeKind.Utc);
        if (type == typeof(TimeSpan)) return TimeSpan.FromSeconds(3);
        if (type == typeof(byte[])) return new byte[] { 1, 2, 3, 4 };
        if (type == typeof(ReadOnlyMemory<byte>)) return new ReadOnlyMemory<byte>([5, 6, 7]);
        if (type == typeof(IActorRef)) return system.DeadLetters;
        if (type.IsEnum)
        {
            var values = Enum.GetValues(type);
            return values.Length > 1 ? values.GetValue(1) : values.GetValue(0);
        }

        if (type.IsArray)
        {
            var element = type.GetElementType()!;
            var array = Array.CreateInstance(element, 1);
            array.SetValue(Value(element, system, depth), 0);
            return array;
        }

        if (type.IsGenericType)
        {
            var definition = type.GetGenericTypeDefinition();
            var args = type.GetGenericArguments();
            if (definition == typeof(IReadOnlyList<>) || definition == typeof(IReadOnlyCollection<>) || definition == typeof(IEnumerable<>) || definition == typeof(List<>) || definition == typeof(IList<>))
            {
                var list = (System.Collections.IList)Activator.CreateInstance(typeof(List<>).MakeGenericType(args[0]))!;
                list.Add(Value(args[0], system, depth));
                return list;
            }

            if (definition == typeof(IReadOnlyDictionary<,>) || definition == typeof(Dictionary<,>) || definition == typeof(IDictionary<,>))
            {
                var dict = (System.Collections.IDictionary)Activator.CreateInstance(typeof(Dictionary<,>).MakeGenericType(args))!;
                dict.Add(Value(args[0], system, depth)!, Value(args[1], system, depth));
                return dict;
            }
        }

        if (type.IsValueType)
        {
            return Activator.CreateInstance(type);
        }

        return Create(type, system, depth);
    }
}
