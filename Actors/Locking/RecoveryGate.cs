using Akka.Event;

namespace Lockstep.Actors.Locking;

/// <summary>Published on the event stream when the node's <see cref="RecoveryGate"/> opens; local only.</summary>
internal sealed class RecoveryGateOpened : Akka.Actor.INoSerializationVerificationNeeded
{
    public static readonly RecoveryGateOpened Instance = new();
}

/// <summary>
/// The node-local switch the lock resources hosted on this node consult before granting: closed from
/// recover_prep until recover_done. The recovery coordinator flips it; resource actors read it on
/// every request and hear of its opening through the event stream. It also carries the self-fence
/// flag the lock client consults before taking new requests.
/// </summary>
public sealed class RecoveryGate
{
    private readonly EventStream _events;
    private volatile bool _recovering;
    private volatile bool _fenced;

    internal RecoveryGate(EventStream events)
    {
        _events = events;
    }

    /// <summary>Resources on this node may grant: not recovering, and not fenced (a fenced node's lock table may lack the majority's locks).</summary>
    public bool IsGranting => !_recovering && !_fenced;

    /// <summary>This node has not seen a majority for the fence timeout.</summary>
    public bool IsFenced => _fenced;

    internal void Close() => _recovering = true;

    internal void Open()
    {
        _recovering = false;
        _events.Publish(RecoveryGateOpened.Instance);
    }

    internal void Fence(bool fenced)
    {
        _fenced = fenced;
        if (!fenced && !_recovering)
        {
            // Waiters held back while fenced may now be granted.
            _events.Publish(RecoveryGateOpened.Instance);
        }
    }
}
