using System.Buffers.Binary;
using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>Outcome of a counter torture run.</summary>
/// <param name="Expected">Increments that completed, summed over every client.</param>
/// <param name="Found">The counter read back from the LVB at the end.</param>
/// <param name="Nodes">Per node: id, increments, first error (empty if none).</param>
/// <param name="Elapsed">Wall time of the run.</param>
public sealed record LockTortureResult(long Expected, long Found, IReadOnlyList<LockTortureDone> Nodes, TimeSpan Elapsed)
{
    /// <summary>Whether every client finished and the counter equals the increments.</summary>
    public bool Ok => Expected == Found && Nodes.All(n => n.Error.Length == 0);
}

/// <summary>
/// The counter torture: clients lock EX with VALBLK, read a 64-bit counter from the LVB, write it
/// back incremented on unlock. If the DLM ever grants EX twice or loses an LVB write, the final
/// count falls short of the increments.
/// </summary>
public static class LockTorture
{
    /// <summary>Runs <paramref name="clients"/> clients on this node; returns the increments done and the first error.</summary>
    public static async Task<LockTortureDone> RunLocalAsync(ILockManager manager, string lockspace, string resource, int clients, int iterations, TimeSpan timeout)
    {
        await using var space = await manager.OpenLockspaceAsync(lockspace);
        using var deadline = new CancellationTokenSource(timeout);
        long increments = 0;
        string? error = null;
        var workers = Enumerable.Range(0, clients).Select(_ => Task.Run(async () =>
        {
            try
            {
                for (var i = 0; i < iterations && error is null; i++)
                {
                    var handle = await space.LockAsync(resource, LockMode.EX, LockFlags.ValBlk, timeout: timeout, cancellationToken: deadline.Token);
                    var next = new byte[8];
                    BinaryPrimitives.WriteInt64LittleEndian(next, BinaryPrimitives.ReadInt64LittleEndian(handle.Lvb.Span) + 1);
                    await handle.UnlockAsync(LockFlags.ValBlk, next);
                    Interlocked.Increment(ref increments);
                }
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref error, ex.Message, null);
            }
        }));
        await Task.WhenAll(workers);
        return new LockTortureDone(manager.NodeId, increments, error ?? string.Empty);
    }

    /// <summary>
    /// Runs <paramref name="clients"/> clients spread over every Up member (through their torture
    /// runners) against a fresh counter, holding NL on it meanwhile so its LVB survives, then reads it.
    /// </summary>
    public static async Task<LockTortureResult> RunClusterAsync(ActorSystem system, ILockManager manager, int clients, int iterations, TimeSpan timeout)
    {
        if (clients < 1 || iterations < 1)
        {
            throw new ArgumentException("clients and iterations must be at least 1");
        }

        var resource = $"counter-{Guid.NewGuid():N}"[..24];
        const string lockspace = "torture";
        await using var space = await manager.OpenLockspaceAsync(lockspace);
        var keeper = await space.LockAsync(resource, LockMode.NL);
        var members = Cluster.Get(system).State.Members.Where(m => m.Status == MemberStatus.Up).Select(m => m.Address).OrderBy(a => a.ToString(), StringComparer.Ordinal).ToList();
        var started = Stopwatch.StartNew();
        var runs = members.Select((address, index) =>
        {
            var share = clients / members.Count + (index < clients % members.Count ? 1 : 0);
            if (share == 0)
            {
                return Task.FromResult<LockTortureDone?>(null);
            }

            var runner = system.ActorSelection(new RootActorPath(address) / "user" / LockManager.TortureName);
            return AskRunner(runner, new RunLockTorture(lockspace, resource, share, iterations, (long)timeout.TotalMilliseconds), address, timeout);
        });
        var done = (await Task.WhenAll(runs)).Where(d => d is not null).Select(d => d!).ToList();
        var elapsed = started.Elapsed;
        await keeper.ConvertAsync(LockMode.PR, LockFlags.ValBlk, timeout: timeout);
        var found = BinaryPrimitives.ReadInt64LittleEndian(keeper.Lvb.Span);
        await keeper.UnlockAsync();
        return new LockTortureResult(done.Sum(d => d.Increments), found, done, elapsed);
    }

    private static async Task<LockTortureDone?> AskRunner(ActorSelection runner, RunLockTorture run, Address address, TimeSpan timeout)
    {
        try
        {
            return await runner.Ask<LockTortureDone>(run, timeout + TimeSpan.FromSeconds(5));
        }
        catch (AskTimeoutException)
        {
            return new LockTortureDone(address.ToString(), 0, "no answer from the node's torture runner");
        }
    }
}

/// <summary>Runs torture clients on this node for a coordinator anywhere in the cluster.</summary>
internal sealed class LockTortureActor : ReceiveActor
{
    public LockTortureActor(ILockManager manager)
    {
        Receive<RunLockTorture>(run => LockTorture.RunLocalAsync(manager, run.Lockspace, run.Resource, Math.Clamp(run.Clients, 1, 1024), run.Iterations, TimeSpan.FromMilliseconds(Math.Max(1, run.TimeoutMs))).PipeTo(Sender));
    }
}
