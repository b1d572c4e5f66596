using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Membership;
using Lockstep.Contracts.Broadcast;

namespace Lockstep.Actors.Broadcast;

/// <summary>What <see cref="BroadcastManager.PingAsync"/> measured: the round trip and each node's handler time.</summary>
public sealed record BroadcastPingResult(string Stream, long Seq, double CompletionMs, IReadOnlyList<PingTime> Nodes, IReadOnlyList<string> Missing);

/// <summary>
/// The ordered broadcast of one node: sends messages that every live node processes in one order per stream, and
/// delivers the cluster's messages to this node's subscribers.
/// <code>
/// var broadcast = BroadcastManager.Start(system, locks, new BroadcastOptions());
/// using var _ = broadcast.Subscribe(async (m, ct) =>
/// {
///     if (m.Message is MetadataUpdatedMessage u) await volumes.ReloadAsync(u.Volume, u.Generation, ct);
/// });
/// await broadcast.JoinAsync("vol/vm1");                                   // receive this stream's rounds
/// await broadcast.BroadcastAsync("vol/vm1", new MetadataUpdatedMessage("vm1", 7));   // returns once every node processed it
/// </code>
/// </summary>
public sealed class BroadcastManager
{
    /// <summary>Name of the node actor under <c>/user</c>; other nodes address it.</summary>
    public const string ActorName = "lockstep-broadcast";

    private readonly ActorSystem _system;
    private readonly IActorRef _node;
    private readonly string _nodeId;
    private readonly int _maxMessageBytes;

    /// <summary>Largest message this node sends: stored payloads are kept in memory by their store and the journal.</summary>
    public const int MaxStoredMessageBytes = 1 << 20;

    private readonly IActorRef _payloads;

    private BroadcastManager(ActorSystem system, IActorRef node, IActorRef payloads, string nodeId, BroadcastOptions options, BroadcastDelivery delivery)
    {
        _system = system;
        _node = node;
        _payloads = payloads;
        _nodeId = nodeId;
        Options = options;
        Delivery = delivery;
        _maxMessageBytes = options.LvbLength - BroadcastWire.RoundLength(nodeId, []);
    }

    public BroadcastOptions Options { get; }

    /// <summary>This node's subscribers, order log and ping records.</summary>
    public BroadcastDelivery Delivery { get; }

    public string NodeId => _nodeId;

    /// <summary>Starts the broadcast on a node whose DLM is <paramref name="locks"/>; joins <see cref="BroadcastOptions.Streams"/> and <c>global</c>.</summary>
    public static BroadcastManager Start(ActorSystem system, ILockManager locks, BroadcastOptions options)
    {
        options.Validate();
        var payloads = BroadcastPayloadEntity.StartRegion(system);
        var delivery = new BroadcastDelivery(locks.NodeId, options.HandlerTimeout, options.OrderLog, (stream, key) => LoadPayloadAsync(payloads, stream, key, options));
        var node = system.ActorOf(BroadcastNodeActor.Props(locks, options, delivery), ActorName);
        return new BroadcastManager(system, node, payloads, locks.NodeId, options, delivery);
    }

    /// <summary>Delivers every message this node processes to <paramref name="handler"/>; see <see cref="BroadcastDelivery.Subscribe"/>.</summary>
    public IDisposable Subscribe(Func<DeliveredMessage, CancellationToken, Task> handler) => Delivery.Subscribe(handler);

    /// <summary>
    /// Sends <paramref name="message"/> on <paramref name="stream"/> (joining it first if needed) and returns the
    /// round's sequence once every live node that joined the stream processed it.
    /// </summary>
    /// <exception cref="ArgumentException">Bad stream name, or a message too large for one round.</exception>
    /// <exception cref="BroadcastException">Not every node could be reached in time (see <see cref="BroadcastException.Unknown"/>).</exception>
    public async Task<long> BroadcastAsync(string stream, ClusterMessage message, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (BroadcastOptions.StreamError(stream) is { } error)
        {
            throw new ArgumentException(error, nameof(stream));
        }

        if (message is StoredPayloadReference)
        {
            throw new ArgumentException("a stored payload reference is the broadcast's own; send the message itself", nameof(message));
        }

        var bytes = BroadcastWire.EncodedLength(message);
        if (bytes > _maxMessageBytes)
        {
            // Too large for the LVB: stored durably first, and the round carries its key (ARCHITECTURE.md, Ordered broadcast).
            var body = BroadcastWire.EncodeMessage(message);
            if (body.Length > MaxStoredMessageBytes)
            {
                throw new ArgumentException($"a {message.Type} message of {body.Length} bytes is larger than {MaxStoredMessageBytes} bytes", nameof(message));
            }

            var key = Guid.NewGuid();
            await _payloads.Ask<BroadcastPayloadStored>(new StoreBroadcastPayload(stream, key, body), Options.GatherTimeout * Options.GatherAttempts, cancellationToken);
            message = new StoredPayloadReference(key, body.Length);
            bytes = BroadcastWire.EncodedLength(message);
        }

        var done = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        _node.Tell(new ToStream(stream, new SubmitBroadcast(message, bytes, done)));
        return await done.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Joins <paramref name="stream"/> on this node: from now on its rounds are delivered here.</summary>
    public async Task JoinAsync(string stream, CancellationToken cancellationToken = default)
    {
        if (BroadcastOptions.StreamError(stream) is { } error)
        {
            throw new ArgumentException(error, nameof(stream));
        }

        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _node.Tell(new ToStream(stream, new JoinStream(done)));
        await done.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Asks every Up member to join <paramref name="streams"/>; one answer per member (a member that did not answer in time has an error).</summary>
    public async Task<IReadOnlyList<StreamsJoined>> JoinEverywhereAsync(IReadOnlyList<string> streams, TimeSpan timeout) =>
        (await AskMembersAsync<StreamsJoined>(new JoinStreams(streams), timeout))
            .Select(a => a.Answer ?? new StreamsJoined(a.Address.ToString(), streams, $"no answer within {timeout.TotalSeconds:0.#} s")).ToList();

    /// <summary>This node's statistics.</summary>
    public Task<BroadcastNodeStats> StatsAsync(TimeSpan timeout) => _node.Ask<BroadcastNodeStats>(GetBroadcastStats.Instance, timeout);

    /// <summary>Every Up member's statistics; members that did not answer are listed by address.</summary>
    public async Task<(IReadOnlyList<BroadcastNodeStats> Nodes, IReadOnlyList<string> Missing)> ClusterStatsAsync(TimeSpan timeout)
    {
        var answers = await AskMembersAsync<BroadcastNodeStats>(GetBroadcastStats.Instance, timeout);
        return (answers.Answered(), answers.Missing());
    }

    /// <summary>
    /// Sends a no-op on <paramref name="stream"/> and asks every member how long its handlers took to process it —
    /// the operator's check that the broadcast path works end to end.
    /// </summary>
    public async Task<BroadcastPingResult> PingAsync(string stream, TimeSpan timeout)
    {
        var tag = Random.Shared.NextInt64(1, long.MaxValue);
        var started = Stopwatch.GetTimestamp();
        using var cancel = new CancellationTokenSource(timeout);
        var seq = await BroadcastAsync(stream, new NoopMessage(_nodeId, tag), cancel.Token);
        var completion = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        var answers = await AskMembersAsync<PingTime>(new GetPingTime(_nodeId, tag), timeout);
        return new BroadcastPingResult(stream, seq, completion, answers.Answered().OrderBy(p => p.NodeId, StringComparer.Ordinal).ToList(), answers.Missing());
    }

    /// <summary>Loads a stored payload for delivery, asking again while its store moves (a node died), within the gather bound.</summary>
    private static async Task<ClusterMessage> LoadPayloadAsync(IActorRef payloads, string stream, Guid key, BroadcastOptions options)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                var answer = await payloads.Ask<BroadcastPayload>(new GetBroadcastPayload(stream, key), options.GatherTimeout);
                return answer.Body is { } body
                    ? BroadcastWire.DecodeMessage(body)
                    : throw new BroadcastException($"stream '{stream}': stored payload {key} is gone", unknown: false);
            }
            catch (AskTimeoutException) when (attempt < options.GatherAttempts)
            {
                // The store's shard is moving to a survivor; it answers once it has recovered from the journal.
            }
        }
    }

    /// <summary>Asks every Up member's broadcast node actor.</summary>
    private Task<IReadOnlyList<(Address Address, T? Answer)>> AskMembersAsync<T>(object message, TimeSpan timeout)
        where T : class =>
        MemberAsk.EachAsync<T>(_system, Cluster.Get(_system).State.Members.Where(m => m.Status is MemberStatus.Up or MemberStatus.WeaklyUp).Select(m => m.Address), ActorName, message, timeout);
}
