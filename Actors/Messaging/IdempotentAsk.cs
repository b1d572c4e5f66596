using Akka.Actor;

namespace Lockstep.Actors.Messaging;

/// <summary>
/// An <c>Ask</c> for a request that may be asked twice (it is idempotent) over plain remoting, which loses whatever an
/// association drop catches in flight: asks again every <c>attempt</c> until an answer comes or <c>total</c> has passed.
/// For control messages that are not worth a reliable channel (the DLM's lockspace join: the same node id always gets
/// its slot back). Without it one lost message cost the caller the whole timeout and then failed.
/// </summary>
public static class IdempotentAsk
{
    /// <summary>
    /// Asks <paramref name="target"/> <paramref name="message"/>, again after each <paramref name="attempt"/> without an
    /// answer; throws <see cref="TimeoutException"/> naming <paramref name="what"/> when <paramref name="total"/> passes.
    /// </summary>
    public static async Task<T> AskAsync<T>(ICanTell target, object message, TimeSpan total, TimeSpan attempt, string what, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (attempt <= TimeSpan.Zero || total < attempt)
        {
            throw new ArgumentException($"attempt ({attempt}) must be positive and at most total ({total})");
        }

        var deadline = DateTime.UtcNow + total;
        var attempts = 0;
        while (true)
        {
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException($"{what} did not answer within {total.TotalSeconds:0.#} s ({attempts} attempts)");
            }

            attempts++;
            try
            {
                return await target.Ask<T>(message, left < attempt ? left : attempt, cancellationToken);
            }
            catch (AskTimeoutException)
            {
                // Lost on the way there or back (or slow): ask again; the target treats a repeat as the same request.
            }
        }
    }
}
