using Lockstep.Hosting.Cli;
using Lockstep.Hosting.Management;
using Xunit;

namespace Lockstep.Hosting.Tests.Cli;

public sealed class ClusterRenderingTests
{
    private const string A = "akka.tcp://lockstep@127.0.0.1:4054";
    private const string B = "akka.tcp://lockstep@127.0.0.1:4055";
    private const string C = "akka.tcp://lockstep@127.0.0.1:4056";

    private static readonly ClusterMembers Three = new(
        B,
        [
            new ClusterMember(A, "11", "Up", ["lockstep"]),
            new ClusterMember(B, "22", "Up", ["lockstep"]),
            new ClusterMember(C, "33", "Leaving", ["lockstep"]),
        ],
        [new ClusterUnreachableMember(C, [A, B])],
        A,
        A,
        new Dictionary<string, string> { ["lockstep"] = A });

    [Fact]
    public void Member_table_has_one_row_per_member_with_status_reachability_and_tags()
    {
        var lines = ClusterRendering.ToText(c => c.Write(ClusterRendering.MembersTable(Three))).Split('\n');

        var a = Assert.Single(lines, l => l.Contains(A, StringComparison.Ordinal));
        var b = Assert.Single(lines, l => l.Contains(B, StringComparison.Ordinal));
        var c = Assert.Single(lines, l => l.Contains(C, StringComparison.Ordinal));
        Assert.Contains("leader, oldest", a, StringComparison.Ordinal);
        Assert.Contains(" self ", b, StringComparison.Ordinal);
        Assert.Contains(" yes ", b, StringComparison.Ordinal);
        Assert.Contains("Leaving", c, StringComparison.Ordinal);
        Assert.Contains("no (seen by 127.0.0.1:4054, 127.0.0.1:4055)", c, StringComparison.Ordinal);
        Assert.Contains("33", c, StringComparison.Ordinal);
    }

    [Fact]
    public void Summary_counts_by_status_in_lifecycle_order()
    {
        Assert.Equal($"3 members (2 Up, 1 Leaving), 1 unreachable, leader {A}", ClusterRendering.Summary(Three));
        Assert.Equal("1 member (1 Joining), 0 unreachable, leader none",
            ClusterRendering.Summary(new ClusterMembers(A, [new ClusterMember(A, "1", "Joining", [])], [], null, null, new Dictionary<string, string>())));
    }

    [Fact]
    public void Shard_table_lists_each_shard_per_node_and_the_silent_ones()
    {
        var details = new ShardDetails(
            [new ShardRegionInfo("1", 4)],
            [
                new NodeShards(A, [new ShardRegionInfo("1", 4), new ShardRegionInfo("2", 1)], []),
                new NodeShards(B, [], ["5"]),
                new NodeShards(C, [], []),
            ]);

        var text = ClusterRendering.ToText(c => c.Write(ClusterRendering.ShardsTable(details)));

        Assert.Equal(2, text.Split('\n').Count(l => l.Contains(A, StringComparison.Ordinal)));
        Assert.Contains("no answer", text.Split('\n').Single(l => l.Contains(B, StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.Equal("region lock: 2 shards, 5 entities on 3 nodes, 1 shards did not answer", ClusterRendering.ShardsSummary("lock", details));
    }
}
