using Akka.Actor;
using Lockstep.Hosting.Cli;

namespace Lockstep.Hosting.Node;

/// <summary>Starts a node and turns start-up failures into one line and a non-zero exit.</summary>
internal static class NodeRunner
{
    public static async Task<int> RunAsync(IConfiguration configuration, CancellationToken cancellation)
    {
        WebApplication app;
        LockstepOptions options;
        try
        {
            options = configuration.GetSection(LockstepOptions.SectionName).Get<LockstepOptions>() ?? new LockstepOptions();
            if (ServeStartup.Preflight(options, configuration) is { } problem)
            {
                ServeStartup.Fail(problem);
                return ServeStartup.ExitBadConfiguration;
            }

            app = NodeHost.Build(configuration);
        }
        catch (Exception ex)
        {
            ServeStartup.Fail($"invalid configuration: {ex.GetBaseException().Message}");
            return ServeStartup.ExitBadConfiguration;
        }

        ActorSystem system;
        try
        {
            await app.StartAsync(cancellation);
            system = app.Services.GetRequiredService<ActorSystem>();
        }
        catch (Exception ex)
        {
            ServeStartup.Fail(ServeStartup.Describe(ex));
            return ServeStartup.ExitFailed;
        }

        // Akka.Hosting stops the host when the actor system terminates (join failed, node downed),
        // so the reason tells a normal stop from a failure.
        await app.WaitForShutdownAsync(cancellation);
        await app.DisposeAsync();
        if (ServeStartup.DescribeStop(CoordinatedShutdown.Get(system).ShutdownReason, options.Cluster.Seeds) is { } failure)
        {
            ServeStartup.Fail(failure);
            return ServeStartup.ExitFailed;
        }

        return 0;
    }
}
