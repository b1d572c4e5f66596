using System.Collections.Concurrent;
using Lockstep.Actors.BlockIo;
using Lockstep.Persistence.Disk;
using Xunit;

namespace Lockstep.Actors.Tests.BlockIo;

public sealed class LegWriterTests
{
    /// <summary>A leg in memory that records which thread wrote each offset, and how often.</summary>
    private sealed class RecordingLeg : ILegDevice
    {
        public ConcurrentDictionary<long, int> Writes { get; } = new();

        public ConcurrentDictionary<long, string?> Threads { get; } = new();

        public bool Fail { get; set; }

        public string Path => "memory";

        public long Length => long.MaxValue;

        public bool DirectIo => false;

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken cancellation = default)
        {
            if (Fail)
            {
                return ValueTask.FromException(new IOException($"injected write error at {offset}"));
            }

            Writes.AddOrUpdate(offset, 1, (_, n) => n + 1);
            Threads[offset] = Thread.CurrentThread.Name;
            return ValueTask.CompletedTask;
        }

        public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellation = default) => throw new NotSupportedException();

        public ValueTask FlushAsync(CancellationToken cancellation = default) => ValueTask.CompletedTask;

        public ValueTask ZeroAsync(long offset, long length, bool mayPunchHole, CancellationToken cancellation = default) => throw new NotSupportedException();

        public void GetAllocation(long offset, long length, List<(long Length, bool Hole)> runs) => throw new NotSupportedException();

        public void Dispose()
        {
        }
    }

    [Fact]
    public async Task A_woken_writer_runs_a_write_its_request_never_ran()
    {
        var leg = new RecordingLeg();
        using var writer = new LegWriter("leg writer test");
        var write = new LegWrite();
        var done = write.Prepare(leg, 4096, new byte[4096]);
        writer.Enqueue(write, wake: true);
        await done.AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        await Task.Yield(); // off the writer thread, where the continuation ran
        Assert.Equal("leg writer test", leg.Threads[4096]);
        Assert.Equal(1, writer.WritesRun);
    }

    [Fact]
    public async Task A_sleeping_writer_is_not_woken_for_a_small_write_and_the_request_runs_it()
    {
        var leg = new RecordingLeg();
        using var writer = new LegWriter("leg writer test");
        await Polling.UntilAsync(() => writer.IsSleeping, TimeSpan.FromSeconds(10), "the idle writer to go to sleep");
        var write = new LegWrite();
        var done = write.Prepare(leg, 0, new byte[4096]);
        writer.Enqueue(write, wake: false);
        Assert.True(writer.IsSleeping);
        write.TryRunHere();
        Assert.True(done.IsCompletedSuccessfully, "the request's own thread ran the write");
        await done;
        Assert.Equal(Thread.CurrentThread.Name, leg.Threads[0]);
        Assert.Equal(0, writer.WritesRun);
    }

    [Fact]
    public async Task Every_write_runs_exactly_once_when_writer_and_request_race_for_it()
    {
        // One item used again and again, as an IoOp's does: stale queue entries of earlier uses must not run twice.
        var leg = new RecordingLeg();
        using var writer = new LegWriter("leg writer test");
        var write = new LegWrite();
        const int writes = 20_000;
        for (var i = 0; i < writes; i++)
        {
            var done = write.Prepare(leg, i * 4096L, new byte[1]);
            writer.Enqueue(write, wake: i % 3 != 0);
            if (i % 99 == 1) // always a woken one (99 is a multiple of 3)
            {
                // Give the writer time to take this one (it was woken), so both sides surely ran some.
                for (var wait = 0; wait < 1000 && !done.IsCompleted; wait++)
                {
                    Thread.Sleep(1);
                }
            }

            write.TryRunHere(); // the request's side of the contract: run it unless the writer claimed it
            await done;
            await Task.Yield(); // a continuation may have run on the writer thread: leave it
        }

        Assert.Equal(writes, leg.Writes.Count);
        Assert.All(leg.Writes, w => Assert.Equal(1, w.Value));
        Assert.InRange(writer.WritesRun, 1, writes - 1);
    }

    [Fact]
    public async Task A_leg_error_reaches_the_request_on_either_thread()
    {
        var leg = new RecordingLeg { Fail = true };
        using var writer = new LegWriter("leg writer test");
        var write = new LegWrite();

        var onWriter = write.Prepare(leg, 8192, new byte[4096]);
        writer.Enqueue(write, wake: true);
        var error = await Assert.ThrowsAsync<IOException>(async () => await onWriter.AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        await Task.Yield();
        Assert.Contains("injected write error at 8192", error.Message, StringComparison.Ordinal);

        var onCaller = write.Prepare(leg, 12288, new byte[4096]);
        write.TryRunHere();
        error = await Assert.ThrowsAsync<IOException>(async () => await onCaller);
        Assert.Contains("injected write error at 12288", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task After_dispose_nothing_is_queued_and_the_request_runs_its_write()
    {
        var leg = new RecordingLeg();
        var writer = new LegWriter("leg writer test");
        writer.Dispose();
        var write = new LegWrite();
        var done = write.Prepare(leg, 0, new byte[4096]);
        writer.Enqueue(write, wake: true);
        write.TryRunHere();
        await done;
        Assert.Equal(1, leg.Writes[0]);
        Assert.Equal(0, writer.WritesRun);
    }
}
