"""Tasks (gVisor ``kernel.Task``; Linux ``struct task_struct``).

A task is one thread of application code: its registers, its platform
context, its address space (``mm``), its filesystem view (``fs``: root, cwd,
credentials, umask), its FD table, its limits and its signal dispositions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..abi import RLIM_INFINITY, RLIMITS

if TYPE_CHECKING:
    from ..arch import Registers
    from ..mm.mm import MemoryManager
    from ..platform import Context
    from ..vfs.fdtable import FDTable
    from ..vfs.namei import FSContext
    from .auth import Credentials
    from .kernel import ExitStatus, Kernel

RLIMIT = {name: i for i, name in enumerate(RLIMITS)}


def default_rlimits() -> dict[int, tuple[int, int]]:
    """The limits of a new sandbox's init (gVisor ``limits.NewLinuxLimitSet``)."""
    inf = RLIM_INFINITY
    limits = {i: (inf, inf) for i in range(len(RLIMITS))}
    limits[RLIMIT["RLIMIT_STACK"]] = (8 << 20, inf)
    limits[RLIMIT["RLIMIT_CORE"]] = (0, inf)
    limits[RLIMIT["RLIMIT_NOFILE"]] = (1024, 1048576)
    limits[RLIMIT["RLIMIT_MEMLOCK"]] = (8 << 20, 8 << 20)
    limits[RLIMIT["RLIMIT_SIGPENDING"]] = (0, 0)
    limits[RLIMIT["RLIMIT_MSGQUEUE"]] = (819200, 819200)
    limits[RLIMIT["RLIMIT_NICE"]] = (0, 0)
    limits[RLIMIT["RLIMIT_RTPRIO"]] = (0, 0)
    return limits


@dataclass
class SignalAction:
    """One rt_sigaction entry: handler address (0 default, 1 ignore), flags,
    restorer and mask."""

    handler: int = 0
    flags: int = 0
    restorer: int = 0
    mask: int = 0


@dataclass(eq=False)
class Task:
    """One thread; for now every task leads its own thread group (tgid == tid)."""

    kernel: Kernel
    tid: int
    regs: Registers
    mm: MemoryManager
    fs: FSContext
    fdtable: FDTable
    context: Context | None = None
    parent: Task | None = None
    comm: str = ""
    rlimits: dict[int, tuple[int, int]] = field(default_factory=default_rlimits)
    clear_child_tid: int = 0
    robust_list: tuple[int, int] = (0, 0)
    sigmask: int = 0
    actions: dict[int, SignalAction] = field(default_factory=dict)
    altstack: tuple[int, int, int] = (0, 2, 0)  # (sp, flags=SS_DISABLE, size)
    pdeath_signal: int = 0
    no_new_privs: bool = False
    #: Monotonic ns when the task was created (/proc/PID/stat starttime).
    start_time: int = 0
    #: Child processes, live or zombie, until reaped by wait4/waitid.
    children: list[Task] = field(default_factory=list)
    #: How the task ended, once it has (a zombie until its parent reaps it).
    exit_status: ExitStatus | None = None
    #: A signal whose default action ends the task, to act on before it runs again.
    kill_signal: int = 0
    #: The vfork child this task waits for: it runs again once the child has
    #: exec'd or exited (Linux ``wait_for_vfork_done``).
    vfork_child: Task | None = None
    #: The mask to restore after the handler when rt_sigsuspend replaced it.
    suspend_mask: int | None = None
    #: When a parked sleep is due: (clock id, ns on that clock); None otherwise.
    wake_at: tuple[int, int] | None = None
    #: Pending signals (bit n-1 for signal n) and the siginfo each carries.
    pending: int = 0
    siginfo: dict[int, bytes] = field(default_factory=dict)
    pgid: int = 0
    sid: int = 0

    @property
    def tgid(self) -> int:
        return self.tid

    @property
    def creds(self) -> Credentials:
        return self.fs.creds

    def rlimit(self, name: str) -> int:
        """The soft limit ``name`` (``"RLIMIT_NOFILE"``)."""
        return self.rlimits[RLIMIT[name]][0]
