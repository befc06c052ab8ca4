"""hostfs: direct file access, the sentry opening host files itself
(``--file-access direct``; gVisor's ``fs/host`` of 2018 and today's
directfs).

Confinement is the gofer's (:mod:`.gofer`), applied in the sentry:

- the mount source is opened once (``O_PATH|O_DIRECTORY``); every other file
  is reached by a walk from it, one name at a time, with
  ``openat(parent_fd, name, O_PATH|O_NOFOLLOW)``, so an inode always holds
  the very file its walk found and nothing outside the source can be named;
- names that are empty, ``.``, ``..`` or hold ``/`` or NUL never reach the
  host (EINVAL): the VFS resolves ``..`` from its own dentries and stops at
  the mount's root;
- symlinks are inodes of their own, read with ``readlinkat(fd, "")`` and
  never followed by the host: the VFS resolves their targets inside the
  sandbox's namespace, so an absolute or climbing target cannot lead out;
- every change is made on the walked file itself, never by a name the host
  resolves again: data through ``/proc/self/fd/N`` of the inode's O_PATH fd
  (which reaches exactly that inode, as gVisor's ``reopenProcFd``), owner and
  times with ``AT_EMPTY_PATH`` on the fd (so a symlink's own), new files
  from the fd ``O_CREAT|O_EXCL|O_NOFOLLOW`` gave;
- only regular files are opened for I/O; devices, FIFOs and sockets on the
  host are never opened (the VFS gives device inodes the sentry's own
  devices and FIFOs its own pipes), and mknod makes regular files and FIFOs
  only (EPERM for devices and sockets);
- extended attributes are limited to the ``user.`` namespace (others are
  EOPNOTSUPP, so no ``security.capability`` or ``trusted.*`` reaches a host
  file), and none on symlinks;
- new files get exactly the mode the VFS asked for (the sandbox's umask
  already applied; the sentry's own umask is undone), the caller's uid and
  the gid Linux gives (a set-group-ID directory's, else the caller's), where
  the sentry may chown.

Errors are the host's errno (SyscallError). A directory listing keeps one
cookie per name, so it stays stable while the folder changes.

Checkpoint and restore: inodes remember their names (parent inode and
name, updated by rename, link and unlink); pickling drops every host fd
(``__getstate__``), and :meth:`HostFSSuperblock.restore` opens the mount
source again by host path and walks every live inode again the same
confined way, re-opening the files that were open. A path that is gone is a
:class:`HostFSRestoreError` naming it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat as st
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pyrunsc.core.errors import PyrunscError, SyscallError
from pyrunsc.core.vfs.file import DirectoryOps, FileDescription, FileOps, RegularFileOps
from pyrunsc.core.vfs.inode import S_ISGID, DirEntry, Inode, SetAttr, Stat, StatFS, Superblock, dtype

if TYPE_CHECKING:
    from pyrunsc.core.kernel.auth import Credentials

_libc = ctypes.CDLL(None, use_errno=True)
_libc.readlinkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
_libc.readlinkat.restype = ctypes.c_ssize_t
_libc.fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_EXCHANGE = 2
UTIME_OMIT = (1 << 30) - 2
#: What gVisor reports for gofer and host files (Linux ``V9FS_MAGIC``).
HOSTFS_MAGIC = 0x01021997
_OPATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_PREFIX = "user."
_NS = 1_000_000_000


class HostFSRestoreError(PyrunscError):
    """A hostfs mount could not be opened again on restore; the message
    names the mount source and every path that failed."""


def _oserror(e: OSError) -> SyscallError:
    return SyscallError(e.errno or errno.EIO)


def _call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except OSError as e:
        raise _oserror(e) from None
    except ValueError:  # an embedded NUL
        raise SyscallError(errno.EINVAL) from None


def _libc_check(ret: int) -> None:
    if ret != 0:
        raise SyscallError(ctypes.get_errno() or errno.EIO)


def _check_name(name: str) -> None:
    """EINVAL unless ``name`` is one plain directory entry name (the gofer's
    rule, gVisor's ``checkSafeName``)."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise SyscallError(errno.EINVAL)


def _proc(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _close(*fds: int | None) -> None:
    for fd in dict.fromkeys(fds):
        if fd is not None and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class Names:
    """What an inode knows of its names, for restore (shared with the 9p
    client): ``links`` are the (parent inode, name) pairs it is known by,
    first the one its path is made of; ``_kids`` a directory's children by
    name (weakly)."""

    sb: Any
    links: list[tuple[Any, str]]
    _kids: weakref.WeakValueDictionary[str, Any]
    _last_path: str

    def _init_names(self) -> None:
        self.links = []
        self._kids = weakref.WeakValueDictionary()
        self._last_path = ""

    def _add_link(self, parent: Any, name: str) -> None:
        if not any(p is parent and n == name for p, n in self.links):
            self.links.append((parent, name))
        # A name we knew for another file: that file lost it.
        other = parent._kids.get(name)
        if other is not None and other is not self:
            other._drop_link(parent, name)
        parent._kids[name] = self
        self._last_path = self._path_of(0) or self._last_path

    def _drop_link(self, parent: Any, name: str) -> None:
        self.links = [(p, n) for p, n in self.links if not (p is parent and n == name)]
        if parent._kids.get(name) is self:
            del parent._kids[name]

    def _path_of(self, i: int) -> str | None:
        parent, name = self.links[i]
        up = parent.path()
        if up is None:
            return None
        return up.rstrip("/") + "/" + name

    def path(self) -> str | None:
        """This file's path from the mount root (``/`` for the root), by its
        first name; None once it has no name left."""
        if self is self.sb._root:
            return "/"
        for i in range(len(self.links)):
            p = self._path_of(i)
            if p is not None:
                return p
        return None

    def paths(self) -> list[str]:
        """Every path we know this file by (hard links), first one first."""
        if self is self.sb._root:
            return ["/"]
        out = [p for i in range(len(self.links)) if (p := self._path_of(i)) is not None]
        return list(dict.fromkeys(out))

    def _depth(self) -> int:
        p = self.path()
        return p.count("/") if p else 1 << 30

    def _names_state(self, state: dict[str, Any]) -> None:
        state["_kids"] = dict(self._kids)

    def _names_restore(self, state: dict[str, Any]) -> dict[str, Any]:
        kids = state.pop("_kids")
        self.__dict__.update(state)
        self._kids = weakref.WeakValueDictionary(kids)
        return state


class HostFSSuperblock(Superblock):
    """The host folder ``root`` mounted directly; ``read_only`` refuses every
    change (EROFS). SyscallError (the host's errno, ENOTDIR for a file)
    when ``root`` cannot be opened as a folder."""

    def __init__(self, root: str, *, read_only: bool = False, clock: Callable[[], int] | None = None) -> None:
        kw = {"clock": clock} if clock else {}
        super().__init__("hostfs", HOSTFS_MAGIC, read_only=read_only, **kw)  # type: ignore[arg-type]
        self.root_path = root
        self._lock = threading.RLock()
        self._inodes: weakref.WeakValueDictionary[tuple[int, int], HostFSInode] = weakref.WeakValueDictionary()
        self._root: HostFSInode | None = None
        fd = self._open_root(root)
        s = os.fstat(fd)
        self._root = HostFSInode(self, fd, s)
        self._inodes[(s.st_dev, s.st_ino)] = self._root

    @staticmethod
    def _open_root(root: str) -> int:
        try:
            return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO, f"mount source {root}") from None

    def root(self) -> Inode:
        assert self._root is not None
        return self._root

    def inode_for(self, fd: int, s: os.stat_result, parent: HostFSInode | None = None, name: str = "") -> HostFSInode:
        """The inode for the O_PATH ``fd`` (``s`` its fstat) just reached as
        ``name`` in ``parent``: one inode per host file, so hard links share
        it (``fd`` is then closed). (dev, ino) identifies a file while we hold
        an fd of it, as the host cannot reuse the number until it is closed."""
        key = (s.st_dev, s.st_ino)
        with self._lock:
            inode = self._inodes.get(key)
            if inode is not None and inode.fd is not None and inode.type == st.S_IFMT(s.st_mode):
                os.close(fd)
            else:
                inode = HostFSInode(self, fd, s)
                self._inodes[key] = inode
            if parent is not None:
                inode._add_link(parent, name)
        return inode

    def statfs(self) -> StatFS:
        assert self._root is not None
        s = _call(os.statvfs, _proc(self._root._fd()))
        return StatFS(type=HOSTFS_MAGIC, bsize=s.f_bsize, blocks=s.f_blocks, bfree=s.f_bfree, bavail=s.f_bavail,
                      files=s.f_files, ffree=s.f_ffree, namelen=s.f_namemax, frsize=s.f_frsize)

    # -- checkpoint and restore ------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Everything but host fds and locks; live inodes by strong reference."""
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_inodes"] = dict(self._inodes)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        inodes = state.pop("_inodes")
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._inodes = weakref.WeakValueDictionary(inodes)

    def restore(self, root: str | None = None) -> None:
        """Open the mount source again by host path (``root``, else the one
        it was mounted from) and walk every live inode again from it, name
        by name with O_PATH|O_NOFOLLOW, re-opening the files that were open
        with the same access. Inode numbers stay as the sandbox saw them.

        Raises :class:`HostFSRestoreError` naming the source and each path
        that no longer exists, changed type, cannot be re-opened, or was
        deleted while open."""
        if root is not None:
            self.root_path = root
        try:
            fd = self._open_root(self.root_path)
        except SyscallError as e:
            raise HostFSRestoreError(f"hostfs mount {self.root_path}: cannot open the source: {e}") from None
        rootnode = self._root
        assert rootnode is not None
        inodes = {id(i): i for i in self._inodes.values()}
        inodes[id(rootnode)] = rootnode
        _close(rootnode.fd, rootnode._rfd, rootnode._wfd)
        s = os.fstat(fd)
        rootnode.fd, rootnode._rfd, rootnode._wfd = fd, None, None
        table: dict[tuple[int, int], HostFSInode] = {(s.st_dev, s.st_ino): rootnode}
        problems: list[str] = []
        for inode in sorted(inodes.values(), key=lambda i: i._depth()):
            if inode is rootnode:
                continue
            was_open = (inode._open_read, inode._open_write)
            _close(inode.fd, inode._rfd, inode._wfd)
            inode.fd, inode._rfd, inode._wfd = None, None, None
            paths = inode.paths()
            if not paths:
                if inode._io_users:
                    problems.append(f"{inode._last_path or '?'} (deleted while open)")
                continue
            found = None
            for path in paths:
                try:
                    found = _walk(fd, [n for n in path.split("/") if n])
                    break
                except OSError:
                    continue
            if found is None:
                problems.append(f"{paths[0]} (no longer exists)")
                continue
            nfd, ns = found
            if st.S_IFMT(ns.st_mode) != inode.type:
                os.close(nfd)
                problems.append(f"{paths[0]} (was {st.filemode(inode.mode)[0]}, now {st.filemode(ns.st_mode)[0]})")
                continue
            inode.fd = nfd
            table[(ns.st_dev, ns.st_ino)] = inode
            if inode._io_users and any(was_open):
                try:
                    inode._ensure_io(read=was_open[0], write=was_open[1])
                except SyscallError as e:
                    problems.append(f"{paths[0]} (cannot be re-opened: {e})")
        self._inodes = weakref.WeakValueDictionary(table)
        if problems:
            raise HostFSRestoreError(f"hostfs mount {self.root_path}: cannot restore: " + "; ".join(problems))


    def reconnect(self, ctx: Any, data: str, source: str = "") -> None:
        """Restore from a restore environment's mount data
        (``root=<host path>,...``): :meth:`restore` from that path."""
        from pyrunsc.core.vfs.filesystem import parse_data

        self.restore(parse_data(data).get("root") or source or None)


def _walk(dirfd: int, names: list[str]) -> tuple[int, os.stat_result]:
    """O_PATH|O_NOFOLLOW one name at a time from ``dirfd``: the last fd and
    its fstat (OSError on the way; a symlink in the middle is ENOTDIR)."""
    cur = dirfd
    try:
        for name in names:
            _check_name(name)
            nxt = os.open(name, _OPATH, dir_fd=cur)
            if cur != dirfd:
                os.close(cur)
            cur = nxt
        if cur == dirfd:
            cur = os.dup(dirfd)
        return cur, os.fstat(cur)
    except SyscallError as e:
        if cur != dirfd:
            os.close(cur)
        raise OSError(e.errno, "bad name") from None
    except OSError:
        if cur != dirfd:
            os.close(cur)
        raise


class HostFileOps(RegularFileOps):
    """Reads and writes through the inode's data fds; the last release of a
    description closes them."""

    def release(self, fd: FileDescription) -> None:
        inode = fd.inode
        assert isinstance(inode, HostFSInode)
        inode._io_users = max(0, inode._io_users - 1)
        if inode._io_users == 0:
            inode._close_io()


class HostDirOps(DirectoryOps):
    def release(self, fd: FileDescription) -> None:
        inode = fd.inode
        assert isinstance(inode, HostFSInode)
        inode._io_users = max(0, inode._io_users - 1)


class HostFSInode(Names, Inode):
    """A host file reached by the O_PATH|O_NOFOLLOW fd ``fd``; attributes
    are read from the host at each use (direct access shares the folder)."""

    sb: HostFSSuperblock

    def __init__(self, sb: HostFSSuperblock, fd: int, s: os.stat_result) -> None:
        self.fd: int | None = fd
        super().__init__(sb, s.st_mode, s.st_uid, s.st_gid)
        self._init_names()
        self.ino = s.st_ino
        self._rfd: int | None = None
        self._wfd: int | None = None
        self._open_read = self._open_write = False
        self._io_users = 0
        self._cookies: dict[str, int] = {}
        self._next_cookie = 3
        self._apply(s)

    def __repr__(self) -> str:
        return f"<HostFSInode {self._last_path or '/'} ino={self.ino} fd={self.fd}>"

    def __del__(self) -> None:
        _close(getattr(self, "fd", None), getattr(self, "_rfd", None), getattr(self, "_wfd", None))

    def _fd(self) -> int:
        if self.fd is None:
            raise SyscallError(errno.EIO, f"hostfs mount {self.sb.root_path}: {self._last_path} is not restored")
        return self.fd

    def _apply(self, s: os.stat_result) -> os.stat_result:
        self.mode, self.uid, self.gid, self.nlink = s.st_mode, s.st_uid, s.st_gid, s.st_nlink
        self.atime, self.mtime, self.ctime = s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns
        self.rdev = s.st_rdev
        self.btime = None
        self._stat = s
        return s

    def _refresh(self) -> os.stat_result:
        return self._apply(_call(os.fstat, self._fd()))

    def _writable(self) -> None:
        if self.sb.read_only:
            raise SyscallError(errno.EROFS)

    # -- attributes -----------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._refresh().st_size

    @property
    def blocks(self) -> int:
        return self._stat.st_blocks

    def stat(self) -> Stat:
        """fstat of the walked file, every time (the host may change it)."""
        s = self._refresh()
        return Stat(dev=self.sb.dev, ino=self.ino, mode=s.st_mode, nlink=s.st_nlink, uid=s.st_uid, gid=s.st_gid,
                    rdev=s.st_rdev, size=s.st_size, blksize=s.st_blksize, blocks=s.st_blocks,
                    atime=s.st_atime_ns, mtime=s.st_mtime_ns, ctime=s.st_ctime_ns, btime=None)

    def setattr(self, attrs: SetAttr) -> None:
        """Apply ``attrs`` on the walked file: size (regular files only:
        EISDIR, EINVAL), mode (EOPNOTSUPP on a symlink, as Linux), owner and
        times (a symlink's own, never its target's). ctime is the host's."""
        if attrs.size is not None:
            if self.is_dir():
                raise SyscallError(errno.EISDIR)
            if not self.is_regular():
                raise SyscallError(errno.EINVAL)
        changes = (attrs.size, attrs.mode, attrs.uid, attrs.gid, attrs.atime, attrs.mtime)
        if all(c is None for c in changes):
            return
        self._writable()
        fd = self._fd()
        if attrs.size is not None:
            self.truncate(attrs.size)
        if attrs.mode is not None:
            if self.is_symlink():
                raise SyscallError(errno.EOPNOTSUPP)
            _call(os.chmod, _proc(fd), attrs.mode & 0o7777)
        if attrs.uid is not None or attrs.gid is not None:
            uid = 0xFFFFFFFF if attrs.uid is None else attrs.uid
            gid = 0xFFFFFFFF if attrs.gid is None else attrs.gid
            _libc_check(_libc.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
        if attrs.atime is not None or attrs.mtime is not None:
            times = (_Timespec * 2)(*(
                _Timespec(0, UTIME_OMIT) if t is None else _Timespec(*divmod(t, _NS))
                for t in (attrs.atime, attrs.mtime)
            ))
            _libc_check(_libc.utimensat(fd, b"", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
        self._refresh()

    def truncate(self, size: int) -> None:
        self._writable()
        if not self.is_regular():
            raise SyscallError(errno.EISDIR if self.is_dir() else errno.EINVAL)
        if self._wfd is not None:
            _call(os.ftruncate, self._wfd, size)
        else:
            _call(os.truncate, _proc(self._fd()), size)

    # -- directories ----------------------------------------------------------------

    def _child(self, name: str) -> HostFSInode:
        fd = _call(os.open, name, _OPATH, dir_fd=self._fd())
        try:
            s = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            raise _oserror(e) from None
        return self.sb.inode_for(fd, s, self, name)

    def lookup(self, name: str) -> Inode:
        """openat(fd, name, O_PATH|O_NOFOLLOW): ENOENT, ENOTDIR, EINVAL for a
        name that is not one entry."""
        if not self.is_dir():
            raise SyscallError(errno.ENOTDIR)
        _check_name(name)
        return self._child(name)

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        """Host entries with cookies kept per name, so a listing stays stable
        while the folder changes; entries that vanish while listed are left
        out."""
        if not self.is_dir():
            raise SyscallError(errno.ENOTDIR)
        dfd = _call(os.open, _proc(self._fd()), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        entries: list[tuple[str, int, int]] = []
        try:
            with os.scandir(dfd) as it:
                for e in it:
                    try:
                        if e.is_symlink():
                            mode = st.S_IFLNK
                        elif e.is_dir(follow_symlinks=False):
                            mode = st.S_IFDIR
                        elif e.is_file(follow_symlinks=False):
                            mode = st.S_IFREG
                        else:
                            mode = e.stat(follow_symlinks=False).st_mode
                        entries.append((e.name, e.inode(), mode))
                    except OSError:
                        continue  # gone since the listing
        except OSError as e:
            raise _oserror(e) from None
        finally:
            os.close(dfd)
        present = set()
        out = []
        for name, ino, mode in entries:
            present.add(name)
            c = self._cookies.get(name)
            if c is None:
                c = self._cookies[name] = self._next_cookie
                self._next_cookie += 1
            known = self._kids.get(name)
            out.append(DirEntry(name, known.ino if known is not None else ino, dtype(mode), c))
        for gone in set(self._cookies) - present:
            del self._cookies[gone]
        out.sort(key=lambda e: e.cookie)
        return iter([e for e in out if e.cookie > cookie])

    def is_empty_dir(self) -> bool:
        return next(self.iterate(0), None) is None

    def _new_gid(self, creds: Credentials) -> int:
        """A set-group-ID directory's group, else the caller's (Linux)."""
        return self._refresh().st_gid if self.mode & S_ISGID else creds.fsgid

    def _own(self, fd: int, creds: Credentials, gid: int) -> None:
        """Give the new file ``fd`` the caller's uid and ``gid``, where the
        sentry may (as root): otherwise it keeps the sentry's."""
        _libc.fchownat(fd, b"", creds.fsuid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)

    def _made(self, name: str, creds: Credentials, gid: int, kind: int, mode: int | None) -> HostFSInode:
        """The inode of the ``name`` just made here, checked to be of ``kind``
        (ENOENT if something else took the name meanwhile), with exactly
        ``mode`` and its owner set."""
        fd = _call(os.open, name, _OPATH, dir_fd=self._fd())
        try:
            s = os.fstat(fd)
            if st.S_IFMT(s.st_mode) != kind:
                raise SyscallError(errno.ENOENT)
            if mode is not None and st.S_IMODE(s.st_mode) != mode & 0o7777:
                os.chmod(_proc(fd), mode & 0o7777)
            self._own(fd, creds, gid)
            s = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            raise _oserror(e) from None
        except BaseException:
            os.close(fd)
            raise
        return self.sb.inode_for(fd, s, self, name)

    def _may_make(self, name: str) -> None:
        if not self.is_dir():
            raise SyscallError(errno.ENOTDIR)
        self._writable()
        _check_name(name)

    def create(self, name: str, mode: int, creds: Credentials) -> Inode:
        """openat(O_CREAT|O_EXCL|O_NOFOLLOW|O_RDWR): EEXIST if taken (even by
        a symlink, which is never followed). The open fd is kept for the
        file's first open; the inode's O_PATH fd is made from it, so no name
        is resolved again."""
        self._may_make(name)
        gid = self._new_gid(creds)
        fd = _call(os.open, name, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY,
                   mode & 0o7777, dir_fd=self._fd())
        try:
            os.fchmod(fd, mode & 0o7777)
            self._own(fd, creds, gid)
            path_fd = os.open(_proc(fd), os.O_PATH | os.O_CLOEXEC)
            s = os.fstat(path_fd)
        except OSError as e:
            os.close(fd)
            raise _oserror(e) from None
        inode = self.sb.inode_for(path_fd, s, self, name)
        _close(inode._rfd, inode._wfd)
        inode._rfd = inode._wfd = fd
        inode._open_read = inode._open_write = True
        return inode

    def mkdir(self, name: str, mode: int, creds: Credentials) -> Inode:
        self._may_make(name)
        gid = self._new_gid(creds)
        _call(os.mkdir, name, mode & 0o7777, dir_fd=self._fd())
        return self._made(name, creds, gid, st.S_IFDIR, mode & 0o7777 | (self.mode & S_ISGID))

    def mknod(self, name: str, mode: int, rdev: int, creds: Credentials) -> Inode:
        """Regular files and FIFOs; EPERM for devices and sockets (no device
        node or socket file is made on the host; the gofer's rule)."""
        kind = mode & st.S_IFMT(0o177777) or st.S_IFREG
        if kind not in (st.S_IFREG, st.S_IFIFO):
            raise SyscallError(errno.EPERM)
        self._may_make(name)
        gid = self._new_gid(creds)
        if kind == st.S_IFREG:
            _close(_call(os.open, name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode & 0o7777, dir_fd=self._fd()))
        else:
            _call(os.mkfifo, name, mode & 0o7777, dir_fd=self._fd())
        return self._made(name, creds, gid, kind, mode & 0o7777)

    def symlink(self, name: str, target: str, creds: Credentials) -> Inode:
        self._may_make(name)
        gid = self._new_gid(creds)
        _call(os.symlink, target, name, dir_fd=self._fd())
        return self._made(name, creds, gid, st.S_IFLNK, None)

    def link(self, name: str, inode: Inode) -> None:
        """linkat of the walked file itself: through /proc/self/fd for a
        regular file, AT_EMPTY_PATH for a symlink (which needs
        CAP_DAC_READ_SEARCH: EPERM otherwise). EXDEV across superblocks."""
        self._may_make(name)
        if not isinstance(inode, HostFSInode) or inode.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        src = inode._fd()
        if inode.is_symlink():
            if _libc.linkat(src, b"", self._fd(), os.fsencode(name), AT_EMPTY_PATH) != 0:
                e = ctypes.get_errno()
                raise SyscallError(errno.EPERM if e == errno.ENOENT else e)
        else:
            _call(os.link, _proc(src), name, dst_dir_fd=self._fd(), follow_symlinks=True)
        inode._add_link(self, name)
        inode._refresh()

    def unlink(self, name: str, child: Inode) -> None:
        self._writable()
        _check_name(name)
        _call(os.unlink, name, dir_fd=self._fd())
        if isinstance(child, HostFSInode):
            child._drop_link(self, name)
            try:
                child._refresh()
            except SyscallError:
                child.nlink = 0

    def rmdir(self, name: str, child: Inode) -> None:
        self._writable()
        _check_name(name)
        _call(os.rmdir, name, dir_fd=self._fd())
        child.nlink = 0
        if isinstance(child, HostFSInode):
            child._drop_link(self, name)

    def rename(self, old_name: str, new_dir: Inode, new_name: str, *, exchange: bool = False) -> None:
        """renameat (renameat2 RENAME_EXCHANGE to swap); EXDEV across
        superblocks. The moved inodes keep their fds and learn their names."""
        self._writable()
        _check_name(old_name)
        _check_name(new_name)
        if not isinstance(new_dir, HostFSInode) or new_dir.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        if exchange:
            _libc_check(_libc.renameat2(self._fd(), os.fsencode(old_name), new_dir._fd(), os.fsencode(new_name),
                                        RENAME_EXCHANGE))
        else:
            _call(os.rename, old_name, new_name, src_dir_fd=self._fd(), dst_dir_fd=new_dir._fd())
        moved = self._kids.get(old_name)
        other = new_dir._kids.get(new_name)
        if moved is not None:
            moved._drop_link(self, old_name)
        if other is not None and other is not moved:
            other._drop_link(new_dir, new_name)
            if exchange:
                other._add_link(self, old_name)
            else:
                try:
                    other._refresh()
                except SyscallError:
                    other.nlink = 0
        if moved is not None:
            moved._add_link(new_dir, new_name)

    # -- symlinks -------------------------------------------------------------------

    def readlink(self) -> str:
        """readlinkat(fd, ""): the link's own text, never followed."""
        if not self.is_symlink():
            raise SyscallError(errno.EINVAL)
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = _libc.readlinkat(self._fd(), b"", buf, size)
            if n < 0:
                raise SyscallError(ctypes.get_errno())
            if n < size:
                return os.fsdecode(buf.raw[:n])
            size *= 2

    # -- files ----------------------------------------------------------------------

    def open(self, fd: FileDescription) -> FileOps:
        """Directories list through :meth:`iterate`; regular files get data
        fds for the access needed. ENXIO for anything else (the VFS opens
        devices and FIFOs itself; host ones are never opened)."""
        if self.is_dir():
            self._io_users += 1
            return HostDirOps()
        if not self.is_regular():
            raise SyscallError(errno.ENXIO)
        if fd.writable:
            self._writable()
        self._ensure_io(read=fd.readable, write=fd.writable)
        self._io_users += 1
        return HostFileOps()

    def _ensure_io(self, *, read: bool, write: bool) -> None:
        """Data fds through /proc/self/fd of the walked file (the same inode,
        never a name): O_RDWR for writing (O_WRONLY where reading is refused),
        which serves reads too; O_RDONLY for reading only."""
        if not self.is_regular():
            # Never open a host symlink, FIFO, socket or device through /proc.
            raise SyscallError(errno.EISDIR if self.is_dir() else errno.EINVAL)
        path = _proc(self._fd())
        flags = os.O_CLOEXEC | os.O_NOCTTY
        if write and self._wfd is None:
            try:
                self._wfd = os.open(path, os.O_RDWR | flags)
                if self._rfd is None:
                    self._rfd = self._wfd
                    self._open_read = True
            except PermissionError:
                self._wfd = _call(os.open, path, os.O_WRONLY | flags)
            except OSError as e:
                raise _oserror(e) from None
            self._open_write = True
        if read and self._rfd is None:
            self._rfd = _call(os.open, path, os.O_RDONLY | flags)
            self._open_read = True

    def _close_io(self) -> None:
        fds = (self._rfd, self._wfd)
        self._rfd = self._wfd = None
        self._open_read = self._open_write = False
        _close(*fds)

    def read(self, offset: int, length: int) -> bytes:
        if self._rfd is None:
            self._ensure_io(read=True, write=False)
        assert self._rfd is not None
        return _call(os.pread, self._rfd, length, offset)

    def write(self, offset: int, data: bytes) -> int:
        self._writable()
        if self._wfd is None:
            self._ensure_io(read=False, write=True)
        assert self._wfd is not None
        return _call(os.pwrite, self._wfd, data, offset)

    def allocate(self, mode: int, offset: int, length: int) -> None:
        """fallocate(2) on the host file with ``mode`` (the host answers
        EOPNOTSUPP for what its filesystem cannot do)."""
        self._writable()
        if self._wfd is None:
            self._ensure_io(read=False, write=True)
        assert self._wfd is not None
        _libc_check(_libc.fallocate(self._wfd, mode, offset, length))

    def seek_data(self, offset: int, *, hole: bool) -> int:
        if self._rfd is None:
            self._ensure_io(read=True, write=False)
        assert self._rfd is not None
        return _call(os.lseek, self._rfd, offset, os.SEEK_HOLE if hole else os.SEEK_DATA)

    def fsync(self) -> None:
        fd = self._wfd if self._wfd is not None else self._rfd
        if fd is not None:
            _call(os.fsync, fd)

    def statfs(self) -> StatFS:
        return self.sb.statfs()

    def released(self) -> None:
        """The last name and open file are gone: close every host fd."""
        fds = (self.fd, self._rfd, self._wfd)
        self.fd = self._rfd = self._wfd = None
        _close(*fds)

    # -- extended attributes (user.* only) ----------------------------------------------

    def _xattr_name(self, name: str) -> None:
        if "\0" in name:
            raise SyscallError(errno.EINVAL)
        if not name.startswith(_XATTR_PREFIX) or name == _XATTR_PREFIX:
            raise SyscallError(errno.EOPNOTSUPP)

    def getxattr(self, name: str) -> bytes:
        """user.* only (EOPNOTSUPP otherwise); ENODATA when unset or on a symlink."""
        self._xattr_name(name)
        if self.is_symlink():
            raise SyscallError(errno.ENODATA)
        return _call(os.getxattr, _proc(self._fd()), name)

    def setxattr(self, name: str, value: bytes, flags: int = 0) -> None:
        """user.* only (EOPNOTSUPP otherwise); EPERM on a symlink (Linux)."""
        self._xattr_name(name)
        self._writable()
        if self.is_symlink():
            raise SyscallError(errno.EPERM)
        _call(os.setxattr, _proc(self._fd()), name, value, flags)

    def listxattr(self) -> list[str]:
        if self.is_symlink():
            return []
        return [n for n in _call(os.listxattr, _proc(self._fd())) if n.startswith(_XATTR_PREFIX)]

    def removexattr(self, name: str) -> None:
        self._xattr_name(name)
        self._writable()
        if self.is_symlink():
            raise SyscallError(errno.ENODATA)
        _call(os.removexattr, _proc(self._fd()), name)

    # -- checkpoint -----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """No host fds; names and the access of the open data fds are kept,
        for :meth:`HostFSSuperblock.restore`."""
        state = self.__dict__.copy()
        state["fd"] = state["_rfd"] = state["_wfd"] = None
        self._names_state(state)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._names_restore(state)
