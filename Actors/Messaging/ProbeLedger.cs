using Lockstep.Contracts;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// What the probe handler ran on this node: every (channel, seq) and every probe request, so a fault test between
/// real processes can check the layer's three promises from outside: each request's handler ran exactly once
/// (summed over the nodes), and per channel handlers ran in seq order. Thread-safe: handlers of different channels
/// run concurrently on their holders.
/// </summary>
/// <remarks>
/// Per channel it keeps only the last seq run and counts what broke the order: a seq at or below the last one
/// (<see cref="ProbeChannelView.Backwards"/>: a repeat, or an overtaking), or one that skips ahead
/// (<see cref="ProbeChannelView.Skips"/>: only legitimate when the channel's holder ran the skipped seqs on another
/// node, i.e. it moved). Per run it keeps how often each request index ran, compressed to ranges for the answer.
/// </remarks>
public sealed class ProbeLedger
{
    /// <summary>Entity types the probe registers: several, so the holders of one sender's channels spread over the nodes.</summary>
    public static readonly IReadOnlyList<string> EntityTypes = Enumerable.Range(0, 8).Select(i => $"probe-{i}").ToArray();

    private readonly object _gate = new();
    private readonly Dictionary<string, ChannelRecord> _channels = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Dictionary<int, int>> _runs = new(StringComparer.Ordinal);
    private readonly string _nodeId;

    /// <summary>A ledger for the node <paramref name="nodeId"/> (named in every status).</summary>
    public ProbeLedger(string nodeId)
    {
        ArgumentException.ThrowIfNullOrEmpty(nodeId);
        _nodeId = nodeId;
    }

    /// <summary>The probe handler: records the run and answers <see cref="ProbeDone"/>.</summary>
    public IProtocolMessage Handle(HandlerContext context, IProtocolMessage payload)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (payload is not ProbeRequest request)
        {
            throw new ArgumentException($"the probe handles {nameof(ProbeRequest)}, not {payload?.GetType().Name ?? "null"}", nameof(payload));
        }

        Record(context.ChannelId, context.Seq, context.PossiblyRepeated, request.RunId, request.Index);
        return new ProbeDone(request.RunId, request.Index, _nodeId);
    }

    /// <summary>Records one handler run.</summary>
    public void Record(string channelId, long seq, bool possiblyRepeated, string runId, int index)
    {
        ArgumentException.ThrowIfNullOrEmpty(channelId);
        ArgumentException.ThrowIfNullOrEmpty(runId);
        lock (_gate)
        {
            if (!_channels.TryGetValue(channelId, out var channel))
            {
                channel = new ChannelRecord { FirstSeq = seq };
                _channels[channelId] = channel;
            }
            else if (seq <= channel.LastSeq)
            {
                channel.Backwards++;
            }
            else if (seq > channel.LastSeq + 1)
            {
                channel.Skips++;
            }

            channel.LastSeq = Math.Max(channel.LastSeq, seq);
            channel.Runs++;
            if (possiblyRepeated)
            {
                channel.Flagged++;
            }

            if (!_runs.TryGetValue(runId, out var counts))
            {
                counts = [];
                _runs[runId] = counts;
            }

            counts[index] = counts.GetValueOrDefault(index) + 1;
        }
    }

    /// <summary>Everything recorded (one run only when <paramref name="runId"/> is given; channels always all).</summary>
    public ProbeLedgerView Snapshot(string? runId = null)
    {
        lock (_gate)
        {
            var channels = _channels.OrderBy(c => c.Key, StringComparer.Ordinal)
                .Select(c => new ProbeChannelView(c.Key, c.Value.Runs, c.Value.FirstSeq, c.Value.LastSeq, c.Value.Backwards, c.Value.Skips, c.Value.Flagged))
                .ToList();
            var runs = _runs.Where(r => runId is null || r.Key == runId).OrderBy(r => r.Key, StringComparer.Ordinal)
                .Select(r => RunView(r.Key, r.Value)).ToList();
            return new ProbeLedgerView(_nodeId, channels, runs);
        }
    }

    private static ProbeRunRecordView RunView(string runId, Dictionary<int, int> counts)
    {
        var indices = counts.Keys.Order().ToArray();
        var repeated = indices.Where(i => counts[i] > 1).ToArray();
        return new ProbeRunRecordView(runId, counts.Values.Sum(c => (long)c), indices.Length, Ranges(indices), repeated);
    }

    /// <summary>Sorted distinct values as inclusive ranges: 0,1,2,5,6 → [0,2],[5,6].</summary>
    public static IReadOnlyList<int[]> Ranges(IReadOnlyList<int> sortedDistinct)
    {
        ArgumentNullException.ThrowIfNull(sortedDistinct);
        var ranges = new List<int[]>();
        for (var i = 0; i < sortedDistinct.Count; i++)
        {
            var start = sortedDistinct[i];
            while (i + 1 < sortedDistinct.Count && sortedDistinct[i + 1] == sortedDistinct[i] + 1)
            {
                i++;
            }

            ranges.Add([start, sortedDistinct[i]]);
        }

        return ranges;
    }

    private sealed class ChannelRecord
    {
        public long FirstSeq;
        public long LastSeq;
        public long Runs;
        public long Backwards;
        public long Skips;
        public long Flagged;
    }
}

/// <summary>What one node's probe ran.</summary>
/// <param name="Node">The node id.</param>
/// <param name="Channels">Per channel whose holder ran probe requests here.</param>
/// <param name="Runs">Per probe run.</param>
public sealed record ProbeLedgerView(string Node, IReadOnlyList<ProbeChannelView> Channels, IReadOnlyList<ProbeRunRecordView> Runs);

/// <summary>One channel's runs on one node.</summary>
/// <param name="Channel">The channel id.</param>
/// <param name="Runs">Handler runs.</param>
/// <param name="FirstSeq">The first seq run here.</param>
/// <param name="LastSeq">The highest seq run here.</param>
/// <param name="Backwards">Runs whose seq was not above every earlier one (a repeat or an overtaking): an order violation.</param>
/// <param name="Skips">Runs that skipped seqs: an order violation unless the holder ran those on another node.</param>
/// <param name="Flagged">Runs flagged <c>PossiblyRepeated</c>.</param>
public sealed record ProbeChannelView(string Channel, long Runs, long FirstSeq, long LastSeq, long Backwards, long Skips, long Flagged);

/// <summary>One probe run's requests as run on one node.</summary>
/// <param name="RunId">The run.</param>
/// <param name="Runs">Handler runs of its requests here.</param>
/// <param name="Distinct">Distinct request indices run here.</param>
/// <param name="Ranges">Those indices as inclusive ranges.</param>
/// <param name="Repeated">Indices that ran more than once here (all of them: a diagnostic, not a hot path).</param>
public sealed record ProbeRunRecordView(string RunId, long Runs, int Distinct, IReadOnlyList<int[]> Ranges, IReadOnlyList<int> Repeated);

/// <summary>
/// The three numbers of a probe run, from every node's ledger: requests whose handler ran exactly once in the
/// whole cluster, requests that ran more than once or never, and per-channel order violations.
/// </summary>
/// <param name="Requests">Requests the run sent.</param>
/// <param name="RanExactlyOnce">Indices 0..Requests-1 that ran exactly once, summed over the nodes.</param>
/// <param name="RanMoreThanOnce">Indices that ran on two nodes, or twice on one.</param>
/// <param name="NeverRan">Indices no node ran.</param>
/// <param name="Unknown">Indices outside 0..Requests-1 that some node ran (a wrong run id or index; must be 0).</param>
/// <param name="TotalRuns">Handler runs of the run's requests, summed.</param>
/// <param name="OrderViolations">Backwards runs plus skips over every channel of every node.</param>
public sealed record ProbeTally(int Requests, int RanExactlyOnce, int RanMoreThanOnce, int NeverRan, int Unknown, long TotalRuns, long OrderViolations)
{
    /// <summary>Combines the ledgers of every node for run <paramref name="runId"/> of <paramref name="requests"/> requests.</summary>
    public static ProbeTally Of(IEnumerable<ProbeLedgerView> nodes, string runId, int requests)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        ArgumentOutOfRangeException.ThrowIfNegative(requests);
        var counts = new int[requests];
        var unknown = 0;
        long runs = 0;
        long order = 0;
        foreach (var node in nodes)
        {
            order += node.Channels.Sum(c => c.Backwards + c.Skips);
            foreach (var run in node.Runs.Where(r => r.RunId == runId))
            {
                runs += run.Runs;
                foreach (var range in run.Ranges)
                {
                    for (var i = range[0]; i <= range[1]; i++)
                    {
                        if (i >= 0 && i < requests)
                        {
                            counts[i]++;
                        }
                        else
                        {
                            unknown++;
                        }
                    }
                }

                foreach (var i in run.Repeated.Where(i => i >= 0 && i < requests))
                {
                    counts[i]++;
                }
            }
        }

        return new ProbeTally(requests, counts.Count(c => c == 1), counts.Count(c => c > 1), counts.Count(c => c == 0), unknown, runs, order);
    }
}
