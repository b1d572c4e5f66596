using System.Net;
using System.Net.Sockets;
using Akka.Actor;
using Lockstep.Hosting.Cli;
using Xunit;

namespace Lockstep.Hosting.Tests.Cli;

public sealed class ServeStartupTests
{
    [Theory]
    [InlineData("127.0.0.1:4054")]
    [InlineData("node1:4053")]
    [InlineData("akka.tcp://lockstep@127.0.0.1:4054")]
    public void Good_seeds_pass(string seed) => Assert.Null(ServeStartup.CheckSeeds([seed]));

    [Theory]
    [InlineData("foo", "expected akka.tcp://lockstep@host:port or host:port")]
    [InlineData("127.0.0.1:0", "expected akka.tcp://lockstep@host:port or host:port")]
    [InlineData("127.0.0.1:70000", "expected akka.tcp://lockstep@host:port or host:port")]
    [InlineData("akka.tcp://x", "expected akka.tcp://lockstep@host:port or host:port")]
    [InlineData("http://lockstep@h:1", "expected akka.tcp://lockstep@host:port or host:port")]
    [InlineData("akka.tcp://other@127.0.0.1:4054", "the actor system must be 'lockstep', not 'other'")]
    [InlineData("akka.tcp://lockstep@127.0.0.1", "a seed needs a host and a port between 1 and 65535")]
    public void Bad_seeds_name_the_seed_and_the_problem(string seed, string problem) =>
        Assert.Equal($"bad seed '{seed}': {problem}", ServeStartup.CheckSeeds(["127.0.0.1:4054", seed]));

    [Theory]
    [InlineData(null)]
    [InlineData("reliable")]
    [InlineData("Direct")]
    public void Known_lock_transports_pass(string? value) => Assert.Null(ServeStartup.CheckLockTransport(value));

    [Theory]
    [InlineData("bogus")]
    [InlineData("1")]
    [InlineData("")]
    public void Other_lock_transports_name_the_setting_and_the_allowed_values(string value) =>
        Assert.Equal(
            $"Locking:Transport must be reliable or direct (Lockstep:Locking:Transport, env Lockstep__Locking__Transport), not '{value}'",
            ServeStartup.CheckLockTransport(value));

    [Theory]
    [InlineData(null)]
    [InlineData("epoll")]
    [InlineData(" Sockets ")]
    public void Known_nbd_receive_loops_pass(string? value) =>
        Assert.Null(ServeStartup.CheckChoice("Nbd:ReceiveLoop", value, "epoll", "sockets"));

    [Theory]
    [InlineData("1")]
    [InlineData("io_uring")]
    public void Other_nbd_receive_loops_name_the_setting_and_the_allowed_values(string value) =>
        Assert.Equal(
            $"Nbd:ReceiveLoop must be epoll or sockets (Lockstep:Nbd:ReceiveLoop, env Lockstep__Nbd__ReceiveLoop), not '{value}'",
            ServeStartup.CheckChoice("Nbd:ReceiveLoop", value, "epoll", "sockets"));

    [Theory]
    [InlineData(null, true)]
    [InlineData("0", true)]
    [InlineData("64", true)]
    [InlineData("65", false)]
    [InlineData("-1", false)]
    [InlineData("two", false)]
    public void Receive_thread_counts_outside_0_to_64_are_refused(string? value, bool accepted)
    {
        var problem = ServeStartup.CheckWholeNumber("Nbd:ReceiveThreads", value, 0, 64);
        if (accepted)
        {
            Assert.Null(problem);
        }
        else
        {
            Assert.Equal($"Nbd:ReceiveThreads must be a whole number from 0 to 64 (Lockstep:Nbd:ReceiveThreads, env Lockstep__Nbd__ReceiveThreads), not '{value}'", problem);
        }
    }

    [Theory]
    [InlineData("n1")]
    [InlineData("node-3.rack_2")]
    public void Plain_node_ids_pass(string nodeId) => Assert.Null(ServeStartup.CheckNodeId(nodeId));

    [Theory]
    [InlineData("")]
    [InlineData("a b")]
    [InlineData("n\"1")]
    [InlineData("node:1")]
    public void Node_ids_that_cannot_be_a_role_or_a_slot_owner_are_refused(string nodeId) =>
        Assert.Equal($"--node-id must be 1 to 64 letters, digits, '.', '_' or '-', not '{nodeId}'", ServeStartup.CheckNodeId(nodeId));

    [Fact]
    public void A_node_id_longer_than_64_characters_is_refused() =>
        Assert.NotNull(ServeStartup.CheckNodeId(new string('a', 65)));

    [Fact]
    public void A_listening_port_is_reported_with_its_flag_and_a_free_one_passes()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;

        Assert.Equal($"HTTP port 127.0.0.1:{port} is already in use (--http-port)", ServeStartup.CheckPortFree("HTTP", "--http-port", "127.0.0.1", port));
        listener.Close();
        Assert.Null(ServeStartup.CheckPortFree("HTTP", "--http-port", "127.0.0.1", port));
        Assert.Null(ServeStartup.CheckPortFree("HTTP", "--http-port", "127.0.0.1", 0));
    }

    [Fact]
    public void Stop_reasons_become_one_line_only_for_failures()
    {
        Assert.Equal(
            "could not join seed akka.tcp://lockstep@127.0.0.1:4999 within 20 s; is it running and reachable?",
            ServeStartup.DescribeStop(CoordinatedShutdown.ClusterJoinUnsuccessfulReason.Instance, ["127.0.0.1:4999"]));
        Assert.Contains("downed", ServeStartup.DescribeStop(CoordinatedShutdown.ClusterDowningReason.Instance, []), StringComparison.Ordinal);
        Assert.Null(ServeStartup.DescribeStop(CoordinatedShutdown.ClrExitReason.Instance, []));
        Assert.Null(ServeStartup.DescribeStop(CoordinatedShutdown.ClusterLeavingReason.Instance, []));
        Assert.Null(ServeStartup.DescribeStop(null, []));
    }

    [Fact]
    public void Start_exceptions_become_one_line()
    {
        var busy = new InvalidOperationException("Failed to bind to [127.0.0.1:4054].\nSee inner", new SocketException((int)SocketError.AddressAlreadyInUse));

        Assert.Equal("cannot start: a port is already in use (Failed to bind to [127.0.0.1:4054]. See inner)", ServeStartup.Describe(busy));
        Assert.Equal("cannot start: disk full", ServeStartup.Describe(new IOException("disk full")));
    }

    [Theory]
    [InlineData(700, 1000, null, true)]
    [InlineData(1000, 1000, null, false)]
    [InlineData(1500, 1000, null, false)]
    [InlineData(0, 1000, null, false)]
    [InlineData(500, 1000, "00:00:00.5", false)]
    public void The_fence_timeout_is_one_setting_below_stable_after(int fenceMs, int stableMs, string? retired, bool accepted)
    {
        var problem = ServeStartup.CheckFencing(TimeSpan.FromMilliseconds(fenceMs), TimeSpan.FromMilliseconds(stableMs), retired);
        Assert.Equal(accepted, problem is null);
        if (problem is not null)
        {
            Assert.Contains("Cluster:FenceTimeout", problem, StringComparison.Ordinal);
        }
    }
}
