"""Futexes (Linux ``kernel/futex/*.c``, futex(2); gVisor ``kernel/futex``).

A futex is a 32-bit word in application memory that tasks wait on and wake.
Waiters are queued by the word's key (:meth:`MemoryManager.futex_key`):
private futexes by address space and address, futexes in shared mappings by
their place in the memory file, so that processes meet there. A waiting task
parks (the kernel's ``Block``); a wake marks its waiter and asks the kernel to
serve the parked call again, which then returns 0.
"""

from __future__ import annotations

import contextlib
import errno
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import SyscallError

if TYPE_CHECKING:
    from .task import Task

FUTEX_WAITERS, FUTEX_OWNER_DIED, FUTEX_TID_MASK = 0x80000000, 0x40000000, 0x3FFFFFFF
BITSET_MATCH_ANY = 0xFFFFFFFF
#: How many robust-list entries are followed at most (Linux ``ROBUST_LIST_LIMIT``).
ROBUST_LIST_LIMIT = 2048


@dataclass(eq=False)
class Waiter:
    """One task waiting on the futex word with ``key``, for wakes whose bitset
    meets ``bitset``."""

    task: Task
    key: tuple[object, int]
    bitset: int
    manager: FutexManager
    woken: bool = False

    def cancel(self) -> None:
        """Leave the queue (a signal interrupted the wait, or it timed out)."""
        self.manager.dequeue(self)
        if self.task.waiter is self:
            self.task.waiter = None


@dataclass
class FutexManager:
    """The kernel's futex queues, by key, in arrival order."""

    queues: dict[tuple[object, int], list[Waiter]] = field(default_factory=dict)

    def enqueue(self, task: Task, key: tuple[object, int], bitset: int) -> Waiter:
        w = Waiter(task, key, bitset, self)
        self.queues.setdefault(key, []).append(w)
        return w

    def dequeue(self, w: Waiter) -> None:
        q = self.queues.get(w.key)
        if q is not None and w in q:
            q.remove(w)
            if not q:
                del self.queues[w.key]

    def wake(self, key: tuple[object, int], n: int, bitset: int = BITSET_MATCH_ANY) -> int:
        """Wake up to ``n`` waiters on ``key`` whose bitset meets ``bitset``;
        returns how many (Linux ``futex_wake``)."""
        q = self.queues.get(key)
        if not q or n <= 0:
            return 0
        woken = 0
        for w in list(q):
            if woken >= n:
                break
            if not w.bitset & bitset:
                continue
            q.remove(w)
            w.woken = True
            w.task.kernel.wake(w.task)
            woken += 1
        if not q:
            self.queues.pop(key, None)
        return woken

    def requeue(self, key: tuple[object, int], key2: tuple[object, int], wake: int, move: int) -> int:
        """Wake up to ``wake`` waiters on ``key`` and move up to ``move`` more to
        ``key2``; returns how many were woken plus moved (Linux
        ``futex_requeue``)."""
        done = self.wake(key, wake)
        q = self.queues.get(key)
        if q is None or move <= 0:
            return done
        moving, rest = q[:move], q[move:]
        if rest:
            self.queues[key] = rest
        else:
            del self.queues[key]
        for w in moving:
            w.key = key2
        if moving:
            self.queues.setdefault(key2, []).extend(moving)
        return done + len(moving)

    def waiters(self, key: tuple[object, int]) -> int:
        return len(self.queues.get(key, ()))


def load_word(task: Task, addr: int) -> int:
    """The futex word at ``addr``; EINVAL if misaligned, EFAULT if unreadable."""
    if addr % 4:
        raise SyscallError(errno.EINVAL)
    return int(struct.unpack("<I", task.mm.copy_in(addr, 4))[0])


def release_at_exit(task: Task) -> None:
    """What a thread's exit does to futexes (Linux ``mm_release`` and
    ``exit_robust_list``): every robust futex it holds gets FUTEX_OWNER_DIED
    and one waiter woken; then, when the address space lives on in other
    tasks, the word at ``clear_child_tid`` is zeroed and one waiter woken
    (what pthread_join waits for). Unreadable memory ends the walk silently,
    as on Linux."""
    manager = task.kernel.futexes
    head, _ = task.robust_list
    if head:
        with contextlib.suppress(SyscallError):
            _walk_robust_list(task, manager, head)
    addr = task.clear_child_tid
    if addr and task.mm.users > 1:
        task.clear_child_tid = 0
        try:
            task.mm.copy_out(addr, b"\0\0\0\0")
            manager.wake(task.mm.futex_key(addr, False), 1)
        except SyscallError:
            pass


def _walk_robust_list(task: Task, manager: FutexManager, head: int) -> None:
    entry, offset, pending = struct.unpack("<QqQ", task.mm.copy_in(head, 24))
    for _ in range(ROBUST_LIST_LIMIT):
        if entry == head:
            break
        nxt = struct.unpack("<Q", task.mm.copy_in(entry & ~1, 8))[0]
        if entry != pending:
            _futex_death(task, manager, (entry & ~1) + offset)
        entry = nxt
    if pending:
        _futex_death(task, manager, (pending & ~1) + offset)


def _futex_death(task: Task, manager: FutexManager, addr: int) -> None:
    """Linux ``handle_futex_death``: only words the dying thread owns."""
    if addr % 4:
        return
    val = load_word(task, addr)
    if val & FUTEX_TID_MASK != task.tid:
        return
    task.mm.copy_out(addr, struct.pack("<I", (val & FUTEX_WAITERS) | FUTEX_OWNER_DIED))
    if val & FUTEX_WAITERS:
        manager.wake(task.mm.futex_key(addr, False), 1)
