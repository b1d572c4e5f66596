using System.Diagnostics;

namespace Lockstep.Actors.BlockIo;

/// <summary>
/// Whether a buffered leg's write may still run on the request's own thread. That thread is usually an NBD receive
/// loop serving many connections: a page-cache copy takes microseconds, but a write the kernel holds in dirty-page
/// throttling or behind an ext4 journal commit takes milliseconds to seconds, and every connection on that loop waits
/// with it. The guard watches each inline write's time; after a slow one, this leg's writes go to the thread pool for
/// a cooldown, which doubles while the leg stays slow (a storm costs the loop one slow write per cooldown, not one per
/// request) and returns to its base after a fast inline write. Measured: docs/benchmarks.md, "A write storm on one
/// volume beside reads of another".
/// </summary>
/// <remarks>
/// Called from any request thread at once; the fields are read and written without a lock. A race can let one more
/// write run inline or end a cooldown early, which costs latency once but never correctness: either path writes the
/// same bytes.
/// </remarks>
public sealed class InlineWriteGuard
{
    private readonly long _slowTicks;
    private readonly long _baseCooldownTicks;
    private readonly long _maxCooldownTicks;
    private long _offLoopUntil = long.MinValue;
    private long _cooldownTicks;
    private long _slowWrites;

    /// <param name="slowTicks">An inline write that took at least this long counts as slow.</param>
    /// <param name="baseCooldownTicks">How long writes stay off the caller's thread after the first slow one.</param>
    /// <param name="maxCooldownTicks">The longest cooldown, reached by doubling while writes keep being slow.</param>
    public InlineWriteGuard(long slowTicks, long baseCooldownTicks, long maxCooldownTicks)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slowTicks, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(baseCooldownTicks, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCooldownTicks, baseCooldownTicks);
        _slowTicks = slowTicks;
        _baseCooldownTicks = baseCooldownTicks;
        _maxCooldownTicks = maxCooldownTicks;
        _cooldownTicks = baseCooldownTicks;
    }

    [ThreadStatic]
    private static bool t_callerServesOtherConnections;

    /// <summary>
    /// Set by a thread that serves several connections (an NBD receive loop) before it runs one of them: true while
    /// other connections share the thread, the only case where a blocked write delays someone else and the guard is
    /// consulted. False on every other thread: a pool or writer thread that blocks delays only its own request (the
    /// pool has other threads), so it writes inline as before.
    /// </summary>
    public static bool CallerServesOtherConnections
    {
        get => t_callerServesOtherConnections;
        set => t_callerServesOtherConnections = value;
    }

    /// <summary>
    /// Whether a write of this leg may run on the calling thread now: always on a thread that serves no other
    /// connection, else unless a cooldown runs. <paramref name="started"/> is the start to hand to
    /// <see cref="InlineFinished"/>: 0 on a thread that serves no other connection, whose writes are neither timed
    /// nor counted (blocking there delays only the write's own request).
    /// </summary>
    public bool TryStartInline(out long started)
    {
        if (!t_callerServesOtherConnections)
        {
            started = 0;
            return true;
        }

        started = Stopwatch.GetTimestamp();
        return MayWriteInline(started);
    }

    /// <summary>The write <see cref="TryStartInline"/> let run on this thread has returned.</summary>
    public void InlineFinished(long started)
    {
        if (started != 0)
        {
            Observe(started, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Inline writes that were slow (each started a cooldown).</summary>
    public long SlowWrites => Volatile.Read(ref _slowWrites);

    /// <summary>The cooldown the next slow write starts.</summary>
    public long NextCooldownTicks => Volatile.Read(ref _cooldownTicks);

    /// <summary>Whether a write starting at <paramref name="now"/> may run on the caller's thread.</summary>
    public bool MayWriteInline(long now) => now >= Volatile.Read(ref _offLoopUntil);

    /// <summary>An inline write ran from <paramref name="started"/> to <paramref name="finished"/>.</summary>
    public void Observe(long started, long finished)
    {
        if (finished - started < _slowTicks)
        {
            // Fast again after a storm: the next slow write starts from the base cooldown.
            if (Volatile.Read(ref _cooldownTicks) != _baseCooldownTicks && finished >= Volatile.Read(ref _offLoopUntil))
            {
                Volatile.Write(ref _cooldownTicks, _baseCooldownTicks);
            }

            return;
        }

        Interlocked.Increment(ref _slowWrites);
        var cooldown = Volatile.Read(ref _cooldownTicks);
        Volatile.Write(ref _offLoopUntil, finished + cooldown);
        Volatile.Write(ref _cooldownTicks, Math.Min(cooldown * 2, _maxCooldownTicks));
    }
}
