"""Switching between the threads of one process, through the whole sentry, in
one run against a single thread and against a minimal C ``PTRACE_SYSEMU``
tracer.

Usage: ``.venv/bin/python benchmarks/thread_switch.py [--calls N] [--rounds R] [--platform ptrace|kvm]``

``getpid_threads T N`` (benchmarks/getpid_threads.c, gcc -static -pthread)
runs T threads that each make N getpid calls. The sentry's run loop lets
tasks take turns one system call at a time, so with two threads every
system call is also a switch from one thread's registers to the other's on
the ptrace platform. Boot and thread start-up are removed by timing two loop
lengths and dividing the difference by the calls made. Printed: µs per call
for one thread and for two, and the ratios (to each other and to the C
tracer running the single-threaded ``getpid_loop``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from roundtrip_common import HERE, build, c_tracer_us, sentry_seconds

from pyrunsc.core.plugins import Plugins


def per_call_us(plugins: Plugins, bundle: Path, threads: int, calls: int, platform: str = "ptrace") -> float:
    """µs per system call with ``threads`` threads making ``calls`` calls each."""
    long = sentry_seconds(plugins, bundle, ["/getpid_threads", str(threads), str(calls)], platform)
    short = sentry_seconds(plugins, bundle, ["/getpid_threads", str(threads), str(calls // 10)], platform)
    return (long - short) / (threads * (calls - calls // 10)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=50_000, help="getpid calls per thread (default 50000)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--platform", default="ptrace", choices=["ptrace", "kvm"])
    args = ap.parse_args()
    plugins = Plugins()
    with tempfile.TemporaryDirectory() as tmp:
        progs = build(Path(tmp))
        prog, tracer = progs.prog, progs.tracer
        bundle = Path(tmp) / "bundle"
        (bundle / "rootfs").mkdir(parents=True)
        subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", bundle / "rootfs" / "getpid_threads",
                        HERE / "getpid_threads.c"], check=True)
        shutil.copy2(prog, bundle / "rootfs" / "getpid_loop")
        c, one, two = [], [], []
        for _ in range(args.rounds):
            c.append(c_tracer_us(tracer, prog, 2 * args.calls))
            one.append(per_call_us(plugins, bundle, 1, 2 * args.calls, args.platform))
            two.append(per_call_us(plugins, bundle, 2, args.calls, args.platform))
    ct, s1, s2 = (statistics.median(x) for x in (c, one, two))
    print(f"getpid round trip, µs per call (median of {args.rounds} rounds, {2 * args.calls} calls in all, "
          f"{args.platform} platform):")
    print(f"  C SYSEMU tracer, one thread    {ct:8.3f}")
    print(f"  pyrunsc, one thread            {s1:8.3f}   = {s1 / ct:.2f}x the C tracer")
    print(f"  pyrunsc, two threads in turn   {s2:8.3f}   = {s2 / ct:.2f}x the C tracer, {s2 / s1:.2f}x one thread")


if __name__ == "__main__":
    main()
