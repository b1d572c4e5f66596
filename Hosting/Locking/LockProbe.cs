using System.CommandLine;
using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster.Sharding;
using Akka.Configuration;
using Lockstep.Actors.Locking;
using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Locking;
using Lockstep.Contracts.Messaging;
using Lockstep.Hosting.Messaging;
using Lockstep.Hosting.Node;

namespace Lockstep.Hosting.Locking;

/// <summary>
/// Where a lock+unlock cycle spends its time, below gRPC: three cluster members in this process on
/// loopback (real remoting, the product's tuning and serializer), each running the DLM. It measures the
/// floor first — a plain Ask to a sharded echo entity on the same node and on another node — and then
/// <see cref="ILockspace"/> lock EX + unlock cycles with the resource mastered on the caller's node and
/// on another node, so the cost of the DLM itself is the difference.
/// </summary>
public static class LockProbe
{
    private const string EchoRegion = "probe-echo";

    /// <summary>Runs every row for <paramref name="seconds"/> each (after <paramref name="warmup"/>) with <paramref name="clients"/> closed-loop callers.</summary>
    public static async Task<IReadOnlyList<LatencySummary>> RunAsync(int clients, TimeSpan seconds, TimeSpan warmup, string hocon, TextWriter log, CancellationToken cancellationToken) =>
        await RunAsync(clients, seconds, warmup, hocon, LockTransport.Reliable, "tcp", log, cancellationToken).ConfigureAwait(false);

    /// <summary>
    /// The same with the DLM's traffic on <paramref name="transport"/>, the reliable layer's envelopes between members on
    /// <paramref name="link"/> (<c>tcp</c>: the peer link, as <c>serve</c> runs; <c>akka</c>: Akka.Remote); the lock rows name both.
    /// </summary>
    public static async Task<IReadOnlyList<LatencySummary>> RunAsync(int clients, TimeSpan seconds, TimeSpan warmup, string hocon, LockTransport transport, string link, TextWriter log, CancellationToken cancellationToken)
    {
        var nodes = new List<ActorSystem>();
        var managers = new List<LockManager>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var node = ActorSystem.Create(ClusterSetup.SystemName, ConfigurationFactory.ParseString(hocon).WithFallback(MessagingBench.NodeConfig()));
                nodes.Add(node);
                ClusterSharding.Get(node).Start(EchoRegion, Props.Create(() => new EchoEntity()), ClusterShardingSettings.Create(node), new LockMessageExtractor(512), new RequesterShardAllocationStrategy(), PoisonPill.Instance);
            }

            await MessagingBench.JoinAsync(nodes, cancellationToken).ConfigureAwait(false);
            for (var i = 0; i < 3; i++)
            {
                // The layer with the product's defaults (what `serve` starts), before the DLM would start its own.
                LockstepMessaging.Start(nodes[i], MessagingService.ToLayerOptions(new LockstepOptions.MessagingSection { Link = link, Probe = false }));
                managers.Add(LockManager.Start(nodes[i], new LockingOptions { NodeId = $"probe-{i + 1}", PersistSlots = false, AskTimeout = TimeSpan.FromSeconds(30), Transport = transport }));
            }

            log.WriteLine("3 nodes up on loopback; callers on node 1, 'other node' = node 2");
            var caller = await OpenWithRetryAsync(managers[0], cancellationToken).ConfigureAwait(false);
            var keeper = await OpenWithRetryAsync(managers[1], cancellationToken).ConfigureAwait(false);

            // The requester's region gets a new shard: touching a name first from node 2 masters it there.
            var localEcho = await PlaceEchoAsync(nodes[0], "local", clients, cancellationToken).ConfigureAwait(false);
            var remoteEcho = await PlaceEchoAsync(nodes[1], "remote", clients, cancellationToken).ConfigureAwait(false);
            var keepers = new List<ILockHandle>();
            var localResources = await PlaceResourcesAsync(managers[0], caller, managers[0].NodeId, "local", clients, keepers, cancellationToken).ConfigureAwait(false);
            var remoteResources = await PlaceResourcesAsync(managers[0], keeper, managers[1].NodeId, "remote", clients, keepers, cancellationToken).ConfigureAwait(false);

            var echo = ClusterSharding.Get(nodes[0]).ShardRegion(EchoRegion);
            var timeout = TimeSpan.FromSeconds(30);
            Func<int, Task> Ask(IReadOnlyList<string> ids) => async c =>
            {
                var pong = await echo.Ask<BenchPong>(new BenchPing(ids[c], c), timeout, cancellationToken).ConfigureAwait(false);
                if (pong.Value != c)
                {
                    throw new InvalidOperationException("echo answered another caller");
                }
            };
            Func<int, Task> Cycle(IReadOnlyList<string> resources) => async c =>
            {
                var handle = await caller.LockAsync(resources[c], LockMode.EX, cancellationToken: cancellationToken).ConfigureAwait(false);
                await handle.UnlockAsync().ConfigureAwait(false);
            };

            var path = transport == LockTransport.Reliable ? $"reliable, link {link}" : "direct";
            var rows = new (string Name, Func<int, Task> Call)[]
            {
                ("plain Ask, sharded echo on the same node", Ask(localEcho)),
                ("plain Ask, sharded echo on another node", Ask(remoteEcho)),
                ($"ILockspace lock EX + unlock, resource on the same node ({path})", Cycle(localResources)),
                ($"ILockspace lock EX + unlock, resource on another node ({path})", Cycle(remoteResources)),
            };
            var results = new List<LatencySummary>();
            foreach (var (name, call) in rows)
            {
                await MeasureAsync(name, clients, warmup, call, cancellationToken).ConfigureAwait(false);
                // All three members and the callers share this process: CPU per call is what the whole path costs, which
                // on a loaded machine compares two transports better than their throughput does.
                var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
                var linkBefore = LinkTotals(nodes);
                results.Add(await MeasureAsync(name, clients, seconds, call, cancellationToken).ConfigureAwait(false));
                var cpu = Process.GetCurrentProcess().TotalProcessorTime - cpuBefore;
                var linked = LinkTotals(nodes) - linkBefore;
                if (linked.Envelopes > 0)
                {
                    var calls = Math.Max(1, results[^1].Calls);
                    log.WriteLine(FormattableString.Invariant($"{name}: per call {(double)linked.Envelopes / calls:F2} link envelopes in {(double)linked.Writes / calls:F2} writes, {(double)linked.Reads / calls:F2} reads; {(double)linked.OverAkka / calls:F2} envelopes over Akka.Remote"));
                }

                log.WriteLine(FormattableString.Invariant($"{name}: {results[^1].PerSecond:F0}/s p50 {results[^1].P50Ms * 1000:F0} µs, process CPU {cpu.TotalMicroseconds / Math.Max(1, results[^1].Calls):F0} µs per call (three members and the callers)"));
            }

            foreach (var k in keepers)
            {
                await k.UnlockAsync().ConfigureAwait(false);
            }

            return results;
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.Terminate().ConfigureAwait(false);
            }
        }
    }

    /// <summary>Closed loop: each caller repeats its call until the window ends; one latency per call.</summary>
    private static async Task<LatencySummary> MeasureAsync(string name, int clients, TimeSpan window, Func<int, Task> call, CancellationToken cancellationToken)
    {
        var failed = 0;
        var clock = Stopwatch.StartNew();
        var end = Stopwatch.GetTimestamp() + (long)(window.TotalSeconds * Stopwatch.Frequency);
        var perCaller = await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            var latencies = new List<double>();
            while (Stopwatch.GetTimestamp() < end && !cancellationToken.IsCancellationRequested)
            {
                var start = Stopwatch.GetTimestamp();
                try
                {
                    await call(c).ConfigureAwait(false);
                    latencies.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                }
                catch (Exception ex) when (ex is AskTimeoutException or LockRequestException or InvalidOperationException)
                {
                    Interlocked.Increment(ref failed);
                }
            }

            return latencies;
        }))).ConfigureAwait(false);
        clock.Stop();
        return LatencySummary.From(name, [.. perCaller.SelectMany(l => l)], failed, clock.Elapsed);
    }

    private static async Task<ILockspace> OpenWithRetryAsync(LockManager manager, CancellationToken cancellationToken)
    {
        // The registry singleton starts a moment after the members are Up.
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return await manager.OpenLockspaceAsync("probe", cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (AskTimeoutException) when (attempt < 5)
            {
            }
        }
    }

    private static async Task<List<string>> PlaceEchoAsync(ActorSystem master, string prefix, int count, CancellationToken cancellationToken)
    {
        var region = ClusterSharding.Get(master).ShardRegion(EchoRegion);
        var placed = new List<string>();
        for (var i = 0; placed.Count < count && i < 100 * count + 1000; i++)
        {
            var id = $"{prefix}-{i}";
            await region.Ask<BenchPong>(new BenchPing(id, 0), TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
            var here = await region.Ask<CurrentShardRegionState>(GetShardRegionState.Instance, TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
            if (here.Shards.Any(s => s.EntityIds.Contains(id)))
            {
                placed.Add(id);
            }
        }

        return placed.Count == count ? placed : throw new InvalidOperationException($"only {placed.Count} of {count} echo entities could be placed");
    }

    /// <summary>Masters resources on the keeper's node: the keeper holds NL on each (which also keeps it from passivating).</summary>
    private static async Task<List<string>> PlaceResourcesAsync(LockManager caller, ILockspace keeper, string want, string prefix, int count, List<ILockHandle> keepers, CancellationToken cancellationToken)
    {
        var placed = new List<string>();
        for (var i = 0; placed.Count < count && i < 100 * count + 1000; i++)
        {
            var name = $"{prefix}-{i}";
            var handle = await keeper.LockAsync(name, LockMode.NL, cancellationToken: cancellationToken).ConfigureAwait(false);
            var dump = await caller.DumpResourceAsync("probe", name, cancellationToken).ConfigureAwait(false);
            if (dump.MasterNode == want)
            {
                placed.Add(name);
                keepers.Add(handle);
            }
            else
            {
                await handle.UnlockAsync().ConfigureAwait(false);
            }
        }

        return placed.Count == count ? placed : throw new InvalidOperationException($"only {placed.Count} of {count} resources could be mastered on {want}");
    }

    private readonly record struct LinkCounts(long Envelopes, long Writes, long Reads, long OverAkka)
    {
        public static LinkCounts operator -(LinkCounts a, LinkCounts b) => new(a.Envelopes - b.Envelopes, a.Writes - b.Writes, a.Reads - b.Reads, a.OverAkka - b.OverAkka);
    }

    private static LinkCounts LinkTotals(IEnumerable<ActorSystem> nodes) =>
        nodes.Select(n => LockstepMessaging.Get(n).Link?.Stats).Where(s => s is not null)
            .Aggregate(default(LinkCounts), (sum, s) => new LinkCounts(sum.Envelopes + s!.SentOverLink, sum.Writes + s.Writes, sum.Reads + s.Reads, sum.OverAkka + s.SentOverAkka));

    /// <summary>The <c>probe</c> subcommand: prints a Markdown table (<see cref="LatencySummary.Table"/>).</summary>
    public static Command Command()
    {
        var clients = new Option<int>("--clients") { Description = "Concurrent callers on node 1, each on its own resource.", DefaultValueFactory = _ => 1 };
        var seconds = new Option<double>("--seconds") { Description = "Measured seconds per row.", DefaultValueFactory = _ => 5 };
        var warmup = new Option<double>("--warmup") { Description = "Unmeasured seconds before each row.", DefaultValueFactory = _ => 2 };
        var hocon = new Option<string>("--hocon") { Description = "Akka settings that take precedence over the members' own (to try remoting or dispatcher tuning).", DefaultValueFactory = _ => string.Empty };
        var transport = new Option<string>("--transport") { Description = "DLM transport: reliable, direct, or both (A/B: one fresh cluster per transport, in this run).", DefaultValueFactory = _ => "both" };
        var link = new Option<string>("--link") { Description = "The reliable layer's wire between members: tcp (its peer link, as serve runs), akka (Akka.Remote), or both (A/B in this run).", DefaultValueFactory = _ => "tcp" };
        var probe = new Command("probe", "Lock+unlock cost below gRPC: ILockspace cycles and plain Asks, same node and other node, in three in-process members on loopback.")
        {
            clients, seconds, warmup, hocon, transport, link,
        };
        probe.SetAction(async (parse, ct) =>
        {
            string? problem = parse.GetValue(clients) is < 1 or > 1024 ? "--clients must be 1..1024"
                : parse.GetValue(seconds) is <= 0 or > 600 or double.NaN ? "--seconds must be in (0, 600]"
                : parse.GetValue(warmup) is < 0 or > 600 or double.NaN ? "--warmup must be 0..600 seconds"
                : parse.GetValue(transport) is not ("reliable" or "direct" or "both") ? $"--transport must be reliable, direct or both, not '{parse.GetValue(transport)}'"
                : parse.GetValue(link) is not ("tcp" or "akka" or "both") ? $"--link must be tcp, akka or both, not '{parse.GetValue(link)}'"
                : null;
            if (problem is not null)
            {
                await Console.Error.WriteLineAsync($"lockstep: {problem}");
                return 2;
            }

            var transports = parse.GetValue(transport) switch
            {
                "direct" => new[] { LockTransport.Direct },
                "reliable" => [LockTransport.Reliable],
                _ => [LockTransport.Direct, LockTransport.Reliable],
            };
            var runs = new List<LatencySummary>();
            var links = parse.GetValue(link) == "both" ? new[] { "akka", "tcp" } : [parse.GetValue(link)!];
            foreach (var kind in transports)
            {
                foreach (var wire in kind == LockTransport.Reliable ? links : ["akka"])
                {
                    runs.AddRange(await RunAsync(parse.GetValue(clients), TimeSpan.FromSeconds(parse.GetValue(seconds)), TimeSpan.FromSeconds(parse.GetValue(warmup)), parse.GetValue(hocon) ?? string.Empty, kind, wire, Console.Error, ct));
                }
            }

            await Console.Out.WriteLineAsync(LatencySummary.Table(runs));
            return runs.All(r => r.Failed == 0 && r.Calls > 0) ? 0 : 1;
        });
        return probe;
    }

    private sealed class EchoEntity : ReceiveActor
    {
        public EchoEntity() => Receive<BenchPing>(p => Sender.Tell(new BenchPong(p.Value)));
    }
}
