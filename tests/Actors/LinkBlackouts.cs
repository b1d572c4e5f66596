using Akka.Actor;
using Akka.Cluster;
using Akka.Remote;
using Akka.Remote.Transport;

namespace Lockstep.Actors.Tests;

/// <summary>
/// Link blackouts between in-process cluster members (they must run the throttler adapter, <c>trttl</c>): every second
/// one pair of nodes loses everything sent between them, both ways, for 400 ms (the throttler's blackhole), then the
/// link comes back. Whatever was in flight on it is lost. Forced disassociations (<c>ForceDisassociateExplicitly</c>)
/// were used before; with them the members marked each other unreachable and did not recover while traffic flowed, so
/// the resolver ended the run; the same load without them never marked a member unreachable (docs/messaging.md). A
/// blackout is the fault a storage cluster meets (a switch port flapping) and leaves membership to the failure detector.
/// </summary>
internal sealed class LinkBlackouts(int seed)
{
    private readonly Random _random = new(seed);
    private int _count;

    /// <summary>Blackouts injected so far.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>
    /// Blacks out the pair <paramref name="pick"/> returns (null: skip this round) until <paramref name="stop"/>.
    /// The first blackout comes at once: a short run must not finish before any fault was injected.
    /// </summary>
    public async Task RunAsync(Func<Random, (ActorSystem From, ActorSystem To)?> pick, CancellationToken stop)
    {
        var pause = TimeSpan.FromMilliseconds(50);
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(pause, stop);
                pause = TimeSpan.FromSeconds(1);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (pick(_random) is not var (from, to))
            {
                continue;
            }

            var transport = ((RemoteActorRefProvider)((ExtendedActorSystem)from).Provider).Transport;
            var address = Cluster.Get(to).SelfAddress;
            try
            {
                await transport.ManagementCommand(new SetThrottle(address, ThrottleTransportAdapter.Direction.Both, Blackhole.Instance));
                Interlocked.Increment(ref _count);
                await Task.Delay(400, CancellationToken.None);
                await transport.ManagementCommand(new SetThrottle(address, ThrottleTransportAdapter.Direction.Both, Unthrottled.Instance));
            }
            catch (Exception ex) when (ex is InvalidOperationException or AggregateException or TaskCanceledException)
            {
                // The node may be leaving; the next round picks another pair.
            }
        }
    }
}
