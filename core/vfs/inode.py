"""Inodes and superblocks: what a filesystem implements for the VFS.

The VFS (``core/vfs``) owns dentries, mounts, path walks, file descriptions and
permission checks; a filesystem owns its inodes (Linux ``struct inode`` and
``inode_operations``; gVisor ``vfs.FilesystemImpl`` split per inode). Every
operation a filesystem does not support raises :class:`SyscallError` with the
errno Linux gives (EPERM for mknod on a filesystem without it, ENOTDIR for a
directory operation on a file, ...).

Names are ``str`` decoded from bytes with ``os.fsdecode`` (UTF-8,
surrogateescape), so any byte string round-trips. Times are nanoseconds since
the epoch. The VFS checks permissions, name validity and mount flags before it
calls an inode; the inode checks what only it knows (ENOTEMPTY, ENOSPC, ...).
"""

from __future__ import annotations

import errno
import stat as st
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SyscallError

if TYPE_CHECKING:
    from ..kernel.auth import Credentials
    from .file import FileDescription, FileOps
    from .pipe import Pipe

S_IFMT = st.S_IFMT(0o177777)
S_IFREG, S_IFDIR, S_IFLNK = st.S_IFREG, st.S_IFDIR, st.S_IFLNK
S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK = st.S_IFCHR, st.S_IFBLK, st.S_IFIFO, st.S_IFSOCK
S_ISUID, S_ISGID, S_ISVTX = 0o4000, 0o2000, 0o1000

#: ``d_type`` values for getdents64 (Linux ``include/linux/fs_types.h``).
DT_UNKNOWN, DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = 0, 1, 2, 4, 6, 8, 10, 12


def dtype(mode: int) -> int:
    """The ``d_type`` of a file of ``mode``."""
    return {
        S_IFREG: DT_REG, S_IFDIR: DT_DIR, S_IFLNK: DT_LNK, S_IFCHR: DT_CHR,
        S_IFBLK: DT_BLK, S_IFIFO: DT_FIFO, S_IFSOCK: DT_SOCK,
    }.get(mode & S_IFMT, DT_UNKNOWN)


def makedev(major: int, minor: int) -> int:
    """Linux ``new_encode_dev``: a ``dev_t`` from major and minor numbers."""
    return (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12)


def major(dev: int) -> int:
    return (dev >> 8) & 0xFFF


def minor(dev: int) -> int:
    return (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


@dataclass
class Stat:
    """What stat(2) and statx(2) report. Times in ns; ``btime`` None when unknown."""

    dev: int
    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blksize: int
    blocks: int
    atime: int
    mtime: int
    ctime: int
    btime: int | None = None
    mount_id: int = 0


@dataclass
class StatFS:
    """What statfs(2) reports; sizes in ``bsize`` blocks."""

    type: int
    bsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    namelen: int = 255
    frsize: int = 4096
    flags: int = 0


@dataclass
class DirEntry:
    """One getdents64 entry. ``cookie`` is the offset to resume after it; a
    directory keeps each entry's cookie stable while other entries change."""

    name: str
    ino: int
    type: int
    cookie: int


@dataclass
class SetAttr:
    """Attribute changes for :meth:`Inode.setattr`; None leaves one as it is."""

    mode: int | None = None  # permission bits only
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: int | None = None
    mtime: int | None = None
    ctime: int | None = None


class Superblock:
    """One mounted instance of a filesystem (Linux ``struct super_block``).

    ``dev`` is the device number stat reports; ``fs_name`` the filesystem's
    name; ``magic`` statfs's ``f_type``. Subclasses hand out inode numbers with
    :meth:`next_ino` and may override :meth:`statfs`.
    """

    _next_dev = 0x100

    def __init__(
        self, fs_name: str, magic: int, *, read_only: bool = False, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.fs_name = fs_name
        self.magic = magic
        self.read_only = read_only
        #: Realtime in ns, for the times the filesystem keeps.
        self.now = clock
        Superblock._next_dev += 1
        self.dev = makedev(0, Superblock._next_dev)
        self._ino = 0

    def next_ino(self) -> int:
        self._ino += 1
        return self._ino

    def statfs(self) -> StatFS:
        return StatFS(type=self.magic, bsize=4096, blocks=0, bfree=0, bavail=0, files=0, ffree=0)

    def root(self) -> Inode:
        """The root directory's inode."""
        raise NotImplementedError

    #: Whether dentries of this filesystem stay valid once looked up. False for
    #: filesystems whose names come and go by themselves (proc's pids).
    cache_dentries = True


class Inode:
    """A file of any type; subclass it in a filesystem.

    Attributes mirror ``struct inode``: ``ino``, ``mode`` (type and permission
    bits), ``uid``, ``gid``, ``nlink``, ``rdev``, the times in ns and ``btime``
    (None where the filesystem has no birth time).
    """

    def __init__(self, sb: Superblock, mode: int, uid: int = 0, gid: int = 0, *, rdev: int = 0) -> None:
        self.sb = sb
        self.ino = sb.next_ino()
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.nlink = 2 if mode & S_IFMT == S_IFDIR else 1
        self.rdev = rdev
        now = sb.now()
        self.atime = self.mtime = self.ctime = now
        self.btime: int | None = now
        #: Open file descriptions on this inode; with ``nlink`` it decides
        #: when :meth:`released` runs.
        self.open_count = 0
        #: A FIFO's pipe, made by the VFS at first open.
        self.fifo: Pipe | None = None

    # Type tests.
    @property
    def type(self) -> int:
        return self.mode & S_IFMT

    def is_dir(self) -> bool:
        return self.type == S_IFDIR

    def is_symlink(self) -> bool:
        return self.type == S_IFLNK

    def is_regular(self) -> bool:
        return self.type == S_IFREG

    # Attributes.
    @property
    def size(self) -> int:
        return 0

    @property
    def blocks(self) -> int:
        """512-byte blocks allocated."""
        return 0

    def stat(self) -> Stat:
        return Stat(
            dev=self.sb.dev, ino=self.ino, mode=self.mode, nlink=self.nlink, uid=self.uid, gid=self.gid,
            rdev=self.rdev, size=self.size, blksize=4096, blocks=self.blocks, atime=self.atime,
            mtime=self.mtime, ctime=self.ctime, btime=self.btime,
        )

    def setattr(self, attrs: SetAttr) -> None:
        """Apply ``attrs``; the VFS has checked permission. ``size`` on a
        non-regular file is EINVAL (EISDIR for a directory)."""
        if attrs.size is not None:
            if self.is_dir():
                raise SyscallError(errno.EISDIR)
            self.truncate(attrs.size)
        self.apply_attrs(attrs)

    def apply_attrs(self, attrs: SetAttr) -> None:
        """Copy the mode bits, owner and times ``attrs`` gives onto this inode's
        fields (what a filesystem keeping attributes in memory stores)."""
        if attrs.mode is not None:
            self.mode = self.type | (attrs.mode & 0o7777)
        if attrs.uid is not None:
            self.uid = attrs.uid
        if attrs.gid is not None:
            self.gid = attrs.gid
        if attrs.atime is not None:
            self.atime = attrs.atime
        if attrs.mtime is not None:
            self.mtime = attrs.mtime
        if attrs.ctime is not None:
            self.ctime = attrs.ctime

    def truncate(self, size: int) -> None:
        raise SyscallError(errno.EINVAL)

    def gone(self) -> bool:
        """True once this inode can no longer be found by name, by the
        filesystem's own say (a dead task's /proc/<pid>): the dentry cache
        of a superblock that does not cache dentries then forgets it."""
        return False

    # Directory operations; ``name`` is one valid component.
    def lookup(self, name: str) -> Inode:
        """The child ``name``; ENOENT if absent, ENOTDIR on a non-directory."""
        raise SyscallError(errno.ENOTDIR)

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        """Entries after ``cookie`` (0: from the start), without ``.`` and ``..``,
        which the VFS adds with cookies 1 and 2; a directory's own cookies start at 3."""
        raise SyscallError(errno.ENOTDIR)

    def create(self, name: str, mode: int, creds: Credentials) -> Inode:
        """A new regular file (``mode`` includes S_IFREG); EEXIST if taken."""
        raise SyscallError(errno.ENOTDIR if not self.is_dir() else errno.EPERM)

    def mkdir(self, name: str, mode: int, creds: Credentials) -> Inode:
        raise SyscallError(errno.ENOTDIR if not self.is_dir() else errno.EPERM)

    def mknod(self, name: str, mode: int, rdev: int, creds: Credentials) -> Inode:
        """A FIFO, socket, device or regular file named ``name``."""
        raise SyscallError(errno.ENOTDIR if not self.is_dir() else errno.EPERM)

    def symlink(self, name: str, target: str, creds: Credentials) -> Inode:
        raise SyscallError(errno.ENOTDIR if not self.is_dir() else errno.EPERM)

    def link(self, name: str, inode: Inode) -> None:
        """A new name for ``inode`` (same superblock, not a directory)."""
        raise SyscallError(errno.ENOTDIR if not self.is_dir() else errno.EPERM)

    def unlink(self, name: str, child: Inode) -> None:
        """Remove the non-directory ``child`` named ``name``."""
        raise SyscallError(errno.ENOTDIR if not self.is_dir() else errno.EPERM)

    def rmdir(self, name: str, child: Inode) -> None:
        """Remove the empty directory ``child``; ENOTEMPTY otherwise."""
        raise SyscallError(errno.ENOTDIR if not self.is_dir() else errno.EPERM)

    def rename(self, old_name: str, new_dir: Inode, new_name: str, *, exchange: bool = False) -> None:
        """Move ``old_name`` here to ``new_name`` in ``new_dir`` (same superblock),
        replacing what is there (the VFS has checked types, emptiness and
        RENAME_NOREPLACE), or swap the two with ``exchange``."""
        raise SyscallError(errno.EPERM)

    def is_empty_dir(self) -> bool:
        return next(iter(self.iterate(0)), None) is None

    # Symlinks.
    def readlink(self) -> str:
        """A symlink's target; EINVAL for anything else."""
        raise SyscallError(errno.EINVAL)

    def get_link(self, ctx: Any) -> Any:
        """What following this symlink gives: its target path (``str``), or for
        a magic link (``/proc/self/fd/N``) a :class:`~.mount.VirtualDentry`."""
        return self.readlink()

    # Files.
    def open(self, fd: FileDescription) -> FileOps:
        """The operations of an open file description on this inode."""
        raise SyscallError(errno.ENXIO)

    def statfs(self) -> StatFS:
        return self.sb.statfs()

    # Extended attributes (Linux ``fs/xattr.c``); names carry their namespace
    # prefix ("user.x", "trusted.overlay.opaque"). The default has none.
    def getxattr(self, name: str) -> bytes:
        """ENODATA when unset; EOPNOTSUPP where the filesystem has no xattrs."""
        raise SyscallError(errno.EOPNOTSUPP)

    def setxattr(self, name: str, value: bytes, flags: int = 0) -> None:
        """``flags``: XATTR_CREATE (1, EEXIST if set), XATTR_REPLACE (2, ENODATA if unset)."""
        raise SyscallError(errno.EOPNOTSUPP)

    def listxattr(self) -> list[str]:
        return []

    def removexattr(self, name: str) -> None:
        raise SyscallError(errno.EOPNOTSUPP)

    def supports_tmpfile(self) -> bool:
        """Whether O_TMPFILE works in this directory."""
        return False

    def tmpfile(self, mode: int, creds: Credentials) -> Inode:
        raise SyscallError(errno.EOPNOTSUPP)

    # Data (regular files); the default is a file that holds nothing.
    def read(self, offset: int, length: int) -> bytes:
        raise SyscallError(errno.EINVAL)

    def write(self, offset: int, data: bytes) -> int:
        raise SyscallError(errno.EINVAL)

    def allocate(self, mode: int, offset: int, length: int) -> None:
        """fallocate(2); EOPNOTSUPP where the filesystem does not support it."""
        raise SyscallError(errno.EOPNOTSUPP)

    def seek_data(self, offset: int, *, hole: bool) -> int:
        """SEEK_DATA / SEEK_HOLE from ``offset``; ENXIO past the end. The
        default treats the whole file as data."""
        if offset >= self.size:
            raise SyscallError(errno.ENXIO)
        return self.size if hole else offset

    def fsync(self) -> None:
        """Flush to stable storage; in memory there is nothing to do."""

    def released(self) -> None:
        """Called when the last link and the last open file are gone."""
