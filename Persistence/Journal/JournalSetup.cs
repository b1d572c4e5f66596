using Akka.Hosting;

namespace Lockstep.Persistence.Journal;

/// <summary>Plugs the journal into a node's Akka configuration.</summary>
public static class JournalSetup
{
    public static AkkaConfigurationBuilder WithLockstepJournal(this AkkaConfigurationBuilder builder, JournalSettings settings)
    {
        if (settings.Provider == JournalProvider.Sqlite)
        {
            EnableWriteAheadLog(settings.ConnectionString);
        }

        return builder.AddHocon(settings.ToHocon(), HoconAddMode.Prepend);
    }

    /// <summary>
    /// WAL lets readers of the shared journal file proceed while another node's process writes;
    /// the mode is stored in the file, so setting it once at start-up is enough.
    /// </summary>
    public static void EnableWriteAheadLog(string connectionString)
    {
        var builder = new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(connectionString);
        var directory = Path.GetDirectoryName(Path.GetFullPath(builder.DataSource));
        if (!string.IsNullOrEmpty(directory))
        {
            Directory.CreateDirectory(directory);
        }

        using var connection = new Microsoft.Data.Sqlite.SqliteConnection(connectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode=WAL;";
        command.ExecuteNonQuery();
    }
}
