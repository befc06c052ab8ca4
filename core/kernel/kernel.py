"""The kernel: tasks, the run loop, the clocks and namespaces (gVisor
``pkg/sentry/kernel``).

One kernel per sandbox. It owns the memory file, the platform, the VFS and the
mount namespace, creates the init task from the spec's ``process``, and runs
tasks: each switch into application code returns at a system call (served by
``core.syscalls``), a fault (a signal) or an interrupt.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal as host_signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..arch import Registers
from ..errors import PyrunscError, SyscallError
from ..mm import elf
from ..mm.memfile import MemoryFile
from ..mm.mm import Layout, MemoryManager
from ..platform import Fault, Platform, Stop
from ..vfs.fdtable import FDTable
from ..vfs.file import FileDescription
from ..vfs.mount import Mount, MountNamespace, VirtualDentry
from ..vfs.namei import FSContext, resolve
from ..vfs.permissions import MAY_EXEC, check_permission
from ..vfs.pipe import pipefs_mount
from ..vfs.vfs import VirtualFilesystem
from . import signals, timers
from .auth import Credentials
from .futex import FutexManager, release_at_exit
from .interrupt import Interrupted
from .interrupt import handled as interrupt_handled
from .task import SignalAction, Task, ThreadGroup, default_rlimits
from .time import Timekeeper

log = logging.getLogger("pyrunsc.kernel")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class UTSNamespace:
    """What uname(2) reports: the sandbox's own names, never the host's."""

    hostname: str = "localhost"
    domainname: str = "(none)"
    sysname: str = "Linux"
    release: str = "4.4.0"
    version: str = "#1 SMP Sun Jan 10 15:06:54 PST 2016"
    machine: str = "x86_64"


@dataclass
class ExitStatus:
    """How the init process ended: ``code`` when it exited, ``signal`` when killed.

    ``core`` is whether a core file was written. Linux sets the status word's
    core flag (0x80) and CLD_DUMPED only then (``fs/coredump.c``
    ``coredump_finish``), not for every signal whose default action is "core"
    (SIGSEGV, SIGABRT, ...): with RLIMIT_CORE 0 a SIGSEGV death is 0x0b. The
    sandbox writes no core files, so it is never set.
    """

    code: int = 0
    signal: int = 0
    core: bool = False

    @property
    def wait_status(self) -> int:
        """The Linux wait status word."""
        if self.signal:
            return self.signal | (0x80 if self.core else 0)
        return (self.code & 0xFF) << 8

    @property
    def shell_status(self) -> int:
        """What a shell (and ``pyrunsc run``) reports: the code, or 128+signal."""
        return 128 + self.signal if self.signal else self.code & 0xFF


#: How many system calls a task makes in a row before the other runnable
#: tasks get a turn. As on Linux, a call that does not block returns to its
#: caller, which goes on running: a process that signals another (kill) or
#: makes one runnable (a pipe write) reaches its next call, often a wait,
#: before the other acts. A count, not a time, so that runs repeat exactly.
SLICE = 32


@dataclass
class Kernel:
    """A sandbox's kernel. ``strace`` logs every system call."""

    platform: Platform
    memfile: MemoryFile
    vfs: VirtualFilesystem
    ns: MountNamespace
    uts: UTSNamespace = field(default_factory=UTSNamespace)
    strace: bool = False
    timekeeper: Timekeeper = field(default_factory=Timekeeper)
    tasks: dict[int, Task] = field(default_factory=dict)
    _next_tid: int = 1
    #: Set from outside the run loop (a control request, a host signal) to
    #: deliver a signal to init at the next interrupt.
    pending_kill: int = 0
    #: The task whose system call is being served (what /proc/self names).
    current: Task | None = None
    #: The task last switched into application code (what :meth:`interrupt` stops).
    running: Task | None = None
    #: pipe(2)'s internal mount (Linux ``pipe_mnt``).
    pipe_mount: Mount = field(default_factory=pipefs_mount)
    #: Futex wait queues.
    futexes: FutexManager = field(default_factory=FutexManager)
    #: Tasks ready to run, in turn.
    _runnable: deque[Task] = field(default_factory=deque)
    #: Parked tasks (a blocking call to serve again), and those of them a
    #: wake-up (a futex wake, a child's exit) asked to retry soon.
    _blocked: list[Task] = field(default_factory=list)
    _woken: list[Task] = field(default_factory=list)
    #: Tasks of stopped thread groups (job control), until SIGCONT.
    _stopped: list[Task] = field(default_factory=list)
    #: Switches into application code so far (the preemption timer's clock).
    switches: int = 0
    #: Set by sched_yield: the caller's time slice ends after this call.
    yielded: bool = False
    #: The foreground process group of each host terminal the sandbox was
    #: given (by device number), kept here, never set on the host.
    tty_foreground: dict[int, int] = field(default_factory=dict)
    #: Host monotonic ns when the next interval or POSIX timer is due; 0 for none.
    timer_due: int = 0
    #: Functions other threads hand to the run loop (:meth:`call_in_loop`).
    _calls: deque[Callable[[], None]] = field(default_factory=deque)
    #: Set by :meth:`halt`: the run loop ends at its next turn with this status.
    halted: ExitStatus | None = None
    #: True while :meth:`run_calls` runs where no task is in a system call
    #: (the top of the loop, the idle wait): a checkpoint may be taken.
    at_safe_point: bool = False

    # Checkpoint and restore (gVisor ``kernel.SaveTo``/``LoadFrom``).

    def __getstate__(self) -> dict[str, object]:
        """Everything but what belongs to this run of the sentry: calls
        queued by other threads, the task in a switch, a halt."""
        state = self.__dict__.copy()
        state.update(_calls=deque(), running=None, current=None, halted=None, at_safe_point=False)
        return state

    def attach_platform(self, platform: Platform) -> None:
        """After a restore: give every live task a new context on
        ``platform`` and every live address space a new platform view with
        its VMAs mapped again (the saved kernel holds none)."""
        self.platform = platform
        reserved = self.layout().reserved
        seen: set[int] = set()
        for task in self.tasks.values():
            if task.exit_status is not None:
                continue
            task.context = platform.new_context()
            mm = task.mm
            if mm is not None and id(mm) not in seen:
                seen.add(id(mm))
                try:
                    mm.attach(platform.new_address_space(), reserved)
                except ValueError as e:
                    raise PyrunscError(f"process {task.tg.tgid} cannot run on the {platform.name} platform: {e}") \
                        from None

    def halt(self, status: ExitStatus) -> None:
        """End the run loop at its next turn with ``status``, every task
        ended (the sandbox stops after a checkpoint). Run-loop thread."""
        self.halted = status

    # Creating processes.

    def layout(self) -> Layout:
        return Layout(reserved=list(getattr(self.platform, "reserved", [])))

    def find_executable(self, fs: FSContext, name: str, env: list[str]) -> tuple[VirtualDentry, str]:
        """Resolve ``name`` as runc does: a path if it has a "/", else the first
        match in the environment's PATH. ENOENT, EACCES as execve(2)."""
        if "/" in name:
            vd = resolve(fs, fs.cwd, name)
            return vd, name
        path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
        denied = False
        for d in path.split(":"):
            candidate = f"{d or '.'}/{name}"
            try:
                vd = resolve(fs, fs.cwd, candidate)
            except SyscallError:
                continue
            if vd.inode.is_regular():
                try:
                    check_permission(fs.creds, vd.inode, MAY_EXEC)
                except SyscallError:
                    denied = True
                    continue
                return vd, candidate
        raise SyscallError(errno.EACCES if denied else errno.ENOENT, f"{name}: not found in PATH {path}")

    def load_program(self, task: Task, vd: VirtualDentry, path: str, argv: list[str], envp: list[str]) -> None:
        """Replace ``task``'s memory with the program at ``vd`` (execve's core)."""
        inode = vd.inode
        if inode.is_dir():
            raise SyscallError(errno.EACCES, f"{path}: is a directory")
        if not inode.is_regular():
            raise SyscallError(errno.EACCES, f"{path}: not a regular file")
        if vd.mount.flags.no_exec:
            raise SyscallError(errno.EACCES, f"{path}: on a noexec mount")
        check_permission(task.fs.creds, inode, MAY_EXEC)
        desc = FileDescription(vd, os.O_RDONLY)
        try:
            mm = MemoryManager(self.memfile, self.platform.new_address_space(), self.layout())
            try:
                info = elf.load(mm, lambda off, n: desc.pread(n, off), path)
                enc = os.fsencode
                creds = task.fs.creds
                sp = elf.build_stack(
                    mm, info, [enc(a) for a in argv], [enc(e) for e in envp], enc(path),
                    uid=creds.uid, euid=creds.euid, gid=creds.gid, egid=creds.egid,
                    stack_size=min(task.rlimit("RLIMIT_STACK"), 1 << 30),
                )
            except BaseException:
                mm.release()
                raise
        finally:
            desc.dec_ref()
        old = task.mm
        task.mm = mm
        if old is not None:
            old.release()
        task.regs = Registers.for_entry(info.entry, sp)
        task.comm = os.path.basename(path)[:15]
        task.mm.executable = self.ns.path(vd)

    def create_process(
        self,
        argv: list[str],
        env: list[str],
        cwd: str,
        creds: Credentials,
        *,
        rlimits: dict[int, tuple[int, int]] | None = None,
        umask: int = 0o022,
        stdio: list[FileDescription] | None = None,
    ) -> Task:
        """The init task, running ``argv`` with ``env`` in ``cwd``.

        Errors are SyscallError: ENOENT (no such program or cwd), EACCES (not
        executable), ENOEXEC (not a static x86-64 ELF).
        """
        fs = FSContext(self.ns, self.ns.root, self.ns.root, creds, umask)
        try:
            fs.cwd = resolve(fs, fs.root, cwd)
        except SyscallError as e:
            raise SyscallError(e.errno, f"cwd {cwd}: {e}") from None
        if not fs.cwd.inode.is_dir():
            raise SyscallError(errno.ENOTDIR, f"cwd {cwd}: not a directory")
        limits = default_rlimits()
        limits.update(rlimits or {})
        fdtable = FDTable(limit=limits[7][0])
        for d in stdio or []:
            fdtable.install(d)
        tid = self._alloc_tid()
        task = Task(self, tid, Registers(), None, fs, fdtable)  # type: ignore[arg-type]
        tg = ThreadGroup(tid, task, [task], rlimits=limits, pgid=tid, sid=tid)
        task.tg = tg
        task.start_time = tg.start_time = self.timekeeper.monotonic()
        vd, path = self.find_executable(fs, argv[0], env)
        self.load_program(task, vd, path, argv, env)
        task.context = self.platform.new_context()
        self.tasks[tid] = task
        return task

    def _alloc_tid(self) -> int:
        tid = self._next_tid
        self._next_tid += 1
        return tid

    # Processes and threads.

    def clone_task(
        self,
        parent: Task,
        *,
        thread: bool = False,
        share_vm: bool = False,
        share_fs: bool = False,
        share_files: bool = False,
        share_sighand: bool = False,
        vfork: bool = False,
        stack: int = 0,
        tls: int | None = None,
        exit_signal: int = 17,
    ) -> Task:
        """A new task from ``parent`` (Linux ``copy_process``): a thread of
        its group (CLONE_THREAD) or a new child process. Memory is shared
        (CLONE_VM) or copied, as are the filesystem view (CLONE_FS), the FD
        table (CLONE_FILES) and the signal dispositions (CLONE_SIGHAND). The
        new task returns 0 from the call with ``stack`` and ``tls`` if given;
        it is runnable at once."""
        try:
            context = self.platform.new_context()
        except RuntimeError as e:  # e.g. out of vCPUs
            raise SyscallError(errno.EAGAIN, f"no platform context for a new task: {e}") from None
        try:
            mm = parent.mm.acquire() if share_vm else parent.mm.fork(self.platform.new_address_space())
        except BaseException:
            context.release()
            raise
        tid = self._alloc_tid()
        regs = parent.regs.copy()
        regs.rax = 0
        if stack:
            regs.rsp = stack
        if tls is not None:
            regs.fs_base = tls
        pfs = parent.fs
        fs = pfs if share_fs else FSContext(self.ns, pfs.root, pfs.cwd, pfs.creds, pfs.umask)
        child = Task(
            self, tid, regs, mm, fs, parent.fdtable if share_files else parent.fdtable.fork(),
            comm=parent.comm, sigmask=parent.sigmask,
            actions=parent.actions if share_sighand else dict(parent.actions), no_new_privs=parent.no_new_privs,
        )
        child.start_time = self.timekeeper.monotonic()
        if thread:
            child.tg = parent.tg
            parent.tg.tasks.append(child)
        else:
            ptg = parent.tg
            child.tg = ThreadGroup(
                tid, child, [child], parent=ptg, rlimits=dict(ptg.rlimits), pgid=ptg.pgid, sid=ptg.sid,
                start_time=child.start_time, exit_signal=exit_signal,
            )
            ptg.children.append(child.tg)
        child.context = context
        if vfork:
            child.vfork_parent = parent
            parent.vfork_child = child
        self.tasks[tid] = child
        self._runnable.append(child)
        return child

    def fork_task(self, parent: Task, *, share_files: bool = False, stack: int = 0, tls: int | None = None) -> Task:
        """A child process of ``parent`` with its memory copied (fork(2))."""
        return self.clone_task(parent, share_files=share_files, stack=stack, tls=tls)

    def interrupt(self) -> None:
        """Make the task running in application code return to the run loop
        soon (a host signal to forward); any thread or a signal handler."""
        task = self.running
        ctx = task.context if task is not None else None
        if ctx is not None:
            ctx.interrupt()

    def wake(self, task: Task) -> None:
        """Ask for ``task``'s parked call to be served again soon (a futex
        wake, a child that changed state)."""
        self._woken.append(task)

    def thread_group(self, tgid: int) -> ThreadGroup | None:
        """The live or zombie process ``tgid``."""
        t = self.tasks.get(tgid)
        return t.tg if t is not None and t.tg.tgid == tgid else None

    def init_group(self) -> ThreadGroup | None:
        return self.thread_group(1)

    def kill(self, task: Task, sig: int, info: bytes | None = None) -> None:
        """Send ``sig`` to ``task``'s process; its disposition applies when it is delivered."""
        signals.send_group(task.tg, sig, info)

    def signal_from_host(self, task: Task, sig: int) -> None:
        """A signal forwarded from the host (``pyrunsc kill``, a Ctrl-C at a
        foreground run), as if sent by the kernel to the container's init."""
        signals.send_group(task.tg, sig, signals.siginfo(sig, signals.SI_KERNEL))

    def task_state(self, task: Task) -> str:
        """``task``'s state as /proc shows it (Linux ``task_state_array``):
        ``Z`` exited and not yet reaped (a zombie), ``T`` its process is
        stopped (job control), ``R`` running (the task whose system call is
        being served) or ready to run, ``S`` sleeping (parked in a blocking
        call, or in none of the run queues). Run-loop thread only."""
        if task.exit_status is not None:
            return "Z"
        if task is self.current:
            return "R"
        if task.tg.stop_signal:
            return "T"
        if task in self._runnable or task in self._stopped:
            return "R"  # (in _stopped with its process continued: about to run)
        return "S"

    # Running.

    def call_in_loop(self, fn: Callable[[], None]) -> None:
        """Have the run loop call ``fn()`` at the top of its next turn, where
        no task is half-way through a change (a control request reading the
        tasks). Any thread; the caller wakes the loop if it must not wait
        for the next turn (at most 50 ms when every task is parked)."""
        self._calls.append(fn)

    def run_calls(self) -> None:
        """Call, in order, the functions handed in with :meth:`call_in_loop`.
        Run-loop thread only; no task is :attr:`current` while they run. An
        exception from one is logged, not raised (a failed request must not
        end the sandbox), but for :class:`~.interrupt.Interrupted`: run from
        a signal handler during a blocking host call, the calls give way to a
        host signal that aborts that call; those not run yet stay queued."""
        calls = self._calls
        current, self.current = self.current, None  # no task is being served meanwhile
        self.at_safe_point = current is None
        try:
            # Only those queued now: a call may queue itself again for the next turn.
            for _ in range(len(calls)):
                if not calls:
                    break
                fn = calls.popleft()
                try:
                    fn()
                except Interrupted:
                    raise  # a host signal aborts the blocking call these ran in (see interrupt.py)
                except Exception:
                    log.exception("a call handed to the run loop failed")
        finally:
            self.current = current
            self.at_safe_point = False

    def run(self, init: Task | None = None) -> ExitStatus:
        """Run the sandbox until ``init``'s process exits or is killed (or
        :meth:`halt` is called); returns how it ended. With ``init`` None, a
        restored kernel resumes: its tasks go on from where the checkpoint
        found them, and PID 1's process is init.

        Tasks take turns: each runs until it blocks, exits or has made
        ``SLICE`` system calls in a row (its time slice). A call that must
        wait (Block) parks its task; parked calls are served again when
        something wakes them (:meth:`wake`, a signal), every 64 turns, and
        when no task can run. Tasks of a stopped process wait until SIGCONT.
        When init's process ends, every other task is ended too.
        """
        preempt = Preemption(self) if getattr(self.platform, "preemptible", True) else None
        if preempt is not None:
            preempt.start()
        try:
            return self._run(init)
        finally:
            if preempt is not None:
                preempt.stop()

    def _run(self, init: Task | None) -> ExitStatus:
        from ..syscalls import Block, TaskExit, dispatch

        runnable = self._runnable
        if init is not None:
            runnable.append(init)
            itg = init.tg
        else:
            found = self.init_group()
            if found is None:
                raise RuntimeError("the restored kernel has no init process")
            itg = found
        blocked = self._blocked
        stopped = self._stopped
        turns = 0
        current: Task | None = None  # the task whose slice runs ...
        used = 0  # ... and the calls it has made in it
        while itg.exit_status is None and self.halted is None:
            turns += 1
            if blocked and turns % 64 == 0:
                # Busy tasks must not starve parked ones (a due sleep, a reaped child).
                self._retry(blocked)
            if self.pending_kill:
                sig, self.pending_kill = self.pending_kill, 0
                interrupt_handled()
                self.signal_from_host(itg.leader, sig)
            if self._calls:
                self.run_calls()
            if self.timer_due and time.monotonic_ns() >= self.timer_due:
                timers.fire(self)
            if self._woken:
                woken, self._woken = [t for t in self._woken if t in blocked], []
                self._retry(blocked, only=woken)
            if stopped:
                self._continue_stopped()
            if blocked:
                self._interrupt_blocked()
            if not runnable:
                self._retry(blocked)
                if not runnable:
                    self._idle(blocked)
                continue
            task = runnable.popleft()
            if task.exit_status is not None:
                continue  # ended while queued (its group exited)
            if task is not current:
                current, used = task, 0
                self.yielded = False
            if task.pending | task.tg.pending and not task.kill_signal:
                signals.deliver(task)
            if task.kill_signal:
                sig = task.kill_signal
                self.exit_group(task.tg, ExitStatus(signal=sig))
                continue
            if task.tg.stop_signal:
                stopped.append(task)
                continue
            assert task.context is not None and task.mm.aspace is not None
            self.running = task
            self.switches += 1
            t0 = time.monotonic_ns()
            try:
                stop, fault = task.context.switch(task.mm.aspace, task.regs)
            finally:
                self.timekeeper.app_ns += time.monotonic_ns() - t0
                self.running = None
            if stop is Stop.SYSCALL:
                self.current = task
                try:
                    dispatch(task)
                except Block:
                    blocked.append(task)
                    continue
                except TaskExit as e:
                    self._task_exit(task, e)
                    continue
                finally:
                    self.current = None
                if task.exit_status is None:
                    used += 1
                    if used < SLICE and not self.yielded:
                        runnable.appendleft(task)  # the caller goes on, as on Linux
                    else:
                        self.yielded = False
                        runnable.append(task)
                        current = None
            elif stop is Stop.FAULT:
                assert fault is not None
                if self._fault_handled(task, fault):
                    runnable.appendleft(task)
                else:
                    self.exit_group(task.tg, self._fault_status(task, fault))
            else:
                runnable.append(task)
        for task in list(self.tasks.values()):
            if task.exit_status is None:
                self._exit_thread(task, ExitStatus(signal=host_signal.SIGKILL))
        self.tasks.clear()
        if self.halted is not None:
            return self.halted
        assert itg.exit_status is not None
        return itg.exit_status

    def _task_exit(self, task: Task, e: Exception) -> None:
        from ..syscalls import TaskExit

        assert isinstance(e, TaskExit)
        if e.group:
            self.exit_group(task.tg, ExitStatus(code=e.status))
        else:
            self._exit_thread(task, ExitStatus(code=e.status))

    def _interrupt_blocked(self) -> None:
        """Wake parked tasks that have a signal to take (Linux
        ``complete_signal``/``signal_wake_up``): the call finishes if it can
        (the child it waits for has exited), or fails with EINTR, or restarts
        after the handler (SA_RESTART). A signal sent to the process wakes one
        of its tasks, not all of them; a stopped process's tasks wait."""
        blocked = self._blocked
        woken: list[Task] = []
        claimed: set[tuple[int, int]] = set()
        for t in blocked:
            if t.kill_signal or t.exit_status is not None:
                woken.append(t)
                continue
            if t.tg.stop_signal:
                continue
            sig = signals.deliverable(t)
            if not sig:
                continue
            if not getattr(t.waiter, "interruptible", True) and not signals.fatal(t, sig):
                continue  # a vfork parent waits killably: only a fatal signal ends the wait
            if not t.pending >> (sig - 1) & 1:
                # A process-directed signal: one task takes it; not when a
                # runnable task of the group will take it anyway.
                if (t.tg.tgid, sig) in claimed or any(
                    r.tg is t.tg and not r.sigmask >> (sig - 1) & 1 for r in self._runnable
                ):
                    continue
                claimed.add((t.tg.tgid, sig))
            woken.append(t)
        if not woken:
            return
        self._retry(blocked, only=woken)
        for task in woken:
            if task in blocked:
                blocked.remove(task)
                if task.exit_status is not None:
                    continue
                if not task.kill_signal:
                    signals.interrupt_blocked_call(task)
                self._runnable.appendleft(task)

    def _continue_stopped(self) -> None:
        """Tasks of processes continued since they stopped go back to run."""
        still = []
        for t in self._stopped:
            if t.exit_status is not None:
                continue
            if t.tg.stop_signal and not t.kill_signal:
                still.append(t)
            else:
                self._runnable.append(t)
        self._stopped[:] = still

    def _retry(self, blocked: list[Task], only: list[Task] | None = None) -> None:
        """Serve each parked call (or those in ``only``) again; those that can
        go on leave ``blocked`` and become runnable."""
        from ..syscalls import Block, TaskExit, dispatch

        for task in list(only if only is not None else blocked):
            if task.kill_signal or task.exit_status is not None or task not in blocked:
                continue
            self.current = task
            try:
                dispatch(task)
            except Block:
                continue
            except TaskExit as e:
                blocked.remove(task)
                self._task_exit(task, e)
                continue
            finally:
                self.current = None
            blocked.remove(task)
            if task.exit_status is None:
                self._runnable.append(task)

    def _idle(self, blocked: list[Task]) -> None:
        """No task can run: wait until the first parked deadline or timer is
        due, a host fd a parked call waits on (the caller's stdin) is ready, or
        a host signal (pyrunsc kill) comes (``wait.idle``); then fire due timers."""
        from .wait import idle

        idle(self.timekeeper, blocked, self.timer_due - time.monotonic_ns() if self.timer_due else None)
        timers.fire(self)

    def _fault_handled(self, task: Task, fault: Fault) -> bool:
        """A fault the task has a handler for, unblocked: it gets the signal
        (Linux ``force_sig_fault``); otherwise the fault ends the process."""
        act = signals.action(task, fault.signo)
        if act.handler in (0, 1) or task.sigmask >> (fault.signo - 1) & 1:
            return False
        signals.send(task, fault.signo, signals.siginfo(fault.signo, fault.code, addr=fault.addr))
        return True

    def _fault_status(self, task: Task, fault: Fault) -> ExitStatus:
        """A synchronous fault with no handler (or with it blocked) kills the process."""
        log.info("task %d: signal %d (code %d, addr %#x) at rip %#x", task.tid, fault.signo, fault.code,
                 fault.addr, task.regs.rip)
        return ExitStatus(signal=fault.signo)

    # Exiting (Linux kernel/exit.c).

    def exit_group(self, tg: ThreadGroup, status: ExitStatus) -> None:
        """End every task of ``tg`` with ``status`` (exit_group(2), a fatal
        signal; Linux ``do_group_exit``)."""
        if tg.group_exit is None:
            tg.group_exit = status
        for t in list(tg.tasks):
            if t.exit_status is None:
                self._exit_thread(t, tg.group_exit)

    def _unqueue(self, task: Task) -> None:
        for q in (self._blocked, self._stopped):
            if task in q:
                q.remove(task)
        with contextlib.suppress(ValueError):
            self._runnable.remove(task)

    def _exit_thread(self, task: Task, status: ExitStatus) -> None:
        """End one task (Linux ``do_exit``): its robust futexes and
        clear_child_tid, its files and memory, a vfork parent released; the
        last task of a thread group ends the process (:meth:`_exit_process`)."""
        if task.exit_status is not None:
            return
        task.exit_status = status
        self._unqueue(task)
        task.cancel_waiter()
        release_at_exit(task)
        self._release_vfork(task)
        if not any(t.fdtable is task.fdtable for t in self.tasks.values() if t is not task and t.exit_status is None):
            task.fdtable.close_all()
        if task.context is not None:
            task.context.release()
            task.context = None
        task.mm.release()
        tg = task.tg
        if task is not tg.leader:
            tg.tasks.remove(task)
            self.tasks.pop(task.tid, None)
        if not tg.live_tasks:
            self._exit_process(tg, tg.group_exit or tg.leader.exit_status or status)

    def _release_vfork(self, task: Task) -> None:
        """A vfork child that execs or exits lets its parent go on (Linux
        ``mm_release`` -> ``complete_vfork_done``)."""
        parent = task.vfork_parent
        if parent is not None:
            task.vfork_parent = None
            if parent.vfork_child is task:
                parent.vfork_child = None
                self.wake(parent)

    def _exit_process(self, tg: ThreadGroup, status: ExitStatus) -> None:
        """The last task of ``tg`` has ended: give its children to init, tell
        its parent (the exit signal, a wait4 to finish), and leave a zombie
        for the parent to reap (none for init, or when the parent ignores
        SIGCHLD)."""
        tg.exit_status = status
        tg.stop_signal = 0
        tg.itimers.clear()
        tg.timers.clear()
        init = self.init_group()
        children, tg.children = tg.children, []
        for child in children:
            child.parent = init
            if init is not None and init is not tg:
                init.children.append(child)
            for t in child.live_tasks:
                if t.pdeath_signal:
                    signals.send(t, t.pdeath_signal, signals.siginfo(t.pdeath_signal, signals.SI_USER, pid=tg.tgid))
            if child.exit_status is not None and init is not tg:
                # A zombie: init is told, as its parent was (Linux reparent_leader).
                self._notify_parent(child)
        self._notify_parent(tg)

    def _notify_parent(self, tg: ThreadGroup) -> None:
        """Tell the parent of ended ``tg`` (Linux ``do_notify_parent``): its
        exit signal with its pid and status, and a wake-up for a wait4 in
        progress; when the parent ignores SIGCHLD (or set SA_NOCLDWAIT) it is
        reaped at once (POSIX.1-2001), and with no live parent it is released."""
        status = tg.exit_status
        assert status is not None
        parent = tg.parent
        if parent is None or parent.exit_status is not None:
            self.tasks.pop(tg.tgid, None)
            return
        if tg.exit_signal:
            code, value = (1, status.code) if not status.signal else (3 if status.core else 2, status.signal)
            signals.send_group(parent, tg.exit_signal, signals.siginfo(
                tg.exit_signal, code, pid=tg.tgid, uid=tg.leader.fs.creds.uid, status=value))
        for t in parent.live_tasks:
            self.wake(t)
        act = parent.leader.actions.get(host_signal.SIGCHLD, SignalAction())
        if act.handler == 1 or act.flags & signals.SA_NOCLDWAIT:
            parent.children.remove(tg)
            self.tasks.pop(tg.tgid, None)

    # Exec (Linux fs/exec.c de_thread).

    def exec_dethread(self, task: Task) -> None:
        """Before a successful execve: every other task of the group ends,
        and the calling task takes the group leader's TID (the PID)."""
        tg = task.tg
        for t in list(tg.tasks):
            if t is not task and t.exit_status is None:
                t.exit_status = ExitStatus(signal=host_signal.SIGKILL)
                self._unqueue(t)
                t.cancel_waiter()
                release_at_exit(t)
                if t.context is not None:
                    t.context.release()
                    t.context = None
                t.mm.release()
        leader = tg.leader
        for t in list(tg.tasks):
            if t is not task:
                tg.tasks.remove(t)
                if self.tasks.get(t.tid) is t:
                    del self.tasks[t.tid]
        if leader is not task:
            del_tid = task.tid
            self.tasks.pop(del_tid, None)
            task.tid = tg.tgid
            tg.leader = task
            self.tasks[task.tid] = task
        self._release_vfork(task)


#: How long a task may run application code without a system call before it
#: is interrupted, so that other tasks, timers and host signals get their turn.
PREEMPT_NS = 10_000_000


class Preemption:
    """The run loop's timer interrupt (gVisor's preemption by the platform's
    ``Context.Interrupt``): a daemon thread that, every
    :data:`PREEMPT_NS`, interrupts the task running application code if it
    has been in the same switch since the last tick. The interrupted switch
    returns Stop.INTERRUPT and the task goes to the back of the run queue."""

    def __init__(self, kernel: Kernel) -> None:
        import threading

        self.kernel = kernel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pyrunsc-preempt", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)

    def _loop(self) -> None:
        kernel = self.kernel
        last = -1
        while not self._stop.wait(PREEMPT_NS / 1e9):
            seen = kernel.switches
            if kernel.running is not None and seen == last:
                kernel.interrupt()
            last = seen
