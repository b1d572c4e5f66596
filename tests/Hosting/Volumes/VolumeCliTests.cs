using System.Net;
using Lockstep.Hosting.Volumes;
using Xunit;

namespace Lockstep.Hosting.Tests.Volumes;

/// <summary>The pure parts of the volume CLI and API: sizes, permissions, error mapping, tables.</summary>
public sealed class VolumeCliTests
{
    [Theory]
    [InlineData("4096", 4096L)]
    [InlineData("4K", 4096L)]
    [InlineData("4k", 4096L)]
    [InlineData("1M", 1048576L)]
    [InlineData("1MiB", 1048576L)]
    [InlineData("1Mi", 1048576L)]
    [InlineData("64KB", 65536L)]
    [InlineData("4G", 4294967296L)]
    [InlineData(" 2T ", 2199023255552L)]
    [InlineData("1.5G", 1610612736L)]
    public void Sizes_parse_as_iec_multiples(string text, long expected)
    {
        Assert.True(SizeText.TryParse(text, out var bytes, out var error), error);
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("4Q", "not a positive number")]
    [InlineData("-4G", "not a positive number")]
    [InlineData("0", "not a positive number")]
    [InlineData("1.3K", "whole number")]
    [InlineData("99999999999T", "too large")]
    public void Bad_sizes_say_why(string text, string why)
    {
        Assert.False(SizeText.TryParse(text, out _, out var error));
        Assert.Contains(why, error);
    }

    [Theory]
    [InlineData(1L << 30, "1 GiB")]
    [InlineData(1536L, "1.5 KiB")]
    [InlineData(512L, "512 B")]
    [InlineData(65536L, "64 KiB")]
    public void Sizes_format_with_the_largest_unit(long bytes, string text) => Assert.Equal(text, SizeText.Format(bytes));

    [Fact]
    public void Changes_are_allowed_from_loopback_or_with_allow_write()
    {
        Assert.True(VolumeEndpoints.MayChange(IPAddress.Loopback, allowWrite: false));
        Assert.True(VolumeEndpoints.MayChange(IPAddress.IPv6Loopback, allowWrite: false));
        Assert.False(VolumeEndpoints.MayChange(IPAddress.Parse("10.0.0.7"), allowWrite: false));
        Assert.True(VolumeEndpoints.MayChange(IPAddress.Parse("10.0.0.7"), allowWrite: true));
        Assert.False(VolumeEndpoints.MayChange(null, allowWrite: false));
    }

    [Fact]
    public void Error_answers_map_to_exit_codes_and_keep_the_message()
    {
        var node = new Uri("http://127.0.0.1:8558/");
        var notFound = VolumeHttpClient.Failure(node, HttpStatusCode.NotFound, """{"error":"notFound","message":"volume 'x' does not exist"}""");
        Assert.Equal((VolumeExit.NodeError, "volume 'x' does not exist"), (notFound.ExitCode, notFound.Message));
        Assert.Equal(VolumeExit.Refused, VolumeHttpClient.Failure(node, HttpStatusCode.Forbidden, """{"error":"forbidden","message":"m"}""").ExitCode);
        Assert.Equal(VolumeExit.Unreachable, VolumeHttpClient.Failure(node, HttpStatusCode.ServiceUnavailable, "").ExitCode);
        Assert.Contains("no volume API", VolumeHttpClient.Failure(node, HttpStatusCode.NotFound, "<html>").Message);
        Assert.Equal("500 InternalServerError", VolumeHttpClient.Failure(node, HttpStatusCode.InternalServerError, "oops").Message);
    }

    [Theory]
    [InlineData("127.0.0.1:8559", "http://127.0.0.1:8559/")]
    [InlineData("http://node2:8558/ignored/path", "http://node2:8558/")]
    public void Node_urls_accept_host_port(string text, string url) => Assert.Equal(new Uri(url), VolumeHttpClient.ParseNode(text));

    [Fact]
    public void A_bad_node_url_is_refused() => Assert.Null(VolumeHttpClient.ParseNode("ftp://x"));

    private static VolumeView View(string name, params string[] legStates) => new(name, Guid.Parse("11111111-2222-3333-4444-555555555555"), "active", 4L << 30, 1 << 20, 8, 3,
        legStates.Select((s, i) => new LegView(Guid.Parse($"00000000-0000-0000-0000-00000000000{i}"), $"/srv/{name}-{i}.leg", s)).ToArray(), null, true, 2);

    [Fact]
    public void The_list_table_shows_size_chunk_legs_and_local_use()
    {
        var text = VolumeRendering.ToText(c => c.Write(VolumeRendering.ListTable(new VolumeListView([View("vm1", "inSync", "inSync"), View("vm2", "inSync", "failed")]))));
        var vm1 = text.Split('\n').Single(l => l.Contains("vm1"));
        Assert.Contains("4 GiB", vm1);
        Assert.Contains("1 MiB", vm1);
        Assert.Contains("2/2 in sync", vm1);
        Assert.Contains("open, 2 conn", vm1);
        Assert.Contains("1/2 in sync", text.Split('\n').Single(l => l.Contains("vm2")));
    }

    [Fact]
    public void Show_lists_every_leg_with_its_state_and_path()
    {
        var text = VolumeRendering.ToText(c =>
        {
            foreach (var part in VolumeRendering.Show(View("vm1", "inSync", "resyncing")))
            {
                c.Write(part);
            }
        });
        Assert.Contains("11111111-2222-3333-4444-555555555555", text);
        Assert.Contains("4 GiB (4294967296 bytes)", text);
        Assert.Contains("resyncing", text.Split('\n').Single(l => l.Contains("/srv/vm1-1.leg")));
        Assert.Contains("in sync", text.Split('\n').Single(l => l.Contains("/srv/vm1-0.leg")));
    }

    [Fact]
    public void Show_reports_the_crash_recovery_of_an_open_volume_only()
    {
        string Render(VolumeView view) => VolumeRendering.ToText(c =>
        {
            foreach (var part in VolumeRendering.Show(view))
            {
                c.Write(part);
            }
        });

        var recovered = Render(View("vm1", "inSync", "inSync") with { Recovery = new RecoveryView(3, 3 << 20, 41, Guid.NewGuid(), "open") });
        Assert.Contains("3 chunk(s) resynced at first open (3 MiB, 41 ms)", recovered.Split('\n').Single(l => l.Contains("Crash recovery")));
        var atStart = Render(View("vm1", "inSync", "inSync") with { Recovery = new RecoveryView(5, 5 << 20, 12, Guid.NewGuid(), "start") });
        Assert.Contains("5 chunk(s) resynced at node start (5 MiB, 12 ms)", atStart.Split('\n').Single(l => l.Contains("Crash recovery")));
        Assert.DoesNotContain("Crash recovery", Render(View("vm1", "inSync", "inSync")));
    }

    [Fact]
    public void Show_and_list_give_the_cache_mode_and_a_pending_change_of_an_open_volume()
    {
        string Render(VolumeView view) => VolumeRendering.ToText(c =>
        {
            foreach (var part in VolumeRendering.Show(view))
            {
                c.Write(part);
            }
        });

        string CacheLine(string text) => text.Split('\n').Single(l => l.TrimStart().StartsWith("Cache", StringComparison.Ordinal));
        Assert.EndsWith(" direct", CacheLine(Render(View("vm1", "inSync"))).TrimEnd());
        var same = CacheLine(Render(View("vm1", "inSync") with { Cache = "writeback", CacheOpen = "writeback" })).TrimEnd();
        Assert.EndsWith(" writeback", same);
        Assert.DoesNotContain("open here", same);
        Assert.Contains("writeback (open here as direct; applies at the next open)", CacheLine(Render(View("vm1", "inSync") with { Cache = "writeback", CacheOpen = "direct" })));

        var list = VolumeRendering.ToText(c => c.Write(VolumeRendering.ListTable(new VolumeListView([View("vm1", "inSync") with { Cache = "writeback" }]))));
        Assert.Contains("writeback", list.Split('\n').Single(l => l.Contains("vm1")));
    }

    [Fact]
    public void Verify_lines_name_each_differing_chunk_with_its_byte_range()
    {
        var legs = new[] { Guid.NewGuid(), Guid.NewGuid() };
        var same = VolumeRendering.VerifyLines(new VerifyView("vm1", true, 1024, 1 << 20, [], legs, [])).ToArray();
        Assert.Equal(["volume 'vm1': 2 legs identical over 1024 chunks"], same);

        var differ = VolumeRendering.VerifyLines(new VerifyView("vm1", false, 1024, 1 << 20, [3, 7], legs, [])).ToArray();
        Assert.Equal("volume 'vm1': 2 of 1024 chunks differ between 2 legs", differ[0]);
        Assert.Equal("chunk 3: bytes 3145728..4194303", differ[1]);
        Assert.Equal("chunk 7: bytes 7340032..8388607", differ[2]);

        var lonely = VolumeRendering.VerifyLines(new VerifyView("vm1", false, 0, 1 << 20, [], [legs[0]], ["leg x skipped: it is Failed"])).ToArray();
        Assert.Equal(["warning: leg x skipped: it is Failed", "volume 'vm1': fewer than two legs could be read, nothing compared"], lonely);
    }
}
