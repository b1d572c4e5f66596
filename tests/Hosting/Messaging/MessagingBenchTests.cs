using Lockstep.Hosting.Messaging;
using Xunit;

namespace Lockstep.Hosting.Tests.Messaging;

/// <summary>The bench itself on three real in-process nodes: every call answered with its own value, in every run.</summary>
public sealed class MessagingBenchTests
{
    [Fact]
    public async Task Every_call_of_every_run_gets_its_own_answer_including_under_injected_faults()
    {
        using var log = new StringWriter();

        var runs = await MessagingBench.RunAsync(new MessagingBenchOptions(Requests: 300, Callers: 16, Faults: true), log, CancellationToken.None);

        Assert.Equal(3, runs.Count);
        Assert.All(runs, r => Assert.Equal((300, 0), (r.Calls, r.Failed)));
        Assert.Contains("faults injected:", log.ToString(), StringComparison.Ordinal);
    }
}
