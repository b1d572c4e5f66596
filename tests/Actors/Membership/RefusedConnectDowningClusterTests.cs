using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Akka.Remote;
using Akka.Remote.Transport;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Membership;
using Lockstep.Actors.Tests.Locking;
using Lockstep.Contracts.Locking;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Membership;

/// <summary>
/// <see cref="RefusedConnectDowningActor"/> on three in-process members with no split-brain resolver at all
/// (<see cref="ThreeNodeCluster"/>): whoever downs a member here is that actor.
/// </summary>
public sealed class RefusedConnectDowningClusterTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private static void StartDowning(ThreeNodeCluster cluster)
    {
        foreach (var system in cluster.Systems)
        {
            system.ActorOf(RefusedConnectDowningActor.Props(new RefusedConnectDowningOptions()), RefusedConnectDowningActor.Name);
        }
    }

    private static Task<T> FirstPublished<T>(ActorSystem system, Func<T, bool> match)
    {
        var seen = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var listener = system.ActorOf(Props.Create(() => new Listener<T>(seen, match)));
        system.EventStream.Subscribe(listener, typeof(T));
        return seen.Task;
    }

    [Fact]
    public async Task A_terminated_member_is_downed_because_its_port_refuses_and_the_dlm_recovers_its_locks()
    {
        var cluster = new ThreeNodeCluster { ExtraHocon = "akka.cluster.down-removal-margin = 200ms" };
        await cluster.InitializeAsync();
        try
        {
            StartDowning(cluster);
            var victimAddress = Cluster.Get(cluster.Systems[2]).SelfUniqueAddress;
            var proofOn1 = FirstPublished<MemberProcessGone>(cluster.Systems[0], e => e.Member.Equals(victimAddress) && e.Gone);
            var a = await cluster.Managers[0].OpenLockspaceAsync("refused");
            var b = await cluster.Managers[1].OpenLockspaceAsync("refused");
            var victim = await cluster.Managers[2].OpenLockspaceAsync("refused");
            var eventsA = LockRecoveryClusterTests.Collect(a);
            var eventsB = LockRecoveryClusterTests.Collect(b);
            await using var keep = await a.LockAsync("held", LockMode.NL);
            _ = await victim.LockAsync("held", LockMode.EX, LockFlags.ValBlk);
            var waiter = b.LockAsync("held", LockMode.EX, LockFlags.ValBlk);

            var clock = Stopwatch.StartNew();
            await cluster.Systems[2].Terminate();

            await proofOn1.WaitAsync(Patience);
            var provenAt = clock.Elapsed;
            // A detector blip on the loaded machine can end in a prep/done pair without slots first (no removal): skip those.
            static bool WithSlots(LockspaceRecoveryEvent e) => e.Slots.Count > 0;
            var done = await LockRecoveryClusterTests.Next(eventsA, RecoveryStage.Done, "recover_done on n1", WithSlots);
            var doneAt = clock.Elapsed;
            Assert.Equal([victim.Slot], done.Slots);
            Assert.Equal([victim.Slot], (await LockRecoveryClusterTests.Next(eventsB, RecoveryStage.Done, "recover_done on n2", WithSlots)).Slots);
            await using var granted = await waiter.WaitAsync(Patience);
            output.WriteLine($"terminate -> process proven gone on n1 {provenAt.TotalMilliseconds:F0} ms, -> recover_done {doneAt.TotalMilliseconds:F0} ms, -> waiter granted {clock.Elapsed.TotalMilliseconds:F0} ms (no resolver)");
            Assert.True(granted.ValueNotValid, "the dead EX holder leaves the LVB not valid");

            // Nothing but the refused-connect rule could have downed it: there is no resolver and the test downs nobody.
            await Polling.UntilAsync(() => Cluster.Get(cluster.Systems[0]).State.Members.All(m => !m.UniqueAddress.Equals(victimAddress)), Patience, "n3 removed from n1's view");
        }
        finally
        {
            await cluster.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_cut_off_member_whose_port_still_accepts_is_left_alone_and_comes_back()
    {
        var cluster = new ThreeNodeCluster { ExtraHocon = "akka.remote.dot-netty.tcp.applied-adapters = [trttl]" };
        await cluster.InitializeAsync();
        try
        {
            StartDowning(cluster);
            var victim = Cluster.Get(cluster.Systems[2]).SelfUniqueAddress;
            var proof = FirstPublished<MemberProcessGone>(cluster.Systems[0], e => e.Member.Equals(victim));
            var notProven = FirstPublished<MemberProcessNotProven>(cluster.Systems[0], e => e.Member.Equals(victim));

            // Cut n3 off from both others (the throttler drops everything both ways); its listener keeps accepting.
            await Throttle(cluster, Blackhole.Instance);
            try
            {
                await Polling.UntilAsync(() => Cluster.Get(cluster.Systems[0]).State.Unreachable.Any(m => m.UniqueAddress.Equals(victim)), Patience, "n3 unreachable to n1");
                var verdict = await notProven.WaitAsync(Patience);
                Assert.Equal(ConnectProbeResult.Accepted, verdict.Result);
            }
            finally
            {
                await Throttle(cluster, Unthrottled.Instance);
            }

            await Polling.UntilAsync(
                () => Cluster.Get(cluster.Systems[0]).State.Unreachable.Count == 0
                    && Cluster.Get(cluster.Systems[0]).State.Members.Any(m => m.UniqueAddress.Equals(victim) && m.Status == MemberStatus.Up),
                Patience, "n3 reachable and Up again in n1's view");
            Assert.False(proof.IsCompleted, "a member whose port accepted must never be proven gone");
        }
        finally
        {
            await cluster.DisposeAsync();
        }
    }

    private static async Task Throttle(ThreeNodeCluster cluster, ThrottleMode mode)
    {
        var victim = Cluster.Get(cluster.Systems[2]).SelfAddress;
        foreach (var from in cluster.Systems.Take(2))
        {
            var transport = ((RemoteActorRefProvider)((ExtendedActorSystem)from).Provider).Transport;
            await transport.ManagementCommand(new SetThrottle(victim, ThrottleTransportAdapter.Direction.Both, mode));
        }
    }

    private sealed class Listener<T> : ReceiveActor
    {
        public Listener(TaskCompletionSource<T> seen, Func<T, bool> match) =>
            Receive<T>(e =>
            {
                if (match(e))
                {
                    seen.TrySetResult(e);
                }
            });
    }
}
