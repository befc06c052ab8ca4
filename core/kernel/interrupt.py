"""Interrupting the sentry's blocking host calls from a host signal handler.

The sandbox process forwards host signals (``pyrunsc kill``) to the
container. When the sentry is blocked in a host call on the task's behalf
(sleeping, reading the caller's stdin, polling), the handler must cut that
call short, as a signal interrupts a blocked system call on Linux (EINTR).
Python retries system calls interrupted by signals (PEP 475), so the handler
raises :class:`Interrupted` instead, but only inside :func:`blocking`, where
aborting is safe: nowhere else does it touch the sentry's state.

Signals are per process, so this state is per process too.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import SyscallError


class Interrupted(Exception):
    """Raised by the signal handler into a blocking host call."""


_blocking = 0
#: A signal arrived and the kernel has not handled it yet: blocking calls
#: started meanwhile fail at once (the signal may have come just before).
_pending = False


@contextmanager
def blocking() -> Iterator[None]:
    """Mark a host call the signal handler may interrupt; it then fails EINTR."""
    global _blocking
    if _pending:
        raise SyscallError(errno.EINTR)
    _blocking += 1
    try:
        yield
    except Interrupted:
        # Stop counting first, so a second signal cannot raise again here.
        _blocking = 0
        raise SyscallError(errno.EINTR) from None
    finally:
        _blocking = max(_blocking - 1, 0)


def in_blocking_call() -> bool:
    """Whether the sentry is waiting in a host call marked :func:`blocking`.
    Read it from a signal handler: there the sentry's state is whole (the
    call could be aborted), so the handler may read the kernel's tasks."""
    return _blocking > 0


def interrupt() -> None:
    """Call from a signal handler: abort the blocking host call in progress, if any."""
    global _pending, _blocking
    _pending = True
    if _blocking:
        _blocking = 0  # raise once per blocking call
        raise Interrupted


def abort() -> None:
    """Call from a signal handler: abort the blocking host call in progress,
    if any, as :func:`interrupt` does, but for the sentry's own reason (a
    halt), so no host signal is left pending for later blocking calls."""
    global _blocking
    if _blocking:
        _blocking = 0  # raise once per blocking call
        raise Interrupted


def handled() -> None:
    """The kernel has seen the signal: later blocking calls may block again."""
    global _pending
    _pending = False
