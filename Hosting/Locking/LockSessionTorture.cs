using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Lockstep.Hosting.Locking.Grpc;
using Status = Lockstep.Hosting.Locking.Grpc.Status;

namespace Lockstep.Hosting.Locking;

/// <summary>Settings of <see cref="LockSessionTorture"/>.</summary>
/// <param name="Nodes">Management HTTP addresses (gRPC on port + 1000). The first one masters the counter and must stay up.</param>
/// <param name="ClientsPerNode">gRPC sessions per node.</param>
/// <param name="Iterations">Increments each client completes.</param>
/// <param name="MaxHold">Each hold lasts a random time up to this, so holds are long enough to overlap if EX were granted twice.</param>
/// <param name="IntervalLog">File every hold is appended to (<see cref="HoldIntervalLog"/>), or null.</param>
/// <param name="Timeout">The whole run; a client that has not finished by then fails it.</param>
/// <param name="Patience">How long one request may go unanswered on a live stream before it counts as never returned.</param>
/// <param name="Lockspace">Lockspace of the counter.</param>
/// <param name="Resource">The counter resource.</param>
/// <param name="SharedCounter">
/// Other torture runs (one per node, say) increment the same counter at the same time, so the counter read at this
/// run's end only has this run's increments as a lower bound; whoever started the runs checks the total.
/// </param>
public sealed record LockSessionTortureSettings(
    IReadOnlyList<Uri> Nodes,
    int ClientsPerNode,
    int Iterations,
    TimeSpan MaxHold,
    string? IntervalLog,
    TimeSpan Timeout,
    TimeSpan Patience,
    string Lockspace = "torture",
    string Resource = "counter",
    bool SharedCounter = false);

/// <summary>What one torture run saw.</summary>
/// <param name="Completed">Increments whose unlock (carrying the new value) was answered Unlocked.</param>
/// <param name="Uncertain">Unlocks sent whose answer was lost with the stream: each may or may not have landed.</param>
/// <param name="Found">The counter read back at the end.</param>
/// <param name="Unanswered">Requests that got no answer on a stream that stayed open (must be 0).</param>
/// <param name="Lost">Holds that ended because the node went away or fenced.</param>
/// <param name="Reconnects">Sessions opened again after their node broke them.</param>
/// <param name="NotValid">Grants that reported VALNOTVALID.</param>
/// <param name="Errors">Clients that did not finish, with why.</param>
/// <param name="SharedCounter">Other runs increment the counter too: <paramref name="Found"/> has no upper bound here.</param>
public sealed record LockSessionTortureResult(long Completed, long Uncertain, long Found, long Unanswered, long Lost, long Reconnects, long NotValid, IReadOnlyList<string> Errors, bool SharedCounter = false)
{
    /// <summary>
    /// Every request returned, every client finished, and the counter is within the increments that may have landed
    /// (with a shared counter: at least this run's completed increments).
    /// </summary>
    public bool Ok => Unanswered == 0 && Errors.Count == 0 && Found >= Completed && (SharedCounter || Found <= Completed + Uncertain);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"completed {Completed} uncertain {Uncertain} found {Found} unanswered {Unanswered} lost-holds {Lost} reconnects {Reconnects} valnotvalid {NotValid} errors {Errors.Count}");
}

/// <summary>
/// The counter torture from outside the cluster, through gRPC sessions, surviving node deaths: each
/// client locks EX+VALBLK, holds for a random moment, writes counter+1 on unlock. A client whose
/// node's stream breaks, or which hears FENCED, stops acting at once (the hold ends when it learned),
/// then opens a new session — on the same node once it is back. Every hold can go to an interval
/// log, which <see cref="HoldIntervalChecker"/> reads.
/// </summary>
public static class LockSessionTorture
{
    private const uint ValBlk = 4;

    public static async Task<LockSessionTortureResult> RunAsync(LockSessionTortureSettings settings, TextWriter progress, CancellationToken ct)
    {
        if (settings.Nodes.Count == 0 || settings.ClientsPerNode < 1 || settings.Iterations < 1)
        {
            throw new ArgumentException("the torture needs at least one node, one client per node and one iteration");
        }

        using var log = settings.IntervalLog is null ? null : new AppendOnlyLineLog(settings.IntervalLog);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(settings.Timeout);
        var channels = settings.Nodes.Select(n => GrpcChannel.ForAddress(LockBench.GrpcAddress(n))).ToList();
        var counters = new Counters();
        var errors = new ConcurrentQueue<string>();
        try
        {
            // The keeper asks first, so the counter is mastered on the first node; its NL lock keeps the LVB.
            await using var keeper = await GrpcLockSession.OpenAsync(new LockService.LockServiceClient(channels[0]), settings.Lockspace, deadline.Token);
            var kept = await keeper.LockAsync(settings.Resource, Mode.Nl, 0, deadline.Token);
            await progress.WriteLineAsync($"counter {settings.Lockspace}/{settings.Resource} kept on {keeper.NodeId}; {settings.Nodes.Count * settings.ClientsPerNode} clients start");

            var clients = settings.Nodes.SelectMany((_, node) => Enumerable.Range(0, settings.ClientsPerNode).Select(c => Task.Run(async () =>
            {
                try
                {
                    await ClientAsync(settings, channels[node], $"n{node + 1}", $"n{node + 1}c{c}", log, counters, progress, deadline.Token);
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"client n{node + 1}/c{c}: {ex.GetBaseException().Message}");
                }
            }))).ToList();
            await Task.WhenAll(clients);

            var final = await keeper.ConvertAsync(kept.LockId, Mode.Pr, ValBlk, deadline.Token);
            var found = BinaryPrimitives.ReadInt64LittleEndian(final.Lvb.Span);
            return new LockSessionTortureResult(counters.Completed, counters.Uncertain, found, counters.Unanswered, counters.Lost, counters.Reconnects, counters.NotValid, [.. errors], settings.SharedCounter);
        }
        finally
        {
            channels.ForEach(c => c.Dispose());
        }
    }

    private static async Task ClientAsync(LockSessionTortureSettings settings, GrpcChannel channel, string node, string client, AppendOnlyLineLog? log, Counters counters, TextWriter progress, CancellationToken ct)
    {
        var random = new Random(HashCode.Combine(node, client));
        var done = 0;
        var first = true;
        while (done < settings.Iterations)
        {
            ct.ThrowIfCancellationRequested();
            WatchedSession session;
            try
            {
                session = await WatchedSession.OpenAsync(channel, settings.Lockspace, settings.Patience, ct);
            }
            catch (Exception ex) when (ex is RpcException or SessionLostException)
            {
                // The node is down (or still starting): try again until it is back or the run times out.
                await Task.Delay(250, ct);
                continue;
            }

            if (!first)
            {
                Interlocked.Increment(ref counters.Reconnects);
                await progress.WriteLineAsync($"{node}/{client}: session opened again after {done} increments");
            }

            first = false;
            await using (session)
            {
                try
                {
                    while (done < settings.Iterations)
                    {
                        var grant = await Counted(session.CallAsync(new ClientMessage { Lock = new Grpc.Lock { Resource = settings.Resource, Mode = Mode.Ex, Flags = ValBlk } }), counters);
                        var start = HoldClock.NowNs();
                        if (grant.Status != Status.Granted)
                        {
                            throw new LockBenchException($"EX request answered {grant.Status}");
                        }

                        var notValid = (grant.ResultFlags & 1) != 0;
                        if (notValid)
                        {
                            Interlocked.Increment(ref counters.NotValid);
                        }

                        // Which grants found the LVB not valid, in order: one after an EX holder died, none after the next write.
                        log?.AppendLine(string.Create(CultureInfo.InvariantCulture, $"grant {settings.Resource} {session.NodeId ?? node} {client} {start} {(notValid ? "valnotvalid" : "valid")}"));

                        var next = BinaryPrimitives.ReadInt64LittleEndian(grant.Lvb.Span) + 1;
                        try
                        {
                            await Task.Delay(TimeSpan.FromTicks(random.NextInt64(settings.MaxHold.Ticks + 1)), session.Lost);
                        }
                        catch (OperationCanceledException) when (session.Lost.IsCancellationRequested)
                        {
                            Interlocked.Increment(ref counters.Lost);
                            log?.AppendLine(HoldIntervalLog.Format(new HoldInterval(settings.Resource, session.NodeId ?? node, client, start, Math.Max(start, session.LostAtNs), "lost")));
                            throw new SessionLostException(session.LostReason);
                        }

                        // The end is on record before the unlock leaves: nobody else can be granted before it.
                        log?.AppendLine(HoldIntervalLog.Format(new HoldInterval(settings.Resource, session.NodeId ?? node, client, start, HoldClock.NowNs(), "unlock")));
                        var lvb = new byte[8];
                        BinaryPrimitives.WriteInt64LittleEndian(lvb, next);
                        Completion unlocked;
                        try
                        {
                            unlocked = await Counted(session.CallAsync(new ClientMessage { Unlock = new Unlock { LockId = grant.LockId, Flags = ValBlk, Lvb = ByteString.CopyFrom(lvb) } }), counters);
                        }
                        catch (SessionLostException)
                        {
                            Interlocked.Increment(ref counters.Uncertain);
                            throw;
                        }

                        if (unlocked.Status != Status.Unlocked)
                        {
                            throw new LockBenchException($"unlock answered {unlocked.Status}");
                        }

                        done++;
                        Interlocked.Increment(ref counters.Completed);
                    }
                }
                catch (SessionLostException lost)
                {
                    await progress.WriteLineAsync($"{node}/{client}: session lost ({lost.Message}) after {done} increments");
                }
            }
        }
    }

    private static async Task<Completion> Counted(Task<Completion> call, Counters counters)
    {
        try
        {
            return await call;
        }
        catch (TimeoutException)
        {
            Interlocked.Increment(ref counters.Unanswered);
            throw;
        }
    }

    private sealed class Counters
    {
        public long Completed;
        public long Uncertain;
        public long Unanswered;
        public long Lost;
        public long Reconnects;
        public long NotValid;
    }
}

/// <summary>The session ended under a request or hold: its node went away or fenced.</summary>
internal sealed class SessionLostException(string reason) : Exception(reason);

/// <summary>
/// A session whose stream is read all the time: answers go to their request, and the moment the
/// stream breaks or the node says FENCED, <see cref="Lost"/> fires with the time it was learned.
/// A session opened with <c>surviveFence</c> stays usable after FENCED (the node answers requests with
/// a Fenced status); otherwise every request fails once the session is lost.
/// </summary>
internal sealed class WatchedSession : IAsyncDisposable
{
    private readonly AsyncDuplexStreamingCall<ClientMessage, ServerMessage> _call;
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<ServerMessage>> _waiting = new();
    private readonly CancellationTokenSource _lost = new();
    private readonly CancellationTokenSource _broken = new();
    private readonly TimeSpan _patience;
    private readonly bool _surviveFence;
    private readonly Action<Grpc.Recovery>? _onRecovery;
    private readonly Action<string>? _onBroken;
    private readonly Task _reader;
    private ulong _lastRequest;

    private WatchedSession(AsyncDuplexStreamingCall<ClientMessage, ServerMessage> call, TimeSpan patience, bool surviveFence, Action<Grpc.Recovery>? onRecovery, Action<string>? onBroken)
    {
        _call = call;
        _patience = patience;
        _surviveFence = surviveFence;
        _onRecovery = onRecovery;
        _onBroken = onBroken;
        _reader = Task.Run(ReadAsync);
    }

    /// <summary>Slot and node id the node answered the open with.</summary>
    public Opened? Opened { get; private set; }

    /// <summary>Id of the node serving the session (null before it opened).</summary>
    public string? NodeId => Opened?.NodeId is { Length: > 0 } id ? id : null;

    /// <summary>Fires when locks of this session may no longer be acted on: FENCED, or the stream broke.</summary>
    public CancellationToken Lost => _lost.Token;

    /// <summary>Whether the stream itself is gone.</summary>
    public bool IsBroken => _broken.IsCancellationRequested;

    /// <summary>When <see cref="Lost"/> fired, in <see cref="HoldClock"/> nanoseconds.</summary>
    public long LostAtNs { get; private set; }

    public string LostReason { get; private set; } = string.Empty;

    public static async Task<WatchedSession> OpenAsync(GrpcChannel channel, string lockspace, TimeSpan patience, CancellationToken ct,
        bool surviveFence = false, Action<Grpc.Recovery>? onRecovery = null, Action<string>? onBroken = null)
    {
        var session = new WatchedSession(new LockService.LockServiceClient(channel).Session(cancellationToken: ct), patience, surviveFence, onRecovery, onBroken);
        try
        {
            var opened = await session.SendAsync(new ClientMessage { Open = new Open { Lockspace = lockspace } });
            if (opened.BodyCase != ServerMessage.BodyOneofCase.Opened)
            {
                throw new LockBenchException($"open answered {opened.BodyCase}");
            }

            session.Opened = opened.Opened;
            return session;
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    /// <summary>Sends a lock request and returns its completion; throws <see cref="SessionLostException"/> if the session is lost first.</summary>
    public async Task<Completion> CallAsync(ClientMessage message)
    {
        var answer = await SendAsync(message);
        return answer.BodyCase == ServerMessage.BodyOneofCase.Completion ? answer.Completion : throw new LockBenchException($"request answered {answer}");
    }

    private CancellationToken Failing => _surviveFence ? _broken.Token : _lost.Token;

    private async Task<ServerMessage> SendAsync(ClientMessage message)
    {
        message.RequestId = Interlocked.Increment(ref _lastRequest);
        var answer = new TaskCompletionSource<ServerMessage>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiting[message.RequestId] = answer;
        try
        {
            if (Failing.IsCancellationRequested)
            {
                throw new SessionLostException(LostReason);
            }

            await _call.RequestStream.WriteAsync(message);
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or IOException)
        {
            MarkBroken($"write failed: {ex.GetBaseException().Message}");
            throw new SessionLostException(LostReason);
        }

        var failed = Task.Delay(Timeout.Infinite, Failing);
        var winner = await Task.WhenAny(answer.Task, failed, Task.Delay(_patience));
        if (winner == answer.Task)
        {
            return await answer.Task;
        }

        if (winner == failed || Failing.IsCancellationRequested)
        {
            throw new SessionLostException(LostReason);
        }

        throw new TimeoutException($"request {message.RequestId} unanswered for {_patience.TotalSeconds} s on a live stream");
    }

    private async Task ReadAsync()
    {
        try
        {
            while (await _call.ResponseStream.MoveNext(CancellationToken.None))
            {
                var message = _call.ResponseStream.Current;
                switch (message.BodyCase)
                {
                    case ServerMessage.BodyOneofCase.Recovery:
                        _onRecovery?.Invoke(message.Recovery);
                        if (message.Recovery.Stage == Stage.Fenced)
                        {
                            MarkLost("the node is FENCED");
                        }

                        break;
                    case ServerMessage.BodyOneofCase.Opened:
                        Answer(message.Opened.RequestId, message);
                        break;
                    case ServerMessage.BodyOneofCase.Completion:
                        Answer(message.Completion.RequestId, message);
                        break;
                    case ServerMessage.BodyOneofCase.Error:
                        Answer(message.Error.RequestId, message);
                        break;
                }
            }

            MarkBroken("the node closed the stream");
        }
        catch (Exception ex)
        {
            MarkBroken($"stream broke: {ex.GetBaseException().Message}");
        }
    }

    private void Answer(ulong requestId, ServerMessage message)
    {
        if (_waiting.TryRemove(requestId, out var waiter))
        {
            waiter.TrySetResult(message);
        }
    }

    private void MarkLost(string reason)
    {
        lock (_lost)
        {
            if (_lost.IsCancellationRequested)
            {
                return;
            }

            LostAtNs = HoldClock.NowNs();
            LostReason = reason;
            _lost.Cancel();
        }
    }

    private void MarkBroken(string reason)
    {
        MarkLost(reason);
        lock (_lost)
        {
            if (_broken.IsCancellationRequested)
            {
                return;
            }

            _broken.Cancel();
        }

        _onBroken?.Invoke(reason);
    }

    public async ValueTask DisposeAsync()
    {
        lock (_lost)
        {
            // Closing it ourselves is no news for the callbacks.
            if (!_lost.IsCancellationRequested)
            {
                LostAtNs = HoldClock.NowNs();
                LostReason = "closed by the client";
                _lost.Cancel();
            }

            _broken.Cancel();
        }

        try
        {
            await _call.RequestStream.CompleteAsync();
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or IOException)
        {
            // Already broken.
        }

        _call.Dispose();
        await _reader;
        _lost.Dispose();
        _broken.Dispose();
    }
}
