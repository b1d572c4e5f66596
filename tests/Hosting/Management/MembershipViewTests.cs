using System.Text.Json;
using Lockstep.Hosting.Management;
using Xunit;

namespace Lockstep.Hosting.Tests.Management;

public sealed class MembershipViewTests
{
    private const string A = "akka.tcp://lockstep@127.0.0.1:4054";
    private const string B = "akka.tcp://lockstep@127.0.0.1:4055";
    private const string C = "akka.tcp://lockstep@127.0.0.1:4056";

    private static MembershipSnapshot Snapshot(
        IReadOnlyList<MemberSnapshot> members,
        IReadOnlyList<string>? unreachable = null,
        Dictionary<string, IReadOnlyList<string>>? observedBy = null,
        string self = A,
        string selfStatus = "Up",
        string? leader = A) =>
        new(self, selfStatus, members, unreachable ?? [], observedBy ?? [], leader);

    [Fact]
    public void Members_are_sorted_by_address_with_uid_as_string_and_sorted_roles()
    {
        var view = MembershipView.Members(Snapshot(
        [
            new MemberSnapshot(C, 3, "Up", ["z", "a"], 2),
            new MemberSnapshot(A, -7, "Up", ["lockstep"], 0),
            new MemberSnapshot(B, 2, "Joining", [], 1),
        ]));

        Assert.Equal([A, B, C], view.Members.Select(m => m.Node));
        Assert.Equal("-7", view.Members[0].NodeUid);
        Assert.Equal(["a", "z"], view.Members[2].Roles);
        Assert.Equal("Joining", view.Members[1].Status);
        Assert.Equal(A, view.SelfNode);
        Assert.Equal(A, view.Leader);
    }

    [Fact]
    public void Oldest_counts_only_Up_members_per_role_too()
    {
        var view = MembershipView.Members(Snapshot(
        [
            new MemberSnapshot(A, 1, "Leaving", ["lockstep", "gateway"], 0),
            new MemberSnapshot(B, 2, "Up", ["lockstep"], 1),
            new MemberSnapshot(C, 3, "Up", ["lockstep", "gateway"], 2),
        ]));

        Assert.Equal(B, view.Oldest);
        Assert.Equal(B, view.OldestPerRole["lockstep"]);
        Assert.Equal(C, view.OldestPerRole["gateway"]);
    }

    [Fact]
    public void No_Up_member_means_no_oldest()
    {
        var view = MembershipView.Members(Snapshot([new MemberSnapshot(A, 1, "Joining", ["lockstep"], 0)], leader: null));

        Assert.Null(view.Oldest);
        Assert.Null(view.Leader);
        Assert.Empty(view.OldestPerRole);
    }

    [Fact]
    public void Unreachable_members_carry_their_observers_and_unknown_observers_give_an_empty_list()
    {
        var view = MembershipView.Members(Snapshot(
            [new MemberSnapshot(A, 1, "Up", [], 0), new MemberSnapshot(B, 2, "Up", [], 1), new MemberSnapshot(C, 3, "Up", [], 2)],
            unreachable: [C, B],
            observedBy: new() { [B] = [C, A] }));

        Assert.Equal(2, view.Unreachable.Count);
        Assert.Equal(new ClusterUnreachableMember(B, [A, C]).Node, view.Unreachable[0].Node);
        Assert.Equal([A, C], view.Unreachable[0].ObservedBy);
        Assert.Equal(C, view.Unreachable[1].Node);
        Assert.Empty(view.Unreachable[1].ObservedBy);
        Assert.Equal(2, MembershipView.UnreachableCount(Snapshot([], unreachable: [C, B], observedBy: new() { [B] = [A] })));
    }

    [Fact]
    public void Json_has_Akka_Managements_field_names()
    {
        var view = MembershipView.Members(Snapshot(
            [new MemberSnapshot(A, 1, "Up", ["lockstep"], 0), new MemberSnapshot(B, 2, "Up", ["lockstep"], 1)],
            unreachable: [B],
            observedBy: new() { [B] = [A] }));

        using var json = JsonDocument.Parse(JsonSerializer.Serialize(view, ManagementJson.Options));
        var root = json.RootElement;
        Assert.Equal(["selfNode", "members", "unreachable", "leader", "oldest", "oldestPerRole"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal(["node", "nodeUid", "status", "roles"], root.GetProperty("members")[0].EnumerateObject().Select(p => p.Name));
        Assert.Equal(JsonValueKind.String, root.GetProperty("members")[0].GetProperty("nodeUid").ValueKind);
        Assert.Equal(["node", "observedBy"], root.GetProperty("unreachable")[0].EnumerateObject().Select(p => p.Name));
        Assert.Equal(A, root.GetProperty("oldestPerRole").GetProperty("lockstep").GetString());
    }

    [Theory]
    [InlineData(B)]
    [InlineData("127.0.0.1:4055")]
    [InlineData("akka.tcp%3A%2F%2Flockstep%40127.0.0.1%3A4055")]
    [InlineData("akka.tcp://lockstep@127.0.0.1:4055/")]
    public void Find_accepts_full_encoded_and_host_port_addresses(string address)
    {
        var snapshot = Snapshot([new MemberSnapshot(A, 1, "Up", [], 0), new MemberSnapshot(B, 2, "Up", [], 1)]);

        Assert.Equal(B, MembershipView.Find(snapshot, address)?.Address);
    }

    [Theory]
    [InlineData("127.0.0.1:4099")]
    [InlineData("akka.tcp://other@127.0.0.1:4055")]
    [InlineData("")]
    public void Find_returns_null_for_strangers(string address) =>
        Assert.Null(MembershipView.Find(Snapshot([new MemberSnapshot(B, 2, "Up", [], 0)]), address));

    [Theory]
    [InlineData("Down", MemberOperation.Down)]
    [InlineData("down", MemberOperation.Down)]
    [InlineData(" LEAVE ", MemberOperation.Leave)]
    [InlineData("Join", null)]
    [InlineData("", null)]
    [InlineData(null, null)]
    public void Operations_parse_case_insensitively(string? text, MemberOperation? expected) =>
        Assert.Equal(expected, MembershipView.ParseOperation(text));

    [Fact]
    public void Mutation_answers_use_Akka_Managements_wording()
    {
        Assert.Equal("Downing " + B, MembershipView.Accepted(MemberOperation.Down, B).Message);
        Assert.Equal("Leaving " + B, MembershipView.Accepted(MemberOperation.Leave, B).Message);
    }

    [Theory]
    [InlineData("Up", true)]
    [InlineData("Joining", false)]
    [InlineData("WeaklyUp", false)]
    [InlineData("Leaving", false)]
    [InlineData("Removed", false)]
    public void Ready_only_when_self_is_Up(string status, bool ready) =>
        Assert.Equal(ready, MembershipView.IsReady(Snapshot([], selfStatus: status)));

    [Fact]
    public void Counts_by_status_list_every_status_with_zeros()
    {
        var counts = MembershipView.CountByStatus(Snapshot(
            [new MemberSnapshot(A, 1, "Up", [], 0), new MemberSnapshot(B, 2, "Up", [], 1), new MemberSnapshot(C, 3, "Leaving", [], 2)]));

        Assert.Equal(2, counts["Up"]);
        Assert.Equal(1, counts["Leaving"]);
        Assert.Equal(0, counts["Joining"]);
        Assert.Equal(MembershipView.Statuses.Count, counts.Count);
    }

    [Fact]
    public void Shards_keep_the_local_regions_and_sort_nodes_and_shards()
    {
        var details = MembershipView.Shards(
            new Dictionary<string, int> { ["7"] = 2, ["10"] = 1 },
            new Dictionary<string, IReadOnlyDictionary<string, int>>
            {
                [B] = new Dictionary<string, int> { ["3"] = 5 },
                [A] = new Dictionary<string, int> { ["7"] = 2, ["10"] = 1 },
            },
            new Dictionary<string, IReadOnlyList<string>> { [C] = ["9"] });

        Assert.Equal(["10", "7"], details.Regions.Select(r => r.ShardId));
        Assert.Equal(2, details.Regions[1].NumEntities);
        Assert.Equal([A, B, C], details.Nodes.Select(n => n.Node));
        Assert.Empty(details.Nodes[2].Shards);
        Assert.Equal(["9"], details.Nodes[2].Failed);

        using var json = JsonDocument.Parse(JsonSerializer.Serialize(details, ManagementJson.Options));
        Assert.Equal(["shardId", "numEntities"], json.RootElement.GetProperty("regions")[0].EnumerateObject().Select(p => p.Name));
    }
}
