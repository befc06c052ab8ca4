"""The system call round trip of the ptrace platform, against native and a C tracer.

One program, ``getpid_loop.c`` (static, no libc: N getpid calls then
exit_group), built with ``gcc -static -nostdlib`` into a temporary folder, runs:

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
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyrunsc.core.arch import Registers
from pyrunsc.core.config import Config
from pyrunsc.core.mm.memfile import MemoryFile, page_round_down, page_round_up
from pyrunsc.core.platform import PROT_EXEC, PROT_READ, PROT_WRITE, Stop
from pyrunsc.plugins.platform_ptrace import PtraceAddressSpace, PtracePlatform
from pyrunsc.plugins.platform_ptrace.lazyfp import LazyFPRegisters

HERE = Path(__file__).resolve().parent
SYS_EXIT_GROUP = 231
STACK_TOP, STACK_SIZE = 0x7FFE_0000_0000, 1 << 16


def build(tmp: Path) -> tuple[Path, Path]:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("gcc is needed to build the benchmark programs")
    prog, tracer = tmp / "getpid_loop", tmp / "sysemu_tracer"
    subprocess.run([gcc, "-O2", "-static", "-nostdlib", "-no-pie", "-fno-stack-protector", "-o", prog,
                    HERE / "getpid_loop.c"], check=True)
    subprocess.run([gcc, "-O2", "-o", tracer, HERE / "sysemu_tracer.c"], check=True)
    return prog, tracer


def native_us(prog: Path, calls: int) -> float:
    """One native run of ``calls`` calls, less one of none (the start-up)."""
    def run(n: int) -> float:
        t = time.perf_counter()
        subprocess.run([prog, str(n)], check=True)
        return time.perf_counter() - t

    return max(run(calls) - run(0), 0.0) / calls * 1e6


def c_tracer_us(tracer: Path, prog: Path, calls: int, *flags: str) -> float:
    r = subprocess.run([tracer, *flags, prog, str(calls)], check=True, capture_output=True, text=True)
    fields = dict(kv.split("=") for kv in r.stdout.split())
    assert int(fields["calls"]) == calls, r.stdout
    return float(fields["us_per_call"])


def load(prog: Path, memfile: MemoryFile, aspace: PtraceAddressSpace, argv: list[bytes],
         regs_cls: type[Registers]) -> Registers:
    """Map a static ET_EXEC's PT_LOAD segments and a stack with argv; the
    registers to start it (a minimal loader: no auxv, no env)."""
    image = prog.read_bytes()
    entry, phoff = struct.unpack_from("<QQ", image, 24)
    phentsize, phnum = struct.unpack_from("<HH", image, 54)
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", image, phoff + i * phentsize)
        if p_type != 1:
            continue
        lo, hi = page_round_down(p_vaddr), page_round_up(p_vaddr + p_memsz)
        off = memfile.allocate(hi - lo)
        memfile.write(off + p_vaddr - lo, image[p_offset:p_offset + p_filesz])
        prot = (PROT_READ if p_flags & 4 else 0) | (PROT_WRITE if p_flags & 2 else 0)
        prot |= PROT_EXEC if p_flags & 1 else 0
        aspace.map(lo, hi - lo, off, prot)
    stack = memfile.allocate(STACK_SIZE)
    aspace.map(STACK_TOP - STACK_SIZE, STACK_SIZE, stack, PROT_READ | PROT_WRITE)
    # [argc, argv..., NULL, NULL (envp), AT_NULL, 0] then the strings.
    strings = b"".join(a + b"\0" for a in argv)
    str_addr = STACK_TOP - page_round_up(len(strings))
    words = [len(argv)]
    pos = str_addr
    for a in argv:
        words.append(pos)
        pos += len(a) + 1
    words += [0, 0, 0, 0]
    sp = (str_addr - 8 * len(words)) & ~15
    memfile.write(stack + str_addr - (STACK_TOP - STACK_SIZE), strings)
    memfile.write(stack + sp - (STACK_TOP - STACK_SIZE), struct.pack(f"<{len(words)}Q", *words))
    return regs_cls.for_entry(entry, sp)


def platform_us(platform: PtracePlatform, memfile: MemoryFile, prog: Path, calls: int,
                regs_cls: type[Registers]) -> float:
    """One run of ``prog`` in a new address space, every system call answered
    with rax = 1 by the caller of ``Context.switch``."""
    aspace = platform.new_address_space()
    try:
        ctx = platform.new_context()
        regs = load(prog, memfile, aspace, [b"getpid_loop", str(calls).encode()], regs_cls)
        switch = ctx.switch
        stop, _ = switch(aspace, regs)  # the first getpid
        n = 0
        gp = regs.regs  # rax is gp[10], orig_rax gp[15] (user_regs_struct order)
        t = time.perf_counter()
        while True:
            if stop is not Stop.SYSCALL:
                raise RuntimeError(f"unexpected {stop} at rip {regs.rip:#x}")
            if gp[15] == SYS_EXIT_GROUP:
                break
            n += 1
            gp[10] = 1
            stop, _ = switch(aspace, regs)
        elapsed = time.perf_counter() - t
        assert n == calls, n
        return elapsed / n * 1e6
    finally:
        aspace.release()


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
            prog, tracer = build(Path(tmp))
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
