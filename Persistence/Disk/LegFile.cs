using System.Runtime.CompilerServices;
using Lockstep.Contracts.Disk;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Win32.SafeHandles;

namespace Lockstep.Persistence.Disk;

/// <summary>
/// A leg opened with open(2) and O_DIRECT (so two nodes never read each other's stale page cache), read and
/// written with <see cref="RandomAccess"/>. Where the filesystem refuses O_DIRECT (tmpfs answers EINVAL) the
/// leg is opened buffered with a logged warning; fdatasync still makes flushes durable. A volume in writeback
/// cache mode opens its legs buffered on purpose (<c>direct: false</c>): then a durable write is
/// pwritev2(RWF_DSYNC), which syncs that range only, not every dirty page of the file.
/// <code>
/// using var leg = LegFile.Open("/srv/legs/a.img", writable: true, logger);
/// var buffer = AlignedBufferPool.Shared.Rent(4096);
/// await leg.ReadAsync(0, buffer.All[..4096]);
/// </code>
/// </summary>
public sealed class LegFile : ILegDevice
{
    private readonly SafeFileHandle _handle;

    private LegFile(string path, SafeFileHandle handle, bool isBlockDevice, long length, bool directIo, bool writable)
    {
        Path = path;
        _handle = handle;
        IsBlockDevice = isBlockDevice;
        Length = length;
        DirectIo = directIo;
        Writable = writable;
    }

    public string Path { get; }

    internal SafeFileHandle Handle => _handle;

    public long Length { get; private set; }

    public bool DirectIo { get; }

    public bool IsBlockDevice { get; }

    public bool Writable { get; }

    /// <summary>Opens an existing leg (file or block device). Throws <see cref="IOException"/> with the reason.</summary>
    public static LegFile Open(string path, bool writable, ILogger? logger = null) => OpenCore(path, writable, create: false, 0, logger);

    /// <summary>
    /// Opens an existing leg with O_DIRECT (<paramref name="direct"/>) or through the page cache. Throws
    /// <see cref="IOException"/> with the reason.
    /// </summary>
    public static LegFile Open(string path, bool writable, bool direct, ILogger? logger = null) => OpenCore(path, writable, create: false, 0, logger, direct);

    /// <summary>
    /// Opens a leg for formatting: a missing file is created with <paramref name="createLength"/> bytes (sparse);
    /// an existing empty file is grown to that size; anything else is opened as it is.
    /// </summary>
    public static LegFile OpenOrCreate(string path, long createLength, ILogger? logger = null) => OpenCore(path, writable: true, create: true, createLength, logger);

    private static LegFile OpenCore(string path, bool writable, bool create, long createLength, ILogger? logger, bool wantDirect = true)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        logger ??= NullLogger.Instance;
        var flags = (writable ? Libc.O_RDWR : Libc.O_RDONLY) | Libc.O_CLOEXEC;
        if (create)
        {
            flags |= Libc.O_CREAT;
        }

        if (Directory.Exists(path))
        {
            throw new IOException($"leg {path} is a directory, not a file or block device");
        }

        var direct = wantDirect;
        var fd = Libc.Open(path, flags | (wantDirect ? Libc.O_DIRECT : 0), 0b110_100_000);
        if (wantDirect && fd < 0 && Libc.Errno == Libc.EINVAL)
        {
            // tmpfs and some FUSE filesystems refuse O_DIRECT; buffered I/O plus fdatasync is still durable.
            direct = false;
            fd = Libc.Open(path, flags, 0b110_100_000);
            if (fd >= 0)
            {
                logger.LogWarning("Leg {Path}: the filesystem refuses O_DIRECT; using buffered I/O (other nodes may see stale page cache)", path);
            }
        }

        if (fd < 0)
        {
            var errno = Libc.Errno;
            throw new IOException($"cannot open leg {path}: {Libc.Describe(errno)}");
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            bool isBlock;
            long length;
            if (Libc.IoctlU64(handle, Libc.BLKGETSIZE64, out var deviceSize) == 0)
            {
                isBlock = true;
                length = (long)deviceSize;
            }
            else
            {
                isBlock = false;
                length = Libc.LSeek(handle, 0, Libc.SEEK_END);
                if (length < 0)
                {
                    throw new IOException($"cannot size leg {path}: {Libc.Describe(Libc.Errno)}");
                }

                if (create && length == 0 && createLength > 0)
                {
                    if (Libc.FTruncate(handle, createLength) != 0)
                    {
                        throw new IOException($"cannot size new leg {path} to {createLength} bytes: {Libc.Describe(Libc.Errno)}");
                    }

                    length = createLength;
                }
            }

            return new LegFile(path, handle, isBlock, length, direct, writable);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Grows a regular-file leg (sparse) to <paramref name="length"/> bytes.</summary>
    internal void Grow(long length)
    {
        if (IsBlockDevice)
        {
            throw new IOException($"block device {Path} cannot grow to {length} bytes");
        }

        if (Libc.FTruncate(_handle, length) != 0)
        {
            throw new IOException($"cannot grow leg {Path} to {length} bytes: {Libc.Describe(Libc.Errno)}");
        }

        Length = length;
    }

    /// <summary>
    /// Reads <paramref name="buffer"/> completely. A buffered leg first tries <c>preadv2(RWF_NOWAIT)</c> on the calling
    /// thread: what the page cache holds is copied at once, without the thread-pool hop a blocking read needs; only
    /// what is not cached (EAGAIN) goes to a pool thread. O_DIRECT legs always take the pool thread (every read
    /// waits for the disk).
    /// </summary>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellation = default)
    {
        var cached = DirectIo || _noWaitUnsupported ? 0 : ReadCached(offset, buffer.Span);
        return cached == buffer.Length ? ValueTask.CompletedTask : ReadBlockingAsync(offset + cached, buffer[cached..], cancellation);
    }

    private volatile bool _noWaitUnsupported;

    /// <summary>Bytes read from the page cache without blocking, from <paramref name="offset"/> on (0 when nothing is cached).</summary>
    private unsafe int ReadCached(long offset, Span<byte> buffer)
    {
        var done = 0;
        fixed (byte* start = buffer)
        {
            while (done < buffer.Length)
            {
                var vector = new Libc.IoVec { Base = start + done, Length = (nuint)(buffer.Length - done) };
                var read = Libc.PReadV2(_handle, &vector, 1, offset + done, Libc.RWF_NOWAIT);
                if (read > 0)
                {
                    done += (int)read;
                    continue;
                }

                if (read < 0 && Libc.Errno is Libc.EOPNOTSUPP or Libc.EINVAL or Libc.ENOSYS)
                {
                    _noWaitUnsupported = true; // kernel or filesystem without RWF_NOWAIT reads: stop trying
                }

                // EAGAIN (not cached), end of file or an error: the blocking read finishes the job and reports problems.
                break;
            }
        }

        return done;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReadBlockingAsync(long offset, Memory<byte> buffer, CancellationToken cancellation)
    {
        var done = 0;
        while (done < buffer.Length)
        {
            int read;
            try
            {
                read = await RandomAccess.ReadAsync(_handle, buffer[done..], offset + done, cancellation).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not IOException and not OperationCanceledException)
            {
                throw new IOException($"leg {Path}: read of {buffer.Length} bytes at {offset} failed: {e.Message}", e);
            }

            if (read == 0)
            {
                throw new IOException($"leg {Path}: short read at {offset + done} (leg is {Length} bytes)");
            }

            done += read;
        }
    }

    /// <summary>Synchronous read for one-off metadata probes; <paramref name="buffer"/> must be aligned memory.</summary>
    public void ReadExactly(long offset, Span<byte> buffer)
    {
        var done = 0;
        while (done < buffer.Length)
        {
            var read = RandomAccess.Read(_handle, buffer[done..], offset + done);
            if (read == 0)
            {
                throw new IOException($"leg {Path}: short read at {offset + done} (leg is {Length} bytes)");
            }

            done += read;
        }
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken cancellation = default)
    {
        if (offset + buffer.Length > Length)
        {
            return ValueTask.FromException(new IOException($"leg {Path}: write at {offset}+{buffer.Length} is past its end {Length}"));
        }

        return RandomAccess.WriteAsync(_handle, buffer, offset, cancellation);
    }

    /// <summary>
    /// Buffered leg: pwrite on the calling thread. It copies into the page cache (ext4 refuses RWF_NOWAIT for buffered
    /// writes, so it may also wait in dirty-page throttling, as nbdkit's threads do); a hop to a pool thread per write
    /// cost more CPU than the copy on this 2-core VM (docs/benchmarks.md). O_DIRECT leg: <see cref="WriteAsync"/>.
    /// </summary>
    public ValueTask WriteOnCallerAsync(long offset, ReadOnlyMemory<byte> buffer)
    {
        if (DirectIo)
        {
            return WriteAsync(offset, buffer);
        }

        if (offset + buffer.Length > Length)
        {
            return ValueTask.FromException(new IOException($"leg {Path}: write at {offset}+{buffer.Length} is past its end {Length}"));
        }

        try
        {
            RandomAccess.Write(_handle, buffer.Span, offset);
            return ValueTask.CompletedTask;
        }
        catch (Exception e) when (e is not IOException)
        {
            return ValueTask.FromException(new IOException($"leg {Path}: write of {buffer.Length} bytes at {offset} failed: {e.Message}", e));
        }
        catch (IOException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>
    /// Buffered leg: pwritev2 with RWF_DSYNC, durable for this range only. O_DIRECT leg: write, then fdatasync (the
    /// same cost, since O_DIRECT leaves no dirty pages behind).
    /// </summary>
    public ValueTask WriteDurableAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken cancellation = default)
    {
        if (DirectIo)
        {
            return WriteThenFlushAsync(offset, buffer, cancellation);
        }

        if (offset + buffer.Length > Length)
        {
            return ValueTask.FromException(new IOException($"leg {Path}: write at {offset}+{buffer.Length} is past its end {Length}"));
        }

        return WriteDsyncAsync(offset, buffer);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask WriteThenFlushAsync(long offset, ReadOnlyMemory<byte> buffer, CancellationToken cancellation)
    {
        await WriteAsync(offset, buffer, cancellation).ConfigureAwait(false);
        await FlushAsync(cancellation).ConfigureAwait(false);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask WriteDsyncAsync(long offset, ReadOnlyMemory<byte> buffer)
    {
        // The pin keeps the memory in place while a pool thread writes from its address.
        using var pin = buffer.Pin();
        nint address;
        unsafe
        {
            address = (nint)pin.Pointer;
        }

        await BlockingSyscall.Run(static (h, a, o, l) => PWriteDsync(h, a, o, l), _handle, address, offset, buffer.Length).ConfigureAwait(false);
    }

    private static unsafe string? PWriteDsync(SafeFileHandle handle, long address, long offset, int length)
    {
        var done = 0;
        while (done < length)
        {
            var vector = new Libc.IoVec { Base = (byte*)address + done, Length = (nuint)(length - done) };
            var written = Libc.PWriteV2(handle, &vector, 1, offset + done, Libc.RWF_DSYNC);
            if (written < 0)
            {
                return "pwritev2(RWF_DSYNC) failed: " + Libc.Describe(Libc.Errno);
            }

            if (written == 0)
            {
                return $"pwritev2(RWF_DSYNC) wrote nothing at {offset + done}";
            }

            done += (int)written;
        }

        return null;
    }

    /// <summary>
    /// Makes what this host's page cache holds of the leg durable (fdatasync), then drops it (posix_fadvise
    /// DONTNEED), so the next reads come from the disk: pages cached before this open may be older than what
    /// another writer put on the disk since.
    /// </summary>
    public void DropCachedPages()
    {
        if (Writable && Libc.FDataSync(_handle) != 0)
        {
            throw new IOException($"leg {Path}: fdatasync before dropping cached pages failed: {Libc.Describe(Libc.Errno)}");
        }

        var error = Libc.PosixFAdvise(_handle, 0, 0, Libc.POSIX_FADV_DONTNEED);
        if (error != 0)
        {
            throw new IOException($"leg {Path}: posix_fadvise(DONTNEED) failed: {Libc.Describe(error)}");
        }
    }

    public ValueTask FlushAsync(CancellationToken cancellation = default) =>
        Writable ? BlockingSyscall.Run(static (h, _, _, _) => Libc.FDataSync(h) == 0 ? null : "fdatasync failed: " + Libc.Describe(Libc.Errno), _handle, 0, 0, 0) : ValueTask.CompletedTask;

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask ZeroAsync(long offset, long length, bool mayPunchHole, CancellationToken cancellation = default)
    {
        if (length <= 0)
        {
            return;
        }

        if (offset < 0 || offset + length > Length)
        {
            throw new IOException($"leg {Path}: zero range {offset}+{length} is outside the leg ({Length} bytes)");
        }

        try
        {
            if (IsBlockDevice)
            {
                // BLKZEROOUT needs 512-byte alignment; the unaligned edges are rewritten below.
                var start = LegLayout.AlignUp(offset, 512);
                var end = (offset + length) / 512 * 512;
                if (end > start)
                {
                    await BlockingSyscall.Run(static (h, s, l, _) => ZeroOut(h, s, l), _handle, start, end - start, 0).ConfigureAwait(false);
                }

                await WriteZeroesAsync(offset, start - offset, cancellation).ConfigureAwait(false);
                await WriteZeroesAsync(Math.Max(end, start), offset + length - Math.Max(end, start), cancellation).ConfigureAwait(false);
                return;
            }

            var mode = Libc.FALLOC_FL_KEEP_SIZE | (mayPunchHole ? Libc.FALLOC_FL_PUNCH_HOLE : Libc.FALLOC_FL_ZERO_RANGE);
            await BlockingSyscall.Run(static (h, o, l, m) => Libc.FAllocate(h, m, o, l) == 0 ? null : Failure("fallocate", Libc.Errno), _handle, offset, length, mode).ConfigureAwait(false);
        }
        catch (IOException e) when (e.Message.StartsWith(UnsupportedPrefix, StringComparison.Ordinal))
        {
            // The filesystem or device cannot zero in place: write zeroes, which every leg can.
            await WriteZeroesAsync(offset, length, cancellation).ConfigureAwait(false);
        }
    }

    private const string UnsupportedPrefix = "unsupported: ";

    // "Cannot do this here" errors lead to the write-zeroes fallback; real I/O errors fail the leg.
    private static string Failure(string call, int errno) =>
        (errno is Libc.EOPNOTSUPP or Libc.ENOSYS or Libc.EINVAL or Libc.ENOTTY ? UnsupportedPrefix : "") + call + " failed: " + Libc.Describe(errno);

    private static string? ZeroOut(SafeFileHandle handle, long start, long length)
    {
        unsafe
        {
            var range = stackalloc ulong[2];
            range[0] = (ulong)start;
            range[1] = (ulong)length;
            return Libc.IoctlRange(handle, Libc.BLKZEROOUT, range) == 0 ? null : Failure("BLKZEROOUT", Libc.Errno);
        }
    }

    /// <summary>Writes zeroes over an arbitrary range, read-modify-writing the partial 4 KiB blocks at the edges.</summary>
    private async ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellation)
    {
        if (length <= 0)
        {
            return;
        }

        const int block = LegFormat.BlockSize;
        var pool = AlignedBufferPool.Shared;
        var start = offset / block * block;
        var end = LegLayout.AlignUp(offset + length, block);
        const int piece = 1 << 20;
        var buffer = pool.Rent(piece);
        try
        {
            for (var position = start; position < end; position += piece)
            {
                var count = (int)Math.Min(piece, end - position);
                var memory = buffer.All[..count];
                var partial = position < offset || position + count > offset + length;
                if (partial)
                {
                    await ReadAsync(position, memory, cancellation).ConfigureAwait(false);
                    var zeroFrom = Math.Max(offset, position) - position;
                    var zeroTo = Math.Min(offset + length, position + count) - position;
                    memory.Span[(int)zeroFrom..(int)zeroTo].Clear();
                }
                else
                {
                    memory.Span.Clear();
                }

                await WriteAsync(position, memory, cancellation).ConfigureAwait(false);
            }
        }
        finally
        {
            pool.Return(buffer);
        }
    }

    public void GetAllocation(long offset, long length, List<(long Length, bool Hole)> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var end = Math.Min(offset + length, Length);
        if (IsBlockDevice || offset >= end)
        {
            runs.Add((length, false));
            return;
        }

        var position = offset;
        while (position < end)
        {
            var data = Libc.LSeek(_handle, position, Libc.SEEK_DATA);
            if (data < 0)
            {
                var errno = Libc.Errno;
                if (errno == Libc.ENXIO)
                {
                    runs.Add((end - position, true)); // no data up to the end of the file
                    return;
                }

                // Filesystem without SEEK_DATA: everything counts as data, which is always correct.
                runs.Add((end - position, false));
                return;
            }

            if (data > position)
            {
                var holeEnd = Math.Min(data, end);
                runs.Add((holeEnd - position, true));
                position = holeEnd;
                continue;
            }

            var hole = Libc.LSeek(_handle, position, Libc.SEEK_HOLE);
            var dataEnd = hole < 0 ? end : Math.Min(hole, end);
            runs.Add((dataEnd - position, false));
            position = dataEnd;
        }
    }

    public void Dispose() => _handle.Dispose();
}
