using Akka.Actor;
using Lockstep.Actors.Messaging;
using Lockstep.Contracts;
using Lockstep.Contracts.Messaging;
using Xunit;

namespace Lockstep.Actors.Tests.Messaging;

/// <summary>Co-located and node-pinned entity types, prefix handlers, and abandoning channels of a removed node.</summary>
public sealed class MessagingRoutesTests
{
    private static readonly SerializedPayload Body = new(1, "", [1]);
    private const string NodeB = "akka.tcp://lockstep@10.0.0.2:4053";

    [Fact]
    public void A_pinned_entity_type_names_the_node_incarnation_and_round_trips()
    {
        var type = PinnedEntityType.Format("lock-reply", 42, NodeB);
        Assert.Equal("lock-reply@42@akka.tcp://lockstep@10.0.0.2:4053", type);
        Assert.True(PinnedEntityType.TryParse(type, out var kind, out var uid, out var address));
        Assert.Equal(("lock-reply", 42L, NodeB), (kind, uid, address));
        Assert.True(PinnedEntityType.IsPinnedTo(type, 42));
        Assert.False(PinnedEntityType.IsPinnedTo(type, 43));

        // It is a valid channel entity type (no '|'), and the channel parses back to it.
        var channel = MessagingChannel.Format(type, "akka.tcp://lockstep@10.0.0.1:4053", 7);
        Assert.True(MessagingChannel.TryParse(channel, out var parsedType, out _, out var senderUid));
        Assert.Equal((type, 7L), (parsedType, senderUid));
    }

    [Theory]
    [InlineData("lock")]
    [InlineData("lock#5")]
    [InlineData("probe-1")]
    [InlineData("a@b")]
    [InlineData("a@x@addr")]
    [InlineData("a@1@")]
    [InlineData("@1@addr")]
    [InlineData("")]
    public void Other_entity_types_are_not_pinned(string entityType)
    {
        Assert.False(PinnedEntityType.TryParse(entityType, out _, out _, out _));
        Assert.False(PinnedEntityType.IsPinnedTo(entityType, 1));
    }

    [Theory]
    [InlineData("")]
    [InlineData("a@b")]
    [InlineData("a|b")]
    public void A_bad_kind_is_refused(string kind) =>
        Assert.Throws<ArgumentException>(() => PinnedEntityType.Format(kind, 1, NodeB));

    [Fact]
    public void Colocated_routes_match_by_prefix_only()
    {
        var routes = new MessagingRoutes();
        var region = new FakeRef("lock-region");
        routes.RegisterColocated("lock#", region);
        Assert.True(routes.TryGetColocated("lock#17", out var found));
        Assert.Same(region, found);
        Assert.False(routes.TryGetColocated("lock", out _));
        Assert.False(routes.TryGetColocated("probe-0", out _));
    }

    [Fact]
    public async Task A_prefix_handler_serves_its_family_and_an_exact_registration_wins()
    {
        var registry = new MessageHandlerRegistry();
        registry.RegisterPrefix("lock#", (_, _) => Task.FromResult<IProtocolMessage>(new ChannelPurged("prefix", 0)));
        registry.Register("lock#3", (_, _) => Task.FromResult<IProtocolMessage>(new ChannelPurged("exact", 0)));
        Assert.True(registry.TryGet("lock#9", out var byPrefix));
        Assert.Equal("prefix", ((ChannelPurged)await byPrefix(null!, null!)).ChannelId);
        Assert.True(registry.TryGet("lock#3", out var exact));
        Assert.Equal("exact", ((ChannelPurged)await exact(null!, null!)).ChannelId);
        Assert.False(registry.TryGet("lockx", out _));

        // The removal purge iterates exact entity types only (prefix families are not enumerable).
        Assert.Equal(["lock#3"], registry.EntityTypes);
    }

    [Fact]
    public void Abandoning_a_removed_nodes_pinned_channels_fails_their_calls_and_later_sends_but_not_other_channels()
    {
        var o = new OutboxState<string>("akka.tcp://lockstep@10.0.0.1:4053", 7, new OutboxLimits(2, 100, 100, 800));
        var toB = PinnedEntityType.Format("lock-reply", 42, NodeB);
        var toC = PinnedEntityType.Format("lock-reply", 43, "akka.tcp://lockstep@10.0.0.3:4053");
        o.Send(toB, "lock-client", Body, "b1", 0);
        o.Send(toB, "lock-client", Body, "b2", 0);
        o.Send(toB, "lock-client", Body, "b3-queued", 0);
        o.Send(toC, "lock-client", Body, "c1", 0);
        o.Send("lock#5", "ls/r", Body, "l1", 0);

        var failed = o.Abandon(type => PinnedEntityType.IsPinnedTo(type, 42), "B was removed").Cast<OutboxFail<string>>().ToList();
        Assert.Equal(["b1", "b2", "b3-queued"], failed.Select(f => f.Caller).Order());
        Assert.All(failed, f => Assert.Equal("B was removed", f.Reason));
        Assert.Equal(2, o.Pending);
        Assert.Equal((0, 0, 0), o.Describe(toB));
        Assert.Equal((0, 1, 0), o.Describe(toC));

        // A late send to the removed incarnation fails at once instead of being re-sent forever.
        var late = Assert.IsType<OutboxFail<string>>(Assert.Single(o.Send(toB, "lock-client", Body, "late", 5)));
        Assert.Equal(("late", "B was removed"), (late.Caller, late.Reason));

        // Nothing of it is re-sent any more; the other channels still are.
        var resent = o.Tick(10_000).OfType<OutboxTransmit<string>>().Select(t => t.Request.ChannelId).ToList();
        Assert.Equal(2, resent.Count);
        Assert.DoesNotContain(resent, c => c.StartsWith(toB, StringComparison.Ordinal));
    }

    private sealed class FakeRef(string name) : MinimalActorRef
    {
        public override ActorPath Path { get; } = new RootActorPath(new Address("akka", "test")) / name;

        public override IActorRefProvider Provider => throw new NotSupportedException();
    }
}
