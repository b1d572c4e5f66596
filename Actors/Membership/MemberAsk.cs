using Akka.Actor;

namespace Lockstep.Actors.Membership;

/// <summary>
/// Asks the same actor (<c>/user/{name}</c>) on several members at once and waits for all of them: each member's answer,
/// or null when it did not answer in time (it may be on its way out of the cluster). Used wherever a node gathers
/// something from every member — lock dumps, broadcast positions, statistics, pings, joins.
/// </summary>
public static class MemberAsk
{
    public static async Task<IReadOnlyList<(Address Address, T? Answer)>> EachAsync<T>(
        ActorSystem system, IEnumerable<Address> members, string actorName, object message, TimeSpan timeout, CancellationToken cancellationToken = default)
        where T : class =>
        await Task.WhenAll(members.Select(async address =>
        {
            try
            {
                var actor = system.ActorSelection(new RootActorPath(address) / "user" / actorName);
                return (address, (T?)await actor.Ask<T>(message, timeout, cancellationToken));
            }
            catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
            {
                return (address, (T?)null);
            }
        }));

    /// <summary>The answers that came.</summary>
    public static List<T> Answered<T>(this IReadOnlyList<(Address Address, T? Answer)> answers)
        where T : class => answers.Where(a => a.Answer is not null).Select(a => a.Answer!).ToList();

    /// <summary>The members that did not answer, by address.</summary>
    public static List<string> Missing<T>(this IReadOnlyList<(Address Address, T? Answer)> answers)
        where T : class => answers.Where(a => a.Answer is null).Select(a => a.Address.ToString()).ToList();
}
