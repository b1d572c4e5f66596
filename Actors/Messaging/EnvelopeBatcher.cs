namespace Lockstep.Actors.Messaging;

/// <summary>
/// Collects the envelopes an actor sends while it works through its mailbox, per destination and channel, and hands
/// them out as batches when the actor flushes (on a message it sent itself when the first envelope came in, so a
/// flush follows everything that was already queued: under load batches grow, when idle an envelope waits only for
/// that one local message). Order per destination and channel is kept; a batch of one goes out unwrapped.
/// </summary>
/// <typeparam name="TRef">The destination (an actor ref; anything with equality in tests).</typeparam>
public sealed class EnvelopeBatcher<TRef>
    where TRef : notnull
{
    private readonly Dictionary<(TRef To, string Channel), List<object>> _pending = [];
    private readonly List<(TRef To, string Channel)> _order = [];

    /// <summary>A batcher whose batches hold at most <paramref name="maxBatch"/> envelopes (keeps remote frames small).</summary>
    public EnvelopeBatcher(int maxBatch)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        MaxBatch = maxBatch;
    }

    /// <summary>Most envelopes per batch.</summary>
    public int MaxBatch { get; }

    /// <summary>Whether nothing waits.</summary>
    public bool IsEmpty => _order.Count == 0;

    /// <summary>Queues <paramref name="envelope"/>; true when it is the first one waiting (the caller schedules a flush).</summary>
    public bool Add(TRef to, string channel, object envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        var wasEmpty = IsEmpty;
        var key = (to, channel);
        if (!_pending.TryGetValue(key, out var list))
        {
            list = [];
            _pending[key] = list;
            _order.Add(key);
        }

        list.Add(envelope);
        return wasEmpty;
    }

    /// <summary>
    /// Everything waiting, in the order destinations were first used: one envelope as itself, more wrapped by
    /// <paramref name="wrap"/> (channel, envelopes) in chunks of <see cref="MaxBatch"/>. Empties the batcher.
    /// </summary>
    public IReadOnlyList<(TRef To, object Message)> Drain(Func<string, IReadOnlyList<object>, object> wrap)
    {
        ArgumentNullException.ThrowIfNull(wrap);
        var messages = new List<(TRef, object)>();
        foreach (var key in _order)
        {
            var list = _pending[key];
            for (var start = 0; start < list.Count; start += MaxBatch)
            {
                var count = Math.Min(MaxBatch, list.Count - start);
                messages.Add((key.To, count == 1 ? list[start] : wrap(key.Channel, list.GetRange(start, count))));
            }
        }

        _pending.Clear();
        _order.Clear();
        return messages;
    }
}
