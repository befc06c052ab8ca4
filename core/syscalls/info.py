"""System information (Linux ``kernel/sys.c`` ``newuname``, ``sysinfo``;
``drivers/char/random.c`` ``getrandom``)."""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from . import syscall

if TYPE_CHECKING:
    from ..kernel.task import Task

GRND_NONBLOCK, GRND_RANDOM, GRND_INSECURE = 1, 2, 4


@syscall("uname", "p")
def sys_uname(task: Task, addr: int) -> int:
    """The sandbox's UTS namespace (sysname Linux, the spec's hostname, a fixed
    release); the host's uname is not passed through."""
    u = task.kernel.uts
    fields = (u.sysname, u.hostname, u.release, u.version, u.machine, u.domainname)
    task.mm.copy_out(addr, b"".join(os.fsencode(f)[:64].ljust(65, b"\0") for f in fields))
    return 0


@syscall("sethostname", "si")
def sys_sethostname(task: Task, addr: int, length: int) -> int:
    from ..kernel.auth import CAP_SYS_ADMIN

    if not task.fs.creds.has_cap(CAP_SYS_ADMIN):
        raise SyscallError(errno.EPERM)
    if length > 64:
        raise SyscallError(errno.EINVAL)
    task.kernel.uts.hostname = os.fsdecode(task.mm.copy_in(addr, length))
    return 0


@syscall("getrandom", "oix")
def sys_getrandom(task: Task, buf: int, count: int, flags: int) -> int:
    if flags & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) or (flags & GRND_RANDOM and flags & GRND_INSECURE):
        raise SyscallError(errno.EINVAL)
    count = min(count, 33554431)
    task.mm.copy_out(buf, os.urandom(count))
    return count


@syscall("sysinfo", "p")
def sys_sysinfo(task: Task, addr: int) -> int:
    """Uptime from the sandbox's monotonic clock; memory figures from the host."""
    uptime = task.kernel.timekeeper.monotonic() // 10**9
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    # struct sysinfo: uptime, loads[3], totalram, freeram, sharedram,
    # bufferram, totalswap, freeswap, procs (u16, padded), totalhigh,
    # freehigh, mem_unit.
    data = struct.pack("<q3Q6QH6xQQI", uptime, 0, 0, 0, total, free, 0, 0, 0, 0,
                       min(len(task.kernel.tasks), 0xFFFF), 0, 0, 1)
    task.mm.copy_out(addr, data.ljust(112, b"\0"))
    return 0
