using System.Buffers;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace Lockstep.Hosting.Nbd;

/// <summary>
/// An NBD socket on the <see cref="NbdReceiveLoop"/>. A read takes what the socket holds at once (recv with
/// MSG_DONTWAIT on the calling thread); when nothing is there it arms the loop and completes on the loop's thread,
/// running the reader's continuation there. One read at a time (the pipe reader's contract). Sending is
/// <see cref="TrySend(List{ArraySegment{byte}}, out int)"/> (never blocks) plus <see cref="WaitWritable"/> when the
/// socket is full; reader and writer share the socket's one-shot epoll registration, so arming is serialised.
/// </summary>
internal sealed partial class EpollSocketStream : Stream, IValueTaskSource<int>
{
    private const int MSG_DONTWAIT = 0x40, MSG_NOSIGNAL = 0x4000, EAGAIN = 11, EINTR = 4, EBADF = 9;
    private const uint ReadWake = NbdReceiveLoop.EpollIn | NbdReceiveLoop.EpollRdHup | NbdReceiveLoop.EpollErr | NbdReceiveLoop.EpollHup;
    private const uint WriteWake = NbdReceiveLoop.EpollOut | NbdReceiveLoop.EpollErr | NbdReceiveLoop.EpollHup;
    private const int Idle = 0, Waiting = 1, Completing = 2;

    // Reads the loop's thread may complete at once in a row before it waits for its turn in epoll again: a client
    // that keeps its socket full must not keep the loop from every other connection.
    private const int InlineReadsPerTurn = 16;

    private readonly NbdReceiveLoop _loop;
    private ManualResetValueTaskSourceCore<int> _core = new() { RunContinuationsAsynchronously = false };
    private CancellationTokenRegistration _cancelRegistration;
    private CancellationToken _cancellation;
    private Memory<byte> _buffer;
    private int _state;
    private volatile bool _cancelRequested;
    private int _disposed;
    private int _inlineReads;
    private readonly object _armGate = new();
    private uint _interest;
    private Action? _onWritable;
    private string? _armFailure;

    // The pins of one vectored send, kept between sends: only the connection's pump sends a list, one send at a time.
    private MemoryHandle[] _sendPins = [];

    internal EpollSocketStream(NbdReceiveLoop loop, Socket socket, ulong token)
    {
        _loop = loop;
        Token = token;
        Fd = (int)socket.Handle;
        Handle = socket.SafeHandle;
    }

    internal ulong Token { get; }

    internal int Fd { get; }

    private SafeSocketHandle Handle { get; }

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

        if (Volatile.Read(ref _state) != Idle)
        {
            return ValueTask.FromException<int>(new InvalidOperationException("a read is already pending on this NBD socket"));
        }

        // Everything a completion reads is set before the state says Waiting: from then on the loop, a cancellation or
        // a closing stream may complete this read at any moment.
        _core.Reset();
        _buffer = buffer;
        _cancelRequested = false;
        _cancellation = cancellationToken;
        Volatile.Write(ref _state, Waiting);
        _cancelRegistration = cancellationToken.CanBeCanceled
            ? cancellationToken.UnsafeRegister(static state => ((EpollSocketStream)state!).OnCanceled(), this)
            : default;
        var pending = new ValueTask<int>(this, _core.Version);
        ArmRead();
        return pending;
    }

    /// <summary>On the loop's thread: what epoll reported; wakes the reader and/or the writer it concerns.</summary>
    internal void OnEvents(uint happened)
    {
        Action? writer = null;
        var reader = false;
        lock (_armGate)
        {
            // One-shot: the registration is disarmed now; re-arm whatever the other side still waits for.
            reader = (_interest & NbdReceiveLoop.EpollIn) != 0 && (happened & ReadWake) != 0;
            if ((_interest & NbdReceiveLoop.EpollOut) != 0 && (happened & WriteWake) != 0)
            {
                (writer, _onWritable) = (_onWritable, null);
            }

            _interest &= ~((reader ? NbdReceiveLoop.EpollIn : 0) | (writer is null ? 0 : NbdReceiveLoop.EpollOut));
            if (_interest != 0 && _loop.Arm(this, _interest) is { } whyNot)
            {
                // Nothing else would wake whoever still waits; fail them below rather than leave them hanging.
                reader |= (_interest & NbdReceiveLoop.EpollIn) != 0;
                if (writer is null && _onWritable is not null)
                {
                    (writer, _onWritable) = (_onWritable, null);
                }

                _interest = 0;
                _armFailure = whyNot;
            }
        }

        if (reader)
        {
            OnReadable();
        }

        writer?.Invoke();
    }

    private void ArmRead()
    {
        string? whyNot;
        lock (_armGate)
        {
            _interest |= NbdReceiveLoop.EpollIn;
            whyNot = _loop.Arm(this, _interest);
        }

        if (whyNot is not null)
        {
            OnLoopFailed(new IOException(whyNot));
        }
    }

    /// <summary>
    /// Sends what the socket takes now of <paramref name="segments"/>, without blocking: the bytes sent, or -1 with the
    /// errno (EAGAIN: the socket is full, see <see cref="WaitWritable"/>).
    /// </summary>
    internal unsafe nint TrySend(List<ArraySegment<byte>> segments, out int error)
    {
        var count = Math.Min(segments.Count, 1024);
        var vectors = stackalloc IoVec[count];
        if (_sendPins.Length < count)
        {
            _sendPins = new MemoryHandle[count];
        }

        var pins = _sendPins;
        try
        {
            for (var i = 0; i < count; i++)
            {
                pins[i] = segments[i].AsMemory().Pin();
                vectors[i] = new IoVec { Base = pins[i].Pointer, Length = (nuint)segments[i].Count };
            }

            return SendVectors(vectors, count, out error);
        }
        finally
        {
            for (var i = 0; i < count; i++)
            {
                pins[i].Dispose();
            }
        }
    }

    /// <summary>Sends what the socket takes now of <paramref name="bytes"/>; as the list overload.</summary>
    internal unsafe nint TrySend(ReadOnlyMemory<byte> bytes, out int error)
    {
        using var pin = bytes.Pin();
        var vector = new IoVec { Base = pin.Pointer, Length = (nuint)bytes.Length };
        return SendVectors(&vector, 1, out error);
    }

    private unsafe nint SendVectors(IoVec* vectors, int count, out int error)
    {
        var message = new MessageHeader { Vectors = vectors, VectorCount = (nuint)count };
        return CallOnSocket(&SendOnce, &message, 0, out error);
    }

    /// <summary>
    /// Runs one non-blocking socket call, again after EINTR: its result, or -1 with the errno (EBADF once closed). The
    /// descriptor is held open meanwhile: after a close, its number could already name another client's socket.
    /// </summary>
    private unsafe nint CallOnSocket(delegate*<int, void*, nint, nint> call, void* argument, nint length, out int error)
    {
        var added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            while (true)
            {
                var result = call(Fd, argument, length);
                if (result >= 0)
                {
                    error = 0;
                    return result;
                }

                error = Marshal.GetLastPInvokeError();
                if (error != EINTR)
                {
                    return -1;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            error = EBADF;
            return -1;
        }
        finally
        {
            if (added)
            {
                Handle.DangerousRelease();
            }
        }
    }

    private static unsafe nint ReceiveOnce(int fd, void* buffer, nint length) => Recv(fd, buffer, length, MSG_DONTWAIT);

    private static unsafe nint SendOnce(int fd, void* message, nint unused) => SendMsg(fd, (MessageHeader*)message, MSG_DONTWAIT | MSG_NOSIGNAL);

    /// <summary>
    /// Calls <paramref name="onWritable"/> once, on the loop's thread, when the socket can take more (or failed: the next
    /// send says how). False if the loop cannot wait for it.
    /// </summary>
    internal bool WaitWritable(Action onWritable)
    {
        lock (_armGate)
        {
            if (Volatile.Read(ref _disposed) != 0 || _armFailure is not null)
            {
                return false;
            }

            _onWritable = onWritable;
            _interest |= NbdReceiveLoop.EpollOut;
            if (_loop.Arm(this, _interest) is { } whyNot)
            {
                _armFailure = whyNot;
                _interest &= ~NbdReceiveLoop.EpollOut;
                _onWritable = null;
                return false;
            }

            return true;
        }
    }

    /// <summary>Completes when the socket can take more (the handshake's sends; the request path uses <see cref="WaitWritable"/>).</summary>
    internal Task WhenWritableAsync()
    {
        var writable = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!WaitWritable(() => writable.TrySetResult()))
        {
            writable.TrySetException(new IOException(_armFailure ?? "the NBD socket is closed"));
        }

        return writable.Task;
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

        if (_armFailure is { } whyNot)
        {
            Finish(0, new IOException(whyNot));
            return;
        }

        // Woken with nothing to read: wait again, unless a cancellation came while we looked.
        Volatile.Write(ref _state, Waiting);
        if (_cancelRequested && Interlocked.CompareExchange(ref _state, Completing, Waiting) == Waiting)
        {
            Finish(0, new OperationCanceledException(_cancellation));
            return;
        }

        ArmRead();
    }

    /// <summary>The loop could not arm, stopped, or the stream closed: a pending read fails, a waiting writer is woken.</summary>
    internal void OnLoopFailed(Exception failure)
    {
        if (Interlocked.CompareExchange(ref _state, Completing, Waiting) == Waiting)
        {
            Finish(0, failure);
        }

        Action? writer;
        lock (_armGate)
        {
            (writer, _onWritable) = (_onWritable, null);
            _interest = 0;
        }

        // Its next send fails (or, if the socket is still open, goes on): either way it does not wait forever.
        writer?.Invoke();
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
        return CallOnSocket(&ReceiveOnce, pin.Pointer, buffer.Length, out error);
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
            OnLoopFailed(new ObjectDisposedException(nameof(EpollSocketStream)));
        }

        base.Dispose(disposing);
    }

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static unsafe partial nint Recv(int fd, void* buffer, nint length, int flags);

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    private static unsafe partial nint SendMsg(int fd, MessageHeader* message, int flags);

    /// <summary>struct iovec.</summary>
    private unsafe struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    /// <summary>struct msghdr (x86-64): no address, no control data.</summary>
    private unsafe struct MessageHeader
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Vectors;
        public nuint VectorCount;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }
}
