"""The gofer: serves one host folder over 9P2000.L, confined to it.

Two ways to run it:

- **internal mode** (what the runtime uses, one socketpair per mount):
  ``Gofer(root, read_only=...).start(sock)`` serves an already-connected
  socket in background threads and returns the :class:`GoferConnection`;
  :func:`serve_fd` does the same for a socket file descriptor.
- **standalone mode**: ``pyrunsc gofer --serve DIR --listen unix:PATH``
  (or ``tcp:HOST:PORT``), the :data:`gofer_command` click command that the
  fs_9p plugin adds to the CLI; Ctrl-C (SIGINT) or SIGTERM stops it cleanly,
  whichever of its threads the signal reaches, giving its channels
  STANDALONE_CLOSE_TIMEOUT seconds to end (a request stuck in the host is
  left behind).

Confinement follows gVisor's ``runsc/fsgofer`` (and its ``pkg/p9`` server's
``checkSafeName``):

- every fid holds an ``O_PATH|O_NOFOLLOW`` file descriptor; Twalk opens each
  name with ``openat(parent_fd, name, O_PATH|O_NOFOLLOW)``, so a walk moves
  one real directory entry at a time and can never leave the root;
- names (Twalk, Tlcreate, Tmkdir, Tmknod, Tsymlink, Tlink, Trename,
  Trenameat, Tunlinkat) that are empty, ``.``, ``..``, or contain ``/`` or
  NUL are refused with EINVAL, wherever they occur -- so Twalk ``..`` fails
  at the root and everywhere else too; a client (the sentry) resolves
  ``..`` itself from the names it walked, as gVisor's does;
- symlinks are walked to (their qid says QTSYMLINK) and read with
  Treadlink, but never followed: a walk stops at one (a short Rwalk, or
  ENOTDIR when walking from it), Tlopen on one gives ELOOP, and no operation
  resolves a path through ``/proc/self/fd`` for a symlink (which would follow
  it): the few that need a symlink by name (Tsetattr times and owner, Tlink)
  use its directory and name with AT_SYMLINK_NOFOLLOW;
- Tlopen re-opens the walked file through ``/proc/self/fd/N`` (gVisor's
  ``reopenProcFd``), which reaches exactly the inode the walk found, and only
  for regular files and directories: a socket gives ENXIO, a device or FIFO
  EPERM, a symlink ELOOP. Without /proc it opens the name in its directory
  with O_NOFOLLOW and checks that it is the same inode (ENOENT if not);
- operations on a fid by its name (Trename, Tremove, symlinks above) first
  check that the name still holds the fid's inode (ENOENT if it was
  replaced), and the root cannot be renamed or removed (EBUSY);
- with ``read_only`` every change (Tlopen for writing or with O_TRUNC,
  Tlcreate, Tmkdir, Tmknod, Tsymlink, Tlink, Trename, Trenameat,
  Tunlinkat, Tremove, Tsetattr, Txattrcreate) fails with EROFS;
- Tattach accepts the aname ``""``, ``"/"``, the folder's own path, or one
  of the extra ``anames`` given; any other aname gets ENOENT. Tauth gets
  ENOENT, which diod's clients read as "no authentication required".

Requests before Tversion get EINVAL; a Tversion other than 9P2000.L gets
Rversion "unknown"; msize is the smaller of the client's and ``max_msize``
(at least MIN_MSIZE, else EINVAL). The gofer acts with its own credentials
(permission checks are the sentry's, as in gVisor); run as root it gives a
new file the attaching ``n_uname`` and the request's gid, and every new file
or directory gets exactly the mode asked for (the client applied its umask).

Attributes are the host's (Tgetattr: mode, uid, gid, nlink, rdev, size,
blksize, blocks and the three times with nanoseconds; ``valid`` =
GETATTR_BASIC); a qid is ``(QTDIR|QTSYMLINK|QTFILE, 0, st_ino)``. Treaddir
lists the directory (without ``.`` and ``..``, as gVisor's gofer) with the
entries' inode numbers and ``d_type``; an entry's offset is its index + 1, and
a Treaddir at offset 0 re-reads the directory. Tstatfs is ``fstatfs(2)``.
Byte-range locks are the client's business (as QEMU's 9p server): Tlock
answers LOCK_SUCCESS and Tgetlock LOCK_TYPE_UNLCK. Xattrs are limited to the
``user.`` namespace (others: EOPNOTSUPP); a Txattrcreate of size 0 removes
the xattr, as Linux's client uses it. Tmknod makes regular files and FIFOs
only (EPERM otherwise).

Concurrency: one polling thread (epoll) reads every channel of a gofer. A
request that arrives while nothing else of its channel is in flight is served
right there, on the polling thread (no thread handoff: the common case of a
client that waits for each reply); any other goes to a pool of worker threads
shared by all channels, so requests on different channels and tags run at
once. A request that keeps the polling thread longer than INLINE_BUDGET
seconds while others wait is noticed by the gofer's watchdog, which starts a
new polling thread (and charges the slow request to the pool: one worker
waits for it), so a slow request stalls nobody either. (A thread per channel
cost more in GIL handoffs than the requests themselves.) Tflush is answered
at once when its request has not started (the request is dropped and never
answered), else right after that request's reply. Replies are sent without
blocking: what the socket does not take at once goes to the channel's writer
thread, so a peer that stops reading stalls only its own channel, which is
closed after ``send_timeout`` seconds.

Hostile input: a frame whose size field is below 7 or above msize, or that
is cut short, closes the channel; a well-framed message that does not decode
(unknown type: ENOSYS; malformed body, or an R-message: EINVAL) is answered
with Rlerror on its tag. Either way with one log line.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import functools
import itertools
import logging
import os
import queue
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pyrunsc.core.errors import ConfigError, PyrunscError

from .p9 import messages as m
from .p9.messages import NOFID, NONUNAME, Dirent, ProtocolError, Qid
from .p9.transport import FrameReader

log = logging.getLogger("pyrunsc.gofer")

#: The largest msize the gofer agrees to (bytes); Tversion may ask for less.
DEFAULT_MAX_MSIZE = 1024 * 1024
#: The smallest msize it accepts: room for any reply but Tread/Treaddir data.
MIN_MSIZE = 4096 + m.IOHDRSZ
#: Worker threads per :class:`Gofer` unless told otherwise.
DEFAULT_WORKERS = 16
#: Seconds a reply may wait for the peer to read before the channel is dropped.
DEFAULT_SEND_TIMEOUT = 30.0
#: Seconds a request may run on its channel's reading thread before the
#: watchdog gives the reading to a new thread (it looks this often, so the
#: handover comes after one to two budgets).
INLINE_BUDGET = 0.002
#: Seconds :meth:`Gofer.close` waits in all for its channels to end.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: The same for ``pyrunsc gofer`` after SIGINT or SIGTERM.
STANDALONE_CLOSE_TIMEOUT = 3.0
#: Largest xattr value (Linux XATTR_SIZE_MAX), bytes.
XATTR_SIZE_MAX = 65536

_OPATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_U64 = 0xFFFFFFFFFFFFFFFF
_NS = 1_000_000_000
_SETATTR_KNOWN = (
    m.SETATTR_MODE | m.SETATTR_UID | m.SETATTR_GID | m.SETATTR_SIZE | m.SETATTR_ATIME | m.SETATTR_MTIME
    | m.SETATTR_CTIME | m.SETATTR_ATIME_SET | m.SETATTR_MTIME_SET
)
_XATTR_PREFIX = "user."


class _Err(Exception):
    """Answer the request with Rlerror ``errno``."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.errno = err


def _qid(st: os.stat_result) -> Qid:
    fmt = stat.S_IFMT(st.st_mode)
    qtype = m.QTDIR if fmt == stat.S_IFDIR else m.QTSYMLINK if fmt == stat.S_IFLNK else m.QTFILE
    return Qid(qtype, 0, st.st_ino)


def _check_name(name: str) -> None:
    """EINVAL unless ``name`` is one plain directory entry name (gVisor's checkSafeName)."""
    if not name or name == "." or name == ".." or "/" in name or "\0" in name:
        raise _Err(errno.EINVAL)


def _split_ns(ns: int) -> tuple[int, int]:
    sec, nsec = divmod(ns, _NS)
    return sec & _U64, nsec


_DT = {
    stat.S_IFIFO: 1, stat.S_IFCHR: 2, stat.S_IFDIR: 4, stat.S_IFBLK: 6,
    stat.S_IFREG: 8, stat.S_IFLNK: 10, stat.S_IFSOCK: 12,
}


# ---------------------------------------------------------------------------
# statfs(2), which os.statvfs does not fully give (no f_type).
# ---------------------------------------------------------------------------


class _StatFS(ctypes.Structure):
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_uint * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _fstatfs: Callable[..., int] | None = _libc.fstatfs
except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
    _fstatfs = None


def _statfs(fd: int) -> m.Rstatfs:
    if _fstatfs is not None:
        buf = _StatFS()
        if _fstatfs(fd, ctypes.byref(buf)) != 0:
            raise OSError(ctypes.get_errno(), "fstatfs")
        return m.Rstatfs(
            buf.f_type & 0xFFFFFFFF, buf.f_bsize & 0xFFFFFFFF, buf.f_blocks, buf.f_bfree, buf.f_bavail,
            buf.f_files, buf.f_ffree, buf.f_fsid[0] | (buf.f_fsid[1] << 32), buf.f_namelen & 0xFFFFFFFF,
        )
    sv = os.fstatvfs(fd)  # pragma: no cover
    return m.Rstatfs(  # pragma: no cover
        0x01021997, sv.f_bsize, sv.f_blocks, sv.f_bfree, sv.f_bavail, sv.f_files, sv.f_ffree,
        getattr(sv, "f_fsid", 0) & _U64, sv.f_namemax,
    )


# ---------------------------------------------------------------------------
# Fids.
# ---------------------------------------------------------------------------

_FILE, _XATTR_READ, _XATTR_WRITE = 0, 1, 2


class _Fid:
    """What a fid names on one channel.

    ``fd``: an O_PATH|O_NOFOLLOW descriptor of the file (a plain one after
    Tlcreate); ``parent_fd``/``name``: its directory and name there, for the
    operations that need a name (Trename, Tremove, and symlinks), None for
    the root; ``ftype``: S_IFMT of the file, fixed at walk time (a file's
    type never changes); ``open_fd``/``open_acc``: after Tlopen/Tlcreate.
    Descriptors are closed when the fid is clunked and no request uses it.
    """

    __slots__ = (
        "acc", "closed", "dirents", "fd", "ftype", "kind", "lock", "name", "open_fd", "parent_fd", "refs",
        "uid", "xattr_buf", "xattr_flags", "xattr_name", "xattr_size",
    )

    def __init__(self, fd: int, parent_fd: int | None, name: str, ftype: int, uid: int, kind: int = _FILE) -> None:
        self.fd = fd
        self.parent_fd = parent_fd
        self.name = name
        self.ftype = ftype
        self.uid = uid
        self.kind = kind
        self.open_fd: int | None = None
        self.acc = -1
        self.dirents: list[tuple[str, int, int]] | None = None
        self.lock = threading.Lock()
        self.refs = 1  # the fid table's
        self.closed = False
        self.xattr_buf = bytearray()
        self.xattr_name = ""
        self.xattr_size = 0
        self.xattr_flags = 0

    def close_fds(self) -> None:
        for fd in {self.fd, self.parent_fd, self.open_fd}:
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd, self.parent_fd, self.open_fd = -1, None, None


# ---------------------------------------------------------------------------
# Workers.
# ---------------------------------------------------------------------------


class WorkerPool:
    """``size`` daemon threads running submitted callables (daemon, so a
    stuck host call never keeps the process from exiting)."""

    def __init__(self, size: int = DEFAULT_WORKERS, name: str = "gofer-worker") -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least 1 thread, got {size}")
        self._q: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._q.put(fn)

    def _run(self) -> None:
        while True:
            fn = self._q.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # pragma: no cover - handlers catch their own
                log.exception("gofer worker failed")

    def shutdown(self) -> None:
        for _ in self._threads:
            self._q.put(None)


# ---------------------------------------------------------------------------
# The server.
# ---------------------------------------------------------------------------


class Gofer:
    """Serves the folder ``root`` over 9P2000.L on any number of channels.

    ``read_only``: refuse every change with EROFS. ``anames``: extra Tattach
    names that mean the root (besides ``""``, ``"/"`` and the folder's path).
    ``max_msize``: the largest msize agreed in Tversion (bytes, at least
    MIN_MSIZE). ``workers``: threads serving requests, shared by all
    channels. ``use_proc``: re-open walked files through ``/proc/self/fd``
    (else by parent directory and name, checked to be the same inode: ENOENT
    if it was replaced). ``send_timeout``: seconds a reply may wait for the
    peer to read before its channel is closed. ``on_request``: called in the
    serving thread as ``on_request(connection, tag, request)`` just before each
    request (other than Tversion and Tflush) is served, for tracing; an
    exception it raises is logged and ignored.

    ConfigError if ``root`` is not an existing directory.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        read_only: bool = False,
        anames: Iterable[str] = (),
        max_msize: int = DEFAULT_MAX_MSIZE,
        workers: int = DEFAULT_WORKERS,
        use_proc: bool = True,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        on_request: Callable[[GoferConnection, int, m.Request], None] | None = None,
    ) -> None:
        given = os.path.abspath(os.fspath(root))
        self.root = os.path.realpath(given)
        if max_msize < MIN_MSIZE:
            raise ValueError(f"max_msize {max_msize} is below the minimum {MIN_MSIZE}")
        try:
            self.root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ConfigError("no such folder", field="root", file=os.fspath(root)) from None
        except NotADirectoryError:
            raise ConfigError("not a folder", field="root", file=os.fspath(root)) from None
        except OSError as e:
            raise ConfigError(f"cannot open: {e.strerror}", field="root", file=os.fspath(root)) from None
        self.root_stat = os.fstat(self.root_fd)
        self.read_only = read_only
        self.anames = {"", "/", self.root, given.rstrip("/") or "/", *anames}
        self.max_msize = max_msize
        self.send_timeout = send_timeout
        self.on_request = on_request
        self.proc_fd: int | None = None
        if use_proc:
            try:
                self.proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                log.warning("cannot open /proc/self/fd (%s); re-opening files by name", e.strerror)
        self.pool = WorkerPool(workers)
        self._lock = threading.Lock()
        self._connections: set[GoferConnection] = set()
        self._ids = itertools.count(1)
        self._closed = False
        #: Set while the polling thread may serve a request itself; the
        #: watchdog sleeps on it otherwise (no wakeups when idle).
        self._watching = threading.Event()
        # One polling thread (epoll) reads every channel and serves lone
        # requests itself: with a thread per channel, the threads' fight for
        # the GIL (futex calls at every recv/fstat/send) cost more than the
        # requests. ONESHOT: a channel is handled by one thread at a time and
        # re-armed when that thread is done with it.
        self._ep = select.epoll()
        self._by_fd: dict[int, GoferConnection] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._ep.register(self._wake_r, select.EPOLLIN)  # level-triggered: wakes every poller
        self._loop_lock = threading.Lock()
        self._loop = _Loop()
        #: Cleared by close once every channel ended (they need the poller to end).
        self._polling = True
        threading.Thread(target=self._poll, args=(self._loop,), name="gofer-poll-0", daemon=True).start()
        self._watchdog = threading.Thread(target=self._watch, name="gofer-watchdog", daemon=True)
        self._watchdog.start()

    def start(self, sock: socket.socket) -> GoferConnection:
        """Serve the connected stream socket ``sock`` (now owned by the gofer)
        in the background; returns its connection."""
        conn = GoferConnection(self, sock, next(self._ids))
        with self._lock:
            if self._closed:
                sock.close()
                raise RuntimeError("the gofer is closed")
            self._connections.add(conn)
            self._by_fd[conn.fd] = conn
        conn._writer.start()
        self._ep.register(conn.fd, _ARM)
        return conn

    def serve(self, sock: socket.socket) -> None:
        """Serve ``sock`` until the peer closes it (blocking)."""
        self.start(sock).wait()

    def _forget(self, conn: GoferConnection) -> None:
        with self._lock:
            self._connections.discard(conn)
            if self._by_fd.get(conn.fd) is conn:
                del self._by_fd[conn.fd]

    @property
    def connections(self) -> list[GoferConnection]:
        with self._lock:
            return list(self._connections)

    def _arm(self, conn: GoferConnection) -> None:
        """Let the poller report ``conn`` again (it is ONESHOT)."""
        with contextlib.suppress(OSError, ValueError):
            self._ep.modify(conn.fd, _ARM)

    def _poll(self, loop: _Loop) -> None:
        """A polling thread: handle readable channels until the gofer closes
        or the watchdog replaced this thread (``loop.superseded``)."""
        while self._polling:
            try:
                events = self._ep.poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            except (OSError, ValueError):
                return  # the epoll was closed
            if not self._polling:
                break
            loop.batch, loop.index = events, 0
            for i, (fd, _) in enumerate(events):
                loop.index = i + 1
                conn = self._by_fd.get(fd)
                if conn is None:
                    continue  # the wake pipe, or a channel that just ended
                conn._pump(loop)
                if loop.superseded:
                    return
            loop.batch = []
        if self._loop is loop:  # the last poller closes the epoll
            for close in (self._ep.close, functools.partial(os.close, self._wake_r)):
                with contextlib.suppress(OSError):
                    close()

    def _watch(self) -> None:
        """The watchdog: every INLINE_BUDGET, if the polling thread has served
        the same request since the last look (so for at least one budget)
        while someone waits for it (that channel's peer sent more, another
        channel is readable, or channels of its batch are still to do), a new
        polling thread takes over (:meth:`_take_over`). A lone slow request
        with nobody waiting costs nothing."""
        while True:
            self._watching.wait()
            if self._closed:
                return
            time.sleep(INLINE_BUDGET)
            loop = self._loop
            entry = loop.entry
            if entry is None:
                if loop.served != loop.served_seen:
                    loop.served_seen = loop.served  # busy: keep looking
                    continue
                # Idle for a whole tick: sleep until the poller sets
                # _watching again. It sets loop.entry before it looks at
                # _watching, so a request that started meanwhile is seen by
                # this second look.
                self._watching.clear()
                if self._loop.entry is not None:
                    self._watching.set()
                continue
            if loop.watched is not entry:
                loop.watched = entry
                continue
            if self._someone_waits(loop):
                self._take_over(loop, entry)

    def _someone_waits(self, loop: _Loop) -> bool:
        if loop.index < len(loop.batch):
            return True
        p = select.poll()
        try:
            p.register(self._ep.fileno(), select.POLLIN)  # an epoll is readable when it has events
            conn = loop.conn
            if conn is not None:
                p.register(conn.fd, select.POLLIN)
            return bool(p.poll(0))
        except (OSError, ValueError):
            return True

    def _take_over(self, loop: _Loop, entry: _InFlight) -> None:
        """Start a new polling thread in place of ``loop``'s, which serves
        ``entry`` for too long; it ends once that request is answered. A
        pool worker waits for ``entry``, so that it counts against the pool
        like any request a worker serves."""
        with self._loop_lock:
            if loop.entry is not entry:
                return  # it ended meanwhile
            loop.superseded = True
            entry.overdue = done = threading.Event()
            new = self._loop = _Loop(loop.gen + 1)
            # Its channel (nothing of it buffered: see _pump) and the rest of
            # its batch were taken from the epoll; give them back.
            rest = [loop.conn] + [self._by_fd.get(fd) for fd, _ in loop.batch[loop.index :]]
        self.pool.submit(done.wait)
        for conn in rest:
            if conn is not None:
                self._arm(conn)
        threading.Thread(target=self._poll, args=(new,), name=f"gofer-poll-{new.gen}", daemon=True).start()

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Close every channel, stop the workers, close the root. Waits up to
        ``timeout`` seconds in all for the channels to end; one that did not
        (a request stuck in the host) is logged and left to its daemon
        threads."""
        with self._lock:
            self._closed = True
            conns = list(self._connections)
        self._watching.set()  # the watchdog sees _closed and ends
        for c in conns:
            c.close()
        deadline = time.monotonic() + timeout  # for all channels together, not each
        late = [c for c in conns if not c.wait(max(deadline - time.monotonic(), 0))]
        if late:
            log.warning("gofer: %d channel(s) of %s did not end within %g s; leaving them",
                        len(late), self.root, timeout)
        self._polling = False
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")  # the pollers see _polling and end
        self.pool.shutdown()
        for fd in (self.root_fd, self.proc_fd, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> Gofer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_fd(root: str | os.PathLike[str], fd: int, *, read_only: bool = False) -> GoferConnection:
    """Internal mode: serve ``root`` on the connected socket file descriptor
    ``fd`` (one end of the mount's socketpair; now owned by the gofer) in the
    background. ``conn.gofer.close()`` stops it."""
    sock = socket.socket(fileno=fd)
    return Gofer(root, read_only=read_only).start(sock)


_ARM = select.EPOLLIN | select.EPOLLONESHOT


class _Loop:
    """A polling thread's state, for the watchdog. ``entry``/``conn``: the
    request it serves itself now and its channel; ``watched``: the entry the
    watchdog saw last time; ``served``: how many it served; ``batch``/``index``: the epoll events it works
    through and how many it took; ``superseded``: a new polling thread took
    over (this one ends after its request)."""

    __slots__ = ("batch", "conn", "entry", "gen", "index", "served", "served_seen", "superseded", "watched")

    def __init__(self, gen: int = 0) -> None:
        self.gen = gen
        self.entry: _InFlight | None = None
        self.conn: GoferConnection | None = None
        self.watched: _InFlight | None = None
        self.batch: list[tuple[int, int]] = []
        self.index = 0
        self.superseded = False
        #: Requests served so far, and that count at the watchdog's last look.
        self.served = self.served_seen = 0


class _InFlight:
    """One request in flight. ``started``: a thread serves it; ``cancelled``:
    a Tflush dropped it before that; ``flushers``: tags of the Tflushes to
    answer right after its reply; ``overdue``: set by the watchdog when it
    outlived INLINE_BUDGET on the polling thread, and signalled when it ends
    (a pool worker waits on it)."""

    __slots__ = ("cancelled", "flushers", "overdue", "req", "started")

    def __init__(self, req: m.Request, started: bool = False) -> None:
        self.req = req
        self.started = started
        self.cancelled = False
        self.flushers: list[int] | None = None
        self.overdue: threading.Event | None = None


class GoferConnection:
    """One 9P channel of a :class:`Gofer`: its fids, msize and requests in flight.

    The gofer's polling thread reads the channel when it is readable
    (:meth:`_pump`): it serves a request itself when nothing else of the
    channel is in flight, else hands it to the gofer's workers; it stops
    reading the channel (``_paused``) while it has MAX_INFLIGHT requests in
    flight or more than MAX_BACKLOG bytes of replies the peer has not read,
    and a worker resumes it. Replies are never sent blocking: a reply is
    sent with MSG_DONTWAIT, and what does not fit goes to the channel's
    writer thread, so a peer that stops reading stalls only its own channel
    (and loses it after the gofer's ``send_timeout``).
    """

    #: Requests of one channel served at once; the reading pauses beyond that.
    MAX_INFLIGHT = 64
    #: Bytes of unsent replies beyond which the reading pauses.
    MAX_BACKLOG = 4 * 1024 * 1024

    def __init__(self, gofer: Gofer, sock: socket.socket, ident: int) -> None:
        self.gofer = gofer
        self.sock = sock
        self.fd = sock.fileno()
        self.ident = ident
        self.msize = gofer.max_msize
        self.versioned = False
        self.fids: dict[int, _Fid] = {}
        self._inflight: dict[int, _InFlight] = {}
        self._lock = threading.Lock()
        #: Signalled when a request ends or the channel closes (for _drain).
        self._changed = threading.Condition(self._lock)
        #: Signalled when the backlog grows or the channel closes: the writer's
        #: own, so that ending a request does not wake it for nothing.
        self._to_write = threading.Condition(self._lock)
        self._backlog: collections.deque[bytes | memoryview] = collections.deque()
        self._backlog_bytes = 0
        self._closed = False
        self._ended = False
        #: Not armed in the epoll while too much is in flight (see _resume).
        self._paused = False
        self._frames = FrameReader(sock, socket.MSG_DONTWAIT)
        self._done = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name=f"gofer-write-{ident}", daemon=True)
        sock.setblocking(True)
        if gofer.send_timeout:
            sec = int(gofer.send_timeout)
            usec = int((gofer.send_timeout - sec) * 1e6)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", sec, usec))

    def __repr__(self) -> str:
        return f"<9P channel {self.ident} of {self.gofer.root}>"

    # -- lifecycle ---------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the channel is closed and cleaned up; False on timeout."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Close the channel (the peer sees end of stream)."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()
            self._to_write.notify()
            self._resume_if_paused()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _pump(self, loop: _Loop | None) -> None:
        """Read and dispatch every request the socket has, then re-arm the
        channel in the epoll. ``loop``: the polling thread's state, None in
        a worker resuming a paused channel (which serves nothing itself)."""
        reader = self._frames
        gofer = self.gofer
        while True:
            try:
                frame = reader.read_frame(self.msize)
            except BlockingIOError:
                gofer._arm(self)
                return
            except ProtocolError as e:
                log.warning("%r: %s; closing the channel", self, e)
                return self._end()
            except OSError as e:
                if not self._closed:
                    log.info("%r: %s; closing the channel", self, e)
                return self._end()
            if frame is None:
                return self._end()
            mtype, tag, body = frame
            try:
                req = m.decode_body(mtype, tag, body)
            except ProtocolError as e:
                err = errno.ENOSYS if mtype not in m.MESSAGES else errno.EINVAL
                log.warning("%r: %s; answered Rlerror %s", self, e, errno.errorcode[err])
                self._reply(tag, m.Rlerror(err))
                continue
            rtype = type(req)
            if rtype is m.Tversion:
                self._reply(tag, self._version(req))  # type: ignore[arg-type]
                continue
            if rtype is m.Tflush:
                self._flush(tag, req.oldtag)  # type: ignore[attr-defined]
                continue
            if not isinstance(req, m.Request):
                log.warning("%r: a client sent %s; answered Rlerror EINVAL", self, rtype.__name__)
                self._reply(tag, m.Rlerror(errno.EINVAL))
                continue
            with self._lock:
                reused = tag in self._inflight
                stop = self._closed or reused
                if not stop:
                    # Serve it here when it is alone: nothing else of the
                    # channel runs and no further request is buffered. That
                    # saves two thread handoffs per request for a client that
                    # waits for each reply; the watchdog covers a slow one.
                    inline = loop is not None and not self._inflight and not reader.pending()
                    entry = _InFlight(req, started=inline)
                    self._inflight[tag] = entry
            if stop:
                if reused and not self._closed:
                    log.warning("%r: tag %d reused while in flight; closing the channel", self, tag)
                return self._end()
            if inline:
                assert loop is not None
                with gofer._loop_lock:
                    loop.entry, loop.conn = entry, self
                    loop.served += 1
                if not gofer._watching.is_set():  # after setting loop.entry: see Gofer._watch
                    gofer._watching.set()
                self._serve_request(tag, entry)
                with gofer._loop_lock:
                    loop.entry = loop.conn = None
                    moved = loop.superseded
                if moved:
                    # The watchdog gave this channel (and the others) to a
                    # new polling thread, and a worker waits for this request.
                    assert entry.overdue is not None
                    entry.overdue.set()
                    return
            else:
                gofer.pool.submit(functools.partial(self._run, tag, entry))
            with self._lock:
                if len(self._inflight) >= self.MAX_INFLIGHT or self._backlog_bytes > self.MAX_BACKLOG:
                    self._paused = True  # not re-armed: _resume_if_paused does that
                    return

    def _resume_if_paused(self) -> None:
        """Caller holds ``_lock``: a paused channel whose load went down (or
        that closed) is read again, first what is buffered, by a worker."""
        if self._paused and (self._closed or (
            len(self._inflight) < self.MAX_INFLIGHT and self._backlog_bytes <= self.MAX_BACKLOG
        )):
            self._paused = False
            self.gofer.pool.submit(functools.partial(self._pump, None))

    def _end(self) -> None:
        """The reading of the channel ends: clean up in a thread of its own,
        since that waits (bounded) for the requests still running."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        with contextlib.suppress(OSError, ValueError):
            self.gofer._ep.unregister(self.fd)
        threading.Thread(target=self._cleanup, name=f"gofer-end-{self.ident}", daemon=True).start()

    def _cleanup(self) -> None:
        try:
            self.close()
            self._drain()
            self._writer.join(timeout=5)
            with self._lock:
                fids = list(self.fids.values())
                self.fids.clear()
            for f in fids:
                self._unref(f, clunk=True)
            self.gofer._forget(self)
            with contextlib.suppress(OSError):
                self.sock.close()
        finally:
            self._done.set()

    def _drain(self, timeout: float = 10.0) -> None:
        """Drop the queued requests and wait (bounded) for the running ones,
        so that the fids they hold close."""
        deadline = time.monotonic() + timeout
        with self._lock:
            for tag, entry in list(self._inflight.items()):
                if not entry.started:
                    entry.cancelled = True
                    del self._inflight[tag]
            while self._inflight and time.monotonic() < deadline:
                self._changed.wait(0.05)

    # -- replies -------------------------------------------------------------------

    def _frame(self, tag: int, reply: m.Response) -> bytes:
        try:
            frame = m.encode(tag, reply)
        except ProtocolError as e:
            log.warning("%r: cannot encode %s: %s; answered Rlerror EIO", self, type(reply).__name__, e)
            return m.encode(tag, m.Rlerror(errno.EIO))
        if len(frame) > self.msize:
            log.warning("%r: %s of %d bytes exceeds msize %d", self, type(reply).__name__, len(frame), self.msize)
            return m.encode(tag, m.Rlerror(errno.EMSGSIZE))
        return frame

    def _reply(self, tag: int, reply: m.Response) -> None:
        frame = self._frame(tag, reply)
        with self._lock:
            self._post(frame)

    def _post(self, frame: bytes | memoryview) -> None:
        """Send ``frame`` after every earlier one, without blocking (caller
        holds ``_lock``): at once if nothing is waiting and the socket takes
        it, else through the writer."""
        if self._closed:
            return
        if not self._backlog:
            try:
                n = self.sock.send(frame, socket.MSG_DONTWAIT)
            except BlockingIOError:
                n = 0
            except OSError as e:
                log.info("%r: cannot send a reply (%s); closing the channel", self, e.strerror or e)
                self._close_locked()
                return
            if n == len(frame):
                return
            frame = memoryview(frame)[n:]
        self._backlog.append(frame)
        self._backlog_bytes += len(frame)
        self._to_write.notify()

    def _close_locked(self) -> None:
        self._closed = True
        self._changed.notify_all()
        self._to_write.notify()
        self._resume_if_paused()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _write_loop(self) -> None:
        """Send the backlog in order, blocking (up to the send timeout)."""
        while True:
            with self._lock:
                while not self._backlog and not self._closed:
                    self._to_write.wait()
                if self._closed:
                    return
                frame = self._backlog[0]
            try:
                n = self.sock.send(frame)
            except OSError as e:
                reason = "timed out" if isinstance(e, BlockingIOError) else (e.strerror or str(e))
                log.warning("%r: the peer does not read its replies (%s); closing the channel", self, reason)
                with self._lock:
                    self._close_locked()
                return
            with self._lock:
                if n == len(frame):
                    self._backlog.popleft()
                else:
                    self._backlog[0] = memoryview(frame)[n:]
                self._backlog_bytes -= n
                self._resume_if_paused()

    def _run(self, tag: int, entry: _InFlight) -> None:
        """A pool worker's task: serve ``entry`` unless a Tflush dropped it."""
        with self._lock:
            if entry.cancelled:
                return
            entry.started = True
        self._serve_request(tag, entry)

    def _serve_request(self, tag: int, entry: _InFlight) -> None:
        """Serve a started request and queue its reply (in whatever thread)."""
        hook = self.gofer.on_request
        if hook is not None:
            try:
                hook(self, tag, entry.req)
            except Exception:
                log.exception("%r: on_request hook failed", self)
        reply = self._handle(entry.req)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r: tag %d %r -> %r", self, tag, entry.req, reply if not isinstance(
                reply, (m.Rread, m.Rreaddir)) else f"{type(reply).__name__} of {len(reply.data)} bytes")
        frame = self._frame(tag, reply)
        with self._lock:
            # Leave the in-flight table and queue the reply in one step: a
            # Tflush sees the request either before (its Rflush is queued
            # right after this reply) or after (this reply is queued already).
            self._inflight.pop(tag, None)
            self._post(frame)
            if entry.flushers:
                for ftag in entry.flushers:
                    self._post(m.encode(ftag, m.Rflush()))
            self._changed.notify_all()
            self._resume_if_paused()

    def _flush(self, tag: int, oldtag: int) -> None:
        with self._lock:
            old = self._inflight.get(oldtag)
            if old is not None and old.started:
                if old.flushers is None:
                    old.flushers = []
                old.flushers.append(tag)
                return
            if old is not None:
                # Not started: drop it, and it is never answered.
                old.cancelled = True
                del self._inflight[oldtag]
                self._changed.notify_all()
                self._resume_if_paused()
            self._post(m.encode(tag, m.Rflush()))

    # -- fid table ---------------------------------------------------------------------

    def _get(self, fid: int, held: list[_Fid]) -> _Fid:
        with self._lock:
            f = self.fids.get(fid)
            if f is None:
                raise _Err(errno.EBADF)
            f.refs += 1
        held.append(f)
        return f

    def _unref(self, f: _Fid, clunk: bool = False) -> None:
        with self._lock:
            if clunk:
                f.closed = True
            f.refs -= 1
            last = f.refs == 0
        if last:
            f.close_fds()

    def _install(self, fid: int, f: _Fid, replace: int | None = None) -> None:
        """Make ``fid`` name ``f``; EBADF if ``fid`` is taken (unless it is
        ``replace``, whose old file is then dropped)."""
        with self._lock:
            old = self.fids.get(fid)
            if old is not None and fid != replace:
                f.close_fds()
                raise _Err(errno.EBADF)
            self.fids[fid] = f
        if old is not None:
            self._unref(old, clunk=True)

    def _take(self, fid: int) -> _Fid:
        """Remove ``fid`` from the table (its file stays open while in use)."""
        with self._lock:
            f = self.fids.pop(fid, None)
        if f is None:
            raise _Err(errno.EBADF)
        return f

    # -- dispatch -------------------------------------------------------------------

    def _handle(self, req: m.Request) -> m.Response:
        held: list[_Fid] = []
        handler = _HANDLERS.get(type(req))
        try:
            if handler is None:
                raise _Err(errno.ENOSYS)
            if not self.versioned:
                raise _Err(errno.EINVAL)
            return handler(self, req, held)
        except _Err as e:
            return m.Rlerror(e.errno)
        except OSError as e:
            return m.Rlerror(e.errno or errno.EIO)
        except (ValueError, OverflowError):
            # An embedded NUL, an offset past 2**63, ...
            return m.Rlerror(errno.EINVAL)
        except Exception:
            log.exception("%r: %s failed", self, type(req).__name__)
            return m.Rlerror(errno.EIO)
        finally:
            for f in held:
                self._unref(f)

    def _writable(self) -> None:
        if self.gofer.read_only:
            raise _Err(errno.EROFS)

    def _version(self, req: m.Tversion) -> m.Response:
        # Tversion starts a new session: every fid is clunked.
        with self._lock:
            fids = list(self.fids.values())
            self.fids.clear()
        for f in fids:
            self._unref(f, clunk=True)
        if not req.version.startswith(m.VERSION_9P2000L):
            self.versioned = False
            return m.Rversion(min(req.msize, self.gofer.max_msize), m.VERSION_UNKNOWN)
        if req.msize < MIN_MSIZE:
            log.warning("%r: Tversion msize %d is below %d; answered Rlerror EINVAL", self, req.msize, MIN_MSIZE)
            return m.Rlerror(errno.EINVAL)
        self.msize = min(req.msize, self.gofer.max_msize)
        self.versioned = True
        return m.Rversion(self.msize, m.VERSION_9P2000L)

    # -- helpers on files ---------------------------------------------------------------

    def _proc(self, f: _Fid) -> str:
        """A /proc path that reaches ``f``'s inode; never for a symlink."""
        assert f.ftype != stat.S_IFLNK
        return f"/proc/self/fd/{f.fd}"

    def _same(self, f: _Fid) -> None:
        """ENOENT unless ``f``'s parent/name still names ``f``'s inode."""
        if f.parent_fd is None:
            raise _Err(errno.EBUSY)
        st = os.stat(f.name, dir_fd=f.parent_fd, follow_symlinks=False)
        mine = os.fstat(f.fd)
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            raise _Err(errno.ENOENT)

    def _reopen(self, f: _Fid, flags: int) -> int:
        """A new open file description of ``f`` (a regular file or directory)."""
        flags |= os.O_CLOEXEC | os.O_NOCTTY
        proc = self.gofer.proc_fd
        if proc is not None:
            fd = os.open(str(f.fd), flags, dir_fd=proc)
        elif f.parent_fd is None:
            fd = os.open(self.gofer.root, flags | os.O_NOFOLLOW | os.O_DIRECTORY)
        else:
            fd = os.open(f.name, flags | os.O_NOFOLLOW, dir_fd=f.parent_fd)
        st = os.fstat(fd)
        mine = os.fstat(f.fd)
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino) or stat.S_IFMT(st.st_mode) != f.ftype:
            os.close(fd)
            raise _Err(errno.ENOENT)
        return fd

    def _chown_new(self, dirfd: int, name: str, uid: int, gid: int) -> None:
        """Give a new file the client's owner, best effort (only as root)."""
        if os.geteuid() != 0:
            return
        u = -1 if uid == NONUNAME else uid
        g = -1 if gid == NONUNAME else gid
        if u == -1 and g == -1:
            return
        try:
            os.chown(name, u, g, dir_fd=dirfd, follow_symlinks=False)
        except OSError as e:  # pragma: no cover
            log.debug("%r: chown %s: %s", self, name, e)

    def _exact_mode(self, dirfd: int, name: str, mode: int, ftype: int) -> os.stat_result:
        """Give the new ``name`` (of type ``ftype``) exactly ``mode`` whatever the
        process umask (the client applied its own umask already); its stat."""
        fd = os.open(name, _OPATH, dir_fd=dirfd)
        try:
            st = os.fstat(fd)
            if stat.S_IFMT(st.st_mode) != ftype:
                raise _Err(errno.ENOENT)  # replaced under us
            if stat.S_IMODE(st.st_mode) != mode & 0o7777:
                os.chmod(f"/proc/self/fd/{fd}", mode & 0o7777)
                st = os.fstat(fd)
            return st
        finally:
            os.close(fd)

    def _child_qid(self, dirfd: int, name: str) -> Qid:
        return _qid(os.stat(name, dir_fd=dirfd, follow_symlinks=False))

    # -- handlers --------------------------------------------------------------------------

    def h_auth(self, req: m.Tauth, held: list[_Fid]) -> m.Response:
        # diod's clients read ENOENT as "no authentication required".
        raise _Err(errno.ENOENT)

    def h_attach(self, req: m.Tattach, held: list[_Fid]) -> m.Response:
        if req.afid != NOFID:
            raise _Err(errno.EINVAL)
        aname = req.aname
        # Exactly one of the names (a trailing "/" aside); nothing is resolved.
        if aname not in self.gofer.anames and (aname.rstrip("/") or "/") not in self.gofer.anames:
            log.info("%r: Tattach to unknown aname %r", self, aname)
            raise _Err(errno.ENOENT)
        fd = os.dup(self.gofer.root_fd)
        st = os.fstat(fd)
        self._install(req.fid, _Fid(fd, None, "", stat.S_IFDIR, req.n_uname))
        return m.Rattach(_qid(st))

    def h_walk(self, req: m.Twalk, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        if f.kind != _FILE:
            raise _Err(errno.EINVAL)
        for name in req.names:
            _check_name(name)
        if not req.names:
            fd = os.dup(f.fd)
            parent = os.dup(f.parent_fd) if f.parent_fd is not None else None
            self._install(req.newfid, _Fid(fd, parent, f.name, f.ftype, f.uid), replace=req.fid)
            return m.Rwalk(())
        qids: list[Qid] = []
        parent_fd = f.fd  # not ours to close
        cur = f.fd
        owned: list[int] = []
        st: os.stat_result | None = None
        try:
            for i, name in enumerate(req.names):
                try:
                    nfd = os.open(name, _OPATH, dir_fd=cur)
                except OSError:
                    if i == 0:
                        raise
                    return m.Rwalk(tuple(qids))
                owned.append(nfd)
                st = os.fstat(nfd)
                qids.append(_qid(st))
                parent_fd, cur = cur, nfd
            assert st is not None
            new_parent = os.dup(parent_fd) if parent_fd == f.fd else parent_fd
            new = _Fid(cur, new_parent, req.names[-1], stat.S_IFMT(st.st_mode), f.uid)
            # Keep cur and (if we opened it) the parent; close the rest.
            keep = {cur, new_parent}
            for fd in owned:
                if fd not in keep:
                    os.close(fd)
            owned = []
            self._install(req.newfid, new, replace=req.fid)
            return m.Rwalk(tuple(qids))
        finally:
            for fd in owned:
                os.close(fd)

    def h_lopen(self, req: m.Tlopen, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        if f.kind != _FILE:
            raise _Err(errno.EINVAL)
        acc = req.flags & m.DOTL_ACCMODE
        if acc == m.DOTL_NOACCESS:
            raise _Err(errno.EINVAL)
        if (acc != m.DOTL_RDONLY or req.flags & m.DOTL_TRUNC) and self.gofer.read_only:
            raise _Err(errno.EROFS)
        if f.ftype == stat.S_IFLNK:
            raise _Err(errno.ELOOP)
        if f.ftype == stat.S_IFSOCK:
            raise _Err(errno.ENXIO)
        if f.ftype not in (stat.S_IFREG, stat.S_IFDIR):
            raise _Err(errno.EPERM)
        flags = acc
        if f.ftype == stat.S_IFREG and req.flags & m.DOTL_TRUNC:
            flags |= os.O_TRUNC
        if f.ftype == stat.S_IFDIR:
            flags |= os.O_DIRECTORY
        with f.lock:
            if f.open_fd is not None:
                raise _Err(errno.EINVAL)
            fd = self._reopen(f, flags)
            f.open_fd, f.acc = fd, acc
        return m.Rlopen(_qid(os.fstat(fd)), 0)

    def h_lcreate(self, req: m.Tlcreate, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        self._writable()
        _check_name(req.name)
        if f.kind != _FILE or f.open_fd is not None:
            raise _Err(errno.EINVAL)
        acc = req.flags & m.DOTL_ACCMODE
        if acc == m.DOTL_NOACCESS:
            raise _Err(errno.EINVAL)
        flags = acc | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
        if req.flags & m.DOTL_TRUNC:
            flags |= os.O_TRUNC
        with f.lock:
            fd = os.open(req.name, flags, req.mode & 0o7777, dir_fd=f.fd)
            try:
                self._chown_new(f.fd, req.name, f.uid, req.gid)
                st = os.fstat(fd)
                if stat.S_IMODE(st.st_mode) != req.mode & 0o7777:
                    os.fchmod(fd, req.mode & 0o7777)  # exactly, whatever our umask
                    st = os.fstat(fd)
                pathfd = os.dup(fd)
            except BaseException:
                os.close(fd)
                raise
            # The fid now names the new file; its old directory is the parent.
            old_parent = f.parent_fd
            f.parent_fd, f.fd, f.name, f.ftype = f.fd, pathfd, req.name, stat.S_IFREG
            f.open_fd, f.acc, f.dirents = fd, acc, None
        if old_parent is not None:
            os.close(old_parent)
        return m.Rlcreate(_qid(st), 0)

    def h_read(self, req: m.Tread, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        count = min(req.count, self.msize - m.IOHDRSZ)
        if f.kind == _XATTR_READ:
            return m.Rread(bytes(f.xattr_buf[req.offset : req.offset + count]))
        fd = f.open_fd
        if fd is None or f.acc == m.DOTL_WRONLY or f.kind != _FILE:
            raise _Err(errno.EBADF)
        return m.Rread(os.pread(fd, count, req.offset))

    def h_write(self, req: m.Twrite, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        if f.kind == _XATTR_WRITE:
            with f.lock:
                end = req.offset + len(req.data)
                if end > f.xattr_size:
                    raise _Err(errno.ENOSPC)
                if len(f.xattr_buf) < end:
                    f.xattr_buf.extend(bytes(end - len(f.xattr_buf)))
                f.xattr_buf[req.offset : end] = req.data
            return m.Rwrite(len(req.data))
        fd = f.open_fd
        if fd is None or f.acc == m.DOTL_RDONLY or f.kind != _FILE:
            raise _Err(errno.EBADF)
        return m.Rwrite(os.pwrite(fd, req.data, req.offset))

    def h_clunk(self, req: m.Tclunk, held: list[_Fid]) -> m.Response:
        f = self._take(req.fid)
        try:
            if f.kind == _XATTR_WRITE:
                self._commit_xattr(f)
        finally:
            self._unref(f, clunk=True)
        return m.Rclunk()

    def h_remove(self, req: m.Tremove, held: list[_Fid]) -> m.Response:
        f = self._take(req.fid)
        try:
            self._writable()
            if f.kind != _FILE:
                raise _Err(errno.EINVAL)
            with f.lock:
                self._same(f)
                assert f.parent_fd is not None
                if f.ftype == stat.S_IFDIR:
                    os.rmdir(f.name, dir_fd=f.parent_fd)
                else:
                    os.unlink(f.name, dir_fd=f.parent_fd)
        finally:
            self._unref(f, clunk=True)
        return m.Rremove()

    def h_getattr(self, req: m.Tgetattr, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        if f.kind != _FILE:
            raise _Err(errno.EINVAL)
        st = os.fstat(f.fd)
        a_s, a_n = _split_ns(st.st_atime_ns)
        m_s, m_n = _split_ns(st.st_mtime_ns)
        c_s, c_n = _split_ns(st.st_ctime_ns)
        return m.Rgetattr(
            m.GETATTR_BASIC, _qid(st), st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_rdev, st.st_size,
            st.st_blksize, st.st_blocks, a_s, a_n, m_s, m_n, c_s, c_n, 0, 0, 0, 0,
        )

    def h_setattr(self, req: m.Tsetattr, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        if f.kind != _FILE:
            raise _Err(errno.EINVAL)
        valid = req.valid & _SETATTR_KNOWN & ~m.SETATTR_CTIME
        if not valid:
            return m.Rsetattr()
        self._writable()
        link = f.ftype == stat.S_IFLNK
        with f.lock:
            if link:
                self._same(f)
            # As gVisor's fsgofer: try every change, report the last failure.
            error: OSError | None = None
            if valid & m.SETATTR_MODE:
                try:
                    if link:
                        raise OSError(errno.EOPNOTSUPP, "chmod of a symlink")
                    os.chmod(self._proc(f), req.mode & 0o7777)
                except OSError as e:
                    error = e
            if valid & (m.SETATTR_UID | m.SETATTR_GID):
                uid = req.uid if valid & m.SETATTR_UID else -1
                gid = req.gid if valid & m.SETATTR_GID else -1
                try:
                    if link:
                        assert f.parent_fd is not None
                        os.chown(f.name, uid, gid, dir_fd=f.parent_fd, follow_symlinks=False)
                    else:
                        os.chown(self._proc(f), uid, gid)
                except OSError as e:
                    error = e
            if valid & m.SETATTR_SIZE:
                try:
                    if f.ftype == stat.S_IFDIR:
                        raise OSError(errno.EISDIR, "truncate of a directory")
                    if f.ftype != stat.S_IFREG:
                        raise OSError(errno.EINVAL, "truncate of a special file")
                    os.truncate(self._proc(f), req.size)
                except OSError as e:
                    error = e
            if valid & (m.SETATTR_ATIME | m.SETATTR_MTIME):
                try:
                    st = os.fstat(f.fd)
                    now = time.time_ns()
                    atime = st.st_atime_ns
                    mtime = st.st_mtime_ns
                    if valid & m.SETATTR_ATIME:
                        atime = req.atime_sec * _NS + req.atime_nsec if valid & m.SETATTR_ATIME_SET else now
                    if valid & m.SETATTR_MTIME:
                        mtime = req.mtime_sec * _NS + req.mtime_nsec if valid & m.SETATTR_MTIME_SET else now
                    if link:
                        assert f.parent_fd is not None
                        os.utime(f.name, ns=(atime, mtime), dir_fd=f.parent_fd, follow_symlinks=False)
                    else:
                        os.utime(self._proc(f), ns=(atime, mtime))
                except OSError as e:
                    error = e
            if error is not None:
                raise error
        return m.Rsetattr()

    def h_readdir(self, req: m.Treaddir, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        if f.kind != _FILE or f.open_fd is None or f.acc == m.DOTL_WRONLY:
            raise _Err(errno.EBADF)
        if f.ftype != stat.S_IFDIR:
            raise _Err(errno.ENOTDIR)
        limit = min(req.count, self.msize - m.IOHDRSZ)
        with f.lock:
            if req.offset == 0 or f.dirents is None:
                f.dirents = self._list(f.open_fd)
            entries = f.dirents
        out: list[Dirent] = []
        used = 0
        for i in range(req.offset, len(entries)):
            name, ino, ftype = entries[i]
            size = m.dirent_size(name)
            if used + size > limit:
                break
            qtype = m.QTDIR if ftype == stat.S_IFDIR else m.QTSYMLINK if ftype == stat.S_IFLNK else m.QTFILE
            out.append(Dirent(Qid(qtype, 0, ino), i + 1, _DT.get(ftype, 0), name))
            used += size
        if not out and req.offset < len(entries):
            raise _Err(errno.EINVAL)  # count too small for one entry, as getdents(2)
        return m.Rreaddir(m.encode_dirents(out))

    @staticmethod
    def _list(dirfd: int) -> list[tuple[str, int, int]]:
        """``(name, inode, S_IFMT)`` of every entry of the open directory ``dirfd``."""
        os.lseek(dirfd, 0, os.SEEK_SET)
        out = []
        with os.scandir(dirfd) as it:
            for e in it:
                try:
                    if e.is_symlink():
                        ftype = stat.S_IFLNK
                    elif e.is_dir(follow_symlinks=False):
                        ftype = stat.S_IFDIR
                    elif e.is_file(follow_symlinks=False):
                        ftype = stat.S_IFREG
                    else:
                        ftype = stat.S_IFMT(e.stat(follow_symlinks=False).st_mode)
                except OSError:
                    continue  # gone since the listing
                out.append((e.name, e.inode(), ftype))
        return out

    def h_mkdir(self, req: m.Tmkdir, held: list[_Fid]) -> m.Response:
        f = self._get(req.dfid, held)
        self._writable()
        _check_name(req.name)
        os.mkdir(req.name, req.mode & 0o7777, dir_fd=f.fd)
        self._chown_new(f.fd, req.name, f.uid, req.gid)
        return m.Rmkdir(_qid(self._exact_mode(f.fd, req.name, req.mode, stat.S_IFDIR)))

    def h_mknod(self, req: m.Tmknod, held: list[_Fid]) -> m.Response:
        f = self._get(req.dfid, held)
        self._writable()
        _check_name(req.name)
        kind = stat.S_IFMT(req.mode) or stat.S_IFREG
        if kind == stat.S_IFREG:
            os.close(os.open(req.name, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_WRONLY,
                             req.mode & 0o7777, dir_fd=f.fd))
        elif kind == stat.S_IFIFO:
            os.mkfifo(req.name, req.mode & 0o7777, dir_fd=f.fd)
        else:
            raise _Err(errno.EPERM)  # devices and sockets are the sentry's own
        self._chown_new(f.fd, req.name, f.uid, req.gid)
        return m.Rmknod(_qid(self._exact_mode(f.fd, req.name, req.mode, kind)))

    def h_symlink(self, req: m.Tsymlink, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        self._writable()
        _check_name(req.name)
        os.symlink(req.symtgt, req.name, dir_fd=f.fd)
        self._chown_new(f.fd, req.name, f.uid, req.gid)
        return m.Rsymlink(self._child_qid(f.fd, req.name))

    def h_readlink(self, req: m.Treadlink, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        if f.ftype != stat.S_IFLNK or f.kind != _FILE:
            raise _Err(errno.EINVAL)
        return m.Rreadlink(os.readlink("", dir_fd=f.fd))

    def h_link(self, req: m.Tlink, held: list[_Fid]) -> m.Response:
        d = self._get(req.dfid, held)
        f = self._get(req.fid, held)
        self._writable()
        _check_name(req.name)
        if f.kind != _FILE:
            raise _Err(errno.EINVAL)
        if f.ftype == stat.S_IFDIR:
            raise _Err(errno.EPERM)
        if f.ftype == stat.S_IFLNK:
            # /proc/self/fd of a symlink would follow it: link by name instead.
            with f.lock:
                self._same(f)
                assert f.parent_fd is not None
                os.link(f.name, req.name, src_dir_fd=f.parent_fd, dst_dir_fd=d.fd, follow_symlinks=False)
        else:
            os.link(self._proc(f), req.name, dst_dir_fd=d.fd, follow_symlinks=True)
        return m.Rlink()

    def h_rename(self, req: m.Trename, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        d = self._get(req.dfid, held)
        self._writable()
        _check_name(req.name)
        if f.kind != _FILE:
            raise _Err(errno.EINVAL)
        with f.lock:
            self._same(f)
            assert f.parent_fd is not None
            os.rename(f.name, req.name, src_dir_fd=f.parent_fd, dst_dir_fd=d.fd)
            new_parent = os.dup(d.fd)
            os.close(f.parent_fd)
            f.parent_fd, f.name = new_parent, req.name
        return m.Rrename()

    def h_renameat(self, req: m.Trenameat, held: list[_Fid]) -> m.Response:
        old = self._get(req.olddirfid, held)
        new = self._get(req.newdirfid, held)
        self._writable()
        _check_name(req.oldname)
        _check_name(req.newname)
        os.rename(req.oldname, req.newname, src_dir_fd=old.fd, dst_dir_fd=new.fd)
        return m.Rrenameat()

    def h_unlinkat(self, req: m.Tunlinkat, held: list[_Fid]) -> m.Response:
        d = self._get(req.dirfid, held)
        self._writable()
        _check_name(req.name)
        if req.flags & ~m.AT_REMOVEDIR:
            raise _Err(errno.EINVAL)
        if req.flags & m.AT_REMOVEDIR:
            os.rmdir(req.name, dir_fd=d.fd)
        else:
            os.unlink(req.name, dir_fd=d.fd)
        return m.Runlinkat()

    def h_statfs(self, req: m.Tstatfs, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        return _statfs(f.fd)

    def h_fsync(self, req: m.Tfsync, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        fd = f.open_fd
        if fd is None:
            raise _Err(errno.EBADF)
        if req.datasync:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
        return m.Rfsync()

    def h_lock(self, req: m.Tlock, held: list[_Fid]) -> m.Response:
        self._get(req.fid, held)
        if req.lock_type not in (m.LOCK_TYPE_RDLCK, m.LOCK_TYPE_WRLCK, m.LOCK_TYPE_UNLCK):
            raise _Err(errno.EINVAL)
        return m.Rlock(m.LOCK_SUCCESS)

    def h_getlock(self, req: m.Tgetlock, held: list[_Fid]) -> m.Response:
        self._get(req.fid, held)
        return m.Rgetlock(m.LOCK_TYPE_UNLCK, req.start, req.length, req.proc_id, req.client_id)

    def _xattr_name(self, name: str) -> None:
        if "\0" in name:
            raise _Err(errno.EINVAL)
        if not name.startswith(_XATTR_PREFIX) or name == _XATTR_PREFIX:
            raise _Err(errno.EOPNOTSUPP)

    def h_xattrwalk(self, req: m.Txattrwalk, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        if f.kind != _FILE:
            raise _Err(errno.EINVAL)
        if req.name:
            self._xattr_name(req.name)
        link = f.ftype == stat.S_IFLNK
        if not req.name:
            names = [] if link else [n for n in os.listxattr(self._proc(f)) if n.startswith(_XATTR_PREFIX)]
            value = b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names)
        else:
            if link:
                raise _Err(errno.ENODATA)
            value = os.getxattr(self._proc(f), req.name)
        x = _Fid(os.dup(f.fd), None, f.name, f.ftype, f.uid, kind=_XATTR_READ)
        x.xattr_buf = bytearray(value)
        self._install(req.newfid, x, replace=req.fid)
        return m.Rxattrwalk(len(value))

    def h_xattrcreate(self, req: m.Txattrcreate, held: list[_Fid]) -> m.Response:
        f = self._get(req.fid, held)
        self._writable()
        self._xattr_name(req.name)
        if f.kind != _FILE or f.open_fd is not None:
            raise _Err(errno.EINVAL)
        if req.attr_size > XATTR_SIZE_MAX:
            raise _Err(errno.E2BIG)
        if req.flags & ~(m.XATTR_CREATE | m.XATTR_REPLACE):
            raise _Err(errno.EINVAL)
        if f.ftype == stat.S_IFLNK:
            raise _Err(errno.EPERM)  # Linux allows no user.* xattrs on symlinks
        with f.lock:
            f.kind = _XATTR_WRITE
            f.xattr_name, f.xattr_size, f.xattr_flags = req.name, req.attr_size, req.flags
            f.xattr_buf = bytearray()
        return m.Rxattrcreate()

    def _commit_xattr(self, f: _Fid) -> None:
        path = self._proc(f)
        if f.xattr_size == 0:
            os.removexattr(path, f.xattr_name)
            return
        if len(f.xattr_buf) != f.xattr_size:
            raise _Err(errno.EINVAL)
        os.setxattr(path, f.xattr_name, bytes(f.xattr_buf), f.xattr_flags)


_HANDLERS: dict[type[m.Message], Callable[[GoferConnection, Any, list[_Fid]], m.Response]] = {
    m.Tauth: GoferConnection.h_auth,
    m.Tattach: GoferConnection.h_attach,
    m.Twalk: GoferConnection.h_walk,
    m.Tlopen: GoferConnection.h_lopen,
    m.Tlcreate: GoferConnection.h_lcreate,
    m.Tread: GoferConnection.h_read,
    m.Twrite: GoferConnection.h_write,
    m.Tclunk: GoferConnection.h_clunk,
    m.Tremove: GoferConnection.h_remove,
    m.Tgetattr: GoferConnection.h_getattr,
    m.Tsetattr: GoferConnection.h_setattr,
    m.Treaddir: GoferConnection.h_readdir,
    m.Tmkdir: GoferConnection.h_mkdir,
    m.Tmknod: GoferConnection.h_mknod,
    m.Tsymlink: GoferConnection.h_symlink,
    m.Treadlink: GoferConnection.h_readlink,
    m.Tlink: GoferConnection.h_link,
    m.Trename: GoferConnection.h_rename,
    m.Trenameat: GoferConnection.h_renameat,
    m.Tunlinkat: GoferConnection.h_unlinkat,
    m.Tstatfs: GoferConnection.h_statfs,
    m.Tfsync: GoferConnection.h_fsync,
    m.Tlock: GoferConnection.h_lock,
    m.Tgetlock: GoferConnection.h_getlock,
    m.Txattrwalk: GoferConnection.h_xattrwalk,
    m.Txattrcreate: GoferConnection.h_xattrcreate,
}


# ---------------------------------------------------------------------------
# Standalone mode: pyrunsc gofer --serve DIR --listen ADDR.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenAddress:
    """``unix:PATH`` or ``tcp:HOST:PORT`` (HOST may be ``[v6addr]``)."""

    family: str
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, value: str) -> ListenAddress:
        """ConfigError (field ``--listen``) unless ``value`` is one of the two forms."""
        usage = f"expected unix:PATH or tcp:HOST:PORT, got {value!r}"
        kind, sep, rest = value.partition(":")
        if not sep or not rest:
            raise ConfigError(usage, field="--listen")
        if kind == "unix":
            return cls("unix", path=rest)
        if kind == "tcp":
            host, sep, port_s = rest.rpartition(":")
            if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
                raise ConfigError(usage + " (PORT is 0 to 65535)", field="--listen")
            return cls("tcp", host=host.strip("[]"), port=int(port_s))
        raise ConfigError(usage, field="--listen")

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


class Listener:
    """A listening socket whose connections a :class:`Gofer` serves.

    ``bind`` raises ConfigError for an address in use or a unix socket path
    that exists (not removed: it may be another server's); :meth:`close`
    removes the unix socket file it made.
    """

    def __init__(self, gofer: Gofer, address: ListenAddress, backlog: int = 64) -> None:
        self.gofer = gofer
        self.requested = address
        self._unix_ino: tuple[int, int] | None = None
        if address.family == "unix":
            if os.path.lexists(address.path):
                raise ConfigError("already exists; remove it first", field="--listen", file=address.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(address.path)
            except OSError as e:
                sock.close()
                raise ConfigError(f"cannot listen: {e.strerror}", field="--listen", file=address.path) from None
            st = os.stat(address.path)
            self._unix_ino = (st.st_dev, st.st_ino)
            self.address = address
        else:
            try:
                infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise ConfigError(f"unknown host {address.host!r}: {e.strerror}", field="--listen") from None
            af, _, _, _, sa = infos[0]
            sock = socket.socket(af, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sa)
            except OSError as e:
                sock.close()
                raise ConfigError(f"cannot listen on {address}: {e.strerror}", field="--listen") from None
            host, port = sock.getsockname()[:2]
            self.address = ListenAddress("tcp", host=host, port=port)
        sock.listen(backlog)
        self.sock = sock

    def serve_forever(self, until: int | None = None) -> None:
        """Accept connections until the file descriptor ``until`` is readable
        (the standalone gofer gives its signal wakeup pipe) or the listener is
        closed."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if until is not None:
            poller.register(until, select.POLLIN)
        self.sock.setblocking(False)  # what poll said was there may be gone
        while True:
            ready = [fd for fd, _ in poller.poll()]
            if until in ready:
                return
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                continue
            except OSError as e:
                if self.sock.fileno() < 0:
                    return
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED):
                    log.warning("cannot accept a connection on %s: %s", self.address, e.strerror)
                    time.sleep(0.1)
                    continue
                raise
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.gofer.start(conn)

    def close(self) -> None:
        """Stop listening and remove the unix socket file if it is still ours."""
        self.sock.close()
        if self._unix_ino is not None:
            try:
                st = os.stat(self.address.path)
                if (st.st_dev, st.st_ino) == self._unix_ino:
                    os.unlink(self.address.path)
            except OSError:
                pass
            self._unix_ino = None


def _stop_signal(signum: int, frame: object) -> None:
    """SIGINT's and SIGTERM's handler in ``pyrunsc gofer``: nothing to do
    here, the signal's number in the wakeup pipe stops the serving."""


def _raise_nofile_limit() -> None:
    """Each fid holds one or two descriptors: allow as many as the hard limit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover
        pass


@click.command("gofer")
@click.option("--serve", "serve_dir", required=True, metavar="DIR",
              help="The folder to serve; no walk ever leaves it.")
@click.option("--listen", "listen", required=True, metavar="ADDR",
              help="unix:PATH or tcp:HOST:PORT (bind to loopback unless you mean it).")
@click.option("--read-only", is_flag=True, help="Refuse every change with EROFS.")
@click.option("--aname", "anames", multiple=True, metavar="NAME",
              help="Also attach NAME to the root (besides '', '/' and DIR), e.g. 'ctl' for diodload.")
@click.option("--msize", type=int, default=DEFAULT_MAX_MSIZE, show_default=True,
              help="Largest msize to agree to, in bytes.")
@click.option("--workers", type=int, default=DEFAULT_WORKERS, show_default=True,
              help="Threads serving requests.")
def gofer_command(serve_dir: str, listen: str, read_only: bool, anames: tuple[str, ...], msize: int,
                  workers: int) -> None:
    """Serve a folder over 9P2000.L (standalone gofer), confined to it, until Ctrl-C."""
    if msize < MIN_MSIZE or msize > 0xFFFFFFFF:
        raise ConfigError(f"must be {MIN_MSIZE} to {0xFFFFFFFF} bytes, got {msize}", field="--msize")
    if workers < 1:
        raise ConfigError(f"must be at least 1, got {workers}", field="--workers")
    address = ListenAddress.parse(listen)
    path = Path(serve_dir)
    if not path.exists():
        raise ConfigError("no such folder", field="--serve", file=serve_dir)
    if not path.is_dir():
        raise ConfigError("not a folder", field="--serve", file=serve_dir)
    _raise_nofile_limit()
    gofer = Gofer(path, read_only=read_only, anames=anames, max_msize=msize, workers=workers)
    # Ctrl-C and kill(1) send a process-directed signal, which the kernel
    # gives to any thread that does not block it: one of the gofer's may take
    # it first (each pthread_create briefly blocks and unblocks signals), and
    # Python then only flags it for the main thread, whose accept() it does not
    # interrupt. So the main thread waits on the listening socket and on a
    # wakeup pipe, which gets the signal's number from whichever thread took it.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    # Handlers explicitly: a shell without job control starts background jobs
    # with SIGINT ignored, and Python then leaves it ignored. They stay until
    # the end, so another Ctrl-C does not break the (bounded) shutdown.
    old_int = signal.signal(signal.SIGINT, _stop_signal)
    old_term = signal.signal(signal.SIGTERM, _stop_signal)
    listener: Listener | None = None
    try:
        listener = Listener(gofer, address)
        mode = "read-only" if read_only else "read-write"
        click.echo(f"pyrunsc gofer: serving {gofer.root} ({mode}) on {listener.address}", err=True)
        listener.serve_forever(until=wake_r)
    except OSError as e:
        raise PyrunscError(f"gofer: {e}") from e
    finally:
        if listener is not None:
            listener.close()
        # A channel whose request is stuck in the host (a hung filesystem)
        # must not keep a stopped gofer alive: it is left to its daemon threads.
        gofer.close(timeout=STANDALONE_CLOSE_TIMEOUT)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
    click.echo("pyrunsc gofer: stopped", err=True)


# ---------------------------------------------------------------------------
# Internal mode: the gofer start_gofer forks serves its inherited channels.
# ---------------------------------------------------------------------------


def serve_channels(channels: Iterable[tuple[int, bool, str]]) -> None:
    """Internal mode's main: serve each ``(fd, read_only, folder)`` -- a
    connected socket inherited from ``pyrunsc run``, one per mount, root
    first -- with its own :class:`Gofer`, and return once every channel has
    closed (the sandbox exited or dropped its mounts), so the gofer never
    outlives the sandbox. A folder that cannot be served closes its channel
    at once (the sandbox then fails that mount with EIO) and is logged; the
    others are still served. SIGINT and SIGHUP are ignored: a Ctrl-C at the
    terminal is the container's, which the sandbox forwards; SIGTERM ends it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _raise_nofile_limit()
    gofers: list[Gofer] = []
    conns: list[GoferConnection] = []
    try:
        for fd, read_only, folder in channels:
            sock = socket.socket(fileno=fd)
            try:
                g = Gofer(folder, read_only=read_only)
            except (ConfigError, OSError) as e:
                log.error("gofer: cannot serve %s on fd %d: %s", folder, fd, e)
                sock.close()
                continue
            gofers.append(g)
            conns.append(g.start(sock))
        for c in conns:
            c.wait()
    finally:
        for g in gofers:
            g.close()
