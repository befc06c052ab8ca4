"""fs_tmpfs: the in-memory filesystem (Linux ``mm/shmem.c``, gVisor ``fsimpl/tmpfs``)."""

from __future__ import annotations

import errno

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Register
from pyrunsc.core.vfs.filesystem import FilesystemType, MountContext
from pyrunsc.core.vfs.inode import Superblock
from pyrunsc.core.vfs.options import memparse, parse_id, parse_mode

from .tmpfs import TmpfsSuperblock


class Tmpfs(FilesystemType):
    """tmpfs: takes ``mode``, ``uid``, ``gid``, ``size`` and ``nr_inodes`` (Linux
    ``shmem_parse_one``); ``size`` may be a percentage of memory."""

    name = "tmpfs"
    mount_types = ("tmpfs",)
    data_keys = ("mode", "uid", "gid", "size", "nr_inodes")

    @classmethod
    def check_option(cls, key: str, value: str) -> None:
        if key == "mode":
            parse_mode(value)
        elif key in ("uid", "gid"):
            parse_id(value)
        elif key == "size":
            memparse(value, percent=True)
        elif key == "nr_inodes":
            memparse(value)

    @classmethod
    def mount(cls, ctx: MountContext, source: str, flags: MountFlags, data: str) -> Superblock:
        if ctx.memfile is None:
            raise SyscallError(errno.ENODEV, "tmpfs needs the sandbox's memory file")
        for key, value in (item.partition("=")[::2] for item in data.split(",") if item):
            if key not in cls.data_keys:
                raise SyscallError(errno.EINVAL, f"tmpfs: unknown option {key!r}")
            try:
                cls.check_option(key, value)
            except ValueError as e:
                raise SyscallError(errno.EINVAL, f"tmpfs: {e}") from None
        return TmpfsSuperblock(ctx.memfile, data, clock=ctx.clock)


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(Tmpfs)
