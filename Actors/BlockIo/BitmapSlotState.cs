using System.Runtime.InteropServices;
using Lockstep.Contracts.Disk;

namespace Lockstep.Actors.BlockIo;

/// <summary>
/// The write-intent bookkeeping of one bitmap slot (one node's bits), without I/O. Kept apart from the
/// pipeline because it becomes the state of the sharded <c>bitmap/{volume}/{slot}</c> entity later.
/// <para>
/// The rule it enforces: data may be written into a chunk only once a flush that carries the chunk's bit has
/// completed (<see cref="BeginWrite"/> says which generation to wait for); bits are cleared only after the chunk
/// has been idle for a while, and a clear counts only once flushed. Many writes into clean chunks share one
/// flush: every change made while a flush is on disk goes into the next one (group commit).
/// </para>
/// <code>
///            BeginWrite                  flush g done
///   Clean ──────────────▶ Setting(g) ──────────────▶ Dirty
///     ▲                      ▲                         │ idle ≥ delay (CollectIdle)
///     │   flush g' done      │ BeginWrite              ▼
///     └──────────────── Clearing(g') ◀─────────────────┘
/// </code>
/// </summary>
public sealed class BitmapSlotState
{
    private readonly byte[] _image;
    private readonly Dictionary<long, Chunk> _chunks = [];
    private readonly bool[] _blockDirty;
    private List<long> _dirtyBlocks = [];
    private List<long> _flushingBlocks = [];
    private List<long> _pendingChunks = [];
    private List<long> _flushingChunks = [];
    private readonly List<long> _scratch = [];
    private long _setBits;

    /// <summary>Starts with every bit clear on disk (the state after crash recovery).</summary>
    public BitmapSlotState(long chunkCount)
    {
        if (chunkCount <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(chunkCount), chunkCount, "a volume has at least one chunk");
        }

        ChunkCount = chunkCount;
        var blocks = ((chunkCount + 7) / 8 + LegFormat.BlockSize - 1) / LegFormat.BlockSize;
        _image = new byte[blocks * LegFormat.BlockSize];
        _blockDirty = new bool[blocks];
    }

    public long ChunkCount { get; }

    /// <summary>The generation the next flush will carry.</summary>
    public long NextGeneration { get; private set; } = 1;

    /// <summary>The last generation known to be on disk.</summary>
    public long FlushedGeneration { get; private set; }

    public bool FlushInProgress { get; private set; }

    /// <summary>Bits set in memory (what the disk will hold once pending flushes are done).</summary>
    public long SetBitCount => _setBits;

    /// <summary>True when there are changes no flush has picked up yet.</summary>
    public bool HasUnflushedChanges => _dirtyBlocks.Count > 0;

    /// <summary>Chunks the state tracks (dirty, in flight or in transition); zero means the slot is clean and idle.</summary>
    public int TrackedChunks => _chunks.Count;

    /// <summary>
    /// Registers a write into chunks <paramref name="first"/>..<paramref name="last"/> (inclusive). Returns the
    /// generation that must be flushed before the data write may start, or 0 when every bit is already on disk.
    /// <para>
    /// <paramref name="setAhead"/> &gt; 0 (the caller saw a sequential stream) also sets the bits of up to that many
    /// untracked chunks after <paramref name="last"/> in the same flush, when this write has to wait for one anyway:
    /// a stream then pays one bitmap sync per <paramref name="setAhead"/> + 1 chunks instead of one per chunk. A bit
    /// set ahead only widens what a crash recovery copies; those chunks start idle at <paramref name="now"/> and are
    /// cleared like any other once idle.
    /// </para>
    /// </summary>
    public long BeginWrite(long first, long last, int setAhead = 0, long now = 0)
    {
        CheckRange(first, last);
        ArgumentOutOfRangeException.ThrowIfNegative(setAhead);
        long wait = 0;
        for (var c = first; c <= last; c++)
        {
            ref var chunk = ref CollectionsMarshal.GetValueRefOrAddDefault(_chunks, c, out var exists);
            chunk.InFlight++;
            if (!exists)
            {
                chunk.Phase = Phase.Setting;
                chunk.Generation = NextGeneration;
                SetBit(c, true);
                wait = NextGeneration;
                continue;
            }

            switch (chunk.Phase)
            {
                case Phase.Setting:
                    wait = Math.Max(wait, chunk.Generation);
                    break;
                case Phase.Clearing:
                    // The clear is queued or on its way to disk; set the bit again in the next flush.
                    chunk.Phase = Phase.Setting;
                    chunk.Generation = NextGeneration;
                    SetBit(c, true);
                    wait = NextGeneration;
                    break;
            }
        }

        if (setAhead > 0 && wait == NextGeneration)
        {
            SetAhead(last + 1, Math.Min(ChunkCount - 1, last + setAhead), now);
        }

        return wait <= FlushedGeneration ? 0 : wait;
    }

    private void SetAhead(long from, long to, long now)
    {
        for (var c = from; c <= to; c++)
        {
            ref var chunk = ref CollectionsMarshal.GetValueRefOrAddDefault(_chunks, c, out var exists);
            if (exists)
            {
                continue; // tracked already: its own writes or clears settle it
            }

            chunk.Phase = Phase.Setting;
            chunk.Generation = NextGeneration;
            chunk.IdleSince = now;
            SetBit(c, true);
        }
    }

    /// <summary>Ends a write registered with <see cref="BeginWrite"/>; the chunks start their idle time at <paramref name="now"/>.</summary>
    public void EndWrite(long first, long last, long now)
    {
        CheckRange(first, last);
        for (var c = first; c <= last; c++)
        {
            ref var chunk = ref CollectionsMarshal.GetValueRefOrNullRef(_chunks, c);
            if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref chunk) || chunk.InFlight == 0)
            {
                throw new InvalidOperationException($"end of a write to chunk {c} that was not begun");
            }

            if (--chunk.InFlight == 0)
            {
                chunk.IdleSince = now;
            }
        }
    }

    /// <summary>How many chunks <see cref="CollectIdle"/> would clear with the same arguments (changes nothing).</summary>
    public int IdleCount(long now, long idle)
    {
        var count = 0;
        foreach (var (_, chunk) in _chunks)
        {
            if (IsIdle(chunk, now, idle))
            {
                count++;
            }
        }

        return count;
    }

    private static bool IsIdle(in Chunk chunk, long now, long idle) =>
        chunk.Phase == Phase.Dirty && chunk.InFlight == 0 && now - chunk.IdleSince >= idle;

    /// <summary>Schedules clears for dirty chunks idle since at least <paramref name="idle"/> ticks; returns how many.</summary>
    public int CollectIdle(long now, long idle)
    {
        _scratch.Clear();
        foreach (var (c, chunk) in _chunks)
        {
            if (IsIdle(chunk, now, idle))
            {
                _scratch.Add(c);
            }
        }

        foreach (var c in _scratch)
        {
            ref var chunk = ref CollectionsMarshal.GetValueRefOrNullRef(_chunks, c);
            chunk.Phase = Phase.Clearing;
            chunk.Generation = NextGeneration;
            SetBit(c, false);
        }

        return _scratch.Count;
    }

    /// <summary>
    /// Starts a flush when none is running and there are changes: returns its generation and the bit blocks
    /// to write (copy them with <see cref="CopyBlock"/> before the next call that changes the state).
    /// </summary>
    public bool TryStartFlush(out long generation, out IReadOnlyList<long> blocks)
    {
        if (FlushInProgress || _dirtyBlocks.Count == 0)
        {
            (generation, blocks) = (0, Array.Empty<long>());
            return false;
        }

        FlushInProgress = true;
        generation = NextGeneration++;
        (_flushingBlocks, _dirtyBlocks) = (_dirtyBlocks, _flushingBlocks);
        _dirtyBlocks.Clear();
        foreach (var b in _flushingBlocks)
        {
            _blockDirty[b] = false;
        }

        (_flushingChunks, _pendingChunks) = (_pendingChunks, _flushingChunks);
        _pendingChunks.Clear();
        blocks = _flushingBlocks;
        return true;
    }

    /// <summary>The current in-memory content of bit block <paramref name="block"/>.</summary>
    public void CopyBlock(long block, Span<byte> destination) =>
        _image.AsSpan(checked((int)(block * LegFormat.BlockSize)), LegFormat.BlockSize).CopyTo(destination);

    /// <summary>Records that the flush of <paramref name="generation"/> is on disk.</summary>
    public void CompleteFlush(long generation)
    {
        if (!FlushInProgress || generation != NextGeneration - 1)
        {
            throw new InvalidOperationException($"completion of flush {generation}, but {(FlushInProgress ? NextGeneration - 1 : 0)} is in progress");
        }

        FlushInProgress = false;
        FlushedGeneration = generation;
        foreach (var c in _flushingChunks)
        {
            ref var chunk = ref CollectionsMarshal.GetValueRefOrNullRef(_chunks, c);
            if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref chunk) || chunk.Generation > generation)
            {
                continue; // changed again since; the later flush settles it
            }

            if (chunk.Phase == Phase.Setting)
            {
                chunk.Phase = Phase.Dirty;
            }
            else if (chunk.Phase == Phase.Clearing)
            {
                _chunks.Remove(c);
            }
        }

        _flushingChunks.Clear();
    }

    /// <summary>Whether chunk <paramref name="chunk"/>'s bit is set in memory.</summary>
    public bool IsSet(long chunk) => (_image[chunk >> 3] & (1 << (int)(chunk & 7))) != 0;

    private void SetBit(long c, bool value)
    {
        ref var b = ref _image[c >> 3];
        var mask = (byte)(1 << (int)(c & 7));
        var was = (b & mask) != 0;
        if (was == value)
        {
            return;
        }

        b = value ? (byte)(b | mask) : (byte)(b & ~mask);
        _setBits += value ? 1 : -1;
        var block = (c >> 3) / LegFormat.BlockSize;
        if (!_blockDirty[block])
        {
            _blockDirty[block] = true;
            _dirtyBlocks.Add(block);
        }

        _pendingChunks.Add(c);
    }

    private void CheckRange(long first, long last)
    {
        if (first < 0 || last < first || last >= ChunkCount)
        {
            throw new ArgumentOutOfRangeException(nameof(first), $"chunks {first}..{last} outside 0..{ChunkCount - 1}");
        }
    }

    private enum Phase : byte
    {
        Setting,
        Dirty,
        Clearing,
    }

    private struct Chunk
    {
        public int InFlight;
        public Phase Phase;
        public long Generation;
        public long IdleSince;
    }
}
