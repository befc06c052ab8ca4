"""fs_proc: the proc filesystem (Linux ``fs/proc``, gVisor ``fsimpl/proc``)."""

from __future__ import annotations

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.plugins import Register
from pyrunsc.core.vfs.filesystem import FilesystemType


class Procfs(FilesystemType):
    """proc: a view of the sandbox's tasks and kernel; takes no mount data."""

    name = "proc"
    mount_types = ("proc",)


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(Procfs)
