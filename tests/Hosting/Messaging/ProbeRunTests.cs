using Lockstep.Actors.Messaging;
using Lockstep.Contracts;
using Lockstep.Contracts.Messaging;
using Lockstep.Hosting.Messaging;
using Lockstep.Hosting.Node;
using Xunit;

namespace Lockstep.Hosting.Tests.Messaging;

public sealed class ProbeRunTests
{
    [Theory]
    [InlineData(0, 1, 10, "requests must be 1..")]
    [InlineData(1_000_001, 1, 10, "requests must be 1..")]
    [InlineData(10, 0, 10, "callers must be 1..")]
    [InlineData(10, 1025, 10, "callers must be 1..")]
    [InlineData(10, 1, 0, "timeoutSeconds must be 1..")]
    public void Bad_run_options_get_one_clear_line(int requests, int callers, int seconds, string expected)
    {
        var problem = new ProbeRunOptions(requests, callers, TimeSpan.FromSeconds(seconds)).Validate();
        Assert.NotNull(problem);
        Assert.StartsWith(expected, problem);
    }

    [Fact]
    public void Only_a_status_with_the_callers_own_run_and_index_counts()
    {
        var outcome = new ProbeOutcome("r", 4);
        outcome.Answered(0, new ProbeDone("r", 0, "n1"));
        outcome.Answered(1, new ProbeDone("r", 1, "n2"));
        outcome.Answered(2, new ProbeDone("r", 3, "n2"));     // someone else's status
        outcome.Answered(3, new ProbeDone("other", 3, "n2"));
        outcome.Failed("boom");
        outcome.Failed("boom");
        var result = outcome.Result(TimeSpan.FromSeconds(2));
        Assert.Equal((2, 2, 2), (result.WithStatus, result.WrongStatus, result.Failed));
        Assert.Equal(2, result.Errors["boom"]);
        Assert.Equal(new Dictionary<string, int> { ["n1"] = 1, ["n2"] = 1 }, result.RanOn);
        Assert.Equal(1.0, result.PerSecond);
    }

    [Fact]
    public async Task A_run_sends_every_index_once_spread_over_the_probe_entity_types()
    {
        var sender = new RecordingSender();
        var result = await ProbeRunner.RunAsync(sender, "r", new ProbeRunOptions(100, 7, TimeSpan.FromSeconds(30)), CancellationToken.None);
        Assert.Equal((100, 100, 0, 0), (result.Requests, result.WithStatus, result.WrongStatus, result.Failed));
        Assert.Equal(Enumerable.Range(0, 100), sender.Sent.Select(s => s.Index).Order());
        Assert.All(sender.Sent, s => Assert.Equal(ProbeLedger.EntityTypes[s.Index % ProbeLedger.EntityTypes.Count], s.EntityType));
    }

    [Fact]
    public async Task A_caller_whose_send_fails_is_counted_with_its_reason()
    {
        var sender = new RecordingSender { FailEvery = 10 };
        var result = await ProbeRunner.RunAsync(sender, "r", new ProbeRunOptions(100, 3, TimeSpan.FromSeconds(30)), CancellationToken.None);
        Assert.Equal((90, 10), (result.WithStatus, result.Failed));
        Assert.Equal(10, result.Errors["ReliableMessagingException: down"]);
    }

    [Fact]
    public void Messaging_settings_map_onto_the_layer_and_bad_ones_are_named()
    {
        var section = new LockstepOptions.MessagingSection { HolderCap = 10, MaxInFlightPerChannel = 3, InitialResendMs = 50, MaxResendMs = 500, TickIntervalMs = 20, PersistedEntityTypes = ["volume"] };
        Assert.Null(section.Validate());
        var layer = MessagingService.ToLayerOptions(section);
        Assert.Equal((10, 3, 50L, 500L), (layer.HolderCap, layer.Outbox.MaxInFlightPerChannel, layer.Outbox.InitialResendMs, layer.Outbox.MaxResendMs));
        Assert.Equal(TimeSpan.FromMilliseconds(20), layer.TickInterval);
        Assert.Contains("volume", layer.PersistedEntityTypes);

        Assert.Contains("HolderCap must be at least 2", new LockstepOptions.MessagingSection { HolderCap = 1 }.Validate());
        Assert.Contains("InitialResendMs <= MaxResendMs", new LockstepOptions.MessagingSection { InitialResendMs = 500, MaxResendMs = 100 }.Validate());
        Assert.Contains("'a|b'", new LockstepOptions.MessagingSection { PersistedEntityTypes = ["a|b"] }.Validate());
    }

    private sealed class RecordingSender : IReliableSender
    {
        public System.Collections.Concurrent.ConcurrentBag<(string EntityType, int Index)> Sent { get; } = [];

        public int FailEvery { get; init; }

        public Task<TStatus> SendAsync<TStatus>(string entityType, string entityId, IProtocolMessage payload, CancellationToken cancellationToken = default)
            where TStatus : IProtocolMessage
        {
            var request = (ProbeRequest)payload;
            Sent.Add((entityType, request.Index));
            if (FailEvery > 0 && request.Index % FailEvery == 0)
            {
                throw new ReliableMessagingException("down");
            }

            return Task.FromResult((TStatus)(IProtocolMessage)new ProbeDone(request.RunId, request.Index, "n"));
        }
    }
}
