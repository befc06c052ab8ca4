"""The contract between the VFS and filesystem plugins.

A filesystem plugin contributes :class:`FilesystemType` subclasses through the
``register_types`` hook (``register.add_filesystem(Tmpfs)``), the way tox
plugins register environment classes. A filesystem type is known by its
``name`` (Linux ``file_system_type.name``; the key of a restore environment's
mount sources) and owns the spec mount ``types`` it can serve.

Turning a spec mount into a filesystem name and mount data follows gVisor
``runsc/boot/fs.go`` ``getMountNameAndOptions`` (commit 80bdf8a4).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import SyscallError

if TYPE_CHECKING:
    from ..config import Config
    from ..mm.memfile import MemoryFile
    from ..mounts import FdDispenser, MountFlags
    from ..spec import Mount
    from .inode import Superblock
    from .vfs import VirtualFilesystem


@dataclass
class MountContext:
    """What a filesystem may need to mount: the VFS (its device registry), the
    memory file (tmpfs data), the realtime clock in ns, the kernel (proc reads
    its tasks), and the gofer connections by fd number (9p)."""

    vfs: VirtualFilesystem
    memfile: MemoryFile | None = None
    clock: Callable[[], int] = time.time_ns
    kernel: Any = None
    gofer: dict[int, Any] = field(default_factory=dict)
    #: Filesystem types by name (the plugin registry's), so that one
    #: filesystem can build on another (devtmpfs and overlays on tmpfs).
    filesystems: dict[str, type[FilesystemType]] = field(default_factory=dict)

    def new_superblock(self, fs_name: str, data: str = "", flags: MountFlags | None = None) -> Superblock:
        """Mount a fresh instance of the filesystem named ``fs_name``; ENODEV
        when no plugin provides it."""
        from ..mounts import MountFlags

        fs = self.filesystems.get(fs_name)
        if fs is None:
            raise SyscallError(errno.ENODEV, f"no filesystem {fs_name!r} is installed")
        return fs.mount(self, "none", flags or MountFlags(), data)


def parse_data(data: str) -> dict[str, str]:
    """``"mode=1777,size=64m"`` -> ``{"mode": "1777", "size": "64m"}``; a bare
    word maps to ""."""
    out: dict[str, str] = {}
    for item in data.split(","):
        if item:
            key, _, value = item.partition("=")
            out[key] = value
    return out


class FilesystemType:
    """A kind of filesystem, e.g. tmpfs; subclass it in a plugin.

    Class attributes:
      ``name``: the filesystem name, e.g. ``"tmpfs"`` or ``"9p"``.
      ``mount_types``: spec ``mounts[].type`` values this filesystem serves
      (``("bind",)`` for 9p, ``("sysfs", "none")`` for sysfs); may be empty
      for a filesystem reached only through another's :meth:`mount_data`.
      ``data_keys``: the ``key=value`` mount options it takes as mount data, in
      the order they are documented. Any other ``key=value`` option is an error,
      as Linux answers EINVAL.
    """

    name: ClassVar[str] = ""
    mount_types: ClassVar[tuple[str, ...]] = ()
    data_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_option(cls, key: str, value: str) -> None:
        """Validate one ``key=value`` option whose key is in ``data_keys``.

        Raises ValueError with a message naming what is wrong with ``value``.
        The default accepts any value.
        """

    @classmethod
    def mount_data(cls, mount: Mount, config: Config, fds: FdDispenser) -> tuple[str, list[str]]:
        """The filesystem name and mount data options (``["uid=1022"]``) for ``mount``.

        Called once per mount, in mount order; a filesystem served by the gofer
        takes its next fd from ``fds``. The default is ``cls.name`` with the
        mount's ``key=value`` options whose key is in ``data_keys``, in the
        order the spec gives them. Raises ValueError for a mount it cannot serve.
        """
        data = [o for o in mount.options if "=" in o and o.split("=", 1)[0] in cls.data_keys]
        return cls.name, data

    @classmethod
    def mount(cls, ctx: MountContext, source: str, flags: MountFlags, data: str) -> Superblock:
        """A new superblock for this filesystem (Linux ``fs_context`` ``get_tree``).

        ``data`` is the mount data :meth:`mount_data` produced (``"uid=1022"``).
        Raises SyscallError: EINVAL for bad data, ENODEV when this filesystem
        cannot be mounted inside the sentry.
        """
        raise SyscallError(errno.ENODEV, f"{cls.name} cannot be mounted here")
