using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Nbd;

namespace Lockstep.Hosting.Nbd;

/// <summary>What the transmission phase knows about the export and the negotiation, for checking requests.</summary>
/// <param name="Size">Export size in bytes.</param>
/// <param name="ReadOnly">Writes, trims and zeroes fail with EPERM.</param>
/// <param name="MaxPayload">Largest READ or WRITE length (the advertised maximum block size).</param>
/// <param name="StructuredReplies">NBD_OPT_STRUCTURED_REPLY was negotiated.</param>
/// <param name="AllocationContextId">Id of the selected <c>base:allocation</c> context, 0 when none is selected.</param>
public readonly record struct NbdExportState(long Size, bool ReadOnly, uint MaxPayload, bool StructuredReplies, uint AllocationContextId);

/// <summary>
/// Which error, if any, a request gets before it reaches the device. The spec's rules: unknown commands
/// and flags not documented for the command are EINVAL; writes on a read-only export are EPERM; a range
/// past the end is ENOSPC for commands that write and EINVAL otherwise; READ/WRITE longer than the
/// advertised maximum are EINVAL; BLOCK_STATUS without a negotiated context is EINVAL.
/// </summary>
public static class NbdRequestRules
{
    /// <summary>Checks <paramref name="request"/>; <see cref="NbdError.None"/> means the device should run it.</summary>
    public static NbdError Check(in NbdRequest request, in NbdExportState export)
    {
        var allowed = AllowedFlags(request.Command, export);
        if (allowed is null || (request.Flags & ~allowed.Value) != 0)
        {
            return NbdError.Invalid;
        }

        var writes = request.Command is NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes;
        if (writes && export.ReadOnly)
        {
            return NbdError.NotPermitted;
        }

        switch (request.Command)
        {
            case NbdCommand.Flush:
                // Offset and length are reserved and must be zero.
                return request.Offset == 0 && request.Length == 0 ? NbdError.None : NbdError.Invalid;
            case NbdCommand.Disconnect:
                return NbdError.None;
            case NbdCommand.BlockStatus when export.AllocationContextId == 0 || request.Length == 0:
                return NbdError.Invalid;
        }

        if (request.Offset > (ulong)export.Size || request.Length > (ulong)export.Size - request.Offset)
        {
            return writes ? NbdError.NoSpace : NbdError.Invalid;
        }

        if (request.Command is NbdCommand.Read or NbdCommand.Write && request.Length > export.MaxPayload)
        {
            return NbdError.Invalid;
        }

        return NbdError.None;
    }

    /// <summary>Flags documented for <paramref name="command"/>; null for a command this server does not know.</summary>
    public static NbdCommandFlags? AllowedFlags(NbdCommand command, in NbdExportState export) => command switch
    {
        // FUA is valid on every command once SEND_FUA is advertised (the server may ignore it).
        NbdCommand.Read => NbdCommandFlags.Fua | (export.StructuredReplies ? NbdCommandFlags.DontFragment : 0),
        NbdCommand.Write or NbdCommand.Flush or NbdCommand.Trim or NbdCommand.Disconnect => NbdCommandFlags.Fua,
        NbdCommand.WriteZeroes => NbdCommandFlags.Fua | NbdCommandFlags.NoHole | NbdCommandFlags.FastZero,
        NbdCommand.BlockStatus => NbdCommandFlags.Fua | NbdCommandFlags.RequestOne,
        _ => null,
    };

    /// <summary>The errno a client gets for a failed device call.</summary>
    public static NbdError Map(Exception error, NbdCommand command) => error switch
    {
        BlockIoException { Error: BlockIoError.Io } => NbdError.Io,
        BlockIoException { Error: BlockIoError.OutOfRange } =>
            command is NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes ? NbdError.NoSpace : NbdError.Invalid,
        BlockIoException { Error: BlockIoError.ReadOnly } => NbdError.NotPermitted,
        BlockIoException { Error: BlockIoError.Unavailable } => NbdError.Shutdown,
        BlockIoException { Error: BlockIoError.NotSupported } => NbdError.NotSupported,
        OperationCanceledException or ObjectDisposedException => NbdError.Shutdown,
        _ => NbdError.Io,
    };

    /// <summary>Transmission flags for an export: everything the block device contract supports.</summary>
    public static NbdTransmissionFlags FlagsFor(IBlockDevice device, bool structuredReplies)
    {
        var flags = NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua
            | NbdTransmissionFlags.SendTrim | NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendFastZero
            // Every connection to a volume on this node shares one device, so a FLUSH on one covers the others.
            | NbdTransmissionFlags.CanMultiConn;
        if (device.IsReadOnly)
        {
            flags |= NbdTransmissionFlags.ReadOnly;
        }

        if (structuredReplies)
        {
            // Reads are always answered with one content chunk, so "don't fragment" costs nothing.
            flags |= NbdTransmissionFlags.SendDf;
        }

        return flags;
    }
}
