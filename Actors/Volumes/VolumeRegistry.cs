using System.Collections.Immutable;
using Akka.Actor;
using Akka.Persistence;
using Lockstep.Contracts.Volumes;

namespace Lockstep.Actors.Volumes;

/// <summary>
/// The durable set of volume names, for listing (one sharded entity in <see cref="VolumeSharding.RegistryRegion"/>,
/// persistence id <c>volume-registry</c>). A name is added before a volume's create intent is persisted and
/// removed after its delete (or abandoned create) is committed, so it is a superset of the volumes that exist;
/// readers ask each Volume entity and skip names that answer NotFound.
/// </summary>
public sealed class VolumeRegistryEntity : UntypedPersistentActor
{
    private readonly int _snapshotEvery;
    private ImmutableSortedSet<string> _names = ImmutableSortedSet.Create<string>(StringComparer.Ordinal);
    private int _eventsSinceSnapshot;

    /// <summary>Creates the registry; use <see cref="Props"/>.</summary>
    public VolumeRegistryEntity(int snapshotEvery) => _snapshotEvery = snapshotEvery;

    /// <summary>Props for the registry entity.</summary>
    public static Props Props(int snapshotEvery = 50) => Akka.Actor.Props.Create(() => new VolumeRegistryEntity(snapshotEvery));

    /// <inheritdoc />
    public override string PersistenceId => "volume-registry";

    /// <inheritdoc />
    protected override void OnRecover(object message)
    {
        switch (message)
        {
            case SnapshotOffer { Snapshot: VolumeRegistrySnapshot snapshot }:
                _names = ImmutableSortedSet.CreateRange(StringComparer.Ordinal, snapshot.Names);
                break;
            case IVolumeEvent e:
                Apply(e);
                _eventsSinceSnapshot++;
                break;
        }
    }

    /// <inheritdoc />
    protected override void OnCommand(object message)
    {
        switch (message)
        {
            case RegisterVolumeName r when _names.Contains(r.Name):
                Sender.Tell(new VolumeNameAck(r.Name));
                break;
            case RegisterVolumeName r:
                PersistAndAck(new VolumeNameRegistered(r.Name), r.Name);
                break;
            case UnregisterVolumeName u when !_names.Contains(u.Name):
                Sender.Tell(new VolumeNameAck(u.Name));
                break;
            case UnregisterVolumeName u:
                PersistAndAck(new VolumeNameUnregistered(u.Name), u.Name);
                break;
            case ListVolumeNames:
                Sender.Tell(new VolumeNames(_names.ToArray()));
                break;
            case SaveSnapshotSuccess success:
                DeleteMessages(success.Metadata.SequenceNr);
                DeleteSnapshots(new SnapshotSelectionCriteria(success.Metadata.SequenceNr - 1));
                break;
            case SaveSnapshotFailure or DeleteMessagesSuccess or DeleteMessagesFailure or DeleteSnapshotsSuccess or DeleteSnapshotsFailure:
                break;
            default:
                Unhandled(message);
                break;
        }
    }

    private void PersistAndAck(IVolumeEvent e, string name)
    {
        Persist(e, persisted =>
        {
            Apply(persisted);
            Sender.Tell(new VolumeNameAck(name));
            if (++_eventsSinceSnapshot >= _snapshotEvery)
            {
                _eventsSinceSnapshot = 0;
                SaveSnapshot(new VolumeRegistrySnapshot(_names.ToArray()));
            }
        });
    }

    private void Apply(IVolumeEvent e) => _names = e switch
    {
        VolumeNameRegistered r => _names.Add(r.Name),
        VolumeNameUnregistered u => _names.Remove(u.Name),
        _ => _names,
    };
}
