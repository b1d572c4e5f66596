namespace Lockstep.Hosting.Management;

/// <summary>One member as read from the cluster, before shaping.</summary>
/// <param name="Address">Full member address.</param>
/// <param name="Uid">Incarnation uid.</param>
/// <param name="Status">Member status name (Up, Joining, …).</param>
/// <param name="Roles">Roles of the member.</param>
/// <param name="AgeRank">0 for the oldest member, counting up; only the order matters.</param>
public sealed record MemberSnapshot(string Address, long Uid, string Status, IReadOnlyList<string> Roles, int AgeRank);

/// <summary>What a node knows about its cluster at one instant; the input of every management answer.</summary>
/// <param name="SelfNode">This node's address.</param>
/// <param name="SelfStatus">This node's member status, e.g. Up or Joining.</param>
/// <param name="Members">Members in the gossip.</param>
/// <param name="Unreachable">Addresses of unreachable members.</param>
/// <param name="ObservedBy">For each unreachable address, who observed it; empty when not known.</param>
/// <param name="Leader">The leader, if any.</param>
public sealed record MembershipSnapshot(
    string SelfNode,
    string SelfStatus,
    IReadOnlyList<MemberSnapshot> Members,
    IReadOnlyList<string> Unreachable,
    IReadOnlyDictionary<string, IReadOnlyList<string>> ObservedBy,
    string? Leader);

/// <summary>A mutation requested through <c>PUT /cluster/members/{address}</c>.</summary>
public enum MemberOperation
{
    /// <summary>Mark the member Down (it is removed without a handover).</summary>
    Down,

    /// <summary>Ask the member to leave gracefully.</summary>
    Leave,
}

/// <summary>Pure functions that turn a <see cref="MembershipSnapshot"/> into Akka Management's JSON shapes.</summary>
public static class MembershipView
{
    /// <summary>The status names a member can have, in lifecycle order; the metrics report each one.</summary>
    public static readonly IReadOnlyList<string> Statuses = ["Joining", "WeaklyUp", "Up", "Leaving", "Exiting", "Down", "Removed"];

    /// <summary>Shapes <c>GET /cluster/members</c>.</summary>
    public static ClusterMembers Members(MembershipSnapshot snapshot)
    {
        var members = snapshot.Members
            .OrderBy(m => m.Address, StringComparer.Ordinal)
            .Select(ToMember)
            .ToList();

        var unreachable = snapshot.Unreachable
            .Concat(snapshot.ObservedBy.Keys)
            .Distinct(StringComparer.Ordinal)
            .OrderBy(a => a, StringComparer.Ordinal)
            .Select(a => new ClusterUnreachableMember(
                a,
                snapshot.ObservedBy.TryGetValue(a, out var observers)
                    ? observers.Order(StringComparer.Ordinal).ToList()
                    : []))
            .ToList();

        // Oldest counts only Up members, as Akka Management does: a Joining or Leaving node is no anchor.
        var up = snapshot.Members.Where(m => m.Status == "Up").OrderBy(m => m.AgeRank).ToList();
        var oldestPerRole = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var member in up)
        {
            foreach (var role in member.Roles)
            {
                oldestPerRole.TryAdd(role, member.Address);
            }
        }

        return new ClusterMembers(snapshot.SelfNode, members, unreachable, snapshot.Leader, up.FirstOrDefault()?.Address, oldestPerRole);
    }

    /// <summary>Shapes one member of <c>GET /cluster/members/{address}</c>.</summary>
    public static ClusterMember ToMember(MemberSnapshot member) =>
        new(member.Address, member.Uid.ToString(System.Globalization.CultureInfo.InvariantCulture), member.Status, member.Roles.Order(StringComparer.Ordinal).ToList());

    /// <summary>
    /// Finds a member by its full address or by the <c>host:port</c> shorthand, like Akka Management;
    /// the path segment may still be percent-encoded.
    /// </summary>
    public static MemberSnapshot? Find(MembershipSnapshot snapshot, string address)
    {
        var wanted = Uri.UnescapeDataString(address).Trim().TrimEnd('/');
        return snapshot.Members.FirstOrDefault(m =>
            string.Equals(m.Address, wanted, StringComparison.Ordinal)
            || string.Equals(HostPort(m.Address), wanted, StringComparison.Ordinal));
    }

    /// <summary><c>akka.tcp://sys@host:port</c> → <c>host:port</c>.</summary>
    public static string HostPort(string address)
    {
        var at = address.LastIndexOf('@');
        return at >= 0 ? address[(at + 1)..] : address;
    }

    /// <summary>Parses the <c>operation</c> form field; case-insensitive, null when unknown.</summary>
    public static MemberOperation? ParseOperation(string? operation) =>
        operation?.Trim().ToLowerInvariant() switch
        {
            "down" => MemberOperation.Down,
            "leave" => MemberOperation.Leave,
            _ => null,
        };

    /// <summary>The answer to a mutation Akka Management gives: "Downing X" or "Leaving X".</summary>
    public static ManagementMessage Accepted(MemberOperation operation, string address) =>
        new(operation == MemberOperation.Down ? $"Downing {address}" : $"Leaving {address}");

    /// <summary>Ready means this member is Up: it can own shards and serve volumes.</summary>
    public static bool IsReady(MembershipSnapshot snapshot) => snapshot.SelfStatus == "Up";

    /// <summary>Member counts by status for the metrics, with every known status present (zero if none).</summary>
    public static IReadOnlyDictionary<string, int> CountByStatus(MembershipSnapshot snapshot)
    {
        var counts = Statuses.ToDictionary(s => s, _ => 0, StringComparer.Ordinal);
        foreach (var member in snapshot.Members)
        {
            counts[member.Status] = counts.GetValueOrDefault(member.Status) + 1;
        }

        return counts;
    }

    /// <summary>How many distinct members are unreachable from somewhere.</summary>
    public static int UnreachableCount(MembershipSnapshot snapshot) =>
        snapshot.Unreachable.Concat(snapshot.ObservedBy.Keys).Distinct(StringComparer.Ordinal).Count();

    /// <summary>Shapes <c>GET /cluster/shards/{name}</c> from shard statistics.</summary>
    /// <param name="local">Shard id → entity count of the answering node's region (Akka Management's <c>regions</c>).</param>
    /// <param name="perNode">Shard id → entity count, per node address, from the whole cluster.</param>
    /// <param name="failedPerNode">Shards that did not answer, per node address.</param>
    public static ShardDetails Shards(
        IReadOnlyDictionary<string, int> local,
        IReadOnlyDictionary<string, IReadOnlyDictionary<string, int>> perNode,
        IReadOnlyDictionary<string, IReadOnlyList<string>> failedPerNode)
    {
        static List<ShardRegionInfo> Sorted(IReadOnlyDictionary<string, int> stats) =>
            stats.OrderBy(s => s.Key, StringComparer.Ordinal).Select(s => new ShardRegionInfo(s.Key, s.Value)).ToList();

        var nodes = perNode.Keys.Concat(failedPerNode.Keys)
            .Distinct(StringComparer.Ordinal)
            .OrderBy(a => a, StringComparer.Ordinal)
            .Select(a => new NodeShards(
                a,
                perNode.TryGetValue(a, out var stats) ? Sorted(stats) : [],
                failedPerNode.TryGetValue(a, out var failed) ? failed.Order(StringComparer.Ordinal).ToList() : []))
            .ToList();
        return new ShardDetails(Sorted(local), nodes);
    }
}
