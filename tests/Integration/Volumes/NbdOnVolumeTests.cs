using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Lockstep.Contracts.Nbd;
using Lockstep.Integration.Tests.Cluster;
using Lockstep.Integration.Tests.Nbd;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Integration.Tests.Volumes;

/// <summary>
/// End to end: a real <c>lockstep serve</c> process, a real two-leg mirrored volume on leg files (O_DIRECT),
/// real NBD clients (nbdinfo, qemu-io, nbdcopy, fio), <c>lockstep volume verify</c>; and a SIGKILL in the middle of
/// pipelined writes and FLUSHes, after which every write acknowledged before a completed FLUSH must read back.
/// </summary>
[Collection(RealProcessesCollection.Name)]
public sealed class NbdOnVolumeTests(ITestOutputHelper output) : IDisposable
{
    private const long MiB = 1 << 20;
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);
    private readonly string _data = Path.Combine("/var/tmp", "lockstep-tests", "nbdvol-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task Real_clients_read_and_write_a_two_leg_volume_and_the_legs_stay_identical()
    {
        Directory.CreateDirectory(Path.Combine(_data, "legs"));
        await using var node = await Node.StartAsync(_data, StartTimeout);
        await node.CreateVolumeAsync("e2e", "512M", 1 << 20, Path.Combine(_data, "legs", "e2e-a.leg"), Path.Combine(_data, "legs", "e2e-b.leg"));
        var uri = node.Uri("e2e");

        // nbdinfo: listed with its description, described with the flags a mirror offers.
        var list = await Tool.RunAsync("nbdinfo", "--list", "--json", $"nbd://127.0.0.1:{node.NbdPort}");
        Assert.True(list.ExitCode == 0, list.ToString());
        var listed = JsonDocument.Parse(list.Stdout).RootElement.GetProperty("exports").EnumerateArray().Single(e => e.GetProperty("export-name").GetString() == "e2e");
        Assert.Equal("512 MiB mirror, 2/2 legs in sync", listed.GetProperty("description").GetString());
        Assert.Equal(512 * MiB, listed.GetProperty("export-size").GetInt64());

        var info = await Tool.RunAsync("nbdinfo", "--json", uri);
        Assert.True(info.ExitCode == 0, info.ToString());
        var export = JsonDocument.Parse(info.Stdout).RootElement.GetProperty("exports")[0];
        foreach (var flag in new[] { "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn" })
        {
            Assert.True(export.GetProperty(flag).GetBoolean(), $"{flag} should be advertised:\n{info.Stdout}");
        }

        Assert.False(export.GetProperty("is_read_only").GetBoolean());
        Assert.Contains("base:allocation", export.GetProperty("contexts").EnumerateArray().Select(c => c.GetString()));

        // Fill the copy area first, so the zero MiBs of the image below must really be zeroed on both legs.
        var qemu = await Tool.RunAsync("qemu-io", ["-f", "raw", uri,
            "-c", "write -P 0xee 0 256M",
            "-c", "write -P 0xab 300M 1M",
            "-c", "write -P 0x3c 302M 64k",
            "-c", "write -P 0x11 303000000 7000",
            "-c", "write -f -P 0x42 304M 256k",
            "-c", "aio_write -P 0x55 305M 512k",
            "-c", "aio_write -P 0x66 306M 512k",
            "-c", "aio_flush",
            "-c", "write -P 0x99 308M 2M",
            "-c", "write -z 308M 1M",
            "-c", "discard 309M 1M",
            "-c", "flush",
            "-c", "read -P 0xab 300M 1M",
            "-c", "read -P 0x3c 302M 64k",
            "-c", "read -P 0x11 303000000 7000",
            "-c", "read -P 0x42 304M 256k",
            "-c", "read -P 0x55 305M 512k",
            "-c", "read -P 0x66 306M 512k",
            "-c", "read -P 0 308M 2M"], TimeSpan.FromSeconds(180));
        Assert.True(qemu.ExitCode == 0, qemu.ToString());
        Assert.DoesNotContain("failed", qemu.Stdout + qemu.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(7, qemu.Stdout.Split('\n').Count(l => l.StartsWith("read ", StringComparison.Ordinal)));

        // A random 256 MiB image (every 8th MiB zero) in and out with nbdcopy (4 connections, multi-conn).
        var image = Path.Combine(_data, "image.raw");
        var back = Path.Combine(_data, "back.raw");
        NbdRealClientTests.WriteRandomFile(image, 256 * MiB, holeEvery: 8);
        var copyIn = await Tool.RunAsync("nbdcopy", ["--flush", image, uri], TimeSpan.FromSeconds(300));
        Assert.True(copyIn.ExitCode == 0, copyIn.ToString());
        var copyOut = await Tool.RunAsync("nbdcopy", [uri, back], TimeSpan.FromSeconds(300));
        Assert.True(copyOut.ExitCode == 0, copyOut.ToString());
        Assert.Equal(512 * MiB, new FileInfo(back).Length);
        Assert.Equal(Sha256(image, 256 * MiB), Sha256(back, 256 * MiB));
        File.Delete(back);

        // fio with its own checksums, in a region nothing else touches.
        var fio = await Tool.RunAsync("fio", ["--name=verify", "--ioengine=nbd", $"--uri={uri}", "--rw=randwrite", "--bsrange=4k-256k",
            "--offset=384M", "--size=64M", "--iodepth=32", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--output-format=json"], TimeSpan.FromSeconds(300));
        Assert.True(fio.ExitCode == 0, fio.ToString());
        var job = JsonDocument.Parse(fio.Stdout[fio.Stdout.IndexOf('{')..]).RootElement.GetProperty("jobs")[0];
        Assert.Equal(0, job.GetProperty("error").GetInt32());
        Assert.Equal(64 * MiB, job.GetProperty("write").GetProperty("io_bytes").GetInt64());
        Assert.True(job.GetProperty("read").GetProperty("io_bytes").GetInt64() > 0, "fio's verify pass should have read back what it wrote");

        // Every client is gone: the volume stays open on the node but counts no connection.
        await Eventually.UntilAsync("the node to count 0 NBD connections on e2e", TimeSpan.FromSeconds(30), async () =>
        {
            var view = await node.ShowAsync("e2e");
            return (view.GetProperty("openHere").GetBoolean() && view.GetProperty("connections").GetInt32() == 0, view.ToString());
        });

        var verify = await node.CliAsync("volume", "verify", "e2e");
        Assert.True(verify.ExitCode == 0, verify.ToString());
        Assert.Contains("volume 'e2e': 2 legs identical over 512 chunks", verify.Stdout);
        output.WriteLine(verify.Stdout.Trim());
    }

    /// <summary>
    /// In both cache modes: SIGKILL with writes and FLUSHes in flight, restart. Crash recovery runs at node start,
    /// before any client connects; every write acknowledged before an acknowledged FLUSH reads back; legs identical.
    /// </summary>
    [Theory]
    [InlineData("direct")]
    [InlineData("writeback")]
    public async Task Writes_acknowledged_before_a_flush_survive_a_sigkill_and_recovery_at_start_makes_the_legs_identical(string cache)
    {
        Directory.CreateDirectory(Path.Combine(_data, "legs"));
        const int chunk = 64 * 1024;
        const long size = 32 * MiB;
        var workload = new FlushedWrites((int)(size / FlushedWrites.BlockSize), seed: 6);
        int killedPid;
        {
            await using var node = await Node.StartAsync(_data, StartTimeout);
            await node.CreateVolumeWithCacheAsync("crash", "32M", chunk, cache, Path.Combine(_data, "legs", "crash-a.leg"), Path.Combine(_data, "legs", "crash-b.leg"));
            Assert.Equal(cache, (await node.ShowAsync("crash")).GetProperty("cache").GetString());
            await using var client = await RawNbdClient.ConnectAsync(node.NbdPort);
            await client.HandshakeAsync("crash");
            Assert.Equal((ulong)size, client.Size);

            var running = workload.RunAsync(client, inflight: 32, flushEvery: 48);
            await workload.FlushSentAfter(40).WaitAsync(TimeSpan.FromSeconds(120));

            // SIGKILL with the pipeline full, right after a FLUSH went out: writes and (most likely) that FLUSH are in flight.
            var atKill = workload.Snapshot();
            killedPid = node.Process.Id;
            Assert.Equal(0, Signal.Kill(killedPid, 9));
            client.Abort();
            await node.Process.WaitAsync(TimeSpan.FromSeconds(30), "the SIGKILLed node to exit");
            var ended = await Assert.ThrowsAnyAsync<Exception>(() => running.WaitAsync(TimeSpan.FromSeconds(30)));
            output.WriteLine($"at SIGKILL: {atKill}; client ended with {ended.GetType().Name}");
            Assert.True(atKill.BlocksDurable > 500, $"too few writes made durable before the kill to prove anything: {atKill}");
        }

        await using var again = await Node.StartAsync(_data, StartTimeout);
        Assert.False(Signal.IsLockstepAlive(killedPid));

        // Crash recovery runs when the node starts, before any client opens the volume: shown over HTTP as done at
        // "start" while the volume is not open here, and the legs already compare identical.
        JsonElement recovery = default;
        await Eventually.UntilAsync("crash recovery at node start to be reported", TimeSpan.FromSeconds(120), async () =>
        {
            var shown = await again.ShowAsync("crash");
            recovery = shown.GetProperty("recovery").Clone();
            return (recovery.ValueKind == JsonValueKind.Object, shown.ToString());
        });
        Assert.Equal("start", recovery.GetProperty("trigger").GetString());
        var resynced = recovery.GetProperty("chunksResynced").GetInt64();
        output.WriteLine($"{cache}: chunks resynced at node start: {resynced} (chunk {chunk / 1024} KiB)");
        Assert.True(resynced > 0, $"writes were in flight at the kill, so some chunks were dirty: {recovery}");
        var beforeOpen = await again.ShowAsync("crash");
        Assert.False(beforeOpen.GetProperty("openHere").GetBoolean(), $"no client connected yet, the volume must not be open: {beforeOpen}");
        var early = await again.CliAsync("volume", "verify", "crash");
        Assert.True(early.ExitCode == 0, $"legs must be identical after the start recovery, before any open: {early}");
        await LoggedAsync(again, $"Volume crash: crash recovery at node start (slot 0, generation 1): {resynced} chunk(s) resynced after the last crash");

        byte[] image;
        await using (var reader = await RawNbdClient.ConnectAsync(again.NbdPort))
        {
            // The first open runs recovery again as a safety net: it finds nothing left to copy.
            await reader.HandshakeAsync("crash");
            image = new byte[size];
            for (long offset = 0; offset < size; offset += MiB)
            {
                await reader.SendRequestAsync(NbdCommand.Read, (ulong)offset, (ulong)offset, (uint)MiB);
                var reply = await reader.ReadReplyAsync((int)MiB);
                Assert.Equal(0u, reply.Error);
                reply.Data.CopyTo(image, offset);
            }
        }

        var check = workload.Check(image);
        output.WriteLine($"after restart: {check}");
        Assert.True(check.Lost == 0, $"acknowledged-and-flushed writes lost: {check}");
        Assert.True(check.BlocksChecked == workload.Snapshot().BlocksDurable, check.ToString());

        // The checker can fail: put one flushed block back to the version before, and zero another.
        var tampered = (byte[])image.Clone();
        var (older, zeroed) = workload.TwoDurableBlocks();
        workload.Fill(tampered.AsSpan(older * FlushedWrites.BlockSize, FlushedWrites.BlockSize), older, workload.DurableVersion(older) - 1);
        tampered.AsSpan(zeroed * FlushedWrites.BlockSize, FlushedWrites.BlockSize).Clear();
        Assert.Equal(2, workload.Check(tampered).Lost);

        // The open found nothing, so the start's report stays: HTTP (and so `volume show`) and the log give the same count.
        var view = await again.ShowAsync("crash");
        Assert.True(view.GetProperty("openHere").GetBoolean(), view.ToString());
        Assert.Equal("start", view.GetProperty("recovery").GetProperty("trigger").GetString());
        Assert.Equal(resynced, view.GetProperty("recovery").GetProperty("chunksResynced").GetInt64());
        await LoggedAsync(again, "Volume crash open on this node (slot 0, generation 1, cache " + cache + "): 0 chunk(s) resynced");
        var show = await again.CliAsync("volume", "show", "crash");
        Assert.True(show.ExitCode == 0, show.ToString());
        Assert.Contains($"{resynced} chunk(s) resynced at node start", show.Stdout);
        Assert.Contains("Cache", show.Stdout);

        var verify = await again.CliAsync("volume", "verify", "crash");
        Assert.True(verify.ExitCode == 0, verify.ToString());
        Assert.Contains("volume 'crash': 2 legs identical over 512 chunks", verify.Stdout);
    }

    /// <summary>Waits for a line in the node's output: the console logger writes from its own queue, so a line may reach stdout just after HTTP shows what it reports.</summary>
    private static Task LoggedAsync(Node node, string line) =>
        Eventually.UntilAsync($"the log line '{line}'", TimeSpan.FromSeconds(30), () =>
        {
            var output = node.Process.Outcome(-1).Stdout + node.Process.Outcome(-1).Stderr;
            return Task.FromResult((output.Contains(line, StringComparison.Ordinal), output[Math.Max(0, output.Length - 4000)..]));
        });

    private static string Sha256(string path, long length)
    {
        using var file = File.OpenRead(path);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[MiB];
        for (long done = 0; done < length;)
        {
            var read = file.Read(buffer, 0, (int)Math.Min(buffer.Length, length - done));
            Assert.True(read > 0, $"{path} is shorter than {length} bytes");
            hash.AppendData(buffer, 0, read);
            done += read;
        }

        return Convert.ToHexString(hash.GetHashAndReset());
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_data, recursive: true);
        }
        catch (IOException)
        {
            // Best effort.
        }
    }

    /// <summary>A real <c>lockstep serve</c> on free ports with its data folder; SIGTERM (then SIGKILL) on dispose.</summary>
    private sealed class Node : IAsyncDisposable
    {
        private Node(ChildProcess process, HttpClient http, int httpPort, int nbdPort)
        {
            Process = process;
            Http = http;
            HttpPort = httpPort;
            NbdPort = nbdPort;
        }

        public ChildProcess Process { get; }

        public HttpClient Http { get; }

        public int HttpPort { get; }

        public int NbdPort { get; }

        public static async Task<Node> StartAsync(string data, TimeSpan timeout)
        {
            var ports = FreePorts.Take(3);
            var process = ChildProcess.Start(Repo.Lockstep,
                ["serve", "--data", data, "--port", $"{ports[0]}", "--http-port", $"{ports[1]}", "--nbd-port", $"{ports[2]}", "--node-id", "nbdvol"]);
            var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{ports[1]}/"), Timeout = TimeSpan.FromSeconds(120) };
            var node = new Node(process, http, ports[1], ports[2]);
            try
            {
                await Eventually.UntilAsync("the node to answer GET /v1/volumes", timeout, async () =>
                {
                    if (process.HasExited)
                    {
                        Assert.Fail($"lockstep serve exited early: {process.Outcome(-1)}");
                    }

                    try
                    {
                        using var response = await http.GetAsync("v1/volumes");
                        return (response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
                    }
                    catch (HttpRequestException e)
                    {
                        return (false, e.Message);
                    }
                });
                return node;
            }
            catch
            {
                await node.DisposeAsync();
                throw;
            }
        }

        public string Uri(string volume) => $"nbd://127.0.0.1:{NbdPort}/{volume}";

        public Task CreateVolumeAsync(string name, string size, int chunk, params string[] legs) => CreateVolumeWithCacheAsync(name, size, chunk, "direct", legs);

        public async Task CreateVolumeWithCacheAsync(string name, string size, int chunk, string cache, params string[] legs)
        {
            using var created = await Http.PostAsJsonAsync("v1/volumes", new { name, size, chunkSizeBytes = chunk, legs, cache });
            var body = await created.Content.ReadAsStringAsync();
            Assert.True(created.StatusCode == HttpStatusCode.Created, body);
        }

        public async Task<JsonElement> ShowAsync(string name)
        {
            using var response = await Http.GetAsync($"v1/volumes/{name}");
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, body);
            return JsonDocument.Parse(body).RootElement.Clone();
        }

        public Task<ProcessOutcome> CliAsync(params string[] args) =>
            ChildProcess.RunAsync(Repo.Lockstep, [.. args, "--node", $"127.0.0.1:{HttpPort}"], TimeSpan.FromSeconds(180));

        public async ValueTask DisposeAsync()
        {
            Http.Dispose();
            await Process.DisposeAsync();
        }
    }
}

/// <summary>
/// A client workload that knows what must survive a crash: 4 KiB writes to random blocks (never two in flight on one
/// block), each carrying its block number and a per-block version, pipelined, with a FLUSH every few writes. A write
/// acknowledged before a FLUSH was sent is durable once that FLUSH is acknowledged; after the crash such a block must
/// hold that version or a later one that was sent, intact.
/// </summary>
internal sealed class FlushedWrites(int blocks, int seed)
{
    public const int BlockSize = 4096;
    private const uint Magic = 0x4C4B5354; // "LKST"
    private readonly object _lock = new();
    private readonly long[] _sent = new long[blocks];
    private readonly long[] _acked = new long[blocks];
    private readonly long[] _durable = new long[blocks];
    private readonly bool[] _busy = new bool[blocks];
    private readonly Dictionary<ulong, (int Block, long Version)> _writes = [];
    private readonly Dictionary<ulong, long[]> _flushes = [];
    private readonly List<(int Count, TaskCompletionSource Done)> _flushWaiters = [];
    private long _writesAcked;
    private long _flushesAcked;
    private long _errors;

    /// <summary>What the counters say right now.</summary>
    public sealed record Counters(long WritesSent, long WritesAcked, long FlushesAcked, long WritesInFlight, long FlushesInFlight, long BlocksDurable, long Errors)
    {
        public override string ToString() =>
            $"{WritesSent} writes sent, {WritesAcked} acked, {FlushesAcked} flushes acked, in flight: {WritesInFlight} writes + {FlushesInFlight} flushes, {BlocksDurable} blocks durable, {Errors} error replies";
    }

    /// <summary>The result of checking a read-back image.</summary>
    public sealed record Result(long BlocksChecked, long Lost, long Newer, IReadOnlyList<string> Examples)
    {
        public override string ToString() =>
            $"{BlocksChecked} durable blocks checked, {Lost} lost, {Newer} hold a later write that was in flight or unflushed" + (Examples.Count > 0 ? "; e.g. " + string.Join("; ", Examples) : "");
    }

    /// <summary>Completes when a FLUSH has been sent after <paramref name="count"/> FLUSHes were acknowledged.</summary>
    public Task FlushSentAfter(int count)
    {
        lock (_lock)
        {
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _flushWaiters.Add((count, done));
            return done.Task;
        }
    }

    public Counters Snapshot()
    {
        lock (_lock)
        {
            return new Counters(_sent.Sum(), _writesAcked, _flushesAcked, _writes.Count, _flushes.Count, _durable.Count(v => v > 0), _errors);
        }
    }

    public long DurableVersion(int block)
    {
        lock (_lock)
        {
            return _durable[block];
        }
    }

    /// <summary>Two blocks whose durable version is at least 2 (for the tamper check).</summary>
    public (int Older, int Zeroed) TwoDurableBlocks()
    {
        lock (_lock)
        {
            var candidates = Enumerable.Range(0, _durable.Length).Where(b => _durable[b] >= 2).Take(2).ToArray();
            Assert.True(candidates.Length == 2, "no two blocks were flushed after an overwrite");
            return (candidates[0], candidates[1]);
        }
    }

    /// <summary>Runs until the connection fails (the node is killed); one task sends, one reads replies.</summary>
    public async Task RunAsync(RawNbdClient client, int inflight, int flushEvery)
    {
        var slots = new SemaphoreSlim(inflight, inflight);
        using var stop = new CancellationTokenSource();
        var replies = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    var reply = await client.ReadReplyAsync();
                    OnReply(reply.Handle, reply.Error);
                    slots.Release();
                }
            }
            finally
            {
                await stop.CancelAsync();
            }
        });

        var random = new Random(seed);
        var payload = new byte[BlockSize];
        ulong handle = 0;
        var sinceFlush = 0;
        try
        {
            while (true)
            {
                await slots.WaitAsync(stop.Token);
                handle++;
                if (++sinceFlush > flushEvery)
                {
                    sinceFlush = 0;
                    lock (_lock)
                    {
                        // Only writes whose reply was processed before the FLUSH is sent are covered by it.
                        _flushes[handle] = (long[])_acked.Clone();
                    }

                    await client.SendRequestAsync(NbdCommand.Flush, handle, 0, 0);
                    List<TaskCompletionSource> sent;
                    lock (_lock)
                    {
                        sent = _flushWaiters.Where(w => w.Count <= _flushesAcked).Select(w => w.Done).ToList();
                        _flushWaiters.RemoveAll(w => w.Count <= _flushesAcked);
                    }

                    sent.ForEach(d => d.TrySetResult());
                    continue;
                }

                int block;
                long version;
                lock (_lock)
                {
                    do
                    {
                        block = random.Next(blocks);
                    }
                    while (_busy[block]);

                    _busy[block] = true;
                    version = ++_sent[block];
                    _writes[handle] = (block, version);
                }

                Fill(payload, block, version);
                await client.SendRequestAsync(NbdCommand.Write, handle, (ulong)block * BlockSize, BlockSize, payload: payload);
            }
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAny(replies);
        }
    }

    private void OnReply(ulong handle, uint error)
    {
        lock (_lock)
        {
            if (error != 0)
            {
                _errors++;
            }

            if (_writes.Remove(handle, out var write))
            {
                _busy[write.Block] = false;
                if (error == 0)
                {
                    _acked[write.Block] = Math.Max(_acked[write.Block], write.Version);
                    _writesAcked++;
                }
            }
            else if (_flushes.Remove(handle, out var covered))
            {
                if (error == 0)
                {
                    for (var b = 0; b < covered.Length; b++)
                    {
                        _durable[b] = Math.Max(_durable[b], covered[b]);
                    }

                    _flushesAcked++;
                }
            }
            else
            {
                throw new InvalidDataException($"reply for unknown handle {handle}");
            }
        }
    }

    /// <summary>The 4 KiB content of a block at a version: a header, then bytes derived from both.</summary>
    public void Fill(Span<byte> block, int index, long version)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(block, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(block[4..], index);
        BinaryPrimitives.WriteInt64LittleEndian(block[8..], version);
        var x = (ulong)index * 0x9E3779B97F4A7C15UL ^ (ulong)version * 0xD1B54A32D192ED03UL ^ (ulong)seed;
        for (var i = 16; i < BlockSize; i += 8)
        {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            BinaryPrimitives.WriteUInt64LittleEndian(block[i..], x);
        }
    }

    /// <summary>Counts durable blocks whose content is not their durable version or a later one that was sent, intact.</summary>
    public Result Check(ReadOnlySpan<byte> image)
    {
        lock (_lock)
        {
            long checkedBlocks = 0, lost = 0, newer = 0;
            var examples = new List<string>();
            Span<byte> expected = stackalloc byte[BlockSize];
            for (var b = 0; b < blocks; b++)
            {
                if (_durable[b] == 0)
                {
                    continue;
                }

                checkedBlocks++;
                var actual = image.Slice(b * BlockSize, BlockSize);
                var version = BinaryPrimitives.ReadInt64LittleEndian(actual[8..]);
                var intact = BinaryPrimitives.ReadUInt32LittleEndian(actual) == Magic && BinaryPrimitives.ReadInt32LittleEndian(actual[4..]) == b
                    && version >= 1 && version <= _sent[b];
                if (intact)
                {
                    Fill(expected, b, version);
                    intact = actual.SequenceEqual(expected);
                }

                if (!intact || version < _durable[b])
                {
                    lost++;
                    if (examples.Count < 5)
                    {
                        examples.Add(intact ? $"block {b} holds version {version}, flushed {_durable[b]}" : $"block {b} is not an intact write (flushed version {_durable[b]})");
                    }
                }
                else if (version > _durable[b])
                {
                    newer++;
                }
            }

            return new Result(checkedBlocks, lost, newer, examples);
        }
    }
}
