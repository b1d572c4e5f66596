using Akka.Actor;
using Akka.Cluster;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Broadcast;

namespace Lockstep.Actors.Broadcast;

/// <summary>Hand <paramref name="Message"/> to the stream <paramref name="Stream"/> (created on first use).</summary>
internal sealed record ToStream(string Stream, object Message);

/// <summary>
/// The broadcast on one node (<c>/user/lockstep-broadcast</c>): keeps one
/// <see cref="BroadcastStreamActor"/> per stream, answers other nodes' gathers, joins, statistics and ping queries,
/// and tells every stream when a member was removed.
/// </summary>
internal sealed class BroadcastNodeActor : ReceiveActor
{
    private readonly ILockManager _locks;
    private readonly BroadcastOptions _options;
    private readonly BroadcastDelivery _delivery;
    private readonly Dictionary<string, IActorRef> _streams = new(StringComparer.Ordinal);

    public BroadcastNodeActor(ILockManager locks, BroadcastOptions options, BroadcastDelivery delivery)
    {
        _locks = locks;
        _options = options;
        _delivery = delivery;
        Ready();
    }

    public static Props Props(ILockManager locks, BroadcastOptions options, BroadcastDelivery delivery) =>
        Akka.Actor.Props.Create(() => new BroadcastNodeActor(locks, options, delivery));

    protected override void PreStart()
    {
        Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.MemberRemoved));
        foreach (var stream in _options.Streams.Append(BroadcastOptions.GlobalStream).Distinct(StringComparer.Ordinal))
        {
            StreamFor(stream).Tell(new JoinStream(null));
        }
    }

    protected override void PostStop() => Cluster.Get(Context.System).Unsubscribe(Self);

    private void Ready()
    {
        Receive<ToStream>(to => StreamFor(to.Stream).Forward(to.Message));
        Receive<GetStreamPosition>(get =>
        {
            if (_streams.TryGetValue(get.Stream, out var stream))
            {
                stream.Forward(get);
            }
            else
            {
                Sender.Tell(new StreamPosition(_locks.NodeId, get.Stream, false, 0, null));
            }
        });
        Receive<JoinStreams>(join =>
        {
            var waits = join.Streams.Select(name =>
            {
                if (BroadcastOptions.StreamError(name) is { } error)
                {
                    return Task.FromException(new ArgumentException(error));
                }

                var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                StreamFor(name).Tell(new JoinStream(done));
                return done.Task;
            }).ToList();
            var nodeId = _locks.NodeId;
            Task.WhenAll(waits).WaitAsync(_options.AckTimeout).PipeTo(
                Sender,
                success: () => new StreamsJoined(nodeId, join.Streams, null),
                failure: ex => new StreamsJoined(nodeId, join.Streams, (ex as AggregateException)?.InnerException?.Message ?? ex.Message));
        });
        Receive<GetBroadcastStats>(_ =>
        {
            var nodeId = _locks.NodeId;
            var asks = _streams.Values.Select(s => s.Ask<BroadcastStreamStats>(GetStreamStats.Instance, TimeSpan.FromSeconds(5))).ToList();
            Task.WhenAll(asks).PipeTo(Sender, success: stats => new BroadcastNodeStats(nodeId, stats.OrderBy(s => s.Stream, StringComparer.Ordinal).ToList()));
        });
        Receive<GetPingTime>(get => Sender.Tell(_delivery.PingTime(get.Origin, get.Tag)));
        Receive<ClusterEvent.MemberRemoved>(_ =>
        {
            foreach (var stream in _streams.Values)
            {
                stream.Tell(StreamMemberRemoved.Instance);
            }
        });
    }

    private IActorRef StreamFor(string name)
    {
        if (!_streams.TryGetValue(name, out var stream))
        {
            stream = Context.ActorOf(BroadcastStreamActor.Props(name, _locks, _options, _delivery, _locks.NodeId), $"stream-{_streams.Count}");
            _streams.Add(name, stream);
        }

        return stream;
    }
}
