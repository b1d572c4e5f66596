using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Microsoft.Extensions.Logging;

namespace Lockstep.Actors.BlockIo;

/// <summary>
/// Compares the in-sync legs of a volume that is not open on this node, chunk by chunk, reading with O_DIRECT.
/// For a volume that is open, use <see cref="MirrorVolume.VerifyAsync"/>, which compares each chunk while no
/// write to it is in flight.
/// <code>
/// var report = await VolumeVerifier.VerifyAsync(descriptor);
/// Console.WriteLine(report.Identical ? "legs identical" : $"differing chunks: {string.Join(",", report.DifferingChunks)}");
/// </code>
/// </summary>
public static class VolumeVerifier
{
    public static async Task<VerifyReport> VerifyAsync(VolumeDescriptor descriptor, IReadOnlyList<string>? searchPaths = null, ILogger? logger = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        var layout = LegLayout.For(descriptor.Geometry);
        var candidates = (searchPaths ?? [])
            .Concat(descriptor.Legs.Select(l => Path.GetDirectoryName(Path.GetFullPath(l.Path)) ?? "/"))
            .Distinct(StringComparer.Ordinal)
            .ToArray();
        var problems = new List<string>();
        var legs = new List<(Guid Id, LegFile File)>();
        try
        {
            foreach (var leg in descriptor.Legs)
            {
                if (leg.State != LegState.InSync)
                {
                    problems.Add($"leg {leg.LegId} skipped: it is {leg.State}");
                    continue;
                }

                var probe = LegLocator.Find(descriptor.VolumeId, leg.LegId, leg.Path, candidates, logger);
                if (probe is null)
                {
                    problems.Add($"leg {leg.LegId} not found at {leg.Path} nor in {string.Join(", ", candidates)}");
                    continue;
                }

                try
                {
                    legs.Add((leg.LegId, LegFile.Open(probe.Path, writable: false, logger)));
                }
                catch (IOException e)
                {
                    problems.Add(e.Message);
                }
            }

            var differing = new List<long>();
            if (legs.Count >= 2)
            {
                using var comparer = new ChunkComparer(legs.Count);
                var devices = legs.Select(l => (ILegDevice)l.File).ToArray();
                var chunkSize = (long)descriptor.Geometry.ChunkSizeBytes;
                for (long chunk = 0; chunk < layout.ChunkCount; chunk++)
                {
                    var start = chunk * chunkSize;
                    if (await comparer.DiffersAsync(devices, layout.DataOffset + start, Math.Min(chunkSize, descriptor.Geometry.SizeBytes - start), cancellation).ConfigureAwait(false))
                    {
                        differing.Add(chunk);
                    }
                }
            }
            else
            {
                problems.Add($"only {legs.Count} leg(s) readable: nothing to compare");
            }

            if (differing.Count > 0)
            {
                await ExplainAsync(legs.Select(l => (ILegDevice)l.File).ToArray(), layout, descriptor.Geometry.MaxNodes, differing, problems, cancellation).ConfigureAwait(false);
            }

            return new VerifyReport(legs.Count >= 2 ? layout.ChunkCount : 0, differing, legs.Select(l => l.Id).ToArray(), problems);
        }
        finally
        {
            foreach (var (_, file) in legs)
            {
                file.Dispose();
            }
        }
    }

    /// <summary>
    /// Says which differing chunks are marked dirty in some node's bitmap slot: those are writes that were in flight
    /// when a node stopped, which crash recovery copies at the next open; the others are real divergence.
    /// </summary>
    private static async Task ExplainAsync(IReadOnlyList<ILegDevice> legs, LegLayout layout, int maxNodes, List<long> differing, List<string> problems, CancellationToken cancellation)
    {
        var union = new byte[layout.SlotBitsBytes];
        var bits = new byte[layout.SlotBitsBytes];
        try
        {
            foreach (var leg in legs)
            {
                for (var slot = 0; slot < maxNodes; slot++)
                {
                    await LegMetadata.ReadSlotBitsAsync(leg, layout, slot, bits, cancellation).ConfigureAwait(false);
                    for (var i = 0; i < bits.Length; i++)
                    {
                        union[i] |= bits[i];
                    }
                }
            }
        }
        catch (IOException e)
        {
            problems.Add($"bitmap slots could not be read to explain the differences: {e.Message}");
            return;
        }

        var dirty = differing.Count(chunk => (union[chunk >> 3] & (1 << (int)(chunk & 7))) != 0);
        if (dirty > 0)
        {
            problems.Add($"{dirty} of the {differing.Count} differing chunk(s) are marked dirty in a bitmap slot: writes were in flight when a node stopped; "
                + "crash recovery copies them when the volume is next opened on a node (connect a client once, then verify again)");
        }

        if (dirty < differing.Count)
        {
            problems.Add($"{differing.Count - dirty} differing chunk(s) are not marked dirty in any bitmap slot: crash recovery will not repair them");
        }
    }
}

/// <summary>Reads one range from every leg in pieces and says whether any two differ.</summary>
internal sealed class ChunkComparer(int legs) : IDisposable
{
    private const int Piece = 4 << 20;
    private readonly AlignedBuffer[] _buffers = Enumerable.Range(0, legs).Select(_ => AlignedBufferPool.Shared.Rent(Piece)).ToArray();

    public async Task<bool> DiffersAsync(IReadOnlyList<ILegDevice> devices, long offset, long length, CancellationToken cancellation)
    {
        for (long done = 0; done < length; done += Piece)
        {
            var count = (int)Math.Min(Piece, length - done);
            var reads = new Task[devices.Count];
            for (var i = 0; i < devices.Count; i++)
            {
                reads[i] = devices[i].ReadAsync(offset + done, _buffers[i].All[..count], cancellation).AsTask();
            }

            await Task.WhenAll(reads).ConfigureAwait(false);
            for (var i = 1; i < devices.Count; i++)
            {
                if (!_buffers[0].All.Span[..count].SequenceEqual(_buffers[i].All.Span[..count]))
                {
                    return true;
                }
            }
        }

        return false;
    }

    public void Dispose()
    {
        foreach (var buffer in _buffers)
        {
            AlignedBufferPool.Shared.Return(buffer);
        }
    }
}
