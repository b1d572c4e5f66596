using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using Lockstep.Actors.Messaging;
using Lockstep.Actors.Serialization;
using Lockstep.Contracts;
using Xunit;

namespace Lockstep.Actors.Tests.Messaging;

/// <summary>
/// A caller never waits forever: when its node is removed from the cluster (downed by the split-brain
/// resolver, or leaving) or its actor system stops, every outstanding call fails with a clear error.
/// This is what stalled the 20,000-request fault test: the resolver downed a sending node, whose callers
/// then waited for statuses nobody would send.
/// </summary>
public sealed class ReliableSenderShutdownTests : IAsyncLifetime
{
    private ActorSystem _system = null!;
    private readonly TaskCompletionSource<IProtocolMessage> _neverAnswers = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _handlerStarted = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async Task InitializeAsync()
    {
        _system = ActorSystem.Create("lockstep", ConfigurationFactory.ParseString("""
            akka.loglevel = WARNING
            akka.actor.provider = cluster
            akka.actor.serialize-messages = on
            akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
            akka.coordinated-shutdown.exit-clr = off
            """).WithFallback(SerializationConfig.Hocon));
        var cluster = Cluster.Get(_system);
        await cluster.JoinAsync(cluster.SelfAddress).WaitAsync(TimeSpan.FromSeconds(30));
        var messaging = LockstepMessaging.Start(_system, new MessagingOptions());
        messaging.Handlers.Register("slow", (_, _) =>
        {
            _handlerStarted.TrySetResult();
            return _neverAnswers.Task;
        });
    }

    public async Task DisposeAsync()
    {
        _neverAnswers.TrySetResult(new Doubled(0));
        await _system.Terminate();
    }

    [Fact]
    public async Task Callers_of_a_downed_node_fail_with_a_clear_error_instead_of_waiting_forever()
    {
        var sender = LockstepMessaging.Get(_system).Sender;
        var running = sender.SendAsync<Doubled>("slow", "e1", new Numbered(1));
        var queued = sender.SendAsync<Doubled>("slow", "e1", new Numbered(2));
        await _handlerStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // What the split-brain resolver does to a node on the losing side.
        Cluster.Get(_system).Down(Cluster.Get(_system).SelfAddress);

        var first = await Assert.ThrowsAsync<ReliableMessagingException>(() => running.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("may or may not have run", first.Message);
        await Assert.ThrowsAsync<ReliableMessagingException>(() => queued.WaitAsync(TimeSpan.FromSeconds(60)));
        await _system.WhenTerminated.WaitAsync(TimeSpan.FromSeconds(60));
        await Assert.ThrowsAsync<ReliableMessagingException>(() => sender.SendAsync<Doubled>("slow", "e1", new Numbered(3)).WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
