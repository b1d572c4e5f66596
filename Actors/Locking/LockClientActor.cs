using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Event;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>A handle's command on its way to the resource; local only.</summary>
internal sealed record ClientSend(LockHandle Handle, ILockResourceCommand Command, TaskCompletionSource<LockCompleted> Reply) : INoSerializationVerificationNeeded;

/// <summary>
/// The node's lock client (fs/dlm's per-node lock table): it owns the node's lock handles, sends
/// their commands to the resource entities, and turns completion and blocking ASTs into completed
/// tasks and bast callbacks. All handle state changes happen here, on the actor's thread.
/// </summary>
internal sealed class LockClientActor : ReceiveActor
{
    private readonly IActorRef _region;
    private readonly LockingOptions _options;
    private readonly Dictionary<long, LockHandle> _handles = [];
    private readonly ILoggingAdapter _log = Context.GetLogger();

    public LockClientActor(IActorRef region, LockingOptions options)
    {
        _region = region;
        _options = options;

        Receive<ClientSend>(Send);
        Receive<LockCompleted>(Completed);
        Receive<BlockingAst>(b =>
        {
            if (_handles.TryGetValue(b.LockId, out var handle))
            {
                handle.DeliverBast(b.BlockedMode);
            }
        });
        Receive<ListLocalLockResources>(m => ListLocal(m.Lockspace).PipeTo(Sender));
    }

    public static Props Props(IActorRef region, LockingOptions options) => Akka.Actor.Props.Create(() => new LockClientActor(region, options));

    private void Send(ClientSend send)
    {
        var handle = send.Handle;
        var slot = send.Command switch
        {
            LockRequest or ConvertLock => LockHandle.Slot.Operation,
            UnlockLock => LockHandle.Slot.Unlock,
            _ => LockHandle.Slot.Cancel,
        };
        if (!handle.TryArm(slot, send.Reply))
        {
            // One operation of a kind at a time; the resource would say Busy too.
            send.Reply.TrySetResult(Refusal(send.Command, handle, LockStatus.Busy));
            return;
        }

        if (handle.Released && send.Command is not LockRequest)
        {
            handle.Complete(slot, Refusal(send.Command, handle, LockStatus.Invalid));
            return;
        }

        _handles[handle.LockId] = handle;
        _region.Tell(send.Command, Self);
    }

    private static LockCompleted Refusal(ILockResourceCommand command, LockHandle handle, LockStatus status)
    {
        var op = command switch
        {
            LockRequest => LockOperation.Request,
            ConvertLock => LockOperation.Convert,
            UnlockLock => LockOperation.Unlock,
            _ => LockOperation.Cancel,
        };
        return new LockCompleted(handle.EntityId, handle.LockId, op, status, handle.Mode, null, 0, LockResultFlags.None);
    }

    private void Completed(LockCompleted done)
    {
        if (!_handles.TryGetValue(done.LockId, out var handle))
        {
            _log.Debug("Completion for unknown lock {0} on {1}: {2} {3}", done.LockId, done.EntityId, done.Operation, done.Status);
            return;
        }

        handle.Apply(done);
        if (handle.Released)
        {
            _handles.Remove(done.LockId);
        }
    }

    private async Task<LocalLockResources> ListLocal(string lockspace)
    {
        var prefix = lockspace + "/";
        var state = await _region.Ask<CurrentShardRegionState>(GetShardRegionState.Instance, _options.AskTimeout);
        var ids = state.Shards.SelectMany(s => s.EntityIds).Where(id => id.StartsWith(prefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        var dumps = await Task.WhenAll(ids.Select(id => _region.Ask<LockResourceDump>(new DumpLockResource(id), _options.AskTimeout)));
        var withLocks = dumps.Where(d => d.Granted.Count + d.Converting.Count + d.Waiting.Count > 0).ToList();
        return new LocalLockResources(_options.NodeId, withLocks);
    }
}
