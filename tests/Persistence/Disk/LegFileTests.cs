using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Xunit;

namespace Lockstep.Persistence.Tests.Disk;

public sealed class LegFileTests : IDisposable
{
    private readonly TestDirectory _dir = new();
    private readonly AlignedBufferPool _pool = AlignedBufferPool.Shared;

    public void Dispose() => _dir.Dispose();

    private static VolumeDescriptor Descriptor(string name = "vol", long size = 8 << 20, params string[] paths) =>
        new(name, Guid.NewGuid(), new VolumeGeometry(size, 64 * 1024, 4),
            paths.Select(p => new LegDescriptor(Guid.NewGuid(), p, LegState.InSync)).ToArray(), 1);

    [Fact]
    public async Task A_leg_on_a_disk_filesystem_is_opened_with_O_DIRECT_and_round_trips_data()
    {
        var path = _dir.File("a.img");
        using var leg = LegFile.OpenOrCreate(path, 4 << 20);
        Assert.True(leg.DirectIo, "ext4 under /var/tmp accepts O_DIRECT");
        Assert.False(leg.IsBlockDevice);
        Assert.Equal(4 << 20, leg.Length);
        var buffer = _pool.Rent(65536);
        try
        {
            Random.Shared.NextBytes(buffer.All.Span[..65536]);
            var expected = buffer.All.Span[..65536].ToArray();
            await leg.WriteAsync(8192, buffer.All[..65536]);
            await leg.FlushAsync();
            buffer.All.Span.Clear();
            await leg.ReadAsync(8192, buffer.All[..65536]);
            Assert.Equal(expected, buffer.All.Span[..65536].ToArray());
        }
        finally
        {
            _pool.Return(buffer);
        }
    }

    [Fact]
    public async Task On_a_filesystem_refusing_O_DIRECT_the_leg_falls_back_to_buffered_io_and_still_works()
    {
        // tmpfs accepts O_DIRECT since Linux 6.6; ramfs still answers EINVAL, so mount one (the test runs as root).
        var mountPoint = _dir.File("ramfs");
        Directory.CreateDirectory(mountPoint);
        Run("mount", $"-t ramfs ramfs {mountPoint}");
        var path = Path.Combine(mountPoint, "leg.img");
        var logger = new ListLogger();
        try
        {
            using var leg = LegFile.OpenOrCreate(path, 1 << 20, logger);
            Assert.False(leg.DirectIo);
            Assert.Contains(logger.Lines, l => l.Contains("O_DIRECT", StringComparison.Ordinal));
            var buffer = _pool.Rent(4096);
            try
            {
                buffer.All.Span.Fill(0xAB);
                await leg.WriteAsync(4096, buffer.All[..4096]);
                await leg.FlushAsync();
                buffer.All.Span.Clear();
                await leg.ReadAsync(4096, buffer.All[..4096]);
                Assert.All(buffer.All.Span[..4096].ToArray(), b => Assert.Equal(0xAB, b));
            }
            finally
            {
                _pool.Return(buffer);
            }
        }
        finally
        {
            Run("umount", mountPoint);
        }
    }

    private static void Run(string file, string arguments)
    {
        using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(file, arguments) { RedirectStandardError = true })!;
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{file} {arguments} failed ({process.ExitCode}): {error} — this test mounts ramfs and needs root");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Zeroing_a_range_reads_back_zeroes_and_punching_reports_a_hole(bool mayPunchHole)
    {
        using var leg = LegFile.OpenOrCreate(_dir.File("z.img"), 4 << 20);
        var buffer = _pool.Rent(1 << 20);
        try
        {
            buffer.All.Span.Fill(0x77);
            await leg.WriteAsync(1 << 20, buffer.All[..(1 << 20)]);
            await leg.FlushAsync();
            // Unaligned on purpose: fallocate works at byte granularity on files.
            await leg.ZeroAsync((1 << 20) + 100, 700_000, mayPunchHole);
            await leg.ReadAsync(1 << 20, buffer.All[..(1 << 20)]);
            var span = buffer.All.Span;
            Assert.Equal(0x77, span[99]);
            Assert.True(span.Slice(100, 700_000).IndexOfAnyExcept((byte)0) < 0, "zeroed range must read as zeroes");
            Assert.Equal(0x77, span[700_100]);

            var runs = new List<(long Length, bool Hole)>();
            leg.GetAllocation(0, 4 << 20, runs);
            Assert.Equal(4L << 20, runs.Sum(r => r.Length));
            // The first MiB was never written: a hole. Data follows.
            Assert.True(runs[0].Hole);
            Assert.Equal(1L << 20, runs[0].Length);
            if (mayPunchHole)
            {
                // The whole 4 KiB blocks inside the zeroed range became a hole. (ZERO_RANGE leaves unwritten
                // extents, which ext4 may also report as a hole, so the no-hole case only checks the content.)
                Assert.Contains(runs, r => r.Hole && r.Length >= 4096 && r.Length < (3L << 20));
            }
        }
        finally
        {
            _pool.Return(buffer);
        }
    }

    [Fact]
    public async Task A_buffered_leg_reads_cached_pages_inline_and_the_rest_from_the_disk()
    {
        var path = _dir.File("wb.img");
        LegFile.OpenOrCreate(path, 4 << 20).Dispose();
        using var leg = LegFile.Open(path, writable: true, direct: false);
        Assert.False(leg.DirectIo);
        var buffer = _pool.Rent(3 * 4096);
        try
        {
            var expected = new byte[3 * 4096];
            Random.Shared.NextBytes(expected);
            expected.CopyTo(buffer.All.Span);
            await leg.WriteDurableAsync(65536, buffer.All[..expected.Length]);

            // Just written: in the page cache, so the read completes on this thread (RWF_NOWAIT), with no pool hop.
            buffer.All.Span.Clear();
            var cached = leg.ReadAsync(65536, buffer.All[..expected.Length]);
            Assert.True(cached.IsCompletedSuccessfully, "a read of cached pages should complete inline");
            await cached;
            Assert.Equal(expected, buffer.All.Span[..expected.Length].ToArray());

            // Nothing cached, then only the first block cached: the uncached part comes from the disk, all of it correct.
            leg.DropCachedPages();
            buffer.All.Span.Clear();
            await leg.ReadAsync(65536, buffer.All[..expected.Length]);
            Assert.Equal(expected, buffer.All.Span[..expected.Length].ToArray());
            leg.DropCachedPages();
            await leg.ReadAsync(65536, buffer.All[..4096]);
            buffer.All.Span.Clear();
            await leg.ReadAsync(65536, buffer.All[..expected.Length]);
            Assert.Equal(expected, buffer.All.Span[..expected.Length].ToArray());

            var past = await Assert.ThrowsAsync<IOException>(async () => await leg.ReadAsync((4 << 20) - 4096, buffer.All[..8192]));
            Assert.Contains("short read", past.Message);
        }
        finally
        {
            _pool.Return(buffer);
        }
    }

    [Fact]
    public async Task A_buffered_leg_writes_on_the_calling_thread_and_reports_failures_in_the_task()
    {
        var path = _dir.File("inline.img");
        LegFile.OpenOrCreate(path, 4 << 20).Dispose();
        var buffer = _pool.Rent(2 * 4096);
        try
        {
            var expected = new byte[2 * 4096];
            Random.Shared.NextBytes(expected);
            expected.CopyTo(buffer.All.Span);
            using (var leg = LegFile.Open(path, writable: true, direct: false))
            {
                // A buffered write copies into the page cache: done before the call returns, no pool hop.
                var write = leg.WriteOnCallerAsync(8192, buffer.All[..expected.Length]);
                Assert.True(write.IsCompletedSuccessfully, "a buffered write should complete on the calling thread");
                await write;
                await leg.FlushAsync();
                leg.DropCachedPages();
                buffer.All.Span.Clear();
                await leg.ReadAsync(8192, buffer.All[..expected.Length]);
                Assert.Equal(expected, buffer.All.Span[..expected.Length].ToArray());

                // Errors come back in the task (the pipeline fails the leg from there), never thrown at the caller.
                var past = leg.WriteOnCallerAsync((4 << 20) - 4096, buffer.All[..8192]);
                Assert.True(past.IsFaulted);
                Assert.Contains("past its end", (await Assert.ThrowsAsync<IOException>(async () => await past)).Message);
            }

            using (var readOnly = LegFile.Open(path, writable: false, direct: false))
            {
                var refused = readOnly.WriteOnCallerAsync(0, buffer.All[..4096]);
                Assert.True(refused.IsFaulted, "pwrite on a read-only descriptor fails (EBADF)");
                await Assert.ThrowsAsync<IOException>(async () => await refused);
            }

            // An O_DIRECT leg takes its usual asynchronous write; the data lands all the same.
            expected.AsSpan().Reverse();
            expected.CopyTo(buffer.All.Span);
            using (var direct = LegFile.Open(path, writable: true, direct: true))
            {
                Assert.True(direct.DirectIo);
                await direct.WriteOnCallerAsync(8192, buffer.All[..expected.Length]);
                buffer.All.Span.Clear();
                await direct.ReadAsync(8192, buffer.All[..expected.Length]);
                Assert.Equal(expected, buffer.All.Span[..expected.Length].ToArray());
            }
        }
        finally
        {
            _pool.Return(buffer);
        }
    }

    [Fact]
    public void Opening_a_missing_leg_says_so()
    {
        var e = Assert.Throws<IOException>(() => LegFile.Open(_dir.File("nope.img"), writable: true));
        Assert.Contains("nope.img", e.Message, StringComparison.Ordinal);
        Assert.Contains("No such file", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Formatting_creates_the_leg_at_its_size_and_probe_reads_it_back()
    {
        var path = _dir.File("a.img");
        var d = Descriptor("demo", 8 << 20, path);
        var sb = await LegFormatter.CreateAsync(path, d, d.Legs[0].LegId);
        var layout = LegLayout.For(d.Geometry);
        Assert.Equal(layout.RequiredLength, new FileInfo(path).Length);
        var probe = LegProbe.Read(path, d.VolumeId, d.Legs[0].LegId);
        Assert.True(probe.IsOk, probe.Reason);
        Assert.Equal(sb, probe.Superblock);
        Assert.Equal("demo", probe.Superblock!.VolumeName);
        Assert.Equal(1, probe.Superblock.Events);

        using var leg = LegFile.Open(path, writable: false);
        for (var slot = 0; slot < d.Geometry.MaxNodes; slot++)
        {
            var header = await LegMetadata.ReadSlotHeaderAsync(leg, layout, slot);
            Assert.True(header.IsValid, header.Reason);
            Assert.Equal(slot, header.Value!.Slot);
            Assert.Equal(layout.ChunkCount, header.Value.ChunkCount);
            var bits = new byte[layout.SlotBitsBytes];
            await LegMetadata.ReadSlotBitsAsync(leg, layout, slot, bits);
            Assert.Empty(LegMetadata.SetBits(bits, layout.ChunkCount));
        }
    }

    [Fact]
    public async Task Formatting_refuses_a_leg_of_another_volume_and_another_leg_of_the_same_volume()
    {
        var path = _dir.File("a.img");
        var first = Descriptor("first", 8 << 20, path, _dir.File("b.img"));
        await LegFormatter.CreateAsync(path, first, first.Legs[0].LegId);

        var second = Descriptor("second", 8 << 20, path);
        var e = await Assert.ThrowsAsync<LegFormatException>(() => LegFormatter.CreateAsync(path, second, second.Legs[0].LegId));
        Assert.Contains("another volume", e.Message, StringComparison.Ordinal);
        Assert.Contains("'first'", e.Message, StringComparison.Ordinal);

        var other = await Assert.ThrowsAsync<LegFormatException>(() => LegFormatter.CreateAsync(path, first, first.Legs[1].LegId));
        Assert.Contains($"not leg {first.Legs[1].LegId}", other.Message, StringComparison.Ordinal);

        // The same leg again (a create retried after a crash) is fine.
        await LegFormatter.CreateAsync(path, first, first.Legs[0].LegId);
        Assert.Equal(LegProbeStatus.OtherVolume, LegProbe.Read(path, second.VolumeId).Status);
    }

    [Fact]
    public async Task A_torn_superblock_is_reported_and_not_formatted_over()
    {
        var path = _dir.File("a.img");
        var d = Descriptor("demo", 8 << 20, path);
        await LegFormatter.CreateAsync(path, d, d.Legs[0].LegId);
        await using (var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite))
        {
            stream.Position = 200; // inside the checksummed area, outside magic and version
            stream.WriteByte(0xEE);
        }

        var probe = LegProbe.Read(path, d.VolumeId, d.Legs[0].LegId);
        Assert.Equal(LegProbeStatus.Torn, probe.Status);
        Assert.Contains("torn", probe.Reason, StringComparison.Ordinal);
        var e = await Assert.ThrowsAsync<LegFormatException>(() => LegFormatter.CreateAsync(path, Descriptor("x", 8 << 20, path), Guid.NewGuid()));
        Assert.Contains("torn", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Foreign_data_is_unknown_and_only_overwritten_with_force()
    {
        var path = _dir.File("foreign.img");
        await File.WriteAllBytesAsync(path, Enumerable.Repeat((byte)0x42, 16384).ToArray());
        Assert.Equal(LegProbeStatus.Unknown, LegProbe.Read(path).Status);
        var d = Descriptor("demo", 8 << 20, path);
        var e = await Assert.ThrowsAsync<LegFormatException>(() => LegFormatter.CreateAsync(path, d, d.Legs[0].LegId));
        Assert.Contains("not a Lockstep leg", e.Message, StringComparison.Ordinal);
        await LegFormatter.CreateAsync(path, d, d.Legs[0].LegId, force: true);
        Assert.True(LegProbe.Read(path, d.VolumeId, d.Legs[0].LegId).IsOk);
        // The old bytes were zeroed so that legs start identical.
        var data = await File.ReadAllBytesAsync(path);
        Assert.True(LegCodec.DecodeSlotHeader(data.AsSpan(LegFormat.BlockSize, LegFormat.BlockSize)).IsValid);
        Assert.True(data.AsSpan((int)LegLayout.For(d.Geometry).DataOffset, 16384).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public async Task A_leg_shorter_than_its_volume_is_too_small()
    {
        var path = _dir.File("a.img");
        var d = Descriptor("demo", 8 << 20, path);
        await LegFormatter.CreateAsync(path, d, d.Legs[0].LegId);
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite))
        {
            stream.SetLength(stream.Length - 4096);
        }

        var probe = LegProbe.Read(path, d.VolumeId, d.Legs[0].LegId);
        Assert.Equal(LegProbeStatus.TooSmall, probe.Status);
        Assert.Contains("needs", probe.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_moved_leg_is_found_by_its_uuids_in_a_candidate_folder()
    {
        var a = _dir.File("a.img");
        var b = _dir.File("b.img");
        var d = Descriptor("demo", 8 << 20, a, b);
        await LegFormatter.CreateAsync(a, d, d.Legs[0].LegId);
        await LegFormatter.CreateAsync(b, d, d.Legs[1].LegId);
        var elsewhere = Path.Combine(_dir.Path, "moved");
        Directory.CreateDirectory(elsewhere);
        File.Move(b, Path.Combine(elsewhere, "renamed.img"));
        await File.WriteAllTextAsync(Path.Combine(elsewhere, "junk.txt"), "not a leg");

        Assert.Equal(LegProbeStatus.Missing, LegProbe.Read(b).Status);
        var found = LegLocator.Find(d.VolumeId, d.Legs[1].LegId, b, [_dir.Path, elsewhere]);
        Assert.NotNull(found);
        Assert.Equal(Path.Combine(elsewhere, "renamed.img"), found.Path);
        Assert.Null(LegLocator.Find(d.VolumeId, Guid.NewGuid(), b, [_dir.Path, elsewhere]));
    }
}
