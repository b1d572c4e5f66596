using CsCheck;
using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Xunit;

namespace Lockstep.Contracts.Tests.Disk;

/// <summary>The leg layout arithmetic that the codec, the pipeline and docs/on-disk-format.md all rely on.</summary>
public sealed class LegLayoutTests
{
    [Fact]
    public void A_one_gib_volume_with_one_mib_chunks_and_sixteen_nodes_has_the_documented_layout()
    {
        var layout = LegLayout.For(new VolumeGeometry(1L << 30, 1 << 20, 16));

        Assert.Equal(1024, layout.ChunkCount);
        Assert.Equal(4096, layout.SlotBitsBytes);
        Assert.Equal(8192, layout.SlotStride);
        Assert.Equal(1 << 20, layout.DataOffset);
        Assert.Equal((1L << 30) + (1 << 20), layout.RequiredLength);
        Assert.Equal(4096, layout.SlotOffset(0));
        Assert.Equal(4096 + 8192 * 3, layout.SlotOffset(3));
        Assert.Equal(4096 + 8192 * 3 + 4096, layout.SlotBitsOffset(3));
    }

    [Fact]
    public void The_last_partial_chunk_counts_as_a_chunk()
    {
        var geometry = new VolumeGeometry((1L << 20) + 4096, 1 << 20, 1);
        Assert.Equal(2, geometry.ChunkCount);
    }

    [Theory]
    [InlineData(0L, 1 << 20, 4, "volume size")]
    [InlineData(4097L, 1 << 20, 4, "volume size")]
    [InlineData(1L << 30, 32 * 1024, 4, "chunk size")]
    [InlineData(1L << 30, 3 << 20, 4, "chunk size")]
    [InlineData(1L << 30, 1 << 20, 0, "max nodes")]
    [InlineData(1L << 30, 1 << 20, 257, "max nodes")]
    public void A_geometry_the_format_cannot_hold_is_refused_with_the_reason(long size, int chunk, int nodes, string reason)
    {
        var error = Assert.Throws<ArgumentException>(() => LegLayout.For(new VolumeGeometry(size, chunk, nodes)));
        Assert.Contains(reason, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Slots_and_data_never_overlap_and_everything_is_aligned_for_O_DIRECT()
    {
        var geometries =
            from blocks in Gen.Long[1, 1L << 22]
            from chunkShift in Gen.Int[16, 26]
            from nodes in Gen.Int[1, LegFormat.MaxNodes]
            select new VolumeGeometry(blocks * LegFormat.BlockSize, 1 << chunkShift, nodes);

        geometries.Sample(geometry =>
        {
            var layout = LegLayout.For(geometry);
            Assert.True(layout.SlotBitsBytes * 8 >= layout.ChunkCount, "a slot must hold one bit per chunk");
            Assert.True(layout.SlotOffset(geometry.MaxNodes - 1) + layout.SlotStride <= layout.DataOffset, "the last slot runs into the data area");
            Assert.True(layout.SlotOffset(0) >= LegFormat.BlockSize, "slot 0 overwrites the superblock");
            Assert.Equal(0, layout.DataOffset % LegFormat.DataAlignment);
            Assert.Equal(0, layout.SlotStride % LegFormat.BlockSize);
            Assert.Equal(layout.DataOffset + geometry.SizeBytes, layout.RequiredLength);
        });
    }

    [Fact]
    public void The_magics_spell_their_names_in_little_endian()
    {
        Assert.Equal("LKSTPLEG", System.Text.Encoding.ASCII.GetString(BitConverter.GetBytes(LegFormat.SuperblockMagic)));
        Assert.Equal("LKSTPBMP", System.Text.Encoding.ASCII.GetString(BitConverter.GetBytes(LegFormat.SlotMagic)));
    }
}
