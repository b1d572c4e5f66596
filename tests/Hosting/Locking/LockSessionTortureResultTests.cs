using Lockstep.Hosting.Locking;
using Xunit;

namespace Lockstep.Hosting.Tests.Locking;

public sealed class LockSessionTortureResultTests
{
    private static LockSessionTortureResult Result(long completed, long uncertain, long found, bool shared = false, long unanswered = 0, string[]? errors = null) =>
        new(completed, uncertain, found, unanswered, Lost: 0, Reconnects: 0, NotValid: 0, errors ?? [], shared);

    [Theory]
    [InlineData(100, 0, 100, true)]
    [InlineData(100, 2, 102, true)]
    [InlineData(100, 2, 103, false)]
    [InlineData(100, 0, 99, false)]
    public void A_run_of_its_own_needs_the_counter_within_completed_and_completed_plus_uncertain(long completed, long uncertain, long found, bool ok) =>
        Assert.Equal(ok, Result(completed, uncertain, found).Ok);

    [Fact]
    public void A_shared_counter_may_hold_other_runs_increments_but_never_fewer_than_this_runs()
    {
        Assert.True(Result(100, 0, 350, shared: true).Ok);
        Assert.False(Result(100, 0, 99, shared: true).Ok);
    }

    [Fact]
    public void An_unanswered_request_or_an_unfinished_client_fails_even_a_shared_run()
    {
        Assert.False(Result(100, 0, 300, shared: true, unanswered: 1).Ok);
        Assert.False(Result(100, 0, 300, shared: true, errors: ["client n1/c0: EX request answered Fenced"]).Ok);
    }
}
