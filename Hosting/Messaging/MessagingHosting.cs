using Akka.Hosting;
using Lockstep.Actors.Messaging;
using Lockstep.Actors.Messaging.Link;
using Lockstep.Hosting.Node;
using Prometheus;

namespace Lockstep.Hosting.Messaging;

/// <summary>
/// The node's reliable-messaging layer as a DI service: resolvable at once, its members wait until the actor
/// system has started the layer.
/// </summary>
public sealed class MessagingService(LockstepOptions options)
{
    private readonly TaskCompletionSource<LockstepMessaging> _started = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The probe's ledger on this node (null when <c>Messaging:Probe</c> is off).</summary>
    public ProbeLedger? Probe { get; } = options.Messaging.Probe ? new ProbeLedger(options.NodeId) : null;

    /// <summary>The started layer (waits for start-up).</summary>
    public Task<LockstepMessaging> Layer => _started.Task;

    /// <summary>The layer if it has started, else null (for the metrics scrape, which must not wait).</summary>
    public LockstepMessaging? LayerIfStarted => _started.Task.IsCompletedSuccessfully ? _started.Task.Result : null;

    internal void Started(LockstepMessaging layer) => _started.TrySetResult(layer);

    /// <summary>The layer's options from the <c>Lockstep:Messaging</c> section.</summary>
    public static MessagingOptions ToLayerOptions(LockstepOptions.MessagingSection section)
    {
        ArgumentNullException.ThrowIfNull(section);
        return new MessagingOptions
        {
            HolderCap = section.HolderCap,
            HolderShards = section.HolderShards,
            TickInterval = TimeSpan.FromMilliseconds(section.TickIntervalMs),
            Outbox = new OutboxLimits(section.MaxInFlightPerChannel, section.MaxQueuedPerChannel, section.InitialResendMs, section.MaxResendMs),
            PersistedEntityTypes = new HashSet<string>(section.PersistedEntityTypes, StringComparer.Ordinal),
            PeerLink = section.Link == "tcp" ? new PeerLinkOptions { Port = section.LinkPort } : null,
        };
    }
}

/// <summary>One-line hooks that plug the reliable-messaging layer into a node (see <c>NodeModules</c>).</summary>
public static class MessagingHosting
{
    /// <summary>Registers <see cref="MessagingService"/>.</summary>
    public static IServiceCollection AddLockstepMessaging(this IServiceCollection services)
    {
        services.AddSingleton<MessagingService>();
        return services;
    }

    /// <summary>
    /// Starts the layer (outbox, holder regions) when the actor system starts, and registers the probe handler on
    /// every probe entity type when <c>Messaging:Probe</c> is on. Other subsystems register their handlers with
    /// <c>LockstepMessaging.Get(system).Handlers</c>.
    /// </summary>
    public static AkkaConfigurationBuilder WithLockstepMessaging(this AkkaConfigurationBuilder builder, LockstepOptions options, IServiceProvider services) =>
        builder.WithActors((system, registry) =>
        {
            var layer = LockstepMessaging.Start(system, MessagingService.ToLayerOptions(options.Messaging));
            registry.TryRegister<LockstepMessaging>(layer.Outbox);
            var service = services.GetRequiredService<MessagingService>();
            if (service.Probe is { } probe)
            {
                foreach (var type in ProbeLedger.EntityTypes)
                {
                    layer.Handlers.Register(type, (context, payload) => Task.FromResult(probe.Handle(context, payload)));
                }
            }

            service.Started(layer);
        });

    /// <summary>Maps <c>/v1/messaging/stats</c>, the probe routes and the layer's Prometheus gauges.</summary>
    public static WebApplication MapLockstepMessaging(this WebApplication app)
    {
        MessagingEndpoints.Map(app);
        MessagingPrometheus.Register(app.Services.GetRequiredService<MessagingService>());
        return app;
    }
}

/// <summary>
/// The layer's numbers in the node's <c>/metrics</c>, refreshed right before each scrape. The layer's own meter
/// (<c>Lockstep.Messaging</c>: handler runs, rejections by reason, re-sends, the cap) is exported next to them by
/// prometheus-net's meter adapter.
/// </summary>
internal static class MessagingPrometheus
{
    private static readonly Gauge Holders = Metrics.CreateGauge(
        "lockstep_messaging_node_holders", "Message holder tables living on this node, by kind (memory, persisted).",
        new GaugeConfiguration { LabelNames = ["kind"] });

    private static readonly Gauge Entries = Metrics.CreateGauge(
        "lockstep_messaging_node_holder_entries", "Entries over all holder tables on this node.");

    private static readonly Gauge Largest = Metrics.CreateGauge(
        "lockstep_messaging_node_holder_entries_max", "Entries of the fullest holder table on this node.");

    private static readonly Gauge AtCap = Metrics.CreateGauge(
        "lockstep_messaging_node_holders_at_cap", "Holder tables on this node at their cap (refusing with ChannelFull).");

    private static readonly Gauge Cap = Metrics.CreateGauge(
        "lockstep_messaging_node_holder_cap", "Entries one holder table may keep (Lockstep:Messaging:HolderCap).");

    private static readonly Gauge Pending = Metrics.CreateGauge(
        "lockstep_messaging_node_outbox_pending", "Calls sent from this node that are not complete yet.");

    private static readonly Gauge Resends = Metrics.CreateGauge(
        "lockstep_messaging_node_outbox_resends", "Requests and drops this node's outbox re-sent since it started.");

    private static readonly Gauge Completed = Metrics.CreateGauge(
        "lockstep_messaging_node_outbox_completed", "Calls this node's outbox completed since it started.");

    private static readonly Gauge LinkEnvelopes = Metrics.CreateGauge(
        "lockstep_messaging_link_envelopes", "Envelopes this node sent to other nodes since it started, by wire (link: the peer link; akka: Akka.Remote).",
        new GaugeConfiguration { LabelNames = ["wire"] });

    private static readonly Gauge LinkConnections = Metrics.CreateGauge(
        "lockstep_messaging_link_connections", "Open peer-link connections, by direction (out, in).",
        new GaugeConfiguration { LabelNames = ["direction"] });

    private static readonly Gauge LinkFaults = Metrics.CreateGauge(
        "lockstep_messaging_link_faults", "Peer-link connection attempts that failed (connect) and incoming connections closed for bad bytes (protocol).",
        new GaugeConfiguration { LabelNames = ["kind"] });

    private static int registered;

    public static void Register(MessagingService service)
    {
        if (Interlocked.Exchange(ref registered, 1) == 1)
        {
            return;
        }

        Metrics.DefaultRegistry.AddBeforeCollectCallback(() =>
        {
            if (service.LayerIfStarted is not { } layer)
            {
                return;
            }

            var stats = layer.Stats.Snapshot();
            Holders.WithLabels("memory").Set(stats.Holders.Count(h => !h.Persisted));
            Holders.WithLabels("persisted").Set(stats.Holders.Count(h => h.Persisted));
            Entries.Set(stats.HolderEntries);
            Largest.Set(stats.LargestHolder);
            AtCap.Set(stats.HoldersAtCap);
            Cap.Set(stats.HolderCap);
            Pending.Set(stats.OutboxPending);
            Resends.Set(stats.Resends);
            Completed.Set(stats.Completed);
            if (layer.Link?.Stats is { } link)
            {
                LinkEnvelopes.WithLabels("link").Set(link.SentOverLink);
                LinkEnvelopes.WithLabels("akka").Set(link.SentOverAkka);
                LinkConnections.WithLabels("out").Set(link.OutgoingConnections);
                LinkConnections.WithLabels("in").Set(link.IncomingConnections);
                LinkFaults.WithLabels("connect").Set(link.ConnectFailures);
                LinkFaults.WithLabels("protocol").Set(link.ProtocolErrors);
            }
        });
    }
}

/// <summary>An error body of the messaging routes.</summary>
public sealed record MessagingError(string Error);

/// <summary>Body of <c>POST /v1/messaging/probe/run</c>; every field optional.</summary>
/// <param name="Requests">Requests to send (default 1,000).</param>
/// <param name="Callers">Concurrent callers (default 16).</param>
/// <param name="TimeoutSeconds">Give up waiting after this long (default 300).</param>
public sealed record ProbeRunRequest(int? Requests, int? Callers, int? TimeoutSeconds);

/// <summary>The layer's management routes.</summary>
public static class MessagingEndpoints
{
    /// <summary>Maps the routes.</summary>
    public static void Map(WebApplication app)
    {
        app.MapGet("/v1/messaging/stats", async (MessagingService messaging, CancellationToken ct) =>
            Results.Json((await messaging.Layer.WaitAsync(ct)).Stats.Snapshot()));

        // The peer link's counters; 404 when this node runs with Messaging:Link=akka.
        app.MapGet("/v1/messaging/link", async (MessagingService messaging, CancellationToken ct) =>
            (await messaging.Layer.WaitAsync(ct)).Link?.Stats is { } link
                ? Results.Json(link)
                : Results.Json(new MessagingError("the peer link is off on this node (Lockstep:Messaging:Link=akka)"), statusCode: StatusCodes.Status404NotFound));

        app.MapPost("/v1/messaging/probe/run", async (HttpRequest http, MessagingService messaging, LockstepOptions node, CancellationToken ct) =>
        {
            if (messaging.Probe is null)
            {
                return ProbeOff();
            }

            ProbeRunRequest? body = null;
            if (http.ContentLength is > 0 || http.HasJsonContentType())
            {
                try
                {
                    body = await http.ReadFromJsonAsync<ProbeRunRequest>(ct);
                }
                catch (System.Text.Json.JsonException ex)
                {
                    return Results.Json(new MessagingError($"the body is not a probe run ({{\"requests\":N,\"callers\":N,\"timeoutSeconds\":N}}): {ex.Message}"), statusCode: StatusCodes.Status400BadRequest);
                }
            }

            var options = new ProbeRunOptions(body?.Requests ?? 1000, body?.Callers ?? 16, TimeSpan.FromSeconds(body?.TimeoutSeconds ?? 300));
            if (options.Validate() is { } problem)
            {
                return Results.Json(new MessagingError(problem), statusCode: StatusCodes.Status400BadRequest);
            }

            var layer = await messaging.Layer.WaitAsync(ct);
            var runId = $"{node.NodeId}-{Guid.NewGuid().ToString("N")[..12]}";
            return Results.Json(await ProbeRunner.RunAsync(layer.Sender, runId, options, ct));
        });

        app.MapGet("/v1/messaging/probe/stats", (string? runId, MessagingService messaging) =>
            messaging.Probe is { } probe ? Results.Json(probe.Snapshot(runId)) : ProbeOff());
    }

    private static IResult ProbeOff() =>
        Results.Json(new MessagingError("the messaging probe is off on this node (Lockstep:Messaging:Probe=false)"), statusCode: StatusCodes.Status404NotFound);
}
