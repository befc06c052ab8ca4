"""Interval timers and POSIX timers (Linux ``kernel/time/itimer.c``,
``kernel/time/posix-timers.c``; gVisor ``kernel/time``, ``syscalls/linux/sys_timer.go``).

A timer belongs to a thread group. When it expires it sends its signal
(SIGALRM for ITIMER_REAL, or what timer_create's ``sigevent`` asks) and, if
it has an interval, is re-armed; expirations missed while the signal was
still pending count as overruns. The kernel's run loop calls :func:`fire`
when the earliest timer is due (``Kernel.timer_due``) and sleeps no longer
than that when idle, so timers work while every task is parked.

ITIMER_VIRTUAL and ITIMER_PROF, and timers on the CPU-time clocks, count the
sentry's host CPU time (the timekeeper's approximation of the sandbox's CPU
time).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import signals
from .time import CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID

if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import ThreadGroup

ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2
SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD, SIGEV_THREAD_ID = 0, 1, 2, 4
SI_TIMER = -2
SIGALRM, SIGVTALRM, SIGPROF = 14, 26, 27
ITIMER_SIGNALS = {ITIMER_REAL: SIGALRM, ITIMER_VIRTUAL: SIGVTALRM, ITIMER_PROF: SIGPROF}


@dataclass(eq=False)
class IntervalTimer:
    """One timer: ``clock`` (a clock id), the signal it sends and how
    (``notify``: SIGEV_SIGNAL to the process, SIGEV_THREAD_ID to
    ``target_tid``, SIGEV_NONE for none), ``expiry`` (ns on ``clock``, 0 when
    disarmed) and ``interval`` (ns, 0 for one-shot)."""

    tg: ThreadGroup
    clock: int
    signo: int
    notify: int = SIGEV_SIGNAL
    target_tid: int = 0
    value: int = 0
    timer_id: int = -1
    expiry: int = 0
    interval: int = 0
    overrun: int = 0
    #: Overruns of the last delivered expiry (timer_getoverrun).
    last_overrun: int = 0

    def remaining(self) -> int:
        """ns until expiry (at least 1 while armed), 0 when disarmed."""
        if not self.expiry:
            return 0
        return max(self.expiry - self.tg.leader.kernel.timekeeper.now(self.clock), 1)

    def arm(self, value: int, interval: int, absolute: bool = False) -> None:
        """Arm to expire ``value`` ns from now (or at ``value`` on the clock when
        ``absolute``), then every ``interval`` ns; ``value`` 0 disarms."""
        kernel = self.tg.leader.kernel
        now = kernel.timekeeper.now(self.clock)
        self.interval = interval
        self.overrun = 0
        if not value:
            self.expiry = 0
        else:
            self.expiry = max(value, 1) if absolute else now + value
        reschedule(kernel)

    def _expire(self, now: int) -> None:
        missed = 0
        if self.interval:
            missed = (now - self.expiry) // self.interval
            self.expiry += (missed + 1) * self.interval
        else:
            self.expiry = 0
        if self.notify == SIGEV_NONE:
            return
        tg = self.tg
        bit = 1 << (self.signo - 1)
        target = None
        if self.notify & SIGEV_THREAD_ID:
            target = next((t for t in tg.live_tasks if t.tid == self.target_tid), None)
        holder = target if target is not None else tg
        queued = any(struct.unpack_from("<i", i, 16)[0] == self.timer_id and struct.unpack_from("<i", i, 8)[0]
                     == SI_TIMER for i in holder.siginfo.get(self.signo, ()))
        if self.timer_id >= 0 and holder.pending & bit and queued:
            # Its signal is still pending: one more overrun, reported at dequeue.
            self.overrun += missed + 1
            return
        self.overrun = missed
        if self.timer_id >= 0:
            info = struct.pack("<iii4xiiQ", self.signo, 0, SI_TIMER, self.timer_id, 0, self.value).ljust(128, b"\0")
        else:
            info = signals.siginfo(self.signo, signals.SI_KERNEL)
        if target is not None:
            signals.send(target, self.signo, info)
        else:
            signals.send_group(tg, self.signo, info)


def _armed(kernel: Kernel) -> list[IntervalTimer]:
    out: list[IntervalTimer] = []
    for t in kernel.tasks.values():
        tg = t.tg
        if tg.leader is t and tg.exit_status is None:
            out.extend(x for x in tg.itimers.values() if x.expiry)
            out.extend(x for x in tg.timers.values() if x.expiry)
    return out


def reschedule(kernel: Kernel) -> None:
    """Recompute when the next timer is due (host monotonic ns)."""
    armed = _armed(kernel)
    if not armed:
        kernel.timer_due = 0
        return
    host = time.monotonic_ns()
    kernel.timer_due = host + min(x.remaining() for x in armed)


def fire(kernel: Kernel) -> None:
    """Expire every due timer, then reschedule."""
    tk = kernel.timekeeper
    for x in _armed(kernel):
        now = tk.now(x.clock)
        if now >= x.expiry:
            x._expire(now)
    reschedule(kernel)


def itimer(tg: ThreadGroup, which: int) -> IntervalTimer:
    """The group's setitimer timer ``which`` (created disarmed)."""
    x = tg.itimers.get(which)
    if x is None:
        clock = CLOCK_MONOTONIC if which == ITIMER_REAL else CLOCK_PROCESS_CPUTIME_ID
        x = tg.itimers[which] = IntervalTimer(tg, clock, ITIMER_SIGNALS[which])
    return x
