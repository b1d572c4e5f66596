using Lockstep.Actors.BlockIo;
using Lockstep.Contracts.Nbd;
using Lockstep.Hosting.Nbd;
using Xunit;

namespace Lockstep.Hosting.Tests.Nbd;

public sealed class NbdRequestRulesTests
{
    private const long Size = 1 << 20;
    private static readonly NbdExportState Plain = new(Size, ReadOnly: false, MaxPayload: 65536, StructuredReplies: false, AllocationContextId: 0);
    private static readonly NbdExportState Structured = Plain with { StructuredReplies = true, AllocationContextId = 1 };
    private static readonly NbdExportState ReadOnly = Plain with { ReadOnly = true };

    public static TheoryData<string, NbdRequest, NbdError> PlainCases => new()
    {
        { "read inside", Req(NbdCommand.Read, 0, 4096), NbdError.None },
        { "read up to the end", Req(NbdCommand.Read, Size - 4096, 4096), NbdError.None },
        { "read past the end", Req(NbdCommand.Read, Size - 4096, 8192), NbdError.Invalid },
        { "read at huge offset (no overflow)", Req(NbdCommand.Read, ulong.MaxValue, 1), NbdError.Invalid },
        { "read longer than max block", Req(NbdCommand.Read, 0, 65537), NbdError.Invalid },
        { "read with FUA is accepted", Req(NbdCommand.Read, 0, 512, NbdCommandFlags.Fua), NbdError.None },
        { "read with DF without structured replies", Req(NbdCommand.Read, 0, 512, NbdCommandFlags.DontFragment), NbdError.Invalid },
        { "zero-length read", Req(NbdCommand.Read, 0, 0), NbdError.None },
        { "write inside with FUA", Req(NbdCommand.Write, 512, 512, NbdCommandFlags.Fua), NbdError.None },
        { "write past the end", Req(NbdCommand.Write, Size, 512), NbdError.NoSpace },
        { "write longer than max block", Req(NbdCommand.Write, 0, 65537), NbdError.Invalid },
        { "write with NO_HOLE", Req(NbdCommand.Write, 0, 512, NbdCommandFlags.NoHole), NbdError.Invalid },
        { "trim past the end", Req(NbdCommand.Trim, Size - 1, 2), NbdError.NoSpace },
        { "trim larger than max block is fine", Req(NbdCommand.Trim, 0, (uint)Size), NbdError.None },
        { "write zeroes with NO_HOLE and FAST_ZERO", Req(NbdCommand.WriteZeroes, 0, 4096, NbdCommandFlags.NoHole | NbdCommandFlags.FastZero | NbdCommandFlags.Fua), NbdError.None },
        { "write zeroes with REQ_ONE", Req(NbdCommand.WriteZeroes, 0, 4096, NbdCommandFlags.RequestOne), NbdError.Invalid },
        { "write zeroes past the end", Req(NbdCommand.WriteZeroes, Size, 1), NbdError.NoSpace },
        { "flush", Req(NbdCommand.Flush, 0, 0), NbdError.None },
        { "flush with FUA", Req(NbdCommand.Flush, 0, 0, NbdCommandFlags.Fua), NbdError.None },
        { "flush with an offset", Req(NbdCommand.Flush, 512, 0), NbdError.Invalid },
        { "flush with a length", Req(NbdCommand.Flush, 0, 512), NbdError.Invalid },
        { "block status without a context", Req(NbdCommand.BlockStatus, 0, 4096), NbdError.Invalid },
        { "cache is not offered", Req(NbdCommand.Cache, 0, 4096), NbdError.Invalid },
        { "resize is not offered", Req(NbdCommand.Resize, 0, 0), NbdError.Invalid },
        { "unknown command", Req((NbdCommand)77, 0, 0), NbdError.Invalid },
        { "unknown flag", Req(NbdCommand.Read, 0, 512, (NbdCommandFlags)0x100), NbdError.Invalid },
    };

    [Theory]
    [MemberData(nameof(PlainCases))]
    public void Plain_export(string because, NbdRequest request, NbdError expected) =>
        Assert.True(expected == NbdRequestRules.Check(request, Plain), because);

    [Fact]
    public void Structured_export_allows_DF_on_reads_and_block_status_with_a_context()
    {
        Assert.Equal(NbdError.None, NbdRequestRules.Check(Req(NbdCommand.Read, 0, 512, NbdCommandFlags.DontFragment), Structured));
        Assert.Equal(NbdError.None, NbdRequestRules.Check(Req(NbdCommand.BlockStatus, 0, (uint)Size, NbdCommandFlags.RequestOne), Structured));
        Assert.Equal(NbdError.Invalid, NbdRequestRules.Check(Req(NbdCommand.BlockStatus, 0, 0), Structured));
        Assert.Equal(NbdError.Invalid, NbdRequestRules.Check(Req(NbdCommand.BlockStatus, Size - 512, 1024), Structured));
        Assert.Equal(NbdError.Invalid, NbdRequestRules.Check(Req(NbdCommand.Write, 0, 512, NbdCommandFlags.DontFragment), Structured));
    }

    [Fact]
    public void Read_only_export_refuses_writes_trims_and_zeroes_with_EPERM_but_reads()
    {
        Assert.Equal(NbdError.NotPermitted, NbdRequestRules.Check(Req(NbdCommand.Write, 0, 512), ReadOnly));
        Assert.Equal(NbdError.NotPermitted, NbdRequestRules.Check(Req(NbdCommand.Trim, 0, 512), ReadOnly));
        Assert.Equal(NbdError.NotPermitted, NbdRequestRules.Check(Req(NbdCommand.WriteZeroes, 0, 512), ReadOnly));
        Assert.Equal(NbdError.NotPermitted, NbdRequestRules.Check(Req(NbdCommand.Write, Size, 512), ReadOnly));
        Assert.Equal(NbdError.None, NbdRequestRules.Check(Req(NbdCommand.Read, 0, 512), ReadOnly));
        Assert.Equal(NbdError.None, NbdRequestRules.Check(Req(NbdCommand.Flush, 0, 0), ReadOnly));
    }

    [Theory]
    [InlineData(BlockIoError.Io, NbdCommand.Read, NbdError.Io)]
    [InlineData(BlockIoError.Io, NbdCommand.Write, NbdError.Io)]
    [InlineData(BlockIoError.OutOfRange, NbdCommand.Read, NbdError.Invalid)]
    [InlineData(BlockIoError.OutOfRange, NbdCommand.BlockStatus, NbdError.Invalid)]
    [InlineData(BlockIoError.OutOfRange, NbdCommand.Write, NbdError.NoSpace)]
    [InlineData(BlockIoError.OutOfRange, NbdCommand.WriteZeroes, NbdError.NoSpace)]
    [InlineData(BlockIoError.ReadOnly, NbdCommand.Trim, NbdError.NotPermitted)]
    [InlineData(BlockIoError.Unavailable, NbdCommand.Flush, NbdError.Shutdown)]
    [InlineData(BlockIoError.NotSupported, NbdCommand.WriteZeroes, NbdError.NotSupported)]
    public void Device_errors_map_to_spec_errnos(BlockIoError error, NbdCommand command, NbdError expected) =>
        Assert.Equal(expected, NbdRequestRules.Map(new BlockIoException(error, "x"), command));

    [Fact]
    public void Other_failures_are_EIO_and_cancellation_is_ESHUTDOWN()
    {
        Assert.Equal(NbdError.Io, NbdRequestRules.Map(new InvalidOperationException(), NbdCommand.Read));
        Assert.Equal(NbdError.Io, NbdRequestRules.Map(new IOException(), NbdCommand.Write));
        Assert.Equal(NbdError.Shutdown, NbdRequestRules.Map(new OperationCanceledException(), NbdCommand.Write));
    }

    [Fact]
    public void Flags_advertise_what_the_device_contract_supports()
    {
        var writable = NbdRequestRules.FlagsFor(new MemoryBlockDevice("w", Size), structuredReplies: false);
        var readOnly = NbdRequestRules.FlagsFor(new MemoryBlockDevice("r", Size, readOnly: true), structuredReplies: true);

        var common = NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua | NbdTransmissionFlags.SendTrim
            | NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendFastZero | NbdTransmissionFlags.CanMultiConn;
        Assert.Equal(common, writable);
        Assert.Equal(common | NbdTransmissionFlags.ReadOnly | NbdTransmissionFlags.SendDf, readOnly);
    }

    private static NbdRequest Req(NbdCommand command, long offset, uint length, NbdCommandFlags flags = NbdCommandFlags.None) =>
        new(flags, command, 1, (ulong)offset, length);

    private static NbdRequest Req(NbdCommand command, ulong offset, uint length, NbdCommandFlags flags = NbdCommandFlags.None) =>
        new(flags, command, 1, offset, length);
}
