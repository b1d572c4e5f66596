using Lockstep.Contracts.Broadcast;

namespace Lockstep.Actors.Broadcast;

/// <summary>What the sender asks its actor to do next.</summary>
public abstract record SenderEffect;

/// <summary>Convert TOKEN NL→EX with VALBLK and report its LVB (<see cref="BroadcastSenderState.TokenGranted"/>).</summary>
public sealed record TakeTokenEffect : SenderEffect;

/// <summary>Pause the receiver (the sender needs ACK and MESSAGE); report <see cref="BroadcastSenderState.ReceiverPaused"/>.</summary>
public sealed record PauseReceiverEffect : SenderEffect;

/// <summary>Join round: request a new ACK lock in CR (the receiver's next generation).</summary>
public sealed record JoinAckEffect : SenderEffect;

/// <summary>Convert MESSAGE NL→EX with VALBLK and report its LVB.</summary>
public sealed record TakeMessageEffect : SenderEffect;

/// <summary>Ask every other member where it stands in the stream (<see cref="GetStreamPosition"/>).</summary>
public sealed record GatherEffect : SenderEffect;

/// <summary>Convert MESSAGE EX→CW writing <paramref name="Lvb"/>: the round is now readable by receivers.</summary>
public sealed record PublishRoundEffect(BroadcastRound Round, byte[] Lvb, bool Healing) : SenderEffect;

/// <summary>Run the local handlers of the round, after every other node did (the sender still holds TOKEN, so its place in the order is the round's).</summary>
public sealed record DeliverLocallyEffect(BroadcastRound Round) : SenderEffect;

/// <summary>Convert ACK CR→EX: granted when every other joined node processed the round (or died).</summary>
public sealed record AwaitAckEffect : SenderEffect;

/// <summary>Convert ACK EX→CR: lets receivers re-take their ACK.</summary>
public sealed record DropAckEffect : SenderEffect;

/// <summary>Convert MESSAGE CW→NL (or EX→NL writing <paramref name="Lvb"/> when no round was published under this EX).</summary>
public sealed record DropMessageEffect(byte[]? Lvb) : SenderEffect;

/// <summary>Convert TOKEN EX→NL writing <paramref name="Lvb"/>, and resume the receiver.</summary>
public sealed record ReleaseTokenEffect(byte[] Lvb, TokenRecord Token) : SenderEffect;

/// <summary>The messages <paramref name="Ids"/> were processed by every live node as round <paramref name="Seq"/>.</summary>
public sealed record CompleteEffect(IReadOnlyList<long> Ids, long Seq) : SenderEffect;

/// <summary>The messages <paramref name="Ids"/> failed; <paramref name="Unknown"/>: they may have reached some nodes.</summary>
public sealed record FailEffect(IReadOnlyList<long> Ids, string Reason, bool Unknown) : SenderEffect;

/// <summary>One message waiting to be published.</summary>
public sealed record PendingMessage(long Id, ClusterMessage Message, int Bytes);

/// <summary>
/// The sending side of one stream on one node: md-cluster's TOKEN/MESSAGE/ACK send, with three additions — queued
/// messages travel as one round (batching), a sender that holds TOKEN may publish several rounds, and a sender that
/// cannot trust the previous round's completion (its sender died, a node was removed since, an LVB is not valid)
/// gathers every node's position and first re-publishes the last round to the nodes that missed it.
/// <code>
///  Idle ─Submit/Join/Heal─▶ TakingToken ─TokenGranted─▶ PausingReceiver ─ReceiverPaused─▶ (not joined: JoiningAck ─AckJoined─▶)
///      ┌──────────────────────────────────────────────────────────────────────────────────────────────────────────┘
///      ▼
///  TakingMessage ─MessageGranted─┬─(trusted)──────────────────────────────┐
///      ▲                         └─(untrusted)─▶ Gathering ─Gathered──────┤
///      │                                                                  ▼
///      │                              nothing to publish: DroppingMessage(EX→NL) ──▶ ReleasingToken ──▶ Idle
///      │                              a round:  Publishing ─Published─▶ AwaitingAck ─AckGranted─▶ DeliveringLocally (new here)
///      │                                                                                                          │ DeliveredLocally
///      │  more queued                                                                                              ▼
///      └────────────── DroppingMessage(CW→NL) ◀─MessageDropped... ◀─AckDropped─ DroppingAck ◀──── complete callers
///                            └─ nothing more ──▶ ReleasingToken ─TokenReleased─▶ Idle (or TakingToken when more queued)
///  AckTimedOut: the round's callers fail as "unknown"; DroppingMessage → ReleasingToken writes the token dirty.
///  Fault (any DLM failure): every caller fails → Broken (the actor rebuilds the stream).
/// </code>
/// An event that does not belong to the current phase throws.
/// </summary>
public sealed class BroadcastSenderState
{
    public enum Phase
    {
        Idle,
        TakingToken,
        PausingReceiver,
        JoiningAck,
        TakingMessage,
        Gathering,
        Publishing,
        DeliveringLocally,
        AwaitingAck,
        DroppingAck,
        DroppingMessage,
        ReleasingToken,
        Broken,
    }

    private readonly DeliveryCursor _cursor;
    private readonly string _nodeId;
    private readonly int _lvbLength;
    private readonly int _maxBatch;
    private readonly int _maxRoundsPerToken;
    private readonly Queue<PendingMessage> _queue = new();

    private List<PendingMessage> _inRound = [];
    private BroadcastRound? _round;
    private byte[]? _roundLvb;
    private bool _roundHeals;
    private TokenRecord? _token;
    private bool _trusted;
    private bool _dirty;
    private bool _joinAsked;
    private bool _healAsked;
    private int _roundsThisToken;
    private long _removalEpoch;
    private long _epochSeen;
    private long _epochAtGrant;
    private BroadcastRound? _lvbRound;
    private bool _lvbValid;

    /// <param name="cursor">The stream's delivery position on this node, shared with the receiver.</param>
    /// <param name="nodeId">This node's id (the origin of its rounds).</param>
    /// <param name="lvbLength">LVB bytes of the broadcast lockspace: the largest round.</param>
    /// <param name="maxBatch">Most messages in one round (1 = md-cluster's shape).</param>
    /// <param name="maxRoundsPerToken">Most rounds published under one TOKEN grant before letting others send.</param>
    public BroadcastSenderState(DeliveryCursor cursor, string nodeId, int lvbLength, int maxBatch, int maxRoundsPerToken)
    {
        _cursor = cursor;
        _nodeId = nodeId;
        _lvbLength = lvbLength;
        _maxBatch = Math.Max(1, maxBatch);
        _maxRoundsPerToken = Math.Max(1, maxRoundsPerToken);
    }

    public Phase Current { get; private set; } = Phase.Idle;

    /// <summary>Messages queued and in the round being published.</summary>
    public int InFlight => _queue.Count + _inRound.Count;

    public long RoundsPublished { get; private set; }

    public long RoundsHealed { get; private set; }

    public long Gathers { get; private set; }

    /// <summary>The largest message a round can carry from this node.</summary>
    public int MaxMessageBytes => _lvbLength - BroadcastWire.RoundLength(_nodeId, []);

    /// <summary>Queues a message; returns the effect that starts a send when the sender was idle.</summary>
    /// <exception cref="ArgumentException">The message cannot fit one round.</exception>
    public SenderEffect? Submit(PendingMessage message)
    {
        if (message.Bytes > MaxMessageBytes)
        {
            throw new ArgumentException($"a {message.Message.Type} message of {message.Bytes} bytes does not fit a round ({MaxMessageBytes} bytes at most)");
        }

        if (Current == Phase.Broken)
        {
            throw new InvalidOperationException("the stream is broken; it is being rebuilt");
        }

        _queue.Enqueue(message);
        return StartIfIdle();
    }

    /// <summary>Asks for the join round (take ACK, fix where this node starts).</summary>
    public SenderEffect? Join()
    {
        _joinAsked = true;
        return StartIfIdle();
    }

    /// <summary>A member was removed from the cluster: the next TOKEN holder must not trust the previous round.</summary>
    public SenderEffect? MemberRemoved()
    {
        _removalEpoch++;
        _healAsked = _cursor.Joined;
        return _healAsked ? StartIfIdle() : null;
    }

    public SenderEffect TokenGranted(byte[] lvb, bool valueNotValid)
    {
        Expect(Phase.TakingToken, nameof(TokenGranted));
        var record = valueNotValid ? null : BroadcastWire.DecodeToken(lvb);
        _token = record;
        _epochAtGrant = _removalEpoch;
        _trusted = false;
        _dirty = false;
        _roundsThisToken = 0;
        Current = Phase.PausingReceiver;
        return new PauseReceiverEffect();
    }

    public SenderEffect ReceiverPaused()
    {
        Expect(Phase.PausingReceiver, nameof(ReceiverPaused));
        if (!_cursor.Joined)
        {
            Current = Phase.JoiningAck;
            return new JoinAckEffect();
        }

        Current = Phase.TakingMessage;
        return new TakeMessageEffect();
    }

    public SenderEffect AckJoined()
    {
        Expect(Phase.JoiningAck, nameof(AckJoined));
        Current = Phase.TakingMessage;
        return new TakeMessageEffect();
    }

    /// <param name="lvb">The MESSAGE LVB.</param>
    /// <param name="valueNotValid">The DLM flagged it VALNOTVALID.</param>
    /// <param name="round">The decoded round; null when the LVB holds none (or does not decode).</param>
    public SenderEffect MessageGranted(byte[] lvb, bool valueNotValid, BroadcastRound? round)
    {
        Expect(Phase.TakingMessage, nameof(MessageGranted));
        _lvbRound = round;
        _lvbValid = !valueNotValid;
        if (_trusted)
        {
            return NextRound();
        }

        if (Trustworthy(round))
        {
            _trusted = true;
            if (!_cursor.Joined)
            {
                _cursor.JoinAt(_token!.Value.CompletedSeq, round is null ? null : lvb);
            }

            _epochSeen = _epochAtGrant;
            return NextRound();
        }

        Gathers++;
        Current = Phase.Gathering;
        return new GatherEffect();
    }

    /// <summary>Every other member answered <see cref="GetStreamPosition"/>.</summary>
    public SenderEffect Gathered(IReadOnlyList<StreamPosition> others)
    {
        Expect(Phase.Gathering, nameof(Gathered));
        var joined = others.Where(p => p.Joined).Select(p => (p.LastSeq, p.LastRound)).ToList();
        if (_cursor.Joined)
        {
            joined.Add((_cursor.LastSeq, _cursor.LastRound));
        }

        _trusted = true;
        _epochSeen = _epochAtGrant;
        if (joined.Count == 0)
        {
            // Nobody takes part: continue the numbering after whatever the LVBs still say.
            var start = Math.Max(_token?.CompletedSeq ?? 0, _lvbRound?.Seq ?? 0);
            _cursor.JoinAt(start, _lvbRound?.Seq == start ? BroadcastWire.EncodeRound(_lvbRound, _lvbLength) : null);
            return NextRound();
        }

        var max = joined.Max(p => p.LastSeq);
        var behind = joined.Any(p => p.LastSeq < max);
        var maxRound = joined.Where(p => p.LastSeq == max).Select(p => p.LastRound).FirstOrDefault(r => r is not null);
        if (!_cursor.Joined)
        {
            _cursor.JoinAt(max, maxRound);
        }

        if (behind && maxRound is not null && BroadcastWire.DecodeRound(maxRound) is { } heal)
        {
            // Some node processed round max and another did not (its sender died mid-round): publish it again.
            return Publish(heal, maxRound, healing: true, []);
        }

        return NextRound();
    }

    public SenderEffect Published()
    {
        Expect(Phase.Publishing, nameof(Published));
        Current = Phase.AwaitingAck;
        return new AwaitAckEffect();
    }

    /// <summary>
    /// ACK EX granted: every other live joined node processed the round. The sender processes it last, so a sender
    /// that dies before ACK never processed a round the survivors may forget.
    /// </summary>
    public IReadOnlyList<SenderEffect> AckGranted()
    {
        Expect(Phase.AwaitingAck, nameof(AckGranted));
        if (_cursor.Classify(_round) is RoundClass.Next or RoundClass.Gap)
        {
            Current = Phase.DeliveringLocally;
            return [new DeliverLocallyEffect(_round!)];
        }

        return RoundDone();
    }

    /// <summary>This node's handlers ran the round: returns the completion and the next step.</summary>
    public IReadOnlyList<SenderEffect> DeliveredLocally()
    {
        Expect(Phase.DeliveringLocally, nameof(DeliveredLocally));
        _cursor.Advance(_round!, _roundLvb!);
        return RoundDone();
    }

    private List<SenderEffect> RoundDone()
    {
        var effects = new List<SenderEffect>(2);
        if (_inRound.Count > 0)
        {
            effects.Add(new CompleteEffect(_inRound.Select(m => m.Id).ToList(), _round!.Seq));
        }

        if (_roundHeals)
        {
            RoundsHealed++;
        }
        else
        {
            RoundsPublished++;
        }

        _inRound = [];
        Current = Phase.DroppingAck;
        effects.Add(new DropAckEffect());
        return effects;
    }

    /// <summary>The ACK EX conversion timed out: some node neither processed the round nor was removed in time.</summary>
    public IReadOnlyList<SenderEffect> AckTimedOut(string reason)
    {
        Expect(Phase.AwaitingAck, nameof(AckTimedOut));
        var effects = new List<SenderEffect>(2);
        if (_inRound.Count > 0)
        {
            effects.Add(new FailEffect(_inRound.Select(m => m.Id).ToList(), $"round {_round!.Seq}: {reason}; it may have been processed by some nodes, and the next sender completes it there", Unknown: true));
        }

        _inRound = [];
        _dirty = true;
        Current = Phase.DroppingMessage;
        effects.Add(new DropMessageEffect(null));
        return effects;
    }

    public SenderEffect AckDropped()
    {
        Expect(Phase.DroppingAck, nameof(AckDropped));
        Current = Phase.DroppingMessage;
        return new DropMessageEffect(null);
    }

    public SenderEffect MessageDropped()
    {
        Expect(Phase.DroppingMessage, nameof(MessageDropped));
        if (!_dirty && _queue.Count > 0 && _roundsThisToken < _maxRoundsPerToken)
        {
            Current = Phase.TakingMessage;
            return new TakeMessageEffect();
        }

        var token = new TokenRecord(_cursor.LastSeq, _dirty);
        Current = Phase.ReleasingToken;
        return new ReleaseTokenEffect(BroadcastWire.EncodeToken(token, _lvbLength), token);
    }

    public SenderEffect? TokenReleased()
    {
        Expect(Phase.ReleasingToken, nameof(TokenReleased));
        Current = Phase.Idle;
        _joinAsked = !_cursor.Joined;
        if (_epochSeen == _removalEpoch)
        {
            _healAsked = false;
        }

        return StartIfIdle();
    }

    /// <summary>A DLM operation failed (fenced, lockspace lost): every queued and in-flight message fails.</summary>
    public FailEffect? Fault(string reason)
    {
        Current = Phase.Broken;
        _cursor.Leave();
        var ids = _inRound.Concat(_queue).Select(m => m.Id).ToList();
        _inRound = [];
        _queue.Clear();
        return ids.Count == 0 ? null : new FailEffect(ids, reason, Unknown: true);
    }

    /// <summary>The gather could not reach every member: fails what is queued and gives TOKEN up dirty.</summary>
    public IReadOnlyList<SenderEffect> GatherFailed(string reason)
    {
        Expect(Phase.Gathering, nameof(GatherFailed));
        var effects = new List<SenderEffect>(2);
        var ids = _queue.Select(m => m.Id).ToList();
        _queue.Clear();
        if (ids.Count > 0)
        {
            effects.Add(new FailEffect(ids, reason, Unknown: false));
        }

        _dirty = true;
        Current = Phase.DroppingMessage;
        effects.Add(new DropMessageEffect(RewriteLvb()));
        return effects;
    }

    private SenderEffect? StartIfIdle()
    {
        if (Current != Phase.Idle || (_queue.Count == 0 && !_joinAsked && !(_healAsked && _cursor.Joined)))
        {
            return null;
        }

        Current = Phase.TakingToken;
        return new TakeTokenEffect();
    }

    /// <summary>
    /// Whether the previous round is known to be complete everywhere without asking: the token was released clean,
    /// the MESSAGE LVB holds exactly that round, nobody was removed since this node last checked, and — when this
    /// node already takes part — it delivered that round itself.
    /// </summary>
    private bool Trustworthy(BroadcastRound? round)
    {
        if (_token is not { Dirty: false } token || (_epochAtGrant != _epochSeen && _cursor.Joined))
        {
            return false;
        }

        var lvbAgrees = round is null ? token.CompletedSeq == 0 : _lvbValid && round.Seq == token.CompletedSeq;
        return lvbAgrees && (!_cursor.Joined || _cursor.LastSeq == token.CompletedSeq);
    }

    private SenderEffect NextRound()
    {
        if (_queue.Count == 0)
        {
            Current = Phase.DroppingMessage;
            return new DropMessageEffect(RewriteLvb());
        }

        var batch = new List<PendingMessage>();
        var bytes = BroadcastWire.RoundLength(_nodeId, []);
        while (_queue.Count > 0 && batch.Count < _maxBatch && bytes + _queue.Peek().Bytes <= _lvbLength)
        {
            var next = _queue.Dequeue();
            bytes += next.Bytes;
            batch.Add(next);
        }

        var round = new BroadcastRound(_cursor.LastSeq + 1, _nodeId, batch.Select(m => m.Message).ToList());
        return Publish(round, BroadcastWire.EncodeRound(round, _lvbLength), healing: false, batch);
    }

    private SenderEffect Publish(BroadcastRound round, byte[] lvb, bool healing, List<PendingMessage> batch)
    {
        _round = round;
        _roundLvb = lvb;
        _roundHeals = healing;
        _inRound = batch;
        _roundsThisToken++;
        Current = Phase.Publishing;
        return new PublishRoundEffect(round, lvb, healing);
    }

    /// <summary>
    /// MESSAGE was taken EX but no round published under it: write back the last round, so the LVB is valid again
    /// (after a dead EX holder it was flagged not valid) and agrees with the token.
    /// </summary>
    private byte[]? RewriteLvb() => _cursor.LastRound is { } last && BroadcastWire.DecodeRound(last)?.Seq == _cursor.LastSeq
        ? last
        : _cursor.LastSeq == 0 ? new byte[_lvbLength] : null;

    private void Expect(Phase phase, string evt)
    {
        if (Current != phase)
        {
            throw new InvalidOperationException($"sender: {evt} in phase {Current} (expected {phase})");
        }
    }
}
