using System.Security.Cryptography;
using System.Text.Json;
using Xunit;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>
/// Real NBD clients (libnbd's nbdinfo and nbdcopy, qemu-io, qemu-img, fio) against the in-process server on an
/// ephemeral port, over a sparse-file test device.
/// </summary>
public sealed class NbdRealClientTests
{
    private const long MiB = 1 << 20;

    [Fact]
    public async Task Nbdinfo_lists_every_export_with_its_description()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("alpha", 64 * MiB, description: "first test volume");
        nbd.AddFile("beta", 16 * MiB, readOnly: true, description: "second, read-only");

        var result = await Tool.RunAsync("nbdinfo", "--list", "--json", $"nbd://127.0.0.1:{nbd.Port}");

        Assert.True(result.ExitCode == 0, result.ToString());
        var exports = JsonDocument.Parse(result.Stdout).RootElement.GetProperty("exports").EnumerateArray()
            .ToDictionary(e => e.GetProperty("export-name").GetString()!, e => e);
        Assert.Equal(["alpha", "beta"], exports.Keys.Order());
        Assert.Equal("first test volume", exports["alpha"].GetProperty("description").GetString());
        Assert.Equal("second, read-only", exports["beta"].GetProperty("description").GetString());
        Assert.Equal(64 * MiB, exports["alpha"].GetProperty("export-size").GetInt64());
        Assert.True(exports["beta"].GetProperty("is_read_only").GetBoolean());
        Assert.False(exports["alpha"].GetProperty("is_read_only").GetBoolean());
    }

    [Fact]
    public async Task Nbdinfo_describes_size_flags_block_sizes_and_contexts()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("disk", 48 * MiB, maximumRequestSize: 8 << 20);

        var result = await Tool.RunAsync("nbdinfo", "--json", nbd.Uri("disk"));

        Assert.True(result.ExitCode == 0, result.ToString());
        var root = JsonDocument.Parse(result.Stdout).RootElement;
        Assert.True(root.GetProperty("structured").GetBoolean());
        var export = root.GetProperty("exports")[0];
        Assert.Equal("disk", export.GetProperty("export-name").GetString());
        Assert.Equal(48 * MiB, export.GetProperty("export-size").GetInt64());
        foreach (var flag in new[] { "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn", "can_df" })
        {
            Assert.True(export.GetProperty(flag).GetBoolean(), $"{flag} should be advertised:\n{result.Stdout}");
        }

        Assert.False(export.GetProperty("is_read_only").GetBoolean());
        Assert.False(export.GetProperty("can_cache").GetBoolean());
        Assert.Equal(512, export.GetProperty("block_size_minimum").GetInt32());
        Assert.Equal(4096, export.GetProperty("block_size_preferred").GetInt32());
        Assert.Equal(8 << 20, export.GetProperty("block_size_maximum").GetInt32());
        Assert.Contains("base:allocation", export.GetProperty("contexts").EnumerateArray().Select(c => c.GetString()));
    }

    [Fact]
    public async Task Nbdinfo_map_reports_written_data_between_holes()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("sparse", 16 * MiB);
        var write = await Tool.RunAsync("qemu-io", "-f", "raw", nbd.Uri("sparse"), "-c", "write -P 0x77 4M 1M");
        Assert.True(write.ExitCode == 0, write.ToString());

        var result = await Tool.RunAsync("nbdinfo", "--map", "--json", nbd.Uri("sparse"));

        Assert.True(result.ExitCode == 0, result.ToString());
        var map = JsonDocument.Parse(result.Stdout).RootElement.EnumerateArray()
            .Select(e => (Offset: e.GetProperty("offset").GetInt64(), Length: e.GetProperty("length").GetInt64(), Type: e.GetProperty("type").GetInt32()))
            .ToArray();
        Assert.Equal(16 * MiB, map.Sum(e => e.Length));
        Assert.Equal([(0, 4 * MiB, 3), (4 * MiB, 1 * MiB, 0), (5 * MiB, 11 * MiB, 3)], map);
    }

    [Fact]
    public async Task Qemu_io_writes_patterns_and_reads_them_back_verified()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        var device = nbd.AddFile("patterns", 32 * MiB);

        var result = await Tool.RunAsync("qemu-io", "-f", "raw", nbd.Uri("patterns"),
            "-c", "write -P 0xa5 0 1M",
            "-c", "write -P 0x3c 1M 64k",
            "-c", "write -P 0x11 3000000 7000",
            "-c", "write -f -P 0x42 8M 256k",
            "-c", "aio_write -P 0x55 12M 512k",
            "-c", "aio_write -P 0x66 13M 512k",
            "-c", "aio_flush",
            "-c", "flush",
            "-c", "write -P 0x99 16M 2M",
            "-c", "write -z 16M 1M",
            "-c", "discard 17M 1M",
            "-c", "read -P 0xa5 0 1M",
            "-c", "read -P 0x3c 1M 64k",
            "-c", "read -P 0x11 3000000 7000",
            "-c", "read -P 0x42 8M 256k",
            "-c", "read -P 0x55 12M 512k",
            "-c", "read -P 0x66 13M 512k",
            "-c", "read -P 0 16M 1M",
            "-c", "read -P 0 17M 1M",
            "-c", "read -P 0 20M 1M");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("failed", result.Stdout + result.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(9, result.Stdout.Split('\n').Count(l => l.StartsWith("read ", StringComparison.Ordinal)));
        Assert.True(device.Flushes >= 2, $"FLUSH and FUA should reach the device, saw {device.Flushes}");
    }

    [Fact]
    public async Task Qemu_io_pattern_check_fails_on_wrong_data()
    {
        // Guards the test above: a wrong expectation must make qemu-io fail, or its success proves nothing.
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("negative", 4 * MiB);

        var result = await Tool.RunAsync("qemu-io", "-f", "raw", nbd.Uri("negative"), "-c", "write -P 0xa5 0 64k", "-c", "read -P 0xa6 0 64k");

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("Pattern verification failed", result.Stdout + result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Nbdcopy_copies_64_MiB_in_and_out_with_matching_checksums()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("copy", 64 * MiB);
        var source = nbd.TempFile("source.raw");
        var target = nbd.TempFile("target.raw");
        WriteRandomFile(source, 64 * MiB, holeEvery: 8);

        var upload = await Tool.RunAsync("nbdcopy", "--flush", source, nbd.Uri("copy"));
        Assert.True(upload.ExitCode == 0, upload.ToString());
        var download = await Tool.RunAsync("nbdcopy", nbd.Uri("copy"), target);
        Assert.True(download.ExitCode == 0, download.ToString());

        Assert.Equal(Sha256(source), Sha256(target));
    }

    [Fact]
    public async Task Qemu_img_convert_copies_in_and_out_and_compare_agrees()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("convert", 32 * MiB);
        var source = nbd.TempFile("source.raw");
        var target = nbd.TempFile("target.raw");
        WriteRandomFile(source, 32 * MiB, holeEvery: 4);

        var upload = await Tool.RunAsync("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source, nbd.Uri("convert"));
        Assert.True(upload.ExitCode == 0, upload.ToString());
        var download = await Tool.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", nbd.Uri("convert"), target);
        Assert.True(download.ExitCode == 0, download.ToString());
        var compare = await Tool.RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", source, nbd.Uri("convert"));

        Assert.True(compare.ExitCode == 0, compare.ToString());
        Assert.Equal(Sha256(source), Sha256(target));
    }

    [Fact]
    public async Task Fio_random_writes_verify_with_crc32c()
    {
        await using var nbd = await NbdTestServer.StartAsync();
        nbd.AddFile("fio", 64 * MiB);

        var result = await Tool.RunAsync("fio",
            "--name=verify", "--ioengine=nbd", $"--uri={nbd.Uri("fio")}", "--rw=randwrite", "--bs=4k", "--bsrange=4k-64k",
            "--size=32M", "--iodepth=32", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--output-format=json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var job = JsonDocument.Parse(result.Stdout[result.Stdout.IndexOf('{')..]).RootElement.GetProperty("jobs")[0];
        Assert.Equal(0, job.GetProperty("error").GetInt32());
        Assert.Equal(32 * MiB, job.GetProperty("write").GetProperty("io_bytes").GetInt64());
        Assert.True(job.GetProperty("read").GetProperty("io_bytes").GetInt64() > 0, "the verify pass should have read back what was written");
    }

    internal static void WriteRandomFile(string path, long size, int holeEvery)
    {
        // Random data with some all-zero MiBs, so sparse-aware copiers take their zero path too.
        var random = new Random(20240611);
        var block = new byte[MiB];
        using var file = File.Create(path);
        for (long i = 0; i < size / MiB; i++)
        {
            if (i % holeEvery == holeEvery - 1)
            {
                Array.Clear(block);
            }
            else
            {
                random.NextBytes(block);
            }

            file.Write(block);
        }
    }

    internal static string Sha256(string path)
    {
        using var file = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(file));
    }
}
