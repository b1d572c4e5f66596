namespace Lockstep.Actors.BlockIo;

/// <summary>
/// Overlap ordering for requests that modify the device: a request is admitted when no earlier request
/// (admitted or still waiting) overlaps its byte range, so overlapping writes complete in arrival order and
/// a later request can never overtake an earlier one it overlaps; requests on other ranges never wait.
/// Pure state (no I/O, no threads): the caller serializes calls and wakes the requests it is told to.
/// <code>
/// if (!state.Enter(op, start, end)) { /* park op */ }
/// state.Exit(op, admitted); foreach (var next in admitted) { /* wake next */ }
/// </code>
/// </summary>
/// <typeparam name="T">The request handle, compared by reference.</typeparam>
public sealed class RangeAdmissionState<T> where T : class
{
    // Arrival order; the queue depth of a volume is small (tens), so linear scans beat an interval tree.
    private Entry[] _entries = new Entry[16];
    private int _count;

    /// <summary>Requests admitted or waiting.</summary>
    public int Count => _count;

    /// <summary>Adds a request for [<paramref name="start"/>, <paramref name="end"/>); true when it may run now.</summary>
    public bool Enter(T request, long start, long end)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (end <= start)
        {
            throw new ArgumentException($"empty range {start}..{end}");
        }

        var admitted = true;
        for (var i = 0; i < _count; i++)
        {
            if (ReferenceEquals(_entries[i].Request, request))
            {
                throw new InvalidOperationException("request entered twice");
            }

            if (_entries[i].Start < end && start < _entries[i].End)
            {
                admitted = false;
            }
        }

        if (_count == _entries.Length)
        {
            Array.Resize(ref _entries, _count * 2);
        }

        _entries[_count++] = new Entry(request, start, end, admitted);
        return admitted;
    }

    /// <summary>Removes an admitted request and appends to <paramref name="nowAdmitted"/> the waiting requests that may run now.</summary>
    public void Exit(T request, List<T> nowAdmitted)
    {
        ArgumentNullException.ThrowIfNull(nowAdmitted);
        var index = -1;
        for (var i = 0; i < _count; i++)
        {
            if (ReferenceEquals(_entries[i].Request, request))
            {
                index = i;
                break;
            }
        }

        if (index < 0 || !_entries[index].Admitted)
        {
            throw new InvalidOperationException(index < 0 ? "exit of a request that never entered" : "exit of a request that was not admitted");
        }

        var (start, end) = (_entries[index].Start, _entries[index].End);
        Array.Copy(_entries, index + 1, _entries, index, _count - index - 1);
        _entries[--_count] = default;

        // Only waiters overlapping the released range can change state; each needs no overlap with anything before it.
        for (var i = index; i < _count; i++)
        {
            ref var e = ref _entries[i];
            if (e.Admitted || !(e.Start < end && start < e.End))
            {
                continue;
            }

            var blocked = false;
            for (var j = 0; j < i; j++)
            {
                if (_entries[j].Start < e.End && e.Start < _entries[j].End)
                {
                    blocked = true;
                    break;
                }
            }

            if (!blocked)
            {
                e.Admitted = true;
                nowAdmitted.Add(e.Request);
            }
        }
    }

    /// <summary>True when <paramref name="request"/> is present and admitted (for tests and assertions).</summary>
    public bool IsAdmitted(T request)
    {
        for (var i = 0; i < _count; i++)
        {
            if (ReferenceEquals(_entries[i].Request, request))
            {
                return _entries[i].Admitted;
            }
        }

        return false;
    }

    private struct Entry(T request, long start, long end, bool admitted)
    {
        public readonly T Request = request;
        public readonly long Start = start;
        public readonly long End = end;
        public bool Admitted = admitted;
    }
}
