using Lockstep.Contracts.Broadcast;

namespace Lockstep.Actors.Broadcast;

/// <summary>
/// What one stream on one node counts for <c>GET /v1/broadcast</c> and <c>/metrics</c>: messages submitted and
/// delivered by type, failed calls, and the completion latency of the last <see cref="LatenciesKept"/> calls.
/// </summary>
public sealed class StreamStatistics
{
    public const int LatenciesKept = 4096;

    private readonly Dictionary<string, long> _sentByType = [];
    private readonly Dictionary<string, long> _deliveredByType = [];
    private readonly double[] _latencies = new double[LatenciesKept];
    private long _latencyCount;

    public long Failed { get; private set; }

    public IReadOnlyDictionary<string, long> SentByType => new Dictionary<string, long>(_sentByType);

    public IReadOnlyDictionary<string, long> DeliveredByType => new Dictionary<string, long>(_deliveredByType);

    public void Submitted(ClusterMessage message) => Count(_sentByType, message);

    public void Delivering(BroadcastRound round)
    {
        foreach (var message in round.Messages)
        {
            Count(_deliveredByType, message);
        }
    }

    public void Completed(TimeSpan latency) => _latencies[_latencyCount++ % LatenciesKept] = latency.TotalMilliseconds;

    public void CallFailed() => Failed++;

    /// <summary>Nearest-rank percentile (the value at rank ceil(p × n)) of the kept latencies in ms; 0 before any.</summary>
    public double CompletionMs(double p)
    {
        var count = (int)Math.Min(_latencyCount, LatenciesKept);
        if (count == 0)
        {
            return 0;
        }

        var sorted = _latencies.Take(count).Order().ToArray();
        return sorted[Math.Clamp((int)Math.Ceiling(p * count), 1, count) - 1];
    }

    private static void Count(Dictionary<string, long> counts, ClusterMessage message)
    {
        var type = message.Type.ToString();
        counts[type] = counts.GetValueOrDefault(type) + 1;
    }
}
