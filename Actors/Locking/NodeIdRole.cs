namespace Lockstep.Actors.Locking;

/// <summary>
/// A member carries its node id as a cluster role (<c>nodeid-{id}</c>), so every member learns it from the membership
/// gossip itself. Recovery purges a dead member's locks by node id; a recovery hello (plain Tell) can be lost to an
/// association drop and is not re-sent once the cluster is settled, and a member can die before its hello arrived.
/// </summary>
public static class NodeIdRole
{
    // Plain HOCON: Akka.Hosting writes roles unquoted, so no ":" (a "node:" prefix stopped every node at start).
    public const string Prefix = "nodeid-";

    /// <summary>The role that names <paramref name="nodeId"/>.</summary>
    public static string For(string nodeId) => Prefix + nodeId;

    /// <summary>The node id named by one of <paramref name="roles"/>, if any.</summary>
    public static bool TryFind(IEnumerable<string> roles, out string nodeId)
    {
        foreach (var role in roles)
        {
            if (role.Length > Prefix.Length && role.StartsWith(Prefix, StringComparison.Ordinal))
            {
                nodeId = role[Prefix.Length..];
                return true;
            }
        }

        nodeId = string.Empty;
        return false;
    }
}
