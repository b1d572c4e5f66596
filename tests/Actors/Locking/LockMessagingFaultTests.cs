using System.Buffers.Binary;
using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using Akka.Remote;
using Akka.Remote.Transport;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Messaging;
using Lockstep.Actors.Serialization;
using Lockstep.Contracts.Locking;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>
/// The DLM's counter torture on three ActorSystems with <c>Transport = Reliable</c> while the layer's envelopes are
/// dropped, duplicated and delayed (2 % each, <see cref="FaultInjectingTransport"/>) and one pair of nodes at a time
/// loses every message between them for 400 ms (throttler blackhole) every second. Lock commands, completions and basts
/// all ride on the layer, so nothing a caller waits for can be lost: every increment must land (expected == found) and
/// every request must return. Size: LOCKSTEP_DLM_FAULT_ITERATIONS per client (default 150), 2 clients per node.
/// </summary>
public sealed class LockMessagingFaultTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly List<ActorSystem> _nodes = [];
    private readonly List<LockManager> _managers = [];
    private readonly LinkBlackouts _blackouts = new(17);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await Task.WhenAll(_nodes.Select(n => n.Terminate()));

    [Fact]
    public async Task Counter_torture_counts_every_increment_and_no_request_hangs_while_lock_traffic_is_dropped_duplicated_delayed_and_links_black_out()
    {
        var iterations = int.TryParse(Environment.GetEnvironmentVariable("LOCKSTEP_DLM_FAULT_ITERATIONS"), out var n) ? n : 150;

        // LOCKSTEP_DLM_FAULT_TRANSPORT=direct runs the same faults on plain Akka.Remote, to see the test fail without the
        // layer (a completion lost in a blackout leaves its caller waiting until the deadline).
        var transport = Environment.GetEnvironmentVariable("LOCKSTEP_DLM_FAULT_TRANSPORT") == "direct" ? LockTransport.Direct : LockTransport.Reliable;
        const int clientsPerNode = 2;
        var chaos = new FaultInjectingTransport(seed: 13);
        var messagingOptions = new MessagingOptions
        {
            Transport = chaos,
            TickInterval = TimeSpan.FromMilliseconds(50),
            Outbox = new OutboxLimits(InitialResendMs: 200, MaxResendMs: 1000),
        };

        for (var i = 0; i < 3; i++)
        {
            _nodes.Add(ActorSystem.Create("lockfault", NodeConfig()));
        }

        await JoinAll();
        for (var i = 0; i < 3; i++)
        {
            LockstepMessaging.Start(_nodes[i], messagingOptions);
            _managers.Add(LockManager.Start(_nodes[i], new LockingOptions
            {
                NodeId = $"f{i + 1}", PersistSlots = false, AskTimeout = TimeSpan.FromSeconds(30), Transport = transport,
            }));
        }

        var spaces = new List<ILockspace>();
        foreach (var manager in _managers)
        {
            spaces.Add(await CounterTortureClients.OpenWithRetryAsync(manager, "torture-fault"));
        }

        // The counter is mastered on node 1 (its NL keeper asks first): clients on nodes 2 and 3 cross the network for
        // every command, completion and bast; node 1's own commands ride on the layer (its local lock#S holder) only until
        // the counter's first answer shows node 1 that the shard is its own (LocalShardRoutes), then go by plain Tell.
        const string resource = "counter";
        var keeper = await spaces[0].LockAsync(resource, LockMode.NL);
        Assert.Equal("f1", (await _managers[1].DumpResourceAsync("torture-fault", resource)).MasterNode);

        chaos.Enabled = true;
        using var stopFaults = new CancellationTokenSource();
        var blackouts = Task.Run(() => BlackOutLinks(stopFaults.Token));
        var clock = Stopwatch.StartNew();
        var limit = TimeSpan.FromSeconds(int.TryParse(Environment.GetEnvironmentVariable("LOCKSTEP_DLM_FAULT_TIMEOUT_S"), out var t) ? t : 240);
        using var deadline = new CancellationTokenSource(limit);
        var (completed, errors) = await CounterTortureClients.RunAsync(spaces, resource, clientsPerNode, iterations, deadline.Token);
        var elapsed = clock.Elapsed;
        stopFaults.Cancel();
        await blackouts;
        chaos.Enabled = false;

        await keeper.ConvertAsync(LockMode.PR, LockFlags.ValBlk).WaitAsync(TimeSpan.FromSeconds(60));
        var found = BinaryPrimitives.ReadInt64LittleEndian(keeper.Lvb.Span);
        var expected = 3L * clientsPerNode * iterations;
        var layers = _nodes.Select(LockstepMessaging.Get).Select(l => l.Stats.Snapshot()).ToList();
        output.WriteLine($"transport {transport}");
        output.WriteLine($"{expected} increments by {3 * clientsPerNode} clients in {elapsed.TotalSeconds:F1} s: completed {completed}, found {found}");
        output.WriteLine($"faults: {chaos.Dropped} envelopes dropped, {chaos.Duplicated} duplicated, {chaos.Delayed} delayed, {_blackouts.Count} link blackouts of 400 ms");
        output.WriteLine($"layer: {layers.Sum(s => s.Completed)} calls completed, {layers.Sum(s => s.Resends)} re-sends, {layers.Sum(s => s.OutboxPending)} pending");
        foreach (var error in errors)
        {
            output.WriteLine($"client error: {error}");
        }

        Assert.Empty(errors);
        Assert.Equal(expected, completed);
        Assert.Equal(expected, found);
        Assert.True(chaos.Dropped > 0 && chaos.Duplicated > 0 && chaos.Delayed > 0, "the chaos transport injected nothing");
        Assert.True(_blackouts.Count > 0, "no link was blacked out");

        // Every increment of a client on node 2 or 3 is at least a request, a completion and the early-answered unlock on
        // the layer; node 1's own increments may not touch it at all (its shard is local).
        var remoteIncrements = 2L * clientsPerNode * iterations;
        Assert.True(layers.Sum(s => s.Completed) >= 3 * remoteIncrements, $"only {layers.Sum(s => s.Completed)} calls went through the layer for {remoteIncrements} increments from nodes 2 and 3");
        Assert.True(layers.Sum(s => s.Resends) > 0, "nothing was re-sent: the faults did not hit lock traffic");
        await keeper.UnlockAsync();
    }

    private Task BlackOutLinks(CancellationToken stop) => _blackouts.RunAsync(random =>
    {
        var from = _nodes[random.Next(3)];
        return (from, _nodes.Where(s => s != from).ElementAt(random.Next(2)));
    }, stop);

    private Task JoinAll() => ClusterFormation.JoinAllAndWaitUpAsync(_nodes);

    /// <summary>Loopback members with the throttler adapter and a failure detector that tolerates injected link faults.</summary>
    internal static Config NodeConfig() => ConfigurationFactory.ParseString("""
        akka.loglevel = WARNING
        akka.actor.provider = cluster
        # As in ReliableMessagingClusterTests: Akka's own ReachabilityChanged events fail serialize-messages' check.
        akka.actor.serialize-messages = off
        akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0, applied-adapters = [trttl] }
        akka.remote.retry-gate-closed-for = 100ms
        akka.cluster {
          # The blackouts are link faults, not node failures: the detector tolerates them, so DLM recovery (which
          # owns node failures) stays out of this test and every number is the transport's.
          failure-detector { heartbeat-interval = 200ms, acceptable-heartbeat-pause = 5s, threshold = 12.0 }
          unreachable-nodes-reaper-interval = 200ms
          leader-actions-interval = 200ms
          gossip-interval = 200ms
          downing-provider-class = ""
          sharding.state-store-mode = ddata
          sharding.remember-entities = off
          log-info-verbose = off
        }
        akka.coordinated-shutdown.exit-clr = off
        akka.coordinated-shutdown.run-by-actor-system-terminate = off
        """).WithFallback(SerializationConfig.Hocon);
}
