using Akka.Actor;
using Akka.Cluster;
using Prometheus;

namespace Lockstep.Hosting.Management;

/// <summary>
/// Prometheus metrics of the node: the default process/runtime collectors plus cluster gauges that
/// are refreshed from the live membership right before each scrape, so they are never stale.
/// </summary>
public static class ClusterMetrics
{
    private static readonly Gauge Members = Metrics.CreateGauge(
        "lockstep_cluster_members", "Cluster members seen by this node, by member status.",
        new GaugeConfiguration { LabelNames = ["status"] });

    private static readonly Gauge Unreachable = Metrics.CreateGauge(
        "lockstep_cluster_unreachable_members", "Members that at least one member cannot reach.");

    private static readonly Gauge SelfUp = Metrics.CreateGauge(
        "lockstep_cluster_self_up", "1 when this node is an Up member, else 0.");

    private static readonly Gauge IsLeader = Metrics.CreateGauge(
        "lockstep_cluster_is_leader", "1 when this node is the cluster leader, else 0.");

    private static int registered;

    /// <summary>Hooks the refresh into the default registry once per process.</summary>
    public static void Register(IServiceProvider services)
    {
        if (Interlocked.Exchange(ref registered, 1) == 1)
        {
            return;
        }

        Metrics.DefaultRegistry.AddBeforeCollectCallback(() =>
        {
            ActorSystem? system;
            try
            {
                system = services.GetService<ActorSystem>();
            }
            catch (InvalidOperationException)
            {
                return;
            }

            if (system is null || system.WhenTerminated.IsCompleted)
            {
                return;
            }

            var snapshot = ClusterReader.Read(Cluster.Get(system));
            foreach (var (status, count) in MembershipView.CountByStatus(snapshot))
            {
                Members.WithLabels(status).Set(count);
            }

            Unreachable.Set(MembershipView.UnreachableCount(snapshot));
            SelfUp.Set(MembershipView.IsReady(snapshot) ? 1 : 0);
            IsLeader.Set(snapshot.Leader == snapshot.SelfNode ? 1 : 0);
        });
    }
}
