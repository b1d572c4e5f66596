using System.Buffers.Binary;
using System.Text;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Nbd;
using Lockstep.Hosting.Nbd;
using Xunit;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>The server's answers request by request, seen from a raw client: errors per spec, structured replies, concurrency.</summary>
public sealed class NbdServerBehaviourTests
{
    private const long MiB = 1 << 20;

    [Fact]
    public async Task Simple_replies_carry_the_spec_errors_and_the_connection_stays_usable()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("errors", 4 * MiB, maximumRequestSize: (int)MiB);
        await using var client = await RawNbdClient.ConnectAsync(nbd.Port);
        await client.HandshakeAsync("errors");
        Assert.Equal(4 * MiB, (long)client.Size);

        async Task<uint> ErrorOf(NbdCommand command, ulong offset, uint length, NbdCommandFlags flags = NbdCommandFlags.None, byte[]? payload = null)
        {
            await client.SendRequestAsync(command, 99, offset, length, flags, payload);
            var reply = await client.ReadReplyAsync();
            Assert.Equal(99UL, reply.Handle);
            return reply.Error;
        }

        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.Read, (ulong)(4 * MiB) - 512, 1024));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.Read, ulong.MaxValue - 10, 512));
        // The payload of a refused write is read past, so the next request parses.
        Assert.Equal((uint)NbdError.NoSpace, await ErrorOf(NbdCommand.Write, (ulong)(4 * MiB), 4096, payload: new byte[4096]));
        Assert.Equal((uint)NbdError.NoSpace, await ErrorOf(NbdCommand.Trim, (ulong)(3 * MiB), (uint)(2 * MiB)));
        Assert.Equal((uint)NbdError.NoSpace, await ErrorOf(NbdCommand.WriteZeroes, (ulong)(4 * MiB), 1));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf((NbdCommand)42, 0, 512));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.Cache, 0, 512));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.Read, 0, 512, (NbdCommandFlags)0x40));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.Read, 0, 512, NbdCommandFlags.DontFragment));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.Write, 0, 512, NbdCommandFlags.NoHole, new byte[512]));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.Read, 0, (uint)(2 * MiB)));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.BlockStatus, 0, 4096));
        Assert.Equal((uint)NbdError.Invalid, await ErrorOf(NbdCommand.Flush, 4096, 0));

        var data = Enumerable.Range(0, 8192).Select(i => (byte)(i * 7)).ToArray();
        Assert.Equal(0u, await ErrorOf(NbdCommand.Write, 1000, 8192, NbdCommandFlags.Fua, data));
        Assert.Equal(0u, await ErrorOf(NbdCommand.Flush, 0, 0));
        Assert.Equal(0u, await ErrorOf(NbdCommand.WriteZeroes, 2000, 100, NbdCommandFlags.NoHole | NbdCommandFlags.FastZero));
        await client.SendRequestAsync(NbdCommand.Read, 5, 1000, 8192);
        var read = await client.ReadReplyAsync(8192);
        Assert.Equal(0u, read.Error);
        Assert.Equal(data[..1000], read.Data[..1000]);
        Assert.All(read.Data[1000..1100], b => Assert.Equal(0, b));
        Assert.Equal(data[1100..], read.Data[1100..]);
    }

    [Theory]
    [InlineData(NbdReceiveMode.Epoll, "2 epoll threads")]
    [InlineData(NbdReceiveMode.Sockets, "socket engine")]
    public async Task Both_receive_modes_serve_and_the_epoll_loop_opens_and_closes_exports_off_its_thread(NbdReceiveMode mode, string announced)
    {
        await using var nbd = await NbdTestServer.StartAsync(o => (o.ReceiveLoop, o.ReceiveThreads) = (mode, 2));
        Assert.Contains(nbd.Log.Lines, l => l.Contains($"receive: {announced}", StringComparison.Ordinal));
        nbd.AddFile("modes", 4 * MiB);
        var data = Enumerable.Range(0, 256 * 1024).Select(i => (byte)(i * 13 + 5)).ToArray();
        await using (var client = await RawNbdClient.ConnectAsync(nbd.Port))
        {
            await client.HandshakeAsync("modes");
            // Pipelined: both writes go out before either reply is read.
            await client.SendRequestAsync(NbdCommand.Write, 1, 0, (uint)data.Length, NbdCommandFlags.None, data);
            await client.SendRequestAsync(NbdCommand.Write, 2, (ulong)data.Length, (uint)data.Length, NbdCommandFlags.Fua, data);
            var handles = new[] { (await client.ReadReplyAsync()).Handle, (await client.ReadReplyAsync()).Handle };
            Assert.Equal([1UL, 2UL], handles.Order());
            await client.SendRequestAsync(NbdCommand.Read, 3, (ulong)data.Length, (uint)data.Length);
            var read = await client.ReadReplyAsync(data.Length);
            Assert.Equal(0u, read.Error);
            Assert.Equal(data, read.Data);
        }

        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await nbd.Server.WaitUntilIdleAsync(deadline.Token);
        // The loop's thread serves every connection on it; opening an export or closing one may block, so neither runs there.
        Assert.Equal(["open", "close"], nbd.Catalog.HandleThreads.Select(t => t.Split(" on ")[0]));
        Assert.DoesNotContain(nbd.Catalog.HandleThreads, t => t.EndsWith("nbd-receive", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Read_only_export_refuses_every_write_with_EPERM()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("ro", MiB, readOnly: true);
        await using var client = await RawNbdClient.ConnectAsync(nbd.Port);
        await client.HandshakeAsync("ro");
        Assert.True(client.Flags.HasFlag(NbdTransmissionFlags.ReadOnly));

        await client.SendRequestAsync(NbdCommand.Write, 1, 0, 512, payload: new byte[512]);
        await client.SendRequestAsync(NbdCommand.Trim, 2, 0, 512);
        await client.SendRequestAsync(NbdCommand.WriteZeroes, 3, 0, 512);
        await client.SendRequestAsync(NbdCommand.Read, 4, 0, 512);
        var replies = new Dictionary<ulong, RawReply>();
        for (var i = 0; i < 4; i++)
        {
            var reply = await client.ReadReplyAsync(512);
            replies[reply.Handle] = reply;
        }

        Assert.Equal((uint)NbdError.NotPermitted, replies[1].Error);
        Assert.Equal((uint)NbdError.NotPermitted, replies[2].Error);
        Assert.Equal((uint)NbdError.NotPermitted, replies[3].Error);
        Assert.Equal(0u, replies[4].Error);
    }

    [Fact]
    public async Task Structured_replies_send_data_chunks_error_chunks_and_block_status()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        var file = nbd.AddFile("structured", 4 * MiB);
        await file.WriteAsync(MiB, new byte[64 * 1024].Select(_ => (byte)0x33).ToArray(), forceUnitAccess: false);
        await using var client = await RawNbdClient.ConnectAsync(nbd.Port);
        await client.HandshakeAsync("structured", structured: true, allocation: true);
        Assert.True(client.Structured);
        Assert.True(client.Flags.HasFlag(NbdTransmissionFlags.SendDf));

        await client.SendRequestAsync(NbdCommand.Read, 1, (ulong)MiB, 65536, NbdCommandFlags.DontFragment);
        var read = await client.ReadReplyAsync();
        var chunk = Assert.Single(read.Chunks);
        Assert.Equal((NbdReplyType.OffsetData, NbdReplyFlags.Done), (chunk.Type, chunk.Flags));
        Assert.Equal((ulong)MiB, BinaryPrimitives.ReadUInt64BigEndian(chunk.Payload));
        Assert.All(read.Data, b => Assert.Equal(0x33, b));
        Assert.Equal(65536, read.Data.Length);

        await client.SendRequestAsync(NbdCommand.Read, 2, (ulong)(4 * MiB), 512);
        var error = await client.ReadReplyAsync();
        Assert.Equal((uint)NbdError.Invalid, error.Error);
        var errorChunk = Assert.Single(error.Chunks);
        Assert.Equal(NbdReplyType.Error, errorChunk.Type);
        var messageLength = BinaryPrimitives.ReadUInt16BigEndian(errorChunk.Payload.AsSpan(4));
        Assert.Contains("Read", Encoding.UTF8.GetString(errorChunk.Payload, 6, messageLength), StringComparison.Ordinal);

        await client.SendRequestAsync(NbdCommand.BlockStatus, 3, 0, (uint)(4 * MiB));
        var status = await client.ReadReplyAsync();
        var statusChunk = Assert.Single(status.Chunks);
        Assert.Equal(NbdReplyType.BlockStatus, statusChunk.Type);
        Assert.Equal(NbdMetaContexts.BaseAllocationId, BinaryPrimitives.ReadUInt32BigEndian(statusChunk.Payload));
        var extents = Enumerable.Range(0, (statusChunk.Payload.Length - 4) / 8)
            .Select(i => (BinaryPrimitives.ReadUInt32BigEndian(statusChunk.Payload.AsSpan(4 + (i * 8))), BinaryPrimitives.ReadUInt32BigEndian(statusChunk.Payload.AsSpan(8 + (i * 8)))))
            .ToArray();
        Assert.Equal(4 * MiB, extents.Sum(e => (long)e.Item1));
        Assert.Contains(extents, e => e.Item2 == 0);
        Assert.Equal(3u, extents[0].Item2);

        await client.SendRequestAsync(NbdCommand.BlockStatus, 4, 0, (uint)(4 * MiB), NbdCommandFlags.RequestOne);
        var one = Assert.Single((await client.ReadReplyAsync()).Chunks);
        Assert.Equal(12, one.Payload.Length);

        // A write still gets an error reply the client can read, and after it a write works.
        await client.SendRequestAsync(NbdCommand.Write, 5, (ulong)(4 * MiB), 512, payload: new byte[512]);
        Assert.Equal((uint)NbdError.NoSpace, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(NbdCommand.Write, 6, 0, 512, payload: new byte[512]);
        var written = await client.ReadReplyAsync();
        Assert.Equal((6UL, 0u), (written.Handle, written.Error));
    }

    [Fact]
    public async Task Device_failures_map_to_EIO_ESHUTDOWN_and_ENOTSUP()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        var inner = SparseFileBlockDevice.Create("inner", nbd.TempFile("faulty.img"), MiB);
        var device = nbd.Catalog.Add(new ScriptedDevice(inner, "faulty"));
        device.Before = (operation, offset) => (operation, offset) switch
        {
            ("read", 4096) => throw new BlockIoException(BlockIoError.Io, "leg 1 and leg 2 failed"),
            ("read", 8192) => throw new BlockIoException(BlockIoError.Unavailable, "node fenced"),
            ("zero-no-hole", _) => throw new BlockIoException(BlockIoError.NotSupported, "cannot zero fast"),
            ("write", 12288) => ValueTask.FromException(new InvalidOperationException("a bug in the device")),
            _ => ValueTask.CompletedTask,
        };
        await using var client = await RawNbdClient.ConnectAsync(nbd.Port);
        await client.HandshakeAsync("faulty");

        async Task<uint> ErrorOf(NbdCommand command, ulong offset, NbdCommandFlags flags = NbdCommandFlags.None)
        {
            await client.SendRequestAsync(command, 1, offset, 512, flags, command == NbdCommand.Write ? new byte[512] : null);
            return (await client.ReadReplyAsync(command == NbdCommand.Read ? 512 : 0)).Error;
        }

        Assert.Equal((uint)NbdError.Io, await ErrorOf(NbdCommand.Read, 4096));
        Assert.Equal((uint)NbdError.Shutdown, await ErrorOf(NbdCommand.Read, 8192));
        Assert.Equal((uint)NbdError.NotSupported, await ErrorOf(NbdCommand.WriteZeroes, 0, NbdCommandFlags.NoHole | NbdCommandFlags.FastZero));
        Assert.Equal((uint)NbdError.Io, await ErrorOf(NbdCommand.Write, 12288));
        Assert.Equal(0u, await ErrorOf(NbdCommand.Read, 0));
    }

    [Fact]
    public async Task Requests_run_concurrently_and_replies_come_in_completion_order()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        var inner = SparseFileBlockDevice.Create("inner", nbd.TempFile("gated.img"), MiB);
        var device = nbd.Catalog.Add(new ScriptedDevice(inner, "gated"));
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.Before = async (operation, offset) =>
        {
            if (operation == "write" && offset == 0)
            {
                held.TrySetResult();
                await gate.Task;
            }
        };
        await using var client = await RawNbdClient.ConnectAsync(nbd.Port);
        await client.HandshakeAsync("gated");

        await client.SendRequestAsync(NbdCommand.Write, 1, 0, 4096, payload: Enumerable.Repeat((byte)0xAB, 4096).ToArray());
        await held.Task.WaitAsync(TimeSpan.FromSeconds(20));
        for (ulong handle = 2; handle <= 9; handle++)
        {
            await client.SendRequestAsync(NbdCommand.Read, handle, 65536 * handle, 4096);
        }

        for (ulong handle = 2; handle <= 9; handle++)
        {
            var reply = await client.ReadReplyAsync(4096);
            Assert.NotEqual(1UL, reply.Handle);
            Assert.Equal(0u, reply.Error);
        }

        gate.SetResult();
        var held1 = await client.ReadReplyAsync();
        Assert.Equal((1UL, 0u), (held1.Handle, held1.Error));
    }

    [Fact]
    public async Task Disconnect_waits_for_requests_in_flight_before_closing()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        var inner = SparseFileBlockDevice.Create("inner", nbd.TempFile("disc.img"), MiB);
        var device = nbd.Catalog.Add(new ScriptedDevice(inner, "disc"));
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.Before = async (operation, _) =>
        {
            if (operation == "write")
            {
                held.TrySetResult();
                await gate.Task;
            }
        };
        await using var client = await RawNbdClient.ConnectAsync(nbd.Port);
        await client.HandshakeAsync("disc");

        await client.SendRequestAsync(NbdCommand.Write, 1, 4096, 4096, payload: Enumerable.Repeat((byte)0xCD, 4096).ToArray());
        await held.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await client.SendRequestAsync(NbdCommand.Disconnect, 2, 0, 0);
        gate.SetResult();

        var reply = await client.ReadReplyAsync();
        Assert.Equal((1UL, 0u), (reply.Handle, reply.Error));
        Assert.True(await client.ServerClosedAsync());
        var back = new byte[4096];
        await inner.ReadAsync(4096, back);
        Assert.All(back, b => Assert.Equal(0xCD, b));
    }

    [Fact]
    public async Task Stopping_the_server_closes_connections_after_their_requests_finish()
    {
        var nbd = await NbdTestServer.StartAsync();
        try
        {
            nbd.AddFile("stop", MiB);
            await using var client = await RawNbdClient.ConnectAsync(nbd.Port);
            await client.HandshakeAsync("stop");
            await client.SendRequestAsync(NbdCommand.Read, 1, 0, 4096);
            Assert.Equal(0u, (await client.ReadReplyAsync(4096)).Error);

            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await nbd.Server.StopAsync(deadline.Token);

            Assert.True(await client.ServerClosedAsync());
            Assert.Equal(0, nbd.Server.ConnectionCount);
            Assert.Contains(nbd.Log.Lines, l => l.Contains("server stopping", StringComparison.Ordinal));
        }
        finally
        {
            await nbd.DisposeAsync();
        }
    }

    [Fact]
    public async Task Unknown_export_is_refused_and_the_empty_name_picks_the_first_export()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("only", MiB);

        var missing = await Tool.RunAsync("nbdinfo", nbd.Uri("nope"));
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("nope", missing.Stderr, StringComparison.Ordinal);

        await using var client = await RawNbdClient.ConnectAsync(nbd.Port);
        await client.HandshakeAsync("");
        Assert.Equal((ulong)MiB, client.Size);
    }
}
