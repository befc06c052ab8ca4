"""The memory devices (Linux ``drivers/char/mem.c``, ``drivers/char/random.c``;
gVisor ``pkg/sentry/devices/memdev``), major 1:

====== ===== ==================================================================
name   minor behaviour
====== ===== ==================================================================
null   3     read: end of file; write: swallows everything
zero   5     read: zeros; write: swallows everything
full   7     read: zeros; write: ENOSPC
random 8     read: bytes from the sentry's entropy (``os.urandom``); write:
             accepted and dropped (Linux mixes them into the pool)
urandom 9    the same as random (Linux 5.18+ makes them one source too)
====== ===== ==================================================================

The offset is ignored: pread and pwrite work, as on Linux. lseek works too,
but moves the offset where Linux's ``null_lseek`` leaves it at 0 (the
FileOps contract has no seek of its own; see the module ``file``).
"""

from __future__ import annotations

import errno
import os

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.vfs.file import FileDescription, FileOps

MEM_MAJOR = 1
NULL_MINOR, ZERO_MINOR, FULL_MINOR, RANDOM_MINOR, URANDOM_MINOR = 3, 5, 7, 8, 9

#: The most one read of zero, full, random or urandom returns. Linux fills
#: the whole request; a short read is legal (callers loop), and it keeps a huge
#: request from building one huge bytes object in the sentry.
MAX_READ = 1 << 20


class NullOps(FileOps):
    """/dev/null: reads give end of file, writes succeed and vanish."""

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        return b""

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        return len(data)

    def size(self, fd: FileDescription) -> int:
        return 0


class ZeroOps(NullOps):
    """/dev/zero: reads give zeros (at most :data:`MAX_READ` per call)."""

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        return bytes(min(length, MAX_READ))


class FullOps(ZeroOps):
    """/dev/full: reads give zeros, every write is ENOSPC."""

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        raise SyscallError(errno.ENOSPC)


class RandomOps(NullOps):
    """/dev/random and /dev/urandom: reads give ``os.urandom`` bytes (the
    sentry's entropy, gVisor ``pkg/rand``); writes are accepted and dropped."""

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        return os.urandom(min(length, MAX_READ))


def open_null(fd: FileDescription) -> FileOps:
    return NullOps()


def open_zero(fd: FileDescription) -> FileOps:
    return ZeroOps()


def open_full(fd: FileDescription) -> FileOps:
    return FullOps()


def open_random(fd: FileDescription) -> FileOps:
    return RandomOps()


#: (minor, name, opener) of each memory device.
MEM_DEVICES = (
    (NULL_MINOR, "null", open_null),
    (ZERO_MINOR, "zero", open_zero),
    (FULL_MINOR, "full", open_full),
    (RANDOM_MINOR, "random", open_random),
    (URANDOM_MINOR, "urandom", open_random),
)
