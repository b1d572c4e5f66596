using System.Diagnostics;
using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>How many faults a <see cref="LinkFlapper"/> injected.</summary>
public sealed record LinkFaults(int LinkDowns, int Resets)
{
    public override string ToString() => $"{LinkDowns} link downs, {Resets} TCP-reset windows";
}

/// <summary>
/// Breaks one network namespace's link again and again, for a bounded time, alternating two real faults:
/// <list type="bullet">
/// <item>its veth goes down for 200–500 ms, then up (TCP stalls and retransmits; nothing is reset), then 300–700 ms of
/// working link;</item>
/// <item>an nftables table in the namespace answers every TCP segment to or from the remoting port with a reset for
/// 200–500 ms (every association of that node drops; Akka.Remote loses what was in flight), then 1.5–2.5 s of working
/// link: remoting needs its retry gate (1 s) and a handshake before re-sends get through, and with resets every second
/// the node stayed cut off for the whole window.</item>
/// </list>
/// Only the node-to-node ports are reset (remoting and the reliable layer's peer link), so HTTP and gRPC clients of
/// the node keep their connections.
/// </summary>
/// <param name="namespaceName">The namespace whose link breaks.</param>
/// <param name="veth">The veth end inside it.</param>
/// <param name="ports">The ports whose TCP segments get reset.</param>
/// <param name="table">Name of the nftables table (unique per test, so leftovers of another test are not touched).</param>
public sealed class LinkFlapper(string namespaceName, string veth, IReadOnlyList<int> ports, string table)
{
    /// <summary>
    /// Injects faults for <paramref name="duration"/>; <paramref name="kinds"/> is <c>both</c> (alternate), <c>down</c>
    /// or <c>reset</c>. The same <paramref name="seed"/> gives the same outage lengths.
    /// </summary>
    public async Task<LinkFaults> RunAsync(TimeSpan duration, string kinds = "both", int seed = 5)
    {
        if (kinds is not ("both" or "down" or "reset"))
        {
            throw new ArgumentException($"fault kinds must be both, down or reset, not '{kinds}'", nameof(kinds));
        }

        var random = new Random(seed);
        int downs = 0, resets = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < duration)
        {
            var outage = TimeSpan.FromMilliseconds(random.Next(200, 500));
            if (kinds == "down" || (kinds == "both" && (downs + resets) % 2 == 0))
            {
                await Run("ip", "-n", namespaceName, "link", "set", veth, "down");
                await Task.Delay(outage);
                await Run("ip", "-n", namespaceName, "link", "set", veth, "up");
                downs++;
                await Task.Delay(random.Next(300, 700));
            }
            else
            {
                await Run("ip", "netns", "exec", namespaceName, "nft",
                    $"add table inet {table} ; add chain inet {table} input {{ type filter hook input priority 0 ; }} ; " +
                    string.Join(" ; ", ports.Select(port =>
                        $"add rule inet {table} input tcp dport {port} reject with tcp reset ; add rule inet {table} input tcp sport {port} reject with tcp reset")));
                await Task.Delay(outage);
                await Run("ip", "netns", "exec", namespaceName, "nft", $"delete table inet {table}");
                resets++;
                await Task.Delay(random.Next(1500, 2500));
            }
        }

        return new LinkFaults(downs, resets);
    }

    private static async Task Run(string file, params string[] args)
    {
        var outcome = await ChildProcess.RunAsync(file, args, TimeSpan.FromSeconds(30));
        Assert.True(outcome.ExitCode == 0, $"{file} {string.Join(' ', args)} failed: {outcome}");
    }
}
