using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Lockstep.Hosting.Volumes;

namespace Lockstep.Hosting.Tests.Volumes;

/// <summary>The DLM lockspace registry's slot rules (<see cref="LockspaceRegistryState"/>) shared by the nodes of one test, without a cluster.</summary>
internal sealed class LockspaceRegistry
{
    private readonly Lock _lock = new();
    private LockspaceRegistryState _state = LockspaceRegistryState.Empty;

    public int Join(string lockspace, string nodeId)
    {
        lock (_lock)
        {
            var (reply, changed) = _state.Join(lockspace, 0, nodeId, 64);
            _state = changed ?? _state;
            return reply is LockspaceJoined joined ? joined.Slot : throw new ArgumentException(((LockspaceRejected)reply).Reason);
        }
    }
}

/// <summary>One node's view of <see cref="LockspaceRegistry"/>: what the DLM answers a node that joins a lockspace.</summary>
internal sealed class RegistrySlotSource(LockspaceRegistry registry, string nodeId) : INodeSlotSource
{
    public string NodeId => nodeId;

    public Task<int> LockspaceSlotAsync(string lockspace, CancellationToken cancellation) => Task.FromResult(registry.Join(lockspace, nodeId));
}
