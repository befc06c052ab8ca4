"""futex(2) (Linux ``kernel/futex/syscalls.c``, ``waitwake.c``, ``requeue.c``;
gVisor ``syscalls/linux/sys_futex.go``). The queues are in
:mod:`..kernel.futex`."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..kernel.futex import BITSET_MATCH_ANY, Waiter, load_word
from ..kernel.time import CLOCK_MONOTONIC, CLOCK_REALTIME
from . import Block, syscall

if TYPE_CHECKING:
    from ..kernel.task import Task

FUTEX_WAIT, FUTEX_WAKE, FUTEX_FD, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP = 0, 1, 2, 3, 4, 5
FUTEX_LOCK_PI, FUTEX_UNLOCK_PI, FUTEX_TRYLOCK_PI, FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 6, 7, 8, 9, 10
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256
INT_MAX = 0x7FFFFFFF


def _wait(task: Task, addr: int, val: int, deadline: tuple[int, int] | None, bitset: int, private: bool) -> int:
    """FUTEX_WAIT: park while the word at ``addr`` is ``val`` (EAGAIN if it
    is not at the first try) until a wake (0), the deadline (ETIMEDOUT) or a
    signal (EINTR, or a restart under SA_RESTART)."""
    w = task.waiter
    if isinstance(w, Waiter):
        if w.woken:
            task.waiter = None
            task.wake_at = None
            return 0
        if task.wake_at is not None and task.kernel.timekeeper.now(task.wake_at[0]) >= task.wake_at[1]:
            w.cancel()
            task.wake_at = None
            raise SyscallError(errno.ETIMEDOUT)
        raise Block()
    if not bitset:
        raise SyscallError(errno.EINVAL)
    key = task.mm.futex_key(addr, private)
    if load_word(task, addr) != val:
        raise SyscallError(errno.EAGAIN)
    if deadline is not None and task.kernel.timekeeper.now(deadline[0]) >= deadline[1]:
        raise SyscallError(errno.ETIMEDOUT)
    task.waiter = task.kernel.futexes.enqueue(task, key, bitset)
    task.wake_at = deadline
    raise Block()


def _timeout(task: Task, addr: int, clock: int, absolute: bool) -> tuple[int, int] | None:
    """The wait's deadline as (clock, ns): FUTEX_WAIT's timeout is relative
    (CLOCK_MONOTONIC), FUTEX_WAIT_BITSET's absolute on ``clock``."""
    if not addr:
        return None
    sec, nsec = struct.unpack("<qq", task.mm.copy_in(addr, 16))
    if sec < 0 or not 0 <= nsec < 10**9:
        raise SyscallError(errno.EINVAL)
    ns = sec * 10**9 + nsec
    tk = task.kernel.timekeeper
    return (clock, ns) if absolute else (clock, tk.now(clock) + ns)


def _wake_op(task: Task, addr: int, n: int, addr2: int, n2: int, op: int, private: bool) -> int:
    """FUTEX_WAKE_OP: *addr2 = *addr2 OP oparg; wake ``n`` at addr and, if the
    old *addr2 CMP cmparg, ``n2`` at addr2."""
    kind, cmp = (op >> 28) & 7, (op >> 24) & 15
    oparg, cmparg = (op >> 12) & 0xFFF, op & 0xFFF
    if op >> 31:
        oparg = 1 << oparg
    if oparg & 0x800:
        oparg -= 0x1000
    if cmparg & 0x800:
        cmparg -= 0x1000
    old = load_word(task, addr2)
    if kind > 4:
        raise SyscallError(errno.ENOSYS)
    new = (oparg, old + oparg, old | oparg, old & ~oparg, old ^ oparg)[kind]
    task.mm.copy_out(addr2, struct.pack("<I", new & 0xFFFFFFFF))
    signed = old - (1 << 32) if old >> 31 else old
    tests = {0: signed == cmparg, 1: signed != cmparg, 2: signed < cmparg, 3: signed <= cmparg,
             4: signed > cmparg, 5: signed >= cmparg}
    if cmp not in tests:
        raise SyscallError(errno.ENOSYS)
    futexes = task.kernel.futexes
    done = futexes.wake(task.mm.futex_key(addr, private), n)
    if tests[cmp]:
        done += futexes.wake(task.mm.futex_key(addr2, private), n2)
    return done


@syscall("futex", "pixppx")
def sys_futex(task: Task, addr: int, op: int, val: int, timeout: int, addr2: int, val3: int) -> int:
    """futex(2): WAIT, WAKE, REQUEUE, CMP_REQUEUE, WAKE_OP, WAIT_BITSET and
    WAKE_BITSET, private or shared. The priority-inheritance operations are
    not implemented (ENOSYS); FUTEX_FD was removed from Linux (ENOSYS)."""
    cmd = op & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
    private = bool(op & FUTEX_PRIVATE_FLAG)
    clock = CLOCK_REALTIME if op & FUTEX_CLOCK_REALTIME else CLOCK_MONOTONIC
    val &= 0xFFFFFFFF
    val3 &= 0xFFFFFFFF
    futexes = task.kernel.futexes
    if op & FUTEX_CLOCK_REALTIME and cmd not in (FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_LOCK_PI):
        raise SyscallError(errno.ENOSYS)
    if cmd == FUTEX_WAIT:
        resumed = isinstance(task.waiter, Waiter)
        deadline = None if resumed else _timeout(task, timeout, clock, absolute=False)
        return _wait(task, addr, val, deadline, BITSET_MATCH_ANY, private)
    if cmd == FUTEX_WAIT_BITSET:
        resumed = isinstance(task.waiter, Waiter)
        deadline = None if resumed else _timeout(task, timeout, clock, absolute=True)
        return _wait(task, addr, val, deadline, val3, private)
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = BITSET_MATCH_ANY if cmd == FUTEX_WAKE else val3
        if not bitset:
            raise SyscallError(errno.EINVAL)
        if addr % 4:
            raise SyscallError(errno.EINVAL)
        return futexes.wake(task.mm.futex_key(addr, private), min(val, INT_MAX), bitset)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        nr_requeue = timeout & 0xFFFFFFFF  # the timeout argument carries val2
        if val >> 31 or nr_requeue >> 31:
            raise SyscallError(errno.EINVAL)
        key, key2 = task.mm.futex_key(addr, private), task.mm.futex_key(addr2, private)
        if cmd == FUTEX_CMP_REQUEUE and load_word(task, addr) != val3:
            raise SyscallError(errno.EAGAIN)
        if addr2 % 4:
            raise SyscallError(errno.EINVAL)
        return futexes.requeue(key, key2, val, nr_requeue)
    if cmd == FUTEX_WAKE_OP:
        return _wake_op(task, addr, val, addr2, timeout & 0xFFFFFFFF, val3, private)
    raise SyscallError(errno.ENOSYS)
