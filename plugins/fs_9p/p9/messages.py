"""9P2000.L messages: typed classes, an encoder and a decoder.

Wire format (Linux ``net/9p/protocol.c``, diod's ``protocol.md``): every
message is ``size[4] type[1] tag[2] body``, little-endian, ``size`` counting
itself. Strings are ``len[2]`` then that many bytes (UTF-8 in practice; any
bytes are kept through ``surrogateescape``, as :func:`os.fsdecode` does, so a
Linux file name always round-trips). A qid is ``type[1] version[4] path[8]``.

Every T and R message of 9P2000.L has a dataclass here, named as in Linux's
``include/net/9p/9p.h`` (``Twalk``, ``Rlopen``, ...), with its fields in wire
order. ``type`` is the message number (``Tversion.type == 100``; R = T + 1).

- :func:`encode` ``(tag, message) -> bytes`` gives a whole frame;
- :func:`decode` ``(frame) -> (tag, message)`` takes a whole frame;
- :func:`decode_body` ``(type, tag, body) -> message`` takes what follows the
  header, for readers that have already split the frame
  (:class:`~pyrunsc.plugins.fs_9p.p9.transport.FrameReader`).

Anything that is not a well-formed message -- a frame shorter than its header,
a size field that disagrees with the frame, an unknown type, a body that ends
early or has bytes left over, a count or string length that points past the
end, more than 16 walk elements -- raises :class:`ProtocolError` and nothing
else; so does encoding a value that does not fit its field.

Fixed-size runs of fields are packed and unpacked with one precompiled
:class:`struct.Struct` each.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple, TypeAlias, TypeVar

#: A 16-bit request tag; :data:`NOTAG` is for Tversion.
Tag: TypeAlias = int
#: A 32-bit file identifier chosen by the client; :data:`NOFID` means none.
Fid: TypeAlias = int

NOTAG: Tag = 0xFFFF
NOFID: Fid = 0xFFFFFFFF
#: ``n_uname`` of Tattach/Tauth when the client gives no numeric user.
NONUNAME = 0xFFFFFFFF
#: Most names one Twalk may carry (and qids one Rwalk may return).
MAXWELEM = 16
#: Bytes of a frame that are not payload in Tread/Rread/Twrite (Linux
#: ``P9_IOHDRSZ``): at most ``msize - IOHDRSZ`` bytes move per request.
IOHDRSZ = 24
#: Smallest frame: size[4] type[1] tag[2].
HEADER_SIZE = 7
VERSION_9P2000L = "9P2000.L"
#: Rversion's version string when the server does not speak the client's.
VERSION_UNKNOWN = "unknown"

# Qid types (Linux ``enum p9_qid_t``).
QTDIR = 0x80
QTAPPEND = 0x40
QTEXCL = 0x20
QTMOUNT = 0x10
QTAUTH = 0x08
QTTMP = 0x04
QTSYMLINK = 0x02
QTLINK = 0x01
QTFILE = 0x00

# Tgetattr request_mask / Rgetattr valid bits (``P9_STATS_*``).
GETATTR_MODE = 0x1
GETATTR_NLINK = 0x2
GETATTR_UID = 0x4
GETATTR_GID = 0x8
GETATTR_RDEV = 0x10
GETATTR_ATIME = 0x20
GETATTR_MTIME = 0x40
GETATTR_CTIME = 0x80
GETATTR_INO = 0x100
GETATTR_SIZE = 0x200
GETATTR_BLOCKS = 0x400
GETATTR_BTIME = 0x800
GETATTR_GEN = 0x1000
GETATTR_DATA_VERSION = 0x2000
GETATTR_BASIC = 0x7FF
GETATTR_ALL = 0x3FFF

# Tsetattr valid bits (``P9_ATTR_*``, the kernel's ``ATTR_*``).
SETATTR_MODE = 0x1
SETATTR_UID = 0x2
SETATTR_GID = 0x4
SETATTR_SIZE = 0x8
SETATTR_ATIME = 0x10
SETATTR_MTIME = 0x20
SETATTR_CTIME = 0x40
SETATTR_ATIME_SET = 0x80
SETATTR_MTIME_SET = 0x100

# Tlopen/Tlcreate flags (``P9_DOTL_*``; the x86 Linux open flags).
DOTL_RDONLY = 0o0
DOTL_WRONLY = 0o1
DOTL_RDWR = 0o2
DOTL_NOACCESS = 0o3
DOTL_ACCMODE = 0o3
DOTL_CREATE = 0o100
DOTL_EXCL = 0o200
DOTL_NOCTTY = 0o400
DOTL_TRUNC = 0o1000
DOTL_APPEND = 0o2000
DOTL_NONBLOCK = 0o4000
DOTL_DSYNC = 0o10000
DOTL_FASYNC = 0o20000
DOTL_DIRECT = 0o40000
DOTL_LARGEFILE = 0o100000
DOTL_DIRECTORY = 0o200000
DOTL_NOFOLLOW = 0o400000
DOTL_NOATIME = 0o1000000
DOTL_CLOEXEC = 0o2000000
DOTL_SYNC = 0o4000000

# Tunlinkat flags.
AT_REMOVEDIR = 0x200

# Tlock/Tgetlock (``P9_LOCK_*``).
LOCK_TYPE_RDLCK = 0
LOCK_TYPE_WRLCK = 1
LOCK_TYPE_UNLCK = 2
LOCK_SUCCESS = 0
LOCK_BLOCKED = 1
LOCK_ERROR = 2
LOCK_GRACE = 3
LOCK_FLAGS_BLOCK = 1
LOCK_FLAGS_RECLAIM = 2

# Txattrcreate flags (``setxattr(2)``).
XATTR_CREATE = 1
XATTR_REPLACE = 2


class ProtocolError(ValueError):
    """Bytes that are not a well-formed 9P2000.L message, or a value that a
    message field cannot hold.

    ``tag`` and ``mtype`` are the frame's tag and type when the header was
    readable (so a server can still answer that tag with Rlerror), else None.
    """

    def __init__(self, message: str, *, tag: int | None = None, mtype: int | None = None) -> None:
        super().__init__(message)
        self.tag = tag
        self.mtype = mtype


class Qid(NamedTuple):
    """The server's identity of a file: ``type[1] version[4] path[8]``.

    ``type`` is a ``QT*`` bit set (QTDIR, QTSYMLINK, QTFILE = 0); ``path`` is
    unique per file on the server (the host inode number for our gofer);
    ``version`` changes when the file does (0: not tracked).
    """

    type: int
    version: int
    path: int


class Message:
    """A 9P2000.L message. ``type`` is its number; ``fmt`` its body layout.

    ``fmt`` has one code per field, in wire order: ``b`` u8, ``h`` u16,
    ``i`` u32, ``q`` u64, ``Q`` qid, ``s`` string, ``S`` ``n[2]`` strings,
    ``W`` ``n[2]`` qids, ``D`` ``count[4]`` bytes.
    """

    __slots__ = ()
    type: ClassVar[int]
    fmt: ClassVar[str]

    def encode(self, tag: Tag) -> bytes:
        """This message as a whole frame with ``tag``; ProtocolError if a field
        does not fit."""
        return encode(tag, self)


class Request(Message):
    """A T-message (client to server)."""

    __slots__ = ()


class Response(Message):
    """An R-message (server to client)."""

    __slots__ = ()


# ---------------------------------------------------------------------------
# The compiled codec of one message class.
# ---------------------------------------------------------------------------

HEADER = struct.Struct("<IBH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_QID = struct.Struct("<BIQ")
_FIXED_CODES = {"b": "B", "h": "H", "i": "I", "q": "Q", "Q": "BIQ"}
_CODECS: dict[int, _Codec] = {}


def _enc_str(s: str) -> bytes:
    try:
        b = s.encode("utf-8", "surrogateescape")
    except (UnicodeError, AttributeError) as e:
        raise ProtocolError(f"not a 9P string: {s!r}") from e
    if len(b) > 0xFFFF:
        raise ProtocolError(f"string of {len(b)} bytes is longer than 65535")
    return _U16.pack(len(b)) + b


class _Step(NamedTuple):
    #: "F" for a fixed run, else the variable code.
    kind: str
    st: struct.Struct | None
    #: For "F": how many message fields the run covers, and which are qids.
    nfields: int
    qids: tuple[bool, ...]


class _Codec:
    """The compiled encoder and decoder of one message class."""

    __slots__ = ("cls", "fixed_only", "get", "nfields", "steps")

    def __init__(self, cls: type[Message], fmt: str) -> None:
        self.cls = cls
        self.nfields = len(fmt)
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        getter = operator.attrgetter(*names) if names else None
        if getter is None:
            self.get: Callable[[Any], tuple[Any, ...]] = lambda m: ()
        elif len(names) == 1:
            self.get = lambda m: (getter(m),)
        else:
            self.get = getter
        steps: list[_Step] = []
        run = ""
        for code in fmt + "$":
            if code in _FIXED_CODES:
                run += code
                continue
            if run:
                st = struct.Struct("<" + "".join(_FIXED_CODES[c] for c in run))
                steps.append(_Step("F", st, len(run), tuple(c == "Q" for c in run)))
                run = ""
            if code != "$":
                if code not in "sSWD":
                    raise TypeError(f"unknown field code {code!r}")
                steps.append(_Step(code, None, 1, ()))
        self.steps = tuple(steps)
        st0 = steps[0].st if steps else None
        # A body that is one fixed run without qids decodes with one unpack.
        self.fixed_only = st0 if len(steps) == 1 and steps[0].kind == "F" and not any(steps[0].qids) else None

    def encode(self, msg: Message) -> list[bytes]:
        vals = self.get(msg)
        parts: list[bytes] = []
        i = 0
        try:
            for step in self.steps:
                if step.kind == "F":
                    assert step.st is not None
                    if any(step.qids):
                        flat: list[int] = []
                        for is_qid, v in zip(step.qids, vals[i : i + step.nfields], strict=True):
                            if is_qid:
                                flat.extend(v)
                            else:
                                flat.append(v)
                        parts.append(step.st.pack(*flat))
                    else:
                        parts.append(step.st.pack(*vals[i : i + step.nfields]))
                    i += step.nfields
                    continue
                v = vals[i]
                i += 1
                if step.kind == "s":
                    parts.append(_enc_str(v))
                elif step.kind == "D":
                    data = bytes(v)
                    parts.append(_U32.pack(len(data)))
                    parts.append(data)
                elif step.kind == "S":
                    if len(v) > MAXWELEM:
                        raise ProtocolError(f"{len(v)} walk names; at most {MAXWELEM}")
                    parts.append(_U16.pack(len(v)))
                    parts.extend(_enc_str(s) for s in v)
                else:  # "W"
                    if len(v) > MAXWELEM:
                        raise ProtocolError(f"{len(v)} walk qids; at most {MAXWELEM}")
                    parts.append(_U16.pack(len(v)))
                    parts.extend(_QID.pack(*q) for q in v)
        except (struct.error, TypeError, ValueError) as e:
            if isinstance(e, ProtocolError):
                raise
            raise ProtocolError(f"{type(msg).__name__}: a field does not fit: {e}") from e
        return parts

    def decode(self, body: bytes | memoryview, tag: int) -> Message:
        cls = self.cls
        n = len(body)
        if self.fixed_only is not None:
            if n != self.fixed_only.size:
                raise ProtocolError(
                    f"{cls.__name__}: body of {n} bytes, expected {self.fixed_only.size}", tag=tag, mtype=cls.type
                )
            return cls(*self.fixed_only.unpack(body))
        vals: list[Any] = []
        off = 0
        for step in self.steps:
            if step.kind == "F":
                st = step.st
                assert st is not None
                if off + st.size > n:
                    raise _short(cls, tag)
                t = st.unpack_from(body, off)
                off += st.size
                if any(step.qids):
                    j = 0
                    for is_qid in step.qids:
                        if is_qid:
                            vals.append(Qid(t[j], t[j + 1], t[j + 2]))
                            j += 3
                        else:
                            vals.append(t[j])
                            j += 1
                else:
                    vals.extend(t)
                continue
            if step.kind == "s":
                s, off = _dec_str(body, off, n, cls, tag)
                vals.append(s)
            elif step.kind == "D":
                if off + 4 > n:
                    raise _short(cls, tag)
                (count,) = _U32.unpack_from(body, off)
                off += 4
                if off + count > n:
                    raise ProtocolError(
                        f"{cls.__name__}: count {count} but only {n - off} bytes follow", tag=tag, mtype=cls.type
                    )
                vals.append(bytes(body[off : off + count]))
                off += count
            elif step.kind == "S":
                if off + 2 > n:
                    raise _short(cls, tag)
                (k,) = _U16.unpack_from(body, off)
                off += 2
                if k > MAXWELEM:
                    raise ProtocolError(f"{cls.__name__}: {k} names; at most {MAXWELEM}", tag=tag, mtype=cls.type)
                names = []
                for _ in range(k):
                    s, off = _dec_str(body, off, n, cls, tag)
                    names.append(s)
                vals.append(tuple(names))
            else:  # "W"
                if off + 2 > n:
                    raise _short(cls, tag)
                (k,) = _U16.unpack_from(body, off)
                off += 2
                if k > MAXWELEM:
                    raise ProtocolError(f"{cls.__name__}: {k} qids; at most {MAXWELEM}", tag=tag, mtype=cls.type)
                if off + 13 * k > n:
                    raise _short(cls, tag)
                qids = []
                for _ in range(k):
                    qids.append(Qid(*_QID.unpack_from(body, off)))
                    off += 13
                vals.append(tuple(qids))
        if off != n:
            raise ProtocolError(f"{cls.__name__}: {n - off} bytes left over", tag=tag, mtype=cls.type)
        return cls(*vals)


def _short(cls: type[Message], tag: int) -> ProtocolError:
    return ProtocolError(f"{cls.__name__}: body ends early", tag=tag, mtype=cls.type)


def _dec_str(body: bytes | memoryview, off: int, n: int, cls: type[Message], tag: int) -> tuple[str, int]:
    if off + 2 > n:
        raise _short(cls, tag)
    (k,) = _U16.unpack_from(body, off)
    off += 2
    if off + k > n:
        raise ProtocolError(
            f"{cls.__name__}: string of {k} bytes but only {n - off} follow", tag=tag, mtype=cls.type
        )
    return bytes(body[off : off + k]).decode("utf-8", "surrogateescape"), off + k


#: Message classes by type number.
MESSAGES: dict[int, type[Message]] = {}


_M = TypeVar("_M", bound=type[Message])


def _message(number: int, fmt: str) -> Callable[[_M], _M]:
    """Register a dataclass as message ``number`` with body layout ``fmt``."""

    def register(cls: _M) -> _M:
        nfields = len(fields(cls))  # type: ignore[arg-type]
        if nfields != len(fmt):
            raise TypeError(f"{cls.__name__}: {nfields} fields but fmt {fmt!r}")
        if number in MESSAGES:
            raise TypeError(f"{cls.__name__}: type {number} is taken by {MESSAGES[number].__name__}")
        cls.type = number
        cls.fmt = fmt
        MESSAGES[number] = cls
        _CODECS[number] = _Codec(cls, fmt)
        return cls

    return register


# ---------------------------------------------------------------------------
# The messages (Linux include/net/9p/9p.h numbers; bodies as net/9p/protocol.c).
# ---------------------------------------------------------------------------


@_message(7, "i")
@dataclass(slots=True)
class Rlerror(Response):
    """An error reply: ``ecode`` is a Linux errno."""

    ecode: int


@_message(8, "i")
@dataclass(slots=True)
class Tstatfs(Request):
    fid: Fid


@_message(9, "iiqqqqqqi")
@dataclass(slots=True)
class Rstatfs(Response):
    """``statfs(2)`` of the fid's filesystem; ``bsize`` in bytes, ``blocks``,
    ``bfree``, ``bavail`` in ``bsize`` units."""

    fs_type: int
    bsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    fsid: int
    namelen: int


@_message(12, "ii")
@dataclass(slots=True)
class Tlopen(Request):
    """Open the fid's file; ``flags`` are ``DOTL_*`` (Linux open flags)."""

    fid: Fid
    flags: int


@_message(13, "Qi")
@dataclass(slots=True)
class Rlopen(Response):
    """``iounit``: most bytes per Tread/Twrite, 0 for ``msize - IOHDRSZ``."""

    qid: Qid
    iounit: int


@_message(14, "isiii")
@dataclass(slots=True)
class Tlcreate(Request):
    """Create and open ``name`` in directory ``fid``, which then names the new file."""

    fid: Fid
    name: str
    flags: int
    mode: int
    gid: int


@_message(15, "Qi")
@dataclass(slots=True)
class Rlcreate(Response):
    qid: Qid
    iounit: int


@_message(16, "issi")
@dataclass(slots=True)
class Tsymlink(Request):
    fid: Fid
    name: str
    symtgt: str
    gid: int


@_message(17, "Q")
@dataclass(slots=True)
class Rsymlink(Response):
    qid: Qid


@_message(18, "isiiii")
@dataclass(slots=True)
class Tmknod(Request):
    dfid: Fid
    name: str
    mode: int
    major: int
    minor: int
    gid: int


@_message(19, "Q")
@dataclass(slots=True)
class Rmknod(Response):
    qid: Qid


@_message(20, "iis")
@dataclass(slots=True)
class Trename(Request):
    """Move the file of ``fid`` into directory ``dfid`` as ``name``."""

    fid: Fid
    dfid: Fid
    name: str


@_message(21, "")
@dataclass(slots=True)
class Rrename(Response):
    pass


@_message(22, "i")
@dataclass(slots=True)
class Treadlink(Request):
    fid: Fid


@_message(23, "s")
@dataclass(slots=True)
class Rreadlink(Response):
    target: str


@_message(24, "iq")
@dataclass(slots=True)
class Tgetattr(Request):
    """``request_mask``: ``GETATTR_*`` bits wanted."""

    fid: Fid
    request_mask: int


@_message(25, "qQiiiqqqqqqqqqqqqqqq")
@dataclass(slots=True)
class Rgetattr(Response):
    """``valid``: ``GETATTR_*`` bits filled; times are seconds and nanoseconds;
    ``size`` in bytes, ``blocks`` in 512-byte units, ``blksize`` in bytes."""

    valid: int
    qid: Qid
    mode: int
    uid: int
    gid: int
    nlink: int
    rdev: int
    size: int
    blksize: int
    blocks: int
    atime_sec: int
    atime_nsec: int
    mtime_sec: int
    mtime_nsec: int
    ctime_sec: int
    ctime_nsec: int
    btime_sec: int
    btime_nsec: int
    gen: int
    data_version: int


@_message(26, "iiiiiqqqqq")
@dataclass(slots=True)
class Tsetattr(Request):
    """``valid``: ``SETATTR_*`` bits of the fields to change."""

    fid: Fid
    valid: int
    mode: int
    uid: int
    gid: int
    size: int
    atime_sec: int
    atime_nsec: int
    mtime_sec: int
    mtime_nsec: int


@_message(27, "")
@dataclass(slots=True)
class Rsetattr(Response):
    pass


@_message(30, "iis")
@dataclass(slots=True)
class Txattrwalk(Request):
    """Make ``newfid`` read the value of xattr ``name`` of ``fid`` (``""``:
    the list of names, each NUL-terminated)."""

    fid: Fid
    newfid: Fid
    name: str


@_message(31, "q")
@dataclass(slots=True)
class Rxattrwalk(Response):
    size: int


@_message(32, "isqi")
@dataclass(slots=True)
class Txattrcreate(Request):
    """Make ``fid`` write ``attr_size`` bytes of xattr ``name``, set on Tclunk;
    ``flags``: XATTR_CREATE, XATTR_REPLACE."""

    fid: Fid
    name: str
    attr_size: int
    flags: int


@_message(33, "")
@dataclass(slots=True)
class Rxattrcreate(Response):
    pass


@_message(40, "iqi")
@dataclass(slots=True)
class Treaddir(Request):
    """``offset``: 0 or an ``offset`` of a dirent from an earlier Rreaddir;
    ``count``: most bytes of dirents wanted."""

    fid: Fid
    offset: int
    count: int


@_message(41, "D")
@dataclass(slots=True)
class Rreaddir(Response):
    """``data``: packed dirents (see :func:`encode_dirents`)."""

    data: bytes


@_message(50, "ii")
@dataclass(slots=True)
class Tfsync(Request):
    """``datasync`` nonzero for ``fdatasync``. Decoded also without it (diod's
    clients send only ``fid``)."""

    fid: Fid
    datasync: int = 0


@_message(51, "")
@dataclass(slots=True)
class Rfsync(Response):
    pass


@_message(52, "ibiqqis")
@dataclass(slots=True)
class Tlock(Request):
    """A POSIX byte-range lock request: ``lock_type`` LOCK_TYPE_*, ``flags``
    LOCK_FLAGS_*, ``start``/``length`` in bytes (``length`` 0: to the end)."""

    fid: Fid
    lock_type: int
    flags: int
    start: int
    length: int
    proc_id: int
    client_id: str


@_message(53, "b")
@dataclass(slots=True)
class Rlock(Response):
    """``status``: LOCK_SUCCESS, LOCK_BLOCKED, LOCK_ERROR or LOCK_GRACE."""

    status: int


@_message(54, "ibqqis")
@dataclass(slots=True)
class Tgetlock(Request):
    fid: Fid
    lock_type: int
    start: int
    length: int
    proc_id: int
    client_id: str


@_message(55, "bqqis")
@dataclass(slots=True)
class Rgetlock(Response):
    """The first conflicting lock, or the request back with LOCK_TYPE_UNLCK."""

    lock_type: int
    start: int
    length: int
    proc_id: int
    client_id: str


@_message(70, "iis")
@dataclass(slots=True)
class Tlink(Request):
    """Hard-link the file of ``fid`` into directory ``dfid`` as ``name``."""

    dfid: Fid
    fid: Fid
    name: str


@_message(71, "")
@dataclass(slots=True)
class Rlink(Response):
    pass


@_message(72, "isii")
@dataclass(slots=True)
class Tmkdir(Request):
    dfid: Fid
    name: str
    mode: int
    gid: int


@_message(73, "Q")
@dataclass(slots=True)
class Rmkdir(Response):
    qid: Qid


@_message(74, "isis")
@dataclass(slots=True)
class Trenameat(Request):
    olddirfid: Fid
    oldname: str
    newdirfid: Fid
    newname: str


@_message(75, "")
@dataclass(slots=True)
class Rrenameat(Response):
    pass


@_message(76, "isi")
@dataclass(slots=True)
class Tunlinkat(Request):
    """``flags``: 0 or AT_REMOVEDIR."""

    dirfid: Fid
    name: str
    flags: int


@_message(77, "")
@dataclass(slots=True)
class Runlinkat(Response):
    pass


@_message(100, "is")
@dataclass(slots=True)
class Tversion(Request):
    """``msize``: the largest frame the client will send or accept, in bytes."""

    msize: int
    version: str


@_message(101, "is")
@dataclass(slots=True)
class Rversion(Response):
    """``msize``: the negotiated largest frame (never above the client's)."""

    msize: int
    version: str


@_message(102, "issi")
@dataclass(slots=True)
class Tauth(Request):
    afid: Fid
    uname: str
    aname: str
    n_uname: int


@_message(103, "Q")
@dataclass(slots=True)
class Rauth(Response):
    aqid: Qid


@_message(104, "iissi")
@dataclass(slots=True)
class Tattach(Request):
    """Make ``fid`` the root of the tree ``aname``."""

    fid: Fid
    afid: Fid
    uname: str
    aname: str
    n_uname: int


@_message(105, "Q")
@dataclass(slots=True)
class Rattach(Response):
    qid: Qid


@_message(108, "h")
@dataclass(slots=True)
class Tflush(Request):
    """Abort request ``oldtag``; Rflush comes after any reply to it."""

    oldtag: Tag


@_message(109, "")
@dataclass(slots=True)
class Rflush(Response):
    pass


@_message(110, "iiS")
@dataclass(slots=True)
class Twalk(Request):
    """Walk ``names`` (at most MAXWELEM) from ``fid``; on success ``newfid``
    names the last one; no names clones ``fid``."""

    fid: Fid
    newfid: Fid
    names: tuple[str, ...]


@_message(111, "W")
@dataclass(slots=True)
class Rwalk(Response):
    """One qid per name walked; fewer than asked means the walk stopped there
    (and ``newfid`` was not made)."""

    qids: tuple[Qid, ...]


@_message(116, "iqi")
@dataclass(slots=True)
class Tread(Request):
    """Read at most ``count`` bytes at byte ``offset``."""

    fid: Fid
    offset: int
    count: int


@_message(117, "D")
@dataclass(slots=True)
class Rread(Response):
    data: bytes


@_message(118, "iqD")
@dataclass(slots=True)
class Twrite(Request):
    """Write ``data`` at byte ``offset`` (the wire ``count`` is ``len(data)``)."""

    fid: Fid
    offset: int
    data: bytes


@_message(119, "i")
@dataclass(slots=True)
class Rwrite(Response):
    count: int


@_message(120, "i")
@dataclass(slots=True)
class Tclunk(Request):
    fid: Fid


@_message(121, "")
@dataclass(slots=True)
class Rclunk(Response):
    pass


@_message(122, "i")
@dataclass(slots=True)
class Tremove(Request):
    """Remove the file of ``fid``; the fid is clunked even if that fails."""

    fid: Fid


@_message(123, "")
@dataclass(slots=True)
class Rremove(Response):
    pass


def encode(tag: Tag, msg: Message) -> bytes:
    """``msg`` as a whole frame ``size[4] type[1] tag[2] body``.

    ProtocolError if ``tag`` is not 16-bit, a field is out of range, a
    string is longer than 65535 bytes or a walk has more than MAXWELEM names.
    """
    codec = _CODECS.get(getattr(msg, "type", -1))
    if codec is None or type(msg) is not codec.cls:
        raise ProtocolError(f"not a 9P2000.L message: {msg!r}")
    parts = codec.encode(msg)
    size = HEADER_SIZE + sum(len(p) for p in parts)
    if size > 0xFFFFFFFF:
        raise ProtocolError(f"{type(msg).__name__}: {size} bytes do not fit a frame")
    try:
        header = HEADER.pack(size, msg.type, tag)
    except struct.error as e:
        raise ProtocolError(f"bad tag {tag!r}: {e}") from e
    parts.insert(0, header)
    return b"".join(parts)


def decode_body(mtype: int, tag: Tag, body: bytes | memoryview) -> Message:
    """The message of type ``mtype`` whose body (the bytes after the 7-byte
    header) is ``body``. ProtocolError, carrying ``tag`` and ``mtype``, if it
    is not one."""
    codec = _CODECS.get(mtype)
    if codec is None:
        raise ProtocolError(f"unknown message type {mtype}", tag=tag, mtype=mtype)
    if mtype == Tfsync.type and len(body) == 4:
        # diod's Tfsync is fid[4] only.
        return Tfsync(_U32.unpack(body)[0], 0)
    try:
        return codec.decode(body, tag)
    except ProtocolError:
        raise
    except (struct.error, ValueError, TypeError, IndexError) as e:  # pragma: no cover - defensive
        raise ProtocolError(f"{codec.cls.__name__}: {e}", tag=tag, mtype=mtype) from e


def decode(frame: bytes | memoryview) -> tuple[Tag, Message]:
    """``(tag, message)`` from one whole frame. ProtocolError if ``frame`` is
    shorter than a header, its size field is not its length, or its body is
    not a well-formed message of its type."""
    n = len(frame)
    if n < HEADER_SIZE:
        raise ProtocolError(f"frame of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    size, mtype, tag = HEADER.unpack_from(frame)
    if size != n:
        raise ProtocolError(f"size field says {size} bytes, frame has {n}", tag=tag, mtype=mtype)
    return tag, decode_body(mtype, tag, memoryview(frame)[HEADER_SIZE:])


# ---------------------------------------------------------------------------
# Directory entries (the data of Rreaddir).
# ---------------------------------------------------------------------------

_DIRENT = struct.Struct("<BIQQBH")  # qid, offset, type, name length


class Dirent(NamedTuple):
    """One Rreaddir entry: ``qid[13] offset[8] type[1] name[s]``.

    ``offset`` is the cookie to pass to Treaddir to continue after this entry;
    ``type`` is the ``d_type`` of ``readdir(3)`` (``DT_DIR`` = 4, ``DT_REG`` =
    8, ``DT_LNK`` = 10, ...), as Linux's v9fs and diod use it.
    """

    qid: Qid
    offset: int
    type: int
    name: str


def dirent_size(name: str) -> int:
    """Bytes one dirent named ``name`` takes in Rreaddir data."""
    return _DIRENT.size + len(name.encode("utf-8", "surrogateescape"))


def encode_dirents(entries: Sequence[Dirent]) -> bytes:
    """``entries`` packed as Rreaddir data; ProtocolError if one does not fit."""
    out = []
    try:
        for d in entries:
            name = d.name.encode("utf-8", "surrogateescape")
            out.append(_DIRENT.pack(*d.qid, d.offset, d.type, len(name)))
            out.append(name)
    except (struct.error, UnicodeError, TypeError, AttributeError) as e:
        raise ProtocolError(f"bad dirent: {e}") from e
    return b"".join(out)


def decode_dirents(data: bytes | memoryview) -> list[Dirent]:
    """The dirents of Rreaddir ``data``; ProtocolError if it is not a whole
    number of well-formed entries."""
    out = []
    off = 0
    n = len(data)
    while off < n:
        if off + _DIRENT.size > n:
            raise ProtocolError("Rreaddir: dirent ends early")
        qtype, qver, qpath, offset, dtype, k = _DIRENT.unpack_from(data, off)
        off += _DIRENT.size
        if off + k > n:
            raise ProtocolError(f"Rreaddir: name of {k} bytes but only {n - off} follow")
        name = bytes(data[off : off + k]).decode("utf-8", "surrogateescape")
        off += k
        out.append(Dirent(Qid(qtype, qver, qpath), offset, dtype, name))
    return out
