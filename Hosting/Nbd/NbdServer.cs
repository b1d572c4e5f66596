using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Lockstep.Actors.BlockIo;
using Microsoft.Extensions.Options;

namespace Lockstep.Hosting.Nbd;

/// <summary>
/// The NBD server of a node: listens on <see cref="NbdServerOptions.Host"/>:<see cref="NbdServerOptions.Port"/>
/// and serves the exports of the <see cref="IExportCatalog"/>, one independent <see cref="NbdConnection"/> per client.
/// </summary>
/// <example>
/// <code>
/// var server = new NbdServer(catalog, Options.Create(new NbdServerOptions { Port = 0 }), logger);
/// await server.StartAsync(default);
/// // nbdinfo nbd://127.0.0.1:{server.BoundPort}/demo
/// </code>
/// </example>
public sealed class NbdServer(IExportCatalog catalog, IOptions<NbdServerOptions> options, ILogger<NbdServer> logger) : IHostedService, IAsyncDisposable
{
    private readonly NbdServerOptions _options = options.Value;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ConcurrentDictionary<long, Task> _connections = new();
    private Socket? _listener;
    private NbdReceiveLoop[] _receiveLoops = [];
    private Task _acceptLoop = Task.CompletedTask;
    private long _nextId;
    private TaskCompletionSource _connectionsChanged = NewSignal();

    /// <summary>Where the server listens, once started.</summary>
    public IPEndPoint? LocalEndPoint { get; private set; }

    /// <summary>The port actually bound (useful with port 0).</summary>
    public int BoundPort => LocalEndPoint?.Port ?? 0;

    /// <summary>Connections currently open.</summary>
    public int ConnectionCount => _connections.Count;

    /// <summary>Completes once no connection is open (every connection's requests finished and its socket closed).</summary>
    public async Task WaitUntilIdleAsync(CancellationToken cancellation)
    {
        while (true)
        {
            var changed = Volatile.Read(ref _connectionsChanged).Task;
            if (_connections.IsEmpty)
            {
                return;
            }

            await changed.WaitAsync(cancellation).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public Task StartAsync(CancellationToken cancellationToken)
    {
        var address = ResolveAddress(_options.Host);
        var listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(new IPEndPoint(address, _options.Port));
            listener.Listen(512);
        }
        catch
        {
            listener.Dispose();
            throw;
        }

        _listener = listener;
        LocalEndPoint = (IPEndPoint)listener.LocalEndPoint!;
        if (_options.ReceiveLoop == NbdReceiveMode.Epoll)
        {
            _receiveLoops = StartReceiveLoops(_options.EffectiveReceiveThreads);
        }

        _acceptLoop = AcceptLoopAsync(listener);
        logger.LogInformation("NBD server listening on {Endpoint} (max request {MaxRequest} bytes, receive: {Loop})",
            LocalEndPoint, _options.MaxRequestBytes, _receiveLoops.Length == 0 ? "socket engine" : $"{_receiveLoops.Length} epoll threads");
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }

        // Stop accepting, then let every connection finish the requests it has in flight (the spec's polite shutdown).
        await _stopping.CancelAsync().ConfigureAwait(false);
        _listener?.Dispose();
        await _acceptLoop.ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_connections.Values).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            logger.LogWarning("NBD server stopped with {Count} connections still closing", _connections.Count);
        }

        // After the connections: a receive still pending on a loop fails when it stops.
        foreach (var loop in _receiveLoops)
        {
            loop.Dispose();
        }

        logger.LogInformation("NBD server on {Endpoint} stopped", LocalEndPoint);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _stopping.Dispose();
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        var stopping = _stopping.Token;
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(stopping).ConfigureAwait(false);
            }
            catch (Exception e) when (stopping.IsCancellationRequested && e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                // A connection reset before we accepted it, or out of descriptors: keep serving the others.
                logger.LogWarning("NBD accept failed: {Message}", e.Message);
                continue;
            }

            socket.NoDelay = true;
            var id = Interlocked.Increment(ref _nextId);
            var connection = new NbdConnection(id, socket, catalog, _options,
                _receiveLoops.Length == 0 ? null : _receiveLoops[id % _receiveLoops.Length], logger);
            _connections[id] = RunConnectionAsync(connection, stopping);
        }
    }

    private async Task RunConnectionAsync(NbdConnection connection, CancellationToken stopping)
    {
        // Run on the pool: the accept loop must not wait for the first await of a handshake.
        await Task.Yield();
        try
        {
            await connection.RunAsync(stopping).ConfigureAwait(false);
        }
        finally
        {
            _connections.TryRemove(connection.Id, out _);
            Interlocked.Exchange(ref _connectionsChanged, NewSignal()).TrySetResult();
        }
    }

    private NbdReceiveLoop[] StartReceiveLoops(int count)
    {
        var loops = new List<NbdReceiveLoop>(count);
        for (var i = 0; i < count; i++)
        {
            var loop = NbdReceiveLoop.TryStart(logger, out var whyNot);
            if (loop is null)
            {
                logger.LogWarning("NBD server: {WhyNot}; connections receive through the socket engine instead", whyNot);
                loops.ForEach(started => started.Dispose());
                return [];
            }

            loops.Add(loop);
        }

        return [.. loops];
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private static IPAddress ResolveAddress(string host) => host switch
    {
        "localhost" => IPAddress.Loopback,
        "*" or "0.0.0.0" or "" => IPAddress.Any,
        "::" or "[::]" => IPAddress.IPv6Any,
        _ when IPAddress.TryParse(host, out var address) => address,
        _ => Dns.GetHostAddresses(host).First(),
    };
}
