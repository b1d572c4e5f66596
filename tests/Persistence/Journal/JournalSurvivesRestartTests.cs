using Akka.Actor;
using Akka.Configuration;
using Akka.Persistence;
using Lockstep.Persistence.Journal;
using Xunit;

namespace Lockstep.Persistence.Tests.Journal;

/// <summary>
/// Events and a snapshot written by one actor system are recovered by a fresh one on the same
/// database — SQLite file and a real PostgreSQL (started by scripts/test, passed in LOCKSTEP_TEST_PG).
/// </summary>
public sealed class JournalSurvivesRestartTests
{
    [Fact]
    public async Task Sqlite_journal_keeps_events_and_snapshot_across_restart()
    {
        var folder = Directory.CreateTempSubdirectory("lockstep-journal-");
        try
        {
            var settings = JournalSettings.From("sqlite", null, folder.FullName);
            JournalSetup.EnableWriteAheadLog(settings.ConnectionString);
            await AssertSurvivesRestart(settings);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            folder.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Postgres_journal_keeps_events_and_snapshot_across_restart()
    {
        var connection = Environment.GetEnvironmentVariable("LOCKSTEP_TEST_PG");
        Assert.False(string.IsNullOrWhiteSpace(connection),
            "LOCKSTEP_TEST_PG is not set: run the tests through scripts/test, which starts PostgreSQL (scripts/postgres-test-server).");
        await AssertSurvivesRestart(JournalSettings.From("postgres", connection, Path.GetTempPath()));
    }

    [Fact]
    public void Postgres_without_connection_string_is_refused_with_a_clear_message()
    {
        var error = Assert.Throws<ArgumentException>(() => JournalSettings.From("postgres", null, "/tmp"));
        Assert.Contains("--connection-string", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_journal_is_refused()
    {
        var error = Assert.Throws<ArgumentException>(() => JournalSettings.From("mongodb", null, "/tmp"));
        Assert.Contains("mongodb", error.Message, StringComparison.Ordinal);
    }

    private static async Task AssertSurvivesRestart(JournalSettings settings)
    {
        // A unique id per run: the PostgreSQL database outlives the test.
        var persistenceId = $"counter-{Guid.NewGuid():N}";
        var config = settings.ToHocon().WithFallback(ConfigurationFactory.ParseString("akka.loglevel = WARNING"));

        var first = ActorSystem.Create("journal-first", config);
        try
        {
            var counter = first.ActorOf(Props.Create(() => new Counter(persistenceId)));
            for (var i = 1; i <= 5; i++)
            {
                Assert.Equal(i, await counter.Ask<int>(new Counter.Add(i), TimeSpan.FromSeconds(20)));
            }

            Assert.True(await counter.Ask<bool>(Counter.Snapshot.Instance, TimeSpan.FromSeconds(20)), "snapshot was not saved");
            for (var i = 6; i <= 8; i++)
            {
                await counter.Ask<int>(new Counter.Add(i), TimeSpan.FromSeconds(20));
            }
        }
        finally
        {
            await first.Terminate();
        }

        var second = ActorSystem.Create("journal-second", config);
        try
        {
            var counter = second.ActorOf(Props.Create(() => new Counter(persistenceId)));
            var state = await counter.Ask<Counter.State>(Counter.Get.Instance, TimeSpan.FromSeconds(20));
            Assert.Equal(Enumerable.Range(1, 8).Sum(), state.Total);
            Assert.Equal(8, state.Count);
            Assert.True(state.RecoveredFromSnapshot, "recovery did not start from the saved snapshot");
            Assert.Equal(3, state.EventsReplayed);
        }
        finally
        {
            await second.Terminate();
        }
    }

    private sealed class Counter : ReceivePersistentActor
    {
        private int _total;
        private int _count;
        private bool _fromSnapshot;
        private int _replayed;
        private IActorRef? _snapshotRequester;

        public Counter(string persistenceId)
        {
            PersistenceId = persistenceId;
            Recover<SnapshotOffer>(offer =>
            {
                var snapshot = (int[])offer.Snapshot;
                (_total, _count, _fromSnapshot) = (snapshot[0], snapshot[1], true);
            });
            Recover<int>(value =>
            {
                Apply(value);
                _replayed++;
            });
            Command<Add>(add => Persist(add.Value, value =>
            {
                Apply(value);
                Sender.Tell(_count);
            }));
            Command<Snapshot>(_ =>
            {
                _snapshotRequester = Sender;
                SaveSnapshot(new[] { _total, _count });
            });
            Command<SaveSnapshotSuccess>(_ => _snapshotRequester?.Tell(true));
            Command<SaveSnapshotFailure>(_ => _snapshotRequester?.Tell(false));
            Command<Get>(_ => Sender.Tell(new State(_total, _count, _fromSnapshot, _replayed)));
        }

        public override string PersistenceId { get; }

        private void Apply(int value)
        {
            _total += value;
            _count++;
        }

        public sealed record Add(int Value);

        public sealed record Snapshot
        {
            public static readonly Snapshot Instance = new();
        }

        public sealed record Get
        {
            public static readonly Get Instance = new();
        }

        public sealed record State(int Total, int Count, bool RecoveredFromSnapshot, int EventsReplayed);
    }
}
