using Akka.Actor;
using Akka.Cluster;
using Lockstep.Hosting.Node;
using Prometheus;

namespace Lockstep.Hosting.Management;

/// <summary>
/// The management HTTP API: Akka Management's cluster routes with the same JSON shapes, health
/// checks and Prometheus metrics. Mutations (down, leave, join) answer 403 unless the node runs with
/// <c>--http-write</c> (<c>Lockstep:Http:AllowWrite</c>), because anyone who can reach the port could
/// otherwise take nodes out of the cluster.
/// </summary>
/// <example><code>
/// curl -s localhost:8559/cluster/members
/// curl -s -X PUT -d operation=Down localhost:8559/cluster/members/127.0.0.1:4055
/// </code></example>
public static class ManagementEndpoints
{
    private static readonly TimeSpan ShardStatsTimeout = TimeSpan.FromSeconds(3);

    /// <summary>Maps every management route onto the node's web application.</summary>
    public static WebApplication MapLockstepManagement(this WebApplication app, LockstepOptions options)
    {
        ClusterMetrics.Register(app.Services);
        app.UseHttpMetrics();

        app.MapGet("/alive", (HttpContext http) =>
        {
            var system = SystemOrNull(http);
            return system is { WhenTerminated.IsCompleted: false }
                ? Json(new { status = "alive" })
                : Json(new { status = "terminated" }, StatusCodes.Status503ServiceUnavailable);
        });

        app.MapGet("/ready", (HttpContext http) =>
        {
            var system = SystemOrNull(http);
            if (system is null || system.WhenTerminated.IsCompleted)
            {
                return Json(new { status = "terminated" }, StatusCodes.Status503ServiceUnavailable);
            }

            var snapshot = ClusterReader.Read(Cluster.Get(system));
            return Json(new { status = snapshot.SelfStatus }, MembershipView.IsReady(snapshot) ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
        });

        app.MapGet("/cluster/members", (HttpContext http) =>
            Json(MembershipView.Members(ClusterReader.Read(Cluster.Get(System(http))))));

        app.MapPost("/cluster/members", async (HttpContext http) =>
        {
            if (Refused(options) is { } refused)
            {
                return refused;
            }

            var text = await FieldAsync(http.Request, "address");
            if (string.IsNullOrWhiteSpace(text) || !TryParseAddress(text, out var address))
            {
                return Json(new ManagementMessage($"Address '{text}' is not an Akka address (akka.tcp://lockstep@host:port)"), StatusCodes.Status400BadRequest);
            }

            Cluster.Get(System(http)).Join(address);
            return Json(new ManagementMessage($"Joining {address}"));
        });

        app.MapGet("/cluster/members/{*address}", (HttpContext http, string address) =>
        {
            var snapshot = ClusterReader.Read(Cluster.Get(System(http)));
            return MembershipView.Find(snapshot, address) is { } member
                ? Json(MembershipView.ToMember(member))
                : NotFound(address);
        });

        app.MapPut("/cluster/members/{*address}", async (HttpContext http, string address) =>
        {
            if (Refused(options) is { } refused)
            {
                return refused;
            }

            var operation = MembershipView.ParseOperation(await FieldAsync(http.Request, "operation"));
            if (operation is null)
            {
                return Json(new ManagementMessage("Operation not supported"), StatusCodes.Status400BadRequest);
            }

            return Mutate(http, address, operation.Value);
        });

        app.MapDelete("/cluster/members/{*address}", (HttpContext http, string address) =>
            Refused(options) ?? Mutate(http, address, MemberOperation.Leave));

        app.MapGet("/cluster/shards", (HttpContext http) =>
            Json(new { entityTypeKeys = ClusterReader.ShardTypeNames(System(http)) }));

        app.MapGet("/cluster/shards/{name}", async (HttpContext http, string name) =>
        {
            try
            {
                var details = await ClusterReader.ShardsAsync(System(http), name, ShardStatsTimeout, http.RequestAborted);
                return details is null
                    ? Json(new ManagementMessage($"Shard type [{name}] must be started first"), StatusCodes.Status404NotFound)
                    : Json(details);
            }
            catch (AskTimeoutException)
            {
                return Json(new ManagementMessage($"Shard Region [{name}] not responding, may have been terminated"), StatusCodes.Status503ServiceUnavailable);
            }
        });

        app.MapMetrics("/metrics");
        return app;
    }

    private static IResult Mutate(HttpContext http, string address, MemberOperation operation)
    {
        var cluster = Cluster.Get(System(http));
        if (MembershipView.Find(ClusterReader.Read(cluster), address) is not { } member)
        {
            return NotFound(address);
        }

        var target = Address.Parse(member.Address);
        if (operation == MemberOperation.Down)
        {
            cluster.Down(target);
        }
        else
        {
            cluster.Leave(target);
        }

        return Json(MembershipView.Accepted(operation, member.Address));
    }

    /// <summary>The 403 answer for a mutation on a read-only node, or null when writes are allowed.</summary>
    internal static IResult? Refused(LockstepOptions options) =>
        options.Http.AllowWrite
            ? null
            : Json(new ManagementMessage("Mutating management routes are disabled on this node; start it with --http-write (Lockstep:Http:AllowWrite=true)"), StatusCodes.Status403Forbidden);

    private static IResult NotFound(string address) =>
        Json(new ManagementMessage($"Member {Uri.UnescapeDataString(address)} not found"), StatusCodes.Status404NotFound);

    /// <summary>Akka Management takes form fields; a query parameter is accepted too, for curl without -d.</summary>
    private static async Task<string?> FieldAsync(HttpRequest request, string name)
    {
        if (request.HasFormContentType)
        {
            var form = await request.ReadFormAsync(request.HttpContext.RequestAborted);
            if (form.TryGetValue(name, out var value))
            {
                return value.ToString();
            }
        }

        return request.Query.TryGetValue(name, out var query) ? query.ToString() : null;
    }

    private static bool TryParseAddress(string text, out Address address)
    {
        try
        {
            address = Address.Parse(Uri.UnescapeDataString(text.Trim()));
            return address.Host is not null && address.Port is not null;
        }
        catch (UriFormatException)
        {
            address = Address.AllSystems;
            return false;
        }
    }

    private static IResult Json<T>(T body, int status = StatusCodes.Status200OK) =>
        Results.Json(body, ManagementJson.Options, statusCode: status);

    private static ActorSystem System(HttpContext http) => http.RequestServices.GetRequiredService<ActorSystem>();

    private static ActorSystem? SystemOrNull(HttpContext http)
    {
        try
        {
            return http.RequestServices.GetService<ActorSystem>();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }
}
