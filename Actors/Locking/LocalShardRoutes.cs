namespace Lockstep.Actors.Locking;

/// <summary>
/// Per lock shard: whether this node's lock commands to it may skip the reliable layer and go to the local region by a
/// plain in-process <c>Tell</c>.
/// <para>
/// A shard is known to live here once one of its resources answered this node's lock client in process (see
/// <see cref="ShardIsLocal"/>). Lock shards do not move while their node lives (no rebalance; a hand-off happens only when
/// this node leaves, and its client with it), and a local <c>Tell</c> cannot be lost while the node lives, so for such a
/// shard the layer adds nothing but its cost (in process a same-node lock+unlock through the layer ran at ~¼ of a direct
/// one; docs/dlm.md). The switch waits until every command this node sent to the shard through the layer has finished:
/// a layer call finishes after its handler ran, and the handler tells the command to the same local region, so a
/// <c>Tell</c> made afterwards is queued behind it and one node's commands to a resource keep their send order (which
/// the early-answered unlock relies on).
/// </para>
/// Thread-safe: the lock client sends on its own thread, the layer reports finished calls on the outbox's.
/// </summary>
public sealed class LocalShardRoutes
{
    private readonly object _gate = new();
    private readonly Dictionary<string, Route> _shards = new(StringComparer.Ordinal);

    /// <summary>Shards whose commands go by plain <c>Tell</c> now.</summary>
    public int DirectShards
    {
        get
        {
            lock (_gate)
            {
                return _shards.Values.Count(r => r.Direct);
            }
        }
    }

    /// <summary>Whether commands to <paramref name="shardId"/> go by plain <c>Tell</c> now.</summary>
    public bool IsDirect(string shardId)
    {
        lock (_gate)
        {
            return _shards.TryGetValue(shardId, out var route) && route.Direct;
        }
    }

    /// <summary>
    /// Decides how the next command to <paramref name="shardId"/> travels. True: by plain <c>Tell</c>. False: through the
    /// layer; the caller must call <see cref="LayerCallFinished"/> once for it when the call is over (done or failed).
    /// </summary>
    public bool TryDirect(string shardId)
    {
        lock (_gate)
        {
            var route = RouteOf(shardId);
            if (route.Direct || (route.Local && route.LayerCalls == 0))
            {
                route.Direct = true;
                return true;
            }

            route.LayerCalls++;
            return false;
        }
    }

    /// <summary>A command that <see cref="TryDirect"/> sent through the layer is over.</summary>
    /// <exception cref="InvalidOperationException">No layer call of that shard was open (a caller bug).</exception>
    public void LayerCallFinished(string shardId)
    {
        lock (_gate)
        {
            if (!_shards.TryGetValue(shardId, out var route) || route.LayerCalls == 0)
            {
                throw new InvalidOperationException($"no layer call to lock shard {shardId} is open");
            }

            route.LayerCalls--;
        }
    }

    /// <summary>A resource of <paramref name="shardId"/> answered this node's client in process: the shard lives here.</summary>
    public void ShardIsLocal(string shardId)
    {
        lock (_gate)
        {
            RouteOf(shardId).Local = true;
        }
    }

    private Route RouteOf(string shardId)
    {
        if (!_shards.TryGetValue(shardId, out var route))
        {
            _shards[shardId] = route = new Route();
        }

        return route;
    }

    private sealed class Route
    {
        public bool Local;
        public bool Direct;
        public int LayerCalls;
    }
}
