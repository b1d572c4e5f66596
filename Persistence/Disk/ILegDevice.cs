using Lockstep.Contracts.Disk;

namespace Lockstep.Persistence.Disk;

/// <summary>
/// Raw I/O on one mirror leg (a file or block device), offsets from the start of the leg (metadata included).
/// Buffers must come from <see cref="AlignedBufferPool"/> and offsets and lengths must be multiples of
/// <see cref="LegFormat.BlockSize"/> for reads and writes, because the leg may be open with O_DIRECT.
/// Every failure is an <see cref="IOException"/>; the caller decides what a failed leg means.
/// </summary>
public interface ILegDevice : IDisposable
{
    /// <summary>Where the leg was opened (informational: legs are identified by UUID).</summary>
    string Path { get; }

    /// <summary>Bytes addressable on the leg.</summary>
    long Length { get; }

    /// <summary>True when reads and writes bypass the page cache (O_DIRECT).</summary>
    bool DirectIo { get; }

    /// <summary>Fills <paramref name="buffer"/> completely; a short read is an <see cref="IOException"/>.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellation = default);

    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken cancellation = default);

    /// <summary>
    /// A write the caller is willing to run on its own thread: a device whose write only copies into memory (a
    /// buffered leg: the page cache) does it at once and returns a completed task, saving the thread-pool hop and
    /// wake-up that <see cref="WriteAsync"/> costs; any other device just calls <see cref="WriteAsync"/>.
    /// </summary>
    ValueTask WriteOnCallerAsync(long offset, ReadOnlyMemory<byte> buffer) => WriteAsync(offset, buffer);

    /// <summary>fdatasync: everything written before is on stable storage afterwards.</summary>
    ValueTask FlushAsync(CancellationToken cancellation = default);

    /// <summary>
    /// A write that is on stable storage when it completes (FUA), without making anything else durable: a buffered
    /// leg must not pay for flushing every dirty page of the file to make one block durable. The default writes,
    /// then flushes the whole leg, which is correct for any device.
    /// </summary>
    async ValueTask WriteDurableAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken cancellation = default)
    {
        await WriteAsync(offset, buffer, cancellation).ConfigureAwait(false);
        await FlushAsync(cancellation).ConfigureAwait(false);
    }

    /// <summary>Makes the byte range read as zeroes (hole punched when allowed, else zeroes kept allocated).</summary>
    ValueTask ZeroAsync(long offset, long length, bool mayPunchHole, CancellationToken cancellation = default);

    /// <summary>
    /// Appends the allocation runs of [<paramref name="offset"/>, +<paramref name="length"/>) to <paramref name="runs"/>:
    /// (length, isHole). A device that cannot tell reports one data run.
    /// </summary>
    void GetAllocation(long offset, long length, List<(long Length, bool Hole)> runs);
}
