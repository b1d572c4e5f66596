using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Lockstep.Integration.Tests.Cluster;
using Xunit;
using Xunit.Abstractions;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>
/// fio (ioengine=nbd) with the four benchmark patterns against this server and against nbdkit's file plugin
/// on the same file. Asserts that every run completes without errors; the throughput table goes to the test
/// output (run with <c>--logger "console;verbosity=detailed"</c>; <c>LOCKSTEP_BENCH_SECONDS</c> sets the length
/// of each run, 1 s by default). Speed is reported, never asserted.
/// </summary>
public sealed class NbdFioComparisonTests(ITestOutputHelper output)
{
    private static readonly (string Name, string Rw, string Bs, int Depth)[] Patterns =
    [
        ("1 MiB seq write QD8", "write", "1M", 8),
        ("1 MiB seq read QD8", "read", "1M", 8),
        ("4 KiB rand write QD32", "randwrite", "4k", 32),
        ("4 KiB rand read QD32", "randread", "4k", 32),
    ];

    [Fact]
    public async Task Fio_runs_every_benchmark_pattern_against_lockstep_and_nbdkit_file()
    {
        var seconds = int.TryParse(Environment.GetEnvironmentVariable("LOCKSTEP_BENCH_SECONDS"), out var s) ? s : 1;
        const long size = 1L << 30;
        await using var nbd = await NbdTestServer.StartAsync();
        var device = nbd.AddFile("bench", size);
        // Allocate every block first, so neither side pays for filling holes in the file.
        using (var file = new FileStream(device.Path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            var block = new byte[1 << 20];
            Random.Shared.NextBytes(block);
            for (long written = 0; written < size; written += block.Length)
            {
                file.Write(block);
            }
        }

        // nbdkit is native code; give the JIT one short pass over both request paths before measuring.
        await RunFioAsync(nbd.Uri("bench"), Patterns[0], size, 1);
        await RunFioAsync(nbd.Uri("bench"), Patterns[3], size, 1);
        var ours = new List<(string, double, double)>();
        foreach (var pattern in Patterns)
        {
            ours.Add(await RunFioAsync(nbd.Uri("bench"), pattern, size, seconds));
        }

        var port = FreePorts.Take(1)[0];
        var nbdkit = Process.Start(new ProcessStartInfo("nbdkit", ["-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", $"{port}", "file", device.Path])
        {
            RedirectStandardError = true,
        })!;
        var theirs = new List<(string, double, double)>();
        try
        {
            await WaitForPortAsync(port);
            foreach (var pattern in Patterns)
            {
                theirs.Add(await RunFioAsync($"nbd://127.0.0.1:{port}/", pattern, size, seconds));
            }
        }
        finally
        {
            nbdkit.Kill();
            await nbdkit.WaitForExitAsync();
        }

        output.WriteLine($"fio ioengine=nbd, {seconds} s per line, 1 GiB sparse file on {Path.GetTempPath()} (buffered I/O on both sides)");
        output.WriteLine($"{"pattern",-24} {"lockstep (test device)",24} {"nbdkit file",20} {"ratio",7}");
        for (var i = 0; i < Patterns.Length; i++)
        {
            output.WriteLine($"{Patterns[i].Name,-24} {Format(ours[i]),24} {Format(theirs[i]),20} {ours[i].Item2 / theirs[i].Item2,7:P0}");
        }
    }

    private static string Format((string Unit, double Value, double Iops) result) =>
        result.Unit == "MB/s" ? $"{result.Value:F0} MB/s" : $"{result.Iops / 1000:F1}k IOPS";

    private static async Task<(string Unit, double Value, double Iops)> RunFioAsync(string uri, (string Name, string Rw, string Bs, int Depth) pattern, long size, int seconds)
    {
        var result = await Tool.RunAsync("fio", [
            "--name=bench", "--ioengine=nbd", $"--uri={uri}", $"--rw={pattern.Rw}", $"--bs={pattern.Bs}", $"--iodepth={pattern.Depth}",
            $"--size={size}", "--time_based", $"--runtime={seconds}", "--output-format=json"], TimeSpan.FromSeconds(60 + (seconds * 2)));
        Assert.True(result.ExitCode == 0, result.ToString());
        var job = JsonDocument.Parse(result.Stdout[result.Stdout.IndexOf('{')..]).RootElement.GetProperty("jobs")[0];
        Assert.Equal(0, job.GetProperty("error").GetInt32());
        var side = job.GetProperty(pattern.Rw.Contains("write", StringComparison.Ordinal) ? "write" : "read");
        var bytes = side.GetProperty("io_bytes").GetInt64();
        Assert.True(bytes > 0, $"{pattern.Name} against {uri} moved no data");
        var mbps = side.GetProperty("bw_bytes").GetDouble() / 1e6;
        return (pattern.Bs == "1M" ? "MB/s" : "IOPS", mbps, side.GetProperty("iops").GetDouble());
    }


    private static async Task WaitForPortAsync(int port)
    {
        // nbdkit -f has no readiness signal; probe until its listener answers, with a deadline.
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (true)
        {
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(IPAddress.Loopback, port, deadline.Token);
                return;
            }
            catch (SocketException)
            {
                await Task.Yield();
            }
        }
    }
}
