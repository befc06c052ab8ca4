"""What the system call round-trip benchmarks share: the programs they run and
how they run them (``ptrace_roundtrip.py``, ``kvm_roundtrip.py``,
``syscall_roundtrip.py``).

One program, ``getpid_loop.c`` (static, no libc: N getpid calls then
exit_group), built with ``gcc -static -nostdlib`` into a temporary folder,
runs natively, under the C ``PTRACE_SYSEMU`` tracer (``sysemu_tracer.c``),
straight on a platform (:func:`load` maps its PT_LOAD segments and a stack
into an address space; :func:`platform_us` answers each system call itself),
or through the whole sentry (:func:`sentry_seconds`).
"""

from __future__ import annotations

import json
import shutil
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pyrunsc.core.arch import Registers
from pyrunsc.core.config import Config
from pyrunsc.core.loader import boot
from pyrunsc.core.mm.memfile import MemoryFile, page_round_down, page_round_up
from pyrunsc.core.platform import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace, Platform, Stop
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.spec import load_bundle

HERE = Path(__file__).resolve().parent
SYS_GETPID, SYS_EXIT_GROUP = 39, 231
STACK_TOP, STACK_SIZE = 0x7FFE_0000_0000, 1 << 16


@dataclass
class Programs:
    prog: Path  #: getpid_loop
    tracer: Path  #: sysemu_tracer
    kvm_floor: Path | None = None  #: libkvm_floor.so (kvm_floor.c), when asked for


def build(tmp: Path, kvm_floor: bool = False) -> Programs:
    """Build the programs into ``tmp`` (exits when gcc is missing)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("gcc is needed to build the benchmark programs")
    out = Programs(tmp / "getpid_loop", tmp / "sysemu_tracer")
    subprocess.run([gcc, "-O2", "-static", "-nostdlib", "-no-pie", "-fno-stack-protector", "-o", out.prog,
                    HERE / "getpid_loop.c"], check=True)
    subprocess.run([gcc, "-O2", "-o", out.tracer, HERE / "sysemu_tracer.c"], check=True)
    if kvm_floor:
        out.kvm_floor = tmp / "libkvm_floor.so"
        subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", out.kvm_floor, HERE / "kvm_floor.c"], check=True)
    return out


def native_us(prog: Path, calls: int) -> float:
    """µs per call of one native run of ``calls`` calls, less one of none (the start-up)."""
    def run(n: int) -> float:
        t = time.perf_counter()
        subprocess.run([prog, str(n)], check=True)
        return time.perf_counter() - t

    return max(run(calls) - run(0), 0.0) / calls * 1e6


def c_tracer_us(tracer: Path, prog: Path, calls: int, *flags: str) -> float:
    """µs per call under the C SYSEMU tracer (it pins itself unless ``--no-pin``)."""
    r = subprocess.run([tracer, *flags, prog, str(calls)], check=True, capture_output=True, text=True)
    fields = dict(kv.split("=") for kv in r.stdout.split())
    assert int(fields["calls"]) == calls, r.stdout
    return float(fields["us_per_call"])


def load(prog: Path, memfile: MemoryFile, aspace: AddressSpace, argv: list[bytes],
         regs_cls: type[Registers] = Registers) -> Registers:
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


def platform_us(platform: Platform, memfile: MemoryFile, prog: Path, calls: int,
                regs_cls: type[Registers] = Registers) -> float:
    """µs per call of one run of ``prog`` in a new address space and context,
    every system call answered with rax = 1 by the caller of ``Context.switch``."""
    aspace = platform.new_address_space()
    ctx = platform.new_context()
    try:
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
        ctx.release()
        aspace.release()


def sentry_seconds(plugins: Plugins, bundle: Path, args: list[str], platform: str = "ptrace") -> float:
    """Seconds the sentry's run loop takes to run ``args`` from ``bundle``'s
    read-only rootfs (direct file access; boot not counted)."""
    spec_doc = {"ociVersion": "1.0.2", "process": {"args": args, "cwd": "/"},
                "root": {"path": "rootfs", "readonly": True}}
    (bundle / "config.json").write_text(json.dumps(spec_doc))
    sandbox = boot(plugins, load_bundle(bundle), Config(file_access="direct", platform=platform))
    try:
        t = time.perf_counter()
        status = sandbox.kernel.run(sandbox.init)
        elapsed = time.perf_counter() - t
    finally:
        sandbox.close()
    assert status.code == 0 and not status.signal, status
    return elapsed


def sentry_bundle(tmp: Path, prog: Path) -> Path:
    """A bundle folder whose rootfs holds ``prog`` as /getpid_loop."""
    bundle = tmp / "bundle"
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(prog, bundle / "rootfs" / "getpid_loop")
    return bundle


def sentry_us(plugins: Plugins, bundle: Path, calls: int, platform: str = "ptrace") -> float:
    """µs per getpid through the sentry: two loop lengths, the difference
    divided by the difference in calls (boot and exit cancel out)."""
    long = sentry_seconds(plugins, bundle, ["/getpid_loop", str(calls)], platform)
    short = sentry_seconds(plugins, bundle, ["/getpid_loop", str(calls // 10)], platform)
    return (long - short) / (calls - calls // 10) * 1e6


def best_median(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)
