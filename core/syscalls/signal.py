"""Signal dispositions and masks (Linux ``kernel/signal.c``). Delivery to
handlers on an rt_sigframe comes with the processes work; until then a
signal's default action applies."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..kernel import signals
from ..kernel.task import SignalAction
from . import Block, handler_pending, syscall

if TYPE_CHECKING:
    from ..kernel.task import Task

SIGKILL, SIGSTOP = 9, 19
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask (kernel's struct sigaction)
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
SS_AUTODISARM, MINSIGSTKSZ = 1 << 31, 2048


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
        if signals.is_ignored(task, sig):
            task.pending &= ~(1 << (sig - 1))  # POSIX: a pending signal set to be ignored is discarded
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
    """sigaltstack(2) (Linux ``do_sigaltstack``): the old stack's flags are
    SS_ONSTACK while the task runs on it and SS_DISABLE when there is none;
    the stack in use cannot be changed (EPERM); disabling forgets it."""
    sp, flags, size = task.altstack
    on_stack = not flags & (signals.SS_DISABLE | SS_AUTODISARM) and sp < task.regs.rsp <= sp + size
    if old:
        state = signals.SS_DISABLE if flags & signals.SS_DISABLE else signals.SS_ONSTACK if on_stack else 0
        task.mm.copy_out(old, struct.pack("<QIiQ", sp, state | (flags & SS_AUTODISARM), 0, size))
    if ss:
        sp, flags, _, size = struct.unpack("<QIiQ", task.mm.copy_in(ss, 24))
        if on_stack:
            raise SyscallError(errno.EPERM)
        mode = flags & ~SS_AUTODISARM
        if mode not in (0, signals.SS_ONSTACK, signals.SS_DISABLE):
            raise SyscallError(errno.EINVAL)
        if mode == signals.SS_DISABLE:
            sp = size = 0
        elif size < MINSIGSTKSZ:
            raise SyscallError(errno.ENOMEM)
        task.altstack = (sp, flags & (signals.SS_DISABLE | SS_AUTODISARM), size)
    return 0


@syscall("kill", "ii")
def sys_kill(task: Task, pid: int, sig: int) -> int:
    """kill(2) to a process, a process group (pid 0 or < -1) or all (-1);
    ESRCH when none matches, EINVAL for a bad signal."""
    pid = _int32(pid)
    if not 0 <= sig <= 64:
        raise SyscallError(errno.EINVAL)
    kernel = task.kernel
    live = [t for t in kernel.tasks.values() if t.exit_status is None]
    if pid > 0:
        targets = [t for t in live if t.tgid == pid]
    elif pid == 0:
        targets = [t for t in live if t.pgid == task.pgid]
    elif pid == -1:
        targets = [t for t in live if t.tid != 1 or t is task]
    else:
        targets = [t for t in live if t.pgid == -pid]
    if not targets:
        raise SyscallError(errno.ESRCH)
    if sig:
        for t in targets:
            _signal(t, sig, task)
    return 0


@syscall("tgkill", "iii")
def sys_tgkill(task: Task, tgid: int, tid: int, sig: int) -> int:
    tgid, tid = _int32(tgid), _int32(tid)
    if not 0 <= sig <= 64 or tgid <= 0 or tid <= 0:
        raise SyscallError(errno.EINVAL)
    target = task.kernel.tasks.get(tid)
    if target is None or target.tgid != tgid or target.exit_status is not None:
        raise SyscallError(errno.ESRCH)
    if sig:
        _signal(target, sig, task)
    return 0


@syscall("tkill", "ii")
def sys_tkill(task: Task, tid: int, sig: int) -> int:
    tid = _int32(tid)
    if not 0 <= sig <= 64 or tid <= 0:
        raise SyscallError(errno.EINVAL)
    target = task.kernel.tasks.get(tid)
    if target is None or target.exit_status is not None:
        raise SyscallError(errno.ESRCH)
    if sig:
        _signal(target, sig, task)
    return 0


def _signal(task: Task, sig: int, sender: Task) -> None:
    """Send ``sig`` from ``sender`` (si_code SI_USER with its pid and uid); the
    disposition applies on delivery."""
    signals.send(task, sig, signals.siginfo(sig, signals.SI_USER, pid=sender.tgid, uid=sender.fs.creds.uid))


@syscall("rt_sigreturn")
def sys_rt_sigreturn(task: Task) -> int:
    return signals.sigreturn(task)


@syscall("rt_sigsuspend", "pi")
def sys_rt_sigsuspend(task: Task, addr: int, sigsetsize: int) -> int:
    """Wait for a signal with the mask at ``addr``; EINTR once a handler ran,
    and the old mask is back after it (Linux ``sigsuspend``)."""
    if sigsetsize != 8:
        raise SyscallError(errno.EINVAL)
    if task.suspend_mask is None:
        (mask,) = struct.unpack("<Q", task.mm.copy_in(addr, 8))
        task.suspend_mask = task.sigmask
        task.sigmask = mask & ~UNBLOCKABLE
    if handler_pending(task):
        raise SyscallError(errno.EINTR)  # never restarted, even with SA_RESTART (-ERESTARTNOHAND)
    raise Block()


@syscall("pause")
def sys_pause(task: Task) -> int:
    """Wait for a signal; EINTR once a handler ran."""
    if handler_pending(task):
        raise SyscallError(errno.EINTR)  # never restarted, even with SA_RESTART (-ERESTARTNOHAND)
    raise Block()


@syscall("rt_sigpending", "pi")
def sys_rt_sigpending(task: Task, addr: int, sigsetsize: int) -> int:
    if sigsetsize != 8:
        raise SyscallError(errno.EINVAL)
    task.mm.copy_out(addr, struct.pack("<Q", task.pending & task.sigmask))
    return 0


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v
