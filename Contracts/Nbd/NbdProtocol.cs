namespace Lockstep.Contracts.Nbd;

// Numbers of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md, fixed-newstyle). Every multi-byte
// field on the wire is big-endian. Names follow the spec's constants without the NBD_ prefix so that a
// reader can find each one in the spec.

/// <summary>Magic numbers that frame every NBD message.</summary>
public static class NbdMagic
{
    /// <summary>First 8 bytes the server sends: ASCII <c>NBDMAGIC</c>.</summary>
    public const ulong InitPassword = 0x4E42444D41474943;

    /// <summary>Newstyle handshake magic, also the prefix of every client option: ASCII <c>IHAVEOPT</c>.</summary>
    public const ulong OptionMagic = 0x49484156454F5054;

    /// <summary>Prefix of every server reply to an option.</summary>
    public const ulong OptionReplyMagic = 0x0003E889045565A9;

    /// <summary>Prefix of every transmission-phase request.</summary>
    public const uint RequestMagic = 0x25609513;

    /// <summary>Prefix of a simple reply.</summary>
    public const uint SimpleReplyMagic = 0x67446698;

    /// <summary>Prefix of a structured reply chunk.</summary>
    public const uint StructuredReplyMagic = 0x668E33EF;
}

/// <summary>Fixed sizes of NBD messages, in bytes.</summary>
public static class NbdSizes
{
    /// <summary>Server greeting: password, option magic, 16-bit handshake flags.</summary>
    public const int Greeting = 18;

    /// <summary>Client flags after the greeting.</summary>
    public const int ClientFlags = 4;

    /// <summary>Option header: magic, option, data length.</summary>
    public const int OptionHeader = 16;

    /// <summary>Option reply header: magic, option, reply type, data length.</summary>
    public const int OptionReplyHeader = 20;

    /// <summary>Reply to <see cref="NbdOption.ExportName"/> without the zero padding: size and flags.</summary>
    public const int ExportNameReply = 10;

    /// <summary>Zero padding after the export-name reply unless NO_ZEROES was negotiated.</summary>
    public const int ExportNameReplyPadding = 124;

    /// <summary>Request header: magic, flags, type, handle, offset, length.</summary>
    public const int RequestHeader = 28;

    /// <summary>Simple reply header: magic, error, handle.</summary>
    public const int SimpleReplyHeader = 16;

    /// <summary>Structured reply chunk header: magic, flags, type, handle, length.</summary>
    public const int StructuredReplyHeader = 20;

    /// <summary>Longest string (export name, description, error message) the spec allows.</summary>
    public const int MaxString = 4096;

    /// <summary>IANA port for NBD.</summary>
    public const int DefaultPort = 10809;

    /// <summary>Payloads below this size every server must accept (2^25, 32 MiB).</summary>
    public const int PortablePayloadLimit = 32 << 20;
}

/// <summary>Handshake flags the server sends after the magic (16 bits).</summary>
[Flags]
public enum NbdHandshakeFlags : ushort
{
    None = 0,
    FixedNewstyle = 1 << 0,
    NoZeroes = 1 << 1,
}

/// <summary>Client flags answering the greeting (32 bits); any other bit ends the connection.</summary>
[Flags]
public enum NbdClientFlags : uint
{
    None = 0,
    FixedNewstyle = 1 << 0,
    NoZeroes = 1 << 1,
}

/// <summary>Per-export transmission flags (16 bits).</summary>
[Flags]
public enum NbdTransmissionFlags : ushort
{
    None = 0,
    HasFlags = 1 << 0,
    ReadOnly = 1 << 1,
    SendFlush = 1 << 2,
    SendFua = 1 << 3,
    Rotational = 1 << 4,
    SendTrim = 1 << 5,
    SendWriteZeroes = 1 << 6,
    SendDf = 1 << 7,
    CanMultiConn = 1 << 8,
    SendResize = 1 << 9,
    SendCache = 1 << 10,
    SendFastZero = 1 << 11,
}

/// <summary>Options a client sends during the handshake.</summary>
public enum NbdOption : uint
{
    ExportName = 1,
    Abort = 2,
    List = 3,
    PeekExport = 4,
    StartTls = 5,
    Info = 6,
    Go = 7,
    StructuredReply = 8,
    ListMetaContext = 9,
    SetMetaContext = 10,
    ExtendedHeaders = 11,
}

/// <summary>Reply types to an option; errors have bit 31 set.</summary>
public enum NbdOptionReply : uint
{
    Ack = 1,
    Server = 2,
    Info = 3,
    MetaContext = 4,
    ErrorUnsupported = 0x8000_0001,
    ErrorPolicy = 0x8000_0002,
    ErrorInvalid = 0x8000_0003,
    ErrorPlatform = 0x8000_0004,
    ErrorTlsRequired = 0x8000_0005,
    ErrorUnknown = 0x8000_0006,
    ErrorShutdown = 0x8000_0007,
    ErrorBlockSizeRequired = 0x8000_0008,
    ErrorTooBig = 0x8000_0009,
}

/// <summary>Information items of <see cref="NbdOptionReply.Info"/> (NBD_OPT_INFO / NBD_OPT_GO).</summary>
public enum NbdInfoType : ushort
{
    /// <summary>Size (64 bits) and transmission flags (16 bits); always sent.</summary>
    Export = 0,

    /// <summary>Canonical export name.</summary>
    Name = 1,

    /// <summary>Human-readable description.</summary>
    Description = 2,

    /// <summary>Minimum, preferred and maximum block size (32 bits each).</summary>
    BlockSize = 3,
}

/// <summary>Transmission-phase request types.</summary>
public enum NbdCommand : ushort
{
    Read = 0,
    Write = 1,
    Disconnect = 2,
    Flush = 3,
    Trim = 4,
    Cache = 5,
    WriteZeroes = 6,
    BlockStatus = 7,
    Resize = 8,
}

/// <summary>Per-request command flags (16 bits).</summary>
[Flags]
public enum NbdCommandFlags : ushort
{
    None = 0,
    Fua = 1 << 0,
    NoHole = 1 << 1,
    DontFragment = 1 << 2,
    RequestOne = 1 << 3,
    FastZero = 1 << 4,
    PayloadLength = 1 << 5,
}

/// <summary>Structured reply chunk types; error chunks have bit 15 set.</summary>
public enum NbdReplyType : ushort
{
    None = 0,
    OffsetData = 1,
    OffsetHole = 2,
    BlockStatus = 5,
    Error = 0x8001,
    ErrorOffset = 0x8002,
}

/// <summary>Structured reply chunk flags.</summary>
[Flags]
public enum NbdReplyFlags : ushort
{
    None = 0,

    /// <summary>Last chunk of the reply.</summary>
    Done = 1 << 0,
}

/// <summary>Error values of the transmission phase (the spec restricts them to these errno numbers).</summary>
public enum NbdError : uint
{
    None = 0,
    NotPermitted = 1,
    Io = 5,
    NoMemory = 12,
    Invalid = 22,
    NoSpace = 28,
    Overflow = 75,
    NotSupported = 95,
    Shutdown = 108,
}

/// <summary>Status flags of one extent in the <c>base:allocation</c> metadata context.</summary>
[Flags]
public enum NbdAllocationFlags : uint
{
    Data = 0,
    Hole = 1 << 0,
    Zero = 1 << 1,
}

/// <summary>Metadata contexts this server offers.</summary>
public static class NbdMetaContexts
{
    /// <summary>The only context the spec defines: allocation status (hole / zero).</summary>
    public const string BaseAllocation = "base:allocation";

    /// <summary>Namespace prefix that a LIST query may use to ask for every <c>base:</c> context.</summary>
    public const string BaseNamespace = "base:";

    /// <summary>Context id the server hands out for <see cref="BaseAllocation"/> (any nonzero value works).</summary>
    public const uint BaseAllocationId = 1;
}
