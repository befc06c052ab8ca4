"""The system call round trip through the whole sentry, in one run against
native and against a minimal C ``PTRACE_SYSEMU`` tracer.

Usage: ``.venv/bin/python benchmarks/syscall_roundtrip.py [--calls N]``

The same static ``getpid_loop`` program (benchmarks/getpid_loop.c) runs
natively, under the C tracer (benchmarks/sysemu_tracer.c, which answers every
call itself), and in a pyrunsc sandbox on the ptrace platform, where each
getpid goes through the kernel's system call table. Boot cost is removed by
timing two loop lengths and dividing the difference. The goal is at most 1.4x
the C tracer's time per call.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ptrace_roundtrip import build, c_tracer_us, native_us

from pyrunsc.core.config import Config
from pyrunsc.core.loader import boot
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.spec import load_bundle


def sentry_seconds(plugins: Plugins, bundle: Path, args: list[str]) -> float:
    """Seconds the sentry's run loop takes to run ``args`` from ``bundle``'s
    read-only rootfs (ptrace, direct file access; boot not counted)."""
    spec_doc = {"ociVersion": "1.0.2", "process": {"args": args, "cwd": "/"},
                "root": {"path": "rootfs", "readonly": True}}
    (bundle / "config.json").write_text(json.dumps(spec_doc))
    sandbox = boot(plugins, load_bundle(bundle), Config(file_access="direct", platform="ptrace"))
    try:
        t = time.perf_counter()
        status = sandbox.kernel.run(sandbox.init)
        elapsed = time.perf_counter() - t
    finally:
        sandbox.close()
    assert status.code == 0 and not status.signal, status
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    plugins = Plugins()
    with tempfile.TemporaryDirectory() as tmp:
        prog, tracer = build(Path(tmp))
        bundle = Path(tmp) / "bundle"
        (bundle / "rootfs").mkdir(parents=True)
        shutil.copy2(prog, bundle / "rootfs" / "getpid_loop")
        native, c, ours = [], [], []
        for _ in range(args.rounds):
            native.append(native_us(prog, args.calls))
            c.append(c_tracer_us(tracer, prog, args.calls))
            long = sentry_seconds(plugins, bundle, ["/getpid_loop", str(args.calls)])
            short = sentry_seconds(plugins, bundle, ["/getpid_loop", str(args.calls // 10)])
            ours.append((long - short) / (args.calls - args.calls // 10) * 1e6)
    n, ct, s = (statistics.median(x) for x in (native, c, ours))
    print(f"getpid round trip, µs per call (median of {args.rounds} rounds, {args.calls} calls):")
    print(f"  native              {n:8.3f}")
    print(f"  C SYSEMU tracer     {ct:8.3f}")
    print(f"  pyrunsc sentry      {s:8.3f}   = {s / ct:.2f}x the C tracer, {s / n:.0f}x native")


if __name__ == "__main__":
    main()
