namespace Lockstep.Actors.BlockIo;

/// <summary>
/// What an open volume tells the owner of its committed metadata (the Volume entity). The pipeline awaits each
/// call before it goes on, so an implementation should return once the change is committed (persisted).
/// </summary>
public interface IVolumeEvents
{
    /// <summary>
    /// A leg returned an I/O error or was found stale; it is out of the mirror. Awaited before the write that
    /// hit the error is acknowledged, so an acknowledged write never depends on an uncommitted leg state.
    /// </summary>
    ValueTask LegFailed(Guid legId, string reason);

    /// <summary>A leg could not be found by its UUIDs at its path nor in the search paths when the volume opened.</summary>
    ValueTask LegMissing(Guid legId, string reason);

    /// <summary>A leg was found by its UUIDs at another path than the metadata's hint; record the new path.</summary>
    ValueTask LegMoved(Guid legId, string newPath);
}

/// <summary>Ignores every event: for tools that only read legs (verify) and for tests.</summary>
public sealed class NoVolumeEvents : IVolumeEvents
{
    public static NoVolumeEvents Instance { get; } = new();

    public ValueTask LegFailed(Guid legId, string reason) => ValueTask.CompletedTask;

    public ValueTask LegMissing(Guid legId, string reason) => ValueTask.CompletedTask;

    public ValueTask LegMoved(Guid legId, string newPath) => ValueTask.CompletedTask;
}

/// <summary>What crash recovery did when the volume opened.</summary>
/// <param name="ChunksResynced">Dirty chunks copied from the first healthy leg to the others.</param>
/// <param name="Bytes">Bytes copied per target leg.</param>
/// <param name="Elapsed">Time the recovery took, reading the bitmaps included.</param>
/// <param name="SourceLegId">The leg the chunks were copied from (empty when nothing was copied).</param>
public sealed record ResyncReport(long ChunksResynced, long Bytes, TimeSpan Elapsed, Guid SourceLegId);

/// <summary>The result of comparing the legs of a volume chunk by chunk.</summary>
/// <param name="ChunksCompared">Chunks read on every compared leg.</param>
/// <param name="DifferingChunks">Indexes of chunks whose content differs between at least two legs.</param>
/// <param name="LegsCompared">The legs that were read.</param>
/// <param name="Problems">Legs that could not be compared and why (missing, unreadable).</param>
public sealed record VerifyReport(long ChunksCompared, IReadOnlyList<long> DifferingChunks, IReadOnlyList<Guid> LegsCompared, IReadOnlyList<string> Problems)
{
    /// <summary>True when at least two legs were compared and none differ.</summary>
    public bool Identical => DifferingChunks.Count == 0 && LegsCompared.Count >= 2;
}
