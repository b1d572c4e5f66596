using System.Text.Json;
using System.Text.Json.Serialization;
using Lockstep.Actors.BlockIo;
using Lockstep.Actors.Volumes;
using Lockstep.Contracts.Volumes;

namespace Lockstep.Hosting.Volumes;

/// <summary>One leg in the HTTP API.</summary>
/// <param name="LegId">Leg UUID (as in its superblock).</param>
/// <param name="Path">Last known path.</param>
/// <param name="State">inSync, failed, missing or resyncing.</param>
public sealed record LegView(Guid LegId, string Path, string State);

/// <summary>A volume in the HTTP API (<c>GET /v1/volumes/{name}</c>).</summary>
/// <param name="Name">Volume and export name.</param>
/// <param name="VolumeId">Volume UUID.</param>
/// <param name="Status">creating, active, deleting, absent.</param>
/// <param name="SizeBytes">Exported size.</param>
/// <param name="ChunkSizeBytes">Bitmap chunk.</param>
/// <param name="MaxNodes">Bitmap slots per leg.</param>
/// <param name="Generation">Metadata generation.</param>
/// <param name="Legs">The legs.</param>
/// <param name="Pending">A change in progress or a note about the last one.</param>
/// <param name="OpenHere">Open on the node that answered.</param>
/// <param name="Connections">NBD connections on the node that answered.</param>
/// <param name="Recovery">Crash recovery done on the node that answered (at its start or at the volume's first open); null when none ran there yet.</param>
/// <param name="Cache">direct or writeback (how nodes reach the legs).</param>
/// <param name="CacheOpen">The mode the open device on the answering node uses (a change applies at the next open); null when not open there.</param>
public sealed record VolumeView(string Name, Guid VolumeId, string Status, long SizeBytes, int ChunkSizeBytes, int MaxNodes, long Generation,
    IReadOnlyList<LegView> Legs, string? Pending, bool OpenHere, int Connections, RecoveryView? Recovery = null, string Cache = "direct", string? CacheOpen = null)
{
    /// <summary>Builds the view of a volume.</summary>
    public static VolumeView From(VolumeInfo info, (bool Open, int Leases) use, LocalRecovery? recovery = null, VolumeCacheMode? cacheOpen = null)
    {
        var d = info.Descriptor;
        return new VolumeView(d.Name, d.VolumeId, VolumeJson.Camel(info.Status.ToString()), d.Geometry.SizeBytes, d.Geometry.ChunkSizeBytes, d.Geometry.MaxNodes,
            d.Generation, d.Legs.Select(l => new LegView(l.LegId, l.Path, VolumeJson.Camel(l.State.ToString()))).ToArray(), info.Pending, use.Open, use.Leases,
            recovery is not { Report: var r } ? null : new RecoveryView(r.ChunksResynced, r.Bytes, (long)r.Elapsed.TotalMilliseconds, r.SourceLegId, VolumeJson.Camel(recovery.Trigger.ToString())),
            VolumeState.CacheModeName(info.Cache), cacheOpen is { } open ? VolumeState.CacheModeName(open) : null);
    }
}

/// <summary>What crash recovery did on this node (at its start, or at the volume's first open): dirty chunks of this node's bitmap slot copied.</summary>
/// <param name="ChunksResynced">Chunks copied from the source leg to the others.</param>
/// <param name="Bytes">Bytes copied.</param>
/// <param name="ElapsedMs">How long it took.</param>
/// <param name="SourceLegId">Leg the chunks were copied from (empty when nothing was dirty).</param>
/// <param name="Trigger">"start" (node start) or "open" (first open on the node).</param>
public sealed record RecoveryView(long ChunksResynced, long Bytes, long ElapsedMs, Guid SourceLegId, string Trigger = "open");

/// <summary><c>GET /v1/volumes</c>.</summary>
/// <param name="Volumes">Every volume, by name.</param>
public sealed record VolumeListView(IReadOnlyList<VolumeView> Volumes);

/// <summary><c>POST /v1/volumes</c> body.</summary>
/// <param name="Name">Volume name.</param>
/// <param name="SizeBytes">Size in bytes (or use <paramref name="Size"/>).</param>
/// <param name="Size">Size as text, e.g. "4G" (IEC).</param>
/// <param name="ChunkSizeBytes">Chunk in bytes (default 1 MiB).</param>
/// <param name="MaxNodes">Max nodes (default 8).</param>
/// <param name="Legs">Absolute leg paths.</param>
/// <param name="Cache">"direct" (default) or "writeback".</param>
public sealed record CreateVolumeRequest(string? Name, long? SizeBytes, string? Size, int? ChunkSizeBytes, int? MaxNodes, IReadOnlyList<string>? Legs, string? Cache = null);

/// <summary><c>PATCH /v1/volumes/{name}</c> body: settings that may change after create (applied at the next open on each node).</summary>
/// <param name="Cache">"direct" or "writeback".</param>
public sealed record VolumeSettingsRequest(string? Cache);

/// <summary><c>POST /v1/volumes/{name}/legs</c> body.</summary>
/// <param name="Path">Absolute path of the new leg.</param>
public sealed record AddLegRequest(string? Path);

/// <summary><c>POST /v1/volumes/{name}/legs/{legId}/fail</c> body (optional).</summary>
/// <param name="Reason">Why, kept in the journal.</param>
public sealed record FailLegRequest(string? Reason);

/// <summary><c>POST /v1/volumes/{name}/verify</c>.</summary>
/// <param name="Name">Volume.</param>
/// <param name="Identical">At least two legs compared and none differ.</param>
/// <param name="ChunksCompared">Chunks read on every leg.</param>
/// <param name="ChunkSizeBytes">Chunk size, to turn indexes into offsets.</param>
/// <param name="DifferingChunks">Indexes of chunks that differ.</param>
/// <param name="LegsCompared">Legs read.</param>
/// <param name="Problems">Legs not compared and why.</param>
public sealed record VerifyView(string Name, bool Identical, long ChunksCompared, int ChunkSizeBytes, IReadOnlyList<long> DifferingChunks, IReadOnlyList<Guid> LegsCompared, IReadOnlyList<string> Problems)
{
    /// <summary>Builds the view of a verify report.</summary>
    public static VerifyView From(string name, int chunkSize, VerifyReport report) =>
        new(name, report.Identical, report.ChunksCompared, chunkSize, report.DifferingChunks, report.LegsCompared, report.Problems);
}

/// <summary>An error body: <c>{"error": "notFound", "message": "..."}</c>.</summary>
/// <param name="Error">Category.</param>
/// <param name="Message">A sentence a person can act on.</param>
public sealed record VolumeErrorView(string Error, string Message);

/// <summary>JSON settings of the volume API (camelCase, like the rest of the management API).</summary>
public static class VolumeJson
{
    /// <summary>Options for every volume body.</summary>
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>"InSync" → "inSync".</summary>
    public static string Camel(string value) => value.Length == 0 ? value : char.ToLowerInvariant(value[0]) + value[1..];
}
