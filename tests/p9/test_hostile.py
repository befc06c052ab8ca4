"""Hostile peers: bad frames to the gofer and bad replies to the client. Each
bad message gives one ProtocolError inside, one log line, and then an Rlerror
or a closed channel -- never a crash or a hang, and other channels carry on."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrunsc.plugins.fs_9p.gofer import Gofer, GoferConnection
from pyrunsc.plugins.fs_9p.p9 import Client, P9Error, ProtocolError
from pyrunsc.plugins.fs_9p.p9 import messages as m
from pyrunsc.plugins.fs_9p.p9.transport import FrameReader

from .conftest import Tree, attach


class Raw:
    """A raw channel to the gofer: frames in, decoded replies out."""

    def __init__(self, gofer: Gofer) -> None:
        a, self.sock = socket.socketpair()
        self.sock.settimeout(10)
        self.conn: GoferConnection = gofer.start(a)
        self.reader = FrameReader(self.sock)

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def recv(self) -> tuple[int, m.Message] | None:
        f = self.reader.read_frame(1 << 21)
        if f is None:
            return None
        mtype, tag, body = f
        return tag, m.decode_body(mtype, tag, body)

    def call(self, frame: bytes) -> tuple[int, m.Message] | None:
        self.send(frame)
        return self.recv()

    def setup(self) -> None:
        assert self.call(m.encode(m.NOTAG, m.Tversion(65536, "9P2000.L"))) == (
            m.NOTAG, m.Rversion(65536, "9P2000.L")
        )
        reply = self.call(m.encode(1, m.Tattach(0, m.NOFID, "", "/", m.NONUNAME)))
        assert reply is not None and isinstance(reply[1], m.Rattach)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(gofer: Gofer) -> Iterator[Callable[[], Raw]]:
    made: list[Raw] = []

    def make() -> Raw:
        r = Raw(gofer)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def gofer_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pyrunsc.gofer" and r.levelno >= logging.WARNING]


def frame(mtype: int, tag: int, body: bytes) -> bytes:
    return struct.pack("<IBH", 7 + len(body), mtype, tag) + body


# -- answered with Rlerror, channel kept ---------------------------------------------------

ANSWERED = [
    ("unknown type", frame(200, 7, b"junk"), errno.ENOSYS),
    ("Tlerror", frame(6, 7, b""), errno.ENOSYS),
    ("old 9P2000 Tstat", frame(124, 7, b"\x00\x00\x00\x00"), errno.ENOSYS),
    ("short body", frame(m.Tclunk.type, 7, b"\x01\x00"), errno.EINVAL),
    ("long body", frame(m.Tclunk.type, 7, b"\x00\x00\x00\x00\x00"), errno.EINVAL),
    ("lying string length", frame(m.Twalk.type, 7, struct.pack("<IIHH", 0, 5, 1, 500) + b"abc"), errno.EINVAL),
    ("17 walk names", frame(m.Twalk.type, 7, struct.pack("<IIH", 0, 5, 17) + b"\x01\x00a" * 17), errno.EINVAL),
    ("lying write count", frame(m.Twrite.type, 7, struct.pack("<IQI", 0, 0, 1 << 30) + b"x" * 10), errno.EINVAL),
    ("an R-message", m.encode(7, m.Rclunk()), errno.EINVAL),
    ("an Rlerror", m.encode(7, m.Rlerror(5)), errno.EINVAL),
]


@pytest.mark.parametrize("what, bad, err", ANSWERED, ids=[a[0] for a in ANSWERED])
def test_malformed_messages_get_rlerror_and_one_log_line(
    raw: Callable[[], Raw], caplog: pytest.LogCaptureFixture, what: str, bad: bytes, err: int
) -> None:
    caplog.set_level(logging.INFO, logger="pyrunsc.gofer")
    r = raw()
    r.setup()
    assert r.call(bad) == (7, m.Rlerror(err))
    assert len(gofer_lines(caplog)) == 1, gofer_lines(caplog)
    # The channel still works.
    reply = r.call(m.encode(8, m.Tgetattr(0, m.GETATTR_ALL)))
    assert reply is not None and isinstance(reply[1], m.Rgetattr)


# -- framing errors: the channel is closed ---------------------------------------------------

CLOSED = [
    ("size below the header", b"\x06\x00\x00\x00\x64\x00\x00"),
    ("size zero", b"\x00\x00\x00\x00"),
    ("size above msize", struct.pack("<IBH", 65537, m.Tread.type, 3) + b"x" * 100),
    ("size of 4 GiB", b"\xff\xff\xff\xff\x76\x01\x00"),
]


@pytest.mark.parametrize("what, bad", CLOSED, ids=[c[0] for c in CLOSED])
def test_bad_frames_close_the_channel_with_one_log_line(
    gofer: Gofer, raw: Callable[[], Raw], client: Client, caplog: pytest.LogCaptureFixture, what: str, bad: bytes
) -> None:
    caplog.set_level(logging.INFO, logger="pyrunsc.gofer")
    r = raw()
    r.setup()
    r.send(bad)
    assert r.recv() is None  # end of stream, at once
    assert r.conn.wait(5)
    assert len(gofer_lines(caplog)) == 1 and "closing the channel" in gofer_lines(caplog)[0]
    assert client.getattr(attach(client))  # the other channel is fine
    assert r.conn not in gofer.connections


def test_a_frame_cut_short_by_the_peer(gofer: Gofer, raw: Callable[[], Raw], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pyrunsc.gofer")
    r = raw()
    r.setup()
    r.send(m.encode(9, m.Twalk(0, 1, ("sub",)))[:10])
    r.sock.shutdown(socket.SHUT_WR)
    assert r.recv() is None
    assert r.conn.wait(5)
    assert "inside a frame" in " ".join(gofer_lines(caplog))


def test_a_tag_reused_while_in_flight_closes_the_channel(
    tree: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyrunsc.gofer")
    held = threading.Event()
    release = threading.Event()

    def hold(conn: GoferConnection, tag: int, req: m.Request) -> None:
        if isinstance(req, m.Tgetattr):
            held.set()
            release.wait(5)

    g = Gofer(tree.root, on_request=hold)
    try:
        r = Raw(g)
        r.setup()
        r.send(m.encode(5, m.Tgetattr(0, m.GETATTR_ALL)))
        assert held.wait(5)  # tag 5 is in flight: its request is being served
        r.send(m.encode(5, m.Tgetattr(0, m.GETATTR_ALL)))
        # The first request stays held until the gofer has seen the reused
        # tag and closed the channel: releasing it earlier lets the gofer
        # answer it before it reads the second, which is then a legal reuse.
        replies = []
        try:
            while (got := r.recv()) is not None:
                replies.append(got)
        except TimeoutError:
            pytest.fail(f"the gofer neither closed the channel nor answered; replies: {replies}")
        release.set()
        assert replies == []  # the held request is never answered on the closed channel
        assert r.conn.wait(5)
        assert len(gofer_lines(caplog)) == 1 and "reused while in flight" in gofer_lines(caplog)[0]
        r.close()
    finally:
        release.set()
        g.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6))
def test_fuzz_the_gofer_with_junk(gofer: Gofer, client: Client, junk: list[bytes]) -> None:
    """Random bytes after a good session start: the gofer answers or closes,
    never raises, never stops serving others."""
    r = Raw(gofer)
    try:
        r.setup()
        with contextlib.suppress(OSError):  # the gofer may have hung up already
            for j in junk:
                r.send(j)
            r.sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                if r.recv() is None:
                    break
            except (ProtocolError, OSError):
                break
        assert r.conn.wait(5)
    finally:
        r.close()
    assert client.getattr(attach(client))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mtype=st.integers(0, 255), tag=st.integers(0, 0xFFFE), body=st.binary(max_size=60))
def test_fuzz_the_gofer_with_well_framed_junk(
    gofer: Gofer, caplog: pytest.LogCaptureFixture, mtype: int, tag: int, body: bytes
) -> None:
    """Any well-framed message is answered on its tag, and the channel lives on."""
    r = Raw(gofer)
    try:
        r.setup()
        got = r.call(frame(mtype, tag, body))
        if mtype != m.Tversion.type and mtype != m.Tflush.type:
            assert got is not None and got[0] == tag
        reply = r.call(m.encode(1, m.Tversion(65536, "9P2000.L")))
        assert reply is not None and isinstance(reply[1], m.Rversion)
    finally:
        r.close()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


# -- a hostile server, for the client -------------------------------------------------------


class FakeServer:
    """The other end of a client's socket, written by the test."""

    def __init__(self) -> None:
        self.sock, b = socket.socketpair()
        self.sock.settimeout(10)
        self.client = Client(b, timeout=5)
        self.reader = FrameReader(self.sock)

    def request(self) -> tuple[int, m.Message]:
        f = self.reader.read_frame(1 << 20)
        assert f is not None
        return f[1], m.decode_body(*f)

    def reply(self, data: bytes) -> None:
        self.sock.sendall(data)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.client.close()
    s.sock.close()


def test_client_rlerror_is_p9error(fake: FakeServer) -> None:
    p = fake.client.send(m.Tclunk(3))
    tag, _ = fake.request()
    fake.reply(m.encode(tag, m.Rlerror(errno.ENOENT)))
    with pytest.raises(P9Error) as e:
        p.result(5)
    assert e.value.errno == errno.ENOENT and "ENOENT" in str(e.value) and "Tclunk" in str(e.value)


@pytest.mark.parametrize(
    "bad",
    [
        lambda tag: m.encode((tag + 1) % 0xFFFF, m.Rclunk()),  # a tag not in flight
        lambda tag: b"\xff\xff\xff\xff\x79\x00\x00",  # 4 GiB frame
        lambda tag: b"\x03\x00\x00\x00",  # below the header
        lambda tag: m.encode(tag, m.Tclunk(1)),  # a request, from a server
        lambda tag: frame(250, tag, b""),  # unknown type
        lambda tag: frame(m.Rread.type, tag, b"\x10\x00\x00\x00abc"),  # lying count
    ],
    ids=["stray tag", "huge size", "tiny size", "a request", "unknown type", "lying count"],
)
def test_client_closes_on_protocol_errors_without_hanging(fake: FakeServer, bad: Callable[[int], bytes]) -> None:
    p = fake.client.send(m.Tclunk(3))
    tag, _ = fake.request()
    t0 = time.monotonic()
    fake.reply(bad(tag))
    with pytest.raises(ProtocolError):
        p.result(5)
    assert time.monotonic() - t0 < 2
    assert fake.client.closed
    with pytest.raises(ConnectionError):
        fake.client.send(m.Tclunk(4))


def test_client_wrong_reply_type_is_a_protocol_error(fake: FakeServer) -> None:
    result: list[BaseException] = []

    def call() -> None:
        try:
            fake.client.getattr(1)
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=call)
    t.start()
    tag, _ = fake.request()
    fake.reply(m.encode(tag, m.Rclunk()))
    t.join(5)
    assert isinstance(result[0], ProtocolError) and fake.client.closed


def test_client_refuses_a_bigger_msize_and_unknown_version(fake: FakeServer) -> None:
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(_catch(lambda: fake.client.version(8192))))
    t.start()
    tag, req = fake.request()
    assert tag == m.NOTAG and req == m.Tversion(8192, "9P2000.L")
    fake.reply(m.encode(tag, m.Rversion(9000, "9P2000.L")))
    t.join(5)
    assert isinstance(result[0], ProtocolError)


def test_client_unknown_version(fake: FakeServer) -> None:
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(_catch(lambda: fake.client.version(8192))))
    t.start()
    tag, _ = fake.request()
    fake.reply(m.encode(tag, m.Rversion(8192, "unknown")))
    t.join(5)
    assert isinstance(result[0], P9Error) and result[0].errno == errno.EPROTONOSUPPORT


def _catch(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except BaseException as e:
        return e


def test_client_server_gone_and_timeouts(fake: FakeServer) -> None:
    p = fake.client.send(m.Tclunk(3))
    fake.request()
    with pytest.raises(TimeoutError):
        p.result(0.2)
    fake.sock.close()
    with pytest.raises(ConnectionError):
        p.result(5)


def test_client_tags_never_notag_and_reused(fake: FakeServer) -> None:
    seen = set()
    for i in range(5):
        p = fake.client.send(m.Tclunk(i))
        tag, _ = fake.request()
        assert tag == p.tag != m.NOTAG
        seen.add(tag)
        fake.reply(m.encode(tag, m.Rclunk()))
        p.result(5)
    assert len(seen) == 5
