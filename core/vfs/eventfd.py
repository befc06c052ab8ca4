"""eventfd: a 64-bit counter as a file (Linux ``fs/eventfd.c``, eventfd(2);
gVisor ``fsimpl/eventfd``).

A read takes the counter and leaves 0, or with EFD_SEMAPHORE takes 1; it
would wait while the counter is 0. A write adds its 8-byte value; it would
wait while the sum would reach 2**64 - 1. Reads and writes of fewer than 8
bytes are EINVAL, and so is writing 0xffffffffffffffff. Where Linux would
wait, these raise :class:`~.pipe.WouldBlock` (EAGAIN with O_NONBLOCK;
otherwise the task parks). Readiness is Linux ``eventfd_poll``'s: EPOLLIN
while the counter is above 0, EPOLLOUT while 1 more fits, EPOLLERR at the
overflow value.
"""

from __future__ import annotations

import errno
import os
import struct

from ..errors import SyscallError
from .anon import anon_file
from .file import FileDescription, FileOps
from .pipe import WouldBlock
from .poll import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, WaitQueue

EFD_SEMAPHORE = 1
EFD_CLOEXEC = os.O_CLOEXEC
EFD_NONBLOCK = os.O_NONBLOCK
#: The flags eventfd2 takes (Linux ``EFD_FLAGS_SET``).
EFD_FLAGS_SET = EFD_SEMAPHORE | EFD_CLOEXEC | EFD_NONBLOCK
ULLONG_MAX = (1 << 64) - 1
U64 = struct.Struct("<Q")


class EventFDOps(FileOps):
    """One eventfd's counter (Linux ``struct eventfd_ctx``); not seekable."""

    seekable = False
    pollable = True
    touch_atime = False

    def __init__(self, count: int, semaphore: bool) -> None:
        self.count = count
        self.semaphore = semaphore
        self.wqh = WaitQueue()

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        """8 bytes: the counter (then 0), or 1 with EFD_SEMAPHORE (the counter
        less 1). EINVAL for fewer than 8 bytes; WouldBlock while it is 0."""
        if length < 8:
            raise SyscallError(errno.EINVAL)
        if self.count == 0:
            raise WouldBlock("eventfd counter is 0")
        value = 1 if self.semaphore else self.count
        self.count -= value
        self.wqh.notify(EPOLLOUT)
        return U64.pack(value)

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        """Add the 8-byte value; 8. EINVAL for fewer than 8 bytes or the value
        2**64 - 1; WouldBlock while the sum would reach 2**64 - 1."""
        if len(data) < 8:
            raise SyscallError(errno.EINVAL)
        (value,) = U64.unpack_from(data)
        if value == ULLONG_MAX:
            raise SyscallError(errno.EINVAL)
        if ULLONG_MAX - self.count <= value:
            raise WouldBlock("eventfd counter would overflow")
        self.count += value
        self.wqh.notify(EPOLLIN)
        return 8

    def size(self, fd: FileDescription) -> int:
        raise SyscallError(errno.ESPIPE)

    def readiness(self, fd: FileDescription) -> int:
        """Linux ``eventfd_poll`` (no EPOLLRDNORM or EPOLLWRNORM)."""
        mask = 0
        if self.count > 0:
            mask |= EPOLLIN
        if self.count == ULLONG_MAX:
            mask |= EPOLLERR
        if self.count < ULLONG_MAX - 1:
            mask |= EPOLLOUT
        return mask

    def wait_queues(self, fd: FileDescription) -> tuple[WaitQueue, ...]:
        return (self.wqh,)

    def release(self, fd: FileDescription) -> None:
        self.wqh.notify(EPOLLHUP)

    def fsync(self, fd: FileDescription) -> None:
        raise SyscallError(errno.EINVAL)


def new_eventfd(initval: int, flags: int) -> FileDescription:
    """eventfd2(2)'s file: the counter starts at ``initval`` (an unsigned
    int); ``flags`` may hold EFD_SEMAPHORE, EFD_NONBLOCK and EFD_CLOEXEC (the
    FD table's), anything else is EINVAL."""
    if flags & ~EFD_FLAGS_SET:
        raise SyscallError(errno.EINVAL)
    ops = EventFDOps(initval & 0xFFFFFFFF, bool(flags & EFD_SEMAPHORE))
    return anon_file("eventfd", os.O_RDWR | (flags & EFD_NONBLOCK), lambda fd: ops)
