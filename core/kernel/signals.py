"""Signal delivery (Linux ``kernel/signal.c``, ``arch/x86/kernel/signal.c``;
gVisor ``kernel/task_signals.go``, ``arch/signal_amd64.go``).

A signal sent to a task is pending until the task is about to run with it
unblocked. Then its disposition applies: ignored, the default action
(terminate, dump core, stop, continue, ignore), or a handler, which runs on a
``rt_sigframe`` pushed on the task's stack (or its alternate stack with
SA_ONSTACK): the saved registers and FP state, the signal mask and a
``siginfo``. ``rt_sigreturn`` restores them. A task parked in a system call
is woken: the call fails with EINTR, or is restarted after the handler when
the handler has SA_RESTART.
"""

from __future__ import annotations

import errno
import signal as sig_names
import struct
from typing import TYPE_CHECKING

from ..arch import USER_CS, USER_DS, XSAVE_SIZE, default_xsave
from ..errors import SyscallError
from .task import SignalAction

if TYPE_CHECKING:
    from .task import Task, ThreadGroup

SIGKILL, SIGSTOP, SIGCHLD, SIGCONT = 9, 19, 17, 18
SA_NOCLDSTOP, SA_NOCLDWAIT, SA_SIGINFO, SA_ONSTACK = 0x1, 0x2, 0x4, 0x08000000
SA_RESTART, SA_NODEFER, SA_RESETHAND, SA_RESTORER = 0x10000000, 0x40000000, 0x80000000, 0x04000000
SS_ONSTACK, SS_DISABLE = 1, 2
SI_USER, SI_KERNEL = 0, 0x80

#: Default action "ignore" (Linux ``SIG_KERNEL_IGNORE_MASK``), and "stop".
DEFAULT_IGNORE = {SIGCHLD, SIGCONT, int(sig_names.SIGURG), int(sig_names.SIGWINCH)}
DEFAULT_STOP = {SIGSTOP, int(sig_names.SIGTSTP), int(sig_names.SIGTTIN), int(sig_names.SIGTTOU)}
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))

#: struct rt_sigframe layout on x86-64: pretcode, ucontext (uc_flags, uc_link,
#: uc_stack, uc_mcontext, uc_sigmask), siginfo.
UC_OFFSET, STACK_OFFSET, MCONTEXT_OFFSET, SIGMASK_OFFSET, SIGINFO_OFFSET = 8, 24, 48, 304, 312
FRAME_SIZE = 440
#: sigcontext's general registers, in order, as named in Registers.
SIGCONTEXT_REGS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx",
                   "rax", "rcx", "rsp", "rip", "eflags")
UC_FP_XSTATE, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS = 1, 2, 4
#: EFLAGS bits user code may change (Linux FIX_EFLAGS).
FIX_EFLAGS = 0x40DD5
#: The restart codes a system call returns when a signal interrupts it.
ERESTARTSYS = 512


def action(task: Task, sig: int) -> SignalAction:
    return task.actions.get(sig, SignalAction())


def fatal(task: Task, sig: int) -> bool:
    """Whether ``sig``'s disposition for ``task`` ends the process (Linux
    ``sig_fatal``: the default action, and it is neither ignore nor stop)."""
    return action(task, sig).handler == 0 and sig not in DEFAULT_IGNORE and sig not in DEFAULT_STOP


def is_ignored(task: Task, sig: int) -> bool:
    """Whether ``sig`` would be dropped on arrival (SIG_IGN, or a default of ignore)."""
    handler = action(task, sig).handler
    return handler == 1 or (handler == 0 and sig in DEFAULT_IGNORE)


STOP_MASK = sum(1 << (s - 1) for s in DEFAULT_STOP)
CLD_STOPPED, CLD_CONTINUED = 5, 6


def send(task: Task, sig: int, info: bytes | None = None) -> None:
    """Make ``sig`` pending for the one thread ``task`` (tgkill, a fault;
    Linux ``send_signal`` to a thread). ``info`` is the siginfo (128 bytes)."""
    if task.exit_status is not None or not 1 <= sig <= 64:
        return
    if not _prepare(task.tg, sig):
        return
    if is_ignored(task, sig) and not task.sigmask >> (sig - 1) & 1:
        return
    _queue(task.siginfo, sig, info)
    task.pending |= 1 << (sig - 1)


def send_group(tg: ThreadGroup, sig: int, info: bytes | None = None) -> None:
    """Make ``sig`` pending for the process ``tg`` (kill, a child's SIGCHLD, a
    timer): any one of its tasks not blocking it takes it."""
    if tg.exit_status is not None or tg.group_exit is not None or not 1 <= sig <= 64:
        return
    if not _prepare(tg, sig):
        return
    leader = tg.leader
    if is_ignored(leader, sig) and all(t.sigmask >> (sig - 1) & 1 == 0 for t in tg.live_tasks):
        return
    _queue(tg.siginfo, sig, info)
    tg.pending |= 1 << (sig - 1)


SIGRTMIN = 32
SI_TIMER = -2


def _queue(infos: dict[int, list[bytes]], sig: int, info: bytes | None) -> None:
    """Standard signals are pending once (a second one merges); each
    real-time signal sent is queued with its own siginfo (Linux
    ``legacy_queue``)."""
    q = infos.setdefault(sig, [])
    if sig < SIGRTMIN and q:
        return
    q.append(info or siginfo(sig, SI_USER))


def dequeue(task: Task, sig: int) -> bytes:
    """Take pending ``sig`` from the task (first) or its process; returns its
    siginfo. The pending bit clears when no instance is left. A POSIX
    timer's signal reports the overruns counted until now (Linux
    ``posixtimer_rearm``)."""
    bit = 1 << (sig - 1)
    holder: Task | ThreadGroup = task if task.pending & bit else task.tg
    q = holder.siginfo.get(sig) or []
    info = q.pop(0) if q else siginfo(sig, SI_USER)
    if not q:
        holder.siginfo.pop(sig, None)
        holder.pending &= ~bit
    if struct.unpack_from("<i", info, 8)[0] == SI_TIMER:
        (timer_id,) = struct.unpack_from("<i", info, 16)
        timer = task.tg.timers.get(timer_id)
        if timer is not None:
            timer.last_overrun, timer.overrun = timer.overrun, 0
            info = info[:20] + struct.pack("<i", min(timer.last_overrun, 0x7FFFFFFF)) + info[24:]
    return info


def _prepare(tg: ThreadGroup, sig: int) -> bool:
    """What happens at once when a signal is sent (Linux ``prepare_signal``):
    SIGKILL ends every task; SIGCONT continues a stopped process and discards
    pending stop signals; a stop signal discards a pending SIGCONT. False when
    nothing is left to queue."""
    if sig == SIGKILL:
        tg.stop_signal = 0
        for t in tg.live_tasks:
            t.kill_signal = SIGKILL
        return False
    if sig == SIGCONT:
        _discard(tg, STOP_MASK)
        if tg.stop_signal:
            tg.stop_signal = 0
            tg.report = ("continued", SIGCONT)
            _notify_parent(tg, CLD_CONTINUED, SIGCONT)
    elif sig in DEFAULT_STOP:
        _discard(tg, 1 << (SIGCONT - 1))
    return True


def orphaned_pgrp(task: Task) -> bool:
    """Whether ``task``'s process group is orphaned (Linux
    ``will_become_orphaned_pgrp``): no member has a live parent in another
    process group of the same session."""
    pgid, sid = task.tg.pgid, task.tg.sid
    for t in task.kernel.tasks.values():
        tg = t.tg
        if t is not tg.leader or tg.pgid != pgid or tg.exit_status is not None:
            continue
        p = tg.parent
        if p is not None and p.exit_status is None and p.pgid != pgid and p.sid == sid:
            return False
    return True


def _discard(tg: ThreadGroup, mask: int) -> None:
    holders: list[Task | ThreadGroup] = [tg, *tg.live_tasks]
    for holder in holders:
        holder.pending &= ~mask
        for sig in list(holder.siginfo):
            if mask >> (sig - 1) & 1:
                del holder.siginfo[sig]


def _notify_parent(tg: ThreadGroup, code: int, status: int) -> None:
    """SIGCHLD to the parent on a stop or continue (Linux
    ``do_notify_parent_cldstop``), unless it set SA_NOCLDSTOP; a parent in
    wait4 (WUNTRACED/WCONTINUED) is woken either way."""
    parent = tg.parent
    if parent is None or parent.exit_status is not None:
        return
    for t in parent.live_tasks:
        t.kernel.wake(t)
    act = action(parent.leader, SIGCHLD)
    if act.flags & SA_NOCLDSTOP:
        return
    leader = tg.leader
    send_group(parent, SIGCHLD, siginfo(SIGCHLD, code, pid=tg.tgid, uid=leader.fs.creds.uid, status=status))


def siginfo(sig: int, code: int, *, pid: int = 0, uid: int = 0, addr: int | None = None,
            status: int | None = None) -> bytes:
    """A ``siginfo_t`` (128 bytes): signo, errno, code, then the union (pid and
    uid for kill; the address for faults; pid, uid and status for SIGCHLD)."""
    head = struct.pack("<iii4x", sig, 0, code)
    if addr is not None:
        body = struct.pack("<Q", addr)
    elif status is not None:
        body = struct.pack("<iIi", pid, uid, status)
    else:
        body = struct.pack("<iI", pid, uid)
    return (head + body).ljust(128, b"\0")


def deliverable(task: Task) -> int:
    """The next pending, unblocked signal for ``task`` (its own, then its
    process's; lowest first), or 0."""
    ready = (task.pending | task.tg.pending) & ~task.sigmask
    if not ready:
        return 0
    return (ready & -ready).bit_length()


def deliver(task: Task) -> bool:
    """Act on pending unblocked signals before ``task`` runs. Returns False
    when a default action ended the task (``kill_signal`` is then set)."""
    tg = task.tg
    while sig := deliverable(task):
        info = dequeue(task, sig)
        act = action(task, sig)
        if act.handler == 1 or (act.handler == 0 and sig in DEFAULT_IGNORE):
            continue
        if act.handler == 0 and sig in DEFAULT_STOP:
            if sig != SIGSTOP and orphaned_pgrp(task):
                continue  # POSIX: terminal stops are discarded in an orphaned process group
            # Group stop (Linux do_signal_stop): every task of the process
            # waits until SIGCONT; the parent hears of it.
            tg.stop_signal = sig
            tg.report = ("stopped", sig)
            _notify_parent(tg, CLD_STOPPED, sig)
            _restore_sigmask(task)
            return True
        if act.handler == 0:
            task.kill_signal = sig
            return False
        try:
            _push_frame(task, sig, act, info)
        except SyscallError:
            task.kill_signal = int(sig_names.SIGSEGV)  # Linux force_sigsegv: no room for the frame
            return False
        return True
    _restore_sigmask(task)
    return True


def _restore_sigmask(task: Task) -> None:
    """No handler ran for the signal that interrupted rt_sigsuspend (or
    ppoll, pselect6): the usual mask comes back before the call restarts
    (Linux ``restore_saved_sigmask``)."""
    if task.restore_sigmask:
        task.restore_sigmask = False
        if task.suspend_mask is not None:
            task.sigmask, task.suspend_mask = task.suspend_mask, None


def _push_frame(task: Task, sig: int, act: SignalAction, info: bytes) -> None:
    regs = task.regs
    mm = task.mm
    alt_sp, alt_flags, alt_size = task.altstack
    on_alt = alt_sp <= regs.rsp < alt_sp + alt_size if not alt_flags & SS_DISABLE else False
    if act.flags & SA_ONSTACK and not alt_flags & SS_DISABLE and not on_alt:
        sp = alt_sp + alt_size
    else:
        sp = regs.rsp - 128  # the red zone
    fpstate = (sp - XSAVE_SIZE) & ~63
    frame = ((fpstate - FRAME_SIZE) & ~15) - 8
    saved_mask = task.sigmask if task.suspend_mask is None else task.suspend_mask
    task.suspend_mask = None  # rt_sigsuspend's mask lasts until this handler
    task.restore_sigmask = False
    mcontext = struct.pack("<18Q", *(getattr(regs, r) for r in SIGCONTEXT_REGS))
    mcontext += struct.pack("<4H", regs.cs & 0xFFFF, 0, 0, regs.ss & 0xFFFF)
    mcontext += struct.pack("<5Q", 0, 0, saved_mask, 0, fpstate) + bytes(64)
    stack = struct.pack("<Qi4xQ", alt_sp, (SS_ONSTACK if on_alt else 0) | (alt_flags & SS_DISABLE), alt_size)
    uc = struct.pack("<QQ", UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, 0) + stack + mcontext
    uc += struct.pack("<Q", saved_mask)
    mm.copy_out(fpstate, bytes(regs.fpstate))
    mm.copy_out(frame, struct.pack("<Q", act.restorer) + uc + info)
    # The handler starts with a fresh FP state (Linux fpu__clear_user_states):
    # default MXCSR and x87 control word, empty x87 stack, zero vector
    # registers, whatever the interrupted code had set (a rounding mode,
    # unmasked exceptions). rt_sigreturn brings the saved state back.
    regs.fpstate = default_xsave()
    regs.rdi, regs.rsi, regs.rdx = sig, frame + SIGINFO_OFFSET, frame + UC_OFFSET
    regs.rax = 0
    regs.rsp, regs.rip = frame, act.handler
    regs.eflags &= ~0x50500  # clear DF, TF, RF, AC as Linux does on entry
    regs.cs, regs.ss = USER_CS, USER_DS
    regs.orig_rax = 0xFFFFFFFFFFFFFFFF
    mask = task.sigmask | act.mask
    if not act.flags & SA_NODEFER:
        mask |= 1 << (sig - 1)
    task.sigmask = mask & ~UNBLOCKABLE
    if act.flags & SA_RESETHAND:
        task.actions[sig] = SignalAction()


def sigreturn(task: Task) -> int:
    """rt_sigreturn(2): restore what the frame below ``rsp`` saved; returns
    the restored rax. A frame that cannot be read ends the task with SIGSEGV."""
    regs = task.regs
    frame = regs.rsp - 8
    try:
        raw = task.mm.copy_in(frame + UC_OFFSET, SIGINFO_OFFSET - UC_OFFSET)
    except SyscallError:
        task.kill_signal = int(sig_names.SIGSEGV)
        raise
    base = MCONTEXT_OFFSET - UC_OFFSET
    values = struct.unpack_from("<18Q", raw, base)
    fpstate = struct.unpack_from("<Q", raw, base + 152 + 32)[0]
    (mask,) = struct.unpack_from("<Q", raw, SIGMASK_OFFSET - UC_OFFSET)
    alt_sp, alt_flags, alt_size = struct.unpack_from("<Qi4xQ", raw, STACK_OFFSET - UC_OFFSET)
    old_flags = regs.eflags
    for name, value in zip(SIGCONTEXT_REGS, values, strict=True):
        setattr(regs, name, value)
    regs.eflags = (old_flags & ~FIX_EFLAGS) | (regs.eflags & FIX_EFLAGS)
    regs.cs, regs.ss = USER_CS, USER_DS
    regs.orig_rax = 0xFFFFFFFFFFFFFFFF
    if fpstate:
        try:
            regs.fpstate = bytearray(task.mm.copy_in(fpstate, XSAVE_SIZE))
        except SyscallError:
            task.kill_signal = int(sig_names.SIGSEGV)
            raise
    task.sigmask = mask & ~UNBLOCKABLE
    task.altstack = (alt_sp, alt_flags & SS_DISABLE, alt_size)
    return int(regs.rax)


def interrupt_blocked_call(task: Task) -> None:
    """A parked system call meets a signal. With a handler: EINTR, or with
    SA_RESTART set up to run again once the handler returns, except poll,
    select and epoll_wait (``task.wait.restart`` False), which fail EINTR
    regardless (Linux ``-ERESTARTNOHAND``). With no handler to run (a stop),
    the call runs again when the task next runs, a sleep keeping its
    deadline, and a temporary mask (ppoll, pselect6, rt_sigsuspend) goes
    back now (Linux ``restore_saved_sigmask``)."""
    sig = deliverable(task)
    act = action(task, sig)
    regs = task.regs
    handler = act.handler not in (0, 1)
    restart = task.wait is None or task.wait.restart
    if handler:
        task.wake_at = None  # an interrupted sleep starts afresh if restarted
    task.wait = None
    task.cancel_waiter()
    if not handler and task.suspend_mask is not None:
        # The signal is acted on under the temporary mask (a fatal one ends
        # the task even if the usual mask blocks it); deliver() puts the
        # usual mask back afterwards.
        task.restore_sigmask = True
    if not handler or (act.flags & SA_RESTART and restart):
        regs.rax = regs.orig_rax
        regs.rip -= 2  # back onto the syscall instruction
    else:
        regs.rax = (-errno.EINTR) & 0xFFFFFFFFFFFFFFFF
