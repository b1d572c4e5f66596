using System.Buffers;
using Lockstep.Actors.BlockIo;

namespace Lockstep.Hosting.Tests.Nbd;

/// <summary>Builds a <see cref="ReadOnlySequence{T}"/> out of several segments, to test parsing across segment borders.</summary>
internal sealed class TestSegment : ReadOnlySequenceSegment<byte>
{
    private TestSegment(ReadOnlyMemory<byte> memory, long runningIndex)
    {
        Memory = memory;
        RunningIndex = runningIndex;
    }

    public static ReadOnlySequence<byte> Split(byte[] bytes, params int[] cuts)
    {
        var points = cuts.Where(c => c > 0 && c < bytes.Length).Distinct().Order().Append(bytes.Length).ToArray();
        var first = new TestSegment(bytes.AsMemory(0, points[0]), 0);
        var last = first;
        for (var i = 1; i < points.Length; i++)
        {
            var next = new TestSegment(bytes.AsMemory(points[i - 1], points[i] - points[i - 1]), points[i - 1]);
            last.Next = next;
            last = next;
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }
}

/// <summary>A block device in memory, enough for handshake tests.</summary>
internal sealed class MemoryBlockDevice(string name, long size, bool readOnly = false, int minimum = 512, int preferred = 4096, int maximum = 32 << 20) : IBlockDevice
{
    public string Name => name;

    public long Size => size;

    public int MinimumBlockSize => minimum;

    public int PreferredBlockSize => preferred;

    public int MaximumRequestSize => maximum;

    public bool IsReadOnly => readOnly;

    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellation = default)
    {
        destination.Span.Clear();
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool forceUnitAccess, CancellationToken cancellation = default) => ValueTask.CompletedTask;

    public ValueTask FlushAsync(CancellationToken cancellation = default) => ValueTask.CompletedTask;

    public ValueTask TrimAsync(long offset, long length, bool forceUnitAccess, CancellationToken cancellation = default) => ValueTask.CompletedTask;

    public ValueTask WriteZeroesAsync(long offset, long length, bool mayPunchHole, bool forceUnitAccess, CancellationToken cancellation = default) => ValueTask.CompletedTask;

    public ValueTask<IReadOnlyList<BlockExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellation = default) =>
        ValueTask.FromResult<IReadOnlyList<BlockExtent>>([new BlockExtent(length, BlockExtentKind.HoleAndZero)]);

    /// <summary>How often a holder gave its handle back.</summary>
    public int Disposals { get; private set; }

    public ValueTask DisposeAsync()
    {
        Disposals++;
        return ValueTask.CompletedTask;
    }
}

/// <summary>A catalog over fixed devices.</summary>
internal sealed class FixedCatalog(params (IBlockDevice Device, string Description)[] exports) : IExportCatalog
{
    public int Opens { get; private set; }

    public IReadOnlyList<ExportDescription> List() => exports.Select(e => new ExportDescription(e.Device.Name, e.Description)).ToArray();

    public ValueTask<IBlockDevice?> OpenAsync(string name, CancellationToken cancellation = default)
    {
        Opens++;
        return ValueTask.FromResult(exports.Select(e => e.Device).FirstOrDefault(d => d.Name == name));
    }
}
