using Akka.Configuration;
using Lockstep.Contracts;

namespace Lockstep.Actors.Serialization;

/// <summary>The HOCON that registers <see cref="LockstepHyperionSerializer"/> and binds it to every protocol marker.</summary>
public static class SerializationConfig
{
    private static readonly string SerializerType = typeof(LockstepHyperionSerializer).AssemblyQualifiedNameWithoutVersion();

    /// <summary>
    /// Registers the serializer and binds it to <see cref="IProtocolMessage"/>. Every subsystem marker
    /// derives from that root, and Akka picks the most specific binding, so one binding covers them all.
    /// </summary>
    public static Config Hocon { get; } = ConfigurationFactory.ParseString($$"""
        akka.actor {
          serializers.lockstep-hyperion = "{{SerializerType}}"
          serialization-bindings {
            "{{typeof(IProtocolMessage).AssemblyQualifiedNameWithoutVersion()}}" = lockstep-hyperion
          }
          serialization-identifiers {
            "{{SerializerType}}" = {{LockstepHyperionSerializer.SerializerId}}
          }
        }
        """);

    private static string AssemblyQualifiedNameWithoutVersion(this Type type) =>
        $"{type.FullName}, {type.Assembly.GetName().Name}";
}
