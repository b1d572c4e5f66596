using System.Collections.Concurrent;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Locking;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Locking;

/// <summary>How lock commands and their answers travel between nodes (<c>Lockstep:Locking:Transport</c>).</summary>
public enum LockTransport
{
    /// <summary>
    /// Through the reliable messaging layer: commands on co-located channels <c>lock#S</c> whose holder lives in shard S
    /// of the <c>lock</c> region, completions and basts on node-pinned channels to the client's node. A dropped
    /// association loses nothing.
    /// </summary>
    Reliable = 0,

    /// <summary>Plain Akka.Remote <c>Tell</c> (at most once): kept to compare; a dropped association can leave a caller waiting.</summary>
    Direct = 1,
}

/// <summary>Names of the DLM's channels on the reliable messaging layer.</summary>
public static class LockChannels
{
    /// <summary>
    /// Entity types <c>lock#{shard}</c>: one channel per (sending node incarnation, lock shard), its holder an entity of
    /// the <c>lock</c> region in that shard. Lockspace names cannot contain '#', so no resource id starts with this.
    /// </summary>
    public const string CommandPrefix = "lock#";

    /// <summary>Kind of the node-pinned entity type that carries completions and basts to a node's lock client.</summary>
    public const string ReplyKind = "lock-reply";

    /// <summary>The command channel's entity type for lock shard <paramref name="shardId"/>.</summary>
    public static string CommandEntityType(string shardId) => CommandPrefix + shardId;

    /// <summary>
    /// The lock shard a holder entity (a command channel id, <c>lock#S|address|uid</c>) belongs in; false for resource ids
    /// and anything malformed.
    /// </summary>
    public static bool TryHolderShard(string? entityId, out string shardId)
    {
        shardId = string.Empty;
        if (entityId is null || !entityId.StartsWith(CommandPrefix, StringComparison.Ordinal)
            || !MessagingChannel.TryParse(entityId, out var entityType, out _, out _) || entityType.Length == CommandPrefix.Length)
        {
            return false;
        }

        shardId = entityType[CommandPrefix.Length..];
        return true;
    }
}

/// <summary>
/// The crash rule for lock commands. The layer runs a command exactly once while its holder's node lives; the holder
/// of a <c>lock#S</c> channel lives with shard S, so when it vanishes the resources of S vanished too and are rebuilt
/// from the survivors' re-assertions (DLM recovery), and every command that was in flight arrives again flagged
/// <see cref="HandlerContext.PossiblyRepeated"/>. Recovery itself re-asserts held locks, re-sends requests still
/// waiting for their first grant and, to a rebuilt resource, pending conversions; its own messages are retried and
/// idempotent. A repeated command is therefore applied only where recovery does not already cover it and applying
/// it twice cannot change what the client sees:
/// <list type="bullet">
/// <item>Request: only if the lock is not on the resource (otherwise recovery's copy or the first one got there; the
/// resource would ignore it anyway). If its lock had already ended, the client answers the new grant of a lock it
/// forgot with a FORCEUNLOCK.</item>
/// <item>Convert: not if the lock is absent (recovery re-asserts it and re-sends a still-pending conversion to the
/// rebuilt resource), converting, or granted in the requested mode (applied); otherwise applied.</item>
/// <item>Unlock, cancel: always applied. On a lock that is gone the resource answers a refusal, which the client ignores
/// for a lock it forgot and which ends a caller's wait otherwise (whose first answer may have died with the node).</item>
/// </list>
/// </summary>
public static class RepeatedLockCommands
{
    /// <summary>Whether a possibly repeated <paramref name="command"/> goes to the resource, given its current dump.</summary>
    public static bool ShouldApply(ILockResourceCommand command, LockResourceDump resource)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentNullException.ThrowIfNull(resource);
        switch (command)
        {
            case LockRequest request:
                return Find(resource, request.LockId) is null;
            case ConvertLock convert:
                var found = Find(resource, convert.LockId);
                return found is { Queue: Queue.Granted } granted && granted.Lock.GrantedMode != convert.Mode;
            default:
                return true;
        }
    }

    private enum Queue
    {
        Granted,
        Converting,
        Waiting,
    }

    private static (LockDump Lock, Queue Queue)? Find(LockResourceDump resource, long lockId)
    {
        foreach (var (queue, locks) in new[] { (Queue.Converting, resource.Converting), (Queue.Granted, resource.Granted), (Queue.Waiting, resource.Waiting) })
        {
            if (locks.FirstOrDefault(l => l.LockId == lockId) is { } found)
            {
                return (found, queue);
            }
        }

        return null;
    }
}

/// <summary>How the lock client's commands reach their resources.</summary>
internal interface ILockCommandPath
{
    /// <summary>
    /// Sends <paramref name="command"/> with <paramref name="client"/> as the sender the resource answers. If the path
    /// gives up on it (the layer failed the call), <paramref name="client"/> is told <see cref="LockCommandLost"/>.
    /// </summary>
    void Send(ILockResourceCommand command, IActorRef client);

    /// <summary>A resource answered the client in process (its sender is an entity of this node's lock region).</summary>
    void AnsweredInProcess(string entityId);
}

/// <summary>The layer failed a command's call (this node was removed, the handler threw): its caller must not wait.</summary>
internal sealed record LockCommandLost(ILockResourceCommand Command, string Reason) : INoSerializationVerificationNeeded;

/// <summary>How a resource's completions and basts reach lock clients.</summary>
internal interface ILockReplyPath
{
    /// <summary>Sends <paramref name="message"/> (a completion or bast) to <paramref name="client"/>.</summary>
    void Send(IActorRef client, ILockProtocol message, IActorRef self);
}

/// <summary>Plain <c>Tell</c> to the local region (<see cref="LockTransport.Direct"/>).</summary>
internal sealed class DirectLockCommandPath(IActorRef region) : ILockCommandPath
{
    public void Send(ILockResourceCommand command, IActorRef client) => region.Tell(command, client);

    public void AnsweredInProcess(string entityId)
    {
    }
}

/// <summary>Plain <c>Tell</c> (<see cref="LockTransport.Direct"/>).</summary>
internal sealed class DirectLockReplyPath : ILockReplyPath
{
    public static readonly DirectLockReplyPath Instance = new();

    public void Send(IActorRef client, ILockProtocol message, IActorRef self) => client.Tell(message, self);
}

/// <summary>
/// Commands on the <c>lock#S</c> channels (<see cref="LockTransport.Reliable"/>), except to shards known to live on this
/// node, which get a plain <c>Tell</c> to the local region (<see cref="LocalShardRoutes"/>).
/// </summary>
internal sealed class ReliableLockCommandPath(ReliableSender sender, LockMessageExtractor extractor, IActorRef region) : ILockCommandPath
{
    /// <summary>Which shards take the in-process path.</summary>
    public LocalShardRoutes Routes { get; } = new();

    public void Send(ILockResourceCommand command, IActorRef client)
    {
        var shardId = extractor.ShardId(command.EntityId, command);
        if (Routes.TryDirect(shardId))
        {
            region.Tell(command, client);
            return;
        }

        var entityType = LockChannels.CommandEntityType(shardId);
        try
        {
            // The answer (completion) comes on the reply channel; the call's status only matters when it failed.
            sender.Post(entityType, command.EntityId, command, failure => client.Tell(new LockCommandLost(command, failure.Message)), () => Routes.LayerCallFinished(shardId));
        }
        catch (Exception ex)
        {
            Routes.LayerCallFinished(shardId);
            client.Tell(new LockCommandLost(command, ex.Message));
        }
    }

    public void AnsweredInProcess(string entityId) => Routes.ShardIsLocal(extractor.ShardId(entityId));
}

/// <summary>
/// Completions and basts on node-pinned channels to the client's node (<see cref="LockTransport.Reliable"/>): one channel
/// per (this node incarnation → client node incarnation), whose holder runs on the client's node and tells its lock
/// client. The resource does not wait: the call's status is only logged when it failed (the client's node was removed,
/// which fails every pending call to it).
/// </summary>
internal sealed class ReliableLockReplyPath(ActorSystem system, ReliableSender sender) : ILockReplyPath
{
    private readonly Cluster _cluster = Cluster.Get(system);
    private readonly ILoggingAdapter _log = Logging.GetLogger(system, typeof(ReliableLockReplyPath));

    public void Send(IActorRef client, ILockProtocol message, IActorRef self)
    {
        var address = client.Path.Address;
        if (address.HasLocalScope || address.Equals(_cluster.SelfAddress))
        {
            // In process: a local Tell cannot be lost.
            client.Tell(message, self);
            return;
        }

        var member = _cluster.State.Members.FirstOrDefault(m => m.Address.Equals(address));
        if (member is null)
        {
            _log.Warning("Not sending {0} to {1}: that node is not a member (any more)", message.GetType().Name, address);
            return;
        }

        var entityType = PinnedEntityType.Format(LockChannels.ReplyKind, member.UniqueAddress.Uid, address.ToString());
        try
        {
            sender.Post(entityType, LockManager.ClientName, message, failure => _log.Warning("Lock answer {0} was not delivered: {1}", message, failure.Message));
        }
        catch (ReliableMessagingException ex)
        {
            _log.Warning("Lock answer {0} was not sent: {1}", message, ex.Message);
        }
    }
}

/// <summary>
/// The receiving side of the DLM's channels on one node: registers the handler of every <c>lock#S</c> channel (runs on
/// the node of shard S: tells the command to the local region, in process, with the sending node's lock client as
/// sender) and of this node's pinned reply channel (tells the local lock client).
/// </summary>
internal static class LockMessagingHandlers
{
    public static void Register(ActorSystem system, LockstepMessaging messaging, IActorRef region, IActorRef localClient, LockingOptions options)
    {
        var log = Logging.GetLogger(system, typeof(LockMessagingHandlers));
        var clients = new ConcurrentDictionary<string, IActorRef>(StringComparer.Ordinal);
        var provider = ((ExtendedActorSystem)system).Provider;
        IActorRef ClientOf(string channelId) => clients.GetOrAdd(channelId, static (channel, provider) =>
        {
            MessagingChannel.TryParse(channel, out _, out var address, out _);
            return provider.ResolveActorRef(new RootActorPath(Address.Parse(address)) / "user" / LockManager.ClientName);
        }, provider);

        messaging.Handlers.RegisterPrefix(LockChannels.CommandPrefix, (context, payload) =>
        {
            if (payload is DumpLockResource dump)
            {
                // Through the channel, so a dump asked on a node is ordered behind that node's earlier commands.
                return AskDumpAsync(dump);
            }

            if (payload is not ILockResourceCommand command)
            {
                throw new InvalidOperationException($"a lock channel carried {payload.GetType().Name}, not a lock command");
            }

            var client = ClientOf(context.ChannelId);
            if (!context.PossiblyRepeated)
            {
                region.Tell(command, client);
                return Task.FromResult<Contracts.IProtocolMessage>(LockTrafficAccepted.Delivered);
            }

            return ApplyRepeatedAsync(command, client);
        });

        async Task<Contracts.IProtocolMessage> AskDumpAsync(DumpLockResource dump) =>
            await region.Ask<LockResourceDump>(dump, options.AskTimeout).ConfigureAwait(false);

        async Task<Contracts.IProtocolMessage> ApplyRepeatedAsync(ILockResourceCommand command, IActorRef client)
        {
            // The holder of this channel vanished with the resource's node (crash rule, see RepeatedLockCommands).
            var resource = await region.Ask<LockResourceDump>(new DumpLockResource(command.EntityId), options.AskTimeout).ConfigureAwait(false);
            if (!RepeatedLockCommands.ShouldApply(command, resource))
            {
                log.Info("Skipping a possibly repeated {0} of lock {1} on {2}: already applied or left to recovery", command.GetType().Name, LockIdOf(command), command.EntityId);
                return LockTrafficAccepted.Skipped;
            }

            region.Tell(command, client);
            return LockTrafficAccepted.Delivered;
        }

        var self = Cluster.Get(system).SelfUniqueAddress;
        messaging.Handlers.Register(PinnedEntityType.Format(LockChannels.ReplyKind, self.Uid, self.Address.ToString()), (_, payload) =>
        {
            // A repeat (only after this holder actor itself restarted) is harmless: the client ignores answers of
            // operations it no longer waits for.
            localClient.Tell(payload);
            return Task.FromResult<Contracts.IProtocolMessage>(LockTrafficAccepted.Delivered);
        });
    }

    private static long LockIdOf(ILockResourceCommand command) => command switch
    {
        LockRequest r => r.LockId,
        ConvertLock c => c.LockId,
        UnlockLock u => u.LockId,
        CancelLock c => c.LockId,
        _ => 0,
    };
}
