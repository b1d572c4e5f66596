using System.Buffers.Binary;
using System.Text;
using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;

namespace Lockstep.Persistence.Disk;

/// <summary>What a metadata block turned out to be when decoded.</summary>
public enum MetadataBlockStatus
{
    /// <summary>Checksum and fields are good.</summary>
    Valid,

    /// <summary>All zeroes: never formatted.</summary>
    Blank,

    /// <summary>Not our magic: some other data or format.</summary>
    Unknown,

    /// <summary>Our magic but the checksum does not match: torn write or corruption.</summary>
    Torn,

    /// <summary>Our magic with a format version this code does not know.</summary>
    UnsupportedVersion,

    /// <summary>Checksum is good but the fields contradict each other or the format.</summary>
    Invalid,
}

/// <summary>A decode result: the value when <see cref="Status"/> is Valid, else a reason a person can act on.</summary>
public readonly record struct Decoded<T>(MetadataBlockStatus Status, T? Value, string Reason) where T : class
{
    public bool IsValid => Status == MetadataBlockStatus.Valid;
}

/// <summary>
/// Encodes and decodes the 4 KiB metadata blocks of a leg: the superblock and bitmap slot headers.
/// Layout (little-endian) is in docs/on-disk-format.md; the CRC-32C of bytes 0..4091 sits at 4092.
/// </summary>
public static class LegCodec
{
    public const int ChecksumOffset = LegFormat.BlockSize - 4;

    // Superblock field offsets.
    internal const int SbMagic = 0, SbVersion = 8, SbHeaderLength = 12, SbVolumeId = 16, SbLegId = 32, SbEvents = 48,
        SbSize = 56, SbChunk = 64, SbMaxNodes = 68, SbBitmapOffset = 72, SbSlotStride = 80, SbDataOffset = 88,
        SbCreated = 96, SbNameLength = 104, SbName = 112;

    // Slot header field offsets.
    internal const int SlMagic = 0, SlVersion = 8, SlSlot = 12, SlVolumeId = 16, SlEvents = 32, SlChunkCount = 40,
        SlResyncLo = 48, SlResyncHi = 56;

    /// <summary>Writes <paramref name="superblock"/> into the 4 KiB <paramref name="block"/> (whole block overwritten).</summary>
    public static void EncodeSuperblock(LegSuperblock superblock, Span<byte> block)
    {
        ArgumentNullException.ThrowIfNull(superblock);
        CheckBlock(block);
        var layout = LegLayout.For(superblock.Geometry);
        if (superblock.DataOffset != layout.DataOffset)
        {
            throw new ArgumentException($"data offset {superblock.DataOffset} does not match the geometry's {layout.DataOffset}");
        }

        block.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(block[SbMagic..], LegFormat.SuperblockMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(block[SbVersion..], superblock.Version);
        BinaryPrimitives.WriteUInt32LittleEndian(block[SbHeaderLength..], LegFormat.BlockSize);
        superblock.VolumeId.TryWriteBytes(block.Slice(SbVolumeId, 16), bigEndian: true, out _);
        superblock.LegId.TryWriteBytes(block.Slice(SbLegId, 16), bigEndian: true, out _);
        BinaryPrimitives.WriteInt64LittleEndian(block[SbEvents..], superblock.Events);
        BinaryPrimitives.WriteInt64LittleEndian(block[SbSize..], superblock.Geometry.SizeBytes);
        BinaryPrimitives.WriteInt32LittleEndian(block[SbChunk..], superblock.Geometry.ChunkSizeBytes);
        BinaryPrimitives.WriteInt32LittleEndian(block[SbMaxNodes..], superblock.Geometry.MaxNodes);
        BinaryPrimitives.WriteInt64LittleEndian(block[SbBitmapOffset..], LegFormat.BitmapOffset);
        BinaryPrimitives.WriteInt64LittleEndian(block[SbSlotStride..], layout.SlotStride);
        BinaryPrimitives.WriteInt64LittleEndian(block[SbDataOffset..], layout.DataOffset);
        BinaryPrimitives.WriteInt64LittleEndian(block[SbCreated..], superblock.CreatedUnixSeconds);
        var name = TruncateUtf8(superblock.VolumeName);
        BinaryPrimitives.WriteUInt16LittleEndian(block[SbNameLength..], (ushort)name.Length);
        name.CopyTo(block[SbName..]);
        Seal(block);
    }

    /// <summary>Decodes a superblock; never throws for bad content, it says what is wrong instead.</summary>
    public static Decoded<LegSuperblock> DecodeSuperblock(ReadOnlySpan<byte> block)
    {
        CheckBlock(block);
        if (!Precheck(block, LegFormat.SuperblockMagic, "superblock", out var status, out var reason))
        {
            return new(status, null, reason);
        }

        var version = BinaryPrimitives.ReadUInt32LittleEndian(block[SbVersion..]);
        var geometry = new VolumeGeometry(
            BinaryPrimitives.ReadInt64LittleEndian(block[SbSize..]),
            BinaryPrimitives.ReadInt32LittleEndian(block[SbChunk..]),
            BinaryPrimitives.ReadInt32LittleEndian(block[SbMaxNodes..]));
        LegLayout layout;
        try
        {
            layout = LegLayout.For(geometry);
        }
        catch (ArgumentException e)
        {
            return new(MetadataBlockStatus.Invalid, null, $"superblock geometry is invalid: {e.Message}");
        }

        var headerLength = BinaryPrimitives.ReadUInt32LittleEndian(block[SbHeaderLength..]);
        var bitmapOffset = BinaryPrimitives.ReadInt64LittleEndian(block[SbBitmapOffset..]);
        var stride = BinaryPrimitives.ReadInt64LittleEndian(block[SbSlotStride..]);
        var dataOffset = BinaryPrimitives.ReadInt64LittleEndian(block[SbDataOffset..]);
        if (headerLength != LegFormat.BlockSize || bitmapOffset != LegFormat.BitmapOffset || stride != layout.SlotStride || dataOffset != layout.DataOffset)
        {
            return new(MetadataBlockStatus.Invalid, null,
                $"superblock layout fields (header {headerLength}, bitmap at {bitmapOffset}, slot stride {stride}, data at {dataOffset}) do not match its geometry (data at {layout.DataOffset})");
        }

        var nameLength = BinaryPrimitives.ReadUInt16LittleEndian(block[SbNameLength..]);
        if (nameLength > LegFormat.MaxStoredNameBytes)
        {
            return new(MetadataBlockStatus.Invalid, null, $"superblock volume name length {nameLength} exceeds {LegFormat.MaxStoredNameBytes}");
        }

        var events = BinaryPrimitives.ReadInt64LittleEndian(block[SbEvents..]);
        if (events < 0)
        {
            return new(MetadataBlockStatus.Invalid, null, $"superblock events counter {events} is negative");
        }

        var superblock = new LegSuperblock(
            version,
            new Guid(block.Slice(SbVolumeId, 16), bigEndian: true),
            new Guid(block.Slice(SbLegId, 16), bigEndian: true),
            events,
            geometry,
            dataOffset,
            BinaryPrimitives.ReadInt64LittleEndian(block[SbCreated..]),
            Encoding.UTF8.GetString(block.Slice(SbName, nameLength)));
        return new(MetadataBlockStatus.Valid, superblock, "valid");
    }

    /// <summary>Writes a bitmap slot header block.</summary>
    public static void EncodeSlotHeader(BitmapSlotHeader header, Span<byte> block)
    {
        ArgumentNullException.ThrowIfNull(header);
        CheckBlock(block);
        if (header.Slot < 0 || header.Slot >= LegFormat.MaxNodes || header.ResyncLo < 0 || header.ResyncHi < header.ResyncLo || header.ResyncHi > header.ChunkCount)
        {
            throw new ArgumentException($"slot header fields out of range: {header}");
        }

        block.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(block[SlMagic..], LegFormat.SlotMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(block[SlVersion..], header.Version);
        BinaryPrimitives.WriteInt32LittleEndian(block[SlSlot..], header.Slot);
        header.VolumeId.TryWriteBytes(block.Slice(SlVolumeId, 16), bigEndian: true, out _);
        BinaryPrimitives.WriteInt64LittleEndian(block[SlEvents..], header.Events);
        BinaryPrimitives.WriteInt64LittleEndian(block[SlChunkCount..], header.ChunkCount);
        BinaryPrimitives.WriteInt64LittleEndian(block[SlResyncLo..], header.ResyncLo);
        BinaryPrimitives.WriteInt64LittleEndian(block[SlResyncHi..], header.ResyncHi);
        Seal(block);
    }

    /// <summary>Decodes a bitmap slot header; never throws for bad content.</summary>
    public static Decoded<BitmapSlotHeader> DecodeSlotHeader(ReadOnlySpan<byte> block)
    {
        CheckBlock(block);
        if (!Precheck(block, LegFormat.SlotMagic, "bitmap slot header", out var status, out var reason))
        {
            return new(status, null, reason);
        }

        var header = new BitmapSlotHeader(
            BinaryPrimitives.ReadUInt32LittleEndian(block[SlVersion..]),
            BinaryPrimitives.ReadInt32LittleEndian(block[SlSlot..]),
            new Guid(block.Slice(SlVolumeId, 16), bigEndian: true),
            BinaryPrimitives.ReadInt64LittleEndian(block[SlEvents..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[SlChunkCount..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[SlResyncLo..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[SlResyncHi..]));
        if (header.Slot < 0 || header.Slot >= LegFormat.MaxNodes || header.ChunkCount <= 0 || header.ResyncLo < 0 || header.ResyncHi < header.ResyncLo || header.ResyncHi > header.ChunkCount)
        {
            return new(MetadataBlockStatus.Invalid, null, $"bitmap slot header fields out of range: slot {header.Slot}, chunks {header.ChunkCount}, resync {header.ResyncLo}..{header.ResyncHi}");
        }

        return new(MetadataBlockStatus.Valid, header, "valid");
    }

    private static bool Precheck(ReadOnlySpan<byte> block, ulong magic, string what, out MetadataBlockStatus status, out string reason)
    {
        if (!block.ContainsAnyExcept((byte)0))
        {
            (status, reason) = (MetadataBlockStatus.Blank, $"no {what}: the block is all zeroes (never formatted)");
            return false;
        }

        var foundMagic = BinaryPrimitives.ReadUInt64LittleEndian(block[SbMagic..]);
        if (foundMagic != magic)
        {
            (status, reason) = (MetadataBlockStatus.Unknown, $"no Lockstep {what}: magic 0x{foundMagic:X16} is not 0x{magic:X16}");
            return false;
        }

        var version = BinaryPrimitives.ReadUInt32LittleEndian(block[SbVersion..]);
        if (version != LegFormat.Version)
        {
            (status, reason) = (MetadataBlockStatus.UnsupportedVersion, $"{what} has format version {version}; this build reads version {LegFormat.Version}");
            return false;
        }

        var stored = BinaryPrimitives.ReadUInt32LittleEndian(block[ChecksumOffset..]);
        var computed = Crc32C.Compute(block[..ChecksumOffset]);
        if (stored != computed)
        {
            (status, reason) = (MetadataBlockStatus.Torn, $"{what} checksum 0x{stored:X8} does not match its content (0x{computed:X8}): torn write or corruption");
            return false;
        }

        (status, reason) = (MetadataBlockStatus.Valid, "valid");
        return true;
    }

    private static void Seal(Span<byte> block) =>
        BinaryPrimitives.WriteUInt32LittleEndian(block[ChecksumOffset..], Crc32C.Compute(block[..ChecksumOffset]));

    private static void CheckBlock(ReadOnlySpan<byte> block)
    {
        if (block.Length != LegFormat.BlockSize)
        {
            throw new ArgumentException($"a metadata block is {LegFormat.BlockSize} bytes, got {block.Length}");
        }
    }

    private static byte[] TruncateUtf8(string name)
    {
        var bytes = Encoding.UTF8.GetBytes(name);
        if (bytes.Length <= LegFormat.MaxStoredNameBytes)
        {
            return bytes;
        }

        // Cut on a character boundary so the stored name always decodes.
        var length = LegFormat.MaxStoredNameBytes;
        while (length > 0 && (bytes[length] & 0xC0) == 0x80)
        {
            length--;
        }

        return bytes[..length];
    }
}
