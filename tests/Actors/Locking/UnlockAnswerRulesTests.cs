using Lockstep.Actors.Locking;
using Lockstep.Contracts.Locking;
using Xunit;

namespace Lockstep.Actors.Tests.Locking;

/// <summary>Which unlocks the lock client may answer before the resource does.</summary>
public sealed class UnlockAnswerRulesTests
{
    [Theory]
    [InlineData(LockMode.EX, LockFlags.ValBlk, true)]
    [InlineData(LockMode.PW, LockFlags.ValBlk, true)]
    [InlineData(LockMode.EX, LockFlags.IvValBlk, true)]
    [InlineData(LockMode.PW, LockFlags.ValBlk | LockFlags.ForceUnlock, true)]
    [InlineData(LockMode.EX, LockFlags.None, false)]
    [InlineData(LockMode.EX, LockFlags.ForceUnlock, false)]
    [InlineData(LockMode.PR, LockFlags.ValBlk, false)]
    [InlineData(LockMode.CW, LockFlags.ValBlk, false)]
    [InlineData(LockMode.NL, LockFlags.IvValBlk, false)]
    public void An_unlock_from_PW_or_EX_with_VALBLK_or_IVVALBLK_writes_the_lvb(LockMode held, LockFlags flags, bool writes) =>
        Assert.Equal(writes, LockHandle.UnlockWritesLvb(held, flags));
}
