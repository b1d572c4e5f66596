using Akka.Actor;
using Lockstep.Contracts;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// Sends a request to a receiving entity so that its handler runs exactly once and the caller gets the
/// handler's status, whatever the network does (seed 000's Message Holder).
/// <code>
/// var messaging = LockstepMessaging.Get(system);
/// messaging.Handlers.Register("lock", (ctx, payload) => ...);             // on every node
/// var status = await messaging.Sender.SendAsync&lt;LockGranted&gt;("lock", "ls/res", new LockRequest(...), ct);
/// </code>
/// </summary>
public interface IReliableSender
{
    /// <summary>
    /// Sends <paramref name="payload"/> to entity <paramref name="entityId"/> of type <paramref name="entityType"/>
    /// and returns the handler's status once the holder confirmed it dropped the entry. Requests of one
    /// entity type from this node run in the order they were sent. Cancelling stops waiting only: the
    /// request still runs exactly once. Throws <see cref="ReliableHandlerException"/> if the handler threw,
    /// <see cref="ReliableMessagingException"/> if the layer gave up (outbox full, this node removed), and
    /// <see cref="InvalidCastException"/> if the status is not a <typeparamref name="TStatus"/>.
    /// </summary>
    Task<TStatus> SendAsync<TStatus>(string entityType, string entityId, IProtocolMessage payload, CancellationToken cancellationToken = default)
        where TStatus : IProtocolMessage;
}

/// <summary>The node's <see cref="IReliableSender"/>: serializes on the caller's thread, hands over to the outbox.</summary>
internal sealed class ReliableSender(ActorSystem system, IActorRef outbox) : IReliableSender
{
    public async Task<TStatus> SendAsync<TStatus>(string entityType, string entityId, IProtocolMessage payload, CancellationToken cancellationToken = default)
        where TStatus : IProtocolMessage
    {
        ArgumentException.ThrowIfNullOrEmpty(entityType);
        ArgumentNullException.ThrowIfNull(entityId);
        ArgumentNullException.ThrowIfNull(payload);
        var completion = new TaskCompletionSource<SerializedPayload>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (system.WhenTerminated.IsCompleted)
        {
            throw new ReliableMessagingException("the node's actor system is terminated; the request was not sent");
        }

        outbox.Tell(new OutboxSend(entityType, entityId, PayloadCodec.Serialize(system, payload), completion));

        // A send that reaches the outbox after it stopped lands in dead letters; the outbox fails everything it
        // holds when it stops, and termination of the system covers that race, so no caller waits forever.
        var finished = await Task.WhenAny(completion.Task, system.WhenTerminated).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (finished != completion.Task && !completion.Task.IsCompleted)
        {
            throw new ReliableMessagingException("the node's actor system terminated before the request completed; it may or may not have run");
        }

        var status = PayloadCodec.Deserialize(system, await completion.Task.ConfigureAwait(false));
        return status switch
        {
            TStatus typed => typed,
            HandlerFault fault => throw new ReliableHandlerException(fault.ExceptionType, fault.Message),
            _ => throw new InvalidCastException($"the handler of '{entityType}' answered {status.GetType().Name}, not {typeof(TStatus).Name}"),
        };
    }
}
