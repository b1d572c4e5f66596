using Akka.Configuration;

namespace Lockstep.Persistence.Journal;

/// <summary>Which database holds the event journal and snapshots.</summary>
public enum JournalProvider
{
    /// <summary>A SQLite file: nothing to install; a local cluster shares one file in its shared folder.</summary>
    Sqlite,

    /// <summary>PostgreSQL: the choice for a real cluster (docker-compose uses it).</summary>
    Postgres,
}

/// <summary>
/// The journal and snapshot store of a node, as Akka.Persistence.Sql HOCON. All nodes of one cluster
/// must point at the same database, because persistent sharded entities move between nodes.
/// </summary>
public sealed record JournalSettings(JournalProvider Provider, string ConnectionString)
{
    /// <summary>linq2db provider names; the most specific one avoids provider detection per connection.</summary>
    public string ProviderName => Provider switch
    {
        JournalProvider.Sqlite => "SQLite.MS",
        JournalProvider.Postgres => "PostgreSQL.15",
        _ => throw new ArgumentOutOfRangeException(nameof(Provider), Provider, "unknown journal provider"),
    };

    /// <summary>
    /// Builds settings from the user-facing names (<c>sqlite</c>, <c>postgres</c>). Without a connection
    /// string SQLite uses <c>{dataDirectory}/journal.db</c>; PostgreSQL requires one.
    /// </summary>
    public static JournalSettings From(string? provider, string? connectionString, string dataDirectory)
    {
        switch ((provider ?? "sqlite").Trim().ToLowerInvariant())
        {
            case "sqlite":
                return new JournalSettings(JournalProvider.Sqlite, string.IsNullOrWhiteSpace(connectionString)
                    ? SqliteConnectionString(Path.Combine(dataDirectory, "journal.db"))
                    : connectionString);
            case "postgres" or "postgresql":
                if (string.IsNullOrWhiteSpace(connectionString))
                {
                    throw new ArgumentException("--journal postgres needs --connection-string (e.g. \"Host=db;Username=lockstep;Password=…;Database=lockstep\").");
                }

                return new JournalSettings(JournalProvider.Postgres, connectionString);
            default:
                throw new ArgumentException($"Unknown journal '{provider}': use sqlite or postgres.");
        }
    }

    /// <summary>
    /// A SQLite connection string for a file that several processes may share: a generous busy timeout
    /// because a local cluster's nodes write the same file.
    /// </summary>
    public static string SqliteConnectionString(string path) => $"Data Source={Path.GetFullPath(path)};Default Timeout=30;Pooling=True";

    /// <summary>Akka.Persistence.Sql configuration for journal, snapshot store and query journal.</summary>
    public Config ToHocon()
    {
        var connection = Quote(ConnectionString);
        var provider = Quote(ProviderName);
        return ConfigurationFactory.ParseString($$"""
            akka.persistence {
              journal {
                plugin = "akka.persistence.journal.sql"
                sql {
                  class = "Akka.Persistence.Sql.Journal.SqlWriteJournal, Akka.Persistence.Sql"
                  connection-string = {{connection}}
                  provider-name = {{provider}}
                  auto-initialize = on
                }
              }
              query.journal.sql {
                class = "Akka.Persistence.Sql.Query.SqlReadJournalProvider, Akka.Persistence.Sql"
                connection-string = {{connection}}
                provider-name = {{provider}}
              }
              snapshot-store {
                plugin = "akka.persistence.snapshot-store.sql"
                sql {
                  class = "Akka.Persistence.Sql.Snapshot.SqlSnapshotStore, Akka.Persistence.Sql"
                  connection-string = {{connection}}
                  provider-name = {{provider}}
                  auto-initialize = on
                }
              }
            }
            """);
    }

    private static string Quote(string value) =>
        "\"" + value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
}
