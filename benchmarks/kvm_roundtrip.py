"""The system call round trip of the KVM platform, next to the ptrace platform's.

The same raw machine code runs on both platforms, in one memory-file page:

    L: mov eax, 39; syscall; dec rbx; jnz L; mov eax, 231; syscall

with rbx = N: N getpid calls, each answered by the caller of
``Context.switch`` with rax = 1 (no kernel logic), then exit_group. Prints µs
per call, the best and the median of ``--repeat`` runs made round-robin, and
the ratio. The ptrace platform pins the calling thread to one CPU (its
default); the KVM runs happen in that same thread, so both are pinned alike.
It also prints the KVM platform's VM start-up and a flush's cost.

    .venv/bin/python benchmarks/kvm_roundtrip.py [--calls N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import time

from pyrunsc.core.arch import Registers
from pyrunsc.core.config import Config
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.platform import PROT_EXEC, PROT_READ, PROT_WRITE, Platform, Stop
from pyrunsc.plugins.platform_kvm import KVMPlatform
from pyrunsc.plugins.platform_ptrace import PtracePlatform

CODE, STACK = 0x400000, 0x600000
PAGE = 4096
SYS_GETPID, SYS_EXIT_GROUP = 39, 231
LOOP = (b"\xb8" + struct.pack("<I", SYS_GETPID) + b"\x0f\x05"  # L: mov eax, 39; syscall
        + b"\x48\xff\xcb" + b"\x75\xf4"  # dec rbx; jnz L
        + b"\xb8" + struct.pack("<I", SYS_EXIT_GROUP) + b"\x0f\x05")  # mov eax, 231; syscall


def round_trip_us(platform: Platform, memfile: MemoryFile, calls: int) -> float:
    """One run of LOOP in a new address space and context; µs per call."""
    aspace = platform.new_address_space()
    ctx = platform.new_context()
    code, stack = memfile.allocate(PAGE), memfile.allocate(PAGE)
    try:
        memfile.write(code, LOOP)
        aspace.map(CODE, PAGE, code, PROT_READ | PROT_EXEC)
        aspace.map(STACK, PAGE, stack, PROT_READ | PROT_WRITE)
        regs = Registers.for_entry(CODE, STACK + PAGE)
        regs.rbx = calls
        switch = ctx.switch
        gp = regs.regs  # rax is gp[10], orig_rax gp[15]
        n = 0
        stop, _ = switch(aspace, regs)
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
        return elapsed / (n - 1) * 1e6 if n > 1 else elapsed * 1e6
    finally:
        ctx.release()
        aspace.release()
        memfile.free(code, PAGE)
        memfile.free(stack, PAGE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50_000, help="system calls per run (default 50000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each, round-robin (default 5)")
    args = ap.parse_args()
    if why := KVMPlatform.probe():
        sys.exit(f"KVM platform unavailable: {why}")
    memfile = MemoryFile(size=1 << 28)
    ptrace = PtracePlatform(Config())
    ptrace.start(memfile)
    t = time.perf_counter()
    kvm = KVMPlatform(Config())
    kvm.start(memfile)
    kvm_start_ms = (time.perf_counter() - t) * 1e3
    runs: dict[str, list[float]] = {"ptrace": [], "kvm": []}
    try:
        for _ in range(args.repeat):
            runs["ptrace"].append(round_trip_us(ptrace, memfile, args.calls))
            runs["kvm"].append(round_trip_us(kvm, memfile, args.calls))
        # A flush (page tables changed under a running address space).
        aspace = kvm.new_address_space()
        off = memfile.allocate(PAGE)
        t = time.perf_counter()
        for _ in range(100):
            aspace.map(STACK, PAGE, off, PROT_READ | PROT_WRITE)
            aspace.protect(STACK, PAGE, PROT_READ)
            kvm._flush()
        flush_us = (time.perf_counter() - t) / 100 * 1e6
        aspace.release()
    finally:
        kvm.close()
        ptrace.close()
        memfile.close()
    best = {k: min(v) for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"getpid round trip, {args.calls} calls, µs per call: best (median) of {args.repeat} runs made "
          f"round-robin; pinned to CPU {ptrace.cpu}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"KVM entry {kvm.entry.name}")
    print(f"  {'ptrace platform':34s} {best['ptrace']:8.3f} ({med['ptrace']:8.3f})")
    print(f"  {'kvm platform':34s} {best['kvm']:8.3f} ({med['kvm']:8.3f})")
    print(f"  {'kvm / ptrace':34s} {best['kvm'] / best['ptrace']:8.2f}x ({med['kvm'] / med['ptrace']:5.2f}x)")
    print(f"  kvm VM start (with entry probe) {kvm_start_ms:.2f} ms; map+protect+flush {flush_us:.1f} µs")


if __name__ == "__main__":
    main()
