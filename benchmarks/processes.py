"""Processes (issue #6): fork+exec+wait, pipe throughput and a busybox shell pipeline, sandboxed against native.

Usage: ``.venv/bin/python benchmarks/processes.py [--rounds R] [--spawn N] [--pipe-mib M]
[--platform ptrace|kvm] [--file-access proxy|direct]``

One static C helper (benchmarks/processes.c, built with ``gcc -static`` into a
temporary folder) and Debian's static busybox go into a temporary bundle. Each
figure is measured natively, in a chroot of that bundle's rootfs, and in the
sandbox with real ``pyrunsc run`` (ptrace platform and proxy file access, the
defaults, unless told otherwise), round-robin in the same run; the medians are
compared:

1. ``spawn``: N times fork, execve("/bin/true") (busybox), waitpid, timed by the
   helper itself, so the sandbox's start-up is not counted; µs per iteration.
2. ``pipe``: the helper writes M MiB into a pipe in 64 KiB (then 4 KiB) writes
   to a child that reads, spot-checks and discards them; MiB/s from the
   child's fork to its waitpid.
3. ``sh -c 'seq 1 20000 | sort -rn | head -1'`` (busybox sh forks its applets,
   no exec), three ways: the wall time of the whole ``pyrunsc run`` (start-up
   included) or of the native fork+exec+chroot from Python; that less the same
   for busybox ``true`` run right after it; and the time inside, from the helper's fork+exec of
   /bin/sh to its waitpid (start-up excluded).

The sentry runs every task from one host thread (the ptrace platform also
pins it and its stubs to one CPU), so native runs are pinned to one CPU too
(the ratios' base); the pipe is also run natively unpinned, for information.
The wall-time difference of item 3 subtracts two figures of about 250 ms
each, so the time inside is the steadier one. Every run's output is checked
(exit status, the helper's counts, sort's ``20000``) so that a broken run is
never reported as fast; a benchmark that fails is reported as FAILED, with the
end of the sandbox's stderr, and the others still run. Needs root (chroot) and
gcc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYRUNSC = Path(sys.executable).parent / "pyrunsc"
BUSYBOX = Path("/bin/busybox")
HELPER = "/processes"  # the helper's path in the rootfs
PIPELINE = "seq 1 20000 | sort -rn | head -1"
PIPELINE_OUT = b"20000\n"
ENV = {"PATH": "/bin"}
CHUNKS = (64 << 10, 4 << 10)  # pipe write sizes


class Failed(Exception):
    """A run that did not give the right result: its command, status and output."""


def failure(where: str, args: list[str], r: subprocess.CompletedProcess[bytes]) -> Failed:
    err = r.stderr.decode(errors="replace").rstrip().splitlines()[-12:]
    return Failed(f"{where} {args}: exit status {r.returncode}, stdout {r.stdout[:200]!r}, stderr (its end):\n"
                  + "\n".join("      " + line for line in err))


def build(tmp: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("gcc is needed to build the benchmark program")
    helper = tmp / "processes"
    subprocess.run([gcc, "-O2", "-static", "-o", helper, HERE / "processes.c"], check=True)
    return helper


def make_bundle(root: Path, helper: Path) -> Path:
    """busybox, its applet links and the helper; the sandbox brings its own /proc, /dev and /tmp."""
    rootfs = root / "rootfs"
    for d in ("bin", "proc", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", rootfs / "bin" / a)
    shutil.copy2(helper, rootfs / HELPER.lstrip("/"))
    return root


class Runner:
    """Runs one command in the sandbox or natively; checks its exit status."""

    def __init__(self, bundle: Path, state: Path, platform: str, file_access: str, cpu: int) -> None:
        self.bundle, self.state = bundle, state
        self.flags = ["--platform", platform, "--file-access", file_access]
        self.cpu = cpu
        self.runs = 0
        # Bytecode caching on, as for users (the session may turn it off).
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def sandbox(self, args: list[str]) -> tuple[bytes, bytes, float]:
        """``pyrunsc run`` of args: stdout, stderr and the wall time of the whole run."""
        spec = {"ociVersion": "1.0.2",
                "process": {"user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
                            "env": [f"{k}={v}" for k, v in ENV.items()]},
                "root": {"path": "rootfs", "readonly": True}}
        (self.bundle / "config.json").write_text(json.dumps(spec))
        self.runs += 1
        cmd = [str(PYRUNSC), "--root", str(self.state), *self.flags, "run", "--bundle", str(self.bundle),
               f"bench{os.getpid()}-{self.runs}"]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, env=self.env, timeout=600)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise failure("sandbox", args, r)
        return r.stdout, r.stderr, wall

    def native(self, args: list[str], pin: bool = True) -> tuple[bytes, bytes, float]:
        """args in a chroot of the bundle's rootfs (pinned to one CPU unless told not to):
        stdout, stderr and the wall time from Python's fork to the reaped child."""
        rootfs, cpu = self.bundle / "rootfs", self.cpu

        def enter() -> None:
            os.chroot(rootfs)
            os.chdir("/")
            if pin:
                os.sched_setaffinity(0, {cpu})

        t = time.perf_counter()
        r = subprocess.run(args, capture_output=True, preexec_fn=enter, env=ENV, timeout=600)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise failure("native", args, r)
        return r.stdout, r.stderr, wall


def field(text: bytes, name: str, where: str) -> float:
    m = re.search(rb"\b" + name.encode() + rb"=([0-9.]+)", text)
    if m is None:
        raise Failed(f"{where}: no {name}= in {text!r}")
    return float(m.group(1))


def spawn_us(run: Runner, side: str, n: int) -> float:
    out, _, _ = getattr(run, side)([HELPER, "spawn", str(n), "/bin/true"])
    if field(out, "iterations", side) != n:
        raise Failed(f"{side} spawn: {out!r}")
    return field(out, "us_per_iteration", side)


def pipe_mib_s(run: Runner, side: str, total: int, chunk: int, pin: bool = True) -> float:
    args = [HELPER, "pipe", str(total), str(chunk)]
    out, _, _ = run.sandbox(args) if side == "sandbox" else run.native(args, pin)
    if field(out, "bytes", side) != total:
        raise Failed(f"{side} pipe: {out!r}")
    return field(out, "mib_per_s", side)


def pipeline(run: Runner, side: str) -> tuple[float, float, float]:
    """Seconds: the wall time of the pipeline's run, of a ``true`` run, and the
    pipeline's time inside (the helper's fork+exec+wait of /bin/sh)."""
    go = getattr(run, side)
    out, _, wall = go(["sh", "-c", PIPELINE])
    if out != PIPELINE_OUT:
        raise Failed(f"{side} {PIPELINE!r} printed {out!r}, want {PIPELINE_OUT!r}")
    out, _, wall_true = go(["true"])
    out, err, _ = go([HELPER, "time", "/bin/sh", "-c", PIPELINE])
    if out != PIPELINE_OUT or field(err, "status", side) != 0:
        raise Failed(f"{side} timed {PIPELINE!r}: stdout {out!r}, stderr {err!r}")
    return wall, wall_true, field(err, "us", side) / 1e6


def report(m: dict[str, float], failed: dict[str, str], args: argparse.Namespace, cpu: int) -> None:
    print(f"processes, {args.platform} platform, {args.file_access} file access: medians of {args.rounds} rounds "
          f"made round-robin; native pinned to CPU {cpu} (the sandbox runs all its tasks from one host thread); "
          f"{os.cpu_count()} CPUs")
    print(f"  fork+exec+wait of /bin/true, µs per iteration ({args.spawn} per run, timed inside):")
    if "spawn" in failed:
        print(f"    FAILED: {failed['spawn']}")
    else:
        n, s = m["spawn native"], m["spawn sandbox"]
        print(f"    native {n:10.1f}   sandbox {s:10.1f}   = {s / n:.1f}x native")
    print(f"  pipe between two processes, MiB/s ({args.pipe_mib} MiB per run, timed inside):")
    if "pipe" in failed:
        print(f"    FAILED: {failed['pipe']}")
    else:
        for chunk in CHUNKS:
            n, s, u = m[f"pipe {chunk} native"], m[f"pipe {chunk} sandbox"], m[f"pipe {chunk} unpinned"]
            print(f"    {chunk >> 10:2d} KiB writes: native {n:8.0f}   sandbox {s:8.1f}   = {s / n:.3f}x native "
                  f"({n / s:.0f}x slower); native unpinned {u:.0f}")
    print(f"  sh -c '{PIPELINE}', ms:")
    if "sh" in failed:
        print(f"    FAILED: {failed['sh']}")
        return
    for label, key in (("wall, start-up included", "sh wall"), ("inside (fork+exec+wait of sh)", "sh inside")):
        n, s = 1e3 * m[f"{key} native"], 1e3 * m[f"{key} sandbox"]
        print(f"    {label:31s} native {n:8.1f}   sandbox {s:8.1f}   = {s / n:.1f}x native")
    n, s = 1e3 * m["sh less-true native"], 1e3 * m["sh less-true sandbox"]
    print(f"    {'wall less a run of true':31s} native {n:8.1f}   sandbox {s:8.1f}   = {s / n:.1f}x native "
          f"(true: native {1e3 * m['sh true native']:.1f}, sandbox {1e3 * m['sh true sandbox']:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="runs of each, round-robin; medians are reported")
    ap.add_argument("--spawn", type=int, default=200, help="fork+exec+wait iterations per run")
    ap.add_argument("--pipe-mib", type=int, default=64, help="MiB through the pipe per run")
    ap.add_argument("--platform", default="ptrace", choices=["ptrace", "kvm"])
    ap.add_argument("--file-access", default="proxy", choices=["proxy", "direct"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: the native runs are chrooted into the bundle's rootfs")
    if not BUSYBOX.exists():
        sys.exit("needs Debian's busybox-static (/bin/busybox)")
    cpu = min(os.sched_getaffinity(0))
    total = args.pipe_mib << 20
    results: dict[str, list[float]] = {}
    failed: dict[str, str] = {}  # benchmark -> what went wrong; it is not run again

    with tempfile.TemporaryDirectory(prefix="pyrunsc-bench-") as tmp:
        helper = build(Path(tmp))
        bundle = make_bundle(Path(tmp) / "bundle", helper)
        run = Runner(bundle, Path(tmp) / "state", args.platform, args.file_access, cpu)

        def spawn() -> dict[str, float]:
            return {f"spawn {side}": spawn_us(run, side, args.spawn) for side in ("native", "sandbox")}

        def pipe() -> dict[str, float]:
            got = {}
            for chunk in CHUNKS:
                got[f"pipe {chunk} native"] = pipe_mib_s(run, "native", total, chunk)
                got[f"pipe {chunk} sandbox"] = pipe_mib_s(run, "sandbox", total, chunk)
                got[f"pipe {chunk} unpinned"] = pipe_mib_s(run, "native", total, chunk, pin=False)
            return got

        def sh() -> dict[str, float]:
            got = {}
            for side in ("native", "sandbox"):
                got[f"sh wall {side}"], got[f"sh true {side}"], got[f"sh inside {side}"] = pipeline(run, side)
                # Paired within the round, so that a busy moment hits both.
                got[f"sh less-true {side}"] = got[f"sh wall {side}"] - got[f"sh true {side}"]
            return got

        try:
            run.sandbox(["true"])  # warms the bytecode cache
        except Failed as e:
            sys.exit(f"the sandbox cannot run busybox true: {e}")
        benchmarks: dict[str, Callable[[], dict[str, float]]] = {"spawn": spawn, "pipe": pipe, "sh": sh}
        for _ in range(args.rounds):
            for name, bench in benchmarks.items():
                if name in failed:
                    continue
                try:
                    for key, value in bench().items():
                        results.setdefault(key, []).append(value)
                except (Failed, subprocess.TimeoutExpired) as e:
                    failed[name] = str(e)
    report({k: statistics.median(v) for k, v in results.items()}, failed, args, cpu)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
