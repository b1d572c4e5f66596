using System.Collections.Immutable;
using System.Reflection;
using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;

namespace Lockstep.Hosting.Management;

/// <summary>Reads a <see cref="MembershipSnapshot"/> and shard statistics from a running node.</summary>
public static class ClusterReader
{
    // Akka.NET keeps "who observed whom as unreachable" in the internal ClusterReadView; Akka Management
    // reads it through InternalsVisibleTo. We read it by reflection and fall back to an empty observedBy
    // list if a future Akka version renames it (the unreachable members themselves come from public state).
    private static readonly PropertyInfo? ReadViewProperty =
        typeof(Cluster).GetProperty("ReadView", BindingFlags.Instance | BindingFlags.NonPublic);

    /// <summary>Snapshot of the membership as this node sees it now.</summary>
    public static MembershipSnapshot Read(Cluster cluster)
    {
        var state = cluster.State;
        var byAge = state.Members.ToList();
        byAge.Sort((a, b) => a.IsOlderThan(b) ? -1 : b.IsOlderThan(a) ? 1 : 0);
        var members = byAge
            .Select((m, rank) => new MemberSnapshot(m.Address.ToString(), m.UniqueAddress.Uid, m.Status.ToString(), m.Roles.ToList(), rank))
            .ToList();

        return new MembershipSnapshot(
            cluster.SelfAddress.ToString(),
            cluster.SelfMember.Status.ToString(),
            members,
            state.Unreachable.Select(m => m.Address.ToString()).ToList(),
            ObservedBy(cluster) ?? new Dictionary<string, IReadOnlyList<string>>(),
            state.Leader?.ToString());
    }

    /// <summary>
    /// Unreachable member → members that observed it, or null when the internal view cannot be read.
    /// </summary>
    public static IReadOnlyDictionary<string, IReadOnlyList<string>>? ObservedBy(Cluster cluster)
    {
        try
        {
            var readView = ReadViewProperty?.GetValue(cluster);
            var reachability = readView?.GetType()
                .GetProperty("Reachability", BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public)?
                .GetValue(readView);
            var grouped = reachability?.GetType()
                .GetProperty("ObserversGroupedByUnreachable", BindingFlags.Instance | BindingFlags.Public)?
                .GetValue(reachability);
            if (grouped is not IImmutableDictionary<UniqueAddress, ImmutableHashSet<UniqueAddress>> map)
            {
                return null;
            }

            return map.ToDictionary(
                kv => kv.Key.Address.ToString(),
                kv => (IReadOnlyList<string>)kv.Value.Select(o => o.Address.ToString()).ToList(),
                StringComparer.Ordinal);
        }
        catch (TargetInvocationException)
        {
            return null;
        }
    }

    /// <summary>Names of the shard regions (and proxies) started on this node.</summary>
    public static IReadOnlyList<string> ShardTypeNames(ActorSystem system) =>
        ClusterSharding.Get(system).ShardTypeNames.Order(StringComparer.Ordinal).ToList();

    /// <summary>
    /// Shard statistics of region <paramref name="name"/>: this node's, then the whole cluster's.
    /// Returns null when no region of that name was started here.
    /// </summary>
    public static async Task<ShardDetails?> ShardsAsync(ActorSystem system, string name, TimeSpan timeout, CancellationToken cancellation)
    {
        var sharding = ClusterSharding.Get(system);
        if (!sharding.ShardTypeNames.Contains(name))
        {
            return null;
        }

        var region = sharding.ShardRegion(name);
        var local = await region.Ask<ShardRegionStats>(GetShardRegionStats.Instance, timeout, cancellation);
        var all = await region.Ask<ClusterShardingStats>(new GetClusterShardingStats(timeout), timeout + timeout, cancellation);

        var self = Cluster.Get(system).SelfAddress;
        // The local region answers with a local-scope address (no host); name it as the cluster does.
        string Name(Address a) => (a.HasLocalScope ? self : a).ToString();
        var perNode = all.Regions.ToDictionary(r => Name(r.Key), r => (IReadOnlyDictionary<string, int>)r.Value.Stats.ToDictionary(), StringComparer.Ordinal);
        var failed = all.Regions.ToDictionary(r => Name(r.Key), r => (IReadOnlyList<string>)r.Value.Failed.ToList(), StringComparer.Ordinal);
        return MembershipView.Shards(local.Stats.ToDictionary(), perNode, failed);
    }
}
