"""Reading 9P frames from a stream socket.

A 9P channel is a byte stream of frames ``size[4] type[1] tag[2] body``.
:class:`FrameReader` splits it, refusing a size field below the 7-byte header
or above the negotiated ``msize`` before reading the body, so a peer that lies
about a length can neither make us allocate more than ``msize`` nor read past
its frame.
"""

from __future__ import annotations

import socket
import struct

from .messages import HEADER_SIZE, ProtocolError

_U32 = struct.Struct("<I")
_HDR = struct.Struct("<IBH")

#: Bytes asked of the socket per recv when nothing larger is pending.
RECV_CHUNK = 256 * 1024


class FrameReader:
    """Whole frames from ``sock``, in order.

    Not thread-safe: one reader thread per channel. ``sock`` may be any object
    with ``recv_into`` (a blocking :class:`socket.socket`).
    """

    def __init__(self, sock: socket.socket, flags: int = 0) -> None:
        self._sock = sock
        #: recv flags; with MSG_DONTWAIT read_frame raises BlockingIOError
        #: when no whole frame is buffered and the socket has nothing more
        #: (what it read so far stays buffered).
        self._flags = flags
        self._buf = bytearray(RECV_CHUNK)
        self._start = 0
        self._end = 0

    def read_frame(self, max_size: int) -> tuple[int, int, bytes] | None:
        """The next frame as ``(type, tag, body)``, or None at a clean end of
        stream (the peer closed between frames).

        ProtocolError if the size field is below 7 or above ``max_size``
        (bytes), or the stream ends inside a frame; OSError from the socket
        passes through.
        """
        while True:
            have = self._end - self._start
            if have >= 4:
                (size,) = _U32.unpack_from(self._buf, self._start)
                if size < HEADER_SIZE or size > max_size:
                    mtype = tag = None
                    if have >= HEADER_SIZE:
                        _, mtype, tag = _HDR.unpack_from(self._buf, self._start)
                    raise ProtocolError(
                        f"frame size {size} is outside [{HEADER_SIZE}, msize {max_size}]", tag=tag, mtype=mtype
                    )
                if have >= size:
                    s = self._start
                    _, mtype, tag = _HDR.unpack_from(self._buf, s)
                    self._start = s + size
                    return mtype, tag, bytes(self._buf[s + HEADER_SIZE : s + size])
                need = size
            else:
                need = 4
            if not self._fill(need):
                if have == 0:
                    return None
                raise ProtocolError(f"channel closed inside a frame ({have} bytes of it read)")

    def pending(self) -> bool:
        """Whether bytes of a further frame are already buffered."""
        return self._end > self._start

    def _fill(self, need: int) -> bool:
        """One recv, with room for ``need`` bytes from the current frame's
        start; False at end of stream."""
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buf) - self._start < need or len(self._buf) - self._end < 4096:
            have = self._end - self._start
            self._buf[:have] = self._buf[self._start : self._end]
            self._start, self._end = 0, have
        if len(self._buf) - self._start < need:
            self._buf.extend(bytes(need - (len(self._buf) - self._start)))
        with memoryview(self._buf) as mv:
            n = self._sock.recv_into(mv[self._end :], 0, self._flags) if self._flags else self._sock.recv_into(
                mv[self._end :]
            )
        self._end += n
        return n > 0
