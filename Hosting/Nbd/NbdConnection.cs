using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Collections.Concurrent;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Nbd;

namespace Lockstep.Hosting.Nbd;

/// <summary>
/// One client connection: the handshake, then a reader loop that parses requests and starts each on the
/// device at once (many in flight, replies in completion order). Replies are queued; whichever thread finds
/// no send in progress sends everything queued with one vectored send, so a reply costs no thread hop and
/// replies that pile up share a syscall. A protocol violation or a vanished client ends this
/// connection only; requests already started finish (nothing half-written is abandoned) before it closes.
/// </summary>
internal sealed class NbdConnection
{
    // Write payloads with at least this much still to come are received straight into their buffer.
    private const int DirectReceiveThreshold = 64 * 1024;

    private const int EAGAIN = 11;

    // Most one socket read of the request stream takes into the pipe (~15 pipelined 4 KiB WRITEs).
    private const int PipeReadBytes = 64 * 1024;

    private readonly Socket _socket;
    private readonly NbdReceiveLoop? _receiveLoop;
    private readonly Action _pumpWhenWritable;
    private EpollSocketStream? _epollSocket;
    private readonly IExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly NbdBufferPool _pool = NbdBufferPool.Shared;
    private readonly CancellationTokenSource _stopReading = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly ConcurrentQueue<NbdReply> _replies = new();
    private readonly SocketAsyncEventArgs _send = new(unsafeSuppressExecutionContextFlow: true);
    private readonly List<NbdReply> _batch = [];
    private readonly List<ArraySegment<byte>> _segments = [];
    private readonly NbdInflightBudget _budget;
    private readonly Stack<NbdRequestOp> _ops = new();
    private readonly string _remote;

    private NbdSession? _session;
    private NbdExportState _state;
    private CancellationToken _abortToken;
    private volatile bool _sendFailed;
    private volatile bool _closed;

    // 1 while one thread owns sending (the "pump"); the reader holds flushing while it parses a buffer.
    private int _sending;
    private int _holdFlush;
    private long _sendRemaining;
    private long _requests;
    private long _errors;

    // A WRITE whose payload is still arriving, or the payload of a refused WRITE still to be skipped.
    private NbdRequestOp? _payloadOp;
    private int _payloadCopied;
    private long _skipRemaining;
    private NbdRequest _skipRequest;
    private NbdError _skipError;

    public NbdConnection(long id, Socket socket, IExportCatalog catalog, NbdServerOptions options, NbdReceiveLoop? receiveLoop, ILogger logger)
    {
        Id = id;
        _socket = socket;
        _receiveLoop = receiveLoop;
        _pumpWhenWritable = Pump;
        _catalog = catalog;
        _options = options;
        _logger = logger;
        _budget = new NbdInflightBudget(options.MaxInflightRequests, options.MaxInflightBytes);
        _remote = socket.RemoteEndPoint?.ToString() ?? "?";
        _abortToken = _abort.Token;
        _send.Completed += (_, _) =>
        {
            AfterSend();
            Pump();
        };
    }

    public long Id { get; }

    /// <summary>Runs the connection to its end; never throws.</summary>
    public async Task RunAsync(CancellationToken serverStopping)
    {
        var started = Stopwatch.GetTimestamp();
        _logger.LogInformation("NBD connection #{Id} from {Remote} opened", Id, _remote);
        var reason = "client closed the connection";
        var clean = false;
        var violation = false;
        var stopping = serverStopping.Register(() => _stopReading.Cancel());
        var stream = OpenReceiveStream();
        // The pipe reads headers and small payloads. It must not read far ahead: whatever of a large WRITE payload
        // it pulls in is copied a second time (pipe → payload buffer), while the rest is received straight into the
        // payload buffer (TransmitAsync). With 1 MiB reads, most of each 1 MiB WRITE went through the pipe.
        var reader = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: PipeReadBytes, minimumReadSize: PipeReadBytes / 4, leaveOpen: true));
        try
        {
            if (await HandshakeAsync(reader).ConfigureAwait(false))
            {
                (reason, clean) = await TransmitAsync(reader, stream).ConfigureAwait(false);
            }
            else
            {
                reason = _closeReason ?? reason;
                clean = true;
            }
        }
        catch (NbdProtocolException e)
        {
            reason = $"protocol violation: {e.Message}";
            violation = true;
        }
        catch (OperationCanceledException) when (_stopReading.IsCancellationRequested)
        {
            // Either the server is stopping (finish what is in flight, then close) or the writer found the socket dead.
            clean = serverStopping.IsCancellationRequested && !_sendFailed;
            reason = clean ? "server stopping" : "connection lost: sending a reply failed";
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            reason = _payloadOp is not null || _skipRemaining > 0
                ? $"client vanished in the middle of a request ({e.Message})"
                : $"connection lost: {e.Message}";
        }
        catch (Exception e)
        {
            reason = $"internal error: {e}";
            violation = true;
        }

        // Closing waits for requests, disposes the device lease and may sync legs: not on the loop's thread.
        await LeaveReceiveLoopAsync();
        await CloseAsync(clean).ConfigureAwait(false);
        await ReleaseDeviceAsync().ConfigureAwait(false);
        await stopping.DisposeAsync().ConfigureAwait(false);
        await reader.CompleteAsync().ConfigureAwait(false);
        await stream.DisposeAsync().ConfigureAwait(false);
        _socket.Dispose();
        _stopReading.Dispose();
        _abort.Dispose();
        _send.Dispose();

        var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        _logger.Log(violation ? LogLevel.Warning : LogLevel.Information,
            "NBD connection #{Id} from {Remote} closed after {Seconds:F1} s: export '{Export}', {Requests} requests, {Errors} errors; {Reason}",
            Id, _remote, seconds, _session?.ExportName ?? "-", _requests, _errors, reason);
    }

    /// <summary>
    /// Moves the caller to the thread pool when it runs on the epoll loop's thread, which serves other connections and
    /// must only run work that never blocks; elsewhere it continues at once.
    /// </summary>
    private async ValueTask LeaveReceiveLoopAsync()
    {
        if (_receiveLoop is { OnLoopThread: true })
        {
            // No synchronization context on the loop's thread: the continuation goes to the pool.
            await Task.Yield();
        }
    }

    /// <summary>The stream requests arrive on: the server's epoll loop when it runs, else the socket engine's.</summary>
    private Stream OpenReceiveStream()
    {
        if (_receiveLoop is not null)
        {
            try
            {
                return _epollSocket = _receiveLoop.Attach(_socket);
            }
            catch (IOException e)
            {
                _logger.LogWarning("NBD connection #{Id}: {Message}; it receives through the socket engine", Id, e.Message);
            }
        }

        return new NetworkStream(_socket, ownsSocket: false);
    }

    // ------------------------------------------------------------------ handshake

    private string? _closeReason;

    private async Task<bool> HandshakeAsync(PipeReader reader)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stopReading.Token);
        timeout.CancelAfter(_options.HandshakeTimeout);
        var cancellation = timeout.Token;
        try
        {
            const NbdHandshakeFlags offered = NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes;
            var greeting = new byte[NbdSizes.Greeting];
            NbdCodec.WriteGreeting(greeting, offered);
            await SendHandshakeAsync(greeting, cancellation).ConfigureAwait(false);

            var negotiator = new NbdNegotiator(_catalog, _options);
            while (true)
            {
                var result = await reader.ReadAsync(cancellation).ConfigureAwait(false);
                var buffer = result.Buffer;
                if (NbdCodec.TryReadClientFlags(ref buffer, offered, out var flags, out _))
                {
                    negotiator.NoZeroes = (flags & NbdClientFlags.NoZeroes) != 0;
                    reader.AdvanceTo(buffer.Start);
                    break;
                }

                reader.AdvanceTo(buffer.Start, buffer.End);
                ThrowIfEnded(result, "during the greeting");
            }

            var output = new ArrayBufferWriter<byte>(256);
            while (true)
            {
                var result = await reader.ReadAsync(cancellation).ConfigureAwait(false);
                var buffer = result.Buffer;
                while (NbdCodec.TryReadOption(ref buffer, _options.MaxOptionBytes, out var header, out var data, out _))
                {
                    // Opening an export reads superblocks and asks the volume actors: not on the loop's thread.
                    await LeaveReceiveLoopAsync();
                    var step = await negotiator.HandleAsync(header, data.ToArray(), output, cancellation).ConfigureAwait(false);
                    await SendHandshakeAsync(output.WrittenMemory, cancellation).ConfigureAwait(false);
                    output.ResetWrittenCount();
                    if (step == NbdNegotiationStep.Continue)
                    {
                        continue;
                    }

                    // Bytes after the final option (a pipelining client's first requests) stay in the reader.
                    reader.AdvanceTo(buffer.Start);
                    if (step == NbdNegotiationStep.Close)
                    {
                        _closeReason = negotiator.CloseReason;
                        return false;
                    }

                    _session = negotiator.Session!;
                    _state = _session.State;
                    return true;
                }

                reader.AdvanceTo(buffer.Start, buffer.End);
                ThrowIfEnded(result, "during option haggling");
            }
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !_stopReading.IsCancellationRequested)
        {
            _closeReason = $"handshake not finished within {_options.HandshakeTimeout.TotalSeconds:F0} s";
            return false;
        }
    }

    private async ValueTask SendHandshakeAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellation)
    {
        while (_epollSocket is { } epoll && !bytes.IsEmpty)
        {
            // Not through the socket engine: a socket that once waited there stays in its epoll set for good.
            var sent = epoll.TrySend(bytes, out var error);
            if (sent > 0)
            {
                bytes = bytes[(int)sent..];
            }
            else if (sent < 0 && error == EAGAIN)
            {
                await epoll.WhenWritableAsync().WaitAsync(cancellation).ConfigureAwait(false);
            }
            else
            {
                throw new IOException($"sending the handshake failed: {(sent < 0 ? Marshal.GetPInvokeErrorMessage(error) : "socket closed")}");
            }
        }

        while (!bytes.IsEmpty)
        {
            var sent = await _socket.SendAsync(bytes, SocketFlags.None, cancellation).ConfigureAwait(false);
            bytes = bytes[sent..];
        }
    }

    private static void ThrowIfEnded(in ReadResult result, string when)
    {
        if (result.IsCompleted || result.IsCanceled)
        {
            throw new IOException($"client closed the connection {when}");
        }
    }

    // ------------------------------------------------------------------ transmission: reading

    private async Task<(string Reason, bool Clean)> TransmitAsync(PipeReader reader, Stream receive)
    {
        var session = _session!;
        var maxWrite = (uint)_options.MaxRequestBytes;
        var cancellation = _stopReading.Token;
        while (true)
        {
            var result = await reader.ReadAsync(cancellation).ConfigureAwait(false);
            var buffer = result.Buffer;
            HoldFlush();
            while (true)
            {
                if (_payloadOp is not null)
                {
                    if (!CopyPayload(ref buffer, session.Device))
                    {
                        break;
                    }

                    continue;
                }

                if (_skipRemaining > 0)
                {
                    var skip = Math.Min(_skipRemaining, buffer.Length);
                    buffer = buffer.Slice(skip);
                    _skipRemaining -= skip;
                    if (_skipRemaining > 0)
                    {
                        break;
                    }

                    await AcquireAsync(0, cancellation).ConfigureAwait(false);
                    EnqueueError(_skipRequest, _skipError, 0);
                    continue;
                }

                if (!NbdCodec.TryReadRequest(ref buffer, maxWrite, out var request, out _))
                {
                    break;
                }

                _requests++;
                if (request.Command == NbdCommand.Disconnect)
                {
                    ReleaseFlush();
                    reader.AdvanceTo(buffer.Start);
                    return ("client disconnected (NBD_CMD_DISC)", true);
                }

                var error = NbdRequestRules.Check(request, _state);
                if (error != NbdError.None)
                {
                    if (request.Command == NbdCommand.Write && request.Length > 0)
                    {
                        // The payload must be read past before the next header; answer once it is.
                        _skipRemaining = request.Length;
                        _skipRequest = request;
                        _skipError = error;
                        continue;
                    }

                    await AcquireAsync(0, cancellation).ConfigureAwait(false);
                    EnqueueError(request, error, 0);
                    continue;
                }

                var payload = request.Command is NbdCommand.Read or NbdCommand.Write ? (int)request.Length : 0;
                await AcquireAsync(payload, cancellation).ConfigureAwait(false);
                var op = RentOp();
                op.Request = request;
                op.Budget = payload;
                op.Buffer = _pool.Rent(payload);
                if (request.Command == NbdCommand.Write && payload > 0)
                {
                    _payloadOp = op;
                    _payloadCopied = 0;
                    continue;
                }

                // On the epoll loop this runs there, large READs included: handing 1 MiB page-cache reads to the pool
                // measured slower (85-95 % of the socket engine) than copying them here (109 %, docs/benchmarks.md).
                op.Start(session.Device, _abortToken);
            }

            ReleaseFlush();
            reader.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted)
            {
                var midRequest = _payloadOp is not null || _skipRemaining > 0 || !buffer.IsEmpty;
                return (midRequest ? "client vanished in the middle of a request" : "client closed the connection", false);
            }

            // The reader holds nothing now, so the rest of a large payload can skip the pipe's copy.
            if (_payloadOp is { } pending && pending.Buffer.Length - _payloadCopied >= DirectReceiveThreshold)
            {
                var memory = pending.Buffer.Memory;
                while (_payloadCopied < memory.Length)
                {
                    var received = await receive.ReadAsync(memory[_payloadCopied..], cancellation).ConfigureAwait(false);
                    if (received == 0)
                    {
                        return ("client vanished in the middle of a request", false);
                    }

                    _payloadCopied += received;
                }

                _payloadOp = null;
                pending.Start(session.Device, _abortToken);
            }
        }
    }

    /// <summary>Waits for room in the budget; never while holding back replies, which may be what frees it.</summary>
    private ValueTask AcquireAsync(long bytes, CancellationToken cancellation)
    {
        var acquire = _budget.AcquireAsync(bytes, cancellation);
        if (acquire.IsCompletedSuccessfully)
        {
            return acquire;
        }

        return WaitAsync(acquire);

        async ValueTask WaitAsync(ValueTask pending)
        {
            ReleaseFlush();
            try
            {
                await pending.ConfigureAwait(false);
            }
            finally
            {
                HoldFlush();
            }
        }
    }

    /// <summary>Copies what has arrived of the pending WRITE payload; true (and the write started) once complete.</summary>
    private bool CopyPayload(ref ReadOnlySequence<byte> buffer, IBlockDevice device)
    {
        var op = _payloadOp!;
        var want = op.Buffer.Length - _payloadCopied;
        var take = (int)Math.Min(want, buffer.Length);
        buffer.Slice(0, take).CopyTo(op.Buffer.Memory.Span[_payloadCopied..]);
        buffer = buffer.Slice(take);
        _payloadCopied += take;
        if (_payloadCopied < op.Buffer.Length)
        {
            return false;
        }

        _payloadOp = null;
        op.Start(device, _abortToken);
        return true;
    }

    // ------------------------------------------------------------------ completion and replies

    private NbdRequestOp RentOp()
    {
        lock (_ops)
        {
            if (_ops.TryPop(out var op))
            {
                return op;
            }
        }

        return new NbdRequestOp(this);
    }

    /// <summary>Called by an op when the device finished it (or failed it).</summary>
    internal void Complete(NbdRequestOp op, IReadOnlyList<BlockExtent>? extents, Exception? failure)
    {
        var request = op.Request;
        var budget = op.Budget;
        var buffer = op.Buffer;
        op.Buffer = default;
        lock (_ops)
        {
            _ops.Push(op);
        }

        if (failure is not null)
        {
            ReturnBuffer(buffer);
            var error = NbdRequestRules.Map(failure, request.Command);
            _logger.LogDebug(failure, "NBD connection #{Id}: {Command} at {Offset}+{Length} failed with {Error}", Id, request.Command, request.Offset, request.Length, error);
            EnqueueError(request, error, budget, failure.Message);
            return;
        }

        var structured = _state.StructuredReplies;
        switch (request.Command)
        {
            case NbdCommand.Read when request.Length > 0:
            {
                var headerLength = structured ? NbdCodec.OffsetDataHeader : NbdSizes.SimpleReplyHeader;
                var header = ArrayPool<byte>.Shared.Rent(headerLength);
                if (structured)
                {
                    NbdCodec.WriteOffsetDataHeader(header, request.Handle, request.Offset, (int)request.Length);
                }
                else
                {
                    NbdCodec.WriteSimpleReply(header, NbdError.None, request.Handle);
                }

                Enqueue(new NbdReply(header, headerLength, buffer, budget));
                return;
            }

            case NbdCommand.BlockStatus:
            {
                var list = extents ?? [];
                var header = ArrayPool<byte>.Shared.Rent(NbdCodec.BlockStatusChunkCapacity(list.Count));
                var length = NbdCodec.WriteBlockStatus(header, request.Handle, _state.AllocationContextId, list, request.Length,
                    (request.Flags & NbdCommandFlags.RequestOne) != 0);
                Enqueue(new NbdReply(header, length, default, budget));
                return;
            }

            default:
            {
                ReturnBuffer(buffer);
                var header = ArrayPool<byte>.Shared.Rent(NbdSizes.StructuredReplyHeader);
                int length;
                if (structured && request.Command == NbdCommand.Read)
                {
                    // A zero-length read: no content chunk may describe zero bytes, so just end the reply.
                    NbdCodec.WriteChunkHeader(header, NbdReplyFlags.Done, NbdReplyType.None, request.Handle, 0);
                    length = NbdSizes.StructuredReplyHeader;
                }
                else
                {
                    NbdCodec.WriteSimpleReply(header, NbdError.None, request.Handle);
                    length = NbdSizes.SimpleReplyHeader;
                }

                Enqueue(new NbdReply(header, length, default, budget));
                return;
            }
        }
    }

    private void EnqueueError(in NbdRequest request, NbdError error, long budget, string? detail = null)
    {
        Interlocked.Increment(ref _errors);
        byte[] header;
        int length;
        if (_state.StructuredReplies)
        {
            // Structured replies carry a message for the human behind the client; READ must use them.
            var message = $"{request.Command} at {request.Offset}+{request.Length}: {Describe(error)}{(detail is null ? "" : $" ({detail})")}";
            header = ArrayPool<byte>.Shared.Rent(NbdCodec.ErrorChunkLength(message));
            length = NbdCodec.WriteErrorChunk(header, request.Handle, error, message);
        }
        else
        {
            header = ArrayPool<byte>.Shared.Rent(NbdSizes.SimpleReplyHeader);
            NbdCodec.WriteSimpleReply(header, error, request.Handle);
            length = NbdSizes.SimpleReplyHeader;
        }

        Enqueue(new NbdReply(header, length, default, budget));
    }

    private static string Describe(NbdError error) => error switch
    {
        NbdError.Invalid => "invalid request (unknown command or flag, out of range, or too large)",
        NbdError.NoSpace => "range ends past the end of the export",
        NbdError.NotPermitted => "export is read-only",
        NbdError.Io => "I/O error",
        NbdError.Shutdown => "export unavailable or server shutting down",
        NbdError.NotSupported => "not supported",
        _ => error.ToString(),
    };

    private void Enqueue(in NbdReply reply)
    {
        if (_closed)
        {
            // The connection gave up waiting for this request; nobody will send the reply.
            Release(reply);
            return;
        }

        _replies.Enqueue(reply);
        if (Volatile.Read(ref _holdFlush) == 0)
        {
            TryPump();
        }
    }

    private void Release(in NbdReply reply)
    {
        ArrayPool<byte>.Shared.Return(reply.Header);
        ReturnBuffer(reply.Data);
        _budget.Release(reply.Budget);
    }

    private void ReturnBuffer(in NbdBuffer buffer)
    {
        if (buffer.Array is { Length: > 0 })
        {
            _pool.Return(buffer);
        }
    }

    // ------------------------------------------------------------------ transmission: writing

    private void HoldFlush() => Volatile.Write(ref _holdFlush, 1);

    private void ReleaseFlush()
    {
        Volatile.Write(ref _holdFlush, 0);
        TryPump();
    }

    private void TryPump()
    {
        if (!_replies.IsEmpty && Interlocked.CompareExchange(ref _sending, 1, 0) == 0)
        {
            Pump();
        }
    }

    /// <summary>
    /// Sends queued replies until the queue is empty or a send has to wait for the socket (then the send's
    /// completion carries on). Only the thread that set <see cref="_sending"/> runs this.
    /// </summary>
    private void Pump()
    {
        while (true)
        {
            if (_batch.Count == 0)
            {
                long total = 0;
                while (_batch.Count < _options.MaxRepliesPerSend && _replies.TryDequeue(out var reply))
                {
                    _batch.Add(reply);
                    _segments.Add(new ArraySegment<byte>(reply.Header, 0, reply.HeaderLength));
                    total += reply.HeaderLength;
                    if (reply.Data.Length > 0)
                    {
                        _segments.Add(reply.Data.Segment);
                        total += reply.Data.Length;
                    }
                }

                if (_batch.Count == 0)
                {
                    // Let go, then look again: a reply queued just before we let go must not be stranded.
                    Volatile.Write(ref _sending, 0);
                    if (_replies.IsEmpty || Interlocked.CompareExchange(ref _sending, 1, 0) != 0)
                    {
                        return;
                    }

                    continue;
                }

                if (_sendFailed)
                {
                    ReleaseBatch();
                    continue;
                }

                _sendRemaining = total;
            }

            if (_epollSocket is { } epoll)
            {
                var sent = epoll.TrySend(_segments, out var error);
                if (sent < 0 && error == EAGAIN)
                {
                    // The socket is full: the loop carries on with this batch when it can take more (we keep _sending).
                    if (epoll.WaitWritable(_pumpWhenWritable))
                    {
                        return;
                    }

                    SendFailed("cannot wait for the socket to take more");
                    ReleaseBatch();
                    continue;
                }

                AccountSent(sent > 0, (int)Math.Max(sent, 0), sent < 0 ? Marshal.GetPInvokeErrorMessage(error) : "socket closed");
                continue;
            }

            try
            {
                _send.BufferList = _segments;
                if (_socket.SendAsync(_send))
                {
                    return;
                }
            }
            catch (Exception e) when (e is ObjectDisposedException or SocketException or InvalidOperationException)
            {
                SendFailed(e.Message);
                ReleaseBatch();
                continue;
            }

            AfterSend();
        }
    }

    /// <summary>Accounts a finished socket-engine send.</summary>
    private void AfterSend() =>
        AccountSent(_send.SocketError == SocketError.Success && _send.BytesTransferred > 0, _send.BytesTransferred, _send.SocketError.ToString());

    /// <summary>Accounts a send: releases the batch, or trims it and leaves it for the next send.</summary>
    private void AccountSent(bool succeeded, int bytes, string why)
    {
        if (!succeeded)
        {
            SendFailed(why);
            ReleaseBatch();
            return;
        }

        _sendRemaining -= bytes;
        if (_sendRemaining > 0)
        {
            TrimFront(_segments, bytes);
            return;
        }

        ReleaseBatch();
    }

    private void ReleaseBatch()
    {
        foreach (var reply in _batch)
        {
            Release(reply);
        }

        _batch.Clear();
        _segments.Clear();
    }

    private void SendFailed(string why)
    {
        if (_sendFailed)
        {
            return;
        }

        // Keep draining so every buffer goes back to its pool; the reader stops at once.
        _sendFailed = true;
        _logger.LogDebug("NBD connection #{Id}: send failed: {Why}", Id, why);
        try
        {
            _stopReading.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The connection already finished closing.
        }
    }

    private static void TrimFront(List<ArraySegment<byte>> segments, int sent)
    {
        var drop = 0;
        while (drop < segments.Count && sent >= segments[drop].Count)
        {
            sent -= segments[drop].Count;
            drop++;
        }

        segments.RemoveRange(0, drop);
        if (sent > 0)
        {
            segments[0] = segments[0][sent..];
        }
    }

    private async Task CloseAsync(bool clean)
    {
        // The reader may have left through an exception while holding replies back.
        ReleaseFlush();
        if (!clean)
        {
            // The client is gone or misbehaved: tell the device to give up where it can, and fail pending sends.
            _abort.Cancel();
            TryShutdown();
        }

        if (_payloadOp is { } partial)
        {
            _payloadOp = null;
            ReturnBuffer(partial.Buffer);
            _budget.Release(partial.Budget);
        }

        var drained = _budget.WhenDrainedAsync();
        if (await Task.WhenAny(drained, Task.Delay(_options.DrainTimeout)).ConfigureAwait(false) != drained)
        {
            _logger.LogWarning("NBD connection #{Id}: {Count} requests still in flight after {Seconds:F0} s; dropping their replies",
                Id, _budget.Count, _options.DrainTimeout.TotalSeconds);
            TryShutdown();
        }

        _closed = true;
        while (_replies.TryDequeue(out var stranded))
        {
            Release(stranded);
        }

        if (clean)
        {
            TryShutdown();
        }
    }

    /// <summary>Gives the connection's device handle back to the catalog (once the requests in flight are drained).</summary>
    private async ValueTask ReleaseDeviceAsync()
    {
        if (_session is null)
        {
            return;
        }

        try
        {
            await _session.Device.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // Releasing a claim must not take the server down; the catalog logs its own trouble.
            _logger.LogWarning(e, "NBD connection #{Id}: releasing export '{Export}' failed", Id, _session.ExportName);
        }
    }

    private void TryShutdown()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already closed by the peer; nothing left to tell it.
        }
    }
}

/// <summary>One reply waiting to be sent: a header (pooled array) and, for READ, the data buffer.</summary>
internal readonly record struct NbdReply(byte[] Header, int HeaderLength, NbdBuffer Data, long Budget);

/// <summary>
/// A request in flight, pooled per connection: it issues the device call and resumes by a cached delegate
/// rather than an async state machine, so a request costs no allocation in steady state.
/// </summary>
internal sealed class NbdRequestOp
{
    private readonly NbdConnection _owner;
    private readonly Action _onCompleted;
    private ValueTask _pending;
    private ValueTask<IReadOnlyList<BlockExtent>> _pendingExtents;

    public NbdRequestOp(NbdConnection owner)
    {
        _owner = owner;
        _onCompleted = OnCompleted;
    }

    public NbdRequest Request;
    public NbdBuffer Buffer;
    public long Budget;

    public void Start(IBlockDevice device, CancellationToken cancellation)
    {
        var request = Request;
        var offset = (long)request.Offset;
        var fua = (request.Flags & NbdCommandFlags.Fua) != 0;
        try
        {
            switch (request.Command)
            {
                case NbdCommand.Read:
                    _pending = device.ReadAsync(offset, Buffer.Memory, cancellation);
                    break;
                case NbdCommand.Write:
                    _pending = device.WriteAsync(offset, Buffer.Memory, fua, cancellation);
                    break;
                case NbdCommand.Flush:
                    _pending = device.FlushAsync(cancellation);
                    break;
                case NbdCommand.Trim:
                    _pending = device.TrimAsync(offset, request.Length, fua, cancellation);
                    break;
                case NbdCommand.WriteZeroes:
                    _pending = device.WriteZeroesAsync(offset, request.Length, mayPunchHole: (request.Flags & NbdCommandFlags.NoHole) == 0, fua, cancellation);
                    break;
                case NbdCommand.BlockStatus:
                    _pendingExtents = device.GetAllocationAsync(offset, request.Length, cancellation);
                    var extentsAwaiter = _pendingExtents.ConfigureAwait(false).GetAwaiter();
                    if (extentsAwaiter.IsCompleted)
                    {
                        OnCompleted();
                    }
                    else
                    {
                        extentsAwaiter.UnsafeOnCompleted(_onCompleted);
                    }

                    return;
                default:
                    throw new InvalidOperationException($"command {request.Command} passed the checks but has no device call");
            }
        }
        catch (Exception e)
        {
            _pending = default;
            _pendingExtents = default;
            _owner.Complete(this, null, e);
            return;
        }

        var awaiter = _pending.ConfigureAwait(false).GetAwaiter();
        if (awaiter.IsCompleted)
        {
            OnCompleted();
        }
        else
        {
            awaiter.UnsafeOnCompleted(_onCompleted);
        }
    }

    private void OnCompleted()
    {
        IReadOnlyList<BlockExtent>? extents = null;
        Exception? failure = null;
        try
        {
            if (Request.Command == NbdCommand.BlockStatus)
            {
                extents = _pendingExtents.GetAwaiter().GetResult();
            }
            else
            {
                _pending.GetAwaiter().GetResult();
            }
        }
        catch (Exception e)
        {
            failure = e;
        }

        _pending = default;
        _pendingExtents = default;
        _owner.Complete(this, extents, failure);
    }
}
