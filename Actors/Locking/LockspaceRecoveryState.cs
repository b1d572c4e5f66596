namespace Lockstep.Actors.Locking;

/// <summary>What <see cref="LockspaceRecoveryState"/> asks its actor to do.</summary>
public abstract record RecoveryEffect;

/// <summary>recover_prep: stop granting on this node and tell the applications.</summary>
public sealed record EnterPrepEffect(long Generation) : RecoveryEffect;

/// <summary>
/// recover_slot: purge every lock of <paramref name="Dead"/> from the resources this node hosts and
/// re-assert every lock this node's sessions hold; then report <see cref="LockspaceRecoveryState.SlotDone"/>
/// with <paramref name="Generation"/>. Purging a member twice is harmless, so the whole dead set is given.
/// </summary>
public sealed record RunSlotEffect(long Generation, IReadOnlyList<string> Dead) : RecoveryEffect;

/// <summary>Tell every member in <paramref name="To"/>: this node finished its work for every removal in <paramref name="Covered"/>.</summary>
public sealed record SendAckEffect(long Generation, IReadOnlyList<string> Covered, IReadOnlyList<string> To) : RecoveryEffect;

/// <summary>recover_done: every survivor finished; grant again. <paramref name="Dead"/> is empty when the unreachable members came back.</summary>
public sealed record RecoveryDoneEffect(long Generation, IReadOnlyList<string> Dead) : RecoveryEffect;

/// <summary>Where a node stands in recovery.</summary>
public enum RecoveryPhase
{
    /// <summary>Membership is settled; resources grant.</summary>
    Normal,

    /// <summary>A member is unreachable or leaving; nothing is granted until it comes back or is removed.</summary>
    Prep,

    /// <summary>A member was removed; waiting for our slot work and every survivor's acknowledgement.</summary>
    Recovering,
}

/// <summary>
/// One node's view of DLM recovery (fs/dlm's recover_prep → recover_slot → recover_done), driven by
/// cluster membership events and by survivors' acknowledgements. Members are keyed by unique address
/// (address + uid), so a node restarted on the same port is a new member.
/// <code>
///            unreachable/leaving                 removed (gen++)
///   Normal ─────────────────────▶ Prep ──────────────────────────▶ Recovering ◀─┐ removed again (gen++,
///     ▲  ◀── all reachable again ──┘                                  │      └──┘  slot work restarts)
///     └────────── own slot done for gen + every survivor acked its removals + none unsettled
/// </code>
/// Acknowledgements carry the cumulative set of removals the sender finished; a survivor is done for
/// us when its newest acknowledgement covers every removal we saw while it was a member. It acks only
/// after re-asserting its locks, so covering the newest removal means it re-asserted after that
/// removal moved shards. An acknowledgement older (lower generation) than the one we hold is ignored.
/// </summary>
public sealed class LockspaceRecoveryState
{
    private readonly SortedSet<string> _members = new(StringComparer.Ordinal);
    private readonly HashSet<string> _unreachable = [];
    private readonly HashSet<string> _leaving = [];
    private readonly SortedSet<string> _dead = new(StringComparer.Ordinal);
    private readonly HashSet<string> _completed = [];
    private readonly Dictionary<string, HashSet<string>> _expected = [];
    private readonly Dictionary<string, (long Generation, HashSet<string> Covered)> _acks = [];
    private long _slotDoneGeneration;

    /// <param name="self">This node's unique address.</param>
    public LockspaceRecoveryState(string self)
    {
        Self = self;
        _members.Add(self);
        _expected[self] = [];
    }

    public string Self { get; }

    public RecoveryPhase Phase { get; private set; }

    /// <summary>Bumped by every removal; recover_done reports it.</summary>
    public long Generation { get; private set; }

    /// <summary>Resources on this node may grant.</summary>
    public bool IsGranting => Phase == RecoveryPhase.Normal;

    /// <summary>Members (this node included) that are not removed.</summary>
    public IReadOnlyCollection<string> Members => _members;

    /// <summary>Members removed during the current recovery.</summary>
    public IReadOnlyCollection<string> Dead => _dead;

    /// <summary>More than half of the members (this node included) are reachable; without it a node fences itself.</summary>
    public bool HasMajority => (_members.Count - _unreachable.Count) * 2 > _members.Count;

    private HashSet<string>? _fencedAmong;

    /// <summary>Members when this node fenced itself; null while it is not fenced.</summary>
    public IReadOnlyCollection<string>? FencedAmong => _fencedAmong;

    /// <summary>
    /// Whether a fenced node may take requests again: more than half of the members it had when it
    /// fenced are still members and reachable. Removals learned while fenced do not shrink that base:
    /// a cut-off minority sees the majority's members removed while its resolver downs it, and would
    /// otherwise count itself a majority of one and unfence with a lock table missing the majority's
    /// locks (seen in LockPartitionTests). A removed member never returns (a restart is a new member),
    /// so such a node stays fenced until it is restarted.
    /// </summary>
    public bool MayUnfence =>
        _fencedAmong is null
            ? HasMajority
            : HasMajority && _fencedAmong.Count(m => _members.Contains(m) && !_unreachable.Contains(m)) * 2 > _fencedAmong.Count;

    /// <summary>This node fenced itself: remember whom it needs back.</summary>
    public void Fenced() => _fencedAmong = [.. _members];

    /// <summary>This node took requests again.</summary>
    public void Unfenced() => _fencedAmong = null;

    /// <summary>A member is Up.</summary>
    public IReadOnlyList<RecoveryEffect> MemberUp(string member)
    {
        if (_members.Add(member))
        {
            // It cannot have work for removals it never saw.
            _expected[member] = [];
        }

        return [];
    }

    /// <summary>The failure detector lost a member.</summary>
    public IReadOnlyList<RecoveryEffect> Unreachable(string member)
    {
        if (!_members.Contains(member) || member == Self)
        {
            return [];
        }

        _unreachable.Add(member);
        return Unsettle();
    }

    /// <summary>A member is leaving gracefully: its shards are about to be handed off.</summary>
    public IReadOnlyList<RecoveryEffect> Leaving(string member)
    {
        if (!_members.Contains(member) || member == Self)
        {
            return [];
        }

        _leaving.Add(member);
        return Unsettle();
    }

    /// <summary>An unreachable member is reachable again.</summary>
    public IReadOnlyList<RecoveryEffect> Reachable(string member)
    {
        if (!_unreachable.Remove(member))
        {
            return [];
        }

        if (Phase == RecoveryPhase.Prep && _unreachable.Count == 0 && _leaving.Count == 0)
        {
            // Nobody was removed: nothing to purge, nothing moved.
            Phase = RecoveryPhase.Normal;
            return [new RecoveryDoneEffect(Generation, [])];
        }

        return TryFinish();
    }

    /// <summary>A member was removed (downed by the resolver, or left): its slot must be recovered.</summary>
    public IReadOnlyList<RecoveryEffect> Removed(string member)
    {
        if (member == Self || !_members.Remove(member))
        {
            return [];
        }

        _unreachable.Remove(member);
        _leaving.Remove(member);
        _expected.Remove(member);
        _acks.Remove(member);
        _dead.Add(member);
        foreach (var survivor in _members)
        {
            _expected[survivor].Add(member);
        }

        Generation++;
        var effects = new List<RecoveryEffect>();
        if (Phase == RecoveryPhase.Normal)
        {
            effects.Add(new EnterPrepEffect(Generation));
        }

        Phase = RecoveryPhase.Recovering;
        effects.Add(new RunSlotEffect(Generation, [.. _dead]));
        return effects;
    }

    /// <summary>This node finished the slot work of <paramref name="generation"/> (purged, re-asserted).</summary>
    public IReadOnlyList<RecoveryEffect> SlotDone(long generation)
    {
        if (Phase != RecoveryPhase.Recovering || generation != Generation)
        {
            // Superseded by a later removal: that one's slot work is running.
            return [];
        }

        _completed.UnionWith(_dead);
        _slotDoneGeneration = generation;
        var covered = _completed.Order(StringComparer.Ordinal).ToList();
        var effects = new List<RecoveryEffect>
        {
            new SendAckEffect(generation, covered, _members.Where(m => m != Self).ToList()),
        };
        effects.AddRange(TryFinish());
        return effects;
    }

    /// <summary>A member reports that it finished its work for every removal in <paramref name="covered"/>.</summary>
    public IReadOnlyList<RecoveryEffect> Ack(string from, long generation, IReadOnlyList<string> covered)
    {
        if (from == Self || (_acks.TryGetValue(from, out var held) && held.Generation >= generation))
        {
            return [];
        }

        // Kept even from members not (yet) seen Up: an ack can overtake the membership event.
        _acks[from] = (generation, covered.ToHashSet(StringComparer.Ordinal));
        return TryFinish();
    }

    /// <summary>The survivors whose acknowledgement is still missing (for logs and dumps).</summary>
    public IReadOnlyList<string> Waiting() =>
        _members.Where(m => m != Self && !Acked(m)).ToList();

    private bool Acked(string member) =>
        _expected[member].Count == 0 || (_acks.TryGetValue(member, out var ack) && ack.Covered.IsSupersetOf(_expected[member]));

    private IReadOnlyList<RecoveryEffect> Unsettle()
    {
        if (Phase != RecoveryPhase.Normal)
        {
            return [];
        }

        Phase = RecoveryPhase.Prep;
        return [new EnterPrepEffect(Generation)];
    }

    private IReadOnlyList<RecoveryEffect> TryFinish()
    {
        if (Phase != RecoveryPhase.Recovering
            || _slotDoneGeneration != Generation
            || _unreachable.Count > 0
            || _leaving.Count > 0
            || _members.Any(m => m != Self && !Acked(m)))
        {
            return [];
        }

        var dead = _dead.ToList();
        _dead.Clear();
        foreach (var expected in _expected.Values)
        {
            expected.Clear();
        }

        Phase = RecoveryPhase.Normal;
        return [new RecoveryDoneEffect(Generation, dead)];
    }
}
