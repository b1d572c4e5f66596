using Xunit;

namespace Lockstep.Actors.Tests;

/// <summary>Waiting for state that no event announces (cluster membership views, gates): poll it, with a deadline.</summary>
internal static class Polling
{
    /// <summary>Returns once <paramref name="condition"/> holds; fails the test after <paramref name="patience"/> naming <paramref name="what"/>.</summary>
    public static async Task UntilAsync(Func<bool> condition, TimeSpan patience, string what)
    {
        var deadline = DateTime.UtcNow + patience;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"waited {patience} for {what}");
            await Task.Delay(50);
        }
    }
}
