using System.Buffers.Binary;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;

namespace Lockstep.Hosting.Locking;

/// <summary>
/// <c>POST /v1/locks/bench</c>: closed-loop lock+unlock cycles run inside this node through <see cref="ILockspace"/>,
/// one caller per entry of <paramref name="Resources"/> (a name may repeat: callers of one name contend).
/// </summary>
/// <param name="Lockspace">Lockspace to lock in (joined if new).</param>
/// <param name="Shape">uncontended, contended or counter (what the cycle does; the names decide who contends).</param>
/// <param name="Resources">One resource per caller; the caller of the bench placed (mastered) them beforehand.</param>
/// <param name="WarmupSeconds">Unmeasured cycling before the window.</param>
/// <param name="WindowSeconds">Measured window.</param>
public sealed record InNodeBenchRequest(string Lockspace, string Shape, string[] Resources, double WarmupSeconds, double WindowSeconds);

/// <summary>What an in-node bench measured.</summary>
/// <param name="Cycles">Cycles completed in the window.</param>
/// <param name="Seconds">Window length.</param>
/// <param name="WarmupCycles">Cycles before the window.</param>
/// <param name="NodeCpuSeconds">CPU time of the whole node process during the window (callers and DLM alike).</param>
/// <param name="Increments">Counter shape: increments completed, warm-up included; else 0.</param>
/// <param name="Latency">Per-cycle latency in nanoseconds.</param>
/// <param name="Error">First error of any caller (it stopped every caller); empty if none.</param>
public sealed record InNodeBenchResult(long Cycles, double Seconds, long WarmupCycles, double NodeCpuSeconds, long Increments, SparseHistogram Latency, string Error);

/// <summary>
/// The node's side of <c>lockstep lock bench --callers in-node</c>: callers that live in the node process, as the mirror
/// and the broadcast do, so a cycle costs the DLM's own hops and no client protocol. The same loop as the gRPC rows.
/// </summary>
public static class LockBenchInNode
{
    /// <summary>Most callers one request may start.</summary>
    public const int MaxCallers = 1024;

    /// <summary>Longest warm-up or window one request may ask for.</summary>
    public const double MaxSeconds = 600;

    /// <summary>Why <paramref name="request"/> cannot run, or null.</summary>
    public static string? Problem(InNodeBenchRequest? request) =>
        request is null ? "a JSON body {lockspace, shape, resources, warmupSeconds, windowSeconds} is required"
        : LockNames.LockspaceError(request.Lockspace) is { } lockspace ? $"lockspace: {lockspace}"
        : ParseShape(request.Shape) is null ? $"shape must be uncontended, contended or counter, not '{request.Shape}'"
        : request.Resources is null || request.Resources.Length is < 1 or > MaxCallers ? $"resources must name 1..{MaxCallers} resources (one per caller)"
        : request.Resources.Select(LockNames.ResourceError).FirstOrDefault(e => e is not null) is { } resource ? $"resources: {resource}"
        : request.WarmupSeconds is < 0 or > MaxSeconds or double.NaN ? $"warmupSeconds must be 0..{MaxSeconds}"
        : request.WindowSeconds is <= 0 or > MaxSeconds or double.NaN ? $"windowSeconds must be in (0, {MaxSeconds}]"
        : null;

    /// <summary>Runs <paramref name="request"/> (already checked by <see cref="Problem"/>) on <paramref name="manager"/>'s node.</summary>
    public static async Task<InNodeBenchResult> RunAsync(ILockManager manager, InNodeBenchRequest request, CancellationToken cancellationToken)
    {
        var shape = ParseShape(request.Shape) ?? throw new ArgumentException(Problem(request));
        await using var space = await manager.OpenLockspaceAsync(request.Lockspace, cancellationToken: cancellationToken).ConfigureAwait(false);
        long increments = 0;
        var cycles = request.Resources.Select<string, Func<CancellationToken, Task>>(resource => shape == LockBenchShape.Counter
            ? async token =>
            {
                var handle = await space.LockAsync(resource, LockMode.EX, LockFlags.ValBlk, cancellationToken: token).ConfigureAwait(false);
                var next = new byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(next, (handle.Lvb.Length >= 8 ? BinaryPrimitives.ReadInt64LittleEndian(handle.Lvb.Span) : 0) + 1);
                await handle.UnlockAsync(LockFlags.ValBlk, next).ConfigureAwait(false);
                Interlocked.Increment(ref increments);
            }
            : async token =>
            {
                var handle = await space.LockAsync(resource, LockMode.EX, cancellationToken: token).ConfigureAwait(false);
                await handle.UnlockAsync().ConfigureAwait(false);
            }).ToList();
        var outcome = await LockBenchLoop.RunAsync(cycles, TimeSpan.FromSeconds(request.WarmupSeconds), TimeSpan.FromSeconds(request.WindowSeconds), cancellationToken).ConfigureAwait(false);
        return new InNodeBenchResult(outcome.Cycles, outcome.Elapsed.TotalSeconds, outcome.WarmupCycles, outcome.ClientCpu.TotalSeconds, Interlocked.Read(ref increments), outcome.Latency.ToSparse(), outcome.Error);
    }

    /// <summary>The shapes a node runs (not the floor: it has no round trip to measure in process).</summary>
    public static LockBenchShape? ParseShape(string? name) => name?.ToLowerInvariant() switch
    {
        "uncontended" => LockBenchShape.Uncontended,
        "contended" => LockBenchShape.Contended,
        "counter" => LockBenchShape.Counter,
        _ => null,
    };
}
