"""Overlay filesystem: a writable upper layer over a lower layer (Linux
``fs/overlayfs``, Documentation/filesystems/overlayfs.rst; gVisor
``pkg/sentry/fs/inode_overlay.go`` and ``copy_up.go``, commit 80bdf8a4).

Both layers are any filesystems implementing the :class:`~.inode.Inode`
contract; the overlay is itself a :class:`~.inode.Superblock` whose
:class:`OverlayInode` objects implement that contract, so the VFS walks it like
any other filesystem. The lower layer is never written.

Semantics, as Linux overlayfs without ``redirect_dir``, ``index`` or ``metacopy``:

- A name is looked up in the upper directory first. An upper entry that is a
  *whiteout* (a character device 0/0) hides the name altogether; an upper
  non-directory hides the lower entry; an upper directory is merged with a
  lower directory of the same name unless it is *opaque* (xattr
  ``trusted.overlay.opaque`` = ``b"y"``) or the lower entry is not a directory.
- Modifying a lower file (open for writing, truncate, chmod, chown, utimens,
  set/remove xattr, link, rename) first *copies it up*: its parent directories
  are created in the upper layer as needed, then the file (data, mode, owner,
  atime/mtime, xattrs; a symlink's target; a device's rdev), and from then on
  every operation, including reads through descriptions opened before the
  copy-up, goes to the upper copy.
- Removing a name that exists in the lower layer leaves a whiteout in the upper
  directory; a directory made where a lower entry was removed is opaque.
- readdir merges the layers (upper wins, whiteouts hide, opaque stops the
  merge); each overlay directory hands out cookies from a map name -> cookie
  that only grows, so a cookie stays valid while the directory changes.
- Renaming a directory that has a lower layer (lower-only or merged) is EXDEV,
  as Linux without ``redirect_dir``; ``mv`` then copies. Files and upper-only
  directories rename.
- The overlay refuses with EROFS any operation that would write the upper
  layer when the upper superblock (or the overlay, ``read_only=True``) is
  read-only; lookups, reads and readdir never write anything.

Inode numbers are the overlay's own, handed out once per file and kept across
copy-up (a file keeps one :class:`OverlayInode` for its life: the overlay maps
each layer inode to it), and ``st_dev`` is the overlay's; a merged directory
reports ``nlink`` 1, as Linux does. Hard links within the lower layer stay one
file through the overlay (like Linux's ``index=on``).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import SyscallError
from ..kernel.auth import Credentials
from ..mounts import MountFlags
from .file import DirectoryOps, FileDescription, FileOps
from .inode import (
    DT_CHR,
    DT_UNKNOWN,
    S_IFCHR,
    S_IFDIR,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    DirEntry,
    Inode,
    SetAttr,
    Stat,
    StatFS,
    Superblock,
    dtype,
    makedev,
)
from .mount import Dentry, Mount, VirtualDentry

if TYPE_CHECKING:
    from .filesystem import MountContext

#: statfs ``f_type`` of Linux overlayfs (``OVERLAYFS_SUPER_MAGIC``).
OVERLAYFS_SUPER_MAGIC = 0x794C7630
#: Extended attributes in this namespace belong to the overlay; they are hidden
#: from, and refused to, the overlay's users (Linux ``ovl_is_private_xattr``).
PRIVATE_XATTR_PREFIX = "trusted.overlay."
#: Set to ``b"y"`` on an upper directory that hides the lower one.
OPAQUE_XATTR = "trusted.overlay.opaque"
#: A whiteout is a character device with this rdev (Linux ``WHITEOUT_DEV``).
WHITEOUT_DEV = makedev(0, 0)

#: Bytes copied per step when a file is copied up.
COPY_CHUNK = 1 << 20

#: The overlay acts on its layers as the kernel itself would: every capability.
_KERNEL_CREDS = Credentials()


def is_whiteout(inode: Inode) -> bool:
    """True when ``inode`` is a whiteout: a character device 0/0."""
    return inode.type == S_IFCHR and inode.rdev == WHITEOUT_DEV


def is_opaque(inode: Inode) -> bool:
    """True when the directory ``inode`` carries ``trusted.overlay.opaque`` = ``b"y"``
    (an upper without xattrs has no opaque directories)."""
    try:
        return inode.getxattr(OPAQUE_XATTR) == b"y"
    except SyscallError:
        return False


def _raw_lookup(directory: Inode, name: str) -> Inode | None:
    """``directory.lookup(name)``, None for ENOENT."""
    try:
        return directory.lookup(name)
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def _check_private(name: str) -> None:
    if name.startswith(PRIVATE_XATTR_PREFIX):
        raise SyscallError(errno.EOPNOTSUPP, name)


class OverlaySuperblock(Superblock):
    """An overlay of ``upper`` over ``lower`` (both superblocks of any filesystem).

    ``read_only`` is true when the overlay was made read-only or its upper
    superblock is, so the VFS answers EROFS before any copy-up. The root is
    the merge of both roots; when the lower root is not a directory (an
    overlay over a file bind mount, the seed's ``NewOverlayRootFile``), the
    root is that file and its copy-up is an unnamed file of the upper layer,
    whose root must then be a directory that supports O_TMPFILE (tmpfs).
    ``statfs`` reports the upper layer's (as gVisor's overlay does).

    Raises SyscallError ENOTDIR when the lower root is a directory and the
    upper root is not.
    """

    def __init__(self, upper: Superblock, lower: Superblock, *, read_only: bool = False) -> None:
        self.upper = upper
        self.lower = lower
        self._read_only = False
        super().__init__("overlay", OVERLAYFS_SUPER_MAGIC, read_only=read_only, clock=upper.now)
        self.cache_dentries = upper.cache_dentries and lower.cache_dentries
        #: A merged directory reports nlink 1, as Linux's overlayfs does;
        #: stub overlays turn this off to look exactly like their upper.
        self.merged_nlink_one = True
        #: Each layer inode's overlay inode, so that a file keeps one overlay
        #: inode (and inode number) however it is reached and across copy-up.
        self.by_upper: dict[Inode, OverlayInode] = {}
        self.by_lower: dict[Inode, OverlayInode] = {}
        # Private mounts of the layers, for the descriptions the overlay opens
        # on layer inodes (reads and writes of open files, copy-up).
        self._mounts = {
            "upper": Mount(upper, Dentry(upper.root()), MountFlags()),
            "lower": Mount(lower, Dentry(lower.root()), MountFlags(read_only=True)),
        }
        uroot, lroot = upper.root(), lower.root()
        if lroot.is_dir():
            if not uroot.is_dir():
                raise SyscallError(errno.ENOTDIR, "the upper root of an overlay over a directory must be one")
            self._root = self.inode_for(uroot, None if is_opaque(uroot) else lroot)
        else:
            self._root = self.inode_for(None, lroot)

    @property
    def read_only(self) -> bool:
        return self._read_only or self.upper.read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._read_only = value

    def root(self) -> OverlayInode:
        return self._root

    def statfs(self) -> StatFS:
        return self.upper.root().statfs()

    def check_writable(self) -> None:
        """EROFS when the upper layer may not be written."""
        if self.read_only:
            raise SyscallError(errno.EROFS)

    def layer_mount(self, inode: Inode) -> Mount:
        """The private mount of the layer ``inode`` belongs to."""
        return self._mounts["upper" if inode.sb is self.upper else "lower"]

    def inode_for(self, upper: Inode | None, lower: Inode | None) -> OverlayInode:
        """The overlay inode of a file whose upper and lower layer inodes are
        ``upper`` and ``lower`` (either None, not both): the known one, else a new one."""
        o: OverlayInode | None = None
        if upper is not None:
            o = self.by_upper.get(upper)
        elif lower is not None:
            o = self.by_lower.get(lower)
        if o is None:
            o = OverlayInode(self, upper, lower)
            if upper is not None:
                self.by_upper[upper] = o
        if lower is not None:
            self.by_lower.setdefault(lower, o)
        return o

    def __repr__(self) -> str:
        return f"<OverlaySuperblock upper={self.upper.fs_name} lower={self.lower.fs_name}>"


class _LayerFileOps(FileOps):
    """An overlay file's open description: every call goes to a description of
    the overlay inode's current layer, reopened on the upper copy after a
    copy-up (gVisor ``overlayFileOperations``)."""

    def __init__(self, inode: OverlayInode, fd: FileDescription) -> None:
        self.inode = inode
        self._inner: FileDescription | None = None
        self.seekable = self._current(fd).ops.seekable

    def _current(self, fd: FileDescription) -> FileDescription:
        layer = self.inode.layer
        inner = self._inner
        if inner is None or inner.inode is not layer:
            self._close()
            inner = self._inner = _layer_fd(self.inode.sb, layer, fd.flags)
        return inner

    def _close(self) -> None:
        # The layer inode is released with the overlay inode
        # (OverlayInode.released), never from here.
        inner, self._inner = self._inner, None
        if inner is not None:
            _close_layer_fd(inner)

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        inner = self._current(fd)
        return inner.ops.read(inner, length, offset)

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        self.inode.copy_up()
        inner = self._current(fd)
        return inner.ops.write(inner, data, offset)

    def size(self, fd: FileDescription) -> int:
        inner = self._current(fd)
        return inner.ops.size(inner)

    def ioctl(self, fd: FileDescription, request: int, arg: int) -> int:
        inner = self._current(fd)
        return inner.ops.ioctl(inner, request, arg)

    def release(self, fd: FileDescription) -> None:
        self._close()


class OverlayInode(Inode):
    """A file of an overlay: ``upper`` and/or ``lower`` layer inodes.

    ``upper`` is None until the file is copied up (or for a lower-only one);
    ``lower`` is the lower directory merged into this one (None when opaque or
    absent) or, for a non-directory, the lower file it was copied from.
    ``parent`` and ``name`` are where the overlay last found the file (the
    directory a copy-up creates it in); ``parent`` is None for the root and
    for a file whose name was removed.

    Attributes (mode, owner, times, size, nlink, rdev) are the current layer's
    (:attr:`layer`); setting one copies the file up, except ``atime``, which
    on a lower-only file is left alone (Linux ``ovl_update_time``).
    """

    sb: OverlaySuperblock

    def __init__(self, sb: OverlaySuperblock, upper: Inode | None, lower: Inode | None) -> None:
        if upper is None and lower is None:
            raise ValueError("an overlay inode needs a layer")
        self.upper = upper
        self.lower = lower
        self.parent: OverlayInode | None = None
        self.name = ""
        # Inode.__init__ assigns the attributes this class delegates to its
        # layers: those assignments are dropped until it is done.
        self._ready = False
        layer = self.layer
        super().__init__(sb, layer.mode, layer.uid, layer.gid, rdev=layer.rdev)
        self._ready = True
        # Directory cookies: name -> cookie, only ever added to.
        self._cookies: dict[str, int] = {}
        self._next_cookie = 3

    def __repr__(self) -> str:
        return f"<OverlayInode {self.ino} {self.name!r} upper={self.upper!r} lower={self.lower!r}>"

    # Layers.

    @property
    def layer(self) -> Inode:
        """The layer inode operations go to: the upper copy if any, else the lower."""
        layer = self.upper if self.upper is not None else self.lower
        assert layer is not None
        return layer

    def is_merged(self) -> bool:
        """A directory present in both layers whose lower shows through."""
        return self.upper is not None and self.lower is not None and self.layer.is_dir()

    def copy_up(self, *, data: bool = True) -> Inode:
        """The upper copy of this file, made first if there is none (with its
        parent directories). ``data=False`` skips a regular file's contents
        (it is about to be truncated to 0).

        Errors: EROFS when the upper layer is read-only; ENOENT for a removed
        directory; what the upper filesystem answers (ENOSPC, EOPNOTSUPP when
        it cannot hold a lower xattr), after removing the partial copy.
        """
        if self.upper is not None:
            return self.upper
        self.sb.check_writable()
        chain: list[OverlayInode] = []
        o: OverlayInode | None = self
        while o is not None and o.upper is None:
            chain.append(o)
            o = o.parent
        parent_upper = o.upper if o is not None else None
        for node in reversed(chain):
            parent_upper = node._copy_up_one(parent_upper, data or node is not self)
        assert parent_upper is not None
        return parent_upper

    def _copy_up_one(self, parent_upper: Inode | None, data: bool) -> Inode:
        lower = self.lower
        assert lower is not None and self.upper is None
        if parent_upper is None:
            # The root file of an overlay over a file, or a file whose name is
            # gone: an unnamed upper file (Linux copies these up to its workdir).
            if lower.is_dir():
                raise SyscallError(errno.ENOENT)
            work = self.sb.upper.root()
            if not lower.is_regular() or not work.supports_tmpfile():
                raise SyscallError(errno.EIO, "cannot copy up an unnamed file to this upper layer")
            new = work.tmpfile(S_IFREG | (lower.mode & 0o7777), _KERNEL_CREDS)
            if self.parent is None and self is self.sb.root():
                new.nlink = 1  # the overlay's root: linked for as long as the overlay
            remove = None
        else:
            # The parent keeps its times (Linux ovl_copy_up_one restores them).
            times = SetAttr(atime=parent_upper.atime, mtime=parent_upper.mtime)
            new = _create_like(parent_upper, self.name, lower)
            parent_upper.setattr(times)
            remove = parent_upper
        try:
            _copy_contents(self.sb, lower, new, data=data)
        except Exception:
            if remove is not None:
                _remove_upper(remove, self.name, new)
            raise
        self.upper = new
        self.sb.by_upper[new] = self
        return new

    def _upper_at(self, name: str, child: OverlayInode) -> Inode:
        """Make this directory's upper entry ``name`` be ``child``'s upper copy
        (copying it up, or hard-linking its copy, made through another name)."""
        upper_dir = self.copy_up()
        if child.upper is None:
            if child.parent is not self or child.name != name:
                child.parent, child.name = self, name
            return child.copy_up()
        existing = _raw_lookup(upper_dir, name)
        if existing is not child.upper:
            if existing is not None:  # a whiteout: link would say EEXIST
                _unlink_upper(upper_dir, name, existing)
            upper_dir.link(name, child.upper)
        return child.upper

    # Attributes.

    @property
    def mode(self) -> int:
        return self.layer.mode

    @mode.setter
    def mode(self, value: int) -> None:
        if self._ready:
            self.copy_up().mode = value

    @property
    def uid(self) -> int:
        return self.layer.uid

    @uid.setter
    def uid(self, value: int) -> None:
        if self._ready:
            self.copy_up().uid = value

    @property
    def gid(self) -> int:
        return self.layer.gid

    @gid.setter
    def gid(self, value: int) -> None:
        if self._ready:
            self.copy_up().gid = value

    @property
    def nlink(self) -> int:
        nlink = self.layer.nlink
        return 1 if nlink and self.is_merged() and self.sb.merged_nlink_one else nlink

    @nlink.setter
    def nlink(self, value: int) -> None:
        if self._ready:
            self.copy_up().nlink = value

    @property
    def rdev(self) -> int:
        return self.layer.rdev

    @rdev.setter
    def rdev(self, value: int) -> None:
        if self._ready:
            self.copy_up().rdev = value

    @property
    def atime(self) -> int:
        return self.layer.atime

    @atime.setter
    def atime(self, value: int) -> None:
        if self._ready and self.upper is not None:
            self.upper.atime = value

    @property
    def mtime(self) -> int:
        return self.layer.mtime

    @mtime.setter
    def mtime(self, value: int) -> None:
        if self._ready:
            self.copy_up().mtime = value

    @property
    def ctime(self) -> int:
        return self.layer.ctime

    @ctime.setter
    def ctime(self, value: int) -> None:
        if self._ready:
            self.copy_up().ctime = value

    @property
    def btime(self) -> int | None:
        return self.layer.btime

    @btime.setter
    def btime(self, value: int | None) -> None:
        if self._ready:
            self.copy_up().btime = value

    @property
    def size(self) -> int:
        return self.layer.size

    @property
    def blocks(self) -> int:
        return self.layer.blocks

    def stat(self) -> Stat:
        s = self.layer.stat()
        s.dev, s.ino, s.nlink = self.sb.dev, self.ino, self.nlink
        return s

    def setattr(self, attrs: SetAttr) -> None:
        """Copy up (without the data when truncating to 0), then apply to the upper copy."""
        if attrs.size is not None and self.is_dir():
            raise SyscallError(errno.EISDIR)
        self.copy_up(data=attrs.size != 0).setattr(attrs)

    def truncate(self, size: int) -> None:
        self.copy_up(data=size != 0).truncate(size)

    def statfs(self) -> StatFS:
        return self.sb.statfs()

    # Directories.

    def _need_dir(self) -> None:
        if not self.is_dir():
            raise SyscallError(errno.ENOTDIR)

    def _lower_has(self, name: str) -> bool:
        """Whether the lower directory merged here has ``name`` (even if a
        whiteout hides it): removing ``name`` then needs a whiteout."""
        return self.lower is not None and self.lower.is_dir() and _raw_lookup(self.lower, name) is not None

    def _layers_of(self, name: str) -> tuple[Inode | None, Inode | None]:
        """The (upper, lower) layer inodes seen at ``name``; ENOENT when none."""
        upper = _raw_lookup(self.upper, name) if self.upper is not None else None
        if upper is not None and is_whiteout(upper):
            raise SyscallError(errno.ENOENT)
        lower = None
        if self.lower is not None and (upper is None or (upper.is_dir() and not is_opaque(upper))):
            lower = _raw_lookup(self.lower, name)
            if upper is not None and lower is not None and not lower.is_dir():
                lower = None  # an upper directory over a lower file: upper only
        if upper is None and lower is None:
            raise SyscallError(errno.ENOENT)
        return upper, lower

    def lookup(self, name: str) -> OverlayInode:
        """The child ``name`` (never copies anything up); ENOENT when absent or whited out."""
        self._need_dir()
        upper, lower = self._layers_of(name)
        child = self.sb.inode_for(upper, lower)
        child.parent, child.name = self, name
        return child

    def _names(self) -> list[str]:
        """Visible names: the upper's, less whiteouts, then the lower's not
        hidden, unless this directory is opaque (``lower`` None)."""
        names: list[str] = []
        hidden: set[str] = set()
        if self.upper is not None:
            for e in self.upper.iterate(0):
                if e.type in (DT_CHR, DT_UNKNOWN):
                    child = _raw_lookup(self.upper, e.name)
                    if child is not None and is_whiteout(child):
                        hidden.add(e.name)
                        continue
                names.append(e.name)
                hidden.add(e.name)
        if self.lower is not None:
            names.extend(e.name for e in self.lower.iterate(0) if e.name not in hidden)
        return names

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        """The merged entries after ``cookie``, in cookie order; a name keeps
        its cookie for the life of the directory."""
        self._need_dir()
        found: list[tuple[int, str]] = []
        for name in self._names():
            c = self._cookies.get(name)
            if c is None:
                c = self._cookies[name] = self._next_cookie
                self._next_cookie += 1
            if c > cookie:
                found.append((c, name))
        found.sort()
        for c, name in found:
            try:
                child = self.lookup(name)
            except SyscallError as e:
                if e.errno == errno.ENOENT:
                    continue
                raise
            yield DirEntry(name, child.ino, dtype(child.mode), c)

    def is_empty_dir(self) -> bool:
        return not self._names()

    def _prepare_create(self, name: str) -> tuple[Inode, Inode | None]:
        """Copy this directory up and clear a whiteout at ``name``; gives the
        upper directory and the whiteout removed (to restore on failure)."""
        self._need_dir()
        self.sb.check_writable()
        upper_dir = self.copy_up()
        existing = _raw_lookup(upper_dir, name)
        if existing is None:
            return upper_dir, None
        if not is_whiteout(existing):
            raise SyscallError(errno.EEXIST)
        _unlink_upper(upper_dir, name, existing)
        return upper_dir, existing

    def _created(
        self, upper_dir: Inode, name: str, make: Callable[[Inode], Inode], whiteout: Inode | None,
        *, opaque: bool = False,
    ) -> OverlayInode:
        try:
            new = make(upper_dir)
            if opaque:
                try:
                    new.setxattr(OPAQUE_XATTR, b"y")
                except SyscallError:
                    _remove_upper(upper_dir, name, new)
                    raise
        except SyscallError:
            if whiteout is not None:
                _make_whiteout(upper_dir, name)
            raise
        child = self.sb.inode_for(new, None)
        child.parent, child.name = self, name
        return child

    def create(self, name: str, mode: int, creds: Credentials) -> Inode:
        upper_dir, wh = self._prepare_create(name)
        return self._created(upper_dir, name, lambda d: d.create(name, mode, creds), wh)

    def mkdir(self, name: str, mode: int, creds: Credentials) -> Inode:
        """A new upper directory; opaque where a lower entry of that name was removed."""
        upper_dir, wh = self._prepare_create(name)
        opaque = wh is not None or self._lower_has(name)
        return self._created(upper_dir, name, lambda d: d.mkdir(name, mode, creds), wh, opaque=opaque)

    def mknod(self, name: str, mode: int, rdev: int, creds: Credentials) -> Inode:
        """A node in the upper layer. A character device 0/0 is how whiteouts
        are stored, so it is refused (EPERM) rather than made into a name that
        would vanish."""
        if mode & S_IFMT == S_IFCHR and rdev == WHITEOUT_DEV:
            raise SyscallError(errno.EPERM, "a 0/0 character device is an overlay whiteout")
        upper_dir, wh = self._prepare_create(name)
        return self._created(upper_dir, name, lambda d: d.mknod(name, mode, rdev, creds), wh)

    def symlink(self, name: str, target: str, creds: Credentials) -> Inode:
        upper_dir, wh = self._prepare_create(name)
        return self._created(upper_dir, name, lambda d: d.symlink(name, target, creds), wh)

    def link(self, name: str, inode: Inode) -> None:
        """Copy ``inode`` up (Linux does too) and link its upper copy here."""
        if not isinstance(inode, OverlayInode) or inode.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        self._need_dir()
        self.sb.check_writable()
        self.copy_up()
        target = inode.copy_up()
        upper_dir, wh = self._prepare_create(name)
        try:
            upper_dir.link(name, target)
        except SyscallError:
            if wh is not None:
                _make_whiteout(upper_dir, name)
            raise

    def _remove(self, name: str, child: Inode, *, is_dir: bool) -> None:
        self._need_dir()
        self.sb.check_writable()
        if not isinstance(child, OverlayInode) or child.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        if is_dir and not child.is_empty_dir():
            raise SyscallError(errno.ENOTEMPTY)
        whiteout = self._lower_has(name)
        upper_dir = self.copy_up()
        upper = _raw_lookup(upper_dir, name)
        if upper is not None and not is_whiteout(upper):
            if is_dir:
                _purge_whiteouts(upper)
                upper_dir.rmdir(name, upper)
                child.lower = None  # a removed directory lists nothing
            else:
                upper_dir.unlink(name, upper)
        if whiteout:
            _make_whiteout(upper_dir, name)
        if child.parent is self and child.name == name:
            child.parent = None

    def unlink(self, name: str, child: Inode) -> None:
        """Remove the upper entry, and leave a whiteout when the lower has ``name``."""
        self._remove(name, child, is_dir=False)

    def rmdir(self, name: str, child: Inode) -> None:
        """ENOTEMPTY unless empty in the merged view; removes the upper part
        (with its whiteouts) and leaves a whiteout when the lower has ``name``."""
        self._remove(name, child, is_dir=True)

    def rename(self, old_name: str, new_dir: Inode, new_name: str, *, exchange: bool = False) -> None:
        """Rename in the upper layer after copying up; whiteout at the old name
        when the lower has it. EXDEV for a directory with a lower layer (Linux
        without ``redirect_dir``) and for another filesystem's directory."""
        if not isinstance(new_dir, OverlayInode) or new_dir.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        self._need_dir()
        new_dir._need_dir()
        self.sb.check_writable()
        src = self.lookup(old_name)
        try:
            dst: OverlayInode | None = new_dir.lookup(new_name)
        except SyscallError as e:
            if e.errno != errno.ENOENT:
                raise
            dst = None
        for o in (src, dst if exchange else None):
            if o is not None and o.is_dir() and o.lower is not None:
                raise SyscallError(errno.EXDEV)
        if dst is not None and dst.is_dir() and not exchange and not dst.is_empty_dir():
            raise SyscallError(errno.ENOTEMPTY)
        old_upper_dir = self.copy_up()
        new_upper_dir = new_dir.copy_up()
        self._upper_at(old_name, src)
        if exchange:
            assert dst is not None
            new_dir._upper_at(new_name, dst)
        else:
            existing = _raw_lookup(new_upper_dir, new_name)
            if existing is not None:
                if is_whiteout(existing):
                    _unlink_upper(new_upper_dir, new_name, existing)
                elif existing.is_dir():
                    _purge_whiteouts(existing)
        whiteout = not exchange and self._lower_has(old_name)
        old_upper_dir.rename(old_name, new_upper_dir, new_name, exchange=exchange)
        if whiteout:
            _make_whiteout(old_upper_dir, old_name)
        # A directory moved to where the lower layer has that name hides it.
        if src.is_dir() and new_dir._lower_has(new_name):
            assert src.upper is not None
            src.upper.setxattr(OPAQUE_XATTR, b"y")
        if exchange and dst is not None and dst.is_dir() and self._lower_has(old_name):
            assert dst.upper is not None
            dst.upper.setxattr(OPAQUE_XATTR, b"y")
        if exchange and dst is not None:
            dst.parent, dst.name = self, old_name
        elif dst is not None and dst.parent is new_dir and dst.name == new_name:
            dst.parent = None
        src.parent, src.name = new_dir, new_name

    def supports_tmpfile(self) -> bool:
        return (self.upper if self.upper is not None else self.sb.upper.root()).supports_tmpfile()

    def tmpfile(self, mode: int, creds: Credentials) -> Inode:
        """An unnamed file of the upper layer (this directory copied up first)."""
        self._need_dir()
        self.sb.check_writable()
        new = self.copy_up().tmpfile(mode, creds)
        return self.sb.inode_for(new, None)

    # Symlinks.

    def readlink(self) -> str:
        return self.layer.readlink()

    def get_link(self, ctx: Any) -> Any:
        return self.layer.get_link(ctx)

    # Files.

    def open(self, fd: FileDescription) -> FileOps:
        """Directories list the merge; other files go to the current layer,
        after a copy-up when opened for writing."""
        if self.is_dir():
            return DirectoryOps()
        if fd.writable:
            self.copy_up()
        return _LayerFileOps(self, fd)

    def read(self, offset: int, length: int) -> bytes:
        return self.layer.read(offset, length)

    def write(self, offset: int, data: bytes) -> int:
        return self.copy_up().write(offset, data)

    def allocate(self, mode: int, offset: int, length: int) -> None:
        self.copy_up().allocate(mode, offset, length)

    def seek_data(self, offset: int, *, hole: bool) -> int:
        return self.layer.seek_data(offset, hole=hole)

    def fsync(self) -> None:
        if self.upper is not None:
            self.upper.fsync()

    def released(self) -> None:
        """The last name and description are gone: release the upper copy;
        a lower origin shows through again for its other lower names."""
        upper = self.upper
        if upper is None or upper.nlink != 0 or upper.open_count != 0:
            return
        self.sb.by_upper.pop(upper, None)
        upper.released()
        if self.lower is not None:
            self.upper = None

    # Extended attributes; trusted.overlay.* belong to the overlay.

    def getxattr(self, name: str) -> bytes:
        _check_private(name)
        return self.layer.getxattr(name)

    def setxattr(self, name: str, value: bytes, flags: int = 0) -> None:
        _check_private(name)
        self.copy_up().setxattr(name, value, flags)

    def listxattr(self) -> list[str]:
        return [n for n in self.layer.listxattr() if not n.startswith(PRIVATE_XATTR_PREFIX)]

    def removexattr(self, name: str) -> None:
        _check_private(name)
        self.copy_up().removexattr(name)


# Layer helpers: they act on layer inodes directly, as the kernel, without the
# VFS's permission checks.


def _layer_fd(sb: OverlaySuperblock, inode: Inode, flags: int) -> FileDescription:
    """A description of a layer inode, through the overlay's private mount of its layer."""
    return FileDescription(VirtualDentry(sb.layer_mount(inode), Dentry(inode)), flags)


def _close_layer_fd(fd: FileDescription) -> None:
    """Close a :func:`_layer_fd` description without ever releasing its inode:
    the overlay releases upper inodes itself and never touches lower ones."""
    fd.ops.release(fd)
    fd.inode.open_count -= 1


def _unlink_upper(upper_dir: Inode, name: str, inode: Inode) -> None:
    """Unlink a non-directory no overlay inode stands for (a whiteout), and
    release it as the VFS would (Linux ``iput``)."""
    upper_dir.unlink(name, inode)
    if inode.nlink == 0 and inode.open_count == 0:
        inode.released()


def _make_whiteout(upper_dir: Inode, name: str) -> None:
    upper_dir.mknod(name, S_IFCHR, WHITEOUT_DEV, _KERNEL_CREDS)


def _purge_whiteouts(upper_dir: Inode) -> None:
    """Remove the whiteouts of an upper directory that is empty in the merge."""
    for e in list(upper_dir.iterate(0)):
        child = _raw_lookup(upper_dir, e.name)
        if child is not None and is_whiteout(child):
            _unlink_upper(upper_dir, e.name, child)


def _remove_upper(upper_dir: Inode, name: str, inode: Inode) -> None:
    """Undo a creation in the upper layer (best effort)."""
    try:
        if inode.is_dir():
            _purge_whiteouts(inode)
            upper_dir.rmdir(name, inode)
        else:
            upper_dir.unlink(name, inode)
        if inode.nlink == 0 and inode.open_count == 0:
            inode.released()
    except SyscallError:
        pass


def _create_like(upper_dir: Inode, name: str, lower: Inode) -> Inode:
    """A new upper file named ``name`` of ``lower``'s type (regular file,
    directory, symlink with its target, or node with its rdev)."""
    kind, perm = lower.mode & S_IFMT, lower.mode & 0o7777
    if kind == S_IFREG:
        return upper_dir.create(name, S_IFREG | perm, _KERNEL_CREDS)
    if kind == S_IFDIR:
        return upper_dir.mkdir(name, S_IFDIR | perm, _KERNEL_CREDS)
    if kind == S_IFLNK:
        return upper_dir.symlink(name, lower.readlink(), _KERNEL_CREDS)
    return upper_dir.mknod(name, kind | perm, lower.rdev, _KERNEL_CREDS)


def _copy_contents(sb: OverlaySuperblock, lower: Inode, new: Inode, *, data: bool) -> None:
    """Copy a regular file's data (skipping holes), the xattrs (but the
    overlay's own), then owner, mode and atime/mtime (gVisor ``copyUpLocked``)."""
    if lower.is_regular() and data:
        size = lower.size
        src = _layer_fd(sb, lower, os.O_RDONLY)
        dst = _layer_fd(sb, new, os.O_WRONLY)
        try:
            off = 0
            while off < size:
                try:
                    off = lower.seek_data(off, hole=False)
                    end = min(size, lower.seek_data(off, hole=True))
                except SyscallError as e:
                    if e.errno == errno.ENXIO:
                        break
                    raise
                while off < end:
                    chunk = src.ops.read(src, min(COPY_CHUNK, end - off), off)
                    if not chunk:
                        break
                    written = 0
                    while written < len(chunk):
                        written += dst.ops.write(dst, chunk[written:], off + written)
                    off += len(chunk)
                if off < end:
                    break  # the lower file ended early
        finally:
            _close_layer_fd(src)
            _close_layer_fd(dst)
        if new.size != size:
            new.setattr(SetAttr(size=size))
    try:
        names = lower.listxattr()
    except SyscallError:
        names = []
    for name in names:
        if not name.startswith(PRIVATE_XATTR_PREFIX):
            new.setxattr(name, lower.getxattr(name))
    attrs = SetAttr(uid=lower.uid, gid=lower.gid, atime=lower.atime, mtime=lower.mtime)
    if not lower.is_symlink():
        attrs.mode = lower.mode & 0o7777
    new.setattr(attrs)


# Public helpers for the mount namespace.


def overlay_superblock(upper: Superblock, lower: Superblock, *, read_only: bool = False) -> OverlaySuperblock:
    """An overlay of ``upper`` over ``lower`` (gVisor ``fs.NewOverlayRoot``).

    Two uses: a tmpfs upper over a mount (``--overlay``, see
    :func:`tmpfs_overlay`), and the seed's ``addSubmountOverlay``: the real
    mount as the upper over a :func:`stub_tree` of its submount points, so
    that mount points exist without anything being created in the real
    filesystem (lookups never copy up). ``read_only`` (or a read-only upper
    superblock) makes every write EROFS. Raises SyscallError ENOTDIR when the
    lower root is a directory and the upper root is not.
    """
    return OverlaySuperblock(upper, lower, read_only=read_only)


def tmpfs_overlay(ctx: MountContext, lower: Superblock, data: str = "") -> OverlaySuperblock:
    """``lower`` under a fresh tmpfs (mount data ``data``, e.g. ``"size=64m"``)
    whose root takes the lower root's mode, owner, times and xattrs, so that
    the overlay's root looks like the lower one (the seed's ``addOverlay`` for
    ``--overlay``: all writes stay in sandbox memory, the lower is never
    written). ENODEV when no tmpfs is installed.
    """
    lroot = lower.root()
    mode = lroot.mode & 0o7777 if lroot.is_dir() else 0o755
    opts = f"mode={mode:o},uid={lroot.uid},gid={lroot.gid}"
    upper = ctx.new_superblock("tmpfs", f"{opts},{data}" if data else opts)
    uroot = upper.root()
    if lroot.is_dir():
        try:
            names = lroot.listxattr()
        except SyscallError:
            names = []
        for name in names:
            if not name.startswith(PRIVATE_XATTR_PREFIX):
                uroot.setxattr(name, lroot.getxattr(name))
        uroot.setattr(SetAttr(mode=mode, atime=lroot.atime, mtime=lroot.mtime))
    return OverlaySuperblock(upper, lower)


def stub_tree(ctx: MountContext, paths: list[str], mode: int = 0o755) -> Superblock:
    """A tmpfs holding a directory (``mode``, owned by root) for each of
    ``paths`` and their parents: the mount points below a mount (the seed's
    ``ramfs.MakeDirectoryTree`` for ``subtargets``). Paths are relative to the
    mount's root ("dev/pts"; a leading "/" is ignored). Raises SyscallError
    EINVAL for a path with a ``..`` component, ENODEV when no tmpfs is installed.
    """
    sb = ctx.new_superblock("tmpfs", f"mode={mode:o}")
    for path in paths:
        parts = [p for p in path.split("/") if p and p != "."]
        if ".." in parts:
            raise SyscallError(errno.EINVAL, f"stub path {path!r} leaves its mount")
        d = sb.root()
        for part in parts:
            child = _raw_lookup(d, part)
            if child is None:
                child = d.mkdir(part, S_IFDIR | mode, _KERNEL_CREDS)
            elif not child.is_dir():
                raise SyscallError(errno.ENOTDIR, posixpath.join(*parts))
            d = child
    return sb
