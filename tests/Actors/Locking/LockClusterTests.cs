using System.Buffers.Binary;
using System.Diagnostics;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>The DLM across three in-process cluster members. Each test uses its own lockspace.</summary>
public sealed class LockClusterTests(ThreeNodeCluster cluster, ITestOutputHelper output) : IClassFixture<ThreeNodeCluster>
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Slots_are_distinct_per_node_and_stable_for_a_node_id()
    {
        var spaces = await Task.WhenAll(cluster.Managers.Select(m => m.OpenLockspaceAsync("slots")));
        Assert.Equal([1, 2, 3], spaces.Select(s => s.Slot).Order());
        var again = await cluster.Managers[1].OpenLockspaceAsync("slots");
        Assert.Equal(spaces[1].Slot, again.Slot);
        Assert.NotEqual(spaces[1].Session, again.Session);

        var listed = Assert.Single(await cluster.Managers[2].ListLockspacesAsync(), l => l.Name == "slots");
        Assert.Equal(LockResourceState.DefaultLvbLength, listed.LvbLength);
        Assert.Equal(["n1", "n2", "n3"], listed.Slots.Select(s => s.NodeId).Order());

        var mismatch = await Assert.ThrowsAsync<ArgumentException>(() => cluster.Managers[0].OpenLockspaceAsync("slots", 32));
        Assert.Contains("LVB length 64", mismatch.Message);
        await Assert.ThrowsAsync<ArgumentException>(() => cluster.Managers[0].OpenLockspaceAsync("bad/name"));
    }

    [Fact]
    public async Task A_resource_is_mastered_on_the_node_that_asks_first()
    {
        var b = await cluster.Managers[1].OpenLockspaceAsync("placement");
        await using var held = await b.LockAsync("first-asked-by-n2", LockMode.NL);
        var dump = await cluster.Managers[0].DumpResourceAsync("placement", "first-asked-by-n2");
        Assert.Equal("n2", dump.MasterNode);
        Assert.Equal(held.LockId, Assert.Single(dump.Granted).LockId);
    }

    [Fact]
    public async Task Early_answered_unlocks_stay_in_order_and_an_unlock_writing_the_lvb_waits_for_the_resource()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("fastunlock");
        var b = await cluster.Managers[1].OpenLockspaceAsync("fastunlock");
        var c = await cluster.Managers[2].OpenLockspaceAsync("fastunlock");
        await using var keeper = await b.LockAsync("r", LockMode.NL);
        Assert.Equal("n2", (await cluster.Managers[0].DumpResourceAsync("fastunlock", "r")).MasterNode);

        for (var i = 0; i < 50; i++)
        {
            // An unlock without an LVB write is answered when sent: each NOQUEUE EX from n1 would fail with
            // WouldBlock if it overtook the unlock sent before it.
            var plain = await a.LockAsync("r", LockMode.EX, LockFlags.NoQueue);
            await plain.UnlockAsync();
            Assert.True(plain.LostToken.IsCancellationRequested);

            var held = await a.LockAsync("r", LockMode.EX, LockFlags.ValBlk | LockFlags.NoQueue);
            Assert.Equal(i, BinaryPrimitives.ReadInt32LittleEndian(held.Lvb.Span));
            var next = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(next, i + 1);
            await held.UnlockAsync(LockFlags.ValBlk, next);

            // The LVB-writing unlock returned only once the resource applied it: even another node's dump,
            // which is not ordered behind n1's messages, no longer sees the lock.
            if (i % 10 == 0)
            {
                var dump = await cluster.Managers[2].DumpResourceAsync("fastunlock", "r");
                Assert.Equal(keeper.LockId, Assert.Single(dump.Granted).LockId);
            }
        }

        var reader = await c.LockAsync("r", LockMode.PR, LockFlags.ValBlk).WaitAsync(Patience);
        Assert.Equal(50, BinaryPrimitives.ReadInt32LittleEndian(reader.Lvb.Span));
        await reader.UnlockAsync();
    }

    [Fact]
    public async Task Commands_to_a_shard_on_the_callers_node_leave_the_layer_after_its_first_answer_and_stay_in_order()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("localroute");
        var a2 = await cluster.Managers[0].OpenLockspaceAsync("localroute");
        var b = await cluster.Managers[1].OpenLockspaceAsync("localroute");
        Assert.False(cluster.Managers[0].CommandsSkipLayer("localroute", "mine"));

        // n1 asks first, so n1 masters "mine": its first commands go through the layer (its own lock#S holder), and from
        // some point on, by plain Tell. Every NOQUEUE EX below fails with WouldBlock if it overtook the early-answered
        // unlock sent before it, whichever path either of them took, and the sessions alternate so the order across
        // sessions of one node is checked too.
        for (var i = 0; i < 60; i++)
        {
            var first = i % 2 == 0 ? a : a2;
            var second = i % 2 == 0 ? a2 : a;
            var plain = await first.LockAsync("mine", LockMode.EX, LockFlags.NoQueue);
            await plain.UnlockAsync();
            var held = await second.LockAsync("mine", LockMode.EX, LockFlags.ValBlk | LockFlags.NoQueue);
            Assert.Equal(i, BinaryPrimitives.ReadInt32LittleEndian(held.Lvb.Span));
            var next = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(next, i + 1);
            await held.UnlockAsync(LockFlags.ValBlk, next);
        }

        Assert.Equal("n1", (await cluster.Managers[1].DumpResourceAsync("localroute", "mine")).MasterNode);
        Assert.True(cluster.Managers[0].CommandsSkipLayer("localroute", "mine"), "n1's commands to its own shard still go through the layer");

        // A node never takes the in-process path to a shard that lives elsewhere, and the resource serves both alike.
        var remote = await b.LockAsync("mine", LockMode.PR, LockFlags.ValBlk).WaitAsync(Patience);
        Assert.Equal(60, BinaryPrimitives.ReadInt32LittleEndian(remote.Lvb.Span));
        Assert.False(cluster.Managers[1].CommandsSkipLayer("localroute", "mine"));
        var waiting = a.LockAsync("mine", LockMode.EX);
        await remote.UnlockAsync();
        await (await waiting.WaitAsync(Patience)).UnlockAsync();
    }

    [Fact]
    public async Task Unlocks_the_resource_may_refuse_still_wait_for_its_answer()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("slowunlock");
        var b = await cluster.Managers[1].OpenLockspaceAsync("slowunlock");
        await using var keeper = await b.LockAsync("r", LockMode.PR);

        // Flags an unlock does not take: the resource's Invalid reaches the caller, the lock stays.
        var held = await a.LockAsync("r", LockMode.PR);
        var invalid = await Assert.ThrowsAsync<LockRequestException>(() => held.UnlockAsync(LockFlags.NoQueue).WaitAsync(Patience));
        Assert.Equal(LockStatus.Invalid, invalid.Status);
        Assert.False(held.LostToken.IsCancellationRequested);

        // A conversion waits behind the keeper's PR: the unlock is Busy (FORCEUNLOCK would cancel it).
        var converting = held.ConvertAsync(LockMode.EX);
        await AwaitQueue("slowunlock", "r", d => d.Converting.Count == 1, "the conversion to wait");
        var busy = await Assert.ThrowsAsync<LockRequestException>(() => held.UnlockAsync().WaitAsync(Patience));
        Assert.Equal(LockStatus.Busy, busy.Status);

        await held.UnlockAsync(LockFlags.ForceUnlock).WaitAsync(Patience);
        var cancelled = await Assert.ThrowsAsync<LockRequestException>(() => converting.WaitAsync(Patience));
        Assert.Equal(LockStatus.Cancelled, cancelled.Status);
        var dump = await cluster.Managers[0].DumpResourceAsync("slowunlock", "r");
        Assert.Equal(keeper.LockId, Assert.Single(dump.Granted).LockId);
    }

    [Fact]
    public async Task Bast_reaches_the_holder_on_another_node_and_the_waiter_gets_the_lock_after_release()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("bast");
        var b = await cluster.Managers[1].OpenLockspaceAsync("bast");
        var bast = new TaskCompletionSource<LockMode>(TaskCreationOptions.RunContinuationsAsynchronously);
        var holder = await a.LockAsync("r", LockMode.PR, bast: mode => bast.TrySetResult(mode));

        var waiter = b.LockAsync("r", LockMode.EX);
        Assert.Equal(LockMode.EX, await bast.Task.WaitAsync(Patience));
        Assert.False(waiter.IsCompleted, "EX must not be granted while PR is held");

        await holder.UnlockAsync();
        Assert.True(holder.LostToken.IsCancellationRequested);
        await using var granted = await waiter.WaitAsync(Patience);
        Assert.Equal(LockMode.EX, granted.Mode);
    }

    [Fact]
    public async Task Lvb_written_by_an_ex_holder_is_handed_to_the_next_valblk_holder_on_another_node()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("lvb");
        var c = await cluster.Managers[2].OpenLockspaceAsync("lvb");
        var nl = await c.LockAsync("r", LockMode.NL); // keeps the resource (and its LVB) alive

        var writer = await a.LockAsync("r", LockMode.EX, LockFlags.ValBlk);
        Assert.Equal(new byte[64], writer.Lvb.ToArray());
        await writer.UnlockAsync(LockFlags.ValBlk, "hello"u8.ToArray());

        await using var reader = await c.LockAsync("r", LockMode.PR, LockFlags.ValBlk);
        Assert.Equal("hello"u8.ToArray(), reader.Lvb[..5].ToArray());
        Assert.False(reader.ValueNotValid);

        await nl.ConvertAsync(LockMode.CR, LockFlags.ValBlk);
        Assert.Equal("hello"u8.ToArray(), nl.Lvb[..5].ToArray());
        await nl.UnlockAsync();
    }

    [Fact]
    public async Task Conversion_deadlock_fails_without_convdeadlk_and_demotes_with_it()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("deadlk");
        var b = await cluster.Managers[1].OpenLockspaceAsync("deadlk");
        var la = await a.LockAsync("r", LockMode.PR);
        var lb = await b.LockAsync("r", LockMode.PR);

        var aUp = la.ConvertAsync(LockMode.EX);
        await AwaitQueue("deadlk", "r", d => d.Converting.Count == 1, "A's conversion to wait on the convert queue");

        var failed = await Assert.ThrowsAsync<LockRequestException>(() => lb.ConvertAsync(LockMode.EX));
        Assert.Equal(LockStatus.Deadlock, failed.Status);
        Assert.Equal(LockMode.PR, lb.Mode);

        var bUp = lb.ConvertAsync(LockMode.EX, LockFlags.ConvDeadlk);
        await aUp.WaitAsync(Patience);
        Assert.Equal(LockMode.EX, la.Mode);
        Assert.False(bUp.IsCompleted);

        await la.UnlockAsync();
        await bUp.WaitAsync(Patience);
        Assert.Equal(LockMode.EX, lb.Mode);
        Assert.True(lb.Demoted);
        await lb.UnlockAsync();
    }

    [Fact]
    public async Task Noqueue_fails_at_once_with_would_block()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("noqueue");
        var c = await cluster.Managers[2].OpenLockspaceAsync("noqueue");
        await using var held = await a.LockAsync("r", LockMode.EX);
        var error = await Assert.ThrowsAsync<LockRequestException>(() => c.LockAsync("r", LockMode.PR, LockFlags.NoQueue).WaitAsync(Patience));
        Assert.Equal(LockStatus.WouldBlock, error.Status);
        var dump = await cluster.Managers[2].DumpResourceAsync("noqueue", "r");
        Assert.Empty(dump.Waiting);
    }

    [Fact]
    public async Task Cancelling_a_waiting_request_removes_it_from_the_queue()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("cancel");
        var b = await cluster.Managers[1].OpenLockspaceAsync("cancel");
        await using var held = await a.LockAsync("r", LockMode.EX);
        using var cts = new CancellationTokenSource();
        var waiting = b.LockAsync("r", LockMode.EX, cancellationToken: cts.Token);
        await AwaitQueue("cancel", "r", d => d.Waiting.Count == 1, "B's request to wait");

        await cts.CancelAsync();
        var error = await Assert.ThrowsAsync<LockRequestException>(() => waiting.WaitAsync(Patience));
        Assert.Equal(LockStatus.Cancelled, error.Status);
        await AwaitQueue("cancel", "r", d => d.Waiting.Count == 0 && d.Granted.Count == 1, "the cancelled request to leave the wait queue");
    }

    [Fact]
    public async Task A_queued_request_times_out()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("timeout");
        var c = await cluster.Managers[2].OpenLockspaceAsync("timeout");
        await using var held = await a.LockAsync("r", LockMode.PW);
        var started = Stopwatch.StartNew();
        var error = await Assert.ThrowsAsync<LockRequestException>(() => c.LockAsync("r", LockMode.EX, timeout: TimeSpan.FromMilliseconds(300)).WaitAsync(Patience));
        Assert.Equal(LockStatus.TimedOut, error.Status);
        Assert.True(started.Elapsed >= TimeSpan.FromMilliseconds(290), $"timed out after {started.Elapsed}, before its 300 ms");

        // The PW holder is unaffected and a CR still fits beside it.
        await using var cr = await c.LockAsync("r", LockMode.CR, LockFlags.NoQueue);
        Assert.Equal(LockMode.CR, cr.Mode);
    }

    [Fact]
    public async Task Closing_a_session_releases_its_locks()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("session");
        var b = await cluster.Managers[1].OpenLockspaceAsync("session");
        var held = await a.LockAsync("r", LockMode.EX);
        var waiter = b.LockAsync("r", LockMode.EX);
        await a.DisposeAsync();
        Assert.True(held.LostToken.IsCancellationRequested);
        await using var granted = await waiter.WaitAsync(Patience);
        Assert.Equal(LockMode.EX, granted.Mode);
    }

    [Fact]
    public async Task A_persistent_lock_outlives_its_session_and_is_adopted_with_orphan()
    {
        var a = await cluster.Managers[0].OpenLockspaceAsync("orphan");
        var b = await cluster.Managers[1].OpenLockspaceAsync("orphan");
        var held = await a.LockAsync("r", LockMode.EX, LockFlags.Persistent);
        await a.DisposeAsync();
        Assert.True(held.LostToken.IsCancellationRequested);
        await AwaitQueue("orphan", "r", d => d.Granted.Count == 1 && d.Granted[0].Orphan, "the session's lock to become an orphan");

        var blocked = await Assert.ThrowsAsync<LockRequestException>(() => b.LockAsync("r", LockMode.EX, LockFlags.NoQueue));
        Assert.Equal(LockStatus.WouldBlock, blocked.Status);
        await using var adopted = await b.LockAsync("r", LockMode.EX, LockFlags.Orphan).WaitAsync(Patience);
        Assert.Equal(LockMode.EX, adopted.Mode);
        var dump = await cluster.Managers[2].DumpResourceAsync("orphan", "r");
        Assert.Equal(("n2", false), (Assert.Single(dump.Granted).NodeId, dump.Granted[0].Orphan));
    }

    [Fact]
    public async Task Counter_torture_over_three_nodes_counts_every_increment()
    {
        const int clientsPerNode = 4;
        const int iterations = 250;
        var spaces = await Task.WhenAll(cluster.Managers.Select(m => m.OpenLockspaceAsync("torture")));
        var started = Stopwatch.StartNew();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(120));

        var workers = spaces.SelectMany(space => Enumerable.Range(0, clientsPerNode).Select(_ => Task.Run(async () =>
        {
            for (var i = 0; i < iterations; i++)
            {
                var handle = await space.LockAsync("counter", LockMode.EX, LockFlags.ValBlk, cancellationToken: deadline.Token);
                var value = BinaryPrimitives.ReadInt64LittleEndian(handle.Lvb.Span);
                var next = new byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(next, value + 1);
                await handle.UnlockAsync(LockFlags.ValBlk, next);
            }
        }))).ToList();
        await Task.WhenAll(workers).WaitAsync(deadline.Token);

        await using var check = await spaces[1].LockAsync("counter", LockMode.PR, LockFlags.ValBlk);
        var expected = spaces.Length * clientsPerNode * iterations;
        var found = BinaryPrimitives.ReadInt64LittleEndian(check.Lvb.Span);
        output.WriteLine($"{expected} increments by {spaces.Length * clientsPerNode} clients in {started.Elapsed.TotalSeconds:F2} s; counter = {found}");
        Assert.Equal(expected, found);
    }

    [Fact]
    public async Task Cluster_torture_runs_clients_on_every_member_and_reads_the_counter_back()
    {
        var result = await cluster.Managers[2].RunTortureAsync(clients: 6, iterations: 50, TimeSpan.FromSeconds(60));
        Assert.Equal(["n1", "n2", "n3"], result.Nodes.Select(n => n.NodeId).Order());
        Assert.All(result.Nodes, n => Assert.Equal(string.Empty, n.Error));
        Assert.Equal(300, result.Expected);
        Assert.Equal(300, result.Found);
        Assert.True(result.Ok);
    }

    [Fact]
    public async Task Lockspace_dump_gathers_resources_from_every_master()
    {
        var spaces = await Task.WhenAll(cluster.Managers.Select(m => m.OpenLockspaceAsync("dump")));
        var handles = new List<ILockHandle>();
        var names = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            // A shard goes to the node that first asks for it, but the other tests of this shared cluster may
            // already have placed a name's shard elsewhere: take the first name that is mastered where it is used.
            for (var k = 0; ; k++)
            {
                Assert.True(k < 64, $"no free shard for node n{i + 1} among 64 names");
                var name = $"on-n{i + 1}-{k}";
                var handle = await spaces[i].LockAsync(name, LockMode.PR);
                if ((await cluster.Managers[i].DumpResourceAsync("dump", name)).MasterNode == $"n{i + 1}")
                {
                    handles.Add(handle);
                    names.Add($"dump/{name}");
                    break;
                }

                await handle.DisposeAsync();
            }
        }

        var dump = await cluster.Managers[0].DumpLockspaceAsync("dump");
        Assert.Empty(dump.MissingNodes);
        Assert.Equal(names, dump.Resources.Where(r => r.Granted.Count > 0).Select(r => r.EntityId).Order());
        Assert.Equal(["n1", "n2", "n3"], dump.Resources.Where(r => r.Granted.Count > 0).Select(r => r.MasterNode).Order());
        foreach (var h in handles)
        {
            await h.DisposeAsync();
        }
    }

    private async Task AwaitQueue(string lockspace, string resource, Func<LockResourceDump, bool> condition, string what)
    {
        var until = DateTime.UtcNow + Patience;
        LockResourceDump? last = null;
        while (DateTime.UtcNow < until)
        {
            last = await cluster.Managers[0].DumpResourceAsync(lockspace, resource);
            if (condition(last))
            {
                return;
            }

            await Task.Yield();
        }

        throw new TimeoutException($"Waited {Patience} for {what}; last dump: granted {last?.Granted.Count}, converting {last?.Converting.Count}, waiting {last?.Waiting.Count}");
    }
}
