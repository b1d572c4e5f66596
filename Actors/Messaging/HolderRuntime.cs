using Akka.Actor;
using Lockstep.Contracts;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>What both holder actors share: running handlers and turning effects into envelopes.</summary>
internal sealed class HolderRuntime(ActorSystem system, MessagingOptions options, MessageHandlerRegistry handlers, string channelId, MessagingNodeStats stats, bool persisted)
{
    public string ChannelId { get; } = channelId;

    /// <summary>Where this holder publishes its table size for the node's stats and metrics.</summary>
    public HolderGauge Gauge { get; } = stats.HolderStarted(channelId, persisted);

    /// <summary>The holder stopped: its table no longer counts on this node.</summary>
    public void Stopped() => stats.HolderStopped(Gauge);

    public string EntityType { get; } = MessagingChannel.TryParse(channelId, out var type, out _, out _) ? type : string.Empty;

    public bool HandlerAvailable => handlers.TryGet(EntityType, out _);

    public MessagingOptions Options => options;

    /// <summary>Starts the handler; its status (or fault) comes back to <paramref name="self"/> as <see cref="HandlerDone"/>.</summary>
    public void Run(HolderRun<IActorRef> run, IActorRef self)
    {
        MessagingMetrics.HandlerRuns.Add(1);
        var seq = run.Seq;
        Task<IProtocolMessage> handling;
        try
        {
            if (!handlers.TryGet(EntityType, out var handler))
            {
                throw new InvalidOperationException($"no handler for entity type '{EntityType}' on this node");
            }

            var payload = (IProtocolMessage)PayloadCodec.Deserialize(system, run.Payload);
            var context = new HandlerContext(ChannelId, run.Seq, EntityType, run.TargetId, run.PossiblyRepeated);
            handling = handler(context, payload);
        }
        catch (Exception ex)
        {
            // A handler that throws synchronously still ran: its fault is the stored status.
            self.Tell(new HandlerDone(seq, Fault(ex)));
            return;
        }

        // A handler that finished synchronously (the common case for lock traffic) is answered without a trip
        // through the thread pool; otherwise one continuation serializes the status and tells the holder.
        if (handling.IsCompleted)
        {
            self.Tell(new HandlerDone(seq, StatusOf(handling)));
            return;
        }

        handling.ContinueWith(t => self.Tell(new HandlerDone(seq, StatusOf(t))), TaskScheduler.Default);
    }

    /// <summary>
    /// Statuses and drop confirmations wait here until the holder flushes (<see cref="FlushReplies"/>, sent to itself
    /// when the first one came in), then go to each outbox as one <see cref="OutboxBatch"/>. Everything else goes at once.
    /// </summary>
    private readonly EnvelopeBatcher<IActorRef> _replies = new(64);

    public void Send(IActorRef to, object message, IActorRef self)
    {
        if (message is HolderStatus or HolderDropConfirmed)
        {
            if (_replies.Add(to, ChannelId, message))
            {
                self.Tell(FlushReplies.Instance);
            }

            return;
        }

        options.Transport.Send(to, message, self);
    }

    /// <summary>Sends the waiting replies (on <see cref="FlushReplies"/>, and when the holder stops).</summary>
    public void Flush(IActorRef self)
    {
        using var held = options.Transport.HoldSends();
        foreach (var (to, message) in _replies.Drain(static (_, items) =>
                     new OutboxBatch(items.OfType<HolderStatus>().ToList(), items.OfType<HolderDropConfirmed>().ToList())))
        {
            options.Transport.Send(to, message, self);
        }
    }

    private SerializedPayload StatusOf(Task<IProtocolMessage> finished)
    {
        try
        {
            return finished.IsCompletedSuccessfully
                ? PayloadCodec.Serialize(system, finished.Result)
                : Fault(finished.Exception?.GetBaseException() ?? new TaskCanceledException());
        }
        catch (Exception ex)
        {
            // A status that cannot be serialized is the handler's fault too; the holder must still hear of it.
            return Fault(ex);
        }
    }

    private SerializedPayload Fault(Exception ex) =>
        PayloadCodec.Serialize(system, new HandlerFault(ex.GetType().FullName ?? ex.GetType().Name, ex.Message));
}

/// <summary>A holder sent itself this when its first reply was queued: time to send the batch.</summary>
internal sealed record FlushReplies : INoSerializationVerificationNeeded
{
    public static readonly FlushReplies Instance = new();
}

/// <summary>A handler finished (local message from the handler's continuation to its holder).</summary>
internal sealed record HandlerDone(long Seq, SerializedPayload Status) : INoSerializationVerificationNeeded;

/// <summary>Akka serialization of payloads and statuses into <see cref="SerializedPayload"/>.</summary>
public static class PayloadCodec
{
    /// <summary>Serializes with the serializer bound to the message's type.</summary>
    public static SerializedPayload Serialize(ActorSystem system, object message)
    {
        var serializer = system.Serialization.FindSerializerFor(message);
        var manifest = Akka.Serialization.Serialization.ManifestFor(serializer, message);
        return new SerializedPayload(serializer.Identifier, manifest, serializer.ToBinary(message));
    }

    /// <summary>Turns the bytes back into the message.</summary>
    public static object Deserialize(ActorSystem system, SerializedPayload payload) =>
        system.Serialization.Deserialize(payload.Bytes, payload.SerializerId, payload.Manifest);
}
