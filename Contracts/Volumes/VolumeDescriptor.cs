namespace Lockstep.Contracts.Volumes;

/// <summary>Fixed shape of a volume: chosen at create time, recorded in every leg superblock.</summary>
/// <param name="SizeBytes">Exported size; a multiple of 4096.</param>
/// <param name="ChunkSizeBytes">Bitmap granularity (one bit per chunk); a power of two ≥ 64 KiB.</param>
/// <param name="MaxNodes">Bitmap slots per leg: one per node that may ever write the volume.</param>
public sealed record VolumeGeometry(long SizeBytes, int ChunkSizeBytes, int MaxNodes)
{
    public long ChunkCount => (SizeBytes + ChunkSizeBytes - 1) / ChunkSizeBytes;
}

/// <summary>
/// How a node's open volume reaches its legs, like qemu's <c>cache=</c>. Stored apart from
/// <see cref="VolumeDescriptor"/> (event <see cref="VolumeCacheModeChanged"/>) so journals and snapshots written
/// before cache modes existed read unchanged, as <see cref="Direct"/>.
/// </summary>
public enum VolumeCacheMode
{
    /// <summary>O_DIRECT: no page cache between the volume and its legs. Required when legs are shared between hosts.</summary>
    Direct = 0,

    /// <summary>
    /// Buffered through the page cache: FLUSH → fdatasync on every leg, FUA → a write that is durable before the reply.
    /// Safe only when every node that opens the volume shares one kernel's page cache (or only one node ever opens it).
    /// </summary>
    Writeback = 1,
}

/// <summary>Health of one mirror leg in the committed metadata.</summary>
public enum LegState
{
    InSync,
    Failed,
    Missing,
    Resyncing,
}

/// <summary>One leg as the committed metadata knows it: found by <paramref name="LegId"/>, the path is only a hint.</summary>
public sealed record LegDescriptor(Guid LegId, string Path, LegState State);

/// <summary>The committed metadata of a volume that a node needs to open it.</summary>
/// <param name="Name">Volume name; also the NBD export name.</param>
/// <param name="VolumeId">Identity written into every leg superblock.</param>
/// <param name="Geometry">Size, chunk size and bitmap slots.</param>
/// <param name="Legs">The mirror legs in the order they were added.</param>
/// <param name="Generation">Bumped by every committed change; gateways compare it to detect stale metadata.</param>
public sealed record VolumeDescriptor(string Name, Guid VolumeId, VolumeGeometry Geometry, IReadOnlyList<LegDescriptor> Legs, long Generation);
