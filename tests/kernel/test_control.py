"""The control channel (core/control.py) with a real kernel, real tasks over
a memory file and a real socket: the answer is made in the "run loop" (this
test's main thread calling ``Kernel.run_calls``, as the loop does at the top
of each turn) or, while the main thread waits in a blocking host call, by
the wake signal's handler, without disturbing that call. The whole path
through ``pyrunsc run`` and ``pyrunsc ps`` is in test_programs.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from pyrunsc.core import control
from pyrunsc.core.arch import Registers
from pyrunsc.core.errors import PyrunscError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.kernel.interrupt import Interrupted, blocking
from pyrunsc.core.kernel.kernel import ExitStatus, Kernel
from pyrunsc.core.kernel.task import Task, ThreadGroup
from pyrunsc.core.mm.elf import ELFInfo, build_stack
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.mm.mm import MemoryManager
from pyrunsc.core.state import ContainerState, StateStore
from pyrunsc.core.vfs.fdtable import FDTable
from pyrunsc.core.vfs.namei import FSContext

CID = "c1"


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """A kernel with no platform and no VFS: the sentry's bookkeeping only."""
    mf = MemoryFile(size=1 << 30)
    yield Kernel(None, mf, None, None)  # type: ignore[arg-type]
    mf.close()


def add_task(kernel: Kernel, tid: int, argv: list[str], *, parent: Task | None = None, thread_of: Task | None = None,
             uid: int = 0) -> Task:
    """A task whose memory holds ``argv`` as the ELF loader lays it out."""
    if thread_of is not None:
        mm = thread_of.mm
        mm.users += 1
    else:
        mm = MemoryManager(kernel.memfile)
        build_stack(mm, ELFInfo(entry=0x400100, bias=0, phdr_addr=0x400040, phnum=2, end=0x403000),
                    [os.fsencode(a) for a in argv], [b"PATH=/bin"], b"/bin/busybox")
    creds = Credentials.for_user(uid, uid) if uid else Credentials()
    task = Task(kernel, tid, Registers(), mm, FSContext(None, None, None, creds), FDTable(),  # type: ignore[arg-type]
                comm=os.path.basename(argv[0]))
    if thread_of is not None:
        task.tg = thread_of.tg
        task.tg.tasks.append(task)
    else:
        task.tg = ThreadGroup(tid, task, [task], parent=parent.tg if parent else None,
                              start_time=kernel.timekeeper.monotonic())
    kernel.tasks[tid] = task
    return task


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    """A state folder whose container CID "runs" in this process (so that
    its state says running); its sentry is whatever the test starts."""
    s = StateStore(tmp_path / "root")
    me = psutil.Process()
    s.create(ContainerState(id=CID, bundle=str(tmp_path), status="running", pid=me.pid, start_time=me.create_time()))
    return s


@pytest.fixture
def server(kernel: Kernel, store: StateStore) -> Iterator[control.ControlServer]:
    srv = control.ControlServer(kernel, store.path(CID) / control.SOCKET_NAME)
    srv.start()
    yield srv
    srv.close()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; the dict gets its ``result`` or ``error`` and ``at`` (monotonic)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except Exception as e:
            out["error"] = e
        out["at"] = time.monotonic()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def serve_until_done(kernel: Kernel, thread: threading.Thread, timeout: float = 10) -> None:
    """Be the run loop: run the calls handed in until ``thread`` ends."""
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        assert time.monotonic() < deadline, "no answer"
        kernel.run_calls()
        time.sleep(0.001)


def raw(path: Path, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1
    result: dict[str, Any] = json.loads(answer)
    return result


# What ps answers.


def test_process_list(kernel: Kernel) -> None:
    init = add_task(kernel, 1, ["/bin/sh", "-c", "sleep 30 & wait"])
    sleeper = add_task(kernel, 2, ["sleep", "30"], parent=init, uid=1000)
    worker = add_task(kernel, 3, ["/bin/threads", "é\udcff"], parent=init)
    add_task(kernel, 4, ["/bin/threads"], thread_of=worker)
    stopped = add_task(kernel, 5, ["cat"], parent=init)
    zombie = add_task(kernel, 6, ["true"], parent=init)
    kernel._blocked += [init, sleeper]
    kernel._runnable += [worker]
    stopped.tg.stop_signal = signal.SIGTSTP
    zombie.mm.release()
    zombie.exit_status = zombie.tg.exit_status = ExitStatus(code=0)
    kernel.current = init  # the last one served, parked since: the loop answers with no task current

    kernel.call_in_loop(lambda: out.extend(control.process_list(kernel)))
    out: list[dict[str, Any]] = []
    kernel.run_calls()
    assert [(p["pid"], p["ppid"], p["uid"], p["threads"], p["state"], p["cmd"], p["args"]) for p in out] == [
        (1, 0, 0, [1], "S", "sh", ["/bin/sh", "-c", "sleep 30 & wait"]),
        (2, 1, 1000, [2], "S", "sleep", ["sleep", "30"]),
        (3, 1, 0, [3, 4], "R", "threads", ["/bin/threads", "é\\xff"]),  # not UTF-8: escaped
        (5, 1, 0, [5], "T", "cat", ["cat"]),
        (6, 1, 0, [6], "Z", "true", []),  # a zombie's memory is gone
    ]
    assert kernel.current is init
    for p in out:
        started = datetime.fromisoformat(p["started"])
        assert started.tzinfo is not None and abs((datetime.now(UTC) - started).total_seconds()) < 30
    assert json.loads(json.dumps(out)) == out  # what goes over the socket


def test_format_stime() -> None:
    now = datetime(2024, 6, 15, 14, 30)
    assert control.format_stime(datetime(2024, 6, 15, 9, 5), now) == "09:05"
    assert control.format_stime(datetime(2024, 2, 3, 9, 5), now) == "Feb03"
    assert control.format_stime(datetime(2023, 12, 31, 23, 59), now) == "2023"


def test_command_line() -> None:
    assert control.command_line({"args": ["sleep", "30"], "cmd": "sleep", "state": "S"}) == "sleep 30"
    assert control.command_line({"args": [], "cmd": "sleep", "state": "Z"}) == "[sleep] <defunct>"


# The channel.


def test_request_answered_by_the_loop(kernel: Kernel, store: StateStore, server: control.ControlServer) -> None:
    add_task(kernel, 1, ["sh"])
    sock = store.path(CID) / control.SOCKET_NAME
    assert sock.is_socket() and sock.stat().st_mode & 0o777 == 0o600
    thread, out = in_thread(lambda: control.request(store, CID, "ps"))
    time.sleep(0.2)
    assert "result" not in out  # nothing reads the tasks but the loop
    serve_until_done(kernel, thread)
    assert [p["pid"] for p in out["result"]] == [1]


def test_request_answered_during_a_blocking_call(kernel: Kernel, store: StateStore,
                                                 server: control.ControlServer) -> None:
    """The sentry waits in a host call (a read of the terminal, the idle
    sleep): the wake signal's handler answers there, and the call goes on to
    its end undisturbed (no EINTR)."""
    add_task(kernel, 1, ["sh"])
    thread, out = in_thread(lambda: control.request(store, CID, "ps"))
    start = time.monotonic()
    with blocking():
        time.sleep(1.5)
    end = time.monotonic()
    thread.join(5)
    assert [p["pid"] for p in out["result"]] == [1]
    assert out["at"] - start < 1.0  # answered while the call went on
    assert end - start >= 1.5


def test_a_host_signal_during_an_answer(kernel: Kernel, server: control.ControlServer) -> None:
    """A forwarded host signal aborting the blocking call an answer is made
    in (Interrupted) goes through; the request is made again at the loop's
    next turn, and the calls behind it wait for that turn."""
    tries: list[int] = []

    def handler(k: Kernel) -> str:
        tries.append(1)
        if len(tries) == 1:
            raise Interrupted
        return "answer"

    thread, out = in_thread(lambda: server.ask(handler))
    deadline = time.monotonic() + 5
    while not kernel._calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    later: list[str] = []
    kernel.call_in_loop(lambda: later.append("ran"))
    with pytest.raises(Interrupted):
        kernel.run_calls()
    assert len(tries) == 1 and not later and thread.is_alive()
    serve_until_done(kernel, thread)
    assert out["result"] == {"result": "answer"} and later == ["ran"] and len(tries) == 2


def test_bad_requests(kernel: Kernel, server: control.ControlServer) -> None:
    assert raw(server.path, b'{"request": "reboot"}\n') == {"error": "unknown request 'reboot'; known: checkpoint, ps"}
    assert raw(server.path, b"not json\n")["error"].startswith("malformed request")
    assert raw(server.path, b'["ps"]\n')["error"] == "unknown request None; known: checkpoint, ps"
    # The server goes on serving.
    thread, out = in_thread(lambda: raw(server.path, b'{"request": "ps"}\n'))
    serve_until_done(kernel, thread)
    assert out["result"] == {"result": []}


def test_close_fails_waiting_requests_and_removes_the_socket(kernel: Kernel, store: StateStore,
                                                             server: control.ControlServer) -> None:
    thread, out = in_thread(lambda: control.request(store, CID, "ps"))
    time.sleep(0.2)  # waiting for a loop that never answers
    server.close()
    thread.join(5)
    assert not thread.is_alive()
    assert str(out["error"]) == f"container {CID!r}: the sandbox stopped before answering"
    assert not server.path.exists()
    assert server._thread is not None and not server._thread.is_alive()
    assert signal.getsignal(control.WAKE_SIGNAL) == signal.SIG_IGN
    # Nobody answers any more: the container counts as not running.
    with pytest.raises(PyrunscError, match=f"container '{CID}' is not running: no sandbox answers"):
        control.request(store, CID, "ps")


def test_a_long_state_path(kernel: Kernel, tmp_path: Path) -> None:
    """A state folder deeper than sun_path allows (108 bytes) still works."""
    store = StateStore(tmp_path / ("d" * 100) / "root")
    me = psutil.Process()
    store.create(ContainerState(id=CID, bundle=".", status="running", pid=me.pid, start_time=me.create_time()))
    path = store.path(CID) / control.SOCKET_NAME
    assert len(os.fsencode(path)) > 108
    srv = control.ControlServer(kernel, path)
    srv.start()
    try:
        thread, out = in_thread(lambda: control.request(store, CID, "ps"))
        serve_until_done(kernel, thread)
        assert out["result"] == []
    finally:
        srv.close()
    assert not path.exists()


def test_client_errors_name_the_container(store: StateStore, tmp_path: Path) -> None:
    with pytest.raises(PyrunscError, match="container 'nosuch' does not exist"):
        control.request(store, "nosuch", "ps")
    # The state says running, but no sentry listens.
    with pytest.raises(PyrunscError, match=f"container '{CID}' is not running: no sandbox answers on "):
        control.request(store, CID, "ps")
    state = store.load(CID)
    state.status = "stopped"
    store.save(state)
    with pytest.raises(PyrunscError, match=f"container '{CID}' is not running \\(status stopped\\)"):
        control.request(store, CID, "ps")


def test_host_usage_of_this_process(store: StateStore) -> None:
    """psutil's figures for the "sentry" (this process) and its children."""
    child = psutil.Popen(["sleep", "5"])
    try:
        usage = control.host_usage(store.load(CID))
    finally:
        child.kill()
        child.wait()
    roles = [(r["role"], r["pid"]) for r in usage["processes"]]
    assert roles[0] == ("sentry", os.getpid()) and ("stub", child.pid) in roles
    me = usage["processes"][0]
    assert me["rss"] > 10 << 20 and me["cpu_time"] > 0
    assert usage["rss"] == sum(r["rss"] for r in usage["processes"])
    assert usage["pss"] is None or 0 < usage["pss"] <= usage["rss"]
    assert usage["cpu_percent"] > 0 and usage["cpu_time"] >= me["cpu_time"]
