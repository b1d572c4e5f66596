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

    /// <summary>The id of <paramref name="key"/> if its definition was already written.</summary>
    public bool TryGet(TKey key, out uint id) => _ids.TryGetValue(key, out id);

    /// <summary>Whether another id can be handed out (else the connection has used up <see cref="PeerLinkWire.MaxIds"/>).</summary>
    public bool HasRoom => _ids.Count < PeerLinkWire.MaxIds;

    /// <summary>
    /// Hands out the next id to <paramref name="key"/>: call only once its definition is written (so a definition that
    /// could not be written never leaves an id the receiver has not seen).
    /// </summary>
    public uint Add(TKey key)
    {
        if (!HasRoom)
        {
            throw new InvalidOperationException("path table full");
        }

        var id = (uint)_ids.Count + 1;
        _ids.Add(key, id);
        return id;
    }

    /// <summary>The id <see cref="Add"/> will hand out next.</summary>
    public uint NextId => (uint)_ids.Count + 1;
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
