namespace Lockstep.Contracts.Broadcast;

/// <summary>
/// The numbered message types of the ordered broadcast. Append-only: a number is never reused or renumbered, because
/// nodes of different versions read each other's rounds (an unknown number is delivered as
/// <see cref="UnknownClusterMessage"/>, never refused).
/// </summary>
public enum ClusterMessageType : ushort
{
    /// <summary>Carries nothing but its origin and a tag: the operator's ping and the order tests.</summary>
    Noop = 0,
    MetadataUpdated = 1,
    Resyncing = 2,
    NewDisk = 3,
    Remove = 4,
    ReAdd = 5,
    BitmapNeedsSync = 6,
    ChangeCapacity = 7,
    Suspend = 8,
    Refresh = 9,
    Resume = 10,
    Activate = 11,
    Deactivate = 12,
}

/// <summary>One message of the ordered broadcast (md-cluster's <c>cluster_msg</c>, clvmd's commands).</summary>
public abstract record ClusterMessage
{
    public abstract ClusterMessageType Type { get; }
}

/// <summary>A message with no effect: <c>lockstep cluster broadcast-ping</c> and the order tests.</summary>
/// <param name="Origin">Node id of the sender.</param>
/// <param name="Tag">A number the sender chooses (a counter in the order tests).</param>
public sealed record NoopMessage(string Origin, long Tag) : ClusterMessage
{
    public override ClusterMessageType Type => ClusterMessageType.Noop;
}

/// <summary>The volume's committed metadata changed; a gateway holding an older <paramref name="Generation"/> reloads.</summary>
public sealed record MetadataUpdatedMessage(string Volume, long Generation) : ClusterMessage
{
    public override ClusterMessageType Type => ClusterMessageType.MetadataUpdated;
}

/// <summary>A node repairs chunks <paramref name="Lo"/>..<paramref name="Hi"/> (exclusive) of <paramref name="Slot"/>'s bitmap; writers hold overlapping writes. Lo = Hi = 0 ends it.</summary>
public sealed record ResyncingMessage(string Volume, int Slot, long Lo, long Hi) : ClusterMessage
{
    public override ClusterMessageType Type => ClusterMessageType.Resyncing;
}

/// <summary>A leg was added to the volume.</summary>
public sealed record NewDiskMessage(string Volume, Guid Leg) : ClusterMessage
{
    public override ClusterMessageType Type => ClusterMessageType.NewDisk;
}

/// <summary>A leg was removed (or failed) and must no longer be read or written.</summary>
public sealed record RemoveMessage(string Volume, Guid Leg) : ClusterMessage
{
    public override ClusterMessageType Type => ClusterMessageType.Remove;
}

/// <summary>A leg that was missing is back.</summary>
public sealed record ReAddMessage(string Volume, Guid Leg) : ClusterMessage
{
    public override ClusterMessageType Type => ClusterMessageType.ReAdd;
}

/// <summary>A slot's bitmap has bits another node must resync.</summary>
public sealed record BitmapNeedsSyncMessage(string Volume, int Slot) : ClusterMessage
{
    public override ClusterMessageType Type => ClusterMessageType.BitmapNeedsSync;
}

/// <summary>The volume's size changed to <paramref name="SizeBytes"/>.</summary>
public sealed record ChangeCapacityMessage(string Volume, long SizeBytes) : ClusterMessage
{
    public override ClusterMessageType Type => ClusterMessageType.ChangeCapacity;
}

/// <summary>clvmd's device commands: SUSPEND, REFRESH, RESUME, ACTIVATE, DEACTIVATE of one volume.</summary>
/// <param name="Volume">The volume the command is for.</param>
/// <param name="Command">One of <see cref="ClusterMessageType.Suspend"/> … <see cref="ClusterMessageType.Deactivate"/>.</param>
public sealed record VolumeCommandMessage(ClusterMessageType Command, string Volume) : ClusterMessage
{
    public override ClusterMessageType Type => Command;

    /// <summary>Whether <paramref name="type"/> is one of clvmd's per-volume commands.</summary>
    public static bool IsCommand(ClusterMessageType type) => type is >= ClusterMessageType.Suspend and <= ClusterMessageType.Deactivate;
}

/// <summary>A message of a type this version does not know (sent by a newer node); delivered as bytes.</summary>
public sealed record UnknownClusterMessage(ushort RawType, byte[] Body) : ClusterMessage
{
    public override ClusterMessageType Type => (ClusterMessageType)RawType;
}

/// <summary>
/// What a round carries in place of a message too large for the LVB: the key under which the sender stored the
/// encoded message durably (<see cref="StoreBroadcastPayload"/>) before it published the round. Receivers load it and
/// deliver the message itself; subscribers never see this type.
/// </summary>
/// <param name="Key">The payload's key in its stream's payload store.</param>
/// <param name="Length">Bytes of the encoded message.</param>
public sealed record StoredPayloadReference(Guid Key, int Length) : ClusterMessage
{
    /// <summary>The wire number of a reference; outside the numbered types, which stay below it.</summary>
    public const ushort WireType = 0xFFFF;

    public override ClusterMessageType Type => (ClusterMessageType)WireType;
}
