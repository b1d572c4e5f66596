using CsCheck;
using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Xunit;

namespace Lockstep.Contracts.Tests.Disk;

/// <summary>The leg layout arithmetic that the codec, the pipeline and docs/on-disk-format.md all rely on.</summary>
public sealed class LegLayoutTests
{
    [Fact]
    public void Layout_keeps_metadata_aligned_and_apart_from_data()
    {
        var gen = from size in Gen.Long[1, 1L << 28]
                  from chunkShift in Gen.Int[16, 26]
                  from nodes in Gen.Int[1, LegFormat.MaxNodes]
                  select new VolumeGeometry(size * LegFormat.BlockSize, 1 << chunkShift, nodes);
        gen.Sample(g =>
        {
            var layout = LegLayout.For(g);
            Assert.Equal(0, layout.DataOffset % LegFormat.DataAlignment);
            Assert.True(layout.DataOffset >= LegFormat.DataAlignment);
            Assert.True(layout.SlotBitsBytes * 8 >= layout.ChunkCount);
            for (var slot = 0; slot < g.MaxNodes; slot++)
            {
                Assert.Equal(0, layout.SlotOffset(slot) % LegFormat.BlockSize);
                Assert.True(layout.SlotOffset(slot) >= LegFormat.BlockSize);
            }

            Assert.True(layout.SlotOffset(g.MaxNodes - 1) + layout.SlotStride <= layout.DataOffset);
            Assert.Equal(layout.DataOffset + g.SizeBytes, layout.RequiredLength);
        });
    }

    [Fact]
    public void Documented_example_layout_holds()
    {
        // docs/on-disk-format.md: 4 GiB, 1 MiB chunks, 8 nodes.
        var layout = LegLayout.For(new VolumeGeometry(4L << 30, 1 << 20, 8));
        Assert.Equal(4096, layout.ChunkCount);
        Assert.Equal(4096, layout.SlotBitsBytes);
        Assert.Equal(8192, layout.SlotStride);
        Assert.Equal(4096 + 8192 * 3, layout.SlotOffset(3));
        Assert.Equal(1 << 20, layout.DataOffset);
    }

    [Theory]
    [InlineData(0L, 1 << 20, 8)]
    [InlineData(4097L, 1 << 20, 8)]
    [InlineData(1L << 30, 1000, 8)]
    [InlineData(1L << 30, 32 * 1024, 8)]
    [InlineData(1L << 30, 1 << 20, 0)]
    [InlineData(1L << 30, 1 << 20, 257)]
    public void Invalid_geometry_is_refused_with_a_reason(long size, int chunk, int nodes)
    {
        var e = Assert.Throws<ArgumentException>(() => LegLayout.For(new VolumeGeometry(size, chunk, nodes)));
        Assert.Matches("size|chunk|nodes", e.Message);
    }

    [Fact]
    public void The_last_partial_chunk_counts_as_a_chunk()
    {
        var geometry = new VolumeGeometry((1L << 20) + 4096, 1 << 20, 1);
        Assert.Equal(2, geometry.ChunkCount);
    }

    [Fact]
    public void The_magics_spell_their_names_in_little_endian()
    {
        Assert.Equal("LKSTPLEG", System.Text.Encoding.ASCII.GetString(BitConverter.GetBytes(LegFormat.SuperblockMagic)));
        Assert.Equal("LKSTPBMP", System.Text.Encoding.ASCII.GetString(BitConverter.GetBytes(LegFormat.SlotMagic)));
    }
}
