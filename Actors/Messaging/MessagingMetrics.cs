using System.Diagnostics.Metrics;

namespace Lockstep.Actors.Messaging;

/// <summary>Counters of the layer (System.Diagnostics.Metrics, meter <c>Lockstep.Messaging</c>).</summary>
public static class MessagingMetrics
{
    /// <summary>The meter name, for exporters.</summary>
    public const string MeterName = "Lockstep.Messaging";

    private static readonly Meter Meter = new(MeterName);

    /// <summary>Handler runs.</summary>
    public static readonly Counter<long> HandlerRuns = Meter.CreateCounter<long>("lockstep_messaging_handler_runs");

    /// <summary>Requests a holder refused, tagged with the reason (ChannelFull is the cap being hit).</summary>
    public static readonly Counter<long> Rejections = Meter.CreateCounter<long>("lockstep_messaging_rejections");

    /// <summary>Re-sent requests and drops.</summary>
    public static readonly Counter<long> Resends = Meter.CreateCounter<long>("lockstep_messaging_resends");

    /// <summary>The configured holder cap, reported as a gauge so the limit that was hit is visible.</summary>
    public static readonly ObservableGauge<int> HolderCap = Meter.CreateObservableGauge("lockstep_messaging_holder_cap", () => ReportedCap);

    /// <summary>Set by the layer at start.</summary>
    internal static int ReportedCap { get; set; }
}
