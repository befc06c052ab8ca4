"""fs_sys: the sysfs filesystem (Linux ``fs/sysfs``, gVisor ``fsimpl/sys``)."""

from __future__ import annotations

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.plugins import Register
from pyrunsc.core.vfs.filesystem import FilesystemType


class Sysfs(FilesystemType):
    """sysfs; spec mounts of type ``none`` are sysfs too, as in runsc."""

    name = "sysfs"
    mount_types = ("sysfs", "none")


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(Sysfs)
