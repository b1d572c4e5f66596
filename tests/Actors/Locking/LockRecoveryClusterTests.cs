using System.Buffers.Binary;
using System.Diagnostics;
using System.Threading.Channels;
using Akka.Cluster;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Messaging;
using Lockstep.Contracts.Locking;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>
/// DLM recovery across three in-process members, each test on a fresh cluster because it kills
/// members. No split-brain resolver: a test decides when a dead member is downed; the removal margin
/// is short so shards move soon after. The failure detector tolerates 2 s pauses: on a loaded
/// machine the production 600 ms marked members unreachable during start-up, which confused the
/// singletons' hand-over.
/// </summary>
public sealed class LockRecoveryClusterTests(ITestOutputHelper output)
{
    private const string Hocon = """
        akka.cluster.down-removal-margin = 200ms
        akka.cluster.failure-detector.acceptable-heartbeat-pause = 2s
        """;

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Killed_ex_holder_is_purged_waiter_granted_lvb_not_valid_moved_resource_keeps_survivor_locks_and_a_lone_survivor_fences_itself()
    {
        var cluster = new ThreeNodeCluster { ExtraHocon = Hocon };
        await cluster.InitializeAsync();
        try
        {
            var a = await cluster.Managers[0].OpenLockspaceAsync("rec");
            var b = await cluster.Managers[1].OpenLockspaceAsync("rec");
            var victim = await cluster.Managers[2].OpenLockspaceAsync("rec");
            var events = Collect(a);
            var eventsB = Collect(b);

            // "held" lives on n1; the victim writes the LVB, then holds EX; n2 waits for EX.
            await using var keep = await a.LockAsync("held", LockMode.NL);
            var first = await victim.LockAsync("held", LockMode.EX, LockFlags.ValBlk);
            await first.UnlockAsync(LockFlags.ValBlk, "one"u8.ToArray());
            var doomed = await victim.LockAsync("held", LockMode.EX, LockFlags.ValBlk);
            var waiter = b.LockAsync("held", LockMode.EX, LockFlags.ValBlk);

            // "moved" lives on n3 (it asked first); n1 holds EX there.
            // (The victim's handles are never disposed: their node is gone.)
            _ = await victim.LockAsync("moved", LockMode.NL);
            Assert.Equal("n3", (await cluster.Managers[0].DumpResourceAsync("rec", "moved")).MasterNode);
            var survivorEx = await a.LockAsync("moved", LockMode.EX, LockFlags.ValBlk);

            // "lost" lives on n3 too, the victim holds EX and n2 only waits: no survivor holds a lock
            // there, so n2's request is sent again and the rebuilt resource grants it without an LVB.
            _ = await victim.LockAsync("lost", LockMode.EX, LockFlags.ValBlk);
            var lostWaiter = b.LockAsync("lost", LockMode.EX, LockFlags.ValBlk);
            Assert.False(waiter.IsCompleted, "EX must wait while the victim holds EX");

            var victimAddress = Cluster.Get(cluster.Systems[2]).SelfAddress;
            var clock = Stopwatch.StartNew();
            await cluster.Systems[2].Terminate();

            var prep = await Next(events, RecoveryStage.Prep, "recover_prep on n1 after n3 died");
            var prepAt = clock.Elapsed;
            Assert.Equal(a.Slot, prep.OurSlot);

            // While recovering: NOQUEUE fails with Recovering, other requests wait.
            var noQueue = await Assert.ThrowsAsync<LockRequestException>(() => a.LockAsync("fresh", LockMode.EX, LockFlags.NoQueue));
            Assert.Equal(LockStatus.Recovering, noQueue.Status);
            var queued = a.LockAsync("fresh", LockMode.EX);
            Assert.False(waiter.IsCompleted, "nothing is granted before the dead member is removed");

            Cluster.Get(cluster.Systems[0]).Down(victimAddress);
            var downAt = clock.Elapsed;
            var slot = await Next(events, RecoveryStage.Slot, "recover_slot on n1");
            var slotAt = clock.Elapsed;
            Assert.Equal([victim.Slot], slot.Slots);
            var done = await Next(events, RecoveryStage.Done, "recover_done on n1");
            var doneAt = clock.Elapsed;
            Assert.Equal([victim.Slot], done.Slots);
            Assert.Equal(a.Slot, done.OurSlot);
            Assert.Equal(1, done.Generation);
            var doneB = await Next(eventsB, RecoveryStage.Done, "recover_done on n2");
            Assert.Equal([victim.Slot], doneB.Slots);
            Assert.Equal(b.Slot, doneB.OurSlot);

            // The dead EX holder is purged: the waiter gets the lock and is told the LVB is not valid.
            await using (var granted = await waiter.WaitAsync(Patience))
            {
                var grantedAt = clock.Elapsed;
                output.WriteLine($"kill -> recover_prep {prepAt.TotalMilliseconds:F0} ms, -> Down {downAt.TotalMilliseconds:F0} ms, -> recover_slot {slotAt.TotalMilliseconds:F0} ms, -> recover_done {doneAt.TotalMilliseconds:F0} ms, -> waiter granted {grantedAt.TotalMilliseconds:F0} ms (Down sent by the test)");
                Assert.True(granted.ValueNotValid, "a purged EX holder leaves the LVB not valid");
                await granted.UnlockAsync(LockFlags.ValBlk, "two"u8.ToArray());
            }

            await using (var reader = await a.LockAsync("held", LockMode.PR, LockFlags.ValBlk))
            {
                Assert.False(reader.ValueNotValid, "the next write makes the LVB valid again");
                Assert.Equal("two"u8.ToArray(), reader.Lvb[..3].ToArray());
            }

            await using (var regranted = await lostWaiter.WaitAsync(Patience))
            {
                Assert.True(regranted.ValueNotValid, "a resource rebuilt without holders has lost its LVB");
                Assert.NotEqual("n3", (await cluster.Managers[0].DumpResourceAsync("rec", "lost")).MasterNode);
            }

            await using (var fresh = await queued.WaitAsync(Patience))
            {
                Assert.Equal(LockMode.EX, fresh.Mode);
            }

            // The resource whose shard lived on n3 was rebuilt from n1's re-assertion: no double grant.
            var moved = await cluster.Managers[1].DumpResourceAsync("rec", "moved");
            Assert.NotEqual("n3", moved.MasterNode);
            var kept = Assert.Single(moved.Granted);
            Assert.Equal((survivorEx.LockId, "n1", LockMode.EX), (kept.LockId, kept.NodeId, kept.GrantedMode));
            var second = await Assert.ThrowsAsync<LockRequestException>(() => b.LockAsync("moved", LockMode.EX, LockFlags.NoQueue));
            Assert.Equal(LockStatus.WouldBlock, second.Status);
            Assert.False(survivorEx.LostToken.IsCancellationRequested);

            // The re-asserted lock still works: releasing it lets n2 in.
            var next = b.LockAsync("moved", LockMode.EX, LockFlags.ValBlk);
            await survivorEx.UnlockAsync();
            await using (var movedEx = await next.WaitAsync(Patience))
            {
                // fs/dlm's recover_lvb: n1's re-asserted EX with VALBLK excluded every other writer, so its copy is the LVB.
                Assert.False(movedEx.ValueNotValid, "a rebuilt resource takes the LVB of a re-asserted VALBLK lock above CR as valid");
            }

            _ = doomed;

            // Self-fencing: with n2 dead too, n1 sees one of two members; after the fence timeout every
            // handle's LostToken is cancelled and new requests fail.
            var held = await a.LockAsync("last", LockMode.EX);
            var lost = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            held.LostToken.Register(() => lost.TrySetResult());
            Assert.False(held.LostToken.IsCancellationRequested);
            clock.Restart();
            await cluster.Systems[1].Terminate();
            await Next(events, RecoveryStage.Fenced, "n1 fencing itself without a majority");
            await lost.Task.WaitAsync(Patience);
            output.WriteLine($"second kill -> fenced {clock.Elapsed.TotalMilliseconds:F0} ms (fence timeout 500 ms after unreachable)");
            var refused = await Assert.ThrowsAsync<LockRequestException>(() => a.LockAsync("other", LockMode.NL));
            Assert.Equal(LockStatus.Fenced, refused.Status);
            var status = await cluster.Managers[0].RecoveryStatusAsync();
            Assert.True(status.Fenced);
            Assert.Equal(RecoveryPhase.Prep, status.Phase);

            // A fenced lock can still be released (it stays recorded at the resource until then).
            await held.UnlockAsync();
        }
        finally
        {
            await cluster.DisposeAsync();
        }
    }

    [Fact]
    public async Task Orphan_on_a_resource_of_the_dead_node_is_reasserted_by_its_node_and_adopted_with_its_mode()
    {
        var cluster = new ThreeNodeCluster { ExtraHocon = Hocon };
        await cluster.InitializeAsync();
        try
        {
            var a = await cluster.Managers[0].OpenLockspaceAsync("orph");
            var b = await cluster.Managers[1].OpenLockspaceAsync("orph");
            var victim = await cluster.Managers[2].OpenLockspaceAsync("orph");
            var eventsA = Collect(a);
            var eventsB = Collect(b);

            // "kept" lives on n3 (it asks first); a session on n1 takes PW PERSISTENT and ends: an orphan.
            _ = await victim.LockAsync("kept", LockMode.NL);
            Assert.Equal("n3", (await cluster.Managers[0].DumpResourceAsync("orph", "kept")).MasterNode);
            var ending = await cluster.Managers[0].OpenLockspaceAsync("orph");
            var persistent = await ending.LockAsync("kept", LockMode.PW, LockFlags.Persistent);
            await ending.DisposeAsync();

            // The session's end reaches the resource through n1's lock client; the dump goes straight to the region.
            var before = await cluster.Managers[0].DumpResourceAsync("orph", "kept");
            for (var tries = 0; !before.Granted.Any(l => l.Orphan) && tries < 100; tries++)
            {
                await Task.Delay(100);
                before = await cluster.Managers[0].DumpResourceAsync("orph", "kept");
            }

            var orphan = Assert.Single(before.Granted, l => l.Orphan);
            Assert.Equal((persistent.LockId, "n1", LockMode.PW), (orphan.LockId, orphan.NodeId, orphan.GrantedMode));

            await KillN3AndRecoverAsync(cluster, eventsA, eventsB);

            // The resource was rebuilt on a survivor from n1's re-assertion: the orphan is back, still an orphan.
            var rebuilt = await cluster.Managers[1].DumpResourceAsync("orph", "kept");
            Assert.NotEqual("n3", rebuilt.MasterNode);
            var back = Assert.Single(rebuilt.Granted);
            Assert.Equal((persistent.LockId, "n1", LockMode.PW, true), (back.LockId, back.NodeId, back.GrantedMode, back.Orphan));

            // Another mode does not adopt it; the orphan's own mode does, from the other survivor.
            var wrongMode = await Assert.ThrowsAsync<LockRequestException>(() => b.LockAsync("kept", LockMode.EX, LockFlags.Orphan));
            Assert.Equal(LockStatus.WouldBlock, wrongMode.Status);
            await using (var adopted = await b.LockAsync("kept", LockMode.PW, LockFlags.Orphan).WaitAsync(Patience))
            {
                Assert.Equal(LockMode.PW, adopted.Mode);
                var after = await cluster.Managers[1].DumpResourceAsync("orph", "kept");
                var now = Assert.Single(after.Granted);
                Assert.Equal((adopted.LockId, "n2", false), (now.LockId, now.NodeId, now.Orphan));
                var blocked = await Assert.ThrowsAsync<LockRequestException>(() => a.LockAsync("kept", LockMode.PW, LockFlags.NoQueue));
                Assert.Equal(LockStatus.WouldBlock, blocked.Status);
            }

            // Adopted once: nothing is left to adopt.
            var none = await Assert.ThrowsAsync<LockRequestException>(() => a.LockAsync("kept", LockMode.PW, LockFlags.Orphan));
            Assert.Equal(LockStatus.NotFound, none.Status);
        }
        finally
        {
            await cluster.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_survivors_valblk_copies_rebuild_the_lvb_of_resources_whose_master_died()
    {
        var cluster = new ThreeNodeCluster { ExtraHocon = Hocon };
        await cluster.InitializeAsync();
        try
        {
            var a = await cluster.Managers[0].OpenLockspaceAsync("lvbnl");
            var b = await cluster.Managers[1].OpenLockspaceAsync("lvbnl");
            var victim = await cluster.Managers[2].OpenLockspaceAsync("lvbnl");
            var eventsA = Collect(a);
            var eventsB = Collect(b);

            // "counter" lives on n3 (it asks first); n3 and n2 increment it under EX+VALBLK.
            const long Increments = 5;
            for (var i = 0; i < Increments; i++)
            {
                await Increment(i % 2 == 0 ? victim : b, "counter");
            }

            Assert.Equal("n3", (await cluster.Managers[0].DumpResourceAsync("lvbnl", "counter")).MasterNode);

            // n1 keeps a copy of the value: NL with VALBLK, taken after the last write.
            await using var keeper = await a.LockAsync("counter", LockMode.NL, LockFlags.ValBlk);
            Assert.Equal(Increments, BinaryPrimitives.ReadInt64LittleEndian(keeper.Lvb.Span));

            // "vouched" lives on n3 too; after n3's write n2 holds PR with VALBLK, which excludes every writer.
            await Increment(victim, "vouched");
            await using var reading = await b.LockAsync("vouched", LockMode.PR, LockFlags.ValBlk);
            Assert.Equal("n3", (await cluster.Managers[0].DumpResourceAsync("lvbnl", "vouched")).MasterNode);

            // n3 dies holding EX (it read the value and wrote nothing back) while n2 waits for EX, as in the torture.
            _ = await victim.LockAsync("counter", LockMode.EX, LockFlags.ValBlk);
            var waiting = b.LockAsync("counter", LockMode.EX, LockFlags.ValBlk);
            await KillN3AndRecoverAsync(cluster, eventsA, eventsB);

            // The resource was rebuilt on a survivor from n1's NL copy, the newest among the VALBLK locks: fs/dlm's
            // recover_lvb keeps it, flagged VALNOTVALID since no lock above CR vouches for it.
            await using (var next = await waiting.WaitAsync(Patience))
            {
                Assert.NotEqual("n3", (await cluster.Managers[1].DumpResourceAsync("lvbnl", "counter")).MasterNode);
                Assert.Equal(Increments, BinaryPrimitives.ReadInt64LittleEndian(next.Lvb.Span));
                Assert.True(next.ValueNotValid, "only an NL copy survived: the value is kept but not vouched for");
                var value = new byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(value, Increments + 1);
                await next.UnlockAsync(LockFlags.ValBlk, value);
            }

            await using (var reader = await a.LockAsync("counter", LockMode.PR, LockFlags.ValBlk).WaitAsync(Patience))
            {
                Assert.Equal(Increments + 1, BinaryPrimitives.ReadInt64LittleEndian(reader.Lvb.Span));
                Assert.False(reader.ValueNotValid, "the write after the rebuild makes the LVB valid again");
            }

            // A re-asserted VALBLK lock above CR vouches for its copy: rebuilt with it, and valid.
            await using var second = await a.LockAsync("vouched", LockMode.PR, LockFlags.ValBlk).WaitAsync(Patience);
            Assert.NotEqual("n3", (await cluster.Managers[0].DumpResourceAsync("lvbnl", "vouched")).MasterNode);
            Assert.Equal(1, BinaryPrimitives.ReadInt64LittleEndian(second.Lvb.Span));
            Assert.False(second.ValueNotValid, "n2's PR+VALBLK copy is the LVB: no writer can have run since its grant");
        }
        finally
        {
            await cluster.DisposeAsync();
        }
    }

    [Fact]
    public async Task Cluster_torture_returns_when_a_member_dies_mid_run_and_reports_its_clients_lost()
    {
        var cluster = new ThreeNodeCluster { ExtraHocon = Hocon };
        await cluster.InitializeAsync();
        try
        {
            // Long enough that n3's clients are still at it when it dies; the survivors' share ends the run.
            const int Clients = 6, Iterations = 400;
            var timeout = TimeSpan.FromSeconds(120);
            var run = cluster.Managers[0].RunTortureAsync(Clients, Iterations, timeout);

            // The counter has been written a few times and n3 holds or waits for it: its clients are mid-run.
            var deadline = DateTime.UtcNow + Patience;
            LockResourceDump? counter = null;
            while (counter is not { LvbSeq: >= 20 } || !counter.Granted.Concat(counter.Waiting).Any(l => l.NodeId == "n3"))
            {
                Assert.True(DateTime.UtcNow < deadline, $"n3's torture clients were not seen on the counter within {Patience} (last seq {counter?.LvbSeq})");
                Assert.False(run.IsCompleted, "the torture ended before n3 could be stopped mid-run: raise Iterations");
                var dump = await cluster.Managers[0].DumpLockspaceAsync("torture");
                counter = dump.Resources.FirstOrDefault(r => r.EntityId.Contains("/counter-", StringComparison.Ordinal));
                await Task.Delay(20);
            }

            var events = Collect(await cluster.Managers[0].OpenLockspaceAsync("watch"));
            var victim = Cluster.Get(cluster.Systems[2]).SelfAddress;
            var clock = Stopwatch.StartNew();
            await cluster.Systems[2].Terminate();
            await Next(events, RecoveryStage.Prep, "recover_prep on n1 after n3 stopped");
            Cluster.Get(cluster.Systems[0]).Down(victim);

            // Before: the coordinator's Ask to n3's runner waited the whole timeout (+5 s) for an answer that died with n3.
            var result = await run.WaitAsync(timeout / 2);
            output.WriteLine($"returned {clock.Elapsed.TotalSeconds:F1} s after the stop; expected {result.Expected} found {result.Found}, lost {string.Join("; ", result.Lost)}; nodes {string.Join("; ", result.Nodes)}");
            var lost = Assert.Single(result.Lost);
            Assert.Equal((victim.ToString(), Clients / 3), (lost.Node, lost.Clients));
            Assert.Contains("left the cluster", lost.Reason);
            Assert.Equal(["n1", "n2"], result.Nodes.Select(n => n.NodeId));
            Assert.All(result.Nodes, n => Assert.Equal((string.Empty, (long)Clients / 3 * Iterations), (n.Error, n.Increments)));
            Assert.Equal(Clients / 3 * Iterations, result.LostMaximum);
            Assert.True(result.Ok, $"the counter holds the survivors' {result.Expected} increments plus at most {result.LostMaximum} of n3's: found {result.Found}");
        }
        finally
        {
            await cluster.DisposeAsync();
        }
    }

    /// <summary>Stops n3, downs it from n1 once n1 noticed, and waits for recover_done on both survivors.</summary>
    private static async Task KillN3AndRecoverAsync(ThreeNodeCluster cluster, Channel<LockspaceRecoveryEvent> eventsA, Channel<LockspaceRecoveryEvent> eventsB)
    {
        var victimAddress = Cluster.Get(cluster.Systems[2]).SelfAddress;
        await cluster.Systems[2].Terminate();
        await Next(eventsA, RecoveryStage.Prep, "recover_prep on n1 after n3 died");
        Cluster.Get(cluster.Systems[0]).Down(victimAddress);
        await Next(eventsA, RecoveryStage.Done, "recover_done on n1");
        await Next(eventsB, RecoveryStage.Done, "recover_done on n2");
    }

    private static async Task Increment(ILockspace space, string resource)
    {
        await using var held = await space.LockAsync(resource, LockMode.EX, LockFlags.ValBlk).WaitAsync(Patience);
        var value = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(value, BinaryPrimitives.ReadInt64LittleEndian(held.Lvb.Span) + 1);
        await held.UnlockAsync(LockFlags.ValBlk, value);
    }

    [Fact]
    public async Task Command_channel_holders_of_a_removed_sender_go_and_a_live_senders_stay()
    {
        var cluster = new ThreeNodeCluster { ExtraHocon = Hocon };
        await cluster.InitializeAsync();
        try
        {
            var a = await cluster.Managers[0].OpenLockspaceAsync("tables");
            var b = await cluster.Managers[1].OpenLockspaceAsync("tables");
            var victim = await cluster.Managers[2].OpenLockspaceAsync("tables");
            var events = Collect(a);

            // Resources mastered on n1 (it asks first); n2 and n3 send commands to them on their lock#S channels, whose
            // holders live on n1 next to the resources.
            var names = Enumerable.Range(0, 8).Select(i => $"r{i}").ToList();
            foreach (var name in names)
            {
                await using var first = await a.LockAsync(name, LockMode.NL);
                await using var fromB = await b.LockAsync(name, LockMode.NL);
                _ = await victim.LockAsync(name, LockMode.NL);
            }

            var victimNode = Cluster.Get(cluster.Systems[2]).SelfUniqueAddress;
            var liveNode = Cluster.Get(cluster.Systems[1]).SelfUniqueAddress;
            Assert.True(HoldersOf(cluster, victimNode) > 0, "n3's commands to n1's resources left holders of its lock#S channels");
            var liveBefore = HoldersOf(cluster, liveNode);
            Assert.True(liveBefore > 0, "n2's commands to n1's resources left holders of its lock#S channels");

            await cluster.Systems[2].Terminate();
            Cluster.Get(cluster.Systems[0]).Down(victimNode.Address);
            await Next(events, RecoveryStage.Done, "recover_done on n1");

            var deadline = DateTime.UtcNow + Patience;
            while (HoldersOf(cluster, victimNode) > 0 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }

            Assert.Equal(0, HoldersOf(cluster, victimNode));
            Assert.Equal(liveBefore, HoldersOf(cluster, liveNode));

            // The live sender's channels keep working (their holders and watermarks are untouched).
            foreach (var name in names)
            {
                await using var again = await b.LockAsync(name, LockMode.EX);
                Assert.Equal(LockMode.EX, again.Mode);
            }

            Assert.Equal(liveBefore, HoldersOf(cluster, liveNode));
        }
        finally
        {
            await cluster.DisposeAsync();
        }
    }

    /// <summary>Holders of <paramref name="sender"/>'s lock#S channels on the surviving nodes n1 and n2.</summary>
    private static int HoldersOf(ThreeNodeCluster cluster, UniqueAddress sender) =>
        cluster.Systems.Take(2)
            .SelectMany(system => LockstepMessaging.Get(system).Stats.Snapshot().Holders)
            .Count(holder => MessagingChannel.TryParse(holder.Channel, out var type, out var address, out var uid)
                && type.StartsWith(LockChannels.CommandPrefix, StringComparison.Ordinal)
                && uid == sender.Uid && address == sender.Address.ToString());

    internal static Channel<LockspaceRecoveryEvent> Collect(ILockspace space)
    {
        var channel = Channel.CreateUnbounded<LockspaceRecoveryEvent>();
        space.Recovery += e => channel.Writer.TryWrite(e);
        return channel;
    }

    /// <summary>The next event of <paramref name="stage"/> (that also passes <paramref name="match"/>, when given); others are skipped.</summary>
    internal static async Task<LockspaceRecoveryEvent> Next(
        Channel<LockspaceRecoveryEvent> events, RecoveryStage stage, string what, Func<LockspaceRecoveryEvent, bool>? match = null)
    {
        using var cts = new CancellationTokenSource(Patience);
        try
        {
            while (true)
            {
                var e = await events.Reader.ReadAsync(cts.Token);
                if (e.Stage == stage && (match is null || match(e)))
                {
                    return e;
                }
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"Waited {Patience} for {what}");
        }
    }
}
