using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Microsoft.Extensions.Logging;

namespace Lockstep.Actors.BlockIo;

/// <summary>
/// An open mirrored volume on this node: the block pipeline the NBD server reads and writes.
/// <para>
/// Write: wait for overlapping in-flight writes (<see cref="RangeAdmissionState{T}"/>) → set the chunks' bits in
/// this node's bitmap slot and wait until a flush carrying them is on every leg (<see cref="BitmapSlotState"/>,
/// group commit: concurrent first writes into clean chunks share one bitmap write + fdatasync) → write every
/// leg in parallel → acknowledge → bits are cleared by a timer once the chunks have been idle.
/// Read: the in-sync leg with the fewest reads outstanding. A leg that fails I/O leaves the mirror through
/// <see cref="IVolumeEvents.LegFailed"/> before the request that saw the error completes.
/// </para>
/// <para>
/// Why not an actor pipeline (ARCHITECTURE §6 sketches one): every stage here is "await a disk" and the only
/// shared state is two small pure state machines guarded by one short lock. Messages between actors would add a
/// mailbox hop, an allocation and a context switch per stage per request (~3 µs each here) on a 2-core machine
/// where a 4 KiB O_DIRECT write takes ~30 µs, and would serialize the whole volume through one mailbox. The
/// state classes stay pure so the bitmap slot can become the sharded entity the cluster needs.
/// </para>
/// <code>
/// await using var volume = await MirrorVolume.OpenAsync(descriptor, nodeSlot: 0, events, logger);
/// Console.WriteLine($"resynced {volume.Recovery.ChunksResynced} chunks");
/// await volume.WriteAsync(0, data, forceUnitAccess: false);
/// await volume.FlushAsync();
/// </code>
/// </summary>
public sealed class MirrorVolume : IBlockDevice
{
    private const int Block = LegFormat.BlockSize;
    private const int CopyPiece = 4 << 20;

    private readonly VolumeDescriptor _descriptor;
    private readonly LegLayout _layout;
    private readonly int _slot;
    private readonly IVolumeEvents _events;
    private readonly ILogger _logger;
    private readonly MirrorVolumeOptions _options;
    private readonly Leg[] _legs;
    private readonly LegWriter?[] _writers;
    private readonly AlignedBufferPool _pool = AlignedBufferPool.Shared;
    private readonly Lock _gate = new(); // guards _admission, _bitmap, _flushWaiters, _cleanWaiter
    private readonly RangeAdmissionState<IoOp> _admission = new();
    private readonly BitmapSlotState _bitmap;
    private readonly List<IoOp> _flushWaiters = [];
    private readonly ConcurrentQueue<IoOp> _ops = new();
    private readonly AutoResetSignal _flushSignal = new();
    private readonly SemaphoreSlim _legStateLock = new(1, 1);
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly long _clearDelayTicks;
    private readonly int _setAheadChunks;
    private long _lastWriteEnd = -1;
    private Timer? _clearTimer;
    private Task _idleClear = Task.CompletedTask;
    private int _idleClearRunning;
    private Task _flusher = Task.CompletedTask;
    private TaskCompletionSource? _cleanWaiter;
    private Exception? _bitmapFault;
    private long _eventsCounter;
    private int _inflight;
    private int _readCursor;
    private volatile bool _closing;
    private volatile bool _stopFlusher;

    private MirrorVolume(VolumeDescriptor descriptor, LegLayout layout, int slot, IVolumeEvents events, ILogger logger, MirrorVolumeOptions options, Leg[] legs)
    {
        _descriptor = descriptor;
        _layout = layout;
        _slot = slot;
        _events = events;
        _logger = logger;
        _options = options;
        _legs = legs;
        _writers = new LegWriter?[legs.Length];
        _bitmap = new BitmapSlotState(layout.ChunkCount);
        _eventsCounter = legs.Max(l => l.Superblock.Events);
        _clearDelayTicks = StopwatchTicks(options.BitmapClearDelay);
        _setAheadChunks = (int)Math.Min(layout.ChunkCount, options.BitmapSetAheadBytes / descriptor.Geometry.ChunkSizeBytes);
    }

    public string Name => _descriptor.Name;

    public long Size => _descriptor.Geometry.SizeBytes;

    public int MinimumBlockSize => Block;

    public int PreferredBlockSize => Block;

    public int MaximumRequestSize => _options.MaximumRequestSize;

    public bool IsReadOnly => _options.ReadOnly;

    /// <summary>How the legs are reached (fixed while open; a metadata change applies at the next open).</summary>
    public VolumeCacheMode Cache => _options.Cache;

    /// <summary>The committed metadata the volume was opened with.</summary>
    public VolumeDescriptor Descriptor => _descriptor;

    /// <summary>What crash recovery did at open.</summary>
    public ResyncReport Recovery { get; private set; } = new(0, 0, TimeSpan.Zero, Guid.Empty);

    /// <summary>Legs currently in the mirror (not failed), in descriptor order.</summary>
    public IReadOnlyList<Guid> ActiveLegs => _legs.Where(l => !l.Failed).Select(l => l.Id).ToArray();

    /// <summary>Where each opened leg was found (it may differ from the descriptor's hint).</summary>
    public IReadOnlyDictionary<Guid, string> LegPaths => _legs.ToDictionary(l => l.Id, l => l.Device.Path);

    /// <summary>
    /// Opens the volume: finds each in-sync leg by its UUIDs (at its recorded path, else in the legs' folders and
    /// <see cref="MirrorVolumeOptions.LegSearchPaths"/>), drops legs that are missing, of another geometry or stale
    /// (lower events counter), then resyncs the chunks left dirty by a crash before it serves anything.
    /// Throws <see cref="BlockIoException"/> (Unavailable) when no leg is usable.
    /// </summary>
    public static async Task<MirrorVolume> OpenAsync(VolumeDescriptor descriptor, int nodeSlot, IVolumeEvents events, ILogger logger, MirrorVolumeOptions? options = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        ArgumentNullException.ThrowIfNull(events);
        ArgumentNullException.ThrowIfNull(logger);
        options ??= new MirrorVolumeOptions();
        var layout = LegLayout.For(descriptor.Geometry);
        if (nodeSlot < 0 || nodeSlot >= descriptor.Geometry.MaxNodes)
        {
            throw new ArgumentOutOfRangeException(nameof(nodeSlot), nodeSlot, $"volume '{descriptor.Name}' has bitmap slots 0..{descriptor.Geometry.MaxNodes - 1}");
        }

        var searchPaths = options.LegSearchPaths
            .Concat(descriptor.Legs.Select(l => Path.GetDirectoryName(Path.GetFullPath(l.Path)) ?? "/"))
            .Distinct(StringComparer.Ordinal)
            .ToArray();
        var legs = new List<Leg>();
        var problems = new List<string>();
        try
        {
            foreach (var legDescriptor in descriptor.Legs)
            {
                if (legDescriptor.State != LegState.InSync)
                {
                    problems.Add($"leg {legDescriptor.LegId} is {legDescriptor.State}");
                    continue;
                }

                var probe = LegProbe.Read(legDescriptor.Path, descriptor.VolumeId, legDescriptor.LegId, logger);
                if (!probe.IsOk)
                {
                    var found = LegLocator.Find(descriptor.VolumeId, legDescriptor.LegId, null, searchPaths, logger);
                    if (found is null)
                    {
                        var reason = $"{probe.Reason}; not found by its UUID in {string.Join(", ", searchPaths)}";
                        logger.LogError("Volume {Volume}: leg {LegId} missing: {Reason}", descriptor.Name, legDescriptor.LegId, reason);
                        problems.Add(reason);
                        await events.LegMissing(legDescriptor.LegId, reason).ConfigureAwait(false);
                        continue;
                    }

                    logger.LogWarning("Volume {Volume}: leg {LegId} found at {NewPath} instead of {OldPath}", descriptor.Name, legDescriptor.LegId, found.Path, legDescriptor.Path);
                    await events.LegMoved(legDescriptor.LegId, found.Path).ConfigureAwait(false);
                    probe = found;
                }

                var superblock = probe.Superblock!;
                if (superblock.Geometry != descriptor.Geometry)
                {
                    var reason = $"leg {probe.Path} has geometry {superblock.Geometry}, the volume has {descriptor.Geometry}";
                    problems.Add(reason);
                    await events.LegFailed(legDescriptor.LegId, reason).ConfigureAwait(false);
                    continue;
                }

                ILegDevice device;
                try
                {
                    var file = LegFile.Open(probe.Path, writable: !options.ReadOnly, direct: options.Cache == VolumeCacheMode.Direct, logger);
                    device = file;
                    if (options.Cache == VolumeCacheMode.Writeback)
                    {
                        try
                        {
                            // Pages this host cached before this open may be older than the disk (the leg was served
                            // elsewhere, or in direct mode, since): read what is on the disk.
                            file.DropCachedPages();
                        }
                        catch
                        {
                            file.Dispose();
                            throw;
                        }
                    }
                }
                catch (IOException e)
                {
                    problems.Add(e.Message);
                    await events.LegFailed(legDescriptor.LegId, e.Message).ConfigureAwait(false);
                    continue;
                }

                if (options.LegWrapper is { } wrap)
                {
                    device = wrap(legDescriptor.LegId, device);
                }

                legs.Add(new Leg(legDescriptor.LegId, device, superblock, NewInlineGuard(options)));
            }

            // A leg that missed an events bump was out of the mirror when the others moved on: stale.
            var newest = legs.Count == 0 ? 0 : legs.Max(l => l.Superblock.Events);
            foreach (var stale in legs.Where(l => l.Superblock.Events < newest).ToArray())
            {
                var reason = $"leg {stale.Device.Path} is stale: events {stale.Superblock.Events} < {newest} on the other legs";
                logger.LogError("Volume {Volume}: {Reason}", descriptor.Name, reason);
                problems.Add(reason);
                legs.Remove(stale);
                stale.Device.Dispose();
                await events.LegFailed(stale.Id, reason).ConfigureAwait(false);
            }

            if (legs.Count == 0)
            {
                throw new BlockIoException(BlockIoError.Unavailable, $"volume '{descriptor.Name}' has no usable leg: {string.Join("; ", problems)}");
            }

            var volume = new MirrorVolume(descriptor, layout, nodeSlot, events, logger, options, [.. legs]);
            legs.Clear();
            try
            {
                if (!options.ReadOnly)
                {
                    volume.Recovery = await volume.RecoverAsync(cancellation).ConfigureAwait(false);
                }

                volume.Start();
                return volume;
            }
            catch
            {
                foreach (var leg in volume._legs)
                {
                    leg.Device.Dispose();
                }

                throw;
            }
        }
        finally
        {
            foreach (var leg in legs)
            {
                leg.Device.Dispose();
            }
        }
    }

    private void Start()
    {
        logInfo();
        if (_options.Cache == VolumeCacheMode.Writeback && !_options.ReadOnly)
        {
            // A request writes the first leg in the mirror itself; every other leg gets a writer thread (see FanOutAsync).
            for (var i = 1; i < _legs.Length; i++)
            {
                _writers[i] = new LegWriter($"leg writer {Name}/{i}");
            }
        }

        _flusher = Task.Run(FlushLoopAsync);
        var period = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(10).Ticks, _options.BitmapClearDelay.Ticks / 4));
        _clearTimer = new Timer(static state => ((MirrorVolume)state!).CollectIdleChunks(), this, period, period);

        void logInfo() => _logger.LogInformation("Volume {Volume} open on slot {Slot}: legs {Legs}, cache {Cache}, O_DIRECT {Direct}",
            Name, _slot, string.Join(", ", _legs.Select(l => l.Device.Path)), _options.Cache.ToString().ToLowerInvariant(), _legs.All(l => l.Device.DirectIo));
    }

    // ---------------------------------------------------------------- reads

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellation = default)
    {
        CheckRange(offset, destination.Length, write: false, payload: true);
        if (destination.Length == 0)
        {
            return;
        }

        EnterOp();
        try
        {
            var start = AlignDown(offset);
            var length = (int)(AlignUp(offset + destination.Length) - start);
            if (start == offset && length == destination.Length)
            {
                // The pin keeps the memory where the alignment check saw it until the leg read is done.
                using var pin = destination.Pin();
                if (IsBlockAligned(pin))
                {
                    // Whole aligned blocks into aligned memory (the NBD server's buffers): O_DIRECT can fill it, no bounce copy.
                    await ReadAnyLegAsync(_layout.DataOffset + start, destination).ConfigureAwait(false);
                    return;
                }
            }

            var buffer = _pool.Rent(length);
            try
            {
                await ReadAnyLegAsync(_layout.DataOffset + start, buffer.All[..length]).ConfigureAwait(false);
                buffer.All.Span.Slice((int)(offset - start), destination.Length).CopyTo(destination.Span);
            }
            finally
            {
                _pool.Return(buffer);
            }
        }
        finally
        {
            ExitOp();
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReadAnyLegAsync(long legOffset, Memory<byte> buffer)
    {
        while (true)
        {
            var leg = PickReadLeg() ?? throw NoLegLeft("read");
            Interlocked.Increment(ref leg.Outstanding);
            try
            {
                await leg.Device.ReadAsync(legOffset, buffer).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (e is not BlockIoException)
            {
                await FailLegAsync(leg, $"read of {buffer.Length} bytes at leg offset {legOffset} failed: {e.Message}").ConfigureAwait(false);
            }
            finally
            {
                Interlocked.Decrement(ref leg.Outstanding);
            }
        }
    }

    /// <summary>Whether pinned memory starts on a 4 KiB boundary, as O_DIRECT needs (lengths are checked by the caller).</summary>
    private static unsafe bool IsBlockAligned(in System.Buffers.MemoryHandle pin) => ((nuint)pin.Pointer & (Block - 1)) == 0;

    private Leg? PickReadLeg()
    {
        // Fewest reads outstanding; ties rotate so two idle legs share a sequential reader.
        var start = (int)((uint)Interlocked.Increment(ref _readCursor) % (uint)_legs.Length);
        Leg? best = null;
        for (var i = 0; i < _legs.Length; i++)
        {
            var leg = _legs[(start + i) % _legs.Length];
            if (!leg.Failed && (best is null || Volatile.Read(ref leg.Outstanding) < Volatile.Read(ref best.Outstanding)))
            {
                best = leg;
            }
        }

        return best;
    }

    // ---------------------------------------------------------------- writes

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool forceUnitAccess, CancellationToken cancellation = default)
    {
        CheckRange(offset, source.Length, write: true, payload: true);
        if (source.Length == 0)
        {
            if (forceUnitAccess)
            {
                await FlushAsync(cancellation).ConfigureAwait(false);
            }

            return;
        }

        EnterOp();
        var op = RentOp();
        try
        {
            var start = AlignDown(offset);
            var end = AlignUp(offset + source.Length);
            await AdmitAsync(op, start, end).ConfigureAwait(false);
            try
            {
                await MarkAsync(op, start, end).ConfigureAwait(false);
                if (start == offset && end == offset + source.Length)
                {
                    using var pin = source.Pin();
                    if (IsBlockAligned(pin))
                    {
                        // Whole aligned blocks from aligned memory: every leg writes straight from the caller's buffer.
                        await FanOutAsync(LegOp.Write, op, _layout.DataOffset + start, source, 0, false, forceUnitAccess).ConfigureAwait(false);
                        return;
                    }
                }

                var length = (int)(end - start);
                var buffer = _pool.Rent(length);
                try
                {
                    var memory = buffer.All[..length];
                    // O_DIRECT moves whole 4 KiB blocks: read the partial head and tail blocks first. Admission
                    // covers the whole blocks, so no other write can change them meanwhile.
                    var headPartial = start != offset;
                    if (headPartial)
                    {
                        await ReadAnyLegAsync(_layout.DataOffset + start, memory[..Block]).ConfigureAwait(false);
                    }

                    if (end != offset + source.Length && !(headPartial && end - Block == start))
                    {
                        await ReadAnyLegAsync(_layout.DataOffset + end - Block, memory[^Block..]).ConfigureAwait(false);
                    }

                    source.Span.CopyTo(memory.Span[(int)(offset - start)..]);
                    await FanOutAsync(LegOp.Write, op, _layout.DataOffset + start, memory, 0, false, forceUnitAccess).ConfigureAwait(false);
                }
                finally
                {
                    _pool.Return(buffer);
                }
            }
            finally
            {
                Unmark(op);
                Release(op);
            }
        }
        finally
        {
            ReturnOp(op);
            ExitOp();
        }
    }

    public ValueTask TrimAsync(long offset, long length, bool forceUnitAccess, CancellationToken cancellation = default) =>
        ZeroCoreAsync(offset, length, mayPunchHole: true, forceUnitAccess);

    public ValueTask WriteZeroesAsync(long offset, long length, bool mayPunchHole, bool forceUnitAccess, CancellationToken cancellation = default) =>
        ZeroCoreAsync(offset, length, mayPunchHole, forceUnitAccess);

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ZeroCoreAsync(long offset, long length, bool mayPunchHole, bool forceUnitAccess)
    {
        CheckRange(offset, length, write: true, payload: false);
        if (length == 0)
        {
            return;
        }

        EnterOp();
        var op = RentOp();
        try
        {
            // Zeroing changes data like a write does, so it takes the same admission and write-intent path.
            await AdmitAsync(op, AlignDown(offset), AlignUp(offset + length)).ConfigureAwait(false);
            try
            {
                await MarkAsync(op, AlignDown(offset), AlignUp(offset + length)).ConfigureAwait(false);
                await FanOutAsync(LegOp.Zero, op, _layout.DataOffset + offset, default, length, mayPunchHole, forceUnitAccess).ConfigureAwait(false);
            }
            finally
            {
                Unmark(op);
                Release(op);
            }
        }
        finally
        {
            ReturnOp(op);
            ExitOp();
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask FlushAsync(CancellationToken cancellation = default)
    {
        EnterOp();
        var op = RentOp();
        try
        {
            await FanOutAsync(LegOp.Flush, op, 0, default, 0, false, false).ConfigureAwait(false);
        }
        finally
        {
            ReturnOp(op);
            ExitOp();
        }
    }

    public ValueTask<IReadOnlyList<BlockExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellation = default)
    {
        CheckRange(offset, length, write: false, payload: false);
        length = Math.Min(length, Size - offset);
        if (length == 0)
        {
            return ValueTask.FromResult<IReadOnlyList<BlockExtent>>([]);
        }

        EnterOp();
        try
        {
            while (true)
            {
                var leg = PickReadLeg() ?? throw NoLegLeft("allocation query");
                var runs = new List<(long Length, bool Hole)>();
                try
                {
                    leg.Device.GetAllocation(_layout.DataOffset + offset, length, runs);
                }
                catch (IOException e)
                {
                    FailLegAsync(leg, $"allocation query failed: {e.Message}").GetAwaiter().GetResult();
                    continue;
                }

                var extents = new List<BlockExtent>(runs.Count);
                foreach (var (runLength, hole) in runs)
                {
                    var kind = hole ? BlockExtentKind.HoleAndZero : BlockExtentKind.Data;
                    if (extents.Count > 0 && extents[^1].Kind == kind)
                    {
                        extents[^1] = extents[^1] with { Length = extents[^1].Length + runLength };
                    }
                    else if (runLength > 0)
                    {
                        extents.Add(new BlockExtent(runLength, kind));
                    }
                }

                return ValueTask.FromResult<IReadOnlyList<BlockExtent>>(extents);
            }
        }
        finally
        {
            ExitOp();
        }
    }

    private enum LegOp
    {
        Write,
        Zero,
        Flush,
    }

    /// <summary>Runs one operation on every leg in the mirror at once; legs that fail leave the mirror; at least one must succeed.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask FanOutAsync(LegOp kind, IoOp op, long legOffset, ReadOnlyMemory<byte> data, long length, bool mayPunchHole, bool forceUnitAccess)
    {
        var tasks = op.LegTasks;
        var active = op.LegActive;
        var onCaller = -1;
        var activeCount = 0;
        for (var i = 0; i < _legs.Length; i++)
        {
            active[i] = !_legs[i].Failed;
            onCaller = active[i] && onCaller < 0 ? i : onCaller;
            activeCount += active[i] ? 1 : 0;
        }

        if (kind == LegOp.Write && !forceUnitAccess && activeCount > 1 && _writers[^1] is not null)
        {
            WriteOnCallerAndWriters(op, onCaller, legOffset, data);
        }
        else
        {
            // A single leg may write on this thread (a buffered leg copies into the page cache at once): one pool hop
            // and wake-up less per request. O_DIRECT legs, FUA writes, zeroing and flushes go to the pool per leg.
            onCaller = activeCount == 1 ? onCaller : -1;
            for (var i = 0; i < _legs.Length; i++)
            {
                var leg = _legs[i];
                if (!active[i])
                {
                    continue;
                }

                try
                {
                    tasks[i] = kind switch
                    {
                        // FUA per leg: a buffered leg syncs this range only (RWF_DSYNC), not every dirty page it holds.
                        LegOp.Write when forceUnitAccess => leg.Device.WriteDurableAsync(legOffset, data),
                        LegOp.Write when i == onCaller => WriteOnCallerGuarded(leg, legOffset, data),
                        LegOp.Write => leg.Device.WriteAsync(legOffset, data),
                        LegOp.Zero => leg.Device.ZeroAsync(legOffset, length, mayPunchHole),
                        _ => leg.Device.FlushAsync(),
                    };
                }
                catch (Exception e)
                {
                    tasks[i] = ValueTask.FromException(e);
                }
            }
        }

        var succeeded = await AwaitLegsAsync(kind, op, legOffset).ConfigureAwait(false);
        if (forceUnitAccess && kind == LegOp.Zero && succeeded > 0)
        {
            for (var i = 0; i < _legs.Length; i++)
            {
                if (active[i])
                {
                    tasks[i] = _legs[i].Device.FlushAsync();
                }
            }

            succeeded = await AwaitLegsAsync(LegOp.Flush, op, legOffset).ConfigureAwait(false);
        }

        if (succeeded == 0)
        {
            throw NoLegLeft(kind.ToString().ToLowerInvariant());
        }
    }

    /// <summary>
    /// A plain write to a writeback volume with two legs or more: every leg but the first is queued to its
    /// <see cref="LegWriter"/> thread, the first is copied into the page cache here, and then whatever queued write no
    /// writer has started yet is run here too. So two legs are copied at the same time on two cores when the writer is
    /// awake, and a request never waits for a writer that is still waking up (a 4 KiB copy takes less than a wake-up).
    /// </summary>
    private void WriteOnCallerAndWriters(IoOp op, int onCaller, long legOffset, ReadOnlyMemory<byte> data)
    {
        var tasks = op.LegTasks;
        for (var i = onCaller + 1; i < _legs.Length; i++)
        {
            if (op.LegActive[i])
            {
                tasks[i] = op.LegWrites[i].Prepare(_legs[i].Device, legOffset, data);

                // A leg whose writes must stay off this thread gets its writer woken: nobody copies it here.
                _writers[i]!.Enqueue(op.LegWrites[i], wake: data.Length >= _options.ParallelLegWriteBytes || !_legs[i].InlineGuard.TryStartInline(out _));
            }
        }

        try
        {
            tasks[onCaller] = WriteOnCallerGuarded(_legs[onCaller], legOffset, data);
        }
        catch (Exception e)
        {
            tasks[onCaller] = ValueTask.FromException(e);
        }

        for (var i = onCaller + 1; i < _legs.Length; i++)
        {
            var guard = _legs[i].InlineGuard;
            if (op.LegActive[i] && guard.TryStartInline(out var started))
            {
                op.LegWrites[i].TryRunHere();
                guard.InlineFinished(started);
            }
        }
    }

    /// <summary>
    /// A leg's write on this thread (a buffered leg copies into the page cache at once) unless this thread also serves
    /// other connections and the leg's <see cref="InlineWriteGuard"/> saw a recent inline write block; then on the
    /// pool, like an O_DIRECT leg's.
    /// </summary>
    private static ValueTask WriteOnCallerGuarded(Leg leg, long legOffset, ReadOnlyMemory<byte> data)
    {
        if (!leg.InlineGuard.TryStartInline(out var started))
        {
            return leg.Device.WriteAsync(legOffset, data);
        }

        var write = leg.Device.WriteOnCallerAsync(legOffset, data);
        leg.InlineGuard.InlineFinished(started);
        return write;
    }

    private static InlineWriteGuard NewInlineGuard(MirrorVolumeOptions options)
    {
        var cooldown = Math.Max(1, StopwatchTicks(options.InlineWriteCooldown));
        return new InlineWriteGuard(Math.Max(1, StopwatchTicks(options.InlineWriteSlowAfter)), cooldown, cooldown * 16);
    }

    private static long StopwatchTicks(TimeSpan span) => (long)(span.TotalSeconds * Stopwatch.Frequency);

    /// <summary>Inline writes of every leg that were slow enough to send that leg's writes off the request thread.</summary>
    public long SlowInlineWrites => _legs.Sum(l => l.InlineGuard.SlowWrites);

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> AwaitLegsAsync(LegOp kind, IoOp op, long legOffset)
    {
        var succeeded = 0;
        for (var i = 0; i < _legs.Length; i++)
        {
            if (!op.LegActive[i])
            {
                continue;
            }

            try
            {
                await op.LegTasks[i].ConfigureAwait(false);
                succeeded++;
            }
            catch (Exception e)
            {
                op.LegActive[i] = false;
                await FailLegAsync(_legs[i], $"{kind.ToString().ToLowerInvariant()} at leg offset {legOffset} failed: {e.Message}").ConfigureAwait(false);
            }
            finally
            {
                op.LegTasks[i] = default;
            }
        }

        return succeeded;
    }

    // ---------------------------------------------------------------- admission and bitmap

    private ValueTask AdmitAsync(IoOp op, long start, long end)
    {
        bool admitted;
        lock (_gate)
        {
            admitted = _admission.Enter(op, start, end);
        }

        return admitted ? ValueTask.CompletedTask : op.WaitAsync();
    }

    private void Release(IoOp op)
    {
        lock (_gate)
        {
            _admission.Exit(op, op.Woken);
        }

        foreach (var next in op.Woken)
        {
            next.Signal();
        }

        op.Woken.Clear();
    }

    private ValueTask MarkAsync(IoOp op, long start, long end)
    {
        var first = start / _descriptor.Geometry.ChunkSizeBytes;
        var last = (end - 1) / _descriptor.Geometry.ChunkSizeBytes;
        long wait;
        lock (_gate)
        {
            if (_bitmapFault is { } fault)
            {
                throw new BlockIoException(BlockIoError.Io, $"volume '{Name}': the write-intent bitmap cannot be written: {fault.Message}", fault);
            }

            // A write that starts where the previous one ended is a stream: let its bitmap sync cover the chunks
            // it is about to reach too (BitmapSlotState.BeginWrite).
            var sequential = start == _lastWriteEnd;
            _lastWriteEnd = end;
            wait = _bitmap.BeginWrite(first, last, sequential ? _setAheadChunks : 0, Stopwatch.GetTimestamp());
            (op.FirstChunk, op.LastChunk, op.Marked) = (first, last, true);
            if (wait == 0)
            {
                return ValueTask.CompletedTask;
            }

            op.WaitGeneration = wait;
            _flushWaiters.Add(op);
        }

        _flushSignal.Set();
        return op.WaitAsync();
    }

    private void Unmark(IoOp op)
    {
        if (!op.Marked)
        {
            return;
        }

        lock (_gate)
        {
            _bitmap.EndWrite(op.FirstChunk, op.LastChunk, Stopwatch.GetTimestamp());
        }

        op.Marked = false;
    }

    private void CollectIdleChunks()
    {
        if (_options.Cache == VolumeCacheMode.Writeback)
        {
            if (Interlocked.CompareExchange(ref _idleClearRunning, 1, 0) == 0)
            {
                _idleClear = CollectIdleChunksAfterDataSyncAsync();
            }

            return;
        }

        int collected;
        lock (_gate)
        {
            collected = _bitmap.CollectIdle(Stopwatch.GetTimestamp(), _clearDelayTicks);
        }

        if (collected > 0)
        {
            _flushSignal.Set();
        }
    }

    /// <summary>
    /// Writeback mode: a write acknowledged without FUA may sit in the page cache of one leg and be on the disk of
    /// the other. Clearing its chunk's bit before the data is durable on every leg would let a power-off leave the
    /// legs different under a clear bit, which recovery would never repair. So: note the time, fdatasync every leg,
    /// and clear only chunks that were already idle at that time (their writes ended before the sync began).
    /// The sync runs here, off the write path, so first writes into clean chunks never wait behind it.
    /// </summary>
    private async Task CollectIdleChunksAfterDataSyncAsync()
    {
        var op = RentOp();
        try
        {
            var syncStart = Stopwatch.GetTimestamp();
            lock (_gate)
            {
                if (_bitmap.IdleCount(syncStart, _clearDelayTicks) == 0)
                {
                    return;
                }
            }

            await FanOutAsync(LegOp.Flush, op, 0, default, 0, false, false).ConfigureAwait(false);
            int collected;
            lock (_gate)
            {
                collected = _bitmap.CollectIdle(syncStart, _clearDelayTicks);
            }

            if (collected > 0)
            {
                _flushSignal.Set();
            }
        }
        catch (Exception e)
        {
            // The bits stay set: the chunks are resynced after a crash, which is safe.
            _logger.LogError(e, "Volume {Volume}: data sync before clearing bitmap bits failed", Name);
        }
        finally
        {
            ReturnOp(op);
            Volatile.Write(ref _idleClearRunning, 0);
        }
    }

    /// <summary>
    /// The one writer of this node's bitmap slot: takes whatever bits changed since the last flush, writes those
    /// blocks to every leg, fdatasyncs every leg, and wakes the writes that waited for them.
    /// </summary>
    private async Task FlushLoopAsync()
    {
        var op = new IoOp(_legs.Length);
        var ready = new List<IoOp>();
        var blocks = new List<long>();
        while (true)
        {
            await _flushSignal.WaitAsync().ConfigureAwait(false);
            while (true)
            {
                long generation;
                AlignedBuffer? buffer;
                lock (_gate)
                {
                    if (!_bitmap.TryStartFlush(out generation, out var changed))
                    {
                        CompleteCleanWaiterLocked();
                        break;
                    }

                    blocks.Clear();
                    blocks.AddRange(changed);
                    buffer = _pool.Rent(blocks.Count * Block);
                    for (var i = 0; i < blocks.Count; i++)
                    {
                        _bitmap.CopyBlock(blocks[i], buffer.All.Span.Slice(i * Block, Block));
                    }
                }

                Exception? fault = null;
                try
                {
                    for (var i = 0; i < blocks.Count; i++)
                    {
                        var offset = _layout.SlotBitsOffset(_slot) + blocks[i] * Block;
                        // O_DIRECT legs: one fdatasync after the last block covers them all. Buffered legs: each
                        // block is synced by range, so the bitmap never waits for the data pages in the cache.
                        var durable = i == blocks.Count - 1 || _options.Cache == VolumeCacheMode.Writeback;
                        await FanOutAsync(LegOp.Write, op, offset, buffer.All.Slice(i * Block, Block), 0, false, forceUnitAccess: durable).ConfigureAwait(false);
                    }
                }
                catch (Exception e)
                {
                    fault = e;
                    _logger.LogCritical(e, "Volume {Volume}: bitmap flush failed on every leg", Name);
                }
                finally
                {
                    _pool.Return(buffer);
                }

                lock (_gate)
                {
                    _bitmap.CompleteFlush(generation);
                    _bitmapFault ??= fault;
                    for (var i = _flushWaiters.Count - 1; i >= 0; i--)
                    {
                        if (_bitmapFault is not null || _flushWaiters[i].WaitGeneration <= generation)
                        {
                            ready.Add(_flushWaiters[i]);
                            _flushWaiters.RemoveAt(i);
                        }
                    }
                }

                foreach (var waiter in ready)
                {
                    if (_bitmapFault is { } f)
                    {
                        waiter.Fail(new BlockIoException(BlockIoError.Io, $"volume '{Name}': bitmap write failed: {f.Message}", f));
                    }
                    else
                    {
                        waiter.Signal();
                    }
                }

                ready.Clear();
            }

            if (_stopFlusher)
            {
                return;
            }
        }
    }

    private void CompleteCleanWaiterLocked()
    {
        if (_cleanWaiter is not null && _bitmap.TrackedChunks == 0 && !_bitmap.FlushInProgress && !_bitmap.HasUnflushedChanges)
        {
            _cleanWaiter.TrySetResult();
            _cleanWaiter = null;
        }
    }

    /// <summary>Completes once no chunk is in use and every bit is clear on disk (tests use it to observe the lazy clear).</summary>
    internal Task WhenBitmapCleanAsync()
    {
        lock (_gate)
        {
            if (_bitmap.TrackedChunks == 0 && !_bitmap.FlushInProgress && !_bitmap.HasUnflushedChanges)
            {
                return Task.CompletedTask;
            }

            _cleanWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _cleanWaiter.Task;
        }
    }

    /// <summary>Bits set in this node's slot in memory (what the disk holds once pending flushes land).</summary>
    internal long DirtyChunkCount
    {
        get
        {
            lock (_gate)
            {
                return _bitmap.SetBitCount;
            }
        }
    }

    internal int NodeSlot => _slot;

    internal LegLayout Layout => _layout;

    // ---------------------------------------------------------------- leg failure

    private Task FailLegAsync(Leg leg, string reason)
    {
        lock (leg)
        {
            if (leg.FailTask is null)
            {
                leg.Failed = true;
                leg.FailTask = FailLegCoreAsync(leg, reason);
            }

            return leg.FailTask;
        }
    }

    private async Task FailLegCoreAsync(Leg leg, string reason)
    {
        _logger.LogError("Volume {Volume}: leg {LegId} ({Path}) failed and leaves the mirror: {Reason}", Name, leg.Id, leg.Device.Path, reason);
        var alsoFailed = new List<(Leg Leg, string Reason)>();
        await _legStateLock.WaitAsync().ConfigureAwait(false);
        try
        {
            // Bump the events counter on the survivors first (intent on disk before the commit): if the node dies
            // before the metadata commit lands, the next open still sees the failed leg as stale.
            var events = ++_eventsCounter;
            foreach (var survivor in _legs.Where(l => !l.Failed))
            {
                try
                {
                    var updated = survivor.Superblock with { Events = events };
                    await LegMetadata.WriteSuperblockAsync(survivor.Device, updated, flush: true).ConfigureAwait(false);
                    survivor.Superblock = updated;
                }
                catch (Exception e)
                {
                    alsoFailed.Add((survivor, $"superblock update failed: {e.Message}"));
                }
            }
        }
        finally
        {
            _legStateLock.Release();
        }

        try
        {
            await _events.LegFailed(leg.Id, reason).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            throw new BlockIoException(BlockIoError.Io, $"volume '{Name}': leg {leg.Id} failed and the failure could not be committed: {e.Message}", e);
        }

        foreach (var (survivor, why) in alsoFailed)
        {
            await FailLegAsync(survivor, why).ConfigureAwait(false);
        }
    }

    private BlockIoException NoLegLeft(string what) =>
        new(BlockIoError.Io, $"volume '{Name}': {what} failed, no leg left in the mirror");

    // ---------------------------------------------------------------- crash recovery

    private async Task<ResyncReport> RecoverAsync(CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        var union = new byte[_layout.SlotBitsBytes];
        var bits = new byte[_layout.SlotBitsBytes];
        var slots = _options.RecoverAllSlots ? Enumerable.Range(0, _descriptor.Geometry.MaxNodes).ToArray() : [_slot];
        var slotsWithBits = new List<int>();
        foreach (var slot in slots)
        {
            var any = false;
            foreach (var leg in _legs.Where(l => !l.Failed))
            {
                try
                {
                    await LegMetadata.ReadSlotBitsAsync(leg.Device, _layout, slot, bits, cancellation).ConfigureAwait(false);
                }
                catch (IOException e)
                {
                    await FailLegAsync(leg, $"reading bitmap slot {slot} failed: {e.Message}").ConfigureAwait(false);
                    continue;
                }

                for (var i = 0; i < bits.Length; i++)
                {
                    union[i] |= bits[i];
                    any |= bits[i] != 0;
                }
            }

            if (any)
            {
                slotsWithBits.Add(slot);
            }
        }

        var dirty = LegMetadata.SetBits(union, _layout.ChunkCount);
        if (dirty.Count == 0)
        {
            return new ResyncReport(0, 0, clock.Elapsed, Guid.Empty);
        }

        _logger.LogWarning("Volume {Volume}: {Count} chunks dirty after an unclean shutdown (slots {Slots}); resyncing them", Name, dirty.Count, string.Join(",", slotsWithBits));
        // Publish the range under repair in our slot header, where other nodes will look for it.
        await WriteOwnSlotHeaderAsync(dirty[0], dirty[^1] + 1, cancellation).ConfigureAwait(false);

        long bytes = 0;
        var chunkSize = (long)_descriptor.Geometry.ChunkSizeBytes;
        var buffer = _pool.Rent((int)Math.Min(chunkSize, CopyPiece));
        Guid source = Guid.Empty;
        try
        {
            foreach (var chunk in dirty)
            {
                var chunkStart = chunk * chunkSize;
                var chunkLength = Math.Min(chunkSize, Size - chunkStart);
                for (long done = 0; done < chunkLength; done += CopyPiece)
                {
                    var count = (int)Math.Min(CopyPiece, chunkLength - done);
                    var memory = buffer.All[..count];
                    var offset = _layout.DataOffset + chunkStart + done;
                    var from = await ReadFromFirstHealthyAsync(offset, memory).ConfigureAwait(false);
                    source = from.Id;
                    foreach (var target in _legs.Where(l => !l.Failed && l != from))
                    {
                        try
                        {
                            await target.Device.WriteAsync(offset, memory, cancellation).ConfigureAwait(false);
                        }
                        catch (IOException e)
                        {
                            await FailLegAsync(target, $"resync write at leg offset {offset} failed: {e.Message}").ConfigureAwait(false);
                        }
                    }
                }

                bytes += chunkLength;
            }
        }
        finally
        {
            _pool.Return(buffer);
        }

        var flush = RentOp();
        try
        {
            await FanOutAsync(LegOp.Flush, flush, 0, default, 0, false, false).ConfigureAwait(false);
            // Only now, with the copies durable, may the bits go.
            var zero = _pool.Rent((int)Math.Min(_layout.SlotBitsBytes, CopyPiece));
            try
            {
                zero.All.Span.Clear();
                foreach (var slot in slotsWithBits)
                {
                    for (long done = 0; done < _layout.SlotBitsBytes; done += CopyPiece)
                    {
                        var count = (int)Math.Min(CopyPiece, _layout.SlotBitsBytes - done);
                        await FanOutAsync(LegOp.Write, flush, _layout.SlotBitsOffset(slot) + done, zero.All[..count], 0, false, false).ConfigureAwait(false);
                    }
                }
            }
            finally
            {
                _pool.Return(zero);
            }

            await FanOutAsync(LegOp.Flush, flush, 0, default, 0, false, false).ConfigureAwait(false);
        }
        finally
        {
            ReturnOp(flush);
        }

        await WriteOwnSlotHeaderAsync(0, 0, cancellation).ConfigureAwait(false);
        var report = new ResyncReport(dirty.Count, bytes, clock.Elapsed, source);
        _logger.LogWarning("Volume {Volume}: resynced {Chunks} chunks ({Bytes} bytes) from leg {Source} in {Elapsed}", Name, report.ChunksResynced, bytes, source, report.Elapsed);
        return report;
    }

    private async Task<Leg> ReadFromFirstHealthyAsync(long offset, Memory<byte> memory)
    {
        while (true)
        {
            var leg = _legs.FirstOrDefault(l => !l.Failed) ?? throw NoLegLeft("resync read");
            try
            {
                await leg.Device.ReadAsync(offset, memory).ConfigureAwait(false);
                return leg;
            }
            catch (IOException e)
            {
                await FailLegAsync(leg, $"resync read at leg offset {offset} failed: {e.Message}").ConfigureAwait(false);
            }
        }
    }

    private async Task WriteOwnSlotHeaderAsync(long resyncLo, long resyncHi, CancellationToken cancellation)
    {
        var header = new BitmapSlotHeader(LegFormat.Version, _slot, _descriptor.VolumeId, _eventsCounter, _layout.ChunkCount, resyncLo, resyncHi);
        foreach (var leg in _legs.Where(l => !l.Failed))
        {
            try
            {
                await LegMetadata.WriteSlotHeaderAsync(leg.Device, _layout, header, cancellation).ConfigureAwait(false);
                await leg.Device.FlushAsync(cancellation).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                await FailLegAsync(leg, $"slot header write failed: {e.Message}").ConfigureAwait(false);
            }
        }
    }

    // ---------------------------------------------------------------- verify

    /// <summary>
    /// Compares the legs chunk by chunk while the volume serves I/O: each chunk is compared under admission, so
    /// no write to it is in flight meanwhile and a difference is real.
    /// </summary>
    public async Task<VerifyReport> VerifyAsync(CancellationToken cancellation = default)
    {
        EnterOp();
        var op = RentOp();
        try
        {
            var legs = _legs.Where(l => !l.Failed).ToArray();
            var differing = new List<long>();
            var chunkSize = (long)_descriptor.Geometry.ChunkSizeBytes;
            var comparer = new ChunkComparer(legs.Length);
            var devices = legs.Select(l => l.Device).ToArray();
            try
            {
                for (long chunk = 0; chunk < _layout.ChunkCount; chunk++)
                {
                    cancellation.ThrowIfCancellationRequested();
                    var start = chunk * chunkSize;
                    var length = Math.Min(chunkSize, Size - start);
                    await AdmitAsync(op, start, start + length).ConfigureAwait(false);
                    try
                    {
                        if (await comparer.DiffersAsync(devices, _layout.DataOffset + start, length, cancellation).ConfigureAwait(false))
                        {
                            differing.Add(chunk);
                        }
                    }
                    finally
                    {
                        Release(op);
                    }
                }
            }
            finally
            {
                comparer.Dispose();
            }

            return new VerifyReport(_layout.ChunkCount, differing, legs.Select(l => l.Id).ToArray(), []);
        }
        finally
        {
            ReturnOp(op);
            ExitOp();
        }
    }

    // ---------------------------------------------------------------- plumbing

    private void CheckRange(long offset, long length, bool write, bool payload)
    {
        if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
        {
            throw new BlockIoException(BlockIoError.OutOfRange, $"volume '{Name}': range {offset}+{length} is outside 0..{Size}");
        }

        if (payload && length > MaximumRequestSize)
        {
            throw new BlockIoException(BlockIoError.OutOfRange, $"volume '{Name}': request of {length} bytes exceeds the maximum {MaximumRequestSize}");
        }

        if (write && IsReadOnly)
        {
            throw new BlockIoException(BlockIoError.ReadOnly, $"volume '{Name}' is open read-only");
        }
    }

    private void EnterOp()
    {
        Interlocked.Increment(ref _inflight);
        if (_closing)
        {
            ExitOp();
            throw new BlockIoException(BlockIoError.Unavailable, $"volume '{Name}' is closing");
        }
    }

    private void ExitOp()
    {
        if (Interlocked.Decrement(ref _inflight) == 0 && _closing)
        {
            _drained.TrySetResult();
        }
    }

    private IoOp RentOp() => _ops.TryDequeue(out var op) ? op : new IoOp(_legs.Length);

    private void ReturnOp(IoOp op)
    {
        op.Marked = false;
        op.WaitGeneration = 0;
        _ops.Enqueue(op);
    }

    private static long AlignDown(long value) => value & ~(long)(Block - 1);

    private static long AlignUp(long value) => (value + Block - 1) & ~(long)(Block - 1);

    /// <summary>
    /// Waits for requests in flight, clears every idle bit on disk (a clean close leaves nothing to resync),
    /// flushes the legs and closes them.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (_closing)
        {
            return;
        }

        _closing = true;
        if (Volatile.Read(ref _inflight) == 0)
        {
            _drained.TrySetResult();
        }

        await _drained.Task.ConfigureAwait(false);
        if (SlowInlineWrites > 0)
        {
            _logger.LogInformation("Volume {Volume}: {Count} leg write(s) on a request thread took {SlowMs} ms or more; after each, that leg wrote on the thread pool for a cooldown",
                Name, SlowInlineWrites, _options.InlineWriteSlowAfter.TotalMilliseconds);
        }

        if (_clearTimer is not null)
        {
            await _clearTimer.DisposeAsync().ConfigureAwait(false);
        }

        await _idleClear.ConfigureAwait(false);
        if (_legs.Any(l => !l.Failed) && !_options.ReadOnly)
        {
            var dataDurable = true;
            if (_options.Cache == VolumeCacheMode.Writeback)
            {
                // Every bit is about to be cleared: the data under them must be on disk first (see CollectIdleChunksAfterDataSyncAsync).
                var op = RentOp();
                try
                {
                    await FanOutAsync(LegOp.Flush, op, 0, default, 0, false, false).ConfigureAwait(false);
                }
                catch (Exception e)
                {
                    _logger.LogError(e, "Volume {Volume}: data sync at close failed; the bits stay set", Name);
                    dataDurable = false;
                }
                finally
                {
                    ReturnOp(op);
                }
            }

            if (dataDurable)
            {
                lock (_gate)
                {
                    _bitmap.CollectIdle(long.MaxValue, 0);
                }

                _flushSignal.Set();
                await WhenBitmapCleanAsync().ConfigureAwait(false);
            }

            foreach (var leg in _legs.Where(l => !l.Failed))
            {
                try
                {
                    await leg.Device.FlushAsync().ConfigureAwait(false);
                }
                catch (IOException e)
                {
                    _logger.LogError(e, "Volume {Volume}: final flush of leg {LegId} failed", Name, leg.Id);
                }
            }
        }

        _stopFlusher = true;
        _flushSignal.Set();
        await _flusher.ConfigureAwait(false);
        foreach (var writer in _writers)
        {
            writer?.Dispose();
        }

        foreach (var leg in _legs)
        {
            leg.Device.Dispose();
        }

        _legStateLock.Dispose();
        _logger.LogInformation("Volume {Volume} closed", Name);
    }

    private sealed class Leg(Guid id, ILegDevice device, LegSuperblock superblock, InlineWriteGuard inlineGuard)
    {
        public Guid Id { get; } = id;

        /// <summary>Whether this leg's writes may run on the request's thread (writeback: they could block it).</summary>
        public InlineWriteGuard InlineGuard { get; } = inlineGuard;

        public ILegDevice Device { get; } = device;

        public LegSuperblock Superblock { get; set; } = superblock;

        public volatile bool Failed;

        public int Outstanding;

        public Task? FailTask { get; set; }
    }
}
