using System.Collections.Concurrent;
using Akka.Actor;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// Where the holders of entity types that do not live in the layer's own regions are. Two kinds:
/// <list type="bullet">
/// <item><b>Co-located</b> (<see cref="RegisterColocated"/>): entity types starting with a prefix have their holders in
/// another subsystem's shard region, in the same shard as the entities their handler targets (the DLM's <c>lock#S</c>
/// channels live in shard S of the <c>lock</c> region), so the handler's hop to its target is in-process.</item>
/// <item><b>Node-pinned</b> (<see cref="PinnedEntityType"/>): the entity type names one node incarnation; its holders are
/// children of that node's <see cref="PinnedHolderHost"/> and never move, so a handler there reaches local actors
/// only (the DLM's completions and basts to a lock client).</item>
/// </list>
/// Registered at start-up by the subsystem that owns the region; read by the outbox for every first send, re-send,
/// drop and purge.
/// </summary>
public sealed class MessagingRoutes
{
    private readonly ConcurrentDictionary<string, IActorRef> _colocated = new(StringComparer.Ordinal);

    /// <summary>Holders of entity types starting with <paramref name="entityTypePrefix"/> live in <paramref name="region"/>.</summary>
    public void RegisterColocated(string entityTypePrefix, IActorRef region)
    {
        ArgumentException.ThrowIfNullOrEmpty(entityTypePrefix);
        _colocated[entityTypePrefix] = region ?? throw new ArgumentNullException(nameof(region));
    }

    /// <summary>The region holding <paramref name="entityType"/>'s holders, if it is a co-located entity type.</summary>
    public bool TryGetColocated(string entityType, out IActorRef region)
    {
        foreach (var (prefix, target) in _colocated)
        {
            if (entityType.StartsWith(prefix, StringComparison.Ordinal))
            {
                region = target;
                return true;
            }
        }

        region = ActorRefs.Nobody;
        return false;
    }
}

/// <summary>
/// Names of node-pinned entity types: <c>{kind}@{node uid}@{node address}</c>. The uid keeps a restarted node (same
/// address, new incarnation) from receiving what was meant for its predecessor: its host has no handler for the old
/// name, and senders fail those calls when they see the old incarnation removed.
/// </summary>
public static class PinnedEntityType
{
    private const char Separator = '@';

    /// <summary>The entity type of <paramref name="kind"/> pinned to the node incarnation (<paramref name="address"/>, <paramref name="uid"/>).</summary>
    public static string Format(string kind, long uid, string address)
    {
        if (string.IsNullOrEmpty(kind) || kind.Contains(Separator, StringComparison.Ordinal) || kind.Contains('|', StringComparison.Ordinal))
        {
            throw new ArgumentException($"Pinned kind '{kind}' must be non-empty and must not contain '{Separator}' or '|'.", nameof(kind));
        }

        if (string.IsNullOrEmpty(address) || address.Contains('|', StringComparison.Ordinal))
        {
            throw new ArgumentException($"Node address '{address}' must be non-empty and must not contain '|'.", nameof(address));
        }

        return $"{kind}{Separator}{uid}{Separator}{address}";
    }

    /// <summary>Splits a pinned entity type; false (never an exception) for any other entity type.</summary>
    public static bool TryParse(string? entityType, out string kind, out long uid, out string address)
    {
        kind = address = string.Empty;
        uid = 0;
        if (string.IsNullOrEmpty(entityType))
        {
            return false;
        }

        var first = entityType.IndexOf(Separator, StringComparison.Ordinal);
        if (first <= 0)
        {
            return false;
        }

        var second = entityType.IndexOf(Separator, first + 1);
        if (second <= first + 1 || second == entityType.Length - 1 || !long.TryParse(entityType.AsSpan(first + 1, second - first - 1), out uid))
        {
            return false;
        }

        kind = entityType[..first];
        address = entityType[(second + 1)..];
        return true;
    }

    /// <summary>Whether <paramref name="entityType"/> is pinned to the node incarnation with <paramref name="uid"/>.</summary>
    public static bool IsPinnedTo(string entityType, long uid) => TryParse(entityType, out _, out var pinned, out _) && pinned == uid;
}
