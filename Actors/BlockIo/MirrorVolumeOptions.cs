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
    /// Recover every slot's dirty bits at open, not only this node's. Right while one node writes a volume; the
    /// cluster recovery takes over other nodes' slots under their bitmap lock later.
    /// </summary>
    public bool RecoverAllSlots { get; init; } = true;

    /// <summary>
    /// Direct: legs opened with O_DIRECT. Writeback: legs opened buffered (page cache), their cached pages dropped at
    /// open, FUA writes synced by range (RWF_DSYNC), and a chunk's bit cleared only after its data was fdatasync'ed.
    /// </summary>
    public VolumeCacheMode Cache { get; init; } = VolumeCacheMode.Direct;

    /// <summary>Largest read or write payload accepted (NBD maximum block size).</summary>
    public int MaximumRequestSize { get; init; } = 32 << 20;

    /// <summary>Test seam: wraps each opened leg (to inject failures or hold writes at a gate).</summary>
    internal Func<Guid, ILegDevice, ILegDevice>? LegWrapper { get; init; }
}
