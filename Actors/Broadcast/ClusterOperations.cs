using System.Collections.Concurrent;
using Akka.Actor;
using Akka.Cluster;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Broadcast;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Broadcast;

/// <summary>A member as clvmd's cluster operations name it: node id (csid) and name (its address).</summary>
public sealed record ClusterNode(string NodeId, string Name, bool Up);

/// <summary>A member came up (joined, Up) or went down (removed).</summary>
public sealed record ClusterNodeEvent(ClusterNode Node, bool Up);

/// <summary>
/// clvmd's <c>cluster_ops</c> (seed 002) on Lockstep: send to all with one total order, node up/down callbacks,
/// quorum, node name ↔ node id, the cluster name, and synchronous locks in any mode (PW included).
/// </summary>
public interface ICluster
{
    string ClusterName { get; }

    string LocalNodeId { get; }

    /// <summary>This node is Up and sees a majority of the members reachable.</summary>
    bool IsQuorate { get; }

    IReadOnlyList<ClusterNode> Nodes { get; }

    /// <summary>Called on a thread-pool thread as members come up and go down.</summary>
    event Action<ClusterNodeEvent>? NodeChanged;

    string? NodeName(string nodeId);

    string? NodeId(string nodeName);

    /// <summary>The broadcast: returns once every live node processed <paramref name="message"/> (its round's sequence).</summary>
    Task<long> SendToAllAsync(string stream, ClusterMessage message, CancellationToken cancellationToken = default);

    /// <summary>Takes <paramref name="resource"/> in <paramref name="mode"/> and waits for the grant; returns the lock id for <see cref="SyncUnlockAsync"/>.</summary>
    Task<long> SyncLockAsync(string resource, LockMode mode, LockFlags flags = LockFlags.None, CancellationToken cancellationToken = default);

    /// <summary>Converts a lock taken by <see cref="SyncLockAsync"/> (clvmd converts with LCKF_CONVERT).</summary>
    Task SyncConvertAsync(long lockId, LockMode mode, CancellationToken cancellationToken = default);

    Task SyncUnlockAsync(long lockId);
}

/// <summary>The node's <see cref="ICluster"/>: Akka.Cluster membership, the broadcast and the DLM.</summary>
public sealed class ClusterOperations : ICluster, IDisposable
{
    /// <summary>The lockspace of <see cref="SyncLockAsync"/>'s locks (clvmd's own lockspace).</summary>
    public const string Lockspace = "lockstep-clvmd";

    private readonly Cluster _cluster;
    private readonly BroadcastManager _broadcast;
    private readonly ILockManager _locks;
    private readonly ConcurrentDictionary<long, ILockHandle> _held = new();
    private readonly IActorRef _watcher;
    private readonly SemaphoreSlim _open = new(1, 1);
    private ILockspace? _space;

    public ClusterOperations(ActorSystem system, BroadcastManager broadcast, ILockManager locks)
    {
        _cluster = Cluster.Get(system);
        _broadcast = broadcast;
        _locks = locks;
        _watcher = system.ActorOf(Props.Create(() => new MembershipWatcher(this)));
    }

    public event Action<ClusterNodeEvent>? NodeChanged;

    public string ClusterName => _cluster.System.Name;

    public string LocalNodeId => _locks.NodeId;

    public bool IsQuorate
    {
        get
        {
            var state = _cluster.State;
            var members = state.Members.Where(m => m.Status is MemberStatus.Up or MemberStatus.Leaving).ToList();
            var reachable = members.Count(m => !state.Unreachable.Contains(m));
            return members.Any(m => m.Address == _cluster.SelfAddress) && reachable * 2 > members.Count;
        }
    }

    public IReadOnlyList<ClusterNode> Nodes => _cluster.State.Members.Select(ToNode).OfType<ClusterNode>().ToList();

    public string? NodeName(string nodeId) => Nodes.FirstOrDefault(n => n.NodeId == nodeId)?.Name;

    public string? NodeId(string nodeName) => Nodes.FirstOrDefault(n => n.Name == nodeName)?.NodeId;

    public Task<long> SendToAllAsync(string stream, ClusterMessage message, CancellationToken cancellationToken = default) =>
        _broadcast.BroadcastAsync(stream, message, cancellationToken);

    public async Task<long> SyncLockAsync(string resource, LockMode mode, LockFlags flags = LockFlags.None, CancellationToken cancellationToken = default)
    {
        var space = await SpaceAsync(cancellationToken);
        var handle = await space.LockAsync(resource, mode, flags, cancellationToken: cancellationToken);
        _held[handle.LockId] = handle;
        return handle.LockId;
    }

    public Task SyncConvertAsync(long lockId, LockMode mode, CancellationToken cancellationToken = default) =>
        Held(lockId).ConvertAsync(mode, cancellationToken: cancellationToken);

    public async Task SyncUnlockAsync(long lockId)
    {
        var handle = Held(lockId);
        await handle.UnlockAsync();
        _held.TryRemove(lockId, out _);
    }

    /// <summary>
    /// clvmd's sequence for a change every node must see at once: SUSPEND on all → <paramref name="change"/> →
    /// REFRESH on all → RESUME on all. When the change (or the refresh) fails, RESUME is still sent, so no node stays
    /// suspended; the failure is rethrown.
    /// </summary>
    public async Task RunSuspendedAsync(string stream, string volume, Func<CancellationToken, Task> change, CancellationToken cancellationToken = default)
    {
        await SendToAllAsync(stream, new VolumeCommandMessage(ClusterMessageType.Suspend, volume), cancellationToken);
        try
        {
            await change(cancellationToken);
            await SendToAllAsync(stream, new VolumeCommandMessage(ClusterMessageType.Refresh, volume), cancellationToken);
        }
        finally
        {
            await SendToAllAsync(stream, new VolumeCommandMessage(ClusterMessageType.Resume, volume), CancellationToken.None);
        }
    }

    public void Dispose()
    {
        _watcher.Tell(PoisonPill.Instance);
        _ = _space?.DisposeAsync().AsTask();
    }

    private ILockHandle Held(long lockId) =>
        _held.TryGetValue(lockId, out var handle) ? handle : throw new ArgumentException($"lock {lockId:x} is not held through this node's cluster operations", nameof(lockId));

    private async Task<ILockspace> SpaceAsync(CancellationToken cancellationToken)
    {
        if (_space is { } open)
        {
            return open;
        }

        await _open.WaitAsync(cancellationToken);
        try
        {
            return _space ??= await _locks.OpenLockspaceAsync(Lockspace, cancellationToken: cancellationToken);
        }
        finally
        {
            _open.Release();
        }
    }

    private static ClusterNode? ToNode(Member member) =>
        NodeIdRole.TryFind(member.Roles, out var id) ? new ClusterNode(id, $"{member.Address.Host}:{member.Address.Port}", member.Status == MemberStatus.Up) : null;

    private void Raise(Member member, bool up)
    {
        if (ToNode(member) is { } node)
        {
            NodeChanged?.Invoke(new ClusterNodeEvent(node with { Up = up }, up));
        }
    }

    /// <summary>Turns membership events into <see cref="NodeChanged"/> callbacks.</summary>
    private sealed class MembershipWatcher : ReceiveActor
    {
        public MembershipWatcher(ClusterOperations owner)
        {
            Receive<ClusterEvent.MemberUp>(up => Task.Run(() => owner.Raise(up.Member, true)));
            Receive<ClusterEvent.MemberRemoved>(removed => Task.Run(() => owner.Raise(removed.Member, false)));
            Receive<ClusterEvent.IClusterDomainEvent>(_ => { });
        }

        protected override void PreStart() =>
            Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.MemberUp), typeof(ClusterEvent.MemberRemoved));

        protected override void PostStop() => Cluster.Get(Context.System).Unsubscribe(Self);
    }
}
