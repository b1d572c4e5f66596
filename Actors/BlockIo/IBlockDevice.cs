namespace Lockstep.Actors.BlockIo;

/// <summary>
/// A byte-addressed block device as the NBD server sees it: an open volume on this node.
/// Implementations are thread-safe and accept many requests in flight at once; ordering between
/// overlapping requests is the implementation's job. Failures are <see cref="BlockIoException"/>.
/// </summary>
public interface IBlockDevice : IAsyncDisposable
{
    /// <summary>Export name (the volume name).</summary>
    string Name { get; }

    /// <summary>Size in bytes; a multiple of <see cref="MinimumBlockSize"/>.</summary>
    long Size { get; }

    /// <summary>Smallest I/O the device accepts without read-modify-write (NBD minimum block size).</summary>
    int MinimumBlockSize { get; }

    /// <summary>I/O size the device is fastest with (NBD preferred block size).</summary>
    int PreferredBlockSize { get; }

    /// <summary>Largest single read or write payload (NBD maximum block size).</summary>
    int MaximumRequestSize { get; }

    bool IsReadOnly { get; }

    /// <summary>Reads <paramref name="destination"/>.Length bytes at <paramref name="offset"/>.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellation = default);

    /// <summary>Writes; with <paramref name="forceUnitAccess"/> the data is on stable storage of every leg before completion.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool forceUnitAccess, CancellationToken cancellation = default);

    /// <summary>Everything completed before the call is on stable storage of every leg when this completes.</summary>
    ValueTask FlushAsync(CancellationToken cancellation = default);

    /// <summary>Discards a range; afterwards it reads as zeroes on every leg.</summary>
    ValueTask TrimAsync(long offset, long length, bool forceUnitAccess, CancellationToken cancellation = default);

    /// <summary>Zeroes a range; <paramref name="mayPunchHole"/> false means the range must stay allocated (NBD NO_HOLE).</summary>
    ValueTask WriteZeroesAsync(long offset, long length, bool mayPunchHole, bool forceUnitAccess, CancellationToken cancellation = default);

    /// <summary>Allocation status of a range (NBD <c>base:allocation</c>): consecutive extents covering at least one byte.</summary>
    ValueTask<IReadOnlyList<BlockExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellation = default);
}

/// <summary>One run of bytes with the same allocation status.</summary>
public readonly record struct BlockExtent(long Length, BlockExtentKind Kind);

/// <summary>NBD <c>base:allocation</c> flags: a hole reads as zeroes and holds no storage.</summary>
[Flags]
public enum BlockExtentKind
{
    Data = 0,
    Hole = 1,
    Zero = 2,
    HoleAndZero = Hole | Zero,
}

/// <summary>Why a block request failed; the NBD server maps each to the errno the spec asks for.</summary>
public enum BlockIoError
{
    /// <summary>A leg (or every leg) failed the I/O: EIO.</summary>
    Io,

    /// <summary>Offset or length outside the device: EINVAL (ENOSPC for writes).</summary>
    OutOfRange,

    /// <summary>Write to a read-only device: EPERM.</summary>
    ReadOnly,

    /// <summary>The node fenced itself or the volume is closing: ESHUTDOWN.</summary>
    Unavailable,

    /// <summary>A request the device cannot do (e.g. FAST_ZERO it cannot do fast): ENOTSUP.</summary>
    NotSupported,
}

/// <summary>A failed block request; <see cref="Error"/> says which errno the client gets.</summary>
public sealed class BlockIoException(BlockIoError error, string message, Exception? inner = null) : IOException(message, inner)
{
    public BlockIoError Error { get; } = error;
}

/// <summary>What the NBD server exports: the volumes this node can open, by name.</summary>
public interface IExportCatalog
{
    /// <summary>Names and one-line descriptions for NBD_OPT_LIST.</summary>
    IReadOnlyList<ExportDescription> List();

    /// <summary>
    /// Opens (or shares the already open) device; null when no such export exists. The result is the caller's
    /// handle: the caller disposes it when done (the NBD server does so when the connection ends, or right after
    /// answering NBD_OPT_INFO). Disposing a handle releases that caller's claim; whether the device itself closes
    /// is the catalog's business.
    /// </summary>
    ValueTask<IBlockDevice?> OpenAsync(string name, CancellationToken cancellation = default);
}

public sealed record ExportDescription(string Name, string Description);
