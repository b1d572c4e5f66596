using System.Diagnostics;
using System.Text.RegularExpressions;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Xunit;
using static Lockstep.Actors.Tests.BlockIo.VolumeTestKit;

namespace Lockstep.Actors.Tests.BlockIo;

/// <summary>
/// Direct and writeback cache modes on real leg files (ext4 under /var/tmp). What is durable is read from the disk
/// allocation with <c>filefrag</c>: the data area of a new leg is a hole, so a buffered write into it is a
/// <em>delalloc</em> extent (only in the page cache) until the kernel writes it out; after fdatasync or a
/// RWF_DSYNC write the range is allocated on disk.
/// </summary>
public sealed partial class CacheModeTests : IDisposable
{
    private const int Block = LegFormat.BlockSize;
    private readonly ScratchDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(VolumeCacheMode.Direct, true)]
    [InlineData(VolumeCacheMode.Writeback, false)]
    public async Task Legs_are_opened_with_O_DIRECT_only_in_direct_mode(VolumeCacheMode cache, bool direct)
    {
        var descriptor = await CreateAsync(_dir);
        var (volume, legs) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { Cache = cache });
        await using (volume)
        {
            Assert.Equal(cache, volume.Cache);
            Assert.All(legs.Values, l => Assert.Equal(direct, l.DirectIo));
        }
    }

    [Theory]
    [InlineData(VolumeCacheMode.Direct)]
    [InlineData(VolumeCacheMode.Writeback)]
    public async Task Flush_and_fua_put_the_data_on_the_disk_of_every_leg(VolumeCacheMode cache)
    {
        var descriptor = await CreateAsync(_dir, size: 16 << 20, chunk: 64 * 1024);
        var layout = LegLayout.For(descriptor.Geometry);
        var (volume, legs) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { Cache = cache, BitmapClearDelay = TimeSpan.FromHours(1) });
        await using (volume)
        {
            // A plain write: O_DIRECT puts it on the disk at once; writeback leaves it in the page cache.
            await volume.WriteAsync(0, Pattern(64 * 1024, 1), forceUnitAccess: false);
            // The write-intent bit is durable before the data write in both modes (never a delalloc bitmap block).
            foreach (var leg in descriptor.Legs)
            {
                Assert.False(IsDelalloc(leg.Path, layout.SlotBitsOffset(0), Block), $"{cache}: bitmap block of {leg.Path} is only in the page cache");
                Assert.Equal(cache == VolumeCacheMode.Writeback, IsDelalloc(leg.Path, layout.DataOffset, 64 * 1024));
            }

            await volume.FlushAsync();
            foreach (var leg in descriptor.Legs)
            {
                Assert.False(IsDelalloc(leg.Path, layout.DataOffset, 64 * 1024), $"{cache}: data still only in the page cache of {leg.Path} after FLUSH");
            }

            Assert.All(legs.Values, l => Assert.True(l.Flushes >= 1, "FLUSH must fdatasync every leg"));

            // FUA makes its own range durable, and only that: a buffered leg is not fdatasync'ed as a whole.
            var flushesBefore = legs.Values.Select(l => l.Flushes).ToArray();
            await volume.WriteAsync(2 << 20, Pattern(Block, 2), forceUnitAccess: false);
            await volume.WriteAsync(1 << 20, Pattern(Block, 3), forceUnitAccess: true);
            foreach (var leg in descriptor.Legs)
            {
                Assert.False(IsDelalloc(leg.Path, layout.DataOffset + (1 << 20), Block), $"{cache}: FUA write of {leg.Path} is only in the page cache");
                Assert.Equal(cache == VolumeCacheMode.Writeback, IsDelalloc(leg.Path, layout.DataOffset + (2 << 20), Block));
            }

            Assert.All(legs.Values, l => Assert.Contains(layout.DataOffset + (1 << 20), l.DurableWrites));
            if (cache == VolumeCacheMode.Writeback)
            {
                Assert.Equal(flushesBefore, legs.Values.Select(l => l.Flushes).ToArray());
            }

            Assert.Equal(Pattern(Block, 3), await ReadAsync(volume, 1 << 20));
            Assert.Equal(Pattern(Block, 2), await ReadAsync(volume, 2 << 20));
        }

        // A clean close syncs the data before it clears the bits: nothing is left only in the page cache.
        foreach (var leg in descriptor.Legs)
        {
            Assert.False(IsDelalloc(leg.Path, layout.DataOffset, 4 << 20), $"{cache}: data left in the page cache of {leg.Path} after close");
            Assert.Empty(await BitsOnDiskAsync(leg.Path, descriptor.Geometry));
        }
    }

    [Fact]
    public async Task Writeback_clears_a_bit_only_after_the_chunk_data_is_on_disk()
    {
        var descriptor = await CreateAsync(_dir, size: 16 << 20, chunk: 64 * 1024);
        var layout = LegLayout.For(descriptor.Geometry);
        var (volume, _) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { Cache = VolumeCacheMode.Writeback, BitmapClearDelay = TimeSpan.FromMilliseconds(50) });
        await using (volume)
        {
            await volume.WriteAsync(3 * 64 * 1024, Pattern(Block, 4), forceUnitAccess: false);
            Assert.Equal([3L], await BitsOnDiskAsync(descriptor.Legs[0].Path, descriptor.Geometry));

            await Within(volume.WhenBitmapCleanAsync(), "the idle chunk's bit to be cleared");

            foreach (var leg in descriptor.Legs)
            {
                Assert.Empty(await BitsOnDiskAsync(leg.Path, descriptor.Geometry));
                Assert.False(IsDelalloc(leg.Path, layout.DataOffset + 3 * 64 * 1024, Block), $"bit cleared while the data of {leg.Path} was only in the page cache");
            }
        }
    }

    [Fact]
    public async Task Writeback_open_drops_pages_cached_before_it()
    {
        var descriptor = await CreateAsync(_dir, size: 16 << 20, chunk: 64 * 1024);
        var layout = LegLayout.For(descriptor.Geometry);
        // Read the leg files through the page cache so their pages are resident, as after an earlier buffered use.
        foreach (var leg in descriptor.Legs)
        {
            await using var file = File.OpenRead(leg.Path);
            file.Position = layout.DataOffset;
            var buffer = new byte[1 << 20];
            await file.ReadExactlyAsync(buffer);
        }

        Assert.All(descriptor.Legs, l => Assert.True(ResidentPages(l.Path, layout.DataOffset, 1 << 20) > 0, "the pages should be cached before the open"));
        var (volume, _) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { Cache = VolumeCacheMode.Writeback });
        await using (volume)
        {
            Assert.All(descriptor.Legs, l => Assert.Equal(0, ResidentPages(l.Path, layout.DataOffset, 1 << 20)));
        }
    }

    private static async Task<byte[]> ReadAsync(MirrorVolume volume, long offset)
    {
        var data = new byte[Block];
        await volume.ReadAsync(offset, data);
        return data;
    }

    /// <summary>Whether any 4 KiB block of [offset, +length) of the file is a delalloc extent (in the page cache only).</summary>
    private static bool IsDelalloc(string path, long offset, int length)
    {
        var first = offset / Block;
        var last = (offset + length - 1) / Block;
        foreach (var line in Run("filefrag", "-v", "-b4096", path).Split('\n'))
        {
            var match = ExtentLine().Match(line);
            if (match.Success && line.Contains("delalloc", StringComparison.Ordinal))
            {
                var start = long.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                var end = long.Parse(match.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
                if (start <= last && end >= first)
                {
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>Pages of [offset, +length) in the page cache, counted with mincore(2) over a read-only mapping.</summary>
    private static unsafe int ResidentPages(string path, long offset, int length)
    {
        using var file = File.OpenHandle(path);
        using var map = System.IO.MemoryMappedFiles.MemoryMappedFile.CreateFromFile(file, null, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read,
            HandleInheritability.None, leaveOpen: true);
        using var view = map.CreateViewAccessor(offset, length, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read);
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        try
        {
            var pages = length / Environment.SystemPageSize;
            var vector = new byte[pages];
            fixed (byte* v = vector)
            {
                if (MinCore(pointer + view.PointerOffset, (nuint)length, v) != 0)
                {
                    throw new IOException($"mincore failed: errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
                }
            }

            return vector.Count(b => (b & 1) != 0);
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "mincore", SetLastError = true)]
    private static unsafe partial int MinCore(byte* address, nuint length, byte* vector);

    private static string Run(string tool, params string[] args)
    {
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{tool} did not start (install e2fsprogs)");
        var stdout = process.StandardOutput.ReadToEnd();
        var stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        return process.ExitCode == 0 ? stdout : throw new InvalidOperationException($"{tool} {string.Join(' ', args)} failed ({process.ExitCode}): {stderr}");
    }

    // "   0:      100..     102:          0..         0:      0:             last,unknown_loc,delalloc"
    [GeneratedRegex(@"^\s*\d+:\s+(\d+)\.\.\s*(\d+):")]
    private static partial Regex ExtentLine();
}
