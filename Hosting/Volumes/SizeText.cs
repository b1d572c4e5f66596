using System.Globalization;

namespace Lockstep.Hosting.Volumes;

/// <summary>Sizes as people type and read them: IEC multiples (K = 1024), optional "i"/"iB"/"B" suffix.</summary>
public static class SizeText
{
    private static readonly (string Unit, long Factor)[] Units = [("T", 1L << 40), ("G", 1L << 30), ("M", 1L << 20), ("K", 1L << 10)];

    /// <summary>Parses "4G", "1M", "512KiB", "1.5G", "4096"; returns false with a reason for anything else.</summary>
    public static bool TryParse(string? text, out long bytes, out string? error)
    {
        bytes = 0;
        error = null;
        var s = (text ?? "").Trim();
        if (s.Length == 0)
        {
            error = "size is empty";
            return false;
        }

        var upper = s.ToUpperInvariant();
        if (upper.EndsWith("IB", StringComparison.Ordinal))
        {
            upper = upper[..^2];
        }
        else if (upper.EndsWith('B'))
        {
            upper = upper[..^1];
        }
        else if (upper.EndsWith('I'))
        {
            upper = upper[..^1];
        }

        long factor = 1;
        foreach (var (unit, f) in Units)
        {
            if (upper.EndsWith(unit, StringComparison.Ordinal))
            {
                factor = f;
                upper = upper[..^1];
                break;
            }
        }

        if (!decimal.TryParse(upper, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number) || number <= 0)
        {
            error = $"size '{text}' is not a positive number with an optional K, M, G or T (IEC: 1K = 1024)";
            return false;
        }

        decimal total;
        try
        {
            total = number * factor;
        }
        catch (OverflowException)
        {
            error = $"size '{text}' is too large";
            return false;
        }

        if (total > long.MaxValue)
        {
            error = $"size '{text}' is too large";
            return false;
        }

        if (total != decimal.Truncate(total))
        {
            error = $"size '{text}' is not a whole number of bytes";
            return false;
        }

        bytes = (long)total;
        return true;
    }

    /// <summary>Formats bytes with the largest IEC unit that divides them evenly, e.g. 1073741824 → "1 GiB", 1536 → "1.5 KiB".</summary>
    public static string Format(long bytes)
    {
        foreach (var (unit, factor) in Units)
        {
            if (bytes >= factor)
            {
                var value = (decimal)bytes / factor;
                return value.ToString(value == decimal.Truncate(value) ? "0" : "0.##", CultureInfo.InvariantCulture) + " " + unit + "iB";
            }
        }

        return bytes.ToString(CultureInfo.InvariantCulture) + " B";
    }
}
