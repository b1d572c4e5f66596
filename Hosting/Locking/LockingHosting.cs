using Akka.Hosting;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Lockstep.Hosting.Node;

namespace Lockstep.Hosting.Locking;

/// <summary>
/// The node's <see cref="ILockManager"/> as a DI service: usable as soon as it is resolved, its calls
/// wait until the actor system has started the DLM.
/// </summary>
public sealed class LockingService : ILockManager
{
    private readonly TaskCompletionSource<LockManager> _started = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public LockingService(LockingOptions options)
    {
        Options = options;
    }

    public LockingOptions Options { get; }

    public string NodeId => Options.NodeId;

    /// <summary>The started manager (waits for start-up).</summary>
    public Task<LockManager> Manager => _started.Task;

    internal void Started(LockManager manager) => _started.TrySetResult(manager);

    public async Task<ILockspace> OpenLockspaceAsync(string name, int lvbLength = 0, CancellationToken cancellationToken = default) =>
        await (await Manager.WaitAsync(cancellationToken)).OpenLockspaceAsync(name, lvbLength, cancellationToken);

    public async Task<IReadOnlyList<LockspaceInfo>> ListLockspacesAsync(CancellationToken cancellationToken = default) =>
        await (await Manager.WaitAsync(cancellationToken)).ListLockspacesAsync(cancellationToken);

    public async Task<LockspaceDump> DumpLockspaceAsync(string lockspace, CancellationToken cancellationToken = default) =>
        await (await Manager.WaitAsync(cancellationToken)).DumpLockspaceAsync(lockspace, cancellationToken);
}

/// <summary>One-line hooks that plug the DLM into a node (see <c>NodeModules</c>).</summary>
public static class LockingHosting
{
    /// <summary>Registers <see cref="LockingOptions"/> (section <c>Lockstep:Locking</c>, node id from the node), <see cref="ILockManager"/> and the gRPC service.</summary>
    public static IServiceCollection AddLockstepLocking(this IServiceCollection services, LockstepOptions options)
    {
        services.AddSingleton(sp =>
        {
            var locking = sp.GetRequiredService<IConfiguration>().GetSection(LockingOptions.SectionName).Get<LockingOptions>() ?? new LockingOptions();
            locking.NodeId = options.NodeId;
            // One fence timeout for the node: the cluster section's (ServeStartup.CheckFencing keeps it below StableAfter).
            locking.FenceTimeout = options.Cluster.FenceTimeout;
            return locking;
        });
        services.AddSingleton<LockingService>();
        services.AddSingleton<ILockManager>(sp => sp.GetRequiredService<LockingService>());
        services.AddLockstepLockGrpc(options);
        return services;
    }

    /// <summary>Starts the DLM (lock region, lockspace registry, lock client) when the actor system starts.</summary>
    public static AkkaConfigurationBuilder WithLockstepLocking(this AkkaConfigurationBuilder builder, LockingOptions options) =>
        builder.WithActors((system, registry, resolver) =>
        {
            var manager = LockManager.Start(system, options);
            registry.Register<LockManager>(manager.Region);
            resolver.GetService<LockingService>().Started(manager);
        });

    /// <summary>Starts the DLM with the options registered by <see cref="AddLockstepLocking"/>.</summary>
    public static AkkaConfigurationBuilder WithLockstepLocking(this AkkaConfigurationBuilder builder, IServiceProvider services) =>
        builder.WithLockstepLocking(services.GetRequiredService<LockingOptions>());

    /// <summary>Maps <c>/v1/lockspaces</c>, <c>/v1/locks</c>, <c>/v1/locks/torture</c> and the gRPC lock service.</summary>
    public static WebApplication MapLockstepLocking(this WebApplication app)
    {
        LockEndpoints.Map(app);
        app.MapGrpcService<LockGrpcService>();
        return app;
    }
}
