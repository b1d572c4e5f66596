using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>One network namespace of a <see cref="NamespaceNetwork"/>: its name, the veth end on the bridge (host side), the end inside it, its address.</summary>
public sealed record NamespaceHost(string Namespace, string HostVeth, string InnerVeth, string Address);

/// <summary>
/// Several "hosts" on one machine for partition and link-fault tests (needs root): a bridge with an address, and per
/// host a network namespace joined to it by a veth pair, with its own address and loopback up. Only the given names
/// are created and removed; a previous run's leftovers of the same names are removed first.
/// </summary>
public sealed class NamespaceNetwork(string bridge, string bridgeCidr, IReadOnlyList<NamespaceHost> hosts)
{
    /// <summary>The hosts, in the order given.</summary>
    public IReadOnlyList<NamespaceHost> Hosts { get; } = hosts;

    /// <summary>Whether this process runs as root (namespaces, bridges and nftables need it).</summary>
    public static bool IsRoot() =>
        File.ReadLines("/proc/self/status").First(l => l.StartsWith("Uid:", StringComparison.Ordinal))
            .Split((char[])['\t', ' '], StringSplitOptions.RemoveEmptyEntries)[1] == "0";

    /// <summary>Builds the bridge and every namespace (after removing leftovers of the same names).</summary>
    public async Task CreateAsync()
    {
        await RemoveAsync();
        await Ip("link", "add", bridge, "type", "bridge");
        await Ip("addr", "add", bridgeCidr, "dev", bridge);
        await Ip("link", "set", bridge, "up");
        foreach (var host in Hosts)
        {
            await Ip("netns", "add", host.Namespace);
            await Ip("link", "add", host.HostVeth, "type", "veth", "peer", "name", host.InnerVeth);
            await Ip("link", "set", host.InnerVeth, "netns", host.Namespace);
            await Ip("link", "set", host.HostVeth, "master", bridge, "up");
            await Ip("-n", host.Namespace, "addr", "add", $"{host.Address}/24", "dev", host.InnerVeth);
            await Ip("-n", host.Namespace, "link", "set", host.InnerVeth, "up");
            await Ip("-n", host.Namespace, "link", "set", "lo", "up");
        }
    }

    /// <summary>Removes the namespaces (which deletes their veth pairs), any host-side veth left over, and the bridge; ignores what is not there.</summary>
    public async Task RemoveAsync()
    {
        foreach (var host in Hosts)
        {
            await ChildProcess.RunAsync("ip", ["netns", "delete", host.Namespace], TimeSpan.FromSeconds(30));
            await ChildProcess.RunAsync("ip", ["link", "delete", host.HostVeth], TimeSpan.FromSeconds(30));
        }

        await ChildProcess.RunAsync("ip", ["link", "delete", bridge], TimeSpan.FromSeconds(30));
    }

    /// <summary>Runs <c>ip</c> with <paramref name="args"/>; fails the test with its output unless it exits 0.</summary>
    public static async Task Ip(params string[] args)
    {
        var outcome = await ChildProcess.RunAsync("ip", args, TimeSpan.FromSeconds(30));
        Assert.True(outcome.ExitCode == 0, $"ip {string.Join(' ', args)} failed: {outcome}");
    }
}
