"""fs_9p: the root and bind mounts, served by the gofer over 9P2000.L (proxy
file access) or opened by the sentry itself (direct file access).

Mount names and data follow gVisor ``runsc/boot/fs.go`` (commit 80bdf8a4):
under proxy access a bind mount is ``9p`` with
``trans=fd,rfdno=N,wfdno=N,privateunixsocket=true``, N being the mount's gofer
fd; under direct access it is ``hostfs`` with
``root=<host path>,dont_translate_ownership=true``.
"""

from __future__ import annotations

from pyrunsc.core.config import Config
from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.mounts import FdDispenser
from pyrunsc.core.plugins import Register
from pyrunsc.core.spec import Mount
from pyrunsc.core.vfs.filesystem import FilesystemType


class NinePFS(FilesystemType):
    """9p: a 9P2000.L client on one gofer connection per mount."""

    name = "9p"
    mount_types = ("bind",)

    @classmethod
    def mount_data(cls, mount: Mount, config: Config, fds: FdDispenser) -> tuple[str, list[str]]:
        if config.file_access == "direct":
            return HostFS.mount_data(mount, config, fds)
        fd = fds.remove()
        return cls.name, ["trans=fd", f"rfdno={fd}", f"wfdno={fd}", "privateunixsocket=true"]


class HostFS(FilesystemType):
    """hostfs: host files opened directly by the sentry (``--file-access direct``)."""

    name = "hostfs"

    @classmethod
    def mount_data(cls, mount: Mount, config: Config, fds: FdDispenser) -> tuple[str, list[str]]:
        if not mount.source:
            raise ValueError("a bind mount needs a source")
        return cls.name, [f"root={mount.source}", "dont_translate_ownership=true"]


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(NinePFS)
    register.add_filesystem(HostFS)
