using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>
/// A fourth member joins while the other three recover from a death (issue 4's joining gate, until now tested on the
/// pure state only). Its DLM starts before it joins, as in <c>lockstep serve</c>. The survivors' recovery is kept
/// running for several seconds by a long <c>down-removal-margin</c>: the dead node's resources move only after it,
/// and until then a survivor's re-assertion there (and so its acknowledgement) waits.
/// </summary>
public sealed class LockJoinDuringRecoveryTests(ITestOutputHelper output)
{
    private const string Hocon = """
        akka.cluster.down-removal-margin = 5s
        akka.cluster.failure-detector.acceptable-heartbeat-pause = 2s
        """;

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_node_joining_during_recovery_grants_only_after_the_survivors_finished_and_nothing_is_granted_twice()
    {
        var cluster = new ThreeNodeCluster { ExtraHocon = Hocon };
        await cluster.InitializeAsync();
        ActorSystem? joiner = null;
        try
        {
            var a = await cluster.Managers[0].OpenLockspaceAsync("join");
            var b = await cluster.Managers[1].OpenLockspaceAsync("join");
            var victim = await cluster.Managers[2].OpenLockspaceAsync("join");
            var eventsA = LockRecoveryClusterTests.Collect(a);
            var eventsB = LockRecoveryClusterTests.Collect(b);
            var clock = new Stopwatch();
            var timeline = new System.Collections.Concurrent.ConcurrentQueue<string>();
            a.Recovery += e => timeline.Enqueue($"{clock.ElapsedMilliseconds,6} ms n1 {e.Stage} gen {e.Generation}");
            b.Recovery += e => timeline.Enqueue($"{clock.ElapsedMilliseconds,6} ms n2 {e.Stage} gen {e.Generation}");

            // "held" lives on n1: the victim holds EX, n2 waits. "moved" lives on n3: n1 holds EX there, so its
            // re-assertion (and n1's acknowledgement) waits until the shard moves, after the removal margin.
            await using var keep = await a.LockAsync("held", LockMode.NL);
            _ = await victim.LockAsync("held", LockMode.EX, LockFlags.ValBlk);
            var waiter = b.LockAsync("held", LockMode.EX, LockFlags.ValBlk);
            _ = await victim.LockAsync("moved", LockMode.NL);
            Assert.Equal("n3", (await cluster.Managers[0].DumpResourceAsync("join", "moved")).MasterNode);
            var survivorEx = await a.LockAsync("moved", LockMode.EX);

            // The joiner's DLM runs before it joins (as in `lockstep serve`).
            joiner = ActorSystem.Create("locktest", ConfigurationFactory.ParseString(Hocon).WithFallback(ThreeNodeCluster.Config));
            var m4 = LockManager.Start(joiner, new LockingOptions { NodeId = "n4", PassivateAfter = TimeSpan.FromSeconds(2), AskTimeout = TimeSpan.FromSeconds(30), PersistSlots = false });

            clock.Start();
            var victimAddress = Cluster.Get(cluster.Systems[2]).SelfAddress;
            await cluster.Systems[2].Terminate();
            await LockRecoveryClusterTests.Next(eventsA, RecoveryStage.Prep, "recover_prep on n1");

            // n4 asks to join while n3 is unreachable: it stays Joining until n3 is downed (no convergence before).
            Cluster.Get(joiner).Join(Cluster.Get(cluster.Systems[0]).SelfAddress);
            var n4 = Cluster.Get(joiner).SelfUniqueAddress;
            await Polling.UntilAsync(() => Cluster.Get(cluster.Systems[0]).State.Members.Any(m => m.UniqueAddress.Equals(n4)), Patience, "n1 to see n4 joining");
            Assert.Equal(RecoveryPhase.Joining, (await m4.RecoveryStatusAsync()).Phase); // not granting before it joined

            Cluster.Get(cluster.Systems[0]).Down(victimAddress);
            timeline.Enqueue($"{clock.ElapsedMilliseconds,6} ms Down sent");
            var slot = await LockRecoveryClusterTests.Next(eventsA, RecoveryStage.Slot, "recover_slot on n1");
            Assert.Equal([victim.Slot], slot.Slots);

            var d = await m4.OpenLockspaceAsync("join").WaitAsync(Patience);
            var atOpen = await m4.RecoveryStatusAsync();
            timeline.Enqueue($"{clock.ElapsedMilliseconds,6} ms n4 opened the lockspace (slot {d.Slot}), n4 {atOpen.Phase} waiting for [{string.Join(", ", atOpen.Waiting)}]");

            // A resource nobody used before, so its shard goes to n4 (the requester) and n4's own gate decides.
            var fresh = UnusedResource(["held", "moved"]);
            var freshGrant = d.LockAsync(fresh, LockMode.EX);
            var onMoved = d.LockAsync("moved", LockMode.EX);
            var gatedSamples = 0;
            while (true)
            {
                // Read "granted" first: n4's gate opens only when its phase becomes Normal (it is Joining, or Recovering
                // when it saw n3's removal itself while joining), so a grant seen here must be followed by Normal.
                var granted = freshGrant.IsCompleted;
                var status = await m4.RecoveryStatusAsync();
                if (granted)
                {
                    Assert.Equal(RecoveryPhase.Normal, status.Phase);
                    break;
                }

                if (status.Phase != RecoveryPhase.Normal)
                {
                    gatedSamples++;
                }

                Assert.True(clock.Elapsed < Patience + Patience, "n4's lock on a resource it hosts was never granted");
                await Task.Delay(20);
            }

            var grantedAt = clock.Elapsed;
            timeline.Enqueue($"{clock.ElapsedMilliseconds,6} ms n4 granted its fresh lock ({gatedSamples} samples gated)");
            foreach (var line in timeline)
            {
                output.WriteLine(line);
            }

            await using var freshHandle = await freshGrant;
            Assert.Equal("n4", (await m4.DumpResourceAsync("join", fresh)).MasterNode);
            Assert.True(gatedSamples > 0, "n4's request was never seen waiting while n4 was joining or recovering: the test proved nothing about its gate");

            // n4 granted only after n1 acknowledged, i.e. after n1's EX on "moved" was re-asserted: it is there now,
            // and n4's EX request on "moved" waits behind it wherever the resource was rebuilt.
            var moved = await m4.DumpResourceAsync("join", "moved");
            var kept = Assert.Single(moved.Granted);
            Assert.Equal((survivorEx.LockId, "n1", LockMode.EX), (kept.LockId, kept.NodeId, kept.GrantedMode));
            Assert.False(onMoved.IsCompleted, "EX on 'moved' granted to n4 while n1's re-asserted EX holds it");

            var doneA = await LockRecoveryClusterTests.Next(eventsA, RecoveryStage.Done, "recover_done on n1");
            var doneB = await LockRecoveryClusterTests.Next(eventsB, RecoveryStage.Done, "recover_done on n2");
            Assert.Equal([victim.Slot], doneA.Slots);
            Assert.Equal([victim.Slot], doneB.Slots);
            output.WriteLine($"kill -> n4's first grant {grantedAt.TotalMilliseconds:F0} ms ({gatedSamples} samples gated), 'moved' rebuilt on {moved.MasterNode}");

            await survivorEx.UnlockAsync();
            await using (var movedEx = await onMoved.WaitAsync(Patience))
            {
                Assert.Equal(LockMode.EX, movedEx.Mode);
            }

            await using (var held = await waiter.WaitAsync(Patience))
            {
                Assert.True(held.ValueNotValid, "the dead EX holder leaves the LVB not valid");
            }

            var final = await m4.RecoveryStatusAsync();
            Assert.Equal((RecoveryPhase.Normal, false), (final.Phase, final.Fenced));
            Assert.Empty(final.Waiting);
        }
        finally
        {
            if (joiner is not null)
            {
                await joiner.Terminate();
            }

            await cluster.DisposeAsync();
        }
    }

    /// <summary>A resource name of lockspace "join" whose shard no resource in <paramref name="used"/> has.</summary>
    private static string UnusedResource(IEnumerable<string> used)
    {
        var shards = new LockMessageExtractor(new LockingOptions().ShardCount);
        var taken = used.Select(r => shards.ShardId($"join/{r}")).ToHashSet();
        return Enumerable.Range(0, 1000).Select(i => $"fresh-{i}").First(r => !taken.Contains(shards.ShardId($"join/{r}")));
    }
}
