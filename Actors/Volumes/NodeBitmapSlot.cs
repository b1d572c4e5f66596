using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Volumes;

namespace Lockstep.Actors.Volumes;

/// <summary>
/// Which bitmap slot of a volume's legs this node writes, as md-cluster does it: every volume has its own DLM
/// lockspace, named after the volume's UUID; the lockspace registry hands each node id a slot 1..N there, the same
/// one after every restart, distinct between nodes; the node's bitmap slot is that slot − 1 (md-cluster's
/// <c>slot_number = dlm_slot − 1</c>). A volume has <see cref="VolumeGeometry.MaxNodes"/> bitmap slots, so the
/// max-nodes-th + 1 node to join a volume's lockspace gets no bitmap slot: it must not open the volume (wrapping
/// around would share a slot with another node, whose crash recovery would then clear this node's bits).
/// </summary>
public static class NodeBitmapSlot
{
    /// <summary>Prefix of a volume's lockspace name (<c>volume-</c> + 32 hex digits of the volume UUID, 39 characters).</summary>
    public const string LockspacePrefix = "volume-";

    /// <summary>
    /// The volume's lockspace. Named by the UUID, not the volume name, so that a volume deleted and created again
    /// under the same name (new UUID, freshly formatted legs) starts with a fresh slot table.
    /// </summary>
    public static string LockspaceName(Guid volumeId) => LockspacePrefix + volumeId.ToString("N");

    /// <summary>
    /// The 0-based bitmap slot for this node's 1-based <paramref name="lockspaceSlot"/> in the volume's lockspace.
    /// Throws <see cref="BlockIoException"/> (<see cref="BlockIoError.Unavailable"/>) when the volume has no such
    /// slot: the volume cannot be opened by this node.
    /// </summary>
    public static int FromLockspaceSlot(VolumeDescriptor volume, string nodeId, int lockspaceSlot)
    {
        ArgumentNullException.ThrowIfNull(volume);
        if (lockspaceSlot < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(lockspaceSlot), lockspaceSlot, "lockspace slots start at 1");
        }

        var index = lockspaceSlot - 1;
        var maxNodes = volume.Geometry.MaxNodes;
        if (index >= maxNodes)
        {
            throw new BlockIoException(BlockIoError.Unavailable,
                $"volume '{volume.Name}' has bitmap slots for {maxNodes} node(s) (--max-nodes {maxNodes}), and node '{nodeId}' holds slot {lockspaceSlot} "
                + $"in its lockspace {LockspaceName(volume.VolumeId)} (bitmap slot {index}): the first {maxNodes} node(s) to open this volume hold its slots; "
                + "this node cannot open it (create the volume with a larger --max-nodes)");
        }

        return index;
    }
}
