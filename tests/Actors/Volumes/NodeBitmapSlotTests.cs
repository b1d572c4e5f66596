using Lockstep.Actors.BlockIo;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Volumes;
using Lockstep.Contracts.Locking;
using Lockstep.Contracts.Volumes;
using Xunit;

namespace Lockstep.Actors.Tests.Volumes;

/// <summary>Which bitmap slot a node writes: its slot in the volume's lockspace − 1, refused past max nodes.</summary>
public sealed class NodeBitmapSlotTests
{
    private static readonly Guid VolumeId = new("6f1c2a9e-0b7d-4e55-9a10-3c2d4e5f6071");

    private static VolumeDescriptor Volume(int maxNodes) =>
        new("vm1", VolumeId, new VolumeGeometry(1L << 30, 1 << 20, maxNodes), [], 1);

    [Fact]
    public void The_lockspace_is_named_by_the_volume_uuid_and_is_a_valid_lockspace_name()
    {
        var name = NodeBitmapSlot.LockspaceName(VolumeId);
        Assert.Equal("volume-6f1c2a9e0b7d4e559a103c2d4e5f6071", name);
        Assert.Null(LockNames.LockspaceError(name));
        Assert.NotEqual(name, NodeBitmapSlot.LockspaceName(Guid.NewGuid()));
    }

    [Theory]
    [InlineData(1, 8, 0)]
    [InlineData(2, 8, 1)]
    [InlineData(8, 8, 7)]
    [InlineData(1, 1, 0)]
    [InlineData(64, 64, 63)]
    public void The_bitmap_slot_is_the_lockspace_slot_minus_one(int lockspaceSlot, int maxNodes, int expected) =>
        Assert.Equal(expected, NodeBitmapSlot.FromLockspaceSlot(Volume(maxNodes), "n1", lockspaceSlot));

    [Theory]
    [InlineData(9, 8)]
    [InlineData(2, 1)]
    [InlineData(17, 8)]
    public void A_slot_past_max_nodes_is_refused_with_the_reason_instead_of_wrapping(int lockspaceSlot, int maxNodes)
    {
        var refused = Assert.Throws<BlockIoException>(() => NodeBitmapSlot.FromLockspaceSlot(Volume(maxNodes), "n9", lockspaceSlot));
        Assert.Equal(BlockIoError.Unavailable, refused.Error);
        Assert.Contains($"volume 'vm1' has bitmap slots for {maxNodes} node(s)", refused.Message, StringComparison.Ordinal);
        Assert.Contains($"node 'n9' holds slot {lockspaceSlot}", refused.Message, StringComparison.Ordinal);
        Assert.Contains("larger --max-nodes", refused.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    public void Lockspace_slots_below_one_are_a_programming_error(int lockspaceSlot) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => NodeBitmapSlot.FromLockspaceSlot(Volume(8), "n1", lockspaceSlot));

    [Fact]
    public void With_the_registry_rules_nodes_get_distinct_slots_that_survive_a_rejoin_and_the_ninth_of_eight_is_refused()
    {
        var volume = Volume(8);
        var lockspace = NodeBitmapSlot.LockspaceName(VolumeId);
        var registry = LockspaceRegistryState.Empty;
        int Join(string node)
        {
            var (reply, changed) = registry.Join(lockspace, 0, node, 64);
            registry = changed ?? registry;
            return Assert.IsType<LockspaceJoined>(reply).Slot;
        }

        var slots = Enumerable.Range(1, 8).Select(i => NodeBitmapSlot.FromLockspaceSlot(volume, $"n{i}", Join($"n{i}"))).ToArray();
        Assert.Equal(Enumerable.Range(0, 8), slots);
        // A restart joins again with the same node id: same slot.
        Assert.Equal(slots[2], NodeBitmapSlot.FromLockspaceSlot(volume, "n3", Join("n3")));
        Assert.Throws<BlockIoException>(() => NodeBitmapSlot.FromLockspaceSlot(volume, "n9", Join("n9")));
    }
}
