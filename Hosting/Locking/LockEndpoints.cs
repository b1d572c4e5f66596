using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;

namespace Lockstep.Hosting.Locking;

/// <summary>A lockspace in <c>GET /v1/lockspaces</c>.</summary>
public sealed record LockspaceView(string Name, int LvbLength, IReadOnlyList<SlotView> Slots);

/// <summary>A node's slot.</summary>
public sealed record SlotView(string NodeId, int Slot);

/// <summary><c>GET /v1/locks?lockspace=…</c>: the <c>dlm_tool lockdebug</c> view of a lockspace.</summary>
public sealed record LocksView(string Lockspace, IReadOnlyList<ResourceView> Resources, IReadOnlyList<string> MissingNodes);

/// <summary>One resource: where it is mastered, its LVB (hex) and its three queues.</summary>
public sealed record ResourceView(string Resource, string Master, int LvbLength, string Lvb, long LvbSeq, bool ValueNotValid, IReadOnlyList<LockView> Granted, IReadOnlyList<LockView> Converting, IReadOnlyList<LockView> Waiting);

/// <summary>One lock: id (hex), owner, granted mode (null while a new request waits), requested mode, flags.</summary>
public sealed record LockView(string LockId, string Node, int Slot, string Session, string? Granted, string Requested, string Flags, bool Orphan);

/// <summary><c>POST /v1/locks/torture</c>: what the counter torture expected and found.</summary>
/// <param name="Expected">Increments completed by the clients whose node answered.</param>
/// <param name="Found">The counter read back at the end.</param>
/// <param name="Ok">Every answering client finished and Found lies between Expected and Expected + LostMaximum.</param>
/// <param name="Seconds">Wall time of the run.</param>
/// <param name="Nodes">The answering nodes' shares.</param>
/// <param name="Lost">Nodes whose clients never answered (their node left the cluster mid-run, or the deadline passed).</param>
/// <param name="LostMaximum">The most increments those clients can have completed; Ok allows Found up to Expected + this.</param>
/// <param name="Resource">The counter resource in lockspace <c>torture</c>.</param>
public sealed record TortureView(long Expected, long Found, bool Ok, double Seconds, IReadOnlyList<TortureNodeView> Nodes, IReadOnlyList<TortureLostView>? Lost = null, long LostMaximum = 0, string Resource = "");

/// <summary>One node's share of a torture run.</summary>
public sealed record TortureNodeView(string Node, long Increments, string Error);

/// <summary>A node whose torture clients did not answer, and why.</summary>
public sealed record TortureLostView(string Node, int Clients, string Reason);

/// <summary>An error body.</summary>
public sealed record LockError(string Error);

/// <summary>The DLM's management routes.</summary>
public static class LockEndpoints
{
    /// <summary>Largest torture a node accepts, so one request cannot tie the cluster up for hours.</summary>
    public const int MaxTortureClients = 256;

    public const int MaxTortureIterations = 100_000;

    public static void Map(WebApplication app)
    {
        app.MapGet("/v1/lockspaces", async (LockingService locks, CancellationToken ct) =>
        {
            var list = await locks.ListLockspacesAsync(ct);
            return Results.Json(list.Select(l => new LockspaceView(l.Name, l.LvbLength, l.Slots.OrderBy(s => s.Slot).Select(s => new SlotView(s.NodeId, s.Slot)).ToList())).ToList());
        });

        app.MapGet("/v1/locks", async (string? lockspace, LockingService locks, CancellationToken ct) =>
        {
            if (LockNames.LockspaceError(lockspace) is { } error)
            {
                return Results.Json(new LockError($"?lockspace=: {error}"), statusCode: StatusCodes.Status400BadRequest);
            }

            var known = await locks.ListLockspacesAsync(ct);
            if (known.All(l => l.Name != lockspace))
            {
                return Results.Json(new LockError($"no lockspace '{lockspace}'"), statusCode: StatusCodes.Status404NotFound);
            }

            var dump = await locks.DumpLockspaceAsync(lockspace!, ct);
            return Results.Json(ToView(lockspace!, dump));
        });

        app.MapPost("/v1/locks/torture", async (int? clients, int? iterations, int? timeoutSeconds, LockingService locks) =>
        {
            var c = clients ?? 3;
            var i = iterations ?? 1000;
            if (c is < 1 or > MaxTortureClients || i is < 1 or > MaxTortureIterations)
            {
                return Results.Json(new LockError($"clients must be 1..{MaxTortureClients} and iterations 1..{MaxTortureIterations}"), statusCode: StatusCodes.Status400BadRequest);
            }

            var manager = await locks.Manager;
            var result = await manager.RunTortureAsync(c, i, TimeSpan.FromSeconds(Math.Clamp(timeoutSeconds ?? 300, 1, 3600)));
            return Results.Json(new TortureView(result.Expected, result.Found, result.Ok, result.Elapsed.TotalSeconds, result.Nodes.Select(n => new TortureNodeView(n.NodeId, n.Increments, n.Error)).ToList(),
                result.Lost.Select(l => new TortureLostView(l.Node, l.Clients, l.Reason)).ToList(), result.LostMaximum, result.Resource));
        });

        // Callers inside this node (lockstep lock bench --callers in-node). The request runs for its warm-up and window
        // and then answers; a bench that cannot start (bad body) is a 400 with the reason, a second one while one runs a
        // 409, and one that overruns its warm-up and window by a minute (a lock never granted) a 504.
        app.MapPost("/v1/locks/bench", async (HttpRequest http, LockingService locks, CancellationToken ct) =>
        {
            if (!http.HasJsonContentType())
            {
                return Results.Json(new LockError("the body must be JSON (Content-Type: application/json): {lockspace, shape, resources, warmupSeconds, windowSeconds}"), statusCode: StatusCodes.Status400BadRequest);
            }

            InNodeBenchRequest? request;
            try
            {
                request = await http.ReadFromJsonAsync<InNodeBenchRequest>(ct);
            }
            catch (System.Text.Json.JsonException ex)
            {
                return Results.Json(new LockError($"the body is not a bench request: {ex.Message}"), statusCode: StatusCodes.Status400BadRequest);
            }

            if (LockBenchInNode.Problem(request) is { } problem)
            {
                return Results.Json(new LockError(problem), statusCode: StatusCodes.Status400BadRequest);
            }

            if (!InNodeBenchGate.Wait(0, CancellationToken.None))
            {
                return Results.Json(new LockError("another in-node bench is running on this node; try again when it has answered"), statusCode: StatusCodes.Status409Conflict);
            }

            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
            deadline.CancelAfter(TimeSpan.FromSeconds(request!.WarmupSeconds + request.WindowSeconds) + InNodeBenchGrace);
            try
            {
                var manager = await locks.Manager.WaitAsync(deadline.Token);
                return Results.Json(await LockBenchInNode.RunAsync(manager, request, deadline.Token));
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                return Results.Json(new LockError($"the bench did not finish within its warm-up and window plus {InNodeBenchGrace.TotalSeconds:0} s (a lock never granted?)"), statusCode: StatusCodes.Status504GatewayTimeout);
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or TimeoutException or Akka.Actor.AskTimeoutException)
            {
                return Results.Json(new LockError($"the bench could not run: {ex.Message}"), statusCode: StatusCodes.Status500InternalServerError);
            }
            finally
            {
                InNodeBenchGate.Release();
            }
        });
    }

    // One in-node bench at a time per node: each may start up to 1024 callers for up to 20 minutes.
    private static readonly SemaphoreSlim InNodeBenchGate = new(1, 1);

    /// <summary>How long an in-node bench may overrun its warm-up and window before it is stopped (504).</summary>
    private static readonly TimeSpan InNodeBenchGrace = TimeSpan.FromSeconds(60);

    /// <summary>Shapes a dump for JSON: resource names without the lockspace prefix, LVB and ids in hex.</summary>
    public static LocksView ToView(string lockspace, LockspaceDump dump) =>
        new(lockspace, dump.Resources.Select(r => new ResourceView(
            LockNames.TrySplit(r.EntityId, out _, out var resource) ? resource : r.EntityId,
            r.MasterNode,
            r.LvbLength,
            Convert.ToHexStringLower(r.Lvb),
            r.LvbSeq,
            r.ValueNotValid,
            r.Granted.Select(ToView).ToList(),
            r.Converting.Select(ToView).ToList(),
            r.Waiting.Select(ToView).ToList())).ToList(), dump.MissingNodes);

    private static LockView ToView(LockDump l) =>
        new(l.LockId.ToString("x"), l.NodeId, l.Slot, l.Session.ToString(), l.HasGranted ? l.GrantedMode.ToString() : null, l.RequestedMode.ToString(), l.Flags == LockFlags.None ? string.Empty : l.Flags.ToString(), l.Orphan);
}
