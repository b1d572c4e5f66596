using System.Runtime.InteropServices;
using Lockstep.Actors.BlockIo;
using Microsoft.Win32.SafeHandles;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>
/// Test-only <see cref="IBlockDevice"/> over one sparse file (the real one, a mirrored volume, comes from the
/// block pipeline): buffered pread/pwrite, fdatasync for FLUSH and FUA, holes punched for TRIM and
/// WRITE_ZEROES, allocation from SEEK_DATA/SEEK_HOLE.
/// </summary>
internal sealed partial class SparseFileBlockDevice : IBlockDevice
{
    private const int FallocKeepSize = 0x01;
    private const int FallocPunchHole = 0x02;
    private const int FallocZeroRange = 0x10;
    private const int SeekData = 3;
    private const int SeekHole = 4;

    private readonly SafeFileHandle _handle;
    private int _flushes;

    private SparseFileBlockDevice(string name, string path, SafeFileHandle handle, long size, bool readOnly, int maximumRequestSize)
    {
        Name = name;
        Path = path;
        _handle = handle;
        Size = size;
        IsReadOnly = readOnly;
        MaximumRequestSize = maximumRequestSize;
    }

    public string Name { get; }

    public string Path { get; }

    public long Size { get; }

    public int MinimumBlockSize => 512;

    public int PreferredBlockSize => 4096;

    public int MaximumRequestSize { get; }

    public bool IsReadOnly { get; }

    /// <summary>FLUSH requests and FUA writes that reached fdatasync.</summary>
    public int Flushes => Volatile.Read(ref _flushes);

    /// <summary>Creates (or reopens) the file at <paramref name="size"/>, sparse.</summary>
    public static SparseFileBlockDevice Create(string name, string path, long size, bool readOnly = false, int maximumRequestSize = 32 << 20)
    {
        var handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.Asynchronous);
        if (RandomAccess.GetLength(handle) != size)
        {
            RandomAccess.SetLength(handle, size);
        }

        return new SparseFileBlockDevice(name, path, handle, size, readOnly, maximumRequestSize);
    }

    public async ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellation = default)
    {
        Check(offset, destination.Length, write: false);
        while (!destination.IsEmpty)
        {
            var read = await RandomAccess.ReadAsync(_handle, destination, offset, cancellation);
            if (read == 0)
            {
                throw new BlockIoException(BlockIoError.Io, $"short read at {offset}");
            }

            destination = destination[read..];
            offset += read;
        }
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool forceUnitAccess, CancellationToken cancellation = default)
    {
        Check(offset, source.Length, write: true);
        await RandomAccess.WriteAsync(_handle, source, offset, cancellation);
        if (forceUnitAccess)
        {
            await FlushAsync(cancellation);
        }
    }

    public async ValueTask FlushAsync(CancellationToken cancellation = default)
    {
        await Task.Run(() =>
        {
            if (fdatasync(_handle) != 0)
            {
                throw new BlockIoException(BlockIoError.Io, $"fdatasync failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }, cancellation);
        Interlocked.Increment(ref _flushes);
    }

    public ValueTask TrimAsync(long offset, long length, bool forceUnitAccess, CancellationToken cancellation = default) =>
        WriteZeroesAsync(offset, length, mayPunchHole: true, forceUnitAccess, cancellation);

    public async ValueTask WriteZeroesAsync(long offset, long length, bool mayPunchHole, bool forceUnitAccess, CancellationToken cancellation = default)
    {
        Check(offset, length, write: true);
        if (length == 0)
        {
            return;
        }

        var mode = mayPunchHole ? FallocPunchHole | FallocKeepSize : FallocZeroRange | FallocKeepSize;
        if (fallocate(_handle, mode, offset, length) != 0)
        {
            // ZERO_RANGE is not on every filesystem: write the zeroes instead.
            var zeroes = new byte[Math.Min(length, 1 << 20)];
            for (long done = 0; done < length; done += zeroes.Length)
            {
                var chunk = (int)Math.Min(zeroes.Length, length - done);
                await RandomAccess.WriteAsync(_handle, zeroes.AsMemory(0, chunk), offset + done, cancellation);
            }
        }

        if (forceUnitAccess)
        {
            await FlushAsync(cancellation);
        }
    }

    public ValueTask<IReadOnlyList<BlockExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellation = default)
    {
        Check(offset, length, write: false);
        var end = offset + length;
        var extents = new List<BlockExtent>();
        var position = offset;
        while (position < end)
        {
            var data = lseek(_handle, position, SeekData);
            if (data < 0 || data >= end)
            {
                extents.Add(new BlockExtent(end - position, BlockExtentKind.HoleAndZero));
                break;
            }

            if (data > position)
            {
                extents.Add(new BlockExtent(data - position, BlockExtentKind.HoleAndZero));
            }

            var hole = Math.Min(lseek(_handle, data, SeekHole), end);
            extents.Add(new BlockExtent(hole - data, BlockExtentKind.Data));
            position = hole;
        }

        return ValueTask.FromResult<IReadOnlyList<BlockExtent>>(extents);
    }

    public ValueTask DisposeAsync()
    {
        _handle.Dispose();
        return ValueTask.CompletedTask;
    }

    private void Check(long offset, long length, bool write)
    {
        if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
        {
            throw new BlockIoException(BlockIoError.OutOfRange, $"{offset}+{length} outside 0..{Size}");
        }

        if (write && IsReadOnly)
        {
            throw new BlockIoException(BlockIoError.ReadOnly, $"{Name} is read-only");
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fdatasync(SafeFileHandle fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fallocate(SafeFileHandle fd, int mode, long offset, long length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(SafeFileHandle fd, long offset, int whence);
}
