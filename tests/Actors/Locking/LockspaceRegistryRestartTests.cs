using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using Lockstep.Actors.Locking;
using Lockstep.Persistence.Journal;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>The slot table lives in the shared journal: a whole-cluster restart (fresh DistributedData) keeps every node's slot.</summary>
public sealed class LockspaceRegistryRestartTests
{
    [Fact]
    public async Task Every_node_id_gets_its_old_slot_back_after_the_whole_cluster_restarts()
    {
        var folder = Directory.CreateTempSubdirectory("lockstep-registry-");
        try
        {
            var journal = JournalSettings.From("sqlite", null, folder.FullName);
            JournalSetup.EnableWriteAheadLog(journal.ConnectionString);
            // serialize-messages would also verify the SQL journal's own local messages (WriteFinished holds
            // a Task), which fail Akka's JSON check; the events still go through the journal's serializer
            // (Hyperion, as on a node) and the cluster's messages through real remoting.
            var config = ConfigurationFactory.ParseString("akka.actor.serialize-messages = off")
                .WithFallback(journal.ToHocon())
                .WithFallback(ThreeNodeCluster.Config);

            // First life: b joins first (slot 1), a second (slot 2).
            var (firstSystems, first) = await StartAsync(config, "a", "b");
            try
            {
                Assert.Equal(1, await SlotAsync(first[1], "durable"));
                Assert.Equal(2, await SlotAsync(first[0], "durable"));
            }
            finally
            {
                await Task.WhenAll(firstSystems.Select(s => s.Terminate()));
            }

            // Second life, every member new: without the journal a, asking first, would get slot 1.
            var (secondSystems, second) = await StartAsync(config, "a", "c");
            try
            {
                Assert.Equal(2, await SlotAsync(second[0], "durable"));
                Assert.Equal(3, await SlotAsync(second[1], "durable"));
                var table = (await second[1].ListLockspacesAsync()).Single(l => l.Name == "durable");
                Assert.Equal("1=b 2=a 3=c", string.Join(' ', table.Slots.OrderBy(s => s.Slot).Select(s => $"{s.Slot}={s.NodeId}")));
            }
            finally
            {
                await Task.WhenAll(secondSystems.Select(s => s.Terminate()));
            }
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            folder.Delete(recursive: true);
        }
    }

    private static async Task<int> SlotAsync(LockManager manager, string lockspace)
    {
        await using var space = await manager.OpenLockspaceAsync(lockspace);
        return space.Slot;
    }

    /// <summary>A fresh cluster of one member per node id, DLM started, registry answering on every member.</summary>
    private static async Task<(ActorSystem[] Systems, LockManager[] Managers)> StartAsync(Config config, params string[] nodeIds)
    {
        var systems = nodeIds.Select(_ => ActorSystem.Create("locktest", config)).ToArray();
        var up = systems.Select(s =>
        {
            var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Cluster.Get(s).RegisterOnMemberUp(() => tcs.TrySetResult());
            return tcs.Task;
        }).ToArray();
        foreach (var system in systems)
        {
            await Cluster.Get(system).JoinAsync(Cluster.Get(systems[0]).SelfAddress);
        }

        var all = Task.WhenAll(up);
        if (await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(60))) != all)
        {
            throw new TimeoutException("the test members did not all reach Up within 60 s");
        }

        var managers = systems.Select((s, i) => LockManager.Start(s, new LockingOptions { NodeId = nodeIds[i], AskTimeout = TimeSpan.FromSeconds(30) })).ToArray();

        // The singleton may start well after Up on a loaded machine; ask until it answers (list only: no slot taken).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        foreach (var manager in managers)
        {
            while (true)
            {
                using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                try
                {
                    await manager.ListLockspacesAsync(attempt.Token).WaitAsync(TimeSpan.FromSeconds(15));
                    break;
                }
                catch (Exception ex) when (ex is TimeoutException or OperationCanceledException or AskTimeoutException && DateTime.UtcNow < deadline)
                {
                    // Not reachable yet; ask again.
                }
            }
        }

        return (systems, managers);
    }
}
