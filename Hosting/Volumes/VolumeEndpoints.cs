using System.Net;
using System.Text.Json;
using Lockstep.Actors.BlockIo;
using Lockstep.Actors.Volumes;
using Lockstep.Contracts.Volumes;
using Lockstep.Hosting.Node;

namespace Lockstep.Hosting.Volumes;

/// <summary>
/// <c>/v1/volumes</c>: list, create, show, change settings (PATCH), verify, add / fail / remove legs, delete. Changing routes are accepted when
/// the node runs with <c>--http-write</c> (<c>Lockstep:Http:AllowWrite</c>) <b>or</b> the request comes from loopback:
/// volume admin is the everyday job of someone on the node itself (the CLI's default is 127.0.0.1), while a remote
/// caller could destroy data and needs the explicit switch.
/// </summary>
/// <example><code>
/// curl -s -X POST localhost:8558/v1/volumes -H 'content-type: application/json' \
///      -d '{"name":"vm1","size":"4G","legs":["/srv/a/vm1.leg","/srv/b/vm1.leg"]}'
/// curl -s localhost:8558/v1/volumes
/// curl -s -X POST localhost:8558/v1/volumes/vm1/verify
/// </code></example>
public static class VolumeEndpoints
{
    /// <summary>Maps the routes.</summary>
    public static WebApplication MapLockstepVolumes(this WebApplication app, LockstepOptions options)
    {
        var group = app.MapGroup("/v1/volumes");

        group.MapGet("", async (VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
        {
            var volumes = await catalog.ListAsync(ct);
            return Json(new VolumeListView(volumes.Select(v => View(catalog, v)).ToArray()));
        }));

        group.MapPost("", async (HttpContext http, VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
        {
            if (Refused(http, options) is { } refused)
            {
                return refused;
            }

            var body = await ReadAsync<CreateVolumeRequest>(http);
            if (body.Error is not null)
            {
                return body.Error;
            }

            var request = body.Value!;
            long size;
            if (request.SizeBytes is { } bytes)
            {
                size = bytes;
            }
            else if (!SizeText.TryParse(request.Size, out size, out var sizeError))
            {
                return Error(VolumeError.Invalid, request.Size is null ? "give sizeBytes or size (e.g. \"4G\")" : sizeError!);
            }

            var cache = VolumeCacheMode.Direct;
            if (request.Cache is not null)
            {
                if (VolumeState.ParseCacheMode(request.Cache) is not { } parsed)
                {
                    return Error(VolumeError.Invalid, CacheModeError(request.Cache));
                }

                cache = parsed;
            }

            var command = new CreateVolume(request.Name ?? "", size, request.ChunkSizeBytes ?? (1 << 20), request.MaxNodes ?? 8, request.Legs ?? [], cache);
            if (VolumeState.ValidateName(command.Name) is { } nameError)
            {
                return Error(VolumeError.Invalid, nameError);
            }

            return Reply(catalog, await catalog.SendAsync(command, ct), StatusCodes.Status201Created);
        }));

        group.MapGet("/{name}", async (string name, VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
            VolumeState.ValidateName(name) is { } error ? Error(VolumeError.NotFound, error) : Reply(catalog, await catalog.SendAsync(new GetVolume(name), ct))));

        group.MapPatch("/{name}", async (HttpContext http, string name, VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
        {
            if ((Refused(http, options) ?? NameError(name)) is { } refused)
            {
                return refused;
            }

            var body = await ReadAsync<VolumeSettingsRequest>(http);
            if (body.Error is not null)
            {
                return body.Error;
            }

            if (body.Value!.Cache is null)
            {
                return Error(VolumeError.Invalid, "nothing to change: give {\"cache\": \"direct\" | \"writeback\"}");
            }

            return VolumeState.ParseCacheMode(body.Value.Cache) is { } cache
                ? Reply(catalog, await catalog.SetCacheModeAsync(name, cache, ct))
                : Error(VolumeError.Invalid, CacheModeError(body.Value.Cache));
        }));

        group.MapDelete("/{name}", async (HttpContext http, string name, VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
            Refused(http, options) ?? NameError(name) ?? Reply(catalog, await catalog.DeleteAsync(name, ct))));

        group.MapPost("/{name}/verify", async (string name, VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
        {
            if (NameError(name) is { } error)
            {
                return error;
            }

            var info = await catalog.SendAsync(new GetVolume(name), ct);
            if (info is not VolumeInfo volume)
            {
                return Reply(catalog, info);
            }

            var report = await catalog.VerifyAsync(name, ct);
            return report is null
                ? Error(VolumeError.Conflict, $"volume '{name}' is {volume.Status.ToString().ToLowerInvariant()}, not active")
                : Json(VerifyView.From(name, volume.Descriptor.Geometry.ChunkSizeBytes, report));
        }));

        group.MapPost("/{name}/legs", async (HttpContext http, string name, VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
        {
            if ((Refused(http, options) ?? NameError(name)) is { } refused)
            {
                return refused;
            }

            var body = await ReadAsync<AddLegRequest>(http);
            return body.Error ?? Reply(catalog, await catalog.AddLegAsync(name, body.Value!.Path ?? "", ct), StatusCodes.Status201Created);
        }));

        group.MapPost("/{name}/legs/{legId}/fail", async (HttpContext http, string name, string legId, VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
        {
            if ((Refused(http, options) ?? NameError(name) ?? LegIdError(legId)) is { } refused)
            {
                return refused;
            }

            var id = Guid.Parse(legId);
            var reason = http.Request.ContentLength is > 0 ? (await ReadAsync<FailLegRequest>(http)).Value?.Reason : null;
            return Reply(catalog, await catalog.FailLegAsync(name, id, reason ?? "failed by operator", ct));
        }));

        group.MapDelete("/{name}/legs/{legId}", async (HttpContext http, string name, string legId, VolumeCatalog catalog, CancellationToken ct) => await Guarded(async () =>
            (Refused(http, options) ?? NameError(name) ?? LegIdError(legId)) ?? Reply(catalog, await catalog.RemoveLegAsync(name, Guid.Parse(legId), ct))));

        return app;
    }

    /// <summary>Whether a changing request may run: the node allows writes, or the caller is on this host.</summary>
    public static bool MayChange(IPAddress? remote, bool allowWrite) => allowWrite || (remote is not null && IPAddress.IsLoopback(remote));

    /// <summary>HTTP status of a refusal.</summary>
    public static int StatusOf(VolumeError error) => error switch
    {
        VolumeError.NotFound => StatusCodes.Status404NotFound,
        VolumeError.Invalid => StatusCodes.Status400BadRequest,
        VolumeError.Conflict or VolumeError.Busy => StatusCodes.Status409Conflict,
        _ => StatusCodes.Status422UnprocessableEntity,
    };

    private static IResult? Refused(HttpContext http, LockstepOptions options) =>
        MayChange(http.Connection.RemoteIpAddress, options.Http.AllowWrite)
            ? null
            : Json(new VolumeErrorView("forbidden", "Changing volumes from another host needs --http-write (Lockstep:Http:AllowWrite=true) on this node"), StatusCodes.Status403Forbidden);

    private static string CacheModeError(string given) => $"cache mode '{given}' is unknown; use direct or writeback";

    private static IResult? NameError(string name) => VolumeState.ValidateName(name) is { } error ? Error(VolumeError.NotFound, error) : null;

    private static IResult? LegIdError(string text) =>
        Guid.TryParse(text, out _) ? null : Error(VolumeError.Invalid, $"'{text}' is not a leg UUID (see volume show)");

    private static IResult Reply(VolumeCatalog catalog, IVolumeProtocol reply, int okStatus = StatusCodes.Status200OK) => reply switch
    {
        VolumeInfo info => Json(View(catalog, info), info.Status == VolumeStatus.Absent ? StatusCodes.Status200OK : okStatus),
        VolumeRejected rejected => Error(rejected.Error, rejected.Reason),
        _ => Json(new VolumeErrorView("internal", $"unexpected reply {reply.GetType().Name}"), StatusCodes.Status500InternalServerError),
    };

    private static VolumeView View(VolumeCatalog catalog, VolumeInfo info) =>
        VolumeView.From(info, catalog.LocalUse(info.Descriptor.Name), catalog.LocalRecoveryOf(info.Descriptor.Name), catalog.LocalCacheMode(info.Descriptor.Name));

    private static async Task<IResult> Guarded(Func<Task<IResult>> handler)
    {
        try
        {
            return await handler();
        }
        catch (VolumeUnavailableException e)
        {
            return Json(new VolumeErrorView("unavailable", e.Message), StatusCodes.Status503ServiceUnavailable);
        }
        catch (VolumeInUseException e)
        {
            return Json(new VolumeErrorView("inUse", e.Message), StatusCodes.Status409Conflict);
        }
        catch (BlockIoException e)
        {
            return Json(new VolumeErrorView("io", e.Message), StatusCodes.Status422UnprocessableEntity);
        }
        catch (IOException e)
        {
            return Json(new VolumeErrorView("io", e.Message), StatusCodes.Status422UnprocessableEntity);
        }
    }

    private static async Task<(T? Value, IResult? Error)> ReadAsync<T>(HttpContext http)
        where T : class
    {
        try
        {
            var value = await JsonSerializer.DeserializeAsync<T>(http.Request.Body, VolumeJson.Options, http.RequestAborted);
            return value is null ? (null, Error(VolumeError.Invalid, "request body is empty; send JSON")) : (value, null);
        }
        catch (JsonException e)
        {
            return (null, Error(VolumeError.Invalid, $"request body is not valid JSON for {typeof(T).Name}: {e.Message}"));
        }
    }

    private static IResult Error(VolumeError error, string message) => Json(new VolumeErrorView(VolumeJson.Camel(error.ToString()), message), StatusOf(error));

    private static IResult Json<T>(T body, int status = StatusCodes.Status200OK) => Results.Json(body, VolumeJson.Options, statusCode: status);
}
