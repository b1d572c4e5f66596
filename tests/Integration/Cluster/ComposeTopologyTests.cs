using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>
/// There is no Docker engine here, so docker-compose.yml cannot be run in CI; this keeps its topology
/// in step with scripts/cluster (same ports, seed and flags per node) by reading both files.
/// </summary>
public sealed class ComposeTopologyTests
{
    private static readonly string Compose = File.ReadAllText(Path.Combine(Repo.Root, "docker-compose.yml"));
    private static readonly string Script = File.ReadAllText(Path.Combine(Repo.Root, "scripts", "cluster"));

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Each_compose_node_uses_the_scripts_ports_seed_and_flags(int i)
    {
        var service = Compose[Compose.IndexOf($"  node{i}:", StringComparison.Ordinal)..];
        var command = service[..service.IndexOf(']', StringComparison.Ordinal)];

        Assert.Contains($"\"--node-id\", \"node-{i}\"", command, StringComparison.Ordinal);
        Assert.Contains($"\"--port\", \"{4053 + i}\"", command, StringComparison.Ordinal);
        Assert.Contains($"\"--http-port\", \"{8558 + i}\"", command, StringComparison.Ordinal);
        Assert.Contains($"\"--nbd-port\", \"{10809 + i}\"", command, StringComparison.Ordinal);
        Assert.Contains("\"--seed\", \"node1:4054\"", command, StringComparison.Ordinal);
        Assert.Contains("\"--http-write\"", command, StringComparison.Ordinal);
        Assert.Contains($"node{i}-data:/data", service, StringComparison.Ordinal);
        Assert.Contains("disks:/disks", service, StringComparison.Ordinal);
    }

    [Fact]
    public void The_script_uses_the_same_port_formulas_seed_and_flags()
    {
        // The compose file is the script's layout with LOCKSTEP_PORT_OFFSET at its default 0.
        Assert.Contains("offset=${LOCKSTEP_PORT_OFFSET:-0}", Script, StringComparison.Ordinal);
        Assert.Contains("echo $((4053 + offset + $1))", Script, StringComparison.Ordinal);
        Assert.Contains("echo $((8558 + offset + $1))", Script, StringComparison.Ordinal);
        Assert.Contains("echo $((10809 + offset + $1))", Script, StringComparison.Ordinal);
        Assert.Contains("start_node \"$i\" \"127.0.0.1:$(remoting_port 1)\"", Script, StringComparison.Ordinal);
        Assert.Contains("--http-write", Script, StringComparison.Ordinal);
        Assert.Contains("Lockstep__Journal__Provider: postgres", Compose, StringComparison.Ordinal);
        Assert.Contains("postgres:", Compose, StringComparison.Ordinal);
    }
}
