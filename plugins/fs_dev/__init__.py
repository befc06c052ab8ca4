"""fs_dev: devtmpfs at ``/dev`` and devpts at ``/dev/pts`` (gVisor ``fsimpl/dev``,
``fsimpl/devpts``)."""

from __future__ import annotations

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.plugins import Register
from pyrunsc.core.vfs.filesystem import FilesystemType


class Devtmpfs(FilesystemType):
    """devtmpfs: the sentry's /dev (null, zero, full, random, urandom, tty, ...)."""

    name = "devtmpfs"
    mount_types = ("devtmpfs",)


class Devpts(FilesystemType):
    """devpts: pseudo-terminals, at /dev/pts."""

    name = "devpts"
    mount_types = ("devpts",)


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(Devtmpfs)
    register.add_filesystem(Devpts)
