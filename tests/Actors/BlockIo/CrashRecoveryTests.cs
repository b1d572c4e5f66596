using System.Buffers.Binary;
using System.Diagnostics;
using System.Text.Json;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Volumes;
using Xunit;
using Xunit.Abstractions;
using static Lockstep.Actors.Tests.BlockIo.VolumeTestKit;

namespace Lockstep.Actors.Tests.BlockIo;

public sealed class CrashRecoveryTests(ITestOutputHelper output) : IDisposable
{
    private readonly ScratchDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// A separate process writes with FLUSHes and is SIGKILLed with writes in flight. On reopen the dirty chunks
    /// are resynced (some, not all), every write acknowledged before the last FLUSH it reported is there, and the
    /// legs are identical.
    /// </summary>
    [Theory]
    [InlineData(VolumeCacheMode.Direct)]
    [InlineData(VolumeCacheMode.Writeback)]
    public async Task After_SIGKILL_mid_write_the_dirty_chunks_are_resynced_and_flushed_writes_survive(VolumeCacheMode cache)
    {
        const int seed = 4242;
        const int killAfterRound = 8;
        var descriptor = await CreateAsync(_dir, size: 64 << 20, chunk: 64 * 1024, name: "crash");
        var descriptorFile = _dir.File("descriptor.json");
        await File.WriteAllTextAsync(descriptorFile, JsonSerializer.Serialize(descriptor));

        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        var start = new ProcessStartInfo(host) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "exec", typeof(CrashWriter).Assembly.Location, CrashWriter.Mode, descriptorFile, seed.ToString(System.Globalization.CultureInfo.InvariantCulture), cache.ToString() })
        {
            start.ArgumentList.Add(arg);
        }

        using var child = Process.Start(start)!;
        var stderr = child.StandardError.ReadToEndAsync();
        var lastDurable = 0;
        try
        {
            while (lastDurable < killAfterRound)
            {
                var line = await Within(child.StandardOutput.ReadLineAsync(), $"'durable {lastDurable + 1}' from the writer", 60)
                           ?? throw new InvalidOperationException($"writer exited early: {await stderr}");
                lastDurable = int.Parse(line["durable ".Length..], System.Globalization.CultureInfo.InvariantCulture);
            }

            // The writer started the next round right after printing: its writes are in flight now.
            child.Kill(); // SIGKILL
        }
        finally
        {
            if (!child.HasExited)
            {
                child.Kill();
            }
        }

        await child.WaitForExitAsync();
        // Lines printed before the kill landed still count as acknowledged.
        while (await child.StandardOutput.ReadLineAsync() is { } more)
        {
            lastDurable = int.Parse(more["durable ".Length..], System.Globalization.CultureInfo.InvariantCulture);
        }

        var before = await VolumeVerifier.VerifyAsync(descriptor);
        output.WriteLine($"killed after durable round {lastDurable}; chunks differing before recovery: {before.DifferingChunks.Count}");
        var dirtyOnDisk = (await BitsOnDiskAsync(descriptor.Legs[0].Path, descriptor.Geometry)).Count;
        Assert.True(dirtyOnDisk > 0, "the killed writer left no dirty bits");

        var (volume, _) = await OpenAsync(descriptor, options: new MirrorVolumeOptions { Cache = cache });
        await using (volume)
        {
            var report = volume.Recovery;
            output.WriteLine($"resynced {report.ChunksResynced} of {descriptor.Geometry.ChunkCount} chunks, {report.Bytes} bytes in {report.Elapsed.TotalMilliseconds:F1} ms");
            Assert.True(report.ChunksResynced > 0, "recovery resynced nothing");
            Assert.True(report.ChunksResynced < descriptor.Geometry.ChunkCount, "recovery copied every chunk: that is a full resync, not an incremental one");
            Assert.True(report.ChunksResynced >= dirtyOnDisk);

            var blocks = descriptor.Geometry.SizeBytes / CrashWriter.Block;
            var writtenIn = new Dictionary<long, List<int>>();
            for (var round = 1; round <= lastDurable + 1; round++)
            {
                foreach (var b in CrashWriter.Plan(seed, round, blocks))
                {
                    (writtenIn.TryGetValue(b, out var list) ? list : writtenIn[b] = []).Add(round);
                }
            }

            var checkedBlocks = 0;
            foreach (var (block, rounds) in writtenIn)
            {
                var data = new byte[CrashWriter.Block];
                await volume.ReadAsync(block * CrashWriter.Block, data);
                var lastFlushed = rounds.Where(r => r <= lastDurable).DefaultIfEmpty(0).Max();
                if (data.All(b => b == 0))
                {
                    Assert.True(lastFlushed == 0, $"block {block} reads as zeroes but round {lastFlushed} wrote it and was flushed");
                    continue;
                }

                var round = (int)BinaryPrimitives.ReadInt64LittleEndian(data.AsSpan(8));
                Assert.Equal(block, BinaryPrimitives.ReadInt64LittleEndian(data));
                Assert.Contains(round, rounds);
                Assert.True(round >= lastFlushed, $"block {block} holds round {round}, older than flushed round {lastFlushed}");
                Assert.Equal(CrashWriter.Content(block, round), data);
                checkedBlocks++;
            }

            Assert.True(checkedBlocks >= CrashWriter.BlocksPerRound * 4, $"only {checkedBlocks} blocks held data");
            var verify = await volume.VerifyAsync();
            Assert.Empty(verify.DifferingChunks);
        }

        var offline = await VolumeVerifier.VerifyAsync(descriptor);
        Assert.True(offline.Identical, $"legs differ after recovery: {string.Join(",", offline.DifferingChunks)}");
    }
}
