using System.Collections.Concurrent;
using System.Threading.Tasks.Sources;
using Microsoft.Win32.SafeHandles;

namespace Lockstep.Persistence.Disk;

/// <summary>
/// Runs a blocking system call (fdatasync, fallocate, ioctl) on the thread pool and completes a ValueTask,
/// from a pool of reusable work items: <c>Task.Run</c> would allocate a closure and a task per flush, and
/// the pipeline flushes a bitmap block for every first write into a clean chunk.
/// </summary>
internal sealed class BlockingSyscall : IThreadPoolWorkItem, IValueTaskSource
{
    private static readonly ConcurrentQueue<BlockingSyscall> Pool = new();
    private ManualResetValueTaskSourceCore<bool> _core;
    private Func<SafeFileHandle, long, long, int, string?>? _call;
    private SafeFileHandle? _handle;
    private long _a;
    private long _b;
    private int _mode;

    /// <summary>
    /// Queues <paramref name="call"/> (a static lambda: returns null on success or the error text) and returns a
    /// ValueTask that fails with <see cref="IOException"/> carrying that text.
    /// </summary>
    public static ValueTask Run(Func<SafeFileHandle, long, long, int, string?> call, SafeFileHandle handle, long a, long b, int mode)
    {
        if (!Pool.TryDequeue(out var item))
        {
            item = new BlockingSyscall();
        }

        item._call = call;
        item._handle = handle;
        item._a = a;
        item._b = b;
        item._mode = mode;
        var version = item._core.Version;
        ThreadPool.UnsafeQueueUserWorkItem(item, preferLocal: false);
        return new ValueTask(item, version);
    }

    public void Execute()
    {
        string? error;
        try
        {
            error = _call!(_handle!, _a, _b, _mode);
        }
        catch (Exception e) when (e is ObjectDisposedException or IOException)
        {
            error = e.Message;
        }

        if (error is null)
        {
            _core.SetResult(true);
        }
        else
        {
            _core.SetException(new IOException(error));
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
            _call = null;
            _handle = null;
            Pool.Enqueue(this);
        }
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
