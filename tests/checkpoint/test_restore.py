"""Checkpoint and restore end to end, with Debian's static busybox (issue #7).

A container runs detached with its stdout in a file; once the file shows it
got far enough, ``pyrunsc checkpoint`` saves it (stopping it, or with
``--leave-running`` not), and ``pyrunsc restore`` starts it again from the
image in the foreground with new stdio. What the container printed before
and after the checkpoint must join up exactly: nothing repeated, nothing
lost. Every wait is on output or on a process, with generous deadlines
(the sleep test's pauses are what it measures, not waits); every sandbox
started is killed at the end of its test.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import pytest
from platforms import skip_unless

from ..kernel.test_busybox import BUSYBOX, make_rootfs
from ..kernel.test_programs import PYRUNSC, pyrunsc, spec, wait_running

pytestmark = pytest.mark.skipif(not BUSYBOX.exists(), reason="needs Debian's busybox-static (/bin/busybox)")

#: How long any one wait may take, in seconds: long, for a loaded machine.
DEADLINE = 60.0

#: The global flags of each file-access mode the counting test runs under.
FILE_ACCESS = {
    "proxy": ["--file-access", "proxy"],
    "direct": ["--file-access", "direct"],
    "overlay": ["--file-access", "proxy", "--overlay"],
}

HELLO = "hello from a read-only bind mount"


def count_script(n: int, files: Sequence[str] = ("/tmp/count",), pause: str = "0.1") -> str:
    """Count 1..n, each number to stdout and appended to each of ``files``
    (/tmp is a tmpfs); then for each file a line ``== FILE``, the file and
    its ``wc -l``; last a line read from the bind mount."""
    append = "".join(f"echo $i >> {f}; " for f in files)
    show = "".join(f"echo '== {f}'; cat {f}; wc -l < {f}; " for f in files)
    return (f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo $i; {append}sleep {pause}; done; "
            f"{show}cat /data/hello.txt")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox's rootfs, and a read-only bind mount at /data, made once."""
    b = tmp_path_factory.mktemp("restore-bundle")
    make_rootfs(b / "rootfs")
    (b / "data").mkdir()
    (b / "data" / "hello.txt").write_text(HELLO + "\n")
    return b


def configure(bundle: Path, script: str) -> None:
    """config.json for ``sh -c script``, with /data bound read-only."""
    spec(bundle, ["sh", "-c", script])
    path = bundle / "config.json"
    doc = json.loads(path.read_text())
    doc["mounts"] = [{"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]}]
    path.write_text(json.dumps(doc))


class Sandboxes:
    """Starts containers and restores under one ``--root``; at the end,
    kills what is left (``delete --force``, and the restore commands)."""

    def __init__(self, root: Path, bundle: Path) -> None:
        self.root, self.bundle = root, bundle
        self.ids: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[IO[bytes]] = []

    def out(self, name: str) -> Path:
        return self.root.parent / f"{name}.out"

    def run(self, cid: str, flags: Sequence[str] = (), stdin: int | None = subprocess.DEVNULL) -> Path:
        """``run --detach`` with stdout to ``<cid>.out`` (returned)."""
        out = self.out(cid)
        self.ids.append(cid)
        with open(out, "wb") as f, open(self.out(cid + "-err"), "wb") as err:
            r = pyrunsc(self.root, *flags, "run", "--bundle", str(self.bundle), "--detach", cid,
                        stdin=stdin, stdout=f, stderr=err)
        assert r.returncode == 0, self.out(cid + "-err").read_text()
        return out

    def restore(self, cid: str, image: Path, flags: Sequence[str] = (),
                stdin: int | None = subprocess.DEVNULL) -> tuple[subprocess.Popen[bytes], Path]:
        """``restore`` in the foreground, stdout to ``<cid>.out``; the command
        and that file. The container gets ``stdin``."""
        out = self.out(cid)
        self.ids.append(cid)
        f, err = open(out, "wb"), open(self.out(cid + "-err"), "wb")  # noqa: SIM115 - closed at teardown
        self.files += [f, err]
        # The global flags as pyrunsc() gives them: direct file access unless ``flags`` say otherwise.
        argv = [str(PYRUNSC), "--root", str(self.root), "--file-access", "direct", *flags,
                "restore", "--image-path", str(image), "--bundle", str(self.bundle), cid]
        p = subprocess.Popen(argv, stdin=stdin, stdout=f, stderr=err)
        self.procs.append(p)
        return p, out

    def finish(self, p: subprocess.Popen[bytes], cid: str) -> int:
        """The restore command's exit status, once it ends."""
        try:
            return p.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"restore of {cid} did not end: {self.err(cid)}")

    def err(self, cid: str) -> str:
        path = self.out(cid + "-err")
        return path.read_text(errors="replace") if path.exists() else ""

    def checkpoint(self, cid: str, image: Path, *args: str) -> None:
        r = pyrunsc(self.root, "checkpoint", "--image-path", str(image), *args, cid)
        assert r.returncode == 0, r.stderr + self.err(cid)

    def delete(self, cid: str) -> None:
        """Remove a checkpointed (stopped) container's state."""
        r = pyrunsc(self.root, "delete", cid)
        assert r.returncode == 0, r.stderr

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for cid in self.ids:
            path = self.root / cid / "state.json"
            # A stopped container has no sandbox left: its state goes with tmp_path.
            if path.exists() and json.loads(path.read_text())["status"] in ("created", "running"):
                pyrunsc(self.root, "delete", "--force", cid)
        for f in self.files:
            f.close()


@pytest.fixture
def boxes(bundle: Path, tmp_path: Path) -> Iterator[Sandboxes]:
    s = Sandboxes(tmp_path / "state", bundle)
    try:
        yield s
    finally:
        s.close()


def lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def wait_lines(path: Path, k: int, *, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> list[str]:
    """The file's complete lines once it has at least ``k`` of them."""
    deadline = time.monotonic() + DEADLINE
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        got = text[: text.rfind("\n") + 1].splitlines()
        if len(got) >= k:
            return got
        assert time.monotonic() < deadline, f"{path.name}: {len(got)} of {k} lines after {DEADLINE:g} s {what}"
        assert proc is None or proc.poll() is None, f"{path.name}: ended after {len(got)} of {k} lines {what}"
        time.sleep(0.02)


def wait_for(path: Path, line: str, *, proc: subprocess.Popen[bytes] | None = None) -> list[str]:
    """The file's lines once ``line`` is one of them."""
    deadline = time.monotonic() + DEADLINE
    while True:
        got = lines(path) if path.exists() else []
        if line in got:
            return got
        assert time.monotonic() < deadline, f"{path.name}: no {line!r} after {DEADLINE:g} s: {got}"
        assert proc is None or proc.poll() is None, f"{path.name}: ended without {line!r}: {got}"
        time.sleep(0.02)


def numbers(n: int, start: int = 1) -> list[str]:
    return [str(i) for i in range(start, n + 1)]


def split_count(out: list[str]) -> tuple[list[str], list[str]]:
    """A counting run's output: the numbers it printed, and what followed
    (the files and the bind mount's line)."""
    i = next((i for i, line in enumerate(out) if line.startswith("== ")), None)
    assert i is not None, out
    return out[:i], out[i:]


def counted_files(n: int, files: Sequence[str] = ("/tmp/count",)) -> list[str]:
    """What follows the numbers when each file holds 1..n once."""
    return [line for f in files for line in (f"== {f}", *numbers(n), str(n))] + [HELLO]


def count_and_restore(boxes: Sandboxes, run_flags: Sequence[str], restore_flags: Sequence[str],
                      files: Sequence[str] = ("/tmp/count",), n: int = 30, k: int = 5) -> None:
    """Acceptance 1: count to ``n``, checkpoint (stopping it) after ``k``,
    restore; the numbers join up exactly and each file has each once."""
    configure(boxes.bundle, count_script(n, files))
    first = boxes.run("c", run_flags)
    wait_lines(first, k)
    image = boxes.root.parent / "image"
    boxes.checkpoint("c", image)
    before = lines(first)
    assert k <= len(before) < n, before
    # Under another ID: "c" stays, stopped (the sleep test restores under the same ID, after a delete).
    p, second = boxes.restore("c2", image, restore_flags)
    assert boxes.finish(p, "c2") == 0, boxes.err("c2")
    counted, rest = split_count(lines(second))
    assert before + counted == numbers(n), (before, counted)
    assert rest == counted_files(n, files)


@pytest.mark.parametrize("mode", list(FILE_ACCESS))
def test_count_continues_after_restore(boxes: Sandboxes, mode: str) -> None:
    """A loop counting to stdout and into a tmpfs file is checkpointed and
    restored under each file-access mode (proxy, direct, proxy with an
    overlay): the count goes on where it stopped, without a repeat or a
    gap, and the tmpfs file holds every number once. With the overlay, a
    file written on the root filesystem lives in the overlay's upper layer,
    in memory: it survives too, and never reaches the host."""
    files = ["/tmp/count", "/root/count"] if mode == "overlay" else ["/tmp/count"]
    count_and_restore(boxes, FILE_ACCESS[mode], FILE_ACCESS[mode], files)
    assert not (boxes.bundle / "rootfs" / "root" / "count").exists()


@pytest.mark.parametrize(("saved_on", "restored_on"), [
    pytest.param("kvm", "kvm", marks=skip_unless("kvm")),
    pytest.param("ptrace", "kvm", marks=skip_unless("kvm")), pytest.param("kvm", "ptrace", marks=skip_unless("kvm")),
])
def test_restore_on_another_platform(boxes: Sandboxes, saved_on: str, restored_on: str) -> None:
    """Registers and memory are platform-neutral: an image made under one
    platform restores under the other (and kvm's on kvm; ptrace's on ptrace
    is every other test here)."""
    count_and_restore(boxes, ["--platform", saved_on], ["--platform", restored_on])


def test_leave_running_and_restore_twice(boxes: Sandboxes) -> None:
    """With --leave-running the original counts on to the end, and the one
    image restores twice, as two containers with their own IDs, each
    counting on from the checkpoint's count with its own copy of tmpfs."""
    n, k = 30, 5
    configure(boxes.bundle, count_script(n))
    first = boxes.run("orig")
    wait_lines(first, k)
    image = boxes.root.parent / "image"
    boxes.checkpoint("orig", image, "--leave-running")
    assert json.loads(pyrunsc(boxes.root, "state", "orig").stdout)["status"] == "running"
    restores = [boxes.restore(cid, image) for cid in ("copy1", "copy2")]
    for cid, (p, _) in zip(("copy1", "copy2"), restores, strict=True):
        assert boxes.finish(p, cid) == 0, boxes.err(cid)
    counted, rest = split_count(wait_for(first, HELLO))
    assert counted == numbers(n) and rest == counted_files(n)
    copies = [split_count(lines(out)) for _, out in restores]
    assert copies[0][0], copies[0]
    start = int(copies[0][0][0])
    assert k < start <= n, copies[0]
    for counted, rest in copies:
        assert counted == numbers(n, start)
        assert rest == counted_files(n)


def test_pipeline_with_buffered_data(boxes: Sandboxes) -> None:
    """``seq`` writes all its lines into a pipe at once and exits; a slow
    consumer prints them one by one. Checkpointed midway, the data still in
    the pipe survives: every line comes out once, in order."""
    m, k = 60, 10
    configure(boxes.bundle, f"seq 1 {m} | while read l; do echo \"line $l\"; sleep 0.05; done; echo end")
    first = boxes.run("pipe")
    wait_lines(first, k)
    image = boxes.root.parent / "image"
    boxes.checkpoint("pipe", image)
    before = lines(first)
    assert k <= len(before) < m, before
    p, second = boxes.restore("pipe2", image)
    assert boxes.finish(p, "pipe2") == 0, boxes.err("pipe2")
    assert before + lines(second) == [f"line {i}" for i in range(1, m + 1)] + ["end"]


def uptime(line: str) -> float:
    """The /proc/uptime seconds at the end of ``line``."""
    return float(line.rsplit(" ", 1)[1])


def test_sleep_and_stdin_read_resume(boxes: Sandboxes) -> None:
    """A child in ``sleep 5`` and a shell blocked reading stdin, both
    checkpointed after about 2 s. After the restore, the read gets a line
    from the restore command's stdin, and the sleep ends after the time it
    had left. The container's own clock (/proc/uptime, monotonic) shows it:
    the sleep took 5 s in all (not cut short, not started again), and the
    clock went on from the checkpoint without counting the time the
    container was stopped."""
    configure(boxes.bundle, '(read u _ < /proc/uptime; echo "sleeping $u"; sleep 5; read u _ < /proc/uptime; '
                            'echo "slept $u") & echo reading; read line; read u _ < /proc/uptime; echo "got $line $u"; '
                            "wait")
    r, w = os.pipe()
    try:
        first = boxes.run("s", stdin=r)
    finally:
        os.close(r)
    try:
        wait_lines(first, 2)
        t_started = time.monotonic()  # (just after the container read u0)
        # The sleep runs for 2 s before the checkpoint: the thing measured, not a wait for an event.
        time.sleep(2.0)
        t0 = time.monotonic()
        image = boxes.root.parent / "image"
        boxes.checkpoint("s", image)
        t1 = time.monotonic()
    finally:
        os.close(w)  # the original never got a line
    before = lines(first)
    assert len(before) == 2 and "reading" in before, before
    u0 = uptime(next(line for line in before if line.startswith("sleeping ")))
    boxes.delete("s")
    time.sleep(1.0)  # stopped for a while: a clock that counted this would run ahead
    p, second = boxes.restore("s", image, stdin=subprocess.PIPE)
    wait_running(boxes.root, "s", p)
    t_running = time.monotonic()
    assert p.stdin is not None
    p.stdin.write(b"hello\n")
    p.stdin.close()
    got = wait_lines(second, 1, proc=p)
    t_got = time.monotonic()
    assert got[0].startswith("got hello "), got
    wait_lines(second, 2)
    t_slept = time.monotonic()
    assert boxes.finish(p, "s") == 0, boxes.err("s")
    after = lines(second)
    assert len(after) == 2 and after[1].startswith("slept "), after
    u1, u2 = uptime(after[0]), uptime(after[1])
    # The sleep took 5 s of the container's time: a restarted sleep would
    # take at least 2 s more, one cut short less.
    assert 4.99 <= u2 - u0 <= 6.5, (u0, u1, u2)
    # The clock went on from the checkpoint (at least the 2 s slept before
    # it had passed) and did not count the second and more it was stopped.
    assert t0 - t_started - 0.02 <= u1 - u0 <= (t1 - t_started) + (t_got - t_running) + 0.8, (
        u0, u1, t_started, t0, t1, t_running, t_got)
    # And it ran at the host's pace after the restore.
    assert t_slept - t_running >= u2 - u1 - 0.2, (u1, u2, t_running, t_slept)


def test_image_inspect_of_a_real_checkpoint(boxes: Sandboxes) -> None:
    """``pyrunsc image inspect --format json`` on an image a checkpoint made:
    verified, with the container's ID, the platform, the compiled mounts
    with their devices, the tasks, and the bytes in tmpfs."""
    configure(boxes.bundle, "head -c 20000 /dev/zero | tr '\\0' x > /tmp/blob; echo ready; sleep 30 & wait")
    first = boxes.run("insp")
    wait_for(first, "ready")
    image = boxes.root.parent / "image"
    boxes.checkpoint("insp", image)
    r = pyrunsc(boxes.root, "image", "inspect", str(image), "--format", "json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert found["verified"] is True and found["mac"] == "ok" and found["problems"] == []
    h = found["header"]
    assert h["container_id"] == "insp"
    assert h["platform"] == "ptrace"
    devices = {m["destination"]: m["device"] for m in h["mounts"]}
    assert devices["/"] == "9pfs-/" and devices["/data"] == "9pfs-/data" and devices["/tmp"] == "none", devices
    assert h["mounts"][0]["destination"] == "/"
    commands = {t["pid"]: t["command"] for t in h["tasks"]}
    assert commands[1] == "sh" and "sleep" in commands.values(), h["tasks"]
    tmp = {t["destination"]: t["bytes"] for t in h["tmpfs"]}
    assert tmp["/tmp"] >= 20000, h["tmpfs"]


def test_checkpoint_refusals(boxes: Sandboxes) -> None:
    """A checkpoint into an existing folder fails with status 2 and leaves
    the container running; one of an unknown container fails."""
    configure(boxes.bundle, "echo ready; sleep 30")
    first = boxes.run("busy")
    wait_for(first, "ready")
    image = boxes.root.parent / "image"
    image.mkdir()
    r = pyrunsc(boxes.root, "checkpoint", "--image-path", str(image), "busy")
    assert r.returncode == 2, r.stderr
    assert "already exists" in r.stderr
    assert list(image.iterdir()) == []
    assert json.loads(pyrunsc(boxes.root, "state", "busy").stdout)["status"] == "running"
    r = pyrunsc(boxes.root, "ps", "--format", "json", "busy")
    assert r.returncode == 0, r.stderr
    r = pyrunsc(boxes.root, "checkpoint", "--image-path", str(boxes.root.parent / "other"), "nosuch")
    assert r.returncode != 0
    assert "nosuch" in r.stderr
    assert not (boxes.root.parent / "other").exists()
