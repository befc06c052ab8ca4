"""The timekeeper: the sandbox's clocks (gVisor ``kernel.Timekeeper``; Linux
``clock_gettime(2)``).

CLOCK_REALTIME follows the host's realtime clock. CLOCK_MONOTONIC and
CLOCK_BOOTTIME count from the sandbox's boot and never go backwards, also
across checkpoint and restore (:meth:`Timekeeper.resume` re-anchors them).
The CPU-time clocks report the time the sentry spent on the task, approximated
by the host's process CPU time. The ``_COARSE`` variants read the same clocks.
"""

from __future__ import annotations

import errno
import time

from ..errors import SyscallError

CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 0, 1, 2, 3
CLOCK_MONOTONIC_RAW, CLOCK_REALTIME_COARSE, CLOCK_MONOTONIC_COARSE, CLOCK_BOOTTIME = 4, 5, 6, 7
CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM, CLOCK_TAI = 8, 9, 11

#: Resolution reported by clock_getres: 1 ns, as Linux reports for hrtimers;
#: the coarse clocks report a tick (4 ms at HZ=250).
RESOLUTION_NS = 1
COARSE_RESOLUTION_NS = 4_000_000


class Timekeeper:
    """Clocks in ns. ``monotonic()`` starts near zero at boot (like a freshly
    booted machine's uptime)."""

    def __init__(self) -> None:
        self._mono_base = time.monotonic_ns()
        #: Monotonic ns already elapsed before the current host anchor (grows
        #: on each restore so that time keeps moving forward).
        self._mono_offset = 0
        #: ns tasks spent running application code (see :meth:`cpu_time`).
        self.app_ns = 0
        #: CPU time used before a restore, by the sandbox's earlier sentries.
        self._cpu_offset = 0

    def realtime(self) -> int:
        return time.time_ns()

    def monotonic(self) -> int:
        return self._mono_offset + (time.monotonic_ns() - self._mono_base)

    def cpu_time(self) -> int:
        """The sandbox's CPU time: the sentry's own plus the time tasks spent
        running application code (``app_ns``, counted by the run loop: the
        stubs' CPU time is not the sentry's)."""
        return self._cpu_offset + time.process_time_ns() + self.app_ns

    def now(self, clock: int) -> int:
        """The clock ``clock`` in ns; EINVAL for an unknown clock id."""
        if clock in (CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM):
            return self.realtime()
        if clock == CLOCK_TAI:
            return self.realtime() + 37 * 10**9
        if clock in (CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_MONOTONIC_COARSE, CLOCK_BOOTTIME,
                     CLOCK_BOOTTIME_ALARM):
            return self.monotonic()
        if clock in (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID) or clock < 0:
            # Negative ids are per-process/thread CPU clocks (clock_getcpuclockid).
            return self.cpu_time()
        raise SyscallError(errno.EINVAL)

    def resolution(self, clock: int) -> int:
        self.now(clock)
        return COARSE_RESOLUTION_NS if clock in (CLOCK_REALTIME_COARSE, CLOCK_MONOTONIC_COARSE) else RESOLUTION_NS

    def __getstate__(self) -> dict[str, int]:
        """The monotonic and CPU-time clocks as they read at the checkpoint:
        after a restore they go on from there (gVisor's Timekeeper does the
        same for monotonic time), never backwards; the time the sandbox was
        stopped is not counted. CLOCK_REALTIME is the host's."""
        return {"monotonic": self.monotonic(), "cpu": self.cpu_time()}

    def __setstate__(self, state: dict[str, int]) -> None:
        self._mono_base = time.monotonic_ns()
        self._mono_offset = state["monotonic"]
        self.app_ns = 0
        self._cpu_offset = state.get("cpu", 0) - time.process_time_ns()
