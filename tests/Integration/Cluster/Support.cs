using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Xunit;

namespace Lockstep.Integration.Tests.Cluster;

/// <summary>
/// Tests that start real <c>lockstep</c> processes on fixed or well-known ports; they must not run in
/// parallel with each other (the cluster script always uses 4054+, 8559+, 10810+).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class RealProcessesCollection
{
    public const string Name = "real lockstep processes";
}

/// <summary>Where the repository and the built <c>lockstep</c> binary are.</summary>
public static class Repo
{
    /// <summary>The folder holding Actors.sln, found upwards from the test assembly.</summary>
    public static string Root { get; } = FindRoot();

    /// <summary>The Release build of the executable; scripts/test builds it before running tests.</summary>
    public static string Lockstep
    {
        get
        {
            var path = Path.Combine(Root, "Hosting", "bin", "Release", "net10.0", "lockstep");
            Assert.True(File.Exists(path), $"{path} is missing; build first: dotnet build Actors.sln -c Release");
            return path;
        }
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Actors.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"no Actors.sln above {AppContext.BaseDirectory}");
    }
}

/// <summary>What a finished process printed.</summary>
/// <param name="ExitCode">Its exit code.</param>
/// <param name="Stdout">Everything on stdout.</param>
/// <param name="Stderr">Everything on stderr.</param>
public sealed record ProcessOutcome(int ExitCode, string Stdout, string Stderr)
{
    /// <summary>The non-empty stderr lines.</summary>
    public IReadOnlyList<string> StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public override string ToString() => $"exit {ExitCode}\n--- stderr\n{Stderr}\n--- stdout (tail)\n{Tail(Stdout)}";

    private static string Tail(string text) => text.Length > 3000 ? text[^3000..] : text;
}

/// <summary>A child process whose output is collected as it runs.</summary>
public sealed class ChildProcess : IAsyncDisposable
{
    private readonly Process process;
    private readonly StringBuilder stdout = new();
    private readonly StringBuilder stderr = new();

    private ChildProcess(Process process)
    {
        this.process = process;
    }

    /// <summary>Process id.</summary>
    public int Id => process.Id;

    /// <summary>Whether it has exited.</summary>
    public bool HasExited => process.HasExited;

    /// <summary>Its exit code once it has exited; null while it runs.</summary>
    public int? ExitCode => process.HasExited ? process.ExitCode : null;

    /// <summary>
    /// A post-mortem of a long-running node for a failure message: running or its exit code (with the signal, if one
    /// killed it), the last lines of stderr, the stdout lines that tell why a node goes away (downing, the resolver,
    /// fencing, unreachability, exceptions) and the last lines of stdout.
    /// </summary>
    public string Describe(string name, int tailLines = 25)
    {
        var state = ExitCode switch
        {
            null => "still running",
            > 128 and var code => $"exited with code {code} (signal {code - 128})",
            var code => $"exited with code {code}",
        };
        var outcome = Outcome(ExitCode ?? -1);
        var stdout = outcome.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var telling = stdout.Where(IsTelling).TakeLast(tailLines);
        return $"""
            ===== {name} (pid {Id}): {state}
            --- stderr (last {tailLines} lines)
            {string.Join('\n', outcome.StderrLines.TakeLast(tailLines))}
            --- stdout: downing / resolver / fencing / unreachable / exception lines (last {tailLines})
            {string.Join('\n', telling)}
            --- stdout (last {tailLines} lines)
            {string.Join('\n', stdout.TakeLast(tailLines))}
            """;
    }

    private static bool IsTelling(string line) =>
        TellingWords.Any(w => line.Contains(w, StringComparison.OrdinalIgnoreCase));

    private static readonly string[] TellingWords =
        ["SBR", "down", "fenc", "unreachable", "exception", "unhandled", "shutdown", "quarantin", "removed", "lockstep:"];

    /// <summary>Starts <paramref name="file"/> with stdin closed and both outputs captured.</summary>
    public static ChildProcess Start(string file, IEnumerable<string> args, string? workingDirectory = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Repo.Root,
        };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[name] = value;
        }

        var process = new Process { StartInfo = info };
        var child = new ChildProcess(process);
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (child.stdout) { child.stdout.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (child.stderr) { child.stderr.AppendLine(e.Data); } } };
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    /// <summary>Runs a command to completion; kills it and fails the test when it overruns.</summary>
    public static async Task<ProcessOutcome> RunAsync(string file, IEnumerable<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        await using var child = Start(file, args, environment: environment);
        return await child.WaitAsync(timeout, $"{Path.GetFileName(file)} {string.Join(' ', args)}");
    }

    /// <summary>Waits for exit; fails with the output so far when it takes longer than <paramref name="timeout"/>.</summary>
    public async Task<ProcessOutcome> WaitAsync(TimeSpan timeout, string what)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"'{what}' did not exit within {timeout.TotalSeconds} s; output so far:\n{Outcome(-1)}");
        }

        process.WaitForExit(); // flushes the asynchronous output readers
        return Outcome(process.ExitCode);
    }

    /// <summary>What it printed so far.</summary>
    public ProcessOutcome Outcome(int exitCode)
    {
        lock (stdout)
        {
            lock (stderr)
            {
                return new ProcessOutcome(exitCode, stdout.ToString(), stderr.ToString());
            }
        }
    }

    /// <summary>SIGTERM, then SIGKILL if it does not stop within 15 s.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!process.HasExited)
        {
            _ = Signal.Kill(process.Id, Signal.Term);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try
            {
                await process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        process.Dispose();
    }
}

/// <summary>POSIX signals, which <see cref="Process"/> cannot send except SIGKILL.</summary>
public static partial class Signal
{
    public const int Term = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    /// <summary>Whether a process with that id exists and is a lockstep node (pids get reused).</summary>
    public static bool IsLockstepAlive(int pid)
    {
        try
        {
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
            return cmdline.Contains("lockstep serve", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }
}

/// <summary>Polling with a deadline, for state that has no event to wait on (another process's view).</summary>
public static class Eventually
{
    /// <summary>
    /// Waits until the node behind <paramref name="http"/> (its base address) answers <c>/ready</c> with success.
    /// Refused, or no answer within the client timeout, means a node starting on a loaded machine is not ready yet.
    /// </summary>
    public static Task<TimeSpan> UntilReadyAsync(HttpClient http, TimeSpan timeout) =>
        UntilAsync("the node to be ready", timeout, async () =>
        {
            try
            {
                var response = await http.GetAsync("/ready");
                return (response.IsSuccessStatusCode, $"HTTP {(int)response.StatusCode}");
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                return (false, ex.Message);
            }
        });

    /// <summary>
    /// Re-checks <paramref name="probe"/> until it reports success or <paramref name="timeout"/> passes;
    /// the failure names what was awaited and what was last seen.
    /// </summary>
    public static async Task<TimeSpan> UntilAsync(string what, TimeSpan timeout, Func<Task<(bool Done, string Seen)>> probe)
    {
        var clock = Stopwatch.StartNew();
        var seen = "nothing yet";
        while (clock.Elapsed < timeout)
        {
            (var done, seen) = await probe();
            if (done)
            {
                return clock.Elapsed;
            }

            await Task.Delay(200);
        }

        Assert.Fail($"waited {timeout.TotalSeconds} s for {what}; last seen: {seen}");
        return clock.Elapsed;
    }
}

/// <summary>
/// One <c>lockstep serve</c> on fresh loopback ports with the given node id and data folder, handed out once GET /ready
/// answers; a node that never gets there is stopped before the failure is thrown (xUnit does not dispose a fixture whose
/// initialisation failed, and a leaked node disturbs the tests after it).
/// </summary>
public sealed class ReadyNode : IAsyncDisposable
{
    private ReadyNode(ChildProcess process, HttpClient http, int httpPort) => (Process, Http, HttpPort) = (process, http, httpPort);

    public ChildProcess Process { get; }

    /// <summary>A client with the node's HTTP address as its base.</summary>
    public HttpClient Http { get; }

    public int HttpPort { get; }

    /// <summary>The node's gRPC port: serve's default, HTTP + 1000 (<see cref="FreePorts"/> checked it free).</summary>
    public int GrpcPort => HttpPort + 1000;

    public static async Task<ReadyNode> StartAsync(string nodeId, string data, TimeSpan patience)
    {
        var ports = FreePorts.Take(3);
        var process = ChildProcess.Start(Repo.Lockstep,
            ["serve", "--port", $"{ports[0]}", "--http-port", $"{ports[1]}", "--nbd-port", $"{ports[2]}", "--node-id", nodeId, "--data", data]);
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{ports[1]}") };
        try
        {
            await Eventually.UntilReadyAsync(http, patience);
        }
        catch
        {
            http.Dispose();
            await process.DisposeAsync();
            throw;
        }

        return new ReadyNode(process, http, ports[1]);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Process.DisposeAsync();
    }
}

/// <summary>Free loopback ports for tests that start their own node.</summary>
/// <remarks>
/// Ports come from below Linux's ephemeral range (32768-60999): a port the OS hands out for bind(0) is also what it
/// hands to outgoing connections, and CI once lost a node start to one of those taking the HTTP port between this
/// check and the node's bind. Each port is handed out once per test process, only from even thousands
/// (20000-20999, 22000-22999, ... 30000-30999), so the gRPC port a node derives (HTTP + 1000) is never handed out
/// to another node; it is checked free as well. The start is spread by process id so two test processes on one
/// machine rarely walk the same ports.
/// </remarks>
public static class FreePorts
{
    private const int FirstBlock = 20, LastBlock = 30;
    private static readonly int[] Candidates = Enumerable.Range(FirstBlock, LastBlock - FirstBlock + 1)
        .Where(block => block % 2 == 0)
        .SelectMany(block => Enumerable.Range(block * 1000, 1000))
        .ToArray();

    private static int _cursor = Environment.ProcessId * 997 % Candidates.Length;

    /// <summary>Ports that are free now (and whose port + 1000 is free too), each handed out once per process.</summary>
    public static int[] Take(int count)
    {
        var ports = new int[count];
        for (var i = 0; i < count; i++)
        {
            ports[i] = Next();
        }

        return ports;
    }

    private static int Next()
    {
        for (var attempt = 0; attempt < Candidates.Length; attempt++)
        {
            var port = Candidates[(Interlocked.Increment(ref _cursor) & int.MaxValue) % Candidates.Length];
            if (IsFree(port) && IsFree(port + 1000))
            {
                return port;
            }
        }

        throw new InvalidOperationException($"no free loopback port in {FirstBlock}000-{LastBlock}999");
    }

    /// <summary>Whether a loopback listener could bind <paramref name="port"/> just now.</summary>
    public static bool IsFree(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
