using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Membership;
using Lockstep.Contracts.Broadcast;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Broadcast;

/// <summary>Queue <paramref name="Message"/> on the stream; <paramref name="Done"/> gets its round's sequence.</summary>
internal sealed record SubmitBroadcast(ClusterMessage Message, int Bytes, TaskCompletionSource<long> Done);

/// <summary>Join the stream (if not yet); <paramref name="Done"/> completes once this node takes part.</summary>
internal sealed record JoinStream(TaskCompletionSource? Done);

/// <summary>A member left the cluster (the node actor forwards it to every stream).</summary>
internal sealed record StreamMemberRemoved
{
    public static readonly StreamMemberRemoved Instance = new();
}

/// <summary>Asks one stream for its statistics.</summary>
internal sealed record GetStreamStats
{
    public static readonly GetStreamStats Instance = new();
}

/// <summary>
/// One stream on one node: holds its three locks (TOKEN, MESSAGE, ACK) and runs the sender and receiver state
/// machines, one DLM operation at a time per lock. Thin: every decision is in <see cref="BroadcastSenderState"/> and
/// <see cref="BroadcastReceiverState"/>; this actor performs their effects and feeds the results back.
/// </summary>
internal sealed class BroadcastStreamActor : ReceiveActor, IWithTimers
{
    /// <summary>How often a conversion answered Busy is asked again (50 ms apart) before the stream is rebuilt.</summary>
    private const int BusyRetries = 100;

    private readonly string _stream;
    private readonly ILockManager _locks;
    private readonly BroadcastOptions _options;
    private readonly BroadcastDelivery _delivery;
    private readonly string _nodeId;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly DeliveryCursor _cursor = new();
    private readonly Dictionary<long, (TaskCompletionSource<long> Done, long Started)> _callers = [];
    private readonly List<TaskCompletionSource> _joinWaiters = [];
    private readonly List<SubmitBroadcast> _beforeOpen = [];
    private readonly StreamStatistics _statistics = new();
    private long _nextId;
    private int _epoch;
    private bool _open;
    private BroadcastSenderState _sender;
    private BroadcastReceiverState _receiver;
    private ILockHandle? _token;
    private ILockHandle? _message;
    private ILockHandle? _ack;
    private ILockspace? _space;

    public BroadcastStreamActor(string stream, ILockManager locks, BroadcastOptions options, BroadcastDelivery delivery, string nodeId)
    {
        _stream = stream;
        _locks = locks;
        _options = options;
        _delivery = delivery;
        _nodeId = nodeId;
        _sender = NewSender();
        _receiver = new BroadcastReceiverState(_cursor);

        Receive<SubmitBroadcast>(Submit);
        Receive<JoinStream>(Join);
        Receive<StreamMemberRemoved>(_ => Apply(_sender.MemberRemoved()));
        Receive<GetStreamPosition>(_ => Sender.Tell(new StreamPosition(_nodeId, _stream, _cursor.Joined, _cursor.LastSeq, _cursor.LastRound)));
        Receive<GetStreamStats>(_ => Sender.Tell(Stats()));
        Receive<AckBast>(OnBast);
        Receive<OpDone>(OnDone);
        Receive<Reopen>(_ => Open());
    }

    public ITimerScheduler Timers { get; set; } = null!;

    public static Props Props(string stream, ILockManager locks, BroadcastOptions options, BroadcastDelivery delivery, string nodeId) =>
        Akka.Actor.Props.Create(() => new BroadcastStreamActor(stream, locks, options, delivery, nodeId));

    private enum Step
    {
        Open,
        Token,
        JoinAck,
        TakeMessage,
        Gather,
        Publish,
        DeliverLocally,
        AwaitAck,
        DropAck,
        DropMessage,
        ReleaseToken,
        Read,
        Deliver,
        ReleaseAck,
        Protect,
        RetakeAck,
        Settle,
    }

    protected override void PreStart() => Open();

    protected override void PostStop()
    {
        foreach (var (done, _) in _callers.Values)
        {
            done.TrySetException(new BroadcastException($"stream '{_stream}' stopped", unknown: true));
        }

        foreach (var waiter in _joinWaiters)
        {
            waiter.TrySetException(new BroadcastException($"stream '{_stream}' stopped", unknown: false));
        }

        foreach (var submit in _beforeOpen)
        {
            submit.Done.TrySetException(new BroadcastException($"stream '{_stream}' stopped", unknown: false));
        }

        _ = _space?.DisposeAsync().AsTask();
    }

    private string Resource(char kind) => $"{_stream}/{kind}";

    private BroadcastSenderState NewSender() => new(_cursor, _nodeId, _options.LvbLength, _options.MaxBatch, _options.MaxRoundsPerToken);

    /// <summary>
    /// Opens the stream's own session in the broadcast lockspace and takes TOKEN and MESSAGE in NL (granted at once):
    /// every node keeps a VALBLK copy of both LVBs. A session per stream lets a stream that lost its locks end them all
    /// at once — pending conversions included — by closing it, without touching the other streams.
    /// </summary>
    private void Open()
    {
        var (locks, options, token, message) = (_locks, _options, Resource('t'), Resource('m'));
        Run(Step.Open, async () =>
        {
            var space = await locks.OpenLockspaceAsync(options.Lockspace, options.LvbLength);
            try
            {
                return (space, await space.LockAsync(token, LockMode.NL, LockFlags.ValBlk), await space.LockAsync(message, LockMode.NL, LockFlags.ValBlk));
            }
            catch
            {
                await space.DisposeAsync();
                throw;
            }
        });
    }

    private void Submit(SubmitBroadcast submit)
    {
        if (!_open)
        {
            // Opening, or rebuilding after a fault: the sender starts fresh when the locks are back.
            _beforeOpen.Add(submit);
            return;
        }

        var id = ++_nextId;
        try
        {
            var effect = _sender.Submit(new PendingMessage(id, submit.Message, submit.Bytes));
            _callers[id] = (submit.Done, Stopwatch.GetTimestamp());
            _statistics.Submitted(submit.Message);
            Apply(effect);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            submit.Done.TrySetException(new BroadcastException(ex.Message, unknown: false));
        }
    }

    private void Join(JoinStream join)
    {
        if (_cursor.Joined && _receiver.Current != BroadcastReceiverState.Phase.Paused)
        {
            join.Done?.TrySetResult();
            return;
        }

        if (join.Done is not null)
        {
            _joinWaiters.Add(join.Done);
        }

        var effect = _sender.Join();
        if (_open)
        {
            Apply(effect);
        }
    }

    private void OnBast(AckBast bast)
    {
        if (bast.Epoch == _epoch)
        {
            Apply(_receiver.AckBast(bast.Generation, bast.Mode == LockMode.EX));
        }
    }

    private void OnDone(OpDone done)
    {
        if (done.Epoch != _epoch)
        {
            return;
        }

        if (done.Error is not null)
        {
            OnFailure(done.Step, done.Error);
            return;
        }

        switch (done.Step)
        {
            case Step.Open:
                (_space, _token, _message) = ((ILockspace, ILockHandle, ILockHandle))done.Value!;
                _open = true;
                _sender = NewSender();
                _receiver = new BroadcastReceiverState(_cursor);
                Apply(_sender.Join());
                foreach (var submit in _beforeOpen)
                {
                    Submit(submit);
                }

                _beforeOpen.Clear();
                break;
            case Step.Token:
                Apply(_sender.TokenGranted(_token!.Lvb.ToArray(), _token.ValueNotValid));
                break;
            case Step.JoinAck:
                _ack = (ILockHandle)done.Value!;
                Apply(_sender.AckJoined());
                break;
            case Step.TakeMessage:
                Apply(_sender.MessageGranted(_message!.Lvb.ToArray(), _message.ValueNotValid, TryDecode(_message.Lvb.Span)));
                break;
            case Step.Gather:
                Apply(_sender.Gathered((IReadOnlyList<StreamPosition>)done.Value!));
                break;
            case Step.Publish:
                Apply(_sender.Published());
                break;
            case Step.DeliverLocally:
                Apply(_sender.DeliveredLocally());
                break;
            case Step.AwaitAck:
                Apply(_sender.AckGranted());
                break;
            case Step.DropAck:
                Apply(_sender.AckDropped());
                break;
            case Step.DropMessage:
                Apply(_sender.MessageDropped());
                break;
            case Step.ReleaseToken:
                var resumed = _receiver.Resume();
                if (_cursor.Joined)
                {
                    foreach (var waiter in _joinWaiters)
                    {
                        waiter.TrySetResult();
                    }

                    _joinWaiters.Clear();
                }

                Apply(resumed);
                Apply(_sender.TokenReleased());
                break;
            case Step.Read:
                Apply(_receiver.MessageRead(_message!.Lvb.ToArray(), TryDecode(_message.Lvb.Span)));
                break;
            case Step.Deliver:
                Apply(_receiver.Delivered());
                break;
            case Step.ReleaseAck:
                Apply(_receiver.AckReleased());
                break;
            case Step.Protect:
                Apply(_receiver.MessageProtected());
                break;
            case Step.RetakeAck:
                _ack = (ILockHandle)done.Value!;
                Apply(_receiver.AckRetaken());
                break;
            case Step.Settle:
                Apply(_receiver.Settled());
                break;
        }
    }

    private void OnFailure(Step step, Exception error)
    {
        if (step == Step.AwaitAck && error is LockRequestException { Status: LockStatus.TimedOut })
        {
            Apply(_sender.AckTimedOut($"not every node processed it within {_options.AckTimeout.TotalSeconds:0.#} s"));
            return;
        }

        if (step == Step.Gather)
        {
            Apply(_sender.GatherFailed(error.Message));
            return;
        }

        // Fenced, the session lost, the lockspace gone: give every lock up and join again from scratch. A round this
        // node published may stay half-delivered until the next sender gathers (its caller hears "unknown").
        _log.Warning("broadcast stream {0}: {1} failed ({2}); rebuilding the stream", _stream, step, error.Message);
        Apply(_sender.Fault($"stream '{_stream}' lost its locks during {step}: {error.Message}"));
        _epoch++;
        _open = false;
        var space = _space;
        (_space, _token, _message, _ack) = (null, null, null, null);
        var self = Self;
        _ = Task.Run(async () =>
        {
            // Closing the session purges every lock of this stream on this node, a conversion still pending included
            // (an unlock would be refused Busy and leave it blocking every other node's MESSAGE EX).
            try
            {
                if (space is not null)
                {
                    await space.DisposeAsync();
                }
            }
            catch (Exception)
            {
                // The session is gone already (fenced, node purged).
            }

            await Task.Delay(TimeSpan.FromSeconds(1));
            self.Tell(Reopen.Instance);
        });
    }

    private void Apply(IReadOnlyList<SenderEffect> effects)
    {
        foreach (var effect in effects)
        {
            Apply(effect);
        }
    }

    private void Apply(SenderEffect? effect)
    {
        switch (effect)
        {
            case null:
                return;
            case TakeTokenEffect:
                Convert(Step.Token, _token!, LockMode.EX, LockFlags.ValBlk, null);
                break;
            case PauseReceiverEffect:
                Apply(_receiver.Pause());
                break;
            case JoinAckEffect:
                TakeAck(Step.JoinAck, _receiver.NextAckGeneration());
                break;
            case TakeMessageEffect:
                Convert(Step.TakeMessage, _message!, LockMode.EX, LockFlags.ValBlk, null);
                break;
            case GatherEffect:
                Gather();
                break;
            case PublishRoundEffect publish:
                Convert(Step.Publish, _message!, LockMode.CW, LockFlags.ValBlk, publish.Lvb);
                break;
            case DeliverLocallyEffect local:
                Deliver(Step.DeliverLocally, local.Round);
                break;
            case AwaitAckEffect:
                var ack = _ack!;
                var timeout = _options.AckTimeout;
                Run(Step.AwaitAck, async () =>
                {
                    await ack.ConvertAsync(LockMode.EX, LockFlags.None, null, timeout);
                    return null;
                });
                break;
            case DropAckEffect:
                Convert(Step.DropAck, _ack!, LockMode.CR, LockFlags.None, null);
                break;
            case DropMessageEffect drop:
                Convert(Step.DropMessage, _message!, LockMode.NL, drop.Lvb is null ? LockFlags.None : LockFlags.ValBlk, drop.Lvb);
                break;
            case ReleaseTokenEffect release:
                Convert(Step.ReleaseToken, _token!, LockMode.NL, LockFlags.ValBlk, release.Lvb);
                break;
            case CompleteEffect complete:
                Complete(complete);
                break;
            case FailEffect fail:
                foreach (var id in fail.Ids)
                {
                    if (_callers.Remove(id, out var caller))
                    {
                        _statistics.CallFailed();
                        caller.Done.TrySetException(new BroadcastException(fail.Reason, fail.Unknown));
                    }
                }

                break;
            default:
                throw new InvalidOperationException($"unhandled sender effect {effect}");
        }
    }

    private void Apply(ReceiverEffect? effect)
    {
        switch (effect)
        {
            case null:
                return;
            case ReadMessageEffect:
                Convert(Step.Read, _message!, LockMode.CR, LockFlags.ValBlk, null);
                break;
            case DeliverRoundEffect deliver:
                Deliver(Step.Deliver, deliver.Round);
                break;
            case ReleaseAckEffect:
                var ack = _ack!;
                _ack = null;
                Run(Step.ReleaseAck, async () =>
                {
                    await ack.UnlockAsync();
                    return null;
                });
                break;
            case ProtectMessageEffect:
                Convert(Step.Protect, _message!, LockMode.PR, LockFlags.None, null);
                break;
            case RetakeAckEffect:
                TakeAck(Step.RetakeAck, _receiver.AckGeneration);
                break;
            case SettleMessageEffect:
                Convert(Step.Settle, _message!, LockMode.NL, LockFlags.None, null);
                break;
            case ReceiverPausedEffect:
                Apply(_sender.ReceiverPaused());
                break;
            default:
                throw new InvalidOperationException($"unhandled receiver effect {effect}");
        }
    }

    private void Complete(CompleteEffect complete)
    {
        var now = Stopwatch.GetTimestamp();
        foreach (var id in complete.Ids)
        {
            if (_callers.Remove(id, out var caller))
            {
                _statistics.Completed(Stopwatch.GetElapsedTime(caller.Started, now));
                caller.Done.TrySetResult(complete.Seq);
            }
        }
    }

    private void TakeAck(Step step, int generation)
    {
        var (space, self, epoch, resource) = (_space!, Self, _epoch, Resource('a'));
        Run(step, async () => await space.LockAsync(resource, LockMode.CR, LockFlags.None, bast: mode => self.Tell(new AckBast(epoch, generation, mode))));
    }

    /// <summary>
    /// One conversion. Busy means the resource still has another copy of this lock's conversion in flight (one re-sent
    /// across a remaster): it is asked again until that copy is answered, instead of giving the stream up.
    /// </summary>
    private void Convert(Step step, ILockHandle handle, LockMode mode, LockFlags flags, byte[]? lvb)
    {
        Run(step, async () =>
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await handle.ConvertAsync(mode, flags, lvb);
                    return null;
                }
                catch (LockRequestException ex) when (ex.Status == LockStatus.Busy && attempt < BusyRetries)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(50));
                }
            }
        });
    }

    private void Deliver(Step step, BroadcastRound round)
    {
        _statistics.Delivering(round);
        var (delivery, stream) = (_delivery, _stream);
        Run(step, async () =>
        {
            await delivery.DeliverAsync(stream, round);
            return null;
        });
    }

    /// <summary>
    /// Asks every other member where it stands. A member that does not answer is asked again (it may be on its way
    /// out of the cluster); the gather fails after <see cref="BroadcastOptions.GatherAttempts"/>.
    /// </summary>
    private void Gather()
    {
        var (system, stream, options) = (Context.System, _stream, _options);
        Run(Step.Gather, async () =>
        {
            var cluster = Cluster.Get(system);
            string? missing = null;
            for (var attempt = 0; attempt < options.GatherAttempts; attempt++)
            {
                var members = cluster.State.Members
                    .Where(m => m.Address != cluster.SelfAddress && m.Status is MemberStatus.Up or MemberStatus.WeaklyUp or MemberStatus.Leaving or MemberStatus.Joining)
                    .Select(m => m.Address).ToList();
                var answers = await MemberAsk.EachAsync<StreamPosition>(system, members, BroadcastManager.ActorName, new GetStreamPosition(stream), options.GatherTimeout);
                if (answers.Missing() is { Count: 0 })
                {
                    return (IReadOnlyList<StreamPosition>)answers.Answered();
                }

                missing = string.Join(", ", answers.Missing());
                await Task.Delay(TimeSpan.FromMilliseconds(500));
            }

            throw new BroadcastException($"stream '{stream}': members {missing} did not say where they stand in {options.GatherAttempts} tries; nothing was sent", unknown: false);
        });
    }

    private void Run(Step step, Func<Task<object?>> operation)
    {
        var (self, epoch) = (Self, _epoch);
        _ = Task.Run(async () =>
        {
            try
            {
                self.Tell(new OpDone(epoch, step, await operation(), null));
            }
            catch (Exception ex)
            {
                self.Tell(new OpDone(epoch, step, null, ex));
            }
        });
    }

    private static BroadcastRound? TryDecode(ReadOnlySpan<byte> lvb)
    {
        try
        {
            return BroadcastWire.DecodeRound(lvb);
        }
        catch (FormatException)
        {
            // A torn or foreign LVB is no round: the sender's trust check fails on it and gathers.
            return null;
        }
    }

    private BroadcastStreamStats Stats()
    {
        return new BroadcastStreamStats(
            _stream, _cursor.Joined, $"{_sender.Current}/{_receiver.Current}", _cursor.LastSeq, _sender.RoundsPublished, _sender.RoundsHealed,
            _cursor.Delivered, _cursor.Duplicates, _cursor.Gaps, _sender.Gathers, _statistics.Failed, _sender.InFlight,
            _statistics.SentByType, _statistics.DeliveredByType, _statistics.CompletionMs(0.5), _statistics.CompletionMs(0.99));
    }

    private sealed record OpDone(int Epoch, Step Step, object? Value, Exception? Error);

    private sealed record AckBast(int Epoch, int Generation, LockMode Mode);

    private sealed record Reopen
    {
        public static readonly Reopen Instance = new();
    }
}

/// <summary>A broadcast failed. <see cref="Unknown"/>: it may have been processed by some nodes (the next sender completes it there).</summary>
public sealed class BroadcastException(string message, bool unknown) : Exception(message)
{
    public bool Unknown { get; } = unknown;
}
