using Akka.Actor;
using Akka.Cluster;
using Akka.DistributedData;
using Akka.Event;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>
/// The lockspace registry, run as a cluster singleton so slots are handed out by one authority.
/// Its table is replicated with DistributedData (written to a majority before a new slot is
/// confirmed), so a new singleton after the oldest node dies reads the slots back.
/// </summary>
internal sealed class LockspaceRegistryActor : ReceiveActor, IWithStash
{
    public static readonly LWWRegisterKey<LockspaceTable> Key = new("lockstep-lockspaces");

    private readonly LockingOptions _options;
    private readonly IActorRef _replicator;
    private readonly UniqueAddress _self;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private LockspaceRegistryState _state = LockspaceRegistryState.Empty;

    public LockspaceRegistryActor(LockingOptions options)
    {
        _options = options;
        _replicator = DistributedData.Get(Context.System).Replicator;
        _self = Cluster.Get(Context.System).SelfUniqueAddress;
        Loading();
    }

    public IStash Stash { get; set; } = null!;

    public static Props Props(LockingOptions options) => Akka.Actor.Props.Create(() => new LockspaceRegistryActor(options));

    protected override void PreStart() =>
        _replicator.Tell(Dsl.Get(Key, new ReadMajority(TimeSpan.FromSeconds(3))));

    private void Loading()
    {
        Receive<GetSuccess>(s =>
        {
            _state = _state.Merge(s.Get(Key).Value);
            Ready();
        });
        Receive<NotFound>(_ => Ready());
        Receive<GetFailure>(_ =>
        {
            // No majority reachable: take what this replica has rather than refuse to serve.
            _log.Warning("Lockspace table: majority read failed, using the local replica");
            _replicator.Tell(Dsl.Get(Key, ReadLocal.Instance));
        });
        ReceiveAny(_ => Stash.Stash());
    }

    private void Ready()
    {
        Become(Serving);
        Stash.UnstashAll();
    }

    private void Serving()
    {
        Receive<JoinLockspace>(join =>
        {
            var (reply, changed) = _state.Join(join.Lockspace, join.LvbLength, join.NodeId, _options.DefaultLvbLength);
            if (changed is null)
            {
                Sender.Tell(reply);
                return;
            }

            _state = changed;
            var table = changed.Table;
            _replicator.Tell(Dsl.Update(Key, new LWWRegister<LockspaceTable>(_self, table), new WriteMajority(TimeSpan.FromSeconds(3)), new PendingReply(Sender, reply), reg => reg.WithValue(_self, table)));
        });
        Receive<UpdateSuccess>(s => Reply(s.Request));
        Receive<IUpdateFailure>(f =>
        {
            // The slot is ours in memory and will reach the other replicas by gossip.
            _log.Warning("Lockspace table: majority write failed ({0}); answering from memory", f.GetType().Name);
            Reply(f.Request);
        });
        Receive<ListLockspaces>(_ => Sender.Tell(_state.Table));
        Receive<GetSuccess>(_ => { });
        Receive<NotFound>(_ => { });
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
