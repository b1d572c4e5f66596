using System.Buffers.Binary;
using Akka.Actor;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>The clients of the in-process counter tortures under faults: each increments a counter in one resource's LVB.</summary>
internal static class CounterTortureClients
{
    /// <summary>
    /// Runs <paramref name="clientsPerSpace"/> clients on each lockspace, each doing EX+VALBLK → read the counter → unlock
    /// writing counter+1, <paramref name="iterations"/> times. Returns the increments that completed and every client's error.
    /// </summary>
    public static async Task<(long Completed, IReadOnlyList<string> Errors)> RunAsync(
        IEnumerable<ILockspace> spaces, string resource, int clientsPerSpace, int iterations, CancellationToken deadline)
    {
        long completed = 0;
        var errors = new List<string>();
        var clients = spaces.SelectMany(space => Enumerable.Range(0, clientsPerSpace).Select(_ => Task.Run(async () =>
        {
            try
            {
                for (var k = 0; k < iterations; k++)
                {
                    var handle = await space.LockAsync(resource, LockMode.EX, LockFlags.ValBlk, cancellationToken: deadline);
                    var next = new byte[8];
                    BinaryPrimitives.WriteInt64LittleEndian(next, BinaryPrimitives.ReadInt64LittleEndian(handle.Lvb.Span) + 1);
                    await handle.UnlockAsync(LockFlags.ValBlk, next);
                    Interlocked.Increment(ref completed);
                }
            }
            catch (Exception ex)
            {
                lock (errors)
                {
                    errors.Add($"{ex.GetType().Name}: {ex.Message}");
                }
            }
        }))).ToArray();
        await Task.WhenAll(clients);
        return (Interlocked.Read(ref completed), errors);
    }

    /// <summary>Opens <paramref name="lockspace"/>, asking again while the registry singleton is not reachable yet (90 s).</summary>
    public static async Task<ILockspace> OpenWithRetryAsync(LockManager manager, string lockspace)
    {
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (true)
        {
            try
            {
                return await manager.OpenLockspaceAsync(lockspace).WaitAsync(TimeSpan.FromSeconds(15));
            }
            catch (Exception ex) when (ex is TimeoutException or AskTimeoutException or OperationCanceledException && DateTime.UtcNow < deadline)
            {
                // The registry singleton is not reachable yet.
            }
        }
    }
}
