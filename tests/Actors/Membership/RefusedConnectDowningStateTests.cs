using CsCheck;
using Lockstep.Actors.Membership;
using Xunit;

namespace Lockstep.Actors.Tests.Membership;

public sealed class RefusedConnectDowningStateTests
{
    private const string B = "b#2";
    private const string C = "c#3";
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(75);

    private static RefusedConnectDowningState TwoMembers()
    {
        var s = new RefusedConnectDowningState(3, Interval);
        s.MemberUp(B);
        s.MemberUp(C);
        return s;
    }

    /// <summary>Answers every probe the effects ask for with <paramref name="result"/>, as the actor would; returns all effects.</summary>
    private static List<RefusedConnectEffect> Answer(RefusedConnectDowningState s, IReadOnlyList<RefusedConnectEffect> effects, ConnectProbeResult result)
    {
        var all = new List<RefusedConnectEffect>(effects);
        var queue = new Queue<RefusedConnectEffect>(effects);
        while (queue.TryDequeue(out var effect))
        {
            if (effect is ProbeConnectEffect p)
            {
                foreach (var next in s.ProbeAnswered(p.Member, p.Round, p.Attempt, result))
                {
                    all.Add(next);
                    queue.Enqueue(next);
                }
            }
        }

        return all;
    }

    [Fact]
    public void Unreachable_member_whose_port_refuses_three_times_is_downed_after_spaced_probes()
    {
        var s = TwoMembers();
        var first = Assert.IsType<ProbeConnectEffect>(Assert.Single(s.Unreachable(C)));
        Assert.Equal(TimeSpan.Zero, first.Delay);
        var second = Assert.IsType<ProbeConnectEffect>(Assert.Single(s.ProbeAnswered(C, first.Round, 1, ConnectProbeResult.Refused)));
        Assert.Equal((2, Interval), (second.Attempt, second.Delay));
        var third = Assert.IsType<ProbeConnectEffect>(Assert.Single(s.ProbeAnswered(C, first.Round, 2, ConnectProbeResult.Refused)));
        Assert.Equal(3, third.Attempt);
        Assert.False(s.IsProvenGone(C));
        var end = s.ProbeAnswered(C, first.Round, 3, ConnectProbeResult.Refused);
        Assert.Equal([new ProcessGoneEffect(C), new DownMemberEffect(C)], end);
        Assert.True(s.IsProvenGone(C));
        Assert.Empty(s.Unreachable(C)); // downed once
    }

    [Theory]
    [InlineData(ConnectProbeResult.TimedOut)]
    [InlineData(ConnectProbeResult.Accepted)]
    [InlineData(ConnectProbeResult.Failed)]
    public void Any_answer_but_refused_leaves_the_member_to_the_resolver(ConnectProbeResult answer)
    {
        var s = TwoMembers();
        var probe = Assert.IsType<ProbeConnectEffect>(Assert.Single(s.Unreachable(C)));
        s.ProbeAnswered(C, probe.Round, 1, ConnectProbeResult.Refused);
        var end = s.ProbeAnswered(C, probe.Round, 2, answer);
        Assert.Equal([new NotProvenEffect(C, answer, 1)], end);
        Assert.Empty(s.ProbeAnswered(C, probe.Round, 3, ConnectProbeResult.Refused)); // the round is over
        Assert.False(s.IsProvenGone(C));
    }

    [Fact]
    public void A_member_downed_elsewhere_is_still_probed_here_for_the_dlm_but_never_downed_again()
    {
        var s = TwoMembers();
        s.Downed(C); // another node proved it first, or the resolver decided
        var effects = Answer(s, s.Unreachable(C), ConnectProbeResult.Refused);
        Assert.Contains(new ProcessGoneEffect(C), effects);
        Assert.DoesNotContain(effects, e => e is DownMemberEffect);
        Assert.Empty(s.Unreachable(C));
    }

    [Fact]
    public void A_member_reachable_again_cancels_its_round_and_withdraws_a_proof()
    {
        var s = TwoMembers();
        var probe = Assert.IsType<ProbeConnectEffect>(Assert.Single(s.Unreachable(C)));
        Assert.Empty(s.Reachable(C));
        Assert.Empty(s.ProbeAnswered(C, probe.Round, 1, ConnectProbeResult.Refused)); // stale round

        s.Downed(C);
        Answer(s, s.Unreachable(C), ConnectProbeResult.Refused);
        Assert.True(s.IsProvenGone(C));
        Assert.Equal([new ProcessGoneWithdrawnEffect(C)], s.Reachable(C));
        Assert.False(s.IsProvenGone(C));

        // The next unreachability needs a fresh round.
        Assert.IsType<ProbeConnectEffect>(Assert.Single(s.Unreachable(C)));
    }

    [Fact]
    public void Members_not_seen_up_or_already_removed_are_never_probed()
    {
        var s = TwoMembers();
        Assert.Empty(s.Unreachable("x#9"));
        s.Removed(C);
        Assert.Empty(s.Unreachable(C));
    }

    [Fact]
    public void A_second_unreachability_during_a_round_starts_no_second_round_and_one_after_a_failed_round_does()
    {
        var s = TwoMembers();
        var probe = Assert.IsType<ProbeConnectEffect>(Assert.Single(s.Unreachable(C)));
        Assert.Empty(s.Unreachable(C));
        s.ProbeAnswered(C, probe.Round, 1, ConnectProbeResult.TimedOut);
        var again = Assert.IsType<ProbeConnectEffect>(Assert.Single(s.Unreachable(C)));
        Assert.True(again.Round > probe.Round);
    }

    [Fact]
    public void Bad_settings_are_refused_with_a_message()
    {
        var zero = Assert.Throws<ArgumentOutOfRangeException>(() => new RefusedConnectDowningState(0, Interval));
        Assert.Contains("at least one", zero.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new RefusedConnectDowningState(3, TimeSpan.FromMilliseconds(-1)));
    }

    /// <summary>One random event for one of two members: kind, member, which pending probe to answer, answer.</summary>
    public sealed record Step(int Kind, int Member, int Pick, ConnectProbeResult Result);

    private static readonly Gen<Step> StepGen = Gen.Select(Gen.Int[0, 5], Gen.Int[0, 1], Gen.Int[0, 7], Gen.Enum<ConnectProbeResult>(),
        (kind, member, pick, result) => new Step(kind, member, pick, result));

    /// <summary>
    /// Random interleavings of reachability changes, Downs by others, removals and probe answers (current, stale and
    /// out of order). A model checks every proof and every Down: the member is unreachable right now and not removed,
    /// one round since its latest return to reachability had 3 refusals and no other answer, and a Down comes only for
    /// a member nobody downed before.
    /// </summary>
    [Fact]
    public void A_member_is_downed_only_when_unreachable_after_a_round_of_refusals_only_and_only_once()
    {
        StepGen.Array[1, 60].Sample(steps => new Model().Run(steps), iter: 3000);
    }

    private sealed class Model
    {
        private static readonly string[] Members = [B, C];
        private readonly RefusedConnectDowningState _state = new(3, Interval);
        private readonly List<ProbeConnectEffect> _pending = [];
        private readonly HashSet<string> _unreachable = [];
        private readonly HashSet<string> _gone = [];
        private readonly HashSet<string> _downed = [];

        // Per member: answers (round, result) received since it was last reachable-again or gone.
        private readonly Dictionary<string, List<(int Round, ConnectProbeResult Result)>> _answers = new() { [B] = [], [C] = [] };

        public void Run(Step[] steps)
        {
            foreach (var m in Members)
            {
                _state.MemberUp(m);
            }

            foreach (var step in steps)
            {
                var m = Members[step.Member];
                switch (step.Kind)
                {
                    case 0:
                        if (!_gone.Contains(m))
                        {
                            _downed.Add(m);
                        }

                        _state.Downed(m);
                        break;
                    case 1:
                        if (!_gone.Contains(m))
                        {
                            _unreachable.Add(m);
                        }

                        Check(_state.Unreachable(m));
                        break;
                    case 2:
                        _unreachable.Remove(m);
                        _answers[m].Clear();
                        Check(_state.Reachable(m));
                        break;
                    case 3 when step.Pick == 0:
                        _gone.Add(m);
                        _unreachable.Remove(m);
                        _state.Removed(m);
                        break;
                    default:
                        if (_pending.Count > 0)
                        {
                            var probe = _pending[step.Pick % _pending.Count];
                            _pending.Remove(probe);
                            _answers[probe.Member].Add((probe.Round, step.Result));
                            Check(_state.ProbeAnswered(probe.Member, probe.Round, probe.Attempt, step.Result));
                        }

                        break;
                }
            }
        }

        private void CheckProof(string m, string what)
        {
            if (_gone.Contains(m) || !_unreachable.Contains(m))
            {
                throw new Exception($"{what} {m}: removed {_gone.Contains(m)}, unreachable {_unreachable.Contains(m)}");
            }

            var proofRound = _answers[m].Where(a => a.Result == ConnectProbeResult.Refused).GroupBy(a => a.Round)
                .Any(g => g.Count() >= 3 && _answers[m].All(a => a.Round != g.Key || a.Result == ConnectProbeResult.Refused));
            if (!proofRound)
            {
                throw new Exception($"{what} {m} without a round of 3 refusals since it was last reachable: [{string.Join(", ", _answers[m])}]");
            }
        }

        private void Check(IReadOnlyList<RefusedConnectEffect> effects)
        {
            foreach (var effect in effects)
            {
                switch (effect)
                {
                    case ProbeConnectEffect probe:
                        _pending.Add(probe);
                        break;
                    case ProcessGoneEffect gone:
                        CheckProof(gone.Member, "proven gone");
                        break;
                    case DownMemberEffect down:
                        CheckProof(down.Member, "downed");
                        if (!_downed.Add(down.Member))
                        {
                            throw new Exception($"downed {down.Member} a second time");
                        }

                        break;
                }
            }
        }
    }
}
