"""Host file descriptions: the container's stdin, stdout and stderr.

The sandbox inherits the caller's stdio; the sentry wraps each host fd as a
file description (gVisor ``fsimpl/host``). Reads and writes go straight to the
host fd; a terminal answers TCGETS and TIOCGWINSZ from the host, anything else
is ENOTTY. On restore the descriptions are re-bound to the restoring caller's
stdio (:meth:`HostInode.rebind`).

A host pipe, terminal or socket is never waited on inside a system call: its
readiness is a zero-timeout host poll, and a read that finds nothing to read
(or a write that finds no room) raises WouldBlock, so the task parks (or gets
EAGAIN with O_NONBLOCK) and the kernel's idle wait sleeps on the host fd. The
host fd's own flags are left alone: its open file description is the
caller's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat as st
import termios
from collections.abc import Iterable

from ..errors import SyscallError
from ..kernel.interrupt import blocking
from .file import FileDescription, FileOps
from .inode import Inode, Stat, Superblock
from .mount import Dentry, Mount, VirtualDentry
from .pipe import WouldBlock
from .poll import DEFAULT_POLLMASK, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLNVAL, EPOLLOUT, HOST_EVENTS, host_readiness

HOSTFS_MAGIC = 0x0
#: sizeof(struct termios) as the kernel's TCGETS/TCSETS copy it (x86-64).
TERMIOS_SIZE = 36

TCGETS, TCSETS, TCSETSW, TCSETSF = 0x5401, 0x5402, 0x5403, 0x5404
TIOCGWINSZ, TIOCSWINSZ, TIOCGPGRP, TIOCSPGRP, FIONREAD = 0x5413, 0x5414, 0x540F, 0x5410, 0x541B
TIOCGSID = 0x5429


class HostSuperblock(Superblock):
    """The anonymous filesystem host file descriptions live on."""

    def __init__(self) -> None:
        super().__init__("host", HOSTFS_MAGIC)


class HostInode(Inode):
    """A host fd seen from the sandbox; stat comes from the host."""

    def __init__(self, sb: HostSuperblock, host_fd: int, stdio: int | None = None) -> None:
        self.host_fd = host_fd
        #: Which of the caller's stdin, stdout, stderr (0, 1, 2) this is, if one.
        self.stdio = stdio
        s = os.fstat(host_fd)
        super().__init__(sb, s.st_mode, s.st_uid, s.st_gid)

    def __getstate__(self) -> dict[str, object]:
        """A terminal's settings are saved with it: a program blocked in a
        read with the terminal in raw mode (a shell's line editor) set them
        on the checkpointed caller's terminal, and the restoring caller's
        new terminal must have them too, or every typed line is echoed
        twice and read a line at a time (see :meth:`rebind`)."""
        state = dict(self.__dict__)
        state.pop("saved_termios", None)
        try:
            if os.isatty(self.host_fd):
                state["saved_termios"] = fcntl.ioctl(self.host_fd, termios.TCGETS, bytes(TERMIOS_SIZE))
        except OSError:
            pass
        return state

    def rebind(self, host_fd: int) -> None:
        """Serve ``host_fd`` from now on (a restore's new stdio). A terminal
        saved at the checkpoint gets its settings back on a new terminal."""
        self.host_fd = host_fd
        self.mode = os.fstat(host_fd).st_mode
        saved = self.__dict__.pop("saved_termios", None)
        if saved is not None and os.isatty(host_fd):
            # The settings are the program's to make again: not worth failing a restore.
            with contextlib.suppress(OSError):
                fcntl.ioctl(host_fd, TCSETS, saved)

    def stat(self) -> Stat:
        s = os.fstat(self.host_fd)
        return Stat(
            dev=self.sb.dev, ino=self.ino, mode=s.st_mode, nlink=s.st_nlink, uid=s.st_uid, gid=s.st_gid,
            rdev=s.st_rdev, size=s.st_size, blksize=s.st_blksize, blocks=s.st_blocks,
            atime=s.st_atime_ns, mtime=s.st_mtime_ns, ctime=s.st_ctime_ns,
        )

    @property
    def size(self) -> int:
        return os.fstat(self.host_fd).st_size

    def open(self, fd: FileDescription) -> FileOps:
        return HostFileOps(self)


class HostFileOps(FileOps):
    """I/O on a host fd. A regular host file is seekable; its description
    starts at the host fd's offset and moves it along, so the caller sees
    where the container stopped (a shared open file description, as runc
    gives). Pipes, sockets and terminals are not seekable."""

    def __init__(self, inode: HostInode) -> None:
        self.inode = inode
        self.seekable = st.S_ISREG(os.fstat(inode.host_fd).st_mode)
        #: Regular host files never wait; they have no poll (epoll: EPERM).
        self.pollable = not self.seekable

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        """From the host fd. A pipe, terminal or socket with nothing to read
        raises WouldBlock instead of waiting (a zero-timeout host poll
        first), as does a host EAGAIN."""
        try:
            if self.seekable:
                # The caller's open file description is shared with the
                # container (as with runc): keep the host offset where ours is.
                os.lseek(self.inode.host_fd, offset, os.SEEK_SET)
                return os.read(self.inode.host_fd, length)
            if length and not host_readiness(self.inode.host_fd, EPOLLIN) & (
                EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLNVAL
            ):
                raise WouldBlock("host fd has nothing to read")
            # Readable now; blocking() still lets a host signal cut short a
            # read that another reader of the caller's file overtook.
            with blocking():
                return os.read(self.inode.host_fd, length)
        except BlockingIOError:
            raise WouldBlock("host fd: EAGAIN") from None
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO) from None

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        """To the host fd. A pipe, terminal or socket without room raises
        WouldBlock instead of waiting; once it has room the write is the
        host's (a large write to a host pipe may still wait for its reader)."""
        try:
            if self.seekable:
                os.lseek(self.inode.host_fd, offset, os.SEEK_SET)
                return os.write(self.inode.host_fd, data)
            if data and not host_readiness(self.inode.host_fd, EPOLLOUT) & (
                EPOLLOUT | EPOLLHUP | EPOLLERR | EPOLLNVAL
            ):
                raise WouldBlock("host fd has no room")
            with blocking():
                return os.write(self.inode.host_fd, data)
        except BlockingIOError:
            raise WouldBlock("host fd: EAGAIN") from None
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO) from None

    def readiness(self, fd: FileDescription) -> int:
        """A regular host file is always ready (:data:`DEFAULT_POLLMASK`);
        anything else answers a zero-timeout host poll."""
        if self.seekable:
            return DEFAULT_POLLMASK
        return host_readiness(self.inode.host_fd)

    def host_waits(self, fd: FileDescription, events: int) -> dict[int, int]:
        """The host fd itself, for the events asked (EPOLLIN, EPOLLPRI,
        EPOLLOUT and their kin; a host poll always reports hang-up and
        errors); nothing for a regular file."""
        if self.seekable:
            return {}
        return {self.inode.host_fd: events & HOST_EVENTS}

    def size(self, fd: FileDescription) -> int:
        return self.inode.size

    def is_terminal(self) -> bool:
        return os.isatty(self.inode.host_fd)

    def termios(self) -> bytes:
        """TCGETS: the host terminal's kernel ``struct termios`` (:data:`TERMIOS_SIZE`
        bytes: four u32 flags, c_line and 19 control chars; glibc's 60-byte
        struct is its own); ENOTTY otherwise."""
        if not self.is_terminal():
            raise SyscallError(errno.ENOTTY)
        return fcntl.ioctl(self.inode.host_fd, termios.TCGETS, bytes(TERMIOS_SIZE))

    def set_termios(self, request: int, data: bytes) -> None:
        if not self.is_terminal():
            raise SyscallError(errno.ENOTTY)
        fcntl.ioctl(self.inode.host_fd, request, data)

    def winsize(self) -> bytes:
        """TIOCGWINSZ: ``struct winsize`` (8 bytes); ENOTTY when not a terminal."""
        if not self.is_terminal():
            raise SyscallError(errno.ENOTTY)
        return fcntl.ioctl(self.inode.host_fd, termios.TIOCGWINSZ, bytes(8))

    def readable_bytes(self) -> int:
        """FIONREAD."""
        import array

        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self.inode.host_fd, termios.FIONREAD, buf, True)
        except OSError as e:
            raise SyscallError(e.errno or errno.ENOTTY) from None
        return buf[0]


_libc = ctypes.CDLL(None, use_errno=True)
SYS_KCMP, KCMP_FILE = 312, 0


def same_open_file(fd1: int, fd2: int) -> bool:
    """Whether two host fds share one open file description (``2>&1``), by
    kcmp(2); without kcmp, same file and same status flags stand in."""
    pid = os.getpid()
    r = int(_libc.syscall(SYS_KCMP, pid, pid, KCMP_FILE, fd1, fd2))
    if r >= 0:
        return r == 0
    a, b = os.fstat(fd1), os.fstat(fd2)
    same_flags: bool = fcntl.fcntl(fd1, fcntl.F_GETFL) == fcntl.fcntl(fd2, fcntl.F_GETFL)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and same_flags


class HostFiles:
    """Wraps host fds as file descriptions on one internal mount."""

    def __init__(self) -> None:
        from ..mounts import MountFlags

        self.sb = HostSuperblock()
        self._root = Inode(self.sb, st.S_IFDIR | 0o555)
        self.mount = Mount(self.sb, Dentry(self._root), MountFlags(), source="host")

    def wrap(self, host_fd: int, stdio: int | None = None) -> FileDescription:
        """A description for ``host_fd``, with its access mode and O_APPEND/O_NONBLOCK.
        A closed ``host_fd`` (a caller started with no stdin) reads as /dev/null.
        ``stdio`` says which of the caller's stdio it is (see :func:`rebind_stdio`)."""
        host_fd = _open_or_null(host_fd)
        flags = fcntl.fcntl(host_fd, fcntl.F_GETFL)
        inode = HostInode(self.sb, host_fd, stdio)
        vd = VirtualDentry(self.mount, Dentry(inode, f"host:[{host_fd}]"))
        desc = FileDescription(vd, flags & (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK))
        if desc.ops.seekable:
            desc.offset = os.lseek(host_fd, 0, os.SEEK_CUR)
        return desc

    def wrap_stdio(self, fds: tuple[int, ...]) -> list[FileDescription]:
        """Descriptions for the caller's stdio; fds that share one open file
        description (``> f 2>&1``) share one here too, and with it the offset."""
        out: list[FileDescription] = []
        for i, fd in enumerate(fds):
            twin = next((out[j] for j in range(i) if _valid(fds[j]) and _valid(fd) and same_open_file(fds[j], fd)),
                        None)
            if twin is not None:
                twin.inc_ref()
                out.append(twin)
            else:
                out.append(self.wrap(fd, i))
        return out


def _open_or_null(host_fd: int) -> int:
    """``host_fd`` if it is open, else a new fd on /dev/null."""
    if _valid(host_fd):
        return host_fd
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def rebind_stdio(descriptions: Iterable[FileDescription], fds: tuple[int, ...] = (0, 1, 2)) -> int:
    """After a restore: the descriptions of the checkpointed caller's stdio
    serve this caller's ``fds`` (stdin, stdout, stderr) instead, as runsc
    restore gives the container the restoring caller's stdio. A regular
    file's offset becomes the new host fd's, as at boot; a closed fd reads
    as /dev/null. Returns how many descriptions were re-bound."""
    n = 0
    seen: set[int] = set()
    for desc in descriptions:
        inode = desc.inode
        if id(desc) in seen or not isinstance(inode, HostInode) or inode.stdio is None:
            continue
        seen.add(id(desc))
        if inode.stdio < len(fds):
            inode.rebind(_open_or_null(fds[inode.stdio]))
        desc.ops = HostFileOps(inode)
        if desc.ops.seekable:
            desc.offset = os.lseek(inode.host_fd, 0, os.SEEK_CUR)
        n += 1
    return n


def _valid(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
