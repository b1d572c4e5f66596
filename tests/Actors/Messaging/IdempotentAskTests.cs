using Akka.Actor;
using Akka.TestKit.Xunit2;
using Lockstep.Actors.Messaging;
using Xunit;

namespace Lockstep.Actors.Tests.Messaging;

public sealed class IdempotentAskTests : TestKit
{
    /// <summary>Loses the first <c>lost</c> questions (what an association drop does) and answers the rest with how many it got.</summary>
    private sealed class LosesFirst : ReceiveActor
    {
        private int _asked;

        public LosesFirst(int lost) => Receive<string>(_ =>
        {
            if (++_asked > lost)
            {
                Sender.Tell(_asked);
            }
        });
    }

    [Fact]
    public async Task A_lost_question_is_asked_again_and_the_answer_returned()
    {
        var target = Sys.ActorOf(Props.Create(() => new LosesFirst(2)));
        var answer = await IdempotentAsk.AskAsync<int>(target, "join", TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(200), "the registry");
        Assert.Equal(3, answer);
    }

    [Fact]
    public async Task A_target_that_never_answers_fails_with_a_timeout_naming_it_and_the_attempts()
    {
        var target = Sys.ActorOf(Props.Create(() => new LosesFirst(int.MaxValue)));
        var failure = await Assert.ThrowsAsync<TimeoutException>(() =>
            IdempotentAsk.AskAsync<int>(target, "join", TimeSpan.FromMilliseconds(600), TimeSpan.FromMilliseconds(200), "the registry"));
        Assert.StartsWith("the registry did not answer within 0.6 s (", failure.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("(1 attempts)", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_attempt_longer_than_the_total_is_a_usage_error() =>
        await Assert.ThrowsAsync<ArgumentException>(() =>
            IdempotentAsk.AskAsync<int>(TestActor, "join", TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2), "the registry"));
}
