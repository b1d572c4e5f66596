using System.Text.RegularExpressions;
using Lockstep.Contracts.Volumes;

namespace Lockstep.Actors.Volumes;

/// <summary>Disk work the Volume entity runs after persisting an intent; its outcome comes back as a command.</summary>
public abstract record VolumeWork;

/// <summary>Format <paramref name="Legs"/> for <paramref name="Descriptor"/>; answered with <see cref="LegsProvisioned"/>.</summary>
/// <param name="Descriptor">The volume as the legs must record it.</param>
/// <param name="Legs">The legs to format.</param>
/// <param name="OperationId">Volume id (create) or leg id (add), echoed in the answer.</param>
public sealed record ProvisionLegs(VolumeDescriptor Descriptor, IReadOnlyList<LegDescriptor> Legs, Guid OperationId) : VolumeWork;

/// <summary>Wipe the superblocks of <paramref name="Legs"/> that still belong to the volume; answered with <see cref="LegsWiped"/>.</summary>
/// <param name="Descriptor">The volume being deleted.</param>
/// <param name="Legs">The legs to wipe.</param>
public sealed record WipeLegs(VolumeDescriptor Descriptor, IReadOnlyList<LegDescriptor> Legs) : VolumeWork;

/// <summary>What the entity does with one command: persist, then reply / start work / (un)register the name.</summary>
/// <param name="State">The state once <paramref name="Events"/> are applied.</param>
/// <param name="Events">Events to persist, in order (none for a query or a no-op).</param>
/// <param name="Reply">Sent to the sender after persisting; null when the reply waits for <paramref name="Work"/> or there is nobody to answer.</param>
/// <param name="Work">Disk work to start after persisting; the sender's reply waits for it.</param>
/// <param name="RegisterNameFirst">Register the name in the registry before persisting anything.</param>
/// <param name="UnregisterNameAfter">Drop the name from the registry after persisting.</param>
/// <param name="Cleanup">Best-effort work whose outcome nobody waits for (wiping a removed leg).</param>
public sealed record VolumeDecision(
    VolumeState State,
    IReadOnlyList<IVolumeEvent> Events,
    IVolumeProtocol? Reply,
    VolumeWork? Work,
    bool RegisterNameFirst,
    bool UnregisterNameAfter,
    VolumeWork? Cleanup);

/// <summary>
/// The committed metadata of one volume and the rules for changing it; pure, event-sourced. Every change that
/// touches disks follows intent → disk work → commit, so a power-off at any step has a defined outcome:
/// <code>
///            Create (name registered, intent persisted)            LegsProvisioned ok
///   Absent ─────────────────────────────────────────▶ Creating ───────────────────────▶ Active ◀──┐
///     ▲                                                  │ LegsProvisioned error            │     │ AddLeg / LegsProvisioned,
///     │◀─────────── VolumeCreationAbandoned ─────────────┘                                  │     │ Fail/Remove/Mark*, Resynced
///     │                                                                                     │─────┘
///     │◀─────────── VolumeDeleted (LegsWiped) ◀──────── Deleting ◀────────── Delete ────────┘
///
///   leg:  InSync ──fail/io──▶ Failed ──remove──▶ (gone)        added leg: Resyncing ──resynced──▶ InSync
///         InSync ──missing──▶ Missing ──remove──▶ (gone)                  Resyncing ──fail/remove──▶ Failed / (gone)
/// </code>
/// Illegal transitions are rejected with a <see cref="VolumeRejected"/> that says why; applying an event that
/// does not fit the state throws (the journal is corrupt or the rules changed), which the entity must not hide.
/// </summary>
public sealed record VolumeState(string Name, VolumeStatus Status, VolumeDescriptor? Descriptor, long Generation, LegDescriptor? PendingLeg)
{
    /// <summary>How nodes reach the legs; direct for a journal that never recorded a mode.</summary>
    public VolumeCacheMode Cache { get; init; } = VolumeCacheMode.Direct;

    /// <summary>Most legs a volume may have.</summary>
    public const int MaxLegs = 8;

    /// <summary>Most nodes (bitmap slots) a volume may have.</summary>
    public const int MaxNodesLimit = 64;

    /// <summary>Smallest chunk.</summary>
    public const int MinChunkSize = 64 * 1024;

    /// <summary>Largest chunk.</summary>
    public const int MaxChunkSize = 1 << 30;

    /// <summary>Volume sizes are multiples of this.</summary>
    public const int SizeAlignment = 4096;

    /// <summary>Longest volume name.</summary>
    public const int MaxNameLength = 64;

    private static readonly Regex NamePattern = new("^[a-z0-9][a-z0-9._-]*$", RegexOptions.CultureInvariant);

    /// <summary>The state of a volume that has never existed.</summary>
    public static VolumeState Empty(string name) => new(name, VolumeStatus.Absent, null, 0, null);

    /// <summary>Restores the state from a snapshot taken before cache modes existed: the volume is direct.</summary>
    public static VolumeState FromSnapshot(string name, VolumeSnapshot snapshot) =>
        new(name, snapshot.Status, snapshot.Descriptor, snapshot.Generation, snapshot.PendingLeg);

    /// <summary>Restores the state from a snapshot.</summary>
    public static VolumeState FromSnapshot(string name, VolumeSnapshotWithCache snapshot) =>
        FromSnapshot(name, snapshot.Core) with { Cache = snapshot.Cache };

    /// <summary>What a snapshot stores.</summary>
    public VolumeSnapshotWithCache ToSnapshot() => new(new VolumeSnapshot(Status, Descriptor, Generation, PendingLeg), Cache);

    /// <summary>Parses a cache mode as the CLI and HTTP API spell it ("direct", "writeback"); null when it is neither.</summary>
    public static VolumeCacheMode? ParseCacheMode(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        "direct" => VolumeCacheMode.Direct,
        "writeback" => VolumeCacheMode.Writeback,
        _ => null,
    };

    /// <summary>The spelling of a cache mode in the CLI and HTTP API.</summary>
    public static string CacheModeName(VolumeCacheMode mode) => mode.ToString().ToLowerInvariant();

    private static string? ValidateCacheMode(VolumeCacheMode mode) =>
        Enum.IsDefined(mode) ? null : $"cache mode {(int)mode} is unknown; use direct or writeback";

    /// <summary>The reply to a query: the metadata, or NotFound.</summary>
    public IVolumeProtocol Info() => Status == VolumeStatus.Absent || Descriptor is null
        ? new VolumeRejected(Name, VolumeError.NotFound, $"volume '{Name}' does not exist")
        : new VolumeInfo(Descriptor, Status, PendingDescription(), Cache);

    /// <summary>Disk work an intent left unfinished (after a crash); the entity restarts it on recovery.</summary>
    public VolumeWork? UnfinishedWork() => Status switch
    {
        VolumeStatus.Creating => new ProvisionLegs(Descriptor!, Descriptor!.Legs, Descriptor.VolumeId),
        VolumeStatus.Deleting => new WipeLegs(Descriptor!, Descriptor!.Legs),
        VolumeStatus.Active when PendingLeg is { } leg => new ProvisionLegs(Descriptor!, [leg], leg.LegId),
        _ => null,
    };

    /// <summary>Checks a volume name; returns the problem or null.</summary>
    public static string? ValidateName(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return "volume name is empty";
        }

        if (name.Length > MaxNameLength)
        {
            return $"volume name '{name}' is longer than {MaxNameLength} characters";
        }

        return NamePattern.IsMatch(name)
            ? null
            : $"volume name '{name}' may hold only lowercase letters, digits, '.', '_' and '-', and must start with a letter or digit";
    }

    /// <summary>Checks a leg path and returns it normalised (absolute, no trailing slash), or the problem.</summary>
    public static (string? Path, string? Error) NormalizeLegPath(string? path)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            return (null, "leg path is empty");
        }

        if (!System.IO.Path.IsPathFullyQualified(path))
        {
            return (null, $"leg path '{path}' is not absolute (the node resolves paths, not the client)");
        }

        if (path.IndexOf('\0') >= 0)
        {
            return (null, "leg path holds a NUL character");
        }

        var full = System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(path));
        return full == "/" ? (null, "leg path '/' is a directory") : (full, null);
    }

    // ------------------------------------------------------------------ commands

    /// <summary>Decides what a command does. <paramref name="newId"/> makes the UUIDs of new volumes and legs.</summary>
    public VolumeDecision Handle(IVolumeCommand command, Func<Guid> newId)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentNullException.ThrowIfNull(newId);
        if (!string.Equals(command.Name, Name, StringComparison.Ordinal))
        {
            return Reject(VolumeError.Invalid, $"command for volume '{command.Name}' reached the entity of '{Name}'");
        }

        return command switch
        {
            GetVolume => Answer(Info()),
            CreateVolume c => Create(c, newId),
            SetVolumeCacheMode m => SetCacheMode(m),
            AddLeg a => AddLeg(a, newId),
            FailLeg f => FailLeg(f.LegId, f.Reason, byOperator: true),
            MarkLegFailed m => FailLeg(m.LegId, m.Reason, byOperator: false),
            MarkLegMissing m => Missing(m),
            MarkLegMoved m => Moved(m),
            MarkLegResynced r => Resynced(r),
            RemoveLeg r => Remove(r),
            DeleteVolume => Delete(),
            LegsProvisioned p => Provisioned(p),
            LegsWiped w => Wiped(w),
            _ => Reject(VolumeError.Invalid, $"unknown volume command {command.GetType().Name}"),
        };
    }

    private VolumeDecision Create(CreateVolume c, Func<Guid> newId)
    {
        if (Status != VolumeStatus.Absent)
        {
            return Reject(Status == VolumeStatus.Active ? VolumeError.Conflict : VolumeError.Busy, $"volume '{Name}' already exists ({Status.ToString().ToLowerInvariant()})");
        }

        var problem = ValidateName(c.Name) ?? ValidateGeometry(c.SizeBytes, c.ChunkSizeBytes, c.MaxNodes) ?? ValidateCacheMode(c.Cache);
        if (problem is not null)
        {
            return Reject(VolumeError.Invalid, problem);
        }

        var paths = c.LegPaths ?? [];
        if (paths.Count is < 1 or > MaxLegs)
        {
            return Reject(VolumeError.Invalid, $"a volume needs 1..{MaxLegs} legs, {paths.Count} given");
        }

        var legs = new List<LegDescriptor>(paths.Count);
        foreach (var raw in paths)
        {
            var (path, error) = NormalizeLegPath(raw);
            if (error is not null)
            {
                return Reject(VolumeError.Invalid, error);
            }

            if (legs.Any(l => l.Path == path))
            {
                return Reject(VolumeError.Invalid, $"leg path '{path}' is given twice; every leg needs its own file or device");
            }

            legs.Add(new LegDescriptor(newId(), path!, LegState.InSync));
        }

        var started = new VolumeCreationStarted(Name, newId(), new VolumeGeometry(c.SizeBytes, c.ChunkSizeBytes, c.MaxNodes), legs);
        // The mode goes into the same atomic batch as the intent; direct is what a journal without it means.
        IVolumeEvent[] events = c.Cache == VolumeCacheMode.Direct ? [started] : [started, new VolumeCacheModeChanged(c.Cache)];
        var next = events.Aggregate(this, (state, e) => state.Apply(e));
        return new VolumeDecision(next, events, null, new ProvisionLegs(next.Descriptor!, legs, started.VolumeId), RegisterNameFirst: true, false, null);
    }

    private VolumeDecision SetCacheMode(SetVolumeCacheMode m)
    {
        if (ValidateCacheMode(m.Cache) is { } problem)
        {
            return Reject(VolumeError.Invalid, problem);
        }

        if (RequireActive() is { } rejected)
        {
            return rejected;
        }

        return m.Cache == Cache ? Answer(Info()) : Commit(new VolumeCacheModeChanged(m.Cache));
    }

    /// <summary>Checks size, chunk and max nodes; returns the problem or null.</summary>
    public static string? ValidateGeometry(long sizeBytes, int chunkSizeBytes, int maxNodes)
    {
        if (sizeBytes <= 0 || sizeBytes % SizeAlignment != 0)
        {
            return $"size {sizeBytes} must be a positive multiple of {SizeAlignment}";
        }

        if (chunkSizeBytes < MinChunkSize || chunkSizeBytes > MaxChunkSize || (chunkSizeBytes & (chunkSizeBytes - 1)) != 0)
        {
            return $"chunk size {chunkSizeBytes} must be a power of two between {MinChunkSize} (64 KiB) and {MaxChunkSize} (1 GiB)";
        }

        return maxNodes is < 1 or > MaxNodesLimit ? $"max nodes {maxNodes} must be between 1 and {MaxNodesLimit}" : null;
    }

    private VolumeDecision AddLeg(AddLeg a, Func<Guid> newId)
    {
        if (RequireActive() is { } rejected)
        {
            return rejected;
        }

        var (path, error) = NormalizeLegPath(a.Path);
        if (error is not null)
        {
            return Reject(VolumeError.Invalid, error);
        }

        if (Descriptor!.Legs.Count >= MaxLegs)
        {
            return Reject(VolumeError.Conflict, $"volume '{Name}' already has {MaxLegs} legs; remove one first");
        }

        if (Descriptor.Legs.FirstOrDefault(l => l.Path == path) is { } existing)
        {
            return Reject(VolumeError.Conflict, $"'{path}' is already leg {existing.LegId} of volume '{Name}' ({existing.State})");
        }

        if (!Descriptor.Legs.Any(l => l.State == LegState.InSync))
        {
            return Reject(VolumeError.Conflict, $"volume '{Name}' has no in-sync leg to copy the new leg from");
        }

        var started = new LegAdditionStarted(newId(), path!);
        var next = Apply(started);
        return new VolumeDecision(next, [started], null, new ProvisionLegs(Descriptor, [next.PendingLeg!], started.LegId), false, false, null);
    }

    private VolumeDecision FailLeg(Guid legId, string? reason, bool byOperator)
    {
        // An I/O failure is recorded whatever else is going on (an add in progress must not hide it).
        if ((byOperator ? RequireActive() : RequireCommitted()) is { } rejected)
        {
            return rejected;
        }

        if (FindLeg(legId) is not { } leg)
        {
            return LegNotFound(legId);
        }

        if (leg.State == LegState.Failed)
        {
            return Answer(Info());
        }

        if (byOperator && leg.State == LegState.InSync && Descriptor!.Legs.Count(l => l.State == LegState.InSync) == 1)
        {
            return Reject(VolumeError.Conflict, $"leg {legId} is the last in-sync leg of volume '{Name}'; failing it would lose the data (delete the volume instead)");
        }

        return Commit(new LegFailed(legId, string.IsNullOrWhiteSpace(reason) ? (byOperator ? "failed by operator" : "I/O error") : reason, byOperator));
    }

    private VolumeDecision Missing(MarkLegMissing m)
    {
        if (RequireCommitted() is { } rejected)
        {
            return rejected;
        }

        if (FindLeg(m.LegId) is not { } leg)
        {
            return LegNotFound(m.LegId);
        }

        // Only a leg the pipeline was using can go missing; a failed leg stays failed (it is worse).
        return leg.State == LegState.InSync ? Commit(new LegWentMissing(m.LegId, m.Reason ?? "not found")) : Answer(Info());
    }

    private VolumeDecision Moved(MarkLegMoved m)
    {
        if (RequireCommitted() is { } rejected)
        {
            return rejected;
        }

        if (FindLeg(m.LegId) is not { } leg)
        {
            return LegNotFound(m.LegId);
        }

        var (path, error) = NormalizeLegPath(m.NewPath);
        if (error is not null)
        {
            return Reject(VolumeError.Invalid, error);
        }

        if (path == leg.Path)
        {
            return Answer(Info());
        }

        if (Descriptor!.Legs.FirstOrDefault(l => l.Path == path) is { } other)
        {
            return Reject(VolumeError.Conflict, $"'{path}' is recorded as leg {other.LegId}; leg {m.LegId} cannot move there");
        }

        return Commit(new LegMoved(m.LegId, path!));
    }

    private VolumeDecision Resynced(MarkLegResynced r)
    {
        if (RequireCommitted() is { } rejected)
        {
            return rejected;
        }

        if (FindLeg(r.LegId) is not { } leg)
        {
            return LegNotFound(r.LegId);
        }

        if (leg.State == LegState.InSync)
        {
            return Answer(Info());
        }

        if (leg.State != LegState.Resyncing)
        {
            return Reject(VolumeError.Conflict, $"leg {r.LegId} is {leg.State}, not resyncing");
        }

        return r.Generation != Generation
            ? Reject(VolumeError.Conflict, $"volume '{Name}' changed during the copy (generation {r.Generation} → {Generation}); copy again")
            : Commit(new LegResynced(r.LegId));
    }

    private VolumeDecision Remove(RemoveLeg r)
    {
        if (RequireActive() is { } rejected)
        {
            return rejected;
        }

        if (FindLeg(r.LegId) is not { } leg)
        {
            return LegNotFound(r.LegId);
        }

        if (leg.State == LegState.InSync)
        {
            return Reject(VolumeError.Conflict, $"leg {r.LegId} is in sync; fail it first (volume fail-leg) so no data depends on it");
        }

        var decision = Commit(new LegRemoved(r.LegId));
        return decision with { Cleanup = new WipeLegs(Descriptor!, [leg]) };
    }

    private VolumeDecision Delete()
    {
        if (RequireActive() is { } rejected)
        {
            return rejected;
        }

        var started = new VolumeDeletionStarted(Descriptor!.VolumeId);
        var next = Apply(started);
        return new VolumeDecision(next, [started], null, new WipeLegs(Descriptor, Descriptor.Legs), false, false, null);
    }

    private VolumeDecision Provisioned(LegsProvisioned p)
    {
        if (Status == VolumeStatus.Creating && Descriptor!.VolumeId == p.OperationId)
        {
            if (p.Error is null)
            {
                return Commit(new VolumeCreated(p.OperationId));
            }

            var abandoned = new VolumeCreationAbandoned(p.OperationId, p.Error);
            return new VolumeDecision(Apply(abandoned), [abandoned], new VolumeRejected(Name, VolumeError.Failed, p.Error), null, false, UnregisterNameAfter: true, null);
        }

        if (Status == VolumeStatus.Active && PendingLeg is { } pending && pending.LegId == p.OperationId)
        {
            if (p.Error is null)
            {
                return Commit(new LegAdded(pending.LegId, pending.Path));
            }

            var abandoned = new LegAdditionAbandoned(pending.LegId, p.Error);
            return new VolumeDecision(Apply(abandoned), [abandoned], new VolumeRejected(Name, VolumeError.Failed, p.Error), null, false, false, null);
        }

        // A late answer for work that is no longer pending (already committed before a restart): nothing to do.
        return new VolumeDecision(this, [], null, null, false, false, null);
    }

    private VolumeDecision Wiped(LegsWiped w)
    {
        if (Status != VolumeStatus.Deleting || Descriptor!.VolumeId != w.VolumeId)
        {
            return new VolumeDecision(this, [], null, null, false, false, null);
        }

        var deleted = new VolumeDeleted(w.VolumeId, w.Problems ?? []);
        var next = Apply(deleted);
        var reply = new VolumeInfo(Descriptor with { Generation = next.Generation }, VolumeStatus.Absent,
            deleted.Problems.Count == 0 ? null : "not wiped: " + string.Join("; ", deleted.Problems));
        return new VolumeDecision(next, [deleted], reply, null, false, UnregisterNameAfter: true, null);
    }

    private VolumeDecision Commit(IVolumeEvent e)
    {
        var next = Apply(e);
        return new VolumeDecision(next, [e], next.Info(), null, false, false, null);
    }

    private VolumeDecision Answer(IVolumeProtocol reply) => new(this, [], reply, null, false, false, null);

    private VolumeDecision Reject(VolumeError error, string reason) => Answer(new VolumeRejected(Name, error, reason));

    private VolumeDecision LegNotFound(Guid legId) =>
        Reject(VolumeError.NotFound, $"volume '{Name}' has no leg {legId} (legs: {string.Join(", ", Descriptor!.Legs.Select(l => l.LegId))})");

    private VolumeDecision? RequireActive() => Status switch
    {
        VolumeStatus.Absent => Reject(VolumeError.NotFound, $"volume '{Name}' does not exist"),
        VolumeStatus.Active when PendingLeg is null => null,
        _ => Reject(VolumeError.Busy, $"volume '{Name}' is busy: {PendingDescription()}; try again when it is done"),
    };

    /// <summary>Reports from the block pipeline are accepted while an add is pending, not before the volume exists.</summary>
    private VolumeDecision? RequireCommitted() => Status switch
    {
        VolumeStatus.Active => null,
        VolumeStatus.Absent => Reject(VolumeError.NotFound, $"volume '{Name}' does not exist"),
        _ => Reject(VolumeError.Busy, $"volume '{Name}' is {Status.ToString().ToLowerInvariant()}"),
    };

    private LegDescriptor? FindLeg(Guid legId) => Descriptor?.Legs.FirstOrDefault(l => l.LegId == legId);

    private string? PendingDescription() => Status switch
    {
        VolumeStatus.Creating => "creating (formatting legs)",
        VolumeStatus.Deleting => "deleting (wiping leg superblocks)",
        _ => PendingLeg is { } leg ? $"adding leg {leg.LegId} at {leg.Path}" : null,
    };

    // ------------------------------------------------------------------ events

    /// <summary>Applies a persisted event. Throws <see cref="InvalidOperationException"/> for an event that does not fit the state.</summary>
    public VolumeState Apply(IVolumeEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return e switch
        {
            VolumeCreationStarted s when Status == VolumeStatus.Absent =>
                this with { Status = VolumeStatus.Creating, Descriptor = new VolumeDescriptor(Name, s.VolumeId, s.Geometry, s.Legs, Generation), PendingLeg = null, Cache = VolumeCacheMode.Direct },
            VolumeCacheModeChanged m when Status == VolumeStatus.Creating => this with { Cache = m.Cache },
            VolumeCacheModeChanged m when IsActive => Bump(this with { Cache = m.Cache }),
            VolumeCreated c when Status == VolumeStatus.Creating && Descriptor!.VolumeId == c.VolumeId => Bump(this with { Status = VolumeStatus.Active }),
            VolumeCreationAbandoned a when Status == VolumeStatus.Creating && Descriptor!.VolumeId == a.VolumeId =>
                this with { Status = VolumeStatus.Absent, Descriptor = null },
            LegAdditionStarted s when IsActive && PendingLeg is null => this with { PendingLeg = new LegDescriptor(s.LegId, s.Path, LegState.Resyncing) },
            LegAdded a when IsActive && PendingLeg?.LegId == a.LegId =>
                Bump(WithLegs([.. Descriptor!.Legs, new LegDescriptor(a.LegId, a.Path, LegState.Resyncing)]) with { PendingLeg = null }),
            LegAdditionAbandoned a when IsActive && PendingLeg?.LegId == a.LegId => this with { PendingLeg = null },
            LegResynced r when IsActive => Bump(UpdateLeg(r.LegId, l => l with { State = LegState.InSync })),
            LegFailed f when IsActive => Bump(UpdateLeg(f.LegId, l => l with { State = LegState.Failed })),
            LegWentMissing m when IsActive => Bump(UpdateLeg(m.LegId, l => l with { State = LegState.Missing })),
            LegMoved m when IsActive => Bump(UpdateLeg(m.LegId, l => l with { Path = m.NewPath })),
            LegRemoved r when IsActive && FindLeg(r.LegId) is not null => Bump(WithLegs(Descriptor!.Legs.Where(l => l.LegId != r.LegId).ToArray())),
            VolumeDeletionStarted d when IsActive && Descriptor!.VolumeId == d.VolumeId => this with { Status = VolumeStatus.Deleting },
            VolumeDeleted d when Status == VolumeStatus.Deleting && Descriptor!.VolumeId == d.VolumeId =>
                this with { Status = VolumeStatus.Absent, Descriptor = null, Generation = Generation + 1 },
            _ => throw new InvalidOperationException($"volume '{Name}': event {e.GetType().Name} does not apply in status {Status}{(PendingLeg is null ? "" : " with a leg addition pending")}"),
        };
    }

    private bool IsActive => Status == VolumeStatus.Active;

    /// <summary>Value equality including the leg lists (a record compares lists by reference).</summary>
    public bool Equals(VolumeState? other) =>
        other is not null && Name == other.Name && Status == other.Status && Generation == other.Generation && PendingLeg == other.PendingLeg && Cache == other.Cache &&
        (ReferenceEquals(Descriptor, other.Descriptor) || (Descriptor is not null && other.Descriptor is not null &&
            Descriptor with { Legs = [] } == other.Descriptor with { Legs = [] } && Descriptor.Legs.SequenceEqual(other.Descriptor.Legs)));

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Name, Status, Generation, Descriptor?.VolumeId);

    private VolumeState Bump(VolumeState s) => s with { Generation = s.Generation + 1, Descriptor = s.Descriptor! with { Generation = s.Generation + 1 } };

    private VolumeState WithLegs(IReadOnlyList<LegDescriptor> legs) => this with { Descriptor = Descriptor! with { Legs = legs } };

    private VolumeState UpdateLeg(Guid legId, Func<LegDescriptor, LegDescriptor> change)
    {
        if (FindLeg(legId) is null)
        {
            throw new InvalidOperationException($"volume '{Name}': event for unknown leg {legId}");
        }

        return WithLegs(Descriptor!.Legs.Select(l => l.LegId == legId ? change(l) : l).ToArray());
    }
}
