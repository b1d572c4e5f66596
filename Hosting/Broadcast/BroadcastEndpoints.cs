using System.Collections.Concurrent;
using System.Diagnostics;
using Lockstep.Actors.Broadcast;
using Lockstep.Contracts.Broadcast;
using Lockstep.Hosting.Messaging;
using Lockstep.Hosting.Node;
using Lockstep.Hosting.Volumes;

namespace Lockstep.Hosting.Broadcast;

/// <summary><c>GET /v1/broadcast</c>: every member's streams; members that did not answer are listed.</summary>
public sealed record BroadcastView(IReadOnlyList<BroadcastNodeStats> Nodes, IReadOnlyList<string> Missing);

/// <summary>
/// <c>POST /v1/broadcast/load</c>: what one bounded load from this node achieved. <c>FailedTags</c> are the tags of the
/// calls that failed (their messages may or may not have been delivered), the first 1,000.
/// </summary>
public sealed record BroadcastLoadView(int Sent, int Failed, IReadOnlyList<string> Errors, IReadOnlyList<int> FailedTags, double Seconds, double PerSecond, double P50Ms, double P99Ms);

/// <summary>An error body.</summary>
public sealed record BroadcastError(string Error);

/// <summary>The broadcast's management routes.</summary>
public static class BroadcastEndpoints
{
    /// <summary>Most messages one load request may send, so one request cannot run for hours.</summary>
    public const int MaxLoadMessages = 1_000_000;

    public static void Map(WebApplication app)
    {
        app.MapGet("/v1/broadcast", async (BroadcastService broadcast) =>
        {
            var (nodes, missing) = await (await broadcast.Manager).ClusterStatsAsync(TimeSpan.FromSeconds(5));
            return Results.Json(new BroadcastView(nodes.OrderBy(n => n.NodeId, StringComparer.Ordinal).ToList(), missing));
        });

        app.MapPost("/v1/broadcast/ping", async (string? stream, int? timeoutSeconds, BroadcastService broadcast) =>
        {
            var name = stream ?? BroadcastOptions.GlobalStream;
            if (BroadcastOptions.StreamError(name) is { } error)
            {
                return Results.Json(new BroadcastError(error), statusCode: StatusCodes.Status400BadRequest);
            }

            try
            {
                return Results.Json(await (await broadcast.Manager).PingAsync(name, TimeSpan.FromSeconds(Math.Clamp(timeoutSeconds ?? 30, 1, 600))));
            }
            catch (Exception ex) when (ex is BroadcastException or TimeoutException or OperationCanceledException)
            {
                return Results.Json(new BroadcastError($"ping on '{name}' failed: {ex.Message}"), statusCode: StatusCodes.Status504GatewayTimeout);
            }
        });

        // Joining streams and loading them change what every node does: loopback or --http-write, as volume changes.
        app.MapPost("/v1/broadcast/streams", async (HttpContext http, BroadcastService broadcast, LockstepOptions options) =>
        {
            if (Refused(http, options) is { } refused)
            {
                return refused;
            }

            var names = http.Request.Query["name"].OfType<string>().ToArray();
            var error = names.Length == 0 ? "give at least one ?name=" : names.Select(BroadcastOptions.StreamError).FirstOrDefault(e => e is not null);
            if (error is not null)
            {
                return Results.Json(new BroadcastError(error), statusCode: StatusCodes.Status400BadRequest);
            }

            var joined = await (await broadcast.Manager).JoinEverywhereAsync(names, TimeSpan.FromSeconds(60));
            return Results.Json(joined, statusCode: joined.All(j => j.Error is null) ? StatusCodes.Status200OK : StatusCodes.Status504GatewayTimeout);
        });

        app.MapPost("/v1/broadcast/load", async (HttpContext http, int? messages, string? streams, int? concurrency, int? timeoutSeconds, BroadcastService broadcast, LockstepOptions options) =>
        {
            if (Refused(http, options) is { } refused)
            {
                return refused;
            }

            var count = messages ?? 1000;
            var callers = concurrency ?? 16;
            var names = (streams ?? BroadcastOptions.GlobalStream).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (count is < 1 or > MaxLoadMessages || callers is < 1 or > 4096 || names.Length == 0)
            {
                return Results.Json(new BroadcastError($"messages must be 1..{MaxLoadMessages}, concurrency 1..4096, streams at least one name"), statusCode: StatusCodes.Status400BadRequest);
            }

            if (names.Select(BroadcastOptions.StreamError).FirstOrDefault(e => e is not null) is { } badName)
            {
                return Results.Json(new BroadcastError(badName), statusCode: StatusCodes.Status400BadRequest);
            }

            var manager = await broadcast.Manager;
            return Results.Json(await RunLoadAsync(manager, count, callers, names, TimeSpan.FromSeconds(Math.Clamp(timeoutSeconds ?? 300, 1, 3600))));
        });
    }

    /// <summary>
    /// Sends <paramref name="count"/> no-ops tagged 0..count-1 from this node, round-robin over <paramref name="streams"/>,
    /// with <paramref name="callers"/> closed-loop callers; every call ends within <paramref name="timeout"/>.
    /// </summary>
    public static async Task<BroadcastLoadView> RunLoadAsync(BroadcastManager manager, int count, int callers, IReadOnlyList<string> streams, TimeSpan timeout)
    {
        var next = -1;
        var latencies = new ConcurrentBag<double>();
        var errors = new ConcurrentQueue<string>();
        var failedTags = new ConcurrentQueue<int>();
        var failed = 0;
        var started = Stopwatch.GetTimestamp();
        using var deadline = new CancellationTokenSource(timeout);
        await Task.WhenAll(Enumerable.Range(0, Math.Min(callers, count)).Select(_ => Task.Run(async () =>
        {
            int tag;
            while ((tag = Interlocked.Increment(ref next)) < count)
            {
                var sent = Stopwatch.GetTimestamp();
                try
                {
                    await manager.BroadcastAsync(streams[tag % streams.Count], new NoopMessage(manager.NodeId, tag), deadline.Token);
                    latencies.Add(Stopwatch.GetElapsedTime(sent).TotalMilliseconds);
                }
                catch (Exception ex) when (ex is BroadcastException or OperationCanceledException)
                {
                    if (Interlocked.Increment(ref failed) <= 1000)
                    {
                        failedTags.Enqueue(tag);
                    }

                    if (errors.Count < 10)
                    {
                        errors.Enqueue($"tag {tag}: {ex.Message}");
                    }
                }
            }
        })));

        var run = LatencySummary.From("load", [.. latencies], failed, Stopwatch.GetElapsedTime(started));
        return new BroadcastLoadView(run.Calls, failed, [.. errors], [.. failedTags.Order()], run.Elapsed.TotalSeconds, run.PerSecond, run.P50Ms, run.P99Ms);
    }

    private static IResult? Refused(HttpContext http, LockstepOptions options) =>
        VolumeEndpoints.MayChange(http.Connection.RemoteIpAddress, options.Http.AllowWrite)
            ? null
            : Results.Json(new BroadcastError("this route needs --http-write (Lockstep:Http:AllowWrite=true) on this node, or a request from loopback"), statusCode: StatusCodes.Status403Forbidden);
}
