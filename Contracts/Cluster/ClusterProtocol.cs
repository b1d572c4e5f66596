namespace Lockstep.Contracts.Cluster;

/// <summary>Marker for node-level messages (identity, health) exchanged between Lockstep nodes.</summary>
public interface IClusterProtocol : IProtocolMessage
{
}

/// <summary>Asks a node who it is; answered with <see cref="NodeIdentity"/>.</summary>
public sealed record GetNodeIdentity : IClusterProtocol
{
    public static readonly GetNodeIdentity Instance = new();
}

/// <summary>A node's stable id (maps to lockspace slots) and the address its cluster member has.</summary>
public sealed record NodeIdentity(string NodeId, string Address, DateTimeOffset StartedAt) : IClusterProtocol;
