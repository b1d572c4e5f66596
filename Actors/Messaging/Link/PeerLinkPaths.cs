namespace Lockstep.Actors.Messaging.Link;

/// <summary>
/// The sender's side of a connection's path table: the id each actor got, handed out in first-use order. Not
/// thread-safe (the connection's write lock guards it).
/// </summary>
/// <typeparam name="TKey">What names an actor (an <c>IActorRef</c> on a node).</typeparam>
public sealed class PeerLinkPathIds<TKey>
    where TKey : notnull
{
    private readonly Dictionary<TKey, uint> _ids = new();

    /// <summary>Ids handed out.</summary>
    public int Count => _ids.Count;

    /// <summary>
    /// The id of <paramref name="key"/>; <paramref name="isNew"/> when it was just assigned (its definition must go on
    /// the wire first). False when the connection has used up <see cref="PeerLinkWire.MaxIds"/>.
    /// </summary>
    public bool TryGet(TKey key, out uint id, out bool isNew)
    {
        if (_ids.TryGetValue(key, out id))
        {
            isNew = false;
            return true;
        }

        isNew = true;
        if (_ids.Count >= PeerLinkWire.MaxIds)
        {
            id = 0;
            return false;
        }

        id = (uint)_ids.Count + 1;
        _ids[key] = id;
        return true;
    }
}

/// <summary>The receiver's side: what each defined id resolved to. A use of an undefined id, or a second definition, breaks the stream.</summary>
/// <typeparam name="TRef">The resolved actor.</typeparam>
public sealed class PeerLinkPathTable<TRef>
    where TRef : class
{
    private readonly Dictionary<uint, TRef> _refs = new();

    /// <summary>Records the definition of <paramref name="id"/>.</summary>
    public void Define(uint id, TRef target)
    {
        if (!_refs.TryAdd(id, target))
        {
            throw new PeerLinkProtocolException($"path id {id} defined twice");
        }
    }

    /// <summary>The actor of <paramref name="id"/>.</summary>
    public TRef Get(uint id) =>
        _refs.TryGetValue(id, out var target) ? target : throw new PeerLinkProtocolException($"path id {id} used before its definition");
}
