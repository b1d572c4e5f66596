using Lockstep.Contracts.Disk;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Lockstep.Actors.Volumes;

/// <summary>
/// The disk work behind volume metadata changes, behind an interface so the entity's tests can inject a
/// failure at a precise step. The production implementation is <see cref="LegProvisioner"/>.
/// </summary>
public interface ILegProvisioner
{
    /// <summary>
    /// Formats every leg in <paramref name="legs"/> for <paramref name="descriptor"/>. Either all legs are formatted,
    /// or it throws with a reason a person can act on, after wiping the legs it had formatted (so the paths can be used
    /// again). Formatting a leg that already carries this volume's and leg's UUIDs again is allowed: a create
    /// interrupted by a crash is simply run again.
    /// </summary>
    Task ProvisionAsync(VolumeDescriptor descriptor, IReadOnlyList<LegDescriptor> legs, CancellationToken cancellation = default);

    /// <summary>
    /// Zeroes the superblock of every leg in <paramref name="legs"/> that still carries this volume's UUID (never a
    /// leg of another volume). Returns the legs it could not wipe and why; never throws for a single leg.
    /// </summary>
    Task<IReadOnlyList<string>> WipeAsync(VolumeDescriptor descriptor, IReadOnlyList<LegDescriptor> legs, CancellationToken cancellation = default);
}

/// <summary>Formats and wipes legs with the on-disk format of <see cref="LegFormatter"/> (O_DIRECT, each step durable).</summary>
public sealed class LegProvisioner(ILogger? logger = null) : ILegProvisioner
{
    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    /// <inheritdoc />
    public async Task ProvisionAsync(VolumeDescriptor descriptor, IReadOnlyList<LegDescriptor> legs, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        ArgumentNullException.ThrowIfNull(legs);
        var events = NewLegEvents(descriptor, legs);
        var formatted = new List<LegDescriptor>();
        try
        {
            foreach (var leg in legs)
            {
                if (Directory.GetParent(leg.Path) is { Exists: false } parent)
                {
                    throw new LegFormatException($"cannot create leg {leg.Path}: folder {parent.FullName} does not exist");
                }

                await WipeRemovedLegOfThisVolumeAsync(descriptor, leg, cancellation).ConfigureAwait(false);
                await LegFormatter.CreateAsync(leg.Path, descriptor, leg.LegId, force: false, events, _logger, cancellation).ConfigureAwait(false);
                formatted.Add(leg);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            if (formatted.Count > 0)
            {
                var problems = await WipeAsync(descriptor, formatted, CancellationToken.None).ConfigureAwait(false);
                foreach (var problem in problems)
                {
                    _logger.LogWarning("Volume {Volume}: cleaning up after a failed format: {Problem}", descriptor.Name, problem);
                }
            }

            throw new LegFormatException(e.Message, e);
        }
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<string>> WipeAsync(VolumeDescriptor descriptor, IReadOnlyList<LegDescriptor> legs, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        ArgumentNullException.ThrowIfNull(legs);
        var problems = new List<string>();
        foreach (var leg in legs)
        {
            var probe = LegProbe.Read(leg.Path, descriptor.VolumeId, leg.LegId, _logger);
            switch (probe.Status)
            {
                case LegProbeStatus.Blank or LegProbeStatus.Unknown:
                    continue; // Nothing of ours there.
                case LegProbeStatus.Ok or LegProbeStatus.TooSmall when probe.Superblock!.VolumeId == descriptor.VolumeId && probe.Superblock.LegId == leg.LegId:
                    break;
                case LegProbeStatus.OtherLeg when probe.Superblock!.VolumeId == descriptor.VolumeId:
                    break;
                default:
                    problems.Add($"leg {leg.LegId} at {leg.Path} left alone: {probe.Reason}");
                    continue;
            }

            try
            {
                await ZeroSuperblockAsync(leg.Path, cancellation).ConfigureAwait(false);
                _logger.LogInformation("Volume {Volume}: wiped the superblock of leg {LegId} at {Path}", descriptor.Name, leg.LegId, leg.Path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                problems.Add($"leg {leg.LegId} at {leg.Path}: cannot wipe the superblock: {e.Message}");
            }
        }

        return problems;
    }

    /// <summary>
    /// A leg added later starts with the events counter the in-sync legs carry now, so the pipeline does not take it
    /// for stale once it is resynced; a new volume starts at 1.
    /// </summary>
    private long NewLegEvents(VolumeDescriptor descriptor, IReadOnlyList<LegDescriptor> legs)
    {
        var existing = descriptor.Legs.Where(l => l.State == LegState.InSync && legs.All(n => n.LegId != l.LegId)).ToArray();
        long events = 1;
        foreach (var leg in existing)
        {
            var probe = LegProbe.Read(leg.Path, descriptor.VolumeId, leg.LegId, _logger);
            if (probe.IsOk)
            {
                events = Math.Max(events, probe.Superblock!.Events);
            }
        }

        return events;
    }

    /// <summary>A leg that was removed from this volume keeps its superblock when the wipe could not run; reusing its path must still work.</summary>
    private async Task WipeRemovedLegOfThisVolumeAsync(VolumeDescriptor descriptor, LegDescriptor leg, CancellationToken cancellation)
    {
        var probe = LegProbe.Read(leg.Path, descriptor.VolumeId, leg.LegId, _logger);
        if (probe.Status == LegProbeStatus.OtherLeg && probe.Superblock!.VolumeId == descriptor.VolumeId && descriptor.Legs.All(l => l.LegId != probe.Superblock.LegId))
        {
            _logger.LogInformation("Volume {Volume}: {Path} held removed leg {OldLeg}; wiping it for leg {LegId}", descriptor.Name, leg.Path, probe.Superblock.LegId, leg.LegId);
            await ZeroSuperblockAsync(leg.Path, cancellation).ConfigureAwait(false);
        }
    }

    private async Task ZeroSuperblockAsync(string path, CancellationToken cancellation)
    {
        using var file = LegFile.Open(path, writable: true, _logger);
        await file.ZeroAsync(0, LegFormat.BlockSize, mayPunchHole: false, cancellation).ConfigureAwait(false);
        await file.FlushAsync(cancellation).ConfigureAwait(false);
    }
}
