using System.Collections.Concurrent;
using System.Threading.Tasks.Sources;
using Lockstep.Persistence.Disk;

namespace Lockstep.Actors.BlockIo;

/// <summary>
/// One leg's write of one request, handed to a <see cref="LegWriter"/> and awaited by the request. Whoever claims
/// it first runs it: the leg's writer thread, or the request's own thread once its other leg is written
/// (<see cref="TryRunHere"/>). Pooled with its <see cref="IoOp"/>, so it allocates nothing per request.
/// </summary>
internal sealed class LegWrite : IValueTaskSource
{
    private const int Queued = 0;
    private const int Claimed = 1;

    // The continuation (the rest of the request: release, reply to the client) runs on the thread that finished the
    // write. A hop to the pool here would cost the wake-up the writer thread exists to save.
    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = false };
    private int _state = Claimed;
    private ILegDevice? _device;
    private long _offset;
    private ReadOnlyMemory<byte> _data;

    /// <summary>
    /// Arms the item for a write of <paramref name="data"/> at <paramref name="offset"/> and returns what the request
    /// awaits. The item may still sit in a writer's queue from an earlier use (claimed, so skipped); the fields are
    /// written before the state opens the claim, so whoever wins the claim sees this write.
    /// </summary>
    public ValueTask Prepare(ILegDevice device, long offset, ReadOnlyMemory<byte> data)
    {
        _device = device;
        _offset = offset;
        _data = data;
        Volatile.Write(ref _state, Queued);
        return new ValueTask(this, _core.Version);
    }

    /// <summary>Claims the write; true for exactly one caller per <see cref="Prepare"/>.</summary>
    public bool TryClaim() => Interlocked.Exchange(ref _state, Claimed) == Queued;

    /// <summary>Runs the write on this thread if nobody has claimed it yet; the request's thread calls this after its own leg.</summary>
    public void TryRunHere()
    {
        if (TryClaim())
        {
            Run();
        }
    }

    /// <summary>Runs the claimed write on this thread and completes the request's wait (with the leg's error, if any).</summary>
    public void Run()
    {
        try
        {
            var write = _device!.WriteOnCallerAsync(_offset, _data);
            if (!write.IsCompletedSuccessfully)
            {
                // A buffered leg completes at once; a wrapped or O_DIRECT device may not, and this thread has nothing else to do.
                write.AsTask().GetAwaiter().GetResult();
            }
        }
        catch (Exception e)
        {
            Finish(e);
            return;
        }

        Finish(null);
    }

    private void Finish(Exception? error)
    {
        // The request may reuse this item as soon as it resumes: drop the references first.
        _device = null;
        _data = default;
        if (error is null)
        {
            _core.SetResult(true);
        }
        else
        {
            _core.SetException(error);
        }
    }

    public void GetResult(short token)
    {
        try
        {
            _core.GetResult(token);
        }
        finally
        {
            _core.Reset();
        }
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}

/// <summary>
/// A thread that writes one buffered leg of a mirror (writeback volumes with two legs or more). A request writes its
/// first leg on its own thread (a page-cache copy) and queues the others here, one writer per leg, so the legs are
/// copied at the same time on two cores. A request that finds its queued write not yet started when its own leg is
/// done runs it itself (<see cref="LegWrite.TryRunHere"/>): nobody waits for a writer that is still waking up.
/// <para>
/// Why a thread of its own and not the thread pool: the pool wakes a worker (futex + context switch, dear on this
/// VM) for every queued item and runs the request's continuation on yet another pass through its queues. This thread
/// is woken only when it sleeps, drains everything queued meanwhile in one go, and finishes the request where the
/// write ended (docs/benchmarks.md, "Two-leg writes").
/// </para>
/// </summary>
internal sealed class LegWriter : IDisposable
{
    private readonly ConcurrentQueue<LegWrite> _queue = new();
    private readonly ManualResetEventSlim _wake = new(false, spinCount: 0); // no spinning on 2 shared cores
    private readonly Thread _thread;
    private int _sleeping;
    private volatile bool _stopping;

    public LegWriter(string name)
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>Whether the thread is asleep (waiting for a wake-up); for tests.</summary>
    internal bool IsSleeping => Volatile.Read(ref _sleeping) == 1;

    /// <summary>Writes run here so far (claimed by this thread, not by the requests).</summary>
    public long WritesRun => Interlocked.Read(ref _writesRun);

    private long _writesRun;

    /// <summary>
    /// Hands <paramref name="write"/> (already prepared) to this thread. <paramref name="wake"/>: wake the thread if it
    /// sleeps; without it, a sleeping thread is left asleep and the write is not queued. Either way the caller must call
    /// <see cref="LegWrite.TryRunHere"/> once its own leg is written, which runs whatever this thread has not started
    /// (also after the writer stopped).
    /// </summary>
    public void Enqueue(LegWrite write, bool wake)
    {
        if (_stopping || (!wake && Volatile.Read(ref _sleeping) == 1))
        {
            return;
        }

        _queue.Enqueue(write); // a full fence: the thread's recheck after announcing sleep sees it, or we see the announcement
        if (Volatile.Read(ref _sleeping) == 1 && Interlocked.Exchange(ref _sleeping, 0) == 1)
        {
            _wake.Set();
        }
    }

    private void Loop()
    {
        while (true)
        {
            while (_queue.TryDequeue(out var write))
            {
                // Claimed already: its request ran it, or it is a stale entry of an item used again since.
                if (write.TryClaim())
                {
                    // Counted before it runs: Run completes the request, whose continuation may read the count at once.
                    Interlocked.Increment(ref _writesRun);
                    write.Run();
                }
            }

            if (_stopping)
            {
                return;
            }

            _wake.Reset();
            Interlocked.Exchange(ref _sleeping, 1);
            if (!_queue.IsEmpty || _stopping)
            {
                Interlocked.Exchange(ref _sleeping, 0);
                continue;
            }

            _wake.Wait();
        }
    }

    /// <summary>Stops the thread after it ran what is queued (the volume has no request in flight by then).</summary>
    public void Dispose()
    {
        _stopping = true;
        Interlocked.Exchange(ref _sleeping, 0);
        _wake.Set();
        if (Thread.CurrentThread != _thread)
        {
            // Called from this thread (a request's continuation ran here and closed the volume): it ends on its own.
            _thread.Join();
        }
    }
}
