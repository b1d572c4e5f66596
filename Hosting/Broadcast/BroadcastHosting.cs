using Akka.Hosting;
using Lockstep.Actors.Broadcast;
using Lockstep.Hosting.Locking;
using Lockstep.Hosting.Node;
using Prometheus;

namespace Lockstep.Hosting.Broadcast;

/// <summary>The node's broadcast and clvmd cluster operations as DI services: usable at once, calls wait for start-up.</summary>
public sealed class BroadcastService
{
    private readonly TaskCompletionSource<(BroadcastManager Manager, ClusterOperations Cluster)> _started = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public BroadcastService(BroadcastOptions options) => Options = options;

    public BroadcastOptions Options { get; }

    public Task<BroadcastManager> Manager => _started.Task.ContinueWith(t => t.Result.Manager, TaskScheduler.Default);

    public Task<ClusterOperations> Cluster => _started.Task.ContinueWith(t => t.Result.Cluster, TaskScheduler.Default);

    /// <summary>The manager if it has started, else null (for the metrics scrape, which must not wait).</summary>
    public BroadcastManager? StartedManager => _started.Task.IsCompletedSuccessfully ? _started.Task.Result.Manager : null;

    internal void Started(BroadcastManager manager, ClusterOperations cluster) => _started.TrySetResult((manager, cluster));
}

/// <summary>One-line hooks that plug the broadcast into a node (see <c>NodeModules</c>).</summary>
public static class BroadcastHosting
{
    /// <summary>
    /// Registers <see cref="BroadcastOptions"/> (section <c>Lockstep:Broadcast</c>; a relative <c>OrderLog</c> is under
    /// the node's data directory) and <see cref="BroadcastService"/>.
    /// </summary>
    public static IServiceCollection AddLockstepBroadcast(this IServiceCollection services, LockstepOptions node)
    {
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IConfiguration>().GetSection(BroadcastOptions.SectionName).Get<BroadcastOptions>() ?? new BroadcastOptions();
            if (options.OrderLog is { Length: > 0 } log && !Path.IsPathRooted(log))
            {
                options.OrderLog = Path.Combine(node.DataDirectory, log);
            }

            return options;
        });
        services.AddSingleton<BroadcastService>();
        return services;
    }

    /// <summary>Starts the broadcast once the DLM has started.</summary>
    public static AkkaConfigurationBuilder WithLockstepBroadcast(this AkkaConfigurationBuilder builder, IServiceProvider services) =>
        builder.WithActors((system, _, resolver) =>
        {
            // WithLockstepLocking runs before this starter (NodeModules), so the manager is already there.
            var started = resolver.GetService<LockingService>().Manager;
            var locks = started.IsCompletedSuccessfully ? started.Result : throw new InvalidOperationException("the broadcast starts after the DLM (NodeModules order)");
            var manager = BroadcastManager.Start(system, locks, resolver.GetService<BroadcastOptions>());
            resolver.GetService<BroadcastService>().Started(manager, new ClusterOperations(system, manager, locks));
        });

    /// <summary>Maps <c>/v1/broadcast</c> and its routes, and the broadcast's Prometheus gauges.</summary>
    public static WebApplication MapLockstepBroadcast(this WebApplication app)
    {
        BroadcastEndpoints.Map(app);
        BroadcastMetrics.Register(app.Services.GetRequiredService<BroadcastService>());
        return app;
    }
}

/// <summary>
/// The broadcast's numbers in <c>/metrics</c>, read from this node's streams right before each scrape (at most 2 s;
/// a scrape during a stall shows the previous values): counters for what only grows, gauges for in flight and latency.
/// </summary>
internal static class BroadcastMetrics
{
    private static readonly Counter Sent = Metrics.CreateCounter("lockstep_broadcast_sent_messages_total", "Messages this node submitted, by stream and type.", new CounterConfiguration { LabelNames = ["stream", "type"] });
    private static readonly Counter Delivered = Metrics.CreateCounter("lockstep_broadcast_delivered_messages_total", "Messages this node processed, by stream and type.", new CounterConfiguration { LabelNames = ["stream", "type"] });
    private static readonly Counter Rounds = Metrics.CreateCounter("lockstep_broadcast_rounds_total", "Rounds by stream and kind: published (own), healed (republished after a death), delivered.", new CounterConfiguration { LabelNames = ["stream", "kind"] });
    private static readonly Gauge InFlight = Metrics.CreateGauge("lockstep_broadcast_in_flight", "Messages submitted here and not yet processed everywhere.", new GaugeConfiguration { LabelNames = ["stream"] });
    private static readonly Counter Anomalies = Metrics.CreateCounter("lockstep_broadcast_anomalies_total", "Gaps (rounds missed by a live node; must stay 0), failed broadcasts, gathers.", new CounterConfiguration { LabelNames = ["stream", "kind"] });
    private static readonly Gauge Completion = Metrics.CreateGauge("lockstep_broadcast_completion_seconds", "Submission to processed-everywhere, p50 and p99 of the last 4096.", new GaugeConfiguration { LabelNames = ["stream", "quantile"] });
    private static int registered;

    public static void Register(BroadcastService service)
    {
        if (Interlocked.Exchange(ref registered, 1) == 1)
        {
            return;
        }

        Metrics.DefaultRegistry.AddBeforeCollectCallback(async cancel =>
        {
            if (service.StartedManager is not { } manager)
            {
                return;
            }

            Lockstep.Contracts.Broadcast.BroadcastNodeStats stats;
            try
            {
                stats = await manager.StatsAsync(TimeSpan.FromSeconds(2));
            }
            catch (Exception ex) when (ex is Akka.Actor.AskTimeoutException or TaskCanceledException)
            {
                return;
            }

            foreach (var s in stats.Streams)
            {
                foreach (var (type, count) in s.SentByType)
                {
                    Sent.WithLabels(s.Stream, type).IncTo(count);
                }

                foreach (var (type, count) in s.DeliveredByType)
                {
                    Delivered.WithLabels(s.Stream, type).IncTo(count);
                }

                Rounds.WithLabels(s.Stream, "published").IncTo(s.RoundsSent);
                Rounds.WithLabels(s.Stream, "healed").IncTo(s.RoundsHealed);
                Rounds.WithLabels(s.Stream, "delivered").IncTo(s.RoundsDelivered);
                InFlight.WithLabels(s.Stream).Set(s.InFlight);
                Anomalies.WithLabels(s.Stream, "gaps").IncTo(s.Gaps);
                Anomalies.WithLabels(s.Stream, "failed").IncTo(s.Failed);
                Anomalies.WithLabels(s.Stream, "gathers").IncTo(s.Gathers);
                Completion.WithLabels(s.Stream, "0.5").Set(s.CompletionP50Ms / 1000);
                Completion.WithLabels(s.Stream, "0.99").Set(s.CompletionP99Ms / 1000);
            }
        });
    }
}
