using System.Collections.Concurrent;
using System.Collections.Immutable;
using System.Diagnostics;
using Lockstep.Contracts.Broadcast;

namespace Lockstep.Actors.Broadcast;

/// <summary>One message as a subscriber receives it: its stream, round, place in the round and origin.</summary>
public sealed record DeliveredMessage(string Stream, long Seq, int Index, string Origin, ClusterMessage Message);

/// <summary>
/// Runs this node's subscribers for each delivered round, in round order, and keeps what the operator's tools read
/// afterwards: the order log (one line per message) and how long each ping took here.
/// </summary>
public sealed class BroadcastDelivery : IDisposable
{
    private const int PingsKept = 1024;

    private readonly TimeSpan _handlerTimeout;
    private readonly string _nodeId;
    private readonly StreamWriter? _orderLog;
    private readonly object _logGate = new();
    private readonly ConcurrentDictionary<(string Origin, long Tag), PingTime> _pings = new();
    private readonly ConcurrentQueue<(string Origin, long Tag)> _pingOrder = new();
    private ImmutableArray<Func<DeliveredMessage, CancellationToken, Task>> _handlers = [];
    private long _handlerFailures;

    private readonly Func<string, Guid, Task<ClusterMessage>> _loadPayload;

    /// <param name="nodeId">This node's id (in ping records).</param>
    /// <param name="handlerTimeout">How long one subscriber may take per message.</param>
    /// <param name="orderLogPath">Where to append the order log, or null.</param>
    /// <param name="loadPayload">Loads a message a round carries as a <see cref="StoredPayloadReference"/> (stream, key).</param>
    public BroadcastDelivery(string nodeId, TimeSpan handlerTimeout, string? orderLogPath, Func<string, Guid, Task<ClusterMessage>> loadPayload)
    {
        _loadPayload = loadPayload;
        _nodeId = nodeId;
        _handlerTimeout = handlerTimeout;
        if (!string.IsNullOrEmpty(orderLogPath))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(orderLogPath))!);
            _orderLog = new StreamWriter(new FileStream(orderLogPath, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
        }
    }

    /// <summary>Handlers that threw or overran <see cref="BroadcastOptions.HandlerTimeout"/>.</summary>
    public long HandlerFailures => Interlocked.Read(ref _handlerFailures);

    /// <summary>
    /// Calls <paramref name="handler"/> for every message this node delivers, on a thread-pool thread. A round is
    /// acknowledged to its sender only after every handler returned, so a handler that must act before the sender
    /// goes on (SUSPEND) does its work before its task completes. Dispose the result to unsubscribe.
    /// </summary>
    public IDisposable Subscribe(Func<DeliveredMessage, CancellationToken, Task> handler)
    {
        ImmutableInterlocked.Update(ref _handlers, h => h.Add(handler));
        return new Subscription(() => ImmutableInterlocked.Update(ref _handlers, h => h.Remove(handler)));
    }

    /// <summary>Delivers every message of <paramref name="round"/> in order.</summary>
    public async Task DeliverAsync(string stream, BroadcastRound round)
    {
        for (var i = 0; i < round.Messages.Count; i++)
        {
            var message = round.Messages[i] is StoredPayloadReference stored ? await _loadPayload(stream, stored.Key) : round.Messages[i];
            var delivered = new DeliveredMessage(stream, round.Seq, i, round.Origin, message);
            var started = Stopwatch.GetTimestamp();
            foreach (var handler in _handlers)
            {
                await RunAsync(handler, delivered);
            }

            if (delivered.Message is NoopMessage ping)
            {
                RecordPing(ping, round.Seq, Stopwatch.GetElapsedTime(started));
            }

            if (_orderLog is not null)
            {
                lock (_logGate)
                {
                    _orderLog.WriteLine($"{stream} {round.Seq} {i} {round.Origin} {Describe(delivered.Message)}");
                }
            }
        }
    }

    /// <summary>This node's record of a ping, if it delivered it.</summary>
    public PingTime PingTime(string origin, long tag) =>
        _pings.TryGetValue((origin, tag), out var time) ? time : new PingTime(_nodeId, tag, false, 0, 0, default);

    public void Dispose()
    {
        lock (_logGate)
        {
            _orderLog?.Dispose();
        }
    }

    /// <summary>The order log's text for one message: the type and its fields.</summary>
    public static string Describe(ClusterMessage message) => message switch
    {
        NoopMessage m => $"Noop {m.Origin} {m.Tag}",
        UnknownClusterMessage m => $"Unknown{m.RawType} {Convert.ToHexString(m.Body)}",
        _ => message.ToString(),
    };

    private async Task RunAsync(Func<DeliveredMessage, CancellationToken, Task> handler, DeliveredMessage delivered)
    {
        using var timeout = new CancellationTokenSource(_handlerTimeout);
        try
        {
            await handler(delivered, timeout.Token).WaitAsync(_handlerTimeout);
        }
        catch (Exception)
        {
            // A subscriber's failure is its own: the round is delivered here either way, or one bad handler would
            // hold every sender in the cluster.
            Interlocked.Increment(ref _handlerFailures);
        }
    }

    private void RecordPing(NoopMessage ping, long seq, TimeSpan took)
    {
        var key = (ping.Origin, ping.Tag);
        if (_pings.TryAdd(key, new PingTime(_nodeId, ping.Tag, true, seq, took.TotalMicroseconds, DateTimeOffset.UtcNow)))
        {
            _pingOrder.Enqueue(key);
            while (_pingOrder.Count > PingsKept && _pingOrder.TryDequeue(out var old))
            {
                _pings.TryRemove(old, out _);
            }
        }
    }

    private sealed class Subscription(Action dispose) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                dispose();
            }
        }
    }
}
