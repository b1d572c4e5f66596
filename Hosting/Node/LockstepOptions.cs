namespace Lockstep.Hosting.Node;

/// <summary>
/// Everything <c>lockstep serve</c> is configured with. Bound from the <c>Lockstep</c> section, so
/// <c>appsettings.json</c>, environment variables (<c>Lockstep__Cluster__Port=4054</c>) and
/// command-line flags (which win) all set the same properties.
/// </summary>
public sealed class LockstepOptions
{
    public const string SectionName = "Lockstep";

    /// <summary>Stable node id; maps to lockspace and bitmap slots. Defaults to the host name.</summary>
    public string NodeId { get; set; } = Environment.MachineName;

    /// <summary>Folder for everything this node keeps (journal, leg files of the demo volume, …).</summary>
    public string DataDirectory { get; set; } = "data";

    public ClusterSection Cluster { get; set; } = new();

    public HttpSection Http { get; set; } = new();

    public NbdSection Nbd { get; set; } = new();

    public JournalSection Journal { get; set; } = new();

    public MessagingSection Messaging { get; set; } = new();

    public sealed class ClusterSection
    {
        /// <summary>Host name or IP that remoting binds to and advertises.</summary>
        public string Host { get; set; } = "127.0.0.1";

        public int Port { get; set; } = 4053;

        /// <summary>Seed node addresses (<c>akka.tcp://lockstep@host:port</c> or <c>host:port</c>).</summary>
        public List<string> Seeds { get; set; } = [];

        /// <summary>
        /// How long a node may miss a majority before it fences itself. Must stay below the split-brain
        /// resolver's <see cref="StableAfter"/>, so survivors never recover a slot whose owner may still act.
        /// </summary>
        public TimeSpan FenceTimeout { get; set; } = TimeSpan.FromMilliseconds(700);

        /// <summary>How long membership must be stable before the resolver downs the unreachable side.</summary>
        public TimeSpan StableAfter { get; set; } = TimeSpan.FromSeconds(1);

        /// <summary>
        /// Down an unreachable member at once, without waiting for <see cref="StableAfter"/>, when three TCP connects to
        /// its remoting port in a row are refused: only a dead process makes its host refuse, a partition never does
        /// (Actors/Membership/RefusedConnectDowningState). Turn off where a firewall between members answers the
        /// remoting port with resets or ICMP port-unreachable (<c>reject</c>): there a refusal proves nothing.
        /// </summary>
        public bool DownRefusingMembers { get; set; } = true;

        /// <summary>
        /// How long remoting waits before it reconnects to a node after an association failed (Akka's
        /// <c>retry-gate-closed-for</c>, 5 s by default). Everything sent to that node meanwhile is dropped, so on a
        /// flapping link the 5 s default kept one node cut off for as long as the flapping lasted (measured with
        /// TCP resets every second: probe runs of 400 requests took 27 s instead of 2 s).
        /// </summary>
        public TimeSpan RetryGate { get; set; } = TimeSpan.FromSeconds(1);
    }

    public sealed class HttpSection
    {
        public string Host { get; set; } = "127.0.0.1";

        public int Port { get; set; } = 8558;

        /// <summary>Whether mutating management routes (down, leave) are accepted.</summary>
        public bool AllowWrite { get; set; }
    }

    public sealed class NbdSection
    {
        public string Host { get; set; } = "127.0.0.1";

        public int Port { get; set; } = 10809;

        /// <summary>Create a two-leg <c>demo</c> volume under the data folder on first start.</summary>
        public bool DemoVolume { get; set; }
    }

    public sealed class JournalSection
    {
        /// <summary><c>sqlite</c> (default, a file under the data folder) or <c>postgres</c>.</summary>
        public string Provider { get; set; } = "sqlite";

        /// <summary>Connection string; for SQLite defaults to <c>{DataDirectory}/journal.db</c>.</summary>
        public string? ConnectionString { get; set; }
    }

    /// <summary>The reliable-messaging layer (docs/messaging.md); the same on every node of a cluster.</summary>
    public sealed class MessagingSection
    {
        /// <summary>Entries one channel's holder keeps before it refuses with ChannelFull (at least 2: one slot stays free for a gap).</summary>
        public int HolderCap { get; set; } = 4096;

        /// <summary>Shards of each holder region.</summary>
        public int HolderShards { get; set; } = 30;

        /// <summary>Requests per channel sent before their status came back; the rest queue at the sender.</summary>
        public int MaxInFlightPerChannel { get; set; } = 512;

        /// <summary>Requests per channel queued at the sender before <c>SendAsync</c> fails.</summary>
        public int MaxQueuedPerChannel { get; set; } = 100_000;

        /// <summary>First re-send after this many milliseconds without an answer; doubles up to <see cref="MaxResendMs"/>.</summary>
        public int InitialResendMs { get; set; } = 300;

        public int MaxResendMs { get; set; } = 3_000;

        /// <summary>How often the outbox looks for requests due for a re-send.</summary>
        public int TickIntervalMs { get; set; } = 100;

        /// <summary>Entity types whose holders journal their entries (control-plane commands).</summary>
        public List<string> PersistedEntityTypes { get; set; } = [];

        /// <summary>Register the diagnostic probe handler (entity types <c>probe-0..7</c>) and its HTTP routes.</summary>
        public bool Probe { get; set; } = true;

        /// <summary>
        /// How the layer's envelopes travel between nodes: <c>tcp</c> (the layer's own peer link, with Akka.Remote while
        /// a link is not up) or <c>akka</c> (Akka.Remote only). The same on every node is best; mixed nodes still talk.
        /// </summary>
        public string Link { get; set; } = "tcp";

        /// <summary>TCP port of the peer link's listener; 0 (default) takes a free port, which peers learn by asking.</summary>
        public int LinkPort { get; set; }

        /// <summary>The first invalid setting as one line, or null.</summary>
        public string? Validate() =>
            HolderCap < 2 ? $"Messaging:HolderCap must be at least 2 (--holder-cap), not {HolderCap}"
            : HolderShards < 1 ? $"Messaging:HolderShards must be at least 1, not {HolderShards}"
            : MaxInFlightPerChannel < 1 ? $"Messaging:MaxInFlightPerChannel must be at least 1, not {MaxInFlightPerChannel}"
            : MaxQueuedPerChannel < 0 ? $"Messaging:MaxQueuedPerChannel must not be negative, not {MaxQueuedPerChannel}"
            : InitialResendMs < 1 || MaxResendMs < InitialResendMs ? $"Messaging: need 1 <= InitialResendMs <= MaxResendMs, not {InitialResendMs} and {MaxResendMs}"
            : TickIntervalMs < 1 ? $"Messaging:TickIntervalMs must be at least 1, not {TickIntervalMs}"
            : Link is not ("tcp" or "akka") ? $"Messaging:Link must be tcp or akka, not '{Link}'"
            : LinkPort is < 0 or > 65535 ? $"Messaging:LinkPort must be 0..65535, not {LinkPort}"
            : PersistedEntityTypes.FirstOrDefault(t => string.IsNullOrWhiteSpace(t) || t.Contains('|', StringComparison.Ordinal)) is { } bad
                ? $"Messaging:PersistedEntityTypes: '{bad}' is empty or contains '|'"
                : null;
    }
}
