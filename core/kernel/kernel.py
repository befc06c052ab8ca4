"""The kernel: tasks, the run loop, the clocks and namespaces (gVisor
``pkg/sentry/kernel``).

One kernel per sandbox. It owns the memory file, the platform, the VFS and the
mount namespace, creates the init task from the spec's ``process``, and runs
tasks: each switch into application code returns at a system call (served by
``core.syscalls``), a fault (a signal) or an interrupt.
"""

from __future__ import annotations

import errno
import logging
import os
import signal as host_signal
import time
from collections import deque
from dataclasses import dataclass, field

from ..arch import Registers
from ..errors import SyscallError
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
from . import signals
from .auth import Credentials
from .interrupt import handled as interrupt_handled
from .task import SignalAction, Task, default_rlimits
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
    #: pipe(2)'s internal mount (Linux ``pipe_mnt``).
    pipe_mount: Mount = field(default_factory=pipefs_mount)
    #: Tasks ready to run, in turn.
    _runnable: deque[Task] = field(default_factory=deque)

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
        self.vfork_done(task)

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
        tid = self._next_tid
        self._next_tid += 1
        task = Task(self, tid, Registers(), None, fs, fdtable, rlimits=limits)  # type: ignore[arg-type]
        task.pgid = task.sid = tid
        task.start_time = self.timekeeper.monotonic()
        vd, path = self.find_executable(fs, argv[0], env)
        self.load_program(task, vd, path, argv, env)
        task.context = self.platform.new_context()
        self.tasks[tid] = task
        return task

    # Processes.

    def fork_task(self, parent: Task, *, share_files: bool = False, stack: int = 0, tls: int | None = None) -> Task:
        """A child process of ``parent`` (Linux ``copy_process`` without
        CLONE_VM): its memory copied, its FD table copied (or shared with
        CLONE_FILES), the same cwd, root, credentials, limits and signal
        dispositions; it returns 0 from the call. It is runnable at once."""
        tid = self._next_tid
        self._next_tid += 1
        regs = parent.regs.copy()
        regs.rax = 0
        if stack:
            regs.rsp = stack
        if tls is not None:
            regs.fs_base = tls
        fs = FSContext(self.ns, parent.fs.root, parent.fs.cwd, parent.fs.creds, parent.fs.umask)
        mm = parent.mm.fork(self.platform.new_address_space())
        child = Task(
            self, tid, regs, mm, fs, parent.fdtable if share_files else parent.fdtable.fork(),
            parent=parent, comm=parent.comm, rlimits=dict(parent.rlimits), sigmask=parent.sigmask,
            actions=dict(parent.actions), pgid=parent.pgid, sid=parent.sid, no_new_privs=parent.no_new_privs,
        )
        child.start_time = self.timekeeper.monotonic()
        child.context = self.platform.new_context()
        parent.children.append(child)
        self.tasks[tid] = child
        self._runnable.append(child)
        return child

    def vfork_done(self, child: Task) -> None:
        """``child`` has exec'd or is exiting: a parent waiting in vfork runs
        again (Linux ``mm_release`` -> ``complete_vfork_done``)."""
        parent = child.parent
        if parent is not None and parent.vfork_child is child:
            parent.vfork_child = None
            if parent.exit_status is None:
                self._runnable.append(parent)

    def _wake_killed_vfork_parents(self) -> None:
        """A parent waiting in vfork still dies of a fatal signal (Linux waits
        killable): let it run, and the run loop ends it."""
        for t in self.tasks.values():
            if t.vfork_child is None or t.exit_status is not None:
                continue
            sig = signals.deliverable(t)
            quiet = signals.DEFAULT_IGNORE | signals.DEFAULT_STOP
            fatal = sig != 0 and signals.action(t, sig).handler == 0 and sig not in quiet
            if t.kill_signal or fatal:
                t.vfork_child = None
                self._runnable.appendleft(t)

    def kill(self, task: Task, sig: int, info: bytes | None = None) -> None:
        """Send ``sig`` to ``task``; its disposition applies when it is delivered."""
        signals.send(task, sig, info)

    def signal_from_host(self, task: Task, sig: int) -> None:
        """A signal forwarded from the host (``pyrunsc kill``, a Ctrl-C at a
        foreground run), as if sent by the kernel to the container's init."""
        signals.send(task, sig, signals.siginfo(sig, signals.SI_KERNEL))

    # Running.

    def run(self, init: Task) -> ExitStatus:
        """Run the sandbox until ``init`` exits or is killed; returns how it ended.

        Tasks take turns: each runs until it blocks, exits or has made
        ``SLICE`` system calls in a row (its time slice). A call that must wait
        (Block) parks its task; parked calls are served again when no task can
        run. When init ends, every other task is ended too.
        """
        from ..syscalls import Block, TaskExit, dispatch

        runnable = self._runnable
        runnable.append(init)
        blocked: list[Task] = []
        turns = 0
        current: Task | None = None  # the task whose slice runs ...
        used = 0  # ... and the calls it has made in it
        while init.exit_status is None:
            turns += 1
            if blocked and turns % 64 == 0:
                # Busy tasks must not starve parked ones (a due sleep, a reaped child).
                self._retry(blocked)
            if turns % 64 == 0:
                self._wake_killed_vfork_parents()
            if self.pending_kill:
                sig, self.pending_kill = self.pending_kill, 0
                interrupt_handled()
                self.signal_from_host(init, sig)
                self._wake_killed_vfork_parents()
            woken = [t for t in blocked if t.kill_signal or signals.deliverable(t)]
            if woken:
                # A signal wakes a parked call. If the call can finish now (the
                # child it waits for has exited) it does, as on Linux; otherwise
                # it fails EINTR, or restarts after the handler (SA_RESTART).
                self._retry(blocked, only=woken)
                for task in woken:
                    if task in blocked:
                        blocked.remove(task)
                        if not task.kill_signal:
                            signals.interrupt_blocked_call(task)
                        runnable.appendleft(task)
            if not runnable:
                self._retry(blocked)
                self._wake_killed_vfork_parents()
                if not runnable:
                    self._idle(blocked)
                continue
            task = runnable.popleft()
            if task is not current:
                current, used = task, 0
            if task.pending and not task.kill_signal:
                signals.deliver(task)
            if task.kill_signal:
                self._exit_task(task, ExitStatus(signal=task.kill_signal))
                continue
            assert task.context is not None and task.mm.aspace is not None
            stop, fault = task.context.switch(task.mm.aspace, task.regs)
            if stop is Stop.SYSCALL:
                self.current = task
                try:
                    dispatch(task)
                except Block:
                    blocked.append(task)
                    continue
                except TaskExit as e:
                    self._exit_task(task, ExitStatus(code=e.status))
                    continue
                if task.vfork_child is not None:
                    current = None
                    continue  # parked until its vfork child execs or exits
                used += 1
                if used < SLICE:
                    runnable.appendleft(task)  # the caller goes on, as on Linux
                else:
                    runnable.append(task)
                    current = None
            elif stop is Stop.FAULT:
                assert fault is not None
                if self._fault_handled(task, fault):
                    runnable.appendleft(task)
                else:
                    self._exit_task(task, self._fault_status(task, fault))
            else:
                runnable.append(task)
        for task in list(self.tasks.values()):
            if task is not init and task.exit_status is None:
                self._exit_task(task, ExitStatus(signal=host_signal.SIGKILL))
        self.tasks.clear()
        return init.exit_status

    def _retry(self, blocked: list[Task], only: list[Task] | None = None) -> None:
        """Serve each parked call (or those in ``only``) again; those that can
        go on leave ``blocked`` and become runnable."""
        from ..syscalls import Block, TaskExit, dispatch

        for task in list(only if only is not None else blocked):
            if task.kill_signal:
                continue
            self.current = task
            try:
                dispatch(task)
            except Block:
                continue
            except TaskExit as e:
                blocked.remove(task)
                self._exit_task(task, ExitStatus(code=e.status))
                continue
            blocked.remove(task)
            self._runnable.append(task)

    def _idle(self, blocked: list[Task]) -> None:
        """No task can run: sleep until the first parked sleep is due, or, when
        every task waits on another, until a host signal (pyrunsc kill) comes."""
        from .interrupt import blocking

        waits = [t.wake_at[1] - self.timekeeper.now(t.wake_at[0]) for t in blocked if t.wake_at is not None]
        delay = min(max(min(waits), 0) / 1e9, 0.05) if waits else 0.05
        try:
            with blocking():
                time.sleep(delay)
        except SyscallError:
            pass

    def _fault_handled(self, task: Task, fault: Fault) -> bool:
        """A fault the task has a handler for, unblocked: it gets the signal
        (Linux ``force_sig_fault``); otherwise the fault ends the task."""
        act = signals.action(task, fault.signo)
        if act.handler in (0, 1) or task.sigmask >> (fault.signo - 1) & 1:
            return False
        signals.send(task, fault.signo, signals.siginfo(fault.signo, fault.code, addr=fault.addr))
        return True

    def _fault_status(self, task: Task, fault: Fault) -> ExitStatus:
        """A synchronous fault with no handler kills the process (signal
        delivery to handlers comes with the signals work)."""
        log.info("task %d: signal %d (code %d, addr %#x) at rip %#x", task.tid, fault.signo, fault.code,
                 fault.addr, task.regs.rip)
        return ExitStatus(signal=fault.signo)

    def _exit_task(self, task: Task, status: ExitStatus) -> None:
        """End ``task`` (Linux ``do_exit``): close its files, free its memory and
        platform context, give its children to init, and leave a zombie for
        its parent to reap (none for init, or when the parent ignores SIGCHLD)."""
        task.exit_status = status
        self.vfork_done(task)
        if not any(t.fdtable is task.fdtable for t in self.tasks.values() if t is not task and t.exit_status is None):
            task.fdtable.close_all()
        if task.context is not None:
            task.context.release()
            task.context = None
        task.mm.release()
        init = self.tasks.get(1)
        for child in task.children:
            child.parent = init
            if init is not None and init is not task:
                init.children.append(child)
                if child.exit_status is not None:
                    # A zombie: init is told, as its parent was (Linux reparent_leader).
                    self._notify_parent(child)
        task.children = []
        self._notify_parent(task)

    def _notify_parent(self, task: Task) -> None:
        """Tell the parent of ended ``task`` (Linux ``do_notify_parent``): SIGCHLD
        with its pid and status; when the parent ignores SIGCHLD it is reaped
        at once (POSIX.1-2001), and with no live parent it is released."""
        status = task.exit_status
        assert status is not None
        parent = task.parent
        if parent is None or parent.exit_status is not None:
            self.tasks.pop(task.tid, None)
            return
        code, value = (1, status.code) if not status.signal else (3 if status.core else 2, status.signal)
        signals.send(parent, host_signal.SIGCHLD, signals.siginfo(
            host_signal.SIGCHLD, code, pid=task.tid, uid=task.fs.creds.uid, status=value))
        if parent.actions.get(host_signal.SIGCHLD, SignalAction()).handler == 1:
            parent.children.remove(task)
            self.tasks.pop(task.tid, None)
