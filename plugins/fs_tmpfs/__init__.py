"""fs_tmpfs: the in-memory filesystem (Linux ``mm/shmem.c``, gVisor ``fsimpl/tmpfs``)."""

from __future__ import annotations

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.plugins import Register
from pyrunsc.core.vfs.filesystem import FilesystemType
from pyrunsc.core.vfs.options import memparse, parse_id, parse_mode


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


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(Tmpfs)
