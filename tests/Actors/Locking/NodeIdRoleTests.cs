using Lockstep.Actors.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

public sealed class NodeIdRoleTests
{
    [Fact]
    public void The_node_id_round_trips_through_its_role_among_others()
    {
        Assert.True(NodeIdRole.TryFind(["lockstep", NodeIdRole.For("n2"), "other"], out var nodeId));
        Assert.Equal("n2", nodeId);
    }

    [Fact]
    public void Members_without_the_role_or_with_an_empty_id_name_nothing()
    {
        Assert.False(NodeIdRole.TryFind(["lockstep"], out _));
        Assert.False(NodeIdRole.TryFind([NodeIdRole.Prefix], out _));
        Assert.False(NodeIdRole.TryFind([], out _));
    }
}
