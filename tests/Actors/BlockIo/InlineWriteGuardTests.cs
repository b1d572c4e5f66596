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
    // block (300 ms) far above the threshold, so only the injected write counts as slow. Writes 2.. run synchronously
    // on one thread standing in for a receive loop (their chunk is marked by write 1, so nothing makes them wait).
    [Fact]
    public async Task On_a_loop_shared_with_other_connections_a_blocked_write_sends_the_legs_next_writes_to_the_pool()
    {
        var (_, volume, legs) = await OpenWritebackAsync(1);
        await using (volume)
        {
            var leg = legs.Values.Single();
            await volume.WriteAsync(0, Pattern(1), forceUnitAccess: false);
            leg.NextInlineWriteBlocksMs = 300;

            RunOnLoopThread(volume, seeds: 2..10, servesOthers: true);

            // Write 1 (on the pool after its bit) and the blocked write 2 ran inline; 3..10 went to the pool.
            Assert.Equal(2, leg.InlineWriteThreads.Count);
            Assert.Equal(1, volume.SlowInlineWrites);
            await AssertReadsBackAsync(volume, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        }
    }

    [Fact]
    public async Task A_thread_serving_only_its_own_connection_keeps_writing_inline_after_a_blocked_write()
    {
        var (_, volume, legs) = await OpenWritebackAsync(1);
        await using (volume)
        {
            var leg = legs.Values.Single();
            await volume.WriteAsync(0, Pattern(1), forceUnitAccess: false);
            leg.NextInlineWriteBlocksMs = 300;

            RunOnLoopThread(volume, seeds: 2..6, servesOthers: false);

            Assert.Equal([LoopThreadName], leg.InlineWriteThreads.Skip(1).Distinct());
            Assert.Equal(6, leg.InlineWriteThreads.Count);
            Assert.Equal(0, volume.SlowInlineWrites);
            Assert.False(InlineWriteGuard.CallerServesOtherConnections);
            await AssertReadsBackAsync(volume, [1, 2, 3, 4, 5, 6]);
        }
    }

    [Fact]
    public async Task With_two_legs_a_blocked_second_leg_is_left_to_its_writer_thread_and_no_write_waits_for_a_sleeping_writer()
    {
        var (descriptor, volume, legs) = await OpenWritebackAsync(2);
        await using (volume)
        {
            await volume.WriteAsync(0, Pattern(1), forceUnitAccess: false);
            var second = legs[descriptor.Legs[1].LegId];
            var before = second.InlineWriteThreads.Count;
            second.NextInlineWriteBlocksMs = 300;

            // 4 KiB writes are below ParallelLegWriteBytes: normally the request's thread copies the second leg itself
            // unless its writer is awake. A write left to a writer that nobody woke would hang (bounded below).
            RunOnLoopThread(volume, seeds: 2..20, servesOthers: true);

            var threads = second.InlineWriteThreads.Skip(before).ToArray();
            Assert.Equal(19, threads.Length);
            Assert.Equal(1, volume.SlowInlineWrites);

            // The first copy of this leg after write 1 blocked; after it, only the leg's writer thread copied this leg.
            Assert.All(threads[1..], name => Assert.StartsWith("leg writer ", name));
            await AssertReadsBackAsync(volume, Enumerable.Range(1, 20).ToArray());
            var verify = await volume.VerifyAsync();
            Assert.Empty(verify.DifferingChunks);
        }
    }

    private const string LoopThreadName = "receive loop stand-in";

    /// <summary>Writes block i-1 with Pattern(i) for each seed, synchronously on one thread marked as a receive loop.</summary>
    private static void RunOnLoopThread(MirrorVolume volume, Range seeds, bool servesOthers)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                InlineWriteGuard.CallerServesOtherConnections = servesOthers;
                for (var i = seeds.Start.Value; i <= seeds.End.Value; i++)
                {
                    volume.WriteAsync(4096L * (i - 1), Pattern(i), forceUnitAccess: false).AsTask().GetAwaiter().GetResult();
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { Name = LoopThreadName, IsBackground = true };
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(30)), "the writes did not finish in 30 s");
        Assert.Null(failure);
    }

    private async Task<(VolumeDescriptor Descriptor, MirrorVolume Volume, Dictionary<Guid, TestLeg> Legs)> OpenWritebackAsync(int legCount)
    {
        // One 1 MiB chunk holds every block the tests write: only the first write waits for its bit.
        var descriptor = await CreateAsync(_dir, chunk: 1 << 20, legs: legCount);
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
