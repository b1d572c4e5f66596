using Akka.Actor;
using Akka.Event;
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

    /// <summary>
    /// Sends like <see cref="SendAsync{TStatus}"/> for a caller that does not wait for the status and only needs to hear
    /// of a failure: <paramref name="onFailure"/> runs (on the outbox's thread, so it must be short) if the layer gave up
    /// (<see cref="ReliableMessagingException"/>) or the handler threw (<see cref="ReliableHandlerException"/>); a
    /// successful status is dropped. The call completes when its status arrives, without the drop round of
    /// <see cref="SendAsync{TStatus}"/> (<see cref="OutboxState{TCaller}"/>: the channel's floor tells the holder). The DLM sends every command and answer this way: its answers travel as messages of
    /// their own, so per call this saves the awaiting state machine, a thread-pool hop to resume it and a continuation
    /// on the actor system's termination. A send that lands in dead letters because the outbox already stopped is not
    /// reported; that happens only while the actor system terminates, which ends the DLM's callers anyway.
    /// </summary>
    /// <param name="entityType">Receiving entity type.</param>
    /// <param name="entityId">Receiving entity.</param>
    /// <param name="payload">The request.</param>
    /// <param name="onFailure">Runs if the call failed (see above).</param>
    /// <param name="onFinished">Runs once the call is over either way, after <paramref name="onFailure"/> (same thread, same rule).</param>
    /// <exception cref="ReliableMessagingException">The actor system is terminated (nothing was sent).</exception>
    public void Post(string entityType, string entityId, IProtocolMessage payload, Action<Exception> onFailure, Action? onFinished = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(entityType);
        ArgumentNullException.ThrowIfNull(entityId);
        ArgumentNullException.ThrowIfNull(payload);
        ArgumentNullException.ThrowIfNull(onFailure);
        if (system.WhenTerminated.IsCompleted)
        {
            throw new ReliableMessagingException("the node's actor system is terminated; the request was not sent");
        }

        // Continuations run synchronously where the outbox completes the call: the check below is a few microseconds.
        var completion = new TaskCompletionSource<SerializedPayload>();
        completion.Task.ContinueWith(
            static (finished, state) =>
            {
                var (system, onFailure, onFinished) = ((ActorSystem, Action<Exception>, Action?))state!;
                try
                {
                    if (!finished.IsCompletedSuccessfully)
                    {
                        onFailure(finished.Exception?.GetBaseException() ?? new ReliableMessagingException("the call was cancelled"));
                    }
                    else if (PayloadCodec.Deserialize(system, finished.Result) is HandlerFault fault)
                    {
                        onFailure(new ReliableHandlerException(fault.ExceptionType, fault.Message));
                    }
                }
                catch (Exception ex)
                {
                    system.Log.Error(ex, "Reporting the outcome of a posted call failed");
                }

                try
                {
                    onFinished?.Invoke();
                }
                catch (Exception ex)
                {
                    system.Log.Error(ex, "Reporting the end of a posted call failed");
                }
            },
            (system, onFailure, onFinished),
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
        outbox.Tell(new OutboxSend(entityType, entityId, PayloadCodec.Serialize(system, payload), completion, CompletesAtStatus: true));
    }
}
