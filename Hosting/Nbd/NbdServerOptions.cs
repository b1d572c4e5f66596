using Lockstep.Contracts.Nbd;

namespace Lockstep.Hosting.Nbd;

/// <summary>Settings of the NBD server (section <c>Lockstep:Nbd</c>; host and port come from the node's options).</summary>
public sealed class NbdServerOptions
{
    /// <summary>Address to listen on; <c>localhost</c> and <c>*</c> are understood.</summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>TCP port; 0 picks a free one (tests), see <see cref="NbdServer.BoundPort"/>.</summary>
    public int Port { get; set; } = NbdSizes.DefaultPort;

    /// <summary>
    /// Hard limit of one READ or WRITE. The advertised maximum block size is the smaller of this and the
    /// device's own. A WRITE announcing more payload than this closes the connection (the payload cannot be
    /// skipped cheaply); a READ asking for more gets EINVAL.
    /// </summary>
    public int MaxRequestBytes { get; set; } = NbdSizes.PortablePayloadLimit;

    /// <summary>Longest option data accepted during the handshake; longer closes the connection.</summary>
    public int MaxOptionBytes { get; set; } = 64 * 1024;

    /// <summary>Requests one connection may have in flight before the server stops reading from it.</summary>
    public int MaxInflightRequests { get; set; } = 256;

    /// <summary>Payload bytes (reads and writes) one connection may hold in flight before the server stops reading.</summary>
    public long MaxInflightBytes { get; set; } = 128L << 20;

    /// <summary>How long a client may take to finish the handshake.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a closing connection waits for its requests in flight before it drops their replies.</summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Most replies written with one vectored send.</summary>
    public int MaxRepliesPerSend { get; set; } = 64;

    /// <summary>
    /// How connections wait for requests: <see cref="NbdReceiveMode.Epoll"/> (the server's own loop, see
    /// <see cref="NbdReceiveLoop"/>; Linux x86-64, elsewhere it falls back with a warning) or
    /// <see cref="NbdReceiveMode.Sockets"/> (.NET's socket engine and the thread pool, the way before; kept to compare).
    /// </summary>
    public NbdReceiveMode ReceiveLoop { get; set; } = NbdReceiveMode.Epoll;

    /// <summary>
    /// Threads of the epoll receive loop; connections are spread over them round-robin. 0 = one per core, at most 4:
    /// one thread serialises every connection's parsing and page-cache copies, which a many-core host would feel.
    /// </summary>
    public int ReceiveThreads { get; set; }

    /// <summary>The thread count <see cref="ReceiveThreads"/> resolves to.</summary>
    internal int EffectiveReceiveThreads => ReceiveThreads > 0 ? ReceiveThreads : Math.Clamp(Environment.ProcessorCount, 1, 4);
}

/// <summary>How the NBD server waits for bytes from its clients (<c>Lockstep:Nbd:ReceiveLoop</c>).</summary>
public enum NbdReceiveMode
{
    /// <summary>One epoll thread of the NBD server runs each connection's reader when its socket is readable.</summary>
    Epoll,

    /// <summary>.NET's socket engine: a readable socket's continuation runs on a thread-pool thread.</summary>
    Sockets,
}
