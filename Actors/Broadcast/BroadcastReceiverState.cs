using Lockstep.Contracts.Broadcast;

namespace Lockstep.Actors.Broadcast;

/// <summary>What the receiver asks its actor to do next (one DLM operation or one local delivery).</summary>
public abstract record ReceiverEffect;

/// <summary>Convert MESSAGE NL→CR with VALBLK and report the LVB (<see cref="BroadcastReceiverState.MessageRead"/>).</summary>
public sealed record ReadMessageEffect : ReceiverEffect;

/// <summary>Run the local handlers of <paramref name="Round"/>, then report <see cref="BroadcastReceiverState.Delivered"/>.</summary>
public sealed record DeliverRoundEffect(BroadcastRound Round) : ReceiverEffect;

/// <summary>Unlock the ACK lock (its CR was what held the sender's EX back).</summary>
public sealed record ReleaseAckEffect : ReceiverEffect;

/// <summary>Convert MESSAGE CR→PR: granted once the sender dropped its CW, i.e. after it down-converted ACK.</summary>
public sealed record ProtectMessageEffect : ReceiverEffect;

/// <summary>Request a new ACK lock in CR (with a bast); granted once the sender holds ACK in CR again.</summary>
public sealed record RetakeAckEffect : ReceiverEffect;

/// <summary>Convert MESSAGE PR→NL: the next sender's MESSAGE EX waits for this, so it finds every receiver back on ACK.</summary>
public sealed record SettleMessageEffect : ReceiverEffect;

/// <summary>The receiver went idle after a pause was asked: the sender may use ACK and MESSAGE now.</summary>
public sealed record ReceiverPausedEffect : ReceiverEffect;

/// <summary>
/// The receiving side of one stream on one node (md-cluster's <c>recv_daemon</c>). Every joined node holds ACK in
/// CR and MESSAGE in NL. A sender's ACK EX request sends this node a bast; the receiver then reads the round under
/// MESSAGE CR, delivers it if it is new, and lets go of ACK — the sender's EX is granted when every receiver did.
/// <code>
///                          AckBast(EX, current ack)
///   ┌──────────┐  Pause   ┌──────┐ ───────────────────▶ ┌─────────┐ MessageRead ┌────────────┐
///   │  Paused  │ ◀─────── │ Idle │                      │ Reading │ ──(next)──▶ │ Delivering │
///   └──────────┘ ───────▶ └──────┘                      └─────────┘             └────────────┘
///      Resume                ▲                               │ (duplicate / none)       │ Delivered
///                            │ Settled                       ▼                          ▼
///   ┌──────────┐ AckRetaken ┌─────────────┐ MessageProtected ┌───────────────┐ AckReleased ┌──────────────┐
///   │ Settling │ ◀───────── │ RetakingAck │ ◀─────────────── │ WaitingSender │ ◀────────── │ ReleasingAck │
///   └──────────┘            └─────────────┘                  └───────────────┘             └──────────────┘
///        │ Settled with a bast pending → Reading; with a pause asked → Paused
/// </code>
/// The stream starts Paused: the sender's join round takes ACK and fixes where this node starts, then resumes it.
/// An event that does not belong to the current phase throws.
/// </summary>
public sealed class BroadcastReceiverState(DeliveryCursor cursor)
{
    public enum Phase
    {
        Paused,
        Idle,
        Reading,
        Delivering,
        ReleasingAck,
        WaitingSender,
        RetakingAck,
        Settling,
    }

    private readonly DeliveryCursor _cursor = cursor;
    private bool _bastPending;
    private bool _pauseAsked;
    private bool _bastWhilePaused;
    private BroadcastRound? _delivering;
    private byte[]? _deliveringLvb;

    public Phase Current { get; private set; } = Phase.Paused;

    /// <summary>The generation of the ACK lock this node holds now; a bast for an older one is stale.</summary>
    public int AckGeneration { get; private set; }

    /// <summary>A bast arrived on the ACK lock of <paramref name="generation"/>, for <paramref name="blockedIsExclusive"/> (EX) or a weaker mode.</summary>
    public ReceiverEffect? AckBast(int generation, bool blockedIsExclusive)
    {
        // Only a sender asks ACK EX. A CR request blocked by our EX (we are the sender) is not a message.
        if (!blockedIsExclusive || generation != AckGeneration)
        {
            return null;
        }

        switch (Current)
        {
            case Phase.Idle:
                Current = Phase.Reading;
                return new ReadMessageEffect();
            case Phase.Paused:
                // The sender role owns ACK and MESSAGE now. The bast is stale (a sender can only be us while we hold
                // TOKEN) — or the next sender's, overtaking the grant of our TOKEN release from another master: look
                // at MESSAGE once resumed; a stale one costs a read that finds a duplicate.
                _bastWhilePaused = true;
                return null;
            default:
                // A bast for the ACK we re-took while this cycle was finishing: run another cycle right after.
                _bastPending = true;
                return null;
        }
    }

    /// <summary>MESSAGE CR was granted; <paramref name="lvb"/> is its LVB.</summary>
    public ReceiverEffect MessageRead(byte[] lvb, BroadcastRound? round)
    {
        Expect(Phase.Reading, nameof(MessageRead));
        switch (_cursor.Classify(round))
        {
            case RoundClass.Next or RoundClass.Gap:
                _delivering = round;
                _deliveringLvb = lvb;
                Current = Phase.Delivering;
                return new DeliverRoundEffect(round!);
            case RoundClass.Duplicate:
                _cursor.CountDuplicate();
                break;
        }

        Current = Phase.ReleasingAck;
        return new ReleaseAckEffect();
    }

    /// <summary>The local handlers of the round ran.</summary>
    public ReceiverEffect Delivered()
    {
        Expect(Phase.Delivering, nameof(Delivered));
        _cursor.Advance(_delivering!, _deliveringLvb!);
        _delivering = null;
        _deliveringLvb = null;
        Current = Phase.ReleasingAck;
        return new ReleaseAckEffect();
    }

    public ReceiverEffect AckReleased()
    {
        Expect(Phase.ReleasingAck, nameof(AckReleased));
        Current = Phase.WaitingSender;
        return new ProtectMessageEffect();
    }

    public ReceiverEffect MessageProtected()
    {
        Expect(Phase.WaitingSender, nameof(MessageProtected));
        Current = Phase.RetakingAck;
        AckGeneration++;
        return new RetakeAckEffect();
    }

    public ReceiverEffect AckRetaken()
    {
        Expect(Phase.RetakingAck, nameof(AckRetaken));
        Current = Phase.Settling;
        return new SettleMessageEffect();
    }

    public ReceiverEffect? Settled()
    {
        Expect(Phase.Settling, nameof(Settled));
        if (_pauseAsked)
        {
            _pauseAsked = false;
            _bastPending = false;
            _bastWhilePaused = false;
            Current = Phase.Paused;
            return new ReceiverPausedEffect();
        }

        if (_bastPending)
        {
            _bastPending = false;
            Current = Phase.Reading;
            return new ReadMessageEffect();
        }

        Current = Phase.Idle;
        return null;
    }

    /// <summary>
    /// The sender holds TOKEN and needs ACK and MESSAGE: pauses now when idle (returns the paused effect), else at the
    /// end of the cycle in progress (<see cref="Settled"/> returns it).
    /// </summary>
    public ReceiverEffect? Pause()
    {
        switch (Current)
        {
            case Phase.Paused or Phase.Idle:
                Current = Phase.Paused;
                _bastPending = false;
                _bastWhilePaused = false;
                return new ReceiverPausedEffect();
            default:
                _pauseAsked = true;
                return null;
        }
    }

    /// <summary>The sender let go of TOKEN; it leaves ACK held in CR. Returns a read when a bast came meanwhile.</summary>
    public ReceiverEffect? Resume()
    {
        Expect(Phase.Paused, nameof(Resume));
        if (!_cursor.Joined)
        {
            // The join round did not get through (a member did not answer the gather): stay out until one does.
            return null;
        }

        if (_bastWhilePaused)
        {
            _bastWhilePaused = false;
            Current = Phase.Reading;
            return new ReadMessageEffect();
        }

        Current = Phase.Idle;
        return null;
    }

    /// <summary>The sender's join round takes a fresh ACK lock: its generation.</summary>
    public int NextAckGeneration() => ++AckGeneration;

    private void Expect(Phase phase, string evt)
    {
        if (Current != phase)
        {
            throw new InvalidOperationException($"receiver: {evt} in phase {Current} (expected {phase})");
        }
    }
}
