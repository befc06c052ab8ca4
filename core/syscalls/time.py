"""Clocks and sleeping (Linux ``kernel/time/*.c``; gVisor ``sys_time.go``)."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from . import Block, handler_pending, syscall, to_signed

if TYPE_CHECKING:
    from ..kernel.task import Task

TIMESPEC = struct.Struct("<qq")
TIMER_ABSTIME = 1


@syscall("clock_gettime", "ip")
def sys_clock_gettime(task: Task, clock: int, addr: int) -> int:
    ns = task.kernel.timekeeper.now(to_signed(clock) if clock >> 63 else clock)
    task.mm.copy_out(addr, TIMESPEC.pack(ns // 10**9, ns % 10**9))
    return 0


@syscall("clock_getres", "ip")
def sys_clock_getres(task: Task, clock: int, addr: int) -> int:
    res = task.kernel.timekeeper.resolution(to_signed(clock) if clock >> 63 else clock)
    if addr:
        task.mm.copy_out(addr, TIMESPEC.pack(0, res))
    return 0


@syscall("gettimeofday", "pp")
def sys_gettimeofday(task: Task, tv: int, tz: int) -> int:
    ns = task.kernel.timekeeper.realtime()
    if tv:
        task.mm.copy_out(tv, struct.pack("<qq", ns // 10**9, ns % 10**9 // 1000))
    if tz:
        task.mm.copy_out(tz, struct.pack("<ii", 0, 0))
    return 0


@syscall("time", "p")
def sys_time(task: Task, addr: int) -> int:
    sec = task.kernel.timekeeper.realtime() // 10**9
    if addr:
        task.mm.copy_out(addr, struct.pack("<q", sec))
    return sec


def _sleep_until(task: Task, clock: int, deadline_ns: int, rem: int = 0) -> None:
    """Wait until ``clock`` reaches ``deadline_ns`` without stalling the other
    tasks: the task parks (Block) with a wake-up time and the call is served
    again when it is due. The first attempt's deadline is kept for the retries
    (``task.wake_at``), so a relative sleep does not start over.

    A signal that runs a handler ends the sleep with EINTR, SA_RESTART or not
    (Linux: -ERESTART_RESTARTBLOCK), and the time left goes to ``rem`` if
    given (Linux ``do_nanosleep``)."""
    tk = task.kernel.timekeeper
    if task.wake_at is None:
        task.wake_at = (clock, deadline_ns)
    clock, deadline_ns = task.wake_at
    left = deadline_ns - tk.now(clock)
    if left <= 0:
        task.wake_at = None
        return
    if handler_pending(task):
        task.wake_at = None
        if rem:
            task.mm.copy_out(rem, TIMESPEC.pack(left // 10**9, left % 10**9))
        raise SyscallError(errno.EINTR)
    raise Block()


def _timespec(task: Task, addr: int) -> int:
    sec, nsec = TIMESPEC.unpack(task.mm.copy_in(addr, 16))
    if sec < 0 or not 0 <= nsec < 10**9:
        raise SyscallError(errno.EINVAL)
    return int(sec) * 10**9 + int(nsec)


@syscall("nanosleep", "pp")
def sys_nanosleep(task: Task, req: int, rem: int) -> int:
    dur = _timespec(task, req)
    tk = task.kernel.timekeeper
    _sleep_until(task, 1, tk.monotonic() + dur, rem)
    return 0


@syscall("clock_nanosleep", "ixpp")
def sys_clock_nanosleep(task: Task, clock: int, flags: int, req: int, rem: int) -> int:
    if clock in (2, 3):  # CPU-time clocks: Linux answers EINVAL for the thread clock
        raise SyscallError(errno.EINVAL if clock == 3 else errno.ENOTSUP)
    tk = task.kernel.timekeeper
    tk.now(clock)
    t = _timespec(task, req)
    deadline = t if flags & TIMER_ABSTIME else tk.now(clock) + t
    _sleep_until(task, clock, deadline, 0 if flags & TIMER_ABSTIME else rem)
    return 0
