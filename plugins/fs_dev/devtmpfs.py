"""What devtmpfs holds when mounted (Linux ``drivers/base/devtmpfs.c`` with the
nodes of ``drivers/char/mem.c`` and ``drivers/tty``; gVisor ``fsimpl/dev``
``userspaceInit``).

devtmpfs is a tmpfs (mode 0755) populated with:

- character devices, owned by root: null 1:3, zero 1:5, full 1:7, random 1:8,
  urandom 1:9, tty 5:0 and ptmx 5:2 with mode 0666, console 5:1 with mode
  0600 (Linux's modes);
- the symlinks systemd makes (``dev_setup``): fd -> /proc/self/fd, stdin ->
  /proc/self/fd/0, stdout -> /proc/self/fd/1, stderr -> /proc/self/fd/2;
- the directories ``shm`` (mode 1777: being part of this tmpfs, it behaves
  as a tmpfs; the loader may mount another over it) and ``pts`` (0755, where
  the loader mounts devpts).
"""

from __future__ import annotations

from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.vfs.inode import S_IFCHR, S_IFDIR, Inode, makedev

from .devices import CONSOLE_MINOR, TTY_MINOR
from .devpts import PTMX_MINOR, TTYAUX_MAJOR
from .memdev import MEM_DEVICES, MEM_MAJOR

#: (name, major, minor, permission bits) of each device node.
DEVICE_NODES: tuple[tuple[str, int, int, int], ...] = (
    *((name, MEM_MAJOR, minor, 0o666) for minor, name, _ in MEM_DEVICES),
    ("tty", TTYAUX_MAJOR, TTY_MINOR, 0o666),
    ("console", TTYAUX_MAJOR, CONSOLE_MINOR, 0o600),
    ("ptmx", TTYAUX_MAJOR, PTMX_MINOR, 0o666),
)

#: (name, target) of each symlink.
SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)

#: (name, permission bits) of each directory.
DIRECTORIES = (("shm", 0o1777), ("pts", 0o755))


def populate(root: Inode) -> None:
    """Create the nodes, symlinks and directories above in ``root`` (a tmpfs
    root directory), as root. SyscallError (EEXIST) if one is already there."""
    creds = Credentials()
    for name, major, minor, perms in DEVICE_NODES:
        root.mknod(name, S_IFCHR | perms, makedev(major, minor), creds)
    for name, target in SYMLINKS:
        root.symlink(name, target, creds)
    for name, perms in DIRECTORIES:
        root.mkdir(name, S_IFDIR | perms, creds)
