namespace Lockstep.Actors.Locking;

/// <summary>Settings of the DLM on one node; bound from the <c>Lockstep:Locking</c> section.</summary>
public sealed class LockingOptions
{
    public const string SectionName = "Lockstep:Locking";

    /// <summary>The stable node id that lock owners and lockspace slots are keyed by.</summary>
    public string NodeId { get; set; } = Environment.MachineName;

    /// <summary>
    /// Shards of the <c>lock</c> region. A shard is mastered where it is first asked for and never
    /// moves while its node lives, so more shards put more resources on the node that uses them
    /// first; each shard costs an entry in the coordinator's replicated state. 512 keeps that state
    /// small while two resources of different users rarely share a shard.
    /// </summary>
    public int ShardCount { get; set; } = 512;

    /// <summary>How long a resource without any lock stays alive (keeping its LVB) before it passivates.</summary>
    public TimeSpan PassivateAfter { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>LVB length of lockspaces created without one.</summary>
    public int DefaultLvbLength { get; set; } = LockResourceState.DefaultLvbLength;

    /// <summary>
    /// Keep the lockspace slot table in the journal too, so slots survive a whole-cluster restart.
    /// Off only where no real journal exists or where <c>akka.actor.serialize-messages = on</c> would
    /// drop the journal's own local messages (in-process tests); then the table lives in
    /// DistributedData alone and is lost when every node stops.
    /// </summary>
    public bool PersistSlots { get; set; } = true;

    /// <summary>
    /// Self-fencing: a node that has not seen a reachable majority for this long cancels every lock
    /// handle's LostToken and refuses new requests. Must be shorter than the split-brain resolver's
    /// <c>stable-after</c> (1 s by default, <c>Lockstep:Cluster:StableAfter</c>), so the minority has
    /// given up its locks before the majority downs it and recovers its slot.
    /// </summary>
    public TimeSpan FenceTimeout { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// How lock commands, completions and basts travel between nodes: <see cref="LockTransport.Reliable"/> (default) on
    /// the reliable messaging layer, or <see cref="LockTransport.Direct"/> as plain Akka.Remote messages (at most once;
    /// kept to compare). The same on every node. Recovery's own messages are direct either way (retried, idempotent).
    /// </summary>
    public LockTransport Transport { get; set; } = LockTransport.Reliable;

    /// <summary>How long joining a lockspace or listing resources may take before it fails.</summary>
    public TimeSpan AskTimeout { get; set; } = TimeSpan.FromSeconds(10);
}
