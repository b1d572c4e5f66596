using Akka.Actor;
using Akka.Cluster;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// The in-memory Message Holder of one channel (lock traffic): a sharded entity in region
/// <c>message-holder</c> whose id is the channel. On a shard move it finishes running handlers and hands
/// its watermark and undelivered statuses to the sender before stopping, so nothing runs twice.
/// </summary>
internal sealed class MessageHolderActor : ReceiveActor, IWithTimers
{
    private readonly HolderRuntime _runtime;
    private readonly MessageHolderState<IActorRef> _state;
    private HolderHandOver? _handOver;
    private IActorRef _handOverTo = ActorRefs.Nobody;
    private readonly (string Address, long Uid)? _sender;

    /// <param name="runtime">Handlers, envelopes and stats of the channel.</param>
    /// <param name="handOffStop">
    /// The message the hosting shard region stops its entities with (hand-off, passivation): <see cref="HolderHandOffStop"/>
    /// in the layer's regions, the host region's own one for holders co-located in another subsystem's region. Either way
    /// the holder hands over to the sender before it stops.
    /// </param>
    /// <param name="stopWhenSenderRemoved">
    /// Purge and stop when the channel's sending node incarnation is removed from the cluster (recover_slot). For
    /// co-located holders of prefix-registered entity types (<c>lock#S</c>): the outbox's purge names only the exact
    /// entity types it knows, and cannot enumerate such a family without creating (and so allocating shards for) every
    /// holder it would name. Only that incarnation's removal stops the holder, so a live sender's channel never loses
    /// its holder's table this way (which would make it re-run requests).
    /// </param>
    public MessageHolderActor(HolderRuntime runtime, Type? handOffStop = null, bool stopWhenSenderRemoved = false)
    {
        _runtime = runtime;
        if (stopWhenSenderRemoved && MessagingChannel.TryParse(runtime.ChannelId, out _, out var senderAddress, out var senderUid))
        {
            _sender = (senderAddress, senderUid);
        }

        _state = new MessageHolderState<IActorRef>(runtime.Options.HolderCap, Guid.NewGuid());
        Receive<HolderDeliver>(d => Apply(_state.Lookup(d, Sender, _runtime.HandlerAvailable)));
        Receive<HolderDrop>(d => Apply(_state.Drop(d.Seq, Sender)));
        Receive<HolderBatch>(batch =>
        {
            foreach (var deliver in batch.Delivers)
            {
                Apply(_state.Lookup(deliver, Sender, _runtime.HandlerAvailable));
            }

            foreach (var drop in batch.Drops)
            {
                Apply(_state.Drop(drop.Seq, Sender));
            }
        });
        Receive<FlushReplies>(_ => _runtime.Flush(Self));
        Receive<HandlerDone>(d => Apply(_state.Completed(d.Seq, d.Status)));
        Receive<HolderHandOffStop>(_ => Apply(_state.BeginHandOver(handOverToSender: true)));
        if (handOffStop is not null && handOffStop != typeof(HolderHandOffStop))
        {
            Receive(handOffStop, _ => Apply(_state.BeginHandOver(handOverToSender: true)));
        }

        Receive<HolderHandOverAck>(ack =>
        {
            if (ack.HolderIncarnation == _state.Incarnation && _handOver is not null)
            {
                Context.Stop(Self);
            }
        });
        Receive<RetryHandOver>(_ =>
        {
            if (_handOver is not null)
            {
                _runtime.Send(_handOverTo, _handOver, Self);
            }
        });
        Receive<PurgeChannel>(p =>
        {
            Sender.Tell(new ChannelPurged(p.ChannelId, _state.Purge()));
            Context.Stop(Self);
        });
        Receive<ClusterEvent.MemberRemoved>(removed =>
        {
            if (_sender is { } sender && removed.Member.UniqueAddress.Uid == sender.Uid && removed.Member.Address.ToString() == sender.Address)
            {
                _state.Purge();
                Context.Stop(Self);
            }
        });
        Receive<ClusterEvent.CurrentClusterState>(_ => { });
        Receive<GetHolderStats>(_ => Sender.Tell(new HolderStats(_runtime.ChannelId, _state.Incarnation, _state.Count, _state.Cap, _state.NextToRun, _state.Runs, _state.Rejections)));
    }

    public ITimerScheduler Timers { get; set; } = null!;

    protected override void PreStart()
    {
        if (_sender is not null)
        {
            // Events only: a removal this node saw before the holder started cannot matter, because a removed node is
            // quarantined and sends nothing more that could create a holder of its channel.
            Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot, typeof(ClusterEvent.MemberRemoved));
        }
    }

    protected override void PostStop()
    {
        if (_sender is not null)
        {
            Cluster.Get(Context.System).Unsubscribe(Self);
        }

        _runtime.Flush(Self);
        _runtime.Stopped();
    }

    private void Apply(IReadOnlyList<HolderEffect<IActorRef>> effects) => HolderEffects.Apply(_runtime, _state, effects, Self, handOver =>
    {
        _handOver = handOver.Message;
        _handOverTo = handOver.To;
        Timers.StartPeriodicTimer("hand-over", RetryHandOver.Instance, _runtime.Options.HandOverRetry);
    });

    private sealed record RetryHandOver
    {
        public static readonly RetryHandOver Instance = new();
    }
}

/// <summary>Executes holder effects; shared by the in-memory and the persisted holder.</summary>
internal static class HolderEffects
{
    public static void Apply(
        HolderRuntime runtime, MessageHolderState<IActorRef> state, IReadOnlyList<HolderEffect<IActorRef>> effects, IActorRef self,
        Action<(IActorRef To, HolderHandOver Message)> onHandOver)
    {
        foreach (var effect in effects)
        {
            switch (effect)
            {
                case HolderRun<IActorRef> run:
                    runtime.Run(run, self);
                    break;
                case HolderReply<IActorRef> reply:
                    runtime.Send(reply.To, new HolderStatus(runtime.ChannelId, reply.Seq, state.Incarnation, reply.Status), self);
                    break;
                case HolderConfirmDrop<IActorRef> confirm:
                    runtime.Send(confirm.To, new HolderDropConfirmed(runtime.ChannelId, confirm.Seq, state.Incarnation), self);
                    break;
                case HolderReject<IActorRef> reject:
                    if (reject.Reason != HolderRejectReason.StaleIncarnation)
                    {
                        MessagingMetrics.Rejections.Add(1, new KeyValuePair<string, object?>("reason", reject.Reason.ToString()));
                    }

                    runtime.Send(reject.To, new HolderRejected(runtime.ChannelId, reject.Seq, reject.Reason, reject.Cap, reject.InUse, state.Incarnation), self);
                    break;
                case HolderHandOverTo<IActorRef> handOver:
                    var message = new HolderHandOver(runtime.ChannelId, state.Incarnation, handOver.NextToRun, handOver.Completed);
                    runtime.Send(handOver.To, message, self);
                    onHandOver((handOver.To, message));
                    break;
                case HolderReportGap<IActorRef> gap:
                    runtime.Send(gap.To, new HolderGap(runtime.ChannelId, gap.Seq, state.Incarnation), self);
                    break;
                case HolderReadyToStop<IActorRef>:
                    self.Tell(PoisonPill.Instance);
                    break;
            }
        }

        runtime.Gauge.Update(state.Count, state.NextToRun, state.Runs, state.Rejections);
    }
}
