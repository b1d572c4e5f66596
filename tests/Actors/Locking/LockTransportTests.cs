using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Lockstep.Contracts.Messaging;
using Xunit;
using static Lockstep.Contracts.Locking.LockMode;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>The DLM's channels on the reliable layer: routing of holder envelopes, and the crash rule for repeats.</summary>
public sealed class LockTransportTests
{
    private const long Id = 77;
    private const string Resource = "ls/counter";
    private static readonly LockOwner Owner = new("n1", 1, Guid.NewGuid());

    private static LockDump Lock(long id, bool granted, LockMode mode, LockMode requested) =>
        new(id, "n1", 1, Owner.Session, granted, mode, requested, LockFlags.None, false);

    private static LockResourceDump Dump(IReadOnlyList<LockDump>? granted = null, IReadOnlyList<LockDump>? converting = null, IReadOnlyList<LockDump>? waiting = null) =>
        new(Resource, "n2", 64, new byte[64], 0, false, granted ?? [], converting ?? [], waiting ?? []);

    private static LockResourceDump Empty => Dump();

    [Fact]
    public void Holder_envelopes_of_a_lock_channel_go_to_the_shard_of_the_resources_they_carry()
    {
        var extractor = new LockMessageExtractor(512);
        var shard = extractor.ShardId(Resource, null);
        var channel = MessagingChannel.Format(LockChannels.CommandEntityType(shard), "akka.tcp://lockstep@10.0.0.1:4053", 9);
        var payload = new SerializedPayload(1, "", [1]);
        object[] envelopes =
        [
            new HolderDeliver(channel, 1, 1, 1, Guid.Empty, false, 1, Resource, payload),
            new HolderDrop(channel, 1),
            new HolderBatch(channel, [], []),
            new PurgeChannel(channel),
            new GetHolderStats(channel),
        ];
        foreach (var envelope in envelopes)
        {
            Assert.Equal(channel, extractor.EntityId(envelope));
            Assert.Equal(shard, extractor.ShardId(extractor.EntityId(envelope)!, envelope));
        }

        // The resource's own messages still hash by resource id.
        Assert.Equal(shard, extractor.ShardId(extractor.EntityId(new DumpLockResource(Resource))!, new DumpLockResource(Resource)));
        Assert.True(LockChannels.TryHolderShard(channel, out var parsed));
        Assert.Equal(shard, parsed);
    }

    [Theory]
    [InlineData("ls/counter")]
    [InlineData("lock#")]
    [InlineData("lock#5")]
    [InlineData("lock#|a|1")]
    [InlineData("probe-1|a|1")]
    [InlineData(null)]
    public void Resource_ids_and_malformed_ids_are_not_holders(string? entityId) =>
        Assert.False(LockChannels.TryHolderShard(entityId, out _));

    [Fact]
    public void A_repeated_request_goes_on_only_if_the_lock_is_not_on_the_resource()
    {
        var request = new LockRequest(Resource, Id, Owner, EX, LockFlags.None, 64, 0);
        Assert.True(RepeatedLockCommands.ShouldApply(request, Empty));
        Assert.False(RepeatedLockCommands.ShouldApply(request, Dump(granted: [Lock(Id, true, EX, EX)])));
        Assert.False(RepeatedLockCommands.ShouldApply(request, Dump(waiting: [Lock(Id, false, NL, EX)])));
        Assert.True(RepeatedLockCommands.ShouldApply(request, Dump(granted: [Lock(Id + 1, true, EX, EX)])));
    }

    [Fact]
    public void A_repeated_conversion_goes_on_only_to_a_granted_lock_not_yet_in_its_mode()
    {
        var convert = new ConvertLock(Resource, Id, PR, LockFlags.None, null, 0);

        // Absent: recovery re-asserts the lock and re-sends a still-pending conversion to the rebuilt resource.
        Assert.False(RepeatedLockCommands.ShouldApply(convert, Empty));

        // Already applied: granted in the mode, or waiting on the convert queue.
        Assert.False(RepeatedLockCommands.ShouldApply(convert, Dump(granted: [Lock(Id, true, PR, PR)])));
        Assert.False(RepeatedLockCommands.ShouldApply(convert, Dump(granted: [Lock(Id + 1, true, EX, EX)], converting: [Lock(Id, true, NL, PR)])));

        // Not applied yet: granted in another mode.
        Assert.True(RepeatedLockCommands.ShouldApply(convert, Dump(granted: [Lock(Id, true, EX, EX)])));
    }

    [Fact]
    public void Repeated_unlocks_and_cancels_always_go_on_so_a_waiting_caller_gets_an_answer()
    {
        var unlock = new UnlockLock(Resource, Id, LockFlags.None, null);
        var cancel = new CancelLock(Resource, Id);
        foreach (var resource in new[] { Empty, Dump(granted: [Lock(Id, true, EX, EX)]), Dump(waiting: [Lock(Id, false, NL, EX)]) })
        {
            Assert.True(RepeatedLockCommands.ShouldApply(unlock, resource));
            Assert.True(RepeatedLockCommands.ShouldApply(cancel, resource));
        }
    }
}
