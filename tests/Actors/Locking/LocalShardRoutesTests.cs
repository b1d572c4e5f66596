using Lockstep.Actors.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

public sealed class LocalShardRoutesTests
{
    [Fact]
    public void A_shard_not_known_to_be_local_always_takes_the_layer()
    {
        var routes = new LocalShardRoutes();
        Assert.False(routes.TryDirect("7"));
        routes.LayerCallFinished("7");
        Assert.False(routes.TryDirect("7"));
        Assert.False(routes.IsDirect("7"));
        Assert.Equal(0, routes.DirectShards);
    }

    [Fact]
    public void A_local_shard_switches_only_once_every_layer_call_to_it_finished_and_then_stays_switched()
    {
        var routes = new LocalShardRoutes();
        Assert.False(routes.TryDirect("3"));
        Assert.False(routes.TryDirect("3"));
        routes.ShardIsLocal("3");

        // Two calls still in the layer: a Tell now could overtake them.
        Assert.False(routes.TryDirect("3"));
        routes.LayerCallFinished("3");
        routes.LayerCallFinished("3");

        // One left open, so this send takes the layer too (and opens a call of its own).
        Assert.False(routes.TryDirect("3"));
        Assert.False(routes.IsDirect("3"));
        routes.LayerCallFinished("3");
        routes.LayerCallFinished("3");

        Assert.True(routes.TryDirect("3"));
        Assert.True(routes.IsDirect("3"));
        Assert.True(routes.TryDirect("3"));
        Assert.Equal(1, routes.DirectShards);

        // Other shards are decided on their own.
        Assert.False(routes.TryDirect("4"));
        Assert.False(routes.IsDirect("4"));
    }

    [Fact]
    public void A_shard_known_local_before_its_first_command_goes_direct_at_once()
    {
        var routes = new LocalShardRoutes();
        routes.ShardIsLocal("9");
        Assert.True(routes.TryDirect("9"));
    }

    [Fact]
    public void Finishing_a_layer_call_that_was_never_opened_is_a_bug_and_says_so()
    {
        var routes = new LocalShardRoutes();
        Assert.Throws<InvalidOperationException>(() => routes.LayerCallFinished("1"));
        routes.ShardIsLocal("1");
        Assert.True(routes.TryDirect("1"));
        var error = Assert.Throws<InvalidOperationException>(() => routes.LayerCallFinished("1"));
        Assert.Contains("lock shard 1", error.Message);
    }

    [Fact]
    public void Concurrent_sends_and_finishes_never_switch_while_a_layer_call_is_open()
    {
        // Many threads play client (send) and outbox (finish) at once; whenever a send is answered "direct", no layer call
        // of that shard may be open at that moment (counted independently here).
        var routes = new LocalShardRoutes();
        var open = 0;
        var violations = 0;
        var gate = new object();
        Parallel.For(0, 20_000, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            if (i == 5_000)
            {
                routes.ShardIsLocal("s");
            }

            lock (gate)
            {
                if (routes.TryDirect("s"))
                {
                    if (open != 0)
                    {
                        violations++;
                    }

                    return;
                }

                open++;
            }

            Thread.SpinWait(50);
            lock (gate)
            {
                routes.LayerCallFinished("s");
                open--;
            }
        });
        Assert.Equal(0, violations);

        // Under steady traffic the switch may not have come yet (a call was always open); with none open it must.
        Assert.Equal(0, open);
        Assert.True(routes.TryDirect("s"));
        Assert.True(routes.IsDirect("s"));
    }
}
