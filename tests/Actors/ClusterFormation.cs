using Akka.Actor;
using Akka.Cluster;

namespace Lockstep.Actors.Tests;

/// <summary>Forming an in-process test cluster: every member joins the first one's address.</summary>
internal static class ClusterFormation
{
    /// <summary>Joins every system to <c>nodes[0]</c> and waits until each of them sees all of them Up (30 s each step).</summary>
    public static async Task JoinAllAndWaitUpAsync(IReadOnlyList<ActorSystem> nodes)
    {
        var seed = Cluster.Get(nodes[0]).SelfAddress;
        foreach (var node in nodes)
        {
            await Cluster.Get(node).JoinAsync(seed).WaitAsync(TimeSpan.FromSeconds(30));
        }

        await Polling.UntilAsync(
            () => nodes.All(node => Cluster.Get(node).State.Members.Count(m => m.Status == MemberStatus.Up) >= nodes.Count),
            TimeSpan.FromSeconds(30),
            $"the {nodes.Count} nodes to see each other Up");
    }
}
