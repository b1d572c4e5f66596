using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>Something the actor driving a <see cref="LockResourceState"/> must do after a command.</summary>
public abstract record LockEffect;

/// <summary>Deliver a completion AST for <paramref name="LockId"/>.</summary>
/// <param name="LockId">The lock the operation was on.</param>
/// <param name="Owner">Who to deliver it to.</param>
/// <param name="Operation">Which operation completed.</param>
/// <param name="Status">How it ended.</param>
/// <param name="GrantedMode">The mode the lock holds now (NL and meaningless once it is gone).</param>
/// <param name="Lvb">The resource's LVB when the grant returned it (VALBLK), else null.</param>
/// <param name="LvbSeq">Sequence of the LVB write the lock last saw; recovery keeps the newest copy.</param>
/// <param name="Flags">VALNOTVALID, DEMOTED, ALTMODE.</param>
public sealed record CompleteEffect(long LockId, LockOwner Owner, LockOperation Operation, LockStatus Status, LockMode GrantedMode, byte[]? Lvb, long LvbSeq, LockResultFlags Flags) : LockEffect;

/// <summary>Deliver a blocking AST: the holder of <paramref name="LockId"/> is in the way of <paramref name="BlockedMode"/>.</summary>
public sealed record BastEffect(long LockId, LockOwner Owner, LockMode BlockedMode) : LockEffect;

/// <summary>
/// An orphan left the resource: adopted (it lives on under the adopter's id), or dropped during a rebuild
/// because a live holder's re-assertion conflicts with it (so it had been adopted before the old master
/// died). The node whose session orphaned it stops keeping it for re-assertion.
/// </summary>
/// <param name="LockId">The orphan's id (its last owner's lock id).</param>
/// <param name="LastOwner">The session that orphaned it.</param>
public sealed record OrphanGoneEffect(long LockId, LockOwner LastOwner) : LockEffect;

/// <summary>Call <see cref="LockResourceState.Expire"/> for <paramref name="LockId"/> at <paramref name="DeadlineTicks"/> (UTC ticks).</summary>
public sealed record ScheduleTimeoutEffect(long LockId, long DeadlineTicks) : LockEffect;

/// <summary>Where a lock sits on its resource.</summary>
public enum LockQueue
{
    Granted,
    Converting,
    Waiting,
}

/// <summary>One lock on a resource (fs/dlm's lkb). Mutable, owned by its <see cref="LockResourceState"/>.</summary>
public sealed class LockEntry
{
    internal LockEntry(long id, LockOwner owner)
    {
        Id = id;
        Owner = owner;
    }

    public long Id { get; internal set; }

    /// <summary>The owner; for an orphan, the last owner.</summary>
    public LockOwner Owner { get; internal set; }

    /// <summary>The granted mode; null while a new request waits.</summary>
    public LockMode? Granted { get; internal set; }

    /// <summary>The mode asked for by the pending operation (equals <see cref="Granted"/> when idle).</summary>
    public LockMode Requested { get; internal set; }

    /// <summary>Flags of the pending (or last) operation.</summary>
    public LockFlags Flags { get; internal set; }

    public LockQueue Queue { get; internal set; }

    /// <summary>Whether the lock survives its owner as an orphan (sticky once set).</summary>
    public bool Persistent { get; internal set; }

    /// <summary>Whether the owner has gone and the lock waits for adoption.</summary>
    public bool IsOrphan { get; internal set; }

    /// <summary>The caller's LVB to write when the pending conversion or unlock writes one.</summary>
    internal byte[]? CallerLvb { get; set; }

    /// <summary>Highest mode a bast was sent for in this blocking episode; reset by every grant.</summary>
    internal LockMode? HighBast { get; set; }

    internal bool Demoted { get; set; }

    internal bool AltMode { get; set; }

    /// <summary>UTC ticks after which the pending operation times out; 0 for none.</summary>
    public long DeadlineTicks { get; internal set; }

    /// <summary>The LVB sequence this lock last read or wrote.</summary>
    public long LvbSeq { get; internal set; }

    /// <summary>Whether a request or conversion is pending.</summary>
    public bool IsPending => Queue != LockQueue.Granted;
}

/// <summary>
/// One lock resource (fs/dlm's rsb): grant, convert and wait queues, the LVB and the rules that
/// move locks between them. Pure and single-threaded; the resource actor feeds it commands and
/// carries out the returned effects. It is mutable for speed — it sits on the lock hot path —
/// but every public method is a whole command: it validates, changes state, and returns effects.
/// <code>
///                  request ──fits──▶ GRANTED ◀──fits── convert ──▶ (CONVDEADLK: demote to NL)
///                     │                ▲  │                │
///            no fit   ▼   grant_pending│  │ unlock         ▼ no fit
///                  WAITING ────────────┘  ▼             CONVERTING ──cancel/timeout──▶ GRANTED (old mode)
///          (cancel/timeout: gone)       gone
/// </code>
/// Order of service: conversions before new requests; FIFO within each queue; a conversion that
/// fits when asked is granted in place unless QUECVT; down-conversions always fit.
/// </summary>
public sealed class LockResourceState
{
    /// <summary>The default LVB length, as in fs/dlm lockspaces created by md-cluster.</summary>
    public const int DefaultLvbLength = 64;

    /// <summary>Longest resource name in bytes (UTF-8), as in fs/dlm.</summary>
    public const int MaxNameLength = 64;

    private readonly Dictionary<long, LockEntry> _locks = [];
    private readonly List<LockEntry> _granted = [];
    private readonly List<LockEntry> _converting = [];
    private readonly List<LockEntry> _waiting = [];
    private readonly byte[] _lvb;
    private LvbRebuild _rebuild;
    private List<LockEffect> _effects = [];

    /// <summary>Creates an empty resource.</summary>
    /// <param name="name">The resource name (for dumps).</param>
    /// <param name="lvbLength">LVB length of the lockspace: a positive multiple of 8.</param>
    public LockResourceState(string name, int lvbLength = DefaultLvbLength)
    {
        if (lvbLength <= 0 || lvbLength % 8 != 0 || lvbLength > 4096)
        {
            throw new ArgumentOutOfRangeException(nameof(lvbLength), lvbLength, "LVB length must be a multiple of 8 between 8 and 4096.");
        }

        Name = name;
        LvbLength = lvbLength;
        _lvb = new byte[lvbLength];
    }

    public string Name { get; }

    public int LvbLength { get; }

    /// <summary>The resource's current LVB (zeros until first written).</summary>
    public ReadOnlySpan<byte> Lvb => _lvb;

    /// <summary>Bumped by every LVB write.</summary>
    public long LvbSeq { get; private set; }

    /// <summary>Set when a PW/EX holder vanished or invalidated the LVB; cleared by the next write.</summary>
    public bool ValueNotValid { get; private set; }

    /// <summary>Whether the resource holds no lock at all (granted, converting, waiting or orphan): it may passivate.</summary>
    public bool IsEmpty => _locks.Count == 0;

    public IReadOnlyList<LockEntry> GrantQueue => _granted;

    public IReadOnlyList<LockEntry> ConvertQueue => _converting;

    public IReadOnlyList<LockEntry> WaitQueue => _waiting;

    /// <summary>
    /// Recovery (recover_prep until recover_done): while set, purges, unlocks, cancels and timeouts grant
    /// nothing that waits. New requests and conversions must not reach the state meanwhile; the actor
    /// holds them back.
    /// </summary>
    public bool GrantsSuspended { get; set; }

    /// <summary>recover_done: grants again, and grants whatever fits now. A rebuild is over: re-assertions no longer change the LVB.</summary>
    public IReadOnlyList<LockEffect> ResumeGrants()
    {
        BeginCommand();
        GrantsSuspended = false;
        _rebuild = LvbRebuild.None;
        GrantPending();
        return EndCommand();
    }

    /// <summary>
    /// Recovery: this resource's master died and it is rebuilt here from the survivors' re-asserted
    /// locks (fs/dlm's new master). Its LVB is not valid — a PW/EX holder on the dead node may have
    /// changed the data without writing it back — unless a re-asserted VALBLK lock above CR brings
    /// it (see <see cref="Reassert"/>). Lasts until <see cref="ResumeGrants"/>.
    /// </summary>
    public void BeginRebuild()
    {
        ValueNotValid = true;
        if (_rebuild == LvbRebuild.None)
        {
            _rebuild = LvbRebuild.NoCopy;
        }
    }

    /// <summary>Looks up a lock by id.</summary>
    public LockEntry? Find(long lockId) => _locks.GetValueOrDefault(lockId);

    /// <summary>A new lock request (fs/dlm dlm_lock without CONVERT).</summary>
    /// <param name="lockId">Id chosen by the caller, unique on this resource.</param>
    /// <param name="owner">Node, slot and session that will hold the lock.</param>
    /// <param name="mode">Requested mode.</param>
    /// <param name="flags">Request flags.</param>
    /// <param name="timeout">How long it may stay queued; null to wait indefinitely.</param>
    /// <param name="nowTicks">Current UTC ticks.</param>
    public IReadOnlyList<LockEffect> Request(long lockId, LockOwner owner, LockMode mode, LockFlags flags, TimeSpan? timeout, long nowTicks)
    {
        BeginCommand();
        var invalid = !Enum.IsDefined(mode)
            || _locks.ContainsKey(lockId)
            || (flags & (LockFlags.Convert | LockFlags.QueCvt | LockFlags.ConvDeadlk | LockFlags.ForceUnlock)) != 0
            || (flags.HasFlag(LockFlags.Expedite) && (mode != LockMode.NL || flags.HasFlag(LockFlags.NoQueue)))
            || (flags.HasFlag(LockFlags.NoQueueBast) && !flags.HasFlag(LockFlags.NoQueue))
            || (flags.HasFlag(LockFlags.AltPr) && flags.HasFlag(LockFlags.AltCw))
            || timeout is { Ticks: <= 0 };
        if (invalid)
        {
            // The id may belong to an existing lock; the completion names it but changes nothing.
            Emit(new CompleteEffect(lockId, owner, LockOperation.Request, LockStatus.Invalid, LockMode.NL, null, 0, LockResultFlags.None));
            return EndCommand();
        }

        if (flags.HasFlag(LockFlags.Orphan))
        {
            return Adopt(lockId, owner, mode, flags);
        }

        var lkb = new LockEntry(lockId, owner)
        {
            Requested = mode,
            Flags = flags,
            Persistent = flags.HasFlag(LockFlags.Persistent),
            Queue = LockQueue.Waiting,
        };

        if (CanBeGranted(lkb, now: true, out _))
        {
            _locks.Add(lockId, lkb);
            Grant(lkb, LockOperation.Request);
        }
        else if (!flags.HasFlag(LockFlags.NoQueue))
        {
            _locks.Add(lockId, lkb);
            _waiting.Add(lkb);
            ArmTimeout(lkb, timeout, nowTicks);
            SendBasts(lkb, includeConverting: false);
        }
        else
        {
            Emit(new CompleteEffect(lockId, owner, LockOperation.Request, LockStatus.WouldBlock, LockMode.NL, null, 0, LockResultFlags.None));
            if (flags.HasFlag(LockFlags.NoQueueBast))
            {
                SendBasts(lkb, includeConverting: true);
            }
        }

        return EndCommand();
    }

    /// <summary>
    /// A conversion of a granted lock to <paramref name="mode"/> (dlm_lock with CONVERT). The caller's
    /// <paramref name="lvb"/> is written on a down-conversion from PW/EX with VALBLK.
    /// </summary>
    public IReadOnlyList<LockEffect> Convert(long lockId, LockMode mode, LockFlags flags, byte[]? lvb, TimeSpan? timeout, long nowTicks)
    {
        BeginCommand();
        if (!_locks.TryGetValue(lockId, out var lkb) || lkb.IsOrphan)
        {
            return Fail(lockId, LockOperation.Convert, LockStatus.Invalid);
        }

        var granted = lkb.Granted!.Value;
        if (lkb.IsPending)
        {
            // One operation at a time per lock, as in fs/dlm (-EBUSY).
            Emit(new CompleteEffect(lockId, lkb.Owner, LockOperation.Convert, LockStatus.Busy, granted, null, lkb.LvbSeq, LockResultFlags.None));
            return EndCommand();
        }

        flags |= LockFlags.Convert;
        var invalid = !Enum.IsDefined(mode)
            || (flags & (LockFlags.Expedite | LockFlags.Orphan | LockFlags.ForceUnlock)) != 0
            || (flags.HasFlag(LockFlags.QueCvt) && !LockModes.QueCvtAllowed(granted, mode))
            || (flags.HasFlag(LockFlags.ConvDeadlk) && flags.HasFlag(LockFlags.NoQueue))
            || (flags.HasFlag(LockFlags.NoQueueBast) && !flags.HasFlag(LockFlags.NoQueue))
            || (flags.HasFlag(LockFlags.AltPr) && flags.HasFlag(LockFlags.AltCw))
            || (lvb is not null && lvb.Length > LvbLength)
            || timeout is { Ticks: <= 0 };
        if (invalid)
        {
            Emit(new CompleteEffect(lockId, lkb.Owner, LockOperation.Convert, LockStatus.Invalid, granted, null, lkb.LvbSeq, LockResultFlags.None));
            return EndCommand();
        }

        lkb.Requested = mode;
        lkb.Flags = flags;
        lkb.Persistent |= flags.HasFlag(LockFlags.Persistent);
        lkb.CallerLvb = lvb;
        lkb.Demoted = false;
        lkb.AltMode = false;

        if (CanBeGranted(lkb, now: true, out var deadlock))
        {
            Grant(lkb, LockOperation.Convert);
            GrantPending();
            return EndCommand();
        }

        if (deadlock)
        {
            Revert(lkb);
            Emit(new CompleteEffect(lockId, lkb.Owner, LockOperation.Convert, LockStatus.Deadlock, granted, null, lkb.LvbSeq, LockResultFlags.None));
            return EndCommand();
        }

        if (lkb.Demoted)
        {
            // Our demotion to NL may let conversions ahead of us through, and then perhaps us.
            GrantPendingConversions();
            if (CanBeGrantedCore(lkb, now: true))
            {
                Grant(lkb, LockOperation.Convert);
                GrantPending();
                return EndCommand();
            }
        }

        if (!flags.HasFlag(LockFlags.NoQueue))
        {
            _granted.Remove(lkb);
            _converting.Add(lkb);
            lkb.Queue = LockQueue.Converting;
            ArmTimeout(lkb, timeout, nowTicks);
            SendBasts(lkb, includeConverting: false);
            if (lkb.Demoted)
            {
                // Others may now fit beside our NL.
                GrantPending();
            }

            return EndCommand();
        }

        Revert(lkb);
        Emit(new CompleteEffect(lockId, lkb.Owner, LockOperation.Convert, LockStatus.WouldBlock, lkb.Granted!.Value, null, lkb.LvbSeq, LockResultFlags.None));
        if (flags.HasFlag(LockFlags.NoQueueBast))
        {
            lkb.Requested = mode;
            SendBasts(lkb, includeConverting: true);
            lkb.Requested = lkb.Granted!.Value;
        }

        return EndCommand();
    }

    /// <summary>
    /// Releases a lock; with FORCEUNLOCK also one whose request or conversion is pending. <paramref name="flags"/>
    /// may hold VALBLK, IVVALBLK and FORCEUNLOCK; the caller's <paramref name="lvb"/> is written when
    /// releasing PW/EX with VALBLK.
    /// </summary>
    public IReadOnlyList<LockEffect> Unlock(long lockId, LockFlags flags, byte[]? lvb)
    {
        BeginCommand();
        if (!_locks.TryGetValue(lockId, out var lkb) || lkb.IsOrphan
            || (flags & ~(LockFlags.ValBlk | LockFlags.IvValBlk | LockFlags.ForceUnlock)) != 0
            || (lvb is not null && lvb.Length > LvbLength))
        {
            return Fail(lockId, LockOperation.Unlock, LockStatus.Invalid);
        }

        if (lkb.IsPending)
        {
            if (!flags.HasFlag(LockFlags.ForceUnlock))
            {
                Emit(new CompleteEffect(lockId, lkb.Owner, LockOperation.Unlock, LockStatus.Busy, lkb.Granted ?? LockMode.NL, null, lkb.LvbSeq, LockResultFlags.None));
                return EndCommand();
            }

            // The pending operation ends first, so its caller is not left waiting.
            var op = lkb.Granted is null ? LockOperation.Request : LockOperation.Convert;
            Emit(new CompleteEffect(lockId, lkb.Owner, op, LockStatus.Cancelled, lkb.Granted ?? LockMode.NL, null, lkb.LvbSeq, LockResultFlags.None));
        }

        if (lkb.Granted is LockMode.PW or LockMode.EX)
        {
            WriteLvb(flags, lvb);
        }

        Remove(lkb);
        Emit(new CompleteEffect(lockId, lkb.Owner, LockOperation.Unlock, LockStatus.Unlocked, LockMode.NL, null, LvbSeq, LockResultFlags.None));
        GrantPending();
        return EndCommand();
    }

    /// <summary>Cancels the pending request (the lock goes away) or conversion (it keeps its granted mode).</summary>
    public IReadOnlyList<LockEffect> Cancel(long lockId)
    {
        BeginCommand();
        if (!_locks.TryGetValue(lockId, out var lkb) || lkb.IsOrphan)
        {
            return Fail(lockId, LockOperation.Cancel, LockStatus.Invalid);
        }

        if (!lkb.IsPending)
        {
            Emit(new CompleteEffect(lockId, lkb.Owner, LockOperation.Cancel, LockStatus.NotPending, lkb.Granted!.Value, null, lkb.LvbSeq, LockResultFlags.None));
            return EndCommand();
        }

        EndPending(lkb, LockStatus.Cancelled);
        GrantPending();
        return EndCommand();
    }

    /// <summary>The timer of a pending operation fired: it times out if it is still pending and due.</summary>
    public IReadOnlyList<LockEffect> Expire(long lockId, long nowTicks)
    {
        BeginCommand();
        if (_locks.TryGetValue(lockId, out var lkb) && lkb.IsPending && lkb.DeadlineTicks != 0)
        {
            if (lkb.DeadlineTicks <= nowTicks)
            {
                EndPending(lkb, LockStatus.TimedOut);
                GrantPending();
            }
            else
            {
                // A timer that fired early, or a stale one of an earlier operation: look again later.
                Emit(new ScheduleTimeoutEffect(lockId, lkb.DeadlineTicks));
            }
        }

        return EndCommand();
    }

    /// <summary>
    /// Removes every lock of a node (or of one session of it) — a node died or a session closed.
    /// PERSISTENT granted locks stay as orphans; a purged PW/EX holder leaves the LVB VALNOTVALID
    /// because it may have changed the protected data without writing the LVB back.
    /// </summary>
    /// <param name="nodeId">The owner node.</param>
    /// <param name="session">Only this session, or every session of the node when null.</param>
    public IReadOnlyList<LockEffect> PurgeOwner(string nodeId, Guid? session)
    {
        BeginCommand();
        var victims = _locks.Values
            .Where(l => !l.IsOrphan && l.Owner.NodeId == nodeId && (session is null || l.Owner.Session == session))
            .ToList();
        foreach (var lkb in victims)
        {
            if (lkb.Granted is LockMode.PW or LockMode.EX)
            {
                ValueNotValid = true;
            }

            if (lkb.Granted is not null && lkb.Persistent)
            {
                if (lkb.IsPending)
                {
                    Revert(lkb);
                }

                lkb.IsOrphan = true;
                lkb.DeadlineTicks = 0;
            }
            else
            {
                Remove(lkb);
            }
        }

        if (victims.Count > 0)
        {
            GrantPending();
        }

        return EndCommand();
    }

    /// <summary>
    /// Recovery: a surviving holder re-asserts a lock it holds on a restarted resource, with its
    /// copy of the LVB. While the resource is rebuilt (<see cref="BeginRebuild"/>) the LVB is
    /// recovered as fs/dlm's recover_lvb does, from VALBLK locks only: the copy of a lock above CR
    /// (CW, PR, PW, EX: nobody else could have written since it was granted) is taken and makes the
    /// LVB valid; otherwise the copy with the highest sequence (NL/CR holders read it at some grant)
    /// is taken and the LVB stays VALNOTVALID; without any VALBLK lock it stays zeros, not valid.
    /// A resource that survived keeps its own LVB. Fails as Invalid if the mode
    /// does not fit the locks already re-asserted (which would mean a lock was granted twice).
    /// With <see cref="LockFlags.Orphan"/> the node whose session orphaned a PERSISTENT lock
    /// re-asserts it, and it comes back as an orphan. Two granted locks that conflict cannot both be
    /// real: a live lock conflicting with a re-asserted orphan means the orphan was adopted before
    /// the old master died and the news of it died too, so the live lock wins and the orphan is
    /// dropped (<see cref="OrphanGoneEffect"/>); an orphan conflicting with anything is refused.
    /// </summary>
    public IReadOnlyList<LockEffect> Reassert(long lockId, LockOwner owner, LockMode mode, LockFlags flags, byte[]? lvb, long lvbSeq)
    {
        BeginCommand();
        var orphan = flags.HasFlag(LockFlags.Orphan);
        var conflicting = _granted.Concat(_converting).Where(l => Enum.IsDefined(mode) && !LockModes.Compatible(l.Granted!.Value, mode)).ToList();
        if (_locks.ContainsKey(lockId) || !Enum.IsDefined(mode) || (lvb is not null && lvb.Length > LvbLength)
            || (conflicting.Count > 0 && (orphan || conflicting.Any(l => !l.IsOrphan))))
        {
            return Fail(lockId, LockOperation.Request, LockStatus.Invalid, owner);
        }

        foreach (var stale in conflicting)
        {
            Remove(stale);
            Emit(new OrphanGoneEffect(stale.Id, stale.Owner));
        }

        var lkb = new LockEntry(lockId, owner)
        {
            Granted = mode,
            Requested = mode,
            Flags = flags & ~LockFlags.Orphan,
            Persistent = orphan || flags.HasFlag(LockFlags.Persistent),
            IsOrphan = orphan,
            Queue = LockQueue.Granted,
            LvbSeq = lvbSeq,
        };
        _locks.Add(lockId, lkb);
        _granted.Add(lkb);
        RecoverLvb(mode, flags, lvb, lvbSeq);
        Emit(new CompleteEffect(lockId, owner, LockOperation.Request, LockStatus.Granted, mode, null, LvbSeq, Flags(lkb)));
        return EndCommand();
    }

    /// <summary>recover_lvb, one re-asserted lock at a time (nothing is granted until the rebuild ends, so the order does not matter).</summary>
    private void RecoverLvb(LockMode mode, LockFlags flags, byte[]? lvb, long lvbSeq)
    {
        if (_rebuild is LvbRebuild.None or LvbRebuild.Vouched || !flags.HasFlag(LockFlags.ValBlk))
        {
            return;
        }

        var vouched = mode > LockMode.CR;
        if (!vouched && _rebuild == LvbRebuild.Newest && lvbSeq < LvbSeq)
        {
            return;
        }

        Array.Clear(_lvb);
        lvb?.CopyTo(_lvb, 0);
        LvbSeq = lvbSeq;
        _rebuild = vouched ? LvbRebuild.Vouched : LvbRebuild.Newest;
        ValueNotValid = !vouched;
    }

    private IReadOnlyList<LockEffect> Adopt(long lockId, LockOwner owner, LockMode mode, LockFlags flags)
    {
        var orphans = _granted.Where(l => l.IsOrphan).ToList();
        var match = orphans.FirstOrDefault(l => l.Granted == mode);
        if (match is null)
        {
            var status = orphans.Count == 0 ? LockStatus.NotFound : LockStatus.WouldBlock;
            Emit(new CompleteEffect(lockId, owner, LockOperation.Request, status, LockMode.NL, null, 0, LockResultFlags.None));
            return EndCommand();
        }

        // The orphan takes the adopter's id and owner; it stays where it is in the grant queue.
        Emit(new OrphanGoneEffect(match.Id, match.Owner));
        _locks.Remove(match.Id);
        match.Id = lockId;
        match.Owner = owner;
        match.IsOrphan = false;
        match.Flags = flags;
        match.HighBast = null;
        _locks.Add(lockId, match);
        var lvb = flags.HasFlag(LockFlags.ValBlk) ? _lvb.ToArray() : null;
        match.LvbSeq = LvbSeq;
        Emit(new CompleteEffect(lockId, owner, LockOperation.Request, LockStatus.Granted, mode, lvb, LvbSeq, Flags(match)));

        // Others may have queued behind the orphan while nobody could receive their basts.
        GrantPending();
        return EndCommand();
    }

    private void BeginCommand() => _effects = [];

    private IReadOnlyList<LockEffect> EndCommand()
    {
        var effects = _effects;
        _effects = [];
        return effects;
    }

    private void Emit(LockEffect effect) => _effects.Add(effect);

    private IReadOnlyList<LockEffect> Fail(long lockId, LockOperation op, LockStatus status, LockOwner? owner = null)
    {
        var lkb = _locks.GetValueOrDefault(lockId);
        var to = owner ?? lkb?.Owner;
        if (to is not null)
        {
            Emit(new CompleteEffect(lockId, to, op, status, lkb?.Granted ?? LockMode.NL, null, lkb?.LvbSeq ?? 0, LockResultFlags.None));
        }
        else
        {
            // Unknown lock: the actor answers the sender directly; the owner is not known here.
            Emit(new CompleteEffect(lockId, UnknownOwner, op, status, LockMode.NL, null, 0, LockResultFlags.None));
        }

        return EndCommand();
    }

    /// <summary>Placeholder owner on completions for a lock id the resource does not know.</summary>
    public static LockOwner UnknownOwner { get; } = new(string.Empty, 0, Guid.Empty);

    private void ArmTimeout(LockEntry lkb, TimeSpan? timeout, long nowTicks)
    {
        lkb.DeadlineTicks = timeout is { } t ? nowTicks + t.Ticks : 0;
        if (lkb.DeadlineTicks != 0)
        {
            Emit(new ScheduleTimeoutEffect(lkb.Id, lkb.DeadlineTicks));
        }
    }

    /// <summary>can_be_granted: the queue rules plus the CONVDEADLK and ALTPR/ALTCW extensions.</summary>
    private bool CanBeGranted(LockEntry lkb, bool now, out bool deadlock)
    {
        deadlock = false;
        if (CanBeGrantedCore(lkb, now))
        {
            return true;
        }

        if (lkb.Granted is not null && !lkb.Flags.HasFlag(LockFlags.NoQueue) && ConversionDeadlock(lkb))
        {
            if (lkb.Flags.HasFlag(LockFlags.ConvDeadlk))
            {
                lkb.Granted = LockMode.NL;
                lkb.Demoted = true;
            }
            else
            {
                deadlock = true;
            }

            return false;
        }

        var requested = lkb.Requested;
        LockMode? alt = requested != LockMode.PR && lkb.Flags.HasFlag(LockFlags.AltPr) ? LockMode.PR
            : requested != LockMode.CW && lkb.Flags.HasFlag(LockFlags.AltCw) ? LockMode.CW
            : null;
        if (alt is { } altMode)
        {
            lkb.Requested = altMode;
            if (CanBeGrantedCore(lkb, now))
            {
                lkb.AltMode = true;
                return true;
            }

            lkb.Requested = requested;
        }

        return false;
    }

    /// <summary>_can_be_granted: VAXcluster rules (Roy Davis, ch. 6) as fs/dlm applies them.</summary>
    private bool CanBeGrantedCore(LockEntry lkb, bool now)
    {
        var conversion = lkb.Granted is not null;
        if (lkb.Flags.HasFlag(LockFlags.Expedite))
        {
            return true;
        }

        if (Conflicts(_granted, lkb) || Conflicts(_converting, lkb))
        {
            return false;
        }

        if (now && conversion)
        {
            // In place unless QUECVT asks to keep FIFO order behind earlier conversions.
            return !lkb.Flags.HasFlag(LockFlags.QueCvt) || _converting.Count == 0;
        }

        if (conversion)
        {
            return _converting.Count > 0 && ReferenceEquals(_converting[0], lkb);
        }

        if (_converting.Count > 0)
        {
            return false;
        }

        return now ? _waiting.Count == 0 : _waiting.Count > 0 && ReferenceEquals(_waiting[0], lkb);
    }

    private static bool Conflicts(List<LockEntry> queue, LockEntry lkb)
    {
        foreach (var other in queue)
        {
            if (!ReferenceEquals(other, lkb) && !LockModes.Compatible(other.Granted!.Value, lkb.Requested))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// A conversion deadlocks when a conversion ahead of it waits for the mode it holds, or one
    /// behind it both blocks it and is blocked by it.
    /// </summary>
    private bool ConversionDeadlock(LockEntry lkb)
    {
        var ahead = true;
        foreach (var other in _converting)
        {
            if (ReferenceEquals(other, lkb))
            {
                ahead = false;
                continue;
            }

            var weBlockThem = !LockModes.Compatible(lkb.Granted!.Value, other.Requested);
            if (ahead ? weBlockThem : weBlockThem && !LockModes.Compatible(other.Granted!.Value, lkb.Requested))
            {
                return true;
            }
        }

        return false;
    }

    private void Grant(LockEntry lkb, LockOperation op)
    {
        // A rebuild normally ends at recover_done; a grant before that (a late re-assertion on a resource whose node
        // already grants) ends it too: later copies must not change an LVB a holder has read or written.
        _rebuild = LvbRebuild.None;
        var lvbOut = (byte[]?)null;
        switch (LockModes.LvbOnGrant(lkb.Granted, lkb.Requested))
        {
            case LvbAction.Return:
                if (lkb.Flags.HasFlag(LockFlags.ValBlk))
                {
                    lvbOut = _lvb.ToArray();
                    lkb.LvbSeq = LvbSeq;
                }

                break;
            case LvbAction.Write:
                if (WriteLvb(lkb.Flags, lkb.CallerLvb))
                {
                    lkb.LvbSeq = LvbSeq;
                }

                break;
        }

        switch (lkb.Queue)
        {
            case LockQueue.Converting:
                _converting.Remove(lkb);
                _granted.Add(lkb);
                break;
            case LockQueue.Waiting:
                _waiting.Remove(lkb);
                _granted.Add(lkb);
                break;
        }

        lkb.Queue = LockQueue.Granted;
        lkb.Granted = lkb.Requested;
        lkb.HighBast = null;
        lkb.CallerLvb = null;
        lkb.DeadlineTicks = 0;
        Emit(new CompleteEffect(lkb.Id, lkb.Owner, op, LockStatus.Granted, lkb.Requested, lvbOut, lkb.LvbSeq, Flags(lkb)));
    }

    private LockResultFlags Flags(LockEntry lkb) =>
        (ValueNotValid ? LockResultFlags.ValNotValid : 0)
        | (lkb.Demoted ? LockResultFlags.Demoted : 0)
        | (lkb.AltMode ? LockResultFlags.AltMode : 0);

    /// <summary>Writes (VALBLK) or invalidates (IVVALBLK) the LVB on behalf of a PW/EX holder giving up write access.</summary>
    private bool WriteLvb(LockFlags flags, byte[]? lvb)
    {
        if (flags.HasFlag(LockFlags.IvValBlk))
        {
            ValueNotValid = true;
            return false;
        }

        if (!flags.HasFlag(LockFlags.ValBlk) || lvb is null)
        {
            return false;
        }

        Array.Clear(_lvb);
        lvb.CopyTo(_lvb, 0);
        LvbSeq++;
        ValueNotValid = false;
        return true;
    }

    /// <summary>Ends a pending request (the lock goes away) or conversion (back to its granted mode).</summary>
    private void EndPending(LockEntry lkb, LockStatus status)
    {
        var op = lkb.Granted is null ? LockOperation.Request : LockOperation.Convert;
        if (lkb.Granted is null)
        {
            Remove(lkb);
        }
        else
        {
            Revert(lkb);
        }

        Emit(new CompleteEffect(lkb.Id, lkb.Owner, op, status, lkb.Granted ?? LockMode.NL, null, lkb.LvbSeq, Flags(lkb)));
    }

    /// <summary>revert_lock: a conversion that will not happen; the lock keeps (possibly demoted) granted mode.</summary>
    private void Revert(LockEntry lkb)
    {
        if (lkb.Queue == LockQueue.Converting)
        {
            _converting.Remove(lkb);
            _granted.Add(lkb);
        }

        lkb.Queue = LockQueue.Granted;
        lkb.Requested = lkb.Granted!.Value;
        lkb.CallerLvb = null;
        lkb.DeadlineTicks = 0;
    }

    private void Remove(LockEntry lkb)
    {
        _locks.Remove(lkb.Id);
        switch (lkb.Queue)
        {
            case LockQueue.Granted:
                _granted.Remove(lkb);
                break;
            case LockQueue.Converting:
                _converting.Remove(lkb);
                break;
            case LockQueue.Waiting:
                _waiting.Remove(lkb);
                break;
        }
    }

    /// <summary>grant_pending_convert: FIFO over the convert queue, restarting after every grant.</summary>
    private void GrantPendingConversions()
    {
        var demoteRestarts = 0;
        bool restart;
        do
        {
            restart = false;
            foreach (var lkb in _converting.ToArray())
            {
                if (lkb.Queue != LockQueue.Converting)
                {
                    continue;
                }

                var wasDemoted = lkb.Demoted;
                if (CanBeGranted(lkb, now: false, out var deadlock))
                {
                    Grant(lkb, LockOperation.Convert);
                    restart = true;
                    continue;
                }

                if (!wasDemoted && lkb.Demoted && demoteRestarts++ == 0)
                {
                    restart = true;
                    continue;
                }

                if (deadlock)
                {
                    // fs/dlm only logs here; we fail the conversion so nothing waits forever.
                    EndPending(lkb, LockStatus.Deadlock);
                    restart = true;
                }
            }
        }
        while (restart);
    }

    /// <summary>grant_pending_locks: conversions first, then waiting requests in order, then basts for what still waits.</summary>
    private void GrantPending()
    {
        if (GrantsSuspended)
        {
            return;
        }

        GrantPendingConversions();
        foreach (var lkb in _waiting.ToArray())
        {
            if (CanBeGranted(lkb, now: false, out _))
            {
                Grant(lkb, LockOperation.Request);
            }
        }

        foreach (var lkb in _converting)
        {
            SendBasts(lkb, includeConverting: false);
        }

        foreach (var lkb in _waiting)
        {
            SendBasts(lkb, includeConverting: false);
        }
    }

    /// <summary>
    /// Blocking ASTs to the holders whose granted mode is in the way of <paramref name="blocked"/>'s
    /// requested mode, once per blocking episode: a holder hears of a mode only if it has not yet
    /// heard of this one or a stronger one since its last grant. PR and CW block each other without
    /// being ordered; an earlier bast for PW or EX already covers them.
    /// </summary>
    private void SendBasts(LockEntry blocked, bool includeConverting)
    {
        SendBastsFrom(_granted, blocked);
        if (includeConverting)
        {
            SendBastsFrom(_converting, blocked);
        }
    }

    private void SendBastsFrom(List<LockEntry> holders, LockEntry blocked)
    {
        var mode = blocked.Requested;
        foreach (var holder in holders)
        {
            if (ReferenceEquals(holder, blocked) || holder.IsOrphan)
            {
                continue;
            }

            // Only modes the holder is incompatible with can reach here (NL..EX ordered), so "a
            // stronger mode was already announced" is a plain comparison, also for the PR/CW pair:
            // a PR holder told PW must drop to CR at most, which also lets CW in.
            var needed = !LockModes.Compatible(holder.Granted!.Value, mode) && (holder.HighBast is null || holder.HighBast < mode);
            if (needed)
            {
                holder.HighBast = mode;
                Emit(new BastEffect(holder.Id, holder.Owner, mode));
            }
        }
    }
}

/// <summary>Where a rebuilt resource's LVB stands (fs/dlm's recover_lvb).</summary>
internal enum LvbRebuild
{
    /// <summary>Not being rebuilt: re-assertions leave the LVB alone.</summary>
    None,

    /// <summary>Rebuilt, no VALBLK lock re-asserted yet: zeros, not valid.</summary>
    NoCopy,

    /// <summary>The newest NL/CR copy so far: kept, not valid.</summary>
    Newest,

    /// <summary>A VALBLK lock above CR brought its copy: valid, final.</summary>
    Vouched,
}
