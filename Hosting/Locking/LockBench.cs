using System.Buffers.Binary;
using System.CommandLine;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Google.Protobuf;
using Grpc.Net.Client;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Lockstep.Hosting.Locking.Grpc;
using Npgsql;

namespace Lockstep.Hosting.Locking;

/// <summary>What <c>lockstep lock bench</c> runs.</summary>
/// <param name="Nodes">Management HTTP addresses of Lockstep nodes (gRPC on port + 1000); clients are spread over them round-robin. Empty: skip Lockstep.</param>
/// <param name="Master">Node on which every resource is mastered; null: each client's own node (contended and counter resources: the first client's node).</param>
/// <param name="Postgres">Npgsql connection string; null: skip PostgreSQL.</param>
/// <param name="Clients">Concurrent clients per shape.</param>
/// <param name="Window">Measured time per shape and system.</param>
/// <param name="Warmup">Unmeasured cycling before each window (null: 2 s).</param>
/// <param name="Lockspace">Lockstep lockspace the bench uses.</param>
/// <param name="Shapes">Shapes to run, in their usual order; null: all of them.</param>
/// <param name="CallersPerSession">Lockstep clients sharing one gRPC session (1: a session each, strictly one request at a time; more: a <see cref="MultiplexedLockSession"/> with batches).</param>
/// <param name="InNode">Lockstep callers run inside the nodes (<c>POST /v1/locks/bench</c>, <see cref="ILockspace"/>) instead of in this process through gRPC.</param>
public sealed record LockBenchSettings(
    IReadOnlyList<Uri> Nodes,
    Uri? Master,
    string? Postgres,
    int Clients,
    TimeSpan Window,
    TimeSpan? Warmup = null,
    string Lockspace = "bench",
    IReadOnlySet<LockBenchShape>? Shapes = null,
    int CallersPerSession = 1,
    bool InNode = false);

/// <summary>
/// <c>lockstep lock bench</c>: Lockstep's DLM (through the gRPC session API, as any program would
/// use it) against PostgreSQL advisory locks, the same three shapes, one after the other in one run.
/// </summary>
public static class LockBench
{
    /// <summary>Name in the table.</summary>
    public const string LockstepName = "Lockstep";

    /// <summary>Name in the table.</summary>
    public const string PostgresName = "PostgreSQL";

    /// <summary>The table the counter shape uses in PostgreSQL (one row per run, removed afterwards).</summary>
    public const string CounterTable = "lockstep_bench_counter";

    private const uint ValBlk = (uint)LockFlags.ValBlk;

    /// <summary>
    /// Runs every shape on every configured system, interleaved (Lockstep, then PostgreSQL, per
    /// shape) so drift in the machine's load hits both alike; progress lines go to <paramref name="progress"/>.
    /// </summary>
    public static async Task<IReadOnlyList<LockBenchResult>> RunAsync(LockBenchSettings settings, TextWriter progress, CancellationToken ct)
    {
        if (settings.Clients < 1 || settings.Window <= TimeSpan.Zero)
        {
            throw new ArgumentException("clients must be at least 1 and the window positive");
        }

        var results = new List<LockBenchResult>();
        var run = System.Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        foreach (var shape in Enum.GetValues<LockBenchShape>().Where(s => settings.Shapes?.Contains(s) ?? true))
        {
            if (settings.Nodes.Count > 0)
            {
                await progress.WriteLineAsync($"{LockstepName} {shape}, {settings.Clients} clients, {settings.Window.TotalSeconds:0.#} s ...");
                results.Add(await RunLockstepAsync(settings, shape, $"{run}-{shape.ToString()[..2].ToLowerInvariant()}", ct));
                await progress.WriteLineAsync(ClientCpuLine(results[^1]));
            }

            if (settings.Postgres is not null)
            {
                await progress.WriteLineAsync($"{PostgresName} {shape}, {settings.Clients} clients, {settings.Window.TotalSeconds:0.#} s ...");
                results.Add(await RunPostgresAsync(settings, shape, $"{run}-{shape}", ct));
                await progress.WriteLineAsync(ClientCpuLine(results[^1]));
            }
        }

        return results;
    }

    /// <summary>The bench's own CPU per cycle: on one machine its clients compete with the servers for the cores.</summary>
    private static string ClientCpuLine(LockBenchResult r) =>
        $"  {r.WarmupCycles} warmup + {r.Cycles} measured cycles, {r.CyclesPerSecond:0}/s; bench client CPU {r.ClientCpu.TotalSeconds:0.00} s = {r.ClientCpuMicrosecondsPerCycle:0.0} µs/cycle";

    private static async Task<LockBenchResult> RunLockstepAsync(LockBenchSettings settings, LockBenchShape shape, string prefix, CancellationToken ct)
    {
        var channels = new Dictionary<Uri, GrpcChannel>();
        var https = new Dictionary<Uri, HttpClient>();
        var sessions = new List<GrpcLockSession>();
        var multiplexed = new List<MultiplexedLockSession>();
        var keepers = new Dictionary<Uri, ResourcePlacer>();
        var where = settings.Master is null ? "master: client's node" : $"master: {settings.Master.Authority}";
        try
        {
            GrpcChannel Channel(Uri node) => channels.TryGetValue(node, out var c) ? c : channels[node] = GrpcChannel.ForAddress(GrpcAddress(node));
            HttpClient Http(Uri node) => https.TryGetValue(node, out var h) ? h : https[node] = new HttpClient { BaseAddress = node, Timeout = TimeSpan.FromSeconds(30) };
            async Task<ResourcePlacer> Keeper(Uri node)
            {
                if (!keepers.TryGetValue(node, out var placer))
                {
                    var keeper = await GrpcLockSession.OpenAsync(new LockService.LockServiceClient(Channel(node)), settings.Lockspace, ct);
                    sessions.Add(keeper);
                    keepers[node] = placer = new ResourcePlacer(keeper, Http(node), settings.Lockspace, $"{prefix}-{keepers.Count}");
                }

                return placer;
            }

            // Each client's node, and where its resource must live.
            var clientNodes = Enumerable.Range(0, settings.Clients).Select(i => settings.Nodes[i % settings.Nodes.Count]).ToList();
            var resources = new string[settings.Clients];
            if (shape is LockBenchShape.Uncontended or LockBenchShape.Floor)
            {
                foreach (var group in Enumerable.Range(0, settings.Clients).GroupBy(i => settings.Master ?? clientNodes[i]))
                {
                    var placer = await Keeper(group.Key);
                    var first = placer.Placed.Count;
                    await placer.PlaceAsync(group.Count(), ct);
                    foreach (var (client, index) in group.Select((c, k) => (c, k)))
                    {
                        resources[client] = placer.Placed[first + index];
                    }
                }
            }
            else
            {
                var placer = await Keeper(settings.Master ?? clientNodes[0]);
                await placer.PlaceAsync(1, ct);
                Array.Fill(resources, placer.Placed[0]);
            }

            where += $" ({keepers.Values.Sum(k => k.OnTarget)}/{keepers.Values.Sum(k => k.Placed.Count)} resources placed there)";
            if (settings.InNode)
            {
                return await RunInNodeAsync(settings, shape, clientNodes, resources, where, keepers.Values.FirstOrDefault(), ct);
            }

            var clients = new BenchLockCaller[settings.Clients];
            if (settings.CallersPerSession <= 1)
            {
                for (var i = 0; i < settings.Clients; i++)
                {
                    var session = await GrpcLockSession.OpenAsync(new LockService.LockServiceClient(Channel(clientNodes[i])), settings.Lockspace, ct);
                    sessions.Add(session);
                    clients[i] = session;
                }
            }
            else
            {
                // Clients of one node share sessions, CallersPerSession to each.
                foreach (var group in Enumerable.Range(0, settings.Clients).GroupBy(i => clientNodes[i]))
                {
                    foreach (var chunk in group.Chunk(settings.CallersPerSession))
                    {
                        var shared = await MultiplexedLockSession.OpenAsync(new LockService.LockServiceClient(Channel(group.Key)), settings.Lockspace, ct);
                        multiplexed.Add(shared);
                        foreach (var i in chunk)
                        {
                            clients[i] = shared;
                        }
                    }
                }
            }

            long increments = 0;
            var cycles = clients.Select<BenchLockCaller, Func<CancellationToken, Task>>((session, i) => shape == LockBenchShape.Floor
                ? async token =>
                {
                    await session.PingAsync(resources[i], token);
                    await session.PingAsync(string.Empty, token);
                }
                : shape == LockBenchShape.Counter
                ? async token =>
                {
                    var granted = await session.LockAsync(resources[i], Mode.Ex, ValBlk, token);
                    var next = new byte[8];
                    BinaryPrimitives.WriteInt64LittleEndian(next, (granted.Lvb.Length >= 8 ? BinaryPrimitives.ReadInt64LittleEndian(granted.Lvb.Span) : 0) + 1);
                    await session.UnlockAsync(granted.LockId, ValBlk, ByteString.CopyFrom(next), token);
                    Interlocked.Increment(ref increments);
                }
                : async token =>
                {
                    var granted = await session.LockAsync(resources[i], Mode.Ex, 0, token);
                    await session.UnlockAsync(granted.LockId, 0, null, token);
                }).ToList();

            var outcome = await LockBenchLoop.RunAsync(cycles, settings.Warmup ?? TimeSpan.FromSeconds(2), settings.Window, ct);
            if (multiplexed.Count > 0)
            {
                var (requests, writes, answers, reads) = multiplexed.Select(m => m.Counts).Aggregate((a, b) => (a.Requests + b.Requests, a.Writes + b.Writes, a.Answers + b.Answers, a.Reads + b.Reads));
                where += $", {multiplexed.Count} shared sessions: {requests / (double)Math.Max(1, writes):0.0} requests per write, {answers / (double)Math.Max(1, reads):0.0} answers per read";
            }

            long? expected = null, found = null;
            if (shape == LockBenchShape.Counter)
            {
                // The keeper's NL lock kept the LVB alive; PR with VALBLK reads the final value.
                var placer = keepers.Values.Single();
                var read = await placer.Keeper.ConvertAsync(placer.Held[resources[0]], Mode.Pr, ValBlk, ct);
                expected = Interlocked.Read(ref increments);
                found = read.Lvb.Length >= 8 ? BinaryPrimitives.ReadInt64LittleEndian(read.Lvb.Span) : 0;
            }

            return new LockBenchResult(LockstepName, shape, settings.Clients, where, outcome.Cycles, outcome.Elapsed, outcome.Latency, expected, found, outcome.Error, outcome.ClientCpu, outcome.WarmupCycles);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return LockBenchResult.Failed(LockstepName, shape, settings.Clients, where, ex.GetBaseException().Message);
        }
        finally
        {
            // Closing a session releases its locks, the keepers' NL ones included.
            await Task.WhenAll(sessions.Select(s => s.DisposeAsync().AsTask()).Concat(multiplexed.Select(m => m.DisposeAsync().AsTask())));
            foreach (var channel in channels.Values)
            {
                channel.Dispose();
            }

            foreach (var http in https.Values)
            {
                http.Dispose();
            }
        }
    }

    /// <summary>
    /// The Lockstep half with callers inside the nodes: each client node runs its callers (<c>POST /v1/locks/bench</c>)
    /// at the same time; their histograms merge. The CPU reported is the client nodes' own (callers and DLM together).
    /// </summary>
    private static async Task<LockBenchResult> RunInNodeAsync(LockBenchSettings settings, LockBenchShape shape, List<Uri> clientNodes, string[] resources, string where,
        ResourcePlacer? counterKeeper, CancellationToken ct)
    {
        if (shape == LockBenchShape.Floor)
        {
            return LockBenchResult.Failed(LockstepName, shape, settings.Clients, where, "the floor shape measures client round trips: it runs only with --callers grpc");
        }

        where = $"callers in node, {where}";
        var warmup = settings.Warmup ?? TimeSpan.FromSeconds(2);
        var runs = Enumerable.Range(0, settings.Clients).GroupBy(i => clientNodes[i]).Select(async group =>
        {
            var request = new InNodeBenchRequest(settings.Lockspace, shape.ToString().ToLowerInvariant(), [.. group.Select(i => resources[i])], warmup.TotalSeconds, settings.Window.TotalSeconds);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(warmup + settings.Window + TimeSpan.FromSeconds(60));
            // A client of its own: the request takes the whole warm-up and window (the token bounds it).
            using var http = new HttpClient { BaseAddress = group.Key, Timeout = Timeout.InfiniteTimeSpan };
            using var answer = await http.PostAsJsonAsync("/v1/locks/bench", request, timeout.Token);
            if (!answer.IsSuccessStatusCode)
            {
                throw new InvalidOperationException($"{group.Key.Authority} refused the in-node bench ({(int)answer.StatusCode}): {await answer.Content.ReadAsStringAsync(ct)}");
            }

            return await answer.Content.ReadFromJsonAsync<InNodeBenchResult>(ct) ?? throw new InvalidOperationException($"{group.Key.Authority} answered the in-node bench with an empty body");
        }).ToList();
        var results = await Task.WhenAll(runs);
        var latency = new LatencyHistogram();
        foreach (var run in results)
        {
            latency.Merge(LatencyHistogram.FromSparse(run.Latency));
        }

        long? expected = null, found = null;
        if (shape == LockBenchShape.Counter && counterKeeper is not null)
        {
            var read = await counterKeeper.Keeper.ConvertAsync(counterKeeper.Held[resources[0]], Mode.Pr, ValBlk, ct);
            expected = results.Sum(r => r.Increments);
            found = read.Lvb.Length >= 8 ? BinaryPrimitives.ReadInt64LittleEndian(read.Lvb.Span) : 0;
        }

        var error = results.Select(r => r.Error).FirstOrDefault(e => e.Length > 0) ?? string.Empty;
        return new LockBenchResult(LockstepName, shape, settings.Clients, where, results.Sum(r => r.Cycles), TimeSpan.FromSeconds(results.Max(r => r.Seconds)), latency, expected, found, error,
            TimeSpan.FromSeconds(results.Sum(r => r.NodeCpuSeconds)), results.Sum(r => r.WarmupCycles));
    }

    private static async Task<LockBenchResult> RunPostgresAsync(LockBenchSettings settings, LockBenchShape shape, string counterId, CancellationToken ct)
    {
        NpgsqlDataSource source;
        string where;
        try
        {
            var builder = new NpgsqlConnectionStringBuilder(settings.Postgres);
            builder.MaxPoolSize = Math.Max(builder.MaxPoolSize, settings.Clients + 2);
            where = $"server {builder.Host}:{builder.Port}";
            source = NpgsqlDataSource.Create(builder);
        }
        catch (ArgumentException ex)
        {
            return LockBenchResult.Failed(PostgresName, shape, settings.Clients, "?", $"bad --postgres connection string: {ex.Message}");
        }

        var clients = new List<PostgresLockClient>();
        try
        {
            // Advisory keys are global to the server: a random base keeps runs (and other users) apart.
            var keyBase = BinaryPrimitives.ReadInt64LittleEndian(RandomNumberGenerator.GetBytes(8)) & 0x7fff_ffff_ff00_0000L;
            if (shape == LockBenchShape.Counter)
            {
                await using (var create = source.CreateCommand($"CREATE TABLE IF NOT EXISTS {CounterTable} (id text PRIMARY KEY, value bigint NOT NULL)"))
                {
                    await create.ExecuteNonQueryAsync(ct);
                }

                await using var insert = source.CreateCommand($"INSERT INTO {CounterTable} VALUES ($1, 0)");
                insert.Parameters.Add(new NpgsqlParameter { Value = counterId });
                await insert.ExecuteNonQueryAsync(ct);
            }

            for (var i = 0; i < settings.Clients; i++)
            {
                clients.Add(await PostgresLockClient.OpenAsync(source, shape is LockBenchShape.Uncontended or LockBenchShape.Floor ? keyBase + i : keyBase, shape == LockBenchShape.Counter ? (CounterTable, counterId) : null, ct));
            }

            long increments = 0;
            var cycles = clients.Select<PostgresLockClient, Func<CancellationToken, Task>>(client => shape == LockBenchShape.Counter
                ? async token =>
                {
                    await client.CounterCycleAsync(token);
                    Interlocked.Increment(ref increments);
                }
                : shape == LockBenchShape.Floor ? client.FloorCycleAsync
                : client.CycleAsync).ToList();
            var outcome = await LockBenchLoop.RunAsync(cycles, settings.Warmup ?? TimeSpan.FromSeconds(2), settings.Window, ct);

            long? expected = null, found = null;
            if (shape == LockBenchShape.Counter)
            {
                await using var read = source.CreateCommand($"SELECT value FROM {CounterTable} WHERE id = $1");
                read.Parameters.Add(new NpgsqlParameter { Value = counterId });
                found = (long)(await read.ExecuteScalarAsync(ct))!;
                expected = Interlocked.Read(ref increments);
            }

            return new LockBenchResult(PostgresName, shape, settings.Clients, where, outcome.Cycles, outcome.Elapsed, outcome.Latency, expected, found, outcome.Error, outcome.ClientCpu, outcome.WarmupCycles);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return LockBenchResult.Failed(PostgresName, shape, settings.Clients, where, ex.GetBaseException().Message);
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }

            if (shape == LockBenchShape.Counter)
            {
                await DeleteCounterAsync(source, counterId);
            }

            await source.DisposeAsync();
        }
    }

    private static async Task DeleteCounterAsync(NpgsqlDataSource source, string counterId)
    {
        try
        {
            await using var delete = source.CreateCommand($"DELETE FROM {CounterTable} WHERE id = $1");
            delete.Parameters.Add(new NpgsqlParameter { Value = counterId });
            await delete.ExecuteNonQueryAsync();
        }
        catch (NpgsqlException)
        {
            // Best effort: a left-over row of a finished run harms nothing (ids are per run).
        }
    }

    /// <summary>
    /// The <c>bench</c> subcommand. Progress goes to stderr, the Markdown table to stdout; exit 0 when
    /// every row ran without error (and the counters matched), 1 otherwise, 2 for bad usage.
    /// <code>
    /// lockstep lock bench --node 127.0.0.1:8559 --postgres "Host=127.0.0.1;Port=55432;Username=postgres" --seconds 10 --clients 16
    /// </code>
    /// </summary>
    public static Command Command()
    {
        var nodes = new Option<string[]>("--node") { Description = "Management HTTP address (host:port or URL) of a Lockstep node, gRPC on port + 1000; repeat to spread clients over nodes." };
        var master = new Option<string?>("--master") { Description = "Node (host:port) on which every resource is mastered; default: each client's own node." };
        var postgres = new Option<string?>("--postgres") { Description = "Npgsql connection string of the PostgreSQL to compare with." };
        var seconds = new Option<double>("--seconds") { Description = "Measured seconds per shape and system.", DefaultValueFactory = _ => 10 };
        var clients = new Option<int>("--clients") { Description = "Concurrent clients.", DefaultValueFactory = _ => 16 };
        var warmup = new Option<double>("--warmup") { Description = "Unmeasured seconds of cycling before each window (JIT and connections settle).", DefaultValueFactory = _ => 2 };
        var lockspace = new Option<string>("--lockspace") { Description = "Lockspace the bench locks in.", DefaultValueFactory = _ => "bench" };
        var perSession = new Option<int>("--callers-per-session") { Description = "Lockstep clients sharing one gRPC session, with batched messages (1: a session per client).", DefaultValueFactory = _ => 1 };
        var callers = new Option<string>("--callers") { Description = "Where Lockstep's callers run: grpc (in this process, through the gRPC session API) or in-node (inside the --node processes, through ILockspace, as the mirror does).", DefaultValueFactory = _ => "grpc" };
        var shapes = new Option<string[]>("--shape") { Description = "Run only this shape (floor, uncontended, contended, counter); repeat for several. Default: all." };
        var bench = new Command("bench", "Lock+unlock throughput and latency: Lockstep (gRPC) vs PostgreSQL advisory locks, uncontended, contended and counter shapes; prints a Markdown table.")
        {
            nodes, master, postgres, seconds, clients, warmup, lockspace, shapes, perSession, callers,
        };
        bench.SetAction(async (parse, ct) =>
        {
            var parsed = (parse.GetValue(nodes) ?? []).Select(n => (Text: n, Uri: LockCommands.ParseNode(n))).ToList();
            var shapeNames = parse.GetValue(shapes) ?? [];
            var chosen = shapeNames.Select(n => Enum.TryParse<LockBenchShape>(n, ignoreCase: true, out var s) && Enum.IsDefined(s) && !char.IsDigit(n[0]) ? s : (LockBenchShape?)null).ToList();
            var masterText = parse.GetValue(master);
            var masterUri = masterText is null ? null : LockCommands.ParseNode(masterText);
            string? problem = parsed.FirstOrDefault(n => n.Uri is null).Text is { } bad ? $"--node '{bad}' is neither a URL nor host:port"
                : masterText is not null && masterUri is null ? $"--master '{masterText}' is neither a URL nor host:port"
                : parsed.Count == 0 && parse.GetValue(postgres) is null ? "give --node (Lockstep) and/or --postgres (PostgreSQL)"
                : parse.GetValue(clients) is < 1 or > 1024 ? "--clients must be 1..1024"
                : parse.GetValue(seconds) is <= 0 or > 3600 or double.NaN ? "--seconds must be in (0, 3600]"
                : parse.GetValue(warmup) is < 0 or > 600 or double.NaN ? "--warmup must be 0..600 seconds"
                : LockNames.LockspaceError(parse.GetValue(lockspace)) is { } error ? $"--lockspace: {error}"
                : parse.GetValue(perSession) is < 1 or > 1024 ? "--callers-per-session must be 1..1024"
                : chosen.IndexOf(null) is var unknown and >= 0 ? $"--shape '{shapeNames[unknown]}' is not one of floor, uncontended, contended, counter"
                : parse.GetValue(callers) is not ("grpc" or "in-node") ? $"--callers must be grpc or in-node, not '{parse.GetValue(callers)}'"
                : parse.GetValue(callers) == "in-node" && parse.GetValue(perSession) > 1 ? "--callers-per-session is about gRPC sessions: it does not go with --callers in-node"
                : parse.GetValue(callers) == "in-node" && chosen.Contains(LockBenchShape.Floor) ? "--shape floor measures client round trips: it does not go with --callers in-node"
                : null;
            if (problem is not null)
            {
                await Console.Error.WriteLineAsync($"lockstep: {problem}");
                return 2;
            }

            var settings = new LockBenchSettings(
                [.. parsed.Select(n => n.Uri!)],
                masterUri,
                parse.GetValue(postgres),
                parse.GetValue(clients),
                TimeSpan.FromSeconds(parse.GetValue(seconds)),
                TimeSpan.FromSeconds(parse.GetValue(warmup)),
                parse.GetValue(lockspace)!,
                chosen.Count > 0 ? chosen.Select(c => c!.Value).ToHashSet()
                    : parse.GetValue(callers) == "in-node" ? new HashSet<LockBenchShape> { LockBenchShape.Uncontended, LockBenchShape.Contended, LockBenchShape.Counter }
                    : null,
                parse.GetValue(perSession),
                parse.GetValue(callers) == "in-node");
            var results = await RunAsync(settings, Console.Error, ct);
            await Console.Out.WriteAsync(LockBenchReport.Render(results));
            foreach (var failed in results.Where(r => !r.Ok))
            {
                await Console.Error.WriteLineAsync($"lockstep: {failed.System} {failed.Shape}: {LockBenchReport.Check(failed)}");
            }

            return results.All(r => r.Ok) ? 0 : 1;
        });
        return bench;
    }

    /// <summary>gRPC address of a node given by its management HTTP address (port + 1000, the default).</summary>
    public static Uri GrpcAddress(Uri node) => new UriBuilder(node) { Port = node.Port + 1000, Path = "/" }.Uri;
}
