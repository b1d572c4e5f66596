using CsCheck;
using Lockstep.Actors.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

public sealed class LockspaceRecoveryStateTests
{
    private const string A = "a#1";
    private const string B = "b#2";
    private const string C = "c#3";

    private static LockspaceRecoveryState ThreeMembers()
    {
        var s = new LockspaceRecoveryState(A);
        s.MemberUp(B);
        s.MemberUp(C);
        return s;
    }

    [Fact]
    public void Unreachable_member_enters_prep_and_its_return_resumes_without_slot_work()
    {
        var s = ThreeMembers();
        Assert.IsType<EnterPrepEffect>(Assert.Single(s.Unreachable(C)));
        Assert.False(s.IsGranting);
        Assert.Empty(s.Unreachable(B));
        Assert.Empty(s.Reachable(C));
        Assert.False(s.IsGranting);
        var done = Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Reachable(B)));
        Assert.Empty(done.Dead);
        Assert.True(s.IsGranting);
    }

    [Fact]
    public void Removal_runs_slot_work_and_done_waits_for_own_slot_and_every_survivor()
    {
        var s = ThreeMembers();
        s.Unreachable(C);
        var effects = s.Removed(C);
        var slot = Assert.IsType<RunSlotEffect>(Assert.Single(effects));
        Assert.Equal(1, slot.Generation);
        Assert.Equal([C], slot.Dead);

        // B finished before us: kept, but our own slot work is still missing.
        Assert.Empty(s.Ack(B, 7, [C]));
        Assert.Equal(RecoveryPhase.Recovering, s.Phase);

        var after = s.SlotDone(1);
        var ack = Assert.IsType<SendAckEffect>(after[0]);
        Assert.Equal([B], ack.To);
        Assert.Equal([C], ack.Covered);
        var done = Assert.IsType<RecoveryDoneEffect>(after[1]);
        Assert.Equal(1, done.Generation);
        Assert.Equal([C], done.Dead);
        Assert.True(s.IsGranting);
    }

    [Fact]
    public void Ack_that_does_not_cover_the_removal_or_is_older_is_ignored()
    {
        var s = ThreeMembers();
        s.Removed(C);
        s.SlotDone(1);
        Assert.Empty(s.Ack(B, 5, []));
        Assert.Equal([B], s.Waiting());
        Assert.Empty(s.Ack(B, 4, [C])); // older than the one held
        Assert.False(s.IsGranting);
        Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Ack(B, 6, [C])));
    }

    [Fact]
    public void Second_removal_during_recovery_restarts_it_with_a_new_generation()
    {
        var s = new LockspaceRecoveryState(A);
        foreach (var m in new[] { B, C, "d#4", "e#5" })
        {
            s.MemberUp(m);
        }

        s.Removed(C);
        s.Ack(B, 1, [C]);
        var again = Assert.IsType<RunSlotEffect>(Assert.Single(s.Removed("d#4")));
        Assert.Equal(2, again.Generation);
        Assert.Equal([C, "d#4"], again.Dead);

        Assert.Empty(s.SlotDone(1)); // stale: superseded
        var effects = s.SlotDone(2);
        Assert.IsType<SendAckEffect>(Assert.Single(effects));
        s.Ack("e#5", 1, [C, "d#4"]);
        Assert.Empty(s.Ack(B, 1, [C, "d#4"])); // same generation as held: stale
        var done = Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Ack(B, 2, [C, "d#4"])));
        Assert.Equal(2, done.Generation);
        Assert.Equal([C, "d#4"], done.Dead);
    }

    [Fact]
    public void Never_resumes_while_a_member_is_unreachable_or_leaving()
    {
        var s = ThreeMembers();
        s.Removed(C);
        s.Unreachable(B);
        s.SlotDone(1);
        Assert.Empty(s.Ack(B, 1, [C]));
        Assert.False(s.IsGranting);
        Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Reachable(B)));

        Assert.IsType<EnterPrepEffect>(Assert.Single(s.Leaving(B)));
        Assert.False(s.IsGranting);
    }

    [Fact]
    public void A_member_that_joined_after_a_removal_need_not_cover_it_and_a_restarted_node_is_a_new_member()
    {
        var s = ThreeMembers();
        s.Removed(C);
        s.MemberUp("c#9"); // C restarted: new uid
        s.SlotDone(1);
        Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Ack(B, 1, [C])));

        // The restarted node dies too: the old acknowledgement covering "c#3" does not count for "c#9".
        s.Removed("c#9");
        s.SlotDone(2);
        Assert.Equal([B], s.Waiting());
        Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Ack(B, 2, [C, "c#9"])));
    }

    [Fact]
    public void Down_of_an_unreachable_member_starts_its_recovery_and_the_later_removal_changes_nothing()
    {
        var s = ThreeMembers();
        Assert.Empty(s.Downed(C)); // reachable: an operator's Down; it still acts until it sees it
        s.Unreachable(C);
        var slot = Assert.IsType<RunSlotEffect>(Assert.Single(s.Downed(C)));
        Assert.Equal([C], slot.Dead);
        Assert.Empty(s.Removed(C));
        Assert.Equal(1, s.Generation);
        s.SlotDone(1);
        Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Ack(B, 1, [C])));
    }

    [Fact]
    public void Down_of_a_member_proven_gone_starts_recovery_even_while_it_still_looks_reachable()
    {
        var s = ThreeMembers();
        Assert.Empty(s.ProcessGone(C)); // proof alone does nothing: only a Down ends a member
        Assert.True(s.IsGranting);
        var effects = s.Downed(C);
        Assert.IsType<EnterPrepEffect>(effects[0]);
        Assert.Equal([C], Assert.IsType<RunSlotEffect>(effects[1]).Dead);
        Assert.Empty(s.Unreachable(C)); // the detector's late verdict about a removed member changes nothing
        s.SlotDone(1);
        Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Ack(B, 1, [C])));
    }

    [Fact]
    public void A_reachable_member_downed_before_its_proof_is_recovered_when_the_proof_arrives_and_not_before()
    {
        var s = ThreeMembers();
        Assert.Empty(s.Downed(C));
        Assert.True(s.IsGranting);
        Assert.Empty(s.ProcessGone(B)); // another member's proof starts nothing
        var effects = s.ProcessGone(C);
        Assert.Equal([C], Assert.IsType<RunSlotEffect>(effects[1]).Dead);
        Assert.Equal(1, s.Generation);
    }

    [Fact]
    public void A_withdrawn_proof_no_longer_lets_a_down_of_a_reachable_member_start_recovery()
    {
        var s = ThreeMembers();
        s.ProcessGone(C);
        s.ProcessGoneWithdrawn(C);
        Assert.Empty(s.Downed(C));
        Assert.Equal(0, s.Generation);
        Assert.True(s.IsGranting);
    }

    [Fact]
    public void Majority_counts_this_node_and_every_member_not_removed()
    {
        var s = ThreeMembers();
        Assert.True(s.HasMajority);
        s.Unreachable(B);
        Assert.True(s.HasMajority);
        s.Unreachable(C);
        Assert.False(s.HasMajority);
        s.Removed(C);
        Assert.False(s.HasMajority); // 1 of 2 is not more than half
        s.Reachable(B);
        Assert.True(s.HasMajority);
    }

    [Fact]
    public void A_fenced_minority_does_not_unfence_when_the_majority_is_removed_from_its_view()
    {
        var s = ThreeMembers();
        s.Unreachable(B);
        s.Unreachable(C);
        Assert.False(s.HasMajority);
        s.Fenced();
        s.Removed(B);
        s.Removed(C);
        Assert.True(s.HasMajority); // alone, it is "all" of what it still sees
        Assert.False(s.MayUnfence);
        s.MemberUp("b#7"); // a restarted B is a new member, not one of those it fenced among
        Assert.False(s.MayUnfence);
    }

    [Fact]
    public void A_fenced_node_unfences_when_those_it_fenced_among_are_reachable_again()
    {
        var s = ThreeMembers();
        s.Unreachable(B);
        s.Unreachable(C);
        s.Fenced();
        Assert.False(s.MayUnfence);
        s.Reachable(B);
        Assert.True(s.MayUnfence);
        s.Unfenced();
        Assert.Null(s.FencedAmong);
        Assert.True(s.MayUnfence);
    }

    [Fact]
    public void A_joining_node_grants_once_it_saw_its_first_view_and_every_member_reported_a_settled_status()
    {
        var s = new LockspaceRecoveryState(A, joining: true);
        Assert.Equal(RecoveryPhase.Joining, s.Phase);
        Assert.False(s.IsGranting);
        s.MemberUp(B);
        s.MemberUp(C);
        Assert.Empty(s.Hello(B, true, [], []));
        Assert.Empty(s.InitialViewSeen());
        Assert.Equal([C], s.Waiting());
        Assert.Empty(s.Hello(C, false, [], [])); // C sees someone unreachable: ask again
        Assert.False(s.IsGranting);
        Assert.IsType<JoinSettledEffect>(Assert.Single(s.Hello(C, true, [], [])));
        Assert.True(s.IsGranting);
        Assert.False(s.IsJoining);

        // Joined: later hellos change nothing.
        Assert.Empty(s.Hello(B, true, ["x#9"], []));
        Assert.True(s.IsGranting);
    }

    [Fact]
    public void A_node_that_joined_after_a_removal_it_never_saw_waits_for_the_survivors_acks_of_it()
    {
        const string Dead = "d#4";
        var s = new LockspaceRecoveryState(A, joining: true);
        s.MemberUp(B);
        s.MemberUp(C);
        s.InitialViewSeen();

        // B still re-asserts after D's removal; C finished (covered) before we asked.
        Assert.Empty(s.Hello(B, true, [Dead], []));
        Assert.Empty(s.Hello(C, true, [], [Dead]));
        Assert.Equal([B], s.Waiting());
        Assert.Empty(s.Ack(B, 3, []));
        Assert.False(s.IsGranting);
        Assert.IsType<JoinSettledEffect>(Assert.Single(s.Ack(B, 4, [Dead])));
        Assert.True(s.IsGranting);
    }

    [Fact]
    public void A_joining_node_stays_gated_while_a_member_is_unreachable_and_a_hello_can_stand_for_the_ack()
    {
        var s = new LockspaceRecoveryState(A, joining: true);
        s.MemberUp(B);
        s.MemberUp(C);
        s.Unreachable(C);
        s.InitialViewSeen();
        s.Hello(B, true, ["d#4"], []);
        s.Hello(C, true, [], []);
        Assert.Empty(s.Hello(B, true, [], ["d#4"])); // B finished, but C is unreachable
        Assert.False(s.IsGranting);
        Assert.IsType<JoinSettledEffect>(Assert.Single(s.Reachable(C)));
    }

    [Fact]
    public void A_removal_seen_while_joining_runs_recovery_and_done_also_needs_every_hello()
    {
        var s = new LockspaceRecoveryState(A, joining: true);
        s.MemberUp(B);
        s.MemberUp(C);
        s.MemberUp("e#5");
        s.InitialViewSeen();
        s.Hello(B, true, [], []);
        s.Unreachable(C);
        var removed = s.Removed(C);
        Assert.IsType<EnterPrepEffect>(removed[0]);
        Assert.IsType<RunSlotEffect>(removed[1]);
        Assert.IsType<SendAckEffect>(Assert.Single(s.SlotDone(1)));
        Assert.Empty(s.Ack(B, 1, [C]));
        Assert.Empty(s.Ack("e#5", 1, [C]));
        Assert.False(s.IsGranting); // e#5 has not told us its status
        var done = Assert.IsType<RecoveryDoneEffect>(Assert.Single(s.Hello("e#5", true, [], [C])));
        Assert.Equal([C], done.Dead);
        Assert.True(s.IsGranting);
        Assert.False(s.IsJoining);
    }

    [Fact]
    public void Report_tells_a_joiner_what_is_still_recovering_and_what_is_covered()
    {
        var s = ThreeMembers();
        Assert.Equal((true, 0L), (s.Report().Settled, s.Report().Generation));
        s.Unreachable(C);
        Assert.False(s.Report().Settled);
        s.Removed(C);
        var recovering = s.Report();
        Assert.Equal((true, 1L), (recovering.Settled, recovering.Generation));
        Assert.Equal([C], recovering.Recovering);
        Assert.Empty(recovering.Covered);
        s.SlotDone(1);
        s.Ack(B, 1, [C]);
        var done = s.Report();
        Assert.Empty(done.Recovering);
        Assert.Equal([C], done.Covered);
    }

    /// <summary>One random event of a joining node: kind, member index, generation, masks for recovering/covered.</summary>
    public sealed record JoinStep(int Kind, int Member, int Generation, int Mask);

    private static readonly Gen<JoinStep> JoinStepGen = Gen.Select(Gen.Int[0, 6], Gen.Int[0, 5], Gen.Int[0, 6], Gen.Int[0, 15],
        (kind, member, gen, mask) => new JoinStep(kind, member, gen, mask));

    /// <summary>
    /// A node joins while removals it never saw ("x0", "x1") may still be recovered by the others. Random
    /// orders of members coming up, settled and unsettled hellos reporting random recovering/covered subsets,
    /// acknowledgements with random generations, reachability changes and the first view. A model checks at
    /// the first grant that the view was seen, nothing is unreachable, every member reported a settled status,
    /// and each acknowledged (newest ack or any hello) every removal it ever reported recovering; once every
    /// member reports everything covered, the node grants.
    /// </summary>
    [Fact]
    public void A_joining_node_grants_only_after_every_member_reported_and_acked_what_it_was_recovering()
    {
        JoinStepGen.Array[1, 60].Sample(steps => new JoinModel().Run(steps), iter: 3000);
    }

    private sealed class JoinModel
    {
        private static readonly string[] Missed = ["x0", "x1"];
        private readonly LockspaceRecoveryState _state = new("self", joining: true);
        private readonly List<string> _members = ["m0"];
        private readonly HashSet<string> _unreachable = [];
        private readonly HashSet<string> _reported = [];
        private readonly Dictionary<string, HashSet<string>> _owes = [];
        private readonly Dictionary<string, HashSet<string>> _helloCovered = [];
        private readonly Dictionary<string, (long Gen, HashSet<string> Covered)> _ack = [];
        private bool _viewSeen;
        private bool _granted;

        public void Run(JoinStep[] steps)
        {
            _state.MemberUp("m0");
            foreach (var step in steps)
            {
                Apply(step);
                if (_granted)
                {
                    return;
                }
            }

            foreach (var m in _unreachable.ToList())
            {
                _unreachable.Remove(m);
                Check(_state.Reachable(m));
            }

            _viewSeen = true;
            Check(_state.InitialViewSeen());
            foreach (var m in _members)
            {
                Hello(m, true, [], Missed);
            }

            if (!_state.IsGranting)
            {
                throw new Exception($"did not grant after every member reported everything covered; waiting for {string.Join(",", _state.Waiting())}");
            }
        }

        private void Apply(JoinStep step)
        {
            var member = _members[step.Member % _members.Count];
            IReadOnlyList<string> Subset(int bits) => Missed.Where((_, i) => (bits & (1 << i)) != 0).ToList();
            switch (step.Kind)
            {
                case 0 when _members.Count < 5:
                    var fresh = $"m{_members.Count}";
                    _members.Add(fresh);
                    Check(_state.MemberUp(fresh));
                    break;
                case 1:
                    Hello(member, true, Subset(step.Mask), Subset(step.Mask >> 2));
                    break;
                case 2:
                    Hello(member, false, Subset(step.Mask), Subset(step.Mask >> 2));
                    break;
                case 3:
                    if (step.Generation > (_ack.TryGetValue(member, out var held) ? held.Gen : long.MinValue))
                    {
                        _ack[member] = (step.Generation, Subset(step.Mask).ToHashSet());
                    }

                    Check(_state.Ack(member, step.Generation, Subset(step.Mask)));
                    break;
                case 4:
                    _unreachable.Add(member);
                    Check(_state.Unreachable(member));
                    break;
                case 5:
                    _unreachable.Remove(member);
                    Check(_state.Reachable(member));
                    break;
                case 6:
                    _viewSeen = true;
                    Check(_state.InitialViewSeen());
                    break;
            }
        }

        private void Hello(string member, bool settled, IReadOnlyList<string> recovering, IReadOnlyList<string> covered)
        {
            if (settled)
            {
                _reported.Add(member);
                Owes(_helloCovered, member).UnionWith(covered);
                Owes(_owes, member).UnionWith(recovering);
            }
            else
            {
                _reported.Remove(member);
            }

            Check(_state.Hello(member, settled, recovering, covered));
        }

        private static HashSet<string> Owes(Dictionary<string, HashSet<string>> sets, string key) =>
            sets.TryGetValue(key, out var set) ? set : sets[key] = [];

        private void Check(IReadOnlyList<RecoveryEffect> effects)
        {
            var settledNow = effects.OfType<JoinSettledEffect>().Any();
            if (settledNow != (_state.IsGranting && !_granted))
            {
                throw new Exception($"JoinSettledEffect {settledNow} but granting {_state.IsGranting}");
            }

            if (!settledNow)
            {
                return;
            }

            _granted = true;
            if (!_viewSeen || _unreachable.Count > 0)
            {
                throw new Exception("granted before the first view or while a member is unreachable");
            }

            foreach (var m in _members)
            {
                var covered = Owes(_helloCovered, m).Union(_ack.TryGetValue(m, out var a) ? a.Covered : []).ToHashSet();
                if (!_reported.Contains(m) || !Owes(_owes, m).IsSubsetOf(covered))
                {
                    throw new Exception($"granted while {m} had not reported a settled status or acked [{string.Join(",", Owes(_owes, m))}]");
                }
            }
        }
    }

    /// <summary>One random event: kind, member index, generation, covered mask.</summary>
    public sealed record Step(int Kind, int Member, int Generation, int Mask);

    private static readonly Gen<Step> StepGen = Gen.Select(Gen.Int[0, 7], Gen.Int[0, 5], Gen.Int[0, 6], Gen.Int[0, 255],
        (kind, member, gen, mask) => new Step(kind, member, gen, mask));

    /// <summary>
    /// Random orders of membership events, slot completions (current and stale) and acknowledgements
    /// (of random subsets of what has been removed, with random generations). A model kept beside the
    /// state checks, at every recover_done, that no member is unsettled, that our own slot work for the
    /// latest generation finished, and that every survivor sent, after each removal it saw, an ack
    /// covering it. At the end, once everyone is reachable and acks everything, granting resumes.
    /// </summary>
    [Fact]
    public void Granting_resumes_only_after_every_survivor_acked_every_removal_and_never_while_unsettled()
    {
        StepGen.Array[1, 80].Sample(steps => new Model().Run(steps), iter: 3000);
    }

    private sealed class Model
    {
        private readonly LockspaceRecoveryState _state = new("self");
        private readonly List<string> _members = ["self"];
        private readonly HashSet<string> _unsettled = [];
        private readonly List<string> _removed = [];

        // For each removal not yet recovered: the survivors that saw it and still owe an ack covering it.
        private readonly List<(string Dead, HashSet<string> Owing)> _open = [];
        private readonly Dictionary<string, long> _lastAckGen = [];
        private bool _slotDoneForLatest;
        private int _next;

        public void Run(Step[] steps)
        {
            foreach (var step in steps)
            {
                Apply(step);
            }

            // Settle: everyone reachable, our slot done, every survivor acks everything with a fresh generation.
            foreach (var m in _unsettled.ToList())
            {
                if (_leaving.Contains(m))
                {
                    // A leaving member settles only by being removed.
                    Check(_state.Removed(m));
                    Removed(m);
                }
                else
                {
                    _unsettled.Remove(m);
                    Check(_state.Reachable(m));
                }
            }

            _unsettled.Clear();
            _slotDoneForLatest = true;
            Check(_state.SlotDone(_state.Generation));
            foreach (var m in _members.Where(m => m != "self"))
            {
                var gen = _lastAckGen.GetValueOrDefault(m) + 1;
                AckFrom(m, gen, _removed);
            }

            if (!_state.IsGranting)
            {
                throw new Exception($"did not resume after everyone acked; waiting for {string.Join(",", _state.Waiting())}, phase {_state.Phase}");
            }
        }

        private void Apply(Step step)
        {
            var others = _members.Where(m => m != "self").ToList();
            var member = others.Count == 0 ? null : others[step.Member % others.Count];
            switch (step.Kind)
            {
                case 0:
                    if (_members.Count < 6)
                    {
                        var m = $"m{_next++}";
                        _members.Add(m);
                        Check(_state.MemberUp(m));
                    }

                    break;
                case 1 when member is not null:
                    _unsettled.Add(member);
                    Check(_state.Unreachable(member));
                    break;
                case 2 when member is not null:
                    if (!_leaving.Contains(member))
                    {
                        _unsettled.Remove(member);
                    }

                    Check(_state.Reachable(member));
                    break;
                case 3 when member is not null:
                    Check(_state.Removed(member));
                    Removed(member);
                    break;
                case 4:
                    {
                        var gen = step.Generation % 2 == 0 ? _state.Generation : step.Generation;
                        if (gen == _state.Generation && _state.Phase == RecoveryPhase.Recovering)
                        {
                            _slotDoneForLatest = true;
                        }

                        Check(_state.SlotDone(gen));
                        break;
                    }

                case 5 or 6 when member is not null:
                    {
                        var covered = _removed.Where((_, i) => (step.Mask & (1 << (i % 8))) != 0).ToList();
                        AckFrom(member, step.Generation, covered);
                        break;
                    }

                case 7 when member is not null && step.Mask % 5 == 0:
                    _leaving.Add(member);
                    _unsettled.Add(member);
                    Check(_state.Leaving(member));
                    break;
            }

            if (_unsettled.Count > 0 && _state.IsGranting)
            {
                throw new Exception("granting while a member is unreachable or leaving");
            }
        }

        private readonly HashSet<string> _leaving = [];

        private void Removed(string member)
        {
            _members.Remove(member);
            _unsettled.Remove(member);
            _leaving.Remove(member);
            _removed.Add(member);
            foreach (var (_, owing) in _open)
            {
                owing.Remove(member);
            }

            _open.Add((member, _members.Where(m => m != "self").ToHashSet()));
            _slotDoneForLatest = false;
        }

        private void AckFrom(string member, long gen, IReadOnlyList<string> covered)
        {
            // The model counts an ack only when the state may accept it: newer than that sender's last.
            if (gen > _lastAckGen.GetValueOrDefault(member, long.MinValue))
            {
                _lastAckGen[member] = gen;
                foreach (var (dead, owing) in _open.Where(o => covered.Contains(o.Dead)))
                {
                    owing.Remove(member);
                }
            }

            Check(_state.Ack(member, gen, covered));
        }

        private bool Check(IReadOnlyList<RecoveryEffect> effects)
        {
            var done = effects.OfType<RecoveryDoneEffect>().SingleOrDefault();
            if (done is null)
            {
                return false;
            }

            if (_unsettled.Count > 0)
            {
                throw new Exception("recover_done while a member is unsettled");
            }

            if (done.Dead.Count > 0 && !_slotDoneForLatest)
            {
                throw new Exception("recover_done before our own slot work for the latest generation");
            }

            if (_open.FirstOrDefault(o => o.Owing.Count > 0) is { Dead: not null } missing)
            {
                throw new Exception($"recover_done while {string.Join(",", missing.Owing)} had not acked the removal of {missing.Dead}");
            }

            if (!done.Dead.Order().SequenceEqual(_open.Select(o => o.Dead).Order()))
            {
                throw new Exception($"recover_done reported [{string.Join(",", done.Dead)}], expected [{string.Join(",", _open.Select(o => o.Dead))}]");
            }

            _open.Clear();
            return true;
        }
    }
}
