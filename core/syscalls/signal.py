"""Signal dispositions and masks (Linux ``kernel/signal.c``). Delivery to
handlers on an rt_sigframe comes with the processes work; until then a
signal's default action applies."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..kernel.task import SignalAction
from . import syscall

if TYPE_CHECKING:
    from ..kernel.task import Task

SIGKILL, SIGSTOP = 9, 19
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask (kernel's struct sigaction)
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))


@syscall("rt_sigaction", "ippi")
def sys_rt_sigaction(task: Task, sig: int, act: int, oldact: int, sigsetsize: int) -> int:
    if sigsetsize != 8 or not 1 <= sig <= 64:
        raise SyscallError(errno.EINVAL)
    old = task.actions.get(sig, SignalAction())
    if act:
        if sig in (SIGKILL, SIGSTOP):
            raise SyscallError(errno.EINVAL)
        handler, flags, restorer, mask = SIGACTION.unpack(task.mm.copy_in(act, SIGACTION.size))
        task.actions[sig] = SignalAction(handler, flags, restorer, mask & ~UNBLOCKABLE)
    if oldact:
        task.mm.copy_out(oldact, SIGACTION.pack(old.handler, old.flags, old.restorer, old.mask))
    return 0


@syscall("rt_sigprocmask", "ippi")
def sys_rt_sigprocmask(task: Task, how: int, set_addr: int, old_addr: int, sigsetsize: int) -> int:
    if sigsetsize != 8:
        raise SyscallError(errno.EINVAL)
    old = task.sigmask
    if set_addr:
        (mask,) = struct.unpack("<Q", task.mm.copy_in(set_addr, 8))
        if how == SIG_BLOCK:
            task.sigmask |= mask
        elif how == SIG_UNBLOCK:
            task.sigmask &= ~mask
        elif how == SIG_SETMASK:
            task.sigmask = mask
        else:
            raise SyscallError(errno.EINVAL)
        task.sigmask &= ~UNBLOCKABLE
    if old_addr:
        task.mm.copy_out(old_addr, struct.pack("<Q", old))
    return 0


@syscall("sigaltstack", "pp")
def sys_sigaltstack(task: Task, ss: int, old: int) -> int:
    if old:
        sp, flags, size = task.altstack
        task.mm.copy_out(old, struct.pack("<QiiQ", sp, flags, 0, size))
    if ss:
        sp, flags, _, size = struct.unpack("<QiiQ", task.mm.copy_in(ss, 24))
        if flags & ~(2 | (1 << 31)):
            raise SyscallError(errno.EINVAL)
        if not flags & 2 and size < 2048:
            raise SyscallError(errno.ENOMEM)
        task.altstack = (sp, flags, size)
    return 0


@syscall("kill", "ii")
def sys_kill(task: Task, pid: int, sig: int) -> int:
    pid = pid - (1 << 64) if pid >> 63 else pid
    if not 0 <= sig <= 64:
        raise SyscallError(errno.EINVAL)
    if pid not in (0, -1, task.tgid, -task.pgid):
        raise SyscallError(errno.ESRCH)
    if sig:
        _self_signal(task, sig)
    return 0


@syscall("tgkill", "iii")
def sys_tgkill(task: Task, tgid: int, tid: int, sig: int) -> int:
    if not 0 <= sig <= 64 or tgid >> 31 or tid >> 31 or tgid == 0 or tid == 0:
        raise SyscallError(errno.EINVAL)
    if tid != task.tid or tgid != task.tgid:
        raise SyscallError(errno.ESRCH)
    if sig:
        _self_signal(task, sig)
    return 0


@syscall("tkill", "ii")
def sys_tkill(task: Task, tid: int, sig: int) -> int:
    if not 0 <= sig <= 64 or tid >> 31 or tid == 0:
        raise SyscallError(errno.EINVAL)
    if tid != task.tid:
        raise SyscallError(errno.ESRCH)
    if sig:
        _self_signal(task, sig)
    return 0


def _self_signal(task: Task, sig: int) -> None:
    """A signal a task sends itself. Ignored signals and those whose default
    is to ignore are dropped; a caught signal cannot be delivered to its handler
    yet, which we say plainly rather than pretend."""
    action = task.actions.get(sig, SignalAction())
    if action.handler == 1 or (action.handler == 0 and sig in (17, 23, 28)):  # SIG_IGN; CHLD, URG, WINCH
        return
    if action.handler not in (0, 1):
        raise SyscallError(errno.ENOSYS, "signal handlers are not delivered yet")
    task.kernel.pending_kill = sig
