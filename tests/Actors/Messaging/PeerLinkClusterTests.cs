using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Tests.Locking;
using Lockstep.Actors.Messaging;
using Lockstep.Actors.Messaging.Link;
using Lockstep.Actors.Serialization;
using Lockstep.Contracts.Locking;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Actors.Tests.Messaging;

/// <summary>
/// The reliable layer over its own TCP peer link (<see cref="PeerLinkTransport"/>), three ActorSystems on loopback:
/// envelopes travel the link once it is up, bad bytes on the link port close only that connection, and a DLM counter
/// torture loses no increment while every link connection is torn down again and again.
/// </summary>
public sealed class PeerLinkClusterTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly List<ActorSystem> _nodes = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await Task.WhenAll(_nodes.Select(n => n.Terminate()));

    [Fact]
    public async Task Envelopes_go_over_the_link_once_it_is_up_and_garbage_or_a_stale_hello_on_its_port_closes_only_that_connection()
    {
        var layers = await StartAsync(new MessagingOptions { PeerLink = new PeerLinkOptions() });
        foreach (var layer in layers)
        {
            // A channel is one sending node to one entity type, and its holder lives on one node: eight types spread
            // the channels (and so the links they need) over all three nodes.
            foreach (var type in EntityTypes)
            {
                layer.Handlers.Register(type, (_, payload) => Task.FromResult<Contracts.IProtocolMessage>(new Doubled(((Numbered)payload).Value * 2)));
            }
        }

        // Every pair carries traffic; a first connect that lost the race with a loaded machine retries after its back-off.
        var sent = 0;
        var linking = Stopwatch.StartNew();
        while (!layers.All(l => l.Link!.Stats.OutgoingConnections == 2))
        {
            Assert.True(linking.Elapsed < TimeSpan.FromSeconds(60), $"links never all came up: {string.Join("; ", layers.Select(l => l.Link!.Stats))}");
            await SendAllAsync(layers, sent, 200);
            sent += 200;
        }

        await SendAllAsync(layers, 400, 400);
        var before = layers.Select(l => l.Link!.Stats).ToList();
        await SendAllAsync(layers, 800, 400);
        var after = layers.Select(l => l.Link!.Stats).ToList();
        for (var i = 0; i < 3; i++)
        {
            output.WriteLine($"node {i}: {after[i]}");
        }

        Assert.True(after.Sum(s => s.Received) - before.Sum(s => s.Received) > 0, "nothing was received over the link");

        // Once linked, envelopes to other nodes take the link; only the layer's rare envelopes (rejections, gaps,
        // hand-overs) and re-sends through the shard regions use Akka.Remote.
        var overLink = after.Sum(s => s.SentOverLink) - before.Sum(s => s.SentOverLink);
        var overAkka = after.Sum(s => s.SentOverAkka) - before.Sum(s => s.SentOverAkka);
        output.WriteLine($"after the links were up: {overLink} envelopes over the link, {overAkka} over Akka.Remote");
        Assert.True(overLink > 10 * Math.Max(1, overAkka), $"{overLink} envelopes over the link, {overAkka} over Akka.Remote");

        var target = layers[1].Link!;
        var errorsBefore = target.Stats.ProtocolErrors;
        Assert.Equal(0, await SendRawAndReadAsync(target.Port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray()));
        Assert.Equal(errorsBefore + 1, target.Stats.ProtocolErrors);

        var stale = new LinkBuffer();
        var self = Cluster.Get(_nodes[0]).SelfUniqueAddress;
        var them = Cluster.Get(_nodes[1]).SelfUniqueAddress;
        PeerLinkWire.WriteHello(stale, new PeerLinkHello(self.Address.ToString(), self.Uid, them.Address.ToString(), them.Uid + 1));
        var answer = await SendRawAndReadAllAsync(target.Port, stale.Written.ToArray());
        Assert.Equal(PeerLinkWire.Refused, answer[0]);
        Assert.Contains("this is", RefusalReason(answer));

        var stranger = new LinkBuffer();
        PeerLinkWire.WriteHello(stranger, new PeerLinkHello("akka.tcp://lockstep@10.9.9.9:1", 5, them.Address.ToString(), them.Uid));
        answer = await SendRawAndReadAllAsync(target.Port, stranger.Written.ToArray());
        Assert.Equal(PeerLinkWire.Refused, answer[0]);
        Assert.Contains("not a member", RefusalReason(answer));

        // A client that starts a hello and never finishes it is closed once the hello deadline (2 s) passes.
        var dripping = Stopwatch.StartNew();
        Assert.Equal(0, await SendRawAndReadAsync(target.Port, "LSLK"u8.ToArray()));
        Assert.InRange(dripping.Elapsed, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(9));

        // The node still serves: its real peers' connections were never touched.
        var linked = layers.Select(l => l.Link!.Stats.SentOverLink).ToList();
        await SendAllAsync(layers, 1200, 200);
        Assert.True(layers.Select(l => l.Link!.Stats.SentOverLink).Sum() > linked.Sum(), "the link carried nothing after the bad connections");
        Assert.Equal(0, target.Stats.ProtocolErrors - errorsBefore - 1);
    }

    [Fact]
    public async Task A_member_restarted_at_the_same_address_is_linked_again_under_its_new_incarnation()
    {
        var options = new MessagingOptions { PeerLink = new PeerLinkOptions() };
        var layers = await StartAsync(options);
        var address = Cluster.Get(_nodes[2]).SelfAddress;
        var oldUid = Cluster.Get(_nodes[2]).SelfUniqueAddress.Uid;
        await DeliverOverLinkAsync(_nodes[0], layers[0].Link!, _nodes[2], oldUid);

        // The member dies and is downed; a new incarnation binds the same address and joins.
        await _nodes[2].Terminate();
        Cluster.Get(_nodes[0]).Down(address);
        await Polling.UntilAsync(() => _nodes.Take(2).All(n => Cluster.Get(n).State.Members.Count == 2), TimeSpan.FromSeconds(30), "the dead member to be removed");
        await Polling.UntilAsync(() => layers[0].Link!.LinkedUid(address) is null, TimeSpan.FromSeconds(30), "the link to the dead incarnation to close");
        var reborn = ActorSystem.Create("linktest", ConfigurationFactory.ParseString($"akka.remote.dot-netty.tcp.port = {address.Port}")
            .WithFallback(LockMessagingFaultTests.NodeConfig()));
        _nodes[2] = reborn;
        await Cluster.Get(reborn).JoinAsync(Cluster.Get(_nodes[0]).SelfAddress).WaitAsync(TimeSpan.FromSeconds(30));
        await Polling.UntilAsync(() => Cluster.Get(_nodes[0]).State.Members.Count(m => m.Status == MemberStatus.Up) == 3, TimeSpan.FromSeconds(30), "the new incarnation to be Up");
        LockstepMessaging.Start(reborn, options);
        var newUid = Cluster.Get(reborn).SelfUniqueAddress.Uid;
        Assert.NotEqual(oldUid, newUid);

        await DeliverOverLinkAsync(_nodes[0], layers[0].Link!, reborn, newUid);
    }

    /// <summary>
    /// Sends envelopes over <paramref name="from"/>'s link to an actor on <paramref name="to"/> until one arrives while a link to
    /// incarnation <paramref name="uid"/> is up (the first ones go over Akka.Remote while the link connects).
    /// </summary>
    private static async Task DeliverOverLinkAsync(ActorSystem fromSystem, PeerLinkTransport from, ActorSystem to, long uid)
    {
        var arrived = new System.Collections.Concurrent.ConcurrentQueue<object>();
        var name = $"link-probe-{Guid.NewGuid():N}";
        to.ActorOf(Props.Create(() => new Collector(arrived)), name);
        var address = Cluster.Get(to).SelfAddress;
        var target = await fromSystem.ActorSelection(new RootActorPath(address) / "user" / name).ResolveOne(TimeSpan.FromSeconds(10));
        var sender = fromSystem.ActorOf(Props.Create(() => new Collector(new System.Collections.Concurrent.ConcurrentQueue<object>())));
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var linked = from.LinkedUid(address) == uid;
            var before = arrived.Count;
            from.Send(target, new Contracts.Messaging.HolderDropConfirmed("link-probe", clock.ElapsedTicks, Guid.NewGuid()), sender);
            await Polling.UntilAsync(() => arrived.Count > before, TimeSpan.FromSeconds(10), "the envelope to arrive");
            if (linked)
            {
                return;
            }

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"no link to uid {uid} within 30 s (linked to {from.LinkedUid(address)})");
            await Task.Delay(50);
        }
    }

    private sealed class Collector : ReceiveActor
    {
        public Collector(System.Collections.Concurrent.ConcurrentQueue<object> arrived) => ReceiveAny(arrived.Enqueue);
    }

    [Fact]
    public async Task Counter_torture_counts_every_increment_while_link_connections_are_torn_down_over_and_over()
    {
        var iterations = int.TryParse(Environment.GetEnvironmentVariable("LOCKSTEP_LINK_TORTURE_ITERATIONS"), out var n) ? n : 1500;
        const int clientsPerNode = 2;
        var layers = await StartAsync(new MessagingOptions
        {
            PeerLink = new PeerLinkOptions(),
            TickInterval = TimeSpan.FromMilliseconds(50),
            Outbox = new OutboxLimits(InitialResendMs: 200, MaxResendMs: 1000),
        });
        var managers = _nodes.Select((node, i) => LockManager.Start(node, new LockingOptions
        {
            NodeId = $"k{i + 1}", PersistSlots = false, AskTimeout = TimeSpan.FromSeconds(30), Transport = LockTransport.Reliable,
        })).ToList();
        var spaces = new List<ILockspace>();
        foreach (var manager in managers)
        {
            spaces.Add(await CounterTortureClients.OpenWithRetryAsync(manager, "torture-link"));
        }

        const string resource = "counter";
        var keeper = await spaces[0].LockAsync(resource, LockMode.NL);
        using var stopResets = new CancellationTokenSource();
        var resets = 0;
        var random = new Random(23);
        var resetter = Task.Run(async () =>
        {
            while (!stopResets.IsCancellationRequested)
            {
                await Task.Delay(random.Next(20, 100));
                layers[random.Next(3)].Link!.ResetConnections();
                Interlocked.Increment(ref resets);
            }
        });

        var clock = Stopwatch.StartNew();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(240));
        var (completed, errors) = await CounterTortureClients.RunAsync(spaces, resource, clientsPerNode, iterations, deadline.Token);
        stopResets.Cancel();
        await resetter;

        await keeper.ConvertAsync(LockMode.PR, LockFlags.ValBlk).WaitAsync(TimeSpan.FromSeconds(60));
        var found = BinaryPrimitives.ReadInt64LittleEndian(keeper.Lvb.Span);
        var expected = 3L * clientsPerNode * iterations;
        var stats = layers.Select(l => l.Link!.Stats).ToList();
        output.WriteLine($"{expected} increments in {clock.Elapsed.TotalSeconds:F1} s: completed {completed}, found {found}, {resets} resets");
        foreach (var s in stats)
        {
            output.WriteLine(s.ToString());
        }

        Assert.Empty(errors);
        Assert.Equal(expected, completed);
        Assert.Equal(expected, found);
        Assert.True(resets > 10, $"only {resets} resets");
        // Each reset takes down four of the six directed links for a moment, so the link carries only part of the traffic.
        Assert.True(stats.Sum(s => s.SentOverLink) > expected / 4, $"only {stats.Sum(s => s.SentOverLink)} envelopes went over the link for {expected} increments");
        await keeper.UnlockAsync();
    }

    private static readonly string[] EntityTypes = Enumerable.Range(0, 8).Select(i => $"counter-{i}").ToArray();

    private async Task<List<LockstepMessaging>> StartAsync(MessagingOptions options)
    {
        for (var i = 0; i < 3; i++)
        {
            // The fault test's member settings (its throttler adapter stays idle here).
            _nodes.Add(ActorSystem.Create("linktest", LockMessagingFaultTests.NodeConfig()));
        }

        await ClusterFormation.JoinAllAndWaitUpAsync(_nodes);
        return _nodes.Select(node => LockstepMessaging.Start(node, options)).ToList();
    }

    private static async Task SendAllAsync(IReadOnlyList<LockstepMessaging> layers, int from, int count)
    {
        var calls = Enumerable.Range(from, count).Select(async value =>
        {
            var status = await layers[value % layers.Count].Sender.SendAsync<Doubled>(EntityTypes[value % EntityTypes.Length], $"entity-{value % 31}", new Numbered(value))
                .WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(value * 2L, status.Value);
        });
        await Task.WhenAll(calls);
    }

    /// <summary>The reason in a server's refusal (its answer byte, then the reason in the wire's short-string form).</summary>
    private static string RefusalReason(byte[] answer)
    {
        var at = 1;
        Assert.True(PeerLinkWire.TryReadShortString(answer, ref at, out var reason), "the refusal ends before its reason");
        return reason!;
    }

    /// <summary>Sends <paramref name="bytes"/> to the link port and returns how many bytes came back before the server closed.</summary>
    private static async Task<int> SendRawAndReadAsync(int port, byte[] bytes) => (await SendRawAndReadAllAsync(port, bytes)).Length;

    private static async Task<byte[]> SendRawAndReadAllAsync(int port, byte[] bytes)
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        await socket.SendAsync(bytes);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var answer = new List<byte>();
        var buffer = new byte[1024];
        while (true)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            if (read == 0)
            {
                return [.. answer];
            }

            answer.AddRange(buffer.AsSpan(0, read).ToArray());
        }
    }
}
