using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;
using static Lockstep.Actors.Tests.BlockIo.VolumeTestKit;

namespace Lockstep.Actors.Tests.BlockIo;

public sealed class MirrorVolumeTests : IDisposable
{
    private readonly ScratchDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    // Writeback with two legs runs the second leg on a writer thread or on the request's thread (LegWriter); the
    // lengths below go both ways around ParallelLegWriteBytes (64 KiB).
    [Theory]
    [InlineData(VolumeCacheMode.Direct)]
    [InlineData(VolumeCacheMode.Writeback)]
    public async Task Concurrent_aligned_and_unaligned_writes_and_reads_verify_and_leave_the_legs_identical(VolumeCacheMode cache)
    {
        const int workers = 8;
        const long region = 2 << 20; // each worker owns a region, so its model is exact
        var descriptor = await CreateAsync(_dir, size: workers * region);
        var (volume, _) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { Cache = cache });
        await using (volume)
        {
            await Task.WhenAll(Enumerable.Range(0, workers).Select(w => Task.Run(async () =>
            {
                var random = new Random(w);
                var model = new byte[region];
                var baseOffset = w * region;
                for (var i = 0; i < 60; i++)
                {
                    var aligned = random.Next(2) == 0;
                    var length = aligned ? random.Next(1, 33) * 4096 : random.Next(1, 100_000);
                    var offset = aligned ? random.NextInt64(0, (region - length) / 4096) * 4096 : random.NextInt64(0, region - length);
                    var data = Pattern(length, random.Next());
                    await volume.WriteAsync(baseOffset + offset, data, forceUnitAccess: random.Next(10) == 0);
                    data.CopyTo(model, offset);

                    var readLength = random.Next(1, 200_000);
                    var readOffset = random.NextInt64(0, region - readLength);
                    var read = new byte[readLength];
                    await volume.ReadAsync(baseOffset + readOffset, read);
                    Assert.True(model.AsSpan((int)readOffset, readLength).SequenceEqual(read), $"worker {w} read {readOffset}+{readLength} differs from what it wrote");
                }

                await volume.FlushAsync();
                var all = new byte[region];
                await volume.ReadAsync(baseOffset, all);
                Assert.True(model.AsSpan().SequenceEqual(all), $"worker {w} region differs at the end");
            })));

            var report = await volume.VerifyAsync();
            Assert.Equal(descriptor.Geometry.ChunkCount, report.ChunksCompared);
            Assert.Empty(report.DifferingChunks);
            Assert.True(report.Identical);
        }

        var offline = await VolumeVerifier.VerifyAsync(descriptor);
        Assert.True(offline.Identical, $"differing: {string.Join(",", offline.DifferingChunks)}; {string.Join("; ", offline.Problems)}");
    }

    [Fact]
    public async Task Aligned_buffers_go_to_the_legs_without_a_bounce_and_read_back_on_both_paths()
    {
        // The NBD server hands 4 KiB-aligned pinned memory: such writes and reads skip the bounce buffer. Mix them
        // with misaligned memory over the same blocks, so each path reads what the other wrote.
        var descriptor = await CreateAsync(_dir, size: 8 << 20);
        var (volume, _) = await OpenAsync(descriptor);
        await using (volume)
        {
            var backing = GC.AllocateUninitializedArray<byte>((1 << 20) + 2 * 4096, pinned: true);
            var aligned = backing.AsMemory(AlignmentSkew(backing), 1 << 20);
            var misaligned = backing.AsMemory(AlignmentSkew(backing) + 512, 1 << 20);
            Pattern(1 << 20, 11).CopyTo(aligned);
            await volume.WriteAsync(1 << 20, aligned, forceUnitAccess: false);
            Pattern(1 << 20, 12).CopyTo(misaligned);
            await volume.WriteAsync(3 << 20, misaligned, forceUnitAccess: true);

            aligned.Span.Clear();
            await volume.ReadAsync(3 << 20, aligned);
            Assert.True(Pattern(1 << 20, 12).AsSpan().SequenceEqual(aligned.Span), "aligned read of a bounced write differs");
            misaligned.Span.Clear();
            await volume.ReadAsync(1 << 20, misaligned);
            Assert.True(Pattern(1 << 20, 11).AsSpan().SequenceEqual(misaligned.Span), "bounced read of an aligned write differs");

            await volume.FlushAsync();
            Assert.True((await volume.VerifyAsync()).Identical);
        }

        var offline = await VolumeVerifier.VerifyAsync(descriptor);
        Assert.True(offline.Identical, $"differing: {string.Join(",", offline.DifferingChunks)}");
    }

    private static unsafe int AlignmentSkew(byte[] pinned)
    {
        fixed (byte* p = pinned)
        {
            return (int)((4096 - ((nuint)p & 4095)) & 4095);
        }
    }

    [Fact]
    public async Task The_chunk_bit_is_on_disk_on_every_leg_before_the_first_data_write_reaches_a_leg()
    {
        var descriptor = await CreateAsync(_dir);
        var (volume, legs) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { BitmapClearDelay = TimeSpan.FromMinutes(10) });
        await using (volume)
        {
            var dataOffset = volume.Layout.DataOffset;
            var chunk = descriptor.Geometry.ChunkSizeBytes;
            var first = legs[descriptor.Legs[0].LegId];
            first.Hold((offset, _) => offset >= dataOffset);
            Assert.Empty(await BitsOnDiskAsync(descriptor.Legs[0].Path, descriptor.Geometry));

            var write = volume.WriteAsync(5L * chunk + 8192, Pattern(8192, 1), forceUnitAccess: false).AsTask();
            await Within(first.HeldArrived.Task, "the data write to reach leg 0");
            // The data write is at the leg: the bit must already be on disk, on both legs.
            foreach (var leg in descriptor.Legs)
            {
                Assert.Equal([5L], await BitsOnDiskAsync(leg.Path, descriptor.Geometry));
            }

            Assert.False(write.IsCompleted);
            first.Release();
            await Within(write, "the write to complete");
        }
    }

    [Fact]
    public async Task Bits_are_cleared_lazily_once_chunks_are_idle_and_a_clean_close_leaves_nothing_to_resync()
    {
        var descriptor = await CreateAsync(_dir);
        var (volume, _) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { BitmapClearDelay = TimeSpan.FromMilliseconds(200) });
        await using (volume)
        {
            var chunk = descriptor.Geometry.ChunkSizeBytes;
            await volume.WriteAsync(0, Pattern(4096, 1), false);
            await volume.WriteAsync(3L * chunk, Pattern(2 * chunk, 2), false); // chunks 3 and 4
            Assert.Equal([0L, 3L, 4L], await BitsOnDiskAsync(descriptor.Legs[1].Path, descriptor.Geometry));
            await Within(volume.WhenBitmapCleanAsync(), "the idle bits to be cleared on disk");
            foreach (var leg in descriptor.Legs)
            {
                Assert.Empty(await BitsOnDiskAsync(leg.Path, descriptor.Geometry));
            }

            await volume.WriteAsync(7L * chunk, Pattern(4096, 3), false);
        }

        // Closed cleanly with chunk 7 recently written: close cleared it.
        Assert.Empty(await BitsOnDiskAsync(descriptor.Legs[0].Path, descriptor.Geometry));
        var (again, _) = await OpenAsync(descriptor);
        await using (again)
        {
            Assert.Equal(0, again.Recovery.ChunksResynced);
            var read = new byte[4096];
            await again.ReadAsync(7L * descriptor.Geometry.ChunkSizeBytes, read);
            Assert.Equal(Pattern(4096, 3), read);
        }
    }

    [Fact]
    public async Task Many_concurrent_first_writes_into_clean_chunks_share_bitmap_flushes()
    {
        var descriptor = await CreateAsync(_dir, size: 64 << 20);
        var (volume, legs) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { BitmapClearDelay = TimeSpan.FromMinutes(10) });
        await using (volume)
        {
            var chunk = descriptor.Geometry.ChunkSizeBytes;
            var slotBits = volume.Layout.SlotBitsOffset(0);
            var leg = legs[descriptor.Legs[0].LegId];
            await Task.WhenAll(Enumerable.Range(0, 256).Select(i => volume.WriteAsync((long)i * chunk * 4, Pattern(4096, i), false).AsTask()));
            var bitmapWrites = leg.Writes.Count(o => o >= slotBits && o < volume.Layout.DataOffset);
            Assert.Equal(256, volume.DirtyChunkCount);
            Assert.True(bitmapWrites < 256, $"256 first writes into clean chunks caused {bitmapWrites} bitmap writes; group commit should batch them");
            Assert.Equal(256, (await BitsOnDiskAsync(descriptor.Legs[0].Path, descriptor.Geometry)).Count);
        }
    }

    [Fact]
    public async Task An_overlapping_write_waits_for_the_earlier_one_while_others_proceed()
    {
        var descriptor = await CreateAsync(_dir);
        var (volume, legs) = await OpenAsync(descriptor);
        await using (volume)
        {
            var dataOffset = volume.Layout.DataOffset;
            var leg0 = legs[descriptor.Legs[0].LegId];
            const long a = 1 << 20;
            leg0.Hold((offset, _) => offset == dataOffset + a);
            var first = volume.WriteAsync(a, Pattern(65536, 1), false).AsTask();
            await Within(leg0.HeldArrived.Task, "the first write to reach leg 0");
            var second = volume.WriteAsync(a + 4096, Pattern(4096, 2), false).AsTask(); // overlaps the first
            await Within(volume.WriteAsync(8 << 20, Pattern(4096, 3), false).AsTask(), "a disjoint write to complete while the first is held");
            Assert.DoesNotContain(dataOffset + a + 4096, leg0.Writes);
            Assert.False(second.IsCompleted, "the overlapping write completed while the earlier one was still in flight");

            leg0.Release();
            await Within(Task.WhenAll(first, second), "both writes");
            var order = leg0.Writes.ToList();
            Assert.True(order.IndexOf(dataOffset + a) < order.IndexOf(dataOffset + a + 4096), "the overlapping write reached the leg before the earlier one");
            var read = new byte[4096];
            await volume.ReadAsync(a + 4096, read);
            Assert.Equal(Pattern(4096, 2), read);
        }
    }

    [Theory]
    [InlineData(VolumeCacheMode.Direct, true)]
    [InlineData(VolumeCacheMode.Writeback, true)]
    [InlineData(VolumeCacheMode.Writeback, false)] // a plain write: the failing leg is written by its writer thread or the request's thread
    public async Task A_leg_that_fails_writes_leaves_the_mirror_and_io_goes_on_with_the_other(VolumeCacheMode cache, bool forceUnitAccess)
    {
        var descriptor = await CreateAsync(_dir);
        var events = new RecordingEvents();
        var (volume, legs) = await OpenAsync(descriptor, events, new MirrorVolumeOptions { Cache = cache });
        var bad = descriptor.Legs[1];
        await using (volume)
        {
            await volume.WriteAsync(0, Pattern(8192, 1), false);
            legs[bad.LegId].FailWrites = true;
            await volume.WriteAsync(4096, Pattern(65536, 2), forceUnitAccess); // acknowledged by the good leg
            Assert.Equal(bad.LegId, await Within(events.FirstFailure.Task, "LegFailed"));
            Assert.Contains("injected write error", events.Failed.Single().Reason, StringComparison.Ordinal);
            Assert.Equal([descriptor.Legs[0].LegId], volume.ActiveLegs);

            for (var i = 0; i < 20; i++)
            {
                await volume.WriteAsync(i * 65536L, Pattern(4096, 10 + i), false);
                var read = new byte[4096];
                await volume.ReadAsync(i * 65536L, read);
                Assert.Equal(Pattern(4096, 10 + i), read);
            }

            await volume.FlushAsync();
            Assert.Single(events.Failed);
        }

        // The survivor's events counter moved on, so the failed leg is stale even if the metadata still says InSync.
        Assert.Equal(2, LegProbe.Read(descriptor.Legs[0].Path).Superblock!.Events);
        Assert.Equal(1, LegProbe.Read(bad.Path).Superblock!.Events);
        var reopenEvents = new RecordingEvents();
        var (reopened, _) = await OpenAsync(descriptor, reopenEvents);
        await using (reopened)
        {
            Assert.Equal([descriptor.Legs[0].LegId], reopened.ActiveLegs);
            Assert.Contains("stale", reopenEvents.Failed.Single(f => f.Leg == bad.LegId).Reason, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_leg_that_fails_reads_is_dropped_and_the_read_is_served_by_the_other()
    {
        var descriptor = await CreateAsync(_dir);
        var events = new RecordingEvents();
        var (volume, legs) = await OpenAsync(descriptor, events);
        await using (volume)
        {
            await volume.WriteAsync(0, Pattern(4096, 5), false);
            legs[descriptor.Legs[0].LegId].FailReads = true;
            for (var i = 0; i < 4; i++) // enough reads that the balancer picks the failing leg at least once
            {
                var read = new byte[4096];
                await volume.ReadAsync(0, read);
                Assert.Equal(Pattern(4096, 5), read);
            }

            Assert.Equal(descriptor.Legs[0].LegId, await Within(events.FirstFailure.Task, "LegFailed for the read error"));
        }
    }

    [Fact]
    public async Task When_every_leg_fails_the_request_gets_an_io_error()
    {
        var descriptor = await CreateAsync(_dir);
        var (volume, legs) = await OpenAsync(descriptor);
        await using (volume)
        {
            await volume.WriteAsync(0, Pattern(4096, 1), false); // chunk 0 bit on disk
            foreach (var leg in legs.Values)
            {
                leg.FailWrites = true;
            }

            var e = await Assert.ThrowsAsync<BlockIoException>(() => volume.WriteAsync(0, Pattern(4096, 2), false).AsTask());
            Assert.Equal(BlockIoError.Io, e.Error);
            Assert.Contains("no leg left", e.Message, StringComparison.Ordinal);
            var r = await Assert.ThrowsAsync<BlockIoException>(() => volume.ReadAsync(0, new byte[4096]).AsTask());
            Assert.Equal(BlockIoError.Io, r.Error);
        }
    }

    [Fact]
    public async Task Trim_and_write_zeroes_read_as_zeroes_on_every_leg_and_trim_reports_holes()
    {
        var descriptor = await CreateAsync(_dir);
        var (volume, _) = await OpenAsync(descriptor);
        await using (volume)
        {
            await volume.WriteAsync(0, Pattern(4 << 20, 1), false);
            await volume.TrimAsync(1 << 20, 1 << 20, forceUnitAccess: true);
            await volume.WriteZeroesAsync(3 << 20, 100_000, mayPunchHole: false, forceUnitAccess: false);
            var all = new byte[4 << 20];
            await volume.ReadAsync(0, all);
            var expected = Pattern(4 << 20, 1);
            expected.AsSpan(1 << 20, 1 << 20).Clear();
            expected.AsSpan(3 << 20, 100_000).Clear();
            Assert.True(expected.AsSpan().SequenceEqual(all));
            Assert.Empty((await volume.VerifyAsync()).DifferingChunks);

            var extents = await volume.GetAllocationAsync(0, 8 << 20);
            Assert.Equal(8L << 20, extents.Sum(e => e.Length));
            Assert.Equal(BlockExtentKind.Data, extents[0].Kind);
            Assert.Equal(1L << 20, extents[0].Length);
            Assert.Equal(BlockExtentKind.HoleAndZero, extents[1].Kind);
            Assert.True(extents[1].Length >= 1 << 20);
            Assert.Equal(BlockExtentKind.HoleAndZero, extents[^1].Kind); // never written
        }
    }

    [Fact]
    public async Task Bad_requests_get_the_error_the_nbd_server_maps_and_the_volume_keeps_serving()
    {
        var descriptor = await CreateAsync(_dir, size: 8 << 20);
        var (volume, _) = await OpenAsync(descriptor);
        await using (volume)
        {
            Assert.Equal(BlockIoError.OutOfRange, (await Assert.ThrowsAsync<BlockIoException>(() => volume.WriteAsync(8 << 20, new byte[1], false).AsTask())).Error);
            Assert.Equal(BlockIoError.OutOfRange, (await Assert.ThrowsAsync<BlockIoException>(() => volume.ReadAsync((8 << 20) - 100, new byte[4096]).AsTask())).Error);
            Assert.Equal(BlockIoError.OutOfRange, (await Assert.ThrowsAsync<BlockIoException>(() => volume.ReadAsync(-1, new byte[1]).AsTask())).Error);
            Assert.Equal(BlockIoError.OutOfRange, (await Assert.ThrowsAsync<BlockIoException>(() => volume.TrimAsync(0, (8 << 20) + 1, false).AsTask())).Error);
            await volume.WriteAsync((8 << 20) - 3, new byte[] { 1, 2, 3 }, false);
            var tail = new byte[3];
            await volume.ReadAsync((8 << 20) - 3, tail);
            Assert.Equal(new byte[] { 1, 2, 3 }, tail);
        }

        var (readOnly, _) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { ReadOnly = true });
        await using (readOnly)
        {
            Assert.True(readOnly.IsReadOnly);
            Assert.Equal(BlockIoError.ReadOnly, (await Assert.ThrowsAsync<BlockIoException>(() => readOnly.WriteAsync(0, new byte[1], false).AsTask())).Error);
            var tail = new byte[3];
            await readOnly.ReadAsync((8 << 20) - 3, tail);
            Assert.Equal(new byte[] { 1, 2, 3 }, tail);
        }
    }

    [Fact]
    public async Task A_moved_leg_is_found_by_uuid_and_a_missing_one_is_reported()
    {
        var descriptor = await CreateAsync(_dir, legs: 3);
        var moved = Path.Combine(_dir.Path, "elsewhere");
        Directory.CreateDirectory(moved);
        File.Move(descriptor.Legs[1].Path, Path.Combine(moved, "renamed.img"));
        File.Delete(descriptor.Legs[2].Path);
        var events = new RecordingEvents();
        var (volume, _) = await OpenAsync(descriptor, events, new MirrorVolumeOptions { LegSearchPaths = [moved] });
        await using (volume)
        {
            Assert.Equal(Path.Combine(moved, "renamed.img"), events.Moved.Single().Path);
            Assert.Equal(descriptor.Legs[2].LegId, events.Missing.Single().Leg);
            Assert.Equal(2, volume.ActiveLegs.Count);
            Assert.Equal(Path.Combine(moved, "renamed.img"), volume.LegPaths[descriptor.Legs[1].LegId]);
        }
    }

    [Fact]
    public async Task A_leg_of_another_volume_at_the_path_is_not_used()
    {
        var descriptor = await CreateAsync(_dir, name: "one");
        var other = await CreateAsync(_dir, name: "two");
        File.Delete(descriptor.Legs[1].Path);
        File.Copy(other.Legs[1].Path, descriptor.Legs[1].Path);
        var events = new RecordingEvents();
        var (volume, _) = await OpenAsync(descriptor, events);
        await using (volume)
        {
            Assert.Equal([descriptor.Legs[0].LegId], volume.ActiveLegs);
            Assert.Contains("another volume", events.Missing.Single().Reason, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Opening_with_no_usable_leg_is_refused_with_the_reasons()
    {
        var descriptor = await CreateAsync(_dir);
        foreach (var leg in descriptor.Legs)
        {
            File.Delete(leg.Path);
        }

        var e = await Assert.ThrowsAsync<BlockIoException>(() => MirrorVolume.OpenAsync(descriptor, 0, new RecordingEvents(), NullLogger.Instance));
        Assert.Equal(BlockIoError.Unavailable, e.Error);
        Assert.Contains("no such file", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Offline_verify_says_which_differing_chunks_recovery_will_repair()
    {
        var descriptor = await CreateAsync(_dir);
        var chunk = descriptor.Geometry.ChunkSizeBytes;
        var layout = LegLayout.For(descriptor.Geometry);
        // Chunk 3 differs and is marked dirty in slot 1 (an interrupted write); chunk 5 differs with no bit anywhere.
        using (var leg1 = LegFile.Open(descriptor.Legs[1].Path, writable: true))
        {
            await WriteAsync(leg1, layout.DataOffset + 3L * chunk, Pattern(chunk, 3));
            await WriteAsync(leg1, layout.DataOffset + 5L * chunk, Pattern(chunk, 5));
            await SetBitAsync(leg1, layout, 1, 3);
        }

        var report = await VolumeVerifier.VerifyAsync(descriptor);

        Assert.Equal([3L, 5L], report.DifferingChunks);
        Assert.Contains("1 of the 2 differing chunk(s) are marked dirty in a bitmap slot", string.Join("\n", report.Problems), StringComparison.Ordinal);
        Assert.Contains("1 differing chunk(s) are not marked dirty in any bitmap slot", string.Join("\n", report.Problems), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Recovery_copies_dirty_chunks_from_the_first_healthy_leg_and_clears_the_bits()
    {
        var descriptor = await CreateAsync(_dir);
        var chunk = descriptor.Geometry.ChunkSizeBytes;
        var layout = LegLayout.For(descriptor.Geometry);
        // Simulate a crash between the two leg writes of chunk 9 (recorded dirty in slot 2) and chunk 12 (slot 0):
        // leg 0 has the new data, leg 1 the old.
        using (var leg0 = LegFile.Open(descriptor.Legs[0].Path, writable: true))
        {
            await WriteAsync(leg0, layout.DataOffset + 9L * chunk, Pattern(chunk, 9));
            await WriteAsync(leg0, layout.DataOffset + 12L * chunk, Pattern(chunk, 12));
            await SetBitAsync(leg0, layout, 2, 9);
            await SetBitAsync(leg0, layout, 0, 12);
        }

        using (var leg1 = LegFile.Open(descriptor.Legs[1].Path, writable: true))
        {
            await SetBitAsync(leg1, layout, 0, 12);
        }

        var before = await VolumeVerifier.VerifyAsync(descriptor);
        Assert.Equal([9L, 12L], before.DifferingChunks);
        Assert.Contains(before.Problems, p => p.StartsWith("2 of the 2 differing chunk(s) are marked dirty in a bitmap slot", StringComparison.Ordinal));
        Assert.DoesNotContain(before.Problems, p => p.Contains("not marked dirty", StringComparison.Ordinal));
        var (volume, _) = await OpenAsync(descriptor);
        await using (volume)
        {
            Assert.Equal(2, volume.Recovery.ChunksResynced);
            Assert.Equal(2L * chunk, volume.Recovery.Bytes);
            Assert.Equal(descriptor.Legs[0].LegId, volume.Recovery.SourceLegId);
            foreach (var leg in descriptor.Legs)
            {
                for (var slot = 0; slot < descriptor.Geometry.MaxNodes; slot++)
                {
                    Assert.Empty(await BitsOnDiskAsync(leg.Path, descriptor.Geometry, slot));
                }
            }

            Assert.Empty((await volume.VerifyAsync()).DifferingChunks);
            Assert.Equal(Pattern(chunk, 9), await ReadLegDataAsync(descriptor.Legs[1].Path, descriptor.Geometry, 9L * chunk, chunk));
        }
    }

    private static async Task WriteAsync(LegFile leg, long offset, byte[] data)
    {
        var buffer = AlignedBufferPool.Shared.Rent(data.Length);
        try
        {
            data.CopyTo(buffer.All.Span);
            await leg.WriteAsync(offset, buffer.All[..data.Length]);
            await leg.FlushAsync();
        }
        finally
        {
            AlignedBufferPool.Shared.Return(buffer);
        }
    }

    private static async Task SetBitAsync(LegFile leg, LegLayout layout, int slot, long chunk)
    {
        var bits = new byte[layout.SlotBitsBytes];
        await LegMetadata.ReadSlotBitsAsync(leg, layout, slot, bits);
        bits[chunk >> 3] |= (byte)(1 << (int)(chunk & 7));
        await WriteAsync(leg, layout.SlotBitsOffset(slot), bits);
    }
}
