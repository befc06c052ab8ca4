"""A synchronous, thread-safe 9P2000.L client on one connected socket.

::

    client = Client(sock)            # starts the reader thread
    client.version()                 # Tversion: negotiates msize
    root = client.alloc_fid()
    client.attach(root, aname="/")   # Tattach
    f, _ = client.walk_new(root, ["etc", "hostname"])
    client.lopen(f, DOTL_RDONLY)
    data = client.read(f, 0, 4096)
    client.clunk(f)

Any number of threads may call it at once: each request gets a free tag
(0..0xFFFE; Tversion uses NOTAG), requests go out under one send lock, and a
reader thread hands each reply to the request of its tag, so replies may come
in any order. :meth:`Client.send` returns a :class:`Pending` without waiting,
for several requests in flight from one thread, or to :meth:`Client.flush`.

Errors: an Rlerror reply raises :class:`P9Error` (an :class:`OSError` whose
``errno`` is the server's); a reply of the wrong type or a malformed frame
raises ProtocolError and closes the connection (a server that breaks the
protocol once cannot be trusted on that channel again); a closed connection
raises :class:`ConnectionError`; no reply within ``timeout`` seconds raises
:class:`TimeoutError`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import TypeVar

from . import messages as m
from .messages import NOFID, NONUNAME, NOTAG, Dirent, Fid, ProtocolError, Qid, Tag
from .transport import FrameReader

log = logging.getLogger("pyrunsc.p9.client")

#: The msize a client asks for unless told otherwise (bytes), as Linux's
#: default for ``trans=fd``.
DEFAULT_MSIZE = 512 * 1024

R = TypeVar("R", bound=m.Response)


class P9Error(OSError):
    """An Rlerror reply: ``errno`` is the server's Linux errno."""

    def __init__(self, ecode: int, request: str = "") -> None:
        super().__init__(ecode, os.strerror(ecode) if ecode else "error 0")
        self.request = request

    def __str__(self) -> str:
        where = f"{self.request}: " if self.request else ""
        name = errno.errorcode.get(self.errno or 0, str(self.errno))
        return f"{where}{name}: {self.strerror}"


class Pending:
    """One request in flight: its ``tag`` and, once answered, its reply."""

    __slots__ = ("_done", "_error", "_reply", "flush_of", "request", "tag")

    def __init__(self, tag: Tag, request: m.Request) -> None:
        self.tag = tag
        self.request = request
        self._done = threading.Event()
        self._reply: m.Response | None = None
        self._error: BaseException | None = None
        #: For a Tflush: the request it flushes.
        self.flush_of: Pending | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _finish(self, reply: m.Response | None, error: BaseException | None = None) -> None:
        if not self._done.is_set():
            self._reply, self._error = reply, error
            self._done.set()

    def result(self, timeout: float | None = None) -> m.Response:
        """The reply, waiting at most ``timeout`` seconds (None: forever).

        P9Error for Rlerror (EINTR if the request was flushed before it was
        answered); ConnectionError or ProtocolError if the channel failed;
        TimeoutError if no reply came in time.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"no reply to {type(self.request).__name__} (tag {self.tag}) in {timeout} s")
        if self._error is not None:
            raise self._error
        reply = self._reply
        assert reply is not None
        if isinstance(reply, m.Rlerror):
            raise P9Error(reply.ecode, type(self.request).__name__)
        return reply


class Client:
    """A 9P2000.L client on ``sock`` (a connected stream socket it now owns).

    ``msize``: the largest frame to ask for in :meth:`version` (bytes).
    ``timeout``: seconds to wait for each reply (None: forever).
    """

    def __init__(self, sock: socket.socket, *, msize: int = DEFAULT_MSIZE, timeout: float | None = None) -> None:
        self.sock = sock
        self.timeout = timeout
        #: The negotiated msize (bytes); the asked-for one until Rversion.
        self.msize = msize
        self.version_string = ""
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._tags_free = threading.Condition(self._lock)
        self._pending: dict[Tag, Pending] = {}
        self._next_tag = 0
        self._next_fid = 0
        self._free_fids: list[Fid] = []
        self._closed: BaseException | None = None
        self._reader = FrameReader(sock)
        self._thread = threading.Thread(target=self._read_loop, name="p9-client-reader", daemon=True)
        self._thread.start()

    # -- plumbing ----------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; requests still in flight fail with ConnectionError."""
        self._fail(ConnectionError("9P channel closed"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.sock.close()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = error
            pending = list(self._pending.values())
            self._pending.clear()
            self._tags_free.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        for p in pending:
            p._finish(None, error)

    def _alloc_tag(self, request: m.Request) -> Pending:
        with self._lock:
            while True:
                if self._closed is not None:
                    raise ConnectionError(f"9P channel closed: {self._closed}")
                if isinstance(request, m.Tversion):
                    if NOTAG not in self._pending:
                        tag = NOTAG
                        break
                elif len(self._pending) < NOTAG:
                    tag = self._next_tag
                    while tag in self._pending:
                        tag = (tag + 1) % NOTAG
                    self._next_tag = (tag + 1) % NOTAG
                    break
                self._tags_free.wait()
            p = Pending(tag, request)
            self._pending[tag] = p
            return p

    def _release(self, p: Pending) -> None:
        """Forget ``p``'s tag (caller holds ``_lock``)."""
        if self._pending.get(p.tag) is p:
            del self._pending[p.tag]
            self._tags_free.notify()

    def send(self, request: m.Request, *, flush_of: Pending | None = None) -> Pending:
        """Send ``request`` under a fresh tag without waiting for the reply.

        ValueError if the frame would exceed msize; ProtocolError if a field
        does not fit; ConnectionError if the channel is closed.
        """
        p = self._alloc_tag(request)
        p.flush_of = flush_of
        try:
            frame = m.encode(p.tag, request)
            if len(frame) > self.msize:
                raise ValueError(f"{type(request).__name__} of {len(frame)} bytes exceeds msize {self.msize}")
        except BaseException:
            with self._lock:
                self._release(p)
            raise
        try:
            with self._send_lock:
                self.sock.sendall(frame)
        except OSError as e:
            error = ConnectionError(f"9P channel failed: {e}")
            self._fail(error)
            raise error from e
        return p

    def rpc(self, request: m.Request, expect: type[R]) -> R:
        """Send ``request`` and wait for its reply, which must be an ``expect``
        (else ProtocolError and the channel is closed); P9Error for Rlerror."""
        reply = self.send(request).result(self.timeout)
        if not isinstance(reply, expect):
            error = ProtocolError(f"{type(request).__name__} answered with {type(reply).__name__}")
            self._fail(error)
            raise error
        return reply

    def _read_loop(self) -> None:
        error: BaseException
        try:
            while True:
                # The server may use any msize up to what we asked for.
                frame = self._reader.read_frame(self.msize)
                if frame is None:
                    error = ConnectionError("9P server closed the channel")
                    break
                mtype, tag, body = frame
                reply = m.decode_body(mtype, tag, body)
                if not isinstance(reply, m.Response):
                    raise ProtocolError(f"server sent a request, {type(reply).__name__}", tag=tag, mtype=mtype)
                with self._lock:
                    p = self._pending.get(tag)
                    if p is None:
                        raise ProtocolError(f"reply {type(reply).__name__} to tag {tag}, which is not in flight")
                    self._release(p)
                    old = p.flush_of
                    if old is not None and isinstance(reply, m.Rflush) and not old.done:
                        # Rflush before the old reply: the old request is gone.
                        self._release(old)
                    else:
                        old = None
                p._finish(reply)
                if old is not None:
                    old._finish(None, P9Error(errno.EINTR, f"{type(old.request).__name__} (flushed)"))
        except ProtocolError as e:
            log.warning("9P protocol error from the server, closing the channel: %s", e)
            error = e
        except OSError as e:
            error = ConnectionError(f"9P channel failed: {e}")
        self._fail(error)

    # -- fids -----------------------------------------------------------------

    def alloc_fid(self) -> Fid:
        """A fid number not in use on this channel (the caller makes it live
        with attach, walk or xattrwalk, and ends it with clunk or remove)."""
        with self._lock:
            if self._free_fids:
                return self._free_fids.pop()
            fid = self._next_fid
            self._next_fid += 1
            return fid

    def free_fid(self, fid: Fid) -> None:
        """Give back a fid number from :meth:`alloc_fid` that is not live."""
        with self._lock:
            self._free_fids.append(fid)

    # -- messages ---------------------------------------------------------------

    def version(self, msize: int | None = None, version: str = m.VERSION_9P2000L) -> m.Rversion:
        """Tversion: negotiate ``msize`` (bytes) and the protocol. P9Error
        (EPROTONOSUPPORT) if the server answers "unknown"."""
        reply = self.rpc(m.Tversion(msize or self.msize, version), m.Rversion)
        if reply.version != version:
            raise P9Error(errno.EPROTONOSUPPORT, f"Tversion {version!r} (server said {reply.version!r})")
        if reply.msize > (msize or self.msize):
            error = ProtocolError(f"Rversion msize {reply.msize} is above the {msize or self.msize} asked for")
            self._fail(error)
            raise error
        self.msize = reply.msize
        self.version_string = reply.version
        return reply

    @property
    def iounit(self) -> int:
        """Most payload bytes per Tread/Twrite: ``msize - IOHDRSZ``."""
        return self.msize - m.IOHDRSZ

    def auth(self, afid: Fid, aname: str = "", uname: str = "", n_uname: int = NONUNAME) -> Qid:
        return self.rpc(m.Tauth(afid, uname, aname, n_uname), m.Rauth).aqid

    def attach(
        self, fid: Fid, aname: str = "", uname: str = "", n_uname: int = NONUNAME, afid: Fid = NOFID
    ) -> Qid:
        """Tattach: make ``fid`` the root of ``aname``; its qid."""
        return self.rpc(m.Tattach(fid, afid, uname, aname, n_uname), m.Rattach).qid

    def walk(self, fid: Fid, newfid: Fid, names: Sequence[str]) -> list[Qid]:
        """Twalk: the qids of the names walked, fewer than ``names`` if the walk
        stopped early (then ``newfid`` was not made). More than MAXWELEM names
        are walked in several Twalks from ``newfid``."""
        names = list(names)
        if len(names) <= m.MAXWELEM:
            return list(self.rpc(m.Twalk(fid, newfid, tuple(names)), m.Rwalk).qids)
        qids: list[Qid] = []
        src = fid
        for i in range(0, len(names), m.MAXWELEM):
            part = names[i : i + m.MAXWELEM]
            got = list(self.rpc(m.Twalk(src, newfid, tuple(part)), m.Rwalk).qids)
            qids += got
            if len(got) < len(part):
                if src == newfid and newfid != fid:
                    self.clunk(newfid, free=False)
                break
            src = newfid
        return qids

    def walk_new(self, fid: Fid, names: Sequence[str]) -> tuple[Fid, list[Qid]]:
        """Walk ``names`` from ``fid`` to a new fid: ``(newfid, qids)``. P9Error
        ENOENT if the walk stopped early, as Linux's client treats it."""
        newfid = self.alloc_fid()
        try:
            qids = self.walk(fid, newfid, names)
        except BaseException:
            self.free_fid(newfid)
            raise
        if len(qids) < len(names):
            self.free_fid(newfid)
            raise P9Error(errno.ENOENT, f"Twalk {'/'.join(names)!r} (stopped after {len(qids)})")
        return newfid, qids

    def clone(self, fid: Fid) -> Fid:
        """A new fid for the same file (Twalk with no names)."""
        newfid, _ = self.walk_new(fid, [])
        return newfid

    def lopen(self, fid: Fid, flags: int) -> tuple[Qid, int]:
        """Tlopen: ``(qid, iounit)``."""
        r = self.rpc(m.Tlopen(fid, flags), m.Rlopen)
        return r.qid, r.iounit

    def lcreate(self, fid: Fid, name: str, flags: int, mode: int, gid: int = NONUNAME) -> tuple[Qid, int]:
        """Tlcreate: create and open ``name`` in ``fid``; ``fid`` names it after."""
        r = self.rpc(m.Tlcreate(fid, name, flags, mode, gid), m.Rlcreate)
        return r.qid, r.iounit

    def read(self, fid: Fid, offset: int, count: int) -> bytes:
        """Tread: at most ``count`` bytes (capped to iounit) at ``offset``."""
        data = self.rpc(m.Tread(fid, offset, min(count, self.iounit)), m.Rread).data
        if len(data) > count:
            raise ProtocolError(f"Rread of {len(data)} bytes for a count of {count}")
        return data

    def read_all(self, fid: Fid, offset: int = 0) -> bytes:
        """Tread from ``offset`` until an empty Rread."""
        out: list[bytes] = []
        while True:
            data = self.read(fid, offset, self.iounit)
            if not data:
                return b"".join(out)
            out.append(data)
            offset += len(data)

    def write(self, fid: Fid, offset: int, data: bytes) -> int:
        """Twrite: bytes written (at most iounit per call)."""
        return self.rpc(m.Twrite(fid, offset, bytes(data[: self.iounit])), m.Rwrite).count

    def write_all(self, fid: Fid, offset: int, data: bytes) -> int:
        done = 0
        while done < len(data):
            n = self.write(fid, offset + done, data[done:])
            if n <= 0:
                raise P9Error(errno.EIO, "Twrite wrote nothing")
            done += n
        return done

    def clunk(self, fid: Fid, *, free: bool = True) -> None:
        """Tclunk; ``fid`` is free again whatever the reply (9P)."""
        try:
            self.rpc(m.Tclunk(fid), m.Rclunk)
        finally:
            if free:
                self.free_fid(fid)

    def remove(self, fid: Fid) -> None:
        """Tremove; ``fid`` is clunked whatever the reply (9P)."""
        try:
            self.rpc(m.Tremove(fid), m.Rremove)
        finally:
            self.free_fid(fid)

    def getattr(self, fid: Fid, request_mask: int = m.GETATTR_ALL) -> m.Rgetattr:
        return self.rpc(m.Tgetattr(fid, request_mask), m.Rgetattr)

    def setattr(
        self,
        fid: Fid,
        valid: int,
        *,
        mode: int = 0,
        uid: int = 0,
        gid: int = 0,
        size: int = 0,
        atime: tuple[int, int] = (0, 0),
        mtime: tuple[int, int] = (0, 0),
    ) -> None:
        """Tsetattr of the fields named by ``valid`` (SETATTR_*); times are
        ``(seconds, nanoseconds)``."""
        self.rpc(m.Tsetattr(fid, valid, mode, uid, gid, size, *atime, *mtime), m.Rsetattr)

    def readdir(self, fid: Fid, offset: int, count: int | None = None) -> list[Dirent]:
        """Treaddir: the dirents after cookie ``offset`` that fit ``count`` bytes."""
        data = self.rpc(m.Treaddir(fid, offset, min(count or self.iounit, self.iounit)), m.Rreaddir).data
        return m.decode_dirents(data)

    def readdir_all(self, fid: Fid) -> list[Dirent]:
        """Every dirent of the opened directory ``fid``."""
        out: list[Dirent] = []
        offset = 0
        while True:
            got = self.readdir(fid, offset)
            if not got:
                return out
            out += got
            offset = got[-1].offset

    def mkdir(self, dfid: Fid, name: str, mode: int, gid: int = NONUNAME) -> Qid:
        return self.rpc(m.Tmkdir(dfid, name, mode, gid), m.Rmkdir).qid

    def mknod(self, dfid: Fid, name: str, mode: int, major: int = 0, minor: int = 0, gid: int = NONUNAME) -> Qid:
        return self.rpc(m.Tmknod(dfid, name, mode, major, minor, gid), m.Rmknod).qid

    def symlink(self, fid: Fid, name: str, target: str, gid: int = NONUNAME) -> Qid:
        return self.rpc(m.Tsymlink(fid, name, target, gid), m.Rsymlink).qid

    def readlink(self, fid: Fid) -> str:
        return self.rpc(m.Treadlink(fid), m.Rreadlink).target

    def link(self, dfid: Fid, fid: Fid, name: str) -> None:
        self.rpc(m.Tlink(dfid, fid, name), m.Rlink)

    def rename(self, fid: Fid, dfid: Fid, name: str) -> None:
        self.rpc(m.Trename(fid, dfid, name), m.Rrename)

    def renameat(self, olddirfid: Fid, oldname: str, newdirfid: Fid, newname: str) -> None:
        self.rpc(m.Trenameat(olddirfid, oldname, newdirfid, newname), m.Rrenameat)

    def unlinkat(self, dirfid: Fid, name: str, flags: int = 0) -> None:
        self.rpc(m.Tunlinkat(dirfid, name, flags), m.Runlinkat)

    def statfs(self, fid: Fid) -> m.Rstatfs:
        return self.rpc(m.Tstatfs(fid), m.Rstatfs)

    def fsync(self, fid: Fid, datasync: int = 0) -> None:
        self.rpc(m.Tfsync(fid, datasync), m.Rfsync)

    def flush(self, pending: Pending | Tag) -> None:
        """Tflush: abort ``pending`` (or the request of that tag). Returns
        after Rflush; the old request then has its reply, or fails with
        P9Error EINTR if the server dropped it."""
        if isinstance(pending, Pending):
            old: Pending | None = pending
            oldtag = pending.tag
        else:
            oldtag = pending
            with self._lock:
                old = self._pending.get(oldtag)
        p = self.send(m.Tflush(oldtag), flush_of=old)
        reply = p.result(self.timeout)
        if not isinstance(reply, m.Rflush):
            raise ProtocolError(f"Tflush answered with {type(reply).__name__}")

    def lock(
        self, fid: Fid, lock_type: int, *, flags: int = 0, start: int = 0, length: int = 0,
        proc_id: int = 0, client_id: str = "",
    ) -> int:
        """Tlock: the status (LOCK_SUCCESS, ...)."""
        return self.rpc(m.Tlock(fid, lock_type, flags, start, length, proc_id, client_id), m.Rlock).status

    def getlock(
        self, fid: Fid, lock_type: int, *, start: int = 0, length: int = 0, proc_id: int = 0, client_id: str = ""
    ) -> m.Rgetlock:
        return self.rpc(m.Tgetlock(fid, lock_type, start, length, proc_id, client_id), m.Rgetlock)

    def xattrwalk(self, fid: Fid, newfid: Fid, name: str = "") -> int:
        """Txattrwalk: the value's size in bytes; read it from ``newfid``."""
        return self.rpc(m.Txattrwalk(fid, newfid, name), m.Rxattrwalk).size

    def xattrcreate(self, fid: Fid, name: str, attr_size: int, flags: int = 0) -> None:
        self.rpc(m.Txattrcreate(fid, name, attr_size, flags), m.Rxattrcreate)

    # -- conveniences ---------------------------------------------------------------

    def getxattr(self, fid: Fid, name: str) -> bytes:
        """The value of xattr ``name`` of ``fid`` (Txattrwalk, Tread, Tclunk)."""
        x = self.alloc_fid()
        try:
            size = self.xattrwalk(fid, x, name)
        except BaseException:
            self.free_fid(x)
            raise
        try:
            data = self.read_all(x) if size else b""
        finally:
            self.clunk(x)
        return data

    def listxattr(self, fid: Fid) -> list[str]:
        raw = self.getxattr(fid, "")
        return [n.decode("utf-8", "surrogateescape") for n in raw.split(b"\0") if n]

    def setxattr(self, fid: Fid, name: str, value: bytes, flags: int = 0) -> None:
        """Set xattr ``name`` of ``fid`` (Txattrcreate on a clone, Twrite, Tclunk)."""
        x = self.clone(fid)
        try:
            self.xattrcreate(x, name, len(value), flags)
            if value:
                self.write_all(x, 0, value)
        except BaseException:
            with contextlib.suppress(P9Error, ConnectionError):
                self.clunk(x)
            raise
        self.clunk(x)

    def walk_path(self, fid: Fid, path: str) -> Fid:
        """A new fid for ``path`` (split on "/", empty parts dropped) from ``fid``."""
        return self.walk_new(fid, [p for p in path.split("/") if p])[0]

    def clunk_all(self, fids: Iterable[Fid]) -> None:
        for f in fids:
            with contextlib.suppress(P9Error):
                self.clunk(f)
