using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace Lockstep.Hosting.Nbd;

/// <summary>
/// The read side of an NBD socket on the <see cref="NbdReceiveLoop"/>: a read takes what the socket holds at once
/// (recv with MSG_DONTWAIT on the calling thread); when nothing is there it arms the loop and completes on the loop's
/// thread, running the reader's continuation there. One read at a time (the pipe reader's contract). Writing goes
/// through the socket itself, not this stream.
/// </summary>
internal sealed partial class EpollReceiveStream : Stream, IValueTaskSource<int>
{
    private const int MSG_DONTWAIT = 0x40, EAGAIN = 11, EINTR = 4;
    private const int Idle = 0, Waiting = 1, Completing = 2;

    // Reads the loop's thread may complete at once in a row before it waits for its turn in epoll again: a client
    // that keeps its socket full must not keep the loop from every other connection.
    private const int InlineReadsPerTurn = 16;

    private readonly NbdReceiveLoop _loop;
    private readonly Socket _socket;
    private ManualResetValueTaskSourceCore<int> _core = new() { RunContinuationsAsynchronously = false };
    private CancellationTokenRegistration _cancelRegistration;
    private CancellationToken _cancellation;
    private Memory<byte> _buffer;
    private int _state;
    private volatile bool _cancelRequested;
    private int _disposed;
    private int _inlineReads;

    internal EpollReceiveStream(NbdReceiveLoop loop, Socket socket, ulong token)
    {
        _loop = loop;
        _socket = socket;
        Token = token;
        Fd = (int)socket.Handle;
    }

    internal ulong Token { get; }

    internal int Fd { get; }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<int>(cancellationToken);
        }

        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (buffer.IsEmpty)
        {
            return new ValueTask<int>(0);
        }

        if (!_loop.OnLoopThread || ++_inlineReads <= InlineReadsPerTurn)
        {
            var received = Receive(buffer, out var error);
            if (received >= 0)
            {
                return new ValueTask<int>((int)received);
            }

            if (error != EAGAIN)
            {
                return ValueTask.FromException<int>(ReceiveFailed(error));
            }
        }

        if (Interlocked.CompareExchange(ref _state, Waiting, Idle) != Idle)
        {
            return ValueTask.FromException<int>(new InvalidOperationException("a read is already pending on this NBD socket"));
        }

        _core.Reset();
        _buffer = buffer;
        _cancelRequested = false;
        _cancellation = cancellationToken;
        _cancelRegistration = cancellationToken.CanBeCanceled
            ? cancellationToken.UnsafeRegister(static state => ((EpollReceiveStream)state!).OnCanceled(), this)
            : default;
        var pending = new ValueTask<int>(this, _core.Version);
        _loop.Arm(this);
        return pending;
    }

    /// <summary>On the loop's thread: the socket is readable (or closed, or failed).</summary>
    internal void OnReadable()
    {
        if (Interlocked.CompareExchange(ref _state, Completing, Waiting) != Waiting)
        {
            return;
        }

        _inlineReads = 0;

        var received = Receive(_buffer, out var error);
        if (received >= 0)
        {
            Finish((int)received, null);
            return;
        }

        if (error != EAGAIN)
        {
            Finish(0, ReceiveFailed(error));
            return;
        }

        // Woken with nothing to read: wait again, unless a cancellation came while we looked.
        Volatile.Write(ref _state, Waiting);
        if (_cancelRequested && Interlocked.CompareExchange(ref _state, Completing, Waiting) == Waiting)
        {
            Finish(0, new OperationCanceledException(_cancellation));
            return;
        }

        _loop.Arm(this);
    }

    /// <summary>The loop could not arm or stopped: the pending read fails with <paramref name="failure"/>.</summary>
    internal void OnArmFailed(Exception failure)
    {
        if (Interlocked.CompareExchange(ref _state, Completing, Waiting) == Waiting)
        {
            Finish(0, failure);
        }
    }

    private void OnCanceled()
    {
        _cancelRequested = true;
        if (Interlocked.CompareExchange(ref _state, Completing, Waiting) == Waiting)
        {
            Finish(0, new OperationCanceledException(_cancellation));
        }
    }

    private void Finish(int received, Exception? failure)
    {
        // Unregister, not Dispose: this may run inside the cancellation callback itself.
        _cancelRegistration.Unregister();
        _cancelRegistration = default;
        _buffer = default;
        Volatile.Write(ref _state, Idle);
        if (failure is null)
        {
            _core.SetResult(received);
        }
        else
        {
            _core.SetException(failure);
        }
    }

    private unsafe nint Receive(Memory<byte> buffer, out int error)
    {
        using var pin = buffer.Pin();
        while (true)
        {
            var received = Recv(Fd, pin.Pointer, buffer.Length, MSG_DONTWAIT);
            if (received >= 0)
            {
                error = 0;
                return received;
            }

            error = Marshal.GetLastPInvokeError();
            if (error != EINTR)
            {
                return -1;
            }
        }
    }

    private static IOException ReceiveFailed(int error) =>
        new($"receive failed: {Marshal.GetPInvokeErrorMessage(error)}", new SocketException(error));

    int IValueTaskSource<int>.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) =>
        throw new NotSupportedException("the NBD receive stream reads asynchronously only");

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) =>
        throw new NotSupportedException("replies are sent on the socket, not through the receive stream");

    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _loop.Detach(this);
            OnArmFailed(new ObjectDisposedException(nameof(EpollReceiveStream)));
            GC.KeepAlive(_socket);
        }

        base.Dispose(disposing);
    }

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static unsafe partial nint Recv(int fd, void* buffer, nint length, int flags);
}
