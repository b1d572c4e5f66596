using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>What the outbox asks its actor to do; <typeparamref name="TCaller"/> is how a caller is completed.</summary>
public abstract record OutboxEffect<TCaller>;

/// <summary>Transmit a request (first time or re-send) to the channel's holder.</summary>
public sealed record OutboxTransmit<TCaller>(HolderDeliver Request) : OutboxEffect<TCaller>;

/// <summary>Transmit a drop of a held entry to the channel's holder.</summary>
public sealed record OutboxTransmitDrop<TCaller>(HolderDrop Drop) : OutboxEffect<TCaller>;

/// <summary>The call is complete: the status arrived and the holder confirmed the drop (a call that completes at its status: the status arrived).</summary>
public sealed record OutboxComplete<TCaller>(TCaller Caller, SerializedPayload Status) : OutboxEffect<TCaller>;

/// <summary>The call cannot complete (outbox full, or the receiving side purged the channel).</summary>
public sealed record OutboxFail<TCaller>(TCaller Caller, string Reason) : OutboxEffect<TCaller>;

/// <summary>Acknowledge a holder's hand-over so the old incarnation may stop.</summary>
public sealed record OutboxAckHandOver<TCaller>(HolderHandOverAck Ack) : OutboxEffect<TCaller>;

/// <summary>Timing and bounds of an outbox.</summary>
/// <param name="MaxInFlightPerChannel">Requests transmitted and not yet complete, per channel; the rest queue.
/// Keep it below the holder's cap so a well-behaved sender is never rejected for space.</param>
/// <param name="MaxQueuedPerChannel">Requests waiting to be transmitted, per channel; beyond it calls fail at once.</param>
/// <param name="InitialResendMs">First re-send after this long without an answer.</param>
/// <param name="MaxResendMs">Back-off doubles up to this.</param>
public sealed record OutboxLimits(int MaxInFlightPerChannel = 512, int MaxQueuedPerChannel = 100_000, long InitialResendMs = 300, long MaxResendMs = 3_000);

/// <summary>
/// The sender side of every channel of one node incarnation: assigns seqs, remembers what has no
/// confirmed drop yet, decides what to re-send and when a call is complete.
/// <code>
///  Send ─▶ Queued ──(window)──▶ AwaitingStatus ──HolderStatus──▶ AwaitingDrop ──HolderDropConfirmed──▶ complete (caller gets status)
///                                   │  ▲ re-send Deliver               │  ▲ re-send Drop
///                                   └──┘ timer (back-off) / re-association / new holder incarnation
/// </code>
/// A call completes only after the holder confirmed the drop (seed 000), so a completed call never leaves
/// an entry behind. Time is passed in (milliseconds of any monotonic clock) to keep the class pure.
/// <para>
/// A call sent with <c>completesAtStatus</c> (<see cref="ReliableSender.Post"/>: its caller only hears of failures)
/// skips the drop round: it completes when its status arrives and leaves the channel's in-flight set, so the channel's
/// <c>Floor</c> — carried by every later request — passes it, and the holder forgets done entries below the floor it
/// is sent. A seq that no request's floor has covered after <see cref="OutboxLimits.InitialResendMs"/> (the channel
/// went quiet, or an earlier call is still open) gets one plain drop from the timer. Each such seq is told to the
/// holder once, by a floor or a drop; if that one message is lost, the entry waits at the holder for the next request
/// of the channel (a stored status, harmless: its seq is below the run watermark and is never run again). This halves
/// the envelopes of a call (no drop, no confirmation): measured on the DLM, whose commands and answers are all posts.
/// </para>
/// </summary>
public sealed class OutboxState<TCaller>
{
    private readonly Dictionary<string, Channel> _channels = new(StringComparer.Ordinal);
    private readonly string _senderAddress;
    private readonly long _senderUid;

    // Receivers gone for good (Abandon): one entry per removed node incarnation with pinned channels.
    private readonly List<(Func<string, bool> EntityTypes, string Reason)> _abandoned = [];

    public OutboxState(string senderAddress, long senderUid, OutboxLimits limits)
    {
        _senderAddress = senderAddress;
        _senderUid = senderUid;
        Limits = limits;
    }

    private enum Phase
    {
        Queued,
        AwaitingStatus,
        AwaitingDrop,
    }

    public OutboxLimits Limits { get; }

    /// <summary>Transmissions after the first one, of requests and drops.</summary>
    public long Resends { get; private set; }

    /// <summary>Gap reports that brought a re-send forward (<see cref="OnGap"/>); the re-sends count in <see cref="Resends"/>.</summary>
    public long GapResends { get; private set; }

    /// <summary>Entries a <see cref="ResendAll"/> left for the timer because they had just been sent.</summary>
    public long ResendsDebounced { get; private set; }

    /// <summary>Why this outbox stopped accepting calls, or null while it runs (see <see cref="Close"/>).</summary>
    public string? ClosedReason { get; private set; }

    /// <summary>Calls not yet complete, over all channels (kept as entries come and go: the node reports it after every message).</summary>
    public int Pending { get; private set; }

    /// <summary>Calls completed at their status whose seq the holder has not been sent yet (by a floor or a drop).</summary>
    public int Undropped { get; private set; }

    /// <summary>The channel name this node uses for <paramref name="entityType"/>.</summary>
    public string ChannelFor(string entityType) => MessagingChannel.Format(entityType, _senderAddress, _senderUid);

    /// <summary>
    /// A caller sends <paramref name="payload"/> to <paramref name="targetId"/> of <paramref name="entityType"/>; with
    /// <paramref name="completesAtStatus"/> the call completes when its status arrives, without the drop round (see the class).
    /// </summary>
    public IReadOnlyList<OutboxEffect<TCaller>> Send(string entityType, string targetId, SerializedPayload payload, TCaller caller, long now, bool completesAtStatus = false)
    {
        if (ClosedReason is not null)
        {
            return [new OutboxFail<TCaller>(caller, ClosedReason)];
        }

        foreach (var (abandoned, reason) in _abandoned)
        {
            if (abandoned(entityType))
            {
                return [new OutboxFail<TCaller>(caller, reason)];
            }
        }

        var channel = GetChannel(ChannelFor(entityType));
        if (channel.Queue.Count >= Limits.MaxQueuedPerChannel)
        {
            return [new OutboxFail<TCaller>(caller, $"outbox for '{entityType}' has {Limits.MaxQueuedPerChannel} requests queued; the receiver is not keeping up")];
        }

        var entry = new Entry(channel.NextSeq++, targetId, payload, caller) { CompletesAtStatus = completesAtStatus };
        channel.Queue.Enqueue(entry);
        Pending++;
        var effects = new List<OutboxEffect<TCaller>>();
        Pump(channel, now, effects);
        return effects;
    }

    /// <summary>The holder answered a request with its handler's status.</summary>
    public IReadOnlyList<OutboxEffect<TCaller>> OnStatus(HolderStatus status, long now)
    {
        var effects = new List<OutboxEffect<TCaller>>();
        if (!_channels.TryGetValue(status.ChannelId, out var channel))
        {
            return effects;
        }

        NoteIncarnation(channel, status.HolderIncarnation, now, effects);
        if (channel.InFlight.TryGetValue(status.Seq, out var entry))
        {
            if (entry.Phase == Phase.AwaitingStatus && entry.CompletesAtStatus)
            {
                channel.InFlight.Remove(entry.Seq);
                Pending--;
                channel.Undropped.Add((entry.Seq, now));
                Undropped++;
                effects.Add(new OutboxComplete<TCaller>(entry.Caller, status.Status));
                Pump(channel, now, effects);
                return effects;
            }

            // A duplicate status while we wait for the drop confirmation means our drop may be lost: send again.
            if (entry.Phase == Phase.AwaitingStatus)
            {
                entry.Phase = Phase.AwaitingDrop;
                entry.Status = status.Status;
                entry.Attempts = 0;
            }

            TransmitDrop(channel, entry, now, effects);
        }

        return effects;
    }

    /// <summary>
    /// The holder reports <see cref="HolderGap.Seq"/> missing while later seqs wait. Re-send it a quarter of
    /// <see cref="OutboxLimits.InitialResendMs"/> after it was last sent: at once if that has passed, else by the
    /// timer at that mark (a request sent a moment ago may only have been overtaken; the holder reports each gap
    /// once, usually right after the later seqs were sent, so the report must not simply be ignored).
    /// </summary>
    public IReadOnlyList<OutboxEffect<TCaller>> OnGap(HolderGap gap, long now)
    {
        var effects = new List<OutboxEffect<TCaller>>();
        if (!_channels.TryGetValue(gap.ChannelId, out var channel)
            || !channel.InFlight.TryGetValue(gap.Seq, out var entry)
            || entry.Phase != Phase.AwaitingStatus)
        {
            return effects;
        }

        GapResends++;
        var due = entry.LastSentAt + Limits.InitialResendMs / 4;
        if (due <= now)
        {
            Retransmit(channel, entry, now, effects);
        }
        else
        {
            entry.NextResendAt = Math.Min(entry.NextResendAt, due);
        }

        return effects;
    }

    /// <summary>The holder confirmed the entry is gone: the call is complete.</summary>
    public IReadOnlyList<OutboxEffect<TCaller>> OnDropConfirmed(HolderDropConfirmed confirmed, long now)
    {
        var effects = new List<OutboxEffect<TCaller>>();
        if (!_channels.TryGetValue(confirmed.ChannelId, out var channel))
        {
            return effects;
        }

        NoteIncarnation(channel, confirmed.HolderIncarnation, now, effects);
        if (channel.InFlight.TryGetValue(confirmed.Seq, out var entry) && entry.Phase == Phase.AwaitingDrop)
        {
            channel.InFlight.Remove(entry.Seq);
            Pending--;
            effects.Add(new OutboxComplete<TCaller>(entry.Caller, entry.Status!));
            Pump(channel, now, effects);
        }

        // A confirmation for an entry still awaiting its status answers a stale duplicate; the real status follows.
        return effects;
    }

    /// <summary>The holder refused a request: re-send after back-off, or fail the call if the channel is gone.</summary>
    public IReadOnlyList<OutboxEffect<TCaller>> OnRejected(HolderRejected rejected, long now)
    {
        var effects = new List<OutboxEffect<TCaller>>();
        if (!_channels.TryGetValue(rejected.ChannelId, out var channel))
        {
            return effects;
        }

        // A StaleIncarnation rejection introduces the current incarnation; noting it re-sends the channel.
        NoteIncarnation(channel, rejected.HolderIncarnation, now, effects);
        if (!channel.InFlight.TryGetValue(rejected.Seq, out var entry) || entry.Phase != Phase.AwaitingStatus
            || rejected.Reason == HolderRejectReason.StaleIncarnation)
        {
            return effects;
        }

        if (rejected.Reason == HolderRejectReason.SenderGone)
        {
            // The receivers purged this node incarnation (they saw it removed): nothing can complete any more.
            FailAll(channel, $"the receivers purged channel '{channel.Id}': this node was removed from the cluster", effects);
            return effects;
        }

        // Back off from now; the earlier seqs are not affected (they are either held or will be re-sent).
        entry.NextResendAt = now + Backoff(entry.Attempts);
        return effects;
    }

    /// <summary>
    /// A moving holder handed over: its statuses count as received, every seq below its watermark was started,
    /// and requests it had waiting go to the next incarnation.
    /// </summary>
    public IReadOnlyList<OutboxEffect<TCaller>> OnHandOver(HolderHandOver handOver, long now)
    {
        var effects = new List<OutboxEffect<TCaller>>
        {
            new OutboxAckHandOver<TCaller>(new HolderHandOverAck(handOver.ChannelId, handOver.HolderIncarnation)),
        };
        if (!_channels.TryGetValue(handOver.ChannelId, out var channel) || channel.HandedOver.Contains(handOver.HolderIncarnation))
        {
            return effects;
        }

        channel.HandedOver.Add(handOver.HolderIncarnation);

        channel.RunHorizon = Math.Max(channel.RunHorizon, handOver.NextToRun);
        foreach (var done in handOver.Completed)
        {
            if (channel.InFlight.TryGetValue(done.Seq, out var entry) && entry.Phase == Phase.AwaitingStatus)
            {
                entry.Phase = Phase.AwaitingDrop;
                entry.Status = done.Status;
                entry.Attempts = 0;
            }
        }

        // The next incarnation introduces itself by refusing our first re-send (StaleIncarnation); re-send now so
        // that happens at once. Drops go out too: it confirms drops of entries it never had. If the incarnation
        // we knew is not the one handing over, ours vanished in between.
        ForgetKnownIncarnation(channel);
        ResendChannel(channel, now, effects);
        return effects;
    }

    /// <summary>
    /// Re-send what is outstanding (association re-established, a member left, shards moved). Resets back-off,
    /// since the cause of the silence is known to be gone. An entry sent less than <see cref="OutboxLimits.InitialResendMs"/>
    /// ago is not sent again now but due at that mark: re-sending every in-flight envelope on each of a burst of
    /// association events filled the endpoint writer's queue and starved the cluster heartbeats behind it
    /// (docs/messaging.md, "the 20,000-request stall").
    /// </summary>
    public IReadOnlyList<OutboxEffect<TCaller>> ResendAll(long now)
    {
        var effects = new List<OutboxEffect<TCaller>>();
        foreach (var channel in _channels.Values)
        {
            foreach (var entry in channel.InFlight.Values)
            {
                entry.Attempts = Math.Min(entry.Attempts, 1);
                var quietUntil = entry.LastSentAt + Limits.InitialResendMs;
                if (quietUntil > now)
                {
                    entry.NextResendAt = Math.Min(entry.NextResendAt, quietUntil);
                    ResendsDebounced++;
                }
                else
                {
                    Retransmit(channel, entry, now, effects);
                }
            }
        }

        return effects;
    }

    /// <summary>
    /// This node incarnation can no longer complete calls (it was removed from the cluster, or its actor system
    /// is stopping): every outstanding caller fails with <paramref name="reason"/> and later sends fail at once.
    /// Without this a caller on a downed node would wait forever: the receivers purge its channels and nobody
    /// would ever answer it. Whether a failed request ran is unknown to the caller (at most once).
    /// </summary>
    public IReadOnlyList<OutboxEffect<TCaller>> Close(string reason)
    {
        var effects = new List<OutboxEffect<TCaller>>();
        if (ClosedReason is not null)
        {
            return effects;
        }

        ClosedReason = reason;
        foreach (var channel in _channels.Values)
        {
            FailAll(channel, reason, effects);
        }

        return effects;
    }

    /// <summary>
    /// The receivers of every channel whose entity type matches <paramref name="entityTypes"/> are gone for good (a
    /// node-pinned channel whose node was removed): its calls fail with <paramref name="reason"/> and the channel is
    /// forgotten; a later send to such an entity type fails at once with the same reason.
    /// </summary>
    public IReadOnlyList<OutboxEffect<TCaller>> Abandon(Func<string, bool> entityTypes, string reason)
    {
        _abandoned.Add((entityTypes, reason));
        var effects = new List<OutboxEffect<TCaller>>();
        foreach (var channel in _channels.Values.ToList())
        {
            if (!MessagingChannel.TryParse(channel.Id, out var entityType, out _, out _) || !entityTypes(entityType))
            {
                continue;
            }

            FailAll(channel, reason, effects);

            // Its holders are gone with the receiver: nothing is left to drop there.
            Undropped -= channel.Undropped.Count;
            _channels.Remove(channel.Id);
        }

        return effects;
    }

    /// <summary>The resend timer: re-send what has waited past its back-off.</summary>
    public IReadOnlyList<OutboxEffect<TCaller>> Tick(long now)
    {
        var effects = new List<OutboxEffect<TCaller>>();
        foreach (var channel in _channels.Values)
        {
            foreach (var entry in channel.InFlight.Values)
            {
                if (entry.NextResendAt <= now)
                {
                    Retransmit(channel, entry, now, effects);
                }
            }

            if (channel.Undropped.Count > 0)
            {
                // No request's floor covered these in time (quiet channel, or an earlier call still open): drop them.
                Undropped -= channel.Undropped.RemoveAll(u =>
                {
                    if (u.CompletedAt + Limits.InitialResendMs > now)
                    {
                        return false;
                    }

                    effects.Add(new OutboxTransmitDrop<TCaller>(new HolderDrop(channel.Id, u.Seq)));
                    return true;
                });
            }
        }

        return effects;
    }

    /// <summary>Outstanding calls per phase for one entity type (diagnostics and tests).</summary>
    public (int Queued, int AwaitingStatus, int AwaitingDrop) Describe(string entityType)
    {
        if (!_channels.TryGetValue(ChannelFor(entityType), out var channel))
        {
            return (0, 0, 0);
        }

        var values = channel.InFlight.Values;
        return (channel.Queue.Count, values.Count(e => e.Phase == Phase.AwaitingStatus), values.Count(e => e.Phase == Phase.AwaitingDrop));
    }

    private void NoteIncarnation(Channel channel, Guid incarnation, long now, List<OutboxEffect<TCaller>> effects)
    {
        if (incarnation == Guid.Empty || incarnation == channel.KnownIncarnation || channel.HandedOver.Contains(incarnation))
        {
            return;
        }

        ForgetKnownIncarnation(channel);
        channel.KnownIncarnation = incarnation;

        // Everything sent so far named another incarnation and is refused by this one: re-send at once.
        ResendChannel(channel, now, effects);
    }

    private static void ForgetKnownIncarnation(Channel channel)
    {
        if (channel.KnownIncarnation != Guid.Empty && !channel.HandedOver.Contains(channel.KnownIncarnation))
        {
            // The incarnation we knew vanished without handing over (its node crashed): whatever it was sent
            // and has not answered may have run there. The handler is told, so it can be idempotent for those.
            channel.LostIncarnations++;
            foreach (var entry in channel.InFlight.Values)
            {
                entry.MayHaveRun |= entry.Phase == Phase.AwaitingStatus;
            }
        }

        channel.KnownIncarnation = Guid.Empty;
    }

    private void ResendChannel(Channel channel, long now, List<OutboxEffect<TCaller>> effects)
    {
        foreach (var entry in channel.InFlight.Values)
        {
            Retransmit(channel, entry, now, effects);
        }
    }

    private void Retransmit(Channel channel, Entry entry, long now, List<OutboxEffect<TCaller>> effects)
    {
        Resends++;
        if (entry.Phase == Phase.AwaitingStatus)
        {
            TransmitRequest(channel, entry, now, effects);
        }
        else
        {
            TransmitDrop(channel, entry, now, effects);
        }
    }

    /// <summary>Fails every call of <paramref name="channel"/>, in flight or queued, with <paramref name="reason"/> and empties it.</summary>
    private void FailAll(Channel channel, string reason, List<OutboxEffect<TCaller>> effects)
    {
        foreach (var gone in channel.InFlight.Values.Concat(channel.Queue))
        {
            effects.Add(new OutboxFail<TCaller>(gone.Caller, reason));
        }

        Pending -= channel.InFlight.Count + channel.Queue.Count;
        channel.InFlight.Clear();
        channel.Queue.Clear();
    }

    private void Pump(Channel channel, long now, List<OutboxEffect<TCaller>> effects)
    {
        // Seqs are assigned at enqueue and transmitted in queue order, so the holder sees them in order.
        while (channel.InFlight.Count < Limits.MaxInFlightPerChannel && channel.Queue.TryDequeue(out var next))
        {
            next.Phase = Phase.AwaitingStatus;
            channel.InFlight.Add(next.Seq, next);
            TransmitRequest(channel, next, now, effects);
        }
    }

    private void TransmitRequest(Channel channel, Entry entry, long now, List<OutboxEffect<TCaller>> effects)
    {
        entry.Attempts++;
        entry.LastSentAt = now;
        entry.NextResendAt = now + Backoff(entry.Attempts);
        var floor = channel.Floor;
        if (channel.Undropped.Count > 0)
        {
            // This request tells the holder the floor: the seqs below it need no drop of their own.
            Undropped -= channel.Undropped.RemoveAll(u => u.Seq < floor);
        }

        effects.Add(new OutboxTransmit<TCaller>(new HolderDeliver(
            channel.Id, entry.Seq, floor, channel.RunHorizon, channel.KnownIncarnation, entry.MayHaveRun, entry.Attempts, entry.TargetId, entry.Payload)));
    }

    private void TransmitDrop(Channel channel, Entry entry, long now, List<OutboxEffect<TCaller>> effects)
    {
        entry.Attempts++;
        entry.LastSentAt = now;
        entry.NextResendAt = now + Backoff(entry.Attempts);
        effects.Add(new OutboxTransmitDrop<TCaller>(new HolderDrop(channel.Id, entry.Seq)));
    }

    private long Backoff(int attempts)
    {
        var shift = Math.Clamp(attempts - 1, 0, 20);
        return Math.Min(Limits.InitialResendMs << shift, Limits.MaxResendMs);
    }

    private Channel GetChannel(string id)
    {
        if (!_channels.TryGetValue(id, out var channel))
        {
            channel = new Channel(id);
            _channels.Add(id, channel);
        }

        return channel;
    }

    private sealed class Channel(string id)
    {
        public string Id { get; } = id;

        public long NextSeq { get; set; } = 1;

        /// <summary>Transmitted and not complete, in seq order; every one is below every queued seq.</summary>
        public SortedDictionary<long, Entry> InFlight { get; } = new();

        /// <summary>Seqs assigned but not transmitted yet (the in-flight window is full).</summary>
        public Queue<Entry> Queue { get; } = new();

        /// <summary>Calls completed at their status whose seq no request's floor has covered yet, with when they completed.</summary>
        public List<(long Seq, long CompletedAt)> Undropped { get; } = [];

        /// <summary>Lowest seq not yet complete: all below were dropped by the holder, or completed at their status.</summary>
        public long Floor => InFlight.Count > 0 ? InFlight.First().Key : Queue.Count > 0 ? Queue.Peek().Seq : NextSeq;

        public long RunHorizon { get; set; } = 1;

        public Guid KnownIncarnation { get; set; }

        public HashSet<Guid> HandedOver { get; } = [];

        public int LostIncarnations { get; set; }
    }

    private sealed class Entry(long seq, string targetId, SerializedPayload payload, TCaller caller)
    {
        public long Seq { get; } = seq;

        public string TargetId { get; } = targetId;

        public SerializedPayload Payload { get; } = payload;

        public TCaller Caller { get; } = caller;

        public Phase Phase { get; set; } = Phase.Queued;

        public SerializedPayload? Status { get; set; }

        public int Attempts { get; set; }

        public long NextResendAt { get; set; }

        /// <summary>When this entry was last handed to the transport (long.MinValue / 2: never).</summary>
        public long LastSentAt { get; set; } = long.MinValue / 2;

        public bool MayHaveRun { get; set; }

        /// <summary>Completes when its status arrives, without the drop round.</summary>
        public bool CompletesAtStatus { get; init; }
    }
}
