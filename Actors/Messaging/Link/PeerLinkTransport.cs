using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Lockstep.Actors.Serialization;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging.Link;

/// <summary>Settings of the peer link (<see cref="PeerLinkTransport"/>); the same on every node.</summary>
public sealed class PeerLinkOptions
{
    /// <summary>TCP port of this node's link listener; 0 takes a free one (peers learn it by asking, see <see cref="PeerLinkQuery"/>).</summary>
    public int Port { get; set; }

    /// <summary>Address the listener binds; null binds the host of the node's Akka address.</summary>
    public string? BindHost { get; set; }

    /// <summary>A connection whose send has made no progress this long is closed (its envelopes go over Akka.Remote).</summary>
    public TimeSpan StallTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Longest wait for a peer's endpoint answer, its TCP connect, and its handshake answer.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Longest wait between connection attempts to a peer that keeps failing (doubling from 250 ms).</summary>
    public TimeSpan MaxRetryInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Bytes waiting for one connection beyond which envelopes go over Akka.Remote instead.</summary>
    public int MaxPendingBytes { get; set; } = 32 << 20;
}

/// <summary>What the link has done since the node started.</summary>
/// <param name="Port">This node's listener port.</param>
/// <param name="SentOverLink">Envelopes sent on a link connection.</param>
/// <param name="SentOverAkka">Envelopes to other nodes that went over Akka.Remote (no connection yet, or not link-able).</param>
/// <param name="Writes">Socket writes that carried them (fewer than envelopes when writes batch).</param>
/// <param name="Received">Envelopes received and delivered from link connections.</param>
/// <param name="Reads">Socket reads that brought them.</param>
/// <param name="OutgoingConnections">Open connections to peers.</param>
/// <param name="IncomingConnections">Open connections from peers.</param>
/// <param name="ConnectFailures">Connection attempts that failed.</param>
/// <param name="ProtocolErrors">Incoming connections closed for breaking the wire format.</param>
public sealed record PeerLinkStats(int Port, long SentOverLink, long SentOverAkka, long Writes, long Received, long Reads, int OutgoingConnections, int IncomingConnections, long ConnectFailures, long ProtocolErrors);

/// <summary>
/// The reliable layer's node-to-node wire: one TCP connection per direction and peer, carrying the layer's per-call
/// envelopes (<see cref="MessagingWireSerializer"/>) without Akka.Remote's endpoint actors, so a hop costs a socket
/// write and one read thread's wake-up (~15 µs round trip here, against ~140 µs for an Akka.Remote Ask).
/// Best effort by design, like Akka.Remote: the layer above re-sends, drops duplicates and fills gaps, so a connection
/// that breaks loses nothing the layer has not already planned for. Until a peer's connection is up (and whenever it
/// is down, or for any envelope it cannot carry) envelopes go over Akka.Remote (<see cref="DirectTransport"/>).
/// </summary>
public sealed class PeerLinkTransport : IMessagingTransport, IDisposable
{
    private readonly ExtendedActorSystem _system;
    private readonly PeerLinkOptions _options;
    private readonly IMessagingTransport _fallback;
    private readonly ILoggingAdapter _log;
    private readonly Socket _listener;
    private readonly Address _selfAddress;
    private readonly string _selfAddressText;
    private readonly long _selfUid;
    private readonly ConcurrentDictionary<Address, Peer> _peers = new();
    private readonly ConcurrentDictionary<IncomingConnection, byte> _incoming = new();
    private readonly Timer _stallCheck;
    private readonly CancellationTokenSource _stopping = new();
    private long _sentOverLink;
    private long _sentOverAkka;
    private long _received;
    private long _writes;
    private long _reads;
    private long _connectFailures;
    private long _protocolErrors;

    private PeerLinkTransport(ExtendedActorSystem system, PeerLinkOptions options, IMessagingTransport fallback)
    {
        _system = system;
        _options = options;
        _fallback = fallback;
        _log = Logging.GetLogger(system, typeof(PeerLinkTransport));
        var self = Cluster.Get(system).SelfUniqueAddress;
        _selfAddress = self.Address;
        _selfAddressText = self.Address.ToString();
        _selfUid = self.Uid;
        _listener = new Socket(SocketType.Stream, ProtocolType.Tcp);
        var bind = BindAddress(options.BindHost ?? _selfAddress.Host);
        if (bind.AddressFamily == AddressFamily.InterNetworkV6)
        {
            _listener.DualMode = true;
        }

        _listener.Bind(new IPEndPoint(bind, options.Port));
        _listener.Listen(64);
        Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        _stallCheck = new Timer(_ => CloseStalled(), null, TimeSpan.FromMilliseconds(500), TimeSpan.FromMilliseconds(500));
        _ = AcceptLoopAsync();
    }

    /// <summary>Connections accepted that have not sent their hello yet; beyond <see cref="MaxAwaitingHello"/> new ones are closed at once.</summary>
    private int _awaitingHello;

    private const int MaxAwaitingHello = 64;

    /// <summary>Bytes a single socket write carries at most, so the stall check sees progress on a long backlog.</summary>
    private const int ChunkBytes = 256 * 1024;

    /// <summary>Batches a sending thread writes itself before the rest of a busy link's backlog moves to the thread pool.</summary>
    private const int InlineBatches = 8;

    /// <summary>The listener's TCP port.</summary>
    public int Port { get; }

    /// <summary>
    /// Binds the listener and closes everything when the actor system terminates. Throws when the port cannot be bound.
    /// Peers learn of the link only once <see cref="Announce"/> ran.
    /// </summary>
    public static PeerLinkTransport Start(ExtendedActorSystem system, PeerLinkOptions options, IMessagingTransport fallback)
    {
        ArgumentNullException.ThrowIfNull(system);
        ArgumentNullException.ThrowIfNull(options);
        var transport = new PeerLinkTransport(system, options, fallback);
        system.RegisterOnTermination(transport.Dispose);
        return transport;
    }

    /// <summary>
    /// Starts the node's <c>/user/lockstep-link</c> actor: it answers <see cref="PeerLinkQuery"/> and closes the connections
    /// of unreachable and removed members. Called once the actors the link delivers to exist, so a peer's first path
    /// definitions resolve to them.
    /// </summary>
    public void Announce() => _system.ActorOf(Props.Create(() => new PeerLinkActor(this)), PeerLinkActor.Name);

    /// <summary>What the link has done so far.</summary>
    public PeerLinkStats Stats => new(Port, Interlocked.Read(ref _sentOverLink), Interlocked.Read(ref _sentOverAkka), Interlocked.Read(ref _writes),
        Interlocked.Read(ref _received), Interlocked.Read(ref _reads),
        _peers.Values.Count(p => p.Link is { IsDead: false }), _incoming.Count, Interlocked.Read(ref _connectFailures), Interlocked.Read(ref _protocolErrors));

    /// <inheritdoc />
    public void Send(IActorRef to, object message, IActorRef sender)
    {
        ArgumentNullException.ThrowIfNull(to);
        var address = to.Path.Address;
        // A sender on another node cannot be named on this node's connection (the receiver checks it): Akka.Remote.
        if (to is not IInternalActorRef { IsLocal: false } || !address.HasGlobalScope || _stopping.IsCancellationRequested
            || (!sender.IsNobody() && sender is not IInternalActorRef { IsLocal: true }))
        {
            _fallback.Send(to, message, sender);
            return;
        }

        var peer = _peers.GetOrAdd(address, static a => new Peer(a));
        try
        {
            if (peer.Link is { IsDead: false } link && TryEncode(message, out var serializerId, out var manifest, out var payload)
                && link.TryWrite(to, sender, serializerId, manifest, payload))
            {
                Interlocked.Increment(ref _sentOverLink);
                return;
            }
        }
        catch (Exception ex)
        {
            // Never into the sending actor (a restarted outbox fails its pending calls): the envelope takes Akka.Remote.
            _log.Warning("Peer link could not carry a {0} to {1} ({2}: {3}); it goes over Akka.Remote", message.GetType().Name, to.Path, ex.GetType().Name, ex.Message);
        }

        if (peer.Link is null or { IsDead: true })
        {
            MaybeConnect(peer);
        }

        Interlocked.Increment(ref _sentOverAkka);
        _fallback.Send(to, message, sender);
    }

    /// <summary>Links written to by this thread while it holds its sends (<see cref="HoldSends"/>), to pump when it lets go.</summary>
    [ThreadStatic]
    private static List<OutgoingLink>? t_held;

    [ThreadStatic]
    private static int t_holdDepth;

    /// <inheritdoc />
    public IDisposable HoldSends()
    {
        t_holdDepth++;
        t_held ??= [];
        return new Held();
    }

    private sealed class Held : IDisposable
    {
        private bool _released;

        public void Dispose()
        {
            if (_released)
            {
                return;
            }

            _released = true;
            if (--t_holdDepth > 0 || t_held is not { Count: > 0 } held)
            {
                return;
            }

            var links = held.ToArray();
            held.Clear();
            foreach (var link in links)
            {
                link.Kick();
            }
        }
    }

    /// <summary>Closes every connection (both directions); later envelopes reconnect. For fault tests.</summary>
    public void ResetConnections()
    {
        foreach (var peer in _peers.Values)
        {
            peer.Link?.Kill("reset");
            peer.RetryAtTicks = 0;
        }

        foreach (var incoming in _incoming.Keys)
        {
            incoming.Close();
        }
    }

    /// <summary>Closes the connections to and from <paramref name="address"/> (unreachable or removed member).</summary>
    internal void Disconnect(Address address, string why)
    {
        if (_peers.TryGetValue(address, out var peer))
        {
            peer.Link?.Kill(why);
        }

        foreach (var incoming in _incoming.Keys.Where(c => c.From == address.ToString()))
        {
            incoming.Close();
        }
    }

    /// <summary>The member answers again: connect at the next envelope rather than after the back-off.</summary>
    internal void Reachable(Address address)
    {
        if (_peers.TryGetValue(address, out var peer))
        {
            peer.RetryAtTicks = 0;
            peer.Failures = 0;
        }
    }

    internal long SelfUid => _selfUid;

    /// <summary>The incarnation a live link to <paramref name="address"/> reaches, or null when none is up (tests).</summary>
    internal long? LinkedUid(Address address) =>
        _peers.TryGetValue(address, out var peer) && peer.Link is { IsDead: false } link ? link.PeerUid : null;

    public void Dispose()
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }

        _stopping.Cancel();
        _stallCheck.Dispose();
        _listener.Dispose();
        foreach (var peer in _peers.Values)
        {
            peer.Link?.Kill("node stopping");
        }

        foreach (var incoming in _incoming.Keys)
        {
            incoming.Close();
        }
    }

    private bool TryEncode(object message, out int serializerId, out string manifest, out byte[] payload)
    {
        // Only the layer's per-call envelopes ride the link: a receiver refuses every other serializer, so the link
        // never carries (or deserializes) an open-ended object graph. The rarer envelopes stay on Akka.Remote.
        var serializer = _system.Serialization.FindSerializerFor(message);
        if (serializer.Identifier != MessagingWireSerializer.SerializerId)
        {
            serializerId = 0;
            manifest = string.Empty;
            payload = [];
            return false;
        }

        serializerId = serializer.Identifier;
        manifest = Akka.Serialization.Serialization.ManifestFor(serializer, message);
        payload = serializer.ToBinary(message);
        return PeerLinkWire.MessageFits(manifest, payload.Length);
    }

    private string PathOf(IActorRef actor) =>
        actor is IInternalActorRef { IsLocal: true } ? actor.Path.ToSerializationFormatWithAddress(_selfAddress) : actor.Path.ToSerializationFormat();

    private void MaybeConnect(Peer peer)
    {
        if (Stopwatch.GetTimestamp() < peer.RetryAtTicks || Interlocked.CompareExchange(ref peer.Connecting, 1, 0) != 0)
        {
            return;
        }

        _ = ConnectAsync(peer);
    }

    private async Task ConnectAsync(Peer peer)
    {
        Socket? socket = null;
        try
        {
            var linkActor = _system.ActorSelection(new RootActorPath(peer.Address) / "user" / PeerLinkActor.Name);
            var endpoint = await linkActor.Ask<PeerLinkEndpoint>(PeerLinkQuery.Instance, _options.ConnectTimeout).ConfigureAwait(false);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
            timeout.CancelAfter(_options.ConnectTimeout);
            socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            Tune(socket);
            await socket.ConnectAsync(peer.Address.Host!, endpoint.Port, timeout.Token).ConfigureAwait(false);
            var hello = new LinkBuffer(256);
            PeerLinkWire.WriteHello(hello, new PeerLinkHello(_selfAddressText, _selfUid, peer.Address.ToString(), endpoint.Uid));
            await SendAllAsync(socket, hello.Written, timeout.Token).ConfigureAwait(false);
            var answer = new byte[1];
            if (await socket.ReceiveAsync(answer, SocketFlags.None, timeout.Token).ConfigureAwait(false) != 1 || answer[0] != PeerLinkWire.Accepted)
            {
                throw new IOException($"the peer refused the link: {await ReadRefusalAsync(socket, answer[0], timeout.Token).ConfigureAwait(false)}");
            }

            var link = new OutgoingLink(this, peer, socket, endpoint.Uid);
            socket = null;
            peer.Failures = 0;
            peer.Link = link;
            link.WatchForClose();
            if (_stopping.IsCancellationRequested)
            {
                // Dispose ran while this attempt was under way and did not see the new link.
                link.Kill("node stopping");
                return;
            }

            _log.Info("Peer link to {0} (uid {1}) is up", peer.Address, endpoint.Uid);
        }
        catch (Exception ex) when (!_stopping.IsCancellationRequested)
        {
            Interlocked.Increment(ref _connectFailures);
            var failures = ++peer.Failures;
            var wait = TimeSpan.FromMilliseconds(Math.Min(_options.MaxRetryInterval.TotalMilliseconds, 250 * Math.Pow(2, Math.Min(failures - 1, 10))));
            peer.RetryAtTicks = Stopwatch.GetTimestamp() + (long)(wait.TotalSeconds * Stopwatch.Frequency);
            // The first failure is worth a line; a peer that stays away (an older node, a closed port) would flood the log.
            if (failures == 1)
            {
                _log.Warning("Peer link to {0} failed ({1}); its envelopes go over Akka.Remote, retrying in {2} ms", peer.Address, ex.Message, (int)wait.TotalMilliseconds);
            }
            else
            {
                _log.Debug("Peer link to {0} failed again ({1})", peer.Address, ex.Message);
            }
        }
        catch (Exception)
        {
            // Stopping: nothing to report.
        }
        finally
        {
            socket?.Dispose();
            Volatile.Write(ref peer.Connecting, 0);
        }
    }

    private static async Task<string> ReadRefusalAsync(Socket socket, byte first, CancellationToken cancel)
    {
        if (first != PeerLinkWire.Refused)
        {
            return first == 0 ? "connection closed" : $"unexpected answer {first}";
        }

        var buffer = new byte[2 + PeerLinkWire.MaxPath];
        var length = 0;
        while (true)
        {
            var at = 0;
            if (PeerLinkWire.TryReadShortString(buffer.AsSpan(0, length), ref at, out var reason))
            {
                return reason!;
            }

            var read = await socket.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, cancel).ConfigureAwait(false);
            if (read == 0)
            {
                return "refused without a reason";
            }

            length += read;
        }
    }

    private static async ValueTask SendAllAsync(Socket socket, ReadOnlyMemory<byte> bytes, CancellationToken cancel)
    {
        while (!bytes.IsEmpty)
        {
            var sent = await socket.SendAsync(bytes, SocketFlags.None, cancel).ConfigureAwait(false);
            bytes = bytes[sent..];
        }
    }

    private void LinkDied(Peer peer, OutgoingLink link, string why)
    {
        if (ReferenceEquals(peer.Link, link))
        {
            peer.Link = null;
        }

        if (!_stopping.IsCancellationRequested)
        {
            peer.RetryAtTicks = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 4;
            _log.Info("Peer link to {0} closed ({1}); envelopes go over Akka.Remote until it is back", peer.Address, why);
        }
    }

    /// <summary>
    /// Keep-alive and a user timeout on every link socket: a peer that silently stops acknowledging (a blackholed path, an
    /// expired conntrack entry, a firewall rule on this port only) fails the socket within about the stall timeout, whether
    /// or not a write is waiting. Without it such a link would look up while eating envelopes, and the holders' replies and
    /// the pinned channels (which go straight to their actor, never through a shard region) would stall until TCP gave up.
    /// </summary>
    private void Tune(Socket socket)
    {
        socket.NoDelay = true;
        var seconds = Math.Max(1, (int)Math.Ceiling(_options.StallTimeout.TotalSeconds));
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, seconds);
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 1);
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 3);
        if (OperatingSystem.IsLinux())
        {
            const int IpProtoTcp = 6, TcpUserTimeout = 18;
            socket.SetRawSocketOption(IpProtoTcp, TcpUserTimeout, BitConverter.GetBytes((int)_options.StallTimeout.TotalMilliseconds));
        }
    }

    private void CloseStalled()
    {
        try
        {
            CloseStalledLinks();
        }
        catch (Exception ex)
        {
            // A timer callback must not throw (it would end the process); the next tick tries again.
            _log.Warning("Peer link stall check failed: {0}", ex.Message);
        }
    }

    private void CloseStalledLinks()
    {
        var limit = (long)(_options.StallTimeout.TotalSeconds * Stopwatch.Frequency);
        var now = Stopwatch.GetTimestamp();
        foreach (var peer in _peers.Values)
        {
            if (peer.Link is { } link && link.StalledSince is var since and not 0 && now - since > limit)
            {
                link.Kill($"no send progress for {_options.StallTimeout.TotalMilliseconds} ms");
            }
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket accepted;
            try
            {
                accepted = await _listener.AcceptAsync(_stopping.Token).ConfigureAwait(false);
            }
            catch (Exception) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException ex)
            {
                _log.Warning("Peer link listener: accept failed ({0})", ex.Message);
                await Task.Delay(100).ConfigureAwait(false);
                continue;
            }

            try
            {
                if (Interlocked.Increment(ref _awaitingHello) > MaxAwaitingHello)
                {
                    // Something is opening connections and not speaking: refuse more threads for it.
                    Interlocked.Decrement(ref _awaitingHello);
                    accepted.Dispose();
                    continue;
                }

                var connection = new IncomingConnection(this, accepted, accepted.RemoteEndPoint?.ToString() ?? "?");
                _incoming[connection] = 0;
                if (_stopping.IsCancellationRequested)
                {
                    connection.Close();
                    return;
                }

                // A thread of its own blocked in recv: the kernel wakes it straight when bytes come, which is most of
                // why this is faster than an async read completing through the socket engine and the thread pool.
                new Thread(connection.Run) { IsBackground = true, Name = "lockstep-link-in" }.Start();
            }
            catch (Exception ex)
            {
                Interlocked.Decrement(ref _awaitingHello);
                _log.Warning("Peer link listener: could not take a connection ({0})", ex.Message);
                accepted.Dispose();
            }
        }
    }

    private static IPAddress BindAddress(string host)
    {
        if (IPAddress.TryParse(host, out var ip))
        {
            return ip;
        }

        var addresses = Dns.GetHostAddresses(host);
        return addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addresses.FirstOrDefault()
            ?? throw new InvalidOperationException($"peer link: cannot resolve bind host '{host}'");
    }

    /// <summary>Why a new connection is refused, or null: it must be meant for this node incarnation and come from a member.</summary>
    private string? Refusal(PeerLinkHello hello)
    {
        if (hello.ToAddress != _selfAddressText || hello.ToUid != _selfUid)
        {
            return $"meant for {hello.ToAddress} uid {hello.ToUid}, this is {_selfAddressText} uid {_selfUid}";
        }

        var member = Cluster.Get(_system).State.Members.FirstOrDefault(m => m.UniqueAddress.Uid == hello.FromUid && m.Address.ToString() == hello.FromAddress);
        return member is null || member.Status is MemberStatus.Removed or MemberStatus.Down
            ? $"{hello.FromAddress} uid {hello.FromUid} is not a member of this node's cluster"
            : null;
    }

    private sealed class Peer(Address address)
    {
        public Address Address { get; } = address;

        public volatile OutgoingLink? Link;

        public int Connecting;

        public long RetryAtTicks;

        public int Failures;
    }

    /// <summary>
    /// Sends to one peer. Writers append under a lock; whoever finds no write running sends everything queued by then
    /// itself, so an idle connection costs the caller one socket write and a busy one batches without a thread hop.
    /// </summary>
    private sealed class OutgoingLink(PeerLinkTransport owner, Peer peer, Socket socket, long peerUid)
    {
        private readonly object _gate = new();
        private readonly PeerLinkPathIds<IActorRef> _ids = new();
        private LinkBuffer _pending = new(8192);
        private LinkBuffer _sending = new(8192);
        private bool _writing;
        private long _stalledSince;
        private volatile bool _dead;

        public bool IsDead => _dead;

        public long PeerUid => peerUid;

        public long StalledSince => Volatile.Read(ref _stalledSince);

        public bool TryWrite(IActorRef to, IActorRef sender, int serializerId, string manifest, byte[] payload)
        {
            lock (_gate)
            {
                if (_dead || _pending.Length > owner._options.MaxPendingBytes)
                {
                    return false;
                }

                if (!Id(to, out var recipientId))
                {
                    return false;
                }

                uint senderId = 0;
                if (!sender.IsNobody() && !Id(sender, out senderId))
                {
                    return false;
                }

                PeerLinkWire.WriteMessage(_pending, recipientId, senderId, serializerId, manifest, payload);
                if (_writing)
                {
                    return true;
                }

                if (t_holdDepth > 0)
                {
                    // The thread sends more in a moment: write once when it lets go (Kick).
                    if (!t_held!.Contains(this))
                    {
                        t_held.Add(this);
                    }

                    return true;
                }

                _writing = true;
            }

            _ = PumpAsync();
            return true;
        }

        /// <summary>Writes what waits unless a write is already running (which takes it along).</summary>
        public void Kick()
        {
            lock (_gate)
            {
                if (_writing || _dead || _pending.Length == 0)
                {
                    return;
                }

                _writing = true;
            }

            _ = PumpAsync();
        }

        /// <summary>Waits for the server side to close: it never sends after its answer, so any read result ends the link.</summary>
        public void WatchForClose() => _ = WatchAsync();

        private async Task WatchAsync()
        {
            try
            {
                var buffer = new byte[1];
                var read = await socket.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false);
                Kill(read == 0 ? "closed by the peer" : "the peer sent bytes on a send-only connection");
            }
            catch (Exception ex)
            {
                Kill(ex.Message);
            }
        }

        private bool Id(IActorRef actor, out uint id)
        {
            if (_ids.TryGet(actor, out id))
            {
                return true;
            }

            var path = owner.PathOf(actor);
            if (!PeerLinkWire.PathFits(path))
            {
                return false;
            }

            if (!_ids.HasRoom)
            {
                // Table full: a fresh connection starts with fresh tables.
                KillLocked("path table full");
                return false;
            }

            // The id exists only once its definition is in the stream.
            PeerLinkWire.WriteDefine(_pending, _ids.NextId, path);
            id = _ids.Add(actor);
            return true;
        }

        private async Task PumpAsync()
        {
            var inlineBatches = 0;
            try
            {
                while (true)
                {
                    LinkBuffer batch;
                    lock (_gate)
                    {
                        if (_dead || _pending.Length == 0)
                        {
                            _writing = false;
                            return;
                        }

                        (_pending, _sending) = (_sending, _pending);
                        batch = _sending;
                    }

                    var remaining = batch.Written;
                    while (!remaining.IsEmpty)
                    {
                        Interlocked.Increment(ref owner._writes);
                        var send = socket.SendAsync(remaining.Length > ChunkBytes ? remaining[..ChunkBytes] : remaining, SocketFlags.None);
                        int sent;
                        if (send.IsCompleted)
                        {
                            sent = send.GetAwaiter().GetResult();
                        }
                        else
                        {
                            // Each chunk restarts the clock: a long backlog that moves is not a stall.
                            Volatile.Write(ref _stalledSince, Stopwatch.GetTimestamp());
                            sent = await send.ConfigureAwait(false);
                            Volatile.Write(ref _stalledSince, 0);
                        }

                        remaining = remaining[sent..];
                    }

                    batch.Clear();
                    if (++inlineBatches == InlineBatches)
                    {
                        // Other threads keep appending: the rest goes on from the thread pool, not on the thread of the
                        // actor that happened to start this write.
                        await Task.Yield();
                    }
                }
            }
            catch (Exception ex)
            {
                Kill(ex.Message);
                lock (_gate)
                {
                    _writing = false;
                }
            }
        }

        public void Kill(string why)
        {
            lock (_gate)
            {
                KillLocked(why);
            }
        }

        private void KillLocked(string why)
        {
            if (_dead)
            {
                return;
            }

            _dead = true;
            socket.Dispose();
            owner.LinkDied(peer, this, why);
        }
    }

    /// <summary>One peer's connection to this node: read on a dedicated thread, delivered by plain Tell.</summary>
    private sealed class IncomingConnection(PeerLinkTransport owner, Socket socket, string remote)
    {
        public string? From { get; private set; }

        private long _fromUid;

        public void Close()
        {
            try
            {
                socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception)
            {
                // Already closed.
            }

            socket.Dispose();
        }

        public void Run()
        {
            var awaitingHello = true;
            try
            {
                owner.Tune(socket);
                var buffer = new byte[64 * 1024];
                int start = 0, end = 0;
                PeerLinkHello? hello = null;
                var helloClock = Stopwatch.StartNew();
                while (hello is null)
                {
                    // One deadline for the whole hello, not per read: a client dripping bytes gets no longer.
                    var left = owner._options.ConnectTimeout - helloClock.Elapsed;
                    if (left <= TimeSpan.Zero)
                    {
                        throw new PeerLinkProtocolException($"no complete hello within {owner._options.ConnectTimeout.TotalMilliseconds} ms");
                    }

                    socket.ReceiveTimeout = Math.Max(1, (int)left.TotalMilliseconds);
                    end += Receive(buffer, end);
                    if (PeerLinkWire.TryReadHello(buffer.AsSpan(0, end), out hello, out var used))
                    {
                        start = used;
                    }
                }

                awaitingHello = false;
                Interlocked.Decrement(ref owner._awaitingHello);

                if (owner.Refusal(hello!) is { } refusal)
                {
                    var answer = new LinkBuffer(256);
                    PeerLinkWire.WriteRefusal(answer, refusal);
                    socket.Send(answer.Written.Span);
                    owner._log.Warning("Peer link: refused a connection from {0} ({1})", remote, refusal);
                    return;
                }

                From = hello!.FromAddress;
                _fromUid = hello.FromUid;
                socket.Send([PeerLinkWire.Accepted]);
                socket.ReceiveTimeout = 0;
                // The peer opens a new connection only after it gave up on its old one; an old one still here lost its
                // close on the way (a reset dropped by a firewall) and would hold a thread until keep-alive ends it.
                foreach (var older in owner._incoming.Keys.Where(c => c != this && c.From == From && c._fromUid == _fromUid))
                {
                    older.Close();
                }

                var table = new PeerLinkPathTable<LinkTarget>();
                while (true)
                {
                    while (PeerLinkWire.TryReadFrame(buffer.AsSpan(start, end - start), out var frame, out var used))
                    {
                        start += used;
                        Handle(frame!, table);
                    }

                    if (start == end)
                    {
                        start = end = 0;
                    }
                    else if (start > 0)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                        end -= start;
                        start = 0;
                    }

                    if (end >= 4 && BinaryPrimitives.ReadInt32LittleEndian(buffer) + 4 > buffer.Length)
                    {
                        // A frame larger than the buffer (TryReadFrame has checked its length against MaxFrame).
                        Array.Resize(ref buffer, BinaryPrimitives.ReadInt32LittleEndian(buffer) + 4);
                    }

                    end += Receive(buffer, end);
                }
            }
            catch (PeerLinkProtocolException ex)
            {
                Interlocked.Increment(ref owner._protocolErrors);
                owner._log.Warning("Peer link: closed the connection from {0} ({1}): {2}", remote, From ?? "before its hello", ex.Message);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or EndOfStreamException)
            {
                // Closed by the peer, by a reset, or by this node: the layer re-sends whatever was in flight.
            }
            catch (Exception ex)
            {
                owner._log.Error(ex, "Peer link: reading from {0} failed", remote);
            }
            finally
            {
                if (awaitingHello)
                {
                    Interlocked.Decrement(ref owner._awaitingHello);
                }

                owner._incoming.TryRemove(this, out _);
                Close();
            }
        }

        /// <summary>A defined path: the actor it resolved to, and where that actor is (checked once, at definition).</summary>
        private sealed class LinkTarget(string path, IActorRef actor, bool onThisNode, bool onPeer)
        {
            public string Path { get; } = path;

            public IActorRef Actor { get; set; } = actor;

            public bool OnThisNode { get; } = onThisNode;

            public bool OnPeer { get; } = onPeer;
        }

        private int Receive(byte[] buffer, int at)
        {
            var read = socket.Receive(buffer, at, buffer.Length - at, SocketFlags.None);
            Interlocked.Increment(ref owner._reads);
            return read > 0 ? read : throw new EndOfStreamException();
        }

        private void Handle(PeerLinkFrame frame, PeerLinkPathTable<LinkTarget> table)
        {
            switch (frame)
            {
                case PeerLinkDefine define:
                    var resolved = owner._system.Provider.ResolveActorRef(define.Path);
                    table.Define(define.Id, new LinkTarget(define.Path, resolved, resolved is IInternalActorRef { IsLocal: true }, resolved.Path.Address.ToString() == From));
                    break;
                case PeerLinkMessage message:
                    var recipient = table.Get(message.RecipientId);
                    if (!recipient.OnThisNode)
                    {
                        throw new PeerLinkProtocolException($"message for {recipient.Actor.Path}, which is not on this node");
                    }

                    if (recipient.Actor is EmptyLocalActorRef)
                    {
                        // Not there when its path was defined (a holder about to be created, a host still starting):
                        // resolve again rather than sending this connection's every envelope for it to dead letters.
                        recipient.Actor = owner._system.Provider.ResolveActorRef(recipient.Path);
                    }

                    IActorRef? sender = null;
                    if (message.SenderId != 0)
                    {
                        var from = table.Get(message.SenderId);
                        sender = from.OnPeer ? from.Actor : throw new PeerLinkProtocolException($"sender {from.Actor.Path} is not on the connecting node {From}");
                    }

                    if (message.SerializerId != MessagingWireSerializer.SerializerId)
                    {
                        throw new PeerLinkProtocolException($"serializer {message.SerializerId} is not the messaging wire format");
                    }

                    object envelope;
                    try
                    {
                        envelope = owner._system.Serialization.Deserialize(message.Payload, message.SerializerId, message.Manifest);
                    }
                    catch (Exception ex)
                    {
                        throw new PeerLinkProtocolException($"an envelope could not be read ({ex.GetType().Name}: {ex.Message})");
                    }

                    Interlocked.Increment(ref owner._received);
                    recipient.Actor.Tell(envelope, sender);
                    break;
            }
        }
    }
}

/// <summary>The node's <c>/user/lockstep-link</c>: tells peers where the listener is and closes links of members that went away.</summary>
internal sealed class PeerLinkActor : ReceiveActor
{
    public const string Name = "lockstep-link";

    public PeerLinkActor(PeerLinkTransport transport)
    {
        Receive<PeerLinkQuery>(_ => Sender.Tell(new PeerLinkEndpoint(transport.Port, transport.SelfUid)));
        Receive<ClusterEvent.UnreachableMember>(u => transport.Disconnect(u.Member.Address, "member unreachable"));
        Receive<ClusterEvent.ReachableMember>(r => transport.Reachable(r.Member.Address));
        Receive<ClusterEvent.MemberRemoved>(r => transport.Disconnect(r.Member.Address, "member removed"));
        Receive<ClusterEvent.IClusterDomainEvent>(_ => { });
        Receive<ClusterEvent.CurrentClusterState>(_ => { });
    }

    protected override void PreStart() =>
        Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
            typeof(ClusterEvent.IReachabilityEvent), typeof(ClusterEvent.MemberRemoved));

    protected override void PostStop() => Cluster.Get(Context.System).Unsubscribe(Self);
}
