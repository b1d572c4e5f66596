namespace Lockstep.Actors.Broadcast;

/// <summary>Settings of the ordered broadcast on one node; bound from the <c>Lockstep:Broadcast</c> section.</summary>
public sealed class BroadcastOptions
{
    public const string SectionName = "Lockstep:Broadcast";

    /// <summary>The DLM lockspace that holds every stream's TOKEN, MESSAGE and ACK resources.</summary>
    public string Lockspace { get; set; } = "lockstep-broadcast";

    /// <summary>
    /// LVB bytes of that lockspace, the most one round carries (the same on every node; the lockspace refuses
    /// another). 1 KiB holds ~20 volume messages; the LVB travels only with VALBLK operations on MESSAGE and TOKEN.
    /// </summary>
    public int LvbLength { get; set; } = 1024;

    /// <summary>Most messages in one round; 1 is md-cluster's one message per round.</summary>
    public int MaxBatch { get; set; } = 64;

    /// <summary>Most rounds one sender publishes per TOKEN grant before another node may send on the stream.</summary>
    public int MaxRoundsPerToken { get; set; } = 4;

    /// <summary>
    /// How long a sender waits for every node to process a round. A dead node is removed and purged well within it
    /// (stable-after + recovery, a few seconds); past it the caller gets an "unknown outcome" error.
    /// </summary>
    public TimeSpan AckTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long one member may take to answer a position gather, and how many gathers a sender tries.</summary>
    public TimeSpan GatherTimeout { get; set; } = TimeSpan.FromSeconds(2);

    public int GatherAttempts { get; set; } = 10;

    /// <summary>A delivery handler that runs longer is abandoned (logged, counted) so one bad handler cannot wedge the cluster.</summary>
    public TimeSpan HandlerTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Streams this node joins at start; <c>global</c> carries cluster-wide messages and the ping.</summary>
    public List<string> Streams { get; set; } = [];

    /// <summary>When set, every delivered message is appended to this file (one line each): the order tests compare them.</summary>
    public string? OrderLog { get; set; }

    /// <summary>The stream every node joins, for cluster-wide messages and the ping.</summary>
    public const string GlobalStream = "global";

    /// <summary>Longest stream name (its resources are <c>{stream}/t</c>, <c>/m</c>, <c>/a</c>, 64 bytes at most).</summary>
    public const int MaxStreamBytes = 60;

    /// <summary>Why <paramref name="stream"/> cannot name a stream, or null.</summary>
    public static string? StreamError(string? stream) =>
        string.IsNullOrEmpty(stream) ? "a stream needs a name"
        : System.Text.Encoding.UTF8.GetByteCount(stream) > MaxStreamBytes ? $"stream name longer than {MaxStreamBytes} bytes"
        : stream.Any(char.IsControl) ? "stream name has control characters"
        : null;

    /// <summary>Throws with every reason these settings cannot start.</summary>
    public void Validate()
    {
        var errors = new List<string>();
        if (LvbLength is < 256 or > 4096 || LvbLength % 8 != 0)
        {
            errors.Add($"Lockstep:Broadcast:LvbLength {LvbLength} must be a multiple of 8 in 256..4096");
        }

        if (MaxBatch < 1 || MaxRoundsPerToken < 1 || GatherAttempts < 1)
        {
            errors.Add("Lockstep:Broadcast:MaxBatch, MaxRoundsPerToken and GatherAttempts must be at least 1");
        }

        if (AckTimeout <= TimeSpan.Zero || GatherTimeout <= TimeSpan.Zero || HandlerTimeout <= TimeSpan.Zero)
        {
            errors.Add("Lockstep:Broadcast timeouts must be positive");
        }

        errors.AddRange(Streams.Select(StreamError).OfType<string>().Select(e => $"Lockstep:Broadcast:Streams: {e}"));
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", errors));
        }
    }
}
