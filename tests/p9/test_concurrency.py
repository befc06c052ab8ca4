"""Requests on different tags and channels run at once; Tflush; a peer that
stops reading stalls only itself.

A slow request is made slow by the gofer's ``on_request`` tracing hook, which
holds the worker serving a Twalk of the name "slow" until the test lets it go;
the request is then served for real."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pyrunsc.plugins.fs_9p.gofer import Gofer, GoferConnection
from pyrunsc.plugins.fs_9p.p9 import Client, P9Error
from pyrunsc.plugins.fs_9p.p9 import messages as m
from pyrunsc.plugins.fs_9p.p9.transport import FrameReader

from .conftest import Tree, attach


class Gate:
    """Holds Twalk("slow") in the worker until ``release``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self, conn: GoferConnection, tag: int, req: m.Request) -> None:
        if isinstance(req, m.Twalk) and req.names == ("slow",):
            self.entered.set()
            self.released.wait(15)


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.released.set()


def slow_gofer(tree: Tree, gate: Gate, **kw: object) -> Gofer:
    (tree.root / "slow").mkdir()
    return Gofer(tree.root, on_request=gate, **kw)  # type: ignore[arg-type]


def test_a_slow_request_stalls_no_other_tag_or_channel(
    tree: Tree, gate: Gate, connect: Callable[..., Client]
) -> None:
    g = slow_gofer(tree, gate)
    try:
        c1, c2 = connect(g), connect(g)
        r1, r2 = attach(c1), attach(c2)
        slow = c1.send(m.Twalk(r1, c1.alloc_fid(), ("slow",)))
        assert gate.entered.wait(5)
        t0 = time.monotonic()
        for _ in range(20):
            assert c1.getattr(r1).qid.type == m.QTDIR  # same channel, other tags
            assert c2.read_all(_open(c2, r2, "hello.txt")) == b"hello world\n"  # other channel
        assert time.monotonic() - t0 < 3
        assert not slow.done
        gate.released.set()
        reply = slow.result(5)
        assert isinstance(reply, m.Rwalk) and reply.qids[0].path == os.stat(tree.root / "slow").st_ino
    finally:
        gate.released.set()
        g.close()


def _open(c: Client, root: int, path: str) -> int:
    f = c.walk_path(root, path)
    c.lopen(f, m.DOTL_RDONLY)
    return f


def test_close_is_bounded_when_a_request_is_stuck_in_the_host(
    tree: Tree, gate: Gate, connect: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    g = slow_gofer(tree, gate)
    c = connect(g)
    c.send(m.Twalk(attach(c), c.alloc_fid(), ("slow",)))
    assert gate.entered.wait(5)  # as a read on a hung filesystem would be; the fixture releases it
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pyrunsc.gofer"):
        g.close(timeout=0.5)
    assert 0.5 <= time.monotonic() - t0 < 3
    assert "1 channel(s)" in caplog.text and "did not end within 0.5 s" in caplog.text


def test_flush_of_a_running_request_comes_after_its_reply(
    tree: Tree, gate: Gate, connect: Callable[..., Client]
) -> None:
    g = slow_gofer(tree, gate)
    try:
        c = connect(g)
        root = attach(c)
        newfid = c.alloc_fid()
        slow = c.send(m.Twalk(root, newfid, ("slow",)))
        assert gate.entered.wait(5)
        flushed = threading.Event()
        old_done_at_rflush: list[bool] = []

        def flush() -> None:
            c.flush(slow)
            old_done_at_rflush.append(slow.done)
            flushed.set()

        t = threading.Thread(target=flush)
        t.start()
        assert not flushed.wait(0.5)  # Rflush waits for the running request
        gate.released.set()
        assert flushed.wait(5)
        t.join()
        assert old_done_at_rflush == [True]  # its reply came first
        assert isinstance(slow.result(1), m.Rwalk)
        assert c.getattr(newfid).qid.type == m.QTDIR  # it really ran
    finally:
        gate.released.set()
        g.close()


def test_flush_of_a_queued_request_drops_it(tree: Tree, gate: Gate, connect: Callable[..., Client]) -> None:
    g = slow_gofer(tree, gate, workers=1)
    try:
        c = connect(g)
        root = attach(c)
        slow = c.send(m.Twalk(root, c.alloc_fid(), ("slow",)))
        assert gate.entered.wait(5)  # the only worker is busy
        queued = c.send(m.Tmkdir(root, "never", 0o755, m.NONUNAME))
        time.sleep(0.1)
        t0 = time.monotonic()
        c.flush(queued)
        assert time.monotonic() - t0 < 1  # answered at once
        with pytest.raises(P9Error) as e:
            queued.result(1)
        assert e.value.errno == errno.EINTR
        gate.released.set()
        slow.result(5)
        assert c.getattr(root)  # the worker is free again
        assert not (tree.root / "never").exists()  # the dropped request never ran
    finally:
        gate.released.set()
        g.close()


def test_flush_of_a_tag_not_in_flight(client: Client) -> None:
    client.flush(4321)
    root = attach(client)
    p = client.send(m.Tgetattr(root, m.GETATTR_ALL))
    p.result(5)
    client.flush(p)  # answered already: Rflush at once, the reply stands
    assert isinstance(p.result(0), m.Rgetattr)


def test_many_tags_in_flight_from_one_thread(tree: Tree, client: Client) -> None:
    data = (tree.root / "big.bin").read_bytes()
    f = _open(client, attach(client), "big.bin")
    pend = [(off, client.send(m.Tread(f, off, 1000))) for off in range(0, len(data), 1500)]
    assert len({p.tag for _, p in pend}) == len(pend)
    for off, p in reversed(pend):
        reply = p.result(10)
        assert isinstance(reply, m.Rread) and reply.data == data[off : off + 1000]


def test_many_threads_share_one_client(tree: Tree, gofer: Gofer, connect: Callable[..., Client]) -> None:
    c = connect(gofer)
    root = attach(c)
    names = ["hello.txt", "sub/inner.txt", "sub/deeper/x", "big.bin"]
    want = {n: (tree.root / n).read_bytes() for n in names}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(40):
                n = names[(i + j) % len(names)]
                f = _open(c, root, n)
                assert c.read_all(f) == want[n]
                assert c.getattr(f).size == len(want[n])
                c.clunk(f)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_a_peer_that_stops_reading_stalls_only_its_own_channel(
    tree: Tree, connect: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyrunsc.gofer")
    (tree.root / "huge.bin").write_bytes(os.urandom(1 << 20))
    g = Gofer(tree.root, send_timeout=3.0, workers=4)
    try:
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the gofer's replies back up soon
        conn = g.start(a)
        reader = FrameReader(b)

        def call(tag: int, msg: m.Request) -> m.Message:
            b.sendall(m.encode(tag, msg))
            frame = reader.read_frame(1 << 21)
            assert frame is not None
            return m.decode_body(*frame)

        call(m.NOTAG, m.Tversion(1 << 20, "9P2000.L"))
        call(1, m.Tattach(0, m.NOFID, "", "/", m.NONUNAME))
        call(1, m.Twalk(0, 1, ("huge.bin",)))
        call(1, m.Tlopen(1, m.DOTL_RDONLY))

        def flood() -> None:
            with contextlib.suppress(OSError):
                for tag in range(300):
                    b.sendall(m.encode(tag, m.Tread(1, 0, 1 << 20)))

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()  # and b never reads again
        time.sleep(0.3)  # enough for the replies to fill the socket
        other = connect(g)
        root = attach(other)
        t0 = time.monotonic()
        for _ in range(30):
            assert other.read_all(_open(other, root, "hello.txt")) == b"hello world\n"
        assert time.monotonic() - t0 < 1.0  # well under the stuck peer's 3 s timeout
        assert conn.wait(10)  # and the stuck channel was dropped after send_timeout
        assert "does not read its replies" in caplog.text
        assert other.getattr(root)
        b.close()
        flooder.join(5)
    finally:
        g.close()


def test_a_channel_with_too_much_in_flight_pauses_and_resumes(
    tree: Tree, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reading of a channel pauses at MAX_INFLIGHT requests in flight and a
    # worker resumes it (first what is already buffered) as they end.
    monkeypatch.setattr(GoferConnection, "MAX_INFLIGHT", 2)
    data = (tree.root / "big.bin").read_bytes()
    f = _open(client, attach(client), "big.bin")
    pend = [(off, client.send(m.Tread(f, off, 100))) for off in range(0, 100 * 60, 100)]
    for off, p in pend:
        reply = p.result(10)
        assert isinstance(reply, m.Rread) and reply.data == data[off : off + 100]


def test_a_lone_slow_request_keeps_the_poller_and_others_still_run(
    tree: Tree, gate: Gate, connect: Callable[..., Client]
) -> None:
    # Nobody waits: the watchdog leaves the slow request on the polling
    # thread. Then another channel sends: a new polling thread serves it.
    g = slow_gofer(tree, gate)
    try:
        c1, c2 = connect(g), connect(g)
        r1, r2 = attach(c1), attach(c2)
        slow = c1.send(m.Twalk(r1, c1.alloc_fid(), ("slow",)))
        assert gate.entered.wait(5)
        time.sleep(0.05)  # many budgets
        assert not [t for t in threading.enumerate() if t.name.startswith("gofer-poll-") and t.name != "gofer-poll-0"]
        assert c2.getattr(r2).qid.type == m.QTDIR
        assert not slow.done
        gate.released.set()
        assert isinstance(slow.result(5), m.Rwalk)
    finally:
        gate.released.set()
        g.close()
