using Akka.Hosting;
using Lockstep.Persistence.Journal;
using Microsoft.Extensions.Options;

namespace Lockstep.Hosting.Node;

/// <summary>Builds the web application that is one running Lockstep node.</summary>
public static class NodeHost
{
    /// <summary>Builds (does not start) the node from configuration already layered with flags.</summary>
    public static WebApplication Build(IConfiguration configuration)
    {
        var options = configuration.GetSection(LockstepOptions.SectionName).Get<LockstepOptions>() ?? new LockstepOptions();
        options.DataDirectory = Path.GetFullPath(options.DataDirectory);
        Directory.CreateDirectory(options.DataDirectory);

        // Validate the journal choice before anything listens, so a bad flag is one clear line.
        var journal = JournalSettings.From(options.Journal.Provider, options.Journal.ConnectionString, options.DataDirectory);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            // The host's default appsettings sources reload on change, which watches the content root recursively
            // with inotify, and the content root defaults to the working directory. A node started where its data
            // lives (the default --data is ./data) then woke a watcher thread and lstat'ed a leg for every write to
            // it (perf: 7-12 % of the node's CPU under NBD writes; started in /, it watched the whole filesystem).
            // ServeCommand has layered the configuration already, so the host needs no reloading and no watched root.
            ContentRootPath = AppContext.BaseDirectory,
            Args = ["--hostBuilder:reloadConfigOnChange=false"],
        });
        builder.Configuration.AddConfiguration(configuration);
        builder.WebHost.UseKestrel(kestrel =>
        {
            kestrel.Listen(System.Net.IPAddress.Parse(ResolveIp(options.Http.Host)), options.Http.Port);
        });
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(Options.Create(options));
        builder.Services.AddAkka(ClusterSetup.SystemName, (akka, services) =>
        {
            akka.WithLockstepCluster(options).WithLockstepJournal(journal);
            NodeModules.ConfigureAkka(akka, options, services);
        });
        NodeModules.ConfigureServices(builder.Services, options);

        var app = builder.Build();
        NodeModules.MapEndpoints(app, options);
        return app;
    }

    private static string ResolveIp(string host) =>
        host is "localhost" ? "127.0.0.1" : host is "*" or "0.0.0.0" ? "0.0.0.0" : host;
}
