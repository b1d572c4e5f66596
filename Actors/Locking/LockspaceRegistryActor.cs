using Akka.Actor;
using Akka.Cluster;
using Akka.DistributedData;
using Akka.Event;
using Akka.Persistence;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>
/// The lockspace registry, run as a cluster singleton so slots are handed out by one authority.
/// Its table is event-sourced in the shared journal (persistence id <see cref="Id"/>; each event is
/// the whole table after a change, so only the newest is kept), which is what lets a node id get its
/// old slot back after a whole-cluster restart. It is also replicated with DistributedData (written
/// to a majority before a new slot is confirmed): on start the journal's table is merged with what
/// the replicas know, journal entries winning.
/// </summary>
internal sealed class LockspaceRegistryActor : UntypedPersistentActor
{
    /// <summary>Persistence id of the registry in the shared journal.</summary>
    public const string Id = "lockstep-lockspace-registry";

    public static readonly LWWRegisterKey<LockspaceTable> Key = new("lockstep-lockspaces");

    private readonly LockingOptions _options;
    private readonly IActorRef _replicator;
    private readonly UniqueAddress _self;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private LockspaceRegistryState _state = LockspaceRegistryState.Empty;
    private bool _ready;

    public LockspaceRegistryActor(LockingOptions options)
    {
        _options = options;
        _replicator = DistributedData.Get(Context.System).Replicator;
        _self = Cluster.Get(Context.System).SelfUniqueAddress;
    }

    public override string PersistenceId => Id;

    public static Props Props(LockingOptions options) => Akka.Actor.Props.Create(() => new LockspaceRegistryActor(options));

    protected override void OnRecover(object message)
    {
        switch (message)
        {
            case LockspaceTable table:
                _state = new LockspaceRegistryState(table);
                break;
            case RecoveryCompleted:
                _replicator.Tell(Dsl.Get(Key, new ReadMajority(TimeSpan.FromSeconds(3))));
                break;
        }
    }

    protected override void OnCommand(object message)
    {
        switch (message)
        {
            case DeleteMessagesSuccess:
                return;
            case DeleteMessagesFailure failure:
                _log.Warning("Lockspace table: could not delete superseded journal entries: {0}", failure.Cause.Message);
                return;
        }

        if (_ready)
        {
            Serving(message);
        }
        else
        {
            Loading(message);
        }
    }

    protected override void OnPersistFailure(Exception cause, object @event, long sequenceNr)
    {
        // The actor stops; its backoff supervisor starts it again, and it recovers from the journal.
        _log.Error(cause, "Lockspace table: journal write {0} failed", sequenceNr);
        base.OnPersistFailure(cause, @event, sequenceNr);
    }

    private void Loading(object message)
    {
        switch (message)
        {
            case GetSuccess s:
                Loaded(s.Get(Key).Value);
                break;
            case NotFound:
                Loaded(null);
                break;
            case GetFailure:
                // No majority reachable: take what this replica has rather than refuse to serve.
                _log.Warning("Lockspace table: majority read failed, using the local replica");
                _replicator.Tell(Dsl.Get(Key, ReadLocal.Instance));
                break;
            default:
                Stash.Stash();
                break;
        }
    }

    private void Loaded(LockspaceTable? replicated)
    {
        _ready = true;
        var journaled = _state.Table;
        if (replicated is not null)
        {
            _state = _state.Merge(replicated);
        }

        // Slots only the replicas knew (handed out before the journal held the table) become durable too.
        if (_options.PersistSlots && !LockspaceRegistryState.SameTable(journaled, _state.Table))
        {
            Persist(_state.Table, _ => DeleteSuperseded());
        }

        Stash.UnstashAll();
    }

    private void Serving(object message)
    {
        switch (message)
        {
            case JoinLockspace join:
                var (reply, changed) = _state.Join(join.Lockspace, join.LvbLength, join.NodeId, _options.DefaultLvbLength);
                if (changed is null)
                {
                    Sender.Tell(reply);
                    return;
                }

                // Durable before it is confirmed: a slot once answered must survive any restart.
                _state = changed;
                var replyTo = Sender;
                if (!_options.PersistSlots)
                {
                    Replicate(changed.Table, new PendingReply(replyTo, reply));
                    break;
                }

                Persist(changed.Table, table =>
                {
                    DeleteSuperseded();
                    Replicate(table, new PendingReply(replyTo, reply));
                });
                break;
            case UpdateSuccess s:
                Reply(s.Request);
                break;
            case IUpdateFailure f:
                // The slot is in the journal and will reach the other replicas by gossip.
                _log.Warning("Lockspace table: majority write failed ({0}); answering from the journal", f.GetType().Name);
                Reply(f.Request);
                break;
            case ListLockspaces:
                Sender.Tell(_state.Table);
                break;
            case GetSuccess or NotFound or GetFailure:
                break;
            default:
                Unhandled(message);
                break;
        }
    }

    private void Replicate(LockspaceTable table, PendingReply pending) =>
        _replicator.Tell(Dsl.Update(Key, new LWWRegister<LockspaceTable>(_self, table), new WriteMajority(TimeSpan.FromSeconds(3)), pending, reg => reg.WithValue(_self, table)));

    // Every event is the whole table: the ones before the newest are dead weight.
    private void DeleteSuperseded()
    {
        if (LastSequenceNr > 1)
        {
            DeleteMessages(LastSequenceNr - 1);
        }
    }

    private static void Reply(object? request)
    {
        if (request is PendingReply pending)
        {
            pending.ReplyTo.Tell(pending.Reply);
        }
    }

    private sealed record PendingReply(IActorRef ReplyTo, ILockProtocol Reply);
}
