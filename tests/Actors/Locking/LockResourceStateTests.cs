using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Xunit;
using static Lockstep.Contracts.Locking.LockMode;

namespace Lockstep.Actors.Tests.Locking;

public sealed class LockResourceStateTests
{
    private static readonly LockOwner A = new("node-a", 1, Guid.NewGuid());
    private static readonly LockOwner B = new("node-b", 2, Guid.NewGuid());
    private static readonly LockOwner C = new("node-c", 3, Guid.NewGuid());
    private const long Now = 1_000_000;

    private readonly LockResourceState _r = new("res");

    // The VMS table written out independently of the production table: row held, column asked.
    private static readonly string[] ExpectedMatrix =
    [
        /*        NL CR CW PR PW EX */
        /* NL */ "1  1  1  1  1  1",
        /* CR */ "1  1  1  1  1  0",
        /* CW */ "1  1  1  0  0  0",
        /* PR */ "1  1  0  1  0  0",
        /* PW */ "1  1  0  0  0  0",
        /* EX */ "1  0  0  0  0  0",
    ];

    public static TheoryData<LockMode, LockMode> AllPairs()
    {
        var data = new TheoryData<LockMode, LockMode>();
        foreach (var held in LockModes.All)
        {
            foreach (var asked in LockModes.All)
            {
                data.Add(held, asked);
            }
        }

        return data;
    }

    private static bool Expected(LockMode held, LockMode asked) =>
        ExpectedMatrix[(int)held].Split(' ', StringSplitOptions.RemoveEmptyEntries)[(int)asked] == "1";

    [Theory]
    [MemberData(nameof(AllPairs))]
    public void New_request_is_granted_exactly_when_the_matrix_allows(LockMode held, LockMode asked)
    {
        Granted(_r.Request(1, A, held, LockFlags.None, null, Now), 1);
        var effects = _r.Request(2, B, asked, LockFlags.NoQueue, null, Now);
        Assert.Equal(Expected(held, asked) ? LockStatus.Granted : LockStatus.WouldBlock, Completion(effects, 2).Status);
        Assert.Equal(Expected(held, asked), LockModes.Compatible(held, asked));
    }

    [Theory]
    [MemberData(nameof(AllPairs))]
    public void Conversion_is_granted_in_place_exactly_when_the_matrix_allows(LockMode held, LockMode asked)
    {
        Granted(_r.Request(1, A, held, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, NL, LockFlags.None, null, Now), 2);
        var effects = _r.Convert(2, asked, LockFlags.NoQueue, null, null, Now);
        var done = Completion(effects, 2);
        Assert.Equal(Expected(held, asked) ? LockStatus.Granted : LockStatus.WouldBlock, done.Status);
        Assert.Equal(Expected(held, asked) ? asked : NL, _r.Find(2)!.Granted);
    }

    [Fact]
    public void Conversions_are_served_before_new_requests()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Request(3, C, EX, LockFlags.None, null, Now), 3);
        Queued(_r.Convert(1, EX, LockFlags.None, null, null, Now), 1);
        Assert.Equal(LockQueue.Converting, _r.Find(1)!.Queue);

        var effects = _r.Unlock(2, LockFlags.None, null);

        Assert.Equal(LockStatus.Granted, Completion(effects, 1).Status);
        Assert.DoesNotContain(effects.OfType<CompleteEffect>(), e => e.LockId == 3);
        Assert.Equal(LockQueue.Waiting, _r.Find(3)!.Queue);
    }

    [Fact]
    public void Waiting_requests_are_served_in_order_and_a_compatible_latecomer_does_not_overtake()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        Queued(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Request(3, C, PR, LockFlags.None, null, Now), 3);
        Queued(_r.Request(4, A, EX, LockFlags.None, null, Now), 4);
        Queued(_r.Request(5, B, PR, LockFlags.None, null, Now), 5);

        var effects = _r.Unlock(1, LockFlags.None, null);

        Assert.Equal([2L, 3L], effects.OfType<CompleteEffect>().Where(e => e.Status == LockStatus.Granted).Select(e => e.LockId));
        Assert.Equal([4L, 5L], _r.WaitQueue.Select(l => l.Id));

        // A new PR request fits the granted PRs but must queue behind the waiting EX.
        Queued(_r.Request(6, C, PR, LockFlags.None, null, Now), 6);
        Assert.Equal(LockStatus.WouldBlock, Completion(_r.Request(7, C, CR, LockFlags.NoQueue, null, Now), 7).Status);
    }

    [Fact]
    public void Down_conversion_is_granted_at_once_and_lets_waiters_in()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        Queued(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);

        var effects = _r.Convert(1, PR, LockFlags.None, null, null, Now);

        Assert.Equal(LockStatus.Granted, Completion(effects, 1).Status);
        Assert.Equal(LockStatus.Granted, Completion(effects, 2).Status);
        Assert.Equal(PR, _r.Find(1)!.Granted);
    }

    [Fact]
    public void A_conversion_that_does_not_fit_waits_on_the_convert_queue_keeping_its_mode()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Convert(2, EX, LockFlags.None, null, null, Now), 2);
        Assert.Equal(LockQueue.Converting, _r.Find(2)!.Queue);
        Assert.Equal(PR, _r.Find(2)!.Granted);

        // Its granted PR still counts: a new EX cannot be granted, a CR can.
        Assert.Equal(LockStatus.WouldBlock, Completion(_r.Request(3, C, EX, LockFlags.NoQueue, null, Now), 3).Status);
        Assert.Equal(LockStatus.WouldBlock, Completion(_r.Request(4, C, CR, LockFlags.NoQueue, null, Now), 4).Status);
        Assert.Equal(LockStatus.Granted, Completion(_r.Unlock(1, LockFlags.None, null), 2).Status);
    }

    [Fact]
    public void Quecvt_queues_a_compatible_conversion_behind_earlier_ones()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Granted(_r.Request(3, C, NL, LockFlags.None, null, Now), 3);
        Queued(_r.Convert(2, EX, LockFlags.None, null, null, Now), 2);

        // CR fits the granted PRs, but QUECVT keeps it behind B's conversion.
        Queued(_r.Convert(3, CR, LockFlags.QueCvt, null, null, Now), 3);
        Assert.Equal([2L, 3L], _r.ConvertQueue.Select(l => l.Id));

        // Without QUECVT the same conversion is granted in place (EXPEDITE: a plain NL would queue too).
        Granted(_r.Request(4, A, NL, LockFlags.Expedite, null, Now), 4);
        Assert.Equal(LockStatus.Granted, Completion(_r.Convert(4, CR, LockFlags.None, null, null, Now), 4).Status);

        // Once A and the CR are gone B's conversion goes through; the queued CR then waits for B's EX.
        Completion(_r.Unlock(4, LockFlags.None, null), 4);
        var effects = _r.Unlock(1, LockFlags.None, null);
        Assert.Equal([2L], effects.OfType<CompleteEffect>().Where(e => e.Status == LockStatus.Granted).Select(e => e.LockId));
    }

    [Fact]
    public void Quecvt_is_invalid_for_a_down_conversion_and_for_a_new_request()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        Assert.Equal(LockStatus.Invalid, Completion(_r.Convert(1, PR, LockFlags.QueCvt, null, null, Now), 1).Status);
        Assert.Equal(EX, _r.Find(1)!.Granted);
        Assert.Equal(LockStatus.Invalid, Completion(_r.Request(2, B, PR, LockFlags.QueCvt, null, Now), 2).Status);
        Assert.Null(_r.Find(2));
    }

    [Fact]
    public void Conversion_deadlock_fails_without_convdeadlk()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Convert(1, EX, LockFlags.None, null, null, Now), 1);

        var done = Completion(_r.Convert(2, EX, LockFlags.None, null, null, Now), 2);

        Assert.Equal(LockStatus.Deadlock, done.Status);
        Assert.Equal(PR, _r.Find(2)!.Granted);
        Assert.Equal(LockQueue.Granted, _r.Find(2)!.Queue);
    }

    [Fact]
    public void Convdeadlk_demotes_to_nl_lets_the_other_through_and_reports_demoted()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Convert(1, EX, LockFlags.None, null, null, Now), 1);

        var effects = _r.Convert(2, EX, LockFlags.ConvDeadlk, null, null, Now);

        Assert.Equal(LockStatus.Granted, Completion(effects, 1).Status);
        Assert.Equal(EX, _r.Find(1)!.Granted);
        Assert.DoesNotContain(effects.OfType<CompleteEffect>(), e => e.LockId == 2);
        Assert.Equal(NL, _r.Find(2)!.Granted);
        Assert.Equal(LockQueue.Converting, _r.Find(2)!.Queue);

        var done = Completion(_r.Unlock(1, LockFlags.None, null), 2);
        Assert.Equal(LockStatus.Granted, done.Status);
        Assert.Equal(EX, done.GrantedMode);
        Assert.True(done.Flags.HasFlag(LockResultFlags.Demoted));
    }

    [Fact]
    public void Noqueue_fails_at_once_without_basts_and_noqueuebast_sends_them()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        var plain = _r.Request(2, B, EX, LockFlags.NoQueue, null, Now);
        Assert.Equal(LockStatus.WouldBlock, Completion(plain, 2).Status);
        Assert.Empty(plain.OfType<BastEffect>());
        Assert.Null(_r.Find(2));

        var withBast = _r.Request(3, B, EX, LockFlags.NoQueue | LockFlags.NoQueueBast, null, Now);
        Assert.Equal(LockStatus.WouldBlock, Completion(withBast, 3).Status);
        Assert.Equal(new BastEffect(1, A, EX), Assert.Single(withBast.OfType<BastEffect>()));
        Assert.Equal(LockStatus.Invalid, Completion(_r.Request(4, B, EX, LockFlags.NoQueueBast, null, Now), 4).Status);
    }

    [Fact]
    public void Noqueue_conversion_keeps_the_old_mode()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        var done = Completion(_r.Convert(2, EX, LockFlags.NoQueue, null, null, Now), 2);
        Assert.Equal(LockStatus.WouldBlock, done.Status);
        Assert.Equal(PR, done.GrantedMode);
        Assert.Equal(PR, _r.Find(2)!.Granted);
        Assert.Empty(_r.ConvertQueue);
    }

    [Fact]
    public void Expedite_grants_a_new_nl_request_ahead_of_the_queues_and_is_invalid_otherwise()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        Queued(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Request(3, C, NL, LockFlags.None, null, Now), 3);

        Assert.Equal(LockStatus.Granted, Completion(_r.Request(4, C, NL, LockFlags.Expedite, null, Now), 4).Status);
        Assert.Equal(LockStatus.Invalid, Completion(_r.Request(5, C, PR, LockFlags.Expedite, null, Now), 5).Status);
        Assert.Equal(LockStatus.Invalid, Completion(_r.Convert(4, NL, LockFlags.Expedite, null, null, Now), 4).Status);
    }

    [Fact]
    public void Cancel_of_a_waiting_request_removes_it_and_lets_the_next_in()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Queued(_r.Request(2, B, EX, LockFlags.None, null, Now), 2);
        Queued(_r.Request(3, C, PR, LockFlags.None, null, Now), 3);

        var effects = _r.Cancel(2);

        var cancelled = Completion(effects, 2);
        Assert.Equal((LockOperation.Request, LockStatus.Cancelled), (cancelled.Operation, cancelled.Status));
        Assert.Equal(LockStatus.Granted, Completion(effects, 3).Status);
        Assert.Null(_r.Find(2));
    }

    [Fact]
    public void Cancel_of_a_conversion_keeps_the_granted_mode_and_cancel_of_an_idle_lock_is_not_pending()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Convert(2, EX, LockFlags.None, null, null, Now), 2);

        var done = Completion(_r.Cancel(2), 2);
        Assert.Equal((LockOperation.Convert, LockStatus.Cancelled, PR), (done.Operation, done.Status, done.GrantedMode));
        Assert.Equal(LockQueue.Granted, _r.Find(2)!.Queue);

        Assert.Equal(LockStatus.NotPending, Completion(_r.Cancel(2), 2).Status);
        Assert.Equal(LockStatus.Invalid, Completion(_r.Cancel(99), 99).Status);
    }

    [Fact]
    public void Unlock_of_a_pending_lock_is_busy_unless_forced()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        Queued(_r.Request(2, B, EX, LockFlags.None, null, Now), 2);

        Assert.Equal(LockStatus.Busy, Completion(_r.Unlock(2, LockFlags.None, null), 2).Status);
        Assert.NotNull(_r.Find(2));

        var effects = _r.Unlock(2, LockFlags.ForceUnlock, null).OfType<CompleteEffect>().ToList();
        Assert.Equal([(LockOperation.Request, LockStatus.Cancelled), (LockOperation.Unlock, LockStatus.Unlocked)], effects.Select(e => (e.Operation, e.Status)));
        Assert.Null(_r.Find(2));

    }

    [Fact]
    public void A_second_operation_while_one_is_pending_is_busy()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Convert(2, EX, LockFlags.None, null, null, Now), 2);

        Assert.Equal(LockStatus.Busy, Completion(_r.Convert(2, CR, LockFlags.None, null, null, Now), 2).Status);
        Assert.Equal(EX, _r.Find(2)!.Requested);
        Assert.Equal(LockQueue.Converting, _r.Find(2)!.Queue);
    }

    [Fact]
    public void Altpr_and_altcw_grant_the_alternative_mode_and_say_so()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        var pr = Completion(_r.Request(2, B, EX, LockFlags.AltPr, null, Now), 2);
        Assert.Equal((LockStatus.Granted, PR), (pr.Status, pr.GrantedMode));
        Assert.True(pr.Flags.HasFlag(LockResultFlags.AltMode));

        var r2 = new LockResourceState("cw");
        Granted(r2.Request(1, A, CW, LockFlags.None, null, Now), 1);
        var cw = Completion(r2.Request(2, B, PR, LockFlags.AltCw, null, Now), 2);
        Assert.Equal((LockStatus.Granted, CW), (cw.Status, cw.GrantedMode));
        Assert.True(cw.Flags.HasFlag(LockResultFlags.AltMode));
        Assert.Equal(LockStatus.Invalid, Completion(r2.Request(3, B, PR, LockFlags.AltCw | LockFlags.AltPr, null, Now), 3).Status);
    }

    [Fact]
    public void Persistent_lock_outlives_its_session_as_an_orphan_that_can_be_adopted()
    {
        Granted(_r.Request(1, A, EX, LockFlags.Persistent, null, Now), 1);
        Granted(_r.Request(2, A, NL, LockFlags.None, null, Now), 2);
        _r.PurgeOwner(A.NodeId, A.Session);

        Assert.Null(_r.Find(2));
        Assert.True(_r.Find(1)!.IsOrphan);
        Assert.Equal(LockStatus.WouldBlock, Completion(_r.Request(3, B, PR, LockFlags.NoQueue, null, Now), 3).Status);
        Assert.Equal(LockStatus.WouldBlock, Completion(_r.Request(4, B, PR, LockFlags.Orphan, null, Now), 4).Status);

        var adopted = Completion(_r.Request(5, B, EX, LockFlags.Orphan, null, Now), 5);
        Assert.Equal((LockStatus.Granted, EX), (adopted.Status, adopted.GrantedMode));
        Assert.Equal(B, _r.Find(5)!.Owner);
        Assert.Null(_r.Find(1));
        Assert.Equal(LockStatus.NotFound, Completion(_r.Request(6, C, EX, LockFlags.Orphan, null, Now), 6).Status);

        // An orphan cannot be unlocked by its old id.
        Assert.Equal(LockStatus.Invalid, Completion(_r.Unlock(1, LockFlags.None, null), 1).Status);
    }

    [Fact]
    public void Purging_a_node_removes_its_locks_and_grants_the_waiters()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        Queued(_r.Request(2, A, EX, LockFlags.None, null, Now), 2);
        Queued(_r.Request(3, B, PR, LockFlags.None, null, Now), 3);

        var effects = _r.PurgeOwner(A.NodeId, session: null);

        Assert.Equal(LockStatus.Granted, Completion(effects, 3).Status);
        Assert.DoesNotContain(effects.OfType<CompleteEffect>(), e => e.Owner == A);
        Assert.Null(_r.Find(1));
        Assert.Null(_r.Find(2));
        Assert.True(Completion(effects, 3).Flags.HasFlag(LockResultFlags.ValNotValid));
    }

    [Fact]
    public void Timeout_is_reported_as_a_deadline_and_expires_only_when_due()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        var queued = _r.Request(2, B, PR, LockFlags.None, TimeSpan.FromSeconds(2), Now);
        Assert.Equal(new ScheduleTimeoutEffect(2, Now + TimeSpan.FromSeconds(2).Ticks), Assert.Single(queued.OfType<ScheduleTimeoutEffect>()));

        var early = _r.Expire(2, Now + TimeSpan.FromSeconds(1).Ticks);
        Assert.Equal(new ScheduleTimeoutEffect(2, Now + TimeSpan.FromSeconds(2).Ticks), Assert.Single(early));

        var done = Completion(_r.Expire(2, Now + TimeSpan.FromSeconds(2).Ticks), 2);
        Assert.Equal(LockStatus.TimedOut, done.Status);
        Assert.Null(_r.Find(2));
        Assert.Empty(_r.Expire(2, Now + TimeSpan.FromSeconds(3).Ticks));
    }

    [Fact]
    public void Conversion_timeout_reverts_to_the_granted_mode()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Queued(_r.Convert(2, EX, LockFlags.None, null, TimeSpan.FromMilliseconds(5), Now), 2);
        var done = Completion(_r.Expire(2, Now + TimeSpan.FromMilliseconds(5).Ticks), 2);
        Assert.Equal((LockOperation.Convert, LockStatus.TimedOut, PR), (done.Operation, done.Status, done.GrantedMode));
        Assert.Equal(LockQueue.Granted, _r.Find(2)!.Queue);
    }

    [Fact]
    public void Lvb_is_written_on_release_from_pw_or_ex_with_valblk_and_returned_on_grant_with_valblk()
    {
        var value = Bytes(0x2A);
        Granted(_r.Request(1, A, EX, LockFlags.ValBlk, null, Now), 1);
        Completion(_r.Unlock(1, LockFlags.ValBlk, value), 1);

        var withValblk = Completion(_r.Request(2, B, PR, LockFlags.ValBlk, null, Now), 2);
        Assert.Equal(Padded(value), withValblk.Lvb);
        Assert.Equal(1, withValblk.LvbSeq);
        Assert.Null(Completion(_r.Request(3, C, PR, LockFlags.None, null, Now), 3).Lvb);

        // A PR holder cannot write: its unlock with VALBLK leaves the LVB alone.
        Completion(_r.Unlock(2, LockFlags.ValBlk, Bytes(0x99)), 2);
        Assert.Equal(Padded(value), _r.Lvb.ToArray());
    }

    [Fact]
    public void Lvb_is_written_on_down_conversion_from_pw_and_read_on_up_conversion()
    {
        Granted(_r.Request(1, A, PW, LockFlags.None, null, Now), 1);
        Completion(_r.Convert(1, CR, LockFlags.ValBlk, Bytes(7), null, Now), 1);
        Assert.Equal(Padded(Bytes(7)), _r.Lvb.ToArray());

        // Without VALBLK a release from PW leaves the value as it was.
        Completion(_r.Convert(1, PW, LockFlags.None, null, null, Now), 1);
        Completion(_r.Convert(1, NL, LockFlags.None, Bytes(8), null, Now), 1);
        Assert.Equal(Padded(Bytes(7)), _r.Lvb.ToArray());

        var up = Completion(_r.Convert(1, EX, LockFlags.ValBlk, null, null, Now), 1);
        Assert.Equal(Padded(Bytes(7)), up.Lvb);
    }

    [Fact]
    public void Ivvalblk_and_a_purged_writer_mark_the_lvb_not_valid_until_the_next_write()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        Completion(_r.Unlock(1, LockFlags.IvValBlk, null), 1);
        Assert.True(Completion(_r.Request(2, B, PR, LockFlags.ValBlk, null, Now), 2).Flags.HasFlag(LockResultFlags.ValNotValid));
        Completion(_r.Unlock(2, LockFlags.None, null), 2);

        Granted(_r.Request(3, B, PW, LockFlags.ValBlk, null, Now), 3);
        Completion(_r.Unlock(3, LockFlags.ValBlk, Bytes(1)), 3);
        Assert.False(_r.ValueNotValid);

        Granted(_r.Request(4, C, PW, LockFlags.None, null, Now), 4);
        _r.PurgeOwner(C.NodeId, null);
        var after = Completion(_r.Request(5, A, CR, LockFlags.ValBlk, null, Now), 5);
        Assert.True(after.Flags.HasFlag(LockResultFlags.ValNotValid));
        Assert.Equal(Padded(Bytes(1)), after.Lvb);
    }

    [Fact]
    public void Lvb_longer_than_the_lockspace_length_is_invalid_and_lengths_must_be_multiples_of_8()
    {
        Granted(_r.Request(1, A, EX, LockFlags.None, null, Now), 1);
        Assert.Equal(LockStatus.Invalid, Completion(_r.Unlock(1, LockFlags.ValBlk, new byte[65]), 1).Status);
        Assert.NotNull(_r.Find(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LockResourceState("x", 60));
        Assert.Equal(32, new LockResourceState("y", 32).Lvb.Length);
    }

    [Fact]
    public void Basts_go_once_per_blocking_episode_to_every_holder_in_the_way_with_the_blocked_mode()
    {
        Granted(_r.Request(1, A, PR, LockFlags.None, null, Now), 1);
        Granted(_r.Request(2, B, PR, LockFlags.None, null, Now), 2);
        Granted(_r.Request(3, C, CR, LockFlags.None, null, Now), 3);

        var first = _r.Request(4, C, PW, LockFlags.None, null, Now);
        Assert.Equal([new BastEffect(1, A, PW), new BastEffect(2, B, PW)], first.OfType<BastEffect>());

        // Same episode: another PW waiter adds nothing; an EX waiter is news, also to the CR holder.
        Assert.Empty(_r.Request(5, C, PW, LockFlags.None, null, Now).OfType<BastEffect>());
        Assert.Equal([new BastEffect(1, A, EX), new BastEffect(2, B, EX), new BastEffect(3, C, EX)], _r.Request(6, A, EX, LockFlags.None, null, Now).OfType<BastEffect>());

        // A regrant (down-conversion) starts a new episode for that holder.
        var down = _r.Convert(1, NL, LockFlags.None, null, null, Now);
        Assert.Equal(LockStatus.Granted, Completion(down, 1).Status);
        Assert.Empty(down.OfType<BastEffect>());
        var up = _r.Convert(1, CR, LockFlags.None, null, null, Now);
        Assert.Equal(LockStatus.Granted, Completion(up, 1).Status);
        Assert.Equal([new BastEffect(1, A, EX)], up.OfType<BastEffect>());
    }

    [Fact]
    public void Reassert_rebuilds_the_grant_queue_and_keeps_the_newest_lvb_of_nl_and_cr_holders_not_valid()
    {
        _r.BeginRebuild();
        Granted(_r.Reassert(1, A, NL, LockFlags.ValBlk, Bytes(1), 3), 1);
        Granted(_r.Reassert(2, B, CR, LockFlags.ValBlk, Bytes(2), 5), 2);
        Granted(_r.Reassert(3, C, NL, LockFlags.ValBlk, Bytes(3), 4), 3);
        Assert.Equal(Padded(Bytes(2)), _r.Lvb.ToArray());
        Assert.Equal(5, _r.LvbSeq);
        Assert.True(_r.ValueNotValid, "NL/CR holders read the LVB at some grant; none of them can vouch it is the last write");
        Assert.Equal(LockStatus.Invalid, Completion(_r.Reassert(4, C, EX, LockFlags.None, null, 0), 4).Status);
    }

    [Fact]
    public void Rebuild_keeps_an_nl_valblk_copy_and_ignores_copies_of_locks_without_valblk()
    {
        // The counter was 7 when A took NL with VALBLK; B's NL lock never asked for the LVB, whatever its handle holds.
        _r.BeginRebuild();
        Granted(_r.Reassert(1, A, NL, LockFlags.ValBlk, Bytes(7), 7), 1);
        Granted(_r.Reassert(2, B, NL, LockFlags.None, Bytes(0), 9), 2);
        Assert.Equal(Padded(Bytes(7)), _r.Lvb.ToArray());
        Assert.Equal(7, _r.LvbSeq);

        var ex = Completion(_r.Request(3, C, EX, LockFlags.ValBlk, null, Now), 3);
        Assert.Equal((LockStatus.Granted, LockResultFlags.ValNotValid), (ex.Status, ex.Flags));
        Assert.Equal(Padded(Bytes(7)), ex.Lvb);
    }

    [Fact]
    public void Rebuild_takes_the_copy_of_a_valblk_lock_above_cr_as_valid_over_newer_nl_copies()
    {
        // fs/dlm's recover_lvb: a CW/PR/PW/EX holder excludes any writer since its grant, so its copy is the LVB.
        _r.BeginRebuild();
        Granted(_r.Reassert(1, A, NL, LockFlags.ValBlk, Bytes(9), 9), 1);
        Granted(_r.Reassert(2, B, PR, LockFlags.ValBlk, Bytes(8), 8), 2);
        Granted(_r.Reassert(3, C, NL, LockFlags.ValBlk, Bytes(10), 10), 3);
        AssertLvb(_r, Bytes(8), 8, notValid: false);

        var reader = Completion(_r.Request(4, C, PR, LockFlags.ValBlk, null, Now), 4);
        Assert.Equal((LockStatus.Granted, LockResultFlags.None), (reader.Status, reader.Flags));
        Assert.Equal(Padded(Bytes(8)), reader.Lvb);
    }

    [Fact]
    public void Rebuild_without_any_valblk_lock_leaves_zeros_not_valid_and_a_surviving_resource_keeps_its_lvb()
    {
        _r.BeginRebuild();
        Granted(_r.Reassert(1, A, PR, LockFlags.None, Bytes(5), 5), 1);
        AssertLvb(_r, [], 0, notValid: true);

        // A resource that never lost its master: its LVB is the current one, whatever a re-asserted copy says.
        var survivor = new LockResourceState("kept");
        Granted(survivor.Request(1, A, EX, LockFlags.ValBlk, null, Now), 1);
        Completion(survivor.Unlock(1, LockFlags.ValBlk, Bytes(3)), 1);
        Granted(survivor.Reassert(2, B, PR, LockFlags.ValBlk, Bytes(2), 9), 2);
        AssertLvb(survivor, Bytes(3), 1, notValid: false);
    }

    [Fact]
    public void Rebuild_ends_when_grants_resume_later_copies_change_nothing()
    {
        _r.BeginRebuild();
        Granted(_r.Reassert(1, A, NL, LockFlags.ValBlk, Bytes(4), 4), 1);
        _r.ResumeGrants();
        Granted(_r.Reassert(2, B, PR, LockFlags.ValBlk, Bytes(6), 6), 2);
        AssertLvb(_r, Bytes(4), 4, notValid: true);
    }

    [Fact]
    public void Adopting_an_orphan_reports_the_orphan_gone_to_its_last_owner()
    {
        Granted(_r.Request(1, A, PR, LockFlags.Persistent, null, Now), 1);
        _r.PurgeOwner(A.NodeId, A.Session);
        var adopt = _r.Request(2, B, PR, LockFlags.Orphan, null, Now);
        Granted(adopt, 2);
        Assert.Equal([new OrphanGoneEffect(1, A)], adopt.OfType<OrphanGoneEffect>());
    }

    [Fact]
    public void Reasserted_orphan_comes_back_as_an_orphan_that_can_be_adopted_with_its_lvb()
    {
        // A rebuilt resource: A's node re-asserts the PW orphan its ended session left, B a live CR beside it.
        _r.BeginRebuild();
        Granted(_r.Reassert(1, A, PW, LockFlags.Persistent | LockFlags.Orphan | LockFlags.ValBlk, Bytes(7), 9), 1);
        Granted(_r.Reassert(2, B, CR, LockFlags.None, null, 0), 2);
        var orphan = _r.Find(1)!;
        Assert.True(orphan.IsOrphan);
        Assert.True(orphan.Persistent);
        Assert.Equal(9, _r.LvbSeq);

        // It is not a lock anyone can use: no unlock or conversion by the old id, and an EX request waits.
        Assert.Equal(LockStatus.Invalid, Completion(_r.Unlock(1, LockFlags.None, null), 1).Status);
        Assert.Equal(LockStatus.WouldBlock, Completion(_r.Request(3, C, EX, LockFlags.NoQueue, null, Now), 3).Status);

        var adopt = _r.Request(4, C, PW, LockFlags.Orphan | LockFlags.ValBlk, null, Now);
        var adopted = Completion(adopt, 4);
        Assert.Equal((LockStatus.Granted, PW), (adopted.Status, adopted.GrantedMode));
        Assert.Equal(Padded(Bytes(7)), adopted.Lvb);
        Assert.Equal([new OrphanGoneEffect(1, A)], adopt.OfType<OrphanGoneEffect>());
        Assert.False(_r.Find(4)!.IsOrphan);
    }

    [Fact]
    public void In_a_rebuild_a_live_lock_wins_over_a_conflicting_orphan_and_an_orphan_never_displaces_a_lock()
    {
        // The orphan was adopted before the old master died, and the news died with it: both come back.
        Granted(_r.Reassert(1, A, EX, LockFlags.Persistent | LockFlags.Orphan, null, 0), 1);
        var live = _r.Reassert(2, B, EX, LockFlags.Persistent, null, 0);
        Granted(live, 2);
        Assert.Equal([new OrphanGoneEffect(1, A)], live.OfType<OrphanGoneEffect>());
        Assert.Null(_r.Find(1));

        // The other order: the orphan arrives second and is refused; the live lock stays.
        Assert.Equal(LockStatus.Invalid, Completion(_r.Reassert(3, A, PR, LockFlags.Persistent | LockFlags.Orphan, null, 0), 3).Status);
        Assert.Null(_r.Find(3));
        Assert.Equal(EX, _r.Find(2)!.Granted);

        // Two conflicting live locks are still a double grant: the second is refused.
        Assert.Equal(LockStatus.Invalid, Completion(_r.Reassert(4, C, PR, LockFlags.None, null, 0), 4).Status);
    }

    [Fact]
    public void Empty_resource_may_passivate_but_not_while_any_lock_even_nl_exists()
    {
        Assert.True(_r.IsEmpty);
        Granted(_r.Request(1, A, NL, LockFlags.None, null, Now), 1);
        Assert.False(_r.IsEmpty);
        Completion(_r.Unlock(1, LockFlags.None, null), 1);
        Assert.True(_r.IsEmpty);
    }

    private static byte[] Bytes(byte b) => [b, (byte)(b + 1), (byte)(b + 2)];

    private static void AssertLvb(LockResourceState r, byte[] value, long seq, bool notValid)
    {
        Assert.Equal(Padded(value), r.Lvb.ToArray());
        Assert.Equal((seq, notValid), (r.LvbSeq, r.ValueNotValid));
    }

    private static byte[] Padded(byte[] bytes)
    {
        var full = new byte[LockResourceState.DefaultLvbLength];
        bytes.CopyTo(full, 0);
        return full;
    }

    private static CompleteEffect Completion(IReadOnlyList<LockEffect> effects, long lockId) =>
        Assert.Single(effects.OfType<CompleteEffect>(), e => e.LockId == lockId);

    private static void Granted(IReadOnlyList<LockEffect> effects, long lockId) =>
        Assert.Equal(LockStatus.Granted, Completion(effects, lockId).Status);

    private static void Queued(IReadOnlyList<LockEffect> effects, long lockId) =>
        Assert.DoesNotContain(effects.OfType<CompleteEffect>(), e => e.LockId == lockId);
}
