using Lockstep.Actors.Locking;

namespace Lockstep.Hosting.Volumes;

/// <summary>Where a node learns its slot in a lockspace (1..N, stable per node id); the DLM in a node, a stand-in in tests.</summary>
public interface INodeSlotSource
{
    /// <summary>This node's configured id (for messages).</summary>
    string NodeId { get; }

    /// <summary>Joins <paramref name="lockspace"/> if needed and returns this node's slot there (1-based).</summary>
    Task<int> LockspaceSlotAsync(string lockspace, CancellationToken cancellation);
}

/// <summary>
/// The node's slot from the DLM's lockspace registry: joins the lockspace (idempotent: the same node id gets its slot
/// back), reads the slot and closes the session again. Nothing is locked; the cluster recovery work will keep a
/// session open for the bitmap lock.
/// </summary>
public sealed class DlmNodeSlotSource(ILockManager locks) : INodeSlotSource
{
    /// <inheritdoc />
    public string NodeId => locks.NodeId;

    /// <inheritdoc />
    public async Task<int> LockspaceSlotAsync(string lockspace, CancellationToken cancellation)
    {
        await using var space = await locks.OpenLockspaceAsync(lockspace, 0, cancellation);
        return space.Slot;
    }
}
