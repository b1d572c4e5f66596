using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Persistence;
using Lockstep.Contracts;
using Lockstep.Contracts.Broadcast;

namespace Lockstep.Actors.Broadcast;

/// <summary>
/// The durable store of one stream's payloads that do not fit a round (sharded in region
/// <see cref="RegionName"/>, entity id = stream, event-sourced in the node's journal). A sender stores a payload here
/// and waits for the journal before it publishes the round that refers to it, so every receiver — also one that
/// reads the round after the sender died — finds it. Only the newest <see cref="Kept"/> payloads are kept: a payload
/// is needed until its round completed everywhere, and a stream has at most a few rounds in flight.
/// </summary>
internal sealed class BroadcastPayloadEntity : ReceivePersistentActor
{
    public const string RegionName = "broadcast-payload";

    /// <summary>Payloads kept per stream (and events left in the journal before older ones are deleted).</summary>
    public const int Kept = 256;

    private readonly string _stream;
    private readonly Dictionary<Guid, byte[]> _payloads = [];
    private readonly Queue<Guid> _order = new();

    public BroadcastPayloadEntity(string stream)
    {
        _stream = stream;
        Recover<BroadcastPayloadRecorded>(Apply);
        Command<StoreBroadcastPayload>(store =>
        {
            if (_payloads.ContainsKey(store.Key))
            {
                Sender.Tell(new BroadcastPayloadStored(store.Key));
                return;
            }

            Persist(new BroadcastPayloadRecorded(store.Key, store.Body), recorded =>
            {
                Apply(recorded);
                Sender.Tell(new BroadcastPayloadStored(recorded.Key));
                if (LastSequenceNr > Kept * 2 && LastSequenceNr % Kept == 0)
                {
                    // Events older than the kept window name payloads whose rounds completed long ago.
                    DeleteMessages(LastSequenceNr - Kept);
                }
            });
        });
        Command<GetBroadcastPayload>(get => Sender.Tell(new BroadcastPayload(get.Key, _payloads.GetValueOrDefault(get.Key))));
        Command<DeleteMessagesSuccess>(_ => { });
        Command<DeleteMessagesFailure>(_ => { });
    }

    public override string PersistenceId => "broadcast-payload-" + _stream;

    public static Props Props(string stream) => Akka.Actor.Props.Create(() => new BroadcastPayloadEntity(stream));

    /// <summary>Starts the region on this node (every node runs it).</summary>
    public static IActorRef StartRegion(ActorSystem system) =>
        ClusterSharding.Get(system).Start(RegionName, Props, ClusterShardingSettings.Create(system), new Extractor());

    private void Apply(BroadcastPayloadRecorded recorded)
    {
        _payloads[recorded.Key] = recorded.Body;
        _order.Enqueue(recorded.Key);
        while (_order.Count > Kept)
        {
            _payloads.Remove(_order.Dequeue());
        }
    }

    /// <summary>16 shards: payload streams are few and their traffic is light.</summary>
    private sealed class Extractor() : HashCodeMessageExtractor(16)
    {
        public override string? EntityId(object message) => (message as IWithEntityId)?.EntityId;
    }
}
