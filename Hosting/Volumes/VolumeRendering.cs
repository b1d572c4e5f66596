using Spectre.Console;

namespace Lockstep.Hosting.Volumes;

/// <summary>Tables and lines of the volume CLI (pure: tests render them to text).</summary>
public static class VolumeRendering
{
    /// <summary>One row per volume.</summary>
    public static Table ListTable(VolumeListView list)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn(new TableColumn("Name").NoWrap()).AddColumn("Status").AddColumn(new TableColumn("Size").RightAligned())
            .AddColumn(new TableColumn("Chunk").RightAligned()).AddColumn("Cache").AddColumn("Legs").AddColumn(new TableColumn("Gen").RightAligned()).AddColumn("Here");
        foreach (var v in list.Volumes)
        {
            var inSync = v.Legs.Count(l => l.State == "inSync");
            var legs = $"{inSync}/{v.Legs.Count} in sync";
            table.AddRow(
                Markup.Escape(v.Name),
                StatusMarkup(v.Status),
                SizeText.Format(v.SizeBytes),
                SizeText.Format(v.ChunkSizeBytes),
                v.Cache,
                inSync == v.Legs.Count ? legs : $"[yellow]{legs}[/]",
                v.Generation.ToString(System.Globalization.CultureInfo.InvariantCulture),
                v.OpenHere ? $"open, {v.Connections} conn" : "");
        }

        return table;
    }

    /// <summary>The volume's properties, then one row per leg.</summary>
    public static IEnumerable<Spectre.Console.Rendering.IRenderable> Show(VolumeView v)
    {
        var grid = new Grid().AddColumn(new GridColumn().NoWrap()).AddColumn();
        grid.AddRow("Name", Markup.Escape(v.Name));
        grid.AddRow("Volume id", v.VolumeId.ToString());
        grid.AddRow("Status", StatusMarkup(v.Status));
        grid.AddRow("Size", $"{SizeText.Format(v.SizeBytes)} ({v.SizeBytes} bytes)");
        grid.AddRow("Chunk", SizeText.Format(v.ChunkSizeBytes));
        grid.AddRow("Max nodes", v.MaxNodes.ToString(System.Globalization.CultureInfo.InvariantCulture));
        grid.AddRow("Cache", v.CacheOpen is { } open && open != v.Cache
            ? $"{v.Cache} [yellow](open here as {open}; applies at the next open)[/]"
            : v.Cache);
        grid.AddRow("Generation", v.Generation.ToString(System.Globalization.CultureInfo.InvariantCulture));
        grid.AddRow("On this node", v.OpenHere ? $"open, {v.Connections} NBD connection(s)" : "not open");
        if (v.Recovery is { } r)
        {
            grid.AddRow("Crash recovery", $"{r.ChunksResynced} chunk(s) resynced at {(r.Trigger == "start" ? "node start" : "first open")} ({SizeText.Format(r.Bytes)}, {r.ElapsedMs} ms)");
        }
        if (v.Pending is not null)
        {
            grid.AddRow("Pending", $"[yellow]{Markup.Escape(v.Pending)}[/]");
        }

        yield return grid;
        var legs = new Table().Border(TableBorder.Rounded).AddColumn("Leg").AddColumn("State").AddColumn("Path");
        foreach (var leg in v.Legs)
        {
            legs.AddRow(leg.LegId.ToString(), LegMarkup(leg.State), Markup.Escape(leg.Path));
        }

        yield return legs;
    }

    /// <summary>The verify result: a summary line, then the differing chunks as offset ranges.</summary>
    public static IEnumerable<string> VerifyLines(VerifyView report)
    {
        foreach (var problem in report.Problems)
        {
            yield return $"warning: {problem}";
        }

        if (report.Identical)
        {
            yield return $"volume '{report.Name}': {report.LegsCompared.Count} legs identical over {report.ChunksCompared} chunks";
            yield break;
        }

        if (report.LegsCompared.Count < 2)
        {
            yield return $"volume '{report.Name}': fewer than two legs could be read, nothing compared";
            yield break;
        }

        yield return $"volume '{report.Name}': {report.DifferingChunks.Count} of {report.ChunksCompared} chunks differ between {report.LegsCompared.Count} legs";
        foreach (var chunk in report.DifferingChunks)
        {
            var start = chunk * report.ChunkSizeBytes;
            yield return $"chunk {chunk}: bytes {start}..{start + report.ChunkSizeBytes - 1}";
        }
    }

    /// <summary>Renders anything to plain text at a fixed width (tests, piped output).</summary>
    public static string ToText(Action<IAnsiConsole> render, int width = 200)
    {
        var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Out = new AnsiConsoleOutput(writer),
        });
        console.Profile.Width = width;
        render(console);
        return writer.ToString();
    }

    private static string StatusMarkup(string status) => status switch
    {
        "active" => "[green]active[/]",
        "creating" or "deleting" => $"[yellow]{status}[/]",
        _ => Markup.Escape(status),
    };

    private static string LegMarkup(string state) => state switch
    {
        "inSync" => "[green]in sync[/]",
        "failed" => "[red]failed[/]",
        "missing" => "[red]missing[/]",
        "resyncing" => "[yellow]resyncing[/]",
        _ => Markup.Escape(state),
    };
}
