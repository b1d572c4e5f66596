using System.Collections.Concurrent;
using System.Net;
using System.Threading.Channels;
using Grpc.Core;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Lockstep.Hosting.Locking.Grpc;
using Lockstep.Hosting.Node;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using GrpcStatus = Lockstep.Hosting.Locking.Grpc.Status;

namespace Lockstep.Hosting.Locking;

/// <summary>Registers gRPC and a cleartext HTTP/2 listener for it (HTTP/2 without TLS needs its own port).</summary>
public static class LockGrpcHosting
{
    /// <summary>
    /// gRPC listens on <c>Lockstep:Locking:GrpcPort</c>, by default the HTTP port + 1000 (0 when the
    /// HTTP port is 0, i.e. ephemeral in tests); a negative port turns it off.
    /// </summary>
    public static IServiceCollection AddLockstepLockGrpc(this IServiceCollection services, LockstepOptions options)
    {
        services.AddGrpc();
        services.AddOptions<KestrelServerOptions>().Configure<IConfiguration>((kestrel, configuration) =>
        {
            var port = GrpcPort(configuration, options);
            if (port >= 0)
            {
                var host = options.Http.Host is "localhost" ? "127.0.0.1" : options.Http.Host is "*" ? "0.0.0.0" : options.Http.Host;
                kestrel.Listen(IPAddress.Parse(host), port, listen => listen.Protocols = HttpProtocols.Http2);
            }
        });
        return services;
    }

    public static int GrpcPort(IConfiguration configuration, LockstepOptions options) =>
        int.TryParse(configuration[$"{LockingOptions.SectionName}:GrpcPort"], out var port) ? port
        : options.Http.Port == 0 ? 0 : options.Http.Port + 1000;
}

/// <summary>
/// One bidirectional stream per session. Requests run concurrently (a lock may wait long); every
/// server message goes through one channel so writes to the stream never overlap.
/// </summary>
public sealed class LockGrpcService(LockingService locks, ILogger<LockGrpcService> log) : LockService.LockServiceBase
{
    /// <summary>At most this many server messages go into one <see cref="ServerBatch"/> (bounds its size: ~100 bytes each).</summary>
    internal const int MaxBatch = 256;

    public override async Task Session(IAsyncStreamReader<ClientMessage> requestStream, IServerStreamWriter<ServerMessage> responseStream, ServerCallContext context)
    {
        // Synchronous continuations: the thread that queues an answer also writes it when the writer is
        // idle (the usual case), instead of waking the writer loop on another pool thread; a thread-pool
        // hop costs tens of microseconds on a busy 2-core machine, per answer.
        var outbox = Channel.CreateUnbounded<ServerMessage>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = true });
        var session = new StreamSession(locks, outbox.Writer, log);
        var writer = Task.Run(() => WriteAllAsync(outbox.Reader, responseStream, session));
        try
        {
            await foreach (var message in requestStream.ReadAllAsync(context.CancellationToken))
            {
                await session.HandleAsync(message);
            }
        }
        catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
        {
            // The client went away; the session ends below.
        }
        finally
        {
            await session.DisposeAsync();
            outbox.Writer.TryComplete();
        }

        await writer;
    }

    /// <summary>
    /// Writes the session's server messages in order. Whatever queued while the previous write was in
    /// flight goes out as one <see cref="ServerBatch"/> when the client accepts batches: one gRPC message
    /// (one frame, one flush, one read on the client) instead of many.
    /// </summary>
    private static async Task WriteAllAsync(ChannelReader<ServerMessage> outbox, IServerStreamWriter<ServerMessage> stream, StreamSession session)
    {
        var ready = new List<ServerMessage>();
        while (await outbox.WaitToReadAsync())
        {
            if (session.AcceptsBatches)
            {
                // The first answer's thread would write it alone at once (synchronous continuations);
                // leaving the write to a pool thread lets the answers finishing meanwhile join the batch.
                await Task.Yield();
            }

            while (ready.Count < MaxBatch && outbox.TryRead(out var message))
            {
                ready.Add(message);
            }

            if (ready.Count > 1 && session.AcceptsBatches)
            {
                var batch = new ServerBatch();
                batch.Messages.AddRange(ready);
                await stream.WriteAsync(new ServerMessage { Batch = batch });
            }
            else
            {
                foreach (var message in ready)
                {
                    await stream.WriteAsync(message);
                }
            }

            ready.Clear();
        }
    }

    private sealed class StreamSession(LockingService locks, ChannelWriter<ServerMessage> outbox, ILogger log) : IAsyncDisposable
    {
        private readonly ConcurrentDictionary<ulong, ILockHandle> _handles = new();
        private readonly ConcurrentDictionary<ulong, CancellationTokenSource> _pending = new();
        private readonly List<Task> _running = [];
        private ILockspace? _space;
        private volatile bool _acceptsBatches;

        /// <summary>The client opened the session with accept_batches.</summary>
        public bool AcceptsBatches => _acceptsBatches;

        public async Task HandleAsync(ClientMessage message)
        {
            var id = message.RequestId;
            switch (message.BodyCase)
            {
                case ClientMessage.BodyOneofCase.Batch:
                    foreach (var inner in message.Batch.Messages)
                    {
                        if (inner.BodyCase == ClientMessage.BodyOneofCase.Batch)
                        {
                            Error(inner.RequestId, "a batch cannot contain a batch");
                        }
                        else
                        {
                            await HandleAsync(inner);
                        }
                    }

                    return;
                case ClientMessage.BodyOneofCase.Open:
                    await OpenAsync(id, message.Open);
                    return;
                case ClientMessage.BodyOneofCase.Cancel:
                    if (_pending.TryGetValue(message.Cancel.TargetRequestId, out var cts))
                    {
                        await cts.CancelAsync();
                    }
                    else
                    {
                        Send(Completion(id, 0, LockOperation.Cancel, LockStatus.NotPending, LockMode.NL, null, 0));
                    }

                    return;
            }

            if (message.BodyCase == ClientMessage.BodyOneofCase.Ping && message.Ping.Resource.Length == 0)
            {
                Send(new ServerMessage { Pong = new Pong { RequestId = id } });
                return;
            }

            if (_space is null)
            {
                Error(id, "open a lockspace first");
                return;
            }

            lock (_running)
            {
                _running.RemoveAll(t => t.IsCompleted);
                _running.Add(RunAsync(_space, id, message));
            }
        }

        private async Task OpenAsync(ulong id, Open open)
        {
            if (_space is not null)
            {
                Error(id, $"this session is already open in lockspace '{_space.Name}'");
                return;
            }

            try
            {
                _space = await locks.OpenLockspaceAsync(open.Lockspace, (int)open.LvbLength);
                _acceptsBatches = open.AcceptBatches;
                _space.Recovery += e =>
                {
                    var recovery = new Grpc.Recovery { Stage = (Stage)e.Stage, OurSlot = (uint)e.OurSlot, Generation = (ulong)e.Generation };
                    recovery.Slots.AddRange(e.Slots.Select(s => (uint)s));
                    Send(new ServerMessage { Recovery = recovery });
                };
                Send(new ServerMessage { Opened = new Opened { RequestId = id, Lockspace = _space.Name, Slot = (uint)_space.Slot, LvbLength = (uint)_space.LvbLength, Session = _space.Session.ToString(), NodeId = locks.NodeId, Batches = true } });
            }
            catch (ArgumentException ex)
            {
                Error(id, ex.Message);
            }
            catch (TimeoutException ex)
            {
                // The registry stayed out of reach (this node cut off): the client gets why, and may open again.
                Error(id, $"could not open lockspace '{open.Lockspace}': {ex.Message}");
            }
        }

        private async Task RunAsync(ILockspace space, ulong id, ClientMessage message)
        {
            try
            {
                switch (message.BodyCase)
                {
                    case ClientMessage.BodyOneofCase.Lock:
                        await LockAsync(space, id, message.Lock);
                        break;
                    case ClientMessage.BodyOneofCase.Convert:
                        await ConvertAsync(id, message.Convert);
                        break;
                    case ClientMessage.BodyOneofCase.Unlock:
                        await UnlockAsync(id, message.Unlock);
                        break;
                    case ClientMessage.BodyOneofCase.Ping:
                        var dump = await (await locks.Manager).DumpResourceAsync(space.Name, message.Ping.Resource);
                        Send(new ServerMessage { Pong = new Pong { RequestId = id, MasterNode = dump.MasterNode } });
                        break;
                    default:
                        Error(id, "empty request");
                        break;
                }
            }
            catch (ArgumentException ex)
            {
                Error(id, ex.Message);
            }
            catch (Exception ex)
            {
                log.LogWarning(ex, "gRPC lock request {RequestId} failed", id);
                Error(id, ex.Message);
            }
        }

        private async Task LockAsync(ILockspace space, ulong id, Grpc.Lock request)
        {
            using var cts = Track(id);
            // Basts come only after the grant, but may race the line that learns the lock id.
            var lockId = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
            try
            {
                var handle = await space.LockAsync(
                    request.Resource,
                    (LockMode)request.Mode,
                    (LockFlags)request.Flags,
                    request.Lvb.IsEmpty ? null : request.Lvb.Memory,
                    request.TimeoutMs > 0 ? TimeSpan.FromMilliseconds(request.TimeoutMs) : null,
                    blocked => lockId.Task.ContinueWith(t => Send(new ServerMessage { Bast = new Bast { LockId = (ulong)t.Result, BlockedMode = (Mode)blocked } }), TaskContinuationOptions.OnlyOnRanToCompletion),
                    cts.Token);
                lockId.SetResult(handle.LockId);
                _handles[(ulong)handle.LockId] = handle;
                Send(Completion(id, handle.LockId, LockOperation.Request, LockStatus.Granted, handle.Mode, Valblk(request.Flags) ? handle.Lvb : null, handle.Flags));
            }
            catch (LockRequestException ex)
            {
                Send(Completion(id, 0, LockOperation.Request, ex.Status, LockMode.NL, null, 0));
            }
            finally
            {
                _pending.TryRemove(id, out _);
            }
        }

        private async Task ConvertAsync(ulong id, Grpc.Convert request)
        {
            if (!_handles.TryGetValue(request.LockId, out var handle))
            {
                Send(Completion(id, (long)request.LockId, LockOperation.Convert, LockStatus.Invalid, LockMode.NL, null, 0));
                return;
            }

            using var cts = Track(id);
            var status = LockStatus.Granted;
            try
            {
                await handle.ConvertAsync((LockMode)request.Mode, (LockFlags)request.Flags, request.Lvb.IsEmpty ? null : request.Lvb.Memory, request.TimeoutMs > 0 ? TimeSpan.FromMilliseconds(request.TimeoutMs) : null, cts.Token);
            }
            catch (LockRequestException ex)
            {
                status = ex.Status;
            }
            finally
            {
                _pending.TryRemove(id, out _);
            }

            Send(Completion(id, handle.LockId, LockOperation.Convert, status, handle.Mode, status == LockStatus.Granted && Valblk(request.Flags) ? handle.Lvb : null, handle.Flags));
        }

        private async Task UnlockAsync(ulong id, Unlock request)
        {
            if (!_handles.TryGetValue(request.LockId, out var handle))
            {
                Send(Completion(id, (long)request.LockId, LockOperation.Unlock, LockStatus.Invalid, LockMode.NL, null, 0));
                return;
            }

            var status = LockStatus.Unlocked;
            try
            {
                await handle.UnlockAsync((LockFlags)request.Flags, request.Lvb.IsEmpty ? null : request.Lvb.Memory);
                _handles.TryRemove(request.LockId, out _);
            }
            catch (LockRequestException ex)
            {
                status = ex.Status;
            }

            Send(Completion(id, handle.LockId, LockOperation.Unlock, status, LockMode.NL, null, 0));
        }

        private CancellationTokenSource Track(ulong id)
        {
            var cts = new CancellationTokenSource();
            _pending[id] = cts;
            return cts;
        }

        private static bool Valblk(uint flags) => ((LockFlags)flags).HasFlag(LockFlags.ValBlk);

        private static ServerMessage Completion(ulong id, long lockId, LockOperation op, LockStatus status, LockMode mode, ReadOnlyMemory<byte>? lvb, LockResultFlags flags)
        {
            var completion = new Completion
            {
                RequestId = id,
                LockId = (ulong)lockId,
                Operation = (Operation)op,
                Status = (GrpcStatus)status,
                GrantedMode = (Mode)mode,
                ResultFlags = (uint)flags,
            };
            if (lvb is { } value)
            {
                completion.Lvb = Google.Protobuf.ByteString.CopyFrom(value.Span);
            }

            return new ServerMessage { Completion = completion };
        }

        private void Error(ulong id, string text) => Send(new ServerMessage { Error = new Error { RequestId = id, Message = text } });

        private void Send(ServerMessage message) => outbox.TryWrite(message);

        public async ValueTask DisposeAsync()
        {
            foreach (var cts in _pending.Values)
            {
                await cts.CancelAsync();
            }

            Task[] running;
            lock (_running)
            {
                running = [.. _running];
            }

            await Task.WhenAll(running);
            if (_space is not null)
            {
                await _space.DisposeAsync();
            }
        }
    }
}
