namespace Lockstep.Contracts.Messaging;

/// <summary>Marker for the messages of <c>lockstep messaging bench</c> (plain Ask baseline and layer payload).</summary>
public interface IMessagingBenchProtocol : IProtocolMessage
{
}

/// <summary>A benchmark request: the receiver answers <see cref="BenchPong"/> with the same value.</summary>
/// <param name="EntityId">The echo entity it is addressed to (plain Ask) or the layer's target id.</param>
/// <param name="Value">Echoed back, so the caller can check it got its own answer.</param>
public sealed record BenchPing(string EntityId, long Value) : IMessagingBenchProtocol, IWithEntityId;

/// <summary>The answer to <see cref="BenchPing"/>.</summary>
public sealed record BenchPong(long Value) : IMessagingBenchProtocol;
