"""Signal system calls: dispositions, masks, sending and waiting (Linux
``kernel/signal.c``; gVisor ``syscalls/linux/sys_signal.go``). Delivery is in
:mod:`..kernel.signals`."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..kernel import signals
from ..kernel.task import SignalAction
from . import Block, handler_pending, syscall

if TYPE_CHECKING:
    from ..kernel.task import Task, ThreadGroup

SIGKILL, SIGSTOP = 9, 19
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask (kernel's struct sigaction)
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
SI_TKILL = -6
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
            # POSIX: a pending signal set to be ignored is discarded, in every thread.
            holders: list[Task | ThreadGroup] = [task.tg, *task.tg.live_tasks]
            for holder in holders:
                holder.pending &= ~(1 << (sig - 1))
                holder.siginfo.pop(sig, None)
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
    live = [t.tg for t in kernel.tasks.values() if t is t.tg.leader and t.tg.exit_status is None]
    if pid > 0:
        targets = [tg for tg in live if tg.tgid == pid]
    elif pid == 0:
        targets = [tg for tg in live if tg.pgid == task.pgid]
    elif pid == -1:
        targets = [tg for tg in live if tg.tgid != 1 and tg is not task.tg]
    else:
        targets = [tg for tg in live if tg.pgid == -pid]
    if not targets:
        raise SyscallError(errno.ESRCH)
    if sig:
        info = _user_info(sig, task)
        for tg in targets:
            signals.send_group(tg, sig, info)
    return 0


@syscall("tgkill", "iii")
def sys_tgkill(task: Task, tgid: int, tid: int, sig: int) -> int:
    target = _thread(task, tgid, tid, sig)
    if sig:
        signals.send(target, sig, _user_info(sig, task, code=SI_TKILL))
    return 0


def _thread(task: Task, tgid: int, tid: int, sig: int) -> Task:
    """The live thread ``tid`` of process ``tgid`` (tgkill,
    rt_tgsigqueueinfo): EINVAL for a bad signal or id, ESRCH for none."""
    tgid, tid = _int32(tgid), _int32(tid)
    if not 0 <= sig <= 64 or tgid <= 0 or tid <= 0:
        raise SyscallError(errno.EINVAL)
    target = task.kernel.tasks.get(tid)
    if target is None or target.tgid != tgid or target.exit_status is not None:
        raise SyscallError(errno.ESRCH)
    return target


@syscall("tkill", "ii")
def sys_tkill(task: Task, tid: int, sig: int) -> int:
    tid = _int32(tid)
    if not 0 <= sig <= 64 or tid <= 0:
        raise SyscallError(errno.EINVAL)
    target = task.kernel.tasks.get(tid)
    if target is None or target.exit_status is not None:
        raise SyscallError(errno.ESRCH)
    if sig:
        signals.send(target, sig, _user_info(sig, task, code=SI_TKILL))
    return 0


def _user_info(sig: int, sender: Task, code: int = signals.SI_USER) -> bytes:
    """The siginfo of a signal sent by ``sender`` (its PID and real uid)."""
    return signals.siginfo(sig, code, pid=sender.tgid, uid=sender.fs.creds.uid)


def _queued_info(task: Task, target_tgid: int, sig: int, addr: int) -> bytes:
    """rt_sigqueueinfo's siginfo from the caller; EPERM when it claims to come
    from the kernel or kill() (si_code >= 0, or SI_TKILL) and goes to another
    process (Linux ``do_rt_sigqueueinfo``)."""
    raw = bytearray(task.mm.copy_in(addr, 128))
    (code,) = struct.unpack_from("<i", raw, 8)
    if (code >= 0 or code == SI_TKILL) and target_tgid != task.tgid:
        raise SyscallError(errno.EPERM)
    struct.pack_into("<i", raw, 0, sig)
    return bytes(raw)


@syscall("rt_sigqueueinfo", "iip")
def sys_rt_sigqueueinfo(task: Task, tgid: int, sig: int, info: int) -> int:
    tgid = _int32(tgid)
    if not 0 <= sig <= 64:
        raise SyscallError(errno.EINVAL)
    tg = task.kernel.thread_group(tgid) if tgid > 0 else None
    if tg is None or tg.exit_status is not None:
        raise SyscallError(errno.ESRCH)
    data = _queued_info(task, tgid, sig, info)
    if sig:
        signals.send_group(tg, sig, data)
    return 0


@syscall("rt_tgsigqueueinfo", "iiip")
def sys_rt_tgsigqueueinfo(task: Task, tgid: int, tid: int, sig: int, info: int) -> int:
    target = _thread(task, tgid, tid, sig)
    data = _queued_info(task, target.tgid, sig, info)
    if sig:
        signals.send(target, sig, data)
    return 0


class SigWait:
    """rt_sigtimedwait in progress: the waited-for signals are unblocked
    while it waits (Linux sets ``real_blocked``), so that one of them wakes
    it; ``cancel`` puts the mask back."""

    def __init__(self, task: Task, mask: int, saved: int) -> None:
        self.task, self.mask, self.saved = task, mask, saved

    def cancel(self) -> None:
        self.task.sigmask = self.saved
        if self.task.waiter is self:
            self.task.waiter = None


@syscall("rt_sigtimedwait", "pppi")
def sys_rt_sigtimedwait(task: Task, set_addr: int, info: int, ts: int, sigsetsize: int) -> int:
    """Take one pending signal of the set at ``set_addr`` without running its
    handler; returns its number and fills ``info``. EAGAIN when ``ts``
    passes first, EINTR when another signal's handler runs, EINVAL for a bad
    set size or timeout."""
    if sigsetsize != 8:
        raise SyscallError(errno.EINVAL)
    w = task.waiter
    if isinstance(w, SigWait):
        wanted = w.mask
    else:
        (wanted,) = struct.unpack("<Q", task.mm.copy_in(set_addr, 8))
        wanted &= ~UNBLOCKABLE
        w = None
    ready = (task.pending | task.tg.pending) & wanted
    if ready:
        if w is not None:
            w.cancel()
        task.wake_at = None
        sig = (ready & -ready).bit_length()
        data = signals.dequeue(task, sig)
        if info:
            task.mm.copy_out(info, data)
        return sig
    tk = task.kernel.timekeeper
    if w is None:
        deadline = None
        if ts:
            sec, nsec = struct.unpack("<qq", task.mm.copy_in(ts, 16))
            if sec < 0 or not 0 <= nsec < 10**9:
                raise SyscallError(errno.EINVAL)
            deadline = tk.monotonic() + sec * 10**9 + nsec
        if deadline is not None and deadline <= tk.monotonic():
            raise SyscallError(errno.EAGAIN)
        task.waiter = SigWait(task, wanted, task.sigmask)
        task.sigmask &= ~wanted
        task.wake_at = (1, deadline) if deadline is not None else None
        raise Block()
    if task.wake_at is not None and task.wake_at[1] <= tk.monotonic():
        w.cancel()
        task.wake_at = None
        raise SyscallError(errno.EAGAIN)
    raise Block()


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
    task.mm.copy_out(addr, struct.pack("<Q", (task.pending | task.tg.pending) & task.sigmask))
    return 0


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v
