using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using Lockstep.Hosting.Cli;
using Xunit;

namespace Lockstep.Hosting.Tests.Cli;

public sealed class ClusterCommandsTests
{
    private static ParseResult Parse(params string[] args)
    {
        var root = new RootCommand { ClusterCommands.Cluster(), ClusterCommands.ClusterSharding() };
        return root.Parse(args);
    }

    private static T? Value<T>(ParseResult parse, string name) =>
        parse.CommandResult.Command.Parents.OfType<Command>().Concat([parse.CommandResult.Command])
            .SelectMany(c => c.Options).OfType<Option<T>>().Where(o => o.Name == name).Select(parse.GetValue).FirstOrDefault();

    [Theory]
    [InlineData("cluster", "show")]
    [InlineData("cluster", "show", "--json", "--node", "127.0.0.1:8559")]
    [InlineData("cluster", "--node", "http://h:1", "show")]
    [InlineData("cluster", "down", "127.0.0.1:4055")]
    [InlineData("cluster", "leave", "akka.tcp://lockstep@127.0.0.1:4055")]
    [InlineData("cluster", "down-unreachable")]
    [InlineData("cluster-sharding", "region-stats", "-r", "lock")]
    [InlineData("cluster-sharding", "region-stats", "--region", "lock", "--json")]
    public void Petabridge_style_command_lines_parse(params string[] args) =>
        Assert.Empty(Parse(args).Errors);

    [Theory]
    [InlineData("cluster", "down")]
    [InlineData("cluster", "leave")]
    [InlineData("cluster", "show", "extra")]
    [InlineData("cluster-sharding", "region-stats")]
    [InlineData("cluster", "join-all")]
    public void Missing_or_unknown_arguments_are_parse_errors(params string[] args) =>
        Assert.NotEmpty(Parse(args).Errors);

    [Fact]
    public void Node_and_json_reach_the_subcommand_and_node_has_a_default()
    {
        var given = Parse("cluster", "show", "--node", "127.0.0.1:8560", "--json");
        var defaults = Parse("cluster", "show");

        Assert.Equal("127.0.0.1:8560", Value<string>(given, "--node"));
        Assert.True(Value<bool>(given, "--json"));
        Assert.Equal(Environment.GetEnvironmentVariable("LOCKSTEP_NODE") is { Length: > 0 } env ? env : ClusterCommands.DefaultNode, Value<string>(defaults, "--node"));
        Assert.False(Value<bool>(defaults, "--json"));
    }

    [Theory]
    [InlineData("127.0.0.1:8559", "http://127.0.0.1:8559/")]
    [InlineData("http://node1:8558", "http://node1:8558/")]
    [InlineData("http://node1:8558/some/path", "http://node1:8558/")]
    [InlineData("localhost", "http://localhost/")]
    public void Node_accepts_urls_and_host_port(string text, string expected) =>
        Assert.Equal(expected, ManagementClient.ParseNode(text)?.ToString());

    [Theory]
    [InlineData("ftp://x:1")]
    [InlineData("http://")]
    [InlineData("::")]
    public void Node_rejects_other_things(string text) => Assert.Null(ManagementClient.ParseNode(text));

    [Fact]
    public void Member_paths_encode_the_address_as_one_segment() =>
        Assert.Equal("cluster/members/akka.tcp%3A%2F%2Flockstep%40127.0.0.1%3A4055", ManagementClient.MemberPath(" akka.tcp://lockstep@127.0.0.1:4055 "));

    [Fact]
    public void A_403_is_a_refusal_with_the_nodes_message()
    {
        var node = new Uri("http://127.0.0.1:8559/");
        var refused = ManagementClient.Failure(node, HttpStatusCode.Forbidden, """{"message":"Mutating management routes are disabled"}""");
        var missing = ManagementClient.Failure(node, HttpStatusCode.NotFound, """{"message":"Member x not found"}""");
        var strange = ManagementClient.Failure(node, HttpStatusCode.BadGateway, "<html>proxy</html>");

        Assert.Equal(CliExit.Refused, refused.ExitCode);
        Assert.Equal("refused by http://127.0.0.1:8559/: Mutating management routes are disabled", refused.Message);
        Assert.Equal(CliExit.NodeError, missing.ExitCode);
        Assert.Equal("http://127.0.0.1:8559/ answered 404: Member x not found", missing.Message);
        Assert.Equal("http://127.0.0.1:8559/ answered 502: 502 BadGateway", strange.Message);
    }

    [Fact]
    public async Task An_unreachable_node_is_one_line_and_exit_code_3()
    {
        // A port that was just free: nothing listens there, so the connection is refused.
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();

        var error = new StringWriter();
        var original = Console.Error;
        Console.SetError(error);
        int code;
        try
        {
            code = await LockstepCli.RunAsync(["cluster", "show", "--node", $"127.0.0.1:{port}"]);
        }
        finally
        {
            Console.SetError(original);
        }

        Assert.Equal(CliExit.Unreachable, code);
        var line = Assert.Single(error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"lockstep: cannot reach node http://127.0.0.1:{port}/", line, StringComparison.Ordinal);
    }
}
