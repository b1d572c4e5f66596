using System.Net;
using System.Net.Sockets;
using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>
/// <c>lockstep serve</c> that cannot start says why in one line on stderr and exits non-zero — no stack
/// trace, and Akka's own logging never comes after that line.
/// </summary>
[Collection(RealProcessesCollection.Name)]
public sealed class StartupErrorTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("lockstep-start-").FullName;

    public void Dispose() => Directory.Delete(data, recursive: true);

    private async Task<string> FailingServeAsync(TimeSpan timeout, params string[] args)
    {
        var outcome = await ChildProcess.RunAsync(Repo.Lockstep, ["serve", "--data", data, .. args], timeout);
        Assert.True(outcome.ExitCode != 0, $"expected a non-zero exit: {outcome}");
        var line = Assert.Single(outcome.StderrLines);
        Assert.StartsWith("lockstep: ", line, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", outcome.Stdout + outcome.Stderr, StringComparison.Ordinal);
        return line;
    }

    private static Socket Listen(out int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        socket.Listen(1);
        port = ((IPEndPoint)socket.LocalEndPoint!).Port;
        return socket;
    }

    [Fact]
    public async Task A_wrong_flag_is_one_line()
    {
        var line = await FailingServeAsync(TimeSpan.FromSeconds(30), "--no-such-flag");
        Assert.Contains("--no-such-flag", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_busy_remoting_port_is_one_line_naming_the_port()
    {
        using var busy = Listen(out var port);
        var free = FreePorts.Take(2);
        var line = await FailingServeAsync(TimeSpan.FromSeconds(30), "--port", $"{port}", "--http-port", $"{free[0]}", "--nbd-port", $"{free[1]}");
        Assert.Equal($"lockstep: remoting port 127.0.0.1:{port} is already in use (--port)", line);
    }

    [Fact]
    public async Task A_busy_http_port_is_one_line_naming_the_port()
    {
        using var busy = Listen(out var port);
        var free = FreePorts.Take(2);
        var line = await FailingServeAsync(TimeSpan.FromSeconds(30), "--port", $"{free[0]}", "--http-port", $"{port}", "--nbd-port", $"{free[1]}");
        Assert.Equal($"lockstep: HTTP port 127.0.0.1:{port} is already in use (--http-port)", line);
    }

    [Fact]
    public async Task A_fence_timeout_not_below_stable_after_exits_2_with_one_line()
    {
        var free = FreePorts.Take(3);
        var outcome = await ChildProcess.RunAsync(
            Repo.Lockstep,
            ["serve", "--data", data, "--port", $"{free[0]}", "--http-port", $"{free[1]}", "--nbd-port", $"{free[2]}"],
            TimeSpan.FromSeconds(30),
            new Dictionary<string, string> { ["Lockstep__Cluster__FenceTimeout"] = "00:00:02", ["Lockstep__Cluster__StableAfter"] = "00:00:02" });
        Assert.Equal(2, outcome.ExitCode);
        Assert.Equal(
            "lockstep: Cluster:FenceTimeout (2000 ms) must be shorter than Cluster:StableAfter (2000 ms): a cut-off node must fence itself before the majority downs it and recovers its slots",
            Assert.Single(outcome.StderrLines));
    }

    [Fact]
    public async Task A_bad_seed_is_one_line()
    {
        var free = FreePorts.Take(3);
        var line = await FailingServeAsync(TimeSpan.FromSeconds(30), "--port", $"{free[0]}", "--http-port", $"{free[1]}", "--nbd-port", $"{free[2]}", "--seed", "not-a-seed");
        Assert.Equal("lockstep: bad seed 'not-a-seed': expected akka.tcp://lockstep@host:port or host:port", line);
    }

    [Fact]
    public async Task An_unreachable_seed_ends_the_node_with_one_line_after_the_join_deadline()
    {
        // Nothing listens on the seed's port: the node retries its join until the deadline, then exits.
        var free = FreePorts.Take(4);
        var line = await FailingServeAsync(
            TimeSpan.FromSeconds(60),
            "--port", $"{free[0]}", "--http-port", $"{free[1]}", "--nbd-port", $"{free[2]}", "--seed", $"127.0.0.1:{free[3]}");
        Assert.Equal($"lockstep: could not join seed akka.tcp://lockstep@127.0.0.1:{free[3]} within 20 s; is it running and reachable?", line);
    }
}
