"""Threads, futexes, timers and job control, checked by static C programs
(gcc -static -pthread) that print "ok ..." lines: each runs natively first
(so a wrong expectation in the program shows up there), then in the sandbox
on every platform this host has."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from platforms import platforms

HERE = Path(__file__).parent
PYRUNSC = Path(sys.executable).parent / "pyrunsc"
PROGRAMS = ("threads", "timers", "preempt", "thread_regs", "checksum")

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build static test programs")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    b = tmp_path_factory.mktemp("threads")
    bin_dir = b / "rootfs" / "bin"
    bin_dir.mkdir(parents=True)
    (b / "rootfs" / "tmp").mkdir()
    for name in PROGRAMS:
        subprocess.run(["gcc", "-static", "-O1", "-pthread", "-o", str(bin_dir / name), str(HERE / "c" / f"{name}.c"),
                        "-lrt"], check=True, capture_output=True)
    shutil.copy2("/bin/busybox", bin_dir / "busybox")
    for applet in ("sh", "echo"):
        os.symlink("busybox", bin_dir / applet)
    return b


def run(bundle: Path, tmp_path: Path, args: list[str], platform: str = "ptrace") -> subprocess.CompletedProcess[str]:
    proc = {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": proc,
                                                    "root": {"path": "rootfs"}}))
    return subprocess.run([str(PYRUNSC), "--root", str(tmp_path), "--file-access", "direct", "--platform", platform,
                           "run", "--bundle", str(bundle), "t"], capture_output=True, text=True, timeout=120)


def oks(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("ok ", "all ok", "FAIL"))]


@pytest.mark.parametrize("platform", platforms())
@pytest.mark.parametrize("program", PROGRAMS)
def test_program(bundle: Path, tmp_path: Path, program: str, platform: str) -> None:
    native = subprocess.run([str(bundle / "rootfs" / "bin" / program)], capture_output=True, text=True, timeout=60,
                            cwd=bundle / "rootfs")
    assert native.returncode == 0, native.stdout + native.stderr
    r = run(bundle, tmp_path, [f"/bin/{program}"], platform)
    assert r.returncode == 0, r.stdout + r.stderr
    assert oks(r.stdout) == oks(native.stdout)
    assert oks(r.stdout)[-1] == "all ok"
    if program == "threads":
        # The child's PID printed by the program is the PID its exec'd shell
        # reports: execve from a thread takes the process's PID. (Checked on
        # this run rather than a second one of the same program: CI time.)
        lines = r.stdout.splitlines()
        child = next(line.split()[-1] for line in lines if line.startswith("child pid"))
        assert f"exec from a thread: pid {child}" in lines


@pytest.mark.parametrize("platform", platforms())
def test_process_outlives_its_main_thread(bundle: Path, tmp_path: Path, platform: str) -> None:
    """pthread_exit in main: the process (here the sandbox's init) goes on
    until its last thread ends; status 0."""
    r = run(bundle, tmp_path, ["/bin/threads", "leader-exit"], platform)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok the process lives on after its main thread exits\n"


def test_stub_threads_end_with_their_tasks(bundle: Path, tmp_path: Path) -> None:
    """In the sentry's own process, on ptrace: while the threads program
    runs (threads that exit, a robust mutex owner that dies, exit_group and
    execve from a thread, a fork), each stub has no more threads than tasks
    use its address space, plus its idle leader, and Linux lists no more
    than the platform knows (an unreaped thread would be listed); at the
    end no stub process or thread is left, not even a zombie."""
    from collections import Counter

    import psutil

    from pyrunsc.core.config import Config
    from pyrunsc.core.loader import boot
    from pyrunsc.core.plugins import Plugins
    from pyrunsc.core.spec import load_bundle
    from pyrunsc.plugins.platform_ptrace import PtracePlatform

    reason = PtracePlatform.probe()
    if reason:
        pytest.skip(f"ptrace platform unavailable: {reason}")
    proc = {"args": ["/bin/threads"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": proc,
                                                    "root": {"path": "rootfs"}}))
    before = {p.pid for p in psutil.Process().children()}
    out = tmp_path / "out"
    with out.open("w") as f:
        sandbox = boot(Plugins(), load_bundle(bundle), Config(file_access="direct", platform="ptrace"),
                       stdio=(0, f.fileno(), f.fileno()))
        kernel = sandbox.kernel
        platform = kernel.platform
        assert isinstance(platform, PtracePlatform)
        exit_thread = kernel._exit_thread
        most = 0

        def checked_exit_thread(task: object, status: object) -> None:
            nonlocal most
            exit_thread(task, status)  # type: ignore[arg-type]
            users = Counter(id(t.mm.aspace) for t in kernel.tasks.values()
                            if t.exit_status is None and t.mm is not None and t.mm.aspace is not None)
            for a in list(platform._aspaces):
                assert a.stub is not None
                tids = a.stub.tids()
                assert tids == sorted(a.threads())
                assert len(tids) <= users[id(a)] + 1, (tids, users[id(a)])
                most = max(most, len(tids))

        kernel._exit_thread = checked_exit_thread  # type: ignore[method-assign]
        try:
            status = sandbox.kernel.run(sandbox.init)
            left = [p for p in psutil.Process().children() if p.pid not in before]
        finally:
            sandbox.close()
    assert (status.code, status.signal) == (0, 0), out.read_text()
    assert oks(out.read_text())[-1] == "all ok"
    assert most >= 4  # threads ran in threads of their own
    assert left == []
    assert {p.pid for p in psutil.Process().children()} == before
