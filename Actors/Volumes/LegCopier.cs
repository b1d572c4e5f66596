using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Microsoft.Extensions.Logging;

namespace Lockstep.Actors.Volumes;

/// <summary>What a full leg copy did.</summary>
/// <param name="BytesCopied">Data bytes read from the source and written to the target (holes are skipped).</param>
/// <param name="Elapsed">Wall time.</param>
public sealed record LegCopyReport(long BytesCopied, TimeSpan Elapsed);

/// <summary>
/// Brings a newly added (resyncing) leg up to date with a full copy of the data area from an in-sync leg. The
/// caller makes sure nothing writes the volume meanwhile (the catalog closes it on this node). Holes of the source
/// are skipped: the target was formatted all zeroes. The target's events counter is set to the source's last, so
/// the pipeline does not take the copy for a stale leg.
/// </summary>
public static class LegCopier
{
    private const int Piece = 4 << 20;

    /// <summary>Copies <paramref name="source"/> to <paramref name="target"/>; throws <see cref="IOException"/> with the failing leg named.</summary>
    public static async Task<LegCopyReport> CopyAsync(VolumeDescriptor descriptor, LegDescriptor source, LegDescriptor target, ILogger logger, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        var started = System.Diagnostics.Stopwatch.StartNew();
        var layout = LegLayout.For(descriptor.Geometry);
        var sourceProbe = LegProbe.Read(source.Path, descriptor.VolumeId, source.LegId, logger);
        if (!sourceProbe.IsOk)
        {
            throw new IOException($"source leg: {sourceProbe.Reason}");
        }

        var targetProbe = LegProbe.Read(target.Path, descriptor.VolumeId, target.LegId, logger);
        if (!targetProbe.IsOk)
        {
            throw new IOException($"target leg: {targetProbe.Reason}");
        }

        using var from = LegFile.Open(source.Path, writable: false, logger);
        using var to = LegFile.Open(target.Path, writable: true, logger);
        var buffer = AlignedBufferPool.Shared.Rent(Piece);
        long copied = 0;
        try
        {
            var runs = new List<(long Length, bool Hole)>();
            from.GetAllocation(layout.DataOffset, descriptor.Geometry.SizeBytes, runs);
            var position = layout.DataOffset;
            if (runs.Count == 0)
            {
                runs.Add((descriptor.Geometry.SizeBytes, false));
            }

            foreach (var (length, hole) in runs)
            {
                if (!hole)
                {
                    for (long done = 0; done < length; done += Piece)
                    {
                        var count = (int)Math.Min(Piece, length - done);
                        var memory = buffer.All[..count];
                        await from.ReadAsync(position + done, memory, cancellation).ConfigureAwait(false);
                        await to.WriteAsync(position + done, memory, cancellation).ConfigureAwait(false);
                        copied += count;
                    }
                }

                position += length;
            }
        }
        finally
        {
            AlignedBufferPool.Shared.Return(buffer);
        }

        await to.FlushAsync(cancellation).ConfigureAwait(false);
        var events = sourceProbe.Superblock!.Events;
        if (targetProbe.Superblock!.Events != events)
        {
            await LegMetadata.WriteSuperblockAsync(to, targetProbe.Superblock with { Events = events }, flush: true, cancellation).ConfigureAwait(false);
        }

        logger.LogInformation("Volume {Volume}: copied {Bytes} bytes from leg {Source} to new leg {Target} in {Elapsed}",
            descriptor.Name, copied, source.LegId, target.LegId, started.Elapsed);
        return new LegCopyReport(copied, started.Elapsed);
    }
}
