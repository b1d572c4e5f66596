using CsCheck;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>
/// Random request/convert/unlock/cancel/timeout/purge sequences from several owners against one
/// resource. After every command the granted modes must be pairwise compatible and every pending
/// lock must have an operation its owner still waits for; at the end, once every holder releases,
/// every operation must have completed and the resource must be empty (no starvation, no lost request).
/// </summary>
public sealed class LockResourcePropertyTests
{
    private static readonly LockOwner[] Owners =
    [
        new("n1", 1, Guid.Parse("00000000-0000-0000-0000-000000000001")),
        new("n1", 1, Guid.Parse("00000000-0000-0000-0000-000000000002")),
        new("n2", 2, Guid.Parse("00000000-0000-0000-0000-000000000003")),
        new("n3", 3, Guid.Parse("00000000-0000-0000-0000-000000000004")),
    ];

    private static readonly LockFlags[] FlagBits =
    [
        LockFlags.NoQueue, LockFlags.ValBlk, LockFlags.QueCvt, LockFlags.ConvDeadlk, LockFlags.Expedite,
        LockFlags.AltPr, LockFlags.AltCw, LockFlags.IvValBlk, LockFlags.NoQueueBast, LockFlags.ForceUnlock,
    ];

    /// <summary>One random step: what to do (kind), to which of 8 lock slots, with which mode, flags and timeout.</summary>
    public sealed record Step(int Kind, int Slot, LockMode Mode, int FlagMask, int Timeout);

    private static readonly Gen<Step> StepGen = Gen.Select(Gen.Int[0, 9], Gen.Int[0, 7], Gen.Int[0, 5], Gen.Int[0, 1023], Gen.Int[0, 40],
        (kind, slot, mode, flags, timeout) => new Step(kind, slot, (LockMode)mode, flags, timeout));

    [Fact]
    public void Granted_modes_stay_compatible_and_every_request_completes_once_holders_release()
    {
        StepGen.Array[1, 150].Sample(steps => new Driver().Run(steps), iter: 3000);
    }

    private sealed class Driver
    {
        private readonly LockResourceState _state = new("prop", 16);
        private readonly long?[] _slots = new long?[8];
        private readonly HashSet<(long Id, LockOperation Op)> _outstanding = [];
        private readonly Random _random = new(1);
        private long _nextId = 1;
        private long _now = 1_000;

        public void Run(Step[] steps)
        {
            foreach (var step in steps)
            {
                Apply(step);
                CheckInvariants();
            }

            // Release phase: no more timeouts fire; every idle holder unlocks until nothing is left.
            for (var round = 0; !_state.IsEmpty; round++)
            {
                var idle = _state.GrantQueue.Where(l => !l.IsPending && !l.IsOrphan).Select(l => l.Id).ToList();
                if (idle.Count == 0 || round > 200)
                {
                    throw new InvalidOperationException(
                        $"Starvation: nothing to release but {_state.ConvertQueue.Count} converting and {_state.WaitQueue.Count} waiting locks remain.");
                }

                foreach (var id in idle)
                {
                    Issue(id, LockOperation.Unlock);
                    Observe(_state.Unlock(id, LockFlags.None, null));
                    CheckInvariants();
                }
            }

            if (_outstanding.Count > 0)
            {
                throw new InvalidOperationException($"Operations never completed: {string.Join(", ", _outstanding)}");
            }
        }

        private void Apply(Step step)
        {
            var flags = LockFlags.None;
            for (var bit = 0; bit < FlagBits.Length; bit++)
            {
                // Each flag on with probability ~1/4 so most requests stay plain.
                if ((step.FlagMask >> bit & 1) == 1 && _random.Next(2) == 0)
                {
                    flags |= FlagBits[bit];
                }
            }

            TimeSpan? timeout = step.Timeout is > 0 and < 20 ? TimeSpan.FromTicks(step.Timeout) : null;
            var owner = Owners[step.Slot % Owners.Length];
            _now += 1;
            var id = _slots[step.Slot];
            var lkb = id is { } known ? _state.Find(known) : null;
            switch (step.Kind)
            {
                case 8:
                    // Timers fire for everything due.
                    _now += step.Timeout;
                    foreach (var due in _state.ConvertQueue.Concat(_state.WaitQueue).Where(l => l.DeadlineTicks != 0 && l.DeadlineTicks <= _now).Select(l => l.Id).ToList())
                    {
                        Observe(_state.Expire(due, _now));
                    }

                    return;
                case 9 when step.FlagMask % 7 == 0:
                    // The owner's session ends: its locks vanish and nobody waits for their completions.
                    foreach (var gone in _state.GrantQueue.Concat(_state.ConvertQueue).Concat(_state.WaitQueue).Where(l => l.Owner == owner).Select(l => l.Id).ToList())
                    {
                        _outstanding.RemoveWhere(o => o.Id == gone);
                    }

                    Observe(_state.PurgeOwner(owner.NodeId, owner.Session));
                    return;
            }

            if (lkb is null)
            {
                var newId = _nextId++;
                _slots[step.Slot] = newId;
                Issue(newId, LockOperation.Request);
                Observe(_state.Request(newId, owner, step.Mode, flags & ~LockFlags.ForceUnlock, timeout, _now));
            }
            else if (lkb.IsPending)
            {
                if (step.Kind % 2 == 0)
                {
                    Observe(_state.Cancel(lkb.Id));
                }
                else
                {
                    Issue(lkb.Id, LockOperation.Unlock);
                    Observe(_state.Unlock(lkb.Id, flags & (LockFlags.ForceUnlock | LockFlags.ValBlk), Lvb()));
                }
            }
            else if (step.Kind < 5)
            {
                Issue(lkb.Id, LockOperation.Convert);
                Observe(_state.Convert(lkb.Id, step.Mode, flags & ~LockFlags.ForceUnlock, Lvb(), timeout, _now));
            }
            else
            {
                Issue(lkb.Id, LockOperation.Unlock);
                Observe(_state.Unlock(lkb.Id, flags & (LockFlags.ValBlk | LockFlags.IvValBlk), Lvb()));
            }
        }

        private byte[] Lvb() => BitConverter.GetBytes(_now);

        private void Issue(long id, LockOperation op)
        {
            if (!_outstanding.Add((id, op)))
            {
                throw new InvalidOperationException($"{op} of lock {id} issued twice");
            }
        }

        private void Observe(IReadOnlyList<LockEffect> effects)
        {
            foreach (var done in effects.OfType<CompleteEffect>())
            {
                if (done.Operation == LockOperation.Cancel)
                {
                    continue;
                }

                if (!_outstanding.Remove((done.LockId, done.Operation)))
                {
                    throw new InvalidOperationException($"Completion nobody waited for: {done}");
                }
            }

            foreach (var bast in effects.OfType<BastEffect>())
            {
                var holder = _state.Find(bast.LockId) ?? throw new InvalidOperationException($"Bast to a lock that does not exist: {bast}");
                if (LockModes.Compatible(holder.Granted!.Value, bast.BlockedMode))
                {
                    throw new InvalidOperationException($"Bast to a holder that is not in the way: {bast} holds {holder.Granted}");
                }
            }
        }

        private void CheckInvariants()
        {
            var holders = _state.GrantQueue.Concat(_state.ConvertQueue).ToList();
            for (var i = 0; i < holders.Count; i++)
            {
                for (var j = i + 1; j < holders.Count; j++)
                {
                    if (!LockModes.Compatible(holders[i].Granted!.Value, holders[j].Granted!.Value))
                    {
                        throw new InvalidOperationException($"Incompatible grants: {holders[i].Id}={holders[i].Granted} and {holders[j].Id}={holders[j].Granted}");
                    }
                }
            }

            foreach (var pending in _state.ConvertQueue.Concat(_state.WaitQueue))
            {
                var op = pending.Granted is null ? LockOperation.Request : LockOperation.Convert;
                if (!_outstanding.Contains((pending.Id, op)))
                {
                    throw new InvalidOperationException($"Lock {pending.Id} is pending but its owner was already answered");
                }
            }

            foreach (var (id, op) in _outstanding)
            {
                if (op is LockOperation.Request or LockOperation.Convert && _state.Find(id) is not { IsPending: true })
                {
                    throw new InvalidOperationException($"{op} of lock {id} is neither pending nor answered");
                }
            }
        }
    }
}
