"""fs_proc: the proc filesystem (Linux ``fs/proc``, gVisor ``fsimpl/proc``).

Built from the sentry's own state, never from the host's /proc: the tree is
in :mod:`.procfs` (root, system-wide files, ``sys/``) and :mod:`.tasks`
(``/proc/[pid]``).
"""

from __future__ import annotations

import errno

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Register
from pyrunsc.core.vfs.filesystem import FilesystemType, MountContext
from pyrunsc.core.vfs.inode import Superblock

from .procfs import PROC_SUPER_MAGIC, ProcSuperblock

__all__ = ["PROC_SUPER_MAGIC", "ProcSuperblock", "Procfs"]


class Procfs(FilesystemType):
    """proc: a view of the sandbox's tasks and kernel; takes no mount data
    (EINVAL, where Linux would parse hidepid, gid and subset)."""

    name = "proc"
    mount_types = ("proc",)

    @classmethod
    def mount(cls, ctx: MountContext, source: str, flags: MountFlags, data: str) -> Superblock:
        """A proc instance for ``ctx.kernel`` (taken when it is set, if the
        kernel does not exist yet) listing ``ctx.filesystems``."""
        if data.strip(","):
            raise SyscallError(errno.EINVAL, f"proc takes no mount data, got {data!r}")
        return ProcSuperblock(ctx.kernel, filesystems=ctx.filesystems, context=ctx, clock=ctx.clock)


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(Procfs)
