"""fs_sys: the sysfs filesystem (Linux ``fs/sysfs``, gVisor ``fsimpl/sys``);
the tree is in :mod:`.sysfs`."""

from __future__ import annotations

import errno

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Register
from pyrunsc.core.vfs.filesystem import FilesystemType, MountContext
from pyrunsc.core.vfs.inode import Superblock

from .sysfs import SysfsSuperblock, sandbox_cpus

__all__ = ["Sysfs", "SysfsSuperblock"]


class Sysfs(FilesystemType):
    """sysfs; spec mounts of type ``none`` are sysfs too, as in runsc. Takes no
    mount data (EINVAL, as Linux answers an unknown sysfs parameter)."""

    name = "sysfs"
    mount_types = ("sysfs", "none")

    @classmethod
    def mount(cls, ctx: MountContext, source: str, flags: MountFlags, data: str) -> Superblock:
        if data.strip(","):
            raise SyscallError(errno.EINVAL, f"sysfs takes no mount data, got {data!r}")
        return SysfsSuperblock(sandbox_cpus(ctx.kernel), clock=ctx.clock)


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(Sysfs)
