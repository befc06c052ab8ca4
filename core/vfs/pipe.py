"""Pipes and FIFOs (Linux ``fs/pipe.c``, pipe(7); gVisor ``kernel/pipe``).

A :class:`Pipe` is a byte buffer of 64 KiB with counts of open read and write
ends. Writes of at most PIPE_BUF (4096) bytes are atomic: all or nothing.
Reading an empty pipe with no writer gives end of file; writing with no reader
is EPIPE (the caller also sends SIGPIPE).

Where Linux would block, these raise :class:`WouldBlock` (an EAGAIN
SyscallError): with O_NONBLOCK that is the answer; otherwise the kernel's run
loop parks the task and retries.

Readiness (poll, select, epoll) is Linux ``pipe_poll``'s; reads and writes
tell the pipe's wait queues what happened, as ``pipe_read`` and
``pipe_write`` wake ``wr_wait`` and ``rd_wait``.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ..errors import SyscallError
from .file import FileDescription, FileOps
from .inode import S_IFDIR, S_IFIFO, Inode, StatFS, Superblock
from .poll import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDNORM, EPOLLWRNORM, WaitQueue

if TYPE_CHECKING:
    from .mount import Mount

PIPE_BUF = 4096
DEFAULT_CAPACITY = 65536
PIPEFS_MAGIC = 0x50495045


class WouldBlock(SyscallError):
    """The call cannot finish now; EAGAIN for a non-blocking caller."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(errno.EAGAIN, detail)


class Pipe:
    """The buffer shared by a pipe's ends. ``readers`` and ``writers`` count open ends."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.buffer = bytearray()
        self.readers = 0
        self.writers = 0
        #: Write ends ever opened (Linux ``w_counter``): a FIFO reader opened
        #: before any writer sees no hang-up until one came and went.
        self.w_counter = 0
        #: Told of writes (readers wait here) and of reads (writers wait
        #: here); Linux ``rd_wait`` and ``wr_wait``.
        self.rd_wait = WaitQueue()
        self.wr_wait = WaitQueue()

    def __len__(self) -> int:
        return len(self.buffer)

    def writable(self) -> bool:
        """Whether a write of PIPE_BUF bytes fits (Linux: not ``pipe_full``,
        a free page)."""
        return self.capacity - len(self.buffer) >= min(PIPE_BUF, self.capacity)

    def read(self, length: int) -> bytes:
        """Up to ``length`` bytes; b"" at end of file (no writers); WouldBlock when empty."""
        if length == 0:
            return b""
        if self.buffer:
            was_full = not self.writable()
            data = bytes(self.buffer[:length])
            del self.buffer[:length]
            if was_full and self.writable():
                self.wr_wait.notify(EPOLLOUT | EPOLLWRNORM)
            return data
        if self.writers == 0:
            return b""
        raise WouldBlock("pipe empty")

    def write(self, data: bytes) -> int:
        """How many bytes went in; 0 for empty ``data`` (Linux ``pipe_write``:
        a null write succeeds before anything else); EPIPE with no reader;
        WouldBlock when full, or when an atomic write (<= PIPE_BUF) does not
        fit whole."""
        if not data:
            return 0
        if self.readers == 0:
            raise SyscallError(errno.EPIPE)
        room = self.capacity - len(self.buffer)
        if len(data) <= PIPE_BUF:
            if room < len(data):
                raise WouldBlock("pipe full")
            n = len(data)
        else:
            if room == 0:
                raise WouldBlock("pipe full")
            n = min(room, len(data))
        self.buffer += data[:n]
        self.rd_wait.notify(EPOLLIN | EPOLLRDNORM)
        return n

    def open_fifo(self, fd: FileDescription) -> PipeEndOps:
        """The end a FIFO open gives, by access mode (Linux ``fifo_open``): a
        non-blocking write-only open with no reader is ENXIO; a blocking open
        waits for the other end (WouldBlock)."""
        acc = fd.flags & os.O_ACCMODE
        nonblock = bool(fd.flags & os.O_NONBLOCK)
        if acc == os.O_RDONLY:
            if self.writers == 0 and not nonblock:
                raise WouldBlock("FIFO has no writer")
            end = PipeEndOps(self, read=True, write=False)
            if self.writers == 0:
                end.hup_after = self.w_counter  # Linux fifo_open: no EPOLLHUP until a writer came
            return end
        if acc == os.O_WRONLY:
            if self.readers == 0:
                if nonblock:
                    raise SyscallError(errno.ENXIO)
                raise WouldBlock("FIFO has no reader")
            return PipeEndOps(self, read=False, write=True)
        return PipeEndOps(self, read=True, write=True)


class PipeEndOps(FileOps):
    """One end of a pipe or FIFO; not seekable. ``anonymous`` for pipe(2)
    pipes, whose times never change (Linux ``pipeanon_fops``); a FIFO's
    inode gets atime on reads that return bytes and mtime/ctime on writes
    that put some in."""

    seekable = False
    pollable = True

    def __init__(self, pipe: Pipe, *, read: bool, write: bool, anonymous: bool = False) -> None:
        self.pipe = pipe
        self.reads = read
        self.writes = write
        self.anonymous = anonymous
        self.touch_atime = not anonymous
        #: A read end reports EPOLLHUP with no writer unless ``w_counter`` is
        #: still this (Linux ``filp->f_pipe``).
        self.hup_after = -1
        pipe.readers += read
        pipe.writers += write
        pipe.w_counter += write

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        return self.pipe.read(length)

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        """Into the pipe; a FIFO's inode gets mtime and ctime when bytes went
        in (Linux ``pipe_write``: ``file_update_time``), a pipe(2) pipe not."""
        n = self.pipe.write(data)
        if n and not self.anonymous:
            inode = fd.inode
            inode.mtime = inode.ctime = inode.sb.now()
        return n

    def size(self, fd: FileDescription) -> int:
        raise SyscallError(errno.ESPIPE)

    def readiness(self, fd: FileDescription) -> int:
        """Linux ``pipe_poll``: a read end is EPOLLIN with bytes buffered and
        EPOLLHUP with no writer left; a write end is EPOLLOUT while PIPE_BUF
        bytes fit and EPOLLERR with no reader left."""
        p = self.pipe
        mask = 0
        if self.reads:
            if p.buffer:
                mask |= EPOLLIN | EPOLLRDNORM
            if p.writers == 0 and p.w_counter != self.hup_after:
                mask |= EPOLLHUP
        if self.writes:
            if p.writable():
                mask |= EPOLLOUT | EPOLLWRNORM
            if p.readers == 0:
                mask |= EPOLLERR
        return mask

    def wait_queues(self, fd: FileDescription) -> tuple[WaitQueue, ...]:
        return ((self.pipe.rd_wait,) if self.reads else ()) + ((self.pipe.wr_wait,) if self.writes else ())

    def release(self, fd: FileDescription) -> None:
        """One end less; when no end is left, a FIFO's buffered data goes
        (Linux frees the pipe with its last file: ``put_pipe_info``). Both
        wait queues hear of it (``pipe_release``: hang-up or error)."""
        self.pipe.readers -= self.reads
        self.pipe.writers -= self.writes
        if self.pipe.readers == 0 and self.pipe.writers == 0:
            self.pipe.buffer.clear()
        self.pipe.rd_wait.notify()
        self.pipe.wr_wait.notify()

    def fsync(self, fd: FileDescription) -> None:
        """EINVAL: pipes have no fsync (Linux ``vfs_fsync_range``)."""
        raise SyscallError(errno.EINVAL)


class PipeSuperblock(Superblock):
    """pipefs: the anonymous filesystem pipe(2)'s inodes live on. Its root is
    a bare directory (mode 0600, as Linux ``init_pseudo`` makes it) that no
    path reaches; :func:`pipefs_mount` mounts one."""

    def __init__(self) -> None:
        super().__init__("pipefs", PIPEFS_MAGIC)
        self._root: Inode | None = None

    def root(self) -> Inode:
        if self._root is None:
            self._root = Inode(self, S_IFDIR | 0o600)
        return self._root

    def statfs(self) -> StatFS:
        return StatFS(type=PIPEFS_MAGIC, bsize=4096, blocks=0, bfree=0, bavail=0, files=0, ffree=0)


def pipefs_mount() -> Mount:
    """A pipefs mount for :func:`new_pipe` (the kernel keeps one, as Linux's
    ``pipe_mnt``); it is attached to no namespace."""
    from ..mounts import MountFlags
    from .mount import Dentry, Mount

    sb = PipeSuperblock()
    # Linux's internal pipefs mount reports no flags to statfs (strictatime
    # here gives 0); pipe ends do not touch atime anyway.
    return Mount(sb, Dentry(sb.root()), MountFlags(strict_atime=True), device="pipefs", source="pipefs")


class PipeInode(Inode):
    """A pipe(2) pipe: mode S_IFIFO|0600, owned by the creator. stat reports
    size 0, as Linux does (FIONREAD tells what is buffered: ``len(pipe)``)."""

    def __init__(self, sb: PipeSuperblock, uid: int, gid: int, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__(sb, S_IFIFO | 0o600, uid, gid)
        self.btime = None
        self.pipe = Pipe(capacity)
        self.fifo = self.pipe  # /proc/self/fd/N reopens this pipe, not a new one

    @property
    def size(self) -> int:
        return 0


def new_pipe(mount: Mount, uid: int, gid: int, flags: int = 0) -> tuple[FileDescription, FileDescription]:
    """pipe2(2): (read end, write end) on ``mount`` (a pipefs mount); ``flags``
    may hold O_NONBLOCK (O_CLOEXEC is the FD table's)."""
    from .mount import Dentry, VirtualDentry

    assert isinstance(mount.sb, PipeSuperblock)
    inode = PipeInode(mount.sb, uid, gid)
    dentry = Dentry(inode, f"pipe:[{inode.ino}]")
    vd = VirtualDentry(mount, dentry)
    status = flags & os.O_NONBLOCK
    reader = FileDescription(
        vd, os.O_RDONLY | status, lambda fd: PipeEndOps(inode.pipe, read=True, write=False, anonymous=True)
    )
    writer = FileDescription(
        vd, os.O_WRONLY | status, lambda fd: PipeEndOps(inode.pipe, read=False, write=True, anonymous=True)
    )
    return reader, writer
