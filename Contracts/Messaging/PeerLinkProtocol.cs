namespace Lockstep.Contracts.Messaging;

/// <summary>
/// Asks a node's peer-link actor (<c>/user/lockstep-link</c>) where its link listener is. Sent over Akka.Remote
/// once per peer and connection attempt; the answer is <see cref="PeerLinkEndpoint"/>.
/// </summary>
public sealed record PeerLinkQuery : IMessagingProtocol
{
    /// <summary>The single instance.</summary>
    public static readonly PeerLinkQuery Instance = new();
}

/// <summary>A node's link listener: the TCP port on the host of its Akka address, and the node incarnation it serves.</summary>
/// <param name="Port">TCP port of the listener.</param>
/// <param name="Uid">The answering node's incarnation (its cluster unique-address uid).</param>
public sealed record PeerLinkEndpoint(int Port, long Uid) : IMessagingProtocol;
