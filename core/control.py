"""The control channel: requests to a running sandbox's sentry, such as the
one behind ``pyrunsc ps`` (the idea of gVisor's ``runsc/boot/controller.go``
and ``pkg/sentry/control``; our own small protocol).

Where: the sentry listens on ``<root>/<id>/control.sock``, a Unix stream
socket (mode 0600) in the container's state folder (mode 0700: only its
owner may connect), from just before its run loop starts until the loop
ends; it then removes the socket. A sandbox process killed outright leaves
the file behind: the container's state then says ``stopped`` anyway, a
client meets ECONNREFUSED (reported as "not running"), and ``pyrunsc
delete`` removes the file with the folder.

Protocol: one request per connection. The client sends one JSON object on
one line, ``{"request": NAME}`` (with ``"args": {...}`` for a request that
takes some); the sentry answers with one line, ``{"result": ...}`` or
``{"error": MESSAGE, "exit_code": N}`` (an unknown request, a malformed
line, a sandbox that is stopping or busy, bad input: N is the exit status
the client should give), and closes. A long request may first send progress
lines ``{"progress": [...]}`` (:class:`SocketProgress`). Requests:

``ps``
    The sandbox's processes, live or zombie, by PID (:func:`process_list`)::

        [{"uid": 0, "pid": 1, "ppid": 0, "threads": [1], "state": "S",
          "started": "2025-01-02T03:04:05.678901+00:00", "cmd": "sh",
          "args": ["sh", "-c", "sleep 30 & wait"]}, ...]

``checkpoint``
    Write an image of the sandbox (:func:`.checkpoint.save.checkpoint`);
    args ``image_path`` (absolute), ``key`` (hex), ``compression`` (``none``
    or ``zstd``), ``leave_running``. It runs only at a safe point of the run
    loop (no task in a system call); the answer is a summary
    (``image``, ``memory_saved``, ``kernel_bytes``, ``processes``, ``stopped``).

Where the answer is made: the kernel's tasks belong to the run loop, and
the server thread never reads them. It hands the work to the loop
(:meth:`Kernel.call_in_loop`), which runs it at the top of its next turn,
and waits for the answer. The loop comes round after every system call and
within 50 ms when every task is parked. So that the answer comes at once
also while the sentry waits in a blocking host call (a read of the caller's
terminal, a sleep), the server thread sends :data:`WAKE_SIGNAL` to the
sentry's main thread: its handler does the work right there if the sentry
is in such a call (:func:`~.kernel.interrupt.in_blocking_call`: the
sentry's state is whole there), and the call goes on undisturbed (the task
sees no EINTR); otherwise it interrupts the task running application code
(``Context.interrupt``), so that the loop comes round even when that task
computes without system calls. A loop that still does not answer within
:data:`ANSWER_TIMEOUT` seconds fails the request with an error that says so.

The client side is here too: :func:`request`, and :func:`ps_report`, what
``pyrunsc ps`` shows (the processes with their ``stime``, and the host's
resources the sandbox uses, from psutil: :func:`host_usage`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .checkpoint.progress import Progress
from .errors import PyrunscError, SyscallError
from .kernel.interrupt import Interrupted, abort, in_blocking_call

if TYPE_CHECKING:
    from .checkpoint.save import SandboxFacts
    from .kernel.kernel import Kernel
    from .kernel.task import Task
    from .state import ContainerState, StateStore

log = logging.getLogger("pyrunsc.control")

#: The socket's name in the container's state folder.
SOCKET_NAME = "control.sock"
#: Sent by the server thread to the sentry's main thread to have a request
#: answered during a blocking host call (a real-time signal nothing else
#: uses; sent from outside, by ``pyrunsc kill``, it only makes the sentry
#: look for requests).
WAKE_SIGNAL = signal.SIGRTMIN + 1
#: How long the server waits for the run loop to answer, in seconds.
ANSWER_TIMEOUT = 10.0
#: How long a client waits for the answer, in seconds.
CLIENT_TIMEOUT = ANSWER_TIMEOUT + 5.0
#: How often a long request's progress goes to the client, in seconds.
PROGRESS_INTERVAL = 0.1
#: The longest request or answer line, in bytes.
MAX_LINE = 16 << 20
#: The most of a process's argv that ``ps`` reads (Linux ``MAX_ARG_STRLEN``).
MAX_ARGS = 128 << 10
#: sun_path's size: longer socket paths are reached through their folder.
SUN_PATH_MAX = 108

RequestHandler = Callable[["Kernel"], Any]


# The sentry's side.


def read_argv(task: Task) -> list[str]:
    """``task``'s argv as its memory holds it between ``arg_start`` and
    ``arg_end`` (what /proc/PID/cmdline shows); [] when there is none to
    read (a zombie, whose memory is gone). Bytes that are not UTF-8 are
    shown as backslash escapes."""
    mm = task.mm
    if mm is None or not mm.arg_start or mm.arg_end <= mm.arg_start:
        return []
    try:
        data = mm.copy_in(mm.arg_start, min(mm.arg_end - mm.arg_start, MAX_ARGS))
    except SyscallError:
        return []
    data = data.rstrip(b"\0")
    return [a.decode("utf-8", "backslashreplace") for a in data.split(b"\0")] if data else []


def process_list(kernel: Kernel) -> list[dict[str, Any]]:
    """The ``ps`` request (gVisor ``control.Processes``): one entry per
    process (thread group) of ``kernel``, live or zombie, by PID.

    Each entry: ``uid`` (the leader's effective uid), ``pid``, ``ppid`` (0
    for init), ``threads`` (the TIDs of its tasks), ``state`` (``Z`` once the
    process has exited, else the state :meth:`Kernel.task_state` gives its
    first live task: ``R``, ``S`` or ``T``), ``started`` (wall-clock start,
    ISO 8601 in UTC), ``cmd`` (the command name, /proc/PID/comm) and
    ``args`` (:func:`read_argv` of a live task; [] for a zombie). gVisor's
    ``c``, ``time`` and ``tty`` are left out: the kernel keeps no CPU time
    per task and no controlling terminal. Run-loop thread only.
    """
    realtime, monotonic = kernel.timekeeper.realtime(), kernel.timekeeper.monotonic()
    out = []
    for tid, task in sorted(kernel.tasks.items()):
        tg = task.tg
        if tid != tg.tgid:
            continue  # a thread: listed with its process
        live = tg.live_tasks
        if tg.exit_status is not None or not live:
            state, shown = "Z", task
        else:
            shown = task if task in live else live[0]
            state = kernel.task_state(shown)
        started_ns = realtime - (monotonic - tg.start_time)
        out.append({
            "uid": task.creds.euid,
            "pid": tg.tgid,
            "ppid": tg.parent.tgid if tg.parent is not None else 0,
            "threads": sorted(t.tid for t in tg.tasks),
            "state": state,
            "started": datetime.fromtimestamp(started_ns / 1e9, UTC).isoformat(),
            "cmd": shown.comm,
            "args": read_argv(shown) if state != "Z" else [],
        })
    return out


#: The requests the sentry answers, by name.
REQUESTS: dict[str, RequestHandler] = {"ps": process_list}


class _Call:
    """One request handed to the run loop: :meth:`run` makes the answer
    there; the server thread waits on ``started`` and ``done``. A call
    that needs a safe point (``safe_point``: no task in a system call, as a
    checkpoint does) that comes during a blocking host call of a system
    call is put back for the loop's next turn."""

    def __init__(self, kernel: Kernel, handler: RequestHandler, *, safe_point: bool = False) -> None:
        self.kernel = kernel
        self.handler = handler
        self.safe_point = safe_point
        self.started = threading.Event()
        self.done = threading.Event()
        self.result: Any = None
        self.error: str | None = None
        self.exit_code = 1

    def run(self) -> None:
        if self.done.is_set():
            return
        if self.safe_point and not self.kernel.at_safe_point:
            self.kernel.call_in_loop(self.run)
            return
        self.started.set()
        try:
            self.result = self.handler(self.kernel)
        except Interrupted:
            # A forwarded signal aborts the blocking call this ran in: made again at the loop's next turn.
            self.kernel.call_in_loop(self.run)
            raise
        except PyrunscError as e:
            self.error, self.exit_code = str(e), e.exit_code  # bad input, a full disk: said as it is
        except Exception as e:
            log.exception("control request %s failed", getattr(self.handler, "__name__", self.handler))
            self.error = f"internal error: {type(e).__name__}: {e}"
        self.done.set()

    def fail(self, message: str) -> None:
        if self.done.is_set():
            # Answered already (both run on the main thread): the answer
            # stands. A checkpoint that stops the sandbox is answered just
            # before the loop ends and ControlServer.close() fails what is
            # still pending; its waiting thread may not have collected it yet.
            return
        self.error = message
        self.started.set()
        self.done.set()


class SocketProgress(Progress):
    """Progress sent to the client as lines ``{"progress": [event, ...]}``
    before the answer: ``["start", label, total]``, ``["advance", n]`` (at
    most every :data:`PROGRESS_INTERVAL` seconds, summed), ``["finish"]``.

    A client that went away (the checkpoint command killed) aborts the work:
    the next progress report raises PyrunscError, so that the image being
    written is abandoned (nothing is left at its path) and the sandbox goes
    on as it was."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self._pending = 0
        self._last = 0.0

    def _send(self, event: list[Any]) -> None:
        try:
            self.conn.sendall(json.dumps({"progress": event}).encode() + b"\n")
        except OSError as e:
            raise PyrunscError(f"the client went away ({e.strerror or e}); checkpoint abandoned") from None

    def start(self, label: str, total: int) -> None:
        self._send(["start", label, total])

    def advance(self, n: int) -> None:
        self._pending += n
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._send(["advance", self._pending])
            self._pending = 0

    def finish(self) -> None:
        # The work is done by now: a client gone at this point changes nothing.
        with contextlib.suppress(PyrunscError):
            if self._pending:
                self._send(["advance", self._pending])
                self._pending = 0
            self._send(["finish"])


class ControlServer:
    """The sentry's end of the control channel for ``kernel``, on ``path``.

    :meth:`start` (main thread, before the run loop) binds the socket and
    starts a daemon thread that serves one connection at a time;
    :meth:`close` (main thread, after the run loop) fails any request still
    waiting, stops the thread and removes the socket. OSError from
    :meth:`start` when the socket cannot be made.
    """

    def __init__(self, kernel: Kernel, path: Path, facts: SandboxFacts | None = None) -> None:
        self.kernel = kernel
        self.path = Path(path)
        #: The container's facts a checkpoint's header needs; without them
        #: the sandbox answers no ``checkpoint`` request.
        self.facts = facts
        self._lock = threading.Lock()
        self._closed = False
        self._pending: set[_Call] = set()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._main = threading.main_thread().ident or 0

    def start(self) -> None:
        signal.signal(WAKE_SIGNAL, self._on_wake)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # left by a sandbox process killed outright
            with _sun_path(self.path) as address:
                sock.bind(address)
            os.chmod(self.path, 0o600)
            sock.listen(8)
        except BaseException:
            sock.close()
            signal.signal(WAKE_SIGNAL, signal.SIG_IGN)
            raise
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="pyrunsc-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
        for call in pending:
            call.fail("the sandbox stopped before answering")
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # accept() returns
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        # Not SIG_DFL: a wake sent just before closing must not end the process.
        signal.signal(WAKE_SIGNAL, signal.SIG_IGN)

    def _on_wake(self, _signo: int, _frame: object) -> None:
        """WAKE_SIGNAL's handler (main thread): answer now if the sentry
        waits in a blocking host call, with signals blocked meanwhile, so
        that a forwarded signal aborts the host call only after the answer
        is made. Otherwise the loop answers at its next turn, and the task
        running application code, if any, is interrupted so that the turn
        comes soon: every context is asked (only the running one is
        stopped; the others' next switch returns at once, costing a turn)."""
        if not in_blocking_call():
            for task in list(self.kernel.tasks.values()):
                if task.exit_status is None and task.context is not None:  # (an ended task's may be reused)
                    task.context.interrupt()
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self.kernel.run_calls()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if self.kernel.halted is not None:
            # A checkpoint that stops the sandbox ran here, in the run loop's
            # idle wait (its one safe point inside a blocking call). Without
            # this the wait went on until it timed out (up to IDLE_MAX, 1 s)
            # before the loop saw the halt, and `pyrunsc checkpoint` waited
            # that long for the sandbox to stop. No task runs after a halt,
            # so no system call sees the EINTR.
            abort()

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._closed:
                    return
                log.warning("control socket %s: accept failed; no more requests", self.path, exc_info=True)
                return
            with conn:
                try:
                    self._handle(conn)
                except OSError:
                    pass  # the client went away
                except Exception:
                    log.exception("control request failed")

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT)
        try:
            message = json.loads(_LineReader(conn).line())
            name = message["request"] if isinstance(message, dict) else None
        except (ValueError, KeyError) as e:
            answer: dict[str, Any] = {"error": f"malformed request: {e}"}
        else:
            if name == "checkpoint":
                answer = self._checkpoint(message.get("args"), conn)
            elif isinstance(name, str) and name in REQUESTS:
                answer = self.ask(REQUESTS[name])
            else:
                known = ", ".join(sorted([*REQUESTS, "checkpoint"]))
                answer = {"error": f"unknown request {name!r}; known: {known}"}
        conn.sendall(json.dumps(answer).encode() + b"\n")

    def _checkpoint(self, args: Any, conn: socket.socket) -> dict[str, Any]:
        """The ``checkpoint`` request: ``args`` are ``image_path`` (absolute),
        ``key`` (hex), ``compression`` and ``leave_running``; progress goes
        to the client as it is made (:class:`SocketProgress`)."""
        from .checkpoint.save import CheckpointRequest, checkpoint

        facts = self.facts
        if facts is None:
            return {"error": "this sandbox cannot be checkpointed"}
        try:
            if not isinstance(args, dict):
                raise TypeError("no arguments")
            req = CheckpointRequest(image_path=str(args["image_path"]), key=bytes.fromhex(args["key"]),
                                    compression=str(args.get("compression", "none")),
                                    leave_running=bool(args.get("leave_running", False)))
            if not os.path.isabs(req.image_path) or req.compression not in ("none", "zstd"):
                raise ValueError(f"bad image path or compression: {req.image_path!r}, {req.compression!r}")
        except (KeyError, TypeError, ValueError) as e:
            return {"error": f"malformed checkpoint request: {e}"}
        progress = SocketProgress(conn)
        return self.ask(lambda kernel: checkpoint(kernel, facts, req, progress), safe_point=True, long=True)

    def ask(self, handler: RequestHandler, *, safe_point: bool = False, long: bool = False) -> dict[str, Any]:
        """``handler(kernel)`` made in the run loop: ``{"result": ...}``, or
        ``{"error": ...}`` when the sandbox stops or does not start on it
        within :data:`ANSWER_TIMEOUT`. Unless ``long``, the answer too must
        come within that time. ``safe_point``: see :class:`_Call`. Any
        thread but the main one."""
        call = _Call(self.kernel, handler, safe_point=safe_point)
        with self._lock:
            if self._closed:
                return {"error": "the sandbox is stopping"}
            self._pending.add(call)
            self.kernel.call_in_loop(call.run)
            signal.pthread_kill(self._main, WAKE_SIGNAL)
        try:
            if not call.started.wait(ANSWER_TIMEOUT) or not call.done.wait(None if long else ANSWER_TIMEOUT):
                return {"error": f"the sandbox's kernel did not answer within {ANSWER_TIMEOUT:g} s"}
        finally:
            with self._lock:
                self._pending.discard(call)
        if call.error is not None:
            return {"error": call.error, "exit_code": call.exit_code}
        return {"result": call.result}


# Both sides.


@contextlib.contextmanager
def _sun_path(path: Path) -> Iterator[str]:
    """``path`` as bind(2) and connect(2) take it: itself, or when it does
    not fit in sun_path, the same name through ``/proc/self/fd/N`` of its
    folder (Linux follows the magic link)."""
    if len(os.fsencode(path)) < SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class _LineReader:
    """Lines from a socket, one at a time (ValueError past :data:`MAX_LINE`);
    b"" at the end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
            if len(self.buf) > MAX_LINE:
                raise ValueError(f"longer than {MAX_LINE} bytes")
        line, _, self.buf = self.buf.partition(b"\n")
        return line


# The client's side.


def request(store: StateStore, cid: str, name: str, args: dict[str, Any] | None = None, *,
            progress: Progress | None = None, timeout: float = CLIENT_TIMEOUT) -> Any:
    """Send request ``name`` (with ``args``, if any) to container ``cid``'s
    sentry; its result. Progress lines the sentry sends first go to
    ``progress``. ``timeout`` bounds the wait for each line, in seconds.

    PyrunscError (exit status 1), naming the container: it does not exist,
    it is not running (its state, or no sentry answers on the socket), the
    sentry answers with an error or not within ``timeout``.
    """
    state = store.load(cid)
    if state.status != "running":
        raise PyrunscError(f"container {cid!r} is not running (status {state.status})")
    path = store.path(cid) / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    message: dict[str, Any] = {"request": name}
    if args is not None:
        message["args"] = args
    try:
        with _sun_path(path) as address:
            sock.connect(address)
        sock.sendall(json.dumps(message).encode() + b"\n")
        reader = _LineReader(sock)
        while True:
            line = reader.line()
            if not line.startswith(b'{"progress"'):
                break
            if progress is not None:
                _show_progress(progress, json.loads(line)["progress"])
    except (FileNotFoundError, ConnectionRefusedError):
        raise PyrunscError(f"container {cid!r} is not running: no sandbox answers on {path}") from None
    except TimeoutError:
        raise PyrunscError(f"container {cid!r}: the sandbox did not answer within {timeout:g} s") from None
    except OSError as e:
        raise PyrunscError(f"container {cid!r}: control socket {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise PyrunscError(f"container {cid!r}: bad answer from the sandbox: {e}") from None
    finally:
        sock.close()
    if not line:
        raise PyrunscError(f"container {cid!r} is not running: the sandbox closed the connection")
    try:
        answer = json.loads(line)
    except ValueError as e:
        raise PyrunscError(f"container {cid!r}: bad answer from the sandbox: {e}") from None
    if not isinstance(answer, dict) or ("error" not in answer and "result" not in answer):
        raise PyrunscError(f"container {cid!r}: bad answer from the sandbox: {line[:200]!r}")
    if "error" in answer:
        err = PyrunscError(f"container {cid!r}: {answer['error']}")
        code = answer.get("exit_code")
        if isinstance(code, int) and code > 0:
            err.exit_code = code
        raise err
    return answer["result"]


def _show_progress(progress: Progress, event: Any) -> None:
    if not isinstance(event, list) or not event:
        return
    if event[0] == "start" and len(event) == 3:
        progress.start(str(event[1]), int(event[2]))
    elif event[0] == "advance" and len(event) == 2:
        progress.advance(int(event[1]))
    elif event[0] == "finish":
        progress.finish()


def format_stime(started: datetime, now: datetime) -> str:
    """ps's STIME (procps, gVisor ``formatStartTime``): ``HH:MM`` for a start
    today, ``MonDD`` earlier this year, else the year."""
    if started.year != now.year:
        return f"{started.year}"
    if started.timetuple().tm_yday != now.timetuple().tm_yday:
        return started.strftime("%b%d")
    return started.strftime("%H:%M")


def _pss(p: psutil.Process) -> int | None:
    try:
        return int(p.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):
        return None


def host_usage(state: ContainerState) -> dict[str, Any]:
    """The host's resources container ``state`` uses, from psutil::

        {"cpu_percent": 1.5, "cpu_time": 0.61, "rss": 88604672, "pss": 61263872,
         "processes": [{"pid": 4242, "role": "sentry", "cpu_time": 0.52,
                        "rss": 61181952, "pss": 40263680}, ...]}

    The processes are the sandbox process (``sentry``), its children (the
    ptrace platform's ``stub`` processes) and the ``gofer``. ``cpu_time`` is
    user + system seconds (the sentry's includes the stubs it has reaped);
    ``cpu_percent`` is the total over the sandbox's lifetime, as ps's %CPU
    (above 100 when several CPUs were busy); ``rss`` is the sum of the
    resident sets, in bytes, counting pages they share (the memory file)
    once per process; ``pss`` shares them out (None where unreadable).
    Processes that end while being measured are left out.
    """
    rows: list[tuple[str, psutil.Process]] = []
    try:
        sentry = psutil.Process(state.pid)
        rows.append(("sentry", sentry))
        rows += [("stub", c) for c in sentry.children(recursive=True)]
    except psutil.Error:
        sentry = None
    if state.gofer_pid:
        with contextlib.suppress(psutil.Error):
            gofer = psutil.Process(state.gofer_pid)
            if abs(gofer.create_time() - state.gofer_start_time) < 1.0:
                rows.append(("gofer", gofer))
    processes: list[dict[str, Any]] = []
    for role, p in rows:
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu = t.user + t.system + (t.children_user + t.children_system if role == "sentry" else 0.0)
                rss = int(p.memory_info().rss)
            processes.append({"pid": p.pid, "role": role, "cpu_time": round(cpu, 3), "rss": rss, "pss": _pss(p)})
        except psutil.Error:
            continue
    cpu_time = sum(r["cpu_time"] for r in processes)
    lifetime = 0.0
    if sentry is not None:
        with contextlib.suppress(psutil.Error):
            lifetime = datetime.now().timestamp() - sentry.create_time()
    pss = [r["pss"] for r in processes]
    return {
        "cpu_percent": round(100 * cpu_time / lifetime, 1) if lifetime > 0 else 0.0,
        "cpu_time": round(cpu_time, 3),
        "rss": sum(r["rss"] for r in processes),
        "pss": sum(pss) if pss and None not in pss else None,
        "processes": processes,
    }


def ps_report(store: StateStore, cid: str) -> dict[str, Any]:
    """What ``pyrunsc ps ID`` shows::

        {"id": "web", "processes": [{"uid": 0, "pid": 1, "ppid": 0,
          "threads": [1], "state": "S", "stime": "12:04",
          "started": "2025-...+00:00", "cmd": "sh", "args": [...]}, ...],
         "host": {...}}

    The processes are the sentry's answer to ``ps`` (:func:`process_list`)
    with ``stime`` added (:func:`format_stime`, in local time), in gVisor's
    ``control.Process`` order; ``host`` is :func:`host_usage`. Errors as
    :func:`request`.
    """
    processes = request(store, cid, "ps")
    state = store.load(cid)
    now = datetime.now().astimezone()
    shown = []
    for p in processes:
        started = datetime.fromisoformat(p["started"]).astimezone()
        shown.append({
            "uid": p["uid"], "pid": p["pid"], "ppid": p["ppid"], "threads": p["threads"], "state": p["state"],
            "stime": format_stime(started, now), "started": p["started"], "cmd": p["cmd"], "args": p["args"],
        })
    return {"id": cid, "processes": shown, "host": host_usage(state)}


def command_line(process: dict[str, Any]) -> str:
    """A process's command as ps shows it: its argv, or ``[comm]`` when
    there is none to read, with `` <defunct>`` for a zombie (procps)."""
    text = " ".join(process["args"]) if process["args"] else f"[{process['cmd']}]"
    return text + " <defunct>" if process["state"] == "Z" else text


__all__ = [
    "SOCKET_NAME",
    "WAKE_SIGNAL",
    "ControlServer",
    "command_line",
    "format_stime",
    "host_usage",
    "process_list",
    "ps_report",
    "read_argv",
    "request",
]
