using System.Buffers.Binary;
using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>Outcome of a counter torture run.</summary>
/// <param name="Resource">The counter resource in lockspace <c>torture</c>.</param>
/// <param name="Expected">Increments that completed, summed over every client whose node answered.</param>
/// <param name="Found">The counter read back from the LVB at the end.</param>
/// <param name="Nodes">Per answering node: id, increments, first error (empty if none).</param>
/// <param name="Lost">Nodes whose clients never answered (their node left the cluster, or the deadline passed).</param>
/// <param name="Iterations">Increments per client: a lost client did between 0 and this many.</param>
/// <param name="Elapsed">Wall time of the run.</param>
public sealed record LockTortureResult(string Resource, long Expected, long Found, IReadOnlyList<LockTortureDone> Nodes, IReadOnlyList<LockTortureLost> Lost, int Iterations, TimeSpan Elapsed)
{
    /// <summary>The most increments the lost clients can have completed: their answers died with them, their writes may not have.</summary>
    public long LostMaximum => (long)Lost.Sum(l => l.Clients) * Iterations;

    /// <summary>
    /// Whether every answering client finished and the counter holds exactly the answered increments plus
    /// what the lost clients may have done (between none and <see cref="LostMaximum"/>).
    /// </summary>
    public bool Ok => Nodes.All(n => n.Error.Length == 0) && Expected <= Found && Found <= Expected + LostMaximum;
}

/// <summary>A node whose torture clients did not answer.</summary>
/// <param name="Node">The node's address.</param>
/// <param name="Clients">Clients it ran.</param>
/// <param name="Reason">Why no answer will come.</param>
public sealed record LockTortureLost(string Node, int Clients, string Reason);

/// <summary>
/// The answers of a torture's fan-out (pure; <see cref="LockTortureFanOutActor"/> drives it). Each node that got clients
/// answers once, or is lost: when it leaves the cluster its answer can no longer come, and at the deadline every node
/// still silent is lost. <see cref="Finished"/> once none is left waiting.
/// </summary>
internal sealed class LockTortureTally
{
    private readonly Dictionary<Address, int> _waiting;
    private readonly List<LockTortureDone> _done = [];
    private readonly List<LockTortureLost> _lost = [];

    public LockTortureTally(IEnumerable<(Address Node, int Clients)> shares) =>
        _waiting = shares.Where(s => s.Clients > 0).ToDictionary(s => s.Node, s => s.Clients);

    public bool Finished => _waiting.Count == 0;

    public IReadOnlyList<LockTortureDone> Done => _done;

    public IReadOnlyList<LockTortureLost> Lost => _lost;

    /// <summary>The nodes still awaited.</summary>
    public IReadOnlyCollection<Address> Waiting => _waiting.Keys;

    /// <summary>A node's answer; one from a node not awaited (already lost, or answered) is ignored.</summary>
    public void Answered(Address node, LockTortureDone done)
    {
        if (_waiting.Remove(node))
        {
            _done.Add(done);
        }
    }

    /// <summary>No answer will come from <paramref name="node"/>.</summary>
    public void Gone(Address node, string reason)
    {
        if (_waiting.Remove(node, out var clients))
        {
            _lost.Add(new LockTortureLost(node.ToString(), clients, reason));
        }
    }

    /// <summary>The deadline passed: every node still silent is lost.</summary>
    public void DeadlinePassed(TimeSpan patience)
    {
        foreach (var node in _waiting.Keys.ToList())
        {
            Gone(node, $"no answer within {patience.TotalSeconds:F0} s");
        }
    }
}

/// <summary>
/// Sends one torture run to each node's runner and collects the answers in a <see cref="LockTortureTally"/>, so that a
/// node dying mid-run costs the coordinator its removal from the cluster, not the whole timeout: a plain Ask per node
/// waited the run's timeout for an answer that had died with its node.
/// </summary>
internal sealed class LockTortureFanOutActor : ReceiveActor, IWithTimers
{
    private const string DeadlineTimer = "deadline";

    private readonly LockTortureTally _tally;
    private readonly TaskCompletionSource<LockTortureTally> _finished;
    private readonly Address _self;

    private readonly IReadOnlyList<(Address Node, int Clients)> _shares;
    private readonly RunLockTorture _run;
    private readonly TimeSpan _patience;

    public LockTortureFanOutActor(IReadOnlyList<(Address Node, int Clients)> shares, RunLockTorture run, TimeSpan patience, TaskCompletionSource<LockTortureTally> finished)
    {
        _shares = shares;
        _run = run;
        _patience = patience;
        _tally = new LockTortureTally(shares);
        _finished = finished;
        _self = Cluster.Get(Context.System).SelfAddress;
        Receive<LockTortureDone>(done => Record(() => _tally.Answered(From(Sender), done)));
        Receive<Status.Failure>(failure => Record(() => _tally.Answered(From(Sender), new LockTortureDone(From(Sender).ToString(), 0, failure.Cause.Message))));
        Receive<ClusterEvent.CurrentClusterState>(state => Record(() =>
        {
            // Subscribed after the run was sent: a node removed in between shows only as missing here.
            foreach (var node in _tally.Waiting.Where(n => state.Members.All(m => m.Address != n)).ToList())
            {
                _tally.Gone(node, "its node left the cluster before answering");
            }
        }));
        Receive<ClusterEvent.MemberRemoved>(removed => Record(() => _tally.Gone(removed.Member.Address, $"its node left the cluster ({removed.PreviousStatus}) before answering")));
        Receive<Deadline>(_ => Record(() => _tally.DeadlinePassed(patience)));
    }

    public ITimerScheduler Timers { get; set; } = null!;

    protected override void PreStart()
    {
        foreach (var (node, clients) in _shares.Where(s => s.Clients > 0))
        {
            Context.ActorSelection(new RootActorPath(node) / "user" / LockManager.TortureName).Tell(_run with { Clients = clients });
        }

        Timers.StartSingleTimer(DeadlineTimer, Deadline.Instance, _patience);
        Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot, typeof(ClusterEvent.MemberRemoved));
    }

    protected override void PostStop()
    {
        Cluster.Get(Context.System).Unsubscribe(Self);
        _finished.TrySetException(new InvalidOperationException("the torture fan-out stopped before every node answered"));
    }

    /// <summary>The runner on this node answers with a local ref, which carries no host.</summary>
    private Address From(IActorRef sender) => sender.Path.Address.HasLocalScope ? _self : sender.Path.Address;

    private void Record(Action change)
    {
        change();
        if (_tally.Finished)
        {
            _finished.TrySetResult(_tally);
            Context.Stop(Self);
        }
    }

    private sealed class Deadline : INoSerializationVerificationNeeded
    {
        public static readonly Deadline Instance = new();
    }
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
        var shares = members.Select((address, index) => (address, clients / members.Count + (index < clients % members.Count ? 1 : 0))).ToList();
        var started = Stopwatch.StartNew();

        // Every runner stops by itself after the timeout; the 5 s cover its answer's way back.
        var finished = new TaskCompletionSource<LockTortureTally>(TaskCreationOptions.RunContinuationsAsynchronously);
        var run = new RunLockTorture(lockspace, resource, 0, iterations, (long)timeout.TotalMilliseconds);
        system.ActorOf(Props.Create(() => new LockTortureFanOutActor(shares, run, timeout + TimeSpan.FromSeconds(5), finished)));
        var tally = await finished.Task;
        var elapsed = started.Elapsed;
        await keeper.ConvertAsync(LockMode.PR, LockFlags.ValBlk, timeout: timeout);
        var found = BinaryPrimitives.ReadInt64LittleEndian(keeper.Lvb.Span);
        await keeper.UnlockAsync();
        var done = tally.Done.OrderBy(d => d.NodeId, StringComparer.Ordinal).ToList();
        return new LockTortureResult(resource, done.Sum(d => d.Increments), found, done, tally.Lost, iterations, elapsed);
    }
}

/// <summary>Runs torture clients on this node for a coordinator anywhere in the cluster.</summary>
internal sealed class LockTortureActor : ReceiveActor
{
    public LockTortureActor(ILockManager manager)
    {
        // Answered as the runner, so the coordinator knows which node answered (PipeTo's default sender is nobody).
        Receive<RunLockTorture>(run => LockTorture.RunLocalAsync(manager, run.Lockspace, run.Resource, Math.Clamp(run.Clients, 1, 1024), run.Iterations, TimeSpan.FromMilliseconds(Math.Max(1, run.TimeoutMs))).PipeTo(Sender, Self));
    }
}
