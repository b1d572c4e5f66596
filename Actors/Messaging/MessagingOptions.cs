using Akka.Actor;

namespace Lockstep.Actors.Messaging;

/// <summary>Settings of the reliable-messaging layer; the same on every node of a cluster.</summary>
public sealed class MessagingOptions
{
    /// <summary>Most entries one channel's holder keeps before it refuses with <c>ChannelFull</c> (reported in stats and metrics).</summary>
    public int HolderCap { get; set; } = 4096;

    /// <summary>Sender-side window and back-off.</summary>
    public OutboxLimits Outbox { get; set; } = new();

    /// <summary>How often the outbox checks for requests due for a re-send.</summary>
    public TimeSpan TickInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Entity types whose holders keep their entries in the journal (control-plane commands), so exactly-once
    /// holds across a crash of the holder's node. All others (lock traffic) are held in memory.
    /// </summary>
    public ISet<string> PersistedEntityTypes { get; set; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>Shards of each holder region: a few per node, so holders spread and move in small steps.</summary>
    public int HolderShards { get; set; } = 30;

    /// <summary>How often a moving in-memory holder repeats its hand-over until the sender acknowledges it.</summary>
    public TimeSpan HandOverRetry { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Snapshot a persisted holder every this many journal events.</summary>
    public int SnapshotEvery { get; set; } = 1000;

    /// <summary>
    /// Every envelope of the layer goes through this; the default is <c>Tell</c>. Fault tests put a chaotic
    /// transport here (duplicate, delay, drop) — the layer must deliver exactly-once regardless.
    /// </summary>
    public IMessagingTransport Transport { get; set; } = DirectTransport.Instance;

    /// <summary>
    /// When set (and <see cref="Transport"/> is the plain <see cref="DirectTransport"/>), envelopes to other nodes go over
    /// the layer's own TCP link (<see cref="Link.PeerLinkTransport"/>) instead of Akka.Remote. <c>lockstep serve</c>
    /// turns it on (<c>Lockstep:Messaging:Link</c>); in-process tests leave it off unless they test it.
    /// </summary>
    public Link.PeerLinkOptions? PeerLink { get; set; }

    /// <summary>These options with another transport (the layer runs with a copy that names its peer link).</summary>
    internal MessagingOptions WithTransport(IMessagingTransport transport)
    {
        var copy = (MessagingOptions)MemberwiseClone();
        copy.Transport = transport;
        return copy;
    }
}

/// <summary>The last step of sending an envelope of the layer (a seam for fault injection).</summary>
public interface IMessagingTransport
{
    /// <summary>Sends <paramref name="message"/> to <paramref name="to"/> as <paramref name="sender"/>.</summary>
    void Send(IActorRef to, object message, IActorRef sender);

    /// <summary>
    /// Until the returned scope is disposed, sends from this thread may wait and leave together (the peer link writes
    /// one batch per peer instead of one per envelope). For an actor flushing many batches at once; the default holds nothing.
    /// </summary>
    IDisposable HoldSends() => NothingHeld.Instance;
}

/// <summary>The scope of a transport that holds nothing back.</summary>
internal sealed class NothingHeld : IDisposable
{
    public static readonly NothingHeld Instance = new();

    public void Dispose()
    {
    }
}

/// <summary>Plain <c>Tell</c>.</summary>
public sealed class DirectTransport : IMessagingTransport
{
    /// <summary>The single instance.</summary>
    public static readonly DirectTransport Instance = new();

    /// <inheritdoc />
    public void Send(IActorRef to, object message, IActorRef sender) => to.Tell(message, sender);
}
