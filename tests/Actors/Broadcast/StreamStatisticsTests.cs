using Lockstep.Actors.Broadcast;
using Lockstep.Contracts.Broadcast;
using Xunit;

namespace Lockstep.Actors.Tests.Broadcast;

public sealed class StreamStatisticsTests
{
    [Fact]
    public void Counts_messages_by_type_and_failures()
    {
        var stats = new StreamStatistics();
        stats.Submitted(new NoopMessage("n1", 1));
        stats.Submitted(new MetadataUpdatedMessage("vm", 2));
        stats.Submitted(new NoopMessage("n1", 3));
        stats.Delivering(new BroadcastRound(1, "n2", [new NoopMessage("n2", 1), new VolumeCommandMessage(ClusterMessageType.Suspend, "vm")]));
        stats.CallFailed();

        Assert.Equal(new Dictionary<string, long> { ["Noop"] = 2, ["MetadataUpdated"] = 1 }, stats.SentByType);
        Assert.Equal(new Dictionary<string, long> { ["Noop"] = 1, ["Suspend"] = 1 }, stats.DeliveredByType);
        Assert.Equal(1, stats.Failed);
    }

    [Fact]
    public void Completion_percentiles_are_nearest_rank_over_the_kept_window()
    {
        var stats = new StreamStatistics();
        Assert.Equal(0, stats.CompletionMs(0.5));
        for (var ms = 1; ms <= 100; ms++)
        {
            stats.Completed(TimeSpan.FromMilliseconds(ms));
        }

        Assert.Equal(50, stats.CompletionMs(0.5));
        Assert.Equal(99, stats.CompletionMs(0.99));

        // Only the newest 4,096 count: after that many slow calls the fast ones are gone.
        for (var i = 0; i < StreamStatistics.LatenciesKept; i++)
        {
            stats.Completed(TimeSpan.FromMilliseconds(1000));
        }

        Assert.Equal(1000, stats.CompletionMs(0.5));
    }
}
