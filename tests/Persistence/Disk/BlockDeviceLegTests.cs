using System.Diagnostics;
using Lockstep.Contracts.Volumes;
using Lockstep.Persistence.Disk;
using Xunit;

namespace Lockstep.Persistence.Tests.Disk;

/// <summary>A leg on a real block device: a loop device over a scratch file (the tests run as root).</summary>
public sealed class BlockDeviceLegTests : IDisposable
{
    private readonly TestDirectory _dir = new();
    private readonly string _device;

    public BlockDeviceLegTests()
    {
        var backing = _dir.File("loop.img");
        using (var f = File.Create(backing))
        {
            f.SetLength(8 << 20);
        }

        _device = Run("losetup", $"--find --show {backing}").Trim();
    }

    public void Dispose()
    {
        Run("losetup", $"-d {_device}");
        _dir.Dispose();
    }

    [Fact]
    public async Task A_block_device_is_sized_by_ioctl_refused_when_too_small_and_zeroed_with_BLKZEROOUT()
    {
        var tooBig = new VolumeDescriptor("big", Guid.NewGuid(), new VolumeGeometry(16 << 20, 64 * 1024, 2), [new(Guid.NewGuid(), _device, LegState.InSync)], 1);
        var e = await Assert.ThrowsAsync<LegFormatException>(() => LegFormatter.CreateAsync(_device, tooBig, tooBig.Legs[0].LegId));
        Assert.Contains("block device", e.Message, StringComparison.Ordinal);
        Assert.Contains("needs", e.Message, StringComparison.Ordinal);

        var fits = new VolumeDescriptor("fits", Guid.NewGuid(), new VolumeGeometry(4 << 20, 64 * 1024, 2), [new(Guid.NewGuid(), _device, LegState.InSync)], 1);
        await LegFormatter.CreateAsync(_device, fits, fits.Legs[0].LegId);
        var probe = LegProbe.Read(_device, fits.VolumeId, fits.Legs[0].LegId);
        Assert.True(probe.IsOk, probe.Reason);
        Assert.Equal(8L << 20, probe.DeviceLength);

        using var leg = LegFile.Open(_device, writable: true);
        Assert.True(leg.IsBlockDevice);
        Assert.True(leg.DirectIo);
        var buffer = AlignedBufferPool.Shared.Rent(65536);
        try
        {
            buffer.All.Span.Fill(0x5A);
            await leg.WriteAsync(2 << 20, buffer.All[..65536]);
            await leg.ZeroAsync((2 << 20) + 1000, 60_000, mayPunchHole: true);
            await leg.FlushAsync();
            await leg.ReadAsync(2 << 20, buffer.All[..65536]);
            Assert.Equal(0x5A, buffer.All.Span[999]);
            Assert.True(buffer.All.Span.Slice(1000, 60_000).IndexOfAnyExcept((byte)0) < 0);
            Assert.Equal(0x5A, buffer.All.Span[61_000]);
        }
        finally
        {
            AlignedBufferPool.Shared.Return(buffer);
        }
    }

    private static string Run(string file, string arguments)
    {
        using var process = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = process.StandardOutput.ReadToEnd();
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{file} {arguments} failed ({process.ExitCode}): {error} — this test needs root for loop devices");
        return output;
    }
}
