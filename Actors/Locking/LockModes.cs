using Lockstep.Contracts.Locking;

namespace Lockstep.Actors.Locking;

/// <summary>The VMS mode tables the lock resource decides by.</summary>
public static class LockModes
{
    /// <summary>All six modes in order.</summary>
    public static IReadOnlyList<LockMode> All { get; } = [LockMode.NL, LockMode.CR, LockMode.CW, LockMode.PR, LockMode.PW, LockMode.EX];

    // Rows: the mode held; columns: the mode asked. The standard VMS table.
    private static readonly bool[,] Compat =
    {
        //          NL    CR     CW     PR     PW     EX
        /* NL */ { true, true,  true,  true,  true,  true },
        /* CR */ { true, true,  true,  true,  true,  false },
        /* CW */ { true, true,  true,  false, false, false },
        /* PR */ { true, true,  false, true,  false, false },
        /* PW */ { true, true,  false, false, false, false },
        /* EX */ { true, false, false, false, false, false },
    };

    // QUECVT only makes sense for conversions that can block: those that are up-conversions.
    private static readonly bool[,] QueCvt =
    {
        //           NL     CR     CW     PR     PW     EX
        /* NL */ { false, true,  true,  true,  true,  true },
        /* CR */ { false, false, true,  true,  true,  true },
        /* CW */ { false, false, false, true,  true,  true },
        /* PR */ { false, false, true,  false, true,  true },
        /* PW */ { false, false, false, false, false, true },
        /* EX */ { false, false, false, false, false, false },
    };

    /// <summary>Whether a lock held in <paramref name="held"/> lets another be granted <paramref name="requested"/>.</summary>
    public static bool Compatible(LockMode held, LockMode requested) => Compat[(int)held, (int)requested];

    /// <summary>Whether QUECVT is allowed for a conversion from <paramref name="from"/> to <paramref name="to"/>.</summary>
    public static bool QueCvtAllowed(LockMode from, LockMode to) => QueCvt[(int)from, (int)to];

    /// <summary>What granting <paramref name="to"/> to a lock held in <paramref name="from"/> does to the LVB.</summary>
    /// <param name="from">The granted mode before, or null for a new lock.</param>
    /// <param name="to">The mode being granted.</param>
    public static LvbAction LvbOnGrant(LockMode? from, LockMode to)
    {
        if (from is null)
        {
            return LvbAction.Return;
        }

        // Only a holder that could have written (PW, EX) writes back, and only when it gives up
        // write access; PW→EX keeps write access and reads the current value.
        if (from is LockMode.PW or LockMode.EX)
        {
            return from == LockMode.PW && to == LockMode.EX ? LvbAction.Return : LvbAction.Write;
        }

        return to >= from ? LvbAction.Return : LvbAction.None;
    }

    /// <summary>Parses a mode name (NL, CR, CW, PR, PW, EX), case-insensitively.</summary>
    public static bool TryParse(string? text, out LockMode mode) =>
        Enum.TryParse(text, ignoreCase: true, out mode) && Enum.IsDefined(mode);
}

/// <summary>What a grant does with the lock value block.</summary>
public enum LvbAction
{
    /// <summary>Leave it alone.</summary>
    None,

    /// <summary>Copy the resource's LVB to the caller (with VALBLK).</summary>
    Return,

    /// <summary>Copy the caller's LVB to the resource (with VALBLK), or invalidate it (with IVVALBLK).</summary>
    Write,
}
