"""The system call round trip through the whole sentry, in one run against
native and against a minimal C ``PTRACE_SYSEMU`` tracer.

Usage: ``.venv/bin/python benchmarks/syscall_roundtrip.py [--calls N] [--platform ptrace|kvm]``

The same static ``getpid_loop`` program (benchmarks/getpid_loop.c) runs
natively, under the C tracer (benchmarks/sysemu_tracer.c, which answers every
call itself), and in a pyrunsc sandbox on the chosen platform, where each
getpid goes through the kernel's system call table. Boot cost is removed by
timing two loop lengths and dividing the difference. The goal on ptrace is at
most 1.4x the C tracer's time per call (``kvm_roundtrip.py`` has the KVM
platform's floors).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from roundtrip_common import build, c_tracer_us, native_us, sentry_bundle, sentry_us

from pyrunsc.core.plugins import Plugins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--platform", default="ptrace", choices=["ptrace", "kvm"])
    args = ap.parse_args()
    plugins = Plugins()
    with tempfile.TemporaryDirectory() as tmp:
        progs = build(Path(tmp))
        bundle = sentry_bundle(Path(tmp), progs.prog)
        native, c, ours = [], [], []
        for _ in range(args.rounds):
            native.append(native_us(progs.prog, args.calls))
            c.append(c_tracer_us(progs.tracer, progs.prog, args.calls))
            ours.append(sentry_us(plugins, bundle, args.calls, args.platform))
    n, ct, s = (statistics.median(x) for x in (native, c, ours))
    print(f"getpid round trip, µs per call (median of {args.rounds} rounds, {args.calls} calls):")
    print(f"  native              {n:8.3f}")
    print(f"  C SYSEMU tracer     {ct:8.3f}")
    print(f"  pyrunsc sentry      {s:8.3f}   = {s / ct:.2f}x the C tracer, {s / n:.0f}x native ({args.platform})")


if __name__ == "__main__":
    main()
