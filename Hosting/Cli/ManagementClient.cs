using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Lockstep.Hosting.Management;

namespace Lockstep.Hosting.Cli;

/// <summary>Exit codes of the CLI commands that talk to a node; scripts can tell the cases apart.</summary>
public static class CliExit
{
    /// <summary>Done.</summary>
    public const int Ok = 0;

    /// <summary>The node answered with an error (unknown member, bad operation, region not started).</summary>
    public const int NodeError = 1;

    /// <summary>Bad command line (System.CommandLine's parse errors use the same code).</summary>
    public const int Usage = 2;

    /// <summary>No node listens at <c>--node</c>, or it did not answer in time.</summary>
    public const int Unreachable = 3;

    /// <summary>The node refused a mutation (it runs without <c>--http-write</c>).</summary>
    public const int Refused = 4;
}

/// <summary>A failure the CLI reports as one line and an exit code.</summary>
/// <param name="message">The line, without the "lockstep: " prefix.</param>
/// <param name="exitCode">One of <see cref="CliExit"/>.</param>
public sealed class CliException(string message, int exitCode) : Exception(message)
{
    /// <summary>Process exit code for this failure.</summary>
    public int ExitCode { get; } = exitCode;
}

/// <summary>An answer of the management API: the raw JSON (for <c>--json</c>) and its parsed form.</summary>
/// <typeparam name="T">The body's record type.</typeparam>
/// <param name="Json">The body exactly as the node sent it.</param>
/// <param name="Value">The parsed body.</param>
public sealed record ApiAnswer<T>(string Json, T Value);

/// <summary>Talks to one node's management HTTP API, like Petabridge.Cmd talks to its host.</summary>
public sealed class ManagementClient : IDisposable
{
    /// <summary>How long the CLI waits for a node; a node that answers slower is as good as down.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly HttpClient http;

    /// <summary>Creates a client for the node at <paramref name="node"/>.</summary>
    public ManagementClient(Uri node)
    {
        Node = node;
        http = new HttpClient { BaseAddress = node, Timeout = Timeout };
    }

    /// <summary>The node's base URL.</summary>
    public Uri Node { get; }

    /// <summary><c>GET /cluster/members</c>.</summary>
    public Task<ApiAnswer<ClusterMembers>> MembersAsync(CancellationToken cancellation) =>
        SendAsync<ClusterMembers>(HttpMethod.Get, "cluster/members", null, cancellation);

    /// <summary><c>PUT /cluster/members/{address}</c> with <c>operation=Down</c>.</summary>
    public Task<ApiAnswer<ManagementMessage>> DownAsync(string address, CancellationToken cancellation) =>
        SendAsync<ManagementMessage>(HttpMethod.Put, MemberPath(address), new FormUrlEncodedContent([new("operation", "Down")]), cancellation);

    /// <summary><c>DELETE /cluster/members/{address}</c> (a graceful leave).</summary>
    public Task<ApiAnswer<ManagementMessage>> LeaveAsync(string address, CancellationToken cancellation) =>
        SendAsync<ManagementMessage>(HttpMethod.Delete, MemberPath(address), null, cancellation);

    /// <summary><c>GET /cluster/shards/{name}</c>.</summary>
    public Task<ApiAnswer<ShardDetails>> ShardsAsync(string region, CancellationToken cancellation) =>
        SendAsync<ShardDetails>(HttpMethod.Get, $"cluster/shards/{Uri.EscapeDataString(region)}", null, cancellation);

    /// <summary><c>GET /v1/broadcast</c>.</summary>
    public Task<ApiAnswer<Broadcast.BroadcastView>> BroadcastAsync(CancellationToken cancellation) =>
        SendAsync<Broadcast.BroadcastView>(HttpMethod.Get, "v1/broadcast", null, cancellation);

    /// <summary><c>POST /v1/broadcast/ping?stream=…</c>.</summary>
    public Task<ApiAnswer<Actors.Broadcast.BroadcastPingResult>> BroadcastPingAsync(string stream, CancellationToken cancellation) =>
        SendAsync<Actors.Broadcast.BroadcastPingResult>(HttpMethod.Post, $"v1/broadcast/ping?stream={Uri.EscapeDataString(stream)}", null, cancellation);

    /// <summary>The path of a member route; the address is one percent-encoded segment.</summary>
    public static string MemberPath(string address) => $"cluster/members/{Uri.EscapeDataString(address.Trim())}";

    /// <summary>
    /// Reads <c>--node</c>: a URL or the <c>host:port</c> shorthand; null when it is neither.
    /// </summary>
    public static Uri? ParseNode(string text)
    {
        var candidate = text.Contains("://", StringComparison.Ordinal) ? text : $"http://{text}";
        return Uri.TryCreate(candidate, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" && uri.Host.Length > 0
            ? new Uri(uri.GetLeftPart(UriPartial.Authority) + "/")
            : null;
    }

    /// <summary>Maps a non-success answer to the CLI failure it stands for.</summary>
    public static CliException Failure(Uri node, HttpStatusCode status, string body)
    {
        string? message = null;
        try
        {
            message = JsonSerializer.Deserialize<ManagementMessage>(body, ManagementJson.Options)?.Message;
        }
        catch (JsonException)
        {
            // Not one of our bodies (a proxy, another service on the port): report the status alone.
        }

        message ??= $"{(int)status} {status}";
        return status == HttpStatusCode.Forbidden
            ? new CliException($"refused by {node}: {message}", CliExit.Refused)
            : new CliException($"{node} answered {(int)status}: {message}", CliExit.NodeError);
    }

    /// <summary>Maps a transport failure to one line naming the node.</summary>
    public static CliException Unreachable(Uri node, Exception exception) => exception switch
    {
        TaskCanceledException or TimeoutException =>
            new CliException($"node {node} did not answer within {(int)Timeout.TotalSeconds} s", CliExit.Unreachable),
        HttpRequestException { InnerException: SocketException socket } =>
            new CliException($"cannot reach node {node} ({socket.Message}); is `lockstep serve` running there? (--node URL)", CliExit.Unreachable),
        _ => new CliException($"cannot reach node {node} ({exception.GetBaseException().Message})", CliExit.Unreachable),
    };

    private async Task<ApiAnswer<T>> SendAsync<T>(HttpMethod method, string path, HttpContent? content, CancellationToken cancellation)
    {
        HttpResponseMessage response;
        string body;
        try
        {
            using var request = new HttpRequestMessage(method, path) { Content = content };
            response = await http.SendAsync(request, cancellation);
            body = await response.Content.ReadAsStringAsync(cancellation);
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !cancellation.IsCancellationRequested)
        {
            throw Unreachable(Node, ex);
        }

        using (response)
        {
            if (!response.IsSuccessStatusCode)
            {
                throw Failure(Node, response.StatusCode, body);
            }

            try
            {
                var value = JsonSerializer.Deserialize<T>(body, ManagementJson.Options)
                    ?? throw new JsonException("empty body");
                return new ApiAnswer<T>(body, value);
            }
            catch (JsonException ex)
            {
                throw new CliException($"{Node} answered something that is not the management API ({ex.Message})", CliExit.NodeError);
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose() => http.Dispose();
}
