using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster.Sharding;
using Lockstep.Contracts;

namespace Lockstep.Actors.Locking;

/// <summary>
/// Routes lock messages to <c>{lockspace}/{resource}</c> entities, hashed over <see cref="LockingOptions.ShardCount"/>
/// shards, and the reliable layer's envelopes of a <c>lock#S</c> channel to its holder entity in shard S (the shard of
/// the resources it carries commands for, <see cref="LockChannels"/>).
/// </summary>
public sealed class LockMessageExtractor(int shardCount) : HashCodeMessageExtractor(shardCount)
{
    public override string? EntityId(object message) => message switch
    {
        IWithEntityId withId => withId.EntityId,
        _ => null,
    };

    public override string ShardId(string entityId, object? messageHint = null) =>
        LockChannels.TryHolderShard(entityId, out var shard) ? shard : base.ShardId(entityId, messageHint);
}

/// <summary>
/// fs/dlm-style mastering: a new shard goes to the node whose region first asks for it (so an
/// uncontended lock is a same-node message), and shards are never rebalanced (a move would be a
/// remaster). Only if the asking region is not a registered region does the shard go to the region
/// with the fewest shards.
/// </summary>
public sealed class RequesterShardAllocationStrategy : IShardAllocationStrategy
{
    public Task<IActorRef> AllocateShard(IActorRef requester, string shardId, IImmutableDictionary<IActorRef, IImmutableList<string>> currentShardAllocations)
    {
        if (currentShardAllocations.ContainsKey(requester) || currentShardAllocations.Count == 0)
        {
            return Task.FromResult(requester);
        }

        var fewest = currentShardAllocations.OrderBy(kv => kv.Value.Count).ThenBy(kv => kv.Key.Path.ToString(), StringComparer.Ordinal).First().Key;
        return Task.FromResult(fewest);
    }

    public Task<IImmutableSet<string>> Rebalance(IImmutableDictionary<IActorRef, IImmutableList<string>> currentShardAllocations, IImmutableSet<string> rebalanceInProgress) =>
        Task.FromResult<IImmutableSet<string>>(ImmutableHashSet<string>.Empty);
}
