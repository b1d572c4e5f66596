using System.Text;

namespace Lockstep.Actors.Locking;

/// <summary>Validation of lockspace and resource names, and the entity id <c>{lockspace}/{resource}</c> built from them.</summary>
public static class LockNames
{
    /// <summary>Longest lockspace name.</summary>
    public const int MaxLockspaceLength = 64;

    /// <summary>Why <paramref name="name"/> is not a lockspace name, or null if it is one.</summary>
    public static string? LockspaceError(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return "lockspace name is empty";
        }

        if (name.Length > MaxLockspaceLength)
        {
            return $"lockspace name is longer than {MaxLockspaceLength} characters";
        }

        foreach (var c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            {
                return $"lockspace name '{name}' may only hold letters, digits, '-', '_' and '.'";
            }
        }

        return null;
    }

    /// <summary>Why <paramref name="name"/> is not a resource name, or null if it is one (1..64 UTF-8 bytes, no control characters).</summary>
    public static string? ResourceError(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return "resource name is empty";
        }

        if (Encoding.UTF8.GetByteCount(name) > LockResourceState.MaxNameLength)
        {
            return $"resource name is longer than {LockResourceState.MaxNameLength} bytes";
        }

        return name.Any(char.IsControl) ? "resource name holds control characters" : null;
    }

    /// <summary>The entity id of a resource; throws <see cref="ArgumentException"/> for bad names.</summary>
    public static string EntityId(string lockspace, string resource)
    {
        var error = LockspaceError(lockspace) ?? ResourceError(resource);
        return error is null ? $"{lockspace}/{resource}" : throw new ArgumentException(error);
    }

    /// <summary>Splits an entity id into lockspace and resource; false if it is not a valid one.</summary>
    public static bool TrySplit(string entityId, out string lockspace, out string resource)
    {
        var slash = entityId.IndexOf('/', StringComparison.Ordinal);
        lockspace = slash > 0 ? entityId[..slash] : string.Empty;
        resource = slash > 0 ? entityId[(slash + 1)..] : string.Empty;
        return slash > 0 && LockspaceError(lockspace) is null && ResourceError(resource) is null;
    }
}
