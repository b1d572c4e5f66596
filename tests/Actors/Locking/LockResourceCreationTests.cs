using Akka.Actor;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>
/// Only a request or a re-assertion creates a lock resource. A late conversion, unlock or cancel reaching a resource
/// that does not exist (a copy re-delivered after a remaster or a passivation) once created it with the default LVB
/// length, and the lockspace's own requests were refused Invalid from then on: the broadcast's ACK resource stayed
/// unusable for 100 s in a partition run.
/// </summary>
public sealed class LockResourceCreationTests(ThreeNodeCluster cluster) : IClassFixture<ThreeNodeCluster>
{
    [Fact]
    public async Task A_stray_conversion_unlock_or_cancel_does_not_create_the_resource()
    {
        await using var space = await cluster.Managers[0].OpenLockspaceAsync("lvb-1k", 1024);
        var region = cluster.Managers[0].Region;
        var timeout = TimeSpan.FromSeconds(20);
        foreach (var (resource, command) in new (string, Func<string, object>)[]
                 {
                     ("stray-convert", id => new ConvertLock(id, 4242, LockMode.EX, LockFlags.None, null, 0)),
                     ("stray-unlock", id => new UnlockLock(id, 4243, LockFlags.None, null)),
                     ("stray-cancel", id => new CancelLock(id, 4244)),
                 })
        {
            var answer = await region.Ask<LockCompleted>(command(LockNames.EntityId("lvb-1k", resource)), timeout);
            Assert.Equal(LockStatus.Invalid, answer.Status);

            // The lockspace's own request still finds no resource, and creates it with its 1 KiB LVB.
            await using var held = await space.LockAsync(resource, LockMode.EX, LockFlags.ValBlk, lvb: new byte[1024]);
            Assert.Equal(1024, held.Lvb.Length);
        }
    }
}
