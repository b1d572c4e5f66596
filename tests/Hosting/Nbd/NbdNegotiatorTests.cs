using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Lockstep.Contracts.Nbd;
using Lockstep.Hosting.Nbd;
using Xunit;

namespace Lockstep.Hosting.Tests.Nbd;

public sealed class NbdNegotiatorTests
{
    private readonly MemoryBlockDevice _vol = new("vol", 1 << 30, minimum: 4096, preferred: 65536, maximum: 8 << 20);
    private readonly MemoryBlockDevice _ro = new("ro", 1 << 20, readOnly: true);
    private readonly FixedCatalog _catalog;
    private readonly NbdNegotiator _negotiator;

    public NbdNegotiatorTests()
    {
        _catalog = new FixedCatalog((_vol, "mirrored over two legs"), (_ro, "read-only"));
        _negotiator = new NbdNegotiator(_catalog, new NbdServerOptions());
    }

    [Fact]
    public async Task List_sends_one_server_reply_per_export_then_ack()
    {
        var (step, replies) = await Handle(NbdOption.List, []);

        Assert.Equal(NbdNegotiationStep.Continue, step);
        Assert.Equal([NbdOptionReply.Server, NbdOptionReply.Server, NbdOptionReply.Ack], replies.Select(r => r.Reply));
        Assert.Equal("\0\0\0\u0003volmirrored over two legs", Encoding.UTF8.GetString(replies[0].Data));
        Assert.All(replies, r => Assert.Equal(NbdOption.List, r.Option));
    }

    [Fact]
    public async Task List_with_data_is_invalid()
    {
        var (step, replies) = await Handle(NbdOption.List, [1]);

        Assert.Equal(NbdNegotiationStep.Continue, step);
        Assert.Equal(NbdOptionReply.ErrorInvalid, Assert.Single(replies).Reply);
    }

    [Fact]
    public async Task Info_describes_the_export_and_keeps_negotiating()
    {
        var (step, replies) = await Handle(NbdOption.Info, NbdCodecTests.InfoData("vol", (ushort)NbdInfoType.Name, (ushort)NbdInfoType.Description, 99));

        Assert.Equal(NbdNegotiationStep.Continue, step);
        Assert.Null(_negotiator.Session);
        Assert.Equal([NbdOptionReply.Info, NbdOptionReply.Info, NbdOptionReply.Info, NbdOptionReply.Info, NbdOptionReply.Ack], replies.Select(r => r.Reply));
        var export = replies[0].Data;
        Assert.Equal((ushort)NbdInfoType.Export, BinaryPrimitives.ReadUInt16BigEndian(export));
        Assert.Equal(1UL << 30, BinaryPrimitives.ReadUInt64BigEndian(export.AsSpan(2)));
        var flags = (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(export.AsSpan(10));
        Assert.True(flags.HasFlag(NbdTransmissionFlags.CanMultiConn) && !flags.HasFlag(NbdTransmissionFlags.ReadOnly));
        Assert.Equal("\0\u0001vol", Encoding.UTF8.GetString(replies[1].Data));
        Assert.Equal("\0\u0002mirrored over two legs", Encoding.UTF8.GetString(replies[2].Data));
        var sizes = replies[3].Data;
        Assert.Equal((ushort)NbdInfoType.BlockSize, BinaryPrimitives.ReadUInt16BigEndian(sizes));
        Assert.Equal((4096u, 65536u, 8u << 20), (BinaryPrimitives.ReadUInt32BigEndian(sizes.AsSpan(2)), BinaryPrimitives.ReadUInt32BigEndian(sizes.AsSpan(6)), BinaryPrimitives.ReadUInt32BigEndian(sizes.AsSpan(10))));
    }

    [Fact]
    public async Task Info_gives_the_opened_handle_back_but_go_keeps_it()
    {
        await Handle(NbdOption.Info, NbdCodecTests.InfoData("vol"));
        Assert.Equal((1, 1), (_catalog.Opens, _vol.Disposals));

        await Handle(NbdOption.Go, NbdCodecTests.InfoData("vol"));
        Assert.Equal((2, 1), (_catalog.Opens, _vol.Disposals));
    }

    [Fact]
    public async Task Go_enters_transmission_with_the_export()
    {
        var (step, replies) = await Handle(NbdOption.Go, NbdCodecTests.InfoData("ro"));

        Assert.Equal(NbdNegotiationStep.Transmission, step);
        Assert.Equal(NbdOptionReply.Ack, replies[^1].Reply);
        var session = Assert.IsType<NbdSession>(_negotiator.Session);
        Assert.Same(_ro, session.Device);
        Assert.True(session.Flags.HasFlag(NbdTransmissionFlags.ReadOnly));
        Assert.False(session.StructuredReplies);
        Assert.Equal(0u, session.AllocationContextId);
    }

    [Fact]
    public async Task Go_with_the_empty_name_takes_the_default_export()
    {
        var (step, _) = await Handle(NbdOption.Go, NbdCodecTests.InfoData(""));

        Assert.Equal(NbdNegotiationStep.Transmission, step);
        Assert.Equal("vol", _negotiator.Session!.ExportName);
    }

    [Fact]
    public async Task Info_or_go_for_an_unknown_export_is_an_error_reply_not_a_hangup()
    {
        var (step, replies) = await Handle(NbdOption.Go, NbdCodecTests.InfoData("nope"));

        Assert.Equal(NbdNegotiationStep.Continue, step);
        var reply = Assert.Single(replies);
        Assert.Equal(NbdOptionReply.ErrorUnknown, reply.Reply);
        Assert.Contains("nope", Encoding.UTF8.GetString(reply.Data), StringComparison.Ordinal);

        var (_, malformed) = await Handle(NbdOption.Info, [0, 0, 0, 9, 1]);
        Assert.Equal(NbdOptionReply.ErrorInvalid, Assert.Single(malformed).Reply);
    }

    [Fact]
    public async Task Export_name_answers_size_and_flags_with_or_without_zeroes()
    {
        _negotiator.NoZeroes = true;
        var output = new ArrayBufferWriter<byte>();
        var step = await _negotiator.HandleAsync(new NbdOptionHeader(NbdOption.ExportName, 3), "vol"u8.ToArray(), output);

        Assert.Equal(NbdNegotiationStep.Transmission, step);
        Assert.Equal(10, output.WrittenCount);
        Assert.Equal(1UL << 30, BinaryPrimitives.ReadUInt64BigEndian(output.WrittenSpan));

        var padded = new NbdNegotiator(_catalog, new NbdServerOptions());
        var paddedOutput = new ArrayBufferWriter<byte>();
        await padded.HandleAsync(new NbdOptionHeader(NbdOption.ExportName, 2), "ro"u8.ToArray(), paddedOutput);
        Assert.Equal(134, paddedOutput.WrittenCount);
    }

    [Fact]
    public async Task Export_name_for_an_unknown_export_closes_since_it_cannot_carry_an_error()
    {
        var output = new ArrayBufferWriter<byte>();
        var step = await _negotiator.HandleAsync(new NbdOptionHeader(NbdOption.ExportName, 4), "nope"u8.ToArray(), output);

        Assert.Equal(NbdNegotiationStep.Close, step);
        Assert.Equal(0, output.WrittenCount);
        Assert.Contains("nope", _negotiator.CloseReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Abort_is_acknowledged_and_closes()
    {
        var (step, replies) = await Handle(NbdOption.Abort, []);

        Assert.Equal(NbdNegotiationStep.Close, step);
        Assert.Equal(NbdOptionReply.Ack, Assert.Single(replies).Reply);
    }

    [Fact]
    public async Task Structured_reply_is_acknowledged_and_shows_in_the_session()
    {
        var (_, replies) = await Handle(NbdOption.StructuredReply, []);
        Assert.Equal(NbdOptionReply.Ack, Assert.Single(replies).Reply);
        var (_, invalid) = await Handle(NbdOption.StructuredReply, [0]);
        Assert.Equal(NbdOptionReply.ErrorInvalid, Assert.Single(invalid).Reply);

        await Handle(NbdOption.Go, NbdCodecTests.InfoData("vol"));
        Assert.True(_negotiator.Session!.StructuredReplies);
        Assert.True(_negotiator.Session.Flags.HasFlag(NbdTransmissionFlags.SendDf));
    }

    [Fact]
    public async Task Meta_contexts_need_structured_replies_first()
    {
        var (_, replies) = await Handle(NbdOption.SetMetaContext, NbdCodecTests.MetaData("vol", "base:allocation"));

        Assert.Equal(NbdOptionReply.ErrorInvalid, Assert.Single(replies).Reply);
    }

    [Fact]
    public async Task Set_meta_context_selects_base_allocation_for_go_on_the_same_export()
    {
        await Handle(NbdOption.StructuredReply, []);
        var (_, replies) = await Handle(NbdOption.SetMetaContext, NbdCodecTests.MetaData("vol", "x-other:thing", "base:allocation"));

        Assert.Equal([NbdOptionReply.MetaContext, NbdOptionReply.Ack], replies.Select(r => r.Reply));
        Assert.Equal(NbdMetaContexts.BaseAllocationId, BinaryPrimitives.ReadUInt32BigEndian(replies[0].Data));
        Assert.Equal("base:allocation", Encoding.UTF8.GetString(replies[0].Data, 4, replies[0].Data.Length - 4));

        await Handle(NbdOption.Go, NbdCodecTests.InfoData("vol"));
        Assert.Equal(NbdMetaContexts.BaseAllocationId, _negotiator.Session!.AllocationContextId);
    }

    [Fact]
    public async Task Contexts_selected_for_one_export_do_not_carry_over_to_another()
    {
        await Handle(NbdOption.StructuredReply, []);
        await Handle(NbdOption.SetMetaContext, NbdCodecTests.MetaData("vol", "base:allocation"));

        await Handle(NbdOption.Go, NbdCodecTests.InfoData("ro"));

        Assert.Equal(0u, _negotiator.Session!.AllocationContextId);
    }

    [Fact]
    public async Task Set_meta_context_without_a_known_context_selects_nothing()
    {
        await Handle(NbdOption.StructuredReply, []);
        await Handle(NbdOption.SetMetaContext, NbdCodecTests.MetaData("vol", "base:allocation"));
        var (_, replies) = await Handle(NbdOption.SetMetaContext, NbdCodecTests.MetaData("vol", "qemu:dirty-bitmap:x"));

        Assert.Equal(NbdOptionReply.Ack, Assert.Single(replies).Reply);
        await Handle(NbdOption.Go, NbdCodecTests.InfoData("vol"));
        Assert.Equal(0u, _negotiator.Session!.AllocationContextId);
    }

    [Theory]
    [InlineData(new string[0], true)]
    [InlineData(new[] { "base:" }, true)]
    [InlineData(new[] { "base:allocation" }, true)]
    [InlineData(new[] { "qemu:" }, false)]
    public async Task List_meta_context_lists_base_allocation_for_matching_queries(string[] queries, bool listed)
    {
        await Handle(NbdOption.StructuredReply, []);
        var (_, replies) = await Handle(NbdOption.ListMetaContext, NbdCodecTests.MetaData("vol", queries));

        Assert.Equal(NbdOptionReply.Ack, replies[^1].Reply);
        Assert.Equal(listed ? 2 : 1, replies.Count);
        await Handle(NbdOption.Go, NbdCodecTests.InfoData("vol"));
        Assert.Equal(0u, _negotiator.Session!.AllocationContextId);
    }

    [Fact]
    public async Task Meta_context_for_an_unknown_export_or_malformed_is_an_error()
    {
        await Handle(NbdOption.StructuredReply, []);
        var (_, unknown) = await Handle(NbdOption.SetMetaContext, NbdCodecTests.MetaData("nope", "base:allocation"));
        var (_, malformed) = await Handle(NbdOption.ListMetaContext, [0, 0, 0, 3, (byte)'v']);

        Assert.Equal(NbdOptionReply.ErrorUnknown, Assert.Single(unknown).Reply);
        Assert.Equal(NbdOptionReply.ErrorInvalid, Assert.Single(malformed).Reply);
    }

    [Theory]
    [InlineData(NbdOption.StartTls)]
    [InlineData(NbdOption.PeekExport)]
    [InlineData(NbdOption.ExtendedHeaders)]
    [InlineData((NbdOption)1234)]
    public async Task Unknown_options_are_unsupported_and_negotiation_goes_on(NbdOption option)
    {
        var (step, replies) = await Handle(option, [1, 2, 3]);

        Assert.Equal(NbdNegotiationStep.Continue, step);
        var reply = Assert.Single(replies);
        Assert.Equal((option, NbdOptionReply.ErrorUnsupported), (reply.Option, reply.Reply));
    }

    private async Task<(NbdNegotiationStep Step, List<(NbdOption Option, NbdOptionReply Reply, byte[] Data)> Replies)> Handle(NbdOption option, byte[] data)
    {
        var output = new ArrayBufferWriter<byte>();
        var step = await _negotiator.HandleAsync(new NbdOptionHeader(option, (uint)data.Length), data, output);
        return (step, NbdCodecTests.OptionReplies(output.WrittenSpan.ToArray()));
    }
}
