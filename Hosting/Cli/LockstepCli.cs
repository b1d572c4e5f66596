using System.CommandLine;

namespace Lockstep.Hosting.Cli;

/// <summary>The <c>lockstep</c> command tree: <c>serve</c> runs a node; everything else talks to one over HTTP.</summary>
public static class LockstepCli
{
    public static async Task<int> RunAsync(string[] args)
    {
        var root = new RootCommand("Lockstep: clustered, mirrored block storage over NBD.");
        root.Subcommands.Add(ServeCommand.Create());
        foreach (var command in CommandGroups())
        {
            root.Subcommands.Add(command);
        }

        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
            {
                Console.Error.WriteLine($"lockstep: {error.Message}");
            }

            return 2;
        }

        // SIGTERM/SIGINT belong to the generic host's console lifetime, which stops the node gracefully (cluster
        // leave, shard hand-off) however long that takes. System.CommandLine's own handler would return from
        // Main after 2 s while the host is still stopping, and the process then died in disposal.
        return await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
    }

    /// <summary>Subsystems add their command groups here (cluster, volume, lock, …).</summary>
    private static IEnumerable<Command> CommandGroups()
    {
        yield return ClusterCommands.Cluster();
        yield return ClusterCommands.ClusterSharding();
        yield return Lockstep.Hosting.Volumes.VolumeCommands.Create();
        yield return Locking.LockCommands.Create();
        yield return Messaging.MessagingCommands.Create();
    }
}
