namespace Lockstep.Hosting.Node;

/// <summary>Starts a node and turns start-up failures into one line and a non-zero exit.</summary>
internal static class NodeRunner
{
    public static async Task<int> RunAsync(IConfiguration configuration, CancellationToken cancellation)
    {
        WebApplication app;
        try
        {
            app = NodeHost.Build(configuration);
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"lockstep: invalid configuration: {ex.GetBaseException().Message}");
            return 2;
        }

        try
        {
            await app.RunAsync(cancellation);
            return 0;
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"lockstep: cannot start: {ex.GetBaseException().Message}");
            return 1;
        }
    }
}
