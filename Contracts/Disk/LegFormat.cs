using Lockstep.Contracts.Volumes;

namespace Lockstep.Contracts.Disk;

/// <summary>
/// Constants of the on-disk format of a mirror leg (docs/on-disk-format.md). Every multi-byte field is
/// little-endian. Offsets are bytes from the start of the leg.
/// </summary>
public static class LegFormat
{
    /// <summary>Format version written by this code; a leg with another version is refused.</summary>
    public const uint Version = 1;

    /// <summary>Every block of metadata is 4 KiB and 4 KiB-aligned so it can be written with O_DIRECT on 4Kn disks.</summary>
    public const int BlockSize = 4096;

    /// <summary>The data area starts at a multiple of this (and never before it).</summary>
    public const int DataAlignment = 1 << 20;

    /// <summary>"LKSTPLEG" read as a little-endian 64-bit number.</summary>
    public const ulong SuperblockMagic = 0x47454C5054534B4C;

    /// <summary>"LKSTPBMP" read as a little-endian 64-bit number.</summary>
    public const ulong SlotMagic = 0x504D425054534B4C;

    /// <summary>Bitmap slots start right after the superblock.</summary>
    public const long BitmapOffset = BlockSize;

    /// <summary>Longest volume name kept in the superblock (UTF-8 bytes; longer names are cut, it is informational).</summary>
    public const int MaxStoredNameBytes = 128;

    public const int MinChunkSize = 64 * 1024;

    public const int MaxNodes = 256;
}

/// <summary>Where things are on a leg of a given geometry; pure arithmetic, shared by the codec, the pipeline and the docs.</summary>
public readonly record struct LegLayout(long ChunkCount, long SlotBitsBytes, long SlotStride, long DataOffset, long RequiredLength, int MaxNodes)
{
    /// <summary>Computes the layout; throws <see cref="ArgumentException"/> for a geometry the format cannot hold.</summary>
    public static LegLayout For(VolumeGeometry geometry)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        Validate(geometry);
        var chunks = geometry.ChunkCount;
        var bitsBytes = AlignUp((chunks + 7) / 8, LegFormat.BlockSize);
        var stride = LegFormat.BlockSize + bitsBytes;
        var dataOffset = AlignUp(LegFormat.BitmapOffset + stride * geometry.MaxNodes, LegFormat.DataAlignment);
        return new LegLayout(chunks, bitsBytes, stride, dataOffset, dataOffset + geometry.SizeBytes, geometry.MaxNodes);
    }

    /// <summary>Throws <see cref="ArgumentException"/> with the reason when the geometry is not valid.</summary>
    public static void Validate(VolumeGeometry geometry)
    {
        if (geometry.SizeBytes <= 0 || geometry.SizeBytes % LegFormat.BlockSize != 0)
        {
            throw new ArgumentException($"volume size {geometry.SizeBytes} must be a positive multiple of {LegFormat.BlockSize}");
        }

        if (geometry.ChunkSizeBytes < LegFormat.MinChunkSize || (geometry.ChunkSizeBytes & (geometry.ChunkSizeBytes - 1)) != 0)
        {
            throw new ArgumentException($"chunk size {geometry.ChunkSizeBytes} must be a power of two of at least {LegFormat.MinChunkSize}");
        }

        if (geometry.MaxNodes < 1 || geometry.MaxNodes > LegFormat.MaxNodes)
        {
            throw new ArgumentException($"max nodes {geometry.MaxNodes} must be between 1 and {LegFormat.MaxNodes}");
        }
    }

    /// <summary>Offset of the header block of bitmap slot <paramref name="slot"/>.</summary>
    public long SlotOffset(int slot) => LegFormat.BitmapOffset + SlotStride * slot;

    /// <summary>Offset of the first bit block of bitmap slot <paramref name="slot"/>.</summary>
    public long SlotBitsOffset(int slot) => SlotOffset(slot) + LegFormat.BlockSize;

    public static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;
}

/// <summary>The decoded leg superblock (first 4 KiB of a leg).</summary>
/// <param name="Version">Format version (<see cref="LegFormat.Version"/>).</param>
/// <param name="VolumeId">The volume this leg belongs to.</param>
/// <param name="LegId">This leg's identity; the path it is found at is only a hint.</param>
/// <param name="Geometry">Volume geometry fixed at create time.</param>
/// <param name="CreatedUnixSeconds">When the leg was formatted.</param>
/// <param name="VolumeName">The volume's name when formatted (informational, cut to 128 UTF-8 bytes).</param>
/// <param name="Events">Bumped on the surviving legs whenever a leg drops out; a leg with a lower count is stale.</param>
/// <param name="DataOffset">Where block 0 of the volume lives on this leg.</param>
public sealed record LegSuperblock(
    uint Version,
    Guid VolumeId,
    Guid LegId,
    long Events,
    VolumeGeometry Geometry,
    long DataOffset,
    long CreatedUnixSeconds,
    string VolumeName);

/// <summary>The decoded header block of one bitmap slot.</summary>
/// <param name="Version">Format version.</param>
/// <param name="Slot">Slot number: the node slot that owns these bits.</param>
/// <param name="VolumeId">The volume the slot belongs to.</param>
/// <param name="Events">Events counter of the leg when the header was written.</param>
/// <param name="ChunkCount">Number of bits that follow (one per chunk).</param>
/// <param name="ResyncLo">First chunk of a resync in progress by the slot's owner (inclusive); equal to <paramref name="ResyncHi"/> when none.</param>
/// <param name="ResyncHi">End chunk (exclusive) of the resync in progress.</param>
public sealed record BitmapSlotHeader(uint Version, int Slot, Guid VolumeId, long Events, long ChunkCount, long ResyncLo, long ResyncHi);
