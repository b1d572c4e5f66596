using Lockstep.Actors.Volumes;
using Lockstep.Contracts.Volumes;
using Xunit;

namespace Lockstep.Actors.Tests.Volumes;

/// <summary>The volume metadata rules, without an actor: validation, intent → work → commit, leg transitions, generations.</summary>
public sealed class VolumeStateTests
{
    private const long GiB = 1L << 30;
    private int _ids;

    private Guid NewId() => new($"00000000-0000-0000-0000-{++_ids:D12}");

    private static CreateVolume Create(string name = "vol", long size = GiB, int chunk = 1 << 20, int maxNodes = 8, params string[] legs) =>
        new(name, size, chunk, maxNodes, legs.Length == 0 ? ["/legs/a", "/legs/b"] : legs);

    /// <summary>Runs a command and persists its events into the returned state, like the entity does.</summary>
    private (VolumeState State, VolumeDecision Decision) Run(VolumeState state, IVolumeCommand command)
    {
        var decision = state.Handle(command, NewId);
        var replayed = decision.Events.Aggregate(state, (s, e) => s.Apply(e));
        Assert.Equal(decision.State, replayed);
        return (decision.State, decision);
    }

    private VolumeState Active(string name = "vol")
    {
        var (creating, decision) = Run(VolumeState.Empty(name), Create(name));
        var work = Assert.IsType<ProvisionLegs>(decision.Work);
        return Run(creating, new LegsProvisioned(name, work.OperationId, null)).State;
    }

    private static VolumeRejected Rejected(VolumeDecision decision, VolumeError error)
    {
        Assert.Empty(decision.Events);
        var rejected = Assert.IsType<VolumeRejected>(decision.Reply);
        Assert.Equal(error, rejected.Error);
        return rejected;
    }

    [Fact]
    public void Create_registers_the_name_persists_the_intent_and_waits_for_the_legs()
    {
        var (state, decision) = Run(VolumeState.Empty("vol"), Create());

        Assert.True(decision.RegisterNameFirst);
        var started = Assert.IsType<VolumeCreationStarted>(Assert.Single(decision.Events));
        Assert.Null(decision.Reply);
        var work = Assert.IsType<ProvisionLegs>(decision.Work);
        Assert.Equal(started.VolumeId, work.OperationId);
        Assert.Equal(["/legs/a", "/legs/b"], work.Legs.Select(l => l.Path));
        Assert.All(work.Legs, l => Assert.Equal(LegState.InSync, l.State));
        Assert.Equal(2, work.Legs.Select(l => l.LegId).Distinct().Count());
        Assert.Equal(VolumeStatus.Creating, state.Status);
        Assert.Equal(0, state.Generation);
        Assert.Equal(work.Legs, Assert.IsType<ProvisionLegs>(state.UnfinishedWork()).Legs);
    }

    [Fact]
    public void Legs_formatted_commits_the_volume_and_bumps_the_generation()
    {
        var state = Active();

        Assert.Equal(VolumeStatus.Active, state.Status);
        Assert.Equal(1, state.Generation);
        Assert.Equal(1, state.Descriptor!.Generation);
        Assert.Equal(new VolumeGeometry(GiB, 1 << 20, 8), state.Descriptor.Geometry);
        var info = Assert.IsType<VolumeInfo>(state.Info());
        Assert.Equal(VolumeStatus.Active, info.Status);
        Assert.Null(info.Pending);
        Assert.Null(state.UnfinishedWork());
    }

    [Fact]
    public void Failed_formatting_abandons_the_create_frees_the_name_and_reports_why()
    {
        var (creating, decision) = Run(VolumeState.Empty("vol"), Create());
        var work = (ProvisionLegs)decision.Work!;

        var (state, failed) = Run(creating, new LegsProvisioned("vol", work.OperationId, "leg /legs/b: disk full"));

        Assert.IsType<VolumeCreationAbandoned>(Assert.Single(failed.Events));
        Assert.True(failed.UnregisterNameAfter);
        var rejected = Assert.IsType<VolumeRejected>(failed.Reply);
        Assert.Equal(VolumeError.Failed, rejected.Error);
        Assert.Contains("disk full", rejected.Reason);
        Assert.Equal(VolumeStatus.Absent, state.Status);
        Assert.Equal(VolumeError.NotFound, Assert.IsType<VolumeRejected>(state.Info()).Error);
    }

    [Fact]
    public void A_late_answer_for_other_work_changes_nothing()
    {
        var state = Active();
        var (after, decision) = Run(state, new LegsProvisioned("vol", Guid.NewGuid(), null));
        Assert.Empty(decision.Events);
        Assert.Null(decision.Reply);
        Assert.Equal(state, after);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("Demo", "lowercase")]
    [InlineData("-x", "start with")]
    [InlineData("a/b", "lowercase")]
    [InlineData("a b", "lowercase")]
    public void Bad_names_are_rejected(string name, string why)
    {
        var rejected = Rejected(VolumeState.Empty(name).Handle(Create(name), NewId), VolumeError.Invalid);
        Assert.Contains(why, rejected.Reason);
    }

    [Fact]
    public void Names_are_limited_to_64_characters()
    {
        Assert.Null(VolumeState.ValidateName(new string('a', 64)));
        Assert.Contains("longer than 64", VolumeState.ValidateName(new string('a', 65)));
        Assert.Null(VolumeState.ValidateName("vm-01.disk_2"));
    }

    [Theory]
    [InlineData(0L, 1 << 20, 8, "size 0")]
    [InlineData(-4096L, 1 << 20, 8, "size -4096")]
    [InlineData(4097L, 1 << 20, 8, "multiple of 4096")]
    [InlineData(1L << 30, 32 * 1024, 8, "chunk size 32768")]
    [InlineData(1L << 30, 3 << 20, 8, "power of two")]
    [InlineData(1L << 30, 1 << 20, 0, "max nodes 0")]
    [InlineData(1L << 30, 1 << 20, 65, "max nodes 65")]
    public void Bad_geometry_is_rejected(long size, int chunk, int maxNodes, string why)
    {
        var rejected = Rejected(VolumeState.Empty("vol").Handle(Create("vol", size, chunk, maxNodes), NewId), VolumeError.Invalid);
        Assert.Contains(why, rejected.Reason);
    }

    [Fact]
    public void Geometry_limits_are_inclusive()
    {
        Assert.Null(VolumeState.ValidateGeometry(4096, 64 * 1024, 1));
        Assert.Null(VolumeState.ValidateGeometry(1L << 40, 1 << 30, 64));
    }

    [Fact]
    public void Leg_lists_must_be_absolute_distinct_and_between_one_and_eight()
    {
        Assert.Contains("1..8 legs, 0", Rejected(VolumeState.Empty("vol").Handle(new CreateVolume("vol", GiB, 1 << 20, 8, []), NewId), VolumeError.Invalid).Reason);
        var nine = Enumerable.Range(0, 9).Select(i => $"/legs/{i}").ToArray();
        Assert.Contains("9 given", Rejected(VolumeState.Empty("vol").Handle(Create(legs: nine), NewId), VolumeError.Invalid).Reason);
        Assert.Contains("not absolute", Rejected(VolumeState.Empty("vol").Handle(Create(legs: ["legs/a"]), NewId), VolumeError.Invalid).Reason);
        Assert.Contains("given twice", Rejected(VolumeState.Empty("vol").Handle(Create(legs: ["/legs/a", "/legs/./a/"]), NewId), VolumeError.Invalid).Reason);
        Assert.Contains("empty", Rejected(VolumeState.Empty("vol").Handle(Create(legs: ["/legs/a", " "]), NewId), VolumeError.Invalid).Reason);
    }

    [Fact]
    public void A_single_leg_volume_is_allowed()
    {
        var (state, decision) = Run(VolumeState.Empty("one"), Create("one", legs: ["/legs/only"]));
        Assert.Single(((ProvisionLegs)decision.Work!).Legs);
        Assert.Equal(VolumeStatus.Creating, state.Status);
    }

    [Fact]
    public void Creating_an_existing_volume_is_a_conflict_and_while_creating_busy()
    {
        Rejected(Active().Handle(Create(), NewId), VolumeError.Conflict);
        var (creating, _) = Run(VolumeState.Empty("vol"), Create());
        Rejected(creating.Handle(Create(), NewId), VolumeError.Busy);
        Rejected(creating.Handle(new AddLeg("vol", "/legs/c"), NewId), VolumeError.Busy);
        Rejected(creating.Handle(new DeleteVolume("vol"), NewId), VolumeError.Busy);
    }

    [Fact]
    public void Commands_on_an_absent_volume_are_not_found()
    {
        var empty = VolumeState.Empty("vol");
        foreach (var command in new IVolumeCommand[]
                 {
                     new GetVolume("vol"), new AddLeg("vol", "/x"), new FailLeg("vol", Guid.NewGuid(), "r"), new RemoveLeg("vol", Guid.NewGuid()),
                     new MarkLegFailed("vol", Guid.NewGuid(), "eio"), new DeleteVolume("vol"),
                 })
        {
            Rejected(empty.Handle(command, NewId), VolumeError.NotFound);
        }
    }

    [Fact]
    public void A_command_for_another_name_is_refused()
    {
        Rejected(Active("vol").Handle(new GetVolume("other"), NewId), VolumeError.Invalid);
    }

    [Fact]
    public void Operator_fail_takes_a_leg_out_but_never_the_last_in_sync_one()
    {
        var state = Active();
        var (a, b) = (state.Descriptor!.Legs[0], state.Descriptor.Legs[1]);

        var (failed, decision) = Run(state, new FailLeg("vol", b.LegId, "replacing disk"));
        var e = Assert.IsType<LegFailed>(Assert.Single(decision.Events));
        Assert.True(e.ByOperator);
        Assert.Equal(LegState.Failed, failed.Descriptor!.Legs[1].State);
        Assert.Equal(2, failed.Generation);

        var last = Rejected(failed.Handle(new FailLeg("vol", a.LegId, "oops"), NewId), VolumeError.Conflict);
        Assert.Contains("last in-sync leg", last.Reason);

        // Failing a failed leg again is a no-op, not an error, and does not bump the generation.
        var (again, repeat) = Run(failed, new FailLeg("vol", b.LegId, "again"));
        Assert.Empty(repeat.Events);
        Assert.IsType<VolumeInfo>(repeat.Reply);
        Assert.Equal(2, again.Generation);
    }

    [Fact]
    public void An_io_failure_is_recorded_even_for_the_last_leg_and_only_once()
    {
        var state = Active();
        var (a, b) = (state.Descriptor!.Legs[0], state.Descriptor.Legs[1]);

        var (one, _) = Run(state, new MarkLegFailed("vol", b.LegId, "EIO at 4096"));
        var (both, decision) = Run(one, new MarkLegFailed("vol", a.LegId, "EIO at 0"));
        Assert.False(Assert.IsType<LegFailed>(Assert.Single(decision.Events)).ByOperator);
        Assert.All(both.Descriptor!.Legs, l => Assert.Equal(LegState.Failed, l.State));

        var (_, repeat) = Run(both, new MarkLegFailed("vol", a.LegId, "EIO again"));
        Assert.Empty(repeat.Events);
    }

    [Fact]
    public void Unknown_legs_are_not_found()
    {
        var state = Active();
        var unknown = Guid.NewGuid();
        Assert.Contains(unknown.ToString(), Rejected(state.Handle(new FailLeg("vol", unknown, "x"), NewId), VolumeError.NotFound).Reason);
        Rejected(state.Handle(new MarkLegFailed("vol", unknown, "x"), NewId), VolumeError.NotFound);
        Rejected(state.Handle(new RemoveLeg("vol", unknown), NewId), VolumeError.NotFound);
        Rejected(state.Handle(new MarkLegMoved("vol", unknown, "/y"), NewId), VolumeError.NotFound);
    }

    [Fact]
    public void Remove_needs_a_failed_leg_and_wipes_it_afterwards()
    {
        var state = Active();
        var b = state.Descriptor!.Legs[1];
        Assert.Contains("fail it first", Rejected(state.Handle(new RemoveLeg("vol", b.LegId), NewId), VolumeError.Conflict).Reason);

        var (failed, _) = Run(state, new FailLeg("vol", b.LegId, "bad"));
        var (removed, decision) = Run(failed, new RemoveLeg("vol", b.LegId));
        Assert.IsType<LegRemoved>(Assert.Single(decision.Events));
        Assert.Equal(b.LegId, Assert.Single(Assert.IsType<WipeLegs>(decision.Cleanup).Legs).LegId);
        Assert.Single(removed.Descriptor!.Legs);
        Assert.Equal(3, removed.Generation);
    }

    [Fact]
    public void Missing_and_moved_legs_are_recorded()
    {
        var state = Active();
        var b = state.Descriptor!.Legs[1];

        var (moved, m) = Run(state, new MarkLegMoved("vol", b.LegId, "/other/b"));
        Assert.IsType<LegMoved>(Assert.Single(m.Events));
        Assert.Equal("/other/b", moved.Descriptor!.Legs[1].Path);
        Assert.Empty(moved.Handle(new MarkLegMoved("vol", b.LegId, "/other/b"), NewId).Events);
        Rejected(moved.Handle(new MarkLegMoved("vol", b.LegId, "/legs/a"), NewId), VolumeError.Conflict);

        var (missing, _) = Run(moved, new MarkLegMissing("vol", b.LegId, "not found"));
        Assert.Equal(LegState.Missing, missing.Descriptor!.Legs[1].State);
        // A missing leg can be removed without failing it first.
        Assert.IsType<LegRemoved>(Assert.Single(missing.Handle(new RemoveLeg("vol", b.LegId), NewId).Events));
    }

    [Fact]
    public void Add_leg_goes_intent_then_resyncing_then_in_sync()
    {
        var state = Active();
        var (adding, decision) = Run(state, new AddLeg("vol", "/legs/c"));
        var started = Assert.IsType<LegAdditionStarted>(Assert.Single(decision.Events));
        var work = Assert.IsType<ProvisionLegs>(decision.Work);
        Assert.Equal(started.LegId, work.OperationId);
        Assert.Null(decision.Reply);
        Assert.Equal(2, adding.Descriptor!.Legs.Count);
        Assert.Contains("adding leg", Assert.IsType<VolumeInfo>(adding.Info()).Pending);
        var resumed = Assert.IsType<ProvisionLegs>(adding.UnfinishedWork());
        Assert.Equal((work.OperationId, work.Legs.Single()), (resumed.OperationId, resumed.Legs.Single()));
        Rejected(adding.Handle(new AddLeg("vol", "/legs/d"), NewId), VolumeError.Busy);
        Rejected(adding.Handle(new FailLeg("vol", state.Descriptor!.Legs[0].LegId, "x"), NewId), VolumeError.Busy);
        // The pipeline's report is still recorded while an add is pending.
        Assert.Single(adding.Handle(new MarkLegFailed("vol", state.Descriptor!.Legs[1].LegId, "EIO"), NewId).Events);

        var (added, commit) = Run(adding, new LegsProvisioned("vol", started.LegId, null));
        Assert.IsType<LegAdded>(Assert.Single(commit.Events));
        var leg = added.Descriptor!.Legs[2];
        Assert.Equal((started.LegId, "/legs/c", LegState.Resyncing), (leg.LegId, leg.Path, leg.State));
        Assert.Equal(2, added.Generation);

        var stale = Rejected(added.Handle(new MarkLegResynced("vol", leg.LegId, 1), NewId), VolumeError.Conflict);
        Assert.Contains("changed during the copy", stale.Reason);
        var (synced, _) = Run(added, new MarkLegResynced("vol", leg.LegId, added.Generation));
        Assert.Equal(LegState.InSync, synced.Descriptor!.Legs[2].State);
        Assert.Equal(3, synced.Generation);
    }

    [Fact]
    public void Add_leg_rejects_duplicates_relative_paths_and_a_ninth_leg()
    {
        var state = Active();
        Assert.Contains("already leg", Rejected(state.Handle(new AddLeg("vol", "/legs/a"), NewId), VolumeError.Conflict).Reason);
        Rejected(state.Handle(new AddLeg("vol", "c.leg"), NewId), VolumeError.Invalid);

        var full = Active("full");
        for (var i = 2; i < VolumeState.MaxLegs; i++)
        {
            var (adding, d) = Run(full, new AddLeg("full", $"/legs/{i}"));
            full = Run(adding, new LegsProvisioned("full", ((ProvisionLegs)d.Work!).OperationId, null)).State;
        }

        Assert.Equal(VolumeState.MaxLegs, full.Descriptor!.Legs.Count);
        Assert.Contains("already has 8 legs", Rejected(full.Handle(new AddLeg("full", "/legs/9"), NewId), VolumeError.Conflict).Reason);
    }

    [Fact]
    public void A_failed_add_leaves_the_volume_as_it_was()
    {
        var state = Active();
        var (adding, d) = Run(state, new AddLeg("vol", "/legs/c"));
        var (after, failed) = Run(adding, new LegsProvisioned("vol", ((ProvisionLegs)d.Work!).OperationId, "cannot create /legs/c"));
        Assert.IsType<LegAdditionAbandoned>(Assert.Single(failed.Events));
        Assert.Equal(VolumeError.Failed, Assert.IsType<VolumeRejected>(failed.Reply).Error);
        Assert.Equal(state.Descriptor, after.Descriptor);
        Assert.Null(after.PendingLeg);
    }

    [Fact]
    public void Delete_wipes_then_frees_the_name_and_the_generation_never_goes_back()
    {
        var state = Active();
        var (deleting, d) = Run(state, new DeleteVolume("vol"));
        Assert.IsType<VolumeDeletionStarted>(Assert.Single(d.Events));
        var wipe = Assert.IsType<WipeLegs>(d.Work);
        Assert.Equal(2, wipe.Legs.Count);
        Assert.Equal(VolumeStatus.Deleting, deleting.Status);
        Rejected(deleting.Handle(new DeleteVolume("vol"), NewId), VolumeError.Busy);
        Assert.Equal(wipe.Legs, Assert.IsType<WipeLegs>(deleting.UnfinishedWork()).Legs);

        var (gone, done) = Run(deleting, new LegsWiped("vol", state.Descriptor!.VolumeId, ["leg /legs/b: no such file"]));
        Assert.True(done.UnregisterNameAfter);
        var info = Assert.IsType<VolumeInfo>(done.Reply);
        Assert.Equal(VolumeStatus.Absent, info.Status);
        Assert.Contains("no such file", info.Pending);
        Assert.Equal(VolumeStatus.Absent, gone.Status);

        // The same name again: a new volume id and a generation above every earlier one.
        var (recreating, again) = Run(gone, Create());
        var recreated = Run(recreating, new LegsProvisioned("vol", ((ProvisionLegs)again.Work!).OperationId, null)).State;
        Assert.NotEqual(state.Descriptor.VolumeId, recreated.Descriptor!.VolumeId);
        Assert.True(recreated.Generation > gone.Generation && gone.Generation > state.Generation);
    }

    [Fact]
    public void Events_that_do_not_fit_the_state_throw()
    {
        var empty = VolumeState.Empty("vol");
        Assert.Throws<InvalidOperationException>(() => empty.Apply(new VolumeCreated(Guid.NewGuid())));
        Assert.Throws<InvalidOperationException>(() => empty.Apply(new LegFailed(Guid.NewGuid(), "x", false)));
        var active = Active();
        Assert.Throws<InvalidOperationException>(() => active.Apply(new VolumeCreationStarted("vol", Guid.NewGuid(), active.Descriptor!.Geometry, [])));
        Assert.Throws<InvalidOperationException>(() => active.Apply(new LegFailed(Guid.NewGuid(), "x", false)));
        Assert.Throws<InvalidOperationException>(() => active.Apply(new VolumeDeleted(active.Descriptor!.VolumeId, [])));
    }

    [Fact]
    public void Snapshots_restore_the_same_state()
    {
        var (adding, _) = Run(Active(), new AddLeg("vol", "/legs/c"));
        Assert.Equal(adding, VolumeState.FromSnapshot("vol", adding.ToSnapshot()));
    }
}
