"""Open file descriptions (Linux ``struct file``; gVisor ``vfs.FileDescription``).

A :class:`FileDescription` is what open(2) creates and dup(2) and fork share:
the resolved (mount, dentry), the access mode and status flags, the offset and
a reference count. What reading and writing do depends on the file; that is
its :class:`FileOps`, which the inode provides from ``Inode.open``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import SyscallError
from .inode import DT_DIR, DirEntry
from .poll import DEFAULT_POLLMASK

if TYPE_CHECKING:
    from .mount import VirtualDentry
    from .poll import WaitQueue

O_ACCMODE = 0o3
O_PATH = os.O_PATH
O_TMPFILE = os.O_TMPFILE
#: Status flags that fcntl(F_SETFL) may change (Linux ``SETFL_MASK``).
SETFL_MASK = os.O_APPEND | os.O_NONBLOCK | os.O_DIRECT | os.O_NOATIME | getattr(os, "O_ASYNC", 0o20000)

SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE = 0, 1, 2, 3, 4

#: The largest file offset (Linux ``MAX_LFS_FILESIZE`` on 64-bit).
MAX_OFFSET = 2**63 - 1

ATIME_RELATIME_WINDOW = 24 * 3600 * 10**9


class FileOps:
    """How an open file reads, writes, seeks and lists; subclass per file kind.

    Offsets are bytes; ``read`` returns at most ``length`` bytes (b"" at end of
    file) and ``write`` returns the count written. Errors are SyscallError:
    EINVAL by default, ESPIPE for a non-seekable file.
    """

    #: False for pipes, sockets and character devices: offsets are ignored
    #: and lseek is ESPIPE.
    seekable = True
    #: False where reads never update atime (pipe(2) pipes, as in Linux 6.14
    #: and later, which give them their own file operations).
    touch_atime = True

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        raise SyscallError(errno.EINVAL)

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        raise SyscallError(errno.EINVAL)

    def size(self, fd: FileDescription) -> int:
        """The end for SEEK_END."""
        return fd.inode.size

    def iterate(self, fd: FileDescription, cookie: int) -> list[DirEntry]:
        raise SyscallError(errno.ENOTDIR)

    def ioctl(self, fd: FileDescription, request: int, arg: int) -> int:
        raise SyscallError(errno.ENOTTY)

    def release(self, fd: FileDescription) -> None:
        """The last reference to ``fd`` is gone."""

    def fsync(self, fd: FileDescription) -> None:
        """fsync(2): flush the file; the default asks its inode."""
        fd.inode.fsync()

    # Readiness (core.vfs.poll).

    #: Whether the file has a poll operation of its own (Linux
    #: ``file_can_poll``): epoll_ctl refuses the others with EPERM.
    pollable = False

    def readiness(self, fd: FileDescription) -> int:
        """The poll events the file has now, without waiting (Linux
        ``f_op->poll`` with no poll table). The default is Linux
        ``vfs_poll``'s for files without one: :data:`DEFAULT_POLLMASK`,
        always readable and writable (regular files, directories)."""
        return DEFAULT_POLLMASK

    def wait_queues(self, fd: FileDescription) -> tuple[WaitQueue, ...] | None:
        """The queues told when this file's readiness changes (Linux: those
        ``f_op->poll`` passes to ``poll_wait``); None when changes cannot be
        heard of and readiness must be looked at again (host fds)."""
        return None

    def host_waits(self, fd: FileDescription, events: int) -> dict[int, int]:
        """The host fds, each with the host poll events, whose change can make
        ``events`` ready here: what a parked call waits for in the kernel's
        idle wait. Nothing by default: only another task changes a file kept in
        the sentry."""
        return {}


class RegularFileOps(FileOps):
    """Reads and writes through the inode's ``read`` and ``write``."""

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        return fd.inode.read(offset, length)

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        return fd.inode.write(offset, data)


class DirectoryOps(FileOps):
    """getdents over ``Inode.iterate``, with ``.`` (cookie 1) and ``..`` (cookie 2)."""

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        raise SyscallError(errno.EISDIR)

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        raise SyscallError(errno.EISDIR)

    def size(self, fd: FileDescription) -> int:
        raise SyscallError(errno.EINVAL)

    def iterate(self, fd: FileDescription, cookie: int) -> list[DirEntry]:
        out = []
        d = fd.vd.dentry
        if cookie < 1:
            out.append(DirEntry(".", d.inode.ino, DT_DIR, 1))
        if cookie < 2:
            parent = d.parent.inode if d.parent is not None else d.inode
            out.append(DirEntry("..", parent.ino, DT_DIR, 2))
        out.extend(d.inode.iterate(max(cookie, 2)))
        return out


class FileDescription:
    """An open file: ``vd``, ``flags`` (access mode and status flags), ``offset``.

    Reference counted: each FD table slot holding it, and each in-flight use,
    holds one (:meth:`inc_ref` / :meth:`dec_ref`). When the last is dropped,
    the FileOps are released and an unlinked inode with no other opener is
    freed.
    """

    def __init__(
        self, vd: VirtualDentry, flags: int, opener: Callable[[FileDescription], FileOps] | None = None
    ) -> None:
        self.vd = vd
        self.inode = vd.dentry.inode
        self.flags = flags
        self.offset = 0
        self.refs = 1
        # An O_PATH description does no I/O; others get their inode's (or, for
        # devices and FIFOs, the VFS's) operations.
        self.ops: FileOps = FileOps() if flags & O_PATH else (opener or self.inode.open)(self)
        self.inode.open_count += 1
        #: Called with this description when its last reference goes, before
        #: its FileOps are released (Linux ``__fput`` calls
        #: ``eventpoll_release`` first: epoll forgets the file).
        self._release_hooks: dict[object, Callable[[FileDescription], None]] | None = None

    @property
    def readable(self) -> bool:
        return not self.flags & O_PATH and self.flags & O_ACCMODE in (os.O_RDONLY, os.O_RDWR)

    @property
    def writable(self) -> bool:
        return not self.flags & O_PATH and self.flags & O_ACCMODE in (os.O_WRONLY, os.O_RDWR)

    # Data.

    def read(self, length: int) -> bytes:
        """read(2) at the offset, advancing it by what was read."""
        data = self.pread(length, self.offset, _positional=False)
        if self.ops.seekable:
            self.offset += len(data)
        return data

    def pread(self, length: int, offset: int, *, _positional: bool = True) -> bytes:
        """Read at ``offset`` without moving the file offset (pread64).

        Linux ``ksys_pread64`` order: EINVAL for a negative offset, EBADF for
        O_PATH, ESPIPE when not seekable, EBADF when not open for reading,
        EINVAL for a negative length; EISDIR on a directory."""
        if _positional and offset < 0:
            raise SyscallError(errno.EINVAL)
        if self.flags & O_PATH:
            raise SyscallError(errno.EBADF)
        if _positional and not self.ops.seekable:
            raise SyscallError(errno.ESPIPE)
        if not self.readable:
            raise SyscallError(errno.EBADF)
        if length < 0:
            raise SyscallError(errno.EINVAL)
        data = self.ops.read(self, length, offset)
        if self.ops.touch_atime and (data or self.ops.seekable):  # pipes: only when they gave bytes
            file_accessed(self)
        return data

    def write(self, data: bytes) -> int:
        """write(2) at the offset (at the end with O_APPEND), advancing it."""
        if self.ops.seekable and self.flags & os.O_APPEND and self.writable:
            self.offset = self.ops.size(self)
        n = self.pwrite(data, self.offset, _positional=False)
        if self.ops.seekable:
            self.offset += n
        return n

    def pwrite(self, data: bytes, offset: int, *, _positional: bool = True) -> int:
        """Write at ``offset`` (pwrite64); with O_APPEND Linux appends anyway.

        Errors in Linux's order as for :meth:`pread` (EBADF when not open for
        writing), then EFBIG past the largest offset."""
        if _positional and offset < 0:
            raise SyscallError(errno.EINVAL)
        if self.flags & O_PATH:
            raise SyscallError(errno.EBADF)
        if _positional and not self.ops.seekable:
            raise SyscallError(errno.ESPIPE)
        if not self.writable:
            raise SyscallError(errno.EBADF)
        if _positional and self.flags & os.O_APPEND:
            offset = self.ops.size(self)
        if self.ops.seekable and offset + len(data) > MAX_OFFSET:
            raise SyscallError(errno.EFBIG)
        return self.ops.write(self, data, offset)

    def seek(self, offset: int, whence: int) -> int:
        """lseek(2): the new offset; EINVAL for a bad whence or a negative
        result, ESPIPE on a pipe, ENXIO for SEEK_DATA/SEEK_HOLE past the end.
        A directory's offset is a getdents cookie: only SEEK_SET and SEEK_CUR
        work (EINVAL otherwise, as Linux ``dcache_dir_lseek``)."""
        if self.flags & O_PATH:
            raise SyscallError(errno.EBADF)
        if not self.ops.seekable:
            raise SyscallError(errno.ESPIPE)
        if self.inode.is_dir() and whence not in (SEEK_SET, SEEK_CUR):
            raise SyscallError(errno.EINVAL)
        if whence == SEEK_SET:
            new = offset
        elif whence == SEEK_CUR:
            new = self.offset + offset
        elif whence == SEEK_END:
            new = self.ops.size(self) + offset
        elif whence in (SEEK_DATA, SEEK_HOLE):
            if offset < 0:
                raise SyscallError(errno.ENXIO)
            new = self.inode.seek_data(offset, hole=whence == SEEK_HOLE)
        else:
            raise SyscallError(errno.EINVAL)
        if new < 0 or (new > MAX_OFFSET and not self.inode.is_dir()):
            raise SyscallError(errno.EINVAL)
        self.offset = new
        return new

    def getdents(self, max_entries: int | None = None) -> list[DirEntry]:
        """The next directory entries from the offset (a cookie), advancing it.

        ``max_entries`` bounds how many are returned (the syscall layer fits
        them into the caller's buffer and keeps the rest for the next call).
        EBADF for O_PATH, ENOTDIR, ENOENT for a directory that was removed
        (Linux ``iterate_dir`` checks ``IS_DEADDIR``).
        """
        if self.flags & O_PATH:
            raise SyscallError(errno.EBADF)
        if not self.inode.is_dir():
            raise SyscallError(errno.ENOTDIR)
        if self.vd.dentry.dead:
            raise SyscallError(errno.ENOENT)
        entries = self.ops.iterate(self, self.offset)
        if max_entries is not None:
            entries = entries[:max_entries]
        if entries:
            self.offset = entries[-1].cookie
        file_accessed(self)
        return entries

    def set_status_flags(self, flags: int) -> None:
        """fcntl(F_SETFL): only SETFL_MASK bits change."""
        self.flags = (self.flags & ~SETFL_MASK) | (flags & SETFL_MASK)

    # References.

    def inc_ref(self) -> None:
        self.refs += 1

    def add_release_hook(self, key: object, hook: Callable[[FileDescription], None]) -> None:
        """Call ``hook(self)`` when the last reference goes (until
        :meth:`remove_release_hook` with the same ``key``)."""
        if self._release_hooks is None:
            self._release_hooks = {}
        self._release_hooks[key] = hook

    def remove_release_hook(self, key: object) -> None:
        if self._release_hooks:
            self._release_hooks.pop(key, None)

    def dec_ref(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            hooks, self._release_hooks = self._release_hooks, None
            for hook in (hooks or {}).values():
                hook(self)
            self.ops.release(self)
            inode = self.inode
            inode.open_count -= 1
            if inode.open_count == 0 and inode.nlink == 0:
                inode.released()


def file_accessed(fd: FileDescription) -> None:
    """Update atime after a read or getdents as the mount's policy says
    (Linux ``touch_atime``/``relatime_need_update``): never with noatime or
    O_NOATIME, not on directories with nodiratime, always with strictatime,
    else (relatime) when atime is not after mtime or ctime, or a day old."""
    inode, mount = fd.inode, fd.vd.mount
    flags = mount.flags
    if flags.no_atime or fd.flags & os.O_NOATIME or mount.read_only:
        return
    if inode.is_dir() and flags.no_diratime:
        return
    now = inode.sb.now()
    if not flags.strict_atime and not (
        inode.atime <= inode.mtime or inode.atime <= inode.ctime or now - inode.atime >= ATIME_RELATIME_WINDOW
    ):
        return
    inode.atime = now
