using Akka.Actor;
using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

public sealed class LockTortureTallyTests
{
    private static readonly Address N1 = new("akka.tcp", "s", "127.0.0.1", 1);
    private static readonly Address N2 = new("akka.tcp", "s", "127.0.0.1", 2);
    private static readonly Address N3 = new("akka.tcp", "s", "127.0.0.1", 3);

    [Fact]
    public void Finishes_when_every_node_with_clients_answered_or_was_lost()
    {
        var tally = new LockTortureTally([(N1, 2), (N2, 2), (N3, 0)]);
        Assert.Equal([N1, N2], tally.Waiting.Order());

        tally.Answered(N1, new LockTortureDone("n1", 10, string.Empty));
        Assert.False(tally.Finished);
        tally.Gone(N2, "its node left the cluster");
        Assert.True(tally.Finished);
        Assert.Equal([new LockTortureDone("n1", 10, string.Empty)], tally.Done);
        Assert.Equal([new LockTortureLost(N2.ToString(), 2, "its node left the cluster")], tally.Lost);
    }

    [Fact]
    public void A_late_answer_of_a_lost_node_and_a_second_answer_change_nothing()
    {
        var tally = new LockTortureTally([(N1, 1), (N2, 1)]);
        tally.Gone(N2, "gone");
        tally.Answered(N2, new LockTortureDone("n2", 5, string.Empty));
        tally.Answered(N1, new LockTortureDone("n1", 5, string.Empty));
        tally.Answered(N1, new LockTortureDone("n1", 7, string.Empty));
        tally.Gone(N1, "gone");
        Assert.Equal([new LockTortureDone("n1", 5, string.Empty)], tally.Done);
        Assert.Equal([N2.ToString()], tally.Lost.Select(l => l.Node));
    }

    [Fact]
    public void The_deadline_loses_every_silent_node()
    {
        var tally = new LockTortureTally([(N1, 1), (N2, 3), (N3, 2)]);
        tally.Answered(N1, new LockTortureDone("n1", 5, string.Empty));
        tally.DeadlinePassed(TimeSpan.FromSeconds(65));
        Assert.True(tally.Finished);
        Assert.Equal([(N2.ToString(), 3), (N3.ToString(), 2)], tally.Lost.Select(l => (l.Node, l.Clients)).Order());
        Assert.All(tally.Lost, l => Assert.Equal("no answer within 65 s", l.Reason));
    }

    [Theory]
    [InlineData(100, 100, 0, true)] // nobody lost: exact
    [InlineData(100, 101, 0, false)]
    [InlineData(100, 100, 1, true)] // a lost client may have done none of its increments...
    [InlineData(100, 110, 1, true)] // ...or all of them
    [InlineData(100, 111, 1, false)] // but no more
    [InlineData(100, 99, 1, false)] // and the answered ones are never missing
    public void Ok_allows_between_none_and_all_of_the_lost_clients_increments(long expected, long found, int lostClients, bool ok)
    {
        IReadOnlyList<LockTortureLost> lost = lostClients == 0 ? [] : [new LockTortureLost("n3", lostClients, "gone")];
        var result = new LockTortureResult("counter", expected, found, [new LockTortureDone("n1", expected, string.Empty)], lost, Iterations: 10, TimeSpan.FromSeconds(1));
        Assert.Equal(ok, result.Ok);
    }

    [Fact]
    public void An_answering_nodes_error_fails_the_run()
    {
        var result = new LockTortureResult("counter", 5, 5, [new LockTortureDone("n1", 5, "timed out")], [], 10, TimeSpan.FromSeconds(1));
        Assert.False(result.Ok);
    }
}
