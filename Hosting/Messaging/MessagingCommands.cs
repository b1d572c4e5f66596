using System.CommandLine;

namespace Lockstep.Hosting.Messaging;

/// <summary>
/// <c>lockstep messaging bench</c>: the reliable layer against plain Ask, three nodes in one process.
/// <code>
/// lockstep messaging bench --requests 20000 --callers 64 --faults
/// </code>
/// Exit codes: 0 done, 1 some call failed or answered wrongly, 2 usage.
/// </summary>
public static class MessagingCommands
{
    /// <summary>The <c>messaging</c> command group.</summary>
    public static Command Create()
    {
        var group = new Command("messaging", "Exercise the reliable message layer.");
        var requests = new Option<int>("--requests") { Description = "Measured calls per run.", DefaultValueFactory = _ => 20_000 };
        var callers = new Option<int>("--callers") { Description = "Concurrent closed-loop callers.", DefaultValueFactory = _ => 64 };
        var faults = new Option<bool>("--faults") { Description = "Also run the layer with 2% drops, 2% duplicates and 2% delays injected." };
        var bench = new Command("bench", "Requests/s and p50/p99 through the layer versus plain Ask to a remote sharded entity, in one run (3 nodes in this process, real remoting on loopback).")
        {
            requests, callers, faults,
        };
        bench.SetAction(async (parse, ct) =>
        {
            var options = new MessagingBenchOptions(parse.GetValue(requests), parse.GetValue(callers), parse.GetValue(faults));
            if (options.Requests < 1 || options.Callers < 1)
            {
                Console.Error.WriteLine("lockstep: --requests and --callers must be at least 1");
                return 2;
            }

            var runs = await MessagingBench.RunAsync(options, Console.Out, ct);
            Console.WriteLine(LatencySummary.Table(runs));
            return runs.Any(r => r.Failed > 0) ? 1 : 0;
        });
        group.Subcommands.Add(bench);
        return group;
    }
}
