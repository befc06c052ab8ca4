"""Tasks and thread groups (gVisor ``kernel.Task``, ``kernel.ThreadGroup``;
Linux ``struct task_struct``, ``struct signal_struct``).

A task is one thread of application code: its registers, its platform
context, its address space (``mm``), its filesystem view (``fs``: root, cwd,
credentials, umask), its FD table and its signal dispositions, each of which
may be shared with other tasks (CLONE_VM, CLONE_FS, CLONE_FILES,
CLONE_SIGHAND). A thread group is a process: the tasks that share a PID.
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
    from .timers import IntervalTimer
    from .wait import TaskWaker, Wait

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
class ThreadGroup:
    """A process: the tasks sharing one PID (gVisor ``kernel.ThreadGroup``;
    Linux ``struct signal_struct`` with the process relations of
    ``task_struct``).

    What the group shares: its parent and children (other groups), process
    group and session, limits, the signals sent to the process (``pending``),
    job-control state, interval timers and POSIX timers, and how it ended.
    """

    tgid: int
    leader: Task
    tasks: list[Task] = field(default_factory=list)
    parent: ThreadGroup | None = None
    #: Child processes, live or zombie, until reaped by wait4/waitid.
    children: list[ThreadGroup] = field(default_factory=list)
    rlimits: dict[int, tuple[int, int]] = field(default_factory=default_rlimits)
    pgid: int = 0
    sid: int = 0
    #: Signals sent to the process (bit n-1 for signal n) and their siginfo
    #: (one for a standard signal, each one sent for a real-time signal).
    pending: int = 0
    siginfo: dict[int, list[bytes]] = field(default_factory=dict)
    #: How the process ended, once its last task has (a zombie until reaped).
    exit_status: ExitStatus | None = None
    #: Set when exit_group or a fatal signal ends every task of the group.
    group_exit: ExitStatus | None = None
    #: Job control (Linux ``SIGNAL_STOP_STOPPED``): stopped by this signal.
    stop_signal: int = 0
    #: A stop or continue the parent has not yet collected with WUNTRACED /
    #: WCONTINUED: ("stopped", signo) or ("continued", SIGCONT).
    report: tuple[str, int] | None = None
    #: setitimer's ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF (by which), and
    #: timer_create's POSIX timers (by id).
    itimers: dict[int, IntervalTimer] = field(default_factory=dict)
    timers: dict[int, IntervalTimer] = field(default_factory=dict)
    start_time: int = 0
    #: The exit signal sent to the parent (SIGCHLD, or clone's low byte).
    exit_signal: int = 17

    @property
    def live_tasks(self) -> list[Task]:
        return [t for t in self.tasks if t.exit_status is None]


@dataclass(eq=False)
class Task:
    """One thread of a :class:`ThreadGroup` (gVisor ``kernel.Task``)."""

    kernel: Kernel
    tid: int
    regs: Registers
    mm: MemoryManager
    fs: FSContext
    fdtable: FDTable
    context: Context | None = None
    tg: ThreadGroup = None  # type: ignore[assignment]  # set by the kernel at creation
    comm: str = ""
    clear_child_tid: int = 0
    robust_list: tuple[int, int] = (0, 0)
    sigmask: int = 0
    #: Signal dispositions: one dict shared by the tasks of a thread group
    #: (and by CLONE_SIGHAND processes), Linux ``struct sighand_struct``.
    actions: dict[int, SignalAction] = field(default_factory=dict)
    altstack: tuple[int, int, int] = (0, 2, 0)  # (sp, flags=SS_DISABLE, size)
    pdeath_signal: int = 0
    no_new_privs: bool = False
    #: Monotonic ns when the task was created (/proc/PID/stat starttime).
    start_time: int = 0
    #: How the task ended, once it has.
    exit_status: ExitStatus | None = None
    #: A signal whose default action ends the task, to act on before it runs again.
    kill_signal: int = 0
    #: The mask to restore after the handler when rt_sigsuspend replaced it.
    suspend_mask: int | None = None
    #: Put ``suspend_mask`` back once pending signals were acted on without
    #: a handler (the interrupted call then restarts).
    restore_sigmask: bool = False
    #: When a parked sleep is due: (clock id, ns on that clock); None otherwise.
    wake_at: tuple[int, int] | None = None
    #: What a parked call waits on, with a ``cancel()`` the kernel calls when
    #: a signal interrupts it (a futex waiter, a vfork parent); None otherwise.
    waiter: object | None = None
    #: What a parked call waits for (deadline, host fds), kept across retries.
    wait: Wait | None = None
    #: Wakes the task when a file it waits on changes (made on first use).
    waker: TaskWaker | None = None
    #: Signals sent to this thread only (tgkill, faults), and their siginfo.
    pending: int = 0
    siginfo: dict[int, list[bytes]] = field(default_factory=dict)
    #: The vfork child this task waits for (Linux ``vfork_done``).
    vfork_child: Task | None = None
    #: Set on a vfork child until it execs or exits.
    vfork_parent: Task | None = None

    @property
    def tgid(self) -> int:
        return self.tg.tgid

    @property
    def parent(self) -> Task | None:
        """The parent process's leader, or None for init."""
        p = self.tg.parent
        return p.leader if p is not None else None

    @property
    def pgid(self) -> int:
        return self.tg.pgid

    @property
    def sid(self) -> int:
        return self.tg.sid

    @property
    def rlimits(self) -> dict[int, tuple[int, int]]:
        return self.tg.rlimits

    @property
    def creds(self) -> Credentials:
        return self.fs.creds

    def cancel_waiter(self) -> None:
        """Drop what a parked call waits on (:attr:`waiter`), calling its
        ``cancel()`` if it has one: the task exits, execs or is interrupted."""
        waiter, self.waiter = self.waiter, None
        cancel = getattr(waiter, "cancel", None)
        if cancel is not None:
            cancel()

    def rlimit(self, name: str) -> int:
        """The soft limit ``name`` (``"RLIMIT_NOFILE"``)."""
        return self.rlimits[RLIMIT[name]][0]
