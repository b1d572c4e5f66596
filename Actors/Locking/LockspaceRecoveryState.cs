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

/// <summary>A joining node learned that no recovery it could host a rebuilt resource of is still running: grant.</summary>
public sealed record JoinSettledEffect : RecoveryEffect;

/// <summary>
/// What a node tells a joining one in its <c>RecoveryHello</c>: whether its membership view is settled
/// (nothing unreachable or leaving), the removals it is still recovering, and every removal it finished.
/// </summary>
public sealed record RecoveryReport(bool Settled, long Generation, IReadOnlyList<string> Recovering, IReadOnlyList<string> Covered);

/// <summary>Where a node stands in recovery.</summary>
public enum RecoveryPhase
{
    /// <summary>Membership is settled; resources grant.</summary>
    Normal,

    /// <summary>A member is unreachable or leaving; nothing is granted until it comes back or is removed.</summary>
    Prep,

    /// <summary>A member was removed; waiting for our slot work and every survivor's acknowledgement.</summary>
    Recovering,

    /// <summary>
    /// This node just joined: nothing is granted until every member has told it (hello) what it is still
    /// recovering and has acknowledged that work, so a resource of a dead node rebuilt here waits for the
    /// survivors' re-assertions.
    /// </summary>
    Joining,
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
/// <para>
/// A node that joins may have missed a removal (its first view no longer shows the dead member) while
/// the survivors still re-assert their locks; sharding may place a resource of the dead node here, and it
/// must not grant before those re-assertions. So a joining node starts in <see cref="RecoveryPhase.Joining"/>
/// and stays there until it has seen its first membership view, every other member's hello with a settled
/// view, and, for every removal a member reported still recovering, an acknowledgement (or a later hello)
/// from that member covering it.
/// </para>
/// </summary>
public sealed class LockspaceRecoveryState
{
    private readonly SortedSet<string> _members = new(StringComparer.Ordinal);
    private readonly HashSet<string> _unreachable = [];
    private readonly HashSet<string> _leaving = [];
    private readonly HashSet<string> _processGone = [];
    private readonly HashSet<string> _downedReachable = [];
    private readonly SortedSet<string> _dead = new(StringComparer.Ordinal);
    private readonly HashSet<string> _completed = [];
    private readonly Dictionary<string, HashSet<string>> _expected = [];
    private readonly Dictionary<string, (long Generation, HashSet<string> Covered)> _acks = [];
    private long _slotDoneGeneration;

    // Joining only: whether the first membership view was applied, the members whose settled hello
    // arrived, the removals each reported still recovering, and the removals each reported finished.
    private bool _joining;
    private bool _viewSeen;
    private readonly HashSet<string> _reported = [];
    private readonly Dictionary<string, HashSet<string>> _reportedRecovering = [];
    private readonly Dictionary<string, HashSet<string>> _reportedCovered = [];

    /// <param name="self">This node's unique address.</param>
    /// <param name="joining">
    /// The node is joining a cluster that may be recovering: it grants only after <see cref="InitialViewSeen"/>
    /// and every member's hello (<see cref="Hello"/>) and acknowledgements (see <see cref="RecoveryPhase.Joining"/>).
    /// </param>
    public LockspaceRecoveryState(string self, bool joining = false)
    {
        Self = self;
        _members.Add(self);
        _expected[self] = [];
        _joining = joining;
        Phase = joining ? RecoveryPhase.Joining : RecoveryPhase.Normal;
    }

    /// <summary>The node still waits for the other members' recovery status (joining).</summary>
    public bool IsJoining => _joining;

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

    /// <summary>
    /// A member was downed. Recovery starts now, not at its removal (leader actions and gossip later), if
    /// the member is unreachable: its node fenced itself before the resolver could down it (fence timeout
    /// shorter than stable-after), so it no longer acts on its locks. It also starts now if this node proved the
    /// member's process gone (<see cref="ProcessGone"/>: its remoting port refused connects), reachable or not:
    /// a dead process acts on nothing. Otherwise a downed reachable member (by an operator) still runs until it
    /// sees the Down itself; its slot waits for the removal, or for a proof that its process is gone.
    /// </summary>
    public IReadOnlyList<RecoveryEffect> Downed(string member)
    {
        if (_unreachable.Contains(member) || _processGone.Contains(member))
        {
            return Removed(member);
        }

        if (_members.Contains(member) && member != Self)
        {
            _downedReachable.Add(member);
        }

        return [];
    }

    /// <summary>
    /// This node proved the member's process gone (every connect to its remoting port refused). If it was already
    /// downed while this node still saw it reachable, its recovery starts now.
    /// </summary>
    public IReadOnlyList<RecoveryEffect> ProcessGone(string member)
    {
        if (member == Self || !_members.Contains(member))
        {
            return [];
        }

        _processGone.Add(member);
        return _downedReachable.Contains(member) ? Removed(member) : [];
    }

    /// <summary>The proof no longer holds (the member answered heartbeats again).</summary>
    public void ProcessGoneWithdrawn(string member) => _processGone.Remove(member);

    /// <summary>A member was removed (downed by the resolver, or left): its slot must be recovered.</summary>
    public IReadOnlyList<RecoveryEffect> Removed(string member)
    {
        if (member == Self || !_members.Remove(member))
        {
            return [];
        }

        _unreachable.Remove(member);
        _leaving.Remove(member);
        _processGone.Remove(member);
        _downedReachable.Remove(member);
        _expected.Remove(member);
        _acks.Remove(member);
        _dead.Add(member);
        foreach (var survivor in _members)
        {
            _expected[survivor].Add(member);
        }

        _reported.Remove(member);
        _reportedRecovering.Remove(member);
        _reportedCovered.Remove(member);
        Generation++;
        var effects = new List<RecoveryEffect>();
        if (Phase is RecoveryPhase.Normal or RecoveryPhase.Joining)
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

    /// <summary>Joining: the first membership view (current members, unreachable, leaving) has been applied.</summary>
    public IReadOnlyList<RecoveryEffect> InitialViewSeen()
    {
        _viewSeen = true;
        return TryFinish();
    }

    /// <summary>
    /// A member's hello: its recovery status (see <see cref="Report"/>). Only a joining node uses it; an
    /// unsettled view does not count, the joining node asks again.
    /// </summary>
    public IReadOnlyList<RecoveryEffect> Hello(string from, bool settled, IReadOnlyList<string> recovering, IReadOnlyList<string> covered)
    {
        if (!_joining || from == Self)
        {
            return [];
        }

        if (!settled)
        {
            // It may be about to learn of a removal our first view already lacks.
            _reported.Remove(from);
            return [];
        }

        _reported.Add(from);
        Set(_reportedCovered, from).UnionWith(covered);

        // Removals we saw ourselves are tracked by _expected; the others it must still acknowledge to us.
        Set(_reportedRecovering, from).UnionWith(recovering.Where(d => d != Self && !_members.Contains(d)));
        return TryFinish();
    }

    /// <summary>This node's status for another node's hello.</summary>
    public RecoveryReport Report() =>
        new(_unreachable.Count == 0 && _leaving.Count == 0, Generation, Phase == RecoveryPhase.Recovering ? [.. _dead] : [], _completed.Order(StringComparer.Ordinal).ToList());

    /// <summary>The survivors whose acknowledgement (or, while joining, hello) is still missing (for logs and dumps).</summary>
    public IReadOnlyList<string> Waiting() =>
        _members.Where(m => m != Self && (!Acked(m) || (_joining && !_reported.Contains(m)))).ToList();

    private bool Acked(string member)
    {
        var owed = _expected[member].Concat(_reportedRecovering.GetValueOrDefault(member) ?? []).ToList();
        return owed.Count == 0
            || owed.All(d => (_acks.TryGetValue(member, out var ack) && ack.Covered.Contains(d))
                             || (_reportedCovered.TryGetValue(member, out var reported) && reported.Contains(d)));
    }

    private static HashSet<string> Set(Dictionary<string, HashSet<string>> sets, string key)
    {
        if (!sets.TryGetValue(key, out var set))
        {
            set = new HashSet<string>(StringComparer.Ordinal);
            sets[key] = set;
        }

        return set;
    }

    /// <summary>Joining: the first view is in and every other member reported a settled status and acked what it reported recovering.</summary>
    private bool JoinSettled() =>
        _viewSeen && _members.All(m => m == Self || (_reported.Contains(m) && Acked(m)));

    private void EndJoin()
    {
        _joining = false;
        _reported.Clear();
        _reportedRecovering.Clear();
        _reportedCovered.Clear();
    }

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
        if (Phase == RecoveryPhase.Joining)
        {
            if (_unreachable.Count > 0 || _leaving.Count > 0 || !JoinSettled())
            {
                return [];
            }

            EndJoin();
            Phase = RecoveryPhase.Normal;
            return [new JoinSettledEffect()];
        }

        if (Phase != RecoveryPhase.Recovering
            || _slotDoneGeneration != Generation
            || _unreachable.Count > 0
            || _leaving.Count > 0
            || _members.Any(m => m != Self && !Acked(m))
            || (_joining && !JoinSettled()))
        {
            return [];
        }

        EndJoin();

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
