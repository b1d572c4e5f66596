using Akka.Actor;
using Akka.Configuration;
using Akka.Hosting;
using Lockstep.Actors.BlockIo;
using Lockstep.Actors.Serialization;
using Lockstep.Actors.Volumes;
using Lockstep.Contracts;
using Lockstep.Contracts.Disk;
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
        _catalog = new VolumeCatalog(_actors, NullLoggerFactory.Instance, new RegistrySlotSource(new LockspaceRegistry(), "n1"));
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
        await using var reopened = new VolumeCatalog(_actors, NullLoggerFactory.Instance, new RegistrySlotSource(new LockspaceRegistry(), "n1"));
        Assert.NotNull(await reopened.OpenSharedDeviceAsync("later"));
        var now = Assert.IsType<VolumeInfo>(await reopened.SendAsync(new GetVolume("later")));
        Assert.All(now.Descriptor.Legs, l => Assert.Equal(LegState.InSync, l.State));
        Assert.True((await reopened.VerifyAsync("later"))!.Identical);
    }

    /// <summary>A node of the test: a catalog over the shared entities whose slot comes from the shared lockspace registry.</summary>
    private VolumeCatalog Node(LockspaceRegistry registry, string nodeId) =>
        new(_actors, NullLoggerFactory.Instance, new RegistrySlotSource(registry, nodeId),
            // Bits stay set while the test looks at them (a busy volume's chunks are dirty like this).
            new MirrorVolumeOptions { BitmapClearDelay = TimeSpan.FromHours(1) });

    /// <summary>The chunks whose bit is set in one bitmap slot, read from the leg file itself (not through the pipeline).</summary>
    private static long[] DirtyChunksOnLeg(string path, VolumeGeometry geometry, int slot)
    {
        var layout = LegLayout.For(geometry);
        var bits = new byte[layout.SlotBitsBytes];
        using (var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        {
            file.Position = layout.SlotBitsOffset(slot);
            file.ReadExactly(bits);
        }

        return Enumerable.Range(0, (int)layout.ChunkCount).Where(c => (bits[c >> 3] & (1 << (c & 7))) != 0).Select(c => (long)c).ToArray();
    }

    private static void OverwriteLegData(string path, VolumeGeometry geometry, long offset, byte value)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        file.Position = LegLayout.For(geometry).DataOffset + offset;
        file.Write(Enumerable.Repeat(value, geometry.ChunkSizeBytes).ToArray());
        file.Flush(flushToDisk: true);
    }

    [Fact]
    public async Task Two_nodes_mark_their_writes_in_their_own_bitmap_slots_and_a_restart_resyncs_only_its_own_slot()
    {
        var info = await CreateAsync("shared", "a.leg", "b.leg");
        var geometry = info.Descriptor.Geometry;
        var chunk = geometry.ChunkSizeBytes;
        var registry = new LockspaceRegistry();
        registry.Join(NodeBitmapSlot.LockspaceName(info.Descriptor.VolumeId), "n0"); // an earlier node holds slot 1 (bitmap slot 0)
        var n1 = Node(registry, "n1");
        var n2 = Node(registry, "n2");
        var slot1 = await n1.BitmapSlotAsync(info.Descriptor);
        var slot2 = await n2.BitmapSlotAsync(info.Descriptor);
        Assert.Equal((1, 2), (slot1, slot2));

        // Both nodes serve the volume at once (as over shared disks); each writes one chunk, bits stay set.
        var lease1 = await n1.OpenAsync("shared");
        var lease2 = await n2.OpenAsync("shared");
        await lease1!.WriteAsync(2L * chunk, Enumerable.Repeat((byte)0x21, chunk).ToArray(), forceUnitAccess: true);
        await lease2!.WriteAsync(5L * chunk, Enumerable.Repeat((byte)0x52, chunk).ToArray(), forceUnitAccess: true);
        foreach (var leg in info.Descriptor.Legs)
        {
            Assert.Empty(DirtyChunksOnLeg(leg.Path, geometry, 0));
            Assert.Equal([2L], DirtyChunksOnLeg(leg.Path, geometry, slot1));
            Assert.Equal([5L], DirtyChunksOnLeg(leg.Path, geometry, slot2));
            Assert.Empty(DirtyChunksOnLeg(leg.Path, geometry, 3));
        }

        // Power-off image: both legs as they are now, with the second leg missing both writes (they reached only the
        // first leg when the power failed).
        var images = info.Descriptor.Legs.Select(l => (l.Path, Image: File.ReadAllBytes(l.Path))).ToArray();
        await lease1.DisposeAsync();
        await lease2.DisposeAsync();
        await n1.DisposeAsync();
        await n2.DisposeAsync();
        Assert.All(info.Descriptor.Legs, l => Assert.Empty(DirtyChunksOnLeg(l.Path, geometry, slot1))); // a clean close clears
        foreach (var (path, image) in images)
        {
            await File.WriteAllBytesAsync(path, image);
        }

        OverwriteLegData(info.Descriptor.Legs[1].Path, geometry, 2L * chunk, 0);
        OverwriteLegData(info.Descriptor.Legs[1].Path, geometry, 5L * chunk, 0);
        Assert.Equal([2L, 5L], (await _catalog.VerifyAsync("shared"))!.DifferingChunks);

        // n2 restarts: same slot, and it resyncs the chunk of its own slot only. n1's chunk stays dirty in n1's slot
        // (for n1's own restart, or the cluster recovery if n1 is dead).
        await using (var n2Again = Node(registry, "n2"))
        {
            var recovered = await n2Again.RecoverAtStartAsync();
            Assert.Equal(slot2, await n2Again.BitmapSlotAsync(info.Descriptor));
            Assert.Equal(1, recovered["shared"].ChunksResynced);
            Assert.Equal(info.Descriptor.Legs[0].LegId, recovered["shared"].SourceLegId);
        }

        foreach (var leg in info.Descriptor.Legs)
        {
            Assert.Empty(DirtyChunksOnLeg(leg.Path, geometry, slot2));
            Assert.Equal([2L], DirtyChunksOnLeg(leg.Path, geometry, slot1));
        }

        var afterN2 = (await _catalog.VerifyAsync("shared"))!;
        Assert.Equal([2L], afterN2.DifferingChunks);
        Assert.Contains(afterN2.Problems, p => p.StartsWith("1 of the 1 differing chunk(s) are marked dirty in a bitmap slot", StringComparison.Ordinal));

        // n1 restarts: its slot's chunk is copied, the legs are identical again.
        await using (var n1Again = Node(registry, "n1"))
        {
            var recovered = await n1Again.RecoverAtStartAsync();
            Assert.Equal(1, recovered["shared"].ChunksResynced);
        }

        Assert.All(info.Descriptor.Legs, l => Assert.Empty(DirtyChunksOnLeg(l.Path, geometry, slot1)));
        var identical = (await _catalog.VerifyAsync("shared"))!;
        Assert.True(identical.Identical, string.Join("; ", identical.Problems));
        await using var check = Node(registry, "n1");
        await using var reader = await check.OpenAsync("shared");
        var back = new byte[chunk];
        await reader!.ReadAsync(5L * chunk, back);
        Assert.All(back, b => Assert.Equal(0x52, b));
    }

    [Fact]
    public async Task A_node_past_the_volumes_max_nodes_cannot_open_it_and_is_told_why()
    {
        var info = await CreateAsync("small", "a.leg", "b.leg"); // max nodes 4
        var registry = new LockspaceRegistry();
        foreach (var other in new[] { "n1", "n2", "n3", "n4" })
        {
            registry.Join(NodeBitmapSlot.LockspaceName(info.Descriptor.VolumeId), other);
        }

        await using var fifth = Node(registry, "n5");
        var refused = await Assert.ThrowsAsync<BlockIoException>(async () => await fifth.OpenAsync("small"));
        Assert.Equal(BlockIoError.Unavailable, refused.Error);
        Assert.Contains("volume 'small' has bitmap slots for 4 node(s) (--max-nodes 4), and node 'n5' holds slot 5", refused.Message, StringComparison.Ordinal);
        Assert.Equal((false, 0), fifth.LocalUse("small"));

        // Start recovery skips it with the same reason instead of touching any slot; the fourth node still opens it.
        Assert.Empty(await fifth.RecoverAtStartAsync());
        await using var fourth = Node(registry, "n4");
        await using var lease = await fourth.OpenAsync("small");
        Assert.NotNull(lease);
        Assert.Equal(3, await fourth.BitmapSlotAsync(info.Descriptor));
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
