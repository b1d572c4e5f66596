using Akka.Actor;
using Akka.Hosting;
using Lockstep.Actors.BlockIo;
using Lockstep.Actors.Volumes;
using Lockstep.Contracts.Volumes;

namespace Lockstep.Hosting.Volumes;

/// <summary>A volume command the node could not get answered (entity unreachable, timeout).</summary>
public sealed class VolumeUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A volume could not be closed for an exclusive operation because NBD connections use it.</summary>
public sealed class VolumeInUseException(string message) : Exception(message);

/// <summary>When crash recovery ran on this node.</summary>
public enum RecoveryTrigger
{
    /// <summary>At node start (<see cref="VolumeCatalog.RecoverAtStartAsync"/>).</summary>
    Start,

    /// <summary>At the volume's first open on this node (the safety net, and the only place for a volume whose legs were not present at start).</summary>
    Open,
}

/// <summary>What crash recovery did for a volume on this node, and when it ran.</summary>
/// <param name="Report">Chunks and bytes copied, time taken, source leg.</param>
/// <param name="Trigger">Node start or first open.</param>
public sealed record LocalRecovery(ResyncReport Report, RecoveryTrigger Trigger);

/// <summary>
/// This node's view of the volumes: sends commands to the Volume entities, lists the exports, and keeps each
/// volume open at most once per node (a <see cref="MirrorVolume"/> shared by every NBD connection through
/// <see cref="VolumeLease"/>s). Operations that need the legs to themselves (copying a new leg, delete) close the
/// local device first and refuse while connections hold it.
/// <para>
/// Bitmap slot: each node writes its own slot of a volume, its slot in the volume's DLM lockspace − 1
/// (<see cref="NodeBitmapSlot"/>), and crash recovery (at start and at open) reads only that slot. Other nodes'
/// slots are left to the cluster recovery (a dead node's slot is resynced by a survivor under its bitmap lock).
/// </para>
/// </summary>
public sealed class VolumeCatalog : IExportCatalog, IAsyncDisposable
{
    /// <summary>How long a management command waits for its entity.</summary>
    public static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(60);

    /// <summary>How long a command that formats or wipes legs waits (zeroing an existing block device takes a while).</summary>
    public static readonly TimeSpan DiskWorkTimeout = TimeSpan.FromMinutes(10);

    private readonly ActorRegistry _actors;
    private readonly ILogger<VolumeCatalog> _logger;
    private readonly ILoggerFactory _loggers;
    private readonly Dictionary<string, OpenVolume> _open = new(StringComparer.Ordinal);
    private readonly Dictionary<string, SemaphoreSlim> _gates = new(StringComparer.Ordinal);
    private readonly Dictionary<string, LocalRecovery> _recoveries = new(StringComparer.Ordinal);
    private readonly Dictionary<Guid, int> _bitmapSlots = [];
    private readonly INodeSlotSource _slots;
    private readonly MirrorVolumeOptions _deviceOptions;
    private readonly Lock _lock = new();
    private volatile IReadOnlyList<ExportDescription> _exports = [];
    private bool _disposed;

    /// <summary>Creates the catalog over the node's actor registry (the regions are looked up lazily).</summary>
    /// <param name="actors">The node's actor registry (volume regions).</param>
    /// <param name="loggers">Loggers.</param>
    /// <param name="slots">Where this node's lockspace slot comes from (the DLM in a node).</param>
    /// <param name="deviceOptions">Options of every opened device, its cache mode replaced by the volume's (defaults when null).</param>
    public VolumeCatalog(ActorRegistry actors, ILoggerFactory loggers, INodeSlotSource slots, MirrorVolumeOptions? deviceOptions = null)
    {
        _actors = actors;
        _loggers = loggers;
        _slots = slots;
        // Only this node's slot: another node's bits are its writes in flight, or its crash's, which the cluster
        // recovery resyncs under that slot's lock; copying them here could race with that node's writes.
        _deviceOptions = (deviceOptions ?? new MirrorVolumeOptions()) with { RecoverAllSlots = false };
        _logger = loggers.CreateLogger<VolumeCatalog>();
    }

    /// <summary>Raised after a volume was opened on this node, with what crash recovery did.</summary>
    public event Action<string, ResyncReport>? Opened;

    // ------------------------------------------------------------------ commands

    /// <summary>Sends a command to a Volume entity; throws <see cref="VolumeUnavailableException"/> when nobody answers.</summary>
    public async Task<IVolumeProtocol> SendAsync(IVolumeCommand command, CancellationToken cancellation = default)
    {
        var region = await RegionAsync<VolumeRegionKey>(cancellation);
        var timeout = command is CreateVolume or AddLeg or DeleteVolume ? DiskWorkTimeout : CommandTimeout;
        try
        {
            var reply = await region.Ask<IVolumeProtocol>(command, timeout, cancellation);
            if (command is not GetVolume && reply is VolumeInfo)
            {
                _ = RefreshAsync(CancellationToken.None);
            }

            return reply;
        }
        catch (AskTimeoutException e)
        {
            throw new VolumeUnavailableException($"volume '{command.Name}' did not answer within {timeout.TotalSeconds:0} s (is the cluster up?)", e);
        }
    }

    /// <summary>Every volume that exists, sorted by name (names whose volume is gone are skipped).</summary>
    public async Task<IReadOnlyList<VolumeInfo>> ListAsync(CancellationToken cancellation = default)
    {
        var registry = await RegionAsync<VolumeRegistryRegionKey>(cancellation);
        VolumeNames names;
        try
        {
            names = await registry.Ask<VolumeNames>(ListVolumeNames.Instance, TimeSpan.FromSeconds(10), cancellation);
        }
        catch (AskTimeoutException e)
        {
            throw new VolumeUnavailableException("the volume registry did not answer within 10 s (is the cluster up?)", e);
        }

        var region = await RegionAsync<VolumeRegionKey>(cancellation);
        var replies = await Task.WhenAll(names.Names.Select(n => region.Ask<IVolumeProtocol>(new GetVolume(n), TimeSpan.FromSeconds(10), cancellation)));
        var volumes = replies.OfType<VolumeInfo>().OrderBy(v => v.Descriptor.Name, StringComparer.Ordinal).ToArray();
        _exports = volumes.Where(v => v.Status == VolumeStatus.Active).Select(Describe).ToArray();
        return volumes;
    }

    /// <summary>Re-reads the export list (called after changes; NBD_OPT_LIST reads the cached list).</summary>
    public async Task RefreshAsync(CancellationToken cancellation)
    {
        try
        {
            await ListAsync(cancellation);
        }
        catch (Exception e) when (e is VolumeUnavailableException or AskTimeoutException or OperationCanceledException)
        {
            _logger.LogDebug("Volume list not refreshed: {Reason}", e.Message);
        }
    }

    /// <summary>Whether the volume is open on this node, and by how many connections.</summary>
    public (bool Open, int Leases) LocalUse(string name)
    {
        lock (_lock)
        {
            return _open.TryGetValue(name, out var open) ? (true, open.Leases) : (false, 0);
        }
    }

    /// <summary>
    /// What crash recovery did for the volume on this node since the node started (at start, or at the first open when
    /// that found something to do); null when it has not run here.
    /// </summary>
    public LocalRecovery? LocalRecoveryOf(string name)
    {
        lock (_lock)
        {
            return _recoveries.GetValueOrDefault(name);
        }
    }

    /// <summary>
    /// Crash recovery at node start: for every active volume whose in-sync legs are all present at their recorded paths,
    /// the volume is opened (which copies the dirty chunks of this node's bitmap slot from the first healthy leg to the
    /// others and clears them) and closed again. A volume with a leg not present (a disk not mounted yet, a moved leg)
    /// is left to its first open, which searches for moved legs and records missing ones. Failures are logged per
    /// volume; the node serves anyway. Returns the volumes recovered.
    /// </summary>
    public async Task<IReadOnlyDictionary<string, ResyncReport>> RecoverAtStartAsync(CancellationToken cancellation = default)
    {
        var done = new Dictionary<string, ResyncReport>(StringComparer.Ordinal);
        foreach (var info in await ListAsync(cancellation))
        {
            var name = info.Descriptor.Name;
            if (info.Status != VolumeStatus.Active)
            {
                continue;
            }

            var absent = info.Descriptor.Legs
                .Where(l => l.State == LegState.InSync)
                .Select(l => (Leg: l, Probe: Persistence.Disk.LegProbe.Read(l.Path, info.Descriptor.VolumeId, l.LegId)))
                .FirstOrDefault(p => !p.Probe.IsOk);
            if (absent.Probe is not null)
            {
                _logger.LogWarning("Volume {Volume}: crash recovery left to the first open: leg {LegId} not present at {Path} ({Reason})",
                    name, absent.Leg.LegId, absent.Leg.Path, absent.Probe.Reason);
                continue;
            }

            try
            {
                if (await RecoverClosedAsync(info, cancellation) is { } report)
                {
                    done[name] = report;
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _logger.LogError("Volume {Volume}: crash recovery at node start failed (it runs again at the first open): {Reason}", name, e.Message);
            }
        }

        return done;
    }

    private async Task<ResyncReport?> RecoverClosedAsync(VolumeInfo info, CancellationToken cancellation)
    {
        var name = info.Descriptor.Name;
        var gate = Gate(name);
        await gate.WaitAsync(cancellation);
        try
        {
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_open.ContainsKey(name))
                {
                    return null; // a client was faster: the open recovered it
                }
            }

            var slot = await BitmapSlotAsync(info.Descriptor, cancellation);
            var device = await MirrorVolume.OpenAsync(info.Descriptor, slot, new EntityVolumeEvents(this, name), _loggers.CreateLogger("Lockstep.Volumes." + name),
                _deviceOptions with { Cache = info.Cache }, cancellation);
            var report = device.Recovery;
            await device.DisposeAsync();
            Record(name, new LocalRecovery(report, RecoveryTrigger.Start));
            _logger.LogInformation("Volume {Volume}: crash recovery at node start (slot {Slot}, generation {Generation}): {Chunks} chunk(s) resynced after the last crash ({Bytes} bytes, {Elapsed} ms)",
                name, slot, info.Descriptor.Generation, report.ChunksResynced, report.Bytes, (long)report.Elapsed.TotalMilliseconds);
            return report;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>
    /// This node's bitmap slot (0-based) in the volume: its slot in the volume's lockspace − 1, asked once per volume
    /// UUID (it never changes). Throws <see cref="BlockIoException"/> (Unavailable) when the volume has no slot for this
    /// node or the lockspace registry did not answer: the volume is not opened then.
    /// </summary>
    public async Task<int> BitmapSlotAsync(VolumeDescriptor volume, CancellationToken cancellation = default)
    {
        lock (_lock)
        {
            if (_bitmapSlots.TryGetValue(volume.VolumeId, out var known))
            {
                return known;
            }
        }

        var lockspace = NodeBitmapSlot.LockspaceName(volume.VolumeId);
        int lockspaceSlot;
        try
        {
            lockspaceSlot = await _slots.LockspaceSlotAsync(lockspace, cancellation);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellation.IsCancellationRequested)
        {
            throw new BlockIoException(BlockIoError.Unavailable,
                $"volume '{volume.Name}': this node's bitmap slot is unknown: joining lockspace {lockspace} failed: {e.Message}", e);
        }

        var slot = NodeBitmapSlot.FromLockspaceSlot(volume, _slots.NodeId, lockspaceSlot);
        lock (_lock)
        {
            _bitmapSlots[volume.VolumeId] = slot;
        }

        return slot;
    }

    private void Record(string name, LocalRecovery recovery)
    {
        lock (_lock)
        {
            // An open after a start recovery normally finds nothing; keep what the start did unless the open did more.
            if (recovery.Trigger == RecoveryTrigger.Start || recovery.Report.ChunksResynced > 0 || !_recoveries.ContainsKey(name))
            {
                _recoveries[name] = recovery;
            }
        }
    }

    /// <summary>The cache mode the volume's open device on this node uses; null when it is not open here.</summary>
    public VolumeCacheMode? LocalCacheMode(string name)
    {
        lock (_lock)
        {
            return _open.TryGetValue(name, out var open) ? open.Device.Cache : null;
        }
    }

    // ------------------------------------------------------------------ IExportCatalog

    /// <inheritdoc />
    public IReadOnlyList<ExportDescription> List() => _exports;

    /// <inheritdoc />
    public async ValueTask<IBlockDevice?> OpenAsync(string name, CancellationToken cancellation = default)
    {
        if (VolumeState.ValidateName(name) is not null)
        {
            return null;
        }

        var open = await OpenSharedAsync(name, cancellation);
        if (open is null)
        {
            return null;
        }

        lock (_lock)
        {
            open.Leases++;
        }

        return new VolumeLease(open.Device, () =>
        {
            lock (_lock)
            {
                open.Leases--;
            }
        });
    }

    /// <summary>Opens the volume on this node if it is not open yet (crash recovery runs here), without taking a lease.</summary>
    public async Task<MirrorVolume?> OpenSharedDeviceAsync(string name, CancellationToken cancellation = default) =>
        (await OpenSharedAsync(name, cancellation))?.Device;

    private async Task<OpenVolume?> OpenSharedAsync(string name, CancellationToken cancellation)
    {
        var gate = Gate(name);
        await gate.WaitAsync(cancellation);
        try
        {
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_open.TryGetValue(name, out var existing))
                {
                    return existing;
                }
            }

            if (await SendAsync(new GetVolume(name), cancellation) is not VolumeInfo { Status: VolumeStatus.Active } info)
            {
                return null;
            }

            // A leg added while the volume was in use (or a copy cut short by a crash) is copied before the volume serves.
            info = await ResyncLegsAsync(info, cancellation);
            var events = new EntityVolumeEvents(this, name);
            var slot = await BitmapSlotAsync(info.Descriptor, cancellation);
            var device = await MirrorVolume.OpenAsync(info.Descriptor, slot, events, _loggers.CreateLogger("Lockstep.Volumes." + name),
                _deviceOptions with { Cache = info.Cache }, cancellation);
            var report = device.Recovery;
            Record(name, new LocalRecovery(report, RecoveryTrigger.Open));
            _logger.LogInformation("Volume {Volume} open on this node (slot {Slot}, generation {Generation}, cache {Cache}): {Chunks} chunk(s) resynced after the last crash ({Bytes} bytes, {Elapsed} ms)",
                name, slot, info.Descriptor.Generation, VolumeState.CacheModeName(info.Cache), report.ChunksResynced, report.Bytes, (long)report.Elapsed.TotalMilliseconds);
            var open = new OpenVolume(device);
            lock (_lock)
            {
                _open[name] = open;
            }

            Opened?.Invoke(name, report);
            return open;
        }
        finally
        {
            gate.Release();
        }
    }

    // ------------------------------------------------------------------ exclusive operations

    /// <summary>
    /// Runs <paramref name="work"/> while the volume is closed on this node (re-opened afterwards if it was open).
    /// Throws <see cref="VolumeInUseException"/> when NBD connections hold it.
    /// </summary>
    public async Task<T> WithVolumeClosedAsync<T>(string name, Func<CancellationToken, Task<T>> work, bool reopen, CancellationToken cancellation = default)
    {
        var gate = Gate(name);
        await gate.WaitAsync(cancellation);
        var wasOpen = false;
        try
        {
            OpenVolume? open;
            lock (_lock)
            {
                _open.TryGetValue(name, out open);
                if (open is { Leases: > 0 })
                {
                    throw new VolumeInUseException($"volume '{name}' is in use by {open.Leases} NBD connection(s) on this node; disconnect them first");
                }

                _open.Remove(name);
            }

            if (open is not null)
            {
                wasOpen = true;
                await open.Device.DisposeAsync();
            }

            return await work(cancellation);
        }
        finally
        {
            gate.Release();
            if (wasOpen && reopen)
            {
                try
                {
                    await OpenSharedAsync(name, CancellationToken.None);
                }
                catch (Exception e)
                {
                    _logger.LogError(e, "Volume {Volume}: could not be opened again after a metadata change", name);
                }
            }
        }
    }

    /// <summary>Compares the legs chunk by chunk: through the open device if open here (no write in flight on a compared chunk), else directly.</summary>
    public async Task<VerifyReport?> VerifyAsync(string name, CancellationToken cancellation = default)
    {
        MirrorVolume? device;
        lock (_lock)
        {
            device = _open.TryGetValue(name, out var open) ? open.Device : null;
        }

        if (device is not null)
        {
            return await device.VerifyAsync(cancellation);
        }

        if (await SendAsync(new GetVolume(name), cancellation) is not VolumeInfo { Status: VolumeStatus.Active } info)
        {
            return null;
        }

        // Hold the gate so the volume is not opened (and recovered) on this node while its legs are compared.
        var gate = Gate(name);
        await gate.WaitAsync(cancellation);
        try
        {
            return await VolumeVerifier.VerifyAsync(info.Descriptor, logger: _logger, cancellation: cancellation);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Adds a leg and, unless the volume is in use here, copies the data onto it; returns the committed state.</summary>
    public async Task<IVolumeProtocol> AddLegAsync(string name, string path, CancellationToken cancellation = default)
    {
        var reply = await SendAsync(new AddLeg(name, path), cancellation);
        if (reply is not VolumeInfo added)
        {
            return reply;
        }

        try
        {
            return await WithVolumeClosedAsync(name, async ct => (IVolumeProtocol)await ResyncLegsAsync(added, ct), reopen: true, cancellation);
        }
        catch (VolumeInUseException e)
        {
            _logger.LogWarning("Volume {Volume}: new leg stays resyncing: {Reason}; it is copied when the volume is next opened", name, e.Message);
            return added with { Pending = "new leg is copied when the volume is next opened on a node (it is in use now)" };
        }
    }

    /// <summary>Deletes the volume after closing it on this node.</summary>
    public Task<IVolumeProtocol> DeleteAsync(string name, CancellationToken cancellation = default) =>
        WithVolumeClosedAsync(name, async ct =>
        {
            var reply = await SendAsync(new DeleteVolume(name), ct);
            if (reply is VolumeInfo { Status: VolumeStatus.Absent })
            {
                lock (_lock)
                {
                    _recoveries.Remove(name);
                }
            }

            return reply;
        }, reopen: false, cancellation);

    /// <summary>Takes a leg out of the mirror; the local device is re-opened so it stops writing the leg.</summary>
    public Task<IVolumeProtocol> FailLegAsync(string name, Guid legId, string reason, CancellationToken cancellation = default) =>
        ChangeLegsAsync(name, new FailLeg(name, legId, reason), cancellation);

    /// <summary>Removes a failed or missing leg.</summary>
    public Task<IVolumeProtocol> RemoveLegAsync(string name, Guid legId, CancellationToken cancellation = default) =>
        ChangeLegsAsync(name, new RemoveLeg(name, legId), cancellation);

    /// <summary>
    /// Changes the cache mode. A volume open here without connections is closed and re-opened in the new mode at
    /// once; one in use keeps its mode until it is re-opened (the reply's pending note says so).
    /// </summary>
    public async Task<IVolumeProtocol> SetCacheModeAsync(string name, VolumeCacheMode cache, CancellationToken cancellation = default)
    {
        var command = new SetVolumeCacheMode(name, cache);
        try
        {
            return await WithVolumeClosedAsync(name, ct => SendAsync(command, ct), reopen: true, cancellation);
        }
        catch (VolumeInUseException)
        {
            var reply = await SendAsync(command, cancellation);
            return reply is VolumeInfo info
                ? info with { Pending = $"in use on this node: the open device switches to {VolumeState.CacheModeName(cache)} when it is re-opened" }
                : reply;
        }
    }

    private async Task<IVolumeProtocol> ChangeLegsAsync(string name, IVolumeCommand command, CancellationToken cancellation)
    {
        try
        {
            return await WithVolumeClosedAsync(name, ct => SendAsync(command, ct), reopen: true, cancellation);
        }
        catch (VolumeInUseException)
        {
            // Committing is still right: the device in use keeps writing the leg until it is re-opened, which only
            // costs writes to a leg nobody reads; the metadata no longer counts on it.
            var reply = await SendAsync(command, cancellation);
            return reply is VolumeInfo info ? info with { Pending = "in use on this node: the open device drops the leg when it is re-opened" } : reply;
        }
    }

    private async Task<VolumeInfo> ResyncLegsAsync(VolumeInfo info, CancellationToken cancellation)
    {
        foreach (var target in info.Descriptor.Legs.Where(l => l.State == LegState.Resyncing).ToArray())
        {
            var source = info.Descriptor.Legs.FirstOrDefault(l => l.State == LegState.InSync)
                ?? throw new BlockIoException(BlockIoError.Unavailable, $"volume '{info.Descriptor.Name}' has no in-sync leg to copy leg {target.LegId} from");
            _logger.LogInformation("Volume {Volume}: copying leg {Source} onto new leg {Target} ({Path})", info.Descriptor.Name, source.LegId, target.LegId, target.Path);
            var copy = await LegCopier.CopyAsync(info.Descriptor, source, target, _logger, cancellation);
            var reply = await SendAsync(new MarkLegResynced(info.Descriptor.Name, target.LegId, info.Descriptor.Generation), cancellation);
            info = reply as VolumeInfo ?? throw new BlockIoException(BlockIoError.Unavailable, $"volume '{info.Descriptor.Name}': leg {target.LegId} copied ({copy.BytesCopied} bytes) but not committed: {((VolumeRejected)reply).Reason}");
        }

        return info;
    }

    // ------------------------------------------------------------------ plumbing

    private SemaphoreSlim Gate(string name)
    {
        lock (_lock)
        {
            if (!_gates.TryGetValue(name, out var gate))
            {
                _gates[name] = gate = new SemaphoreSlim(1, 1);
            }

            return gate;
        }
    }

    private async Task<IActorRef> RegionAsync<TKey>(CancellationToken cancellation)
    {
        try
        {
            return await _actors.GetAsync<TKey>(cancellation).WaitAsync(TimeSpan.FromSeconds(30), cancellation);
        }
        catch (TimeoutException e)
        {
            throw new VolumeUnavailableException("the volume shard regions are not started (node still joining?)", e);
        }
    }

    private static ExportDescription Describe(VolumeInfo info)
    {
        var d = info.Descriptor;
        var inSync = d.Legs.Count(l => l.State == LegState.InSync);
        return new ExportDescription(d.Name, $"{SizeText.Format(d.Geometry.SizeBytes)} mirror, {inSync}/{d.Legs.Count} legs in sync");
    }

    /// <summary>Closes every volume open on this node (clean close: bits cleared, legs flushed).</summary>
    public async ValueTask DisposeAsync()
    {
        OpenVolume[] open;
        lock (_lock)
        {
            _disposed = true;
            open = [.. _open.Values];
            _open.Clear();
        }

        foreach (var volume in open)
        {
            try
            {
                await volume.Device.DisposeAsync();
            }
            catch (Exception e)
            {
                _logger.LogError(e, "Volume {Volume}: close failed", volume.Device.Name);
            }
        }
    }

    private sealed class OpenVolume(MirrorVolume device)
    {
        public MirrorVolume Device { get; } = device;

        public int Leases { get; set; }
    }

    /// <summary>Reports the pipeline's leg events to the Volume entity and waits for the commit, as the pipeline requires.</summary>
    private sealed class EntityVolumeEvents(VolumeCatalog catalog, string name) : IVolumeEvents
    {
        public async ValueTask LegFailed(Guid legId, string reason) => Check(await catalog.SendAsync(new MarkLegFailed(name, legId, reason)), legId);

        public async ValueTask LegMissing(Guid legId, string reason) => Check(await catalog.SendAsync(new MarkLegMissing(name, legId, reason)), legId);

        public async ValueTask LegMoved(Guid legId, string newPath) => Check(await catalog.SendAsync(new MarkLegMoved(name, legId, newPath)), legId);

        private static void Check(IVolumeProtocol reply, Guid legId)
        {
            if (reply is VolumeRejected rejected)
            {
                throw new IOException($"leg {legId}: the volume metadata did not take the change: {rejected.Reason}");
            }
        }
    }
}

/// <summary>Akka.Hosting registry key of the <c>volume</c> shard region.</summary>
public sealed class VolumeRegionKey;

/// <summary>Akka.Hosting registry key of the <c>volume-registry</c> shard region.</summary>
public sealed class VolumeRegistryRegionKey;
