using Grpc.Core;
using Lockstep.Hosting.Locking.Grpc;

namespace Lockstep.Integration.Tests.Locking;

/// <summary>Reads a lock session's server messages one at a time, failing with a message if none comes in time.</summary>
internal sealed class GrpcInbox(IAsyncStreamReader<ServerMessage> reader, TimeSpan patience)
{
    public async Task<ServerMessage> NextAsync()
    {
        using var timeout = new CancellationTokenSource(patience);
        if (!await reader.MoveNext(timeout.Token))
        {
            throw new InvalidOperationException("the server closed the stream");
        }

        return reader.Current;
    }

    /// <summary>The completion answering <paramref name="requestId"/>, skipping basts and recovery messages.</summary>
    public async Task<Completion> CompletionAsync(ulong requestId)
    {
        while (true)
        {
            var message = await NextAsync();
            if (message.BodyCase == ServerMessage.BodyOneofCase.Completion && message.Completion.RequestId == requestId)
            {
                return message.Completion;
            }

            if (message.BodyCase == ServerMessage.BodyOneofCase.Error)
            {
                throw new InvalidOperationException($"request {message.Error.RequestId}: {message.Error.Message}");
            }
        }
    }
}
