using System.Security.Cryptography;
using System.Text;
using Akka.Actor;
using Akka.Persistence;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// The persisted Message Holder of one channel (control-plane commands), region
/// <c>message-holder-persistent</c>. A handler's start and its status are journaled before they take effect,
/// so after a crash the new incarnation answers every completed request from the journal and re-runs only
/// a handler that was running at the crash instant (flagged <see cref="HandlerContext.PossiblyRepeated"/>).
/// Its incarnation id is derived from the channel, so the sender never sees it change.
/// </summary>
internal sealed class PersistentMessageHolderActor : ReceivePersistentActor
{
    private readonly HolderRuntime _runtime;
    private readonly MessageHolderState<IActorRef> _state;
    private int _eventsSinceSnapshot;

    public PersistentMessageHolderActor(HolderRuntime runtime)
    {
        _runtime = runtime;
        PersistenceId = "message-holder/" + runtime.ChannelId;
        _state = new MessageHolderState<IActorRef>(runtime.Options.HolderCap, StableIncarnation(runtime.ChannelId));

        Recover<SnapshotOffer>(offer => _state.ApplySnapshot((HolderSnapshot)offer.Snapshot));
        Recover<HolderRunStarted>(e => _state.ApplyStarted(e.Seq, e.TargetId, e.Payload));
        Recover<HolderRunCompleted>(e => _state.ApplyCompleted(e.Seq, e.Status));
        Recover<HolderEntryDropped>(e => _state.ApplyDropped(e.Seq));
        Recover<HolderChannelPurged>(_ => _state.ApplyPurged());
        Recover<RecoveryCompleted>(_ => Execute(_state.ResumeAfterRecovery()));

        Command<HolderDeliver>(OnDeliver);
        Command<HandlerDone>(d =>
        {
            var effects = _state.Completed(d.Seq, d.Status);
            Persist(new HolderRunCompleted(d.Seq, d.Status), _ =>
            {
                Execute(effects);
                Journaled(1);
            });
        });
        Command<HolderDrop>(OnDrop);
        Command<HolderBatch>(batch =>
        {
            foreach (var deliver in batch.Delivers)
            {
                OnDeliver(deliver);
            }

            foreach (var drop in batch.Drops)
            {
                OnDrop(drop);
            }
        });
        Command<FlushReplies>(_ => _runtime.Flush(Self));
        Command<PurgeChannel>(p =>
        {
            var replyTo = Sender;
            var dropped = _state.Purge();
            Persist(new HolderChannelPurged(dropped), _ => replyTo.Tell(new ChannelPurged(p.ChannelId, dropped)));
        });
        Command<HolderHandOffStop>(_ => Execute(_state.BeginHandOver(handOverToSender: false)));
        Command<GetHolderStats>(_ => Sender.Tell(new HolderStats(_runtime.ChannelId, _state.Incarnation, _state.Count, _state.Cap, _state.NextToRun, _state.Runs, _state.Rejections)));
        Command<SaveSnapshotSuccess>(s => DeleteMessages(s.Metadata.SequenceNr));
        Command<SaveSnapshotFailure>(_ => { });
        Command<DeleteMessagesSuccess>(_ => { });
        Command<DeleteMessagesFailure>(_ => { });
    }

    public override string PersistenceId { get; }

    protected override void PostStop()
    {
        _runtime.Flush(Self);
        _runtime.Stopped();
        base.PostStop();
    }

    private void OnDeliver(HolderDeliver d)
    {
        var effects = _state.Lookup(d, Sender, _runtime.HandlerAvailable);
        var started = effects.OfType<HolderRun<IActorRef>>().Select(r => new HolderRunStarted(r.Seq, r.TargetId, r.Payload)).ToArray();
        if (started.Length == 0)
        {
            Execute(effects);
            return;
        }

        var written = 0;
        PersistAll(started, _ =>
        {
            if (++written == started.Length)
            {
                Execute(effects);
                Journaled(started.Length);
            }
        });
    }

    private void OnDrop(HolderDrop d)
    {
        var before = _state.Count;
        var effects = _state.Drop(d.Seq, Sender);
        if (_state.Count == before)
        {
            Execute(effects);
            return;
        }

        Persist(new HolderEntryDropped(d.Seq), _ =>
        {
            Execute(effects);
            Journaled(1);
        });
    }

    /// <summary>The same id for every incarnation of a channel: the journal makes them one holder.</summary>
    internal static Guid StableIncarnation(string channelId) =>
        new(MD5.HashData(Encoding.UTF8.GetBytes("persisted-holder:" + channelId)));

    private void Execute(IReadOnlyList<HolderEffect<IActorRef>> effects) =>
        HolderEffects.Apply(_runtime, _state, effects, Self, _ => { });

    private void Journaled(int events)
    {
        _eventsSinceSnapshot += events;
        if (_eventsSinceSnapshot >= _runtime.Options.SnapshotEvery)
        {
            _eventsSinceSnapshot = 0;
            SaveSnapshot(_state.ToSnapshot());
        }
    }
}
