"""The system call round trip of the ptrace platform, against native and a C tracer.

One program, ``getpid_loop.c`` (static, no libc: N getpid calls then
exit_group), built with ``gcc -static -nostdlib`` into a temporary folder
(``roundtrip_common.py``), runs:

- natively (µs per call from two runs, N and 0 calls, to cancel the start-up);
- under ``sysemu_tracer.c``, a minimal C PTRACE_SYSEMU tracer (GETREGS, set
  rax, SETREGS); the same with the XSAVE image read and written every round
  trip (``--xstate``), which is what a platform keeping FP state does; and
  the same writing rax alone with POKEUSER (``--poke``), as the platform does
  when nothing else changed;
- under pyrunsc's ptrace platform: its PT_LOAD segments copied into the memory
  file and mapped into a stub, each ``Context.switch`` answered with rax = 1
  (no kernel logic) until exit_group; once with core's Registers (the XSAVE
  image is read back at every stop) and once with Registers that have the
  lazy-FP hook (``lazyfp.LazyFPRegisters``: read only when asked for).

All tracers pin themselves to one CPU unless ``--no-pin``. Prints µs per
call, the best and the median of ``--repeat`` runs made round-robin, and the
ratios of the bests.

    .venv/bin/python benchmarks/ptrace_roundtrip.py [--calls N] [--repeat R] [--no-pin]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from roundtrip_common import build, c_tracer_us, native_us, platform_us

from pyrunsc.core.arch import Registers
from pyrunsc.core.config import Config
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.plugins.platform_ptrace import PtracePlatform
from pyrunsc.plugins.platform_ptrace.lazyfp import LazyFPRegisters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000, help="system calls per run (default 100000)")
    ap.add_argument("--repeat", type=int, default=7, help="runs of each, round-robin (default 7)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin tracers to one CPU")
    args = ap.parse_args()
    pin = not args.no_pin
    flags = () if pin else ("--no-pin",)
    runs: dict[str, list[float]] = {k: [] for k in ("native", "c", "c_xs", "c_poke", "eager", "lazy")}
    memfile = MemoryFile(size=1 << 28)
    platform = PtracePlatform(Config(), pin_cpu=pin)
    platform.start(memfile)
    try:
        with tempfile.TemporaryDirectory(prefix="pyrunsc-bench-") as tmp:
            progs = build(Path(tmp))
            prog, tracer = progs.prog, progs.tracer
            # Round-robin, so that a busy moment of the host hits every variant alike.
            for _ in range(args.repeat):
                runs["native"].append(native_us(prog, args.calls * 10))
                runs["c"].append(c_tracer_us(tracer, prog, args.calls, *flags))
                runs["c_xs"].append(c_tracer_us(tracer, prog, args.calls, "--xstate", *flags))
                runs["c_poke"].append(c_tracer_us(tracer, prog, args.calls, "--poke", *flags))
                runs["eager"].append(platform_us(platform, memfile, prog, args.calls, Registers))
                runs["lazy"].append(platform_us(platform, memfile, prog, args.calls, LazyFPRegisters))
    finally:
        platform.close()
        memfile.close()
    best = {k: min(v) for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in runs.items()}
    labels = {
        "native": "native",
        "c": "C SYSEMU tracer (SETREGS)",
        "c_xs": "C SYSEMU tracer (SETREGS+xstate)",
        "c_poke": "C SYSEMU tracer (POKEUSER rax)",
        "eager": "platform, FP read every stop",
        "lazy": "platform, lazy FP (fp_pull)",
    }
    print(f"getpid round trip, {args.calls} calls, µs per call: best (median) of {args.repeat} runs made "
          f"round-robin; {'pinned' if pin else 'not pinned'}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    for k, label in labels.items():
        print(f"  {label:34s} {best[k]:8.3f} ({med[k]:8.3f})")
    for a, b_ in (("eager", "c"), ("eager", "c_xs"), ("lazy", "c"), ("lazy", "c_poke")):
        print(f"  {labels[a] + ' / ' + labels[b_].removeprefix('C SYSEMU tracer '):60s} {best[a] / best[b_]:5.2f}x"
              f" ({med[a] / med[b_]:5.2f}x)")
    print(f"  {'lazy platform / native':60s} {best['lazy'] / best['native']:5.0f}x")

if __name__ == "__main__":
    main()
