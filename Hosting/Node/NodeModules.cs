using Akka.Hosting;
using Lockstep.Hosting.Broadcast;
using Lockstep.Hosting.Cli;
using Lockstep.Hosting.Locking;
using Lockstep.Hosting.Management;
using Lockstep.Hosting.Messaging;
using Lockstep.Hosting.Nbd;
using Lockstep.Hosting.Volumes;

namespace Lockstep.Hosting.Node;

/// <summary>
/// The one place where subsystems plug into a node: each adds its actors, services and HTTP routes
/// here with a single line, so subsystems do not edit each other's wiring.
/// </summary>
internal static class NodeModules
{
    public static void ConfigureAkka(AkkaConfigurationBuilder akka, LockstepOptions options, IServiceProvider services)
    {
        akka.WithJoinDeadline();
        akka.WithLockstepVolumes(options);
        // Messaging first: with Lockstep:Locking:Transport=reliable the DLM puts its traffic on the layer the node
        // configured (LockManager.Start would otherwise start it with default settings).
        akka.WithLockstepMessaging(options, services);
        akka.WithLockstepLocking(services);
        akka.WithLockstepBroadcast(services);
    }

    public static void ConfigureServices(IServiceCollection services, LockstepOptions options)
    {
        services.AddLockstepVolumes(options);
        services.AddLockstepLocking(options);
        services.AddLockstepMessaging();
        services.AddLockstepBroadcast(options);
        services.AddLockstepNbd(nbd => (nbd.Host, nbd.Port) = (options.Nbd.Host, options.Nbd.Port));
    }

    public static void MapEndpoints(WebApplication app, LockstepOptions options)
    {
        app.MapLockstepManagement(options);
        app.MapLockstepVolumes(options);
        app.MapLockstepLocking();
        app.MapLockstepMessaging();
        app.MapLockstepBroadcast();
    }
}
