using Akka.Actor;
using Lockstep.Contracts;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>What both holder actors share: running handlers and turning effects into envelopes.</summary>
internal sealed class HolderRuntime(ActorSystem system, MessagingOptions options, MessageHandlerRegistry handlers, string channelId)
{
    public string ChannelId { get; } = channelId;

    public string EntityType { get; } = MessagingChannel.TryParse(channelId, out var type, out _, out _) ? type : string.Empty;

    public bool HandlerAvailable => handlers.TryGet(EntityType, out _);

    public MessagingOptions Options => options;

    /// <summary>Starts the handler; its status (or fault) comes back to <paramref name="self"/> as <see cref="HandlerDone"/>.</summary>
    public void Run(HolderRun<IActorRef> run, IActorRef self)
    {
        MessagingMetrics.HandlerRuns.Add(1);
        Task<SerializedPayload> status;
        try
        {
            if (!handlers.TryGet(EntityType, out var handler))
            {
                throw new InvalidOperationException($"no handler for entity type '{EntityType}' on this node");
            }

            var payload = (IProtocolMessage)PayloadCodec.Deserialize(system, run.Payload);
            var context = new HandlerContext(ChannelId, run.Seq, EntityType, run.TargetId, run.PossiblyRepeated);
            status = handler(context, payload).ContinueWith(
                t => t.IsCompletedSuccessfully ? PayloadCodec.Serialize(system, t.Result) : Fault(t.Exception?.GetBaseException() ?? new TaskCanceledException()),
                TaskScheduler.Default);
        }
        catch (Exception ex)
        {
            // A handler that throws synchronously still ran: its fault is the stored status.
            status = Task.FromResult(Fault(ex));
        }

        var seq = run.Seq;
        status.ContinueWith(t => self.Tell(new HandlerDone(seq, t.Result)), TaskScheduler.Default);
    }

    public void Send(IActorRef to, object message, IActorRef self) => options.Transport.Send(to, message, self);

    private SerializedPayload Fault(Exception ex) =>
        PayloadCodec.Serialize(system, new HandlerFault(ex.GetType().FullName ?? ex.GetType().Name, ex.Message));
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
