using System.Collections.Concurrent;
using Lockstep.Actors.BlockIo;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>An <see cref="IExportCatalog"/> whose exports a test adds by hand.</summary>
internal sealed class TestExportCatalog : IExportCatalog, IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, (IBlockDevice Device, string Description)> _exports = new();

    public T Add<T>(T device, string description = "test export")
        where T : IBlockDevice
    {
        _exports[device.Name] = (device, description);
        return device;
    }

    public IReadOnlyList<ExportDescription> List() =>
        _exports.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => new ExportDescription(e.Key, e.Value.Description)).ToArray();

    /// <summary>Names of the threads that opened and closed export handles, in order (which thread a server uses).</summary>
    public ConcurrentQueue<string> HandleThreads { get; } = new();

    public ValueTask<IBlockDevice?> OpenAsync(string name, CancellationToken cancellation = default)
    {
        HandleThreads.Enqueue($"open on {Thread.CurrentThread.Name ?? "unnamed"}");
        return ValueTask.FromResult<IBlockDevice?>(_exports.TryGetValue(name, out var export) ? new Handle(export.Device, HandleThreads) : null);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var export in _exports.Values)
        {
            await export.Device.DisposeAsync();
        }
    }

    /// <summary>What a connection gets: the shared device, which disposing the handle leaves open (the catalog owns it).</summary>
    private sealed class Handle(IBlockDevice device, ConcurrentQueue<string> threads) : IBlockDevice
    {
        public string Name => device.Name;

        public long Size => device.Size;

        public int MinimumBlockSize => device.MinimumBlockSize;

        public int PreferredBlockSize => device.PreferredBlockSize;

        public int MaximumRequestSize => device.MaximumRequestSize;

        public bool IsReadOnly => device.IsReadOnly;

        public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellation = default) => device.ReadAsync(offset, destination, cancellation);

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool forceUnitAccess, CancellationToken cancellation = default) =>
            device.WriteAsync(offset, source, forceUnitAccess, cancellation);

        public ValueTask FlushAsync(CancellationToken cancellation = default) => device.FlushAsync(cancellation);

        public ValueTask TrimAsync(long offset, long length, bool forceUnitAccess, CancellationToken cancellation = default) =>
            device.TrimAsync(offset, length, forceUnitAccess, cancellation);

        public ValueTask WriteZeroesAsync(long offset, long length, bool mayPunchHole, bool forceUnitAccess, CancellationToken cancellation = default) =>
            device.WriteZeroesAsync(offset, length, mayPunchHole, forceUnitAccess, cancellation);

        public ValueTask<IReadOnlyList<BlockExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellation = default) =>
            device.GetAllocationAsync(offset, length, cancellation);

        public ValueTask DisposeAsync()
        {
            threads.Enqueue($"close on {Thread.CurrentThread.Name ?? "unnamed"}");
            return ValueTask.CompletedTask;
        }
    }
}
