using System.CommandLine;
using Lockstep.Hosting.Node;

namespace Lockstep.Hosting.Cli;

/// <summary><c>lockstep serve</c>: runs one node until SIGINT/SIGTERM.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var host = new Option<string>("--host") { Description = "Remoting host to bind and advertise (default 127.0.0.1)." };
        var port = new Option<int?>("--port") { Description = "Remoting port (default 4053)." };
        var seeds = new Option<string[]>("--seed") { Description = "Seed node, akka.tcp://lockstep@host:port or host:port; repeatable.", AllowMultipleArgumentsPerToken = false };
        var nodeId = new Option<string>("--node-id") { Description = "Stable node id (default: host name)." };
        var data = new Option<string>("--data") { Description = "Folder for everything this node keeps (default ./data)." };
        var httpPort = new Option<int?>("--http-port") { Description = "Management HTTP port (default 8558)." };
        var httpWrite = new Option<bool>("--http-write") { Description = "Accept mutating management routes (down, leave)." };
        var nbdPort = new Option<int?>("--nbd-port") { Description = "NBD port (default 10809)." };
        var journal = new Option<string>("--journal") { Description = "Journal: sqlite (default) or postgres." };
        journal.AcceptOnlyFromAmong("sqlite", "postgres");
        var connection = new Option<string>("--connection-string") { Description = "Journal connection string." };
        var holderCap = new Option<int?>("--holder-cap") { Description = "Reliable messaging: entries one channel's message holder keeps (default 4096)." };
        var demo = new Option<bool>("--demo") { Description = "Create and export a demo volume mirrored over two leg files." };

        var command = new Command("serve", "Run a Lockstep node.")
        {
            host, port, seeds, nodeId, data, httpPort, httpWrite, nbdPort, journal, connection, demo, holderCap,
        };

        command.SetAction(async (parse, cancellation) =>
        {
            // Flags win over environment variables, which win over appsettings.json.
            var flags = new Dictionary<string, string?>();
            void Set<T>(Option<T> option, string key)
            {
                var result = parse.GetResult(option);
                if (result is { Implicit: false })
                {
                    flags[$"{LockstepOptions.SectionName}:{key}"] = Convert.ToString(parse.GetValue(option), System.Globalization.CultureInfo.InvariantCulture);
                }
            }

            Set(host, "Cluster:Host");
            Set(port, "Cluster:Port");
            Set(nodeId, "NodeId");
            Set(data, "DataDirectory");
            Set(httpPort, "Http:Port");
            Set(httpWrite, "Http:AllowWrite");
            Set(nbdPort, "Nbd:Port");
            Set(journal, "Journal:Provider");
            Set(connection, "Journal:ConnectionString");
            Set(demo, "Nbd:DemoVolume");
            Set(holderCap, "Messaging:HolderCap");
            var seedValues = parse.GetValue(seeds) ?? [];
            for (var i = 0; i < seedValues.Length; i++)
            {
                flags[$"{LockstepOptions.SectionName}:Cluster:Seeds:{i}"] = seedValues[i];
            }

            var configuration = new ConfigurationBuilder()
                .SetBasePath(AppContext.BaseDirectory)
                .AddJsonFile("appsettings.json", optional: true)
                .AddJsonFile(Path.Combine(Directory.GetCurrentDirectory(), "appsettings.json"), optional: true)
                .AddEnvironmentVariables()
                .AddInMemoryCollection(flags)
                .Build();

            return await NodeRunner.RunAsync(configuration, cancellation);
        });
        return command;
    }
}
