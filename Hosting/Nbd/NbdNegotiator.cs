using System.Buffers;
using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Nbd;

namespace Lockstep.Hosting.Nbd;

/// <summary>What the connection does after an option was answered.</summary>
public enum NbdNegotiationStep
{
    /// <summary>Read the next option.</summary>
    Continue,

    /// <summary>Enter the transmission phase with <see cref="NbdNegotiator.Session"/>.</summary>
    Transmission,

    /// <summary>End the connection (after sending what was written); see <see cref="NbdNegotiator.CloseReason"/>.</summary>
    Close,
}

/// <summary>The export and the terms the transmission phase runs with.</summary>
/// <param name="ExportName">Name the export was found by.</param>
/// <param name="Device">The connection's handle on the open device (see <see cref="IExportCatalog.OpenAsync"/>); the connection disposes it when it ends.</param>
/// <param name="Flags">Transmission flags sent to the client.</param>
/// <param name="BlockSizes">Block-size constraints advertised.</param>
/// <param name="StructuredReplies">Structured replies were negotiated.</param>
/// <param name="AllocationContextId">Id of the selected <c>base:allocation</c> context, 0 when none.</param>
public sealed record NbdSession(string ExportName, IBlockDevice Device, NbdTransmissionFlags Flags, NbdBlockSizes BlockSizes, bool StructuredReplies, uint AllocationContextId)
{
    /// <summary>What request checks need to know.</summary>
    public NbdExportState State => new(Device.Size, Device.IsReadOnly, BlockSizes.Maximum, StructuredReplies, AllocationContextId);
}

/// <summary>
/// The option haggling of a fixed-newstyle handshake, one option at a time: each call writes the replies
/// into an output buffer and says whether to go on, to start transmission, or to close. Socket-free, so
/// every option is unit-tested.
/// </summary>
public sealed class NbdNegotiator(IExportCatalog catalog, NbdServerOptions options)
{
    private string? _metaContextExport;
    private bool _allocationSelected;

    /// <summary>Structured replies were negotiated.</summary>
    public bool StructuredReplies { get; private set; }

    /// <summary>The client set NBD_FLAG_C_NO_ZEROES.</summary>
    public bool NoZeroes { get; set; }

    /// <summary>The chosen export once <see cref="NbdNegotiationStep.Transmission"/> was returned.</summary>
    public NbdSession? Session { get; private set; }

    /// <summary>Why <see cref="NbdNegotiationStep.Close"/> was returned.</summary>
    public string? CloseReason { get; private set; }

    /// <summary>Answers one option.</summary>
    public async ValueTask<NbdNegotiationStep> HandleAsync(NbdOptionHeader header, ReadOnlyMemory<byte> data, IBufferWriter<byte> output, CancellationToken cancellation = default)
    {
        var option = header.Option;
        switch (option)
        {
            case NbdOption.ExportName:
                return await ExportNameAsync(data, output, cancellation).ConfigureAwait(false);

            case NbdOption.Abort:
                NbdCodec.WriteOptionReply(output, option, NbdOptionReply.Ack, default);
                CloseReason = "client aborted the handshake";
                return NbdNegotiationStep.Close;

            case NbdOption.List:
                if (!data.IsEmpty)
                {
                    NbdCodec.WriteOptionError(output, option, NbdOptionReply.ErrorInvalid, "NBD_OPT_LIST carries no data");
                    return NbdNegotiationStep.Continue;
                }

                foreach (var export in catalog.List())
                {
                    NbdCodec.WriteServerReply(output, export.Name, export.Description);
                }

                NbdCodec.WriteOptionReply(output, option, NbdOptionReply.Ack, default);
                return NbdNegotiationStep.Continue;

            case NbdOption.StructuredReply:
                if (!data.IsEmpty)
                {
                    NbdCodec.WriteOptionError(output, option, NbdOptionReply.ErrorInvalid, "NBD_OPT_STRUCTURED_REPLY carries no data");
                    return NbdNegotiationStep.Continue;
                }

                StructuredReplies = true;
                NbdCodec.WriteOptionReply(output, option, NbdOptionReply.Ack, default);
                return NbdNegotiationStep.Continue;

            case NbdOption.Info:
            case NbdOption.Go:
                return await InfoAsync(option, data, output, cancellation).ConfigureAwait(false);

            case NbdOption.ListMetaContext:
            case NbdOption.SetMetaContext:
                MetaContext(option, data.Span, output);
                return NbdNegotiationStep.Continue;

            default:
                NbdCodec.WriteOptionError(output, option, NbdOptionReply.ErrorUnsupported, $"option {(uint)option} is not supported by this server");
                return NbdNegotiationStep.Continue;
        }
    }

    private async ValueTask<NbdNegotiationStep> ExportNameAsync(ReadOnlyMemory<byte> data, IBufferWriter<byte> output, CancellationToken cancellation)
    {
        // This option cannot carry an error: the only answer to a bad or unknown name is to hang up.
        if (!NbdCodec.TryDecodeString(data.Span, out var name))
        {
            CloseReason = "NBD_OPT_EXPORT_NAME with an invalid name";
            return NbdNegotiationStep.Close;
        }

        var (device, resolved, error) = await ResolveAsync(name, cancellation).ConfigureAwait(false);
        if (device is null)
        {
            CloseReason = error;
            return NbdNegotiationStep.Close;
        }

        Session = CreateSession(resolved, device, allocationSelected: false);
        NbdCodec.WriteExportNameReply(output, (ulong)device.Size, Session.Flags, NoZeroes);
        return NbdNegotiationStep.Transmission;
    }

    private async ValueTask<NbdNegotiationStep> InfoAsync(NbdOption option, ReadOnlyMemory<byte> data, IBufferWriter<byte> output, CancellationToken cancellation)
    {
        if (!NbdCodec.TryParseInfoRequest(data.Span, out var request))
        {
            NbdCodec.WriteOptionError(output, option, NbdOptionReply.ErrorInvalid, "malformed NBD_OPT_INFO/GO data");
            return NbdNegotiationStep.Continue;
        }

        var (device, name, error) = await ResolveAsync(request.ExportName, cancellation).ConfigureAwait(false);
        if (device is null)
        {
            NbdCodec.WriteOptionError(output, option, NbdOptionReply.ErrorUnknown, error!);
            return NbdNegotiationStep.Continue;
        }

        // Contexts were selected for one export; going to another one drops them (the spec ties them together).
        var allocation = _allocationSelected && _metaContextExport == request.ExportName;
        var session = CreateSession(name, device, allocation);
        NbdCodec.WriteInfoExport(output, option, (ulong)device.Size, session.Flags);
        foreach (var item in request.Requested.Distinct())
        {
            switch (item)
            {
                case NbdInfoType.Name:
                    NbdCodec.WriteInfoString(output, option, NbdInfoType.Name, name);
                    break;
                case NbdInfoType.Description:
                    NbdCodec.WriteInfoString(output, option, NbdInfoType.Description, DescriptionOf(name));
                    break;
            }
        }

        // Sent even when not asked for: it is a hint then, and we accept unaligned requests anyway.
        NbdCodec.WriteInfoBlockSize(output, option, session.BlockSizes);
        NbdCodec.WriteOptionReply(output, option, NbdOptionReply.Ack, default);
        if (option == NbdOption.Info)
        {
            // INFO only describes the export: give the handle back, or the volume counts a connection that never comes.
            await device.DisposeAsync().ConfigureAwait(false);
            return NbdNegotiationStep.Continue;
        }

        Session = session;
        return NbdNegotiationStep.Transmission;
    }

    private void MetaContext(NbdOption option, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        if (!StructuredReplies)
        {
            NbdCodec.WriteOptionError(output, option, NbdOptionReply.ErrorInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY before metadata contexts");
            return;
        }

        if (!NbdCodec.TryParseMetaContextRequest(data, out var request))
        {
            NbdCodec.WriteOptionError(output, option, NbdOptionReply.ErrorInvalid, "malformed metadata context request");
            return;
        }

        if (!ExportExists(request.ExportName))
        {
            NbdCodec.WriteOptionError(output, option, NbdOptionReply.ErrorUnknown, $"no export named '{request.ExportName}'");
            return;
        }

        if (option == NbdOption.SetMetaContext)
        {
            _allocationSelected = request.Queries.Contains(NbdMetaContexts.BaseAllocation);
            _metaContextExport = request.ExportName;
            if (_allocationSelected)
            {
                NbdCodec.WriteMetaContextReply(output, option, NbdMetaContexts.BaseAllocationId, NbdMetaContexts.BaseAllocation);
            }
        }
        else
        {
            // LIST with no query means "all"; a bare namespace lists what it holds. Ids are reserved (zero) here.
            var matches = request.Queries.Count == 0
                || request.Queries.Any(q => q is NbdMetaContexts.BaseAllocation or NbdMetaContexts.BaseNamespace);
            if (matches)
            {
                NbdCodec.WriteMetaContextReply(output, option, 0, NbdMetaContexts.BaseAllocation);
            }
        }

        NbdCodec.WriteOptionReply(output, option, NbdOptionReply.Ack, default);
    }

    private NbdSession CreateSession(string name, IBlockDevice device, bool allocationSelected) =>
        new(name, device, NbdRequestRules.FlagsFor(device, StructuredReplies), NbdBlockSizes.For(device, options.MaxRequestBytes),
            StructuredReplies, allocationSelected ? NbdMetaContexts.BaseAllocationId : 0);

    private async ValueTask<(IBlockDevice? Device, string Name, string? Error)> ResolveAsync(string name, CancellationToken cancellation)
    {
        // The empty name is the spec's "default export": ours is the first one listed.
        if (name.Length == 0)
        {
            var exports = catalog.List();
            if (exports.Count == 0)
            {
                return (null, name, "no default export: this node exports nothing");
            }

            name = exports[0].Name;
        }

        try
        {
            var device = await catalog.OpenAsync(name, cancellation).ConfigureAwait(false);
            return device is null ? (null, name, $"no export named '{name}'") : (device, name, null);
        }
        catch (Exception e) when (e is BlockIoException or IOException or InvalidOperationException)
        {
            return (null, name, $"export '{name}' cannot be opened: {e.Message}");
        }
    }

    private bool ExportExists(string name) =>
        name.Length == 0 ? catalog.List().Count > 0 : catalog.List().Any(e => e.Name == name);

    private string DescriptionOf(string name) =>
        catalog.List().FirstOrDefault(e => e.Name == name)?.Description ?? string.Empty;
}
