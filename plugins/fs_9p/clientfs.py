"""9p: the sentry's 9P2000.L client filesystem (Linux ``fs/9p``; gVisor's
``fsimpl/gofer`` of the 9P era, ``pkg/sentry/fs/gofer`` at commit 80bdf8a4).

One :class:`NinePSuperblock` per mount, on one channel (a
:class:`~.p9.client.Client`): the root is Tattach'ed, and every inode holds
its own walked fid, reached by a Twalk of one name from its parent's fid. So
an inode is always the file the walk found, whatever happens to names later,
and ``..`` is never sent: the VFS resolves it from the dentries it walked,
as gVisor does.

Mounting (:func:`mount_9p`, what ``NinePFS.mount`` calls), mount data keys:

- ``trans=fd,rfdno=N,wfdno=N``: N is a connected stream socket already open
  in this process (the gofer's, handed over by ``pyrunsc run``); the mount
  takes it over. ``MountContext.gofer[N]`` may instead hold a socket or a
  :class:`Client` for N. rfdno and wfdno must be equal (EINVAL otherwise).
- ``trans=unix,addr=PATH`` or ``trans=tcp,addr=HOST,port=P``: an external
  9P2000.L server (a spec mount of type ``9p``).
- ``aname=`` (Tattach's aname, default ""), ``uname=``, ``dfltuid=`` (the
  numeric user Tattach gives, Linux's option name; default 0, what Linux's
  ``access=user`` sends for root: diod refuses an attach without one),
  ``msize=`` (bytes asked in Tversion, default 512 KiB), ``cache=``:
  ``exclusive`` (default; also Linux's ``loose``, ``fscache``, ``mmap``) or
  ``shared`` (also ``none``). Unknown keys are EINVAL.

Caching follows gVisor's ``--file-access=exclusive``/``shared``:

- **exclusive** (the sandbox is the only one changing the folder): dentries
  stay (``cache_dentries``), attributes are fetched once with Tgetattr and
  fetched again only after one of our own changes (write, setattr, link,
  unlink, ...), directory listings are kept until we change the directory,
  symlink targets forever. A warm ``stat`` sends nothing.
- **shared**: every path step walks again (``cache_dentries`` is False, so
  the VFS calls :meth:`NinePInode.lookup` each time, which answers with the
  same inode object while the file is the same), ``stat`` and ``size`` ask
  the server each time, and a listing is read again from its start.

Data goes through open fids kept per inode while any file description is
open on it (one readable, one writable, or one for both), in requests of at
most ``iounit`` (``msize - 24``) bytes, several in flight at once for large
reads and writes. Errors: an Rlerror becomes SyscallError with the server's
errno; a broken or timed-out channel is EIO naming the mount.

Restore (ARCHITECTURE.md: "a 9p mount re-walks its open fids by path on the
new channel"): inodes remember their names (parent inode and name, updated by
rename, link and unlink), pickle without fids or channel
(``__getstate__``), and :meth:`NinePSuperblock.rebind` re-attaches on a new
channel and re-walks every inode by path from the new root, re-opening the
fids that were open. A path that is gone is a :class:`NinePRestoreError`
naming it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import socket
import stat as st
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pyrunsc.core.errors import PyrunscError, SyscallError
from pyrunsc.core.vfs.file import DirectoryOps, FileDescription, FileOps, RegularFileOps
from pyrunsc.core.vfs.filesystem import parse_data
from pyrunsc.core.vfs.inode import (
    DT_DIR,
    DT_LNK,
    DT_REG,
    S_IFDIR,
    S_IFMT,
    S_ISGID,
    DirEntry,
    Inode,
    SetAttr,
    Stat,
    StatFS,
    Superblock,
    major,
    minor,
)

from .hostfs import Names
from .p9 import messages as m
from .p9.client import DEFAULT_MSIZE, Client, P9Error, Pending
from .p9.messages import NONUNAME, Fid, ProtocolError, Qid

if TYPE_CHECKING:
    from pyrunsc.core.kernel.auth import Credentials
    from pyrunsc.core.mounts import MountFlags
    from pyrunsc.core.vfs.filesystem import MountContext

log = logging.getLogger("pyrunsc.9p")

#: statfs f_type of a 9p mount (Linux ``V9FS_MAGIC``), as gVisor reports.
V9FS_MAGIC = 0x01021997
#: Seconds to wait for any reply before the request fails with EIO.
DEFAULT_TIMEOUT = 120.0
#: Smallest msize a mount may ask for (bytes): the gofer's minimum.
MIN_MSIZE = 4096 + m.IOHDRSZ
#: Reads and writes of more than one iounit keep this many requests in flight.
IO_WINDOW = 8

EXCLUSIVE, SHARED = "exclusive", "shared"
#: ``cache=`` values: ours (gVisor's file-access modes) and Linux v9fs's.
CACHE_MODES = {
    "exclusive": EXCLUSIVE, "loose": EXCLUSIVE, "fscache": EXCLUSIVE, "mmap": EXCLUSIVE,
    "shared": SHARED, "none": SHARED,
}
#: Mount data keys :func:`mount_9p` understands (others are EINVAL).
KNOWN_KEYS = frozenset({
    "trans", "rfdno", "wfdno", "privateunixsocket", "addr", "port", "aname", "uname", "dfltuid", "msize",
    "cache", "version",
})

_NS = 1_000_000_000
_QT_DT = {m.QTDIR: DT_DIR, m.QTSYMLINK: DT_LNK}


class NinePRestoreError(PyrunscError):
    """A 9p mount could not be re-bound to its new channel; the message names
    the mount and every path that failed."""


def _syscall_error(e: BaseException, where: str = "") -> SyscallError:
    """The SyscallError for a client failure: Rlerror keeps its errno;
    anything else (channel closed, timeout, protocol error) is EIO."""
    if isinstance(e, P9Error):
        return SyscallError(e.errno or errno.EIO)
    return SyscallError(errno.EIO, f"9p{' ' + where if where else ''}: {e}")


@contextlib.contextmanager
def _p9(where: str = "") -> Iterator[None]:
    try:
        yield
    except P9Error as e:
        raise SyscallError(e.errno or errno.EIO, f"9p {where}: {e}" if where else "") from None
    except (OSError, ValueError) as e:  # ConnectionError, TimeoutError, ProtocolError, oversize
        raise _syscall_error(e, where) from None


def _check_name(name: str) -> None:
    """EINVAL for a name that is not one directory entry (never sent)."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise SyscallError(errno.EINVAL, f"bad name {name!r}")


def _ns(sec: int, nsec: int) -> int:
    return sec * _NS + nsec


# ---------------------------------------------------------------------------
# The superblock.
# ---------------------------------------------------------------------------


class NinePSuperblock(Superblock):
    """A 9P2000.L mount on ``client`` (a :class:`Client`, versioned here if it
    was not yet). ``aname``, ``uname``, ``n_uname``: Tattach's. ``cache``:
    ``exclusive`` or ``shared`` (see the module docstring). ``source``: what
    errors call the mount (its host folder or server address).

    Raises SyscallError: EIO when the channel fails, the server's errno when
    Tversion or Tattach is refused (ENOENT for an unknown aname), ENOTDIR
    when the attached root is not a directory.
    """

    def __init__(
        self,
        client: Client,
        *,
        aname: str = "",
        uname: str = "",
        n_uname: int = NONUNAME,
        read_only: bool = False,
        cache: str = EXCLUSIVE,
        clock: Callable[[], int] | None = None,
        source: str = "",
    ) -> None:
        kw: dict[str, Any] = {"clock": clock} if clock is not None else {}
        super().__init__("9p", V9FS_MAGIC, read_only=read_only, **kw)
        if cache not in (EXCLUSIVE, SHARED):
            raise SyscallError(errno.EINVAL, f"cache={cache!r}")
        self.aname, self.uname, self.n_uname = aname, uname, n_uname
        self.cache = cache
        self.shared = cache == SHARED
        #: Shared folders revalidate every path step.
        self.cache_dentries = not self.shared
        self.source = source or aname or "9p"
        self._lock = threading.RLock()
        #: Live inodes by the server's qid.path, so hard links share one.
        self._inodes: weakref.WeakValueDictionary[int, NinePInode] = weakref.WeakValueDictionary()
        #: Fids of collected inodes, clunked at the next operation.
        self._dead_fids: list[Fid] = []
        #: Tclunks in flight: the fid numbers are free once answered.
        self._clunking: list[tuple[Fid, Pending]] = []
        #: The server answered ENOSYS/EOPNOTSUPP to these (diod has neither):
        #: Tremove and Trename stand in.
        self._no_unlinkat = self._no_renameat = False
        self.client: Client | None = None
        self._root: NinePInode | None = None
        root_fid, attr = self._attach(client)
        self._root = NinePInode(self, root_fid, attr, None, "")
        self._inodes[attr.qid.path] = self._root

    def __repr__(self) -> str:
        return f"<NinePSuperblock {self.source!r} cache={self.cache}>"

    # -- channel ---------------------------------------------------------------

    def _attach(self, client: Client) -> tuple[Fid, m.Rgetattr]:
        """Version (if needed) and attach ``client``, which becomes ours."""
        with _p9(f"mount {self.source}"):
            if not client.version_string:
                client.version()
            fid = client.alloc_fid()
            try:
                client.attach(fid, self.aname, self.uname, self.n_uname)
            except BaseException:
                client.free_fid(fid)
                raise
            attr = client.getattr(fid)
        if attr.mode & S_IFMT != S_IFDIR:
            with contextlib.suppress(OSError, ValueError):
                client.clunk(fid)
            raise SyscallError(errno.ENOTDIR, f"9p mount {self.source}: the attached root is not a directory")
        self.client = client
        return fid, attr

    def channel(self) -> Client:
        """The live client; EIO when the mount has none (unpickled, not yet
        re-bound by :meth:`rebind`)."""
        client = self.client
        if client is None:
            raise SyscallError(errno.EIO, f"9p mount {self.source} has no channel (not restored)")
        return client

    def close(self) -> None:
        """Close the channel (every fid goes with it)."""
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def root(self) -> Inode:
        assert self._root is not None
        return self._root

    def _reap(self) -> None:
        """Clunk the fids of inodes that were collected (never from __del__,
        which may run in any thread and must not block), and free the fid
        numbers whose Tclunk was answered."""
        if self._clunking:
            self._collect()
        if not self._dead_fids:
            return
        with self._lock:
            fids, self._dead_fids = self._dead_fids, []
        self._clunk(*fids)

    def _clunk(self, *fids: Fid | None) -> None:
        """Tclunk without waiting for Rclunk (a fid number is reused only
        once its Rclunk came, see :meth:`_collect`): closing a file or
        dropping a spare fid costs no round trip."""
        client = self.client
        if client is None:
            return
        for fid in dict.fromkeys(f for f in fids if f is not None):
            try:
                p = client.send(m.Tclunk(fid))
            except (OSError, ValueError):
                continue
            with self._lock:
                self._clunking.append((fid, p))
        if len(self._clunking) > 64:
            self._collect()

    def _collect(self) -> None:
        client = self.client
        with self._lock:
            done = [(f, p) for f, p in self._clunking if p.done]
            self._clunking = [(f, p) for f, p in self._clunking if not p.done]
        if client is not None:
            for fid, _ in done:
                client.free_fid(fid)

    def _adopt(self, fid: Fid, attr: m.Rgetattr, parent: NinePInode, name: str) -> NinePInode:
        """The inode for the file just walked to (``fid``, ``attr``) as
        ``name`` in ``parent``: the live one with the same qid.path and type,
        else a new one. A live one takes the fresh ``fid`` and its old one is
        clunked: on a server whose fids are paths (diod) the fresh walk is
        the one that still names the file after a rename on the host."""
        with self._lock:
            old = self._inodes.get(attr.qid.path)
            if old is not None and old.type == attr.mode & S_IFMT and old.nlink > 0 and old.fid is not None:
                inode, spare = old, old.fid
                old.fid = fid
                old._apply(attr)
            else:
                inode, spare = NinePInode(self, fid, attr, parent, name), None
                self._inodes[attr.qid.path] = inode
            inode._add_link(parent, name)
        if spare is not None:
            self._clunk(spare)
        return inode

    def statfs(self) -> StatFS:
        """Tstatfs on the root (f_type is V9FS_MAGIC whatever the server's)."""
        client = self.channel()
        assert self._root is not None and self._root.fid is not None
        with _p9(self.source):
            s = client.statfs(self._root.fid)
        return StatFS(type=V9FS_MAGIC, bsize=s.bsize, blocks=s.blocks, bfree=s.bfree, bavail=s.bavail,
                      files=s.files, ffree=s.ffree, namelen=s.namelen or 255, frsize=s.bsize)

    # -- checkpoint and restore ------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the channel, fids and locks; live inodes kept by
        strong reference (their paths are what :meth:`rebind` walks)."""
        state = self.__dict__.copy()
        state["client"] = None
        state["_lock"] = None
        state["_dead_fids"] = []
        state["_clunking"] = []
        state["_inodes"] = dict(self._inodes)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        inodes = state.pop("_inodes")
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._inodes = weakref.WeakValueDictionary(inodes)

    def rebind(self, client: Client) -> None:
        """Give the mount a new channel (after a restore, or a reconnect):
        attach on ``client``, then re-walk every live inode by its path from
        the new root and re-open the fids that were open, with the same
        access. Attributes are those of the new walk, listings are fetched
        again on next use; inode numbers stay as the sandbox saw them.

        Raises :class:`NinePRestoreError` naming the mount and each path that
        no longer exists (or is now of another type, or cannot be re-opened),
        and for a file that was deleted while open (its data is gone with the
        old channel). The old channel, if any, is closed.
        """
        old = self.client
        self.client = None
        if old is not None and old is not client:
            old.close()
        self._dead_fids = []
        self._clunking = []
        try:
            root_fid, attr = self._attach(client)
        except SyscallError as e:
            raise NinePRestoreError(f"9p mount {self.source}: cannot attach on the new channel: {e}") from None
        root = self._root
        assert root is not None
        inodes = {id(i): i for i in self._inodes.values()}
        inodes[id(root)] = root
        table: dict[int, NinePInode] = {attr.qid.path: root}
        root.fid, root._rfid, root._wfid = root_fid, None, None
        root.qid = attr.qid
        root._stale = True
        problems: list[str] = []
        # Parents before children, so that a failure is reported once, at the top.
        for inode in sorted(inodes.values(), key=lambda i: i._depth()):
            if inode is root:
                continue
            was_open = (inode._open_read, inode._open_write)
            inode.fid, inode._rfid, inode._wfid = None, None, None
            inode._listing = None
            inode._stale = True
            paths = inode.paths()
            if not paths:
                if inode._io_users:
                    problems.append(f"{inode._last_path or '?'} (deleted while open)")
                continue
            found: tuple[Fid, m.Rgetattr] | None = None
            for path in paths:
                names = [n for n in path.split("/") if n]
                try:
                    fid, _ = client.walk_new(root_fid, names)
                except (OSError, ValueError):
                    continue
                try:
                    a = client.getattr(fid)
                except (OSError, ValueError):
                    self._clunk(fid)
                    continue
                found = (fid, a)
                break
            if found is None:
                problems.append(f"{paths[0]} (no longer exists)")
                continue
            fid, a = found
            if a.mode & S_IFMT != inode.type:
                self._clunk(fid)
                problems.append(f"{paths[0]} (was {st.filemode(inode.mode)[0]}, now {st.filemode(a.mode)[0]})")
                continue
            inode.fid, inode.qid = fid, a.qid
            # Take the attributes now: ``size`` (O_APPEND, SEEK_END) reads the
            # cached size without revalidating in exclusive mode, so a file the
            # host changed while the sandbox was away would be written at its
            # old end (found by tests/checkpoint/test_restore_programs.py).
            inode._apply(a)
            table[a.qid.path] = inode
            if inode._io_users and any(was_open):
                try:
                    inode._ensure_io(read=was_open[0], write=was_open[1])
                except SyscallError as e:
                    problems.append(f"{paths[0]} (cannot be re-opened: {e})")
        self._inodes = weakref.WeakValueDictionary(table)
        if problems:
            raise NinePRestoreError(
                f"9p mount {self.source}: cannot restore; on the new channel: " + "; ".join(problems)
            )

    #: The restore step: same as :meth:`rebind`.
    restore = rebind

    def reconnect(self, ctx: MountContext, data: str, source: str = "") -> None:
        """Restore from a restore environment's mount data (``MountArgs.data``
        with the new gofer's ``rfdno``, or an external server's address):
        connect as :func:`mount_9p` would, then :meth:`rebind`. SyscallError
        for bad data or a failed connect; NinePRestoreError as rebind."""
        opts = parse_data(data)
        client = connect(ctx, source or self.source, opts)
        try:
            self.rebind(client)
        except BaseException:
            if self.client is None:
                client.close()
            raise


# ---------------------------------------------------------------------------
# Inodes.
# ---------------------------------------------------------------------------


class NinePFileOps(RegularFileOps):
    """A regular file's reads and writes through its inode's open fids; the
    last release clunks them (as Linux v9fs releases its open fid)."""

    def release(self, fd: FileDescription) -> None:
        inode = fd.inode
        assert isinstance(inode, NinePInode)
        inode._io_users -= 1
        if inode._io_users <= 0:
            inode._io_users = 0
            inode._close_io()


class NinePDirOps(DirectoryOps):
    """getdents over :meth:`NinePInode.iterate`."""

    def release(self, fd: FileDescription) -> None:
        inode = fd.inode
        assert isinstance(inode, NinePInode)
        inode._io_users = max(0, inode._io_users - 1)


class NinePInode(Names, Inode):
    """A file on the server, reached by ``fid`` (walked, never opened).

    ``links``: the (parent inode, name) pairs we know it by, first the one
    its path is made of; empty for the root and for a file with no names
    left. ``ino`` is the server's qid.path (kept across a restore).
    Attributes are the server's (Tgetattr); see the module docstring for when
    they are fetched again.
    """

    sb: NinePSuperblock

    def __init__(self, sb: NinePSuperblock, fid: Fid, attr: m.Rgetattr, parent: NinePInode | None, name: str) -> None:
        super().__init__(sb, attr.mode, attr.uid, attr.gid)
        self.fid: Fid | None = fid
        self.qid: Qid = attr.qid
        self.ino = attr.qid.path
        self._init_names()
        self._rfid: Fid | None = None
        self._wfid: Fid | None = None
        self._open_read = self._open_write = False
        self._iounit = 0
        self._io_users = 0
        self._size = 0
        self._blocks = 0
        self._blksize = 4096
        self._stale = True
        self._listing: list[DirEntry] | None = None
        self._cookies: dict[str, int] = {}
        self._next_cookie = 3
        self._target: str | None = None
        self._apply(attr)
        if parent is not None:
            self._add_link(parent, name)

    def __repr__(self) -> str:
        return f"<NinePInode {self._last_path or '/'} ino={self.ino} fid={self.fid}>"

    def __del__(self) -> None:
        try:
            fids = [f for f in dict.fromkeys((self.fid, self._rfid, self._wfid)) if f is not None]
            if fids and self.sb.client is not None:
                self.sb._dead_fids.extend(fids)
        except Exception:
            pass

    # -- channel helpers ------------------------------------------------------------

    def _fid(self) -> Fid:
        if self.fid is None:
            raise SyscallError(errno.EIO, f"9p mount {self.sb.source}: {self._last_path} has no fid (not restored)")
        return self.fid

    def _walk(self, names: list[str]) -> Fid:
        client = self.sb.channel()
        with _p9(self.sb.source):
            fid, _ = client.walk_new(self._fid(), names)
        return fid

    def _writable(self) -> None:
        if self.sb.read_only:
            raise SyscallError(errno.EROFS)

    # -- attributes -----------------------------------------------------------------

    def _apply(self, a: m.Rgetattr) -> None:
        v = a.valid
        if v & m.GETATTR_MODE:
            self.mode = a.mode
        if v & m.GETATTR_UID:
            self.uid = a.uid
        if v & m.GETATTR_GID:
            self.gid = a.gid
        if v & m.GETATTR_NLINK:
            self.nlink = a.nlink
        if v & m.GETATTR_RDEV:
            self.rdev = a.rdev
        if v & m.GETATTR_SIZE:
            self._size = a.size
        if v & m.GETATTR_BLOCKS:
            self._blocks = a.blocks
        self._blksize = a.blksize or 4096
        if v & m.GETATTR_ATIME:
            self.atime = _ns(a.atime_sec, a.atime_nsec)
        if v & m.GETATTR_MTIME:
            self.mtime = _ns(a.mtime_sec, a.mtime_nsec)
        if v & m.GETATTR_CTIME:
            self.ctime = _ns(a.ctime_sec, a.ctime_nsec)
        # diod sets GETATTR_BTIME with a zero time: unknown all the same.
        self.btime = _ns(a.btime_sec, a.btime_nsec) if v & m.GETATTR_BTIME and (a.btime_sec or a.btime_nsec) else None
        self._stale = False

    def _refresh(self) -> None:
        """Tgetattr (on the walked fid, else an open one: a server whose fids
        are paths loses the walked one when the name goes)."""
        client = self.sb.channel()
        error: BaseException | None = None
        for fid in dict.fromkeys((self.fid, self._rfid, self._wfid)):
            if fid is None:
                continue
            try:
                self._apply(client.getattr(fid, m.GETATTR_ALL))
                return
            except (OSError, ValueError) as e:
                error = e
        if error is None:
            self._fid()
        assert error is not None
        raise _syscall_error(error, self.sb.source)

    def _revalidate(self) -> None:
        if self._stale or self.sb.shared:
            self._refresh()

    def _changed(self) -> None:
        """Our own change to this file: attributes are fetched again on next
        use (the server set ctime, mtime, blocks...)."""
        self._stale = True

    def _dir_changed(self) -> None:
        """Our own change to this directory's entries."""
        self._stale = True
        self._listing = None

    @property
    def size(self) -> int:
        if self.sb.shared:
            self._refresh()
        return self._size

    @property
    def blocks(self) -> int:
        return self._blocks

    def stat(self) -> Stat:
        """The cached attributes (exclusive, none changed by us since the
        last Tgetattr), else the server's."""
        self._revalidate()
        return Stat(
            dev=self.sb.dev, ino=self.ino, mode=self.mode, nlink=self.nlink, uid=self.uid, gid=self.gid,
            rdev=self.rdev, size=self._size, blksize=self._blksize, blocks=self._blocks, atime=self.atime,
            mtime=self.mtime, ctime=self.ctime, btime=self.btime,
        )

    def setattr(self, attrs: SetAttr) -> None:
        """Tsetattr of what ``attrs`` changes (mode's permission bits, uid,
        gid, size, atime and mtime as given); ctime is the server's to set.
        EISDIR for a size on a directory, EROFS on a read-only mount, else
        the server's errno (EPERM, EOPNOTSUPP for chmod of a symlink, ...)."""
        valid = 0
        kw: dict[str, Any] = {}
        if attrs.size is not None:
            if self.is_dir():
                raise SyscallError(errno.EISDIR)
            if not self.is_regular():
                raise SyscallError(errno.EINVAL)
            valid |= m.SETATTR_SIZE
            kw["size"] = attrs.size
        if attrs.mode is not None:
            valid |= m.SETATTR_MODE
            kw["mode"] = attrs.mode & 0o7777
        if attrs.uid is not None:
            valid |= m.SETATTR_UID
            kw["uid"] = attrs.uid
        if attrs.gid is not None:
            valid |= m.SETATTR_GID
            kw["gid"] = attrs.gid
        if attrs.atime is not None:
            valid |= m.SETATTR_ATIME | m.SETATTR_ATIME_SET
            kw["atime"] = divmod(attrs.atime, _NS)
        if attrs.mtime is not None:
            valid |= m.SETATTR_MTIME | m.SETATTR_MTIME_SET
            kw["mtime"] = divmod(attrs.mtime, _NS)
        if not valid:
            if attrs.ctime is not None:
                self.ctime = attrs.ctime
            return
        self._writable()
        client = self.sb.channel()
        with _p9(self.sb.source):
            client.setattr(self._fid(), valid, **kw)
        # What we know at once (permission checks read these), then the rest
        # from the server at next use.
        self.apply_attrs(replace(attrs, ctime=None))  # the server sets ctime itself
        if attrs.size is not None:
            self._size = attrs.size
        self._changed()

    def truncate(self, size: int) -> None:
        self.setattr(SetAttr(size=size))

    # -- directories ----------------------------------------------------------------

    def lookup(self, name: str) -> Inode:
        """Twalk one name from this directory, then Tgetattr: ENOENT if
        absent, ENOTDIR on a non-directory. The same file (qid.path and type)
        gives the same inode."""
        if not self.is_dir():
            raise SyscallError(errno.ENOTDIR)
        _check_name(name)
        self.sb._reap()
        fid = self._walk([name])
        client = self.sb.channel()
        try:
            with _p9(self.sb.source):
                attr = client.getattr(fid, m.GETATTR_ALL)
        except BaseException:
            self.sb._clunk(fid)
            raise
        return self.sb._adopt(fid, attr, self, name)

    def _fetch_listing(self) -> list[DirEntry]:
        client = self.sb.channel()
        fid = self._walk([])
        try:
            with _p9(self.sb.source):
                client.lopen(fid, m.DOTL_RDONLY | m.DOTL_DIRECTORY)
                dirents = client.readdir_all(fid)
        finally:
            self.sb._clunk(fid)
        present: set[str] = set()
        out = []
        inodes = self.sb._inodes
        for d in dirents:
            if d.name in (".", "..") or not d.name or "/" in d.name:
                continue
            present.add(d.name)
            c = self._cookies.get(d.name)
            if c is None:
                c = self._cookies[d.name] = self._next_cookie
                self._next_cookie += 1
            known = inodes.get(d.qid.path)
            dtype = d.type or _QT_DT.get(d.qid.type & (m.QTDIR | m.QTSYMLINK), DT_REG)
            out.append(DirEntry(d.name, known.ino if known is not None else d.qid.path, dtype, c))
        for gone in set(self._cookies) - present:
            del self._cookies[gone]
        out.sort(key=lambda e: e.cookie)
        return out

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        """Entries after ``cookie``, each with a cookie kept per name, so a
        listing stays stable while the directory changes. The listing is read
        (Tlopen, Treaddir until empty, Tclunk) when first needed, after our
        own changes, and in shared mode whenever a listing starts again."""
        if not self.is_dir():
            raise SyscallError(errno.ENOTDIR)
        if self._listing is None or (self.sb.shared and cookie <= 2):
            self._listing = self._fetch_listing()
        return iter([e for e in self._listing if e.cookie > cookie])

    def is_empty_dir(self) -> bool:
        if self.sb.shared or self._listing is None:
            self._listing = self._fetch_listing()
        return not self._listing

    def _new_gid(self, creds: Credentials) -> int:
        """A new file's group: this directory's when it is set-group-ID
        (Linux ``v9fs_get_fsgid_for_create``), else the caller's."""
        return self.gid if self.mode & S_ISGID else creds.fsgid

    def _made(self, name: str, creds: Credentials) -> NinePInode:
        """The inode of the ``name`` just made here (Twalk, Tgetattr), owned by
        the caller: Tsetattr of uid (and gid) when the server gave another,
        which a server not running as root may refuse (then it keeps its own)."""
        fid = self._walk([name])
        client = self.sb.channel()
        try:
            with _p9(self.sb.source):
                attr = client.getattr(fid, m.GETATTR_ALL)
                gid = self._new_gid(creds)
                if attr.uid != creds.fsuid or attr.gid != gid:
                    try:
                        client.setattr(fid, m.SETATTR_UID | m.SETATTR_GID, uid=creds.fsuid, gid=gid)
                        attr = client.getattr(fid, m.GETATTR_ALL)
                    except P9Error as e:
                        if e.errno not in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.EOPNOTSUPP):
                            raise
        except BaseException:
            self.sb._clunk(fid)
            raise
        self._dir_changed()
        with self.sb._lock:
            inode = NinePInode(self.sb, fid, attr, self, name)
            self.sb._inodes[attr.qid.path] = inode
        return inode

    def _may_make(self, name: str) -> Client:
        if not self.is_dir():
            raise SyscallError(errno.ENOTDIR)
        self._writable()
        _check_name(name)
        self.sb._reap()
        return self.sb.channel()

    def create(self, name: str, mode: int, creds: Credentials) -> Inode:
        """Tlcreate (O_RDWR|O_EXCL) on a clone of this directory's fid; the
        open fid is kept for the file's first open. EEXIST if taken."""
        client = self._may_make(name)
        d = self._walk([])
        try:
            with _p9(self.sb.source):
                _, iounit = client.lcreate(d, name, m.DOTL_RDWR | m.DOTL_EXCL | m.DOTL_CREATE, mode & 0o7777,
                                           self._new_gid(creds))
        except BaseException:
            self.sb._clunk(d)
            raise
        try:
            inode = self._made(name, creds)
        except BaseException:
            self.sb._clunk(d)
            raise
        inode._rfid = inode._wfid = d
        inode._open_read = inode._open_write = True
        inode._iounit = iounit
        return inode

    def mkdir(self, name: str, mode: int, creds: Credentials) -> Inode:
        client = self._may_make(name)
        with _p9(self.sb.source):
            client.mkdir(self._fid(), name, mode & 0o7777, self._new_gid(creds))
        return self._made(name, creds)

    def mknod(self, name: str, mode: int, rdev: int, creds: Credentials) -> Inode:
        """Regular files and FIFOs (Tmknod); devices and sockets are EPERM:
        the host gets no device nodes, and sockets are the sentry's own."""
        kind = mode & S_IFMT or st.S_IFREG
        if kind not in (st.S_IFREG, st.S_IFIFO):
            raise SyscallError(errno.EPERM)
        client = self._may_make(name)
        with _p9(self.sb.source):
            client.mknod(self._fid(), name, kind | (mode & 0o7777), major(rdev), minor(rdev), self._new_gid(creds))
        return self._made(name, creds)

    def symlink(self, name: str, target: str, creds: Credentials) -> Inode:
        client = self._may_make(name)
        with _p9(self.sb.source):
            client.symlink(self._fid(), name, target, self._new_gid(creds))
        inode = self._made(name, creds)
        inode._target = target
        return inode

    def link(self, name: str, inode: Inode) -> None:
        """Tlink; EXDEV for another superblock's inode."""
        client = self._may_make(name)
        if not isinstance(inode, NinePInode) or inode.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        with _p9(self.sb.source):
            client.link(self._fid(), inode._fid(), name)
        inode._add_link(self, name)
        inode.nlink += 1
        inode._changed()
        self._dir_changed()

    def _lost_name(self, name: str, child: NinePInode) -> None:
        """``child`` lost the name ``name`` here: its link count is fetched
        again (0 when the server can no longer reach it, or a path-based
        server's fid went with the name: then it is walked again by another
        name it still has)."""
        child._drop_link(self, name)
        try:
            child._refresh()
        except SyscallError:
            if child.links:
                child._rewalk()
                with contextlib.suppress(SyscallError):
                    child._refresh()
            else:
                child.nlink = 0
        else:
            if not child.links and child.nlink > 0 and child.is_dir():
                child.nlink = 0

    def _unlinkat(self, client: Client, name: str, flags: int) -> None:
        """Tunlinkat, or Twalk and Tremove on a server without it (diod)."""
        if not self.sb._no_unlinkat:
            try:
                with _p9(self.sb.source):
                    client.unlinkat(self._fid(), name, flags)
                return
            except SyscallError as e:
                if e.errno not in (errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                self.sb._no_unlinkat = True
        f = self._walk([name])
        with _p9(self.sb.source):
            client.remove(f)

    def unlink(self, name: str, child: Inode) -> None:
        """Tunlinkat; an open file keeps its open fids (its data) until closed."""
        client = self._may_make(name)
        self._unlinkat(client, name, 0)
        self._dir_changed()
        if isinstance(child, NinePInode):
            self._lost_name(name, child)

    def rmdir(self, name: str, child: Inode) -> None:
        """Tunlinkat with AT_REMOVEDIR; ENOTEMPTY from the server."""
        client = self._may_make(name)
        self._unlinkat(client, name, m.AT_REMOVEDIR)
        self._dir_changed()
        child.nlink = 0
        if isinstance(child, NinePInode):
            child._drop_link(self, name)

    def rename(self, old_name: str, new_dir: Inode, new_name: str, *, exchange: bool = False) -> None:
        """Trenameat (Trename on the walked file when the server has no
        Trenameat). EXDEV across superblocks; RENAME_EXCHANGE is EINVAL, as
        Linux v9fs answers (9P has no exchange). The moved file keeps its
        inode and is walked again by its new name (a path-based server, as
        diod, forgets fids under the old one)."""
        client = self._may_make(old_name)
        if not isinstance(new_dir, NinePInode) or new_dir.sb is not self.sb:
            raise SyscallError(errno.EXDEV)
        _check_name(new_name)
        if exchange:
            raise SyscallError(errno.EINVAL)
        try:
            if self.sb._no_renameat:
                raise SyscallError(errno.ENOSYS)
            with _p9(self.sb.source):
                client.renameat(self._fid(), old_name, new_dir._fid(), new_name)
        except SyscallError as e:
            if e.errno not in (errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            self.sb._no_renameat = True
            f = self._walk([old_name])
            try:
                with _p9(self.sb.source):
                    client.rename(f, new_dir._fid(), new_name)
            finally:
                self.sb._clunk(f)
        self._dir_changed()
        new_dir._dir_changed()
        moved = self._kids.get(old_name)
        replaced = new_dir._kids.get(new_name)
        if replaced is not None and replaced is not moved:
            new_dir._lost_name(new_name, replaced)
        if moved is not None:
            moved._drop_link(self, old_name)
            moved._add_link(new_dir, new_name)
            moved._changed()
            moved._rewalk(subtree=True)

    def _rewalk(self, *, subtree: bool = False) -> None:
        """Walk this file again by its path from the root and swap its fid
        for the new one (with ``subtree``, every live inode below it too).
        Best effort: a file that cannot be reached keeps its old fid."""
        client = self.sb.client
        root = self.sb._root
        if client is None or root is None or root.fid is None:
            return
        targets = [self]
        if subtree and self.is_dir():
            mine = self.path()
            if mine is not None:
                prefix = mine.rstrip("/") + "/"
                targets += [i for i in list(self.sb._inodes.values())
                            if i is not self and (i.path() or "").startswith(prefix)]
        for inode in targets:
            path = inode.path()
            if path is None:
                continue
            try:
                fid, _ = client.walk_new(root.fid, [n for n in path.split("/") if n])
            except (OSError, ValueError):
                continue
            old, inode.fid = inode.fid, fid
            if old is not None and old not in (inode._rfid, inode._wfid):
                self.sb._clunk(old)

    # -- symlinks -------------------------------------------------------------------

    def readlink(self) -> str:
        """Treadlink, kept in exclusive mode (a symlink never changes)."""
        if not self.is_symlink():
            raise SyscallError(errno.EINVAL)
        if self._target is not None and not self.sb.shared:
            return self._target
        client = self.sb.channel()
        with _p9(self.sb.source):
            self._target = client.readlink(self._fid())
        return self._target

    # -- files ----------------------------------------------------------------------

    def open(self, fd: FileDescription) -> FileOps:
        """A directory lists through :meth:`iterate`; a regular file gets its
        fids opened (Tlopen) for the access the description needs. ENXIO for
        other types (the VFS opens FIFOs and devices itself)."""
        if self.is_dir():
            self._io_users += 1
            return NinePDirOps()
        if not self.is_regular():
            raise SyscallError(errno.ENXIO)
        if fd.writable:
            self._writable()
        self._ensure_io(read=fd.readable, write=fd.writable)
        self._io_users += 1
        return NinePFileOps()

    def _ensure_io(self, *, read: bool, write: bool) -> None:
        """Open fids for reading and writing as needed: O_RDWR for writing
        (O_WRONLY where that is refused), which also serves reads. Regular
        files only (EISDIR, EINVAL otherwise)."""
        if not self.is_regular():
            raise SyscallError(errno.EISDIR if self.is_dir() else errno.EINVAL)
        client = self.sb.channel()
        if write and self._wfid is None:
            fid = self._walk([])
            try:
                with _p9(self.sb.source):
                    try:
                        _, iounit = client.lopen(fid, m.DOTL_RDWR)
                        both = True
                    except P9Error as e:
                        if e.errno not in (errno.EACCES, errno.EPERM):
                            raise
                        _, iounit = client.lopen(fid, m.DOTL_WRONLY)
                        both = False
            except BaseException:
                self.sb._clunk(fid)
                raise
            self._wfid, self._iounit = fid, iounit
            self._open_write = True
            if both and self._rfid is None:
                self._rfid = fid
                self._open_read = True
        if read and self._rfid is None:
            fid = self._walk([])
            try:
                with _p9(self.sb.source):
                    _, iounit = client.lopen(fid, m.DOTL_RDONLY)
            except BaseException:
                self.sb._clunk(fid)
                raise
            self._rfid = fid
            self._open_read = True
            self._iounit = min(self._iounit, iounit) if self._iounit and iounit else (iounit or self._iounit)

    def _close_io(self) -> None:
        fids = (self._rfid, self._wfid)
        self._rfid = self._wfid = None
        self._open_read = self._open_write = False
        self.sb._clunk(*fids)

    def _unit(self, client: Client) -> int:
        return min(self._iounit, client.iounit) if self._iounit else client.iounit

    def read(self, offset: int, length: int) -> bytes:
        """Tread at ``offset`` until ``length`` bytes or a short read (end of
        file); more than one iounit goes as up to IO_WINDOW requests in flight."""
        if length <= 0:
            return b""
        if self._rfid is None:
            self._ensure_io(read=True, write=False)
        fid = self._rfid
        assert fid is not None
        client = self.sb.channel()
        unit = self._unit(client)
        if length <= unit:
            with _p9(self.sb.source):
                return client.read(fid, offset, length)
        chunks: list[bytes] = []
        pending: collections.deque[tuple[int, Any]] = collections.deque()
        pos, end = offset, offset + length
        try:
            with _p9(self.sb.source):
                while pos < end or pending:
                    while pos < end and len(pending) < IO_WINDOW:
                        n = min(unit, end - pos)
                        pending.append((n, client.send(m.Tread(fid, pos, n))))
                        pos += n
                    n, p = pending.popleft()
                    reply = p.result(client.timeout)
                    if not isinstance(reply, m.Rread) or len(reply.data) > n:
                        raise ProtocolError(f"Tread answered with {type(reply).__name__}")
                    chunks.append(reply.data)
                    if len(reply.data) < n:
                        break
        except SyscallError:
            if chunks:
                return b"".join(chunks)
            raise
        return b"".join(chunks)

    def write(self, offset: int, data: bytes) -> int:
        """Twrite at ``offset``; the count of bytes written (a short count
        when the server stops early). Large writes keep up to IO_WINDOW
        requests in flight. EROFS on a read-only mount."""
        self._writable()
        if not data:
            return 0
        if self._wfid is None:
            self._ensure_io(read=False, write=True)
        fid = self._wfid
        assert fid is not None
        client = self.sb.channel()
        unit = self._unit(client)
        view = memoryview(data)
        done = 0
        if len(data) <= unit:
            with _p9(self.sb.source):
                done = client.write(fid, offset, bytes(view))
        else:
            pending: collections.deque[tuple[int, Any]] = collections.deque()
            pos = 0
            try:
                with _p9(self.sb.source):
                    while pos < len(data) or pending:
                        while pos < len(data) and len(pending) < IO_WINDOW:
                            n = min(unit, len(data) - pos)
                            pending.append((n, client.send(m.Twrite(fid, offset + pos, bytes(view[pos:pos + n])))))
                            pos += n
                        n, p = pending.popleft()
                        reply = p.result(client.timeout)
                        if not isinstance(reply, m.Rwrite):
                            raise ProtocolError(f"Twrite answered with {type(reply).__name__}")
                        done += min(reply.count, n)
                        if reply.count < n:
                            break
            except SyscallError:
                if not done:
                    raise
        self._size = max(self._size, offset + done)
        self._changed()
        return done

    def allocate(self, mode: int, offset: int, length: int) -> None:
        """9P2000.L has no fallocate: EOPNOTSUPP (as Linux v9fs)."""
        raise SyscallError(errno.EOPNOTSUPP)

    def fsync(self) -> None:
        """Tfsync on an open fid (nothing to do when none is open)."""
        fid = self._wfid if self._wfid is not None else self._rfid
        if fid is None:
            return
        client = self.sb.channel()
        with _p9(self.sb.source):
            client.fsync(fid)

    def statfs(self) -> StatFS:
        return self.sb.statfs()

    def released(self) -> None:
        """The last name and open file are gone: clunk every fid now."""
        fids = (self.fid, self._rfid, self._wfid)
        self.fid = self._rfid = self._wfid = None
        self.sb._clunk(*fids)

    # -- extended attributes ----------------------------------------------------------

    def getxattr(self, name: str) -> bytes:
        """Txattrwalk and Tread; ENODATA when unset, the server's errno
        otherwise (EOPNOTSUPP for a namespace it does not serve)."""
        client = self.sb.channel()
        with _p9(self.sb.source):
            return client.getxattr(self._fid(), name)

    def setxattr(self, name: str, value: bytes, flags: int = 0) -> None:
        self._writable()
        client = self.sb.channel()
        with _p9(self.sb.source):
            client.setxattr(self._fid(), name, value, flags)
        self._changed()

    def listxattr(self) -> list[str]:
        client = self.sb.channel()
        with _p9(self.sb.source):
            return client.listxattr(self._fid())

    def removexattr(self, name: str) -> None:
        """Txattrcreate of size 0, as Linux v9fs removes; ENODATA when unset."""
        self._writable()
        self.getxattr(name)  # ENODATA when unset (Linux removexattr semantics)
        client = self.sb.channel()
        x = self._walk([])
        try:
            with _p9(self.sb.source):
                client.xattrcreate(x, name, 0, m.XATTR_REPLACE)
        except BaseException:
            self.sb._clunk(x)
            raise
        with _p9(self.sb.source):
            client.clunk(x)
        self._changed()

    # -- checkpoint -----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """No fids (they belong to the old channel); names and the access of
        the open fids are kept, for :meth:`NinePSuperblock.rebind`."""
        state = self.__dict__.copy()
        state["fid"] = state["_rfid"] = state["_wfid"] = None
        state["_listing"] = None
        self._names_state(state)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._names_restore(state)


# ---------------------------------------------------------------------------
# Mounting.
# ---------------------------------------------------------------------------


def parse_source(source: str) -> list[str]:
    """A ``9p`` spec mount's source as mount data: ``unix:PATH`` ->
    ``["trans=unix", "addr=PATH"]``, ``tcp:HOST:PORT`` -> ``["trans=tcp",
    "addr=HOST", "port=PORT"]``. ValueError for anything else, and for a
    ``,`` or ``=`` in it (they would break the mount data)."""
    usage = f"a 9p mount's source is unix:PATH or tcp:HOST:PORT, got {source!r}"
    kind, sep, rest = source.partition(":")
    if not sep or not rest:
        raise ValueError(usage)
    if "," in rest or "=" in rest:
        raise ValueError(f"a 9p mount's source cannot hold ',' or '=': {source!r}")
    if kind == "unix":
        if not rest.startswith("/"):
            raise ValueError(f"a 9p mount's unix socket path must be absolute, got {rest!r}")
        return ["trans=unix", f"addr={rest}"]
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(usage + " (PORT is 1 to 65535)")
        return ["trans=tcp", f"addr={host.strip('[]')}", f"port={port}"]
    raise ValueError(usage)


def check_option(key: str, value: str) -> None:
    """ValueError naming what is wrong with a user-written 9p option."""
    if key == "msize":
        if not value.isdigit() or not MIN_MSIZE <= int(value) <= 0xFFFFFFFF:
            raise ValueError(f"msize is {MIN_MSIZE} to {0xFFFFFFFF} bytes, got {value!r}")
    elif key == "cache":
        if value not in CACHE_MODES:
            raise ValueError(f"cache is one of {', '.join(CACHE_MODES)}, got {value!r}")
    elif key == "dfltuid":
        if not value.isdigit() or int(value) > 0xFFFFFFFF:
            raise ValueError(f"dfltuid is a numeric user id, got {value!r}")
    elif key in ("aname", "uname") and ("," in value or "\0" in value):
        raise ValueError(f"{key} cannot hold ',' or NUL, got {value!r}")


def _socket_for_fd(ctx: MountContext, fd: int) -> Client | socket.socket:
    given = ctx.gofer.get(fd) if ctx.gofer else None
    if isinstance(given, Client | socket.socket):
        return given
    if isinstance(given, int):
        fd = given
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise SyscallError(errno.EBADF, f"9p rfdno={fd}: {e.strerror}") from None
    if not st.S_ISSOCK(mode):
        raise SyscallError(errno.EINVAL, f"9p rfdno={fd} is not a socket")
    return socket.socket(fileno=fd)


def connect(ctx: MountContext, source: str, opts: dict[str, str]) -> Client:
    """The channel the mount data ``opts`` names (see the module docstring),
    not yet versioned. SyscallError: EINVAL for bad data, EBADF for an fd
    that is not open, the connect errno (ECONNREFUSED, ENOENT) otherwise."""
    trans = opts.get("trans") or ("fd" if "rfdno" in opts else "")
    msize = int(opts.get("msize") or DEFAULT_MSIZE)
    if trans == "fd":
        try:
            r, w = int(opts["rfdno"]), int(opts.get("wfdno", opts["rfdno"]))
        except (KeyError, ValueError):
            raise SyscallError(errno.EINVAL, "9p trans=fd needs rfdno=N and wfdno=N") from None
        if r != w:
            raise SyscallError(errno.EINVAL, "9p trans=fd: rfdno and wfdno must name the same socket")
        chan = _socket_for_fd(ctx, r)
        if isinstance(chan, Client):
            return chan
        return Client(chan, msize=msize, timeout=DEFAULT_TIMEOUT)
    if trans == "unix":
        addr = opts.get("addr") or (source[5:] if source.startswith("unix:") else source)
        if not addr or addr == "none":
            raise SyscallError(errno.EINVAL, "9p trans=unix needs addr=PATH")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    elif trans == "tcp":
        host = opts.get("addr") or ""
        port = opts.get("port") or "564"
        if not host or not port.isdigit():
            raise SyscallError(errno.EINVAL, "9p trans=tcp needs addr=HOST and port=N")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise SyscallError(errno.EINVAL, f"9p: unknown host {host!r}: {e.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        addr = sockaddr  # type: ignore[assignment]
    else:
        raise SyscallError(errno.EINVAL, f"9p: trans={trans!r} is not fd, unix or tcp")
    try:
        sock.connect(addr)
    except OSError as e:
        sock.close()
        raise SyscallError(e.errno or errno.EIO, f"9p: cannot connect to {addr}: {e.strerror}") from None
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Client(sock, msize=msize, timeout=DEFAULT_TIMEOUT)


def mount_9p(ctx: MountContext, source: str, flags: MountFlags, data: str) -> NinePSuperblock:
    """A new 9p superblock for the mount data ``data`` (Linux
    ``v9fs_mount``): connect, Tversion, Tattach. SyscallError EINVAL for bad
    data (unknown keys, bad msize or cache), else as :func:`connect` and
    :class:`NinePSuperblock`."""
    opts = parse_data(data)
    unknown = sorted(set(opts) - KNOWN_KEYS)
    if unknown:
        raise SyscallError(errno.EINVAL, f"9p: unknown mount options {', '.join(unknown)}")
    for key, value in opts.items():
        try:
            check_option(key, value)
        except ValueError as e:
            raise SyscallError(errno.EINVAL, f"9p: {e}") from None
    version = opts.get("version")
    if version and version.lower() != "9p2000.l":
        raise SyscallError(errno.EINVAL, f"9p: only version=9p2000.L is spoken, not {version!r}")
    cache = CACHE_MODES[opts.get("cache") or EXCLUSIVE]
    client = connect(ctx, source, opts)
    n_uname = int(opts["dfltuid"]) if opts.get("dfltuid") else 0
    where = source if source and source != "none" else opts.get("addr") or f"fd {opts.get('rfdno', '?')}"
    try:
        return NinePSuperblock(
            client, aname=opts.get("aname", ""), uname=opts.get("uname", ""), n_uname=n_uname,
            read_only=flags.read_only, cache=cache, clock=ctx.clock, source=where,
        )
    except BaseException:
        client.close()
        raise
