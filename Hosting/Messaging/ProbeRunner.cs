using System.Diagnostics;
using Lockstep.Actors.Messaging;
using Lockstep.Contracts.Messaging;

namespace Lockstep.Hosting.Messaging;

/// <summary>What a probe run sends.</summary>
/// <param name="Requests">Requests in total (indices 0..Requests-1).</param>
/// <param name="Callers">Concurrent closed-loop callers: each waits for its status before its next request.</param>
/// <param name="Timeout">A caller still waiting after this long stops waiting (its request counts as "no status").</param>
public sealed record ProbeRunOptions(int Requests, int Callers, TimeSpan Timeout)
{
    /// <summary>Largest run one call may ask for, so one request cannot tie the cluster up for hours.</summary>
    public const int MaxRequests = 1_000_000;

    /// <summary>Most concurrent callers.</summary>
    public const int MaxCallers = 1024;

    /// <summary>The first invalid setting as one line, or null.</summary>
    public string? Validate() =>
        Requests is < 1 or > MaxRequests ? $"requests must be 1..{MaxRequests}, not {Requests}"
        : Callers is < 1 or > MaxCallers ? $"callers must be 1..{MaxCallers}, not {Callers}"
        : Timeout <= TimeSpan.Zero || Timeout > TimeSpan.FromHours(2) ? $"timeoutSeconds must be 1..7200, not {Timeout.TotalSeconds}"
        : null;
}

/// <summary>
/// The sender's view of a probe run: how many callers got their own status, and what went wrong for the others.
/// The receivers' view (how often each handler ran, in which order) is in the nodes' <see cref="ProbeLedger"/>s.
/// </summary>
/// <param name="RunId">The run's id, to look its requests up in the ledgers.</param>
/// <param name="Requests">Requests sent.</param>
/// <param name="WithStatus">Calls that returned their own status (<see cref="ProbeDone"/> with this run id and index).</param>
/// <param name="WrongStatus">Calls that returned a status of another request (must be 0).</param>
/// <param name="Failed">Calls that failed or were still waiting at the timeout.</param>
/// <param name="Errors">Distinct failure messages with their counts.</param>
/// <param name="RanOn">Requests per node id that ran them, from the statuses.</param>
/// <param name="Seconds">Wall time.</param>
public sealed record ProbeRunResult(
    string RunId, int Requests, int WithStatus, int WrongStatus, int Failed, IReadOnlyDictionary<string, int> Errors, IReadOnlyDictionary<string, int> RanOn, double Seconds)
{
    /// <summary>Statuses per second of wall time.</summary>
    public double PerSecond => Seconds > 0 ? WithStatus / Seconds : 0;
}

/// <summary>Sends a probe run through the layer from this node (<c>POST /v1/messaging/probe/run</c>).</summary>
public static class ProbeRunner
{
    /// <summary>
    /// Sends requests 0..N-1, each to entity type <c>probe-{i mod 8}</c> (so the run's channels have holders on
    /// every node), from <see cref="ProbeRunOptions.Callers"/> closed-loop callers, and returns when every caller has
    /// its status or gave up at the timeout.
    /// </summary>
    public static async Task<ProbeRunResult> RunAsync(IReliableSender sender, string runId, ProbeRunOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sender);
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Validate() is { } problem)
        {
            throw new ArgumentException(problem, nameof(options));
        }

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(options.Timeout);
        var outcome = new ProbeOutcome(runId, options.Requests);
        var next = -1;
        var clock = Stopwatch.StartNew();
        var callers = Enumerable.Range(0, Math.Min(options.Callers, options.Requests)).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < options.Requests)
            {
                var entityType = ProbeLedger.EntityTypes[i % ProbeLedger.EntityTypes.Count];
                try
                {
                    var status = await sender.SendAsync<ProbeDone>(entityType, $"probe-entity-{i % 64}", new ProbeRequest(runId, i), deadline.Token).ConfigureAwait(false);
                    outcome.Answered(i, status);
                }
                catch (OperationCanceledException)
                {
                    outcome.Failed($"no status within {options.Timeout.TotalSeconds:F0} s");
                }
                catch (Exception ex) when (ex is ReliableMessagingException or ReliableHandlerException or InvalidCastException)
                {
                    outcome.Failed($"{ex.GetType().Name}: {ex.Message}");
                }
            }
        }, CancellationToken.None)).ToArray();
        await Task.WhenAll(callers).ConfigureAwait(false);
        return outcome.Result(clock.Elapsed);
    }
}

/// <summary>Collects the callers' answers of one run (thread-safe); pure, so the checks are unit-tested.</summary>
public sealed class ProbeOutcome(string runId, int requests)
{
    private readonly object _gate = new();
    private readonly Dictionary<string, int> _errors = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _ranOn = new(StringComparer.Ordinal);
    private int _withStatus;
    private int _wrong;
    private int _failed;

    /// <summary>Request <paramref name="index"/> returned <paramref name="status"/>: its own only if run id and index match.</summary>
    public void Answered(int index, ProbeDone status)
    {
        ArgumentNullException.ThrowIfNull(status);
        lock (_gate)
        {
            if (status.RunId == runId && status.Index == index)
            {
                _withStatus++;
                _ranOn[status.Node] = _ranOn.GetValueOrDefault(status.Node) + 1;
            }
            else
            {
                _wrong++;
            }
        }
    }

    /// <summary>A call failed with <paramref name="reason"/>.</summary>
    public void Failed(string reason)
    {
        lock (_gate)
        {
            _failed++;
            _errors[reason] = _errors.GetValueOrDefault(reason) + 1;
        }
    }

    /// <summary>The run's result after <paramref name="elapsed"/>.</summary>
    public ProbeRunResult Result(TimeSpan elapsed)
    {
        lock (_gate)
        {
            return new ProbeRunResult(runId, requests, _withStatus, _wrong, _failed,
                new Dictionary<string, int>(_errors), new SortedDictionary<string, int>(_ranOn, StringComparer.Ordinal), elapsed.TotalSeconds);
        }
    }
}
