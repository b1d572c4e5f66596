using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using Lockstep.Contracts;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// Hosts the holders of node-pinned channels (<see cref="PinnedEntityType"/>) on this node: one child
/// <see cref="MessageHolderActor"/> per channel, created by the first envelope, addressed by path
/// (<c>/user/lockstep-pinned-holders</c>) rather than through sharding. A plain actor and not a sharded region with
/// a pinning allocation strategy: the holder must live exactly where its handler's targets are, for as long as that
/// node incarnation lives, and never move; sharding would add a coordinator round trip to a channel's first message,
/// and re-allocate the shard to another node when this one is removed — where the handler would have nothing to
/// deliver to. Holders die only with their node (or when the channel's sender is removed: <see cref="ClusterEvent.MemberRemoved"/>
/// stops them, the recover_slot purge).
/// </summary>
internal sealed class PinnedHolderHost : ReceiveActor
{
    /// <summary>Name under <c>/user</c>.</summary>
    public const string Name = "lockstep-pinned-holders";

    private readonly Func<string, Props> _holderProps;
    private readonly long _selfUid;
    private readonly ILoggingAdapter _log = Context.GetLogger();

    public PinnedHolderHost(Func<string, Props> holderProps)
    {
        _holderProps = holderProps;
        _selfUid = Cluster.Get(Context.System).SelfUniqueAddress.Uid;
        Receive<PurgeChannel>(p =>
        {
            if (Context.Child(ChildName(p.ChannelId)) is { } child && !child.IsNobody())
            {
                child.Forward(p);
            }
            else
            {
                Sender.Tell(new ChannelPurged(p.ChannelId, 0));
            }
        });
        Receive<ClusterEvent.MemberRemoved>(removed =>
        {
            foreach (var child in Context.GetChildren())
            {
                var channel = Uri.UnescapeDataString(child.Path.Name);
                if (MessagingChannel.TryParse(channel, out _, out _, out var senderUid) && senderUid == removed.Member.UniqueAddress.Uid)
                {
                    Context.Stop(child);
                }
            }
        });
        Receive<ClusterEvent.IMemberEvent>(_ => { });
        Receive<IWithEntityId>(m => HolderOf(m.EntityId)?.Forward(m));
    }

    protected override void PreStart() =>
        Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.MemberRemoved));

    protected override void PostStop() => Cluster.Get(Context.System).Unsubscribe(Self);

    private static string ChildName(string channelId) => Uri.EscapeDataString(channelId);

    private IActorRef? HolderOf(string channelId)
    {
        if (!MessagingChannel.TryParse(channelId, out var entityType, out _, out _) || !PinnedEntityType.IsPinnedTo(entityType, _selfUid))
        {
            // Meant for another incarnation of this address (a restarted node): its senders fail those calls when they
            // see that incarnation removed.
            _log.Warning("Dropping an envelope of channel {0}: not pinned to this node incarnation ({1})", channelId, _selfUid);
            return null;
        }

        var name = ChildName(channelId);
        var child = Context.Child(name);
        return child.IsNobody() ? Context.ActorOf(_holderProps(channelId), name) : child;
    }
}
