using System.Net.Sockets;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;

namespace Lockstep.Actors.Membership;

/// <summary>Probe settings of <see cref="RefusedConnectDowningActor"/>.</summary>
public sealed record RefusedConnectDowningOptions
{
    /// <summary>Refused connects in a row that prove a member's process gone.</summary>
    public int ProbesRequired { get; init; } = 3;

    /// <summary>Pause between two probes of a round (a round of 3 takes about twice this).</summary>
    public TimeSpan ProbeInterval { get; init; } = TimeSpan.FromMilliseconds(75);

    /// <summary>A connect not answered within this is a timeout: proof of nothing.</summary>
    public TimeSpan ProbeTimeout { get; init; } = TimeSpan.FromMilliseconds(500);
}

/// <summary>
/// Published on the node's event stream when a member's process was proven gone (<paramref name="Gone"/> true) or
/// when such a proof was withdrawn. The DLM starts recovery at the Down of a member proven gone even if this node's
/// failure detector has not marked it unreachable yet. Local only.
/// </summary>
public sealed record MemberProcessGone(UniqueAddress Member, bool Gone) : INoSerializationVerificationNeeded;

/// <summary>Published on the event stream when a probe round ended without proof (for tests and diagnostics). Local only.</summary>
public sealed record MemberProcessNotProven(UniqueAddress Member, ConnectProbeResult Result) : INoSerializationVerificationNeeded;

/// <summary>
/// One per node, <c>/user/refused-connect-downing</c>: feeds membership and reachability into
/// <see cref="RefusedConnectDowningState"/>, runs its TCP connect probes against members' remoting ports and downs
/// members it proved gone. All decisions are the state's.
/// </summary>
public sealed class RefusedConnectDowningActor : ReceiveActor, IWithTimers
{
    public const string Name = "refused-connect-downing";

    private readonly RefusedConnectDowningOptions _options;
    private readonly RefusedConnectDowningState _state;
    private readonly Cluster _cluster;
    private readonly Dictionary<string, UniqueAddress> _members = [];
    private readonly ILoggingAdapter _log = Context.GetLogger();

    public RefusedConnectDowningActor(RefusedConnectDowningOptions options)
    {
        _options = options;
        _state = new RefusedConnectDowningState(options.ProbesRequired, options.ProbeInterval);
        _cluster = Cluster.Get(Context.System);

        Receive<ClusterEvent.CurrentClusterState>(view =>
        {
            foreach (var member in view.Members.Where(m => m.Status is MemberStatus.Up or MemberStatus.Leaving or MemberStatus.Exiting))
            {
                Track(member);
            }

            foreach (var member in view.Unreachable.Where(m => _members.ContainsKey(Key(m.UniqueAddress))))
            {
                Apply(_state.Unreachable(Key(member.UniqueAddress)));
            }
        });
        Receive<ClusterEvent.MemberUp>(m => Track(m.Member));
        Receive<ClusterEvent.UnreachableMember>(m => Apply(_state.Unreachable(Key(m.Member.UniqueAddress))));
        Receive<ClusterEvent.ReachableMember>(m => Apply(_state.Reachable(Key(m.Member.UniqueAddress))));
        Receive<ClusterEvent.MemberDowned>(m => _state.Downed(Key(m.Member.UniqueAddress)));
        Receive<ClusterEvent.MemberRemoved>(m => Forget(m.Member));
        Receive<ClusterEvent.IMemberEvent>(_ => { });
        Receive<RunProbe>(p => ProbeAsync(p).PipeTo(Self));
        Receive<ProbeDone>(p =>
        {
            _log.Debug("Probe {0}/{1} of {2}: {3}", p.Probe.Attempt, p.Probe.Round, p.Probe.Member, p.Result);
            Apply(_state.ProbeAnswered(p.Probe.Member, p.Probe.Round, p.Probe.Attempt, p.Result));
        });
    }

    public ITimerScheduler Timers { get; set; } = null!;

    public static Props Props(RefusedConnectDowningOptions options) =>
        Akka.Actor.Props.Create(() => new RefusedConnectDowningActor(options));

    private static string Key(UniqueAddress address) => $"{address.Address}#{address.Uid}";

    protected override void PreStart()
    {
        _cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot, typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));
    }

    protected override void PostStop() => _cluster.Unsubscribe(Self);

    private void Track(Member member)
    {
        if (member.UniqueAddress.Equals(_cluster.SelfUniqueAddress))
        {
            return;
        }

        var key = Key(member.UniqueAddress);
        _members[key] = member.UniqueAddress;
        _state.MemberUp(key);
    }

    private void Forget(Member member)
    {
        var key = Key(member.UniqueAddress);
        _state.Removed(key);
        _members.Remove(key);
    }

    private void Apply(IReadOnlyList<RefusedConnectEffect> effects)
    {
        foreach (var effect in effects)
        {
            if (!_members.TryGetValue(effect.Member, out var member))
            {
                continue;
            }

            switch (effect)
            {
                case ProbeConnectEffect probe when probe.Delay <= TimeSpan.Zero:
                    Self.Tell(new RunProbe(probe, member.Address));
                    break;
                case ProbeConnectEffect probe:
                    Timers.StartSingleTimer($"probe {probe.Member} {probe.Round} {probe.Attempt}", new RunProbe(probe, member.Address), probe.Delay);
                    break;
                case ProcessGoneEffect:
                    _log.Info("Member {0}: {1} connects to its remoting port refused; its process is gone", member, _options.ProbesRequired);
                    Context.System.EventStream.Publish(new MemberProcessGone(member, Gone: true));
                    break;
                case ProcessGoneWithdrawnEffect:
                    _log.Warning("Member {0} is reachable again although its port refused connects; proof withdrawn", member);
                    Context.System.EventStream.Publish(new MemberProcessGone(member, Gone: false));
                    break;
                case DownMemberEffect:
                    _log.Warning("Downing {0}: unreachable and its process is gone (remoting port refused {1} connects)", member, _options.ProbesRequired);
                    _cluster.Down(member.Address);
                    break;
                case NotProvenEffect notProven:
                    _log.Info("Member {0}: probe answered {1} after {2} refusals; left to the split-brain resolver", member, notProven.Result, notProven.Refusals);
                    Context.System.EventStream.Publish(new MemberProcessNotProven(member, notProven.Result));
                    break;
            }
        }
    }

    private async Task<ProbeDone> ProbeAsync(RunProbe run)
    {
        return new ProbeDone(run.Probe, await ConnectOnceAsync(run.Address.Host ?? string.Empty, run.Address.Port ?? 0, _options.ProbeTimeout));
    }

    /// <summary>One TCP connect to <paramref name="host"/>:<paramref name="port"/>, closed at once if accepted.</summary>
    public static async Task<ConnectProbeResult> ConnectOnceAsync(string host, int port, TimeSpan timeout)
    {
        if (host.Length == 0 || port <= 0)
        {
            return ConnectProbeResult.Failed;
        }

        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await socket.ConnectAsync(host, port, cancel.Token);
            return ConnectProbeResult.Accepted;
        }
        catch (OperationCanceledException)
        {
            return ConnectProbeResult.TimedOut;
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionRefused)
        {
            return ConnectProbeResult.Refused;
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.TimedOut)
        {
            return ConnectProbeResult.TimedOut;
        }
        catch (SocketException)
        {
            return ConnectProbeResult.Failed;
        }
    }

    private sealed record RunProbe(ProbeConnectEffect Probe, Address Address) : INoSerializationVerificationNeeded;

    private sealed record ProbeDone(ProbeConnectEffect Probe, ConnectProbeResult Result) : INoSerializationVerificationNeeded;
}
