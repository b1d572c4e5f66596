using Akka.Cluster.Hosting;
using Akka.Cluster.Hosting.SBR;
using Akka.Hosting;
using Akka.Remote.Hosting;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Membership;
using Lockstep.Actors.Serialization;

namespace Lockstep.Hosting.Node;

/// <summary>Remoting, clustering, split-brain resolver and serialization for one Lockstep node.</summary>
public static class ClusterSetup
{
    /// <summary>The actor system name; part of every member address.</summary>
    public const string SystemName = "lockstep";

    /// <summary>
    /// Failure detection tuned so a SIGKILLed node is unreachable in ~1.3 s and removed in ~3 s
    /// (measured on this machine, see shared/notes/measured-here.md); defaults take ~26 s.
    /// Sharding coordinator state lives in ddata because the default journals it in memory.
    /// </summary>
    public static string TuningHocon(LockstepOptions options) => $$"""
        akka.cluster {
          failure-detector {
            heartbeat-interval = 200ms
            acceptable-heartbeat-pause = 600ms
            threshold = 8.0
          }
          unreachable-nodes-reaper-interval = 200ms
          leader-actions-interval = 200ms
          gossip-interval = 200ms
          split-brain-resolver.stable-after = {{(int)options.Cluster.StableAfter.TotalMilliseconds}}ms
          sharding.state-store-mode = ddata
          sharding.remember-entities = off
          log-info-verbose = off
        }
        akka.remote.dot-netty.tcp.maximum-frame-size = 4MiB
        akka.remote.retry-gate-closed-for = {{(int)options.Cluster.RetryGate.TotalMilliseconds}}ms
        akka.coordinated-shutdown.exit-clr = off
        """;

    public static AkkaConfigurationBuilder WithLockstepCluster(this AkkaConfigurationBuilder builder, LockstepOptions options)
    {
        var seeds = options.Cluster.Seeds.Select(NormalizeSeed).ToArray();
        return builder
            .AddHocon(SerializationConfig.Hocon, HoconAddMode.Prepend)
            .AddHocon(TuningHocon(options), HoconAddMode.Prepend)
            .WithRemoting(new RemoteOptions
            {
                HostName = options.Cluster.Host,
                Port = options.Cluster.Port,
            })
            .WithClustering(new ClusterOptions
            {
                SeedNodes = seeds.Length > 0 ? seeds : [SelfAddress(options)],
                // The node id as a role: recovery learns it from membership (Locking.NodeIdRole).
                Roles = ["lockstep", NodeIdRole.For(options.NodeId)],
                SplitBrainResolver = new KeepMajorityOption(),
            })
            .WithActors((system, _) =>
            {
                if (options.Cluster.DownRefusingMembers)
                {
                    system.ActorOf(RefusedConnectDowningActor.Props(new RefusedConnectDowningOptions()), RefusedConnectDowningActor.Name);
                }
            });
    }

    public static string SelfAddress(LockstepOptions options) =>
        $"akka.tcp://{SystemName}@{options.Cluster.Host}:{options.Cluster.Port}";

    /// <summary>Accepts a full Akka address or the <c>host:port</c> shorthand.</summary>
    public static string NormalizeSeed(string seed)
    {
        if (seed.Contains("://", StringComparison.Ordinal))
        {
            return seed;
        }

        var colon = seed.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(seed.AsSpan(colon + 1), out var port) || port is <= 0 or > 65535)
        {
            throw new ArgumentException($"Seed '{seed}' is neither an Akka address nor host:port.");
        }

        return $"akka.tcp://{SystemName}@{seed}";
    }
}
