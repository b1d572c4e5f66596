using System.Buffers.Binary;
using System.Text;
using CsCheck;
using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Xunit;

namespace Lockstep.Persistence.Tests.Disk;

public sealed class LegCodecTests
{
    private static readonly LegSuperblock Sample = new(LegFormat.Version, Guid.NewGuid(), Guid.NewGuid(), 42,
        new VolumeGeometry(4L << 30, 1 << 20, 8), LegLayout.For(new VolumeGeometry(4L << 30, 1 << 20, 8)).DataOffset, 1_700_000_000, "demo");

    private static readonly BitmapSlotHeader SampleSlot = new(LegFormat.Version, 3, Guid.NewGuid(), 7, 4096, 10, 20);

    [Fact]
    public void Crc32c_matches_the_published_check_value()
    {
        var data = Encoding.ASCII.GetBytes("123456789");
        Assert.Equal(0xE3069283u, Crc32C.Compute(data));
        Assert.Equal(0xE3069283u, Crc32C.ComputePortable(data));
    }

    [Fact]
    public void Crc32c_hardware_and_portable_paths_agree() =>
        Gen.Byte.Array[0, 5000].Sample(bytes => Assert.Equal(Crc32C.ComputePortable(bytes), Crc32C.Compute(bytes)));

    [Fact]
    public void Superblock_round_trips_for_any_valid_geometry()
    {
        var geometry = from size in Gen.Long[1, 1L << 28]
                       from chunkShift in Gen.Int[16, 26]
                       from nodes in Gen.Int[1, LegFormat.MaxNodes]
                       select new VolumeGeometry(size * LegFormat.BlockSize, 1 << chunkShift, nodes);
        var gen = from g in geometry
                  from events in Gen.Long[0, long.MaxValue]
                  from name in Gen.String[Gen.Char["abcXYZ-_.é中ß"], 0, 200]
                  from created in Gen.Long
                  select new LegSuperblock(LegFormat.Version, Guid.NewGuid(), Guid.NewGuid(), events, g, LegLayout.For(g).DataOffset, created, name);
        gen.Sample(sb =>
        {
            var block = new byte[LegFormat.BlockSize];
            LegCodec.EncodeSuperblock(sb, block);
            var decoded = LegCodec.DecodeSuperblock(block);
            Assert.True(decoded.IsValid, decoded.Reason);
            var back = decoded.Value!;
            Assert.Equal(sb with { VolumeName = back.VolumeName }, back);
            // Names are kept up to 128 UTF-8 bytes, cut on a character boundary.
            Assert.StartsWith(back.VolumeName, sb.VolumeName, StringComparison.Ordinal);
            Assert.True(Encoding.UTF8.GetByteCount(back.VolumeName) <= LegFormat.MaxStoredNameBytes);
            if (Encoding.UTF8.GetByteCount(sb.VolumeName) <= LegFormat.MaxStoredNameBytes)
            {
                Assert.Equal(sb.VolumeName, back.VolumeName);
            }
        });
    }

    [Fact]
    public void Every_single_corrupted_byte_of_a_superblock_is_refused()
    {
        var block = new byte[LegFormat.BlockSize];
        LegCodec.EncodeSuperblock(Sample, block);
        for (var i = 0; i < block.Length; i++)
        {
            var copy = (byte[])block.Clone();
            copy[i] ^= 0x5A;
            var decoded = LegCodec.DecodeSuperblock(copy);
            Assert.False(decoded.IsValid, $"byte {i} flipped but the superblock decoded as valid");
            Assert.Null(decoded.Value);
            var expected = i < 8 ? MetadataBlockStatus.Unknown : i is >= 8 and < 12 ? MetadataBlockStatus.UnsupportedVersion : MetadataBlockStatus.Torn;
            Assert.Equal(expected, decoded.Status);
        }
    }

    [Fact]
    public void Every_single_corrupted_byte_of_a_slot_header_is_refused()
    {
        var block = new byte[LegFormat.BlockSize];
        LegCodec.EncodeSlotHeader(SampleSlot, block);
        for (var i = 0; i < block.Length; i++)
        {
            var copy = (byte[])block.Clone();
            copy[i] ^= 0x01;
            Assert.False(LegCodec.DecodeSlotHeader(copy).IsValid, $"byte {i} flipped but the slot header decoded as valid");
        }
    }

    [Fact]
    public void A_torn_superblock_half_old_half_new_is_refused()
    {
        var older = new byte[LegFormat.BlockSize];
        var newer = new byte[LegFormat.BlockSize];
        LegCodec.EncodeSuperblock(Sample, older);
        LegCodec.EncodeSuperblock(Sample with { Events = 43 }, newer);
        // A 4 KiB write torn at a 512-byte sector boundary: first sector new, the rest old.
        var torn = (byte[])older.Clone();
        newer.AsSpan(0, 512).CopyTo(torn);
        var decoded = LegCodec.DecodeSuperblock(torn);
        Assert.Equal(MetadataBlockStatus.Torn, decoded.Status);
        Assert.Contains("torn", decoded.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Wrong_magic_is_unknown_and_blank_is_blank()
    {
        var block = new byte[LegFormat.BlockSize];
        Assert.Equal(MetadataBlockStatus.Blank, LegCodec.DecodeSuperblock(block).Status);
        Assert.Equal(MetadataBlockStatus.Blank, LegCodec.DecodeSlotHeader(block).Status);
        Encoding.ASCII.GetBytes("EFI PART").CopyTo(block, 0);
        var decoded = LegCodec.DecodeSuperblock(block);
        Assert.Equal(MetadataBlockStatus.Unknown, decoded.Status);
        Assert.Contains("magic", decoded.Reason, StringComparison.Ordinal);
        // A slot header is not a superblock and vice versa.
        LegCodec.EncodeSlotHeader(SampleSlot, block);
        Assert.Equal(MetadataBlockStatus.Unknown, LegCodec.DecodeSuperblock(block).Status);
        LegCodec.EncodeSuperblock(Sample, block);
        Assert.Equal(MetadataBlockStatus.Unknown, LegCodec.DecodeSlotHeader(block).Status);
    }

    [Fact]
    public void Another_format_version_is_refused_even_with_a_good_checksum()
    {
        var block = new byte[LegFormat.BlockSize];
        LegCodec.EncodeSuperblock(Sample, block);
        BinaryPrimitives.WriteUInt32LittleEndian(block.AsSpan(8), 2);
        Reseal(block);
        var decoded = LegCodec.DecodeSuperblock(block);
        Assert.Equal(MetadataBlockStatus.UnsupportedVersion, decoded.Status);
        Assert.Contains("version 2", decoded.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Contradicting_fields_with_a_good_checksum_are_invalid()
    {
        var block = new byte[LegFormat.BlockSize];
        LegCodec.EncodeSuperblock(Sample, block);
        BinaryPrimitives.WriteInt64LittleEndian(block.AsSpan(88), 4096); // data offset inside the bitmap area
        Reseal(block);
        Assert.Equal(MetadataBlockStatus.Invalid, LegCodec.DecodeSuperblock(block).Status);

        LegCodec.EncodeSuperblock(Sample, block);
        BinaryPrimitives.WriteInt32LittleEndian(block.AsSpan(64), 1000); // chunk size not a power of two
        Reseal(block);
        Assert.Equal(MetadataBlockStatus.Invalid, LegCodec.DecodeSuperblock(block).Status);

        LegCodec.EncodeSlotHeader(SampleSlot, block);
        BinaryPrimitives.WriteInt64LittleEndian(block.AsSpan(56), 5000); // resync hi beyond the chunk count
        Reseal(block);
        Assert.Equal(MetadataBlockStatus.Invalid, LegCodec.DecodeSlotHeader(block).Status);
    }

    [Fact]
    public void Slot_header_round_trips()
    {
        var gen = from slot in Gen.Int[0, LegFormat.MaxNodes - 1]
                  from chunks in Gen.Long[1, 1L << 30]
                  from lo in Gen.Long[0, chunks]
                  from hi in Gen.Long[lo, chunks]
                  from events in Gen.Long[0, long.MaxValue]
                  select new BitmapSlotHeader(LegFormat.Version, slot, Guid.NewGuid(), events, chunks, lo, hi);
        gen.Sample(header =>
        {
            var block = new byte[LegFormat.BlockSize];
            LegCodec.EncodeSlotHeader(header, block);
            var decoded = LegCodec.DecodeSlotHeader(block);
            Assert.True(decoded.IsValid, decoded.Reason);
            Assert.Equal(header, decoded.Value);
        });
    }

    [Fact]
    public void Set_bits_lists_chunks_in_order_and_ignores_bits_past_the_end()
    {
        var bits = new byte[4];
        bits[0] = 0b1000_0101;
        bits[2] = 0xFF;
        Assert.Equal(new long[] { 0, 2, 7, 16, 17, 18, 19 }, LegMetadata.SetBits(bits, 20));
    }

    private static void Reseal(byte[] block) =>
        BinaryPrimitives.WriteUInt32LittleEndian(block.AsSpan(LegCodec.ChecksumOffset), Crc32C.Compute(block.AsSpan(0, LegCodec.ChecksumOffset)));
}
