using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using Lockstep.Hosting.Locking.Grpc;
using Lockstep.Integration.Tests.Cluster;
using Xunit;
using Xunit.Abstractions;
using Lock = Lockstep.Hosting.Locking.Grpc.Lock;
using Status = Lockstep.Hosting.Locking.Grpc.Status;

namespace Lockstep.Integration.Tests.Locking;

/// <summary>
/// DLM recovery with three real <c>lockstep serve</c> processes (ephemeral ports, production failure
/// detector and resolver settings): the EX holder's node is SIGKILLed; the waiter on a survivor is
/// granted with VALNOTVALID after recover_done. Prints the times from the kill.
/// </summary>
[Collection(RealProcessesCollection.Name)]
public sealed class LockRecoveryProcessTests(ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly List<string> _data = [];
    private readonly ChildProcess?[] _nodes = new ChildProcess?[3];
    private readonly int[] _http = new int[3];

    public async Task InitializeAsync()
    {
        var remoting = FreePorts.Take(3);
        for (var i = 0; i < 3; i++)
        {
            _http[i] = HttpPortWithFreeGrpcPort();
            var data = Directory.CreateTempSubdirectory("lockstep-recovery-").FullName;
            _data.Add(data);
            _nodes[i] = ChildProcess.Start(Repo.Lockstep,
            [
                "serve", "--port", $"{remoting[i]}", "--http-port", $"{_http[i]}", "--nbd-port", $"{FreePorts.Take(1)[0]}",
                "--node-id", $"r{i + 1}", "--data", data, "--seed", $"127.0.0.1:{remoting[0]}",
            ]);
        }

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(3) };
        await Eventually.UntilAsync("all three nodes to list three Up members", TimeSpan.FromSeconds(120), async () =>
        {
            try
            {
                var counts = await Task.WhenAll(_http.Select(async port =>
                {
                    var body = await http.GetStringAsync($"http://127.0.0.1:{port}/cluster/members");
                    return body.Split("\"status\":\"Up\"").Length - 1;
                }));
                return (counts.All(c => c == 3), string.Join(",", counts));
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                return (false, ex.Message);
            }
        });
    }

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes.Where(n => n is not null))
        {
            await node!.DisposeAsync();
        }

        foreach (var dir in _data)
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Sigkilled_ex_holder_is_recovered_and_the_waiter_granted_with_valnotvalid()
    {
        using var channel1 = GrpcChannel.ForAddress($"http://127.0.0.1:{_http[0] + 1000}");
        using var channel3 = GrpcChannel.ForAddress($"http://127.0.0.1:{_http[2] + 1000}");
        using var s1 = new LockService.LockServiceClient(channel1).Session();
        using var s3 = new LockService.LockServiceClient(channel3).Session();
        var in1 = new Inbox(s1.ResponseStream);
        var in3 = new Inbox(s3.ResponseStream);

        await s1.RequestStream.WriteAsync(new ClientMessage { RequestId = 1, Open = new Open { Lockspace = "recovery" } });
        Assert.Equal(ServerMessage.BodyOneofCase.Opened, (await in1.NextAsync()).BodyCase);
        await s3.RequestStream.WriteAsync(new ClientMessage { RequestId = 1, Open = new Open { Lockspace = "recovery" } });
        var opened3 = (await in3.NextAsync()).Opened;

        // The resource lives on node 1 (it asks first); node 3 holds EX after writing the LVB.
        await s1.RequestStream.WriteAsync(new ClientMessage { RequestId = 2, Lock = new Lock { Resource = "r", Mode = Mode.Nl } });
        Assert.Equal(Status.Granted, (await in1.NextAsync()).Completion.Status);
        await s3.RequestStream.WriteAsync(new ClientMessage { RequestId = 2, Lock = new Lock { Resource = "r", Mode = Mode.Ex, Flags = 4 } });
        var ex = (await in3.NextAsync()).Completion;
        Assert.Equal(Status.Granted, ex.Status);
        await s1.RequestStream.WriteAsync(new ClientMessage { RequestId = 3, Lock = new Lock { Resource = "r", Mode = Mode.Ex, Flags = 4 } });

        var clock = Stopwatch.StartNew();
        Assert.Equal(0, Signal.Kill(_nodes[2]!.Id, 9));

        TimeSpan? done = null;
        Recovery? doneMessage = null;
        Completion? granted = null;
        TimeSpan grantedAt = default;
        while (granted is null || doneMessage is null)
        {
            var message = await in1.NextAsync();
            if (message.BodyCase == ServerMessage.BodyOneofCase.Recovery)
            {
                output.WriteLine($"{clock.ElapsedMilliseconds,6} ms  {message.Recovery.Stage} slots [{string.Join(",", message.Recovery.Slots)}] generation {message.Recovery.Generation}");
                if (message.Recovery.Stage == Stage.Done)
                {
                    done = clock.Elapsed;
                    doneMessage = message.Recovery;
                }
            }
            else if (message.BodyCase == ServerMessage.BodyOneofCase.Completion && message.Completion.RequestId == 3)
            {
                granted = message.Completion;
                grantedAt = clock.Elapsed;
            }
        }

        output.WriteLine($"SIGKILL -> recover_done {done?.TotalMilliseconds:F0} ms, -> first grant of the dead node's lock {grantedAt.TotalMilliseconds:F0} ms");
        Assert.Equal(Status.Granted, granted.Status);
        Assert.True((granted.ResultFlags & 1) != 0, "the dead EX holder leaves the LVB not valid");
        Assert.NotNull(doneMessage);
        Assert.Equal([opened3.Slot], doneMessage.Slots);
    }

    private static int HttpPortWithFreeGrpcPort()
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var port = FreePorts.Take(1)[0];
            if (port + 1000 < 65536 && IsFree(port + 1000))
            {
                return port;
            }
        }

        throw new InvalidOperationException("no HTTP port with a free port 1000 above it");
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private sealed class Inbox(IAsyncStreamReader<ServerMessage> reader)
    {
        public async Task<ServerMessage> NextAsync()
        {
            using var timeout = new CancellationTokenSource(Patience);
            if (!await reader.MoveNext(timeout.Token))
            {
                throw new InvalidOperationException("the server closed the stream");
            }

            return reader.Current;
        }
    }
}
