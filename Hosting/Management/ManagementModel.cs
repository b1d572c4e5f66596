using System.Text.Json;
using System.Text.Json.Serialization;

namespace Lockstep.Hosting.Management;

// The JSON shapes of Akka Management's cluster HTTP module (akka.management.cluster.ClusterMembers & co.),
// so tools written for it read ours. The CLI deserializes the same records.

/// <summary>One member, as <c>GET /cluster/members/{address}</c> returns it.</summary>
/// <param name="Node">Full address, e.g. <c>akka.tcp://lockstep@127.0.0.1:4054</c>.</param>
/// <param name="NodeUid">The incarnation's uid as a string (Akka Management writes it that way).</param>
/// <param name="Status">Up, Joining, WeaklyUp, Leaving, Exiting, Down or Removed.</param>
/// <param name="Roles">The member's roles, sorted.</param>
public sealed record ClusterMember(string Node, string NodeUid, string Status, IReadOnlyList<string> Roles);

/// <summary>A member some other member cannot reach, with the members that reported it.</summary>
/// <param name="Node">Address of the unreachable member.</param>
/// <param name="ObservedBy">Addresses of the members whose failure detector flagged it.</param>
public sealed record ClusterUnreachableMember(string Node, IReadOnlyList<string> ObservedBy);

/// <summary><c>GET /cluster/members</c>: the cluster as this node sees it.</summary>
/// <param name="SelfNode">Address of the node that answered.</param>
/// <param name="Members">Every member in the gossip, sorted by address.</param>
/// <param name="Unreachable">Members that at least one member cannot reach.</param>
/// <param name="Leader">Current leader, null before the node joined.</param>
/// <param name="Oldest">Oldest member that is Up, null when none is.</param>
/// <param name="OldestPerRole">Oldest Up member per role.</param>
public sealed record ClusterMembers(
    string SelfNode,
    IReadOnlyList<ClusterMember> Members,
    IReadOnlyList<ClusterUnreachableMember> Unreachable,
    string? Leader,
    string? Oldest,
    IReadOnlyDictionary<string, string> OldestPerRole);

/// <summary>The <c>{"message": …}</c> body of mutations and errors.</summary>
/// <param name="Message">What was done or what went wrong.</param>
public sealed record ManagementMessage(string Message);

/// <summary>One shard and how many entities it holds.</summary>
/// <param name="ShardId">Shard id.</param>
/// <param name="NumEntities">Entities alive in that shard.</param>
public sealed record ShardRegionInfo(string ShardId, int NumEntities);

/// <summary>The shards one node's region hosts.</summary>
/// <param name="Node">Address of the node.</param>
/// <param name="Shards">Its shards, sorted by id.</param>
/// <param name="Failed">Shards that did not answer in time.</param>
public sealed record NodeShards(string Node, IReadOnlyList<ShardRegionInfo> Shards, IReadOnlyList<string> Failed);

/// <summary>
/// <c>GET /cluster/shards/{name}</c>. <paramref name="Regions"/> is Akka Management's field (this node's
/// region); <paramref name="Nodes"/> adds the same per member, from <c>GetClusterShardingStats</c>.
/// </summary>
/// <param name="Regions">Shards hosted by the node that answered.</param>
/// <param name="Nodes">Shards hosted by every member, sorted by address.</param>
public sealed record ShardDetails(IReadOnlyList<ShardRegionInfo> Regions, IReadOnlyList<NodeShards> Nodes);

/// <summary>The JSON settings both sides use: camelCase like Akka Management, nulls written.</summary>
public static class ManagementJson
{
    /// <summary>Options for every management body.</summary>
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };
}
