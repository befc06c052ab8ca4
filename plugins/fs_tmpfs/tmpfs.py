"""tmpfs: files in memory (Linux ``mm/shmem.c``; gVisor ``fsimpl/tmpfs``).

Regular file data lives in pages of the sandbox's memory file, indexed by file
page, so holes cost nothing and a checkpoint saves the pages with the rest of
memory. ``size`` and ``nr_inodes`` are enforced (ENOSPC; 0 means no limit,
and every extra hard link takes an inode, as in Linux). An unlinked file
keeps its pages until its last open file description is closed.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mm.memfile import PAGE_SIZE, MemoryFile
from pyrunsc.core.vfs.file import DirectoryOps, FileDescription, FileOps, RegularFileOps
from pyrunsc.core.vfs.filesystem import parse_data
from pyrunsc.core.vfs.inode import (
    S_IFDIR,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    S_ISGID,
    DirEntry,
    Inode,
    StatFS,
    Superblock,
    dtype,
)
from pyrunsc.core.vfs.options import memparse, parse_id, parse_mode

TMPFS_MAGIC = 0x01021994
#: What tmpfs reports as a directory entry's size (Linux ``BOGO_DIRENT_SIZE``).
BOGO_DIRENT_SIZE = 20
#: Symlink targets this long or longer take a page (Linux ``SHORT_SYMLINK_LEN``
#: counts the NUL: targets of 128 bytes and more).
SHORT_SYMLINK_LEN = 128

XATTR_CREATE, XATTR_REPLACE = 1, 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class TmpfsSuperblock(Superblock):
    """One tmpfs instance: ``max_pages`` data pages and ``max_inodes`` inodes
    (Linux defaults: half of RAM, and as many inodes as half of RAM's pages;
    0 for either means unlimited, and statfs then reports 0 for it).
    ``used_pages`` counts the pages files hold; ``inodes`` the inodes and
    extra hard links in use (the root included)."""

    def __init__(self, memfile: MemoryFile, data: str = "", *, clock: Callable[[], int] = time.time_ns) -> None:
        super().__init__("tmpfs", TMPFS_MAGIC, clock=clock)
        opts = parse_data(data)
        self.memfile = memfile
        half = physical_memory() // 2
        size, percent = memparse(opts["size"], percent=True) if "size" in opts else (half, False)
        if percent:
            size = physical_memory() * size // 100
        self.max_pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
        self.max_inodes = memparse(opts["nr_inodes"])[0] if "nr_inodes" in opts else half // PAGE_SIZE
        self.used_pages = 0
        self.inodes = 0
        mode = parse_mode(opts["mode"]) if "mode" in opts else 0o1777
        uid = parse_id(opts["uid"]) if "uid" in opts else 0
        gid = parse_id(opts["gid"]) if "gid" in opts else 0
        self._root = TmpfsDir(self, S_IFDIR | mode, uid, gid)

    def root(self) -> Inode:
        return self._root

    def statfs(self) -> StatFS:
        """Linux ``shmem_statfs``: blocks and files are 0 when unlimited."""
        free_pages = self.max_pages - self.used_pages if self.max_pages else 0
        free_inodes = self.max_inodes - self.inodes if self.max_inodes else 0
        return StatFS(
            type=TMPFS_MAGIC, bsize=PAGE_SIZE, blocks=self.max_pages, bfree=free_pages,
            bavail=free_pages, files=self.max_inodes, ffree=free_inodes,
        )

    def charge_inode(self) -> None:
        """Take an inode (or a hard link's share); ENOSPC past ``nr_inodes``."""
        if self.max_inodes and self.inodes >= self.max_inodes:
            raise SyscallError(errno.ENOSPC)
        self.inodes += 1

    def check_pages(self, n: int) -> None:
        """ENOSPC unless ``n`` more pages fit under ``size``."""
        if self.max_pages and self.used_pages + n > self.max_pages:
            raise SyscallError(errno.ENOSPC)

    def charge_pages(self, n: int) -> None:
        self.check_pages(n)
        self.used_pages += n


class TmpfsInode(Inode):
    sb: TmpfsSuperblock

    def __init__(self, sb: TmpfsSuperblock, mode: int, uid: int, gid: int, rdev: int = 0) -> None:
        sb.charge_inode()
        super().__init__(sb, mode, uid, gid, rdev=rdev)
        self.xattrs: dict[str, bytes] = {}

    def released(self) -> None:
        self.sb.inodes -= 1

    def getxattr(self, name: str) -> bytes:
        try:
            return self.xattrs[name]
        except KeyError:
            raise SyscallError(errno.ENODATA) from None

    def setxattr(self, name: str, value: bytes, flags: int = 0) -> None:
        if flags & XATTR_CREATE and name in self.xattrs:
            raise SyscallError(errno.EEXIST)
        if flags & XATTR_REPLACE and name not in self.xattrs:
            raise SyscallError(errno.ENODATA)
        self.xattrs[name] = bytes(value)
        self.ctime = self.sb.now()

    def listxattr(self) -> list[str]:
        return list(self.xattrs)

    def removexattr(self, name: str) -> None:
        if self.xattrs.pop(name, None) is None:
            raise SyscallError(errno.ENODATA)
        self.ctime = self.sb.now()

    def open(self, fd: FileDescription) -> FileOps:
        return RegularFileOps()


class TmpfsDir(TmpfsInode):
    """A directory: name -> (inode, cookie), in cookie order; cookies start at 3."""

    def __init__(self, sb: TmpfsSuperblock, mode: int, uid: int, gid: int) -> None:
        super().__init__(sb, mode, uid, gid)
        self.entries: dict[str, tuple[Inode, int]] = {}
        self._cookie = 2

    @property
    def size(self) -> int:
        return BOGO_DIRENT_SIZE * (2 + len(self.entries))

    def open(self, fd: FileDescription) -> FileOps:
        return DirectoryOps()

    def lookup(self, name: str) -> Inode:
        try:
            return self.entries[name][0]
        except KeyError:
            raise SyscallError(errno.ENOENT) from None

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        for name, (inode, c) in list(self.entries.items()):
            if c > cookie:
                yield DirEntry(name, inode.ino, dtype(inode.mode), c)

    def is_empty_dir(self) -> bool:
        return not self.entries

    def _add(self, name: str, inode: Inode) -> None:
        if name in self.entries:
            raise SyscallError(errno.EEXIST)
        self._cookie += 1
        self.entries[name] = (inode, self._cookie)

    def _touch(self) -> None:
        self.mtime = self.ctime = self.sb.now()

    def _owner(self, creds: Credentials, mode: int) -> tuple[int, int, int]:
        """Linux ``inode_init_owner``: a set-group-ID directory gives its group,
        and its S_ISGID to new directories."""
        if self.mode & S_ISGID:
            if mode & S_IFMT == S_IFDIR:
                mode |= S_ISGID
            return mode, creds.fsuid, self.gid
        return mode, creds.fsuid, creds.fsgid

    def _new(self, name: str, inode: Inode) -> Inode:
        self._add(name, inode)
        if inode.is_dir():
            self.nlink += 1
        self._touch()
        return inode

    def create(self, name: str, mode: int, creds: Credentials) -> Inode:
        mode, uid, gid = self._owner(creds, mode)
        if name in self.entries:
            raise SyscallError(errno.EEXIST)
        return self._new(name, TmpfsFile(self.sb, mode, uid, gid))

    def mkdir(self, name: str, mode: int, creds: Credentials) -> Inode:
        mode, uid, gid = self._owner(creds, mode)
        if name in self.entries:
            raise SyscallError(errno.EEXIST)
        return self._new(name, TmpfsDir(self.sb, mode, uid, gid))

    def mknod(self, name: str, mode: int, rdev: int, creds: Credentials) -> Inode:
        mode, uid, gid = self._owner(creds, mode)
        if name in self.entries:
            raise SyscallError(errno.EEXIST)
        if mode & S_IFMT == S_IFREG:
            return self._new(name, TmpfsFile(self.sb, mode, uid, gid))
        return self._new(name, TmpfsInode(self.sb, mode, uid, gid, rdev=rdev))

    def symlink(self, name: str, target: str, creds: Credentials) -> Inode:
        _, uid, gid = self._owner(creds, 0)
        if name in self.entries:
            raise SyscallError(errno.EEXIST)
        return self._new(name, TmpfsSymlink(self.sb, target, uid, gid))

    def link(self, name: str, inode: Inode) -> None:
        """A new name; every link beyond the first takes an inode of
        ``nr_inodes`` (Linux ``shmem_link``), an O_TMPFILE file's first none."""
        if inode.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        if name in self.entries:
            raise SyscallError(errno.EEXIST)
        if inode.nlink:
            self.sb.charge_inode()
        self._add(name, inode)
        inode.nlink += 1
        inode.ctime = self.sb.now()
        self._touch()

    def _drop_link(self, child: Inode) -> None:
        """One name of the non-directory ``child`` less (Linux ``shmem_unlink``)."""
        if child.nlink > 1:
            self.sb.inodes -= 1  # an extra link's share; the inode's own goes with the inode
        child.nlink -= 1
        child.ctime = self.sb.now()

    def unlink(self, name: str, child: Inode) -> None:
        del self.entries[name]
        self._drop_link(child)
        self._touch()

    def rmdir(self, name: str, child: Inode) -> None:
        if not child.is_empty_dir():
            raise SyscallError(errno.ENOTEMPTY)
        del self.entries[name]
        child.nlink = 0
        child.ctime = self.sb.now()
        self.nlink -= 1
        self._touch()

    def rename(self, old_name: str, new_dir: Inode, new_name: str, *, exchange: bool = False) -> None:
        if not isinstance(new_dir, TmpfsDir) or new_dir.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        moved, _ = self.entries[old_name]
        now = self.sb.now()
        if exchange:
            other, _ = new_dir.entries[new_name]
            self.entries[old_name] = (other, self.entries[old_name][1])
            new_dir.entries[new_name] = (moved, new_dir.entries[new_name][1])
            if new_dir is not self and moved.is_dir() != other.is_dir():
                delta = 1 if moved.is_dir() else -1
                new_dir.nlink += delta
                self.nlink -= delta
            moved.ctime = other.ctime = now
        else:
            replaced = new_dir.entries.pop(new_name, None)
            del self.entries[old_name]
            if replaced is not None:
                victim = replaced[0]
                if victim.is_dir():
                    victim.nlink = 0
                    victim.ctime = now
                    new_dir.nlink -= 1
                else:
                    self._drop_link(victim)
            new_dir._add(new_name, moved)
            if moved.is_dir():
                self.nlink -= 1
                new_dir.nlink += 1
            moved.ctime = now
        self._touch()
        new_dir._touch()

    def supports_tmpfile(self) -> bool:
        return True

    def tmpfile(self, mode: int, creds: Credentials) -> Inode:
        mode, uid, gid = self._owner(creds, mode)
        inode = TmpfsFile(self.sb, mode, uid, gid)
        inode.nlink = 0
        return inode


class TmpfsSymlink(TmpfsInode):
    """A symlink. A target of SHORT_SYMLINK_LEN bytes or more is also kept in
    a page of the memory file, which counts against ``size`` (ENOSPC) and in
    st_blocks, as Linux ``shmem_symlink`` does; shorter ones cost no page."""

    def __init__(self, sb: TmpfsSuperblock, target: str, uid: int, gid: int) -> None:
        super().__init__(sb, S_IFLNK | 0o777, uid, gid)
        self.target = target
        self.page: int | None = None
        raw = os.fsencode(target)
        if len(raw) >= SHORT_SYMLINK_LEN:
            try:
                sb.check_pages(1)
                try:
                    off = sb.memfile.allocate(PAGE_SIZE)
                except MemoryError:
                    raise SyscallError(errno.ENOSPC) from None
            except SyscallError:
                sb.inodes -= 1  # the inode charged above is not made after all
                raise
            sb.charge_pages(1)
            sb.memfile.write(off, raw)
            self.page = off

    @property
    def size(self) -> int:
        return len(os.fsencode(self.target))

    @property
    def blocks(self) -> int:
        return PAGE_SIZE // 512 if self.page is not None else 0

    def readlink(self) -> str:
        return self.target

    def released(self) -> None:
        if self.page is not None:
            self.sb.memfile.free(self.page, PAGE_SIZE)
            self.sb.used_pages -= 1
            self.page = None
        super().released()


class TmpfsFile(TmpfsInode):
    """A regular file whose pages live in the memory file: ``pages`` maps a
    page index to its offset there. ``unwritten`` holds the pages fallocate
    made and nothing has written yet: they read as zeros, count in st_blocks
    and are holes to SEEK_DATA/SEEK_HOLE (shmem leaves them not up to date)."""

    def __init__(self, sb: TmpfsSuperblock, mode: int, uid: int, gid: int) -> None:
        super().__init__(sb, mode, uid, gid)
        self.pages: dict[int, int] = {}
        self.unwritten: set[int] = set()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def blocks(self) -> int:
        return len(self.pages) * (PAGE_SIZE // 512)

    def _page(self, index: int) -> int:
        """The page ``index``, allocated (zeroed) if absent; ENOSPC past the
        size limit or when the memory file is exhausted."""
        off = self.pages.get(index)
        if off is None:
            self.sb.check_pages(1)
            try:
                off = self.sb.memfile.allocate(PAGE_SIZE)
            except MemoryError:
                raise SyscallError(errno.ENOSPC) from None
            self.sb.charge_pages(1)
            self.pages[index] = off
        return off

    def _drop_pages(self, first: int, last: int | None = None) -> None:
        """Free whole pages with index in [first, last) (to the end for None)."""
        for index in [i for i in self.pages if first <= i and (last is None or i < last)]:
            self.sb.memfile.free(self.pages.pop(index), PAGE_SIZE)
            self.unwritten.discard(index)
            self.sb.used_pages -= 1

    def read(self, offset: int, length: int) -> bytes:
        end = min(self._size, offset + length)
        if offset >= end:
            return b""
        out = bytearray(end - offset)
        mem = self.sb.memfile.view
        pos = offset
        while pos < end:
            index, within = divmod(pos, PAGE_SIZE)
            n = min(PAGE_SIZE - within, end - pos)
            page = self.pages.get(index)
            if page is not None:
                out[pos - offset : pos - offset + n] = mem[page + within : page + within + n]
            pos += n
        return bytes(out)

    def write(self, offset: int, data: bytes) -> int:
        if not data:
            return 0
        mem = self.sb.memfile.view
        pos, end = offset, offset + len(data)
        view = memoryview(data)
        written = 0
        try:
            while pos < end:
                index, within = divmod(pos, PAGE_SIZE)
                n = min(PAGE_SIZE - within, end - pos)
                page = self._page(index)
                mem[page + within : page + within + n] = view[pos - offset : pos - offset + n]
                self.unwritten.discard(index)
                pos += n
                written += n
        except SyscallError:
            if written == 0:
                raise  # ENOSPC before any byte went in; a short write otherwise
        if offset + written > self._size:
            self._size = offset + written
        self.mtime = self.ctime = self.sb.now()
        return written

    def truncate(self, size: int) -> None:
        """Set the size. Unless it grows, every page past the new end goes,
        also those fallocate(KEEP_SIZE) put past the old one, and the rest of
        the last page is zeroed (Linux ``shmem_setattr``)."""
        if size <= self._size:
            self._drop_pages((size + PAGE_SIZE - 1) // PAGE_SIZE)
            index, within = divmod(size, PAGE_SIZE)
            page = self.pages.get(index)
            if within and page is not None:
                self.sb.memfile.zero(page + within, PAGE_SIZE - within)
        self._size = size

    def allocate(self, mode: int, offset: int, length: int) -> None:
        """fallocate modes 0, KEEP_SIZE and PUNCH_HOLE|KEEP_SIZE, as
        ``shmem_fallocate``: EOPNOTSUPP for others; ENOSPC (with nothing
        kept) when the pages do not fit. New pages are zeros and stay holes
        to SEEK_DATA until written. Sets mtime and ctime."""
        end = offset + length
        if mode & FALLOC_FL_PUNCH_HOLE:
            if not mode & FALLOC_FL_KEEP_SIZE or mode & ~(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE):
                raise SyscallError(errno.EOPNOTSUPP)
            first, last = (offset + PAGE_SIZE - 1) // PAGE_SIZE, end // PAGE_SIZE
            self._drop_pages(first, last)
            for lo, hi in ((offset, min(end, first * PAGE_SIZE)), (max(offset, last * PAGE_SIZE), end)):
                if lo < hi:
                    page = self.pages.get(lo // PAGE_SIZE)
                    if page is not None:
                        self.sb.memfile.zero(page + lo % PAGE_SIZE, hi - lo)
            self.mtime = self.ctime = self.sb.now()
            return
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise SyscallError(errno.EOPNOTSUPP)
        need = [i for i in range(offset // PAGE_SIZE, (end + PAGE_SIZE - 1) // PAGE_SIZE) if i not in self.pages]
        self.sb.check_pages(len(need))
        try:
            for i in need:
                self._page(i)
                self.unwritten.add(i)
        except SyscallError:
            self._undo(need)
            raise
        if not mode & FALLOC_FL_KEEP_SIZE and end > self._size:
            self._size = end
        self.mtime = self.ctime = self.sb.now()

    def _undo(self, indexes: list[int]) -> None:
        """Give back pages a failed fallocate took."""
        for i in indexes:
            off = self.pages.pop(i, None)
            if off is not None:
                self.sb.memfile.free(off, PAGE_SIZE)
                self.unwritten.discard(i)
                self.sb.used_pages -= 1

    def seek_data(self, offset: int, *, hole: bool) -> int:
        """SEEK_DATA/SEEK_HOLE by pages written (Linux ``shmem_file_llseek``):
        absent and fallocated-but-unwritten pages are holes."""
        if offset >= self._size:
            raise SyscallError(errno.ENXIO)
        index = offset // PAGE_SIZE
        last = (self._size + PAGE_SIZE - 1) // PAGE_SIZE
        while index < last and (index in self.pages and index not in self.unwritten) == hole:
            index += 1
        if index >= last:
            if hole:
                return self._size
            raise SyscallError(errno.ENXIO)
        return max(offset, index * PAGE_SIZE)

    def released(self) -> None:
        self._drop_pages(0)
        super().released()
