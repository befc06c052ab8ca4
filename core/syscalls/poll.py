"""Waiting for I/O: poll, select, epoll and eventfd (Linux ``fs/select.c``,
``fs/eventpoll.c``, ``fs/eventfd.c``; gVisor ``syscalls/linux/sys_poll.go``,
``sys_epoll.go``, ``sys_eventfd.go``).

None of these waits inside the handler. Each looks at the files' readiness
now (``FileOps.readiness``); when nothing is ready and the timeout has not
passed it parks the task (Block) with a :class:`~core.kernel.wait.Wait` on
``task.wait``: the deadline fixed on the first attempt, so a retry does not
start the timeout over, and the host fds it waits on, for the kernel's idle
wait. The call is served again when other tasks have run, when no task can
run, or when a signal comes; a signal with a handler makes it fail EINTR,
never restarted (Linux ``-ERESTARTNOHAND``, ``-EINTR`` for epoll_wait).
ppoll, pselect6, epoll_pwait and epoll_pwait2 apply their signal mask for
the call (Linux ``set_user_sigmask``) and keep it until the handler ran when
a signal interrupts them (``restore_saved_sigmask_unless``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from ..errors import SyscallError
from ..kernel import signals
from ..kernel.time import CLOCK_MONOTONIC
from ..kernel.wait import Wait, remaining_ns
from ..vfs.epoll import (
    EP_MAX_EVENTS,
    EPOLL_CTL_ADD,
    EPOLL_CTL_DEL,
    EPOLL_CTL_MOD,
    EPOLL_EVENT,
    EPOLLEXCLUSIVE,
    EPOLLEXCLUSIVE_OK_BITS,
    EpollOps,
    new_epoll,
)
from ..vfs.eventfd import new_eventfd
from ..vfs.file import O_PATH, FileDescription
from ..vfs.poll import (
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    POLLPRI,
    POLLRDBAND,
    POLLRDNORM,
    POLLWRBAND,
    POLLWRNORM,
)
from . import Block, syscall

if TYPE_CHECKING:
    from ..kernel.task import Task

POLLFD = struct.Struct("<iHH")
TIMESPEC = struct.Struct("<qq")
#: What select counts as readable, writable and exceptional (Linux ``POLLIN_SET`` ...).
POLLIN_SET = POLLRDNORM | POLLRDBAND | POLLIN | POLLHUP | POLLERR
POLLOUT_SET = POLLWRBAND | POLLWRNORM | POLLOUT | POLLERR
POLLEX_SET = POLLPRI
SIGSET_SIZE = 8
UNBLOCKABLE = (1 << 8) | (1 << 18)  # SIGKILL, SIGSTOP


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _file(task: Task, fd: int) -> FileDescription | None:
    """The description at ``fd``; None when it is not open or O_PATH (Linux
    ``fdget`` skips O_PATH files)."""
    try:
        desc = task.fdtable.get(fd)
    except SyscallError:
        return None
    return None if desc.flags & O_PATH else desc


def _file_or_ebadf(task: Task, fd: int) -> FileDescription:
    desc = _file(task, _int32(fd))
    if desc is None:
        raise SyscallError(errno.EBADF)
    return desc


# Timeouts, masks and parking.


def _timespec_ns(task: Task, addr: int) -> int | None:
    """A ``struct timespec`` timeout in ns; None for a null pointer (no
    timeout). EFAULT, EINVAL when not a valid time (Linux
    ``poll_select_set_timeout``)."""
    if not addr:
        return None
    sec, nsec = TIMESPEC.unpack(task.mm.copy_in(addr, TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < 10**9:
        raise SyscallError(errno.EINVAL)
    return int(sec) * 10**9 + int(nsec)


def _ms_ns(timeout: int) -> int | None:
    """A millisecond timeout (an int) in ns; negative: none."""
    ms = _int32(timeout)
    return None if ms < 0 else ms * 10**6


def _begin(task: Task, timeout_ns: int | None) -> Wait:
    """The call's wait record: made on the first attempt, with the deadline
    ``timeout_ns`` from now on CLOCK_MONOTONIC; found again on retries."""
    w = task.wait
    if w is None:
        deadline = None if timeout_ns is None else (CLOCK_MONOTONIC, task.kernel.timekeeper.monotonic() + timeout_ns)
        w = task.wait = Wait(deadline=deadline, restart=False)
    return w


def _timed_out(task: Task, w: Wait) -> bool:
    left = remaining_ns(task.kernel.timekeeper, w)
    return left is not None and left <= 0


def _park(w: Wait, host: dict[int, int]) -> NoReturn:
    """Wait (Block) for the host fds in ``host`` or another task; the call is
    served again."""
    w.host_fds = host
    raise Block()


def _sigmask(task: Task, addr: int, size: int) -> int | None:
    """The temporary mask at ``addr`` (None for a null pointer): EINVAL when
    ``size`` is not 8, EFAULT (Linux ``set_user_sigmask``). Read on the first
    attempt only: the mask is in place on retries."""
    if not addr:
        return None
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    if task.suspend_mask is not None:
        return task.sigmask  # already applied by the first attempt
    (mask,) = struct.unpack("<Q", task.mm.copy_in(addr, 8))
    return int(mask)


def _with_mask(task: Task, mask: int | None, call: Callable[[], int]) -> int:
    """Serve ``call`` with ``mask`` as the signal mask. It stays while the call
    is parked, and after an EINTR until the handler ran (the frame keeps the
    old one); otherwise it goes back when the call ends."""
    if mask is None:
        return call()
    if task.suspend_mask is None:
        task.suspend_mask = task.sigmask
        task.sigmask = mask & ~UNBLOCKABLE
    try:
        ret = call()
    except Block:
        raise
    except BaseException:
        _restore_mask(task)
        raise
    _restore_mask(task)
    return ret


def _restore_mask(task: Task) -> None:
    if task.suspend_mask is not None:
        task.sigmask, task.suspend_mask = task.suspend_mask, None


def _write_back_timeout(task: Task, w: Wait, addr: int, timeval: bool) -> None:
    """What is left of the timeout, back into the caller's timeval or
    timespec (Linux ``poll_select_finish``; not for a zero timeout, and a
    fault is ignored)."""
    left = remaining_ns(task.kernel.timekeeper, w)
    if not addr or left is None:
        return
    left = max(left, 0)
    sec, ns = divmod(left, 10**9)
    with contextlib.suppress(SyscallError):
        task.mm.copy_out(addr, TIMESPEC.pack(sec, ns // 1000 if timeval else ns))


# poll and ppoll.


def _poll(task: Task, fds_addr: int, nfds: int, timeout_ns: int | None) -> int:
    """Linux ``do_sys_poll``: EINVAL for more fds than RLIMIT_NOFILE, EFAULT;
    each pollfd gets the events it asked for (and EPOLLERR, EPOLLHUP) that
    its file has, EPOLLNVAL for a closed fd, 0 for a negative one. Returns
    how many have events; waits up to ``timeout_ns`` (None: forever) for one."""
    if nfds > task.rlimit("RLIMIT_NOFILE"):
        raise SyscallError(errno.EINVAL)
    raw = task.mm.copy_in(fds_addr, POLLFD.size * nfds) if nfds else b""
    fds = [POLLFD.unpack_from(raw, i * POLLFD.size)[:2] for i in range(nfds)]
    w = _begin(task, timeout_ns)
    revents: list[int] = []
    host: dict[int, int] = {}
    for fd, events in fds:
        if fd < 0:
            revents.append(0)
            continue
        desc = _file(task, fd)
        if desc is None:
            revents.append(POLLNVAL)
            continue
        want = events | POLLERR | POLLHUP
        revents.append(desc.ops.readiness(desc) & want)
        for hfd, ev in desc.ops.host_waits(desc, want).items():
            host[hfd] = host.get(hfd, 0) | ev
    count = sum(1 for r in revents if r)
    if not count:
        if signals.deliverable(task):
            raise Block()  # the run loop interrupts the call: EINTR
        if timeout_ns != 0 and not _timed_out(task, w):
            _park(w, host)
    if nfds:
        task.mm.copy_out(fds_addr, b"".join(POLLFD.pack(fd, ev, r) for (fd, ev), r in zip(fds, revents, strict=True)))
    return count


@syscall("poll", "pii")
def sys_poll(task: Task, fds: int, nfds: int, timeout: int) -> int:
    """poll(2): ``timeout`` in ms, negative for none (Linux ``sys_poll``)."""
    return _poll(task, fds, nfds & 0xFFFFFFFF, _ms_ns(timeout))


@syscall("ppoll", "pippi")
def sys_ppoll(task: Task, fds: int, nfds: int, ts: int, sigmask: int, sigsetsize: int) -> int:
    """ppoll(2) (Linux ``sys_ppoll``): EINVAL, EFAULT for a bad timespec, then
    for a bad mask; what is left of the timeout is written back."""
    timeout_ns = _timespec_ns(task, ts)
    mask = _sigmask(task, sigmask, sigsetsize)

    def call() -> int:
        w = _begin(task, timeout_ns)
        n = _poll(task, fds, nfds & 0xFFFFFFFF, timeout_ns)
        if timeout_ns:
            _write_back_timeout(task, w, ts, timeval=False)
        return n

    return _with_mask(task, mask, call)


# select and pselect6.


def _select(task: Task, nfds: int, rd: int, wr: int, ex: int, timeout_ns: int | None) -> int:
    """Linux ``core_sys_select``: EINVAL for a negative ``nfds`` (fds past the
    table's size are ignored), EFAULT, EBADF when a set names a closed fd;
    each set is rewritten with the fds that are ready for it. Returns how
    many bits are set; waits up to ``timeout_ns`` (None: forever) for one."""
    n = _int32(nfds)
    if n < 0:
        raise SyscallError(errno.EINVAL)
    n = min(n, task.fdtable.limit)
    nbytes = (n + 63) // 64 * 8
    sets = [int.from_bytes(task.mm.copy_in(a, nbytes), "little") if a else 0 for a in (rd, wr, ex)]
    wanted = (sets[0] | sets[1] | sets[2]) & ((1 << n) - 1)
    fds = [fd for fd in range(n) if wanted >> fd & 1]
    for fd in fds:
        task.fdtable.get(fd)  # EBADF for a closed fd in any set (Linux max_select_fd)
    w = _begin(task, timeout_ns)
    out = [0, 0, 0]
    count = 0
    host: dict[int, int] = {}
    for fd in fds:
        desc = _file(task, fd)
        bit = 1 << fd
        want = (POLLIN_SET if sets[0] & bit else 0) | (POLLOUT_SET if sets[1] & bit else 0) | (
            POLLEX_SET if sets[2] & bit else 0
        )
        if desc is None:  # O_PATH: never ready (EPOLLNVAL is in no set)
            continue
        mask = desc.ops.readiness(desc)
        for i, kind in enumerate((POLLIN_SET, POLLOUT_SET, POLLEX_SET)):
            if mask & kind and sets[i] & bit:
                out[i] |= bit
                count += 1
        for hfd, ev in desc.ops.host_waits(desc, want).items():
            host[hfd] = host.get(hfd, 0) | ev
    if not count:
        if signals.deliverable(task):
            raise Block()  # the run loop interrupts the call: EINTR
        if timeout_ns != 0 and not _timed_out(task, w):
            _park(w, host)
    for addr, bits in zip((rd, wr, ex), out, strict=True):
        if addr:
            task.mm.copy_out(addr, bits.to_bytes(nbytes, "little"))
    return count


def _cdiv(a: int, b: int) -> tuple[int, int]:
    """C's truncating division and remainder."""
    q = abs(a) // b * (1 if a >= 0 else -1)
    return q, a - q * b


@syscall("select", "ipppp")
def sys_select(task: Task, nfds: int, rd: int, wr: int, ex: int, tv: int) -> int:
    """select(2) (Linux ``kern_select``): the timeval's microseconds may
    exceed a second; EINVAL when the time is negative. What is left of the
    timeout is written back."""
    timeout_ns = None
    if tv:
        sec, usec = struct.unpack("<qq", task.mm.copy_in(tv, 16))
        q, r = _cdiv(int(usec), 10**6)
        sec, nsec = int(sec) + q, r * 1000
        if sec < 0 or not 0 <= nsec < 10**9:
            raise SyscallError(errno.EINVAL)
        timeout_ns = sec * 10**9 + nsec
    w = _begin(task, timeout_ns)
    n = _select(task, nfds, rd, wr, ex, timeout_ns)
    if timeout_ns:
        _write_back_timeout(task, w, tv, timeval=True)
    return n


@syscall("pselect6", "ippppp")
def sys_pselect6(task: Task, nfds: int, rd: int, wr: int, ex: int, ts: int, sig: int) -> int:
    """pselect6 (Linux ``do_pselect``): a timespec timeout, written back, and
    ``sig`` pointing to {mask pointer, mask size}: EINVAL for a size other
    than 8, EFAULT."""
    timeout_ns = _timespec_ns(task, ts)
    mask = None
    if sig:
        addr, size = struct.unpack("<QQ", task.mm.copy_in(sig, 16))
        mask = _sigmask(task, addr, size)

    def call() -> int:
        w = _begin(task, timeout_ns)
        n = _select(task, nfds, rd, wr, ex, timeout_ns)
        if timeout_ns:
            _write_back_timeout(task, w, ts, timeval=False)
        return n

    return _with_mask(task, mask, call)


# epoll.


@syscall("epoll_create", "i")
def sys_epoll_create(task: Task, size: int) -> int:
    """epoll_create(2): EINVAL unless ``size`` > 0 (it is otherwise unused)."""
    if _int32(size) <= 0:
        raise SyscallError(errno.EINVAL)
    return _install(task, new_epoll(0), False)


@syscall("epoll_create1", "x")
def sys_epoll_create1(task: Task, flags: int) -> int:
    """epoll_create1(2): EINVAL for flags other than EPOLL_CLOEXEC; EMFILE."""
    desc = new_epoll(_int32(flags))
    return _install(task, desc, bool(flags & os.O_CLOEXEC))


def _install(task: Task, desc: FileDescription, cloexec: bool) -> int:
    try:
        return task.fdtable.install(desc, cloexec=cloexec)
    except SyscallError:
        desc.dec_ref()
        raise


@syscall("epoll_ctl", "iiip")
def sys_epoll_ctl(task: Task, epfd: int, op: int, fd: int, event: int) -> int:
    """epoll_ctl(2) in Linux ``do_epoll_ctl``'s order: EFAULT (the event, for
    every op but EPOLL_CTL_DEL), EBADF (either fd), EPERM (a file that cannot
    be polled: regular files, directories), EINVAL (``epfd`` is not an epoll
    or is ``fd`` itself; EPOLLEXCLUSIVE with EPOLL_CTL_MOD, on an epoll, or
    with events other than EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLWAKEUP
    and EPOLLET), ELOOP (an epoll inside another making a loop or nesting too
    deep), then EEXIST (ADD of a watched fd), ENOENT (MOD or DEL of one not
    watched), EINVAL (MOD of an EPOLLEXCLUSIVE item, an unknown op)."""
    op = _int32(op)
    fd = _int32(fd)
    events = data = 0
    if op != EPOLL_CTL_DEL:
        events, data = EPOLL_EVENT.unpack(task.mm.copy_in(event, EPOLL_EVENT.size))
    ep_desc = _file_or_ebadf(task, epfd)
    target = _file_or_ebadf(task, fd)
    if not target.ops.pollable:
        raise SyscallError(errno.EPERM)
    ep = ep_desc.ops
    if ep_desc is target or not isinstance(ep, EpollOps):
        raise SyscallError(errno.EINVAL)
    if op != EPOLL_CTL_DEL and events & EPOLLEXCLUSIVE:
        if op == EPOLL_CTL_MOD:
            raise SyscallError(errno.EINVAL)
        if op == EPOLL_CTL_ADD and (isinstance(target.ops, EpollOps) or events & ~EPOLLEXCLUSIVE_OK_BITS):
            raise SyscallError(errno.EINVAL)
    if op == EPOLL_CTL_ADD and isinstance(target.ops, EpollOps) and ep.would_loop(target.ops):
        raise SyscallError(errno.ELOOP)
    item = ep.find(target, fd)
    if op == EPOLL_CTL_ADD:
        if item is not None:
            raise SyscallError(errno.EEXIST)
        ep.insert(target, fd, events, data)
    elif op == EPOLL_CTL_DEL:
        if item is None:
            raise SyscallError(errno.ENOENT)
        ep.remove(item)
    elif op == EPOLL_CTL_MOD:
        if item is None:
            raise SyscallError(errno.ENOENT)
        if item.events & EPOLLEXCLUSIVE:
            raise SyscallError(errno.EINVAL)
        ep.modify(item, events, data)
    else:
        raise SyscallError(errno.EINVAL)
    return 0


def _epoll_wait(task: Task, epfd: int, events: int, maxevents: int, timeout_ns: int | None) -> int:
    """Linux ``do_epoll_wait`` and ``ep_poll``: EINVAL for ``maxevents`` <= 0
    or too large, EBADF, EINVAL when ``epfd`` is not an epoll; then up to
    ``maxevents`` events, waiting up to ``timeout_ns`` (None: forever) for
    one; EINTR when a signal comes first; EFAULT when they cannot be stored."""
    maxevents = _int32(maxevents)
    if maxevents <= 0 or maxevents > EP_MAX_EVENTS:
        raise SyscallError(errno.EINVAL)
    desc = _file_or_ebadf(task, epfd)
    ep = desc.ops
    if not isinstance(ep, EpollOps):
        raise SyscallError(errno.EINVAL)
    w = _begin(task, timeout_ns)
    ready = ep.collect(maxevents)
    if ready:
        task.mm.copy_out(events, b"".join(EPOLL_EVENT.pack(ev, data) for ev, data in ready))
        return len(ready)
    if timeout_ns == 0 or _timed_out(task, w):
        return 0
    if signals.deliverable(task):
        raise Block()  # the run loop interrupts the call: EINTR
    _park(w, ep.host_waits(desc, 0))


@syscall("epoll_wait", "ipii")
def sys_epoll_wait(task: Task, epfd: int, events: int, maxevents: int, timeout: int) -> int:
    """epoll_wait(2): ``timeout`` in ms, negative for none."""
    return _epoll_wait(task, epfd, events, maxevents, _ms_ns(timeout))


@syscall("epoll_pwait", "ipiipi")
def sys_epoll_pwait(task: Task, epfd: int, events: int, maxevents: int, timeout: int, sigmask: int,
                    sigsetsize: int) -> int:
    """epoll_pwait(2): epoll_wait with a temporary signal mask (EINVAL for a
    size other than 8, EFAULT, before anything else)."""
    mask = _sigmask(task, sigmask, sigsetsize)
    return _with_mask(task, mask, lambda: _epoll_wait(task, epfd, events, maxevents, _ms_ns(timeout)))


@syscall("epoll_pwait2", "ipippi")
def sys_epoll_pwait2(task: Task, epfd: int, events: int, maxevents: int, ts: int, sigmask: int,
                     sigsetsize: int) -> int:
    """epoll_pwait2(2): a timespec timeout (null: none; EFAULT, EINVAL), then
    as epoll_pwait."""
    timeout_ns = _timespec_ns(task, ts)
    mask = _sigmask(task, sigmask, sigsetsize)
    return _with_mask(task, mask, lambda: _epoll_wait(task, epfd, events, maxevents, timeout_ns))


# eventfd.


@syscall("eventfd", "i")
def sys_eventfd(task: Task, initval: int) -> int:
    """eventfd(2) without flags."""
    return _install(task, new_eventfd(initval, 0), False)


@syscall("eventfd2", "ix")
def sys_eventfd2(task: Task, initval: int, flags: int) -> int:
    """eventfd2: EINVAL for flags other than EFD_SEMAPHORE, EFD_NONBLOCK and
    EFD_CLOEXEC; EMFILE."""
    flags = _int32(flags)
    return _install(task, new_eventfd(initval, flags), bool(flags & os.O_CLOEXEC))

