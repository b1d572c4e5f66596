using System.Net;
using System.Net.Sockets;
using Akka.Actor;
using Akka.Hosting;
using Lockstep.Hosting.Node;

namespace Lockstep.Hosting.Cli;

/// <summary>
/// Turns the ways <c>lockstep serve</c> fails to start into one line on stderr and a non-zero exit:
/// bad seeds and busy ports are found before anything starts (Akka would otherwise bury them under a
/// stack trace), and a seed that never answers ends the node after <see cref="JoinDeadline"/>.
/// </summary>
internal static class ServeStartup
{
    /// <summary>
    /// How long a node tries to join its seeds before it gives up and exits. Long enough for the seeds of
    /// <c>scripts/cluster up</c> to start side by side (a node needs ~2 s to start here), short enough that
    /// a typo in <c>--seed</c> is reported while the operator still watches.
    /// </summary>
    public static readonly TimeSpan JoinDeadline = TimeSpan.FromSeconds(20);

    /// <summary>Exit code for a node that started but had to stop (join failed, downed by the cluster).</summary>
    public const int ExitFailed = 1;

    /// <summary>Exit code for a configuration problem found before start.</summary>
    public const int ExitBadConfiguration = 2;

    /// <summary>Makes the cluster shut the node down when no seed answers within <see cref="JoinDeadline"/>.</summary>
    public static AkkaConfigurationBuilder WithJoinDeadline(this AkkaConfigurationBuilder akka) =>
        akka.AddHocon(
            $"akka.cluster.shutdown-after-unsuccessful-join-seed-nodes = {(int)JoinDeadline.TotalSeconds}s",
            HoconAddMode.Prepend);

    /// <summary>Everything checkable before start; the first problem as one line, or null.</summary>
    public static string? Preflight(LockstepOptions options, IConfiguration configuration) =>
        CheckNodeId(options.NodeId)
        ?? CheckSeeds(options.Cluster.Seeds)
        ?? options.Messaging.Validate()
        ?? CheckLockTransport(configuration[LockTransportKey])
        ?? CheckChoice("Nbd:ReceiveLoop", configuration["Lockstep:Nbd:ReceiveLoop"], "epoll", "sockets")
        ?? CheckWholeNumber("Nbd:ReceiveThreads", configuration["Lockstep:Nbd:ReceiveThreads"], 0, 64)
        ?? CheckFencing(options.Cluster.FenceTimeout, options.Cluster.StableAfter, configuration[RetiredFenceKey])
        ?? (options.Cluster.RetryGate <= TimeSpan.Zero ? $"Cluster:RetryGate must be positive, not {options.Cluster.RetryGate}" : null)
        ?? CheckPortRange("remoting", "--port", options.Cluster.Port)
        ?? CheckPortRange("HTTP", "--http-port", options.Http.Port)
        ?? CheckPortRange("NBD", "--nbd-port", options.Nbd.Port)
        ?? CheckPortFree("remoting", "--port", options.Cluster.Host, options.Cluster.Port)
        ?? CheckPortFree("HTTP", "--http-port", options.Http.Host, options.Http.Port)
        ?? CheckPortFree("NBD", "--nbd-port", options.Nbd.Host, options.Nbd.Port);

    /// <summary>
    /// The node id names the node's lockspace and bitmap slots, its locks' owner, and goes into the cluster as a role
    /// (<c>nodeid-{id}</c>, how recovery learns it): letters, digits, '.', '_' and '-', at most 64 characters.
    /// </summary>
    public static string? CheckNodeId(string? nodeId) =>
        !string.IsNullOrEmpty(nodeId) && nodeId.Length <= 64 && nodeId.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-')
            ? null
            : $"--node-id must be 1 to 64 letters, digits, '.', '_' or '-', not '{nodeId}'";

    /// <summary>Where the fence timeout was read before it had one place (<c>Lockstep:Cluster:FenceTimeout</c>).</summary>
    public const string RetiredFenceKey = "Lockstep:Locking:FenceTimeout";

    /// <summary>
    /// The fence timeout is one setting, <c>Lockstep:Cluster:FenceTimeout</c>, and must be positive and shorter than the
    /// resolver's <c>StableAfter</c>: a cut-off node must have stopped its locks and disks before the majority downs it
    /// and recovers its slots. The old key is refused rather than ignored, so a configuration that set it learns where
    /// the value went.
    /// </summary>
    public static string? CheckFencing(TimeSpan fenceTimeout, TimeSpan stableAfter, string? retiredValue) =>
        retiredValue is not null
            ? $"Lockstep:Locking:FenceTimeout is no longer read; set Lockstep:Cluster:FenceTimeout (env Lockstep__Cluster__FenceTimeout) instead"
            : fenceTimeout <= TimeSpan.Zero
                ? $"Cluster:FenceTimeout must be positive, not {fenceTimeout}"
                : fenceTimeout >= stableAfter
                    ? $"Cluster:FenceTimeout ({fenceTimeout.TotalMilliseconds:0} ms) must be shorter than Cluster:StableAfter ({stableAfter.TotalMilliseconds:0} ms): a cut-off node must fence itself before the majority downs it and recovers its slots"
                    : null;

    /// <summary>The configuration key of the DLM's transport (env <c>Lockstep__Locking__Transport</c>).</summary>
    public const string LockTransportKey = "Lockstep:Locking:Transport";

    /// <summary>Checks the raw <c>Lockstep:Locking:Transport</c> text (see <see cref="CheckChoice"/>).</summary>
    public static string? CheckLockTransport(string? value) => CheckChoice("Locking:Transport", value, "reliable", "direct");

    /// <summary>
    /// Checks the raw text of an enum setting under <c>Lockstep:</c> (null = not set). The enum binder alone would accept
    /// numbers and fail on a typo only inside the DI container, with a stack trace.
    /// </summary>
    public static string? CheckChoice(string setting, string? value, params string[] allowed) =>
        value is null || allowed.Contains(value.Trim(), StringComparer.OrdinalIgnoreCase)
            ? null
            : $"{setting} must be {string.Join(" or ", allowed)} (Lockstep:{setting}, env Lockstep__{setting.Replace(":", "__")}), not '{value}'";

    /// <summary>Checks the raw text of a whole-number setting under <c>Lockstep:</c> (null = not set).</summary>
    public static string? CheckWholeNumber(string setting, string? value, int min, int max) =>
        value is null || (int.TryParse(value.Trim(), out var number) && number >= min && number <= max)
            ? null
            : $"{setting} must be a whole number from {min} to {max} (Lockstep:{setting}, env Lockstep__{setting.Replace(":", "__")}), not '{value}'";

    /// <summary>Checks each seed is <c>akka.tcp://lockstep@host:port</c> or <c>host:port</c>.</summary>
    public static string? CheckSeeds(IEnumerable<string> seeds)
    {
        foreach (var seed in seeds)
        {
            if (DescribeBadSeed(seed) is { } problem)
            {
                return $"bad seed '{seed}': {problem}";
            }
        }

        return null;
    }

    private static string? DescribeBadSeed(string seed)
    {
        string full;
        try
        {
            full = ClusterSetup.NormalizeSeed(seed.Trim());
        }
        catch (ArgumentException)
        {
            return "expected akka.tcp://lockstep@host:port or host:port";
        }

        if (!Uri.TryCreate(full, UriKind.Absolute, out var uri) || uri.Scheme is not ("akka.tcp" or "akka") || uri.UserInfo.Length == 0)
        {
            return "expected akka.tcp://lockstep@host:port or host:port";
        }

        if (uri.UserInfo != ClusterSetup.SystemName)
        {
            return $"the actor system must be '{ClusterSetup.SystemName}', not '{uri.UserInfo}'";
        }

        if (string.IsNullOrEmpty(uri.Host) || uri.IsDefaultPort || uri.Port is <= 0 or > 65535)
        {
            return "a seed needs a host and a port between 1 and 65535";
        }

        return null;
    }

    private static string? CheckPortRange(string what, string flag, int port) =>
        port is < 0 or > 65535 ? $"{what} port {port} is out of range ({flag})" : null;

    /// <summary>
    /// Binds the port for an instant. Port 0 (ephemeral) is always free. A race with another process
    /// between this check and the real bind is still reported, by <see cref="Describe"/>.
    /// </summary>
    public static string? CheckPortFree(string what, string flag, string host, int port)
    {
        if (port == 0)
        {
            return null;
        }

        IPAddress address;
        try
        {
            address = host is "*" or "0.0.0.0" ? IPAddress.Any
                : host is "localhost" ? IPAddress.Loopback
                : IPAddress.TryParse(host, out var ip) ? ip
                : Dns.GetHostAddresses(host).First(a => a.AddressFamily == AddressFamily.InterNetwork);
        }
        catch (Exception ex) when (ex is SocketException or InvalidOperationException)
        {
            return $"cannot resolve {what} host '{host}'";
        }

        using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // Like Kestrel and DotNetty: a port in TIME_WAIT is reusable, a listening one is not.
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(new IPEndPoint(address, port));
            socket.Listen(1);
            return null;
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            return $"{what} port {host}:{port} is already in use ({flag})";
        }
        catch (SocketException ex)
        {
            return $"cannot bind {what} port {host}:{port}: {ex.Message} ({flag})";
        }
    }

    /// <summary>One line for an exception thrown while the node starts.</summary>
    public static string Describe(Exception exception)
    {
        var root = exception.GetBaseException();
        return root is SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse } || root.Message.Contains("already in use", StringComparison.OrdinalIgnoreCase)
            ? $"cannot start: a port is already in use ({OneLine(exception.Message)})"
            : $"cannot start: {OneLine(root.Message)}";
    }

    /// <summary>
    /// Why a node that had started stopped on its own, as one line; null for a normal stop (SIGTERM,
    /// SIGINT, a graceful leave).
    /// </summary>
    public static string? DescribeStop(CoordinatedShutdown.Reason? reason, IReadOnlyList<string> seeds) => reason switch
    {
        CoordinatedShutdown.ClusterJoinUnsuccessfulReason =>
            $"could not join seed {string.Join(", ", seeds.Select(ClusterSetup.NormalizeSeed))} within {(int)JoinDeadline.TotalSeconds} s; is it running and reachable?",
        CoordinatedShutdown.ClusterDowningReason =>
            "this node was downed by the cluster (split-brain resolver or an operator) and stopped",
        _ => null,
    };

    /// <summary>Writes the line last on stderr, after the host has stopped logging.</summary>
    public static void Fail(string message) => Console.Error.WriteLine($"lockstep: {message}");

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();
}
