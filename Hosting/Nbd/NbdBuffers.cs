using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Lockstep.Hosting.Nbd;

/// <summary>A pooled payload buffer: a window of a pinned array, starting on a 4 KiB boundary.</summary>
internal readonly struct NbdBuffer(byte[] array, int offset, int length)
{
    public byte[] Array { get; } = array;

    public int Offset { get; } = offset;

    public int Length { get; } = length;

    public Memory<byte> Memory => Array.AsMemory(Offset, Length);

    public ArraySegment<byte> Segment => new(Array, Offset, Length);
}

/// <summary>
/// Payload buffers for the NBD server: pinned arrays in power-of-two classes from 4 KiB to 32 MiB whose
/// data starts 4 KiB-aligned, so a device doing O_DIRECT can use them without a bounce copy, and a vectored
/// send can still take them as array segments. Steady-state renting does not allocate.
/// </summary>
internal sealed class NbdBufferPool
{
    public const int Alignment = 4096;
    private const int MinShift = 12;
    private const int MaxShift = 25;

    // Per class, keep at most this many bytes (and at least two buffers) so a burst does not pin memory forever.
    private const long RetainBytesPerClass = 64L << 20;

    private readonly Stack<byte[]>[] _classes;

    public NbdBufferPool()
    {
        _classes = new Stack<byte[]>[MaxShift - MinShift + 1];
        for (var i = 0; i < _classes.Length; i++)
        {
            _classes[i] = new Stack<byte[]>();
        }
    }

    public static NbdBufferPool Shared { get; } = new();

    public NbdBuffer Rent(int length)
    {
        if (length == 0)
        {
            return new NbdBuffer([], 0, 0);
        }

        var shift = Math.Max(MinShift, 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)length - 1));
        if (shift > MaxShift)
        {
            return Wrap(Allocate(length), length);
        }

        var stack = _classes[shift - MinShift];
        byte[]? array = null;
        lock (stack)
        {
            stack.TryPop(out array);
        }

        return Wrap(array ?? Allocate(1 << shift), length);
    }

    public void Return(in NbdBuffer buffer)
    {
        var capacity = buffer.Array.Length - Alignment;
        if (capacity <= 0 || !System.Numerics.BitOperations.IsPow2(capacity))
        {
            return;
        }

        var shift = System.Numerics.BitOperations.Log2((uint)capacity);
        if (shift is < MinShift or > MaxShift)
        {
            return;
        }

        var stack = _classes[shift - MinShift];
        var keep = Math.Max(2, RetainBytesPerClass >> shift);
        lock (stack)
        {
            if (stack.Count < keep)
            {
                stack.Push(buffer.Array);
            }
        }
    }

    private static byte[] Allocate(int capacity) => GC.AllocateUninitializedArray<byte>(capacity + Alignment, pinned: true);

    private static unsafe NbdBuffer Wrap(byte[] array, int length)
    {
        // Pinned, so the address and with it the aligned offset never change.
        var address = (nuint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
        var offset = (int)((Alignment - (address % Alignment)) % Alignment);
        return new NbdBuffer(array, offset, length);
    }
}

/// <summary>
/// Bounds what one connection holds in flight (requests and payload bytes, replies not yet sent included),
/// so a client that floods requests and never reads replies costs bounded memory. Only the connection's
/// reader loop acquires; completions release.
/// </summary>
internal sealed class NbdInflightBudget(int maxRequests, long maxBytes)
{
    private readonly Lock _lock = new();
    private int _count;
    private long _bytes;
    private TaskCompletionSource? _waiter;
    private long _waiterBytes;
    private TaskCompletionSource? _drained;

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _count;
            }
        }
    }

    public ValueTask AcquireAsync(long bytes, CancellationToken cancellation)
    {
        TaskCompletionSource waiter;
        lock (_lock)
        {
            if (Fits(bytes))
            {
                Take(bytes);
                return ValueTask.CompletedTask;
            }

            waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiter = waiter;
            _waiterBytes = bytes;
        }

        return WaitAsync(waiter, bytes, cancellation);
    }

    public void Release(long bytes)
    {
        TaskCompletionSource? wake = null;
        TaskCompletionSource? drained = null;
        lock (_lock)
        {
            _count--;
            _bytes -= bytes;
            if (_waiter is not null && Fits(_waiterBytes))
            {
                Take(_waiterBytes);
                wake = _waiter;
                _waiter = null;
            }

            if (_count == 0)
            {
                drained = _drained;
                _drained = null;
            }
        }

        wake?.TrySetResult();
        drained?.TrySetResult();
    }

    public Task WhenDrainedAsync()
    {
        lock (_lock)
        {
            if (_count == 0)
            {
                return Task.CompletedTask;
            }

            _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _drained.Task;
        }
    }

    // A single request larger than the byte budget still runs, alone.
    private bool Fits(long bytes) => _count < maxRequests && (_bytes + bytes <= maxBytes || _count == 0);

    private void Take(long bytes)
    {
        _count++;
        _bytes += bytes;
    }

    private async ValueTask WaitAsync(TaskCompletionSource waiter, long bytes, CancellationToken cancellation)
    {
        try
        {
            await waiter.Task.WaitAsync(cancellation).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            bool granted;
            lock (_lock)
            {
                granted = _waiter != waiter;
                if (!granted)
                {
                    _waiter = null;
                }
            }

            if (granted)
            {
                Release(bytes);
            }

            throw;
        }
    }
}
