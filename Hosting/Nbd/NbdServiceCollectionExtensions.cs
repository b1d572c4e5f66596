using Lockstep.Actors.BlockIo;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Lockstep.Hosting.Nbd;

/// <summary>Registers the NBD server of a node.</summary>
public static class NbdServiceCollectionExtensions
{
    /// <summary>
    /// Adds <see cref="NbdServer"/> as a hosted service serving the <see cref="IExportCatalog"/> registered in
    /// DI. Without one (no volumes yet) it serves an empty catalog: clients connect, list nothing, and get
    /// "unknown export".
    /// </summary>
    public static IServiceCollection AddLockstepNbd(this IServiceCollection services, Action<NbdServerOptions>? configure = null)
    {
        var builder = services.AddOptions<NbdServerOptions>().BindConfiguration("Lockstep:Nbd");
        if (configure is not null)
        {
            builder.Configure(configure);
        }

        services.TryAddSingleton<IExportCatalog, EmptyExportCatalog>();
        services.TryAddSingleton<NbdServer>();
        services.AddHostedService(sp => sp.GetRequiredService<NbdServer>());
        return services;
    }
}

/// <summary>A catalog with no exports: what the server serves until volumes register a real one.</summary>
public sealed class EmptyExportCatalog : IExportCatalog
{
    /// <inheritdoc />
    public IReadOnlyList<ExportDescription> List() => [];

    /// <inheritdoc />
    public ValueTask<IBlockDevice?> OpenAsync(string name, CancellationToken cancellation = default) => ValueTask.FromResult<IBlockDevice?>(null);
}
