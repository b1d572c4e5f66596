using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Hosting;
using Akka.DependencyInjection;
using Akka.Hosting;
using Lockstep.Actors.BlockIo;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Volumes;
using Lockstep.Contracts.Volumes;
using Lockstep.Hosting.Node;

namespace Lockstep.Hosting.Volumes;

/// <summary>Plugs the volume subsystem into a node: one call per <see cref="NodeModules"/> hook.</summary>
public static class VolumeHosting
{
    /// <summary>Services: the catalog (also as <see cref="IExportCatalog"/> for the NBD server), the leg provisioner, the demo volume.</summary>
    public static IServiceCollection AddLockstepVolumes(this IServiceCollection services, LockstepOptions options)
    {
        services.AddSingleton<ILegProvisioner>(sp => new LegProvisioner(sp.GetRequiredService<ILoggerFactory>().CreateLogger("Lockstep.Volumes.Legs")));
        services.AddSingleton<INodeSlotSource>(sp => new DlmNodeSlotSource(sp.GetRequiredService<ILockManager>()));
        services.AddSingleton<VolumeCatalog>();
        services.AddSingleton<IExportCatalog>(sp => sp.GetRequiredService<VolumeCatalog>());
        services.AddHostedService<VolumeStartup>();
        return services;
    }

    /// <summary>Actors: the <c>volume</c> and <c>volume-registry</c> shard regions (entities journal to the node's default journal).</summary>
    public static AkkaConfigurationBuilder WithLockstepVolumes(this AkkaConfigurationBuilder akka, LockstepOptions options)
    {
        return akka
            .WithShardRegion<VolumeRegistryRegionKey>(VolumeSharding.RegistryRegion, _ => VolumeRegistryEntity.Props(), new VolumeSharding.Extractor(1), new ShardOptions())
            .WithShardRegion<VolumeRegionKey>(VolumeSharding.VolumeRegion, (system, registry, resolver) =>
            {
                var provisioner = resolver.GetService<ILegProvisioner>();
                return name => VolumeEntity.Props(name, registry.Get<VolumeRegistryRegionKey>(), provisioner);
            }, new VolumeSharding.Extractor(VolumeSharding.VolumeShards), new ShardOptions());
    }
}

/// <summary>
/// Start and stop of the volume subsystem: once this node is a cluster member it reads the export list, runs crash
/// recovery for every volume whose legs are present (<see cref="VolumeCatalog.RecoverAtStartAsync"/>) and, with
/// <c>Lockstep:Nbd:DemoVolume</c> (<c>serve --demo</c>), creates the <c>demo</c> volume if absent, opens it (crash
/// recovery runs here) and prints its NBD URL on stdout. On stop every open volume is closed cleanly.
/// </summary>
internal sealed class VolumeStartup(IServiceProvider services, VolumeCatalog catalog, LockstepOptions options, ILogger<VolumeStartup> logger) : IHostedService
{
    /// <summary>Name of the demo volume.</summary>
    public const string DemoName = "demo";

    private readonly CancellationTokenSource _stopping = new();
    private Task _work = Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var system = services.GetRequiredService<ActorSystem>();
        var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Cluster.Get(system).RegisterOnMemberUp(() => up.TrySetResult());
        _work = Task.Run(async () =>
        {
            try
            {
                await up.Task.WaitAsync(_stopping.Token);
                await catalog.RefreshAsync(_stopping.Token);
                try
                {
                    await catalog.RecoverAtStartAsync(_stopping.Token);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    logger.LogError("Crash recovery at node start did not run ({Reason}); it runs at each volume's first open", e.Message);
                }

                if (options.Nbd.DemoVolume)
                {
                    await EnsureDemoAsync(_stopping.Token);
                }
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                // Node stopping before it joined.
            }
            catch (Exception e)
            {
                logger.LogError("Demo volume not available: {Reason}", e.Message);
                await Console.Error.WriteLineAsync($"lockstep: demo volume not available: {e.Message}");
            }
        });
        return Task.CompletedTask;
    }

    private async Task EnsureDemoAsync(CancellationToken cancellation)
    {
        var reply = await catalog.SendAsync(new GetVolume(DemoName), cancellation);
        if (reply is VolumeRejected { Error: VolumeError.NotFound })
        {
            var legs = Path.Combine(options.DataDirectory, "legs");
            Directory.CreateDirectory(legs);
            reply = await catalog.SendAsync(new CreateVolume(DemoName, 1L << 30, 1 << 20, 8, [Path.Combine(legs, "demo-a.leg"), Path.Combine(legs, "demo-b.leg")]), cancellation);
        }

        // A create interrupted by a crash is finished by the entity when it wakes up; wait for it (bounded).
        for (var attempt = 0; reply is VolumeInfo { Status: VolumeStatus.Creating } && attempt < 300; attempt++)
        {
            await Task.Delay(200, cancellation);
            reply = await catalog.SendAsync(new GetVolume(DemoName), cancellation);
        }

        if (reply is not VolumeInfo { Status: VolumeStatus.Active })
        {
            throw new InvalidOperationException(reply is VolumeRejected r ? r.Reason : $"volume '{DemoName}' is {((VolumeInfo)reply).Status}");
        }

        var device = await catalog.OpenSharedDeviceAsync(DemoName, cancellation)
            ?? throw new InvalidOperationException($"volume '{DemoName}' vanished while opening");
        await catalog.RefreshAsync(cancellation);
        var host = options.Nbd.Host is "0.0.0.0" or "*" or "::" ? "127.0.0.1" : options.Nbd.Host;
        logger.LogInformation("Demo volume ready: {Chunks} chunk(s) resynced after the last crash", catalog.LocalRecoveryOf(DemoName)?.Report.ChunksResynced ?? device.Recovery.ChunksResynced);
        await Console.Out.WriteLineAsync($"nbd://{host}:{options.Nbd.Port}/{DemoName}");
        await Console.Out.FlushAsync(cancellation);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        try
        {
            await _work.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // Stopping anyway.
        }

        await catalog.DisposeAsync();
    }
}
