"""What a parked system call waits for, and the run loop's idle wait
(Linux ``fs/select.c`` ``poll_schedule_timeout``; gVisor ``kernel.Task.Block``
with a deadline and ``waiter.Queue``).

A handler that must wait raises ``Block``; the run loop parks the task and
serves the same call again later (every 64 turns, when a signal comes, or
when no task can run). A call that waits for a deadline or a host fd leaves a
:class:`Wait` on ``task.wait`` before raising: the deadline of the first
attempt (so a retry does not start the timeout over), the host fds the call
waits on (the container's stdin), and whether a signal handler restarts the
call (SA_RESTART) or it fails EINTR regardless, as poll, select and
epoll_wait do (Linux ``-ERESTARTNOHAND``).

The record lives until the call ends: the syscall layer drops it when a
handler returns or fails, ``signals.interrupt_blocked_call`` when a signal
interrupts the call. When no task can run, :func:`idle` sleeps until the
earliest deadline of a parked call, a host fd one waits on becomes ready, or
a host signal comes, whichever is first, never longer than :data:`IDLE_MAX`.
"""

from __future__ import annotations

import select
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..vfs.poll import EPOLLERR, EPOLLHUP
from .interrupt import blocking

if TYPE_CHECKING:
    from ..vfs.poll import WaitQueue
    from .task import Task
    from .time import Timekeeper

#: The longest the idle wait sleeps in one go (seconds). Every wake-up source
#: (deadlines, host fds, host signals) ends it earlier; this only bounds the
#: moment a host signal could slip in just before the host poll starts.
IDLE_MAX = 1.0


@dataclass
class Wait:
    """A parked call's wait: ``deadline`` as (clock id, ns on that clock) or
    None for none; ``host_fds`` host fd -> poll events it waits for;
    ``restart`` False when the call fails EINTR even after an SA_RESTART
    handler; ``state`` whatever the handler keeps across retries."""

    deadline: tuple[int, int] | None = None
    host_fds: dict[int, int] = field(default_factory=dict)
    restart: bool = True
    state: object = None


def remaining_ns(tk: Timekeeper, wait: Wait | None) -> int | None:
    """Nanoseconds until ``wait``'s deadline (<= 0 once due); None without one."""
    if wait is None or wait.deadline is None:
        return None
    clock, ns = wait.deadline
    return ns - tk.now(clock)


def idle(tk: Timekeeper, blocked: Iterable[Task], due_ns: int | None = None) -> None:
    """No task can run: wait for the first of the parked calls' deadlines
    (``task.wait`` and a sleep's ``task.wake_at``), ``due_ns`` from now (the
    next timer), a host fd a parked call waits on becoming ready, or a host
    signal (EINTR from the interrupt machinery), at most :data:`IDLE_MAX`
    seconds. It neither spins nor stalls: with nothing to wait for it sleeps
    until a host signal comes."""
    delay = IDLE_MAX * 1e9
    if due_ns is not None:
        delay = min(delay, due_ns)
    fds: dict[int, int] = {}
    for t in blocked:
        if t.wake_at is not None:
            delay = min(delay, t.wake_at[1] - tk.now(t.wake_at[0]))
        w = t.wait
        if w is not None:
            left = remaining_ns(tk, w)
            if left is not None:
                delay = min(delay, left)
            for fd, events in w.host_fds.items():
                fds[fd] = fds.get(fd, 0) | events
    if delay <= 0:
        return
    poller = select.poll()
    for fd, events in fds.items():
        poller.register(fd, events)
    # Round up: waking a little late is harmless, early means a second wait.
    timeout_ms = -(-int(delay) // 1_000_000)
    try:
        with blocking():
            poller.poll(timeout_ms)
    except (SyscallError, OSError):
        pass


class TaskWaker:
    """Hangs on the wait queues of a file a parked call waits for, and asks
    the kernel to serve the call again as soon as the file has the events it
    waits for (Linux: the task on the queue, woken by ``wake_up``), instead
    of at the next periodic retry. One per task; it leaves every queue on
    its first wake-up."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.events = 0
        self.queues: list[WaitQueue] = []

    def hang(self, queues: Iterable[WaitQueue], events: int) -> None:
        self.events |= events
        for q in queues:
            if q not in self.queues:
                q.add(self)
                self.queues.append(q)

    def wake(self, events: int) -> None:
        if events and not events & (self.events | EPOLLERR | EPOLLHUP):
            return
        for q in self.queues:
            q.remove(self)
        self.queues.clear()
        self.events = 0
        self.task.kernel.wake(self.task)
