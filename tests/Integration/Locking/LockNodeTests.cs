using System.Net;
using System.Net.Http.Json;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Lockstep.Hosting.Locking;
using Lockstep.Hosting.Locking.Grpc;
using Lockstep.Integration.Tests.Cluster;
using Status = Lockstep.Hosting.Locking.Grpc.Status;
using Lock = Lockstep.Hosting.Locking.Grpc.Lock;
using Convert = Lockstep.Hosting.Locking.Grpc.Convert;
using Xunit;

namespace Lockstep.Integration.Tests.Locking;

/// <summary>A real <c>lockstep serve</c> process: gRPC lock sessions, the lock HTTP routes and the <c>lock</c> CLI against it.</summary>
public sealed class LockNodeTests : IAsyncLifetime
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private readonly string _data = Directory.CreateTempSubdirectory("lockstep-lock-").FullName;
    private ReadyNode? _node;

    private HttpClient Http => _node!.Http;

    private int HttpPort => _node!.HttpPort;

    public async Task InitializeAsync()
    {
        try
        {
            _node = await ReadyNode.StartAsync("lk1", _data, Patience);
        }
        catch
        {
            // xUnit does not dispose a fixture whose initialisation failed: leave no data folder behind.
            await DisposeAsync();
            throw;
        }
    }

    public async Task DisposeAsync()
    {
        if (_node is not null)
        {
            await _node.DisposeAsync();
        }

        Directory.Delete(_data, recursive: true);
    }

    [Fact]
    public async Task Grpc_sessions_lock_get_basts_hand_over_the_lvb_and_release_on_close()
    {
        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{_node!.GrpcPort}");
        var client = new LockService.LockServiceClient(channel);
        using var s1 = client.Session();
        using var s2 = client.Session();
        var in1 = Inbox(s1.ResponseStream);
        var in2 = Inbox(s2.ResponseStream);

        await s1.RequestStream.WriteAsync(new ClientMessage { RequestId = 1, Open = new Open { Lockspace = "grpcls" } });
        var opened = (await in1.NextAsync()).Opened;
        Assert.Equal(("grpcls", 1u, 64u, "lk1"), (opened.Lockspace, opened.Slot, opened.LvbLength, opened.NodeId));
        await s2.RequestStream.WriteAsync(new ClientMessage { RequestId = 1, Open = new Open { Lockspace = "grpcls" } });
        Assert.NotEqual(opened.Session, (await in2.NextAsync()).Opened.Session);

        await s1.RequestStream.WriteAsync(new ClientMessage { RequestId = 2, Lock = new Lock { Resource = "r", Mode = Mode.Ex, Flags = 4 } });
        var granted = (await in1.NextAsync()).Completion;
        Assert.Equal((2ul, Status.Granted, Mode.Ex), (granted.RequestId, granted.Status, granted.GrantedMode));

        await s2.RequestStream.WriteAsync(new ClientMessage { RequestId = 2, Lock = new Lock { Resource = "r", Mode = Mode.Pr, Flags = 4 } });
        var bast = (await in1.NextAsync()).Bast;
        Assert.Equal((granted.LockId, Mode.Pr), (bast.LockId, bast.BlockedMode));

        await s1.RequestStream.WriteAsync(new ClientMessage { RequestId = 3, Unlock = new Unlock { LockId = granted.LockId, Flags = 4, Lvb = ByteString.CopyFromUtf8("abc") } });
        Assert.Equal(Status.Unlocked, (await in1.NextAsync()).Completion.Status);
        var handedOver = (await in2.NextAsync()).Completion;
        Assert.Equal((2ul, Status.Granted, Mode.Pr), (handedOver.RequestId, handedOver.Status, handedOver.GrantedMode));
        Assert.Equal("abc", handedOver.Lvb.Span[..3].ToArray().Select(b => (char)b).Aggregate("", (a, c) => a + c));

        // Bad input gets an error and the stream keeps serving.
        await s2.RequestStream.WriteAsync(new ClientMessage { RequestId = 4, Lock = new Lock { Resource = new string('x', 65), Mode = Mode.Nl } });
        Assert.Contains("longer than 64 bytes", (await in2.NextAsync()).Error.Message);
        await s2.RequestStream.WriteAsync(new ClientMessage { RequestId = 5, Convert = new Convert { LockId = 12345, Mode = Mode.Ex } });
        Assert.Equal(Status.Invalid, (await in2.NextAsync()).Completion.Status);

        // The lockdebug view shows the PR holder and the LVB.
        var view = await Http.GetFromJsonAsync<LocksView>("/v1/locks?lockspace=grpcls");
        var resource = Assert.Single(view!.Resources);
        Assert.Equal(("r", "lk1", "PR"), (resource.Resource, resource.Master, Assert.Single(resource.Granted).Granted));
        Assert.StartsWith("616263", resource.Lvb);

        // A cancelled wait, then closing the stream releases the session's lock.
        await s1.RequestStream.WriteAsync(new ClientMessage { RequestId = 6, Lock = new Lock { Resource = "r", Mode = Mode.Ex } });
        await s1.RequestStream.WriteAsync(new ClientMessage { RequestId = 7, Cancel = new Cancel { TargetRequestId = 6 } });
        var cancelled = (await in1.NextAsync()).Completion;
        Assert.Equal((6ul, Status.Cancelled), (cancelled.RequestId, cancelled.Status));

        await s2.RequestStream.CompleteAsync();
        await Eventually.UntilAsync("the closed session's lock to be released", Patience, async () =>
        {
            var now = await Http.GetFromJsonAsync<LocksView>("/v1/locks?lockspace=grpcls");
            return (now!.Resources.Count == 0, $"{now.Resources.Count} resources");
        });
    }

    [Fact]
    public async Task Grpc_ping_answers_without_locking_and_through_the_resources_master_when_named()
    {
        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{_node!.GrpcPort}");
        using var s = new LockService.LockServiceClient(channel).Session();
        var inbox = Inbox(s.ResponseStream);

        // A plain ping needs no open session; a ping through a resource does.
        await s.RequestStream.WriteAsync(new ClientMessage { RequestId = 1, Ping = new Ping() });
        var pong = (await inbox.NextAsync()).Pong;
        Assert.Equal((1ul, ""), (pong.RequestId, pong.MasterNode));
        await s.RequestStream.WriteAsync(new ClientMessage { RequestId = 2, Ping = new Ping { Resource = "pinged" } });
        var notOpen = (await inbox.NextAsync()).Error;
        Assert.Equal((2ul, "open a lockspace first"), (notOpen.RequestId, notOpen.Message));

        await s.RequestStream.WriteAsync(new ClientMessage { RequestId = 3, Open = new Open { Lockspace = "pings" } });
        Assert.Equal(3ul, (await inbox.NextAsync()).Opened.RequestId);
        await s.RequestStream.WriteAsync(new ClientMessage { RequestId = 4, Ping = new Ping { Resource = "pinged" } });
        pong = (await inbox.NextAsync()).Pong;
        Assert.Equal((4ul, "lk1"), (pong.RequestId, pong.MasterNode));
        await s.RequestStream.WriteAsync(new ClientMessage { RequestId = 5, Ping = new Ping { Resource = new string('x', 65) } });
        var error = (await inbox.NextAsync()).Error;
        Assert.Equal(5ul, error.RequestId);
        Assert.Contains("longer than 64 bytes", error.Message);

        // Pinging locked nothing.
        var view = await Http.GetFromJsonAsync<LocksView>("/v1/locks?lockspace=pings");
        Assert.Empty(view!.Resources);
    }

    [Fact]
    public async Task Grpc_batches_are_handled_in_order_and_answered_in_batches_only_when_accepted()
    {
        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{_node!.GrpcPort}");
        var client = new LockService.LockServiceClient(channel);
        using var s = client.Session();
        var inbox = Inbox(s.ResponseStream);

        // Open and locks in one batch. In order: the first EX on "same" is granted, the second (NOQUEUE) would block.
        var first = new ClientBatch { Messages = { new ClientMessage { RequestId = 1, Open = new Open { Lockspace = "batched", AcceptBatches = true } } } };
        for (ulong i = 0; i < 8; i++)
        {
            first.Messages.Add(new ClientMessage { RequestId = 10 + i, Lock = new Lock { Resource = $"r{i}", Mode = Mode.Ex } });
        }

        first.Messages.Add(new ClientMessage { RequestId = 20, Lock = new Lock { Resource = "same", Mode = Mode.Ex } });
        first.Messages.Add(new ClientMessage { RequestId = 21, Lock = new Lock { Resource = "same", Mode = Mode.Ex, Flags = 1 } });
        first.Messages.Add(new ClientMessage { RequestId = 22, Batch = new ClientBatch() });
        await s.RequestStream.WriteAsync(new ClientMessage { RequestId = 99, Batch = first });

        var answers = await CollectAsync(inbox, 12);
        Assert.True(answers[1].Opened.Batches);
        var granted = Enumerable.Range(10, 8).Select(i => answers[(ulong)i].Completion).ToList();
        Assert.All(granted, c => Assert.Equal(Status.Granted, c.Status));
        Assert.Equal(Status.Granted, answers[20].Completion.Status);
        Assert.Equal(Status.WouldBlock, answers[21].Completion.Status);
        Assert.Equal("a batch cannot contain a batch", answers[22].Error.Message);

        // Unlocks in a batch too; afterwards only "same" is still held.
        var unlocks = new ClientBatch();
        unlocks.Messages.AddRange(granted.Select((c, i) => new ClientMessage { RequestId = 30 + (ulong)i, Unlock = new Unlock { LockId = c.LockId } }));
        await s.RequestStream.WriteAsync(new ClientMessage { Batch = unlocks });
        var unlocked = await CollectAsync(inbox, 8);
        Assert.All(unlocked.Values, m => Assert.Equal(Status.Unlocked, m.Completion.Status));
        var view = await Http.GetFromJsonAsync<LocksView>("/v1/locks?lockspace=batched");
        Assert.Equal(["same"], view!.Resources.Select(r => r.Resource));

        // A session opened without accept_batches (every client written before it) gets its answers one by one.
        using var legacy = client.Session();
        var legacyInbox = Inbox(legacy.ResponseStream);
        var batch = new ClientBatch { Messages = { new ClientMessage { RequestId = 1, Open = new Open { Lockspace = "batched" } } } };
        for (ulong i = 0; i < 8; i++)
        {
            batch.Messages.Add(new ClientMessage { RequestId = 10 + i, Ping = new Ping { Resource = $"p{i}" } });
        }

        await legacy.RequestStream.WriteAsync(new ClientMessage { Batch = batch });
        var ids = new List<ulong>();
        for (var i = 0; i < 9; i++)
        {
            var message = await legacyInbox.NextAsync();
            Assert.NotEqual(ServerMessage.BodyOneofCase.Batch, message.BodyCase);
            ids.Add(message.BodyCase == ServerMessage.BodyOneofCase.Opened ? message.Opened.RequestId : message.Pong.RequestId);
        }

        Assert.Equal(1ul, ids[0]);
        Assert.Equal(Enumerable.Range(10, 8).Select(i => (ulong)i), ids.Skip(1).Order());
    }

    /// <summary>Reads server messages, unpacking batches, until <paramref name="count"/> answers (by request id) have come.</summary>
    private static async Task<Dictionary<ulong, ServerMessage>> CollectAsync(GrpcInbox inbox, int count)
    {
        var answers = new Dictionary<ulong, ServerMessage>();
        while (answers.Count < count)
        {
            var message = await inbox.NextAsync();
            foreach (var m in message.BodyCase == ServerMessage.BodyOneofCase.Batch ? [.. message.Batch.Messages] : new[] { message })
            {
                Assert.NotEqual(ServerMessage.BodyOneofCase.Batch, m.BodyCase);
                var id = m.BodyCase switch
                {
                    ServerMessage.BodyOneofCase.Opened => m.Opened.RequestId,
                    ServerMessage.BodyOneofCase.Completion => m.Completion.RequestId,
                    ServerMessage.BodyOneofCase.Error => m.Error.RequestId,
                    ServerMessage.BodyOneofCase.Pong => m.Pong.RequestId,
                    _ => 0ul,
                };
                if (id != 0)
                {
                    Assert.True(answers.TryAdd(id, m), $"request {id} answered twice");
                }
            }
        }

        return answers;
    }

    [Fact]
    public async Task Http_routes_list_lockspaces_and_reject_bad_names()
    {
        using var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{_node!.GrpcPort}");
        using var s = new LockService.LockServiceClient(channel).Session();
        await s.RequestStream.WriteAsync(new ClientMessage { RequestId = 1, Open = new Open { Lockspace = "listed", LvbLength = 32 } });
        Assert.Equal(32u, (await Inbox(s.ResponseStream).NextAsync()).Opened.LvbLength);

        var spaces = await Http.GetFromJsonAsync<List<LockspaceView>>("/v1/lockspaces");
        var listed = Assert.Single(spaces!, l => l.Name == "listed");
        Assert.Equal((32, "lk1", 1), (listed.LvbLength, listed.Slots[0].NodeId, listed.Slots[0].Slot));

        Assert.Equal(HttpStatusCode.NotFound, (await Http.GetAsync("/v1/locks?lockspace=nope")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await Http.GetAsync("/v1/locks?lockspace=bad/name")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await Http.GetAsync("/v1/locks")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await Http.PostAsync("/v1/locks/torture?clients=0", null)).StatusCode);
    }

    [Fact]
    public async Task Cli_torture_prints_expected_and_found_and_cli_dump_renders_the_queues()
    {
        var output = new StringWriter();
        var exit = await LockCommands.TortureAsync(Http, clients: 4, iterations: 100, timeoutSeconds: 120, output, CancellationToken.None);
        Assert.Equal(0, exit);
        Assert.Contains("expected 400 found 400", output.ToString());

        var list = new StringWriter();
        Assert.Equal(0, await LockCommands.ListAsync(Http, json: false, list, CancellationToken.None));
        Assert.Contains("torture", list.ToString());

        var cli = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "dump", "nope", "--node", $"127.0.0.1:{HttpPort}"], Patience);
        Assert.Equal(1, cli.ExitCode);
        Assert.Contains("no lockspace 'nope'", cli.Stderr);
        var torture = await ChildProcess.RunAsync(Repo.Lockstep, ["lock", "torture", "--clients", "2", "--iterations", "50", "--node", $"127.0.0.1:{HttpPort}"], TimeSpan.FromSeconds(120));
        Assert.True(torture.ExitCode == 0, torture.ToString());
        Assert.Contains("expected 100 found 100", torture.Stdout);
    }

    [Fact]
    public void Dump_rendering_shows_master_lvb_and_each_queue()
    {
        var view = new LocksView("ls",
        [
            new ResourceView("r", "n2", 8, "0102030405060708", 3, true,
                [new LockView("a1", "n1", 1, "s", "PR", "PR", "", false)],
                [new LockView("b2", "n2", 2, "s", "PR", "EX", "ConvDeadlk", false)],
                [new LockView("c3", "n3", 3, "s", null, "EX", "", false)]),
        ], ["akka.tcp://lockstep@10.0.0.9:4053"]);
        var text = LockCommands.Render(view);
        Assert.Contains("Resource r  master n2  lvb seq 3  VALNOTVALID", text);
        Assert.Contains("LVB 0102030405060708", text);
        Assert.Matches(@"a1 PR\s+node n1 slot 1", text);
        Assert.Matches(@"b2 PR \(EX\)\s+node n2 slot 2 ConvDeadlk", text);
        Assert.Matches(@"c3 -- \(EX\)\s+node n3 slot 3", text);
        Assert.Contains("warning: akka.tcp://lockstep@10.0.0.9:4053 did not answer", text);
        Assert.Null(LockCommands.ParseNode("not a node"));
        Assert.Equal(new Uri("http://127.0.0.1:8559/"), LockCommands.ParseNode("127.0.0.1:8559"));
    }

    private static GrpcInbox Inbox(IAsyncStreamReader<ServerMessage> reader) => new(reader, Patience);
}
