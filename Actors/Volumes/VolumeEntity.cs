using Akka.Actor;
using Akka.Event;
using Akka.Persistence;
using Lockstep.Contracts.Volumes;

namespace Lockstep.Actors.Volumes;

/// <summary>Tuning of the Volume entity.</summary>
/// <param name="SnapshotEvery">Take a snapshot after this many events (and delete the events it covers).</param>
/// <param name="RegistryTimeout">How long a create waits for the name registry before it gives up.</param>
public sealed record VolumeEntitySettings(int SnapshotEvery, TimeSpan RegistryTimeout)
{
    /// <summary>Volume metadata changes are rare; 20 events replay in well under a millisecond.</summary>
    public static VolumeEntitySettings Default { get; } = new(20, TimeSpan.FromSeconds(10));
}

/// <summary>
/// The event-sourced owner of one volume's committed metadata (sharded in region <see cref="VolumeSharding.VolumeRegion"/>,
/// entity id = volume name, persistence id <c>volume-{name}</c>). Thin: <see cref="VolumeState"/> decides; this actor
/// registers the name, persists, replies, and runs the disk work of an intent through <see cref="ILegProvisioner"/>.
/// After a restart an unfinished intent (creating, adding a leg, deleting) is run again, so every crash point ends
/// in a committed state: see docs/volumes.md.
/// </summary>
public sealed class VolumeEntity : UntypedPersistentActor, IWithStash
{
    private readonly string _name;
    private readonly IActorRef _registry;
    private readonly ILegProvisioner _provisioner;
    private readonly VolumeEntitySettings _settings;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private VolumeState _state;
    private IActorRef _waiting = ActorRefs.Nobody;
    private int _eventsSinceSnapshot;

    /// <summary>Creates the entity; use <see cref="Props"/>.</summary>
    public VolumeEntity(string name, IActorRef registry, ILegProvisioner provisioner, VolumeEntitySettings settings)
    {
        _name = name;
        _registry = registry;
        _provisioner = provisioner;
        _settings = settings;
        _state = VolumeState.Empty(name);
    }

    /// <summary>Props for the entity of volume <paramref name="name"/>.</summary>
    public static Props Props(string name, IActorRef registry, ILegProvisioner provisioner, VolumeEntitySettings? settings = null) =>
        Akka.Actor.Props.Create(() => new VolumeEntity(name, registry, provisioner, settings ?? VolumeEntitySettings.Default));

    /// <summary>The journal stream of volume <paramref name="name"/>.</summary>
    public static string PersistenceIdFor(string name) => "volume-" + name;

    /// <inheritdoc />
    public override string PersistenceId => PersistenceIdFor(_name);

    /// <inheritdoc />
    protected override void OnRecover(object message)
    {
        switch (message)
        {
            case SnapshotOffer { Snapshot: VolumeSnapshot snapshot }:
                _state = VolumeState.FromSnapshot(_name, snapshot);
                break;
            case SnapshotOffer { Snapshot: VolumeSnapshotWithCache snapshot }:
                _state = VolumeState.FromSnapshot(_name, snapshot);
                break;
            case IVolumeEvent e:
                _state = _state.Apply(e);
                _eventsSinceSnapshot++;
                break;
            case RecoveryCompleted:
                if (_state.UnfinishedWork() is { } work)
                {
                    _log.Warning("Volume {0}: resuming unfinished {1} after a restart", _name, work.GetType().Name);
                    StartWork(work);
                }

                break;
        }
    }

    /// <inheritdoc />
    protected override void OnCommand(object message)
    {
        switch (message)
        {
            case LegsProvisioned or LegsWiped:
                // The answer of our own disk work goes to whoever waits for it (nobody after a restart).
                var waiting = _waiting;
                _waiting = ActorRefs.Nobody;
                Decide((IVolumeCommand)message, waiting);
                break;
            case IVolumeCommand command:
                Decide(command, Sender);
                break;
            case SaveSnapshotSuccess success:
                // The snapshot holds everything: older events and snapshots are no longer needed for recovery.
                DeleteMessages(success.Metadata.SequenceNr);
                DeleteSnapshots(new SnapshotSelectionCriteria(success.Metadata.SequenceNr - 1));
                break;
            case SaveSnapshotFailure failure:
                _log.Warning("Volume {0}: snapshot failed, recovery replays more events: {1}", _name, failure.Cause.Message);
                break;
            case DeleteMessagesSuccess or DeleteSnapshotsSuccess:
                break;
            case DeleteMessagesFailure failure:
                _log.Warning("Volume {0}: deleting old events failed: {1}", _name, failure.Cause.Message);
                break;
            case DeleteSnapshotsFailure failure:
                _log.Warning("Volume {0}: deleting old snapshots failed: {1}", _name, failure.Cause.Message);
                break;
            default:
                Unhandled(message);
                break;
        }
    }

    private void Decide(IVolumeCommand command, IActorRef replyTo)
    {
        var decision = _state.Handle(command, Guid.NewGuid);
        if (decision.Events.Count == 0)
        {
            if (decision.Reply is not null)
            {
                replyTo.Tell(decision.Reply);
            }

            return;
        }

        if (!decision.RegisterNameFirst)
        {
            Commit(decision, replyTo);
            return;
        }

        // The name goes into the registry before the intent is persisted, so `volume list` can never miss a volume
        // that exists; a name whose intent never landed shows as not found and is dropped by the reader.
        _registry.Ask<VolumeNameAck>(new RegisterVolumeName(_name), _settings.RegistryTimeout)
            .PipeTo(Self, success: _ => new NameRegistered(decision, replyTo), failure: e => new NameNotRegistered(replyTo, e.GetBaseException().Message));
        BecomeStacked(AwaitingRegistry);
    }

    private void AwaitingRegistry(object message)
    {
        switch (message)
        {
            case NameRegistered registered:
                UnbecomeStacked();
                Stash.UnstashAll();
                Commit(registered.Decision, registered.ReplyTo);
                break;
            case NameNotRegistered failed:
                UnbecomeStacked();
                Stash.UnstashAll();
                failed.ReplyTo.Tell(new VolumeRejected(_name, VolumeError.Failed, $"the volume registry did not answer: {failed.Reason}"));
                break;
            default:
                Stash.Stash();
                break;
        }
    }

    private void Commit(VolumeDecision decision, IActorRef replyTo)
    {
        var remaining = decision.Events.Count;
        PersistAll(decision.Events, persisted =>
        {
            _eventsSinceSnapshot++;
            if (--remaining > 0)
            {
                return;
            }

            _state = decision.State;
            if (decision.Reply is not null)
            {
                replyTo.Tell(decision.Reply);
            }

            if (decision.Work is not null)
            {
                _waiting = replyTo;
                StartWork(decision.Work);
            }

            if (decision.UnregisterNameAfter)
            {
                // Fire and forget: a stale name is harmless (the reader sees the volume absent and drops it).
                _registry.Tell(new UnregisterVolumeName(_name));
            }

            if (decision.Cleanup is WipeLegs cleanup)
            {
                var name = _name;
                var log = _log;
                _ = _provisioner.WipeAsync(cleanup.Descriptor, cleanup.Legs).ContinueWith(t =>
                {
                    foreach (var problem in t.IsCompletedSuccessfully ? t.Result : [t.Exception?.GetBaseException().Message ?? "cancelled"])
                    {
                        log.Warning("Volume {0}: removed leg not wiped: {1}", name, problem);
                    }
                }, TaskScheduler.Default);
            }

            if (_eventsSinceSnapshot >= _settings.SnapshotEvery)
            {
                _eventsSinceSnapshot = 0;
                SaveSnapshot(_state.ToSnapshot());
            }
        });
    }

    private void StartWork(VolumeWork work)
    {
        var name = _name;
        var provisioner = _provisioner;
        switch (work)
        {
            case ProvisionLegs p:
                Task.Run(async () =>
                {
                    try
                    {
                        await provisioner.ProvisionAsync(p.Descriptor, p.Legs).ConfigureAwait(false);
                        return new LegsProvisioned(name, p.OperationId, null);
                    }
                    catch (Exception e)
                    {
                        return new LegsProvisioned(name, p.OperationId, e.GetBaseException().Message);
                    }
                }).PipeTo(Self);
                break;
            case WipeLegs w:
                Task.Run(async () =>
                {
                    try
                    {
                        return new LegsWiped(name, w.Descriptor.VolumeId, await provisioner.WipeAsync(w.Descriptor, w.Legs).ConfigureAwait(false));
                    }
                    catch (Exception e)
                    {
                        return new LegsWiped(name, w.Descriptor.VolumeId, [e.GetBaseException().Message]);
                    }
                }).PipeTo(Self);
                break;
        }
    }

    private sealed record NameRegistered(VolumeDecision Decision, IActorRef ReplyTo) : INoSerializationVerificationNeeded;

    private sealed record NameNotRegistered(IActorRef ReplyTo, string Reason) : INoSerializationVerificationNeeded;
}
