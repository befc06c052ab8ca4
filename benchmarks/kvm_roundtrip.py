"""The KVM platform's system call round trip in one run: against native, the
ptrace platform, the floor of its entry path, and through the whole sentry;
and the VM's creation time (issue #8).

Every figure runs the same static program, ``getpid_loop`` (N getpid calls
then exit_group; ``roundtrip_common.py``):

- native: µs per call from two runs (N and none);
- ptrace: the C ``PTRACE_SYSEMU`` tracer (the floor of ptrace here) and the
  ptrace platform; each system call answered with rax = 1 by the caller of
  ``Context.switch`` (no kernel logic);
- kvm: the KVM platform the same way, once per PVM entry (see
  ``plugins/platform_kvm/machine.py``): ``pvm-io`` (the default: the LSTAR
  ``out`` exits to the sentry in user mode, which returns by setting the
  registers) and ``pvm`` (the LSTAR ``hlt``'s #GP runs a ring-0 stub that
  exits by ``hlt``; the return is a guest ``iretq``);
- the floor of each entry: the same guest exit and re-entry with no
  emulation work in between: the host only calls KVM_RUN again, writing
  nothing. ``pvm-io``: user code makes its system calls, LSTAR is ``out;
  jmp rcx`` (the guest goes back by itself). ``pvm``: the vCPU re-runs the
  exit of a system call (``add rsp,16; iretq`` to the LSTAR ``hlt``, #GP,
  ``push``, ``hlt``). Timed from Python (ctypes ioctl, as the platform) and
  from C (``kvm_floor.c``, a shared library called on the same vCPU);
- "C register return": the ``pvm-io`` round trip with the sentry's part in C
  (rax = 1, rip = rcx, rflags = r11 in the sync regs, KVM_RUN);
- a fault's round trip: ``L: int3; jmp L``, every SIGTRAP stop switched
  back into (the exception stub's ``hlt`` exit, then the return: user-mode
  sregs and registers through the sync regs with ``pvm-io``, ``iretq`` with
  ``pvm``);
- the sentry: ``pyrunsc`` running the program, each getpid through the
  kernel's system call table, on ptrace and on kvm (each entry);
- VM creation: ``KVMPlatform.start`` (VM, pool, entry probe) and the first
  context (vCPU), medians of ``--repeat`` creations; a further vCPU.

Everything runs round-robin ``--repeat`` times, in this thread, pinned to one
CPU (the ptrace platform pins its tracer; the KVM runs happen in the same
thread). Prints µs per call, the best and the median, then the ratios.

    .venv/bin/python benchmarks/kvm_roundtrip.py [--calls N] [--repeat R] [--sentry-calls N]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from roundtrip_common import (
    SYS_GETPID,
    Programs,
    best_median,
    build,
    c_tracer_us,
    load,
    native_us,
    platform_us,
    sentry_bundle,
    sentry_us,
)

from pyrunsc.core.arch import Registers
from pyrunsc.core.config import Config
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.platform import PROT_EXEC, PROT_READ, Stop
from pyrunsc.core.plugins import Plugins
from pyrunsc.plugins.platform_kvm import ENTRY_ENV, KVMPlatform, kvm
from pyrunsc.plugins.platform_kvm import machine as m
from pyrunsc.plugins.platform_ptrace import PtracePlatform

ENTRIES = ("pvm-io", "pvm")
#: LSTAR for the pvm-io floor: out EXIT_PORT, al; jmp rcx.
FLOOR_LSTAR = bytes((0xE6, m.EXIT_PORT)) + b"\xff\xe1"
#: What each entry's system call exits with.
EXIT_REASON = {"pvm-io": kvm.KVM_EXIT_IO, "pvm": kvm.KVM_EXIT_HLT}


class Floor:
    """A vCPU of ``platform`` stopped at a system call of a long getpid loop,
    ready for KVM_RUN loops (``with``: set up, then undone)."""

    def __init__(self, platform: KVMPlatform, memfile: MemoryFile, prog: Path, floor: bool) -> None:
        self.platform, self.memfile, self.prog, self.floor = platform, memfile, prog, floor
        self.reason = EXIT_REASON[platform.entry.name]

    def __enter__(self) -> Floor:
        p = self.platform
        assert p._pool is not None
        if self.floor and p.entry.name == "pvm-io":  # the guest returns by itself
            p._pool[m.LSTAR_PAGE * m.PAGE : (m.LSTAR_PAGE + 1) * m.PAGE] = m.lstar_page(FLOOR_LSTAR)
        self.aspace = p.new_address_space()
        self.ctx = p.new_context()
        regs = load(self.prog, self.memfile, self.aspace, [b"getpid_loop", b"999999999999"])
        stop, fault = self.ctx.switch(self.aspace, regs)
        if stop is not Stop.SYSCALL or regs.orig_rax != SYS_GETPID:
            raise RuntimeError(f"floor set-up: {stop} {fault} at rip {regs.rip:#x}")
        self.fd = self.ctx.fd
        self.run_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self.ctx.run))
        return self

    def __exit__(self, *exc: object) -> None:
        p = self.platform
        assert p._pool is not None
        p._pool[m.LSTAR_PAGE * m.PAGE : (m.LSTAR_PAGE + 1) * m.PAGE] = m.lstar_page(p.entry.lstar_code)
        self.ctx.release()
        self.aspace.release()

    def check(self) -> None:
        reason = int.from_bytes(self.ctx.run[kvm.RUN_EXIT_REASON : kvm.RUN_EXIT_REASON + 4], "little")
        if reason != self.reason:
            raise RuntimeError(f"floor: exit {kvm.EXIT_NAMES.get(reason, reason)}, not "
                               f"{kvm.EXIT_NAMES[self.reason]}")


def py_floor_us(f: Floor, n: int) -> float:
    """KVM_RUN ``n`` times from Python, through the ioctl the platform uses."""
    run_ioctl, fd, request = kvm.raw_ioctl, f.fd, kvm.KVM_RUN
    t = time.perf_counter()
    for _ in range(n):
        if run_ioctl(fd, request, 0):
            raise OSError(ctypes.get_errno(), "KVM_RUN")
    elapsed = time.perf_counter() - t
    f.check()
    return elapsed / n * 1e6


def c_loop_us(lib: ctypes.CDLL, name: str, f: Floor, n: int) -> float:
    fn = getattr(lib, name)
    fn.restype = ctypes.c_long
    fn.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_uint32)
    t = time.perf_counter()
    done = fn(f.fd, f.run_ptr, n, f.reason)
    elapsed = time.perf_counter() - t
    if done != n:
        raise RuntimeError(f"{name}: {done} of {n} runs exited as expected")
    return elapsed / n * 1e6


def fault_us(platform: KVMPlatform, memfile: MemoryFile, n: int) -> float:
    """µs per SIGTRAP stop of ``L: int3; jmp L``, switched straight back into."""
    aspace = platform.new_address_space()
    ctx = platform.new_context()
    code = memfile.allocate(m.PAGE)
    try:
        memfile.write(code, b"\xcc\xeb\xfd")
        aspace.map(0x400000, m.PAGE, code, PROT_READ | PROT_EXEC)
        regs = Registers.for_entry(0x400000, 0x500000)
        switch = ctx.switch
        switch(aspace, regs)
        t = time.perf_counter()
        for _ in range(n):
            stop, _ = switch(aspace, regs)
        elapsed = time.perf_counter() - t
        if stop is not Stop.FAULT or regs.rip != 0x400001:
            raise RuntimeError(f"fault loop: {stop} at rip {regs.rip:#x}")
        return elapsed / n * 1e6
    finally:
        ctx.release()
        aspace.release()
        memfile.free(code, m.PAGE)


def creation_ms(memfile: MemoryFile) -> tuple[float, float, float]:
    """ms for KVMPlatform.start (with the entry probe), the first context, a second (a new vCPU)."""
    t0 = time.perf_counter()
    p = KVMPlatform(Config())
    p.start(memfile)
    t1 = time.perf_counter()
    try:
        p.new_context()
        t2 = time.perf_counter()
        p.new_context()
        t3 = time.perf_counter()
    finally:
        p.close()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000, help="system calls per platform run (default 20000)")
    ap.add_argument("--sentry-calls", type=int, default=20_000,
                    help="system calls per sentry run (less a tenth for the short run; default 20000; 0: skip)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    args = ap.parse_args()
    if why := KVMPlatform.probe():
        sys.exit(f"KVM platform unavailable: {why}")
    memfile = MemoryFile(size=1 << 28)
    ptrace = PtracePlatform(Config())
    ptrace.start(memfile)  # pins this thread
    kvms = {e: KVMPlatform(Config(), entry=e) for e in ENTRIES}
    for p in kvms.values():
        p.start(memfile)
    runs: dict[str, list[float]] = {}
    create: list[tuple[float, float, float]] = []

    def timed(key: str, fn: Callable[[], float]) -> None:
        runs.setdefault(key, []).append(fn())

    plugins = Plugins()
    try:
        with tempfile.TemporaryDirectory(prefix="pyrunsc-bench-") as tmp:
            progs: Programs = build(Path(tmp), kvm_floor=True)
            assert progs.kvm_floor is not None
            lib = ctypes.CDLL(str(progs.kvm_floor))
            bundle = sentry_bundle(Path(tmp), progs.prog)
            n, sc = args.calls, args.sentry_calls
            for _ in range(args.repeat):
                timed("native", lambda: native_us(progs.prog, n * 10))
                timed("c_tracer", lambda: c_tracer_us(progs.tracer, progs.prog, n))
                timed("ptrace", lambda: platform_us(ptrace, memfile, progs.prog, n))
                for e, p in kvms.items():
                    timed(f"kvm {e}", lambda p=p: platform_us(p, memfile, progs.prog, n))
                    timed(f"fault {e}", lambda p=p: fault_us(p, memfile, n // 2))
                    with Floor(p, memfile, progs.prog, floor=True) as f:
                        timed(f"floor py {e}", lambda f=f: py_floor_us(f, n))
                        timed(f"floor c {e}", lambda f=f: c_loop_us(lib, "kvm_run_loop", f, n))
                with Floor(kvms["pvm-io"], memfile, progs.prog, floor=False) as f:
                    timed("c return pvm-io", lambda f=f: c_loop_us(lib, "kvm_syscall_loop", f, n))
                create.append(creation_ms(memfile))
                if sc:
                    timed("sentry ptrace", lambda: sentry_us(plugins, bundle, sc, "ptrace"))
                    for e in ENTRIES:
                        os.environ[ENTRY_ENV] = e
                        try:
                            timed(f"sentry kvm {e}", lambda: sentry_us(plugins, bundle, sc, "kvm"))
                        finally:
                            del os.environ[ENTRY_ENV]
    finally:
        for p in kvms.values():
            p.close()
        ptrace.close()
        memfile.close()

    best = {k: best_median(v)[0] for k, v in runs.items()}
    med = {k: best_median(v)[1] for k, v in runs.items()}
    load_avg = os.getloadavg()
    print(f"getpid round trip, µs per call, best (median) of {args.repeat} rounds made round-robin; "
          f"{args.calls} calls a run; pinned to CPU {ptrace.cpu}, {os.cpu_count()} CPUs, "
          f"load {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}, Python {sys.version.split()[0]}")
    labels = {
        "native": "native",
        "c_tracer": "C PTRACE_SYSEMU tracer (ptrace floor)",
        "ptrace": "ptrace platform",
        "kvm pvm-io": "kvm platform, pvm-io entry (default)",
        "floor py pvm-io": "  floor of pvm-io: KVM_RUN from Python",
        "floor c pvm-io": "  floor of pvm-io: KVM_RUN from C",
        "c return pvm-io": "  pvm-io round trip, sentry part in C",
        "kvm pvm": "kvm platform, pvm entry (#GP, iretq)",
        "floor py pvm": "  floor of pvm: KVM_RUN from Python",
        "floor c pvm": "  floor of pvm: KVM_RUN from C",
        "fault pvm-io": "int3 SIGTRAP round trip, pvm-io",
        "fault pvm": "int3 SIGTRAP round trip, pvm",
        "sentry ptrace": "sentry on ptrace",
        "sentry kvm pvm-io": "sentry on kvm, pvm-io",
        "sentry kvm pvm": "sentry on kvm, pvm",
    }
    for k, label in labels.items():
        if k in runs:
            print(f"  {label:42s} {best[k]:8.3f} ({med[k]:8.3f})")

    def ratio(a: str, b: str, label: str) -> None:
        if a in runs and b in runs:
            print(f"  {label:42s} {best[a] / best[b]:7.2f}x ({med[a] / med[b]:6.2f}x)")

    print("ratios, of the bests (of the medians):")
    for e in ENTRIES:
        ratio(f"kvm {e}", f"floor py {e}", f"kvm {e} / its floor (Python)")
        ratio(f"kvm {e}", f"floor c {e}", f"kvm {e} / its floor (C)")
    ratio("kvm pvm", "kvm pvm-io", "kvm pvm / kvm pvm-io")
    ratio("fault pvm", "fault pvm-io", "fault: pvm / pvm-io")
    ratio("kvm pvm-io", "ptrace", "kvm pvm-io / ptrace platform")
    ratio("kvm pvm-io", "native", "kvm pvm-io / native")
    ratio("ptrace", "native", "ptrace platform / native")
    ratio("sentry kvm pvm-io", "sentry ptrace", "sentry: kvm pvm-io / ptrace")
    start, first, second = (statistics.median(x) for x in zip(*create, strict=True))
    print(f"VM creation, median of {len(create)}: KVMPlatform.start (VM, pool, entry probe) {start:.2f} ms, "
          f"first context {first:.2f} ms (= {start + first:.2f} ms), a further vCPU {second:.2f} ms")


if __name__ == "__main__":
    main()
