using System.Runtime.Serialization;
using Akka.Actor;
using Akka.Configuration;
using Hyperion;
using AkkaSerializer = Akka.Serialization.Serializer;

namespace Lockstep.Actors.Serialization;

/// <summary>
/// Our own thin Hyperion adapter (the Akka.Serialization.Hyperion package is not available here).
/// It is bound to <see cref="Lockstep.Contracts.IProtocolMessage"/>, so every protocol message of
/// every subsystem travels through it. Actor references travel as their serialized path and are
/// resolved again on the receiving system; any failure surfaces as a
/// <see cref="SerializationException"/> naming the type, never as a Hyperion-internal exception.
/// </summary>
public sealed class LockstepHyperionSerializer : AkkaSerializer
{
    /// <summary>Fixed serializer id; ids up to 100 are reserved by Akka itself.</summary>
    public const int SerializerId = 741;

    private readonly Hyperion.Serializer _hyperion;

    public LockstepHyperionSerializer(ExtendedActorSystem system) : base(system)
    {
        var surrogates = new[]
        {
            Surrogate.Create<IActorRef, ActorRefSurrogate>(
                actorRef => new ActorRefSurrogate(Akka.Serialization.Serialization.SerializedActorPath(actorRef)),
                surrogate => system.Provider.ResolveActorRef(surrogate.Path)),
        };
        _hyperion = new Hyperion.Serializer(SerializerOptions.Default
            .WithVersionTolerance(true)
            .WithPreserveObjectReferences(true)
            .WithSurrogates(surrogates));
    }

    public LockstepHyperionSerializer(ExtendedActorSystem system, Config config) : this(system)
    {
    }

    public override int Identifier => SerializerId;

    public override bool IncludeManifest => false;

    public override byte[] ToBinary(object obj)
    {
        try
        {
            using var stream = new MemoryStream();
            _hyperion.Serialize(obj, stream);
            return stream.ToArray();
        }
        catch (Exception ex) when (ex is not SerializationException)
        {
            throw new SerializationException($"Cannot serialize {obj?.GetType().FullName ?? "null"}: {ex.Message}", ex);
        }
    }

    public override object FromBinary(byte[] bytes, Type type)
    {
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            return _hyperion.Deserialize(stream);
        }
        catch (Exception ex) when (ex is not SerializationException)
        {
            throw new SerializationException($"Cannot deserialize {bytes.Length} bytes (expected {type?.FullName ?? "any type"}): {ex.Message}", ex);
        }
    }

    /// <summary>What an <see cref="IActorRef"/> becomes on the wire.</summary>
    public sealed record ActorRefSurrogate(string Path);
}
