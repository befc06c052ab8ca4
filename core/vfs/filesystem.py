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

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..config import Config
    from ..mounts import FdDispenser
    from ..spec import Mount


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
