using Lockstep.Actors.Messaging;
using Xunit;

namespace Lockstep.Actors.Tests.Messaging;

public sealed class EnvelopeBatcherTests
{
    private static object Wrap(string channel, IReadOnlyList<object> items) => $"{channel}:[{string.Join(",", items)}]";

    [Fact]
    public void Only_the_first_envelope_asks_for_a_flush()
    {
        var batcher = new EnvelopeBatcher<string>(maxBatch: 8);
        Assert.True(batcher.Add("h1", "c", 1));
        Assert.False(batcher.Add("h1", "c", 2));
        Assert.False(batcher.Add("h2", "c", 3));
        batcher.Drain(Wrap);
        Assert.True(batcher.IsEmpty);
        Assert.True(batcher.Add("h1", "c", 4));
    }

    [Fact]
    public void Envelopes_are_grouped_per_destination_and_channel_in_order_and_a_single_one_is_not_wrapped()
    {
        var batcher = new EnvelopeBatcher<string>(maxBatch: 8);
        batcher.Add("h1", "a", 1);
        batcher.Add("h2", "a", 2);
        batcher.Add("h1", "a", 3);
        batcher.Add("h1", "b", 4);
        batcher.Add("h1", "a", 5);
        Assert.Equal([("h1", (object)"a:[1,3,5]"), ("h2", 2), ("h1", 4)], batcher.Drain(Wrap));
        Assert.Empty(batcher.Drain(Wrap));
    }

    [Fact]
    public void Batches_are_cut_at_the_limit()
    {
        var batcher = new EnvelopeBatcher<string>(maxBatch: 2);
        for (var i = 1; i <= 5; i++)
        {
            batcher.Add("h", "c", i);
        }

        Assert.Equal([("h", (object)"c:[1,2]"), ("h", "c:[3,4]"), ("h", 5)], batcher.Drain(Wrap));
    }

    [Fact]
    public void A_limit_below_one_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new EnvelopeBatcher<string>(0));
    }
}
