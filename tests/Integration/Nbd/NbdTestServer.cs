using Lockstep.Hosting.Nbd;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>A real <see cref="NbdServer"/> on 127.0.0.1, ephemeral port, over a <see cref="TestExportCatalog"/> and a temp folder.</summary>
internal sealed class NbdTestServer : IAsyncDisposable
{
    private readonly ILoggerFactory _loggers;

    private NbdTestServer(NbdServer server, TestExportCatalog catalog, ListLoggerProvider log, ILoggerFactory loggers, string folder)
    {
        Server = server;
        Catalog = catalog;
        Log = log;
        _loggers = loggers;
        Folder = folder;
    }

    public NbdServer Server { get; }

    public TestExportCatalog Catalog { get; }

    public ListLoggerProvider Log { get; }

    public string Folder { get; }

    public int Port => Server.BoundPort;

    public string Uri(string export) => $"nbd://127.0.0.1:{Port}/{export}";

    public static async Task<NbdTestServer> StartAsync(Action<NbdServerOptions>? configure = null)
    {
        var folder = Path.Combine(Path.GetTempPath(), "lockstep-nbd-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(folder);
        var options = new NbdServerOptions { Host = "127.0.0.1", Port = 0 };
        configure?.Invoke(options);
        var log = new ListLoggerProvider();
        var loggers = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Information));
        var catalog = new TestExportCatalog();
        var server = new NbdServer(catalog, Options.Create(options), loggers.CreateLogger<NbdServer>());
        await server.StartAsync(CancellationToken.None);
        return new NbdTestServer(server, catalog, log, loggers, folder);
    }

    /// <summary>Adds a sparse-file export named <paramref name="name"/>.</summary>
    public SparseFileBlockDevice AddFile(string name, long size, bool readOnly = false, string description = "test export", int maximumRequestSize = 32 << 20) =>
        Catalog.Add(SparseFileBlockDevice.Create(name, Path.Combine(Folder, name + ".img"), size, readOnly, maximumRequestSize), description);

    public string TempFile(string name) => Path.Combine(Folder, name);

    public async ValueTask DisposeAsync()
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await Server.StopAsync(deadline.Token);
        await Server.DisposeAsync();
        await Catalog.DisposeAsync();
        _loggers.Dispose();
        Directory.Delete(Folder, recursive: true);
    }
}
