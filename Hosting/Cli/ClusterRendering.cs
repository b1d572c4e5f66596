using Lockstep.Hosting.Management;
using Spectre.Console;

namespace Lockstep.Hosting.Cli;

/// <summary>Pure rendering of management answers as Spectre.Console tables and summary lines.</summary>
public static class ClusterRendering
{
    /// <summary>The table of <c>lockstep cluster broadcast-stats</c>: one row per node and stream.</summary>
    public static Table BroadcastTable(Broadcast.BroadcastView view)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("Node").AddColumn("Stream").AddColumn("Joined").AddColumn("Phase").AddColumn(new TableColumn("Seq").RightAligned())
            .AddColumn(new TableColumn("Published").RightAligned()).AddColumn(new TableColumn("Healed").RightAligned()).AddColumn(new TableColumn("Delivered").RightAligned())
            .AddColumn(new TableColumn("Gaps").RightAligned()).AddColumn(new TableColumn("In flight").RightAligned()).AddColumn("Sent by type").AddColumn(new TableColumn("p50 / p99 ms").RightAligned());
        foreach (var node in view.Nodes)
        {
            foreach (var s in node.Streams)
            {
                table.AddRow(node.NodeId, s.Stream, s.Joined ? "yes" : "no", s.Phase, s.LastSeq.ToString(), s.RoundsSent.ToString(), s.RoundsHealed.ToString(),
                    s.RoundsDelivered.ToString(), s.Gaps.ToString(), s.InFlight.ToString(),
                    Markup.Escape(string.Join(" ", s.SentByType.OrderBy(t => t.Key, StringComparer.Ordinal).Select(t => $"{t.Key}={t.Value}"))),
                    $"{s.CompletionP50Ms:0.0} / {s.CompletionP99Ms:0.0}");
            }
        }

        return table;
    }

    /// <summary>The table of <c>lockstep cluster broadcast-ping</c>: how long each node's handlers took.</summary>
    public static Table PingTable(Actors.Broadcast.BroadcastPingResult ping)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumn("Node").AddColumn("Processed").AddColumn(new TableColumn("Round").RightAligned()).AddColumn(new TableColumn("Handlers µs").RightAligned());
        foreach (var node in ping.Nodes)
        {
            table.AddRow(node.NodeId, node.Found ? "yes" : "NO", node.Seq.ToString(), node.HandlerMicros.ToString("0.0"));
        }

        return table;
    }

    /// <summary>The member table of <c>lockstep cluster show</c>.</summary>
    public static Table MembersTable(ClusterMembers cluster)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn(new TableColumn("Node").NoWrap()).AddColumn("Status").AddColumn("Reachable").AddColumn("Roles").AddColumn("Uid").AddColumn("");
        var unreachable = cluster.Unreachable.ToDictionary(u => u.Node, StringComparer.Ordinal);
        foreach (var member in cluster.Members)
        {
            var reachable = unreachable.TryGetValue(member.Node, out var u)
                ? u.ObservedBy.Count > 0 ? $"no (seen by {string.Join(", ", u.ObservedBy.Select(MembershipView.HostPort))})" : "no"
                : "yes";
            table.AddRow(
                new Text(member.Node),
                new Text(member.Status),
                new Text(reachable),
                new Text(string.Join(",", member.Roles)),
                new Text(member.NodeUid),
                new Text(string.Join(", ", Tags(cluster, member.Node))));
        }

        return table;
    }

    /// <summary>The self/leader/oldest tags of one member.</summary>
    public static IEnumerable<string> Tags(ClusterMembers cluster, string node)
    {
        if (node == cluster.SelfNode)
        {
            yield return "self";
        }

        if (node == cluster.Leader)
        {
            yield return "leader";
        }

        if (node == cluster.Oldest)
        {
            yield return "oldest";
        }
    }

    /// <summary>One line under the table: member count by status, unreachable count, leader.</summary>
    public static string Summary(ClusterMembers cluster)
    {
        var byStatus = cluster.Members.GroupBy(m => m.Status)
            .OrderBy(g => IndexOfStatus(g.Key))
            .Select(g => $"{g.Count()} {g.Key}");
        var count = cluster.Members.Count == 1 ? "1 member" : $"{cluster.Members.Count} members";
        return $"{count} ({string.Join(", ", byStatus)}), {cluster.Unreachable.Count} unreachable, leader {cluster.Leader ?? "none"}";
    }

    /// <summary>The per-node shard table of <c>lockstep cluster-sharding region-stats</c>.</summary>
    public static Table ShardsTable(ShardDetails details)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumn(new TableColumn("Node").NoWrap()).AddColumn("Shard").AddColumn(new TableColumn("Entities").RightAligned());
        foreach (var node in details.Nodes)
        {
            if (node.Shards.Count == 0 && node.Failed.Count == 0)
            {
                table.AddRow(new Text(node.Node), new Text("-"), new Text("0"));
            }

            foreach (var shard in node.Shards)
            {
                table.AddRow(new Text(node.Node), new Text(shard.ShardId), new Text(shard.NumEntities.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            }

            foreach (var failed in node.Failed)
            {
                table.AddRow(new Text(node.Node), new Text(failed), new Text("no answer"));
            }
        }

        return table;
    }

    /// <summary>Totals under the shard table.</summary>
    public static string ShardsSummary(string region, ShardDetails details)
    {
        var shards = details.Nodes.Sum(n => n.Shards.Count);
        var entities = details.Nodes.Sum(n => n.Shards.Sum(s => s.NumEntities));
        var failed = details.Nodes.Sum(n => n.Failed.Count);
        return $"region {region}: {shards} shards, {entities} entities on {details.Nodes.Count} nodes" + (failed > 0 ? $", {failed} shards did not answer" : "");
    }

    /// <summary>Renders to plain text at a fixed width (tests, and output that is not a terminal).</summary>
    public static string ToText(Action<IAnsiConsole> render, int width = 200)
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(writer),
        });
        console.Profile.Width = width;
        render(console);
        return writer.ToString();
    }

    private static int IndexOfStatus(string status)
    {
        var index = MembershipView.Statuses.ToList().IndexOf(status);
        return index < 0 ? int.MaxValue : index;
    }
}
