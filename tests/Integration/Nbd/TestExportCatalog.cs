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

    public ValueTask<IBlockDevice?> OpenAsync(string name, CancellationToken cancellation = default) =>
        ValueTask.FromResult(_exports.TryGetValue(name, out var export) ? export.Device : null);

    public async ValueTask DisposeAsync()
    {
        foreach (var export in _exports.Values)
        {
            await export.Device.DisposeAsync();
        }
    }
}
