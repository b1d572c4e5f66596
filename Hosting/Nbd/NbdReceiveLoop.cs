using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Lockstep.Actors.BlockIo;

namespace Lockstep.Hosting.Nbd;

/// <summary>
/// The NBD server's own socket loop: one thread waits in epoll(7) for its connections' sockets and runs each
/// connection's reader on that thread when bytes arrive — parsing, page-cache reads (RWF_NOWAIT) and the reply's send
/// included — until the reader has to wait again; a reply the socket could not take at once is sent on from there when
/// the socket is writable.
/// </summary>
/// <remarks>
/// Why: with .NET's socket engine a readable socket wakes the engine's thread, which queues the continuation to the
/// thread pool, which wakes a worker: two context switches per batch of requests, and on this paravirtualised VM a
/// context switch is most of a cached 4 KiB read's cost (docs/benchmarks.md, "Stop 12"). Running continuations on the
/// engine's thread (<c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS</c>) removes one, but for every socket of the
/// process, so a blocking continuation anywhere (Npgsql, Kestrel, Akka.Remote) would stall them all. This loop gives
/// the NBD sockets alone that behaviour. Sends go around the socket engine too (sendmsg with MSG_DONTWAIT): once a
/// socket has waited in the engine it stays in the engine's epoll set, whose thread then wakes for every request that
/// arrives as well — measured as 1 MiB reads running 7 % slower on the loop until the sends moved here. Only the NBD reader runs here, and it never blocks: device calls that can
/// wait (writes, flushes, uncached or O_DIRECT reads) return pending tasks that complete on other threads.
/// Linux x86-64 only (the layout of <c>struct epoll_event</c>); elsewhere the server uses the socket engine.
/// </remarks>
internal sealed partial class NbdReceiveLoop : IDisposable
{
    private const int EpollCtlAdd = 1, EpollCtlDel = 2, EpollCtlMod = 3;
    internal const uint EpollIn = 0x001, EpollOut = 0x004, EpollErr = 0x008, EpollHup = 0x010, EpollRdHup = 0x2000;
    private const uint EpollOneShot = 1u << 30;
    private const int EINTR = 4, EFD_CLOEXEC = 0x80000, EPOLL_CLOEXEC = 0x80000;
    private const ulong WakeToken = 0;

    private readonly int _epoll;
    private readonly int _wake;
    private readonly Thread _thread;
    private readonly ConcurrentDictionary<ulong, EpollSocketStream> _streams = new();
    private readonly ILogger _logger;
    private long _nextToken;

    // Connections attached (ConcurrentDictionary.Count takes every bucket lock; the loop reads this per event).
    private int _attached;
    private volatile bool _stopping;

    private NbdReceiveLoop(int epoll, int wake, ILogger logger)
    {
        _epoll = epoll;
        _wake = wake;
        _logger = logger;
        _thread = new Thread(Run) { IsBackground = true, Name = "nbd-receive" };
    }

    /// <summary>Whether this platform can run the loop (Linux on x86-64).</summary>
    public static bool Supported => OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    /// <summary>Starts a loop, or returns null with the reason when the platform or the kernel refuses.</summary>
    public static NbdReceiveLoop? TryStart(ILogger logger, out string? whyNot)
    {
        whyNot = null;
        if (!Supported)
        {
            whyNot = $"epoll receive loop needs Linux on x86-64, this is {RuntimeInformation.OSDescription} on {RuntimeInformation.ProcessArchitecture}";
            return null;
        }

        var epoll = EpollCreate1(EPOLL_CLOEXEC);
        if (epoll < 0)
        {
            whyNot = $"epoll_create1 failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}";
            return null;
        }

        var wake = EventFd(0, EFD_CLOEXEC);
        var wakeEvent = new EpollEvent { Events = EpollIn, Data = WakeToken };
        if (wake < 0 || EpollCtl(epoll, EpollCtlAdd, wake, ref wakeEvent) != 0)
        {
            whyNot = $"eventfd for the receive loop failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}";
            if (wake >= 0)
            {
                Close(wake);
            }

            Close(epoll);
            return null;
        }

        var loop = new NbdReceiveLoop(epoll, wake, logger);
        loop._thread.Start();
        return loop;
    }

    /// <summary>A stream that receives from <paramref name="socket"/> on this loop; dispose it before the socket.</summary>
    public EpollSocketStream Attach(Socket socket)
    {
        var token = (ulong)Interlocked.Increment(ref _nextToken);
        var stream = new EpollSocketStream(this, socket, token);
        _streams[token] = stream;
        Interlocked.Increment(ref _attached);
        // Registered disarmed: the first receive that finds nothing arms it (one-shot, re-armed per wait).
        var added = new EpollEvent { Events = EpollOneShot, Data = token };
        if (EpollCtl(_epoll, EpollCtlAdd, stream.Fd, ref added) != 0)
        {
            var error = Marshal.GetLastPInvokeError();
            if (_streams.TryRemove(token, out _))
            {
                Interlocked.Decrement(ref _attached);
            }

            throw new IOException($"cannot watch the NBD socket with epoll: {Marshal.GetPInvokeErrorMessage(error)}");
        }

        return stream;
    }

    /// <summary>
    /// Asks for one wake-up when the stream's socket has any of <paramref name="interest"/> (EPOLLIN, EPOLLOUT; a
    /// hang-up or an error always wakes). Null when armed, else why not.
    /// </summary>
    internal string? Arm(EpollSocketStream stream, uint interest)
    {
        // RDHUP only for a reader: a half-closed peer may still take replies, and a level condition nobody consumes
        // would wake the loop again after every re-arm.
        var rdhup = (interest & EpollIn) != 0 ? EpollRdHup : 0;
        var armed = new EpollEvent { Events = interest | rdhup | EpollOneShot, Data = stream.Token };
        return EpollCtl(_epoll, EpollCtlMod, stream.Fd, ref armed) == 0
            ? null
            : $"cannot wait for the NBD socket with epoll: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}";
    }

    internal void Detach(EpollSocketStream stream)
    {
        if (_streams.TryRemove(stream.Token, out _))
        {
            Interlocked.Decrement(ref _attached);
            var none = default(EpollEvent);
            // Fails only if the socket is already closed, which removed it from the set anyway.
            _ = EpollCtl(_epoll, EpollCtlDel, stream.Fd, ref none);
        }
    }

    /// <summary>Whether the caller runs on the loop's thread.</summary>
    internal bool OnLoopThread => Thread.CurrentThread == _thread;

    /// <summary>Connections attached right now (tests).</summary>
    internal int AttachedCount => Volatile.Read(ref _attached);

    private unsafe void Run()
    {
        const int capacity = 64;
        var events = stackalloc EpollEvent[capacity];
        while (!_stopping)
        {
            var count = EpollWait(_epoll, events, capacity, -1);
            if (count < 0)
            {
                var error = Marshal.GetLastPInvokeError();
                if (error == EINTR)
                {
                    continue;
                }

                _logger.LogError("NBD receive loop: epoll_wait failed ({Error}); the loop stops and its connections fail",
                    Marshal.GetPInvokeErrorMessage(error));
                FailAll(new IOException($"NBD receive loop stopped: epoll_wait failed: {Marshal.GetPInvokeErrorMessage(error)}"));
                return;
            }

            for (var i = 0; i < count; i++)
            {
                var (token, happened) = (events[i].Data, events[i].Events);
                if (token == WakeToken)
                {
                    continue;
                }

                if (_streams.TryGetValue(token, out var stream))
                {
                    try
                    {
                        // A write this connection runs here would block the loop's other connections too, if any.
                        InlineWriteGuard.CallerServesOtherConnections = Volatile.Read(ref _attached) > 1;
                        stream.OnEvents(happened);
                    }
                    catch (Exception e)
                    {
                        // A reader's own faults end in its task; anything escaping here is a bug, and must not stop
                        // the loop that serves every other connection.
                        _logger.LogError(e, "NBD receive loop: a connection's reader threw; the loop goes on");
                    }
                }
            }
        }
    }

    private void FailAll(Exception failure)
    {
        foreach (var stream in _streams.Values)
        {
            stream.OnLoopFailed(failure);
        }
    }

    /// <summary>Stops the thread (connections must be closed first: a pending receive would never complete).</summary>
    public void Dispose()
    {
        if (_stopping)
        {
            return;
        }

        _stopping = true;
        ulong one = 1;
        unsafe
        {
            _ = Write(_wake, &one, sizeof(ulong));
        }

        _thread.Join(TimeSpan.FromSeconds(5));
        FailAll(new ObjectDisposedException(nameof(NbdReceiveLoop)));
        Close(_wake);
        Close(_epoll);
    }

    // struct epoll_event is packed on x86-64: a 32-bit mask, then the 64-bit user data at offset 4.
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    private struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    private static partial int EpollCreate1(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    private static partial int EpollCtl(int epoll, int operation, int fd, ref EpollEvent change);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    private static unsafe partial int EpollWait(int epoll, EpollEvent* events, int capacity, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initial, int flags);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static unsafe partial nint Write(int fd, void* buffer, nint count);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
