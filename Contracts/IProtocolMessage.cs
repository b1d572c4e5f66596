namespace Lockstep.Contracts;

/// <summary>
/// Root of every message that may cross a node boundary. Each subsystem declares its own
/// marker deriving from this one (<c>ILockProtocol</c>, <c>IVolumeProtocol</c>, …); the Hyperion
/// serializer adapter is bound to each marker, and a test round-trips every implementing type.
/// </summary>
public interface IProtocolMessage
{
}

/// <summary>A message addressed to one sharded entity; the extractor routes by <see cref="EntityId"/>.</summary>
public interface IWithEntityId
{
    /// <summary>The entity id inside its shard region.</summary>
    string EntityId { get; }
}
