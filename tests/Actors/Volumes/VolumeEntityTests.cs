using Akka.Actor;
using Akka.Configuration;
using Akka.Persistence;
using Lockstep.Actors.BlockIo;
using Lockstep.Actors.Serialization;
using Lockstep.Actors.Volumes;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Lockstep.Actors.Tests.Volumes;

/// <summary>Scratch folder on /var/tmp (a disk filesystem here, so O_DIRECT is real).</summary>
public sealed class VolumeScratch : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine("/var/tmp", "lockstep-tests", "vol-" + Guid.NewGuid().ToString("N"));

    public VolumeScratch() => Directory.CreateDirectory(Path);

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover scratch folder must not fail a test.
        }
    }
}

/// <summary>A provisioner whose formatting waits at a gate, to stop the entity between intent and commit.</summary>
internal sealed class GatedProvisioner(ILegProvisioner inner) : ILegProvisioner
{
    public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async Task ProvisionAsync(VolumeDescriptor descriptor, IReadOnlyList<LegDescriptor> legs, CancellationToken cancellation = default)
    {
        Entered.TrySetResult();
        await Gate.Task;
        await inner.ProvisionAsync(descriptor, legs, cancellation);
    }

    public Task<IReadOnlyList<string>> WipeAsync(VolumeDescriptor descriptor, IReadOnlyList<LegDescriptor> legs, CancellationToken cancellation = default) =>
        inner.WipeAsync(descriptor, legs, cancellation);
}

/// <summary>The Volume entity on Akka's in-memory journal with real leg files: persist, restart, snapshot, crash between intent and commit.</summary>
public sealed class VolumeEntityTests : Akka.TestKit.Xunit2.TestKit, IDisposable
{
    private const long Size = 8L << 20;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(15);
    private readonly VolumeScratch _dir = new();
    private readonly IActorRef _registry;

    public VolumeEntityTests()
        : base(ConfigurationFactory.ParseString("""
            akka.actor.serialize-messages = on
            akka.persistence.journal.plugin = "akka.persistence.journal.inmem"
            akka.persistence.snapshot-store.plugin = "akka.persistence.snapshot-store.inmem"
            """).WithFallback(SerializationConfig.Hocon))
    {
        _registry = Sys.ActorOf(VolumeRegistryEntity.Props(snapshotEvery: 3), "registry");
    }

    private IActorRef Start(string name, ILegProvisioner? provisioner = null, int snapshotEvery = 100) =>
        Sys.ActorOf(VolumeEntity.Props(name, _registry, provisioner ?? new LegProvisioner(), new VolumeEntitySettings(snapshotEvery, TimeSpan.FromSeconds(5))));

    private async Task StopAsync(IActorRef entity)
    {
        Watch(entity);
        entity.Tell(PoisonPill.Instance);
        await ExpectTerminatedAsync(entity, Wait);
    }

    private async Task<T> AskAsync<T>(IActorRef entity, IVolumeCommand command) => Assert.IsType<T>(await entity.Ask<IVolumeProtocol>(command, Wait));

    private CreateVolume Create(string name, params string[] legs) => new(name, Size, 1 << 20, 4, legs.Select(_dir.File).ToArray());

    /// <summary>AwaitAssert that says what it waited for when it times out.</summary>
    private async Task EventuallyAsync(string waitingFor, Func<Task> assertion)
    {
        try
        {
            await AwaitAssertAsync(assertion, Wait, TimeSpan.FromMilliseconds(50));
        }
        catch (Exception e)
        {
            throw new TimeoutException($"timed out {waitingFor}: {e.Message}", e);
        }
    }

    private async Task<IReadOnlyList<string>> NamesAsync() => (await _registry.Ask<VolumeNames>(ListVolumeNames.Instance, Wait)).Names;

    [Fact]
    public async Task Create_formats_every_leg_then_commits_and_registers_the_name()
    {
        var entity = Start("vol");
        var info = await AskAsync<VolumeInfo>(entity, Create("vol", "a.leg", "b.leg"));

        Assert.Equal(VolumeStatus.Active, info.Status);
        Assert.Equal(1, info.Descriptor.Generation);
        foreach (var leg in info.Descriptor.Legs)
        {
            var probe = LegProbe.Read(leg.Path, info.Descriptor.VolumeId, leg.LegId);
            Assert.True(probe.IsOk, probe.Reason);
        }

        Assert.Equal(["vol"], await NamesAsync());
    }

    [Fact]
    public async Task A_restart_brings_the_committed_metadata_back()
    {
        var entity = Start("vol");
        var created = await AskAsync<VolumeInfo>(entity, Create("vol", "a.leg", "b.leg"));
        var failed = await AskAsync<VolumeInfo>(entity, new FailLeg("vol", created.Descriptor.Legs[1].LegId, "replacing the disk"));
        await StopAsync(entity);

        var again = await AskAsync<VolumeInfo>(Start("vol"), new GetVolume("vol"));

        Assert.Equal(failed.Descriptor with { Legs = [] }, again.Descriptor with { Legs = [] });
        Assert.Equal(failed.Descriptor.Legs, again.Descriptor.Legs);
        Assert.Equal(LegState.Failed, again.Descriptor.Legs[1].State);
        Assert.Equal(2, again.Descriptor.Generation);
    }

    [Fact]
    public async Task Snapshots_are_taken_every_n_events_and_recovery_uses_them()
    {
        var entity = Start("snap", snapshotEvery: 2);
        var created = await AskAsync<VolumeInfo>(entity, Create("snap", "a.leg", "b.leg", "c.leg"));
        await AskAsync<VolumeInfo>(entity, new FailLeg("snap", created.Descriptor.Legs[2].LegId, "x"));
        var last = await AskAsync<VolumeInfo>(entity, new RemoveLeg("snap", created.Descriptor.Legs[2].LegId));

        var store = Akka.Persistence.Persistence.Instance.Apply(Sys).SnapshotStoreFor(null);
        await EventuallyAsync("waiting for the snapshot taken after the 4th event", async () =>
        {
            var loaded = await store.Ask<LoadSnapshotResult>(new LoadSnapshot(VolumeEntity.PersistenceIdFor("snap"), SnapshotSelectionCriteria.Latest, long.MaxValue), Wait);
            var snapshot = Assert.IsType<VolumeSnapshotWithCache>(loaded.Snapshot?.Snapshot).Core;
            Assert.Equal(2, snapshot.Descriptor!.Legs.Count);
        });

        await StopAsync(entity);
        var again = await AskAsync<VolumeInfo>(Start("snap", snapshotEvery: 2), new GetVolume("snap"));
        Assert.Equal(last.Descriptor.Generation, again.Descriptor.Generation);
        Assert.Equal(last.Descriptor.Legs, again.Descriptor.Legs);
    }

    [Fact]
    public async Task The_cache_mode_survives_restarts_with_and_without_a_snapshot()
    {
        var entity = Start("wb", snapshotEvery: 100);
        var created = await AskAsync<VolumeInfo>(entity, Create("wb", "a.leg", "b.leg") with { Cache = VolumeCacheMode.Writeback });
        Assert.Equal(VolumeCacheMode.Writeback, created.Cache);
        await StopAsync(entity);

        entity = Start("wb", snapshotEvery: 1);
        Assert.Equal(VolumeCacheMode.Writeback, (await AskAsync<VolumeInfo>(entity, new GetVolume("wb"))).Cache);
        var changed = await AskAsync<VolumeInfo>(entity, new SetVolumeCacheMode("wb", VolumeCacheMode.Direct));
        Assert.Equal(VolumeCacheMode.Direct, changed.Cache);
        Assert.Equal(created.Descriptor.Generation + 1, changed.Descriptor.Generation);
        var store = Akka.Persistence.Persistence.Instance.Apply(Sys).SnapshotStoreFor(null);
        await EventuallyAsync("waiting for the snapshot taken after the cache change", async () =>
        {
            var loaded = await store.Ask<LoadSnapshotResult>(new LoadSnapshot(VolumeEntity.PersistenceIdFor("wb"), SnapshotSelectionCriteria.Latest, long.MaxValue), Wait);
            Assert.Equal(VolumeCacheMode.Direct, Assert.IsType<VolumeSnapshotWithCache>(loaded.Snapshot?.Snapshot).Cache);
        });
        await StopAsync(entity);

        var again = await AskAsync<VolumeInfo>(Start("wb", snapshotEvery: 1), new GetVolume("wb"));
        Assert.Equal(VolumeCacheMode.Direct, again.Cache);
        Assert.Equal(changed.Descriptor.Generation, again.Descriptor.Generation);
    }

    [Fact]
    public async Task A_journal_and_a_snapshot_written_before_cache_modes_load_as_direct()
    {
        var id = Guid.NewGuid();
        var legs = new[] { new LegDescriptor(Guid.NewGuid(), _dir.File("old-a.leg"), LegState.InSync) };
        var geometry = new VolumeGeometry(Size, 1 << 20, 4);
        // What an older node persisted: the intent and the commit, no cache event.
        var writer = Sys.ActorOf(Props.Create(() => new OldVersionWriter(VolumeEntity.PersistenceIdFor("old"),
            new IVolumeEvent[] { new VolumeCreationStarted("old", id, geometry, legs), new VolumeCreated(id) }, null)));
        await writer.Ask<string>("write", Wait);
        await StopAsync(writer);

        var fromJournal = await AskAsync<VolumeInfo>(Start("old"), new GetVolume("old"));
        Assert.Equal(VolumeStatus.Active, fromJournal.Status);
        Assert.Equal(VolumeCacheMode.Direct, fromJournal.Cache);

        // And an old snapshot type on its own.
        var descriptor = new VolumeDescriptor("olds", Guid.NewGuid(), geometry, legs, 7);
        var snapshotWriter = Sys.ActorOf(Props.Create(() => new OldVersionWriter(VolumeEntity.PersistenceIdFor("olds"), Array.Empty<IVolumeEvent>(),
            new VolumeSnapshot(VolumeStatus.Active, descriptor, 7, null))));
        await snapshotWriter.Ask<string>("write", Wait);
        await StopAsync(snapshotWriter);

        var fromSnapshot = await AskAsync<VolumeInfo>(Start("olds"), new GetVolume("olds"));
        Assert.Equal(VolumeCacheMode.Direct, fromSnapshot.Cache);
        Assert.Equal(7, fromSnapshot.Descriptor.Generation);
    }

    /// <summary>Persists events (and a snapshot) under a persistence id as an older version of the entity would have.</summary>
    private sealed class OldVersionWriter : ReceivePersistentActor
    {
        public OldVersionWriter(string persistenceId, IVolumeEvent[] events, VolumeSnapshot? snapshot)
        {
            PersistenceId = persistenceId;
            Command<string>(_ =>
            {
                var replyTo = Sender;
                if (snapshot is not null)
                {
                    SaveSnapshot(snapshot);
                    Become(() => Command<SaveSnapshotSuccess>(_ => replyTo.Tell("done")));
                    return;
                }

                var left = events.Length;
                PersistAll(events, _ =>
                {
                    if (--left == 0)
                    {
                        replyTo.Tell("done");
                    }
                });
            });
        }

        public override string PersistenceId { get; }
    }

    [Fact]
    public async Task A_crash_between_intent_and_commit_is_finished_on_restart()
    {
        var gated = new GatedProvisioner(new LegProvisioner());
        var entity = Start("crash", gated);
        _ = entity.Ask<IVolumeProtocol>(Create("crash", "a.leg", "b.leg"), Wait);
        await gated.Entered.Task.WaitAsync(Wait);

        // The intent is persisted and the name registered; no leg is formatted yet. The entity dies here.
        var during = await AskAsync<VolumeInfo>(entity, new GetVolume("crash"));
        Assert.Equal(VolumeStatus.Creating, during.Status);
        Assert.Equal(["crash"], await NamesAsync());
        Assert.Equal(LegProbeStatus.Missing, LegProbe.Read(_dir.File("a.leg")).Status);
        await StopAsync(entity);

        var restarted = Start("crash");
        await EventuallyAsync("waiting for the restarted entity to finish the create it found in its journal", async () =>
        {
            var info = await AskAsync<VolumeInfo>(restarted, new GetVolume("crash"));
            Assert.Equal(VolumeStatus.Active, info.Status);
        });

        var volume = await AskAsync<VolumeInfo>(restarted, new GetVolume("crash"));
        Assert.Equal(during.Descriptor.VolumeId, volume.Descriptor.VolumeId);
        Assert.All(volume.Descriptor.Legs, l => Assert.True(LegProbe.Read(l.Path, volume.Descriptor.VolumeId, l.LegId).IsOk));
        gated.Gate.TrySetResult();
    }

    [Fact]
    public async Task A_leg_that_cannot_be_formatted_abandons_the_create_and_cleans_up()
    {
        var entity = Start("bad");
        var rejected = await AskAsync<VolumeRejected>(entity, new CreateVolume("bad", Size, 1 << 20, 4, [_dir.File("a.leg"), _dir.File("no-such-dir/b.leg")]));

        Assert.Equal(VolumeError.Failed, rejected.Error);
        Assert.Contains("no-such-dir", rejected.Reason);
        Assert.Contains("does not exist", rejected.Reason);
        Assert.Equal(VolumeError.NotFound, (await AskAsync<VolumeRejected>(entity, new GetVolume("bad"))).Error);
        // The first leg was formatted before the second failed: its superblock is gone again, so the path is reusable.
        Assert.Equal(LegProbeStatus.Blank, LegProbe.Read(_dir.File("a.leg")).Status);
        await EventuallyAsync("waiting for the abandoned name to leave the registry", async () => Assert.Empty(await NamesAsync()));

        var retry = await AskAsync<VolumeInfo>(entity, Create("bad", "a.leg", "b.leg"));
        Assert.Equal(VolumeStatus.Active, retry.Status);
    }

    [Fact]
    public async Task A_leg_of_another_volume_is_refused_with_its_name()
    {
        await AskAsync<VolumeInfo>(Start("first"), Create("first", "a.leg"));
        var rejected = await AskAsync<VolumeRejected>(Start("second"), Create("second", "b.leg", "a.leg"));
        Assert.Equal(VolumeError.Failed, rejected.Error);
        Assert.Contains("first", rejected.Reason);
        Assert.Equal(LegProbeStatus.Blank, LegProbe.Read(_dir.File("b.leg")).Status);
    }

    [Fact]
    public async Task Delete_wipes_the_superblocks_and_frees_the_name()
    {
        var entity = Start("gone");
        var created = await AskAsync<VolumeInfo>(entity, Create("gone", "a.leg", "b.leg"));
        var deleted = await AskAsync<VolumeInfo>(entity, new DeleteVolume("gone"));

        Assert.Equal(VolumeStatus.Absent, deleted.Status);
        Assert.Null(deleted.Pending);
        Assert.All(created.Descriptor.Legs, l => Assert.Equal(LegProbeStatus.Blank, LegProbe.Read(l.Path).Status));
        await EventuallyAsync("waiting for the deleted name to leave the registry", async () => Assert.Empty(await NamesAsync()));

        await StopAsync(entity);
        var restarted = Start("gone");
        Assert.Equal(VolumeError.NotFound, (await AskAsync<VolumeRejected>(restarted, new GetVolume("gone"))).Error);
        var recreated = await AskAsync<VolumeInfo>(restarted, Create("gone", "a.leg", "b.leg"));
        Assert.NotEqual(created.Descriptor.VolumeId, recreated.Descriptor.VolumeId);
        Assert.True(recreated.Descriptor.Generation > deleted.Descriptor.Generation);
    }

    [Fact]
    public async Task An_added_leg_is_copied_and_then_identical()
    {
        var entity = Start("grow");
        var created = await AskAsync<VolumeInfo>(entity, Create("grow", "a.leg"));
        var pattern = new byte[1 << 20];
        new Random(7).NextBytes(pattern);
        await using (var volume = await MirrorVolume.OpenAsync(created.Descriptor, 0, NoVolumeEvents.Instance, NullLogger.Instance))
        {
            await volume.WriteAsync(3L << 20, pattern, forceUnitAccess: true);
        }

        var added = await AskAsync<VolumeInfo>(entity, new AddLeg("grow", _dir.File("c.leg")));
        var newLeg = added.Descriptor.Legs[1];
        Assert.Equal(LegState.Resyncing, newLeg.State);

        var report = await LegCopier.CopyAsync(added.Descriptor, added.Descriptor.Legs[0], newLeg, NullLogger.Instance);
        Assert.True(report.BytesCopied >= pattern.Length);
        var synced = await AskAsync<VolumeInfo>(entity, new MarkLegResynced("grow", newLeg.LegId, added.Descriptor.Generation));
        Assert.All(synced.Descriptor.Legs, l => Assert.Equal(LegState.InSync, l.State));

        var verify = await VolumeVerifier.VerifyAsync(synced.Descriptor);
        Assert.True(verify.Identical, string.Join("; ", verify.Problems));
        await using var reopened = await MirrorVolume.OpenAsync(synced.Descriptor, 0, NoVolumeEvents.Instance, NullLogger.Instance);
        Assert.Equal(2, reopened.ActiveLegs.Count);
    }

    [Fact]
    public async Task The_registry_survives_a_restart_including_its_snapshot()
    {
        foreach (var name in new[] { "r1", "r2", "r3", "r4" })
        {
            await _registry.Ask<VolumeNameAck>(new RegisterVolumeName(name), Wait);
        }

        await _registry.Ask<VolumeNameAck>(new UnregisterVolumeName("r2"), Wait);
        await StopAsync(_registry);
        var again = Sys.ActorOf(VolumeRegistryEntity.Props(snapshotEvery: 3));
        Assert.Equal(["r1", "r3", "r4"], (await again.Ask<VolumeNames>(ListVolumeNames.Instance, Wait)).Names);
    }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        _dir.Dispose();
    }
}
