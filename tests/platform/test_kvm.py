"""The KVM platform on a real /dev/kvm: hand-assembled x86-64 code in
memory-file pages, mapped into guest page tables and run on vCPUs.

Every test that needs a VM skips (with the reason) when /dev/kvm is missing
or unusable, and runs twice: with the host's default entry (PVM's port exit
with register return, or VMX/SVM's ring-0 entry) and with PVM's #GP exit and
``iretq`` return (skipped off PVM). The descriptor and page-table tests of
every system-call entry run everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyrunsc.core.arch import Registers
from pyrunsc.core.config import Config
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.platform import PROT_EXEC, PROT_READ, PROT_WRITE, Stop
from pyrunsc.plugins.platform_kvm import (
    KERNEL_END,
    KERNEL_START,
    GuestError,
    KVMAddressSpace,
    KVMContext,
    KVMError,
    KVMPlatform,
    PvmEntry,
    PvmPortEntry,
    Ring0Entry,
)
from pyrunsc.plugins.platform_kvm import machine as m

PAGE = 4096
CODE, DATA = 0x400000, 0x600000
RX, RW = PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE
SEGV_MAPERR, SEGV_ACCERR, FPE_INTDIV, SI_KERNEL = 1, 2, 1, 0x80
ENOSYS_RAX = (1 << 64) - errno.ENOSYS

SYSCALL = b"\x0f\x05"
STORE_RAX = b"\x48\x89\x07"  # mov [rdi], rax
STORE_EAX = b"\x89\x07"  # mov [rdi], eax
LOAD_EAX = b"\x8b\x07"  # mov eax, [rdi]
LOAD_EDX = b"\x8b\x17"  # mov edx, [rdi]
LOAD_FS0 = b"\x64\x48\x8b\x04\x25\x00\x00\x00\x00"  # mov rax, fs:[0]
MOVQ_XMM0 = b"\x66\x0f\xd6\x07"  # movq [rdi], xmm0
LOAD_XMM0 = b"\xf3\x0f\x7e\x07"  # movq xmm0, [rdi]
VMOVDQU_YMM0 = b"\xc5\xfe\x7f\x07"  # vmovdqu [rdi], ymm0
PCMPEQD_XMM1 = b"\x66\x0f\x76\xc9"  # pcmpeqd xmm1, xmm1
UD2 = b"\x0f\x0b"
DIV_ECX = b"\xf7\xf1"
INT3 = b"\xcc"
JMP_SELF = b"\xeb\xfe"


def mov_eax(n: int) -> bytes:
    return b"\xb8" + struct.pack("<I", n)


@dataclass
class Env:
    platform: KVMPlatform
    memfile: MemoryFile
    aspace: KVMAddressSpace
    ctx: KVMContext
    #: (aspace id, user address) -> memory-file offset of the page mapped there.
    offsets: dict[tuple[int, int], int] = field(default_factory=dict)

    def page(self, data: bytes = b"") -> int:
        off = self.memfile.allocate(PAGE)
        self.memfile.write(off, data)
        return off

    def load(self, code: bytes, *, aspace: KVMAddressSpace | None = None, data_prot: int = RW) -> Registers:
        """``code`` at CODE (r-x), a data page at DATA; registers with rdi = DATA, rsp at its top."""
        a = aspace or self.aspace
        a.map(CODE, PAGE, self.page(code), RX)
        off = self.page()
        a.map(DATA, PAGE, off, data_prot)
        self.offsets[(id(a), DATA)] = off
        r = Registers.for_entry(CODE, DATA + PAGE)
        r.rdi = DATA
        return r

    def data(self, aspace: KVMAddressSpace | None = None, at: int = DATA, n: int = 8) -> bytes:
        off = self.offsets[(id(aspace or self.aspace), at & ~(PAGE - 1))]
        return self.memfile.read(off + at % PAGE, n)


def _skip_reason() -> str | None:
    return KVMPlatform.probe()


@pytest.fixture(params=[None, "pvm"], ids=["default-entry", "pvm-gp-entry"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"KVM platform unavailable: {reason}")
    memfile = MemoryFile(size=1 << 26)
    platform = KVMPlatform(Config(), entry=request.param)
    try:
        platform.start(memfile)
    except KVMError as e:
        platform.close()
        memfile.close()
        pytest.skip(f"KVM not usable here: {e}")
    try:
        yield Env(platform, memfile, platform.new_address_space(), platform.new_context())
    finally:
        platform.close()
        memfile.close()


def run(env: Env, regs: Registers, aspace: KVMAddressSpace | None = None) -> tuple[Stop, object]:
    return env.ctx.switch(aspace or env.aspace, regs)


def _watchdog(ctx: KVMContext, seconds: float) -> threading.Event:
    """Interrupt ``ctx`` every 0.5 s after ``seconds`` until the event is set,
    so that a hang fails the test instead of blocking the run."""
    done = threading.Event()

    def loop() -> None:
        if done.wait(seconds):
            return
        while not done.wait(0.5):
            ctx.interrupt()

    threading.Thread(target=loop, daemon=True).start()
    return done


# (1) System calls.


def test_getpid_round_trip(env: Env) -> None:
    regs = env.load(mov_eax(39) + SYSCALL + STORE_RAX + mov_eax(60) + SYSCALL)
    stop, fault = run(env, regs)
    assert (stop, fault) == (Stop.SYSCALL, None)
    assert regs.orig_rax == 39 and regs.rax == ENOSYS_RAX
    assert regs.rip == CODE + 7  # past the syscall
    assert regs.rcx == regs.rip and regs.r11 == regs.eflags
    assert (regs.cs, regs.ss) == (0x33, 0x2B)
    regs.rax = 0x1234_5678_9ABC
    stop, _ = run(env, regs)
    assert stop is Stop.SYSCALL and regs.orig_rax == 60
    assert env.data() == struct.pack("<Q", 0x1234_5678_9ABC)  # the value was used


def test_many_round_trips_keep_state(env: Env) -> None:
    # L: syscall; inc rbx; jmp L -- rbx counts, rax comes back each time.
    regs = env.load(SYSCALL + b"\x48\xff\xc3" + b"\xeb\xf9")
    for i in range(200):
        regs.rax = i
        assert run(env, regs)[0] is Stop.SYSCALL
        assert regs.orig_rax == i and regs.rbx == i
    assert env.platform.entry.name in m.ENTRIES


@pytest.mark.parametrize("at", [0, 2, 5, PAGE - 1])
def test_a_jump_into_the_lstar_page_is_not_a_system_call(env: Env, at: int) -> None:
    regs = env.load(b"\x48\xb8" + struct.pack("<Q", m.LSTAR + at) + b"\xff\xe0")  # mov rax, LSTAR+at; jmp rax
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.addr, fault.exec) == (signal.SIGSEGV, m.LSTAR + at, True)
    assert regs.rip == m.LSTAR + at


# User port I/O (the TSS lets user mode reach the port exit's port): SIGSEGV as
# Linux sends for a #GP, rip at the instruction, nothing else changed.
PORT_IO = {
    "out imm8": bytes((0xE6, m.EXIT_PORT)),
    "out imm8 ax": bytes((0x66, 0xE7, m.EXIT_PORT)),
    "in imm8": bytes((0xE4, m.EXIT_PORT)),
    "out dx": b"\xee",
    "in dx": b"\xec",
    "in other port": b"\xe4\x81",
}


@pytest.mark.parametrize("kind", list(PORT_IO))
def test_user_port_io_is_sigsegv_at_the_instruction(env: Env, kind: str) -> None:
    insn = PORT_IO[kind]
    regs = env.load(mov_eax(0x5A) + insn + mov_eax(39) + SYSCALL)
    regs.rdx, regs.rbx = m.EXIT_PORT, 0x77
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code) == (signal.SIGSEGV, SI_KERNEL)
    assert regs.rip == CODE + 5 and regs.rax == 0x5A and (regs.rdx, regs.rbx) == (m.EXIT_PORT, 0x77)
    # Resume elsewhere (at the syscall, past `mov eax, 39`) with other registers:
    # they are taken as given (an IN that KVM had left to complete would set
    # al and rip on the next KVM_RUN).
    regs.rip = CODE + 5 + len(insn) + 5
    regs.rax, regs.rbx = 0x1234, 0x88
    assert run(env, regs)[0] is Stop.SYSCALL
    assert (regs.orig_rax, regs.rip, regs.rbx) == (0x1234, CODE + 5 + len(insn) + 7, 0x88)


# (2) Memory: permissions and faults.


def test_write_to_read_only_page_is_sigsegv_write(env: Env) -> None:
    regs = env.load(mov_eax(7) + STORE_EAX + mov_eax(39) + SYSCALL, data_prot=PROT_READ)
    regs.rdi = DATA + 0x10
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr) == (signal.SIGSEGV, SEGV_ACCERR, DATA + 0x10)
    assert fault.write and not fault.exec
    assert regs.rip == CODE + 5
    env.aspace.protect(DATA, PAGE, RW)
    assert run(env, regs)[0] is Stop.SYSCALL and regs.orig_rax == 39
    assert env.data(at=DATA + 0x10, n=4) == struct.pack("<I", 7)


def test_read_of_read_only_page_works(env: Env) -> None:
    regs = env.load(LOAD_EAX + mov_eax(39) + SYSCALL, data_prot=PROT_READ)
    env.memfile.write(env.offsets[(id(env.aspace), DATA)], struct.pack("<I", 99))
    assert run(env, regs)[0] is Stop.SYSCALL and regs.orig_rax == 39


def test_protect_after_running_takes_effect(env: Env) -> None:
    # The page was writable and used; making it read-only must be seen
    # (PVM's shadow MMU cached the old translation: the platform flushes).
    regs = env.load(STORE_EAX + SYSCALL + b"\xeb\xfa")  # L: [rdi] = eax; syscall; jmp L
    assert run(env, regs)[0] is Stop.SYSCALL
    flushes = env.platform.flushes
    env.aspace.protect(DATA, PAGE, PROT_READ)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None and fault.write and fault.addr == DATA
    assert env.platform.flushes == flushes + 1
    env.aspace.unmap(DATA, PAGE)
    stop, fault = run(env, regs)
    assert fault is not None and fault.code == SEGV_MAPERR


def test_execute_nx_page_is_sigsegv_exec(env: Env) -> None:
    regs = env.load(mov_eax(39) + SYSCALL)
    env.aspace.protect(CODE, PAGE, PROT_READ)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr) == (signal.SIGSEGV, SEGV_ACCERR, CODE)
    assert fault.exec and not fault.write


def test_unmapped_is_sigsegv_maperr(env: Env) -> None:
    regs = env.load(mov_eax(5) + STORE_EAX + mov_eax(39) + SYSCALL)
    off = env.offsets[(id(env.aspace), DATA)]
    env.aspace.unmap(DATA, PAGE)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr) == (signal.SIGSEGV, SEGV_MAPERR, DATA)
    assert fault.write  # the error code tells
    env.aspace.map(DATA, PAGE, off, RW)
    assert run(env, regs)[0] is Stop.SYSCALL
    assert env.data(n=4) == struct.pack("<I", 5)


def test_prot_none_is_accerr_and_can_be_reopened(env: Env) -> None:
    regs = env.load(LOAD_EAX + mov_eax(39) + SYSCALL, data_prot=0)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT
    assert fault is not None and (fault.code, fault.addr, fault.write) == (SEGV_ACCERR, DATA, False)
    env.aspace.protect(DATA, PAGE, PROT_READ)
    assert run(env, regs)[0] is Stop.SYSCALL


def test_unmapped_rip_is_sigsegv_exec(env: Env) -> None:
    regs = Registers.for_entry(0x12345000, 0)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr, fault.exec) == (signal.SIGSEGV, SEGV_MAPERR, 0x12345000, True)


def test_kernel_pages_are_not_user_accessible(env: Env) -> None:
    regs = env.load(LOAD_EAX)
    regs.rdi = m.GDT_VA
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT
    assert fault is not None and (fault.signo, fault.code, fault.addr) == (signal.SIGSEGV, SEGV_ACCERR, m.GDT_VA)


def test_bad_ranges_are_refused(env: Env) -> None:
    a = env.aspace
    with pytest.raises(ValueError):
        a.map(DATA + 1, PAGE, 0, RW)
    with pytest.raises(ValueError):
        a.map(DATA, 100, 0, RW)
    with pytest.raises(ValueError):
        a.map(KERNEL_START, PAGE, 0, RW)
    with pytest.raises(ValueError):
        a.unmap(KERNEL_START - PAGE, 2 * PAGE)
    with pytest.raises(ValueError):
        a.map(0x8000_0000_0000, PAGE, 0, RW)
    with pytest.raises(ValueError):
        a.map(DATA, PAGE, env.memfile.size, RW)  # beyond the memory file
    assert (KERNEL_START, KERNEL_END) in KVMPlatform.reserved


def test_large_mapping_spans_page_tables(env: Env) -> None:
    # 4 MiB + 2 pages across three 2 MiB page tables; write the last page.
    length = (4 << 20) + 2 * PAGE
    off = env.memfile.allocate(length)
    base = 0x1000_0000 - PAGE
    env.aspace.map(base, length, off, RW)
    regs = env.load(mov_eax(0x77) + STORE_EAX + mov_eax(39) + SYSCALL)
    regs.rdi = base + length - 4
    assert run(env, regs)[0] is Stop.SYSCALL
    assert env.memfile.read(off + length - 4, 4) == struct.pack("<I", 0x77)


# (3) Registers.


def test_general_registers_and_fs_base_round_trip(env: Env) -> None:
    regs = env.load(SYSCALL + LOAD_FS0 + STORE_RAX + SYSCALL)
    env.memfile.write(env.offsets[(id(env.aspace), DATA)] + 0x100, struct.pack("<Q", 0xFEEDFACE))
    names = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r10", "r9", "r8", "rdx", "rsi", "rdi")
    for i, name in enumerate(names):
        setattr(regs, name, 0x1111_0000_0000 + i)
    regs.fs_base = DATA + 0x100
    regs.gs_base = 0x7000_0000
    before = regs.copy()
    assert run(env, regs)[0] is Stop.SYSCALL
    for name in (*names, "rsp", "fs_base", "gs_base", "cs", "ss"):
        assert getattr(regs, name) == getattr(before, name), name
    assert regs.rip == CODE + 2
    regs.rdi = DATA
    assert run(env, regs)[0] is Stop.SYSCALL
    assert env.data() == struct.pack("<Q", 0xFEEDFACE)  # read through fs_base
    # fs_base changed between two switches (arch_prctl) is seen.
    env.memfile.write(env.offsets[(id(env.aspace), DATA)] + 0x200, struct.pack("<Q", 0xC0FFEE))
    regs.fs_base = DATA + 0x200
    regs.rip, regs.rdi = CODE + 2, DATA
    assert run(env, regs)[0] is Stop.SYSCALL
    assert env.data() == struct.pack("<Q", 0xC0FFEE)


def test_sse_register_in_and_out(env: Env) -> None:
    regs = env.load(MOVQ_XMM0 + PCMPEQD_XMM1 + SYSCALL)
    struct.pack_into("<Q", regs.fpstate, 160, 0xABCDEF0123456789)  # FXSAVE XMM0
    assert run(env, regs)[0] is Stop.SYSCALL
    assert env.data() == struct.pack("<Q", 0xABCDEF0123456789)
    assert regs.fp_pull is not None  # left in the vCPU until read
    assert regs.fpstate[176:192] == b"\xff" * 16  # XMM1 set by the code
    assert regs.fp_pull is None
    assert pickle.loads(pickle.dumps(regs)).fpstate[176:192] == b"\xff" * 16


def test_avx_register_in(env: Env) -> None:
    if "avx" not in Path("/proc/cpuinfo").read_text().split():
        pytest.skip("no AVX on this host")
    regs = env.load(VMOVDQU_YMM0 + SYSCALL)
    lo, hi = bytes(range(16)), bytes(range(100, 116))
    regs.fpstate[160:176] = lo
    regs.fpstate[576:592] = hi
    struct.pack_into("<Q", regs.fpstate, 512, 0x7)
    assert run(env, regs)[0] is Stop.SYSCALL
    assert env.data(n=32) == lo + hi


def test_fp_state_is_per_task_on_one_vcpu(env: Env) -> None:
    regs_a = env.load(MOVQ_XMM0 + SYSCALL + b"\xeb\xf8")
    regs_b = Registers(regs_a.regs, regs_a.fpstate)
    struct.pack_into("<Q", regs_a.fpstate, 160, 0xAAAA)
    struct.pack_into("<Q", regs_b.fpstate, 160, 0xBBBB)
    for _ in range(3):
        for regs, value in ((regs_a, 0xAAAA), (regs_b, 0xBBBB)):
            assert env.ctx.switch(env.aspace, regs)[0] is Stop.SYSCALL
            assert env.data() == struct.pack("<Q", value)
    struct.pack_into("<Q", regs_a.fpstate, 160, 0xDDDD)  # changed in place
    assert env.ctx.switch(env.aspace, regs_a)[0] is Stop.SYSCALL
    assert env.data() == struct.pack("<Q", 0xDDDD)


def test_fp_state_is_saved_when_the_context_goes(env: Env) -> None:
    regs = env.load(LOAD_XMM0 + SYSCALL)
    env.memfile.write(env.offsets[(id(env.aspace), DATA)], struct.pack("<Q", 0x7373))
    assert run(env, regs)[0] is Stop.SYSCALL
    env.ctx.release()
    assert regs.fp_pull is None
    assert regs.fpstate[160:168] == struct.pack("<Q", 0x7373)


def test_bad_xsave_header_is_an_error(env: Env) -> None:
    regs = env.load(SYSCALL)
    struct.pack_into("<Q", regs.fpstate, 512, 1 << 62)  # XSTATE_BV: a component this VM lacks
    with pytest.raises(KVMError):
        run(env, regs)


# (4) Other faults.


def test_ud2_is_sigill(env: Env) -> None:
    regs = env.load(UD2)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert fault.signo == signal.SIGILL and fault.addr == CODE and regs.rip == CODE


def test_divide_by_zero_is_sigfpe(env: Env) -> None:
    regs = env.load(DIV_ECX)
    regs.rcx = 0
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr) == (signal.SIGFPE, FPE_INTDIV, CODE)


def test_int3_is_sigtrap_and_resumable(env: Env) -> None:
    regs = env.load(INT3 + mov_eax(39) + SYSCALL)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None and fault.signo == signal.SIGTRAP
    assert regs.rip == CODE + 1
    assert run(env, regs)[0] is Stop.SYSCALL


@pytest.mark.parametrize("vector", [0x80, 0x81, 0x0D])
def test_int_n_is_a_fault(env: Env, vector: int) -> None:
    regs = env.load(b"\xcd" + bytes((vector,)))  # int n: the gate's DPL is 0
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code) == (signal.SIGSEGV, SI_KERNEL)


def test_non_canonical_rip_is_sigsegv_without_running(env: Env) -> None:
    regs = Registers.for_entry(0x8000_0000_0000, 0)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None and fault.signo == signal.SIGSEGV


# (5) Interrupts.


def test_interrupt_from_another_thread_stops_a_busy_loop(env: Env) -> None:
    regs = env.load(JMP_SELF)
    threading.Timer(0.05, env.ctx.interrupt).start()
    t0 = time.monotonic()
    stop, fault = run(env, regs)
    assert (stop, fault) == (Stop.INTERRUPT, None)
    assert regs.rip == CODE
    assert time.monotonic() - t0 < 5
    # Used up: the next switch runs again, until the next interrupt.
    threading.Timer(0.02, env.ctx.interrupt).start()
    assert run(env, regs)[0] is Stop.INTERRUPT
    # And the task goes on from there: jump past the loop.
    regs.rip = CODE + 2
    done = _watchdog(env.ctx, 20)
    stop, fault = run(env, regs)
    done.set()
    # Past the loop the page is zeros: `add [rax], al` with rax = 0 faults at 0.
    assert stop is Stop.FAULT and fault is not None and fault.addr == 0


def test_interrupt_during_busy_loop_keeps_registers(env: Env) -> None:
    # L: inc rbx; jmp L. Interrupted in user mode, then resumed and interrupted again.
    regs = env.load(b"\x48\xff\xc3\xeb\xfb")
    regs.r12 = 0xABC
    counts = []
    for _ in range(3):
        threading.Timer(0.02, env.ctx.interrupt).start()
        assert run(env, regs)[0] is Stop.INTERRUPT
        counts.append(regs.rbx)
        assert regs.r12 == 0xABC and regs.rip in (CODE, CODE + 3)
    assert counts[0] < counts[1] < counts[2]


def test_interrupt_before_switch_returns_at_once(env: Env) -> None:
    regs = env.load(mov_eax(39) + SYSCALL)
    env.ctx.interrupt()
    assert run(env, regs) == (Stop.INTERRUPT, None)
    assert regs.rip == CODE
    assert run(env, regs)[0] is Stop.SYSCALL



def _hammer(ctx: KVMContext, period: float) -> threading.Event:
    """Interrupt ``ctx`` every ``period`` seconds (the kernel's preemption,
    much faster) until the returned event is set."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(period):
            ctx.interrupt()

    threading.Thread(target=loop, daemon=True).start()
    return done


# Loops that stop in the sentry on every round, each counting its rounds in rbx:
# L: inc rbx; <the stop>; jmp L. An interrupt while the vCPU is part way through
# such a stop (a PVM `syscall` between its jump to LSTAR and its #GP, a #GP or
# #PF or int3 that KVM has queued) must neither lose the stop nor add one.
HAMMERED = {
    "syscall": (b"\x48\xff\xc3" + mov_eax(39) + SYSCALL + b"\xeb\xf4", Stop.SYSCALL, 10, 0),
    "int3": (b"\x48\xff\xc3" + INT3 + b"\xeb\xfa", Stop.FAULT, 4, 0),
    # mov al, [0]: a #PF at 0; the sentry skips the 7-byte load.
    "page fault": (b"\x48\xff\xc3" + b"\x8a\x04\x25\x00\x00\x00\x00" + b"\xeb\xf4", Stop.FAULT, 3, 7),
}


@pytest.mark.parametrize("kind", list(HAMMERED))
def test_interrupts_lose_and_add_no_stop(env: Env, kind: str) -> None:
    code, expect, at, skip = HAMMERED[kind]
    regs = env.load(code)
    regs.r12, regs.r13, regs.r14, regs.r15, regs.rbp = 0x12, 0x13, 0x14, 0x15, 0xBB
    stops = interrupts = 0
    done = _hammer(env.ctx, 0.0002)
    deadline = time.monotonic() + 3
    try:
        while interrupts < 300 and time.monotonic() < deadline:
            stop, fault = run(env, regs)
            assert (regs.r12, regs.r13, regs.r14, regs.r15, regs.rbp) == (0x12, 0x13, 0x14, 0x15, 0xBB)
            if stop is Stop.INTERRUPT:
                interrupts += 1
                assert CODE <= regs.rip < CODE + len(code) and regs.eflags & 0x200, hex(regs.rip)
                continue
            stops += 1
            assert stop is expect, (stop, fault, hex(regs.rip))
            assert regs.rip == CODE + at and regs.rbx == stops, (hex(regs.rip), regs.rbx, stops)
            if stop is Stop.SYSCALL:
                assert regs.orig_rax == 39 and regs.rcx == regs.rip and regs.r11 == regs.eflags
                regs.rax = 1
            else:
                assert fault is not None
                assert fault.signo == (signal.SIGTRAP if kind == "int3" else signal.SIGSEGV)
            regs.rip += skip
    finally:
        done.set()
    assert interrupts > 10 and stops > 100, (interrupts, stops)


def test_computation_interrupted_thousands_of_times_is_exact(env: Env) -> None:
    # L: add rax, rbx; paddq xmm0, xmm1; imul rdx, rdx, 3; inc rbx; cmp rbx, rcx; jb L;
    # then store xmm0, rdx, rax and exit: xmm0 = n * xmm1, rdx = 3**n, rax = the
    # sum of 0..n-1, whatever interrupts came in between (general, flags and XMM
    # registers all live across them).
    code = (b"\xf3\x0f\x6f\x4f\x20"  # movdqu xmm1, [rdi+32]
            + b"\x48\x01\xd8" + b"\x66\x0f\xd4\xc1" + b"\x48\x6b\xd2\x03" + b"\x48\xff\xc3"
            + b"\x48\x39\xcb" + b"\x72\xed"
            + b"\xf3\x0f\x7f\x07" + b"\x48\x89\x57\x10" + b"\x48\x89\x47\x18" + mov_eax(60) + SYSCALL)
    regs = env.load(code)
    env.memfile.write(env.offsets[(id(env.aspace), DATA)] + 32, struct.pack("<QQ", 3, 5))
    n = 1 << 28
    regs.rcx, regs.rdx = n, 1
    interrupts = 0
    done = _hammer(env.ctx, 0.00005)
    try:
        while True:
            stop, fault = run(env, regs)
            if stop is not Stop.INTERRUPT:
                break
            interrupts += 1
            assert CODE <= regs.rip < CODE + len(code), hex(regs.rip)
    finally:
        done.set()
    assert (stop, fault, regs.orig_rax) == (Stop.SYSCALL, None, 60)
    mask = (1 << 64) - 1
    assert regs.rbx == n and regs.orig_rax == 60
    assert struct.unpack("<4Q", env.data(n=32)) == (n * 3 & mask, n * 5 & mask, pow(3, n, 1 << 64), n * (n - 1) // 2)
    assert interrupts > 100, interrupts


# (6) Several address spaces and contexts.


def test_two_address_spaces(env: Env) -> None:
    second = env.platform.new_address_space()
    code = LOAD_EDX + SYSCALL + STORE_EAX + b"\xeb\xf8"  # L: edx = [rdi]; syscall; [rdi] = eax; jmp L
    regs_a = env.load(code)
    regs_b = env.load(code, aspace=second)
    env.memfile.write(env.offsets[(id(env.aspace), DATA)], struct.pack("<I", 1))
    env.memfile.write(env.offsets[(id(second), DATA)], struct.pack("<I", 2))
    ctx_b = env.platform.new_context()
    for i in range(3):
        assert env.ctx.switch(env.aspace, regs_a)[0] is Stop.SYSCALL
        assert ctx_b.switch(second, regs_b)[0] is Stop.SYSCALL
        assert regs_a.rdx == 1 + 10 * i and regs_b.rdx == 2 + 10 * i
        regs_a.rax = regs_a.rdx + 10
        regs_b.rax = regs_b.rdx + 10
    # One context moving between the two address spaces.
    regs_a.rax = 100
    assert env.ctx.switch(env.aspace, regs_a)[0] is Stop.SYSCALL
    regs_b.rax = 200
    assert env.ctx.switch(second, regs_b)[0] is Stop.SYSCALL
    assert env.data(n=4) == struct.pack("<I", 100)
    assert env.data(second, n=4) == struct.pack("<I", 200)
    second.release()
    with pytest.raises(RuntimeError):
        ctx_b.switch(second, regs_b)


def test_contexts_run_in_parallel_threads(env: Env) -> None:
    ctxs = [env.ctx, env.platform.new_context()]
    regs = [env.load(SYSCALL + b"\x48\xff\xc3\xeb\xf9") for _ in ctxs]  # L: syscall; inc rbx; jmp L
    errors: list[BaseException] = []

    def work(ctx: KVMContext, r: Registers) -> None:
        try:
            for _ in range(300):
                assert ctx.switch(env.aspace, r)[0] is Stop.SYSCALL
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=p) for p in zip(ctxs, regs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [r.rbx for r in regs] == [299, 299]


# (7) Hygiene.


def test_close_leaves_no_fd() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"KVM platform unavailable: {reason}")
    memfile = MemoryFile(size=1 << 24)
    fds_before = sorted(os.listdir("/proc/self/fd"))
    platform = KVMPlatform(Config())
    platform.start(memfile)
    aspaces = [platform.new_address_space() for _ in range(3)]
    ctxs = [platform.new_context() for _ in range(3)]
    env = Env(platform, memfile, aspaces[0], ctxs[0])
    regs = env.load(mov_eax(39) + SYSCALL)
    assert ctxs[0].switch(aspaces[0], regs)[0] is Stop.SYSCALL
    assert len(os.listdir("/proc/self/fd")) >= len(fds_before) + 5  # kvm, vm, 3 vCPUs
    ctxs[1].release()
    platform.close()
    platform.close()  # idempotent
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    with pytest.raises(RuntimeError):
        platform.new_context()
    memfile.close()  # nothing holds the memory file's mapping any more


def test_triple_fault_is_a_guest_error(env: Env) -> None:
    # Break this VM's IDT: the next exception cannot be delivered.
    regs = env.load(UD2)
    pool = env.platform._pool
    assert pool is not None
    pool[m.IDT_PAGE * PAGE : (m.IDT_PAGE + 1) * PAGE] = bytes(PAGE)
    with pytest.raises(GuestError, match=r"SHUTDOWN|exit"):
        run(env, regs)


def test_objects_refuse_pickling(env: Env) -> None:
    for obj in (env.platform, env.aspace, env.ctx):
        with pytest.raises(TypeError):
            pickle.dumps(obj)


# (8) The guest layout of both entries (no VM needed).


@pytest.mark.parametrize("entry", [PvmPortEntry(), PvmEntry(), Ring0Entry()], ids=lambda e: e.name)
def test_kernel_page_table_of_each_entry(entry: m.Entry) -> None:
    pt = entry.kernel_table()
    lstar = pt[m.LSTAR_PAGE]
    assert lstar & m.PTE_ADDR == m.LSTAR_PAGE * PAGE and lstar & m.PTE_P and not lstar & m.PTE_NX
    assert bool(lstar & m.PTE_US) == (entry.name != "ring0")  # PVM: user page; VMX/SVM: supervisor
    assert entry.sysret == (entry.name == "ring0")
    assert entry.register_return == bool(entry.exit_port) == (entry.name == "pvm-io")
    page = m.lstar_page(entry.lstar_code)
    assert len(page) == PAGE and page.startswith(entry.lstar_code)
    assert set(page[len(entry.lstar_code) :]) == {0xF4}  # hlt: a #GP anywhere else
    for page in (m.GDT_PAGE, m.IDT_PAGE, m.STUB_PAGE, m.vcpu_page(0), m.vcpu_page(m.MAX_VCPUS - 1)):
        assert pt[page] & m.PTE_P and not pt[page] & m.PTE_US, page
    assert pt[m.STUB_PAGE] & m.PTE_NX == 0 and pt[m.vcpu_page(3)] & m.PTE_NX
    assert not pt[m.IDT_PAGE] & m.PTE_RW
    assert pt[m.KERNEL_PT_PAGE] == 0  # not mapped: nothing in the guest writes page tables


def test_descriptor_tables() -> None:
    g = m.gdt()
    # Linux's layout: kernel CS 0x10 (long mode, DPL 0), user CS 0x33 (long, DPL 3), user SS 0x2b.
    desc = {sel: struct.unpack_from("<Q", g, sel & ~7)[0] for sel in (0x10, 0x18, 0x23, 0x2B, 0x33)}
    assert desc[0x10] >> 53 & 1 and (desc[0x10] >> 45) & 3 == 0
    assert desc[0x33] >> 53 & 1 and (desc[0x33] >> 45) & 3 == 3
    assert (desc[0x2B] >> 45) & 3 == 3 and desc[0x2B] >> 47 & 1
    assert m.STAR >> 48 == 0x23 and (m.STAR >> 32) & 0xFFFF == 0x10  # sysret: CS 0x33, SS 0x2b
    low, high = struct.unpack_from("<QQ", g, m.TSS_SEL)
    base = (low >> 16 & 0xFFFFFF) | (low >> 56 & 0xFF) << 24 | high << 32
    assert base == m.vcpu_tss_va(0) and (low >> 40) & 0xF == 0xB
    idt = m.idt()
    for v in (0, 3, 6, 13, 14, 31):
        lo = struct.unpack_from("<Q", idt, 16 * v)[0]
        off = (lo & 0xFFFF) | (lo >> 48 & 0xFFFF) << 16 | struct.unpack_from("<I", idt, 16 * v + 8)[0] << 32
        assert off == m.stub_va(v)
        assert (lo >> 16) & 0xFFFF == m.KERNEL_CS
        dpl = (lo >> 45) & 3
        assert dpl == (3 if v in (3, 4) else 0)
    assert struct.unpack_from("<Q", idt, 16 * 32)[0] == 0  # vector 32: not present
    code = m.stub_code()
    assert code[0:6] == b"\x48\x83\xc4\x10\x48\xcf"  # RESUME: add rsp,16; iretq
    at13 = m.stub_va(13) - m.STUB_VA
    assert code[at13 : at13 + 3] == b"\x6a\x0d\xf4"  # error code pushed by the CPU
    at6 = m.stub_va(6) - m.STUB_VA
    assert code[at6 : at6 + 5] == b"\x6a\x00\x6a\x06\xf4"
    assert m.LSTAR_CODE == b"\xf4\x48\x0f\x07"  # hlt; sysretq
    assert m.LSTAR_PORT_CODE == b"\xe6\x80"  # out 0x80, al
    assert (low & 0xFFFF) | (low >> 48 & 0xF) << 16 == m.TSS_LIMIT
    t = m.tss(2)
    assert len(t) == m.TSS_LIMIT + 1 and struct.unpack_from("<Q", t, 4)[0] == m.vcpu_tss_va(2) + PAGE
    assert struct.unpack_from("<H", t, 102)[0] == m.TSS_SIZE and set(t[m.TSS_SIZE :]) == {0xFF}  # no port

    def port_open(t: bytes, port: int) -> bool:
        return not t[m.TSS_SIZE + port // 8] >> port % 8 & 1

    t = m.tss(2, m.EXIT_PORT)
    assert port_open(t, m.EXIT_PORT) and t[-1] == 0xFF
    assert [p for p in range((len(t) - m.TSS_SIZE - 1) * 8) if port_open(t, p)] == [m.EXIT_PORT]
    with pytest.raises(ValueError):
        m.tss(0, 0x400)


def test_page_tables_without_a_vm() -> None:
    mem = memoryview(bytearray(4 << 20)).cast("Q")
    alloc = m.PoolAllocator(pages=1024)
    pt = m.PageTables(mem, alloc, m.KERNEL_PT_PAGE * PAGE)
    gpa = m.MEM_BASE + 0x5000
    assert not pt.map(0x7F00_0000_0000, 3 * PAGE, gpa, RW)
    e = pt.lookup(0x7F00_0000_1000)
    assert e & m.PTE_ADDR == gpa + PAGE and e & m.PTE_RW and e & m.PTE_US and e & m.PTE_NX and e & m.PTE_P
    assert pt.protect(0x7F00_0000_0000, 3 * PAGE, PROT_READ | PROT_EXEC)  # write removed: stale
    e = pt.lookup(0x7F00_0000_2000)
    assert not e & m.PTE_RW and not e & m.PTE_NX and e & m.PTE_ADDR == gpa + 2 * PAGE
    assert not pt.protect(0x7F00_0000_0000, PAGE, PROT_READ | PROT_EXEC)  # nothing changed
    assert pt.protect(0x7F00_0000_0000, PAGE, 0)
    assert pt.lookup(0x7F00_0000_0000) == gpa  # PROT_NONE keeps the address, P clear
    assert pt.unmap(0x7F00_0000_0000, 3 * PAGE)
    assert pt.lookup(0x7F00_0000_1000) == 0 and not pt.unmap(0x7F00_0000_0000, PAGE)
    # The kernel page table is linked, not copied.
    l4 = mem[pt.root * 512 + (m.KERNEL_START >> 39 & 511)]
    l3 = mem[(l4 & m.PTE_ADDR) // 8 + (m.KERNEL_START >> 30 & 511)]
    l2 = mem[(l3 & m.PTE_ADDR) // 8 + (m.KERNEL_START >> 21 & 511)]
    assert l2 & m.PTE_ADDR == m.KERNEL_PT_PAGE * PAGE and l2 & m.PTE_US
    pages = list(pt.pages)
    pt.release()
    assert alloc.retired == pages and alloc.free == []
    alloc.recycle()
    assert sorted(alloc.free) == sorted(pages)


def test_probe_reports_a_missing_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyrunsc.plugins.platform_kvm import platform as kvm_platform

    monkeypatch.setattr(kvm_platform, "DEV_KVM", "/dev/no-such-kvm")
    assert KVMPlatform.probe() == "/dev/no-such-kvm does not exist (no KVM on this host)"


@pytest.mark.parametrize("command", [["run"], ["restore", "--image-path", "no-image"]])
def test_run_without_kvm_fails_at_once_with_status_2(tmp_path: Path, command: list[str]) -> None:
    """``--platform kvm`` on a host without /dev/kvm: exit status 2 and why,
    before any sandbox starts (here the device path is pointed elsewhere)."""
    bundle = tmp_path / "b"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}}}))
    code = ("import sys, pyrunsc.plugins.platform_kvm.platform as p; p.DEV_KVM = '/dev/no-such-kvm'\n"
            "from pyrunsc.core.cli import main; main(sys.argv[1:])")
    r = subprocess.run([sys.executable, "-c", code, "--root", str(tmp_path / "root"), "--platform", "kvm",
                        *command, "--bundle", str(bundle), "c1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ("pyrunsc: error: platform: platform 'kvm' is not available here: "
                                "/dev/no-such-kvm does not exist (no KVM on this host)")
    assert not (tmp_path / "root" / "c1").exists()
