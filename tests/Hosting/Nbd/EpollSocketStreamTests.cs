using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Lockstep.Hosting.Nbd;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Lockstep.Hosting.Tests.Nbd;

/// <summary>
/// The NBD server's epoll receive loop over real loopback sockets: what is sent arrives whole and in order, a pending
/// read completes on the loop's thread, cancellation and closing behave as a stream's reader expects, and many
/// connections share the one thread.
/// </summary>
public sealed class EpollSocketStreamTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);
    private readonly NbdReceiveLoop _loop;
    private readonly List<Socket> _sockets = [];

    public EpollSocketStreamTests()
    {
        Assert.True(NbdReceiveLoop.Supported, "these tests need Linux on x86-64, where the server uses the loop");
        _loop = NbdReceiveLoop.TryStart(NullLogger.Instance, out var whyNot) ?? throw new InvalidOperationException(whyNot);
    }

    public void Dispose()
    {
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }

        _loop.Dispose();
    }

    [Fact]
    public async Task A_read_with_bytes_waiting_returns_them_at_once_and_a_pending_read_completes_on_the_loop_thread()
    {
        var (client, server) = await PairAsync();
        using var stream = _loop.Attach(server);
        client.Send([1, 2, 3]);
        Assert.True(server.Poll(Patience, SelectMode.SelectRead), "the bytes sent never arrived");
        var buffer = new byte[16];
        var ready = stream.ReadAsync(buffer);
        Assert.True(ready.IsCompletedSuccessfully);
        Assert.Equal(3, ready.Result);
        Assert.Equal(new byte[] { 1, 2, 3 }, buffer[..3]);

        string? threadName = null;
        var pending = ReadOnLoopAsync(stream, buffer, name => threadName = name);
        Assert.False(pending.IsCompleted);
        client.Send([9]);
        Assert.Equal(1, await pending.WaitAsync(Patience));
        Assert.Equal(9, buffer[0]);
        Assert.Equal("nbd-receive", threadName);
    }

    [Fact]
    public async Task A_canceled_read_fails_and_loses_nothing_the_next_read_takes_what_came_later()
    {
        var (client, server) = await PairAsync();
        using var stream = _loop.Attach(server);
        using var cancel = new CancellationTokenSource();
        var buffer = new byte[8];
        var pending = stream.ReadAsync(buffer, cancel.Token).AsTask();
        Assert.False(pending.IsCompleted);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending.WaitAsync(Patience));

        client.Send([7, 8]);
        var read = await stream.ReadAsync(buffer).AsTask().WaitAsync(Patience);
        Assert.Equal(2, read);
        Assert.Equal(new byte[] { 7, 8 }, buffer[..2]);
    }

    [Fact]
    public async Task A_peer_that_closes_reads_as_the_end_and_one_that_resets_as_an_io_error()
    {
        var (closing, closedSide) = await PairAsync();
        using var closed = _loop.Attach(closedSide);
        var end = closed.ReadAsync(new byte[8]).AsTask();
        closing.Shutdown(SocketShutdown.Send);
        Assert.Equal(0, await end.WaitAsync(Patience));

        var (resetting, resetSide) = await PairAsync();
        using var reset = _loop.Attach(resetSide);
        var failed = reset.ReadAsync(new byte[8]).AsTask();
        resetting.LingerState = new LingerOption(true, 0);
        resetting.Close();
        var error = await Assert.ThrowsAsync<IOException>(() => failed.WaitAsync(Patience));
        Assert.Contains("receive failed", error.Message);
    }

    [Fact]
    public async Task Disposing_the_stream_detaches_it_and_fails_a_read_still_pending()
    {
        var (_, server) = await PairAsync();
        var stream = _loop.Attach(server);
        Assert.Equal(1, _loop.AttachedCount);
        var pending = stream.ReadAsync(new byte[8]).AsTask();
        stream.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => pending.WaitAsync(Patience));
        Assert.Equal(0, _loop.AttachedCount);
        Assert.Throws<ObjectDisposedException>(() => stream.ReadAsync(new byte[8]));
    }

    [Fact]
    public async Task A_full_socket_says_EAGAIN_and_the_writer_is_woken_on_the_loop_once_the_peer_reads_and_nothing_is_lost()
    {
        var (client, server) = await PairAsync();
        using var stream = _loop.Attach(server);
        var payload = RandomNumberGenerator.GetBytes(64 << 20);
        var segments = new List<ArraySegment<byte>>();
        var offset = 0;
        int error;
        while (true)
        {
            segments.Clear();
            segments.Add(new ArraySegment<byte>(payload, offset, Math.Min(1 << 20, payload.Length - offset)));
            var sent = stream.TrySend(segments, out error);
            if (sent < 0)
            {
                break;
            }

            offset += (int)sent;
            Assert.True(offset < payload.Length, "64 MiB fit into the socket without the peer reading: the test needs a bigger payload");
        }

        Assert.Equal(11, error); // EAGAIN: full, not failed
        var woken = new TaskCompletionSource<string?>(TaskCreationOptions.RunContinuationsAsynchronously);
        Assert.True(stream.WaitWritable(() => woken.TrySetResult(Thread.CurrentThread.Name)));
        Assert.False(woken.Task.IsCompleted);

        var received = new byte[payload.Length];
        var receiving = Task.Run(async () =>
        {
            var total = 0;
            while (total < received.Length)
            {
                var read = await client.ReceiveAsync(received.AsMemory(total));
                Assert.True(read > 0, "the connection ended early");
                total += read;
            }
        });
        Assert.Equal("nbd-receive", await woken.Task.WaitAsync(Patience));
        while (offset < payload.Length)
        {
            var sent = stream.TrySend(payload.AsMemory(offset), out error);
            if (sent < 0)
            {
                Assert.Equal(11, error);
                await stream.WhenWritableAsync().WaitAsync(Patience);
                continue;
            }

            offset += (int)sent;
        }

        await receiving.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(payload.AsSpan().SequenceEqual(received), "the bytes received differ from the bytes sent");
    }

    [Fact]
    public async Task Thirty_two_connections_stream_random_bytes_at_once_and_each_arrives_whole_and_in_order()
    {
        const int connections = 32, bytesEach = 4 << 20;
        var transfers = new List<Task>();
        for (var i = 0; i < connections; i++)
        {
            var (client, server) = await PairAsync();
            var payload = RandomNumberGenerator.GetBytes(bytesEach);
            var stream = _loop.Attach(server);
            transfers.Add(SendInPiecesAsync(client, payload, seed: i));
            transfers.Add(ReceiveAllAsync(stream, payload));
        }

        await Task.WhenAll(transfers).WaitAsync(TimeSpan.FromSeconds(60));
    }

    private static async Task SendInPiecesAsync(Socket client, byte[] payload, int seed)
    {
        var random = new Random(seed);
        var sent = 0;
        while (sent < payload.Length)
        {
            var piece = Math.Min(payload.Length - sent, random.Next(1, 200_000));
            sent += await client.SendAsync(payload.AsMemory(sent, piece));
        }

        client.Shutdown(SocketShutdown.Send);
    }

    private static async Task ReceiveAllAsync(EpollSocketStream stream, byte[] expected)
    {
        using (stream)
        {
            var received = new byte[expected.Length + 1];
            var total = 0;
            while (true)
            {
                var read = await stream.ReadAsync(received.AsMemory(total, Math.Min(received.Length - total, 65536))).ConfigureAwait(false);
                if (read == 0)
                {
                    break;
                }

                total += read;
            }

            Assert.Equal(expected.Length, total);
            Assert.True(expected.AsSpan().SequenceEqual(received.AsSpan(0, total)), "the bytes received differ from the bytes sent");
        }
    }

    private static async Task<int> ReadOnLoopAsync(EpollSocketStream stream, byte[] buffer, Action<string?> seenOn)
    {
        var read = await stream.ReadAsync(buffer).ConfigureAwait(false);
        seenOn(Thread.CurrentThread.Name);
        return read;
    }

    private async Task<(Socket Client, Socket Server)> PairAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _sockets.Add(client);
        var accepted = listener.AcceptAsync();
        await client.ConnectAsync(listener.LocalEndPoint!);
        var server = await accepted;
        _sockets.Add(server);
        return (client, server);
    }
}
