using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>What a holder asks its actor to do; <typeparamref name="TAsker"/> is whoever gets replies.</summary>
public abstract record HolderEffect<TAsker>;

/// <summary>Start the handler for <paramref name="Seq"/>; then report <see cref="MessageHolderState{TAsker}.Completed"/>.</summary>
/// <param name="Seq">The request's seq in its channel.</param>
/// <param name="TargetId">The receiving entity's id.</param>
/// <param name="Payload">The request.</param>
/// <param name="PossiblyRepeated">
/// The holder cannot rule out that an earlier incarnation already ran it (in-memory holder after a crash of
/// its node, or a persisted holder whose node crashed while the handler ran).
/// </param>
public sealed record HolderRun<TAsker>(long Seq, string TargetId, SerializedPayload Payload, bool PossiblyRepeated) : HolderEffect<TAsker>;

/// <summary>Send the stored status of <paramref name="Seq"/> to <paramref name="To"/>.</summary>
public sealed record HolderReply<TAsker>(TAsker To, long Seq, SerializedPayload Status) : HolderEffect<TAsker>;

/// <summary>Tell <paramref name="To"/> that <paramref name="Seq"/> is no longer held.</summary>
public sealed record HolderConfirmDrop<TAsker>(TAsker To, long Seq) : HolderEffect<TAsker>;

/// <summary>Refuse <paramref name="Seq"/>; the sender re-sends later (or fails the call for <see cref="HolderRejectReason.SenderGone"/>).</summary>
/// <param name="To">Who gets the rejection.</param>
/// <param name="Seq">The refused seq.</param>
/// <param name="Reason">Why.</param>
/// <param name="Cap">The channel's cap.</param>
/// <param name="InUse">Entries held when refusing.</param>
public sealed record HolderReject<TAsker>(TAsker To, long Seq, HolderRejectReason Reason, int Cap, int InUse) : HolderEffect<TAsker>;

/// <summary>Give the channel's knowledge to the sender before this incarnation stops (in-memory holders only).</summary>
public sealed record HolderHandOverTo<TAsker>(TAsker To, long NextToRun, IReadOnlyList<HandedOverStatus> Completed) : HolderEffect<TAsker>;

/// <summary>Nothing is running any more: the actor may stop now (after a hand-over request).</summary>
public sealed record HolderReadyToStop<TAsker> : HolderEffect<TAsker>;

/// <summary>Tell <paramref name="To"/> that <paramref name="Seq"/> is missing while later seqs wait (<see cref="HolderGap"/>).</summary>
public sealed record HolderReportGap<TAsker>(TAsker To, long Seq) : HolderEffect<TAsker>;

/// <summary>
/// The receiver side of one channel: the seed-000 Message Holder table plus a run watermark.
/// <code>
///  Lookup(seq)                     entry phase                Drop(seq)
///  ─────────────────────────────   ────────────────────────   ──────────────────────
///  seq &lt; NextToRun, no entry    → already run and dropped → ConfirmDrop (never re-run)
///  no entry, seq ≥ NextToRun     → Waiting ──(all earlier started)──▶ Running ──Completed──▶ Done
///  Waiting / Running             → remember asker, answer at Completed
///  Done                          → Reply(stored status)                          Done → removed, ConfirmDrop
/// </code>
/// Handlers start strictly in seq order: a seq above a gap waits (counted against the cap) until the
/// missing seq arrives by re-send, or until the sender's floor proves the gap was already run
/// (seqs below the floor are complete at the sender). The cap bounds the table; one slot is kept for the
/// seq at <see cref="NextToRun"/> so a full table of waiting entries can never block the gap that frees it.
/// </summary>
public sealed class MessageHolderState<TAsker>
{
    private readonly SortedDictionary<long, Entry> _entries = new();

    // The highest sender floor seen, and a scratch list for removing below it (ForgetDoneBelow).
    private long _floorSeen;
    private List<long>? _forget;
    private TAsker? _lastAsker;
    private bool _hasAsker;
    private bool _handingOver;

    // Seq most recently reported missing: each gap is reported once, the sender's resend timer covers the rest.
    private long _gapReported;
    /// <param name="cap">Most entries the channel keeps (waiting, running and done); at least 2.</param>
    /// <param name="incarnation">This holder incarnation's id, compared with the sender's <c>KnownIncarnation</c>.</param>
    public MessageHolderState(int cap, Guid incarnation)
    {
        if (cap < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(cap), cap, "a holder needs room for at least two entries");
        }

        Cap = cap;
        Incarnation = incarnation;
    }

    private enum Phase
    {
        Waiting,
        Running,
        Done,
    }

    /// <summary>The most entries this channel keeps.</summary>
    public int Cap { get; }

    /// <summary>This incarnation's id.</summary>
    public Guid Incarnation { get; }

    /// <summary>Every seq below this one has been started (and maybe completed and dropped).</summary>
    public long NextToRun { get; private set; } = 1;

    /// <summary>Entries currently held.</summary>
    public int Count => _entries.Count;

    /// <summary>Handlers started by this incarnation.</summary>
    public long Runs { get; private set; }

    /// <summary>Requests refused (cap, no handler, moving, purged).</summary>
    public long Rejections { get; private set; }

    /// <summary>True after <see cref="Purge"/>: the sending node is gone and nothing more is accepted.</summary>
    public bool Purged { get; private set; }

    /// <summary>Handlers that were started and have not completed.</summary>
    public int Running => _entries.Values.Count(e => e.Phase == Phase.Running);

    /// <summary>A request arrived (first time or re-sent).</summary>
    public IReadOnlyList<HolderEffect<TAsker>> Lookup(HolderDeliver request, TAsker asker, bool handlerAvailable = true)
    {
        var effects = new List<HolderEffect<TAsker>>();
        Remember(asker);
        if (Purged)
        {
            Rejections++;
            effects.Add(new HolderReject<TAsker>(asker, request.Seq, HolderRejectReason.SenderGone, Cap, Count));
            return effects;
        }

        AdvanceTo(Math.Max(request.Floor, request.RunHorizon), effects);
        ForgetDoneBelow(request.Floor);

        if (_entries.TryGetValue(request.Seq, out var entry))
        {
            switch (entry.Phase)
            {
                case Phase.Done:
                    effects.Add(new HolderReply<TAsker>(asker, request.Seq, entry.Status!));
                    break;
                default:
                    // Running or waiting for a gap: the status goes out when it exists. The sender's outbox is
                    // the only asker of a channel, so a re-send replaces rather than adds.
                    entry.SetAsker(asker);
                    break;
            }

            return effects;
        }

        if (request.Seq < NextToRun)
        {
            // Started earlier and already dropped (the sender has its status): a late duplicate is answered,
            // never run again. This is what the seed's plain "not found → insert" would get wrong.
            effects.Add(new HolderConfirmDrop<TAsker>(asker, request.Seq));
            return effects;
        }

        var reason = _handingOver ? HolderRejectReason.Moving
            : request.KnownIncarnation != Incarnation ? HolderRejectReason.StaleIncarnation
            : !handlerAvailable ? HolderRejectReason.NoHandler
            : HasRoomFor(request.Seq) ? HolderRejectReason.None
            : HolderRejectReason.ChannelFull;
        if (reason != HolderRejectReason.None)
        {
            Rejections++;
            effects.Add(new HolderReject<TAsker>(asker, request.Seq, reason, Cap, Count));
            return effects;
        }

        // Only the sender knows whether an incarnation that vanished without handing over had it.
        var possiblyRepeated = request.MayHaveRun;
        var created = new Entry(request.TargetId, request.Payload) { PossiblyRepeated = possiblyRepeated };
        created.SetAsker(asker);
        _entries[request.Seq] = created;
        StartRunnable(effects);
        ReportGap(asker, request.Seq, effects);
        return effects;
    }

    private void ReportGap(TAsker asker, long arrived, List<HolderEffect<TAsker>> effects)
    {
        if (arrived > NextToRun && !_entries.ContainsKey(NextToRun) && _gapReported != NextToRun)
        {
            _gapReported = NextToRun;
            effects.Add(new HolderReportGap<TAsker>(asker, NextToRun));
        }
    }

    /// <summary>The handler for <paramref name="seq"/> finished; replies go to whoever asked meanwhile.</summary>
    public IReadOnlyList<HolderEffect<TAsker>> Completed(long seq, SerializedPayload status)
    {
        var effects = new List<HolderEffect<TAsker>>();
        if (!_entries.TryGetValue(seq, out var entry) || entry.Phase != Phase.Running)
        {
            // A purge or a recovery may have removed it; a completion is never applied twice.
            return effects;
        }

        entry.Phase = Phase.Done;
        entry.Status = status;
        if (entry.HasAsker)
        {
            // Entries restored from the journal have no asker: the sender's re-send fetches the status.
            effects.Add(new HolderReply<TAsker>(entry.Asker!, seq, status));
        }

        if (_handingOver)
        {
            FinishHandOverIfIdle(effects);
        }

        return effects;
    }

    /// <summary>The sender has the status: remove the entry (if still there) and confirm.</summary>
    public IReadOnlyList<HolderEffect<TAsker>> Drop(long seq, TAsker asker)
    {
        Remember(asker);
        if (_entries.TryGetValue(seq, out var entry))
        {
            if (entry.Phase != Phase.Done)
            {
                // The sender only drops what it has a status for, so this is a confused or forged request:
                // dropping a running entry would let a re-send run it twice. Ignore it.
                return [];
            }

            _entries.Remove(seq);
        }

        return [new HolderConfirmDrop<TAsker>(asker, seq)];
    }

    /// <summary>
    /// The sending node is gone (recover_slot): forget everything and refuse further requests. Returns how
    /// many entries were dropped; a running handler's later completion is ignored.
    /// </summary>
    public int Purge()
    {
        var dropped = _entries.Count;
        _entries.Clear();
        Purged = true;
        return dropped;
    }

    /// <summary>
    /// This incarnation is about to stop (shard hand-off). New requests are refused with
    /// <see cref="HolderRejectReason.Moving"/>; once no handler runs, the in-memory holder hands its
    /// watermark and stored statuses to the sender (<paramref name="handOverToSender"/>) and may stop.
    /// </summary>
    public IReadOnlyList<HolderEffect<TAsker>> BeginHandOver(bool handOverToSender)
    {
        _handingOver = true;
        _handOverToSender = handOverToSender;
        var effects = new List<HolderEffect<TAsker>>();
        FinishHandOverIfIdle(effects);
        return effects;
    }

    private bool _handOverToSender;

    /// <summary>Journal replay: the handler for <paramref name="seq"/> was started.</summary>
    public void ApplyStarted(long seq, string targetId, SerializedPayload payload)
    {
        _entries[seq] = new Entry(targetId, payload) { Phase = Phase.Running };
        NextToRun = Math.Max(NextToRun, seq + 1);
    }

    /// <summary>Journal replay: the handler finished.</summary>
    public void ApplyCompleted(long seq, SerializedPayload status)
    {
        if (_entries.TryGetValue(seq, out var entry))
        {
            entry.Phase = Phase.Done;
            entry.Status = status;
        }
    }

    /// <summary>Journal replay: the entry was dropped.</summary>
    public void ApplyDropped(long seq) => _entries.Remove(seq);

    /// <summary>Journal replay: the channel was purged.</summary>
    public void ApplyPurged() => Purge();

    /// <summary>
    /// After a persisted holder recovered: handlers that were started but never completed (the node died
    /// while they ran) are started again, flagged as possibly repeated, because nobody has their status.
    /// </summary>
    public IReadOnlyList<HolderEffect<TAsker>> ResumeAfterRecovery()
    {
        var effects = new List<HolderEffect<TAsker>>();
        foreach (var (seq, entry) in _entries)
        {
            if (entry.Phase == Phase.Running)
            {
                entry.PossiblyRepeated = true;
                effects.Add(new HolderRun<TAsker>(seq, entry.TargetId, entry.Payload, true));
            }
        }

        return effects;
    }

    /// <summary>The persisted holder's snapshot: started and done entries (waiting ones are re-sent by the sender).</summary>
    public HolderSnapshot ToSnapshot() => new(
        NextToRun,
        Purged,
        _entries.Where(e => e.Value.Phase != Phase.Waiting)
            .Select(e => new HolderSnapshotEntry(e.Key, e.Value.TargetId, e.Value.Payload, e.Value.Status))
            .ToArray());

    /// <summary>Restores a snapshot taken by <see cref="ToSnapshot"/>.</summary>
    public void ApplySnapshot(HolderSnapshot snapshot)
    {
        _entries.Clear();
        NextToRun = snapshot.NextToRun;
        Purged = snapshot.Purged;
        foreach (var e in snapshot.Entries)
        {
            _entries[e.Seq] = new Entry(e.TargetId, e.Payload)
            {
                Phase = e.Status is null ? Phase.Running : Phase.Done,
                Status = e.Status,
            };
        }
    }

    /// <summary>The seqs held, in order, with their phase (diagnostics and tests).</summary>
    public IReadOnlyList<(long Seq, string Phase)> Describe() =>
        _entries.Select(e => (e.Key, e.Value.Phase.ToString())).ToArray();

    private bool HasRoomFor(long seq) =>
        // The last free slot is reserved for the seq that closes the gap, so waiting entries alone can
        // never fill the table and block the one request that lets them run.
        seq == NextToRun ? _entries.Count < Cap : _entries.Count < Cap - 1;

    /// <summary>The sender proved every seq below <paramref name="horizon"/> was started earlier.</summary>
    private void AdvanceTo(long horizon, List<HolderEffect<TAsker>> effects)
    {
        if (horizon <= NextToRun)
        {
            return;
        }

        // Entries below the floor were dropped at the sender already; below a handed-over horizon they were
        // started by an earlier incarnation. Either way they must not run here.
        foreach (var seq in _entries.Keys.Where(s => s < horizon && _entries[s].Phase != Phase.Running).ToArray())
        {
            _entries.Remove(seq);
        }

        NextToRun = horizon;
        StartRunnable(effects);
    }

    /// <summary>
    /// The sender has the status of every seq below its floor (calls that complete at their status are never dropped one
    /// by one): their done entries can go. A later duplicate of one is below the run watermark and only gets a
    /// drop confirmation. Floors only grow, so the table is scanned only when one moved.
    /// </summary>
    private void ForgetDoneBelow(long floor)
    {
        if (floor <= _floorSeen)
        {
            return;
        }

        _floorSeen = floor;
        foreach (var (seq, entry) in _entries)
        {
            if (seq >= floor)
            {
                break;
            }

            if (entry.Phase == Phase.Done)
            {
                (_forget ??= []).Add(seq);
            }
        }

        if (_forget is { Count: > 0 })
        {
            foreach (var seq in _forget)
            {
                _entries.Remove(seq);
            }

            _forget.Clear();
        }
    }

    private void StartRunnable(List<HolderEffect<TAsker>> effects)
    {
        while (_entries.TryGetValue(NextToRun, out var next) && next.Phase == Phase.Waiting)
        {
            next.Phase = Phase.Running;
            Runs++;
            effects.Add(new HolderRun<TAsker>(NextToRun, next.TargetId, next.Payload, next.PossiblyRepeated));
            NextToRun++;
        }
    }

    private void FinishHandOverIfIdle(List<HolderEffect<TAsker>> effects)
    {
        if (_entries.Values.Any(e => e.Phase == Phase.Running))
        {
            return;
        }

        if (_handOverToSender && _hasAsker && !Purged)
        {
            var completed = _entries.Where(e => e.Value.Phase == Phase.Done)
                .Select(e => new HandedOverStatus(e.Key, e.Value.Status!))
                .ToArray();
            effects.Add(new HolderHandOverTo<TAsker>(_lastAsker!, NextToRun, completed));
        }
        else
        {
            effects.Add(new HolderReadyToStop<TAsker>());
        }
    }

    private void Remember(TAsker asker)
    {
        _lastAsker = asker;
        _hasAsker = true;
    }

    private sealed class Entry(string targetId, SerializedPayload payload)
    {
        public string TargetId { get; } = targetId;

        public SerializedPayload Payload { get; } = payload;

        public Phase Phase { get; set; } = Phase.Waiting;

        public SerializedPayload? Status { get; set; }

        public TAsker? Asker { get; private set; }

        public bool HasAsker { get; private set; }

        public void SetAsker(TAsker asker)
        {
            Asker = asker;
            HasAsker = true;
        }

        public bool PossiblyRepeated { get; set; }
    }
}
