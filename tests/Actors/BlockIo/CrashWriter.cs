using System.Buffers.Binary;
using System.Text.Json;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Volumes;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lockstep.Actors.Tests.BlockIo;

/// <summary>
/// Entry point of the test assembly when run as a program (<c>dotnet exec Lockstep.Actors.Tests.dll MODE …</c>):
/// helper modes for tests that need a real separate process, such as one to SIGKILL.
/// </summary>
public static class TestProgram
{
    public static async Task<int> Main(string[] args)
    {
        if (args.Length == 4 && args[0] == CrashWriter.Mode && Enum.TryParse<VolumeCacheMode>(args[3], out var cache))
        {
            return await CrashWriter.RunAsync(args[1], int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture), cache);
        }

        await Console.Error.WriteLineAsync($"usage: {CrashWriter.Mode} DESCRIPTOR.json SEED Direct|Writeback");
        return 2;
    }
}

/// <summary>
/// The writer of the crash test: rounds of concurrent 4 KiB writes to planned blocks, each round followed by a
/// FLUSH and then a line "durable N" on stdout. Every block carries (block, round) so the survivor can tell which
/// write it holds. It never stops by itself; the test kills it with SIGKILL.
/// </summary>
public static class CrashWriter
{
    public const string Mode = "crash-writer";
    public const int BlocksPerRound = 32;
    public const int Block = 4096;

    public static async Task<int> RunAsync(string descriptorFile, int seed, VolumeCacheMode cache)
    {
        var descriptor = JsonSerializer.Deserialize<VolumeDescriptor>(await File.ReadAllTextAsync(descriptorFile))!;
        // Bits stay set for the life of the process: the crash must leave dirty chunks behind.
        var volume = await MirrorVolume.OpenAsync(descriptor, 0, NoVolumeEvents.Instance, NullLogger.Instance,
            new MirrorVolumeOptions { BitmapClearDelay = TimeSpan.FromHours(1), Cache = cache });
        var blocks = descriptor.Geometry.SizeBytes / Block;
        for (var round = 1; ; round++)
        {
            await Task.WhenAll(Plan(seed, round, blocks).Select(b => volume.WriteAsync(b * Block, Content(b, round), false).AsTask()));
            await volume.FlushAsync();
            Console.Out.WriteLine($"durable {round}");
            Console.Out.Flush();
        }
    }

    /// <summary>
    /// The distinct blocks round <paramref name="round"/> writes, all in the first half of the volume so that the
    /// chunks left dirty are never all of them. (Seeds are plain arithmetic: HashCode differs per process.)
    /// </summary>
    public static long[] Plan(int seed, int round, long blocks)
    {
        var random = new Random(seed * 1_000_003 + round);
        var set = new HashSet<long>();
        while (set.Count < BlocksPerRound)
        {
            set.Add(random.NextInt64(0, blocks / 2));
        }

        return [.. set];
    }

    /// <summary>4 KiB identifying the block and the round, the rest pseudo-random so a mix-up shows.</summary>
    public static byte[] Content(long block, int round)
    {
        var data = new byte[Block];
        new Random((int)(block * 7919 + round)).NextBytes(data);
        BinaryPrimitives.WriteInt64LittleEndian(data, block);
        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(8), round);
        return data;
    }
}
