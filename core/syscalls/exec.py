"""execve(2) and execveat(2) (Linux ``fs/exec.c``, ``fs/binfmt_script.c``;
gVisor ``syscalls/linux/sys_thread.go`` Execve).

The same task (and pid) runs a new program: its memory is replaced, file
descriptors marked close-on-exec are closed, caught signals are reset to
their default action and the alternate signal stack is dropped. ``#!``
scripts run their interpreter, nesting at most 4 deep (Linux
``BINPRM_MAX_RECURSION``).
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..kernel.task import SignalAction
from ..vfs.mount import VirtualDentry
from ..vfs.namei import PATH_MAX
from . import strace_log, syscall
from .fs import AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, lookup_at

if TYPE_CHECKING:
    from ..kernel.task import Task

#: Linux's limit on the strings of argv plus envp (``MAX_ARG_STRINGS``).
MAX_ARG_STRINGS = 0x7FFFFFFF
ARG_MAX = 2 * 1024 * 1024
BINPRM_BUF_SIZE = 256
MAX_SCRIPT_DEPTH = 4


def _strings(task: Task, addr: int) -> list[str]:
    """A NULL-terminated array of C strings at ``addr`` (NULL: empty); E2BIG
    past ARG_MAX bytes in all."""
    out: list[str] = []
    if not addr:
        return out
    total = 0
    while True:
        (ptr,) = struct.unpack("<Q", task.mm.copy_in(addr + 8 * len(out), 8))
        if not ptr:
            return out
        s = task.mm.read_cstring(ptr, 32 * 4096)
        total += len(s) + 1 + 8
        if total > ARG_MAX:
            raise SyscallError(errno.E2BIG)
        out.append(os.fsdecode(s))


def _script(task: Task, vd: VirtualDentry) -> tuple[str, str | None] | None:
    """(interpreter, optional argument) when ``vd`` is a ``#!`` script."""
    from ..vfs.file import FileDescription

    desc = FileDescription(vd, os.O_RDONLY)
    try:
        head = desc.pread(BINPRM_BUF_SIZE, 0)
    finally:
        desc.dec_ref()
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    if not line:
        raise SyscallError(errno.ENOEXEC)
    parts = line.split(None, 1)
    interp = os.fsdecode(parts[0])
    arg = os.fsdecode(parts[1].strip()) if len(parts) > 1 and parts[1].strip() else None
    return interp, arg


def do_execve(task: Task, vd: VirtualDentry, path: str, argv: list[str], envp: list[str]) -> int:
    kernel = task.kernel
    if kernel.strace:
        strace_log.info("[%4d] execve(%r, %r, [%d vars]) ...", task.tid, path, argv, len(envp))
    for _ in range(MAX_SCRIPT_DEPTH + 1):
        if not vd.inode.is_regular():
            raise SyscallError(errno.EACCES)
        script = _script(task, vd) if vd.inode.size >= 2 else None
        if script is None:
            kernel.load_program(task, vd, path, argv, envp)
            break
        interp, arg = script
        argv = [interp, *([arg] if arg else []), path, *argv[1:]]
        path = interp
        vd = lookup_at(task, AT_FDCWD, interp, 0)
    else:
        raise SyscallError(errno.ELOOP)
    # Past the point of no return (Linux begin_new_exec): the other threads
    # end, a vfork parent goes on, and what was shared with other processes
    # (the FD table, the dispositions) becomes the task's own.
    kernel.exec_dethread(task)
    if any(t.fdtable is task.fdtable for t in kernel.tasks.values() if t is not task and t.exit_status is None):
        old = task.fdtable
        task.fdtable = old.fork()
    task.fdtable.close_on_exec()
    # Caught signals return to SIG_DFL; ignored ones stay ignored.
    task.actions = {sig: (SignalAction() if a.handler not in (0, 1) else a) for sig, a in task.actions.items()}
    task.altstack = (0, 2, 0)
    task.clear_child_tid = 0
    task.robust_list = (0, 0)
    return 0


@syscall("execve", "spp")
def sys_execve(task: Task, path: int, argv: int, envp: int) -> int:
    p = os.fsdecode(task.mm.read_cstring(path, PATH_MAX))
    args, env = _strings(task, argv), _strings(task, envp)
    vd = lookup_at(task, AT_FDCWD, p, 0)
    return do_execve(task, vd, p, args, env)


@syscall("execveat", "ispp")
def sys_execveat(task: Task, dirfd: int, path: int, argv: int, envp: int, flags: int) -> int:
    if flags & ~(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW):
        raise SyscallError(errno.EINVAL)
    p = os.fsdecode(task.mm.read_cstring(path, PATH_MAX))
    args, env = _strings(task, argv), _strings(task, envp)
    vd = lookup_at(task, dirfd, p, flags)
    if flags & AT_SYMLINK_NOFOLLOW and vd.inode.is_symlink():
        raise SyscallError(errno.ELOOP)
    name = p if p.startswith("/") else f"/dev/fd/{dirfd & 0xFFFFFFFF}" + (f"/{p}" if p else "")
    return do_execve(task, vd, name, args, env)
