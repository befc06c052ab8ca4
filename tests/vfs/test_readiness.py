"""Readiness (poll events) of pipes, eventfds, ptys and host fds, and epoll's
level/edge/one-shot semantics, checked against the host kernel: the same
operations on a host pipe, eventfd, pty or epoll must give the same events.
Also the kernel's idle wait (``core.kernel.wait.idle``): it wakes for a
host fd, a deadline or a host signal, and does not spin.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pyrunsc.core.kernel.interrupt import handled, interrupt
from pyrunsc.core.kernel.time import Timekeeper
from pyrunsc.core.kernel.wait import Wait, idle
from pyrunsc.core.vfs.epoll import EPOLLET, EPOLLONESHOT, EpollOps, new_epoll
from pyrunsc.core.vfs.eventfd import EFD_NONBLOCK, EFD_SEMAPHORE, new_eventfd
from pyrunsc.core.vfs.file import FileDescription
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.host import HostFiles
from pyrunsc.core.vfs.namei import FSContext
from pyrunsc.core.vfs.pipe import PIPE_BUF, WouldBlock, new_pipe, pipefs_mount
from pyrunsc.core.vfs.poll import (
    DEFAULT_POLLMASK,
    EPOLLERR,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDNORM,
    EPOLLWRNORM,
    HOST_EVENTS,
    WaitQueue,
    host_readiness,
)
from pyrunsc.core.vfs.vfs import VirtualFilesystem

from .conftest import mount_at
from .test_dev import op

#: What to compare: the events poll can report.
SHOWN = HOST_EVENTS | EPOLLERR | EPOLLHUP


def mask(desc: FileDescription) -> int:
    return desc.ops.readiness(desc) & SHOWN


def host_mask(fd: int) -> int:
    return host_readiness(fd) & SHOWN


@pytest.fixture
def pipes() -> Iterator[tuple[tuple[FileDescription, FileDescription], tuple[int, int]]]:
    """A sandbox pipe and a host pipe, both non-blocking."""
    ours = new_pipe(pipefs_mount(), 0, 0, os.O_NONBLOCK)
    r, w = os.pipe2(os.O_NONBLOCK)
    yield ours, (r, w)
    for d in ours:
        if d.refs:
            d.dec_ref()
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_pipe_readiness_matches_the_host(
    pipes: tuple[tuple[FileDescription, FileDescription], tuple[int, int]],
) -> None:
    (r, w), (hr, hw) = pipes

    def same(what: str) -> None:
        assert (mask(r), mask(w)) == (host_mask(hr), host_mask(hw)), what

    same("empty")
    assert (mask(r), mask(w)) == (0, EPOLLOUT | EPOLLWRNORM)
    page = b"x" * PIPE_BUF
    w.write(page)
    os.write(hw, page)
    same("one page")
    while True:
        try:
            w.write(page)
        except WouldBlock:
            break
    while True:
        try:
            os.write(hw, page)
        except BlockingIOError:
            break
    same("full")
    assert not mask(w) & EPOLLOUT
    r.read(100)
    os.read(hr, 100)
    same("full less 100 bytes")
    r.read(PIPE_BUF)
    os.read(hr, PIPE_BUF)
    same("a page free")
    w.dec_ref()
    os.close(hw)
    assert mask(r) == host_mask(hr) == EPOLLIN | EPOLLRDNORM | EPOLLHUP, "no writer"
    while r.read(65536):
        pass
    while os.read(hr, 65536):
        pass
    assert mask(r) == host_mask(hr) == EPOLLHUP, "drained, no writer"


def test_pipe_write_end_without_reader_is_an_error_like_the_host(
    pipes: tuple[tuple[FileDescription, FileDescription], tuple[int, int]],
) -> None:
    (r, w), (hr, hw) = pipes
    r.dec_ref()
    os.close(hr)
    assert mask(w) == host_mask(hw) == EPOLLOUT | EPOLLWRNORM | EPOLLERR


def test_pipes_tell_their_wait_queues() -> None:
    r, w = new_pipe(pipefs_mount(), 0, 0, os.O_NONBLOCK)
    heard: list[tuple[str, int]] = []

    @dataclass(eq=False)
    class Listener:
        name: str

        def wake(self, events: int) -> None:
            heard.append((self.name, events))

    rq, wq = r.ops.wait_queues(r) or (), w.ops.wait_queues(w) or ()
    assert len(rq) == len(wq) == 1 and rq[0] is not wq[0]
    rq[0].add(Listener("readers"))
    wq[0].add(Listener("writers"))
    w.write(b"a")
    assert heard == [("readers", EPOLLIN | EPOLLRDNORM)]
    heard.clear()
    r.read(1)
    assert heard == []  # the pipe was not full: writers have nothing new
    w.dec_ref()
    assert heard == [("readers", 0), ("writers", 0)]  # a close: anything may have changed
    r.dec_ref()


def test_regular_files_and_directories_are_always_ready(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    f = vfs.open(ctx, ctx.cwd, "/f", os.O_CREAT | os.O_RDWR, 0o644)
    d = vfs.open(ctx, ctx.cwd, "/", os.O_RDONLY)
    assert mask(f) == mask(d) == DEFAULT_POLLMASK
    assert not f.ops.pollable and not d.ops.pollable
    f.dec_ref()
    d.dec_ref()


@pytest.mark.parametrize("semaphore", [False, True])
def test_eventfd_matches_the_host(semaphore: bool) -> None:
    flags = EFD_NONBLOCK | (EFD_SEMAPHORE if semaphore else 0)
    ours = new_eventfd(2, flags)
    host = os.eventfd(2, flags)

    def both(fn: Callable[[int | FileDescription], object]) -> None:
        assert fn(ours) == fn(host)
        assert mask(ours) == host_mask(host)

    try:
        assert mask(ours) == host_mask(host) == EPOLLIN | EPOLLOUT
        both(lambda f: f.read(8) if isinstance(f, FileDescription) else os.read(f, 8))
        big = (2**64 - 4 if semaphore else 2**64 - 3).to_bytes(8, "little")
        both(lambda f: f.write(big) if isinstance(f, FileDescription) else os.write(f, big))
        assert mask(ours) == EPOLLIN | EPOLLOUT
        one = (1).to_bytes(8, "little")
        both(lambda f: f.write(one) if isinstance(f, FileDescription) else os.write(f, one))
        assert mask(ours) == EPOLLIN  # 2**64 - 2: no room for 1 more
        with pytest.raises(WouldBlock):
            ours.write(one)
        both(lambda f: f.read(8) if isinstance(f, FileDescription) else os.read(f, 8))
    finally:
        ours.dec_ref()
        os.close(host)


def test_host_fds_report_the_hosts_readiness_and_park_reads() -> None:
    r, w = os.pipe()
    files = HostFiles()
    desc = files.wrap(r)
    wdesc = files.wrap(w)
    try:
        assert mask(desc) == 0 and desc.ops.pollable
        assert desc.ops.host_waits(desc, EPOLLIN) == {r: EPOLLIN}
        with pytest.raises(WouldBlock):
            desc.read(10)  # a blocking host pipe: never waited on inside the call
        os.write(w, b"data")
        assert mask(desc) == EPOLLIN | EPOLLRDNORM
        assert desc.read(10) == b"data"
        assert mask(wdesc) == EPOLLOUT | EPOLLWRNORM
        os.set_blocking(w, False)
        while True:
            try:
                os.write(w, b"y" * 65536)
            except BlockingIOError:
                break
        with pytest.raises(WouldBlock):
            wdesc.write(b"z")  # full: the writer parks instead of stalling the sentry
    finally:
        desc.dec_ref()
        wdesc.dec_ref()
        os.close(r)
        os.close(w)


def test_a_host_pipe_at_end_of_file_reads_empty() -> None:
    r, w = os.pipe()
    desc = HostFiles().wrap(r)
    os.close(w)
    assert mask(desc) == EPOLLHUP
    assert desc.read(10) == b""
    desc.dec_ref()
    os.close(r)


# ptys: the line discipline's readiness against a host pty.


def test_pty_readiness_matches_a_host_pty(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext) -> None:
    from pyrunsc.plugins.fs_dev.tty import TIOCGPTN, TIOCSPTLCK

    vfs.mkdir(ctx, ctx.cwd, "/dev", 0o755)
    mount_at(ctx, "/dev", mctx.new_superblock("devtmpfs"))
    mount_at(ctx, "/dev/pts", mctx.new_superblock("devpts"))
    m = op(vfs, ctx, "/dev/ptmx", os.O_RDWR | os.O_NONBLOCK)
    m.ops.ioctl(m, TIOCSPTLCK, 0)
    s = op(vfs, ctx, f"/dev/pts/{m.ops.ioctl(m, TIOCGPTN, 0)}", os.O_RDWR | os.O_NONBLOCK)
    hm, hs = os.openpty()
    os.set_blocking(hm, False)
    os.set_blocking(hs, False)
    try:

        def same(what: str) -> None:
            # The host's line discipline works in a kernel worker: give it time.
            deadline = time.monotonic() + 2
            while (mask(m), mask(s)) != (host_mask(hm), host_mask(hs)) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (mask(m), mask(s)) == (host_mask(hm), host_mask(hs)), what

        same("fresh")
        m.write(b"partial")
        os.write(hm, b"partial")
        same("half a line: echoed to the master, nothing for the slave")
        m.read(100)
        os.read(hm, 100)
        same("echo read")
        m.write(b"\n")
        os.write(hm, b"\n")
        same("a whole line")
        assert mask(s) & EPOLLIN
        s.read(100)
        os.read(hs, 100)
        m.read(100)
        os.read(hm, 100)
        same("line read")
        s.write(b"out\n")
        os.write(hs, b"out\n")
        same("output for the master")
        s.dec_ref()
        os.close(hs)
        deadline = time.monotonic() + 2
        while mask(m) != host_mask(hm) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mask(m) == host_mask(hm), "slave closed"
        assert mask(m) & EPOLLHUP
    finally:
        for d in (m, s):
            if d.refs:
                d.dec_ref()
        os.close(hm)
        for fd in (hs,):
            with contextlib.suppress(OSError):
                os.close(fd)


# epoll, against the host's.


class Both:
    """A sandbox epoll and a host epoll watching a sandbox pipe and a host
    pipe, driven alike; data is the host read end's fd number."""

    def __init__(self) -> None:
        self.ep = new_epoll(0)
        self.host = select.epoll()
        self.ours = new_pipe(pipefs_mount(), 0, 0, os.O_NONBLOCK)
        self.hr, self.hw = os.pipe2(os.O_NONBLOCK)

    @property
    def ops(self) -> EpollOps:
        assert isinstance(self.ep.ops, EpollOps)
        return self.ep.ops

    def add(self, events: int, end: int = 0) -> None:
        hfd = (self.hr, self.hw)[end]
        self.ops.insert(self.ours[end], hfd, events, hfd)
        self.host.register(hfd, events)

    def modify(self, events: int, end: int = 0) -> None:
        hfd = (self.hr, self.hw)[end]
        item = self.ops.find(self.ours[end], hfd)
        assert item is not None
        self.ops.modify(item, events, hfd)
        self.host.modify(hfd, events)

    def write(self, data: bytes) -> None:
        self.ours[1].write(data)
        os.write(self.hw, data)

    def read(self, n: int) -> None:
        assert self.ours[0].read(n) == os.read(self.hr, n)

    def same(self, what: str, maxevents: int = 8) -> list[tuple[int, int]]:
        got = sorted((data, ev) for ev, data in self.ops.collect(maxevents))
        want = sorted(self.host.poll(0, maxevents))
        assert got == want, what
        return got

    def close(self) -> None:
        self.ep.dec_ref()
        self.host.close()
        for d in self.ours:
            if d.refs:
                d.dec_ref()
        for fd in (self.hr, self.hw):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def both() -> Iterator[Both]:
    b = Both()
    yield b
    b.close()


def test_epoll_level_triggered_like_the_host(both: Both) -> None:
    both.add(EPOLLIN)
    assert both.same("empty") == []
    both.write(b"abc")
    assert both.same("data") == [(both.hr, EPOLLIN)]
    both.same("still data")
    both.read(3)
    assert both.same("drained") == []
    both.add(EPOLLOUT, end=1)
    both.same("write end")
    both.ours[1].dec_ref()
    os.close(both.hw)
    both.same("read end hung up, write end closed")


def test_epoll_edge_triggered_like_the_host(both: Both) -> None:
    both.add(EPOLLIN | EPOLLET)
    both.write(b"a")
    assert both.same("first write") == [(both.hr, EPOLLIN)]
    assert both.same("nothing new") == []
    both.write(b"b")
    assert both.same("a second write, never drained") == [(both.hr, EPOLLIN)]
    both.read(1)
    assert both.same("a read is no EPOLLIN edge") == []
    both.modify(EPOLLIN | EPOLLET)
    assert both.same("EPOLL_CTL_MOD looks again") == [(both.hr, EPOLLIN)]


def test_epoll_oneshot_like_the_host(both: Both) -> None:
    both.add(EPOLLIN | EPOLLONESHOT)
    both.write(b"a")
    assert both.same("armed") == [(both.hr, EPOLLIN)]
    both.write(b"b")
    assert both.same("disarmed") == []
    both.modify(EPOLLIN | EPOLLONESHOT)
    assert both.same("re-armed") == [(both.hr, EPOLLIN)]


def test_epoll_edge_triggered_write_end_like_the_host(both: Both) -> None:
    both.add(EPOLLOUT | EPOLLET, end=1)
    assert both.same("room") == [(both.hw, EPOLLOUT)]
    assert both.same("no new room") == []
    while True:
        try:
            both.write(b"x" * PIPE_BUF)
        except (WouldBlock, BlockingIOError):
            break
    both.same("full")
    both.read(PIPE_BUF)
    both.same("a page freed: a new edge")


def test_epoll_maxevents_takes_ready_items_in_turn() -> None:
    ep = new_epoll(0)
    ops = ep.ops
    assert isinstance(ops, EpollOps)
    pipes = [new_pipe(pipefs_mount(), 0, 0) for _ in range(3)]
    for i, (r, w) in enumerate(pipes):
        ops.insert(r, i, EPOLLIN, i)
        w.write(b"x")
    assert [d for _, d in ops.collect(2)] == [0, 1]
    assert [d for _, d in ops.collect(2)] == [2, 0]
    assert [d for _, d in ops.collect(8)] == [1, 2, 0]
    ep.dec_ref()
    for r, w in pipes:
        r.dec_ref()
        w.dec_ref()


def test_epoll_forgets_a_file_at_its_last_close_and_frees_items_at_its_own() -> None:
    ep = new_epoll(0)
    ops = ep.ops
    assert isinstance(ops, EpollOps)
    r, w = new_pipe(pipefs_mount(), 0, 0)
    queue = (r.ops.wait_queues(r) or (WaitQueue(),))[0]
    ops.insert(r, 3, EPOLLIN, 3)
    r.inc_ref()  # a dup
    r.dec_ref()
    assert ops.find(r, 3) is not None and len(queue) == 1
    r.dec_ref()  # the last reference
    assert ops.find(r, 3) is None and len(queue) == 0
    ops.insert(w, 4, EPOLLOUT, 4)
    wq = (w.ops.wait_queues(w) or (WaitQueue(),))[0]
    ep.dec_ref()
    assert len(wq) == 0 and not ops.items
    w.dec_ref()


def test_epoll_nesting_limits() -> None:
    eps = [new_epoll(0) for _ in range(7)]
    chain = [e.ops for e in eps]
    assert all(isinstance(c, EpollOps) for c in chain)
    a, b = chain[0], chain[1]
    assert isinstance(a, EpollOps) and isinstance(b, EpollOps)
    a.insert(eps[1], 1, EPOLLIN, 0)
    assert b.would_loop(a)  # a loop
    depth = 1
    for i in range(1, 6):
        parent = chain[i]
        assert isinstance(parent, EpollOps)
        child = chain[i + 1]
        assert isinstance(child, EpollOps)
        if parent.would_loop(child):
            break
        parent.insert(eps[i + 1], i + 1, EPOLLIN, 0)
        depth += 1
    assert depth == 4  # five epolls in a chain, as Linux 6.x allows
    for e in eps:
        e.dec_ref()


# The kernel's idle wait.


@dataclass(eq=False)
class Parked:
    """What ``idle`` looks at on a parked task."""

    wait: Wait | None = None
    wake_at: tuple[int, int] | None = None


def timed(fn: Callable[[], None]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def test_idle_wakes_when_a_host_fd_a_call_waits_on_is_ready() -> None:
    r, w = os.pipe()
    try:
        threading.Timer(0.1, os.write, (w, b"x")).start()
        waited = timed(lambda: idle(Timekeeper(), [Parked(Wait(host_fds={r: select.POLLIN}))]))
        assert 0.08 <= waited < 0.5
    finally:
        os.close(r)
        os.close(w)


def test_idle_sleeps_until_the_earliest_deadline() -> None:
    tk = Timekeeper()
    now = tk.monotonic()
    parked = [Parked(Wait(deadline=(1, now + 300_000_000))), Parked(wake_at=(1, now + 60_000_000))]
    waited = timed(lambda: idle(tk, parked))
    assert 0.05 <= waited < 0.25
    assert timed(lambda: idle(tk, [Parked(Wait(deadline=(1, now - 1)))])) < 0.01


def test_idle_is_cut_short_by_a_host_signal_and_does_not_spin() -> None:
    old = signal.signal(signal.SIGUSR1, lambda *_: interrupt())
    try:
        threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        cpu = time.process_time()
        waited = timed(lambda: idle(Timekeeper(), [Parked()]))
        assert 0.1 <= waited < 0.9
        assert time.process_time() - cpu < 0.1
    finally:
        handled()
        signal.signal(signal.SIGUSR1, old)


def test_epoll_edge_triggered_on_a_host_fd_waits_only_for_what_it_has_not() -> None:
    """An edge-triggered item on a host pipe that was reported and not read
    must not make the idle wait poll for EPOLLIN (it would return at once
    and spin); once drained it waits for EPOLLIN again, and new input is a
    new edge."""
    r, w = os.pipe()
    desc = HostFiles().wrap(r)
    ep = new_epoll(0)
    ops = ep.ops
    assert isinstance(ops, EpollOps)
    try:
        ops.insert(desc, 5, EPOLLIN | EPOLLET, 5)
        assert ops.host_waits(ep, 0) == {r: EPOLLIN}
        os.write(w, b"x")
        assert ops.collect(4) == [(EPOLLIN, 5)]
        assert ops.collect(4) == []
        assert ops.host_waits(ep, 0) == {r: 0}  # only a hang-up or error would be news
        os.read(r, 1)
        assert ops.host_waits(ep, 0) == {r: EPOLLIN}
        os.write(w, b"y")
        assert ops.collect(4) == [(EPOLLIN, 5)]
        os.close(w)
        assert ops.collect(4) == [(EPOLLIN | EPOLLHUP, 5)]
        assert ops.host_waits(ep, 0) == {}  # hung up for good: nothing to wait for
    finally:
        ep.dec_ref()
        desc.dec_ref()
        os.close(r)
        with contextlib.suppress(OSError):
            os.close(w)
