"""9P2000.L: the messages and their codec (:mod:`.messages`), frame reading
(:mod:`.transport`) and a thread-safe client (:mod:`.client`).

Shared by the gofer (the server, :mod:`pyrunsc.plugins.fs_9p.gofer`) and the
sentry's 9p client filesystem.
"""

from __future__ import annotations

from .client import DEFAULT_MSIZE, Client, P9Error, Pending
from .messages import (
    IOHDRSZ,
    MAXWELEM,
    MESSAGES,
    NOFID,
    NONUNAME,
    NOTAG,
    Dirent,
    Fid,
    Message,
    ProtocolError,
    Qid,
    Request,
    Response,
    Tag,
    decode,
    decode_body,
    decode_dirents,
    encode,
    encode_dirents,
)
from .transport import FrameReader

__all__ = [
    "DEFAULT_MSIZE",
    "IOHDRSZ",
    "MAXWELEM",
    "MESSAGES",
    "NOFID",
    "NONUNAME",
    "NOTAG",
    "Client",
    "Dirent",
    "Fid",
    "FrameReader",
    "Message",
    "P9Error",
    "Pending",
    "ProtocolError",
    "Qid",
    "Request",
    "Response",
    "Tag",
    "decode",
    "decode_body",
    "decode_dirents",
    "encode",
    "encode_dirents",
]
