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
from .auth import Credentials
from .interrupt import handled as interrupt_handled
from .task import Task, default_rlimits
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
    """How the init process ended: ``code`` when it exited, ``signal`` when killed."""

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


#: Signals whose default action dumps core (Linux ``SIG_KERNEL_COREDUMP_MASK``).
CORE_SIGNALS = {
    host_signal.SIGQUIT, host_signal.SIGILL, host_signal.SIGTRAP, host_signal.SIGABRT,
    host_signal.SIGBUS, host_signal.SIGFPE, host_signal.SIGSEGV, host_signal.SIGXCPU,
    host_signal.SIGXFSZ, host_signal.SIGSYS,
}


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

    # Running.

    def run(self, task: Task) -> ExitStatus:
        """Run ``task`` until it exits or is killed; returns how it ended."""
        from ..syscalls import TaskExit, dispatch

        assert task.context is not None
        context = task.context
        while True:
            if self.pending_kill:
                sig, self.pending_kill = self.pending_kill, 0
                interrupt_handled()
                if sig not in (host_signal.SIGCHLD, host_signal.SIGWINCH, host_signal.SIGURG, host_signal.SIGCONT):
                    return self._exit_task(task, ExitStatus(signal=sig))
            stop, fault = context.switch(task.mm.aspace, task.regs)  # type: ignore[arg-type]
            if stop is Stop.SYSCALL:
                self.current = task
                try:
                    dispatch(task)
                except TaskExit as e:
                    return self._exit_task(task, ExitStatus(code=e.status))
            elif stop is Stop.FAULT:
                assert fault is not None
                return self._exit_task(task, self._fault_status(task, fault))

    def _fault_status(self, task: Task, fault: Fault) -> ExitStatus:
        """A synchronous fault with no handler kills the process (signal
        delivery to handlers comes with the signals work)."""
        log.info("task %d: signal %d (code %d, addr %#x) at rip %#x", task.tid, fault.signo, fault.code,
                 fault.addr, task.regs.rip)
        return ExitStatus(signal=fault.signo, core=fault.signo in CORE_SIGNALS)

    def _exit_task(self, task: Task, status: ExitStatus) -> ExitStatus:
        task.fdtable.close_all()
        if task.context is not None:
            task.context.release()
            task.context = None
        task.mm.release()
        self.tasks.pop(task.tid, None)
        return status
