using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Lockstep.Persistence.Disk;

/// <summary>
/// Native memory aligned to 4096 bytes, as O_DIRECT needs for buffer address, length and offset.
/// Rent from <see cref="AlignedBufferPool"/> and give it back; the memory is freed when the pool drops it.
/// No finalizer (CA2015: a span may outlive the manager), so a buffer that is never returned nor disposed leaks.
/// </summary>
public sealed unsafe class AlignedBuffer : MemoryManager<byte>
{
    private byte* _pointer;

    internal AlignedBuffer(int capacity)
    {
        Capacity = capacity;
        _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)capacity, AlignedBufferPool.Alignment);
    }

    /// <summary>Bytes available; a power of two ≥ 4096.</summary>
    public int Capacity { get; }

    /// <summary>The whole buffer as memory (no allocation: the manager is the buffer).</summary>
    public Memory<byte> All => Memory;

    public override Span<byte> GetSpan()
    {
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return new Span<byte>(_pointer, Capacity);
    }

    // Native memory does not move, so pinning is just handing out the address.
    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
        }
    }
}

/// <summary>
/// A pool of <see cref="AlignedBuffer"/>s in power-of-two size classes from 4 KiB to 64 MiB. Renting and
/// returning allocate nothing once a class holds buffers, so the block pipeline stays allocation-free in
/// steady state. Each class keeps at most a few buffers so a burst of huge requests does not pin memory forever.
/// </summary>
public sealed class AlignedBufferPool
{
    public const int Alignment = 4096;
    public const int MaxBufferSize = 64 << 20;
    private const int MinShift = 12;
    private const int MaxShift = 26;
    private const long RetainedBytesPerClass = 64L << 20;

    private readonly Bucket[] _buckets;

    public AlignedBufferPool()
    {
        _buckets = new Bucket[MaxShift - MinShift + 1];
        for (var i = 0; i < _buckets.Length; i++)
        {
            var size = 1 << (i + MinShift);
            _buckets[i] = new Bucket((int)Math.Clamp(RetainedBytesPerClass / size, 4, 256));
        }
    }

    /// <summary>The pool every leg and volume in the process shares.</summary>
    public static AlignedBufferPool Shared { get; } = new();

    /// <summary>A buffer of at least <paramref name="minimumLength"/> bytes (rounded up to a power of two ≥ 4096).</summary>
    public AlignedBuffer Rent(int minimumLength)
    {
        if (minimumLength <= 0 || minimumLength > MaxBufferSize)
        {
            throw new ArgumentOutOfRangeException(nameof(minimumLength), minimumLength, $"buffers are 1..{MaxBufferSize} bytes");
        }

        var shift = Math.Max(MinShift, 32 - BitOperations.LeadingZeroCount((uint)minimumLength - 1));
        var bucket = _buckets[shift - MinShift];
        return bucket.TryTake() ?? new AlignedBuffer(1 << shift);
    }

    public void Return(AlignedBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        var shift = BitOperations.Log2((uint)buffer.Capacity);
        if (!_buckets[shift - MinShift].TryPut(buffer))
        {
            ((IDisposable)buffer).Dispose();
        }
    }

    private sealed class Bucket(int limit)
    {
        private readonly AlignedBuffer?[] _items = new AlignedBuffer?[limit];
        private int _count;

        public AlignedBuffer? TryTake()
        {
            lock (_items)
            {
                if (_count == 0)
                {
                    return null;
                }

                var item = _items[--_count];
                _items[_count] = null;
                return item;
            }
        }

        public bool TryPut(AlignedBuffer buffer)
        {
            lock (_items)
            {
                if (_count == _items.Length)
                {
                    return false;
                }

                _items[_count++] = buffer;
                return true;
            }
        }
    }
}
