"""Anonymous inodes: the files eventfd(2), epoll_create(2) and their kin give
(Linux ``fs/anon_inodes.c``).

Linux hands every such file the same inode on an internal mount
(``anon_inode_inode``: mode 0600 without a file type, owned by root); the
file's name is ``anon_inode:[eventfd]``, ``anon_inode:[eventpoll]``, which
is what readlink of ``/proc/self/fd/N`` shows. :func:`anon_file` makes one.
"""

from __future__ import annotations

from collections.abc import Callable

from .file import FileDescription, FileOps
from .inode import Inode, StatFS, Superblock
from .mount import Dentry, Mount, VirtualDentry

ANON_INODE_FS_MAGIC = 0x09041934


class AnonSuperblock(Superblock):
    """anon_inodefs: one inode for every anonymous file."""

    def __init__(self) -> None:
        super().__init__("anon_inodefs", ANON_INODE_FS_MAGIC)
        self.inode = AnonInode(self)

    def root(self) -> Inode:
        return self.inode

    def statfs(self) -> StatFS:
        return StatFS(type=ANON_INODE_FS_MAGIC, bsize=4096, blocks=0, bfree=0, bavail=0, files=0, ffree=0)


class AnonInode(Inode):
    """Linux ``anon_inode_inode``: mode 0600 with no type bits, uid and gid 0."""

    def __init__(self, sb: AnonSuperblock) -> None:
        super().__init__(sb, 0o600)
        self.btime = None


_mount: Mount | None = None


def anon_mount() -> Mount:
    """The internal anon_inodefs mount (Linux ``anon_inode_mnt``), made once
    per sentry and attached to no namespace."""
    global _mount
    if _mount is None:
        from ..mounts import MountFlags

        sb = AnonSuperblock()
        _mount = Mount(sb, Dentry(sb.inode), MountFlags(strict_atime=True), device="anon_inodefs",
                       source="anon_inodefs")
    return _mount


def anon_file(name: str, flags: int, ops: Callable[[FileDescription], FileOps]) -> FileDescription:
    """A new file description named ``anon_inode:[name]`` on the shared
    anonymous inode, with ``flags`` (access mode and status flags) and the
    operations ``ops`` makes (Linux ``anon_inode_getfile``)."""
    mount = anon_mount()
    vd = VirtualDentry(mount, Dentry(mount.root.inode, f"anon_inode:[{name}]"))
    return FileDescription(vd, flags, ops)
