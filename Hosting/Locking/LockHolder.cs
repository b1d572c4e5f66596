using System.Globalization;
using Grpc.Core;
using Grpc.Net.Client;
using Lockstep.Hosting.Locking.Grpc;
using Status = Lockstep.Hosting.Locking.Grpc.Status;

namespace Lockstep.Hosting.Locking;

/// <summary>Settings of <see cref="LockHolder"/>.</summary>
/// <param name="Node">Management HTTP address of the node (gRPC on port + 1000).</param>
/// <param name="Resource">Resource to lock EX.</param>
/// <param name="EventLog">File the events are appended to.</param>
/// <param name="Duration">How long to run; a lock still held then is unlocked.</param>
/// <param name="ProbeInterval">After the lock was lost: how often to ask for it again (NOQUEUE).</param>
/// <param name="Lockspace">Lockspace of the resource.</param>
/// <param name="ValBlk">Ask with VALBLK (read the LVB; the grant line says <c>valnotvalid</c> when the LVB was not valid).</param>
public sealed record LockHolderSettings(Uri Node, string Resource, string EventLog, TimeSpan Duration, TimeSpan ProbeInterval, string Lockspace = "torture", bool ValBlk = false);

/// <summary>
/// Holds one EX lock and writes down, on the machine-wide monotonic clock (<see cref="HoldClock"/>),
/// what happens to it: <c>NS opened</c>, <c>NS granted</c>, <c>NS recovery STAGE</c>, <c>NS lost
/// REASON</c> (the node said FENCED or its stream broke), then <c>NS probe STATUS</c> for each later
/// NOQUEUE attempt at the same lock. Two of these on different nodes show who could act when: the
/// partition test reads the logs of a minority holder and a majority waiter.
/// </summary>
public static class LockHolder
{
    private const uint NoQueue = 1;
    private const uint ValBlk = 4;

    // A probe of a node that is going away may hang; it must not hold up the next one for long.
    private static readonly TimeSpan ProbePatience = TimeSpan.FromSeconds(2);

    /// <summary>Runs for <see cref="LockHolderSettings.Duration"/>; returns whether anything was granted after the lock was lost (a stale grant).</summary>
    public static async Task<bool> RunAsync(LockHolderSettings settings, TextWriter output, CancellationToken ct)
    {
        using var log = new AppendOnlyLineLog(settings.EventLog);
        void Event(string what)
        {
            var line = string.Create(CultureInfo.InvariantCulture, $"{HoldClock.NowNs()} {what}");
            log.AppendLine(line);
            output.WriteLine(line);
        }

        using var channel = GrpcChannel.ForAddress(LockBench.GrpcAddress(settings.Node));
        using var until = CancellationTokenSource.CreateLinkedTokenSource(ct);
        until.CancelAfter(settings.Duration);
        // A request may wait as long as the run lasts: another node holds the lock. The run's end bounds it.
        var patience = settings.Duration;
        var staleGrant = false;
        void Recovery(Grpc.Recovery r) => Event($"recovery {r.Stage} generation {r.Generation} slots [{string.Join(',', r.Slots)}]");
        void Broken(string reason) => Event($"closed {Word(reason)}");
        Task<WatchedSession> Open() => WatchedSession.OpenAsync(channel, settings.Lockspace, patience, until.Token, surviveFence: true, Recovery, Broken);

        WatchedSession? session = await Open();
        Event($"opened node {session.Opened?.NodeId} slot {session.Opened?.Slot}");
        try
        {
            var grant = await session.CallAsync(new ClientMessage { Lock = new Grpc.Lock { Resource = settings.Resource, Mode = Mode.Ex, Flags = settings.ValBlk ? ValBlk : 0 } }).WaitAsync(until.Token);

            Event($"granted {grant.Status} lock {grant.LockId:x}{((grant.ResultFlags & 1) != 0 ? " valnotvalid" : string.Empty)}");
            if (grant.Status != Status.Granted)
            {
                return false;
            }

            try
            {
                using var holding = CancellationTokenSource.CreateLinkedTokenSource(until.Token, session.Lost);
                await Task.Delay(Timeout.Infinite, holding.Token);
            }
            catch (OperationCanceledException) when (session.Lost.IsCancellationRequested)
            {
                Event($"lost {Word(session.LostReason)}");
            }

            if (!session.Lost.IsCancellationRequested)
            {
                await session.CallAsync(new ClientMessage { Unlock = new Unlock { LockId = grant.LockId } });
                Event("unlocked");
                return false;
            }

            // Lost: ask again now and then; any grant while cut off would be stale.
            while (!until.IsCancellationRequested)
            {
                await Task.Delay(settings.ProbeInterval, until.Token).ContinueWith(_ => { }, TaskScheduler.Default);
                if (until.IsCancellationRequested)
                {
                    break;
                }

                try
                {
                    if (session is null || session.IsBroken)
                    {
                        if (session is not null)
                        {
                            await session.DisposeAsync();
                            session = null;
                        }

                        session = await Open().WaitAsync(ProbePatience, until.Token);
                        Event($"probe reopened node {session.Opened?.NodeId} slot {session.Opened?.Slot}");
                    }

                    var probe = await session.CallAsync(new ClientMessage { Lock = new Grpc.Lock { Resource = settings.Resource, Mode = Mode.Ex, Flags = NoQueue } }).WaitAsync(ProbePatience, until.Token);
                    Event($"probe {probe.Status}");
                    if (probe.Status == Status.Granted)
                    {
                        staleGrant = true;
                        await session.CallAsync(new ClientMessage { Unlock = new Unlock { LockId = probe.LockId } });
                    }
                }
                catch (Exception ex) when (ex is RpcException or SessionLostException or TimeoutException or LockBenchException or InvalidOperationException or HttpRequestException)
                {
                    Event($"probe refused {ex.GetType().Name}:{Word(ex.GetBaseException().Message)}");
                    if (session is not null && !session.IsBroken)
                    {
                        continue;
                    }

                    if (session is not null)
                    {
                        await session.DisposeAsync();
                    }

                    session = null;
                }
            }

            return staleGrant;
        }
        catch (OperationCanceledException) when (until.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            Event("ended while waiting");
            return staleGrant;
        }
        catch (SessionLostException lost)
        {
            Event($"lost-while-waiting {Word(lost.Message)}");
            return staleGrant;
        }
        finally
        {
            if (session is not null)
            {
                await session.DisposeAsync();
            }

            Event("end");
        }
    }

    private static string Word(string text) => string.Join('_', text.Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries));
}
