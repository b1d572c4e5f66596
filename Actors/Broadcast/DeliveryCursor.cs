using Lockstep.Contracts.Broadcast;

namespace Lockstep.Actors.Broadcast;

/// <summary>How a round read from the MESSAGE LVB relates to what this node delivered.</summary>
public enum RoundClass
{
    /// <summary>The LVB holds no round (never written).</summary>
    None,

    /// <summary>Already delivered here (a healing round, or a bast that came late): acknowledge, do not deliver.</summary>
    Duplicate,

    /// <summary>The next round: deliver it.</summary>
    Next,

    /// <summary>A later round with rounds missing before it: the invariant that a live node misses at most the last round broke. Delivered, and counted.</summary>
    Gap,
}

/// <summary>
/// Where one node stands in one stream: the last round it delivered and that round's bytes (a sender gathering
/// positions after a death re-publishes them). Shared by the sender and receiver state of the stream, which never
/// run a cycle at the same time.
/// </summary>
public sealed class DeliveryCursor
{
    /// <summary>The node takes part in the stream's rounds (holds ACK); set by the join round.</summary>
    public bool Joined { get; private set; }

    /// <summary>Sequence of the last round delivered here (or the base the join round set); 0 before any.</summary>
    public long LastSeq { get; private set; }

    /// <summary>The LVB bytes of round <see cref="LastSeq"/>, if this node delivered it.</summary>
    public byte[]? LastRound { get; private set; }

    public long Delivered { get; private set; }

    public long Duplicates { get; private set; }

    public long Gaps { get; private set; }

    /// <summary>Rounds this node will never see because it joined (or rejoined) after them.</summary>
    public long Skipped { get; private set; }

    public RoundClass Classify(BroadcastRound? round) => round switch
    {
        null => RoundClass.None,
        _ when round.Seq <= LastSeq => RoundClass.Duplicate,
        _ when round.Seq == LastSeq + 1 => RoundClass.Next,
        _ => RoundClass.Gap,
    };

    /// <summary>Records that <paramref name="round"/> (classified Next or Gap) was delivered.</summary>
    public void Advance(BroadcastRound round, byte[] lvb)
    {
        if (round.Seq <= LastSeq)
        {
            throw new InvalidOperationException($"round {round.Seq} is not after the last delivered {LastSeq}");
        }

        if (Joined && round.Seq > LastSeq + 1)
        {
            Gaps += round.Seq - LastSeq - 1;
        }

        LastSeq = round.Seq;
        LastRound = lvb;
        Delivered++;
    }

    public void CountDuplicate() => Duplicates++;

    /// <summary>The join round fixed where this node starts: rounds up to <paramref name="seq"/> are not delivered here.</summary>
    public void JoinAt(long seq, byte[]? lvb)
    {
        if (seq > LastSeq)
        {
            Skipped += LastSeq == 0 && !Joined && Delivered == 0 ? 0 : seq - LastSeq;
            LastSeq = seq;
            LastRound = lvb;
        }

        Joined = true;
    }

    /// <summary>The node lost its locks (fenced, session lost): it must join again before it takes part.</summary>
    public void Leave() => Joined = false;
}
