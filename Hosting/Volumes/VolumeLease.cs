using Lockstep.Actors.BlockIo;

namespace Lockstep.Hosting.Volumes;

/// <summary>
/// One NBD connection's handle on a volume open on this node: forwards every request to the shared device.
/// Disposing it releases the connection's claim only; the device stays open for the others (and for the next
/// connection, so crash recovery runs once per node, not per connection).
/// </summary>
public sealed class VolumeLease(IBlockDevice device, Action release) : IBlockDevice
{
    private int _released;

    /// <inheritdoc />
    public string Name => device.Name;

    /// <inheritdoc />
    public long Size => device.Size;

    /// <inheritdoc />
    public int MinimumBlockSize => device.MinimumBlockSize;

    /// <inheritdoc />
    public int PreferredBlockSize => device.PreferredBlockSize;

    /// <inheritdoc />
    public int MaximumRequestSize => device.MaximumRequestSize;

    /// <inheritdoc />
    public bool IsReadOnly => device.IsReadOnly;

    /// <inheritdoc />
    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellation = default) => device.ReadAsync(offset, destination, cancellation);

    /// <inheritdoc />
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool forceUnitAccess, CancellationToken cancellation = default) =>
        device.WriteAsync(offset, source, forceUnitAccess, cancellation);

    /// <inheritdoc />
    public ValueTask FlushAsync(CancellationToken cancellation = default) => device.FlushAsync(cancellation);

    /// <inheritdoc />
    public ValueTask TrimAsync(long offset, long length, bool forceUnitAccess, CancellationToken cancellation = default) =>
        device.TrimAsync(offset, length, forceUnitAccess, cancellation);

    /// <inheritdoc />
    public ValueTask WriteZeroesAsync(long offset, long length, bool mayPunchHole, bool forceUnitAccess, CancellationToken cancellation = default) =>
        device.WriteZeroesAsync(offset, length, mayPunchHole, forceUnitAccess, cancellation);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<BlockExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellation = default) =>
        device.GetAllocationAsync(offset, length, cancellation);

    /// <summary>Releases this connection's claim (once); the shared device stays open.</summary>
    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            release();
        }

        return ValueTask.CompletedTask;
    }
}
