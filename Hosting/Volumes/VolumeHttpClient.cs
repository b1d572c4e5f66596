using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;

namespace Lockstep.Hosting.Volumes;

/// <summary>Exit codes of <c>lockstep volume …</c> (the same numbers as the cluster commands, plus one for verify).</summary>
public static class VolumeExit
{
    /// <summary>Done.</summary>
    public const int Ok = 0;

    /// <summary>The node refused or failed the request (unknown volume, invalid arguments, leg could not be formatted).</summary>
    public const int NodeError = 1;

    /// <summary>Bad command line.</summary>
    public const int Usage = 2;

    /// <summary>No node answered at <c>--node</c>.</summary>
    public const int Unreachable = 3;

    /// <summary>The node refused a change from this host (needs <c>--http-write</c>).</summary>
    public const int Refused = 4;

    /// <summary><c>volume verify</c> found differing chunks or could not compare two legs.</summary>
    public const int LegsDiffer = 5;
}

/// <summary>A failure the volume CLI reports as one line and an exit code.</summary>
/// <param name="message">The line, without the "lockstep: " prefix.</param>
/// <param name="exitCode">One of <see cref="VolumeExit"/>.</param>
public sealed class VolumeCliException(string message, int exitCode) : Exception(message)
{
    /// <summary>Process exit code.</summary>
    public int ExitCode { get; } = exitCode;
}

/// <summary>The node's answer: the raw JSON (for <c>--json</c>) and its parsed form.</summary>
/// <typeparam name="T">Body type.</typeparam>
/// <param name="Json">Body as sent.</param>
/// <param name="Value">Parsed body.</param>
public sealed record VolumeAnswer<T>(string Json, T Value);

/// <summary>Talks to the <c>/v1/volumes</c> routes of one node.</summary>
public sealed class VolumeHttpClient : IDisposable
{
    private readonly HttpClient _http;

    /// <summary>Creates a client for the node at <paramref name="node"/>; <paramref name="timeout"/> covers formatting legs of a big volume.</summary>
    public VolumeHttpClient(Uri node, TimeSpan? timeout = null, HttpMessageHandler? handler = null)
    {
        Node = node;
        _http = handler is null ? new HttpClient() : new HttpClient(handler);
        _http.BaseAddress = node;
        _http.Timeout = timeout ?? TimeSpan.FromMinutes(10);
    }

    /// <summary>Base URL of the node.</summary>
    public Uri Node { get; }

    /// <summary>Parses <c>--node</c>: a URL or host:port.</summary>
    public static Uri? ParseNode(string text)
    {
        var candidate = text.Contains("://", StringComparison.Ordinal) ? text : $"http://{text}";
        return Uri.TryCreate(candidate, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" && uri.Host.Length > 0
            ? new Uri(uri.GetLeftPart(UriPartial.Authority) + "/")
            : null;
    }

    /// <summary><c>GET /v1/volumes</c>.</summary>
    public Task<VolumeAnswer<VolumeListView>> ListAsync(CancellationToken ct) => SendAsync<VolumeListView>(HttpMethod.Get, "v1/volumes", null, ct);

    /// <summary><c>GET /v1/volumes/{name}</c>.</summary>
    public Task<VolumeAnswer<VolumeView>> ShowAsync(string name, CancellationToken ct) => SendAsync<VolumeView>(HttpMethod.Get, Route(name), null, ct);

    /// <summary><c>POST /v1/volumes</c>.</summary>
    public Task<VolumeAnswer<VolumeView>> CreateAsync(CreateVolumeRequest request, CancellationToken ct) => SendAsync<VolumeView>(HttpMethod.Post, "v1/volumes", request, ct);

    /// <summary><c>POST /v1/volumes/{name}/verify</c>.</summary>
    public Task<VolumeAnswer<VerifyView>> VerifyAsync(string name, CancellationToken ct) => SendAsync<VerifyView>(HttpMethod.Post, Route(name) + "/verify", null, ct);

    /// <summary><c>POST /v1/volumes/{name}/legs</c>.</summary>
    public Task<VolumeAnswer<VolumeView>> AddLegAsync(string name, string path, CancellationToken ct) =>
        SendAsync<VolumeView>(HttpMethod.Post, Route(name) + "/legs", new AddLegRequest(path), ct);

    /// <summary><c>POST /v1/volumes/{name}/legs/{legId}/fail</c>.</summary>
    public Task<VolumeAnswer<VolumeView>> FailLegAsync(string name, Guid legId, string? reason, CancellationToken ct) =>
        SendAsync<VolumeView>(HttpMethod.Post, $"{Route(name)}/legs/{legId}/fail", new FailLegRequest(reason), ct);

    /// <summary><c>DELETE /v1/volumes/{name}/legs/{legId}</c>.</summary>
    public Task<VolumeAnswer<VolumeView>> RemoveLegAsync(string name, Guid legId, CancellationToken ct) =>
        SendAsync<VolumeView>(HttpMethod.Delete, $"{Route(name)}/legs/{legId}", null, ct);

    /// <summary><c>PATCH /v1/volumes/{name}</c>.</summary>
    public Task<VolumeAnswer<VolumeView>> SetAsync(string name, VolumeSettingsRequest settings, CancellationToken ct) =>
        SendAsync<VolumeView>(HttpMethod.Patch, Route(name), settings, ct);

    /// <summary><c>DELETE /v1/volumes/{name}</c>.</summary>
    public Task<VolumeAnswer<VolumeView>> DeleteAsync(string name, CancellationToken ct) => SendAsync<VolumeView>(HttpMethod.Delete, Route(name), null, ct);

    private static string Route(string name) => "v1/volumes/" + Uri.EscapeDataString(name);

    private async Task<VolumeAnswer<T>> SendAsync<T>(HttpMethod method, string path, object? body, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = JsonContent.Create(body, body.GetType(), options: VolumeJson.Options);
        }

        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, ct);
        }
        catch (HttpRequestException e) when (e.InnerException is SocketException || e.HttpRequestError is HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError)
        {
            throw new VolumeCliException($"no Lockstep node at {Node} ({e.InnerException?.Message ?? e.Message}); start one with `lockstep serve` or pass --node", VolumeExit.Unreachable);
        }
        catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new VolumeCliException($"node {Node} did not answer within {_http.Timeout.TotalSeconds:0} s", VolumeExit.Unreachable) { Source = e.Source };
        }

        using (response)
        {
            var json = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode)
            {
                throw Failure(Node, response.StatusCode, json);
            }

            try
            {
                var value = JsonSerializer.Deserialize<T>(json, VolumeJson.Options) ?? throw new JsonException("empty body");
                return new VolumeAnswer<T>(json, value);
            }
            catch (JsonException e)
            {
                throw new VolumeCliException($"node {Node} answered something that is not a Lockstep volume body: {e.Message}", VolumeExit.NodeError);
            }
        }
    }

    /// <summary>Maps an error answer to one line and an exit code.</summary>
    public static VolumeCliException Failure(Uri node, HttpStatusCode status, string body)
    {
        string? message = null;
        try
        {
            message = JsonSerializer.Deserialize<VolumeErrorView>(body, VolumeJson.Options)?.Message;
        }
        catch (JsonException)
        {
            // Not one of our bodies: report the status alone.
        }

        if (status == HttpStatusCode.NotFound && message is null)
        {
            message = $"node {node} has no volume API (is it a Lockstep node of this version?)";
        }

        message ??= $"{(int)status} {status}";
        return status switch
        {
            HttpStatusCode.Forbidden => new VolumeCliException(message, VolumeExit.Refused),
            HttpStatusCode.ServiceUnavailable => new VolumeCliException(message, VolumeExit.Unreachable),
            _ => new VolumeCliException(message, VolumeExit.NodeError),
        };
    }

    /// <inheritdoc />
    public void Dispose() => _http.Dispose();
}
