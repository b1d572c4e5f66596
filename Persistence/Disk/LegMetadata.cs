using Lockstep.Contracts.Disk;

namespace Lockstep.Persistence.Disk;

/// <summary>Reads and writes the metadata blocks of a leg (superblock, slot headers, slot bits) through <see cref="ILegDevice"/>.</summary>
public static class LegMetadata
{
    private static AlignedBufferPool Pool => AlignedBufferPool.Shared;

    public static async ValueTask<Decoded<LegSuperblock>> ReadSuperblockAsync(ILegDevice leg, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(leg);
        var buffer = Pool.Rent(LegFormat.BlockSize);
        try
        {
            var block = buffer.All[..LegFormat.BlockSize];
            await leg.ReadAsync(0, block, cancellation).ConfigureAwait(false);
            return LegCodec.DecodeSuperblock(block.Span);
        }
        finally
        {
            Pool.Return(buffer);
        }
    }

    /// <summary>Writes the superblock and, with <paramref name="flush"/>, makes it durable before returning.</summary>
    public static async ValueTask WriteSuperblockAsync(ILegDevice leg, LegSuperblock superblock, bool flush, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(leg);
        var buffer = Pool.Rent(LegFormat.BlockSize);
        try
        {
            var block = buffer.All[..LegFormat.BlockSize];
            LegCodec.EncodeSuperblock(superblock, block.Span);
            await leg.WriteAsync(0, block, cancellation).ConfigureAwait(false);
            if (flush)
            {
                await leg.FlushAsync(cancellation).ConfigureAwait(false);
            }
        }
        finally
        {
            Pool.Return(buffer);
        }
    }

    public static async ValueTask<Decoded<BitmapSlotHeader>> ReadSlotHeaderAsync(ILegDevice leg, LegLayout layout, int slot, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(leg);
        var buffer = Pool.Rent(LegFormat.BlockSize);
        try
        {
            var block = buffer.All[..LegFormat.BlockSize];
            await leg.ReadAsync(layout.SlotOffset(slot), block, cancellation).ConfigureAwait(false);
            return LegCodec.DecodeSlotHeader(block.Span);
        }
        finally
        {
            Pool.Return(buffer);
        }
    }

    public static async ValueTask WriteSlotHeaderAsync(ILegDevice leg, LegLayout layout, BitmapSlotHeader header, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(leg);
        ArgumentNullException.ThrowIfNull(header);
        var buffer = Pool.Rent(LegFormat.BlockSize);
        try
        {
            var block = buffer.All[..LegFormat.BlockSize];
            LegCodec.EncodeSlotHeader(header, block.Span);
            await leg.WriteAsync(layout.SlotOffset(header.Slot), block, cancellation).ConfigureAwait(false);
        }
        finally
        {
            Pool.Return(buffer);
        }
    }

    /// <summary>Reads the bits of a slot into <paramref name="bits"/> (at least <see cref="LegLayout.SlotBitsBytes"/> long).</summary>
    public static async ValueTask ReadSlotBitsAsync(ILegDevice leg, LegLayout layout, int slot, byte[] bits, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(leg);
        ArgumentNullException.ThrowIfNull(bits);
        const int piece = 1 << 20;
        var buffer = Pool.Rent(piece);
        try
        {
            for (long done = 0; done < layout.SlotBitsBytes; done += piece)
            {
                var count = (int)Math.Min(piece, layout.SlotBitsBytes - done);
                await leg.ReadAsync(layout.SlotBitsOffset(slot) + done, buffer.All[..count], cancellation).ConfigureAwait(false);
                buffer.All.Span[..count].CopyTo(bits.AsSpan((int)done));
            }
        }
        finally
        {
            Pool.Return(buffer);
        }
    }

    /// <summary>Writes bit block <paramref name="blockIndex"/> of a slot from the in-memory bits (which must cover whole blocks).</summary>
    public static async ValueTask WriteSlotBitsBlockAsync(ILegDevice leg, LegLayout layout, int slot, long blockIndex, ReadOnlyMemory<byte> block, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(leg);
        await leg.WriteAsync(layout.SlotBitsOffset(slot) + blockIndex * LegFormat.BlockSize, block, cancellation).ConfigureAwait(false);
    }

    /// <summary>Chunk indexes whose bit is set, in ascending order.</summary>
    public static List<long> SetBits(ReadOnlySpan<byte> bits, long chunkCount)
    {
        var result = new List<long>();
        var bytes = (int)Math.Min(bits.Length, (chunkCount + 7) / 8);
        for (var i = 0; i < bytes; i++)
        {
            var b = bits[i];
            while (b != 0)
            {
                var bit = System.Numerics.BitOperations.TrailingZeroCount(b);
                var chunk = (long)i * 8 + bit;
                if (chunk < chunkCount)
                {
                    result.Add(chunk);
                }

                b &= (byte)(b - 1);
            }
        }

        return result;
    }
}
