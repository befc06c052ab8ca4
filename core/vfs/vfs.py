"""The VFS operations the syscall layer calls (Linux ``fs/namei.c``,
``fs/open.c``, ``fs/attr.c``, ``fs/stat.c``; gVisor ``vfs.VirtualFilesystem``).

Every operation takes the caller's :class:`FSContext` and, for ``*at`` calls, the
start of a relative path (the cwd or a dirfd's dentry). The checks happen in
Linux's order, so that the same bad call gets the same errno: path walk
(ENOENT, ENOTDIR, EACCES on search, ELOOP, ENAMETOOLONG), then the call's own
(EEXIST, EROFS, EACCES on the directory, EPERM for a sticky directory, EXDEV,
EBUSY for a mount point, ...), then the filesystem's (ENOTEMPTY, ENOSPC).
"""

from __future__ import annotations

import errno
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SyscallError
from ..kernel.auth import CAP_CHOWN, CAP_FSETID, CAP_MKNOD, NO_ID
from .file import O_ACCMODE, O_PATH, O_TMPFILE, FileDescription, FileOps
from .inode import (
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    S_IFSOCK,
    S_ISGID,
    S_ISUID,
    S_ISVTX,
    Inode,
    SetAttr,
    Stat,
    StatFS,
    major,
    minor,
)
from .mount import VirtualDentry
from .namei import MAX_SYMLINKS, PATH_MAX, FSContext, ParentPath, resolve, resolve_parent
from .permissions import (
    MAY_EXEC,
    MAY_READ,
    MAY_WRITE,
    check_permission,
    check_sticky,
    is_owner,
    may_access,
    should_clear_sgid,
)
from .pipe import Pipe

RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
AT_EACCESS = 0x200
F_OK, X_OK, W_OK, R_OK = 0, 1, 2, 4

#: Flags open(2) consumes; the rest are kept as the description's flags.
_OPEN_ONLY = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC | os.O_CLOEXEC
#: The bit that tells O_TMPFILE apart from O_DIRECTORY (Linux ``__O_TMPFILE``).
_O_TMPFILE_BIT = O_TMPFILE & ~os.O_DIRECTORY

#: fallocate(2) modes (Linux ``include/uapi/linux/falloc.h``).
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_COLLAPSE_RANGE = 0x01, 0x02, 0x08
FALLOC_FL_ZERO_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_UNSHARE_RANGE = 0x10, 0x20, 0x40
_FALLOC_SUPPORTED = (
    FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_ZERO_RANGE
    | FALLOC_FL_INSERT_RANGE | FALLOC_FL_UNSHARE_RANGE
)

DeviceOpener = Callable[[FileDescription], FileOps]


class DeviceRegistry:
    """Character devices by (major, minor) (Linux ``chrdev``): what opening a
    device inode gives, on whatever filesystem the inode lives."""

    def __init__(self) -> None:
        self._chr: dict[tuple[int, int], DeviceOpener] = {}

    def register(self, major: int, minor: int, opener: DeviceOpener) -> None:
        self._chr[(major, minor)] = opener

    def open(self, rdev_major: int, rdev_minor: int, fd: FileDescription) -> FileOps:
        opener = self._chr.get((rdev_major, rdev_minor))
        if opener is None:
            raise SyscallError(errno.ENXIO)
        return opener(fd)


@dataclass
class Timespec:
    """A utimensat time: ns since the epoch, or UTIME_NOW / UTIME_OMIT in ``nsec``."""

    sec: int = 0
    nsec: int = UTIME_NOW

    def resolve(self, now: int) -> int | None:
        if self.nsec == UTIME_OMIT:
            return None
        if self.nsec == UTIME_NOW:
            return now
        if not 0 <= self.nsec < 10**9:
            raise SyscallError(errno.EINVAL)
        return self.sec * 10**9 + self.nsec


class VirtualFilesystem:
    """Filesystem operations over mount namespaces; one per kernel."""

    def __init__(self) -> None:
        self.devices = DeviceRegistry()
        #: Inodes made by O_TMPFILE without O_EXCL and not yet linked: the
        #: only ones with nlink 0 that linkat may name (Linux ``I_LINKABLE``).
        self._linkable: weakref.WeakSet[Inode] = weakref.WeakSet()

    # Helpers.

    @staticmethod
    def _writable_mount(vd: VirtualDentry) -> None:
        if vd.mount.read_only:
            raise SyscallError(errno.EROFS)

    @staticmethod
    def _lookup(parent: VirtualDentry, name: str) -> VirtualDentry | None:
        try:
            return VirtualDentry(parent.mount, parent.dentry.child(name))
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                return None
            raise

    def _may_create(self, ctx: FSContext, p: ParentPath, *, want_dir: bool = False) -> None:
        """EEXIST (also for ``.``, ``..`` and ``/``), ENOENT for a trailing
        slash unless a directory is wanted, EROFS, ENOENT in a removed
        directory, then EACCES, as Linux ``filename_create`` and ``may_create``."""
        if p.name in ("", ".", ".."):
            raise SyscallError(errno.EEXIST)
        if self._lookup(p.parent, p.name) is not None:
            raise SyscallError(errno.EEXIST)
        if p.trailing_slash and not want_dir:
            raise SyscallError(errno.ENOENT)
        self._writable_mount(p.parent)
        self._may_create_in(ctx, p.parent)

    @staticmethod
    def _may_create_in(ctx: FSContext, parent: VirtualDentry) -> None:
        """Linux ``may_create`` once the name is known to be free: ENOENT in a
        directory that was removed (``IS_DEADDIR``), then EACCES."""
        if is_dead_dir(parent):
            raise SyscallError(errno.ENOENT)
        check_permission(ctx.creds, parent.inode, MAY_WRITE | MAY_EXEC)

    def _may_delete(
        self, ctx: FSContext, parent: VirtualDentry, child: VirtualDentry, *, is_dir: bool, busy: bool = True
    ) -> None:
        """Linux ``may_delete``: permission, sticky bit, type; then (``busy``)
        EBUSY for a mount point, as ``vfs_unlink``/``vfs_rmdir`` check next."""
        check_permission(ctx.creds, parent.inode, MAY_WRITE | MAY_EXEC)
        check_sticky(ctx.creds, parent.inode, child.inode)
        if is_dir and not child.inode.is_dir():
            raise SyscallError(errno.ENOTDIR)
        if not is_dir and child.inode.is_dir():
            raise SyscallError(errno.EISDIR)
        if busy:
            self._not_busy(ctx, child)

    @staticmethod
    def _not_busy(ctx: FSContext, child: VirtualDentry) -> None:
        if ctx.ns.is_mountpoint(child) or child.dentry is child.mount.root:
            raise SyscallError(errno.EBUSY)

    @staticmethod
    def _new_mode(ctx: FSContext, mode: int) -> int:
        return mode & 0o7777 & ~ctx.umask

    @staticmethod
    def _forget(inode: Inode) -> None:
        if inode.nlink == 0 and inode.open_count == 0:
            inode.released()

    def _special_ops(self, fd: FileDescription) -> FileOps:
        """FileOps the VFS provides itself: devices and FIFOs on any filesystem
        (Linux ``init_special_inode``); ENXIO for block devices and sockets."""
        inode = fd.inode
        if inode.type == S_IFCHR:
            return self.devices.open(major(inode.rdev), minor(inode.rdev), fd)
        if inode.type == S_IFIFO:
            if inode.fifo is None:
                inode.fifo = Pipe()
            return inode.fifo.open_fifo(fd)
        raise SyscallError(errno.ENXIO)

    # open(2).

    def open(self, ctx: FSContext, start: VirtualDentry, path: str, flags: int, mode: int = 0) -> FileDescription:
        """openat(2). ``flags`` are Linux open flags; O_CLOEXEC is the caller's
        to apply to its FD table. Returns a description holding one reference.

        Linux ``build_open_flags``, ``path_openat``, ``do_open`` and
        ``may_open``, in their order: O_PATH keeps only O_DIRECTORY,
        O_NOFOLLOW and O_CLOEXEC; O_CREAT|O_DIRECTORY and a malformed
        O_TMPFILE are EINVAL; the walk (ENOENT, ENOTDIR, EACCES, ELOOP,
        ENAMETOOLONG); O_CREAT with a trailing slash is EISDIR, O_EXCL on an
        existing name EEXIST (symlinks are not followed then), a dangling
        symlink's target is created, EROFS/EACCES/ENOSPC for a new file;
        O_DIRECTORY on a non-directory is ENOTDIR; then a symlink is ELOOP
        (O_NOFOLLOW), writing a directory EISDIR, a device on a nodev mount
        EACCES, writing on a read-only mount EROFS, the mode bits EACCES
        (O_ACCMODE 3 needs read and write), O_NOATIME by a non-owner EPERM;
        sockets and unknown devices are ENXIO, FIFOs may block (WouldBlock)
        or be ENXIO. O_TRUNC on a regular file sets size 0, mtime and ctime
        and drops set-id bits as a write does (see :meth:`remove_privs`).
        """
        if flags & O_PATH:
            flags &= O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        if flags & (os.O_CREAT | os.O_DIRECTORY) == os.O_CREAT | os.O_DIRECTORY:
            raise SyscallError(errno.EINVAL)
        if flags & _O_TMPFILE_BIT:
            return self._open_tmpfile(ctx, start, path, flags, mode)
        created = False
        if flags & os.O_CREAT:
            vd, created = self._open_create(ctx, start, path, flags, mode)
            if vd.inode.is_dir():
                raise SyscallError(errno.EISDIR)
        else:
            vd = resolve(ctx, start, path, follow=not flags & os.O_NOFOLLOW)
        inode = vd.inode
        if flags & os.O_DIRECTORY and not inode.is_dir():
            raise SyscallError(errno.ENOTDIR)
        if not flags & O_PATH:
            self._may_open(ctx, vd, flags, created)
        special = inode.type in (S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK)
        desc = FileDescription(vd, flags & ~_OPEN_ONLY, self._special_ops if special else None)
        if flags & os.O_TRUNC and inode.is_regular() and not created and not flags & O_PATH:
            now = inode.sb.now()
            inode.setattr(SetAttr(size=0, mtime=now, ctime=now, mode=self._mode_without_privs(ctx, inode)))
        return desc

    def _open_create(
        self, ctx: FSContext, start: VirtualDentry, path: str, flags: int, mode: int
    ) -> tuple[VirtualDentry, bool]:
        """The O_CREAT half of open (Linux ``open_last_lookups``/``lookup_open``):
        the existing file, or a new one; True when it was created. A symlink
        in the last place is followed (unless O_EXCL or O_NOFOLLOW) and its
        target's last name created in turn."""
        budget = [MAX_SYMLINKS]
        while True:
            p = resolve_parent(ctx, start, path, budget=budget)
            if p.name in ("", ".", ".."):  # an existing directory
                raise SyscallError(errno.EEXIST if flags & os.O_EXCL else errno.EISDIR)
            if p.trailing_slash:
                raise SyscallError(errno.EISDIR)
            if is_dead_dir(p.parent):
                raise SyscallError(errno.ENOENT)
            vd = self._lookup(p.parent, p.name)
            if vd is None:
                self._writable_mount(p.parent)
                check_permission(ctx.creds, p.parent.inode, MAY_WRITE | MAY_EXEC)
                inode = p.parent.inode.create(p.name, S_IFREG | self._new_mode(ctx, mode), ctx.creds)
                return VirtualDentry(p.parent.mount, p.parent.dentry.add(p.name, inode)), True
            vd = ctx.ns.follow_mounts(vd)
            if flags & os.O_EXCL:
                raise SyscallError(errno.EEXIST)
            if not vd.inode.is_symlink() or flags & os.O_NOFOLLOW:
                return vd, False  # a symlink with O_NOFOLLOW is ELOOP in _may_open
            budget[0] -= 1
            if budget[0] < 0:
                raise SyscallError(errno.ELOOP)
            target = vd.inode.get_link(ctx)
            if isinstance(target, VirtualDentry):
                return target, False
            if not target:
                raise SyscallError(errno.ENOENT)
            start, path = p.parent, target

    def _may_open(self, ctx: FSContext, vd: VirtualDentry, flags: int, created: bool) -> None:
        """Linux ``may_open`` (and ``sb_permission``'s EROFS) for a resolved,
        non-O_PATH open."""
        inode = vd.inode
        acc = flags & O_ACCMODE
        mask = (MAY_READ if acc != os.O_WRONLY else 0) | (
            MAY_WRITE if acc != os.O_RDONLY or flags & os.O_TRUNC else 0
        )
        if inode.type == S_IFLNK:
            raise SyscallError(errno.ELOOP)
        if inode.is_dir() and mask & MAY_WRITE:
            raise SyscallError(errno.EISDIR)
        if inode.type in (S_IFCHR, S_IFBLK) and vd.mount.flags.no_dev:
            raise SyscallError(errno.EACCES)
        if not created:
            if mask & MAY_WRITE and inode.type in (S_IFREG, S_IFDIR, S_IFLNK):
                self._writable_mount(vd)
            check_permission(ctx.creds, inode, mask)
        if flags & os.O_NOATIME and not is_owner(ctx.creds, inode):
            raise SyscallError(errno.EPERM)

    def _open_tmpfile(self, ctx: FSContext, start: VirtualDentry, path: str, flags: int, mode: int) -> FileDescription:
        """O_TMPFILE (Linux ``do_tmpfile``/``vfs_tmpfile``): an unnamed regular
        file in the directory ``path``, nlink 0, freed at its last close unless
        linked first with :meth:`link_vd` (allowed once, without O_EXCL).
        EINVAL without O_DIRECTORY, with O_CREAT or without write access;
        ENOTDIR, EROFS, EACCES (write and search on the directory),
        EOPNOTSUPP where the filesystem has none."""
        if flags & (O_TMPFILE | os.O_CREAT) != O_TMPFILE or flags & O_ACCMODE == os.O_RDONLY:
            raise SyscallError(errno.EINVAL)
        vd = resolve(ctx, start, path)
        if not vd.inode.is_dir():
            raise SyscallError(errno.ENOTDIR)
        self._writable_mount(vd)
        check_permission(ctx.creds, vd.inode, MAY_WRITE | MAY_EXEC)
        if not vd.inode.supports_tmpfile():
            raise SyscallError(errno.EOPNOTSUPP)
        inode = vd.inode.tmpfile(S_IFREG | self._new_mode(ctx, mode), ctx.creds)
        dentry = type(vd.dentry)(inode, f"#{inode.ino}", vd.dentry)
        dentry.dead = True
        desc = FileDescription(VirtualDentry(vd.mount, dentry), flags & ~(_OPEN_ONLY | O_TMPFILE))
        if not flags & os.O_EXCL:
            self._linkable.add(inode)
        return desc

    # Creating names.

    def mkdir(self, ctx: FSContext, start: VirtualDentry, path: str, mode: int) -> None:
        """mkdirat(2): a trailing slash is fine; ``mode`` keeps its permission
        and sticky bits only, less the umask (Linux ``vfs_mkdir``; S_ISGID
        comes from a set-group-ID parent). EEXIST, ENOENT, ENOTDIR, EROFS,
        EACCES, ENOSPC."""
        p = resolve_parent(ctx, start, path)
        self._may_create(ctx, p, want_dir=True)
        mode = self._new_mode(ctx, mode) & (0o777 | S_ISVTX)
        inode = p.parent.inode.mkdir(p.name, S_IFDIR | mode, ctx.creds)
        p.parent.dentry.add(p.name, inode)

    def mknod(self, ctx: FSContext, start: VirtualDentry, path: str, mode: int, rdev: int = 0) -> None:
        """mknodat(2): regular files (type 0 too), FIFOs, sockets and (with
        CAP_MKNOD, else EPERM after the other checks) devices. EPERM for a
        directory, EINVAL for other types, ENOENT for a trailing slash on a
        new name, then as mkdir."""
        ftype = mode & S_IFMT or S_IFREG
        if ftype == S_IFDIR:
            raise SyscallError(errno.EPERM)
        if ftype not in (S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK):
            raise SyscallError(errno.EINVAL)
        p = resolve_parent(ctx, start, path)
        self._may_create(ctx, p)
        if ftype in (S_IFCHR, S_IFBLK) and not ctx.creds.has_cap(CAP_MKNOD):
            raise SyscallError(errno.EPERM)
        inode = p.parent.inode.mknod(p.name, ftype | self._new_mode(ctx, mode), rdev, ctx.creds)
        p.parent.dentry.add(p.name, inode)

    def symlink(self, ctx: FSContext, target: str, start: VirtualDentry, path: str) -> None:
        """symlinkat(2): ENOENT for an empty target, ENAMETOOLONG for one of
        4096 bytes or more (Linux ``getname``), then as mknod."""
        if not target:
            raise SyscallError(errno.ENOENT)
        if len(os.fsencode(target)) >= PATH_MAX:
            raise SyscallError(errno.ENAMETOOLONG)
        p = resolve_parent(ctx, start, path)
        self._may_create(ctx, p)
        inode = p.parent.inode.symlink(p.name, target, ctx.creds)
        p.parent.dentry.add(p.name, inode)

    def link(
        self, ctx: FSContext, old_start: VirtualDentry, old_path: str, new_start: VirtualDentry, new_path: str,
        *, follow: bool = False,
    ) -> None:
        """linkat(2); ``follow`` is AT_SYMLINK_FOLLOW. See :meth:`link_vd`."""
        old = resolve(ctx, old_start, old_path, follow=follow)
        self.link_vd(ctx, old, new_start, new_path)

    def link_vd(self, ctx: FSContext, old: VirtualDentry, new_start: VirtualDentry, new_path: str) -> None:
        """linkat(2) of a resolved ``old`` (also linkat(fd, "", AT_EMPTY_PATH)).

        Linux ``do_linkat``/``vfs_link`` order: EEXIST (also for ``.``, ``..``
        and ``/``), ENOENT for a trailing slash on a new name, EROFS, EXDEV
        across mounts, ENOENT in a removed directory, EACCES, EPERM for a
        directory, ENOENT for a file with no links left (except an O_TMPFILE
        file opened without O_EXCL, once), ENOSPC from the filesystem.
        """
        p = resolve_parent(ctx, new_start, new_path)
        if p.name in ("", ".", "..") or self._lookup(p.parent, p.name) is not None:
            raise SyscallError(errno.EEXIST)
        if p.trailing_slash:
            raise SyscallError(errno.ENOENT)
        self._writable_mount(p.parent)
        if old.mount is not p.parent.mount:
            raise SyscallError(errno.EXDEV)
        self._may_create_in(ctx, p.parent)
        inode = old.inode
        if inode.is_dir():
            raise SyscallError(errno.EPERM)
        if inode.nlink == 0 and inode not in self._linkable:
            raise SyscallError(errno.ENOENT)
        p.parent.inode.link(p.name, inode)
        self._linkable.discard(inode)
        p.parent.dentry.add(p.name, inode)

    # Removing names.

    def unlink(self, ctx: FSContext, start: VirtualDentry, path: str) -> None:
        """unlinkat(2) (Linux ``do_unlinkat``): EISDIR for ``.``, ``..`` and
        ``/``, EROFS, ENOENT, EISDIR/ENOTDIR for a trailing slash, EACCES,
        EPERM (sticky directory), EISDIR for a directory, EBUSY for a mount
        point. An open file lives on until its last close."""
        p = resolve_parent(ctx, start, path)
        if p.name in ("", ".", ".."):
            raise SyscallError(errno.EISDIR)
        self._writable_mount(p.parent)
        child = self._lookup(p.parent, p.name)
        if child is None:
            raise SyscallError(errno.ENOENT)
        if p.trailing_slash:
            raise SyscallError(errno.EISDIR if child.inode.is_dir() else errno.ENOTDIR)
        self._may_delete(ctx, p.parent, child, is_dir=False)
        p.parent.inode.unlink(p.name, child.inode)
        p.parent.dentry.drop(p.name)
        self._forget(child.inode)

    def rmdir(self, ctx: FSContext, start: VirtualDentry, path: str) -> None:
        """rmdir(2) (Linux ``do_rmdir``): ENOTEMPTY for ``..``, EINVAL for
        ``.``, EBUSY for ``/``, EROFS, ENOENT, EACCES, EPERM (sticky),
        ENOTDIR (a symlink is not followed), EBUSY for a mount point, then
        ENOTEMPTY from the filesystem."""
        p = resolve_parent(ctx, start, path)
        if p.name == "..":
            raise SyscallError(errno.ENOTEMPTY)
        if p.name == ".":
            raise SyscallError(errno.EINVAL)
        if p.name == "":
            raise SyscallError(errno.EBUSY)
        self._writable_mount(p.parent)
        child = self._lookup(p.parent, p.name)
        if child is None:
            raise SyscallError(errno.ENOENT)
        self._may_delete(ctx, p.parent, child, is_dir=True)
        p.parent.inode.rmdir(p.name, child.inode)
        p.parent.dentry.drop(p.name)
        self._forget(child.inode)

    def rename(
        self, ctx: FSContext, old_start: VirtualDentry, old_path: str, new_start: VirtualDentry, new_path: str,
        flags: int = 0,
    ) -> None:
        """renameat2(2) with RENAME_NOREPLACE or RENAME_EXCHANGE (Linux
        ``do_renameat2``, ``vfs_rename``), in Linux's order: EINVAL for bad
        flags, the walks, EXDEV across mounts, EBUSY for ``.``/``..``/``/``
        (EEXIST as the new name with NOREPLACE), EROFS, ENOENT, EEXIST
        (NOREPLACE), ENOENT (EXCHANGE without a new name), ENOTDIR for
        trailing slashes on non-directories, EINVAL for a directory moved
        into its own subtree, ENOTEMPTY (EINVAL with EXCHANGE) for one moved
        onto its ancestor; nothing for two names of one file; then EACCES,
        EPERM (sticky), ENOTDIR/EISDIR for mismatched types, ENOENT into a
        removed directory, EACCES for moving a directory one cannot write,
        EBUSY for mount points, ENOTEMPTY for a non-empty directory replaced.
        """
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or (
            flags & RENAME_NOREPLACE and flags & RENAME_EXCHANGE
        ):
            raise SyscallError(errno.EINVAL)
        exchange = bool(flags & RENAME_EXCHANGE)
        op = resolve_parent(ctx, old_start, old_path)
        np = resolve_parent(ctx, new_start, new_path)
        if op.parent.mount is not np.parent.mount:
            raise SyscallError(errno.EXDEV)
        if op.name in ("", ".", ".."):
            raise SyscallError(errno.EBUSY)
        if np.name in ("", ".", ".."):
            raise SyscallError(errno.EEXIST if flags & RENAME_NOREPLACE else errno.EBUSY)
        self._writable_mount(op.parent)
        old = self._lookup(op.parent, op.name)
        if old is None:
            raise SyscallError(errno.ENOENT)
        new = self._lookup(np.parent, np.name)
        if flags & RENAME_NOREPLACE and new is not None:
            raise SyscallError(errno.EEXIST)
        if exchange and new is None:
            raise SyscallError(errno.ENOENT)
        if not exchange and not old.inode.is_dir() and (op.trailing_slash or np.trailing_slash):
            raise SyscallError(errno.ENOTDIR)
        if exchange and (
            (op.trailing_slash and not old.inode.is_dir())
            or (np.trailing_slash and new is not None and not new.inode.is_dir())
        ):
            raise SyscallError(errno.ENOTDIR)
        # A folder cannot move into its own subtree, nor be replaced by an ancestor.
        if old.dentry.is_ancestor_of(np.parent.dentry):
            raise SyscallError(errno.EINVAL)
        if new is not None and new.dentry.is_ancestor_of(op.parent.dentry):
            raise SyscallError(errno.EINVAL if exchange else errno.ENOTEMPTY)
        if new is not None and new.inode is old.inode:
            return  # the same file: nothing to do (POSIX)
        old_is_dir = old.inode.is_dir()
        self._may_delete(ctx, op.parent, old, is_dir=old_is_dir, busy=False)
        if new is None:
            self._may_create_in(ctx, np.parent)
        else:
            # The new name is deleted as if it were of old's type (ENOTDIR,
            # EISDIR), or of its own for an exchange (Linux ``vfs_rename``).
            self._may_delete(ctx, np.parent, new, is_dir=new.inode.is_dir() if exchange else old_is_dir, busy=False)
        moving = op.parent.dentry is not np.parent.dentry
        if moving and old_is_dir:
            check_permission(ctx.creds, old.inode, MAY_WRITE)
        if exchange and moving and new is not None and new.inode.is_dir():
            check_permission(ctx.creds, new.inode, MAY_WRITE)
        self._not_busy(ctx, old)
        if new is not None:
            self._not_busy(ctx, new)
            if not exchange and new.inode.is_dir() and not new.inode.is_empty_dir():
                raise SyscallError(errno.ENOTEMPTY)
        replaced = new.inode if new is not None and not exchange else None
        op.parent.inode.rename(op.name, np.parent.inode, np.name, exchange=exchange)
        self._move_dentries(op, np, exchange)
        if replaced is not None:
            self._forget(replaced)

    @staticmethod
    def _move_dentries(op: ParentPath, np: ParentPath, exchange: bool) -> None:
        old_parent, new_parent = op.parent.dentry, np.parent.dentry
        moved = old_parent.children.pop(op.name, None)
        other = new_parent.children.pop(np.name, None)
        if moved is not None:
            moved.name, moved.parent = np.name, new_parent
            new_parent.children[np.name] = moved
        if other is not None:
            if exchange:
                other.name, other.parent = op.name, old_parent
                old_parent.children[op.name] = other
            else:
                other.dead = True

    # Reading names and attributes.

    def readlink(self, ctx: FSContext, start: VirtualDentry, path: str) -> str:
        """readlinkat(2): the target of the symlink ``path`` names (not
        followed unless a trailing slash asks); EINVAL for anything else."""
        vd = resolve(ctx, start, path, follow=False)
        if not vd.inode.is_symlink():
            raise SyscallError(errno.EINVAL)
        return vd.inode.readlink()

    def stat(self, ctx: FSContext, start: VirtualDentry, path: str, *, follow: bool = True) -> Stat:
        """fstatat(2)/statx(2); ``follow`` False is AT_SYMLINK_NOFOLLOW.
        AT_EMPTY_PATH is :meth:`stat_vd` on the description's ``vd``."""
        return self.stat_vd(resolve(ctx, start, path, follow=follow))

    @staticmethod
    def stat_vd(vd: VirtualDentry) -> Stat:
        s = vd.inode.stat()
        s.mount_id = vd.mount.id
        return s

    def statfs(self, ctx: FSContext, start: VirtualDentry, path: str) -> StatFS:
        return self.statfs_vd(resolve(ctx, start, path))

    @staticmethod
    def statfs_vd(vd: VirtualDentry) -> StatFS:
        s = vd.inode.statfs()
        flags = vd.mount.flags
        # Linux ST_* bits: RDONLY 1, NOSUID 2, NODEV 4, NOEXEC 8, NOATIME 1024, NODIRATIME 2048, RELATIME 4096.
        s.flags = (
            (1 if vd.mount.read_only else 0) | (2 if flags.no_suid else 0) | (4 if flags.no_dev else 0)
            | (8 if flags.no_exec else 0) | (1024 if flags.no_atime else 0) | (2048 if flags.no_diratime else 0)
            | (0 if flags.strict_atime or flags.no_atime else 4096)
        )
        return s

    def access(self, ctx: FSContext, start: VirtualDentry, path: str, mode: int, flags: int = 0) -> None:
        """faccessat2(2): checks with the real ids unless AT_EACCESS (and, for a
        real uid other than 0, without capabilities); X_OK on a regular file
        of a noexec mount is EACCES; EROFS for W_OK on a read-only mount
        except for FIFOs, sockets and devices; X_OK needs an x bit even for
        root. ``flags`` may hold AT_EACCESS and AT_SYMLINK_NOFOLLOW (0x100)."""
        if mode & ~7:
            raise SyscallError(errno.EINVAL)
        creds = ctx.creds
        if not flags & AT_EACCESS:
            caps = creds.permitted if creds.uid == 0 else 0
            creds = creds.with_ids(fsuid=creds.uid, fsgid=creds.gid, effective=caps)
        sub = FSContext(ctx.ns, ctx.root, ctx.cwd, creds, ctx.umask)
        vd = resolve(sub, start, path, follow=not flags & 0x100)
        if mode == F_OK:
            return
        if mode & X_OK and vd.inode.is_regular() and vd.mount.flags.no_exec:
            raise SyscallError(errno.EACCES)
        if mode & W_OK and vd.inode.type in (S_IFREG, S_IFDIR, S_IFLNK) and vd.mount.read_only:
            raise SyscallError(errno.EROFS)
        if not may_access(creds, vd.inode, mode):
            raise SyscallError(errno.EACCES)

    # Changing attributes.

    def chmod(self, ctx: FSContext, vd: VirtualDentry, mode: int) -> None:
        """fchmodat(2) on a resolved ``vd``: EROFS first (Linux ``chmod_common``
        takes the mount for writing), then the owner or CAP_FOWNER (EPERM).
        S_ISGID is dropped when the caller is outside the file's group
        without CAP_FSETID. Sets ctime."""
        self._writable_mount(vd)
        if not is_owner(ctx.creds, vd.inode):
            raise SyscallError(errno.EPERM)
        mode &= 0o7777
        if should_clear_sgid(ctx.creds, mode, vd.inode.gid):
            mode &= ~S_ISGID
        vd.inode.setattr(SetAttr(mode=mode, ctime=vd.inode.sb.now()))

    def chown(self, ctx: FSContext, vd: VirtualDentry, uid: int, gid: int) -> None:
        """fchownat(2) on a resolved ``vd``; ``NO_ID`` (-1) leaves an id as it is.

        EROFS first (Linux ``do_fchownat``). Changing the owner needs
        CAP_CHOWN; the owner may change the group to one of their own (EPERM).
        On a non-directory S_ISUID is always cleared, even for root and for
        (-1, -1), and S_ISGID when group-executable or when the caller is
        outside the file's group without CAP_FSETID (``chown_common``,
        ``setattr_should_drop_sgid``); clearing them needs the owner (EPERM,
        ``setattr_prepare``). ctime is set even when nothing changes.
        """
        self._writable_mount(vd)
        inode, creds = vd.inode, ctx.creds
        new_uid = None if uid in (NO_ID, -1) else uid
        new_gid = None if gid in (NO_ID, -1) else gid
        if new_uid is not None and new_uid != inode.uid and not creds.has_cap(CAP_CHOWN):
            raise SyscallError(errno.EPERM)
        if new_uid is not None and new_uid == inode.uid and creds.fsuid != inode.uid and not creds.has_cap(CAP_CHOWN):
            raise SyscallError(errno.EPERM)
        if new_gid is not None and new_gid != inode.gid and not creds.has_cap(CAP_CHOWN):
            if creds.fsuid != inode.uid or not creds.in_group(new_gid):
                raise SyscallError(errno.EPERM)
        if new_gid is not None and new_gid == inode.gid and new_uid is None:
            if creds.fsuid != inode.uid and not creds.has_cap(CAP_CHOWN):
                raise SyscallError(errno.EPERM)
        attrs = SetAttr(uid=new_uid, gid=new_gid, ctime=inode.sb.now())
        if not inode.is_dir():
            old_mode = inode.mode & 0o7777
            mode = old_mode & ~S_ISUID
            if mode & S_ISGID and (
                mode & 0o010 or not (creds.in_group(inode.gid) or creds.has_cap(CAP_FSETID))
            ):
                mode &= ~S_ISGID
            if mode != old_mode:
                if not is_owner(creds, inode):
                    raise SyscallError(errno.EPERM)
                attrs.mode = mode
        inode.setattr(attrs)

    def utimens(self, ctx: FSContext, vd: VirtualDentry, atime: Timespec, mtime: Timespec) -> None:
        """utimensat(2) on a resolved ``vd`` (Linux ``vfs_utimes``): EINVAL for
        an nsec that is neither in [0, 1e9) nor UTIME_NOW/UTIME_OMIT, then
        EROFS; explicit times (or one UTIME_OMIT) need the owner or
        CAP_FOWNER (EPERM); UTIME_NOW for both also allows write permission
        (EACCES). Both UTIME_OMIT changes nothing. ctime is set to now."""
        inode = vd.inode
        for t in (atime, mtime):
            if t.nsec not in (UTIME_NOW, UTIME_OMIT) and not 0 <= t.nsec < 10**9:
                raise SyscallError(errno.EINVAL)
        if atime.nsec == UTIME_OMIT and mtime.nsec == UTIME_OMIT:
            return
        both_now = atime.nsec == UTIME_NOW and mtime.nsec == UTIME_NOW
        self._writable_mount(vd)
        if not is_owner(ctx.creds, inode):
            if not both_now:
                raise SyscallError(errno.EPERM)
            check_permission(ctx.creds, inode, MAY_WRITE)
        now = inode.sb.now()
        inode.setattr(SetAttr(atime=atime.resolve(now), mtime=mtime.resolve(now), ctime=now))

    def truncate(self, ctx: FSContext, vd: VirtualDentry, length: int) -> None:
        """truncate(2) on a resolved ``vd`` (Linux ``vfs_truncate``): EINVAL for
        a negative length, EISDIR, EINVAL for other non-regular files, EROFS,
        then EACCES. Sets mtime and ctime."""
        if length < 0:
            raise SyscallError(errno.EINVAL)
        if vd.inode.is_dir():
            raise SyscallError(errno.EISDIR)
        if not vd.inode.is_regular():
            raise SyscallError(errno.EINVAL)
        self._writable_mount(vd)
        check_permission(ctx.creds, vd.inode, MAY_WRITE)
        now = vd.inode.sb.now()
        attrs = SetAttr(size=length, mtime=now, ctime=now)
        attrs.mode = self._mode_without_privs(ctx, vd.inode)
        vd.inode.setattr(attrs)

    @staticmethod
    def _mode_without_privs(ctx: FSContext, inode: Inode) -> int | None:
        """The permission bits once a write by ``ctx`` drops set-user-ID and
        set-group-ID, or None when nothing is to drop (Linux
        ``setattr_should_drop_suidgid``): regular files only, never with
        CAP_FSETID; S_ISUID always, S_ISGID when group-executable or when the
        caller is outside the file's group."""
        mode = inode.mode & 0o7777
        if not inode.is_regular() or not mode & (S_ISUID | S_ISGID) or ctx.creds.has_cap(CAP_FSETID):
            return None
        new = mode & ~S_ISUID
        if mode & S_ISGID and (mode & 0o010 or not ctx.creds.in_group(inode.gid)):
            new &= ~S_ISGID
        return new if new != mode else None

    def remove_privs(self, ctx: FSContext, desc: FileDescription) -> None:
        """Linux ``file_remove_privs``: what the syscall layer calls before
        write(2), pwrite(2), ftruncate(2) and fallocate(2) by ``ctx`` on
        ``desc`` (those VFS calls do not know the caller). A regular file
        loses S_ISUID, and S_ISGID when group-executable or when the caller
        is outside its group, unless the caller has CAP_FSETID; ctime is set
        when something changed. truncate(2) and O_TRUNC do this themselves."""
        mode = self._mode_without_privs(ctx, desc.inode)
        if mode is not None:
            desc.inode.setattr(SetAttr(mode=mode, ctime=desc.inode.sb.now()))

    @staticmethod
    def ftruncate(desc: FileDescription, length: int) -> None:
        """ftruncate(2) (Linux ``do_sys_ftruncate``): EINVAL for a negative
        length, EBADF for O_PATH, EINVAL unless open for writing on a regular
        file. O_APPEND is no obstacle (only the append-only inode flag is).
        Sets mtime and ctime even when the size stays."""
        if length < 0:
            raise SyscallError(errno.EINVAL)
        if desc.flags & O_PATH:
            raise SyscallError(errno.EBADF)
        if not desc.writable or not desc.inode.is_regular():
            raise SyscallError(errno.EINVAL)
        now = desc.inode.sb.now()
        desc.inode.setattr(SetAttr(size=length, mtime=now, ctime=now))

    @staticmethod
    def fallocate(desc: FileDescription, mode: int, offset: int, length: int) -> None:
        """fallocate(2) (Linux ``vfs_fallocate``): EBADF for O_PATH, EINVAL for
        a bad range, EOPNOTSUPP for unknown modes and PUNCH_HOLE without
        KEEP_SIZE (or with ZERO_RANGE), EINVAL for COLLAPSE/INSERT/UNSHARE
        mixed with others, EBADF unless writable, ESPIPE on a pipe, EISDIR,
        ENODEV for other non-regular files, EFBIG past the largest offset;
        then the filesystem (EOPNOTSUPP, ENOSPC)."""
        if desc.flags & O_PATH:
            raise SyscallError(errno.EBADF)
        if offset < 0 or length <= 0:
            raise SyscallError(errno.EINVAL)
        if mode & ~_FALLOC_SUPPORTED:
            raise SyscallError(errno.EOPNOTSUPP)
        if mode & FALLOC_FL_PUNCH_HOLE and mode & (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE) != FALLOC_FL_KEEP_SIZE:
            raise SyscallError(errno.EOPNOTSUPP)
        for exclusive, allowed in (
            (FALLOC_FL_COLLAPSE_RANGE, 0),
            (FALLOC_FL_INSERT_RANGE, 0),
            (FALLOC_FL_UNSHARE_RANGE, FALLOC_FL_KEEP_SIZE),
        ):
            if mode & exclusive and mode & ~(exclusive | allowed):
                raise SyscallError(errno.EINVAL)
        if not desc.writable:
            raise SyscallError(errno.EBADF)
        inode = desc.inode
        if inode.is_dir():
            raise SyscallError(errno.EISDIR)
        if inode.type == S_IFIFO:
            raise SyscallError(errno.ESPIPE)
        if not inode.is_regular():
            raise SyscallError(errno.ENODEV)
        if offset + length > 2**63 - 1:
            raise SyscallError(errno.EFBIG)
        inode.allocate(mode, offset, length)

    @staticmethod
    def fsync(desc: FileDescription) -> None:
        """fsync(2)/fdatasync(2): EBADF for O_PATH; otherwise the file's
        :meth:`FileOps.fsync` (EINVAL for pipes and FIFOs, as Linux answers
        for files without an fsync operation)."""
        if desc.flags & O_PATH:
            raise SyscallError(errno.EBADF)
        desc.ops.fsync(desc)


def is_dead_dir(vd: VirtualDentry) -> bool:
    """Whether ``vd`` is a directory that was removed (Linux ``IS_DEADDIR``):
    nothing can be created in it (ENOENT) and it lists as ENOENT."""
    return vd.dentry.dead and vd.inode.is_dir()
