"""Sandbox control: starting the sandbox process, running it, and reporting
its end (gVisor ``runsc/sandbox`` and ``runsc/cmd/boot.go``).

``pyrunsc run`` starts ``pyrunsc boot`` as the sandbox process (it inherits
the caller's stdio) and, in the foreground, waits for it and exits with the
container's status: its exit code, or 128+N when a signal N killed it. With
``--detach`` it returns once the container runs. Signals sent to the sandbox
process (``pyrunsc kill``) are forwarded to the container's init. While the
container runs, its sentry answers control requests (``pyrunsc ps``) on a
socket in the container's state folder (:mod:`.control`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import psutil

from .checkpoint.save import SandboxFacts
from .config import Config
from .control import SOCKET_NAME, ControlServer
from .errors import PyrunscError
from .kernel.interrupt import interrupt
from .loader import Sandbox, boot
from .mounts import mount_rows, resolve_all
from .plugins import Plugins
from .spec import Spec
from .state import ContainerState, StateStore

if TYPE_CHECKING:
    from .checkpoint.image import CheckpointImage

log = logging.getLogger("pyrunsc.sandbox")

class ChildProcess:
    """A forked child process, with the part of Popen's interface a caller
    needs to wait for it: ``pid``, ``poll()``, ``wait(timeout)``, ``kill()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status (negative: killed by that signal), or None if running."""
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit; subprocess.TimeoutExpired after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.002)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@dataclass
class GoferStart:
    """What the ``start_gofer`` hook gives back: ``fds``, the sandbox's ends of
    the gofer connections (connected sockets, one per gofer-served mount, root
    first), and ``process``, the gofer to reap once the sandbox is done."""

    fds: list[int]
    process: subprocess.Popen[bytes] | ChildProcess | None = None


#: Host signals the sandbox forwards to the container's init.
FORWARDED = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGALRM, signal.SIGWINCH, signal.SIGCONT,
)


def run_sandbox(
    plugins: Plugins, spec: Spec, config: Config, store: StateStore, cid: str, *, gofer_fds: list[int] | None = None,
    image: CheckpointImage | None = None,
) -> int:
    """The sandbox process's main: boot (or restore ``image``), mark
    running, run, mark stopped.

    ``gofer_fds`` are the connections to the gofer, one per served mount in
    mount order. Returns the container's status for the process exit code
    (0 after a checkpoint that stopped it).
    """
    state = store.load(cid)
    mounts = mount_rows(resolve_all(plugins, spec, config))
    if image is not None:
        from .checkpoint.progress import progress_for
        from .checkpoint.restore import mark, restore_kernel

        mark("sandbox process forked")
        with progress_for() as progress:
            restored, memfile = restore_kernel(plugins, spec, config, image, mounts, gofer_fds=gofer_fds,
                                               progress=progress)
        sandbox = Sandbox(restored, None, memfile)
    else:
        sandbox = boot(plugins, spec, config, gofer_fds=gofer_fds)
    kernel, init = sandbox.kernel, sandbox.init
    facts = SandboxFacts(cid, config.platform, spec.digest, mounts, plugins)

    def forward(signo: int, _frame: object) -> None:
        kernel.pending_kill = signo
        kernel.interrupt()
        interrupt()  # cut short a sleep or a read of the caller's stdin

    control = ControlServer(kernel, store.path(cid) / SOCKET_NAME, facts)
    try:
        control.start()
    except OSError as e:
        sandbox.close()
        raise PyrunscError(f"container {cid!r}: cannot make its control socket: {e.strerror or e}") from None
    for s in FORWARDED:
        signal.signal(s, forward)
    me = psutil.Process()
    state.status, state.pid, state.start_time = "running", me.pid, me.create_time()
    store.save(state)
    if image is not None:
        mark("resuming")
    try:
        status = kernel.run(init)
    finally:
        control.close()
        for s in FORWARDED:
            signal.signal(s, signal.SIG_DFL)
        sandbox.close()
    state.status, state.exit_status = "stopped", status.shell_status
    store.save(state)
    if status.signal:
        log.info("container %s: init killed by signal %d", cid, status.signal)
    return status.shell_status


def start(
    plugins: Plugins, store: StateStore, spec: Spec, config: Config, cid: str, *, detach: bool,
    pid_file: Path | None = None, image: CheckpointImage | None = None,
) -> int:
    """``pyrunsc run`` (and ``restore`` with the checked ``image``): create
    the container's state, fork the sandbox process and, unless ``detach``,
    wait for it and return the container's status.

    The sandbox process is a fork of this one (no second interpreter start-up);
    it inherits the caller's stdio. As ``runc run``, a foreground container is
    deleted once it exits, and a container that failed to start leaves no state.
    """
    state = ContainerState(id=cid, bundle=str(spec.bundle or "."), annotations=spec.annotations,
                           platform=config.platform)
    store.create(state)
    try:
        gofer = plugins.start_gofer(spec, config, resolve_all(plugins, spec, config))
    except BaseException:
        store.delete(cid)
        raise
    if gofer is not None and gofer.process is not None:
        with contextlib.suppress(psutil.Error):
            state.gofer_pid = gofer.process.pid
            state.gofer_start_time = psutil.Process(gofer.process.pid).create_time()
            store.save(state)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _sandbox_main(plugins, spec, config, store, cid, detach, gofer.fds if gofer else None, image)
    if gofer is not None:
        for fd in gofer.fds:  # the sandbox holds them now
            os.close(fd)
    if pid_file is not None:
        pid_file.write_text(f"{pid}")
    if detach:
        return _wait_running(store, cid, pid)

    def forward(signo: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signo)

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    store.delete(cid)
    if gofer is not None and gofer.process is not None:
        try:
            gofer.process.wait(timeout=10)  # it exits once the sandbox's channels close
        except subprocess.TimeoutExpired:
            gofer.process.kill()
            gofer.process.wait()
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _sandbox_main(
    plugins: Plugins, spec: Spec, config: Config, store: StateStore, cid: str, detach: bool,
    gofer_fds: list[int] | None, image: CheckpointImage | None = None,
) -> NoReturn:
    """The forked sandbox process: run the container, exit with its status."""
    code = 1
    try:
        if detach:
            os.setsid()
        code = run_sandbox(plugins, spec, config, store, cid, gofer_fds=gofer_fds, image=image)
    except PyrunscError as e:
        from .cli import report_error

        report_error(str(e))
        code = e.exit_code
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait_running(store: StateStore, cid: str, pid: int) -> int:
    """Return 0 once a detached container runs; its status if it ended first."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if store.load(cid).status == "running":
            return 0
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if store.load(cid).exit_status is None:
                store.delete(cid)  # it never ran
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        time.sleep(0.005)
    raise PyrunscError(f"container {cid!r} did not start within 30 s")


def kill(store: StateStore, cid: str, signo: int) -> None:
    state = store.load(cid)
    if state.status not in ("created", "running"):
        raise PyrunscError(f"container {cid!r} is not running")
    try:
        os.kill(state.pid, signo)
    except ProcessLookupError:
        raise PyrunscError(f"container {cid!r} is not running") from None


def delete(store: StateStore, cid: str, *, force: bool) -> None:
    """Remove a stopped container; with ``force`` kill a running one first."""
    state = store.load(cid)
    if state.status in ("created", "running"):
        if not force:
            raise PyrunscError(f"container {cid!r} is {state.status}; stop it or use --force")
        try:
            os.kill(state.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        else:
            if not wait_ended(state.pid, 10):
                raise PyrunscError(f"container {cid!r} did not stop after SIGKILL")
    store.delete(cid)


def wait_ended(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` has ended: gone, or a zombie; False if it
    still runs after ``timeout`` seconds.

    A detached sandbox is not the caller's child: psutil's ``wait()`` would
    poll until the process is gone, i.e. until whoever adopted it (PID 1, a
    subreaper) reaps it, which some inits do only every second or so; the
    container stopped well before that, when the process became a zombie."""
    deadline = time.monotonic() + timeout
    try:
        proc = psutil.Process(pid)
        while proc.status() != psutil.STATUS_ZOMBIE:
            if time.monotonic() >= deadline:
                return False
            with contextlib.suppress(psutil.TimeoutExpired):
                proc.wait(timeout=0.02)
                return True
    except psutil.NoSuchProcess:
        pass
    return True
