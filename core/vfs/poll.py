"""Readiness: the poll events of open files, and who is told when they change
(Linux ``include/uapi/linux/eventpoll.h``, ``include/linux/poll.h``,
``include/linux/wait.h``; gVisor ``pkg/waiter``).

Every file description can say, without waiting, which events it has now:
``FileOps.readiness`` (Linux ``f_op->poll`` called with no poll table). A
file whose operations have no readiness of their own reports
:data:`DEFAULT_POLLMASK`, always readable and writable, as Linux
``vfs_poll`` does for regular files and directories.

Files whose state the sentry changes (pipes, eventfds) also have wait queues
(:class:`WaitQueue`): epoll hangs its items on them and is told which events
happened, which is what edge-triggered epoll needs. Files that mirror a host
fd (the container's stdio) cannot be watched that way; their readiness is a
zero-timeout host poll (:func:`host_readiness`), and a parked call names the
host fds it waits for so that the kernel's idle wait can sleep on them.
"""

from __future__ import annotations

import errno
import select
from typing import Protocol

from ..errors import SyscallError

EPOLLIN, EPOLLPRI, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLNVAL = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
EPOLLRDNORM, EPOLLRDBAND, EPOLLWRNORM, EPOLLWRBAND, EPOLLMSG = 0x40, 0x80, 0x100, 0x200, 0x400
EPOLLRDHUP = 0x2000
POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = EPOLLIN, EPOLLPRI, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLNVAL
POLLRDNORM, POLLRDBAND, POLLWRNORM, POLLWRBAND = EPOLLRDNORM, EPOLLRDBAND, EPOLLWRNORM, EPOLLWRBAND

#: What a file without a poll operation reports (Linux ``DEFAULT_POLLMASK``).
DEFAULT_POLLMASK = EPOLLIN | EPOLLOUT | EPOLLRDNORM | EPOLLWRNORM
#: Events reported whether asked for or not (Linux ``do_pollfd``).
ALWAYS = EPOLLERR | EPOLLHUP
#: The events a host poll can be asked about.
HOST_EVENTS = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | EPOLLRDHUP


class Waiter(Protocol):
    """What hangs on a :class:`WaitQueue` (Linux ``wait_queue_entry_t``)."""

    def wake(self, events: int) -> None:
        """The queue's file had ``events`` (0: anything may have changed)."""


class WaitQueue:
    """Linux ``wait_queue_head_t``, for callers that need to hear of changes
    as they happen (epoll). ``notify(events)`` calls every waiter's ``wake``
    with the events that happened; 0 means "anything", as Linux's
    ``wake_up_all`` with no key. Tasks themselves do not hang here: a parked
    call is served again by the run loop and looks at readiness afresh."""

    def __init__(self) -> None:
        self._waiters: dict[Waiter, None] = {}

    def add(self, waiter: Waiter) -> None:
        self._waiters[waiter] = None

    def remove(self, waiter: Waiter) -> None:
        self._waiters.pop(waiter, None)

    def notify(self, events: int = 0) -> None:
        for waiter in list(self._waiters):
            waiter.wake(events)

    def __len__(self) -> int:
        return len(self._waiters)


def host_readiness(host_fd: int, events: int = HOST_EVENTS) -> int:
    """The events ``host_fd`` has now, by a zero-timeout host poll(2); EPOLLNVAL
    when the host fd is not open. Never waits."""
    poller = select.poll()
    poller.register(host_fd, events & HOST_EVENTS)
    try:
        ready = poller.poll(0)
    except OSError as e:
        raise SyscallError(e.errno or errno.EIO) from None
    return ready[0][1] if ready else 0
