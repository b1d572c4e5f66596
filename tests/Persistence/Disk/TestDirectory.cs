namespace Lockstep.Persistence.Tests.Disk;

/// <summary>
/// A scratch folder on a real disk filesystem (/var/tmp, not tmpfs) so O_DIRECT, fallocate and SEEK_HOLE
/// behave as on a leg; removed on dispose.
/// </summary>
public sealed class TestDirectory : IDisposable
{
    public TestDirectory()
    {
        Path = System.IO.Path.Combine("/var/tmp", "lockstep-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover scratch folder must not fail a test.
        }
    }
}
