namespace Lockstep.Contracts.Volumes;

/// <summary>Marker of every volume management message (commands, replies, journal events, snapshots).</summary>
public interface IVolumeProtocol : IProtocolMessage
{
}

/// <summary>A command addressed to one Volume entity (entity id = volume name).</summary>
public interface IVolumeCommand : IVolumeProtocol, IWithEntityId
{
    /// <summary>The volume the command is about.</summary>
    string Name { get; }
}

/// <summary>An event in a Volume entity's journal.</summary>
public interface IVolumeEvent : IVolumeProtocol
{
}

// ------------------------------------------------------------------ commands

/// <summary>Creates a volume; the reply (<see cref="VolumeInfo"/> or <see cref="VolumeRejected"/>) comes once every leg is formatted and the volume is committed.</summary>
/// <param name="Name">Volume (and NBD export) name: lowercase letters, digits, '.', '_', '-'; starts with a letter or digit; at most 64 characters.</param>
/// <param name="SizeBytes">Exported size; a positive multiple of 4096.</param>
/// <param name="ChunkSizeBytes">Bitmap granularity; a power of two of at least 64 KiB.</param>
/// <param name="MaxNodes">Bitmap slots per leg (nodes that may ever write the volume), 1..64.</param>
/// <param name="LegPaths">Absolute paths of the legs (files, created if missing, or block devices); 1..8, distinct.</param>
/// <param name="Cache">How nodes reach the legs (<see cref="VolumeCacheMode.Direct"/> unless asked otherwise).</param>
public sealed record CreateVolume(string Name, long SizeBytes, int ChunkSizeBytes, int MaxNodes, IReadOnlyList<string> LegPaths, VolumeCacheMode Cache = VolumeCacheMode.Direct) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>Changes the cache mode of a volume; a node applies it the next time it opens the volume.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="Cache">The new mode.</param>
public sealed record SetVolumeCacheMode(string Name, VolumeCacheMode Cache) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>Adds a leg: formatted, committed as <see cref="LegState.Resyncing"/>; it becomes in sync once a full copy is done (<see cref="MarkLegResynced"/>).</summary>
/// <param name="Name">Volume name.</param>
/// <param name="Path">Absolute path of the new leg.</param>
public sealed record AddLeg(string Name, string Path) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>An operator takes a leg out of the mirror. Refused for the last in-sync leg.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="LegId">The leg.</param>
/// <param name="Reason">Why, kept in the journal.</param>
public sealed record FailLeg(string Name, Guid LegId, string Reason) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>Removes a failed or missing leg from the metadata; its superblock is wiped when it can still be written.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="LegId">The leg.</param>
public sealed record RemoveLeg(string Name, Guid LegId) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>The block pipeline saw an I/O error on a leg: always recorded (idempotent), even for the last leg.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="LegId">The leg.</param>
/// <param name="Reason">The error.</param>
public sealed record MarkLegFailed(string Name, Guid LegId, string Reason) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>The block pipeline could not find a leg by its UUIDs when opening the volume.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="LegId">The leg.</param>
/// <param name="Reason">Where it looked.</param>
public sealed record MarkLegMissing(string Name, Guid LegId, string Reason) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>The block pipeline found a leg by its UUIDs at another path; the path hint is updated.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="LegId">The leg.</param>
/// <param name="NewPath">Where it is now.</param>
public sealed record MarkLegMoved(string Name, Guid LegId, string NewPath) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>A resyncing leg now holds a full copy of the data.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="LegId">The leg.</param>
/// <param name="Generation">The generation the copy was started under; a copy made under older metadata is refused.</param>
public sealed record MarkLegResynced(string Name, Guid LegId, long Generation) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>Deletes a volume: its legs' superblocks are wiped, the name becomes free.</summary>
/// <param name="Name">Volume name.</param>
public sealed record DeleteVolume(string Name) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>Asks for the committed metadata; answered with <see cref="VolumeInfo"/> or <see cref="VolumeRejected"/> (NotFound).</summary>
/// <param name="Name">Volume name.</param>
public sealed record GetVolume(string Name) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>The entity's own note that the legs of the pending operation were formatted (or why not).</summary>
/// <param name="Name">Volume name.</param>
/// <param name="OperationId">Volume id (create) or leg id (add) the work was for; a late note for another operation is ignored.</param>
/// <param name="Error">Null when every leg was formatted.</param>
public sealed record LegsProvisioned(string Name, Guid OperationId, string? Error) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

/// <summary>The entity's own note that the superblocks of a deleted volume were wiped.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="VolumeId">The volume being deleted.</param>
/// <param name="Problems">Legs that could not be wiped and why (a dead disk does not block a delete).</param>
public sealed record LegsWiped(string Name, Guid VolumeId, IReadOnlyList<string> Problems) : IVolumeCommand
{
    /// <inheritdoc />
    public string EntityId => Name;
}

// ------------------------------------------------------------------ replies

/// <summary>Where a volume is in its life.</summary>
public enum VolumeStatus
{
    /// <summary>No such volume (never created, abandoned or deleted).</summary>
    Absent,

    /// <summary>Intent recorded; legs being formatted. Not exported.</summary>
    Creating,

    /// <summary>Committed; exported.</summary>
    Active,

    /// <summary>Delete intent recorded; superblocks being wiped. Not exported.</summary>
    Deleting,
}

/// <summary>Why a command was refused.</summary>
public enum VolumeError
{
    /// <summary>No such volume or leg.</summary>
    NotFound,

    /// <summary>The command's arguments break a rule (name, size, chunk, legs …).</summary>
    Invalid,

    /// <summary>The command contradicts the current state (volume exists, last in-sync leg, …).</summary>
    Conflict,

    /// <summary>Another metadata change of this volume is in progress.</summary>
    Busy,

    /// <summary>The command was accepted but its disk work failed (formatting a leg).</summary>
    Failed,
}

/// <summary>The committed metadata and life-cycle status of a volume.</summary>
/// <param name="Descriptor">What a node needs to open the volume.</param>
/// <param name="Status">Life-cycle status.</param>
/// <param name="Pending">A metadata change in progress (e.g. "adding leg …"), or null.</param>
/// <param name="Cache">How nodes reach the legs.</param>
public sealed record VolumeInfo(VolumeDescriptor Descriptor, VolumeStatus Status, string? Pending, VolumeCacheMode Cache = VolumeCacheMode.Direct) : IVolumeProtocol;

/// <summary>A refused command.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="Error">Category (maps to an HTTP status).</param>
/// <param name="Reason">A sentence a person can act on.</param>
public sealed record VolumeRejected(string Name, VolumeError Error, string Reason) : IVolumeProtocol;

// ------------------------------------------------------------------ journal events

/// <summary>Intent: a volume with these legs is being created (nothing is exported yet).</summary>
/// <param name="Name">Volume name.</param>
/// <param name="VolumeId">New volume UUID, written into every leg superblock.</param>
/// <param name="Geometry">Size, chunk, max nodes.</param>
/// <param name="Legs">The legs, all <see cref="LegState.InSync"/> (formatted legs start zeroed, so identical).</param>
public sealed record VolumeCreationStarted(string Name, Guid VolumeId, VolumeGeometry Geometry, IReadOnlyList<LegDescriptor> Legs) : IVolumeEvent;

/// <summary>Commit: every leg is formatted; the volume exists.</summary>
/// <param name="VolumeId">The volume.</param>
public sealed record VolumeCreated(Guid VolumeId) : IVolumeEvent;

/// <summary>The create failed (a leg could not be formatted); the name is free again.</summary>
/// <param name="VolumeId">The abandoned volume.</param>
/// <param name="Reason">Why.</param>
public sealed record VolumeCreationAbandoned(Guid VolumeId, string Reason) : IVolumeEvent;

/// <summary>Intent: a leg is being formatted for this volume.</summary>
/// <param name="LegId">New leg UUID.</param>
/// <param name="Path">Where.</param>
public sealed record LegAdditionStarted(Guid LegId, string Path) : IVolumeEvent;

/// <summary>Commit: the new leg is formatted and part of the volume, resyncing.</summary>
/// <param name="LegId">The leg.</param>
/// <param name="Path">Where.</param>
public sealed record LegAdded(Guid LegId, string Path) : IVolumeEvent;

/// <summary>Formatting the new leg failed; it is not part of the volume.</summary>
/// <param name="LegId">The leg.</param>
/// <param name="Reason">Why.</param>
public sealed record LegAdditionAbandoned(Guid LegId, string Reason) : IVolumeEvent;

/// <summary>A resyncing leg holds a full copy: in sync.</summary>
/// <param name="LegId">The leg.</param>
public sealed record LegResynced(Guid LegId) : IVolumeEvent;

/// <summary>A leg left the mirror.</summary>
/// <param name="LegId">The leg.</param>
/// <param name="Reason">The I/O error or the operator's reason.</param>
/// <param name="ByOperator">True for <see cref="FailLeg"/>, false for an I/O error.</param>
public sealed record LegFailed(Guid LegId, string Reason, bool ByOperator) : IVolumeEvent;

/// <summary>A leg was not found by its UUIDs when the volume opened.</summary>
/// <param name="LegId">The leg.</param>
/// <param name="Reason">Where it was looked for.</param>
public sealed record LegWentMissing(Guid LegId, string Reason) : IVolumeEvent;

/// <summary>A leg was found at another path.</summary>
/// <param name="LegId">The leg.</param>
/// <param name="NewPath">Its new path.</param>
public sealed record LegMoved(Guid LegId, string NewPath) : IVolumeEvent;

/// <summary>A leg is no longer part of the volume.</summary>
/// <param name="LegId">The leg.</param>
public sealed record LegRemoved(Guid LegId) : IVolumeEvent;

/// <summary>
/// The volume's cache mode changed: persisted right after <see cref="VolumeCreationStarted"/> when a volume is created
/// with a mode other than direct, and by <see cref="SetVolumeCacheMode"/>. A journal without it means direct.
/// </summary>
/// <param name="Cache">The new mode.</param>
public sealed record VolumeCacheModeChanged(VolumeCacheMode Cache) : IVolumeEvent;

/// <summary>Intent: the volume is being deleted; it is no longer exported.</summary>
/// <param name="VolumeId">The volume.</param>
public sealed record VolumeDeletionStarted(Guid VolumeId) : IVolumeEvent;

/// <summary>Commit: the volume is gone, the name free.</summary>
/// <param name="VolumeId">The volume.</param>
/// <param name="Problems">Legs whose superblock could not be wiped.</param>
public sealed record VolumeDeleted(Guid VolumeId, IReadOnlyList<string> Problems) : IVolumeEvent;

/// <summary>Snapshot of a Volume entity.</summary>
/// <param name="Status">Life-cycle status.</param>
/// <param name="Descriptor">Current metadata; null when absent.</param>
/// <param name="Generation">Last generation handed out (kept across delete and re-create, so it never goes back).</param>
/// <param name="PendingLeg">A leg whose addition is in progress, or null.</param>
public sealed record VolumeSnapshot(VolumeStatus Status, VolumeDescriptor? Descriptor, long Generation, LegDescriptor? PendingLeg) : IVolumeProtocol;

/// <summary>
/// Snapshot of a Volume entity with its cache mode. A new type rather than a field added to <see cref="VolumeSnapshot"/>:
/// Hyperion reads fields by position, so a persisted type must never change shape; old <see cref="VolumeSnapshot"/>s
/// still load (as direct).
/// </summary>
/// <param name="Core">Status, descriptor, generation, pending leg.</param>
/// <param name="Cache">The cache mode.</param>
public sealed record VolumeSnapshotWithCache(VolumeSnapshot Core, VolumeCacheMode Cache) : IVolumeProtocol;

// ------------------------------------------------------------------ registry of names

/// <summary>A message for the registry of volume names (one entity, <see cref="VolumeRegistryIds.RegistryEntityId"/>).</summary>
public interface IVolumeRegistryCommand : IVolumeProtocol, IWithEntityId
{
}

/// <summary>Well-known id of the registry entity.</summary>
public static class VolumeRegistryIds
{
    /// <summary>The single registry entity's id.</summary>
    public const string RegistryEntityId = "volumes";
}

/// <summary>Records a name before the volume's intent is persisted, so a listed name can never be lost; answered with <see cref="VolumeNameAck"/>.</summary>
/// <param name="Name">Volume name.</param>
public sealed record RegisterVolumeName(string Name) : IVolumeRegistryCommand
{
    /// <inheritdoc />
    public string EntityId => VolumeRegistryIds.RegistryEntityId;
}

/// <summary>Forgets a name (volume deleted or never committed); answered with <see cref="VolumeNameAck"/>.</summary>
/// <param name="Name">Volume name.</param>
public sealed record UnregisterVolumeName(string Name) : IVolumeRegistryCommand
{
    /// <inheritdoc />
    public string EntityId => VolumeRegistryIds.RegistryEntityId;
}

/// <summary>Asks for every registered name; answered with <see cref="VolumeNames"/>.</summary>
public sealed record ListVolumeNames : IVolumeRegistryCommand
{
    /// <summary>The one instance.</summary>
    public static readonly ListVolumeNames Instance = new();

    /// <inheritdoc />
    public string EntityId => VolumeRegistryIds.RegistryEntityId;
}

/// <summary>The registry durably holds (or no longer holds) <paramref name="Name"/>.</summary>
/// <param name="Name">Volume name.</param>
public sealed record VolumeNameAck(string Name) : IVolumeProtocol;

/// <summary>Every registered name, sorted.</summary>
/// <param name="Names">The names.</param>
public sealed record VolumeNames(IReadOnlyList<string> Names) : IVolumeProtocol;

/// <summary>Registry journal event.</summary>
/// <param name="Name">Volume name.</param>
public sealed record VolumeNameRegistered(string Name) : IVolumeEvent;

/// <summary>Registry journal event.</summary>
/// <param name="Name">Volume name.</param>
public sealed record VolumeNameUnregistered(string Name) : IVolumeEvent;

/// <summary>Registry snapshot.</summary>
/// <param name="Names">The names.</param>
public sealed record VolumeRegistrySnapshot(IReadOnlyList<string> Names) : IVolumeProtocol;
