using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Volumes;
using Xunit;
using static Lockstep.Actors.Tests.BlockIo.VolumeTestKit;

namespace Lockstep.Actors.Tests.BlockIo;

/// <summary>
/// A buffered leg's write blocks the request's thread (an NBD receive loop) only once per cooldown: the pure guard's
/// rules, and a writeback volume whose inline write blocked sending that leg's writes elsewhere, losing nothing.
/// </summary>
public sealed class InlineWriteGuardTests : IDisposable
{
    private readonly ScratchDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Fast_writes_stay_inline_and_a_slow_one_sends_writes_away_for_the_cooldown()
    {
        var guard = new InlineWriteGuard(slowTicks: 10, baseCooldownTicks: 100, maxCooldownTicks: 400);
        guard.Observe(0, 9);
        Assert.True(guard.MayWriteInline(9));
        Assert.Equal(0, guard.SlowWrites);

        guard.Observe(1000, 1010);

        Assert.Equal(1, guard.SlowWrites);
        Assert.False(guard.MayWriteInline(1010));
        Assert.False(guard.MayWriteInline(1109));
        Assert.True(guard.MayWriteInline(1110));
    }

    [Fact]
    public void The_cooldown_doubles_while_writes_stay_slow_up_to_its_maximum_and_a_fast_write_resets_it()
    {
        var guard = new InlineWriteGuard(slowTicks: 10, baseCooldownTicks: 100, maxCooldownTicks: 400);
        var now = 0L;
        var cooldowns = new List<long>();
        for (var i = 0; i < 5; i++)
        {
            cooldowns.Add(guard.NextCooldownTicks);
            guard.Observe(now, now + 50);
            now += 50;
            Assert.False(guard.MayWriteInline(now));
            now += cooldowns[^1];
            Assert.True(guard.MayWriteInline(now));
        }

        Assert.Equal([100, 200, 400, 400, 400], cooldowns);

        // A fast inline write inside a cooldown (a race) does not reset it; one after it does.
        guard.Observe(now, now + 50);
        guard.Observe(now + 60, now + 61);
        Assert.Equal(400, guard.NextCooldownTicks);
        guard.Observe(now + 500, now + 501);
        Assert.Equal(100, guard.NextCooldownTicks);
        Assert.Throws<ArgumentOutOfRangeException>(() => new InlineWriteGuard(10, 100, 99));
    }

    // The tests' threshold (100 ms) is far above a 4 KiB page-cache copy even on a loaded CI machine, and the injected
    // block (300 ms) far above the threshold, so only the injected write counts as slow.
    [Fact]
    public async Task A_blocked_inline_write_sends_the_legs_next_writes_to_the_pool_and_every_write_reads_back()
    {
        var (descriptor, volume, legs) = await OpenWritebackAsync(1);
        await using (volume)
        {
            var leg = legs.Values.Single();
            await volume.WriteAsync(0, Pattern(1), forceUnitAccess: false);
            Assert.Single(leg.InlineWriteThreads);

            leg.NextInlineWriteBlocksMs = 300;
            await volume.WriteAsync(4096, Pattern(2), forceUnitAccess: false);
            for (var i = 3; i <= 10; i++)
            {
                await volume.WriteAsync(4096L * (i - 1), Pattern(i), forceUnitAccess: false);
            }

            Assert.Equal(2, leg.InlineWriteThreads.Count);
            Assert.Equal(1, volume.SlowInlineWrites);
            await AssertReadsBackAsync(volume, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        }
    }

    [Fact]
    public async Task A_thread_serving_one_connection_keeps_writing_inline_after_a_blocked_write()
    {
        var (descriptor, volume, legs) = await OpenWritebackAsync(1);
        await using (volume)
        {
            var leg = legs.Values.Single();

            // The first write marks the chunk (its bit goes to disk first, off this thread); the rest need no wait.
            await volume.WriteAsync(0, Pattern(1), forceUnitAccess: false);
            leg.NextInlineWriteBlocksMs = 300;
            var loopLike = new Thread(() =>
            {
                // What an NBD receive loop sets while its only connection's reader runs.
                InlineWriteGuard.CallerServesOneConnection = true;
                for (var i = 2; i <= 6; i++)
                {
                    volume.WriteAsync(4096L * (i - 1), Pattern(i), forceUnitAccess: false).AsTask().GetAwaiter().GetResult();
                }
            }) { Name = "one-connection loop" };
            loopLike.Start();
            Assert.True(loopLike.Join(TimeSpan.FromSeconds(30)));

            Assert.Equal(["one-connection loop"], leg.InlineWriteThreads.Skip(1).Distinct());
            Assert.Equal(6, leg.InlineWriteThreads.Count);
            Assert.Equal(0, volume.SlowInlineWrites);
            Assert.False(InlineWriteGuard.CallerServesOneConnection);
            await AssertReadsBackAsync(volume, [1, 2, 3, 4, 5, 6]);
        }
    }

    [Fact]
    public async Task With_two_legs_a_blocked_second_leg_is_left_to_its_writer_thread_and_no_write_waits_for_a_sleeping_writer()
    {
        var (descriptor, volume, legs) = await OpenWritebackAsync(2);
        await using (volume)
        {
            var second = legs[descriptor.Legs[1].LegId];
            second.NextInlineWriteBlocksMs = 300;

            // 4 KiB writes are below ParallelLegWriteBytes: normally the request's thread copies the second leg itself
            // unless its writer is awake. Each write is awaited alone, with a bound: a write left to a writer that
            // nobody woke would hang here.
            for (var i = 1; i <= 20; i++)
            {
                await volume.WriteAsync(4096L * i, Pattern(i), forceUnitAccess: false).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            }

            var threads = second.InlineWriteThreads.ToArray();
            Assert.Equal(20, threads.Length);
            Assert.Equal(1, volume.SlowInlineWrites);

            // The first copy of this leg blocked; after it, only the leg's writer thread copied this leg.
            Assert.All(threads[1..], name => Assert.StartsWith("leg writer ", name));
            await AssertReadsBackAsync(volume, Enumerable.Range(1, 20).ToArray(), firstBlock: 1);
            var verify = await volume.VerifyAsync();
            Assert.Empty(verify.DifferingChunks);
        }
    }

    private async Task<(VolumeDescriptor Descriptor, MirrorVolume Volume, Dictionary<Guid, TestLeg> Legs)> OpenWritebackAsync(int legCount)
    {
        var descriptor = await CreateAsync(_dir, legs: legCount);
        var options = new MirrorVolumeOptions { Cache = VolumeCacheMode.Writeback, InlineWriteSlowAfter = TimeSpan.FromMilliseconds(100), InlineWriteCooldown = TimeSpan.FromMinutes(1) };
        var (volume, legs) = await OpenAsync(descriptor, options: options);
        return (descriptor, volume, legs);
    }

    private static byte[] Pattern(int seed)
    {
        var data = new byte[4096];
        new Random(seed).NextBytes(data);
        return data;
    }

    private static async Task AssertReadsBackAsync(MirrorVolume volume, int[] seeds, int firstBlock = 0)
    {
        var buffer = new byte[4096];
        for (var i = 0; i < seeds.Length; i++)
        {
            await volume.ReadAsync(4096L * (firstBlock + i), buffer);
            Assert.True(buffer.AsSpan().SequenceEqual(Pattern(seeds[i])), $"block {firstBlock + i} does not read back");
        }
    }
}
