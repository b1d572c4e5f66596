using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Tests.Messaging;

/// <summary>
/// One sender outbox and the holders of its channels, wired by a hostile network the test drives step by
/// step: any message may be delivered out of order, duplicated or lost; associations drop; holders hand
/// over (shard moves) or vanish (node crash). Everything is the real pure state; only the wires are simulated.
/// </summary>
internal sealed class ProtocolSimulation
{
    public const string Outbox = "outbox";

    private readonly Random _random;
    private readonly int _holderCap;
    private readonly List<(bool ToHolder, object Message)> _network = [];
    private readonly Dictionary<string, Holder> _holders = new(StringComparer.Ordinal);
    private readonly List<(string Channel, long Seq, Guid Incarnation)> _running = [];
    private long _now;
    private int _nextRequest;

    public ProtocolSimulation(int seed, int holderCap, OutboxLimits limits)
    {
        _random = new Random(seed);
        _holderCap = holderCap;
        Sender = new OutboxState<int>("sim://node", 1, limits);
    }

    public OutboxState<int> Sender { get; }

    /// <summary>Every handler start: channel, seq, request id, flagged as possibly repeated.</summary>
    public List<(string Channel, long Seq, int Request, bool PossiblyRepeated)> Runs { get; } = [];

    public Dictionary<int, int> Completed { get; } = [];

    public List<string> Failures { get; } = [];

    public List<string> Violations { get; } = [];

    public List<string> Trace { get; } = [];

    public int Requests => _nextRequest;

    public static int ExpectedStatus(int request) => (request * 2) + 1;

    public void Step(int op, bool allowCrash)
    {
        switch (op)
        {
            case 0 or 1:
                Send(op == 0 ? "a" : "b");
                break;
            case 2 or 3:
                DeliverAt(_random.Next(Math.Max(1, _network.Count)));
                break;
            case 4:
                if (_network.Count > 0)
                {
                    _network.Insert(_random.Next(_network.Count + 1), _network[_random.Next(_network.Count)]);
                }

                break;
            case 5:
                if (_network.Count > 0)
                {
                    _network.RemoveAt(_random.Next(_network.Count));
                }

                break;
            case 6:
                if (_running.Count > 0)
                {
                    Complete(_random.Next(_running.Count));
                }

                break;
            case 7:
                Tick(_random.Next(0, 1500));
                break;
            case 8:
                // Association drop: everything in flight is gone; the outbox re-sends on re-association.
                _network.Clear();
                ApplyOutbox(Sender.ResendAll(_now));
                break;
            case 9:
                BeginMove();
                break;
            case 10 when allowCrash:
                Crash();
                break;
        }
    }

    /// <summary>No more faults: deliver, complete and tick until nothing is outstanding (bounded).</summary>
    public bool Quiesce(int maxSteps = 200_000)
    {
        for (var i = 0; i < maxSteps; i++)
        {
            if (_network.Count > 0)
            {
                DeliverAt(0);
            }
            else if (_running.Count > 0)
            {
                Complete(0);
            }
            else if (Sender.Pending > 0 || Sender.Undropped > 0 || _holders.Values.Any(h => h.HandOver is not null))
            {
                Tick(5_000);
            }
            else
            {
                return true;
            }
        }

        return false;
    }

    public void Send(string entityType)
    {
        var request = _nextRequest++;
        // Every third request completes at its status (ReliableSender.Post: no drop round), the rest wait for the drop.
        ApplyOutbox(Sender.Send(entityType, $"target-{request % 3}", Payload(request), request, _now, completesAtStatus: request % 3 == 1));
    }

    private static SerializedPayload Payload(int value) => new(1, "", BitConverter.GetBytes(value));

    private void Tick(int advance)
    {
        _now += advance;
        ApplyOutbox(Sender.Tick(_now));
        foreach (var holder in _holders.Values.Where(h => h.HandOver is not null))
        {
            // The holder actor re-sends its hand-over on a timer until the sender acknowledges it.
            _network.Add((false, holder.HandOver!));
        }
    }

    private void DeliverAt(int index)
    {
        if (_network.Count == 0)
        {
            return;
        }

        var (toHolder, message) = _network[index];
        _network.RemoveAt(index);
        Trace.Add($"deliver {message}");
        if (!toHolder)
        {
            ApplyOutbox(message switch
            {
                HolderStatus s => Sender.OnStatus(s, _now),
                HolderDropConfirmed c => Sender.OnDropConfirmed(c, _now),
                HolderRejected r => Sender.OnRejected(r, _now),
                HolderHandOver h => Sender.OnHandOver(h, _now),
                HolderGap g => Sender.OnGap(g, _now),
                _ => throw new InvalidOperationException(message.GetType().Name),
            });
            return;
        }

        switch (message)
        {
            case HolderDeliver d:
                ApplyHolder(d.ChannelId, HolderFor(d.ChannelId).State.Lookup(d, Outbox));
                break;
            case HolderDrop drop:
                ApplyHolder(drop.ChannelId, HolderFor(drop.ChannelId).State.Drop(drop.Seq, Outbox));
                break;
            case HolderHandOverAck ack:
                if (_holders.TryGetValue(ack.ChannelId, out var current) && current.State.Incarnation == ack.HolderIncarnation && current.HandOver is not null)
                {
                    // The old incarnation stops; the next message starts a fresh one (sharding).
                    _holders.Remove(ack.ChannelId);
                }

                break;
        }
    }

    private void Complete(int index)
    {
        var (channel, seq, incarnation) = _running[index];
        _running.RemoveAt(index);
        if (_holders.TryGetValue(channel, out var holder) && holder.State.Incarnation == incarnation)
        {
            var request = Runs.Last(r => r.Channel == channel && r.Seq == seq).Request;
            ApplyHolder(channel, holder.State.Completed(seq, Payload(ExpectedStatus(request))));
        }
    }

    private void BeginMove()
    {
        var candidates = _holders.Where(h => h.Value.HandOver is null && !h.Value.Moving).Select(h => h.Key).ToArray();
        if (candidates.Length == 0)
        {
            return;
        }

        var channel = candidates[_random.Next(candidates.Length)];
        _holders[channel].Moving = true;
        Trace.Add($"MOVE {channel} {_holders[channel].State.Incarnation}");
        ApplyHolder(channel, _holders[channel].State.BeginHandOver(handOverToSender: true));
    }

    private void Crash()
    {
        var channels = _holders.Keys.ToArray();
        if (channels.Length == 0)
        {
            return;
        }

        var channel = channels[_random.Next(channels.Length)];
        _running.RemoveAll(r => r.Channel == channel);
        Trace.Add($"CRASH {channel} {_holders[channel].State.Incarnation}");
        _holders.Remove(channel);
    }

    private Holder HolderFor(string channel)
    {
        if (!_holders.TryGetValue(channel, out var holder))
        {
            holder = new Holder(new MessageHolderState<string>(_holderCap, Guid.NewGuid()));
            _holders.Add(channel, holder);
        }

        return holder;
    }

    private void ApplyHolder(string channel, IReadOnlyList<HolderEffect<string>> effects)
    {
        var holder = _holders[channel];
        var incarnation = holder.State.Incarnation;
        foreach (var effect in effects)
        {
            switch (effect)
            {
                case HolderRun<string> run:
                    Trace.Add($"RUN {channel} {run.Seq} inc {incarnation} flagged {run.PossiblyRepeated}");
                    var request = BitConverter.ToInt32(run.Payload.Bytes);
                    Runs.Add((channel, run.Seq, request, run.PossiblyRepeated));
                    _running.Add((channel, run.Seq, incarnation));
                    break;
                case HolderReply<string> reply:
                    _network.Add((false, new HolderStatus(channel, reply.Seq, incarnation, reply.Status)));
                    break;
                case HolderConfirmDrop<string> confirm:
                    _network.Add((false, new HolderDropConfirmed(channel, confirm.Seq, incarnation)));
                    break;
                case HolderReject<string> reject:
                    _network.Add((false, new HolderRejected(channel, reject.Seq, reject.Reason, reject.Cap, reject.InUse, incarnation)));
                    break;
                case HolderHandOverTo<string> handOver:
                    holder.HandOver = new HolderHandOver(channel, incarnation, handOver.NextToRun, handOver.Completed);
                    _network.Add((false, holder.HandOver));
                    break;
                case HolderReportGap<string> gap:
                    _network.Add((false, new HolderGap(channel, gap.Seq, incarnation)));
                    break;
                case HolderReadyToStop<string>:
                    _holders.Remove(channel);
                    break;
            }
        }
    }

    private void ApplyOutbox(IReadOnlyList<OutboxEffect<int>> effects)
    {
        foreach (var effect in effects)
        {
            switch (effect)
            {
                case OutboxTransmit<int> t:
                    _network.Add((true, t.Request));
                    break;
                case OutboxTransmitDrop<int> d:
                    _network.Add((true, d.Drop));
                    break;
                case OutboxAckHandOver<int> a:
                    _network.Add((true, a.Ack));
                    break;
                case OutboxComplete<int> c:
                    if (!Completed.TryAdd(c.Caller, BitConverter.ToInt32(c.Status.Bytes)))
                    {
                        Violations.Add($"request {c.Caller} completed twice");
                    }

                    break;
                case OutboxFail<int> f:
                    Failures.Add($"request {f.Caller}: {f.Reason}");
                    break;
            }
        }
    }

    private sealed class Holder(MessageHolderState<string> state)
    {
        public MessageHolderState<string> State { get; } = state;

        public HolderHandOver? HandOver { get; set; }

        public bool Moving { get; set; }
    }
}
