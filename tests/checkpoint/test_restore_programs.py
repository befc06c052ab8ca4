"""Checkpoint and restore end to end (issue 7), with static C programs built
here with ``gcc -static`` (sources in ``tests/checkpoint/c/``):

- a 200 MiB heap checkpointed in the middle of a checksum goes on to the
  checksum the same binary computes natively, and the image holds the dirty
  memory only (no untouched or all-zero page);
- threads waiting on a condition variable and a thread computing in xmm and
  x87 registers under a non-default rounding mode survive, with or without
  zstd compression;
- a bind mount whose host folder moved is re-bound: an open file reads on
  from its offset, and an O_APPEND descriptor appends after what the host
  added meanwhile, with the gofer (proxy) and with direct file access;
- a restore whose mounts differ from the image's (one added or removed, a
  read-only flag flipped) is refused, as are corrupted, truncated and
  wrong-key images, all with exit status 2, a message, and no container
  left; a malicious kernel blob is never unpickled.

Every wait is on the program's output (a file polled for a line), and each
program waits on its stdin (an empty pipe until the checkpoint, /dev/null in
the restore), so no timing decides where the checkpoint falls; each test's
sandboxes are force-deleted in teardown.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from platforms import skip_unless

from pyrunsc.core.checkpoint import new_header, read_header, write_image
from pyrunsc.core.mm.memfile import MemoryFile

from ..kernel.test_busybox import make_rootfs
from ..kernel.test_programs import PYRUNSC

HERE = Path(__file__).parent
KERNEL_C = HERE.parent / "kernel" / "c"
PROGRAMS = ("bigheap", "ringfp", "bindread")
MiB = 1 << 20
#: Seconds to wait for a line of output, or for a command.
TIMEOUT = 120

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build static test programs")


def build(bin_dir: Path, names: Sequence[str]) -> None:
    """gcc -static each tests/checkpoint/c/NAME.c into bin_dir/NAME, all at
    once (tests/kernel/test_programs.py's build, for this folder)."""
    builds = {
        name: subprocess.Popen(
            ["gcc", "-static", "-O2", "-I", str(KERNEL_C), "-o", str(bin_dir / name), str(HERE / "c" / f"{name}.c"),
             "-lpthread", "-lm"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name in names
    }
    for name, proc in builds.items():
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, f"gcc {name}.c:\n{out.decode()}"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox's rootfs (with a /data mount point) and the test programs in /bin."""
    root = tmp_path_factory.mktemp("ckpt-programs") / "rootfs"
    make_rootfs(root)
    build(root / "bin", PROGRAMS)
    return root


def bind(source: Path, destination: str = "/data", *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source),
            "options": ["rbind", *(options or ("rw",))]}


def make_bundle(path: Path, rootfs: Path, args: list[str], mounts: Sequence[dict[str, Any]] = (),
                readonly: bool = False) -> Path:
    """A bundle folder at ``path`` whose config.json runs ``args`` on the shared ``rootfs``."""
    path.mkdir(parents=True, exist_ok=True)
    doc = {
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": str(rootfs), "readonly": readonly},
        "mounts": list(mounts),
    }
    (path / "config.json").write_text(json.dumps(doc))
    return path


def wait_for(path: Path, pattern: str, timeout: float = TIMEOUT) -> str:
    """Poll the file ``path`` until a line matches ``pattern``; its text then.
    On a timeout the error shows it and its ``.err`` file."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern, re.M)
    while True:
        text = path.read_text() if path.exists() else ""
        if rx.search(text):
            return text
        if time.monotonic() > deadline:
            err = path.with_suffix(".err")
            more = err.read_text() if err.exists() else ""
            raise AssertionError(f"no line matching {pattern!r} in {path} after {timeout} s:\n{text}\n{more}")
        time.sleep(0.05)


class Runtime:
    """``pyrunsc --root R [flags]`` for one test; what it started is ended
    by :meth:`cleanup`."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp
        self._pipes: list[int] = []
        self._n = 0

    def cli(self, *args: str, flags: Sequence[str] = (), stdin: Any = subprocess.DEVNULL,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run pyrunsc; its stdout and stderr go to files (a sandbox that
        outlives the command keeps them), read back into the result."""
        self._n += 1
        out, err = self.tmp / f"{self._n}.out", self.tmp / f"{self._n}.err"
        with open(out, "w") as o, open(err, "w") as e:
            p = subprocess.run([str(PYRUNSC), "--root", str(self.root), *flags, *args], stdin=stdin, stdout=o,
                               stderr=e, timeout=timeout, check=False)
        return subprocess.CompletedProcess(p.args, p.returncode, out.read_text(), err.read_text())

    def run_detached(self, bundle: Path, cid: str, out: Path, flags: Sequence[str] = ()) -> None:
        """Start ``cid`` in the background, its stdout to ``out`` and its
        stderr next to it (``out`` with ``.err``), its stdin a pipe that
        stays empty (and open) until cleanup."""
        r, w = os.pipe()
        self._pipes.append(w)
        err = out.with_suffix(".err")
        try:
            with open(out, "w") as o, open(err, "w") as e:
                p = subprocess.run([str(PYRUNSC), "--root", str(self.root), *flags, "run", "--bundle", str(bundle),
                                    "--detach", cid], stdin=r, stdout=o, stderr=e, timeout=TIMEOUT, check=False)
        finally:
            os.close(r)
        assert p.returncode == 0, out.read_text() + err.read_text()

    def checkpoint(self, cid: str, image: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        r = self.cli("checkpoint", "--image-path", str(image), *extra, cid)
        assert r.returncode == 0, r.stderr
        return r

    def restore(self, image: Path, bundle: Path, cid: str, *extra: str, flags: Sequence[str] = ()
                ) -> subprocess.CompletedProcess[str]:
        """A foreground restore (its stdin /dev/null): the container's exit
        status and output."""
        return self.cli("restore", "--image-path", str(image), "--bundle", str(bundle), *extra, cid, flags=flags)

    def ids(self) -> list[str]:
        r = self.cli("list", "--format", "json")
        assert r.returncode == 0, r.stderr
        return [c["id"] for c in json.loads(r.stdout)]

    def cleanup(self) -> None:
        """Close the detached containers' stdin pipes and force-delete every
        container under the root (a sandbox a failed test left running)."""
        for w in self._pipes:
            os.close(w)
        self._pipes.clear()
        if not self.root.exists():
            return
        r = self.cli("list", "--format", "json")
        for c in json.loads(r.stdout) if r.returncode == 0 else []:
            self.cli("delete", "--force", c["id"])


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    logs = tmp_path / "cli"
    logs.mkdir()
    rt = Runtime(tmp_path / "root", logs)
    try:
        yield rt
    finally:
        rt.cleanup()


def inspect(rt: Runtime, image: Path) -> dict[str, Any]:
    r = rt.cli("image", "inspect", "--format", "json", str(image))
    assert r.returncode == 0, r.stderr
    found: dict[str, Any] = json.loads(r.stdout)
    assert found["verified"], found["problems"]
    return found


# -------------------------------------------------------------------------
# Programs that go on where they stopped.
# -------------------------------------------------------------------------


def test_big_heap_checksum_goes_on(rootfs: Path, runtime: Runtime, tmp_path: Path) -> None:
    """A 200 MiB heap, checkpointed mid-checksum, gives the native checksum
    after the restore; pages.img holds the dirty memory and no page of a
    calloc'd, untouched 100 MiB nor of 32 MiB written with zeros."""
    bundle = make_bundle(tmp_path / "bundle", rootfs, ["/bin/bigheap"])
    out = tmp_path / "run.out"
    runtime.run_detached(bundle, "heap", out)
    wait_for(out, r"^pass 1 ")
    image = tmp_path / "image"
    runtime.checkpoint("heap", image)
    before = out.read_text()
    assert "checksum" not in before, "the program ended before the checkpoint"
    assert runtime.cli("delete", "heap").returncode == 0

    r = runtime.restore(image, bundle, "heap")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("pass "), r.stdout  # it went on, it did not start again
    found = re.search(r"^checksum \S+ after (\d+) passes", r.stdout, re.M)
    assert found, r.stdout
    native = subprocess.run([str(rootfs / "bin" / "bigheap"), found[1]], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=TIMEOUT, check=False)
    assert native.returncode == 0, native.stderr
    assert before + r.stdout == native.stdout

    info = inspect(runtime, image)
    memory = info["header"]["memory"]
    saved, committed = memory["saved"], memory["committed"]
    assert 200 * MiB <= saved < 216 * MiB, memory  # the heap, the program and its stacks
    assert committed - saved >= 31 * MiB, memory  # the zero pages were not saved ...
    assert committed < 264 * MiB, memory  # ... and the untouched 100 MiB never committed
    assert info["files"]["pages.img"]["size"] == saved
    assert info["header"]["parts"]["pages"]["size"] == saved
    assert runtime.ids() == []


@pytest.mark.parametrize(("compression", "saved_on", "restored_on"), [
    ("none", "ptrace", "ptrace"), ("zstd", "ptrace", "ptrace"),
    pytest.param("none", "ptrace", "kvm", marks=skip_unless("kvm")),
    pytest.param("none", "kvm", "ptrace", marks=skip_unless("kvm")),
])
def test_threads_and_fp_registers(rootfs: Path, runtime: Runtime, tmp_path: Path, compression: str, saved_on: str,
                                  restored_on: str) -> None:
    """Three threads waiting on a condition variable and one computing in
    xmm and x87 registers (rounding toward zero) at the checkpoint finish
    after the restore with the counter handed round to 600 and the FP results
    bit for bit those of the same computation redone; also from a
    zstd-compressed image, and restored on the other platform (issue #8)."""
    bundle = make_bundle(tmp_path / "bundle", rootfs, ["/bin/ringfp"])
    out = tmp_path / "run.out"
    runtime.run_detached(bundle, "ring", out, flags=["--platform", saved_on])
    wait_for(out, r"^fp started$")
    image = tmp_path / "image"
    runtime.checkpoint("ring", image, "--compression", compression)
    assert out.read_text() == "half 200\nfp started\n"
    assert runtime.cli("delete", "ring").returncode == 0

    info = inspect(runtime, image)
    header = info["header"]
    assert header["compression"] == compression
    assert [(t["pid"], t["threads"]) for t in header["tasks"]] == [(1, 5)]
    if compression == "zstd":
        assert header["parts"]["pages"]["size"] < header["memory"]["saved"] / 2
        assert header["parts"]["kernel"]["size"] < header["parts"]["kernel"]["raw_size"] / 2

    assert header["platform"] == saved_on
    r = runtime.restore(image, bundle, "ring", flags=["--platform", restored_on])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "count 600 turns 200 200 200\nfp ok\n", r.stderr
    assert runtime.ids() == []


# -------------------------------------------------------------------------
# A bind mount that moved.
# -------------------------------------------------------------------------

#: /data/file's contents: no newline, no two 5000-byte windows alike.
CONTENT = bytes(ord("a") + (i * 7 + i // 26) % 26 for i in range(64 * 1024))


@pytest.mark.parametrize("file_access", ["proxy", "direct"])
def test_bind_mount_moved(rootfs: Path, runtime: Runtime, tmp_path: Path, file_access: str) -> None:
    """The bind mount's host folder is moved after the checkpoint and the
    new bundle names its new place: the open file reads on from byte 5000,
    the descriptor opened for appending writes into the moved folder, and a
    file made there after the checkpoint is found."""
    flags = ["--file-access", file_access]
    data = tmp_path / "data1"
    data.mkdir()
    (data / "file").write_bytes(CONTENT)
    bundle = make_bundle(tmp_path / "bundle", rootfs, ["/bin/bindread"], [bind(data)])
    out = tmp_path / "run.out"
    runtime.run_detached(bundle, "bind", out, flags)
    wait_for(out, r"^waiting$")
    image = tmp_path / "image"
    runtime.checkpoint("bind", image)
    assert out.read_text() == f"first {CONTENT[:5000].decode()}\nwaiting\n"
    assert runtime.cli("delete", "bind").returncode == 0

    moved = tmp_path / "elsewhere" / "data2"
    moved.parent.mkdir()
    data.rename(moved)
    (moved / "new.txt").write_text("made after the checkpoint\n")
    with open(moved / "out.txt", "a") as f:  # the host appends while the sandbox is away
        f.write("host\n")
    bundle2 = make_bundle(tmp_path / "bundle2", rootfs, ["/bin/bindread"], [bind(moved)])
    r = runtime.restore(image, bundle2, "bind", flags=flags)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == f"offset 5000\nsecond {CONTENT[5000:12000].decode()}\nnew made after the checkpoint\n", \
        r.stderr
    assert (moved / "out.txt").read_text() == "before\nhost\nafter\n"  # O_APPEND: at the end as it is now
    assert not data.exists()
    assert runtime.ids() == []


# -------------------------------------------------------------------------
# Refusals: exit status 2, a message, nothing run, no container left.
# -------------------------------------------------------------------------


class BindImage:
    """A checkpoint of bindread with /data bound read-write from ``data``."""

    def __init__(self, runtime: Runtime, rootfs: Path, base: Path) -> None:
        self.runtime, self.rootfs, self.base = runtime, rootfs, base
        self.data = base / "data"
        self.data.mkdir()
        (self.data / "file").write_bytes(CONTENT)
        (self.data / "new.txt").write_text("new\n")
        self.extra = base / "extra"
        self.extra.mkdir()
        self.bundle = self.make("bundle")
        out = base / "run.out"
        runtime.run_detached(self.bundle, "bind", out)
        wait_for(out, r"^waiting$")
        self.image = base / "image"
        runtime.checkpoint("bind", self.image)
        assert runtime.cli("delete", "bind").returncode == 0

    def make(self, name: str, mounts: Sequence[dict[str, Any]] | None = None, readonly: bool = False) -> Path:
        return make_bundle(self.base / name, self.rootfs, ["/bin/bindread"],
                           [bind(self.data)] if mounts is None else mounts, readonly)

    def copy(self, name: str) -> Path:
        dst = self.base / "copies" / name
        shutil.copytree(self.image, dst)
        return dst


@pytest.fixture(scope="module")
def bind_image(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindImage]:
    base = tmp_path_factory.mktemp("bind-image")
    logs = base / "cli"
    logs.mkdir()
    rt = Runtime(base / "root", logs)
    try:
        yield BindImage(rt, rootfs, base)
    finally:
        rt.cleanup()


def assert_refused(img: BindImage, r: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 2, one error naming ``words``, no output of the program,
    no container left."""
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("pyrunsc: error: "), r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    assert img.runtime.ids() == []


MOUNT_CHANGES = {
    "added": (lambda i: i.make("added", [bind(i.data), bind(i.extra, "/extra")]),
              "mount at /extra: in the new spec, not in the image (added)"),
    "removed": (lambda i: i.make("removed", []), "mount at /data: in the image, not in the new spec (removed)"),
    "root-readonly": (lambda i: i.make("root-ro", readonly=True), "mount at /: read-only in the new spec only"),
    "bind-readonly": (lambda i: i.make("bind-ro", [bind(i.data, "/data", "ro")]),
                      "mount at /data: read-only in the new spec only"),
}


@pytest.mark.parametrize("change", list(MOUNT_CHANGES))
def test_changed_mounts_refused(bind_image: BindImage, change: str) -> None:
    """A mount added or removed, or a read-only flag flipped (on the root or
    on the bind mount): refused before anything runs, naming the mount."""
    make, message = MOUNT_CHANGES[change]
    r = bind_image.runtime.restore(bind_image.image, make(bind_image), "bind")
    assert_refused(bind_image, r, message, "only a mount's host source may change")


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def truncate(path: Path, by: int) -> None:
    os.truncate(path, path.stat().st_size - by)


def kernel_span(image: Path) -> tuple[int, int]:
    """Where the kernel blob is in checkpoint.img: offset and size."""
    raw = read_header(image)
    return raw.kernel_offset, raw.file_size - raw.kernel_offset


def corrupt_kernel(image: Path) -> None:
    offset, size = kernel_span(image)
    flip_byte(image / "checkpoint.img", offset + size // 2)


def corrupt_pages(image: Path) -> None:
    pages = image / "pages.img"
    flip_byte(pages, pages.stat().st_size // 2)


def alter_header(image: Path) -> None:
    """Change the container ID in the header, keeping it valid JSON of the same length."""
    path = image / "checkpoint.img"
    data = path.read_bytes()
    assert data.count(b'"container_id":"bind"') == 1
    path.write_bytes(data.replace(b'"container_id":"bind"', b'"container_id":"bine"'))


IMAGE_PROBLEMS = {
    "kernel-byte": (corrupt_kernel, "checkpoint.img: SHA-256 mismatch in the kernel blob"),
    "pages-byte": (corrupt_pages, "pages.img"),
    "kernel-truncated": (lambda p: truncate(p / "checkpoint.img", 100), "checkpoint.img: truncated"),
    "pages-truncated": (lambda p: truncate(p / "pages.img", 4096), "pages.img: truncated"),
    "header-byte": (lambda p: flip_byte(p / "checkpoint.img", 40), "checkpoint.img: the header is not a JSON object"),
    "header-altered": (alter_header, "checkpoint.img: the MAC does not verify: the header was altered"),
}


@pytest.mark.parametrize("problem", list(IMAGE_PROBLEMS))
def test_damaged_image_refused(bind_image: BindImage, problem: str) -> None:
    """One byte flipped in the kernel blob, in pages.img or in the header,
    the header altered (still JSON), or a file truncated: refused with the
    file named. The blob is checked before it is unpickled, in the new
    sandbox process; the rest before that process starts."""
    damage, message = IMAGE_PROBLEMS[problem]
    image = bind_image.copy(problem)
    damage(image)
    r = bind_image.runtime.restore(image, bind_image.bundle, "bind")
    assert_refused(bind_image, r, message)


def test_wrong_key_refused(bind_image: BindImage) -> None:
    """An image checked with another key than the one that made it."""
    other = bind_image.base / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    r = bind_image.runtime.restore(bind_image.image, bind_image.bundle, "bind", "--image-key", str(other))
    assert_refused(bind_image, r, "checkpoint.img: the MAC does not verify: the image was made with another key")


class Marker:
    """Unpickling this object creates the file ``path`` on the host."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (os.fspath(self.path), "w"))


def malicious_blob(marker: Path) -> bytes:
    return pickle.dumps({"kernel": Marker(marker), "memfile": None}, protocol=pickle.HIGHEST_PROTOCOL)


def write_malicious(img: BindImage, path: Path, marker: Path, key: bytes) -> None:
    """An image whose kernel blob creates ``marker`` when unpickled, with a
    header otherwise like the real image's (its mounts match), signed with ``key``."""
    header = read_header(img.image).header
    fields = new_header(container_id=header["container_id"], platform=header["platform"],
                        spec_digest=header["spec_digest"], mounts=header["mounts"], tasks=header["tasks"])
    memfile = MemoryFile(size=1 << 20)
    try:
        write_image(path, fields, malicious_blob(marker), memfile, key=key)
    finally:
        memfile.close()


def test_malicious_blob_never_unpickled(bind_image: BindImage) -> None:
    """A kernel blob that would create a file when unpickled: signed with
    another key, or put in place of a real image's blob (same size, header
    and MAC untouched), it is refused and the file never appears; signed
    with the root's own key (the control) it is unpickled and does."""
    rt, base = bind_image.runtime, bind_image.base / "malicious"
    base.mkdir()
    marker = base / "marker"

    write_malicious(bind_image, base / "other-key", marker, os.urandom(32))
    r = rt.restore(base / "other-key", bind_image.bundle, "bind")
    assert_refused(bind_image, r, "the MAC does not verify: the image was made with another key")
    assert not marker.exists()

    swapped = bind_image.copy("swapped-blob")
    offset, size = kernel_span(swapped)
    blob = malicious_blob(marker)
    assert len(blob) < size
    with open(swapped / "checkpoint.img", "r+b") as f:
        f.seek(offset)
        f.write(blob + b"\0" * (size - len(blob)))  # pickle stops at its STOP: the padding is never read
    r = rt.restore(swapped, bind_image.bundle, "bind")
    assert_refused(bind_image, r, "checkpoint.img: SHA-256 mismatch in the kernel blob")
    assert not marker.exists()

    # The control: the same blob, signed with the key restore trusts, does run.
    write_malicious(bind_image, base / "root-key", marker, (rt.root / "image.key").read_bytes())
    r = rt.restore(base / "root-key", bind_image.bundle, "bind")
    assert r.returncode != 0
    assert marker.exists(), r.stderr
    assert rt.ids() == []
