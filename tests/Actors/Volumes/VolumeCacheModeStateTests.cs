using Lockstep.Actors.Volumes;
using Lockstep.Contracts.Volumes;
using Xunit;

namespace Lockstep.Actors.Tests.Volumes;

/// <summary>The cache mode in the volume metadata: chosen at create, changed later, read as direct from old journals.</summary>
public sealed class VolumeCacheModeStateTests
{
    private int _ids;

    private Guid NewId() => new($"00000000-0000-0000-0000-{++_ids:D12}");

    private static CreateVolume Create(VolumeCacheMode cache) => new("vol", 1L << 30, 1 << 20, 8, ["/legs/a", "/legs/b"], cache);

    private (VolumeState State, VolumeDecision Decision) Run(VolumeState state, IVolumeCommand command)
    {
        var decision = state.Handle(command, NewId);
        var replayed = decision.Events.Aggregate(state, (s, e) => s.Apply(e));
        Assert.Equal(decision.State, replayed);
        return (decision.State, decision);
    }

    private VolumeState Active(VolumeCacheMode cache)
    {
        var (creating, decision) = Run(VolumeState.Empty("vol"), Create(cache));
        return Run(creating, new LegsProvisioned("vol", ((ProvisionLegs)decision.Work!).OperationId, null)).State;
    }

    [Fact]
    public void A_direct_volume_persists_only_the_intent_so_its_journal_is_what_older_versions_wrote()
    {
        var (_, decision) = Run(VolumeState.Empty("vol"), Create(VolumeCacheMode.Direct));

        Assert.IsType<VolumeCreationStarted>(Assert.Single(decision.Events));
        var info = Assert.IsType<VolumeInfo>(Active(VolumeCacheMode.Direct).Info());
        Assert.Equal(VolumeCacheMode.Direct, info.Cache);
    }

    [Fact]
    public void A_writeback_volume_records_its_mode_in_the_same_batch_as_the_intent_without_a_generation()
    {
        var (creating, decision) = Run(VolumeState.Empty("vol"), Create(VolumeCacheMode.Writeback));

        Assert.Collection(decision.Events,
            e => Assert.IsType<VolumeCreationStarted>(e),
            e => Assert.Equal(new VolumeCacheModeChanged(VolumeCacheMode.Writeback), e));
        Assert.Equal(VolumeCacheMode.Writeback, creating.Cache);
        Assert.Equal(0, creating.Generation);

        var active = Active(VolumeCacheMode.Writeback);
        Assert.Equal(1, active.Generation);
        Assert.Equal(VolumeCacheMode.Writeback, Assert.IsType<VolumeInfo>(active.Info()).Cache);
    }

    [Fact]
    public void An_old_journal_without_a_cache_event_replays_as_direct()
    {
        var id = Guid.NewGuid();
        IVolumeEvent[] journal =
        [
            new VolumeCreationStarted("vol", id, new VolumeGeometry(1L << 30, 1 << 20, 8), [new LegDescriptor(Guid.NewGuid(), "/legs/a", LegState.InSync)]),
            new VolumeCreated(id),
        ];

        var state = journal.Aggregate(VolumeState.Empty("vol"), (s, e) => s.Apply(e));

        Assert.Equal(VolumeStatus.Active, state.Status);
        Assert.Equal(VolumeCacheMode.Direct, state.Cache);
    }

    [Fact]
    public void Set_changes_the_mode_as_a_commit_and_the_same_mode_is_a_no_op()
    {
        var active = Active(VolumeCacheMode.Direct);

        var (changed, decision) = Run(active, new SetVolumeCacheMode("vol", VolumeCacheMode.Writeback));
        Assert.Equal(new VolumeCacheModeChanged(VolumeCacheMode.Writeback), Assert.Single(decision.Events));
        Assert.Equal(active.Generation + 1, changed.Generation);
        Assert.Equal(VolumeCacheMode.Writeback, Assert.IsType<VolumeInfo>(decision.Reply).Cache);

        var (same, again) = Run(changed, new SetVolumeCacheMode("vol", VolumeCacheMode.Writeback));
        Assert.Empty(again.Events);
        Assert.Equal(changed, same);

        var (back, _) = Run(changed, new SetVolumeCacheMode("vol", VolumeCacheMode.Direct));
        Assert.Equal(VolumeCacheMode.Direct, back.Cache);
    }

    [Fact]
    public void Unknown_modes_and_volumes_that_are_absent_or_busy_are_refused()
    {
        var invalid = VolumeState.Empty("vol").Handle(Create((VolumeCacheMode)7), NewId);
        Assert.Equal(VolumeError.Invalid, Assert.IsType<VolumeRejected>(invalid.Reply).Error);
        Assert.Contains("cache mode 7 is unknown", ((VolumeRejected)invalid.Reply!).Reason);

        var setInvalid = Active(VolumeCacheMode.Direct).Handle(new SetVolumeCacheMode("vol", (VolumeCacheMode)(-1)), NewId);
        Assert.Equal(VolumeError.Invalid, Assert.IsType<VolumeRejected>(setInvalid.Reply).Error);

        var absent = VolumeState.Empty("vol").Handle(new SetVolumeCacheMode("vol", VolumeCacheMode.Writeback), NewId);
        Assert.Equal(VolumeError.NotFound, Assert.IsType<VolumeRejected>(absent.Reply).Error);

        var (creating, _) = Run(VolumeState.Empty("vol"), Create(VolumeCacheMode.Direct));
        var busy = creating.Handle(new SetVolumeCacheMode("vol", VolumeCacheMode.Writeback), NewId);
        Assert.Equal(VolumeError.Busy, Assert.IsType<VolumeRejected>(busy.Reply).Error);
    }

    [Fact]
    public void A_recreated_name_starts_direct_again()
    {
        var active = Active(VolumeCacheMode.Writeback);
        var deleting = active.Apply(new VolumeDeletionStarted(active.Descriptor!.VolumeId));
        var deleted = deleting.Apply(new VolumeDeleted(active.Descriptor.VolumeId, []));

        var (recreated, _) = Run(deleted, Create(VolumeCacheMode.Direct));

        Assert.Equal(VolumeCacheMode.Direct, recreated.Cache);
    }

    [Fact]
    public void Snapshots_keep_the_mode_and_an_old_snapshot_reads_as_direct()
    {
        var active = Run(Active(VolumeCacheMode.Direct), new SetVolumeCacheMode("vol", VolumeCacheMode.Writeback)).State;

        var snapshot = active.ToSnapshot();
        Assert.Equal(active, VolumeState.FromSnapshot("vol", snapshot));
        Assert.Equal(VolumeCacheMode.Writeback, VolumeState.FromSnapshot("vol", snapshot).Cache);

        var old = new VolumeSnapshot(active.Status, active.Descriptor, active.Generation, null);
        Assert.Equal(VolumeCacheMode.Direct, VolumeState.FromSnapshot("vol", old).Cache);
    }

    [Theory]
    [InlineData("direct", VolumeCacheMode.Direct)]
    [InlineData("writeback", VolumeCacheMode.Writeback)]
    [InlineData(" WriteBack ", VolumeCacheMode.Writeback)]
    [InlineData("none", null)]
    [InlineData("", null)]
    [InlineData(null, null)]
    public void Cache_modes_parse_from_their_names_only(string? text, VolumeCacheMode? expected)
    {
        Assert.Equal(expected, VolumeState.ParseCacheMode(text));
        if (expected is { } mode)
        {
            Assert.Equal(mode, VolumeState.ParseCacheMode(VolumeState.CacheModeName(mode)));
        }
    }
}
