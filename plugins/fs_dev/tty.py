"""Pseudo-terminal pairs and their line discipline, kept in the sentry (Linux
``drivers/tty/pty.c``, ``drivers/tty/n_tty.c``, ``drivers/tty/tty_ioctl.c``;
gVisor ``fsimpl/devpts``).

A :class:`Pty` joins a master (what opening ``/dev/ptmx`` gives) and a slave
(``/dev/pts/N``). Bytes written to the master go through the slave's line
discipline (:class:`LineDiscipline`, a subset of Linux ``n_tty``) and become
readable on the slave; bytes written to the slave go through output
processing and become readable on the master. The terminal's settings are
the slave's ``struct termios`` (:class:`Termios`); TCGETS/TCSETS on either
end read and change it, as Linux does (``tty_mode_ioctl`` uses the slave for
a pty master).

What the line discipline does, with the slave's flags (defaults in brackets
are Linux's ``tty_std_termios`` for a pty slave):

- input (master -> slave): ISTRIP; IGNCR, ICRNL [on], INLCR; IXON [on] with
  VSTART/VSTOP (^Q/^S) stopping and restarting the slave's output, IXANY;
  ISIG [on]: VINTR, VQUIT, VSUSP are consumed, flush the queues unless NOFLSH,
  and queue SIGINT/SIGQUIT/SIGTSTP in :attr:`Pty.signals` for the kernel to
  send to the foreground process group (processes issue); ICANON [on]: lines
  are edited (VERASE, VWERASE and VLNEXT with IEXTEN, VKILL) and readable
  once ended by ``\\n``, VEOL, VEOL2 or VEOF (VEOF alone at the start of a
  line reads as end of file); a line holds at most 4095 bytes, as
  ``N_TTY_BUF_SIZE``; ECHO [on], ECHOE, ECHOK, ECHOKE, ECHOCTL (``^C``),
  ECHONL. Without ICANON, reads follow VMIN and VTIME=0 (VTIME's timer comes
  with processes: a read that would wait for it raises WouldBlock).
- output (slave -> master, and echoes): with OPOST [on]: ONLCR [on], OCRNL,
  ONOCR, ONLRET, XTABS.

Not done: VREPRINT, VDISCARD, ECHOPRT, tab erasure, IUCLC/OLCUC, parity and
break handling, TIOCSTI; the controlling terminal, process groups and job
control ioctls (TIOCSCTTY, TIOCNOTTY, TIOCGPGRP, TIOCSPGRP, TIOCGSID) come
with processes and answer ENOTTY here.

Where Linux would block, operations raise :class:`~pyrunsc.core.vfs.pipe.WouldBlock`
(EAGAIN): with O_NONBLOCK that is the answer; otherwise the run loop parks
the task and retries. Readiness for poll, select and epoll is Linux
``n_tty_poll``'s (:meth:`PtyMasterOps.readiness`, :meth:`PtySlaveOps.readiness`);
epoll looks at it on every collection (no wait queues here).

ioctl arguments
---------------

User memory does not exist at this layer. :data:`TTY_IOCTLS` tells the
syscall layer how to move each request's argument:

- ``ARG_VALUE``: ``arg`` is the argument itself (TCSBRK, TCFLSH, TCXONC,
  TIOCSIG); the syscall returns what :meth:`PtyEndOps.ioctl` returns.
- ``ARG_INT_IN``: ``arg`` points to an ``int``; the syscall layer reads it and
  passes the value as ``arg`` (TIOCSPTLCK, TIOCPKT).
- ``ARG_INT_OUT``: ``arg`` points to an ``int`` (``unsigned int`` for
  TIOCGPTN); :meth:`PtyEndOps.ioctl` returns the value, the syscall layer
  stores it there and returns 0 (TIOCGPTN, TIOCGPTLCK, TIOCGPKT, FIONREAD,
  TIOCOUTQ).
- ``ARG_STRUCT_OUT`` (size): the syscall layer stores the bytes
  :meth:`PtyEndOps.ioctl_out` returns (TCGETS: 36 bytes, TCGETS2: 44,
  TIOCGWINSZ: 8).
- ``ARG_STRUCT_IN`` (size): the syscall layer reads ``size`` bytes and passes
  them to :meth:`PtyEndOps.ioctl_in` (TCSETS, TCSETSW, TCSETSF: 36 bytes;
  TCSETS2, TCSETSW2, TCSETSF2: 44; TIOCSWINSZ: 8).

:meth:`PtyEndOps.get_termios` and :meth:`PtyEndOps.set_termios` are the
TCGETS/TCSETS shortcuts.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.vfs.file import FileDescription, FileOps
from pyrunsc.core.vfs.pipe import WouldBlock
from pyrunsc.core.vfs.poll import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDNORM, EPOLLWRNORM

# c_iflag bits (Linux include/uapi/asm-generic/termbits.h).
IGNBRK, BRKINT, IGNPAR, PARMRK, INPCK, ISTRIP = 0o1, 0o2, 0o4, 0o10, 0o20, 0o40
INLCR, IGNCR, ICRNL, IUCLC, IXON, IXANY, IXOFF, IMAXBEL, IUTF8 = (
    0o100, 0o200, 0o400, 0o1000, 0o2000, 0o4000, 0o10000, 0o20000, 0o40000,
)
# c_oflag bits.
OPOST, OLCUC, ONLCR, OCRNL, ONOCR, ONLRET = 0o1, 0o2, 0o4, 0o10, 0o20, 0o40
TABDLY = XTABS = 0o14000
# c_cflag bits.
CBAUD, B38400, CSIZE, CS8, CREAD, PARENB, HUPCL = 0o10017, 0o17, 0o60, 0o60, 0o200, 0o400, 0o2000
# c_lflag bits.
ISIG, ICANON, ECHO, ECHOE, ECHOK, ECHONL, NOFLSH, TOSTOP = 0o1, 0o2, 0o10, 0o20, 0o40, 0o100, 0o200, 0o400
ECHOCTL, ECHOPRT, ECHOKE, IEXTEN = 0o1000, 0o2000, 0o4000, 0o100000
# c_cc indices.
VINTR, VQUIT, VERASE, VKILL, VEOF, VTIME, VMIN, VSWTC = 0, 1, 2, 3, 4, 5, 6, 7
VSTART, VSTOP, VSUSP, VEOL, VREPRINT, VDISCARD, VWERASE, VLNEXT, VEOL2 = 8, 9, 10, 11, 12, 13, 14, 15, 16
NCCS = 19
#: Linux ``INIT_C_CC``: ^C ^\\ DEL ^U ^D, VTIME 0, VMIN 1, 0, ^Q ^S ^Z, 0, ^R ^O ^W ^V, 0.
INIT_C_CC = b"\x03\x1c\x7f\x15\x04\x00\x01\x00\x11\x13\x1a\x00\x12\x0f\x17\x16\x00\x00\x00"

#: Bytes one terminal line or non-canonical read buffer holds (Linux ``N_TTY_BUF_SIZE``).
N_TTY_BUF_SIZE = 4096
#: Bytes written to a master and not yet taken by the line discipline, and
#: bytes waiting for the master to read them, at most (a write that finds
#: either full raises WouldBlock).
QUEUE_MAX = 65536

# ioctl requests (Linux include/uapi/asm-generic/ioctls.h).
TCGETS, TCSETS, TCSETSW, TCSETSF = 0x5401, 0x5402, 0x5403, 0x5404
TCSBRK, TCXONC, TCFLSH = 0x5409, 0x540A, 0x540B
TIOCOUTQ, TIOCGWINSZ, TIOCSWINSZ, FIONREAD, TIOCPKT, TCSBRKP = 0x5411, 0x5413, 0x5414, 0x541B, 0x5420, 0x5425
TIOCINQ = FIONREAD
TCGETS2, TCSETS2, TCSETSW2, TCSETSF2 = 0x802C542A, 0x402C542B, 0x402C542C, 0x402C542D
TIOCGPTN, TIOCSPTLCK, TIOCSIG, TIOCGPKT, TIOCGPTLCK = 0x80045430, 0x40045431, 0x40045436, 0x80045438, 0x80045439
TCIFLUSH, TCOFLUSH, TCIOFLUSH = 0, 1, 2
TCOOFF, TCOON, TCIOFF, TCION = 0, 1, 2, 3
#: The status byte before each master read in packet mode (TIOCPKT).
TIOCPKT_DATA = 0

ARG_VALUE, ARG_INT_IN, ARG_INT_OUT = "value", "int_in", "int_out"
ARG_STRUCT_IN, ARG_STRUCT_OUT = "struct_in", "struct_out"

#: request -> (how the syscall layer moves the argument, size of what it
#: points to); see the module docstring.
TTY_IOCTLS: dict[int, tuple[str, int]] = {
    TCGETS: (ARG_STRUCT_OUT, 36), TCSETS: (ARG_STRUCT_IN, 36), TCSETSW: (ARG_STRUCT_IN, 36),
    TCSETSF: (ARG_STRUCT_IN, 36), TCGETS2: (ARG_STRUCT_OUT, 44), TCSETS2: (ARG_STRUCT_IN, 44),
    TCSETSW2: (ARG_STRUCT_IN, 44), TCSETSF2: (ARG_STRUCT_IN, 44), TIOCGWINSZ: (ARG_STRUCT_OUT, 8),
    TIOCSWINSZ: (ARG_STRUCT_IN, 8), TCSBRK: (ARG_VALUE, 0), TCSBRKP: (ARG_VALUE, 0), TCXONC: (ARG_VALUE, 0),
    TCFLSH: (ARG_VALUE, 0), TIOCSIG: (ARG_VALUE, 0), TIOCSPTLCK: (ARG_INT_IN, 4), TIOCPKT: (ARG_INT_IN, 4),
    TIOCGPTN: (ARG_INT_OUT, 4), TIOCGPTLCK: (ARG_INT_OUT, 4), TIOCGPKT: (ARG_INT_OUT, 4),
    FIONREAD: (ARG_INT_OUT, 4), TIOCOUTQ: (ARG_INT_OUT, 4),
}

_SPEEDS = {
    0: 0, 1: 50, 2: 75, 3: 110, 4: 134, 5: 150, 6: 200, 7: 300, 8: 600, 9: 1200, 10: 1800, 11: 2400,
    12: 4800, 13: 9600, 14: 19200, 15: 38400, 0o10001: 57600, 0o10002: 115200, 0o10003: 230400,
    0o10004: 460800, 0o10005: 500000, 0o10006: 576000, 0o10007: 921600, 0o10010: 1000000,
    0o10011: 1152000, 0o10012: 1500000, 0o10013: 2000000, 0o10014: 2500000, 0o10015: 3000000,
    0o10016: 3500000, 0o10017: 4000000,
}


@dataclass
class Termios:
    """A terminal's settings (Linux ``struct termios`` as TCGETS copies it:
    four ``u32`` flag words, ``c_line`` and ``c_cc[19]``, 36 bytes; with the
    input and output speeds, ``struct termios2`` for TCGETS2, 44 bytes).

    Note: glibc's own ``struct termios`` is 60 bytes (``c_cc[32]`` and the
    speeds); ``tcgetattr`` converts from the kernel's 36.
    """

    iflag: int = ICRNL | IXON
    oflag: int = OPOST | ONLCR
    cflag: int = B38400 | CS8 | CREAD
    lflag: int = ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN
    line: int = 0
    cc: bytearray = field(default_factory=lambda: bytearray(INIT_C_CC))
    ispeed: int = 38400
    ospeed: int = 38400

    SIZE = 36
    SIZE2 = 44
    _FMT = "<4IB19s"
    _FMT2 = "<4IB19s2I"

    def pack(self) -> bytes:
        """The 36 bytes TCGETS gives."""
        return struct.pack(self._FMT, self.iflag, self.oflag, self.cflag, self.lflag, self.line, bytes(self.cc))

    def pack2(self) -> bytes:
        """The 44 bytes TCGETS2 gives."""
        return self.pack() + struct.pack("<2I", self.ispeed, self.ospeed)

    @classmethod
    def unpack(cls, data: bytes) -> Termios:
        """From the 36 bytes of TCSETS, or the 44 of TCSETS2; EINVAL for another size.
        Without speeds (TCSETS), they follow ``c_cflag``'s CBAUD."""
        if len(data) == cls.SIZE:
            i, o, c, lf, line, cc = struct.unpack(cls._FMT, data)
            speed = _SPEEDS.get(c & CBAUD, 38400)
            return cls(i, o, c, lf, line, bytearray(cc), speed, speed)
        if len(data) == cls.SIZE2:
            i, o, c, lf, line, cc, ispeed, ospeed = struct.unpack(cls._FMT2, data)
            return cls(i, o, c, lf, line, bytearray(cc), ispeed, ospeed)
        raise SyscallError(errno.EINVAL, f"a termios is {cls.SIZE} or {cls.SIZE2} bytes, got {len(data)}")

    def copy(self) -> Termios:
        return Termios(self.iflag, self.oflag, self.cflag, self.lflag, self.line, bytearray(self.cc),
                       self.ispeed, self.ospeed)

    def char(self, index: int) -> int | None:
        """The control character at ``index``; None when disabled (0, ``_POSIX_VDISABLE``)."""
        c = self.cc[index]
        return c or None


def _is_ctrl(c: int) -> bool:
    return c < 0x20 or c == 0x7F


class LineDiscipline:
    """The slave's line discipline (Linux ``n_tty``): input from the master,
    edited into what the slave reads; output from the slave (and echoes)
    processed into what the master reads. See the module docstring."""

    def __init__(self, termios: Termios | None = None) -> None:
        self.termios = termios or Termios()
        #: Bytes the master wrote that the line discipline has not taken yet.
        self.pending = bytearray()
        #: Bytes the slave may read; in canonical mode, up to ``line_ends[-1]``.
        self.ready = bytearray()
        #: Ends (indices into ``ready``) of the complete lines; an end equal
        #: to the one before it (or 0) is an end-of-file mark (VEOF).
        self.line_ends: list[int] = []
        #: The line being edited (canonical mode).
        self.line = bytearray()
        #: Bytes for the master to read.
        self.out = bytearray()
        self.column = 0
        #: Output stopped by VSTOP (IXON) or TCXONC TCOOFF.
        self.stopped = False
        self._lnext = False
        #: Signals for the slave's foreground process group, oldest first.
        self.signals: list[int] = []

    # Input (master -> slave).

    def receive(self, data: bytes) -> int:
        """Take what the master wrote; the count taken. WouldBlock when
        nothing fits (:data:`QUEUE_MAX` bytes already wait)."""
        if not data:
            return 0
        room = QUEUE_MAX - len(self.pending)
        if room <= 0:
            raise WouldBlock("pty input queue full")
        n = min(room, len(data))
        self.pending += data[:n]
        self.push()
        return n

    def push(self) -> None:
        """Process waiting input while the read buffer has room."""
        i = 0
        while i < len(self.pending):
            if not self._take(self.pending[i]):
                break
            i += 1
        del self.pending[:i]

    def _readable_bytes(self) -> int:
        return len(self.ready) + len(self.line)

    def _take(self, c: int) -> bool:
        """Process one input byte; False when it must wait for room."""
        t = self.termios
        canon = bool(t.lflag & ICANON)
        if self._readable_bytes() >= N_TTY_BUF_SIZE - 1 and not canon:
            return False
        if canon and self.line_ends and self._readable_bytes() >= N_TTY_BUF_SIZE - 1:
            return False
        if t.iflag & ISTRIP:
            c &= 0x7F
        if self._lnext:
            self._lnext = False
            self._store(c, literal=True)
            return True
        if t.iflag & IXON:
            if c == t.char(VSTART):
                self.stopped = False
                return True
            if c == t.char(VSTOP):
                self.stopped = True
                return True
            if self.stopped and t.iflag & IXANY:
                self.stopped = False
        crnl = False
        if c == 0x0D:
            if t.iflag & IGNCR:
                return True
            if t.iflag & ICRNL:
                c, crnl = 0x0A, True
        elif c == 0x0A and t.iflag & INLCR:
            c = 0x0D
        if t.lflag & ISIG:
            sig = {t.char(VINTR): signal.SIGINT, t.char(VQUIT): signal.SIGQUIT, t.char(VSUSP): signal.SIGTSTP}
            sig.pop(None, None)
            if c in sig:
                self.signals.append(int(sig[c]))
                if not t.lflag & NOFLSH:
                    self._reset_read_buffer()
                    self.out.clear()
                if t.lflag & ECHO:
                    self._echo_char(c)
                return True
        if canon:
            if t.lflag & IEXTEN and c == t.char(VLNEXT):
                self._lnext = True
                if t.lflag & ECHO and t.lflag & ECHOCTL:
                    self._echo(b"^\b")
                return True
            if c == t.char(VERASE) or (t.lflag & IEXTEN and c == t.char(VWERASE)) or c == t.char(VKILL):
                self._erase(c)
                return True
            if c == t.char(VEOF):
                self._end_line()
                return True
        self._store(c, literal=False, crnl=crnl)
        return True

    def _store(self, c: int, *, literal: bool, crnl: bool = False) -> None:
        t = self.termios
        if not t.lflag & ICANON:
            self.ready.append(c)
            if t.lflag & ECHO:
                # A newline made by ICRNL echoes as one; a plain one as ^J
                # (Linux n_tty_receive_char_special versus n_tty_receive_char).
                if crnl:
                    self._echo(b"\n")
                else:
                    self._echo_char(c)
            return
        ends = not literal and (c == 0x0A or c == t.char(VEOL) or bool(t.lflag & IEXTEN and c == t.char(VEOL2)))
        if not ends and len(self.line) >= N_TTY_BUF_SIZE - 1:
            return  # Linux drops what does not fit in a line
        self.line.append(c)
        if c == 0x0A and not literal:
            if t.lflag & (ECHO | ECHONL):  # echoed raw, never as ^J
                self._echo(b"\n")
        elif t.lflag & ECHO:
            self._echo_char(c)
        if ends:
            self._end_line()

    def _end_line(self) -> None:
        self.ready += self.line
        self.line.clear()
        self.line_ends.append(len(self.ready))

    def _erase(self, c: int) -> None:
        """VERASE, VWERASE or VKILL on the line being edited (Linux ``eraser``)."""
        t = self.termios
        kind = "kill" if c == t.char(VKILL) else "erase" if c == t.char(VERASE) else "werase"
        if not self.line:
            return
        echo = bool(t.lflag & ECHO)
        if kind == "kill":
            if echo and not (t.lflag & ECHOK and t.lflag & ECHOKE and t.lflag & ECHOE):
                self.line.clear()
                self._echo_char(c)
                if t.lflag & ECHOK:
                    self._echo(b"\n")
                return
        if kind == "erase" and echo and not t.lflag & ECHOE:
            self.line.pop()
            self._echo_char(c)
            return
        seen_word = False
        while self.line:
            ch = self.line[-1]
            if kind == "werase":
                word = chr(ch).isalnum() or ch == 0x5F
                if word:
                    seen_word = True
                elif seen_word:
                    break
            self.line.pop()
            if echo:
                ctrl = _is_ctrl(ch)
                if ch == 0x09:
                    pass  # tab erasure (column arithmetic) is not done
                elif not ctrl:
                    self._echo(b"\b \b")
                elif t.lflag & ECHOCTL:
                    self._echo(b"\b \b\b \b")
            if kind == "erase":
                break

    def _echo_char(self, c: int) -> None:
        if self.termios.lflag & ECHOCTL and _is_ctrl(c) and c != 0x09:
            self._echo(bytes((0x5E, c ^ 0x40)))
        else:
            self._echo(bytes((c,)))

    def _echo(self, data: bytes) -> None:
        for c in data:
            self._output_char(c)

    def flush_input(self) -> None:
        """Drop everything not yet read by the slave (TCIFLUSH on the slave)."""
        self.pending.clear()
        self._reset_read_buffer()

    def _reset_read_buffer(self) -> None:
        """Linux ``reset_buffer_flags``: what was taken, not what waits."""
        self.ready.clear()
        self.line_ends.clear()
        self.line.clear()
        self._lnext = False

    def readable(self) -> int:
        """What FIONREAD on the slave reports: bytes of complete lines in
        canonical mode, else everything taken."""
        if self.termios.lflag & ICANON:
            return self.line_ends[-1] if self.line_ends else 0
        return len(self.ready)

    def read(self, length: int, *, nonblock: bool) -> bytes:
        """What a slave read gets: one line (or part of it) in canonical
        mode, b"" for VEOF at the start of a line; otherwise up to ``length``
        bytes, b"" when none and VMIN and VTIME are 0. WouldBlock when it must wait."""
        if length == 0:
            return b""
        t = self.termios
        if t.lflag & ICANON:
            if not self.line_ends:
                raise WouldBlock("no complete line")
            end = self.line_ends[0]
            if end == 0:
                self._consume(0)
                self.line_ends.pop(0)
                return b""
            n = min(length, end)
            data = bytes(self.ready[:n])
            self._consume(n)
            if self.line_ends[0] == 0:
                self.line_ends.pop(0)
            self.push()
            return data
        vmin, vtime = t.cc[VMIN], t.cc[VTIME]
        if not self.ready:
            if vmin == 0 and vtime == 0:
                return b""
            raise WouldBlock("pty empty")
        if not nonblock and vmin and len(self.ready) < min(vmin, length):
            raise WouldBlock("fewer than VMIN bytes")
        data = bytes(self.ready[:length])
        self._consume(len(data))
        self.push()
        return data

    def _consume(self, n: int) -> None:
        del self.ready[:n]
        self.line_ends = [e - n for e in self.line_ends]

    def set_termios(self, new: Termios) -> None:
        """Apply new settings; switching ICANON off makes the line being
        edited readable, switching it on makes what is readable one line."""
        old = self.termios
        self.termios = new
        if old.lflag & ICANON and not new.lflag & ICANON:
            self.ready += self.line
            self.line.clear()
            self.line_ends.clear()
        elif not old.lflag & ICANON and new.lflag & ICANON and self.ready:
            self.line_ends = [len(self.ready)]
        if not new.iflag & IXON:
            self.stopped = False
        self.push()

    # Output (slave -> master).

    def transmit(self, data: bytes) -> int:
        """Take what the slave wrote, processed for output; the count taken.
        WouldBlock when output is stopped or the master's queue is full."""
        if not data:
            return 0
        if self.stopped:
            raise WouldBlock("output stopped")
        n = 0
        for c in data:
            if len(self.out) >= QUEUE_MAX:
                break
            self._output_char(c)
            n += 1
        if n == 0:
            raise WouldBlock("master queue full")
        return n

    def _output_char(self, c: int) -> None:
        """Linux ``do_output_char``."""
        t = self.termios
        if not t.oflag & OPOST:
            self.out.append(c)
            return
        if c == 0x0A:
            if t.oflag & ONLRET:
                self.column = 0
            if t.oflag & ONLCR:
                self.column = 0
                self.out += b"\r\n"
                return
        elif c == 0x0D:
            if t.oflag & ONOCR and self.column == 0:
                return
            if t.oflag & OCRNL:
                c = 0x0A
                if t.oflag & ONLRET:
                    self.column = 0
            else:
                self.column = 0
        elif c == 0x09:
            spaces = 8 - self.column % 8
            self.column += spaces
            if t.oflag & TABDLY == XTABS:
                self.out += b" " * spaces
                return
        elif c == 0x08:
            if self.column > 0:
                self.column -= 1
        elif not _is_ctrl(c):
            self.column += 1
        self.out.append(c)

    def read_output(self, length: int) -> bytes:
        data = bytes(self.out[:length])
        del self.out[:length]
        return data


class Pty:
    """One pseudo-terminal: index ``index``, its line discipline ``ld`` (whose
    ``termios`` is the terminal's), window size, lock and open counts.

    A new pty is locked: the slave cannot be opened (EIO) until TIOCSPTLCK
    with 0 unlocks it (glibc ``unlockpt``). Closing the master hangs the
    slave up: its reads give end of file, its writes and ioctls EIO. A
    master read finds EIO once every slave that was opened is closed.
    ``on_master_close`` and ``on_release`` (once both ends are gone) let
    devpts remove ``/dev/pts/N`` and free the index.
    """

    def __init__(
        self,
        index: int,
        *,
        on_master_close: Callable[[Pty], None] | None = None,
        on_release: Callable[[Pty], None] | None = None,
    ) -> None:
        self.index = index
        self.ld = LineDiscipline()
        #: ``struct winsize``: rows, columns, x pixels, y pixels.
        self.winsize = (0, 0, 0, 0)
        self.locked = True
        self.master_open = False
        self.slave_opens = 0
        #: Linux ``TTY_OTHER_CLOSED`` on the master: a slave was opened and all are closed.
        self.slave_closed = False
        self.packet = False
        self.on_master_close = on_master_close
        self.on_release = on_release

    @property
    def termios(self) -> Termios:
        return self.ld.termios

    @property
    def signals(self) -> list[int]:
        """Signals the terminal owes its foreground process group (ISIG
        characters, TIOCSIG, SIGWINCH), oldest first; the kernel takes them."""
        return self.ld.signals

    def open_master(self) -> PtyMasterOps:
        self.master_open = True
        return PtyMasterOps(self)

    def open_slave(self) -> PtySlaveOps:
        """EIO when the master is closed or the pty is locked (Linux ``pty_open``)."""
        if not self.master_open or self.locked:
            raise SyscallError(errno.EIO)
        self.slave_opens += 1
        self.slave_closed = False
        return PtySlaveOps(self)

    def _master_released(self) -> None:
        self.master_open = False
        if self.on_master_close is not None:
            self.on_master_close(self)
        self._maybe_release()

    def _slave_released(self) -> None:
        self.slave_opens -= 1
        if self.slave_opens == 0:
            self.slave_closed = True
        self._maybe_release()

    def _maybe_release(self) -> None:
        if not self.master_open and self.slave_opens == 0 and self.on_release is not None:
            cb, self.on_release = self.on_release, None
            cb(self)


class PtyEndOps(FileOps):
    """What both ends of a pty share: not seekable; terminal ioctls."""

    seekable = False
    pollable = True

    def __init__(self, pty: Pty) -> None:
        self.pty = pty

    def size(self, fd: FileDescription) -> int:
        raise SyscallError(errno.ESPIPE)

    def _check(self) -> None:
        """Hook for a hung-up slave (EIO)."""

    # Struct-valued requests.

    def get_termios(self) -> bytes:
        """TCGETS: the terminal's 36-byte ``struct termios``."""
        self._check()
        return self.pty.termios.pack()

    def set_termios(self, data: bytes, request: int = TCSETS) -> None:
        """TCSETS/TCSETSW/TCSETSF (36 bytes) or TCSETS2/TCSETSW2/TCSETSF2 (44
        bytes). The F forms flush unread input first; the W forms would wait
        for output to drain, which a pty has already done. As Linux
        ``pty_set_termios``, the character size is forced to CS8, CREAD is
        set and PARENB cleared. EINVAL for a wrong size."""
        self._check()
        new = Termios.unpack(data)
        new.cflag = (new.cflag & ~(CSIZE | PARENB)) | CS8 | CREAD
        if request in (TCSETSF, TCSETSF2):
            self.pty.ld.flush_input()
        self.pty.ld.set_termios(new)

    def get_winsize(self) -> bytes:
        """TIOCGWINSZ: 8 bytes, ``struct winsize``."""
        self._check()
        return struct.pack("<4H", *self.pty.winsize)

    def set_winsize(self, data: bytes) -> None:
        """TIOCSWINSZ; a change queues SIGWINCH (Linux ``pty_resize``)."""
        self._check()
        if len(data) != 8:
            raise SyscallError(errno.EINVAL)
        size = struct.unpack("<4H", data)
        if size != self.pty.winsize:
            self.pty.winsize = size
            self.pty.signals.append(int(signal.SIGWINCH))

    def ioctl_out(self, fd: FileDescription, request: int) -> bytes:
        """The bytes an ``ARG_STRUCT_OUT`` request stores at its argument."""
        if request == TCGETS:
            return self.get_termios()
        if request == TCGETS2:
            self._check()
            return self.pty.termios.pack2()
        if request == TIOCGWINSZ:
            return self.get_winsize()
        raise SyscallError(errno.ENOTTY)

    def ioctl_in(self, fd: FileDescription, request: int, data: bytes) -> None:
        """Apply an ``ARG_STRUCT_IN`` request with the bytes its argument points to."""
        if request in (TCSETS, TCSETSW, TCSETSF, TCSETS2, TCSETSW2, TCSETSF2):
            self.set_termios(data, request)
        elif request == TIOCSWINSZ:
            self.set_winsize(data)
        else:
            raise SyscallError(errno.ENOTTY)

    # Integer-valued requests.

    def ioctl(self, fd: FileDescription, request: int, arg: int) -> int:
        """The requests both ends take (see :data:`TTY_IOCTLS` for ``arg``):
        FIONREAD, TIOCOUTQ (0: a pty passes output on at once), TCFLSH,
        TCSBRK/TCSBRKP (nothing to do), TCXONC. A struct request here is
        EFAULT (use :meth:`ioctl_out`/:meth:`ioctl_in`); others ENOTTY."""
        self._check()
        if request == FIONREAD:
            return self._readable()
        if request == TIOCOUTQ:
            return 0
        if request in (TCSBRK, TCSBRKP):
            return 0
        if request == TCFLSH:
            if arg not in (TCIFLUSH, TCOFLUSH, TCIOFLUSH):
                raise SyscallError(errno.EINVAL)
            if arg in (TCIFLUSH, TCIOFLUSH):
                self._flush_in()
            if arg in (TCOFLUSH, TCIOFLUSH):
                self._flush_out()
            return 0
        if request == TCXONC:
            if arg == TCOOFF:
                self.pty.ld.stopped = True
            elif arg == TCOON:
                self.pty.ld.stopped = False
            elif arg not in (TCIOFF, TCION):
                raise SyscallError(errno.EINVAL)
            return 0
        if TTY_IOCTLS.get(request, ("", 0))[0] in (ARG_STRUCT_IN, ARG_STRUCT_OUT):
            raise SyscallError(errno.EFAULT, "struct argument: use ioctl_in/ioctl_out")
        raise SyscallError(errno.ENOTTY)

    def _readable(self) -> int:
        raise NotImplementedError

    def _flush_in(self) -> None:
        raise NotImplementedError

    def _flush_out(self) -> None:
        raise NotImplementedError


class PtyMasterOps(PtyEndOps):
    """The master end (``/dev/ptmx``): writes are the terminal's input, reads
    its output. TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK, TIOCPKT, TIOCGPKT and
    TIOCSIG are the master's alone (Linux ``pty_unix98_ioctl``)."""

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        """Output of the slave; in packet mode preceded by a TIOCPKT_DATA byte.
        EIO when empty and every slave opened is closed; else WouldBlock."""
        if length == 0:
            return b""
        ld = self.pty.ld
        if not ld.out:
            if self.pty.slave_closed:
                raise SyscallError(errno.EIO)
            raise WouldBlock("pty master empty")
        if self.pty.packet:
            return bytes((TIOCPKT_DATA,)) + ld.read_output(length - 1)
        return ld.read_output(length)

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        return self.pty.ld.receive(bytes(data))

    def ioctl(self, fd: FileDescription, request: int, arg: int) -> int:
        if request == TIOCGPTN:
            return self.pty.index
        if request == TIOCSPTLCK:
            self.pty.locked = bool(arg)
            return 0
        if request == TIOCGPTLCK:
            return int(self.pty.locked)
        if request == TIOCPKT:
            self.pty.packet = bool(arg)
            return 0
        if request == TIOCGPKT:
            return int(self.pty.packet)
        if request == TIOCSIG:
            if arg not in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
                raise SyscallError(errno.EINVAL)
            self.pty.signals.append(arg)
            return 0
        return super().ioctl(fd, request, arg)

    def _readable(self) -> int:
        return len(self.pty.ld.out)

    def readiness(self, fd: FileDescription) -> int:
        """Linux ``n_tty_poll`` on the master: EPOLLIN with output to read,
        EPOLLHUP once every slave opened is closed, EPOLLOUT while the input
        queue has room."""
        ld = self.pty.ld
        mask = EPOLLIN | EPOLLRDNORM if ld.out else 0
        if self.pty.slave_closed:
            mask |= EPOLLHUP
        if len(ld.pending) < QUEUE_MAX:
            mask |= EPOLLOUT | EPOLLWRNORM
        return mask

    def _flush_in(self) -> None:
        self.pty.ld.out.clear()

    def _flush_out(self) -> None:
        self.pty.ld.pending.clear()  # what the slave's line discipline has not taken

    def release(self, fd: FileDescription) -> None:
        self.pty._master_released()


class PtySlaveOps(PtyEndOps):
    """The slave end (``/dev/pts/N``): reads the line discipline's input,
    writes the terminal's output. After the master closes (hang-up), reads
    give end of file and writes and ioctls are EIO (Linux ``hung_up_tty_fops``)."""

    def __init__(self, pty: Pty) -> None:
        super().__init__(pty)
        self._released = False

    def _check(self) -> None:
        if not self.pty.master_open:
            raise SyscallError(errno.EIO)

    def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
        if not self.pty.master_open:
            return b""
        return self.pty.ld.read(length, nonblock=bool(fd.flags & os.O_NONBLOCK))

    def write(self, fd: FileDescription, data: bytes, offset: int) -> int:
        self._check()
        return self.pty.ld.transmit(bytes(data))

    def _readable(self) -> int:
        return self.pty.ld.readable()

    def readiness(self, fd: FileDescription) -> int:
        """Linux ``n_tty_poll`` on the slave: EPOLLIN with a complete line
        (canonical mode) or VMIN bytes (1 with VTIME set or VMIN 0), EPOLLHUP
        once the master closed, EPOLLOUT while output is not stopped and the
        master's queue has room; everything once the master closed."""
        if not self.pty.master_open:
            # Hung up (Linux hung_up_tty_poll): everything, reads give end of file.
            return EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDNORM | EPOLLWRNORM
        ld = self.pty.ld
        t = ld.termios
        mask = 0
        if t.lflag & ICANON:
            if ld.line_ends:
                mask |= EPOLLIN | EPOLLRDNORM
        else:
            vmin, vtime = t.cc[VMIN], t.cc[VTIME]
            if len(ld.ready) >= (vmin if vmin and not vtime else 1):
                mask |= EPOLLIN | EPOLLRDNORM
        if not ld.stopped and len(ld.out) < QUEUE_MAX:
            mask |= EPOLLOUT | EPOLLWRNORM
        return mask

    def _flush_in(self) -> None:
        self.pty.ld.flush_input()

    def _flush_out(self) -> None:
        self.pty.ld.out.clear()

    def release(self, fd: FileDescription) -> None:
        if not self._released:
            self._released = True
            self.pty._slave_released()
