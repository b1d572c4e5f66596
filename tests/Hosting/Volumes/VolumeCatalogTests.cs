using Akka.Actor;
using Akka.Configuration;
using Akka.Hosting;
using Lockstep.Actors.Serialization;
using Lockstep.Actors.Volumes;
using Lockstep.Contracts;
using Lockstep.Contracts.Volumes;
using Lockstep.Hosting.Volumes;
using Lockstep.Persistence.Disk;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Lockstep.Hosting.Tests.Volumes;

/// <summary>Stands in for the shard region in one process: one Volume entity child per name.</summary>
internal sealed class LocalVolumeRegion : ReceiveActor
{
    public LocalVolumeRegion(IActorRef registry, ILegProvisioner provisioner)
    {
        ReceiveAny(message =>
        {
            var name = ((IWithEntityId)message).EntityId;
            var child = Context.Child(name);
            if (child.IsNobody())
            {
                child = Context.ActorOf(VolumeEntity.Props(name, registry, provisioner), name);
            }

            child.Forward(message);
        });
    }
}

/// <summary>The catalog against real Volume entities (in-memory journal) and real leg files.</summary>
public sealed class VolumeCatalogTests : Akka.TestKit.Xunit2.TestKit, IAsyncLifetime
{
    private readonly string _dir = Path.Combine("/var/tmp", "lockstep-tests", "catalog-" + Guid.NewGuid().ToString("N"));
    private readonly VolumeCatalog _catalog;
    private readonly ActorRegistry _actors = new();

    public VolumeCatalogTests()
        : base(ConfigurationFactory.ParseString("""
            akka.actor.serialize-messages = on
            akka.persistence.journal.plugin = "akka.persistence.journal.inmem"
            akka.persistence.snapshot-store.plugin = "akka.persistence.snapshot-store.inmem"
            """).WithFallback(SerializationConfig.Hocon))
    {
        Directory.CreateDirectory(_dir);
        var registry = Sys.ActorOf(VolumeRegistryEntity.Props(), "registry");
        var region = Sys.ActorOf(Props.Create(() => new LocalVolumeRegion(registry, new LegProvisioner(null))), "volume");
        _actors.Register<VolumeRegionKey>(region);
        _actors.Register<VolumeRegistryRegionKey>(registry);
        _catalog = new VolumeCatalog(_actors, NullLoggerFactory.Instance);
    }

    private string Leg(string name) => Path.Combine(_dir, name);

    private async Task<VolumeInfo> CreateAsync(string name, params string[] legs) =>
        Assert.IsType<VolumeInfo>(await _catalog.SendAsync(new CreateVolume(name, 8L << 20, 64 * 1024, 4, legs.Select(Leg).ToArray())));

    [Fact]
    public async Task Unknown_and_invalid_names_open_nothing()
    {
        Assert.Null(await _catalog.OpenAsync("nope"));
        Assert.Null(await _catalog.OpenAsync("../etc/passwd"));
        Assert.Empty(_catalog.List());
    }

    [Fact]
    public async Task Connections_share_one_open_device_and_the_export_list_describes_it()
    {
        await CreateAsync("vm1", "a.leg", "b.leg");
        await using var first = await _catalog.OpenAsync("vm1");
        await using var second = await _catalog.OpenAsync("vm1");
        Assert.NotNull(first);
        Assert.NotNull(second);
        Assert.Equal((true, 2), _catalog.LocalUse("vm1"));

        var data = new byte[64 * 1024];
        new Random(3).NextBytes(data);
        await first!.WriteAsync(1 << 20, data, forceUnitAccess: true);
        var back = new byte[data.Length];
        await second!.ReadAsync(1 << 20, back);
        Assert.Equal(data, back);

        await first.DisposeAsync();
        await first.DisposeAsync();
        Assert.Equal((true, 1), _catalog.LocalUse("vm1"));

        await _catalog.RefreshAsync(CancellationToken.None);
        var export = Assert.Single(_catalog.List());
        Assert.Equal("vm1", export.Name);
        Assert.Equal("8 MiB mirror, 2/2 legs in sync", export.Description);
    }

    [Fact]
    public async Task Delete_is_refused_while_connections_hold_the_volume()
    {
        var info = await CreateAsync("busy", "a.leg", "b.leg");
        var lease = await _catalog.OpenAsync("busy");
        var inUse = await Assert.ThrowsAsync<VolumeInUseException>(() => _catalog.DeleteAsync("busy"));
        Assert.Contains("1 NBD connection", inUse.Message);

        await lease!.DisposeAsync();
        var deleted = Assert.IsType<VolumeInfo>(await _catalog.DeleteAsync("busy"));
        Assert.Equal(VolumeStatus.Absent, deleted.Status);
        Assert.Equal((false, 0), _catalog.LocalUse("busy"));
        Assert.All(info.Descriptor.Legs, l => Assert.Equal(LegProbeStatus.Blank, LegProbe.Read(l.Path).Status));
        Assert.Null(await _catalog.OpenAsync("busy"));
    }

    [Fact]
    public async Task A_leg_missing_at_open_is_committed_as_missing_and_the_volume_still_serves()
    {
        var info = await CreateAsync("lost", "a.leg", "b.leg");
        File.Delete(Leg("b.leg"));

        await using var lease = await _catalog.OpenAsync("lost");
        Assert.NotNull(lease);
        await lease!.WriteAsync(0, new byte[4096], forceUnitAccess: true);

        var now = Assert.IsType<VolumeInfo>(await _catalog.SendAsync(new GetVolume("lost")));
        Assert.Equal(LegState.Missing, now.Descriptor.Legs.Single(l => l.LegId == info.Descriptor.Legs[1].LegId).State);
        Assert.Equal(info.Descriptor.Generation + 1, now.Descriptor.Generation);
    }

    [Fact]
    public async Task An_added_leg_is_copied_while_the_volume_is_closed_and_reopened()
    {
        await CreateAsync("grow", "a.leg");
        var pattern = new byte[256 * 1024];
        new Random(5).NextBytes(pattern);
        await using (var lease = await _catalog.OpenAsync("grow"))
        {
            await lease!.WriteAsync(2 << 20, pattern, forceUnitAccess: true);
        }

        var added = Assert.IsType<VolumeInfo>(await _catalog.AddLegAsync("grow", Leg("c.leg")));
        Assert.Equal([LegState.InSync, LegState.InSync], added.Descriptor.Legs.Select(l => l.State));
        Assert.Equal((true, 0), _catalog.LocalUse("grow"));

        var report = await _catalog.VerifyAsync("grow");
        Assert.NotNull(report);
        Assert.True(report!.Identical, string.Join("; ", report.Problems));
        Assert.Equal(2, report.LegsCompared.Count);
    }

    [Fact]
    public async Task Adding_a_leg_while_in_use_leaves_it_resyncing_until_the_next_open()
    {
        await CreateAsync("later", "a.leg");
        var lease = await _catalog.OpenAsync("later");
        await lease!.WriteAsync(0, Enumerable.Repeat((byte)0x5A, 65536).ToArray(), forceUnitAccess: true);

        var added = Assert.IsType<VolumeInfo>(await _catalog.AddLegAsync("later", Leg("b.leg")));
        Assert.Equal(LegState.Resyncing, added.Descriptor.Legs[1].State);
        Assert.Contains("next opened", added.Pending);

        await lease.DisposeAsync();
        await _catalog.DisposeAsync();
        // A second catalog over the same entities, as after a restart of the node's catalog.
        await using var reopened = new VolumeCatalog(_actors, NullLoggerFactory.Instance);
        Assert.NotNull(await reopened.OpenSharedDeviceAsync("later"));
        var now = Assert.IsType<VolumeInfo>(await reopened.SendAsync(new GetVolume("later")));
        Assert.All(now.Descriptor.Legs, l => Assert.Equal(LegState.InSync, l.State));
        Assert.True((await reopened.VerifyAsync("later"))!.Identical);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    async Task IAsyncLifetime.DisposeAsync()
    {
        await _catalog.DisposeAsync();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
            // Best effort.
        }
    }
}
