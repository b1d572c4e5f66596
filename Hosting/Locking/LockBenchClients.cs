using System.Collections.Concurrent;
using System.Net.Http.Json;
using System.Threading.Channels;
using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Lockstep.Hosting.Locking.Grpc;
using Npgsql;
using Status = Lockstep.Hosting.Locking.Grpc.Status;

namespace Lockstep.Hosting.Locking;

/// <summary>A failure of the bench's own clients (a lock not granted, an error message, a closed stream).</summary>
public sealed class LockBenchException(string message) : Exception(message);

/// <summary>What a bench client does through a gRPC lock session; sessions differ only in how a call travels.</summary>
internal abstract class BenchLockCaller
{
    /// <summary>Sends <paramref name="message"/> with a fresh request id and returns the answer to it.</summary>
    protected abstract Task<ServerMessage> CallAsync(ClientMessage message, CancellationToken ct);

    /// <summary>Requests a lock; throws unless it is granted.</summary>
    public async Task<Completion> LockAsync(string resource, Mode mode, uint flags, CancellationToken ct)
    {
        var answer = (await CallAsync(new ClientMessage { Lock = new Grpc.Lock { Resource = resource, Mode = mode, Flags = flags } }, ct)).Completion;
        return answer.Status == Status.Granted ? answer : throw new LockBenchException($"lock {resource} {mode}: {answer.Status}");
    }

    /// <summary>Unlocks, writing <paramref name="lvb"/> when given with VALBLK; throws unless unlocked.</summary>
    public async Task UnlockAsync(ulong lockId, uint flags, ByteString? lvb, CancellationToken ct)
    {
        var unlock = new Unlock { LockId = lockId, Flags = flags };
        if (lvb is not null)
        {
            unlock.Lvb = lvb;
        }

        var answer = (await CallAsync(new ClientMessage { Unlock = unlock }, ct)).Completion;
        if (answer.Status != Status.Unlocked)
        {
            throw new LockBenchException($"unlock {lockId:x}: {answer.Status}");
        }
    }

    /// <summary>A round trip that locks nothing; with a resource it passes through that resource's master (see lock.proto's Ping).</summary>
    public async Task PingAsync(string resource, CancellationToken ct) =>
        await CallAsync(new ClientMessage { Ping = new Ping { Resource = resource } }, ct);
}

/// <summary>
/// One gRPC lock session used strictly one request at a time: send, then read until the answer to
/// that request arrives (basts for our locks, which contended runs produce, are skipped).
/// </summary>
internal sealed class GrpcLockSession : BenchLockCaller, IAsyncDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private readonly AsyncDuplexStreamingCall<ClientMessage, ServerMessage> _call;
    private ulong _lastRequest;

    private GrpcLockSession(AsyncDuplexStreamingCall<ClientMessage, ServerMessage> call)
    {
        _call = call;
    }

    /// <summary>Id of the node serving the session.</summary>
    public string NodeId { get; private set; } = string.Empty;

    /// <summary>Opens a session in <paramref name="lockspace"/>.</summary>
    public static async Task<GrpcLockSession> OpenAsync(LockService.LockServiceClient client, string lockspace, CancellationToken ct)
    {
        var session = new GrpcLockSession(client.Session(cancellationToken: ct));
        try
        {
            var opened = await session.CallAsync(new ClientMessage { Open = new Open { Lockspace = lockspace } }, ct);
            session.NodeId = opened.Opened.NodeId;
            return session;
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    /// <summary>Converts a lock; throws unless it is granted.</summary>
    public async Task<Completion> ConvertAsync(ulong lockId, Mode mode, uint flags, CancellationToken ct)
    {
        var answer = (await CallAsync(new ClientMessage { Convert = new Grpc.Convert { LockId = lockId, Mode = mode, Flags = flags } }, ct)).Completion;
        return answer.Status == Status.Granted ? answer : throw new LockBenchException($"convert {lockId:x} to {mode}: {answer.Status}");
    }

    protected override async Task<ServerMessage> CallAsync(ClientMessage message, CancellationToken ct)
    {
        message.RequestId = ++_lastRequest;
        await _call.RequestStream.WriteAsync(message, ct);
        while (true)
        {
            if (!await _call.ResponseStream.MoveNext(ct))
            {
                throw new LockBenchException("the node closed the lock session");
            }

            var answer = _call.ResponseStream.Current;
            switch (answer.BodyCase)
            {
                case ServerMessage.BodyOneofCase.Error when answer.Error.RequestId == message.RequestId:
                    throw new LockBenchException(answer.Error.Message);
                case ServerMessage.BodyOneofCase.Opened when answer.Opened.RequestId == message.RequestId:
                case ServerMessage.BodyOneofCase.Completion when answer.Completion.RequestId == message.RequestId:
                case ServerMessage.BodyOneofCase.Pong when answer.Pong.RequestId == message.RequestId:
                    return answer;
            }
        }
    }

    /// <summary>Ends the session (the node releases whatever it still holds) and waits for the stream to close.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            using var patience = new CancellationTokenSource(Patience);
            await _call.RequestStream.CompleteAsync();
            while (await _call.ResponseStream.MoveNext(patience.Token))
            {
                // Drain: the stream ends once the node has closed the session.
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or InvalidOperationException)
        {
            // Already broken or cancelled; disposing the call below tears it down.
        }
        finally
        {
            _call.Dispose();
        }
    }
}

/// <summary>
/// One gRPC lock session shared by many concurrent callers, as an application with many threads would
/// use one session (fs/dlm: one lockspace handle per process). Each caller still has one request in
/// flight; the session writes whatever requests queued while its previous write was in flight as one
/// <see cref="ClientBatch"/>, opens with accept_batches so the node answers in <see cref="ServerBatch"/>es,
/// and hands each answer to its caller by request id (basts are skipped).
/// </summary>
internal sealed class MultiplexedLockSession : BenchLockCaller, IAsyncDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private readonly AsyncDuplexStreamingCall<ClientMessage, ServerMessage> _call;
    private readonly Channel<ClientMessage> _outbox = Channel.CreateUnbounded<ClientMessage>(new UnboundedChannelOptions { SingleReader = true });
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<ServerMessage>> _waiting = new();
    private readonly Task _writer;
    private readonly Task _reader;
    private long _lastRequest;
    private volatile bool _batches;

    private MultiplexedLockSession(AsyncDuplexStreamingCall<ClientMessage, ServerMessage> call)
    {
        _call = call;
        _writer = Task.Run(WriteAllAsync);
        _reader = Task.Run(ReadAllAsync);
    }

    /// <summary>Messages sent, and gRPC messages they went out in (their ratio is the mean batch size).</summary>
    public (long Requests, long Writes, long Answers, long Reads) Counts => (Interlocked.Read(ref _requests), Interlocked.Read(ref _writes), Interlocked.Read(ref _answers), Interlocked.Read(ref _reads));

    private long _requests;
    private long _writes;
    private long _answers;
    private long _reads;

    /// <summary>Opens a session in <paramref name="lockspace"/> with accept_batches.</summary>
    public static async Task<MultiplexedLockSession> OpenAsync(LockService.LockServiceClient client, string lockspace, CancellationToken ct)
    {
        var session = new MultiplexedLockSession(client.Session(cancellationToken: ct));
        try
        {
            var opened = await session.CallAsync(new ClientMessage { Open = new Open { Lockspace = lockspace, AcceptBatches = true } }, ct);
            session._batches = opened.Opened.Batches;
            return session;
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    protected override async Task<ServerMessage> CallAsync(ClientMessage message, CancellationToken ct)
    {
        message.RequestId = (ulong)Interlocked.Increment(ref _lastRequest);

        // Completed by the reader loop; running the caller's continuation there saves a thread-pool hop per answer.
        var answer = new TaskCompletionSource<ServerMessage>();
        _waiting[message.RequestId] = answer;
        if (!_outbox.Writer.TryWrite(message))
        {
            _waiting.TryRemove(message.RequestId, out _);
            throw new LockBenchException("the lock session is closed");
        }

        var result = await answer.Task.WaitAsync(ct);
        return result.BodyCase == ServerMessage.BodyOneofCase.Error ? throw new LockBenchException(result.Error.Message) : result;
    }

    private async Task WriteAllAsync()
    {
        var ready = new List<ClientMessage>();
        try
        {
            while (await _outbox.Reader.WaitToReadAsync())
            {
                while (ready.Count < LockGrpcService.MaxBatch && _outbox.Reader.TryRead(out var message))
                {
                    ready.Add(message);
                }

                if (ready.Count == 1 || !_batches)
                {
                    // One at a time: a single request, or a server that does not understand batches.
                    foreach (var message in ready)
                    {
                        await _call.RequestStream.WriteAsync(message);
                    }

                    Interlocked.Add(ref _writes, ready.Count);
                }
                else
                {
                    await _call.RequestStream.WriteAsync(new ClientMessage { Batch = new ClientBatch { Messages = { ready } } });
                    Interlocked.Increment(ref _writes);
                }

                Interlocked.Add(ref _requests, ready.Count);
                ready.Clear();
            }

            await _call.RequestStream.CompleteAsync();
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or OperationCanceledException)
        {
            FailAll($"writing to the lock session failed: {ex.Message}");
        }
    }

    private async Task ReadAllAsync()
    {
        try
        {
            while (await _call.ResponseStream.MoveNext(CancellationToken.None))
            {
                var message = _call.ResponseStream.Current;
                Interlocked.Increment(ref _reads);
                if (message.BodyCase == ServerMessage.BodyOneofCase.Batch)
                {
                    foreach (var inner in message.Batch.Messages)
                    {
                        Deliver(inner);
                    }
                }
                else
                {
                    Deliver(message);
                }
            }

            FailAll("the node closed the lock session");
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or OperationCanceledException)
        {
            FailAll($"the lock session broke: {ex.Message}");
        }
    }

    private void Deliver(ServerMessage message)
    {
        var id = message.BodyCase switch
        {
            ServerMessage.BodyOneofCase.Opened => message.Opened.RequestId,
            ServerMessage.BodyOneofCase.Completion => message.Completion.RequestId,
            ServerMessage.BodyOneofCase.Pong => message.Pong.RequestId,
            ServerMessage.BodyOneofCase.Error => message.Error.RequestId,
            _ => 0UL, // basts and recovery callbacks: nobody waits for them here
        };
        if (id != 0 && _waiting.TryRemove(id, out var caller))
        {
            Interlocked.Increment(ref _answers);
            caller.TrySetResult(message);
        }
    }

    private void FailAll(string reason)
    {
        _outbox.Writer.TryComplete();
        foreach (var id in _waiting.Keys)
        {
            if (_waiting.TryRemove(id, out var caller))
            {
                caller.TrySetException(new LockBenchException(reason));
            }
        }
    }

    /// <summary>Ends the session (the node releases whatever it still holds) and waits for the stream to close.</summary>
    public async ValueTask DisposeAsync()
    {
        _outbox.Writer.TryComplete();
        try
        {
            await _writer.WaitAsync(Patience);
            await _reader.WaitAsync(Patience);
        }
        catch (TimeoutException)
        {
            // Disposing the call below tears it down.
        }
        finally
        {
            _call.Dispose();
        }
    }
}

/// <summary>
/// Puts resources on a chosen node: a keeper session on that node takes NL on candidate names (the
/// first request for a shard allocates it to the requesting node, shards never move), the dump says
/// where each landed, and names mastered elsewhere are dropped. The keeper holds its NL locks for the
/// whole run, so the resources (and the counter's LVB) do not passivate.
/// </summary>
internal sealed class ResourcePlacer(GrpcLockSession keeper, HttpClient http, string lockspace, string prefix)
{
    private static readonly JsonSerializerOptions Web = new(JsonSerializerDefaults.Web);
    private readonly Dictionary<string, ulong> _held = [];
    private int _next;

    /// <summary>The session holding the NL locks, on the node the resources should live on.</summary>
    public GrpcLockSession Keeper => keeper;

    /// <summary>Resources placed; <see cref="OnTarget"/> of them are mastered on the keeper's node.</summary>
    public List<string> Placed { get; } = [];

    /// <summary>How many placed resources are mastered on the keeper's node.</summary>
    public int OnTarget { get; private set; }

    /// <summary>NL lock ids the keeper holds, by resource.</summary>
    public IReadOnlyDictionary<string, ulong> Held => _held;

    /// <summary>Places <paramref name="count"/> more resources, preferring ones mastered on the keeper's node.</summary>
    public async Task PlaceAsync(int count, CancellationToken ct)
    {
        var misplaced = new List<string>();
        var wanted = Placed.Count + count;
        for (var round = 0; round < 8 && Placed.Count < wanted; round++)
        {
            var candidates = new List<string>();
            for (var i = 0; i < (wanted - Placed.Count) * 3; i++)
            {
                var name = $"{prefix}-{_next++}";
                _held[name] = (await keeper.LockAsync(name, Mode.Nl, 0, ct)).LockId;
                candidates.Add(name);
            }

            var masters = await MastersAsync(ct);
            foreach (var name in candidates)
            {
                if (Placed.Count < wanted && masters.GetValueOrDefault(name) == keeper.NodeId)
                {
                    Placed.Add(name);
                    OnTarget++;
                }
                else
                {
                    misplaced.Add(name);
                }
            }
        }

        // Every shard may already belong to other nodes: then take what we have, the report says so.
        foreach (var name in misplaced)
        {
            if (Placed.Count < wanted)
            {
                Placed.Add(name);
            }
            else
            {
                await keeper.UnlockAsync(_held[name], 0, null, ct);
                _held.Remove(name);
            }
        }
    }

    private async Task<Dictionary<string, string>> MastersAsync(CancellationToken ct)
    {
        var view = await http.GetFromJsonAsync<LocksView>($"/v1/locks?lockspace={Uri.EscapeDataString(lockspace)}", Web, ct)
            ?? throw new LockBenchException("empty lock dump");
        return view.Resources.ToDictionary(r => r.Resource, r => r.Master);
    }
}

/// <summary>One PostgreSQL connection doing the bench cycles with prepared statements.</summary>
internal sealed class PostgresLockClient : IAsyncDisposable
{
    private readonly NpgsqlConnection _connection;
    private readonly NpgsqlCommand _lock;
    private readonly NpgsqlCommand _unlock;
    private readonly NpgsqlCommand _ping;
    private readonly NpgsqlBatch? _lockAndRead;
    private readonly NpgsqlCommand? _write;

    private PostgresLockClient(NpgsqlConnection connection, long key, (string Table, string Id)? counter)
    {
        _connection = connection;
        _lock = new NpgsqlCommand("SELECT pg_advisory_lock($1)", connection) { Parameters = { new() { Value = key } } };
        _unlock = new NpgsqlCommand("SELECT pg_advisory_unlock($1)", connection) { Parameters = { new() { Value = key } } };
        _ping = new NpgsqlCommand("SELECT 1", connection);

        if (counter is not { } c)
        {
            return;
        }

        // The read must come after the lock is held; in READ COMMITTED each statement of the batch
        // takes its own snapshot, so the SELECT sees the previous holder's committed write.
        _lockAndRead = new NpgsqlBatch(connection)
        {
            BatchCommands =
            {
                new NpgsqlBatchCommand("SELECT pg_advisory_lock($1)") { Parameters = { new() { Value = key } } },
                new NpgsqlBatchCommand($"SELECT value FROM {c.Table} WHERE id = $1") { Parameters = { new() { Value = c.Id } } },
            },
        };

        // Its own statement, committed before the unlock: an UPDATE batched with the unlock would
        // commit after the lock is already free, and the next holder could read the old value.
        _write = new NpgsqlCommand($"UPDATE {c.Table} SET value = $1 WHERE id = $2", connection)
        {
            Parameters = { new() { Value = 0L }, new() { Value = c.Id } },
        };
    }

    /// <summary>Opens a connection and prepares the statements; <paramref name="counter"/> (table, row id) only for the counter shape.</summary>
    public static async Task<PostgresLockClient> OpenAsync(NpgsqlDataSource source, long key, (string Table, string Id)? counter, CancellationToken ct)
    {
        var connection = await source.OpenConnectionAsync(ct);
        var client = new PostgresLockClient(connection, key, counter);
        try
        {
            await client._lock.PrepareAsync(ct);
            await client._unlock.PrepareAsync(ct);
            await client._ping.PrepareAsync(ct);
            if (client._lockAndRead is not null && client._write is not null)
            {
                await client._lockAndRead.PrepareAsync(ct);
                await client._write.PrepareAsync(ct);
            }

            return client;
        }
        catch
        {
            await client.DisposeAsync();
            throw;
        }
    }

    /// <summary>pg_advisory_lock, then pg_advisory_unlock.</summary>
    public async Task CycleAsync(CancellationToken ct)
    {
        await _lock.ExecuteNonQueryAsync(ct);
        await UnlockAsync(ct);
    }

    /// <summary>Two round trips that lock nothing (SELECT 1 twice): the floor under <see cref="CycleAsync"/>.</summary>
    public async Task FloorCycleAsync(CancellationToken ct)
    {
        await _ping.ExecuteScalarAsync(ct);
        await _ping.ExecuteScalarAsync(ct);
    }

    /// <summary>Lock and read the counter, write it back plus one, unlock; three round trips.</summary>
    public async Task CounterCycleAsync(CancellationToken ct)
    {
        if (_lockAndRead is null || _write is null)
        {
            throw new InvalidOperationException("this client was opened without a counter");
        }

        long value;
        await using (var reader = await _lockAndRead.ExecuteReaderAsync(ct))
        {
            await reader.NextResultAsync(ct);
            if (!await reader.ReadAsync(ct))
            {
                throw new LockBenchException("the counter row is gone");
            }

            value = reader.GetInt64(0);
        }

        _write.Parameters[0].Value = value + 1;
        await _write.ExecuteNonQueryAsync(ct);
        await UnlockAsync(ct);
    }

    private async Task UnlockAsync(CancellationToken ct)
    {
        if (await _unlock.ExecuteScalarAsync(ct) is not true)
        {
            throw new LockBenchException("pg_advisory_unlock returned false: the lock was not held");
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _lock.DisposeAsync();
        await _unlock.DisposeAsync();
        await _ping.DisposeAsync();
        if (_lockAndRead is not null)
        {
            await _lockAndRead.DisposeAsync();
        }

        if (_write is not null)
        {
            await _write.DisposeAsync();
        }

        await _connection.DisposeAsync();
    }
}
