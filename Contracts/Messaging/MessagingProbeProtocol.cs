namespace Lockstep.Contracts.Messaging;

/// <summary>
/// Marker for the diagnostic probe of the reliable layer: <c>lockstep serve</c> registers a probe handler on
/// every node; it records each (channel, seq) it runs, so a test between real processes can count runs per
/// request and check per-channel order (<c>POST /v1/messaging/probe/run</c>, <c>GET /v1/messaging/probe/stats</c>).
/// </summary>
public interface IMessagingProbeProtocol : IProtocolMessage
{
}

/// <summary>One probe request: request <paramref name="Index"/> of probe run <paramref name="RunId"/>.</summary>
/// <param name="RunId">The run that sent it (unique per <c>probe/run</c> call).</param>
/// <param name="Index">The request's number in the run, from 0.</param>
public sealed record ProbeRequest(string RunId, int Index) : IMessagingProbeProtocol;

/// <summary>The probe handler's status: echoes the request, names the node whose handler ran it.</summary>
/// <param name="RunId">As in the request, so the caller can check it got its own status.</param>
/// <param name="Index">As in the request.</param>
/// <param name="Node">Node id of the node that ran the handler.</param>
public sealed record ProbeDone(string RunId, int Index, string Node) : IMessagingProbeProtocol;
