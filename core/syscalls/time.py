"""Clocks and sleeping (Linux ``kernel/time/*.c``; gVisor ``sys_time.go``)."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..kernel import timers
from ..kernel.time import CLOCK_MONOTONIC, CLOCK_REALTIME
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
    if clock == CLOCK_REALTIME and not flags & TIMER_ABSTIME:
        # A relative CLOCK_REALTIME sleep is a CLOCK_MONOTONIC one, as in
        # Linux (``__hrtimer_init``: relative realtime timers are not moved
        # by clock changes). Realtime jumps across a checkpoint (it is the
        # host's), monotonic time does not: with a realtime deadline, busybox
        # ``sleep 5`` (clock_nanosleep(CLOCK_REALTIME, 0, ...)) ended at
        # once after a restore when the stopped interval exceeded its rest.
        clock = CLOCK_MONOTONIC
    deadline = t if flags & TIMER_ABSTIME else tk.now(clock) + t
    _sleep_until(task, clock, deadline, 0 if flags & TIMER_ABSTIME else rem)
    return 0


# Interval timers and POSIX timers (Linux kernel/time/itimer.c, posix-timers.c).

ITIMERVAL = struct.Struct("<qqqq")  # it_interval, it_value as timevals
ITIMERSPEC = struct.Struct("<qqqq")  # it_interval, it_value as timespecs
SIGEVENT = struct.Struct("<QiiI")  # sigev_value, sigev_signo, sigev_notify, sigev_notify_thread_id
MAX_TIMERS = 32768


def _tv_ns(sec: int, usec: int) -> int:
    if sec < 0 or not 0 <= usec < 10**6:
        raise SyscallError(errno.EINVAL)
    return sec * 10**9 + usec * 1000


def _itimerval(x: timers.IntervalTimer | None) -> bytes:
    if x is None:
        return bytes(32)
    rem, iv = x.remaining(), x.interval
    # Linux rounds a running timer's remainder up to whole microseconds.
    rem_us, iv_us = (rem + 999) // 1000, (iv + 999) // 1000
    return ITIMERVAL.pack(iv_us // 10**6, iv_us % 10**6, rem_us // 10**6, rem_us % 10**6)


@syscall("getitimer", "ip")
def sys_getitimer(task: Task, which: int, addr: int) -> int:
    if which not in timers.ITIMER_SIGNALS:
        raise SyscallError(errno.EINVAL)
    task.mm.copy_out(addr, _itimerval(task.tg.itimers.get(which)))
    return 0


@syscall("setitimer", "ipp")
def sys_setitimer(task: Task, which: int, new: int, old: int) -> int:
    """setitimer(2): ITIMER_REAL (SIGALRM), ITIMER_VIRTUAL (SIGVTALRM) and
    ITIMER_PROF (SIGPROF); EINVAL for another ``which`` or a bad timeval.
    A NULL ``new`` disarms (as Linux does, with a warning there)."""
    if which not in timers.ITIMER_SIGNALS:
        raise SyscallError(errno.EINVAL)
    iv = val = 0
    if new:
        isec, iusec, vsec, vusec = ITIMERVAL.unpack(task.mm.copy_in(new, 32))
        iv, val = _tv_ns(isec, iusec), _tv_ns(vsec, vusec)
    x = timers.itimer(task.tg, which)
    if old:
        task.mm.copy_out(old, _itimerval(x))
    x.arm(val, iv)
    return 0


@syscall("alarm", "i")
def sys_alarm(task: Task, seconds: int) -> int:
    """alarm(2): ITIMER_REAL in whole seconds; returns the seconds left of
    the previous alarm, rounded to nearest (at least 1 if one was set)."""
    x = timers.itimer(task.tg, timers.ITIMER_REAL)
    rem = x.remaining()
    x.arm((seconds & 0xFFFFFFFF) * 10**9, 0)
    if not rem:
        return 0
    return max((rem + 500_000_000) // 10**9, 1)


def _timer(task: Task, timer_id: int) -> timers.IntervalTimer:
    x = task.tg.timers.get(_int32(timer_id))
    if x is None:
        raise SyscallError(errno.EINVAL)
    return x


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


@syscall("timer_create", "ipp")
def sys_timer_create(task: Task, clock: int, sevp: int, idp: int) -> int:
    """timer_create(2) on CLOCK_REALTIME, MONOTONIC, BOOTTIME and the
    process CPU-time clock; SIGEV_SIGNAL, SIGEV_NONE and SIGEV_THREAD_ID
    (glibc's SIGEV_THREAD is built on it). EINVAL for another clock or
    notification, a bad signal or a thread outside the process; EAGAIN past
    the per-process limit."""
    clock = _int32(clock)
    if clock not in (0, 1, 2, 7):
        raise SyscallError(errno.EINVAL)
    tg = task.tg
    timer_id = next((i for i in range(MAX_TIMERS) if i not in tg.timers), None)
    if timer_id is None:
        raise SyscallError(errno.EAGAIN)
    if sevp:
        value, signo, notify, tid = SIGEVENT.unpack(task.mm.copy_in(sevp, SIGEVENT.size))
        if notify not in (timers.SIGEV_SIGNAL, timers.SIGEV_NONE, timers.SIGEV_THREAD_ID):
            raise SyscallError(errno.EINVAL)
        if notify != timers.SIGEV_NONE and not 1 <= signo <= 64:
            raise SyscallError(errno.EINVAL)
        if notify == timers.SIGEV_THREAD_ID and not any(t.tid == tid for t in tg.live_tasks):
            raise SyscallError(errno.EINVAL)
    else:
        value, signo, notify, tid = timer_id, timers.SIGALRM, timers.SIGEV_SIGNAL, 0
    task.mm.copy_out(idp, struct.pack("<i", timer_id))
    tg.timers[timer_id] = timers.IntervalTimer(tg, clock, signo, notify, tid, value, timer_id)
    return 0


def _itimerspec(x: timers.IntervalTimer) -> bytes:
    rem, iv = x.remaining(), x.interval
    return ITIMERSPEC.pack(iv // 10**9, iv % 10**9, rem // 10**9, rem % 10**9)


@syscall("timer_settime", "iipp")
def sys_timer_settime(task: Task, timer_id: int, flags: int, new: int, old: int) -> int:
    x = _timer(task, timer_id)
    isec, insec, vsec, vnsec = ITIMERSPEC.unpack(task.mm.copy_in(new, 32))
    if isec < 0 or vsec < 0 or not 0 <= insec < 10**9 or not 0 <= vnsec < 10**9:
        raise SyscallError(errno.EINVAL)
    if old:
        task.mm.copy_out(old, _itimerspec(x))
    x.arm(vsec * 10**9 + vnsec, isec * 10**9 + insec, absolute=bool(flags & TIMER_ABSTIME))
    return 0


@syscall("timer_gettime", "ip")
def sys_timer_gettime(task: Task, timer_id: int, addr: int) -> int:
    task.mm.copy_out(addr, _itimerspec(_timer(task, timer_id)))
    return 0


@syscall("timer_getoverrun", "i")
def sys_timer_getoverrun(task: Task, timer_id: int) -> int:
    return min(_timer(task, timer_id).last_overrun, 0x7FFFFFFF)


@syscall("timer_delete", "i")
def sys_timer_delete(task: Task, timer_id: int) -> int:
    x = _timer(task, timer_id)
    x.arm(0, 0)
    del task.tg.timers[x.timer_id]
    timers.reschedule(task.kernel)
    return 0
