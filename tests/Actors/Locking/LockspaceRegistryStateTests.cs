using System.Collections.Immutable;
using Akka.Actor;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

public sealed class LockspaceRegistryStateTests
{
    [Fact]
    public void Slots_start_at_one_and_a_node_id_keeps_its_slot()
    {
        var s = LockspaceRegistryState.Empty;
        (var r1, s) = Joined(s, "ls", 0, "a");
        (var r2, s) = Joined(s, "ls", 0, "b");
        var (again, unchanged) = s.Join("ls", 0, "a", 64);
        Assert.Equal(new LockspaceJoined("ls", 64, 1), r1);
        Assert.Equal(new LockspaceJoined("ls", 64, 2), r2);
        Assert.Equal(new LockspaceJoined("ls", 64, 1), again);
        Assert.Null(unchanged);
    }

    [Fact]
    public void Lvb_length_is_fixed_by_the_first_join_and_bad_input_is_rejected()
    {
        var (_, s) = Joined(LockspaceRegistryState.Empty, "ls", 32, "a");
        Assert.IsType<LockspaceRejected>(s.Join("ls", 64, "b", 64).Reply);
        Assert.Equal(new LockspaceJoined("ls", 32, 2), s.Join("ls", 0, "b", 64).Reply);
        Assert.IsType<LockspaceRejected>(s.Join("other", 12, "b", 64).Reply);
        Assert.IsType<LockspaceRejected>(s.Join("a/b", 0, "b", 64).Reply);
        Assert.IsType<LockspaceRejected>(s.Join("x", 0, " ", 64).Reply);
    }

    [Fact]
    public void Same_table_ignores_order_but_not_slots_or_lvb_length()
    {
        var t = new LockspaceTable([new LockspaceInfo("x", 64, [new LockspaceSlot("a", 1), new LockspaceSlot("b", 2)]), new LockspaceInfo("y", 8, [])]);
        var reordered = new LockspaceTable([new LockspaceInfo("y", 8, []), new LockspaceInfo("x", 64, [new LockspaceSlot("b", 2), new LockspaceSlot("a", 1)])]);
        Assert.True(LockspaceRegistryState.SameTable(t, reordered));
        Assert.False(LockspaceRegistryState.SameTable(t, new LockspaceTable([new LockspaceInfo("x", 64, [new LockspaceSlot("a", 2), new LockspaceSlot("b", 1)]), new LockspaceInfo("y", 8, [])])));
        Assert.False(LockspaceRegistryState.SameTable(t, new LockspaceTable([new LockspaceInfo("x", 32, [new LockspaceSlot("a", 1), new LockspaceSlot("b", 2)]), new LockspaceInfo("y", 8, [])])));
        Assert.False(LockspaceRegistryState.SameTable(t, new LockspaceTable([t.Lockspaces[0]])));
    }

    [Fact]
    public void Merge_keeps_slots_already_handed_out_on_both_sides()
    {
        var (_, mine) = Joined(LockspaceRegistryState.Empty, "ls", 0, "a");
        var theirs = new LockspaceTable([new LockspaceInfo("ls", 64, [new LockspaceSlot("a", 1), new LockspaceSlot("c", 2)]), new LockspaceInfo("other", 8, [new LockspaceSlot("c", 1)])]);
        var merged = mine.Merge(theirs);
        Assert.Equal(["a:1", "c:2"], merged.Find("ls")!.Slots.Select(s => $"{s.NodeId}:{s.Slot}"));
        Assert.Equal(8, merged.Find("other")!.LvbLength);
        Assert.Equal(new LockspaceJoined("ls", 64, 3), merged.Join("ls", 0, "d", 64).Reply);
    }

    [Fact]
    public void New_shards_go_to_the_asking_region_and_are_never_rebalanced()
    {
        var strategy = new RequesterShardAllocationStrategy();
        var a = new FakeRef("a");
        var b = new FakeRef("b");
        var allocations = ImmutableDictionary<IActorRef, IImmutableList<string>>.Empty
            .Add(a, ImmutableList.Create("1", "2"))
            .Add(b, ImmutableList<string>.Empty);
        Assert.Same(a, strategy.AllocateShard(a, "3", allocations).Result);
        Assert.Same(b, strategy.AllocateShard(b, "4", allocations).Result);
        Assert.Same(b, strategy.AllocateShard(new FakeRef("proxy"), "5", allocations).Result);
        Assert.Empty(strategy.Rebalance(allocations, ImmutableHashSet<string>.Empty).Result);
    }

    [Fact]
    public void Names_are_checked_before_they_become_entity_ids()
    {
        Assert.Equal("ls/some/resource", LockNames.EntityId("ls", "some/resource"));
        Assert.True(LockNames.TrySplit("ls/some/resource", out var ls, out var res));
        Assert.Equal(("ls", "some/resource"), (ls, res));
        Assert.Throws<ArgumentException>(() => LockNames.EntityId("ls", new string('x', 65)));
        Assert.Throws<ArgumentException>(() => LockNames.EntityId("ls", "é" + new string('x', 63)));
        Assert.Throws<ArgumentException>(() => LockNames.EntityId("", "r"));
        Assert.False(LockNames.TrySplit("no-slash", out _, out _));
    }

    private static (ILockProtocol Reply, LockspaceRegistryState State) Joined(LockspaceRegistryState s, string name, int lvb, string node)
    {
        var (reply, changed) = s.Join(name, lvb, node, 64);
        return (reply, changed ?? s);
    }

    private sealed class FakeRef(string name) : MinimalActorRef
    {
        public override ActorPath Path { get; } = new RootActorPath(new Address("akka", "fake")) / name;

        public override IActorRefProvider Provider => throw new NotSupportedException();
    }
}
