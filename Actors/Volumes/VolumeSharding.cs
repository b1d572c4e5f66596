using Akka.Cluster.Sharding;
using Lockstep.Contracts;

namespace Lockstep.Actors.Volumes;

/// <summary>Region names and message extractors of the volume subsystem.</summary>
public static class VolumeSharding
{
    /// <summary>Region of the Volume entities (entity id = volume name).</summary>
    public const string VolumeRegion = "volume";

    /// <summary>Region of the single name registry entity.</summary>
    public const string RegistryRegion = "volume-registry";

    /// <summary>
    /// 32 shards: a cluster has a handful of nodes and tens of volumes; 32 spreads them evenly over up to ~10 nodes
    /// while each shard stays cheap to move. The registry has one entity, so one shard.
    /// </summary>
    public const int VolumeShards = 32;

    /// <summary>Extractor for both regions: every message names its entity through <see cref="IWithEntityId"/>.</summary>
    public sealed class Extractor(int shards) : HashCodeMessageExtractor(shards)
    {
        /// <inheritdoc />
        public override string? EntityId(object message) => (message as IWithEntityId)?.EntityId;
    }
}
