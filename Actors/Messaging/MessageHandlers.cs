using System.Collections.Concurrent;
using Akka.Actor;
using Lockstep.Contracts;

namespace Lockstep.Actors.Messaging;

/// <summary>What a handler knows about the request it runs.</summary>
/// <param name="ChannelId">The channel (sending node incarnation → entity type).</param>
/// <param name="Seq">The request's seq in the channel.</param>
/// <param name="EntityType">The receiving entity type the handler is registered for.</param>
/// <param name="EntityId">The receiving entity's id, as given to <c>SendAsync</c>.</param>
/// <param name="PossiblyRepeated">
/// True only when a holder that may have run this request vanished in a crash; handlers that must not
/// repeat an effect check it (for lock traffic the DLM's recovery rebuilds state anyway).
/// </param>
public sealed record HandlerContext(string ChannelId, long Seq, string EntityType, string EntityId, bool PossiblyRepeated);

/// <summary>A receiver-side handler: runs once per (channel, seq) and returns the status the caller gets.</summary>
public delegate Task<IProtocolMessage> MessageHandler(HandlerContext context, IProtocolMessage payload);

/// <summary>The handlers of one node, by receiving entity type.</summary>
public sealed class MessageHandlerRegistry
{
    private readonly ConcurrentDictionary<string, MessageHandler> _handlers = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, MessageHandler> _prefixHandlers = new(StringComparer.Ordinal);

    /// <summary>Registers the handler of <paramref name="entityType"/> on this node; replaces an earlier one.</summary>
    public void Register(string entityType, MessageHandler handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(entityType);
        _handlers[entityType] = handler ?? throw new ArgumentNullException(nameof(handler));
    }

    /// <summary>
    /// Registers a handler that asks <paramref name="target"/> (e.g. a shard region whose extractor understands
    /// the payload) and returns its reply as the status. Keep the target on the holder's node where possible:
    /// that hop is in-process and cannot lose the message.
    /// </summary>
    public void RegisterForward(string entityType, IActorRef target, TimeSpan timeout) =>
        Register(entityType, async (_, payload) => await target.Ask<IProtocolMessage>(payload, timeout).ConfigureAwait(false));

    /// <summary>
    /// Registers the handler of every entity type starting with <paramref name="entityTypePrefix"/> (a family such as the
    /// DLM's <c>lock#0</c> … <c>lock#511</c>, one per shard). An exact registration wins over a prefix. Prefix entity types
    /// are not in <see cref="EntityTypes"/>: the outbox's node-removal purge does not reach their holders; co-located holders
    /// (<see cref="LockstepMessaging.HolderProps"/>) purge and stop themselves when their sender is removed (docs/messaging.md).
    /// </summary>
    public void RegisterPrefix(string entityTypePrefix, MessageHandler handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(entityTypePrefix);
        _prefixHandlers[entityTypePrefix] = handler ?? throw new ArgumentNullException(nameof(handler));
    }

    /// <summary>The handler of <paramref name="entityType"/>, if this node has one.</summary>
    public bool TryGet(string entityType, out MessageHandler handler)
    {
        if (_handlers.TryGetValue(entityType, out handler!))
        {
            return true;
        }

        foreach (var (prefix, byPrefix) in _prefixHandlers)
        {
            if (entityType.StartsWith(prefix, StringComparison.Ordinal))
            {
                handler = byPrefix;
                return true;
            }
        }

        return false;
    }

    /// <summary>Entity types with a handler on this node.</summary>
    public IReadOnlyCollection<string> EntityTypes => _handlers.Keys.ToArray();
}
