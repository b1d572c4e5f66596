using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>
/// Lockspaces and their slots. A node id keeps its slot for the life of the lockspace, so a node
/// that restarts gets its old slot back (md-cluster indexes its on-disk bitmaps by slot). Slots are
/// the lowest number not yet handed out, starting at 1. Immutable: joins return a new state.
/// </summary>
public sealed class LockspaceRegistryState
{
    private readonly Dictionary<string, LockspaceInfo> _lockspaces;

    public LockspaceRegistryState(LockspaceTable table)
    {
        _lockspaces = table.Lockspaces.ToDictionary(l => l.Name, StringComparer.Ordinal);
    }

    public static LockspaceRegistryState Empty { get; } = new(new LockspaceTable([]));

    /// <summary>The state as the replicated value.</summary>
    public LockspaceTable Table => new(_lockspaces.Values.OrderBy(l => l.Name, StringComparer.Ordinal).ToList());

    public LockspaceInfo? Find(string name) => _lockspaces.GetValueOrDefault(name);

    /// <summary>Joins <paramref name="nodeId"/> to a lockspace, creating it with <paramref name="lvbLength"/> (0: <paramref name="defaultLvbLength"/>).</summary>
    /// <returns>The answer, and the new state if anything changed (else null).</returns>
    public (ILockProtocol Reply, LockspaceRegistryState? Changed) Join(string name, int lvbLength, string nodeId, int defaultLvbLength)
    {
        var error = LockNames.LockspaceError(name)
            ?? (string.IsNullOrWhiteSpace(nodeId) ? "node id is empty" : null)
            ?? (lvbLength < 0 || lvbLength % 8 != 0 || lvbLength > 4096 ? $"LVB length {lvbLength} is not a multiple of 8 between 8 and 4096" : null);
        if (error is not null)
        {
            return (new LockspaceRejected(name, error), null);
        }

        if (_lockspaces.TryGetValue(name, out var existing))
        {
            if (lvbLength != 0 && lvbLength != existing.LvbLength)
            {
                return (new LockspaceRejected(name, $"lockspace '{name}' has LVB length {existing.LvbLength}, not {lvbLength}"), null);
            }

            var slot = existing.Slots.FirstOrDefault(s => s.NodeId == nodeId);
            if (slot is not null)
            {
                return (new LockspaceJoined(name, existing.LvbLength, slot.Slot), null);
            }

            var taken = existing.Slots.Select(s => s.Slot).ToHashSet();
            var next = Enumerable.Range(1, taken.Count + 1).First(n => !taken.Contains(n));
            var updated = existing with { Slots = [.. existing.Slots, new LockspaceSlot(nodeId, next)] };
            return (new LockspaceJoined(name, existing.LvbLength, next), With(updated));
        }

        var length = lvbLength == 0 ? defaultLvbLength : lvbLength;
        var created = new LockspaceInfo(name, length, [new LockspaceSlot(nodeId, 1)]);
        return (new LockspaceJoined(name, length, 1), With(created));
    }

    /// <summary>Merges what another replica knows (after a singleton move): slots already handed out are kept.</summary>
    public LockspaceRegistryState Merge(LockspaceTable other)
    {
        var merged = new Dictionary<string, LockspaceInfo>(_lockspaces, StringComparer.Ordinal);
        foreach (var ls in other.Lockspaces)
        {
            if (!merged.TryGetValue(ls.Name, out var mine))
            {
                merged[ls.Name] = ls;
                continue;
            }

            var slots = mine.Slots.ToList();
            foreach (var s in ls.Slots.Where(s => slots.All(m => m.NodeId != s.NodeId && m.Slot != s.Slot)))
            {
                slots.Add(s);
            }

            merged[ls.Name] = mine with { Slots = slots };
        }

        return new LockspaceRegistryState(new LockspaceTable(merged.Values.ToList()));
    }

    /// <summary>Whether two tables hold the same lockspaces, LVB lengths and slots (order aside).</summary>
    public static bool SameTable(LockspaceTable a, LockspaceTable b)
    {
        static string Canonical(LockspaceTable t) => string.Join('\n', t.Lockspaces
            .OrderBy(l => l.Name, StringComparer.Ordinal)
            .Select(l => $"{l.Name}/{l.LvbLength}/{string.Join(',', l.Slots.OrderBy(s => s.Slot).Select(s => $"{s.Slot}={s.NodeId}"))}"));
        return Canonical(a) == Canonical(b);
    }

    private LockspaceRegistryState With(LockspaceInfo info)
    {
        var copy = new Dictionary<string, LockspaceInfo>(_lockspaces, StringComparer.Ordinal) { [info.Name] = info };
        return new LockspaceRegistryState(new LockspaceTable(copy.Values.ToList()));
    }
}
