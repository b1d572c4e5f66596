namespace Lockstep.Contracts.Messaging;

/// <summary>
/// Marker for the reliable-messaging layer (the seed-000 "Message Holder"): the envelopes between a
/// node's outbox and the receiver-side holders, and the holder's journal events.
/// </summary>
public interface IMessagingProtocol : IProtocolMessage
{
}

/// <summary>
/// A payload already turned into bytes by Akka serialization. The layer carries user payloads and
/// handler statuses this way so the holder can journal them and the sender can re-send them without
/// serializing again; it also keeps the envelopes free of open-ended object graphs.
/// </summary>
/// <param name="SerializerId">Akka serializer identifier that produced <paramref name="Bytes"/>.</param>
/// <param name="Manifest">The serializer's manifest (empty when the serializer needs none).</param>
/// <param name="Bytes">The serialized payload.</param>
public sealed record SerializedPayload(int SerializerId, string Manifest, byte[] Bytes);

/// <summary>Why a holder refused to accept a request (the sender re-sends later or fails the call).</summary>
public enum HolderRejectReason
{
    /// <summary>Not used on the wire; the default value.</summary>
    None = 0,

    /// <summary>The channel's holder table is at its cap; the sender backs off and re-sends.</summary>
    ChannelFull = 1,

    /// <summary>No handler is registered for the entity type on the holder's node (yet); re-send later.</summary>
    NoHandler = 2,

    /// <summary>The holder is handing its channel over to a new incarnation; re-send later.</summary>
    Moving = 3,

    /// <summary>The channel was purged because its sending node left the cluster; the call fails.</summary>
    SenderGone = 4,

    /// <summary>
    /// The request names another holder incarnation (or none): this incarnation runs only requests sent by a
    /// sender that knows it, so a stale re-send can never run something a previous incarnation ran. The sender
    /// adopts the incarnation in the rejection and re-sends.
    /// </summary>
    StaleIncarnation = 5,
}

/// <summary>
/// Channel names. A channel is one sending node incarnation (address + uid) talking to one receiving
/// entity type; its holder is the sharded entity whose id is the channel name.
/// </summary>
public static class MessagingChannel
{
    private const char Separator = '|';

    /// <summary>Builds the channel name <c>{entityType}|{senderAddress}|{senderUid}</c>.</summary>
    public static string Format(string entityType, string senderAddress, long senderUid)
    {
        if (string.IsNullOrEmpty(entityType) || entityType.Contains(Separator, StringComparison.Ordinal))
        {
            throw new ArgumentException($"Entity type '{entityType}' must be non-empty and must not contain '{Separator}'.", nameof(entityType));
        }

        return $"{entityType}{Separator}{senderAddress}{Separator}{senderUid}";
    }

    /// <summary>Splits a channel name; false (never an exception) for anything malformed.</summary>
    public static bool TryParse(string? channelId, out string entityType, out string senderAddress, out long senderUid)
    {
        entityType = senderAddress = string.Empty;
        senderUid = 0;
        if (string.IsNullOrEmpty(channelId))
        {
            return false;
        }

        var first = channelId.IndexOf(Separator, StringComparison.Ordinal);
        var last = channelId.LastIndexOf(Separator);
        if (first <= 0 || last <= first + 1 || !long.TryParse(channelId.AsSpan(last + 1), out senderUid))
        {
            return false;
        }

        entityType = channelId[..first];
        senderAddress = channelId[(first + 1)..last];
        return true;
    }
}

/// <summary>
/// A request on a channel, sent by the sender's outbox to the channel's holder (routed by
/// <see cref="EntityId"/> = channel). Re-sent unchanged except for <paramref name="Attempt"/>,
/// <paramref name="Floor"/>, <paramref name="RunHorizon"/>, <paramref name="KnownIncarnation"/> and <paramref name="MayHaveRun"/>.
/// </summary>
/// <param name="ChannelId">The channel (see <see cref="MessagingChannel"/>).</param>
/// <param name="Seq">Sequence number in the channel, from 1, without gaps.</param>
/// <param name="Floor">Every seq below this one is complete at the sender (its holder entry was dropped).</param>
/// <param name="RunHorizon">Every seq below this one is known to have been started by an earlier holder incarnation (handed over).</param>
/// <param name="KnownIncarnation">The holder incarnation the sender last heard from, or <see cref="Guid.Empty"/>.</param>
/// <param name="MayHaveRun">A holder incarnation that vanished without handing over may have run it (crash of its node).</param>
/// <param name="Attempt">1 for the first transmission, then 2, 3, … for re-sends.</param>
/// <param name="TargetId">The receiving entity's id, passed to the handler.</param>
/// <param name="Payload">The request.</param>
public sealed record HolderDeliver(
    string ChannelId, long Seq, long Floor, long RunHorizon, Guid KnownIncarnation, bool MayHaveRun, int Attempt, string TargetId, SerializedPayload Payload)
    : IMessagingProtocol, IWithEntityId
{
    /// <inheritdoc />
    public string EntityId => ChannelId;
}

/// <summary>The handler's status for a request, from the holder to the sender's outbox.</summary>
public sealed record HolderStatus(string ChannelId, long Seq, Guid HolderIncarnation, SerializedPayload Status) : IMessagingProtocol;

/// <summary>The sender has the status: the holder may forget the entry (and confirms with <see cref="HolderDropConfirmed"/>).</summary>
public sealed record HolderDrop(string ChannelId, long Seq) : IMessagingProtocol, IWithEntityId
{
    /// <inheritdoc />
    public string EntityId => ChannelId;
}

/// <summary>The holder no longer keeps the entry: only now is the call complete for the caller.</summary>
public sealed record HolderDropConfirmed(string ChannelId, long Seq, Guid HolderIncarnation) : IMessagingProtocol;

/// <summary>
/// The holder has later seqs of the channel waiting but not <paramref name="Seq"/>, which must run first: it was
/// probably lost. The sender re-sends it now instead of at its resend timer, so one lost envelope does not stall the
/// channel's in-order handlers for a whole resend interval. A hint only: losing it costs that interval, no more.
/// </summary>
/// <param name="ChannelId">The channel.</param>
/// <param name="Seq">The missing seq (the holder's next to run).</param>
/// <param name="HolderIncarnation">The reporting holder incarnation.</param>
public sealed record HolderGap(string ChannelId, long Seq, Guid HolderIncarnation) : IMessagingProtocol;

/// <summary>The holder did not accept a request; see <see cref="HolderRejectReason"/>.</summary>
/// <param name="ChannelId">The channel.</param>
/// <param name="Seq">The refused seq.</param>
/// <param name="Reason">Why.</param>
/// <param name="Cap">The channel's entry cap (reported so operators see the limit that was hit).</param>
/// <param name="InUse">Entries the channel held when it refused.</param>
/// <param name="HolderIncarnation">The refusing incarnation.</param>
public sealed record HolderRejected(string ChannelId, long Seq, HolderRejectReason Reason, int Cap, int InUse, Guid HolderIncarnation) : IMessagingProtocol;

/// <summary>
/// A moving in-memory holder hands what it knows to the sender before it stops, so the next incarnation
/// does not run anything twice: every seq below <paramref name="NextToRun"/> was started, and
/// <paramref name="Completed"/> are the statuses not yet dropped.
/// </summary>
public sealed record HolderHandOver(string ChannelId, Guid HolderIncarnation, long NextToRun, IReadOnlyList<HandedOverStatus> Completed) : IMessagingProtocol;

/// <summary>One status inside a <see cref="HolderHandOver"/>.</summary>
public sealed record HandedOverStatus(long Seq, SerializedPayload Status);

/// <summary>The sender took over a <see cref="HolderHandOver"/>; the old holder may stop.</summary>
public sealed record HolderHandOverAck(string ChannelId, Guid HolderIncarnation) : IMessagingProtocol;

/// <summary>Drops a channel whose sending node is gone (recover_slot); answered with <see cref="ChannelPurged"/>.</summary>
public sealed record PurgeChannel(string ChannelId) : IMessagingProtocol, IWithEntityId
{
    /// <inheritdoc />
    public string EntityId => ChannelId;
}

/// <summary>How many entries a purge dropped.</summary>
public sealed record ChannelPurged(string ChannelId, int DroppedEntries) : IMessagingProtocol;

/// <summary>Asks a channel's holder for its counters; answered with <see cref="HolderStats"/>.</summary>
public sealed record GetHolderStats(string ChannelId) : IMessagingProtocol, IWithEntityId
{
    /// <inheritdoc />
    public string EntityId => ChannelId;
}

/// <summary>A holder's counters: table size against its cap, runs and rejections.</summary>
public sealed record HolderStats(string ChannelId, Guid HolderIncarnation, int Entries, int Cap, long NextToRun, long Runs, long Rejections) : IMessagingProtocol;

/// <summary>The status stored when a handler threw; the caller's <c>SendAsync</c> fails with it.</summary>
public sealed record HandlerFault(string ExceptionType, string Message) : IMessagingProtocol;

/// <summary>Journal event of a persisted holder: the handler for <paramref name="Seq"/> is about to run.</summary>
public sealed record HolderRunStarted(long Seq, string TargetId, SerializedPayload Payload) : IMessagingProtocol;

/// <summary>Journal event of a persisted holder: the handler for <paramref name="Seq"/> finished with this status.</summary>
public sealed record HolderRunCompleted(long Seq, SerializedPayload Status) : IMessagingProtocol;

/// <summary>Journal event of a persisted holder: the sender dropped <paramref name="Seq"/>.</summary>
public sealed record HolderEntryDropped(long Seq) : IMessagingProtocol;

/// <summary>Journal event of a persisted holder: the channel was purged.</summary>
public sealed record HolderChannelPurged(int DroppedEntries) : IMessagingProtocol;

/// <summary>Snapshot of a persisted holder: started-or-done entries and the run watermark.</summary>
public sealed record HolderSnapshot(long NextToRun, bool Purged, IReadOnlyList<HolderSnapshotEntry> Entries) : IMessagingProtocol;

/// <summary>One entry of a <see cref="HolderSnapshot"/>; <paramref name="Status"/> is null while it was running.</summary>
public sealed record HolderSnapshotEntry(long Seq, string TargetId, SerializedPayload Payload, SerializedPayload? Status);

/// <summary>The shard hand-off stop message of holders: finish running handlers, hand over, then stop.</summary>
public sealed record HolderHandOffStop : IMessagingProtocol
{
    /// <summary>The single instance.</summary>
    public static readonly HolderHandOffStop Instance = new();
}

/// <summary>
/// Several requests and drops of one channel in one remote message (the outbox collects what it sends while
/// working through its mailbox and sends one batch per holder). The holder handles them as if they had come one by
/// one: delivers in order, then drops. Cuts per-message remoting cost under load; an idle call waits for no batch.
/// </summary>
public sealed record HolderBatch(string ChannelId, IReadOnlyList<HolderDeliver> Delivers, IReadOnlyList<HolderDrop> Drops)
    : IMessagingProtocol, IWithEntityId
{
    /// <inheritdoc />
    public string EntityId => ChannelId;
}

/// <summary>Several statuses and drop confirmations from one holder to one outbox in one remote message.</summary>
public sealed record OutboxBatch(IReadOnlyList<HolderStatus> Statuses, IReadOnlyList<HolderDropConfirmed> Confirms) : IMessagingProtocol;
