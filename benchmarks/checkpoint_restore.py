"""Checkpoint and restore of a running sandbox (issue #7), against ``cp`` of the same bytes.

Usage: ``.venv/bin/python benchmarks/checkpoint_restore.py [--sizes 1,64,512]
[--kinds memory,tmpfs,zeros] [--compression none,zstd] [--rounds R] [--dir DIR]
[--file-access proxy|direct] [--pyrunsc PATH]`` (``--pyrunsc``: another build's
``pyrunsc`` script, e.g. an older commit's in its own virtualenv, to compare)

For each kind and size S (MiB), in one run, round-robin, R rounds (medians):

- ``memory``: a static C program (benchmarks/dirty_memory.c, ``gcc -static``)
  mallocs S MiB, fills them with non-zero pseudo-random bytes, prints
  ``ready``, then waits in a read of stdin;
- ``tmpfs``: busybox ``sh -c 'dd if=/dev/urandom of=/tmp/f bs=1M count=S;
  echo ready; read x; echo resumed; stat -c %s /tmp/f'`` (the data lives in
  the memory file, as tmpfs does);
- ``zeros`` (the largest size only, no compression): the C program with S MiB
  committed but all zeros: the image must not grow with them.

Each case runs with real ``pyrunsc run --detach`` (ptrace platform, proxy
file access unless told otherwise), then:

1. **checkpoint**: the wall time of ``pyrunsc checkpoint`` (interpreter
   start-up, the safe point, the image, and the wait for the sandbox to
   stop), and the sentry's own time (``seconds`` in the command's summary:
   from the safe point to the image renamed into place, kernel pickling
   included).
2. **restore**: ``pyrunsc restore`` is started with one byte already in its
   stdin; the restored program's read returns it and its next instruction
   prints ``resumed``. "first output" is the time from the command's start
   to the first byte of that line. Its debug log (``restore: PHASE at
   monotonic T`` lines, core/checkpoint/restore.py) splits it: the pages'
   load (``loading the pages`` to ``pages loaded``: the copy into the new
   memory file and the SHA-256 of every part) and the **fixed part**, all
   the rest (interpreter start-up, spec, image MAC, gofer, fork, platform,
   unpickling, re-binding, the first resumed system call).
3. the **image**: its bytes on disk (``du``: allocated blocks), the header's
   ``memory.committed`` and ``memory.saved``.
4. **cp** of a file of the saved bytes' size, between the same two places:
   the checkpoint's way, from /dev/shm (memory, as the memfd) into DIR
   followed by ``sync`` of the copy (checkpoint fsyncs its files); the
   restore's way, from DIR into /dev/shm. The page cache is not dropped
   anywhere: restore and ``cp`` both read files just written, in the cache.
   Every timed step runs after an ``os.sync()``. The ``cp`` runs right after
   the restore in odd rounds and right before the checkpoint in even ones:
   on the test VM the first large disk write after a pause is now and then
   several times slower, whoever makes it.

One cycle of the smallest case runs first, not counted: it fills the
bytecode cache (the commands run with it on, as for users).

Goals (issue #7): checkpoint and restore each at most 1.5x ``cp``, the fixed
part of a restore under 150 ms, zero pages free on disk. Every run's output
is checked (the memory's sum, the file's size) so that a broken restore is
never reported as fast. Needs gcc and /bin/busybox.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyrunsc.core.checkpoint.image import read_header
from pyrunsc.core.checkpoint.progress import format_bytes

HERE = Path(__file__).resolve().parent
PYRUNSC = Path(sys.executable).parent / "pyrunsc"
BUSYBOX = Path("/bin/busybox")
MiB = 1 << 20
#: Seconds to wait for a program's line before calling the run broken.
TIMEOUT = 120.0
MARK = re.compile(r"restore: (.+) at monotonic ([0-9.]+)$")
#: The commands run with bytecode caching on, as for users.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


class Failed(Exception):
    pass


@dataclass
class Case:
    kind: str  # memory, tmpfs, zeros
    mib: int
    compression: str

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.mib}-{self.compression}"


@dataclass
class Sample:
    """One checkpoint and restore of a case (seconds, bytes)."""

    ckpt_cmd: float = 0.0
    ckpt_sentry: float = 0.0
    first_output: float = 0.0
    restore_cmd: float = 0.0
    load: float = 0.0
    before_load: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    du: int = 0
    committed: int = 0
    saved: int = 0
    pages: int = 0
    cp_write: float = 0.0
    cp_read: float = 0.0

    @property
    def fixed(self) -> float:
        return self.first_output - self.load


def build(work: Path) -> Path:
    """The bundle's rootfs: busybox and the C program."""
    gcc = shutil.which("gcc")
    if gcc is None or not BUSYBOX.exists():
        sys.exit("gcc and /bin/busybox are needed")
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "tmp").mkdir()
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "dd", "stat", "echo"):
        os.symlink("busybox", rootfs / "bin" / applet)
    subprocess.run([gcc, "-O2", "-static", "-o", rootfs / "bin" / "dirty_memory", HERE / "dirty_memory.c"],
                   check=True)
    return rootfs


def bundle(work: Path, rootfs: Path, case: Case) -> Path:
    if case.kind == "tmpfs":
        script = (f"dd if=/dev/urandom of=/tmp/f bs=1M count={case.mib} 2>/dev/null; echo ready; read x; "
                  "echo resumed; stat -c %s /tmp/f")
        args = ["/bin/sh", "-c", script]
    else:
        args = ["/bin/dirty_memory", str(case.mib), "zero" if case.kind == "zeros" else "random"]
    folder = work / f"bundle-{case.name}"
    if not folder.exists():
        folder.mkdir()
        spec = {"ociVersion": "1.0.2", "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"]},
                "root": {"path": os.fspath(rootfs), "readonly": True}}
        (folder / "config.json").write_text(json.dumps(spec))
    return folder


def read_line(fd: int, deadline: float, buf: bytearray) -> tuple[bytes, float]:
    """The next line from ``fd`` and when its first byte came (monotonic)."""
    first = 0.0
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise Failed(f"no line within {TIMEOUT:g} s (so far {bytes(buf)!r})")
        data = os.read(fd, 65536)
        if not data:
            raise Failed(f"the output ended (so far {bytes(buf)!r})")
        if not buf:
            first = first or time.monotonic()
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line, first


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # earlier steps' writeback must not slow this one down
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def run(cmd: list[str], **kw: Any) -> None:
    subprocess.run(cmd, check=True, env=ENV, **kw)


def last_summary(log: Path, cid: str) -> dict[str, object]:
    """The summary ``pyrunsc checkpoint`` logs (``checkpoint of ID: {...}``)."""
    prefix = f"checkpoint of {cid}: "
    for line in reversed(log.read_text().splitlines()):
        msg = json.loads(line).get("msg", "")
        if msg.startswith(prefix):
            summary = ast.literal_eval(msg[len(prefix):])
            assert isinstance(summary, dict)
            return summary
    raise Failed(f"no checkpoint summary in {log}")


def marks(log: Path) -> dict[str, float]:
    out = {}
    for line in log.read_text().splitlines():
        m = MARK.search(json.loads(line).get("msg", ""))
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


class Bench:
    def __init__(self, work: Path, rootfs: Path, command: Path, global_args: Sequence[str]) -> None:
        self.work = work
        self.command = command
        self.rootfs = rootfs
        self.root = work / "state"
        self.glob = list(global_args)
        self.count = 0
        self.sources: dict[int, Path] = {}
        #: Each case's saved bytes, from its last round.
        self.saved_sizes: dict[str, int] = {}

    def pyrunsc(self, *args: str | os.PathLike[str]) -> list[str]:
        return [os.fspath(self.command), *(os.fspath(a) for a in args)]

    def cid(self, case: Case, what: str) -> str:
        self.count += 1
        return f"{case.name}-{what}-{self.count}"

    def source(self, size: int) -> Path:
        """A file of ``size`` random bytes in the work folder (the cp source)."""
        if size not in self.sources:
            path = self.work / f"src-{size}"
            with open(path, "wb") as f:
                for pos in range(0, size, 8 * MiB):
                    f.write(os.urandom(min(8 * MiB, size - pos)))
            self.sources[size] = path
        return self.sources[size]

    def expect(self, case: Case, ready: bytes) -> bytes:
        """What the program prints after "resumed" when its data survived."""
        if case.kind == "tmpfs":
            return str(case.mib * MiB).encode()
        return b"sum " + ready.split()[1]

    def baseline(self, s: Sample, size: int) -> None:
        """cp of ``size`` bytes both ways (step 4)."""
        src = self.source(size)
        shm = Path("/dev/shm") / f"pyrunsc-bench-{os.getpid()}"
        dst = self.work / "copy"
        try:
            s.cp_read = timed(lambda: subprocess.run(["cp", src, shm], check=True))
            s.cp_write = timed(lambda: (subprocess.run(["cp", shm, dst], check=True),
                                        subprocess.run(["sync", dst], check=True)))
        finally:
            shm.unlink(missing_ok=True)
            dst.unlink(missing_ok=True)

    def one(self, case: Case, bundle_dir: Path, cp_first: bool = False) -> Sample:
        """A checkpoint and a restore of ``case``, and the cp baseline: before
        the checkpoint with ``cp_first`` (once the saved size is known), else
        after the restore. (On this VM the first large disk write after a
        pause is now and then several times slower, whoever makes it: the
        order alternates between rounds so that neither side always pays.)"""
        s = Sample()
        known = self.saved_sizes.get(case.name)
        if cp_first and known is not None:
            self.baseline(s, known)
        img = self.work / f"img-{self.count}"
        run_id, restore_id = self.cid(case, "run"), self.cid(case, "restore")
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        buf = bytearray()
        try:
            run(self.pyrunsc("--root", self.root, *self.glob, "run", "--detach", "--bundle", bundle_dir, run_id),
                stdin=in_r, stdout=out_w)
            os.close(in_r)
            os.close(out_w)
            in_r = out_w = -1
            ready, _ = read_line(out_r, time.monotonic() + TIMEOUT, buf)
            if not ready.startswith(b"ready"):
                raise Failed(f"{case.name}: {ready!r} instead of ready")
            # 1. checkpoint
            log = self.work / f"ckpt-{self.count}.log"
            cmd = self.pyrunsc("--root", self.root, *self.glob, "--log", log, "--log-format", "json", "checkpoint",
                               "--image-path", img, "--compression", case.compression, run_id)
            s.ckpt_cmd = timed(lambda: run(cmd, stderr=subprocess.DEVNULL))
            s.ckpt_sentry = float(str(last_summary(log, run_id)["seconds"]))
        finally:
            for fd in (in_r, in_w, out_r, out_w):
                if fd >= 0:
                    os.close(fd)
        run(self.pyrunsc("--root", self.root, "delete", run_id))
        # 3. the image
        raw = read_header(img)
        s.committed, s.saved = raw.header["memory"]["committed"], raw.header["memory"]["saved"]
        s.pages = (img / "pages.img").stat().st_size
        s.du = sum(p.stat().st_blocks * 512 for p in img.iterdir())
        # 2. restore, its stdin already holding the byte its read waits for
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        os.write(in_w, b"x\n")
        os.close(in_w)
        rlog = self.work / f"restore-{self.count}.log"
        cmd = self.pyrunsc("--root", self.root, *self.glob, "--debug", "--log", rlog, "--log-format", "json",
                           "restore", "--image-path", img, "--bundle", bundle_dir, restore_id)
        buf.clear()
        try:
            os.sync()
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdin=in_r, stdout=out_w, stderr=subprocess.PIPE, env=ENV)
            os.close(in_r)
            os.close(out_w)
            in_r = out_w = -1
            try:
                line, first = read_line(out_r, t0 + TIMEOUT, buf)
                if not line.startswith(b"resumed"):
                    raise Failed(f"{case.name}: restored program said {line!r}")
                check, _ = read_line(out_r, t0 + TIMEOUT, buf)
                _, err = proc.communicate(timeout=TIMEOUT)
                s.restore_cmd = time.monotonic() - t0
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if proc.returncode != 0:
                raise Failed(f"{case.name}: restore exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
        finally:
            for fd in (in_r, out_r, out_w):
                if fd >= 0:
                    os.close(fd)
        if check != self.expect(case, ready):
            raise Failed(f"{case.name}: after the restore {check!r}, before {ready!r}")
        s.first_output = first - t0
        m = marks(rlog)
        s.phases = {k: v - t0 for k, v in m.items()}
        s.load = m["pages loaded"] - m["loading the pages"]
        s.before_load = m["loading the pages"] - t0
        shutil.rmtree(img)
        # 4. cp of the same number of bytes, both ways
        if not (cp_first and known is not None):
            self.baseline(s, s.saved)
        self.saved_sizes[case.name] = s.saved
        return s

    def cleanup(self) -> None:
        """Delete any container left by a failed step (killing its sandbox)."""
        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            if (d / "state.json").exists():
                subprocess.run(self.pyrunsc("--root", self.root, "delete", "--force", d.name), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def med(samples: list[Sample], attr: str) -> float:
    return statistics.median(float(getattr(s, attr)) for s in samples)


def report(results: dict[str, list[Sample]], cases: list[Case]) -> None:
    rows = [(c.name, results[c.name]) for c in cases if results.get(c.name)]
    print("\ncheckpoint (medians, ms; ratio: to cp + sync of the saved bytes; sentry: the sentry's own time,"
          " command: the whole pyrunsc checkpoint)")
    print(f"{'case':>18} | {'cp+sync':>7} | {'sentry':>7} {'ratio':>6} | {'command':>7} {'ratio':>6}")
    for name, ss in rows:
        cp, sentry, cmd = med(ss, "cp_write"), med(ss, "ckpt_sentry"), med(ss, "ckpt_cmd")
        print(f"{name:>18} | {cp * 1e3:7.0f} | {sentry * 1e3:7.0f} {sentry / cp:5.2f}x | "
              f"{cmd * 1e3:7.0f} {cmd / cp:5.2f}x")
    print("\nrestore (medians, ms; ratio: to cp of the saved bytes into /dev/shm; 1st out: the command's start to"
          " the restored\nprogram's first byte; fixed: 1st out less the pages' load; own: fixed less the interpreter"
          " and CLI start-up)")
    print(f"{'case':>18} | {'cp':>5} | {'load':>5} {'ratio':>6} | {'1st out':>7} {'ratio':>6} | {'fixed':>5} "
          f"{'own':>5} {'<150':>5}")
    for name, ss in rows:
        cp, load, first, fixed = med(ss, "cp_read"), med(ss, "load"), med(ss, "first_output"), med(ss, "fixed")
        own = statistics.median(s.fixed - s.phases["command started"] for s in ss)
        print(f"{name:>18} | {cp * 1e3:5.0f} | {load * 1e3:5.0f} {load / cp:5.2f}x | {first * 1e3:7.0f} "
              f"{first / cp:5.2f}x | {fixed * 1e3:5.0f} {own * 1e3:5.0f} {'yes' if fixed < 0.150 else 'no':>5}")
    print("\nimage (the last round's)")
    print(f"{'case':>18} | {'committed':>10} {'saved':>10} {'pages.img':>10} {'on disk':>10} | on disk / saved")
    for name, ss in rows:
        s = ss[-1]
        print(f"{name:>18} | {format_bytes(s.committed):>10} {format_bytes(s.saved):>10} "
              f"{format_bytes(s.pages):>10} {format_bytes(s.du):>10} | {s.du / max(s.saved, 1):.3f}")
    print("\nrestore timeline (medians, ms from the command's start)")
    phases = list(rows[0][1][0].phases) if rows else []
    print(f"{'case':>18} | " + " | ".join(f"{n[:12]:>12}" for n in phases) + f" | {'1st out':>7}")
    for name, ss in rows:
        cells = [f"{statistics.median(s.phases.get(n, float('nan')) for s in ss) * 1e3:12.0f}" for n in phases]
        print(f"{name:>18} | " + " | ".join(cells) + f" | {med(ss, 'first_output') * 1e3:7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,64,512", help="MiB, comma-separated")
    ap.add_argument("--kinds", default="memory,tmpfs,zeros")
    ap.add_argument("--compression", default="none,zstd")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where images go (default: a temporary folder)")
    ap.add_argument("--file-access", default="proxy", choices=["proxy", "direct"])
    ap.add_argument("--pyrunsc", type=Path, default=PYRUNSC, help="the pyrunsc command to measure")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    comps = args.compression.split(",")
    cases = [Case(k, m, c) for k in kinds if k != "zeros" for m in sizes for c in comps]
    if "zeros" in kinds:
        cases.append(Case("zeros", max(sizes), "none"))
    work = Path(tempfile.mkdtemp(prefix="pyrunsc-bench-", dir=args.dir))
    bench = Bench(work, build(work), args.pyrunsc.absolute(), ["--file-access", args.file_access])
    results: dict[str, list[Sample]] = {}
    try:
        warm = Case("memory", min(sizes), "none")  # fills the bytecode cache; not counted
        bench.one(warm, bundle(work, bench.rootfs, warm))
        for r in range(args.rounds):
            for case in cases:
                try:
                    s = bench.one(case, bundle(work, bench.rootfs, case), cp_first=r % 2 == 1)
                except (Failed, subprocess.CalledProcessError) as e:
                    print(f"round {r + 1} {case.name}: FAILED: {e}", flush=True)
                    bench.cleanup()
                    continue
                results.setdefault(case.name, []).append(s)
                print(f"round {r + 1} {case.name:>18}: checkpoint {s.ckpt_cmd * 1e3:5.0f} ms "
                      f"(sentry {s.ckpt_sentry * 1e3:4.0f}, cp+sync {s.cp_write * 1e3:4.0f}), "
                      f"restore first output {s.first_output * 1e3:5.0f} ms (load {s.load * 1e3:4.0f}, "
                      f"cp {s.cp_read * 1e3:4.0f}, fixed {s.fixed * 1e3:4.0f})", flush=True)
        report(results, cases)
        print(f"\n(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.file_access} file access; "
              f"images in {work.parent}; {bench.command})")
    finally:
        bench.cleanup()
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
