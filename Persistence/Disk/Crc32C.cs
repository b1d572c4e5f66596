using System.Runtime.Intrinsics.X86;

namespace Lockstep.Persistence.Disk;

/// <summary>
/// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and btrfs metadata: catches every burst of up to
/// 32 flipped bits, so a torn or corrupted metadata block is told apart from a valid one.
/// System.IO.Hashing is not among the pinned packages, hence this small implementation; it uses the
/// SSE4.2 instruction where the CPU has it.
/// </summary>
public static class Crc32C
{
    private const uint Polynomial = 0x82F63B78; // reflected Castagnoli polynomial
    private static readonly uint[] Table = BuildTable();

    /// <summary>CRC-32C of <paramref name="data"/> (initial value and final xor 0xFFFFFFFF, as everyone uses it).</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => ~Append(0xFFFFFFFF, data);

    private static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        if (Sse42.X64.IsSupported)
        {
            ulong c = crc;
            while (data.Length >= 8)
            {
                c = Sse42.X64.Crc32(c, BitConverter.ToUInt64(data));
                data = data[8..];
            }

            crc = (uint)c;
        }

        foreach (var b in data)
        {
            crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        }

        return crc;
    }

    /// <summary>The portable path, exposed so tests can check both give the same value.</summary>
    internal static uint ComputePortable(ReadOnlySpan<byte> data)
    {
        var crc = 0xFFFFFFFF;
        foreach (var b in data)
        {
            crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        }

        return ~crc;
    }

    private static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            var c = i;
            for (var k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? (c >> 1) ^ Polynomial : c >> 1;
            }

            table[i] = c;
        }

        return table;
    }
}
