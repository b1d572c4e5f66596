namespace Lockstep.Actors.Membership;

/// <summary>How one TCP connect to a member's remoting port ended.</summary>
public enum ConnectProbeResult
{
    /// <summary>The member's host answered the SYN with a reset (ECONNREFUSED): nothing listens on the port.</summary>
    Refused,

    /// <summary>Something accepted the connection: the process (or some process) listens there.</summary>
    Accepted,

    /// <summary>No answer within the probe's timeout: the host or the path is silent (a partition looks like this).</summary>
    TimedOut,

    /// <summary>Any other error (no route to host, name not resolved, …): proves nothing.</summary>
    Failed,
}

/// <summary>What <see cref="RefusedConnectDowningState"/> asks its actor to do.</summary>
public abstract record RefusedConnectEffect(string Member);

/// <summary>Connect once to the member's remoting port after <paramref name="Delay"/>; report with round and attempt.</summary>
public sealed record ProbeConnectEffect(string Member, int Round, int Attempt, TimeSpan Delay) : RefusedConnectEffect(Member);

/// <summary>Every probe of a round, started when the member became unreachable, was refused: its process is gone (tell the DLM).</summary>
public sealed record ProcessGoneEffect(string Member) : RefusedConnectEffect(Member);

/// <summary>A proof of death no longer holds (the member answered heartbeats again): withdraw it.</summary>
public sealed record ProcessGoneWithdrawnEffect(string Member) : RefusedConnectEffect(Member);

/// <summary>Down the member now: it is unreachable and its process is gone.</summary>
public sealed record DownMemberEffect(string Member) : RefusedConnectEffect(Member);

/// <summary>A probe round ended without proof; the split-brain resolver decides as usual.</summary>
public sealed record NotProvenEffect(string Member, ConnectProbeResult Result, int Refusals) : RefusedConnectEffect(Member);

/// <summary>
/// Decides when a cluster member may be downed at once instead of after the split-brain resolver's
/// <c>stable-after</c>. A partition and a dead process both look "unreachable" to the failure detector, but only
/// a dead process makes its host's kernel refuse a TCP connect to its remoting port (a cut link, a stopped host or
/// a silent firewall give timeouts or "no route"); a process paused or overloaded still has its listener, and the
/// kernel accepts for it. So when the member is unreachable and <c>probesRequired</c> connects in a row, spaced
/// <c>probeInterval</c> apart, were all refused, that incarnation is certainly gone: it cannot act on its locks and
/// cannot come back (a restart is a new uid), so there is nothing to wait for. Any other answer leaves the member to
/// the resolver, whose <c>stable-after</c> lets a partitioned minority fence itself first.
/// <para>
/// A round starts only when the member becomes unreachable, and a proof counts only while it stays unreachable: a
/// network that resets connections for a moment (LinkFaultProcessTests injects exactly that) makes connects refused
/// while the process lives, so a proof taken when the association dropped, before the detector spoke, could be stale
/// by the time the member becomes unreachable for another reason (measured alternative, rejected: see docs/dlm.md).
/// Any answer but a refusal ends the round without proof; the next unreachability starts a new one.
/// </para>
/// The assumption, documented for operators: nothing between members answers for a member with a TCP reset or an
/// ICMP port-unreachable (a firewall <c>reject</c> rule on the remoting port). Such a network must turn this off
/// (<c>Lockstep:Cluster:DownRefusingMembers=false</c>).
/// </summary>
public sealed class RefusedConnectDowningState
{
    private readonly Dictionary<string, Tracked> _members = [];

    public RefusedConnectDowningState(int probesRequired, TimeSpan probeInterval)
    {
        if (probesRequired < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(probesRequired), probesRequired, "at least one refused connect is needed as proof");
        }

        if (probeInterval < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(probeInterval), probeInterval, "the interval between probes must not be negative");
        }

        ProbesRequired = probesRequired;
        ProbeInterval = probeInterval;
    }

    public int ProbesRequired { get; }

    public TimeSpan ProbeInterval { get; }

    /// <summary>Whether the member's process was proven gone and the proof still holds.</summary>
    public bool IsProvenGone(string member) => _members.TryGetValue(member, out var m) && m.Proven;

    /// <summary>A member is (or was, in the first view) Up: it is now probed when it drops.</summary>
    public void MemberUp(string member) => _members.TryAdd(member, new Tracked());

    /// <summary>The failure detector marked the member unreachable.</summary>
    public IReadOnlyList<RefusedConnectEffect> Unreachable(string member)
    {
        if (!_members.TryGetValue(member, out var m) || m.Probing || m.Proven)
        {
            return [];
        }

        return [StartRound(member, m)];
    }

    /// <summary>The member answers heartbeats again: a running round proves nothing any more, nor does a proof (withdrawn).</summary>
    public IReadOnlyList<RefusedConnectEffect> Reachable(string member)
    {
        if (!_members.TryGetValue(member, out var m))
        {
            return [];
        }

        m.Probing = false;
        m.Round++;
        if (m.Proven)
        {
            m.Proven = false;
            return [new ProcessGoneWithdrawnEffect(member)];
        }

        return [];
    }

    /// <summary>
    /// The member was downed (by this node or another). It is not downed again, but a round still runs when it becomes
    /// unreachable here: its proof lets this node's DLM recover at once a member downed while it still looked reachable.
    /// </summary>
    public void Downed(string member)
    {
        if (_members.TryGetValue(member, out var m))
        {
            m.DownSent = true;
        }
    }

    /// <summary>The member was removed: nothing left to decide about it.</summary>
    public void Removed(string member) => _members.Remove(member);

    /// <summary>One probe answered. Answers of an older round, or of a member no longer tracked, are ignored.</summary>
    public IReadOnlyList<RefusedConnectEffect> ProbeAnswered(string member, int round, int attempt, ConnectProbeResult result)
    {
        if (!_members.TryGetValue(member, out var m) || !m.Probing || m.Round != round || attempt != m.Refusals + 1)
        {
            return [];
        }

        if (result != ConnectProbeResult.Refused)
        {
            m.Probing = false;
            return [new NotProvenEffect(member, result, m.Refusals)];
        }

        m.Refusals++;
        if (m.Refusals < ProbesRequired)
        {
            return [new ProbeConnectEffect(member, round, m.Refusals + 1, ProbeInterval)];
        }

        // A round runs only while the member is unreachable (Reachable ends it), so the proof is about now.
        m.Probing = false;
        m.Proven = true;
        if (m.DownSent)
        {
            return [new ProcessGoneEffect(member)];
        }

        m.DownSent = true;
        return [new ProcessGoneEffect(member), new DownMemberEffect(member)];
    }

    private static ProbeConnectEffect StartRound(string member, Tracked m)
    {
        m.Round++;
        m.Refusals = 0;
        m.Probing = true;
        return new ProbeConnectEffect(member, m.Round, 1, TimeSpan.Zero);
    }

    private sealed class Tracked
    {
        public bool Probing { get; set; }

        public bool Proven { get; set; }

        public bool DownSent { get; set; }

        public int Round { get; set; }

        public int Refusals { get; set; }
    }
}
