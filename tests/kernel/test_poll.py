"""Blocking without blocking the sentry: poll, select, epoll and eventfd in
static C programs (``c/poll.c``, ``c/epoll.c``, ``c/stdin_wait.c``) and in
busybox, run in the sandbox and natively in a chroot of the same rootfs.

A waiting task parks and the others keep running: a poll that times out, a
blocked read of the caller's stdin, a select, poll or epoll_wait on it, each
while a child process keeps making system calls, which must make progress
meanwhile. Waiting for stdin does not spin either. Every test runs on each
platform (issue #8).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from platforms import platforms

HERE = Path(__file__).parent
PYRUNSC = Path(sys.executable).parent / "pyrunsc"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or not Path("/bin/busybox").exists(),
                                reason="needs gcc and Debian's busybox-static")

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 16384, 1 << 18


@pytest.fixture(scope="module", params=platforms())
def platform(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, platform: str) -> Path:
    """The programs' rootfs; the file ``platform`` names the platform the
    sandbox runs on."""
    b = tmp_path_factory.mktemp("poll")
    (b / "platform").write_text(platform)
    rootfs = b / "rootfs"
    for d in ("bin", "tmp", "proc", "dev"):
        (rootfs / d).mkdir(parents=True)
    for name in ("poll", "epoll", "stdin_wait"):
        subprocess.run(["gcc", "-static", "-O1", "-o", str(rootfs / "bin" / name), str(HERE / "c" / f"{name}.c")],
                       check=True, capture_output=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "cat", "echo"):
        os.symlink("busybox", rootfs / "bin" / applet)
    return b


def sandbox_cmd(bundle: Path, args: list[str]) -> list[str]:
    proc = {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": proc,
                                                    "root": {"path": "rootfs"}}))
    root = bundle.parent / (bundle.name + "-state")
    platform = (bundle / "platform").read_text()
    return [str(PYRUNSC), "--root", str(root), "--file-access", "direct", "--platform", platform, "run",
            "--bundle", str(bundle), f"p{os.getpid()}-{time.monotonic_ns()}"]


def native_enter(rootfs: Path) -> None:
    """In the child: a private mount namespace with /proc, chrooted into ``rootfs``."""
    if _libc.unshare(CLONE_NEWNS) != 0 or _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    if _libc.mount(b"proc", str(rootfs / "proc").encode(), b"proc", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount proc")
    os.chroot(rootfs)
    os.chdir("/")


def popen(bundle: Path, args: list[str], native: bool) -> subprocess.Popen[bytes]:
    if native:
        rootfs = bundle / "rootfs"
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: native_enter(rootfs), env={"PATH": "/bin"})
    return subprocess.Popen(sandbox_cmd(bundle, args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def run(bundle: Path, args: list[str], native: bool = False) -> tuple[str, str, int]:
    p = popen(bundle, args, native)
    out, err = p.communicate(timeout=120)
    return out.decode(), err.decode(), p.returncode


def infos(out: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^info (\S+) ([-\d.]+)", out, re.M)}


def checks(out: str) -> list[str]:
    """The program's verdict lines, without the measured figures."""
    return [line for line in out.splitlines() if not line.startswith("info ")]


@pytest.mark.parametrize("program", ["poll", "epoll"])
def test_program_passes_in_the_sandbox_as_natively(bundle: Path, program: str) -> None:
    """poll/ppoll/select/pselect6 and eventfd (poll.c); epoll's triggering
    modes, MOD/DEL, errors, nesting and waiting (epoll.c): every check passes
    in the sandbox and natively, the same checks in the same order."""
    out, err, rc = run(bundle, [f"/bin/{program}"])
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert not failed and rc == 0 and out.rstrip().endswith("0 failures"), out + err
    nout, nerr, nrc = run(bundle, [f"/bin/{program}"], native=True)
    assert nrc == 0, nout + nerr
    assert checks(out) == checks(nout)


def test_a_timing_out_poll_lets_another_process_run(bundle: Path) -> None:
    """poll(200 ms) returns 0 after about 200 ms while a child process keeps
    making system calls: the child made progress during the wait."""
    out, err, rc = run(bundle, ["/bin/poll"])
    assert rc == 0, out + err
    figures = infos(out)
    assert 0.19 <= figures["poll_200ms_elapsed"] < 1.0, figures
    assert figures["progress_ticks"] >= 5, figures


def drive_stdin(bundle: Path, args: list[str], native: bool, delay: float = 0.4,
                data: bytes | None = b"hello\n") -> tuple[str, str, int]:
    """Start ``args`` with a pipe as stdin; once it printed its first line,
    wait ``delay`` seconds and write ``data`` (None: nothing), then close."""
    p = popen(bundle, args, native)
    assert p.stdin is not None and p.stdout is not None
    first = p.stdout.readline()
    time.sleep(delay)
    if data is not None:
        p.stdin.write(data)
        p.stdin.flush()
    time.sleep(0.1)
    p.stdin.close()
    p.stdin = None  # closed: communicate() must not flush it
    rest, err = p.communicate(timeout=60)
    return (first + rest).decode(), err.decode(), p.returncode


@pytest.mark.parametrize("mode", ["read", "poll", "select", "epoll"])
def test_waiting_for_stdin_lets_other_processes_run(bundle: Path, mode: str) -> None:
    """A read, poll, select or epoll_wait on the caller's stdin (a host pipe
    written 0.4 s after the program started waiting) wakes when the input
    comes, gets it, and a child process made progress meanwhile."""
    out, err, rc = drive_stdin(bundle, ["/bin/stdin_wait", mode], native=False)
    assert rc == 0, out + err
    figures = infos(out)
    assert 0.35 <= figures["waited"] < 5, out
    assert figures["ticks"] >= 10, out
    assert "read 6 hello" in out
    nout, nerr, nrc = drive_stdin(bundle, ["/bin/stdin_wait", mode], native=True)
    assert nrc == 0, nout + nerr
    assert checks(out) == checks(nout)


def test_poll_on_stdin_times_out(bundle: Path) -> None:
    out, err, rc = drive_stdin(bundle, ["/bin/stdin_wait", "timeout"], native=False, delay=0.6, data=None)
    assert rc == 0, out + err
    assert "poll 0 (timeout)" in out
    assert 0.29 <= infos(out)["waited"] < 2, out
    assert infos(out)["ticks"] >= 10, out


@pytest.mark.parametrize(
    ("script", "delay", "data"),
    [
        ("read -t 3 x; echo \"rc $? x=$x\"", 0.3, b"typed\n"),  # input within the timeout
        ("read -t 0.3 x; echo \"rc $? x=$x\"", 0.8, None),  # none: poll times out
        ("read x; echo \"got $x\"; cat", 0.3, b"one\ntwo\n"),
    ],
)
def test_busybox_reads_stdin_as_natively(bundle: Path, script: str, delay: float, data: bytes | None) -> None:
    """busybox sh's ``read -t`` polls stdin with a timeout; plain ``read``
    and ``cat`` read it: the same output as natively."""
    args = ["sh", "-c", f"echo start; {script}"]
    got = drive_stdin(bundle, args, native=False, delay=delay, data=data)
    want = drive_stdin(bundle, ["/bin/busybox", *args], native=True, delay=delay, data=data)
    assert got[0] == want[0] and got[2] == want[2], (got, want)


def test_waiting_for_stdin_does_not_spin(bundle: Path) -> None:
    """The sentry sleeps while its only task waits for stdin: a run that waits
    1.5 s for its input costs about the CPU time of one that does not."""

    def cpu_of(delay: float) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out, err, rc = drive_stdin(bundle, ["sh", "-c", "echo start; read x; echo got $x"], native=False,
                                   delay=delay, data=b"late\n")
        assert rc == 0 and out == "start\ngot late\n", out + err
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    quick = min(cpu_of(0.0) for _ in range(2))
    slow = cpu_of(1.5)
    assert slow - quick < 0.5, (quick, slow)
