using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Microsoft.Extensions.Logging;

namespace Lockstep.Persistence.Disk;

/// <summary>A leg that cannot be formatted, with the reason a person can act on.</summary>
public sealed class LegFormatException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>
/// Formats a path as a leg of a volume: zeroes the data area (so all legs start identical) and the bitmap
/// slots, writes every slot header, then the superblock last, each step made durable before the next — a
/// power-off leaves either no superblock (the path is still blank) or a complete leg.
/// <code>
/// var sb = await LegFormatter.CreateAsync("/srv/legs/a.img", descriptor, descriptor.Legs[0].LegId);
/// </code>
/// </summary>
public static class LegFormatter
{
    /// <summary>
    /// Creates (a missing or empty file is created at its size) or re-formats the leg. Refuses, with
    /// <see cref="LegFormatException"/>: a leg of another volume, another leg of this volume, a damaged Lockstep
    /// superblock, foreign data (unless <paramref name="force"/>), and a block device that is too small.
    /// Formatting the same leg of the same volume again is allowed, so a create interrupted by a crash can be retried.
    /// The initial events counter is <paramref name="events"/>: 1 for a new volume; a leg added later gets the volume's current count.
    /// </summary>
    public static async Task<LegSuperblock> CreateAsync(string path, VolumeDescriptor descriptor, Guid legId, bool force = false, long events = 1, ILogger? logger = null, CancellationToken cancellation = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(descriptor);
        LegLayout layout;
        try
        {
            layout = LegLayout.For(descriptor.Geometry);
        }
        catch (ArgumentException e)
        {
            throw new LegFormatException($"volume '{descriptor.Name}': {e.Message}", e);
        }

        if (Directory.Exists(path))
        {
            throw new LegFormatException($"leg {path} is a directory; give a file or a block device");
        }

        var existed = File.Exists(path);
        if (existed)
        {
            var probe = LegProbe.Read(path, descriptor.VolumeId, legId, logger);
            switch (probe.Status)
            {
                case LegProbeStatus.Ok or LegProbeStatus.Blank or LegProbeStatus.TooSmall when probe.Superblock is null || (probe.Superblock.VolumeId == descriptor.VolumeId && probe.Superblock.LegId == legId):
                    break;
                case LegProbeStatus.Unknown when force:
                    break;
                case LegProbeStatus.Unknown:
                    throw new LegFormatException($"{probe.Reason}; it holds data that is not a Lockstep leg, refusing to overwrite it without force");
                case LegProbeStatus.OtherVolume or LegProbeStatus.OtherLeg:
                    throw new LegFormatException($"refusing to format: {probe.Reason}");
                case LegProbeStatus.Torn or LegProbeStatus.UnsupportedVersion or LegProbeStatus.Invalid when !force:
                    throw new LegFormatException($"refusing to format: {probe.Reason}; it may be a leg of another volume, wipe its first 4 KiB to reuse it");
                case LegProbeStatus.Unreadable:
                    throw new LegFormatException(probe.Reason);
                default:
                    if (!force)
                    {
                        throw new LegFormatException($"refusing to format: {probe.Reason}");
                    }

                    break;
            }
        }

        LegFile leg;
        try
        {
            leg = LegFile.OpenOrCreate(path, layout.RequiredLength, logger);
        }
        catch (IOException e)
        {
            throw new LegFormatException($"cannot create leg {path}: {e.Message}", e);
        }

        using (leg)
        {
            if (leg.Length < layout.RequiredLength)
            {
                if (leg.IsBlockDevice)
                {
                    throw new LegFormatException(
                        $"block device {path} has {leg.Length} bytes; volume '{descriptor.Name}' needs {layout.RequiredLength} ({layout.DataOffset} metadata + {descriptor.Geometry.SizeBytes} data)");
                }

                // A blank or foreign file that is too short: grow it, as a missing file would have been created.
                try
                {
                    leg.Grow(layout.RequiredLength);
                }
                catch (IOException e)
                {
                    throw new LegFormatException(e.Message, e);
                }
            }

            try
            {
                // A freshly created file is all holes already; anything else is zeroed so every leg reads the same.
                if (existed)
                {
                    await leg.ZeroAsync(0, layout.RequiredLength, mayPunchHole: true, cancellation).ConfigureAwait(false);
                }

                var buffer = AlignedBufferPool.Shared.Rent(LegFormat.BlockSize);
                try
                {
                    var block = buffer.All[..LegFormat.BlockSize];
                    for (var slot = 0; slot < descriptor.Geometry.MaxNodes; slot++)
                    {
                        LegCodec.EncodeSlotHeader(new BitmapSlotHeader(LegFormat.Version, slot, descriptor.VolumeId, events, layout.ChunkCount, 0, 0), block.Span);
                        await leg.WriteAsync(layout.SlotOffset(slot), block, cancellation).ConfigureAwait(false);
                    }
                }
                finally
                {
                    AlignedBufferPool.Shared.Return(buffer);
                }

                await leg.FlushAsync(cancellation).ConfigureAwait(false);
                var superblock = new LegSuperblock(LegFormat.Version, descriptor.VolumeId, legId, events, descriptor.Geometry, layout.DataOffset,
                    DateTimeOffset.UtcNow.ToUnixTimeSeconds(), descriptor.Name);
                await LegMetadata.WriteSuperblockAsync(leg, superblock, flush: true, cancellation).ConfigureAwait(false);
                logger?.LogInformation("Formatted leg {LegId} of volume {Volume} at {Path} (data at {DataOffset}, O_DIRECT {Direct})",
                    legId, descriptor.Name, path, layout.DataOffset, leg.DirectIo);
                return superblock;
            }
            catch (IOException e) when (e is not LegFormatException)
            {
                throw new LegFormatException($"formatting leg {path} failed: {e.Message}", e);
            }
        }
    }
}
