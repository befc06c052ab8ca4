"""fs_dev: devtmpfs at ``/dev`` and devpts at ``/dev/pts`` (gVisor ``fsimpl/dev``,
``fsimpl/devpts``, ``devices/memdev``, ``devices/ttydev``).

- :mod:`.devtmpfs`: what ``/dev`` holds; :mod:`.devices`: the character
  devices registered with the VFS; :mod:`.memdev`: null, zero, full, random,
  urandom; :mod:`.devpts` and :mod:`.tty`: pseudo-terminals.
"""

from __future__ import annotations

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Register
from pyrunsc.core.vfs.filesystem import FilesystemType, MountContext
from pyrunsc.core.vfs.inode import Superblock

from .devices import dev_state, install_devices
from .devpts import DevptsOptions, DevptsSuperblock
from .devtmpfs import populate

__all__ = ["Devpts", "Devtmpfs", "dev_state", "install_devices"]


class Devtmpfs(FilesystemType):
    """devtmpfs: the sentry's /dev, a tmpfs (``mode=755``) filled by
    :func:`.devtmpfs.populate`. Mount data are tmpfs options (``size=``,
    ``mode=``, ...), EINVAL otherwise; ENODEV without tmpfs or its memory
    file. Mounting also registers the sentry's devices with the VFS."""

    name = "devtmpfs"
    mount_types = ("devtmpfs",)

    @classmethod
    def mount(cls, ctx: MountContext, source: str, flags: MountFlags, data: str) -> Superblock:
        sb = ctx.new_superblock("tmpfs", "mode=755" + ("," + data if data else ""), flags)
        sb.fs_name = cls.name
        install_devices(ctx.vfs.devices)
        populate(sb.root())
        return sb


class Devpts(FilesystemType):
    """devpts: pseudo-terminals, at /dev/pts (:mod:`.devpts` gives the mount
    options and sharing rules). The first instance mounted in a kernel is the
    one ``/dev/ptmx`` opens ptys on."""

    name = "devpts"
    mount_types = ("devpts",)

    @classmethod
    def mount(cls, ctx: MountContext, source: str, flags: MountFlags, data: str) -> Superblock:
        opts = DevptsOptions.parse(data)
        state = install_devices(ctx.vfs.devices)
        if not opts.newinstance and state.initial_devpts is not None:
            return state.initial_devpts
        sb = DevptsSuperblock(ctx.vfs.devices, opts, clock=ctx.clock)
        if state.initial_devpts is None:
            state.initial_devpts = sb
        return sb


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(Devtmpfs)
    register.add_filesystem(Devpts)
