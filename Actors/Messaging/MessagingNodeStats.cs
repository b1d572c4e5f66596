using System.Collections.Concurrent;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// Live counters of the layer on one node, written by its actors and read by the management API and the metrics
/// scrape: each holder living here publishes its table size, the outbox its pending calls and re-sends. Per actor
/// system (not static), so in-process multi-node tests see each node's own numbers.
/// </summary>
public sealed class MessagingNodeStats
{
    private readonly ConcurrentDictionary<string, HolderGauge> _holders = new(StringComparer.Ordinal);
    private long _outboxPending;
    private long _resends;
    private long _completed;

    /// <summary>Stats of a layer with holder cap <paramref name="holderCap"/>.</summary>
    public MessagingNodeStats(int holderCap) => HolderCap = holderCap;

    /// <summary>Entries one channel's holder may keep.</summary>
    public int HolderCap { get; }

    /// <summary>A holder started here: it writes its numbers into the returned gauge.</summary>
    public HolderGauge HolderStarted(string channelId, bool persisted)
    {
        var gauge = new HolderGauge(channelId, persisted);
        _holders[channelId] = gauge;
        return gauge;
    }

    /// <summary>A holder stopped here (unless a newer holder of the channel already replaced its gauge).</summary>
    public void HolderStopped(HolderGauge gauge)
    {
        ArgumentNullException.ThrowIfNull(gauge);
        _holders.TryRemove(new KeyValuePair<string, HolderGauge>(gauge.ChannelId, gauge));
    }

    /// <summary>The outbox publishes after every step.</summary>
    public void OutboxUpdated(int pending, long resends, long completed)
    {
        Volatile.Write(ref _outboxPending, pending);
        Volatile.Write(ref _resends, resends);
        Volatile.Write(ref _completed, completed);
    }

    /// <summary>A consistent-enough copy for a report (each number is exact, they are not read atomically together).</summary>
    public MessagingStatsView Snapshot()
    {
        var holders = _holders.Values
            .Select(h => new HolderTableView(h.ChannelId, h.Persisted, h.Entries, h.NextToRun, h.Runs, h.Rejections))
            .OrderBy(h => h.Channel, StringComparer.Ordinal)
            .ToList();
        return MessagingStatsView.From(HolderCap, holders, (int)Volatile.Read(ref _outboxPending), Volatile.Read(ref _resends), Volatile.Read(ref _completed));
    }
}

/// <summary>One holder's published numbers (written by its actor only).</summary>
public sealed class HolderGauge(string channelId, bool persisted)
{
    private int _entries;
    private long _nextToRun;
    private long _runs;
    private long _rejections;

    /// <summary>The holder's channel.</summary>
    public string ChannelId { get; } = channelId;

    /// <summary>Whether it journals its entries.</summary>
    public bool Persisted { get; } = persisted;

    /// <summary>Entries in its table.</summary>
    public int Entries => Volatile.Read(ref _entries);

    /// <summary>The next seq it will run.</summary>
    public long NextToRun => Volatile.Read(ref _nextToRun);

    /// <summary>Handler runs.</summary>
    public long Runs => Volatile.Read(ref _runs);

    /// <summary>Refused requests.</summary>
    public long Rejections => Volatile.Read(ref _rejections);

    /// <summary>Publishes the holder's numbers.</summary>
    public void Update(int entries, long nextToRun, long runs, long rejections)
    {
        Volatile.Write(ref _entries, entries);
        Volatile.Write(ref _nextToRun, nextToRun);
        Volatile.Write(ref _runs, runs);
        Volatile.Write(ref _rejections, rejections);
    }
}

/// <summary>One holder table on this node.</summary>
/// <param name="Channel">Its channel.</param>
/// <param name="Persisted">Journaled (control plane) or in memory (lock traffic).</param>
/// <param name="Entries">Entries held now.</param>
/// <param name="NextToRun">The next seq it runs.</param>
/// <param name="Runs">Handler runs of this incarnation.</param>
/// <param name="Rejections">Requests it refused (cap, no handler, moving, …).</param>
public sealed record HolderTableView(string Channel, bool Persisted, int Entries, long NextToRun, long Runs, long Rejections);

/// <summary>The layer's numbers on one node (<c>GET /v1/messaging/stats</c> and the metrics).</summary>
/// <param name="HolderCap">Entries one holder may keep.</param>
/// <param name="Holders">Holder tables living on this node.</param>
/// <param name="HolderEntries">Entries over all of them.</param>
/// <param name="LargestHolder">The fullest table's entries.</param>
/// <param name="HoldersAtCap">Tables at the cap (refusing with ChannelFull).</param>
/// <param name="OutboxPending">This node's calls not yet complete.</param>
/// <param name="Resends">Requests and drops this node's outbox re-sent.</param>
/// <param name="Completed">Calls this node's outbox completed.</param>
public sealed record MessagingStatsView(
    int HolderCap, IReadOnlyList<HolderTableView> Holders, long HolderEntries, int LargestHolder, int HoldersAtCap, int OutboxPending, long Resends, long Completed)
{
    /// <summary>Summarises <paramref name="holders"/> against <paramref name="holderCap"/>.</summary>
    public static MessagingStatsView From(int holderCap, IReadOnlyList<HolderTableView> holders, int outboxPending, long resends, long completed)
    {
        ArgumentNullException.ThrowIfNull(holders);
        return new MessagingStatsView(
            holderCap,
            holders,
            holders.Sum(h => (long)h.Entries),
            holders.Count == 0 ? 0 : holders.Max(h => h.Entries),
            holders.Count(h => h.Entries >= holderCap),
            outboxPending,
            resends,
            completed);
    }
}
