using System.Threading.Tasks.Sources;

namespace Lockstep.Actors.BlockIo;

/// <summary>
/// One in-flight modifying request of a <see cref="MirrorVolume"/>: the handle the admission and bitmap states
/// park, the awaitable the pipeline wakes, and scratch space for fanning out to the legs. Pooled per volume, so
/// a request allocates nothing in steady state.
/// </summary>
internal sealed class IoOp : IValueTaskSource
{
    // Continuations run on the thread pool: whoever wakes a request (the bitmap flusher, another request leaving
    // admission) must not end up running that request's whole write inline.
    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };

    public IoOp(int legs)
    {
        LegTasks = new ValueTask[legs];
        LegActive = new bool[legs];
        LegWrites = new LegWrite[legs];
        for (var i = 0; i < legs; i++)
        {
            LegWrites[i] = new LegWrite();
        }
    }

    /// <summary>Bitmap generation this request waits for.</summary>
    public long WaitGeneration { get; set; }

    /// <summary>Chunks registered with the bitmap state (valid when <see cref="Marked"/>).</summary>
    public long FirstChunk { get; set; }

    public long LastChunk { get; set; }

    public bool Marked { get; set; }

    public ValueTask[] LegTasks { get; }

    public bool[] LegActive { get; }

    /// <summary>Per leg: the write handed to that leg's <see cref="LegWriter"/>, if the volume has writers.</summary>
    public LegWrite[] LegWrites { get; }

    /// <summary>Scratch list for the requests this one's exit admits.</summary>
    public List<IoOp> Woken { get; } = [];

    public ValueTask WaitAsync() => new(this, _core.Version);

    public void Signal() => _core.SetResult(true);

    public void Fail(Exception error) => _core.SetException(error);

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

/// <summary>An auto-reset event for one waiter (the bitmap flusher) that allocates nothing per wait.</summary>
internal sealed class AutoResetSignal : IValueTaskSource
{
    private readonly Lock _lock = new();
    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };
    private bool _pending;
    private bool _waiting;

    public void Set()
    {
        lock (_lock)
        {
            if (!_waiting)
            {
                _pending = true;
                return;
            }

            _waiting = false;
        }

        _core.SetResult(true);
    }

    public ValueTask WaitAsync()
    {
        lock (_lock)
        {
            if (_pending)
            {
                _pending = false;
                return ValueTask.CompletedTask;
            }

            _core.Reset();
            _waiting = true;
            return new ValueTask(this, _core.Version);
        }
    }

    public void GetResult(short token) => _core.GetResult(token);

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
