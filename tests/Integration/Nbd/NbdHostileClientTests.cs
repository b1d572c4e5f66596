using System.Buffers.Binary;
using Lockstep.Contracts.Nbd;
using Xunit;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>
/// Clients that break the protocol or vanish get their connection closed; the server keeps serving a client
/// connected all along and new ones, and nothing written before is lost or half-overwritten.
/// </summary>
public sealed class NbdHostileClientTests
{
    private const long MiB = 1 << 20;

    [Fact]
    public async Task Hostile_clients_are_cut_off_while_others_keep_serving_and_data_stays_intact()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("victim", 16 * MiB);
        var seed = await Tool.RunAsync("qemu-io", "-f", "raw", nbd.Uri("victim"), "-c", "write -P 0x5a 0 2M");
        Assert.True(seed.ExitCode == 0, seed.ToString());

        await using var bystander = await RawNbdClient.ConnectAsync(nbd.Port);
        await bystander.HandshakeAsync("victim");

        // Bad request magic after a good handshake.
        await using (var client = await RawNbdClient.ConnectAsync(nbd.Port))
        {
            await client.HandshakeAsync("victim");
            var bytes = new byte[NbdSizes.RequestHeader];
            BinaryPrimitives.WriteUInt32BigEndian(bytes, 0xDEADBEEF);
            await client.SendAsync(bytes);
            Assert.True(await client.ServerClosedAsync(), "a bad request magic should close the connection");
        }

        // A WRITE announcing more payload than the hard limit.
        await using (var client = await RawNbdClient.ConnectAsync(nbd.Port))
        {
            await client.HandshakeAsync("victim");
            await client.SendRequestAsync(NbdCommand.Write, 1, 0, 64 << 20);
            Assert.True(await client.ServerClosedAsync(), "an oversized write should close the connection");
        }

        // Garbage instead of an option.
        await using (var client = await RawNbdClient.ConnectAsync(nbd.Port))
        {
            await client.ReadExactAsync(NbdSizes.Greeting);
            await client.SendUInt32Async((uint)NbdClientFlags.FixedNewstyle);
            await client.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
            Assert.True(await client.ServerClosedAsync(), "garbage during option haggling should close the connection");
        }

        // Client flags the server never offered.
        await using (var client = await RawNbdClient.ConnectAsync(nbd.Port))
        {
            await client.ReadExactAsync(NbdSizes.Greeting);
            await client.SendUInt32Async(0x8000_0001);
            Assert.True(await client.ServerClosedAsync(), "unknown client flags should close the connection");
        }

        // An option claiming a megabyte of data.
        await using (var client = await RawNbdClient.ConnectAsync(nbd.Port))
        {
            await client.ReadExactAsync(NbdSizes.Greeting);
            await client.SendUInt32Async((uint)NbdClientFlags.FixedNewstyle);
            var header = new byte[NbdSizes.OptionHeader];
            BinaryPrimitives.WriteUInt64BigEndian(header, NbdMagic.OptionMagic);
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), (uint)NbdOption.Go);
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), 1 << 20);
            await client.SendAsync(header);
            Assert.True(await client.ServerClosedAsync(), "an oversized option should close the connection");
        }

        // A client that dies in the middle of a 1 MiB write: none of it may land.
        var vanisher = await RawNbdClient.ConnectAsync(nbd.Port);
        await vanisher.HandshakeAsync("victim");
        var partial = new byte[NbdSizes.RequestHeader + (100 * 1024)];
        Lockstep.Hosting.Nbd.NbdCodec.WriteRequest(partial, new(NbdCommandFlags.None, NbdCommand.Write, 7, 0, (uint)MiB));
        partial.AsSpan(NbdSizes.RequestHeader).Fill(0xEE);
        await vanisher.SendAsync(partial);
        vanisher.Abort();

        // Errors on a live connection are answered, and the connection goes on.
        await bystander.SendRequestAsync(NbdCommand.Read, 10, 15 * MiB, (uint)(2 * MiB));
        Assert.Equal((uint)NbdError.Invalid, (await bystander.ReadReplyAsync()).Error);
        await bystander.SendRequestAsync((NbdCommand)42, 11, 0, 4096);
        Assert.Equal((uint)NbdError.Invalid, (await bystander.ReadReplyAsync()).Error);
        await bystander.SendRequestAsync(NbdCommand.Read, 12, 0, (uint)(2 * MiB));
        var read = await bystander.ReadReplyAsync((int)(2 * MiB));
        Assert.Equal((12UL, 0u), (read.Handle, read.Error));
        Assert.True(read.Data.All(b => b == 0x5a), "data written before the hostile clients must be intact");

        await bystander.SendRequestAsync(NbdCommand.Disconnect, 13, 0, 0);
        Assert.True(await bystander.ServerClosedAsync());
        var check = await Tool.RunAsync("qemu-io", "-f", "raw", "-r", nbd.Uri("victim"), "-c", "read -P 0x5a 0 2M", "-c", "read -P 0 2M 14M");
        Assert.True(check.ExitCode == 0, check.ToString());

        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await nbd.Server.WaitUntilIdleAsync(deadline.Token);
        Assert.Equal(0, nbd.Server.ConnectionCount);
        var log = nbd.Log.Lines;
        Assert.Equal(log.Count(l => l.Contains(" opened", StringComparison.Ordinal)), log.Count(l => l.Contains(" closed after ", StringComparison.Ordinal)));
        Assert.Equal(5, log.Count(l => l.StartsWith("Warning", StringComparison.Ordinal) && l.Contains("protocol violation", StringComparison.Ordinal)));
        Assert.Contains(log, l => l.Contains("vanished in the middle of a request", StringComparison.Ordinal));
    }
}
