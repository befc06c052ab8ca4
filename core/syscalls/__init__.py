"""The system call table (gVisor ``pkg/sentry/syscalls/linux``; Linux
``arch/x86/entry/syscalls/syscall_64.tbl``).

Handlers are small functions registered by name with :func:`syscall`; each
decodes its arguments, calls into the VFS, mm or kernel, and returns the
result, or raises SyscallError for ``-errno``. A number with no handler
returns ENOSYS and is logged once by name.

Importing this package registers every handler (the modules below).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SyscallError
from .numbers import NAMES, NUMBERS

if TYPE_CHECKING:
    from ..kernel.task import Task

log = logging.getLogger("pyrunsc.syscalls")
strace_log = logging.getLogger("pyrunsc.strace")

Handler = Callable[..., int]


@dataclass
class Syscall:
    """One table entry: ``args`` are strace formats, one per argument:
    ``i`` int, ``x`` hex, ``s`` path string, ``b`` buffer written by the
    caller (its length is the next argument), ``o`` buffer the call fills,
    ``p`` pointer."""

    nr: int
    name: str
    fn: Handler
    args: str
    #: How many of the six argument registers the handler takes.
    nargs: int


TABLE: dict[int, Syscall] = {}
_warned: set[int] = set()


def syscall(name: str, args: str = "") -> Callable[[Handler], Handler]:
    """Register the decorated handler for system call ``name``."""

    def register(fn: Handler) -> Handler:
        nr = NUMBERS[name]
        TABLE[nr] = Syscall(nr, name, fn, args, fn.__code__.co_argcount - 1)
        return fn

    return register


class Block(Exception):
    """Raised by a handler whose call must wait (wait4 with no zombie child, a
    read of an empty pipe): the task sleeps and the same call is served again
    once other tasks have run. Nothing may have changed before raising it,
    except what the call keeps in ``task.wait`` (``core.kernel.wait.Wait``:
    its deadline, the host fds it waits on), which is dropped when the call
    ends."""


def handler_pending(task: Task) -> bool:
    """Whether a signal that will run a handler is pending and unblocked.

    A parked call that Linux never restarts after a handler (sleeps return
    -ERESTART_RESTARTBLOCK, pause and sigsuspend -ERESTARTNOHAND) checks this
    when it is served again, and fails EINTR, whatever SA_RESTART says
    (signal(7), "Interruption of system calls by signal handlers"). Other
    parked calls are interrupted by the kernel (EINTR, or a restart with
    SA_RESTART)."""
    from ..kernel import signals

    sig = signals.deliverable(task)
    return sig != 0 and signals.action(task, sig).handler not in (0, 1)


class TaskExit(Exception):
    """Raised by exit and exit_group: the task (or its thread group) ends."""

    def __init__(self, status: int, group: bool) -> None:
        self.status = status
        self.group = group
        super().__init__(status)


MASK64 = (1 << 64) - 1


def to_signed(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v


#: Indexes into Registers.regs (user_regs_struct order), for the hot path.
_RAX, _ORIG_RAX = 10, 15


def dispatch(task: Task) -> None:
    """Serve the system call in ``task.regs``; sets ``rax``. TaskExit propagates."""
    regs = task.regs
    g = regs.regs
    nr = g[_ORIG_RAX]
    entry = TABLE.get(nr)
    args = (g[14], g[13], g[12], g[7], g[9], g[8])  # rdi rsi rdx r10 r8 r9
    if entry is None:
        if nr not in _warned:
            _warned.add(nr)
            log.info("unsupported system call %s (%d): returning ENOSYS", NAMES.get(nr, f"#{nr}"), nr)
        ret = -errno.ENOSYS
    else:
        try:
            ret = entry.fn(task, *args[: entry.nargs])
        except SyscallError as e:
            ret = -e.errno
        except Block:
            raise
        except TaskExit:
            if task.kernel.strace:
                strace_log.info("[%4d] %s(%s) = ?", task.tid, entry.name, format_args(task, entry, args))
            raise
        except Exception:
            # A bug in a handler: say which call, then let the sandbox fail loudly.
            log.exception("internal error serving %s for task %d", entry.name, task.tid)
            raise
        task.wait = None  # the call ended: what it waited for is over
    if task.kernel.strace:
        name = entry.name if entry else NAMES.get(nr, str(nr))
        if regs is not task.regs:
            shown = "..."  # execve replaced the memory the arguments pointed into
        else:
            shown = format_args(task, entry, args) if entry else ", ".join(hex(a) for a in args)
        strace_log.info("[%4d] %s(%s) = %s", task.tid, name, shown, format_result(ret))
    # task.regs, not regs: execve replaces the registers (and returns 0 in them).
    task.regs.regs[_RAX] = ret & MASK64


def format_result(ret: int) -> str:
    if -4095 <= ret < 0:
        return f"-1 {errno.errorcode.get(-ret, -ret)} ({os.strerror(-ret)})"
    return hex(ret) if ret > 0xFFFF else str(ret)


def format_args(task: Task, entry: Syscall | None, args: tuple[int, ...]) -> str:
    """Arguments decoded for --strace, like runsc's strace output."""
    if entry is None:
        return ", ".join(hex(a) for a in args)
    out: list[str] = []
    for i, kind in enumerate(entry.args):
        v = args[i]
        out.append(_format_one(task, kind, v, args[i + 1] if i + 1 < len(args) else 0))
    return ", ".join(out)


_OPEN_FLAGS = [(getattr(os, n), n) for n in (
    "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC", "O_DIRECT", "O_LARGEFILE",
    "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_PATH",
)]


def format_open_flags(v: int) -> str:
    """``O_WRONLY|O_CREAT|O_TRUNC`` for open(2) flags, as strace shows them."""
    names = [("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[v & 3]]
    rest = v & ~3
    for bit, name in _OPEN_FLAGS:
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def _format_one(task: Task, kind: str, v: int, nxt: int) -> str:
    try:
        if kind == "i":
            return str(to_signed(v) if v >> 63 else v)
        if kind == "d":  # a dirfd
            fd = v & 0xFFFFFFFF
            return "AT_FDCWD" if fd == 0xFFFFFF9C else str(fd - (1 << 32) if fd >> 31 else fd)
        if kind == "O":
            return format_open_flags(v & 0xFFFFFFFF)
        if kind == "m":  # a mode
            return f"{v & 0o7777:#o}"
        if kind == "s":
            return repr(task.mm.read_cstring(v, 4096).decode("utf-8", "backslashreplace"))
        if kind == "b":
            data = task.mm.copy_in(v, min(nxt, 64))
            return f"{v:#x} {data!r}{'...' if nxt > 64 else ''}"
    except SyscallError:
        return f"{v:#x}"
    return hex(v)


def _load() -> None:
    import importlib

    for module in ("exec", "fs", "futex", "info", "mm", "poll", "process", "signal", "time"):
        importlib.import_module(f"{__name__}.{module}")


def handler_names() -> list[str]:
    return sorted(e.name for e in TABLE.values())


_load()
