using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Lockstep.Contracts.Nbd;
using Lockstep.Hosting.Nbd;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>One reply as a client sees it: error, handle, and for structured replies the chunks.</summary>
internal sealed record RawReply(ulong Handle, uint Error, byte[] Data, IReadOnlyList<(NbdReplyType Type, NbdReplyFlags Flags, byte[] Payload)> Chunks);

/// <summary>
/// A hand-rolled NBD client over a raw socket, for the things real clients never do: bad magic, oversized
/// lengths, unknown commands, vanishing mid-payload. Every read has a deadline so a test cannot hang.
/// </summary>
internal sealed class RawNbdClient : IAsyncDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private readonly Socket _socket;

    private RawNbdClient(Socket socket) => _socket = socket;

    public ulong Size { get; private set; }

    public NbdTransmissionFlags Flags { get; private set; }

    public bool Structured { get; private set; }

    public static async Task<RawNbdClient> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync("127.0.0.1", port);
        return new RawNbdClient(socket);
    }

    /// <summary>Greeting, client flags, optionally structured replies and base:allocation, then NBD_OPT_GO.</summary>
    public async Task HandshakeAsync(string export, bool structured = false, bool allocation = false)
    {
        var greeting = await ReadExactAsync(NbdSizes.Greeting);
        if (BinaryPrimitives.ReadUInt64BigEndian(greeting) != NbdMagic.InitPassword || BinaryPrimitives.ReadUInt64BigEndian(greeting.AsSpan(8)) != NbdMagic.OptionMagic)
        {
            throw new InvalidDataException("bad greeting");
        }

        await SendUInt32Async((uint)(NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes));
        if (structured)
        {
            await SendOptionAsync(NbdOption.StructuredReply, []);
            var (_, reply, _) = await ReadOptionReplyAsync();
            Structured = reply == NbdOptionReply.Ack;
        }

        if (allocation)
        {
            var name = Encoding.UTF8.GetBytes(export);
            var query = Encoding.UTF8.GetBytes(NbdMetaContexts.BaseAllocation);
            var data = new byte[4 + name.Length + 4 + 4 + query.Length];
            BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
            name.CopyTo(data, 4);
            BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(4 + name.Length), 1);
            BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(8 + name.Length), (uint)query.Length);
            query.CopyTo(data, 12 + name.Length);
            await SendOptionAsync(NbdOption.SetMetaContext, data);
            while ((await ReadOptionReplyAsync()).Reply != NbdOptionReply.Ack)
            {
            }
        }

        var exportName = Encoding.UTF8.GetBytes(export);
        var go = new byte[4 + exportName.Length + 2];
        BinaryPrimitives.WriteUInt32BigEndian(go, (uint)exportName.Length);
        exportName.CopyTo(go, 4);
        await SendOptionAsync(NbdOption.Go, go);
        while (true)
        {
            var (_, reply, payload) = await ReadOptionReplyAsync();
            if (reply == NbdOptionReply.Ack)
            {
                return;
            }

            if (reply == NbdOptionReply.Info && BinaryPrimitives.ReadUInt16BigEndian(payload) == (ushort)NbdInfoType.Export)
            {
                Size = BinaryPrimitives.ReadUInt64BigEndian(payload.AsSpan(2));
                Flags = (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(payload.AsSpan(10));
            }
            else if (((uint)reply & 0x8000_0000) != 0)
            {
                throw new InvalidDataException($"GO refused: {reply} {Encoding.UTF8.GetString(payload)}");
            }
        }
    }

    public async Task SendOptionAsync(NbdOption option, byte[] data)
    {
        var bytes = new byte[NbdSizes.OptionHeader + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, NbdMagic.OptionMagic);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(8), (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(12), (uint)data.Length);
        data.CopyTo(bytes, NbdSizes.OptionHeader);
        await SendAsync(bytes);
    }

    public async Task<(NbdOption Option, NbdOptionReply Reply, byte[] Payload)> ReadOptionReplyAsync()
    {
        var header = await ReadExactAsync(NbdSizes.OptionReplyHeader);
        if (BinaryPrimitives.ReadUInt64BigEndian(header) != NbdMagic.OptionReplyMagic)
        {
            throw new InvalidDataException("bad option reply magic");
        }

        var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
        var payload = await ReadExactAsync((int)length);
        return ((NbdOption)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8)), (NbdOptionReply)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)), payload);
    }

    public Task SendRequestAsync(NbdCommand command, ulong handle, ulong offset, uint length, NbdCommandFlags flags = NbdCommandFlags.None, byte[]? payload = null)
    {
        var bytes = new byte[NbdSizes.RequestHeader + (payload?.Length ?? 0)];
        NbdCodec.WriteRequest(bytes, new NbdRequest(flags, command, handle, offset, length));
        payload?.CopyTo(bytes, NbdSizes.RequestHeader);
        return SendAsync(bytes);
    }

    /// <summary>Reads one reply; <paramref name="readLength"/> is the data length a successful simple READ carries.</summary>
    public async Task<RawReply> ReadReplyAsync(int readLength = 0)
    {
        var magic = BinaryPrimitives.ReadUInt32BigEndian(await ReadExactAsync(4));
        if (magic == NbdMagic.SimpleReplyMagic)
        {
            var rest = await ReadExactAsync(12);
            var error = BinaryPrimitives.ReadUInt32BigEndian(rest);
            var handle = BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4));
            var data = error == 0 && readLength > 0 ? await ReadExactAsync(readLength) : [];
            return new RawReply(handle, error, data, []);
        }

        if (magic != NbdMagic.StructuredReplyMagic)
        {
            throw new InvalidDataException($"bad reply magic 0x{magic:x8}");
        }

        var chunks = new List<(NbdReplyType, NbdReplyFlags, byte[])>();
        ulong chunkHandle = 0;
        uint firstError = 0;
        var content = new MemoryStream();
        while (true)
        {
            if (chunks.Count > 0)
            {
                magic = BinaryPrimitives.ReadUInt32BigEndian(await ReadExactAsync(4));
                if (magic != NbdMagic.StructuredReplyMagic)
                {
                    throw new InvalidDataException($"bad chunk magic 0x{magic:x8}");
                }
            }

            var header = await ReadExactAsync(16);
            var flags = (NbdReplyFlags)BinaryPrimitives.ReadUInt16BigEndian(header);
            var type = (NbdReplyType)BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(2));
            chunkHandle = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(4));
            var payload = await ReadExactAsync((int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)));
            chunks.Add((type, flags, payload));
            if (((ushort)type & 0x8000) != 0 && firstError == 0)
            {
                firstError = BinaryPrimitives.ReadUInt32BigEndian(payload);
            }

            if (type == NbdReplyType.OffsetData)
            {
                content.Write(payload, 8, payload.Length - 8);
            }

            if ((flags & NbdReplyFlags.Done) != 0)
            {
                return new RawReply(chunkHandle, firstError, content.ToArray(), chunks);
            }
        }
    }

    public Task SendAsync(byte[] bytes) => _socket.SendAsync(bytes, SocketFlags.None).WaitAsync(Deadline);

    public async Task SendUInt32Async(uint value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
        await SendAsync(bytes);
    }

    public async Task<byte[]> ReadExactAsync(int count)
    {
        var buffer = new byte[count];
        var done = 0;
        using var deadline = new CancellationTokenSource(Deadline);
        while (done < count)
        {
            var read = await _socket.ReceiveAsync(buffer.AsMemory(done), SocketFlags.None, deadline.Token);
            if (read == 0)
            {
                throw new EndOfStreamException($"server closed the connection after {done} of {count} bytes");
            }

            done += read;
        }

        return buffer;
    }

    /// <summary>True once the server has closed the connection (end of stream or reset), false if it sends anything instead.</summary>
    public async Task<bool> ServerClosedAsync()
    {
        var buffer = new byte[64];
        using var deadline = new CancellationTokenSource(Deadline);
        try
        {
            return await _socket.ReceiveAsync(buffer, SocketFlags.None, deadline.Token) == 0;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>Drops the connection at once, as a crashing client would.</summary>
    public void Abort()
    {
        _socket.LingerState = new LingerOption(true, 0);
        _socket.Close();
    }

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
