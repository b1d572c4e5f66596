using Akka.Actor;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// An <see cref="IMessagingTransport"/> that drops, duplicates and delays (so reorders) the layer's envelopes
/// before the real Tell: the faults the Message Holder protocol must absorb, injected where the layer meets
/// remoting. Used by the 3-node fault test and by <c>lockstep messaging bench --faults</c>; never by a node.
/// </summary>
/// <param name="seed">Seed of the fault schedule, so a failing run can be repeated.</param>
/// <param name="percentEach">Share of envelopes (0–33) dropped, and the same share duplicated and delayed.</param>
public sealed class FaultInjectingTransport(int seed, int percentEach = 2) : IMessagingTransport
{
    private readonly Random _random = new(seed);
    private readonly object _gate = new();
    private long _dropped;
    private long _duplicated;
    private long _delayed;
    private volatile bool _enabled;

    /// <summary>Faults are injected only while this is true (off while a cluster forms).</summary>
    public bool Enabled
    {
        get => _enabled;
        set => _enabled = value;
    }

    public long Dropped => Interlocked.Read(ref _dropped);

    public long Duplicated => Interlocked.Read(ref _duplicated);

    public long Delayed => Interlocked.Read(ref _delayed);

    public void Send(IActorRef to, object message, IActorRef sender)
    {
        ArgumentNullException.ThrowIfNull(to);
        if (!_enabled)
        {
            to.Tell(message, sender);
            return;
        }

        int roll, delayMs;
        lock (_gate)
        {
            roll = _random.Next(100);
            delayMs = _random.Next(1, 20);
        }

        if (roll < percentEach)
        {
            Interlocked.Increment(ref _dropped);
        }
        else if (roll < 2 * percentEach)
        {
            Interlocked.Increment(ref _duplicated);
            to.Tell(message, sender);
            to.Tell(message, sender);
        }
        else if (roll < 3 * percentEach)
        {
            // Overtaken by everything sent in the next few milliseconds.
            Interlocked.Increment(ref _delayed);
            _ = Task.Delay(delayMs).ContinueWith(_ => to.Tell(message, sender), TaskScheduler.Default);
        }
        else
        {
            to.Tell(message, sender);
        }
    }
}
