using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;

namespace Lockstep.Actors.BlockIo;

/// <summary>Tuning of an open mirror volume; the defaults suit a node serving NBD.</summary>
public sealed record MirrorVolumeOptions
{
    /// <summary>A dirty chunk's bit is cleared once the chunk has been idle this long (md's bitmap daemon sleeps 5 s).</summary>
    public TimeSpan BitmapClearDelay { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How far ahead of a sequential write stream the write-intent bitmap sets bits in the same sync (rounded down
    /// to whole chunks; 0 turns it off). With 1 MiB chunks, a stream of 1 MiB writes pays one bitmap sync per
    /// 17 chunks instead of one per chunk; after a crash at most this much more is resynced per stream.
    /// </summary>
    public long BitmapSetAheadBytes { get; init; } = 16L << 20;

    /// <summary>Files and folders searched for a leg whose superblock is not at its recorded path (the legs' own folders are always searched).</summary>
    public IReadOnlyList<string> LegSearchPaths { get; init; } = [];

    /// <summary>Open without writing anything (no recovery, no bitmap); writes are refused with EPERM.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>
    /// Recover every slot's dirty bits at open, not only this node's. Only right while one node writes a volume;
    /// a node's catalog turns it off (another node's bits are its writes in flight), and the cluster recovery will
    /// take over a dead node's slot under its bitmap lock.
    /// </summary>
    public bool RecoverAllSlots { get; init; } = true;

    /// <summary>
    /// Direct: legs opened with O_DIRECT. Writeback: legs opened buffered (page cache), their cached pages dropped at
    /// open, FUA writes synced by range (RWF_DSYNC), and a chunk's bit cleared only after its data was fdatasync'ed.
    /// </summary>
    public VolumeCacheMode Cache { get; init; } = VolumeCacheMode.Direct;

    /// <summary>
    /// Writeback volumes with two legs or more: a write of at least this many bytes wakes the other legs' writer
    /// threads to copy them at the same time as the request's thread copies the first leg. A smaller write is handed
    /// to a writer only if it is awake already, else the request's thread copies every leg itself: copying a few KiB
    /// into the page cache costs less than waking a thread.
    /// </summary>
    public int ParallelLegWriteBytes { get; init; } = 64 << 10;

    /// <summary>
    /// Writeback volumes: an inline write (on the request's own thread, usually an NBD receive loop) that takes this
    /// long sends the leg's writes to the thread pool for <see cref="InlineWriteCooldown"/> (<see cref="InlineWriteGuard"/>).
    /// A page-cache copy of 1 MiB takes ~0.1–0.3 ms here; a write held in dirty-page throttling or behind a journal
    /// commit takes tens to hundreds. Below ~5 ms, preemption on 2 busy cores alone would trip it.
    /// </summary>
    public TimeSpan InlineWriteSlowAfter { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>
    /// The first cooldown after a slow inline write; it doubles while writes stay slow, up to 16 times this. Short,
    /// because a busy volume's own writes also block now and then (page writeback) and each cooldown costs that
    /// volume's writer the pool hop: 1 s cost a single-connection 4 KiB write job 48 %, 100 ms cost it 8 %
    /// (docs/benchmarks.md, "A write storm on one volume beside reads of another").
    /// </summary>
    public TimeSpan InlineWriteCooldown { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Largest read or write payload accepted (NBD maximum block size).</summary>
    public int MaximumRequestSize { get; init; } = 32 << 20;

    /// <summary>Test seam: wraps each opened leg (to inject failures or hold writes at a gate).</summary>
    internal Func<Guid, ILegDevice, ILegDevice>? LegWrapper { get; init; }
}
