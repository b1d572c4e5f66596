using Akka.Configuration;
using Lockstep.Contracts;

namespace Lockstep.Actors.Serialization;

/// <summary>The HOCON that registers <see cref="LockstepHyperionSerializer"/> and binds it to every protocol marker.</summary>
public static class SerializationConfig
{
    private static readonly string SerializerType = typeof(LockstepHyperionSerializer).AssemblyQualifiedNameWithoutVersion();
    private static readonly string LockWireType = typeof(LockWireSerializer).AssemblyQualifiedNameWithoutVersion();
    private static readonly string MessagingWireType = typeof(MessagingWireSerializer).AssemblyQualifiedNameWithoutVersion();

    /// <summary>
    /// Registers the serializer and binds it to <see cref="IProtocolMessage"/>. Every subsystem marker
    /// derives from that root, and Akka picks the most specific binding, so one binding covers them all.
    /// The DLM's hot-path messages are bound by their exact types to <see cref="LockWireSerializer"/>, the reliable
    /// messaging layer's per-call envelopes to <see cref="MessagingWireSerializer"/>.
    /// </summary>
    public static Config Hocon { get; } = ConfigurationFactory.ParseString($$"""
        akka.actor {
          serializers.lockstep-hyperion = "{{SerializerType}}"
          serializers.lockstep-lock-wire = "{{LockWireType}}"
          serializers.lockstep-messaging-wire = "{{MessagingWireType}}"
          serialization-bindings {
            "{{typeof(IProtocolMessage).AssemblyQualifiedNameWithoutVersion()}}" = lockstep-hyperion
        {{string.Join("\n", LockWireSerializer.Types.Select(t => $"    \"{t.AssemblyQualifiedNameWithoutVersion()}\" = lockstep-lock-wire"))}}
        {{string.Join("\n", MessagingWireSerializer.Types.Select(t => $"    \"{t.AssemblyQualifiedNameWithoutVersion()}\" = lockstep-messaging-wire"))}}
          }
          serialization-identifiers {
            "{{SerializerType}}" = {{LockstepHyperionSerializer.SerializerId}}
            "{{LockWireType}}" = {{LockWireSerializer.SerializerId}}
            "{{MessagingWireType}}" = {{MessagingWireSerializer.SerializerId}}
          }
        }
        """);

    private static string AssemblyQualifiedNameWithoutVersion(this Type type) =>
        $"{type.FullName}, {type.Assembly.GetName().Name}";
}
