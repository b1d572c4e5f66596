using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Lockstep.Persistence.Disk;

/// <summary>
/// The few Linux x86-64 system calls .NET does not expose: open(2) with O_DIRECT (FileOptions cannot say
/// it), fdatasync, pwritev2 (RWF_DSYNC), posix_fadvise, fallocate, lseek with SEEK_DATA/SEEK_HOLE and the
/// block-device ioctls.
/// </summary>
internal static partial class Libc
{
    public const int O_RDONLY = 0, O_RDWR = 2, O_CREAT = 0x40, O_EXCL = 0x80, O_DIRECT = 0x4000, O_CLOEXEC = 0x80000;
    public const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2, FALLOC_FL_ZERO_RANGE = 0x10;
    public const int SEEK_END = 2, SEEK_DATA = 3, SEEK_HOLE = 4;
    public const int ENXIO = 6, EINVAL = 22, ENOTTY = 25, ENOSYS = 38, EOPNOTSUPP = 95;
    public const int POSIX_FADV_DONTNEED = 4, RWF_DSYNC = 2, RWF_NOWAIT = 8;
    public const int EAGAIN = 11;
    public const uint BLKGETSIZE64 = 0x80081272, BLKZEROOUT = 0x127F, BLKSSZGET = 0x1268;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int FDataSync(SafeFileHandle fd);

    /// <summary>Returns the error number itself (0 on success), not -1 and errno.</summary>
    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    public static partial int PosixFAdvise(SafeFileHandle fd, long offset, long length, int advice);

    [LibraryImport("libc", EntryPoint = "preadv2", SetLastError = true)]
    public static unsafe partial nint PReadV2(SafeFileHandle fd, IoVec* iov, int count, long offset, int flags);

    [LibraryImport("libc", EntryPoint = "pwritev2", SetLastError = true)]
    public static unsafe partial nint PWriteV2(SafeFileHandle fd, IoVec* iov, int count, long offset, int flags);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    public static partial int FAllocate(SafeFileHandle fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int FTruncate(SafeFileHandle fd, long length);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    public static partial long LSeek(SafeFileHandle fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int IoctlU64(SafeFileHandle fd, nuint request, out ulong value);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int IoctlI32(SafeFileHandle fd, nuint request, out int value);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static unsafe partial int IoctlRange(SafeFileHandle fd, nuint request, ulong* range);

    public static int Errno => Marshal.GetLastPInvokeError();

    /// <summary>struct iovec.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public unsafe struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    public static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
}
