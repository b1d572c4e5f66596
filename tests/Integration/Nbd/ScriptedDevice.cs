using Lockstep.Actors.BlockIo;

namespace Lockstep.Integration.Tests.Nbd;

/// <summary>
/// Wraps a device and lets a test step in before each call: hold a request at a gate, or fail it with a
/// chosen <see cref="BlockIoException"/>. <see cref="Before"/> gets the operation name and offset.
/// </summary>
internal sealed class ScriptedDevice(IBlockDevice inner, string name) : IBlockDevice
{
    public Func<string, long, ValueTask>? Before { get; set; }

    public string Name => name;

    public long Size => inner.Size;

    public int MinimumBlockSize => inner.MinimumBlockSize;

    public int PreferredBlockSize => inner.PreferredBlockSize;

    public int MaximumRequestSize => inner.MaximumRequestSize;

    public bool IsReadOnly => inner.IsReadOnly;

    public async ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellation = default)
    {
        await StepAsync("read", offset);
        await inner.ReadAsync(offset, destination, cancellation);
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool forceUnitAccess, CancellationToken cancellation = default)
    {
        await StepAsync("write", offset);
        await inner.WriteAsync(offset, source, forceUnitAccess, cancellation);
    }

    public async ValueTask FlushAsync(CancellationToken cancellation = default)
    {
        await StepAsync("flush", 0);
        await inner.FlushAsync(cancellation);
    }

    public async ValueTask TrimAsync(long offset, long length, bool forceUnitAccess, CancellationToken cancellation = default)
    {
        await StepAsync("trim", offset);
        await inner.TrimAsync(offset, length, forceUnitAccess, cancellation);
    }

    public async ValueTask WriteZeroesAsync(long offset, long length, bool mayPunchHole, bool forceUnitAccess, CancellationToken cancellation = default)
    {
        await StepAsync(mayPunchHole ? "zero" : "zero-no-hole", offset);
        await inner.WriteZeroesAsync(offset, length, mayPunchHole, forceUnitAccess, cancellation);
    }

    public async ValueTask<IReadOnlyList<BlockExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellation = default)
    {
        await StepAsync("status", offset);
        return await inner.GetAllocationAsync(offset, length, cancellation);
    }

    public ValueTask DisposeAsync() => inner.DisposeAsync();

    private ValueTask StepAsync(string operation, long offset) => Before?.Invoke(operation, offset) ?? ValueTask.CompletedTask;
}
