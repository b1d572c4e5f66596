namespace Lockstep.Contracts.Locking;

/// <summary>
/// The six VMS lock modes, ordered from least to most restrictive. The numeric values are part of
/// the wire format (gRPC, HTTP) and match fs/dlm's <c>DLM_LOCK_*</c> constants.
/// </summary>
public enum LockMode : byte
{
    /// <summary>Null: no access, only an interest that keeps the resource and its LVB alive.</summary>
    NL = 0,

    /// <summary>Concurrent read: read, others may write.</summary>
    CR = 1,

    /// <summary>Concurrent write: write, others may write.</summary>
    CW = 2,

    /// <summary>Protected read: shared read, no writers.</summary>
    PR = 3,

    /// <summary>Protected write: one writer, concurrent readers (CR) allowed.</summary>
    PW = 4,

    /// <summary>Exclusive: nobody else but NL.</summary>
    EX = 5,
}

/// <summary>Request flags, named after fs/dlm's <c>DLM_LKF_*</c>.</summary>
[Flags]
public enum LockFlags : uint
{
    None = 0,

    /// <summary>Fail at once with <see cref="LockStatus.WouldBlock"/> instead of waiting (trylock).</summary>
    NoQueue = 1 << 0,

    /// <summary>The request converts an existing lock (implied by a convert call).</summary>
    Convert = 1 << 1,

    /// <summary>Return the LVB on grant; write it back on down-convert/unlock from PW or EX.</summary>
    ValBlk = 1 << 2,

    /// <summary>On down-convert/unlock from PW or EX, mark the LVB not valid instead of writing it.</summary>
    IvValBlk = 1 << 3,

    /// <summary>Queue an up-conversion behind earlier conversions even when it is compatible now.</summary>
    QueCvt = 1 << 4,

    /// <summary>On a conversion deadlock demote this lock to NL (reported as DEMOTED) instead of failing.</summary>
    ConvDeadlk = 1 << 5,

    /// <summary>A new NL request is granted at once, ahead of every queue.</summary>
    Expedite = 1 << 6,

    /// <summary>A failed NOQUEUE request still sends blocking ASTs to the holders in its way.</summary>
    NoQueueBast = 1 << 7,

    /// <summary>Unlock even while a request or conversion of the lock is pending.</summary>
    ForceUnlock = 1 << 8,

    /// <summary>If the requested mode cannot be granted, grant PR instead when that fits.</summary>
    AltPr = 1 << 9,

    /// <summary>If the requested mode cannot be granted, grant CW instead when that fits.</summary>
    AltCw = 1 << 10,

    /// <summary>The lock outlives its owner's session as an orphan.</summary>
    Persistent = 1 << 11,

    /// <summary>Adopt an orphan lock on the resource held in the requested mode.</summary>
    Orphan = 1 << 12,
}

/// <summary>The result of one lock operation, as delivered by its completion AST.</summary>
public enum LockStatus : byte
{
    /// <summary>The request or conversion was granted.</summary>
    Granted = 0,

    /// <summary>NOQUEUE and the mode does not fit now (fs/dlm -EAGAIN).</summary>
    WouldBlock = 1,

    /// <summary>The pending request or conversion was cancelled (-DLM_ECANCEL).</summary>
    Cancelled = 2,

    /// <summary>The lock was released (-DLM_EUNLOCK).</summary>
    Unlocked = 3,

    /// <summary>The conversion would deadlock with another conversion and CONVDEADLK was not set (-EDEADLK).</summary>
    Deadlock = 4,

    /// <summary>The per-request timeout expired while the request was queued (-ETIMEDOUT).</summary>
    TimedOut = 5,

    /// <summary>The request was malformed (bad flag combination, LVB too long, unknown lock; -EINVAL).</summary>
    Invalid = 6,

    /// <summary>Another operation of the lock is pending and FORCEUNLOCK was not given (-EBUSY).</summary>
    Busy = 7,

    /// <summary>An ORPHAN request found no orphan to adopt (-ENOENT).</summary>
    NotFound = 8,

    /// <summary>CANCEL found nothing pending to cancel.</summary>
    NotPending = 9,

    /// <summary>The lockspace is recovering and the request was NOQUEUE.</summary>
    Recovering = 10,

    /// <summary>The lock no longer exists because its owner was purged.</summary>
    Purged = 11,

    /// <summary>This node has not seen a majority of the cluster for the fence timeout; it takes no new locks.</summary>
    Fenced = 12,
}

/// <summary>The recovery callbacks of a lockspace (fs/dlm's <c>recover_prep/slot/done</c>) plus self-fencing.</summary>
public enum RecoveryStage : byte
{
    /// <summary>recover_prep: a member is unreachable or leaving; nothing is granted until recovery ends.</summary>
    Prep = 0,

    /// <summary>recover_slot: members were removed; their locks are being purged (<c>Slots</c> are theirs).</summary>
    Slot = 1,

    /// <summary>recover_done: every survivor purged and re-asserted; granting resumes.</summary>
    Done = 2,

    /// <summary>This node lost sight of a majority: every handle's LostToken is cancelled, new requests fail.</summary>
    Fenced = 3,

    /// <summary>This node sees a majority again and takes new requests.</summary>
    Unfenced = 4,
}

/// <summary>One recovery callback as an application sees it.</summary>
/// <param name="Stage">Which callback.</param>
/// <param name="Slots">Slots of the removed members in this lockspace (Slot and Done; empty otherwise).</param>
/// <param name="OurSlot">This node's slot in the lockspace.</param>
/// <param name="Generation">The node's recovery generation: bumped by every removal.</param>
public sealed record LockspaceRecoveryEvent(RecoveryStage Stage, IReadOnlyList<int> Slots, int OurSlot, long Generation);

/// <summary>Status flags returned with a completion (fs/dlm's <c>DLM_SBF_*</c>).</summary>
[Flags]
public enum LockResultFlags : byte
{
    None = 0,

    /// <summary>The LVB is not valid: a PW/EX holder died or invalidated it and nobody has written it since.</summary>
    ValNotValid = 1 << 0,

    /// <summary>CONVDEADLK demoted the lock's granted mode to NL while it waited.</summary>
    Demoted = 1 << 1,

    /// <summary>The lock was granted in its ALTPR/ALTCW alternative mode.</summary>
    AltMode = 1 << 2,
}

/// <summary>Which operation a completion answers.</summary>
public enum LockOperation : byte
{
    Request = 0,
    Convert = 1,
    Unlock = 2,
    Cancel = 3,
}

/// <summary>
/// Who holds a lock: the node (stable id), its slot in the lockspace and the session inside that node
/// (an in-process lockspace handle or one gRPC stream). Recovery purges by node, a closing session by
/// session.
/// </summary>
/// <param name="NodeId">The stable node id from configuration.</param>
/// <param name="Slot">The node's slot in the lockspace, 1..N.</param>
/// <param name="Session">The session inside the node.</param>
public sealed record LockOwner(string NodeId, int Slot, Guid Session);
