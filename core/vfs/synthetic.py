"""Read-only synthetic filesystems: fixed trees whose files are made at read time.

sysfs and proc are not stored anywhere: each file's content is produced by
the kernel when it is read (Linux ``kernfs`` and ``seq_file``; gVisor
``fsimpl/kernfs`` ``DynamicBytesFile`` and ``StaticDirectory``). This module
gives the pieces such a filesystem is made of:

- :class:`SyntheticSuperblock`: the superblock, with the policy its files
  share: the ``st_size`` they report (sysfs 4096, proc 0) and what opening
  one for writing does (sysfs refuses the open with EACCES, as Linux
  ``kernfs_fop_open`` does for an attribute without a ``store``; proc opens it
  and fails each write with EIO, as ``proc_reg_write`` does).
- :class:`SyntheticDir`: a directory with fixed children, in the order given.
- :class:`SyntheticFile`: a file whose content a callable produces.
- :class:`SyntheticSymlink`: a symlink with a fixed or computed target.

A tree is described declaratively and built with :meth:`SyntheticSuperblock.build`::

    sb = SyntheticSuperblock("sysfs", SYSFS_MAGIC, file_size=4096, refuse_write_open=True)
    sb.build({
        "devices": {"system": {"cpu": {"online": lambda: "0-3\\n"}}},
        "fs": {"cgroup": {}},
        "self": Link("devices"),
    }, mode=0o555)

where a ``dict`` is a directory, a ``str``, ``bytes`` or callable returning
either is a file, and :class:`Dir`, :class:`File` and :class:`Link` give a
node its own mode (or a file a writer). An :class:`~.inode.Inode` already made
for the superblock may stand for a node too, so a filesystem can mix in its
own kinds (proc's per-task directories).

Names cannot be created, removed or renamed: mkdir, mknod, symlink, link,
unlink, rmdir and rename are EPERM (Linux ``vfs_mkdir`` etc. without the inode
operation) and open(O_CREAT) of a new name is EACCES (Linux ``lookup_open``).
chmod, chown and utimes work on the inode in memory, as on Linux sysfs; a
size change (truncate, O_TRUNC) of a generated file is ignored, as kernfs
ignores it.

Reading follows gVisor's ``DynamicBytesFileDescriptionImpl`` (Linux
``seq_read``): an open file keeps the content it generated and reads it
sequentially; a read at another offset than where the last one ended
generates it again, so ``pread(fd, n, 0)`` always sees fresh content.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from ..errors import SyscallError
from .file import DirectoryOps, FileDescription, FileOps
from .inode import S_IFDIR, S_IFLNK, S_IFREG, DirEntry, Inode, SetAttr, Superblock, dtype

if TYPE_CHECKING:
    from ..kernel.auth import Credentials

#: What a generated file holds: text (UTF-8 encoded when read), bytes, or a
#: callable producing either, called at read time.
Content: TypeAlias = str | bytes | Callable[[], str | bytes]
#: Called with the bytes of one write(2) to a writable synthetic file (a
#: sysfs ``store``); raises SyscallError (EINVAL for a value it refuses).
Writer: TypeAlias = Callable[[bytes], None]


@dataclass(frozen=True)
class File:
    """A generated file node; ``mode`` is permission bits (the superblock's
    ``file_mode`` when None). With a ``writer``, the file takes writes."""

    content: Content
    mode: int | None = None
    writer: Writer | None = None


@dataclass(frozen=True)
class Dir:
    """A directory node with its own ``mode`` (permission bits)."""

    children: Mapping[str, Node]
    mode: int | None = None


@dataclass(frozen=True)
class Link:
    """A symlink node; ``target`` may be computed at each readlink."""

    target: str | Callable[[], str]


#: One node of a tree description (see the module docstring).
Node: TypeAlias = Mapping[str, "Node"] | str | bytes | Callable[[], str | bytes] | File | Dir | Link | Inode


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class SyntheticSuperblock(Superblock):
    """A superblock of synthetic inodes.

    ``file_size`` is the ``st_size`` generated files report (Linux sysfs:
    4096, the page its ``show`` may fill; proc: 0). ``refuse_write_open``
    makes opening a file that has no writer for writing EACCES (sysfs); when
    False the open works and each write is EIO (proc). ``dir_mode`` and
    ``file_mode`` are the default permission bits of nodes built from a
    description; every inode is owned by ``uid``:``gid``.
    """

    def __init__(
        self,
        fs_name: str,
        magic: int,
        *,
        file_size: int = 0,
        refuse_write_open: bool = True,
        dir_mode: int = 0o755,
        file_mode: int = 0o444,
        uid: int = 0,
        gid: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(fs_name, magic, clock=clock)
        self.file_size = file_size
        self.refuse_write_open = refuse_write_open
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid
        self._root: Inode | None = None

    def root(self) -> Inode:
        """The root directory; RuntimeError before :meth:`build` or :meth:`set_root`."""
        if self._root is None:
            raise RuntimeError(f"{self.fs_name}: the synthetic tree has not been built")
        return self._root

    def set_root(self, inode: Inode) -> None:
        """Make ``inode`` (a directory of this superblock) the root."""
        if inode.sb is not self or not inode.is_dir():
            raise ValueError("the root must be a directory of this superblock")
        self._root = inode

    def build(self, tree: Mapping[str, Node], *, mode: int | None = None) -> SyntheticDir:
        """Make the root directory from ``tree`` (permission bits ``mode``,
        else ``dir_mode``) and return it. ValueError for a node of an unknown
        kind, a name with ``/`` or NUL, or ``.``/``..``."""
        root = self.make(Dir(tree, mode))
        assert isinstance(root, SyntheticDir)
        self._root = root
        return root

    def make(self, node: Node) -> Inode:
        """The inode for one node of a tree description (built recursively)."""
        if isinstance(node, Inode):
            if node.sb is not self:
                raise ValueError("an inode in a synthetic tree must belong to its superblock")
            return node
        if isinstance(node, Dir):
            d = SyntheticDir(self, node.mode if node.mode is not None else self.dir_mode)
            for name, child in node.children.items():
                d.add(name, self.make(child))
            return d
        if isinstance(node, Mapping):
            return self.make(Dir(node))
        if isinstance(node, Link):
            return SyntheticSymlink(self, node.target)
        if isinstance(node, File):
            mode = node.mode if node.mode is not None else self.file_mode
            return SyntheticFile(self, node.content, mode, writer=node.writer)
        if isinstance(node, (str, bytes)) or callable(node):
            return SyntheticFile(self, node, self.file_mode)
        raise ValueError(f"not a synthetic tree node: {node!r}")


class SyntheticInode(Inode):
    """Common behaviour of synthetic inodes: no birth time; a size change is
    ignored (kernfs ``kernfs_iop_setattr``); other attributes change in memory."""

    def __init__(self, sb: SyntheticSuperblock, mode: int) -> None:
        super().__init__(sb, mode, sb.uid, sb.gid)
        self.btime = None

    def setattr(self, attrs: SetAttr) -> None:
        if attrs.size is not None and not self.is_dir():
            attrs = SetAttr(
                mode=attrs.mode, uid=attrs.uid, gid=attrs.gid, atime=attrs.atime, mtime=attrs.mtime,
                ctime=attrs.ctime,
            )
        super().setattr(attrs)


class SyntheticDir(SyntheticInode):
    """A directory with fixed children, listed in the order they were added.

    Cookies are stable: the n-th child (from 0) has cookie ``3 + n``.
    Subclasses with children that come and go (proc's pids) override
    :meth:`lookup` and :meth:`iterate`.
    """

    def __init__(self, sb: SyntheticSuperblock, mode: int = 0o755) -> None:
        super().__init__(sb, S_IFDIR | (mode & 0o7777))
        self.children: dict[str, Inode] = {}

    def add(self, name: str, inode: Inode) -> Inode:
        """Add the child ``name`` while building; ValueError if taken or invalid."""
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise ValueError(f"invalid name {name!r}")
        if name in self.children:
            raise ValueError(f"{name!r} is already in this directory")
        self.children[name] = inode
        if inode.is_dir():
            self.nlink += 1
        return inode

    def open(self, fd: FileDescription) -> FileOps:
        return DirectoryOps()

    def lookup(self, name: str) -> Inode:
        try:
            return self.children[name]
        except KeyError:
            raise SyscallError(errno.ENOENT) from None

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        for n, (name, inode) in enumerate(list(self.children.items())):
            c = 3 + n
            if c > cookie:
                yield DirEntry(name, inode.ino, dtype(inode.mode), c)

    def is_empty_dir(self) -> bool:
        return not self.children

    def create(self, name: str, mode: int, creds: Credentials) -> Inode:
        """EACCES: no new files here (Linux ``lookup_open`` without ``->create``)."""
        raise SyscallError(errno.EACCES)


class SyntheticFile(SyntheticInode):
    """A regular file whose bytes ``content`` produces at read time.

    ``st_size`` is the superblock's ``file_size``, whatever the content's
    length, as on Linux. With a ``writer`` the file opens for writing and each
    write(2) hands its bytes to it; without one, see the superblock's
    ``refuse_write_open``.
    """

    def __init__(
        self, sb: SyntheticSuperblock, content: Content, mode: int = 0o444, *, writer: Writer | None = None
    ) -> None:
        super().__init__(sb, S_IFREG | (mode & 0o7777))
        self.content = content
        self.writer = writer

    @property
    def size(self) -> int:
        sb = self.sb
        assert isinstance(sb, SyntheticSuperblock)
        return sb.file_size

    def generate(self) -> bytes:
        """The file's content now; subclasses may override (proc per task)."""
        c = self.content
        return _as_bytes(c() if callable(c) else c)

    def open(self, fd: FileDescription) -> FileOps:
        """EACCES for a write open of a file without a writer on a superblock
        that refuses them (sysfs, Linux ``kernfs_fop_open``)."""
        sb = self.sb
        assert isinstance(sb, SyntheticSuperblock)
        if fd.writable and self.writer is None and sb.refuse_write_open:
            raise SyscallError(errno.EACCES)
        return SyntheticFileOps(self)


class SyntheticFileOps(FileOps):
    """An open synthetic file: a snapshot of its content, regenerated on a
    read that does not continue where the last one ended."""

    def __init__(self, inode: SyntheticFile) -> None:
        self.inode = inode
        self._buf: bytes | None = None
        self._last = 0

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        if self._buf is None or not self._buf or offset != self._last:
            self._buf = self.inode.generate()
        data = self._buf[offset : offset + length]
        self._last = offset + len(data)
        return data

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        """The writer's answer; EIO for a file without one (Linux ``proc_reg_write``)."""
        if self.inode.writer is None:
            raise SyscallError(errno.EIO)
        self.inode.writer(bytes(data))
        self._buf = None
        return len(data)


class SyntheticSymlink(SyntheticInode):
    """A symlink (mode 0777) whose target is fixed or computed at each readlink."""

    def __init__(self, sb: SyntheticSuperblock, target: str | Callable[[], str]) -> None:
        super().__init__(sb, S_IFLNK | 0o777)
        self.target = target

    def readlink(self) -> str:
        t = self.target
        return t() if callable(t) else t

    @property
    def size(self) -> int:
        return len(os.fsencode(self.readlink()))
