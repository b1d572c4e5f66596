using System.Collections.Concurrent;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lockstep.Actors.Tests.BlockIo;

/// <summary>Scratch folder on a disk filesystem (/var/tmp is ext4 here, not tmpfs) so O_DIRECT is real.</summary>
public sealed class ScratchDirectory : IDisposable
{
    public ScratchDirectory()
    {
        Path = System.IO.Path.Combine("/var/tmp", "lockstep-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Best effort cleanup.
        }
    }
}

/// <summary>Records what the pipeline reports to the metadata owner; tests await the events.</summary>
public sealed class RecordingEvents : IVolumeEvents
{
    public ConcurrentQueue<(Guid Leg, string Reason)> Failed { get; } = new();

    public ConcurrentQueue<(Guid Leg, string Reason)> Missing { get; } = new();

    public ConcurrentQueue<(Guid Leg, string Path)> Moved { get; } = new();

    public TaskCompletionSource<Guid> FirstFailure { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ValueTask LegFailed(Guid legId, string reason)
    {
        Failed.Enqueue((legId, reason));
        FirstFailure.TrySetResult(legId);
        return ValueTask.CompletedTask;
    }

    public ValueTask LegMissing(Guid legId, string reason)
    {
        Missing.Enqueue((legId, reason));
        return ValueTask.CompletedTask;
    }

    public ValueTask LegMoved(Guid legId, string newPath)
    {
        Moved.Enqueue((legId, newPath));
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// Wraps a real leg for tests: can hold writes that match a predicate at a gate (reporting their arrival),
/// fail every write or read after a switch flips, and logs the offsets written, in order.
/// </summary>
public sealed class TestLeg(ILegDevice inner) : ILegDevice
{
    private volatile Func<long, int, bool>? _hold;
    private TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ConcurrentQueue<long> Writes { get; } = new();

    public TaskCompletionSource<long> HeldArrived { get; private set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public volatile bool FailWrites;

    public volatile bool FailReads;

    public string Path => inner.Path;

    public long Length => inner.Length;

    public bool DirectIo => inner.DirectIo;

    /// <summary>Holds writes for which <paramref name="predicate"/>(offset, length) is true until <see cref="Release"/>.</summary>
    public void Hold(Func<long, int, bool> predicate)
    {
        HeldArrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
        _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        _hold = predicate;
    }

    public void Release()
    {
        _hold = null;
        _release.TrySetResult();
    }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellation = default) =>
        FailReads ? ValueTask.FromException(new IOException("injected read error (EIO)")) : inner.ReadAsync(offset, buffer, cancellation);

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken cancellation = default)
    {
        await BeforeWriteAsync(offset, buffer.Length).ConfigureAwait(false);
        await inner.WriteAsync(offset, buffer, cancellation).ConfigureAwait(false);
    }

    /// <summary>How long the next inline write blocks its thread before it runs (as a write held in dirty-page throttling would); reset after it.</summary>
    public volatile int NextInlineWriteBlocksMs;

    /// <summary>Names of the threads inline writes (<see cref="WriteOnCallerAsync"/>) ran on, in order ("" for unnamed).</summary>
    public ConcurrentQueue<string> InlineWriteThreads { get; } = new();

    /// <summary>A write on the caller's thread: a buffered leg copies into the page cache here, and may block here.</summary>
    public ValueTask WriteOnCallerAsync(long offset, ReadOnlyMemory<byte> buffer)
    {
        InlineWriteThreads.Enqueue(Thread.CurrentThread.Name ?? string.Empty);
        if (Interlocked.Exchange(ref NextInlineWriteBlocksMs, 0) is > 0 and var blockMs)
        {
            Thread.Sleep(blockMs);
        }

        if (FailWrites || _hold is not null)
        {
            return WriteAsync(offset, buffer);
        }

        Writes.Enqueue(offset);
        return inner.WriteOnCallerAsync(offset, buffer);
    }

    /// <summary>What every write goes through first: the injected failure, the hold, the record of its offset.</summary>
    private async ValueTask BeforeWriteAsync(long offset, int length)
    {
        if (FailWrites)
        {
            throw new IOException("injected write error (EIO)");
        }

        if (_hold is { } hold && hold(offset, length))
        {
            var release = _release.Task;
            HeldArrived.TrySetResult(offset);
            await release.ConfigureAwait(false);
        }

        Writes.Enqueue(offset);
    }

    public ValueTask FlushAsync(CancellationToken cancellation = default)
    {
        Interlocked.Increment(ref _flushes);
        return FailWrites ? ValueTask.FromException(new IOException("injected flush error (EIO)")) : inner.FlushAsync(cancellation);
    }

    private int _flushes;

    /// <summary>fdatasyncs of the whole leg asked for so far.</summary>
    public int Flushes => Volatile.Read(ref _flushes);

    /// <summary>Offsets of the durable (FUA) writes, in order.</summary>
    public ConcurrentQueue<long> DurableWrites { get; } = new();

    /// <summary>Passes a durable write on as one (a buffered leg syncs its range only), after the same hold and failure checks as a write.</summary>
    public async ValueTask WriteDurableAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken cancellation = default)
    {
        await BeforeWriteAsync(offset, buffer.Length).ConfigureAwait(false);
        DurableWrites.Enqueue(offset);
        await inner.WriteDurableAsync(offset, buffer, cancellation).ConfigureAwait(false);
    }

    public ValueTask ZeroAsync(long offset, long length, bool mayPunchHole, CancellationToken cancellation = default) =>
        FailWrites ? ValueTask.FromException(new IOException("injected zero error (EIO)")) : inner.ZeroAsync(offset, length, mayPunchHole, cancellation);

    public void GetAllocation(long offset, long length, List<(long Length, bool Hole)> runs) => inner.GetAllocation(offset, length, runs);

    public void Dispose() => inner.Dispose();
}

/// <summary>Creates formatted two-leg volumes in a scratch folder and opens them with test legs.</summary>
public static class VolumeTestKit
{
    public static async Task<VolumeDescriptor> CreateAsync(ScratchDirectory dir, long size = 16 << 20, int chunk = 64 * 1024, int legs = 2, string name = "vol")
    {
        var descriptor = new VolumeDescriptor(name, Guid.NewGuid(), new VolumeGeometry(size, chunk, 4),
            Enumerable.Range(0, legs).Select(i => new LegDescriptor(Guid.NewGuid(), dir.File($"{name}-leg{i}.img"), LegState.InSync)).ToArray(), 1);
        foreach (var leg in descriptor.Legs)
        {
            await LegFormatter.CreateAsync(leg.Path, descriptor, leg.LegId);
        }

        return descriptor;
    }

    public static async Task<(MirrorVolume Volume, Dictionary<Guid, TestLeg> Legs)> OpenAsync(VolumeDescriptor descriptor, IVolumeEvents? events = null, MirrorVolumeOptions? options = null)
    {
        var legs = new ConcurrentDictionary<Guid, TestLeg>();
        options = (options ?? new MirrorVolumeOptions()) with { LegWrapper = (id, device) => legs[id] = new TestLeg(device) };
        var volume = await MirrorVolume.OpenAsync(descriptor, 0, events ?? new RecordingEvents(), NullLogger.Instance, options);
        return (volume, new Dictionary<Guid, TestLeg>(legs));
    }

    /// <summary>Reads the slot bits of <paramref name="slot"/> straight from a leg file (own O_DIRECT handle: what is on disk).</summary>
    public static async Task<List<long>> BitsOnDiskAsync(string legPath, VolumeGeometry geometry, int slot = 0)
    {
        var layout = LegLayout.For(geometry);
        using var leg = LegFile.Open(legPath, writable: false);
        var bits = new byte[layout.SlotBitsBytes];
        await LegMetadata.ReadSlotBitsAsync(leg, layout, slot, bits);
        return LegMetadata.SetBits(bits, layout.ChunkCount);
    }

    public static async Task<byte[]> ReadLegDataAsync(string legPath, VolumeGeometry geometry, long offset, int length)
    {
        var layout = LegLayout.For(geometry);
        using var leg = LegFile.Open(legPath, writable: false);
        var buffer = AlignedBufferPool.Shared.Rent(length);
        try
        {
            await leg.ReadAsync(layout.DataOffset + offset, buffer.All[..length]);
            return buffer.All.Span[..length].ToArray();
        }
        finally
        {
            AlignedBufferPool.Shared.Return(buffer);
        }
    }

    public static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    public static async Task<T> Within<T>(Task<T> task, string what, int seconds = 30)
    {
        var done = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(seconds)));
        if (done != task)
        {
            throw new TimeoutException($"timed out after {seconds}s waiting for {what}");
        }

        return await task;
    }

    public static async Task Within(Task task, string what, int seconds = 30)
    {
        var done = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(seconds)));
        if (done != task)
        {
            throw new TimeoutException($"timed out after {seconds}s waiting for {what}");
        }

        await task;
    }
}
