using Lockstep.Contracts.Disk;
using Microsoft.Extensions.Logging;

namespace Lockstep.Persistence.Disk;

/// <summary>What a path turned out to hold.</summary>
public enum LegProbeStatus
{
    /// <summary>A valid leg superblock (and, when asked, the expected volume and leg).</summary>
    Ok,

    /// <summary>Nothing at that path.</summary>
    Missing,

    /// <summary>The path exists but cannot be opened or read.</summary>
    Unreadable,

    /// <summary>Zeroes where the superblock belongs: not formatted.</summary>
    Blank,

    /// <summary>Some other data: not a Lockstep leg.</summary>
    Unknown,

    /// <summary>A Lockstep superblock whose checksum fails: torn write or corruption.</summary>
    Torn,

    /// <summary>A Lockstep superblock of a format version this build does not read.</summary>
    UnsupportedVersion,

    /// <summary>A Lockstep superblock whose fields contradict each other.</summary>
    Invalid,

    /// <summary>A valid superblock, but the device is shorter than the volume it claims to hold.</summary>
    TooSmall,

    /// <summary>A valid leg of another volume.</summary>
    OtherVolume,

    /// <summary>A valid leg of the expected volume, but another leg of it.</summary>
    OtherLeg,
}

/// <summary>The outcome of probing a path: the superblock when there is one, and a reason a person can act on.</summary>
public sealed record LegProbeResult(string Path, LegProbeStatus Status, LegSuperblock? Superblock, string Reason, long DeviceLength)
{
    public bool IsOk => Status == LegProbeStatus.Ok;
}

/// <summary>
/// Reads the superblock at a path and says what it is. Uses O_DIRECT like the pipeline, so a leg written by
/// another node is seen as it is on disk, not as a stale page cache remembers it.
/// <code>
/// var probe = LegProbe.Read("/srv/legs/a.img", descriptor.VolumeId, legId);
/// if (!probe.IsOk) Console.Error.WriteLine(probe.Reason);
/// </code>
/// </summary>
public static class LegProbe
{
    /// <summary>Probes <paramref name="path"/>; with ids given, a leg of another volume or another leg is reported as such.</summary>
    public static LegProbeResult Read(string path, Guid? expectedVolumeId = null, Guid? expectedLegId = null, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path))
        {
            return new(path, LegProbeStatus.Missing, null, $"leg {path}: no such file or device", 0);
        }

        LegFile leg;
        try
        {
            leg = LegFile.Open(path, writable: false, logger);
        }
        catch (IOException e)
        {
            return new(path, LegProbeStatus.Unreadable, null, e.Message, 0);
        }

        using (leg)
        {
            if (leg.Length < LegFormat.BlockSize)
            {
                return new(path, LegProbeStatus.Blank, null, $"leg {path}: {leg.Length} bytes, too short to hold a superblock", leg.Length);
            }

            var buffer = AlignedBufferPool.Shared.Rent(LegFormat.BlockSize);
            try
            {
                var block = buffer.All.Span[..LegFormat.BlockSize];
                try
                {
                    leg.ReadExactly(0, block);
                }
                catch (IOException e)
                {
                    return new(path, LegProbeStatus.Unreadable, null, $"leg {path}: cannot read the superblock: {e.Message}", leg.Length);
                }

                return Classify(path, LegCodec.DecodeSuperblock(block), leg.Length, expectedVolumeId, expectedLegId);
            }
            finally
            {
                AlignedBufferPool.Shared.Return(buffer);
            }
        }
    }

    /// <summary>Turns a decoded superblock into a probe result (shared with open paths that already read it).</summary>
    public static LegProbeResult Classify(string path, Decoded<LegSuperblock> decoded, long deviceLength, Guid? expectedVolumeId, Guid? expectedLegId)
    {
        var status = decoded.Status switch
        {
            MetadataBlockStatus.Valid => LegProbeStatus.Ok,
            MetadataBlockStatus.Blank => LegProbeStatus.Blank,
            MetadataBlockStatus.Unknown => LegProbeStatus.Unknown,
            MetadataBlockStatus.Torn => LegProbeStatus.Torn,
            MetadataBlockStatus.UnsupportedVersion => LegProbeStatus.UnsupportedVersion,
            _ => LegProbeStatus.Invalid,
        };
        if (status != LegProbeStatus.Ok)
        {
            return new(path, status, null, $"leg {path}: {decoded.Reason}", deviceLength);
        }

        var sb = decoded.Value!;
        var required = sb.DataOffset + sb.Geometry.SizeBytes;
        if (deviceLength < required)
        {
            return new(path, LegProbeStatus.TooSmall, sb,
                $"leg {path} of volume '{sb.VolumeName}' ({sb.VolumeId}) is {deviceLength} bytes but needs {required} (data offset {sb.DataOffset} + size {sb.Geometry.SizeBytes})", deviceLength);
        }

        if (expectedVolumeId is { } volumeId && sb.VolumeId != volumeId)
        {
            return new(path, LegProbeStatus.OtherVolume, sb, $"leg {path} belongs to another volume: '{sb.VolumeName}' ({sb.VolumeId}), not {volumeId}", deviceLength);
        }

        if (expectedLegId is { } legId && sb.LegId != legId)
        {
            return new(path, LegProbeStatus.OtherLeg, sb, $"leg {path} is leg {sb.LegId} of volume '{sb.VolumeName}', not leg {legId}", deviceLength);
        }

        return new(path, LegProbeStatus.Ok, sb, $"leg {path}: leg {sb.LegId} of volume '{sb.VolumeName}' ({sb.VolumeId}), events {sb.Events}", deviceLength);
    }
}

/// <summary>
/// Finds a leg by its UUIDs when it is no longer where the metadata last saw it (devices renamed, files moved):
/// legs are identified by their superblock, never by path.
/// </summary>
public static class LegLocator
{
    /// <summary>
    /// Probes <paramref name="hintPath"/> first, then every candidate: a file or device is probed, a directory's
    /// entries are probed (not recursively). Returns the first match, or null.
    /// </summary>
    public static LegProbeResult? Find(Guid volumeId, Guid legId, string? hintPath, IEnumerable<string> candidates, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var path in Expand(hintPath, candidates))
        {
            var full = System.IO.Path.GetFullPath(path);
            if (!seen.Add(full))
            {
                continue;
            }

            var probe = LegProbe.Read(full, volumeId, legId, logger);
            if (probe.IsOk)
            {
                return probe;
            }
        }

        return null;
    }

    private static IEnumerable<string> Expand(string? hintPath, IEnumerable<string> candidates)
    {
        if (!string.IsNullOrWhiteSpace(hintPath))
        {
            yield return hintPath;
        }

        foreach (var candidate in candidates)
        {
            if (string.IsNullOrWhiteSpace(candidate))
            {
                continue;
            }

            if (Directory.Exists(candidate))
            {
                string[] entries;
                try
                {
                    entries = Directory.GetFiles(candidate);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    continue;
                }

                Array.Sort(entries, StringComparer.Ordinal);
                foreach (var entry in entries)
                {
                    yield return entry;
                }
            }
            else if (File.Exists(candidate))
            {
                yield return candidate;
            }
        }
    }
}
