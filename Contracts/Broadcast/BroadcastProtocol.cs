namespace Lockstep.Contracts.Broadcast;

/// <summary>Marker of the broadcast's node-to-node messages (gather, join, statistics, ping).</summary>
public interface IBroadcastProtocol : IProtocolMessage
{
}

/// <summary>A sender that holds a stream's TOKEN after a node died asks every member where it stands.</summary>
public sealed record GetStreamPosition(string Stream) : IBroadcastProtocol;

/// <summary>
/// Where one node stands in a stream: the last round it delivered, and that round's encoded bytes (so a sender that
/// missed it can publish it again to the nodes that missed it too).
/// </summary>
/// <param name="NodeId">The answering node.</param>
/// <param name="Stream">The stream asked about.</param>
/// <param name="LastSeq">The last round delivered there (or where it joined).</param>
/// <param name="Joined">The node holds the stream's ACK lock and takes part in its rounds.</param>
/// <param name="LastRound">The LVB bytes of round <paramref name="LastSeq"/>; null when the node delivered none.</param>
public sealed record StreamPosition(string NodeId, string Stream, bool Joined, long LastSeq, byte[]? LastRound) : IBroadcastProtocol;

/// <summary>Asks a node to join streams (take their ACK lock) so it receives their rounds.</summary>
public sealed record JoinStreams(IReadOnlyList<string> Streams) : IBroadcastProtocol;

/// <summary>A node's answer to <see cref="JoinStreams"/>: joined when <paramref name="Error"/> is null.</summary>
public sealed record StreamsJoined(string NodeId, IReadOnlyList<string> Streams, string? Error) : IBroadcastProtocol;

/// <summary>Asks a node for its broadcast statistics.</summary>
public sealed record GetBroadcastStats : IBroadcastProtocol
{
    public static readonly GetBroadcastStats Instance = new();
}

/// <summary>One node's broadcast statistics (<c>GET /v1/broadcast</c>).</summary>
public sealed record BroadcastNodeStats(string NodeId, IReadOnlyList<BroadcastStreamStats> Streams) : IBroadcastProtocol;

/// <summary>
/// One stream on one node. Sent/queued/latency are this node's own submissions; delivered counts what it processed
/// from every sender. Latency is submission to completion (every live node processed it), over the last 4,096.
/// </summary>
public sealed record BroadcastStreamStats(
    string Stream,
    bool Joined,
    string Phase,
    long LastSeq,
    long RoundsSent,
    long RoundsHealed,
    long RoundsDelivered,
    long Duplicates,
    long Gaps,
    long Gathers,
    long Failed,
    int InFlight,
    IReadOnlyDictionary<string, long> SentByType,
    IReadOnlyDictionary<string, long> DeliveredByType,
    double CompletionP50Ms,
    double CompletionP99Ms) : IBroadcastProtocol;

/// <summary>Asks a node how long it took to process the ping with <paramref name="Tag"/> from <paramref name="Origin"/>.</summary>
public sealed record GetPingTime(string Origin, long Tag) : IBroadcastProtocol;

/// <summary>
/// A node's record of one ping: when it delivered it (ms after the sender's submission, on the sender's clock where
/// the same process, else null) and how long its handlers took. Found false when the node never delivered it.
/// </summary>
public sealed record PingTime(string NodeId, long Tag, bool Found, long Seq, double HandlerMicros, DateTimeOffset DeliveredAt) : IBroadcastProtocol;

/// <summary>Stores a payload too large for a round's LVB under <paramref name="Key"/> (sharded by stream); answered <see cref="BroadcastPayloadStored"/> once persisted.</summary>
public sealed record StoreBroadcastPayload(string EntityId, Guid Key, byte[] Body) : IBroadcastProtocol, IWithEntityId;

/// <summary>The payload <paramref name="Key"/> is in the journal.</summary>
public sealed record BroadcastPayloadStored(Guid Key) : IBroadcastProtocol;

/// <summary>Asks for a stored payload.</summary>
public sealed record GetBroadcastPayload(string EntityId, Guid Key) : IBroadcastProtocol, IWithEntityId;

/// <summary>A stored payload; <paramref name="Body"/> is null when the store does not have it (any more).</summary>
public sealed record BroadcastPayload(Guid Key, byte[]? Body) : IBroadcastProtocol;

/// <summary>The journal event of <see cref="StoreBroadcastPayload"/>.</summary>
public sealed record BroadcastPayloadRecorded(Guid Key, byte[] Body) : IBroadcastProtocol;
