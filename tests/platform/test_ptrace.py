"""The ptrace platform with real ptrace: hand-assembled x86-64 code in
memory-file pages, mapped into stub processes and run under PTRACE_SYSEMU.

Tests that run code do so twice: with core's Registers (the FP image is read
back after every switch) and with Registers that have the lazy-FP hook
(``fp_pull``: the image stays in the stub until read). Until core/arch.py has
that hook, :class:`~pyrunsc.plugins.platform_ptrace.lazyfp.LazyFPRegisters`
has it.

Every test skips (with the reason) when this host does not allow ptrace.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import resource
import signal
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pyrunsc.core.arch import Registers
from pyrunsc.core.config import Config
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.platform import PROT_EXEC, PROT_READ, PROT_WRITE, Stop
from pyrunsc.plugins.platform_ptrace import (
    MAX_USER_ADDRESS,
    STUB_END,
    STUB_START,
    InjectedSyscallError,
    PtraceAddressSpace,
    PtraceContext,
    PtracePlatform,
    StubError,
)
from pyrunsc.plugins.platform_ptrace.lazyfp import LazyFPRegisters
from pyrunsc.plugins.platform_ptrace.stub import STUB_ELF, SYSCALL_ADDR

PAGE = 4096
CODE, DATA = 0x400000, 0x600000
RX, RW = PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE
SEGV_MAPERR, SEGV_ACCERR, FPE_INTDIV = 1, 2, 1
ENOSYS_RAX = (1 << 64) - errno.ENOSYS

# Hand-assembled x86-64 (checked against GNU as).
SYSCALL = b"\x0f\x05"
STORE_RAX = b"\x48\x89\x07"  # mov [rdi], rax
STORE_EAX = b"\x89\x07"  # mov [rdi], eax
LOAD_EAX = b"\x8b\x07"  # mov eax, [rdi]
LOAD_EDX = b"\x8b\x17"  # mov edx, [rdi]
LOAD_FS0 = b"\x64\x48\x8b\x04\x25\x00\x00\x00\x00"  # mov rax, fs:[0]
MOVQ_XMM0 = b"\x66\x0f\xd6\x07"  # movq [rdi], xmm0
LOAD_XMM0 = b"\xf3\x0f\x7e\x07"  # movq xmm0, [rdi]
VMOVDQU_YMM0 = b"\xc5\xfe\x7f\x07"  # vmovdqu [rdi], ymm0
PCMPEQD_XMM1 = b"\x66\x0f\x76\xc9"  # pcmpeqd xmm1, xmm1 (all ones)
UD2 = b"\x0f\x0b"
DIV_ECX = b"\xf7\xf1"
INT3 = b"\xcc"
JMP_SELF = b"\xeb\xfe"
SPIN_RCX = b"\x48\xff\xc9\x75\xfb"  # L: dec rcx; jnz L


def mov_eax(n: int) -> bytes:
    return b"\xb8" + struct.pack("<I", n)


def ptrace_unavailable() -> str | None:
    return PtracePlatform.probe()


#: The Registers classes every code-running test uses.
REGS_CLASSES = [Registers] if hasattr(Registers, "fp_pull") else [Registers, LazyFPRegisters]


@dataclass
class Env:
    platform: PtracePlatform
    memfile: MemoryFile
    aspace: PtraceAddressSpace
    ctx: PtraceContext
    regs_cls: type[Registers] = Registers

    def page(self, data: bytes = b"") -> int:
        """A fresh memory-file page holding ``data``; its offset."""
        off = self.memfile.allocate(PAGE)
        self.memfile.write(off, data)
        return off

    def load(self, code: bytes, *, aspace: PtraceAddressSpace | None = None, data_prot: int = RW) -> Registers:
        """``code`` at CODE (r-x), a data page at DATA; registers to run it
        with rdi = DATA and rsp at the top of the data page."""
        a = aspace or self.aspace
        a.map(CODE, PAGE, self.page(code), RX)
        a.map(DATA, PAGE, self.page(), data_prot)
        r = self.regs_cls.for_entry(CODE, DATA + PAGE)
        r.rdi = DATA
        return r

    def data(self, aspace: PtraceAddressSpace | None = None, at: int = DATA, n: int = 8) -> bytes:
        """``n`` bytes at user address ``at``, read through the memory file."""
        return self.memfile.read(_file_offset(aspace or self.aspace, at), n)


def _file_offset(aspace: PtraceAddressSpace, addr: int) -> int:
    """The memory-file offset mapped at ``addr`` in the stub (from /proc/PID/maps)."""
    assert aspace.stub is not None
    for line in aspace.stub.maps():
        rng, _perms, off = line.split()[:3]
        lo, hi = (int(x, 16) for x in rng.split("-"))
        if lo <= addr < hi:
            return int(off, 16) + addr - lo
    raise AssertionError(f"{addr:#x} not in the stub's maps")


@contextlib.contextmanager
def make_env(regs_cls: type[Registers]) -> Iterator[Env]:
    reason = ptrace_unavailable()
    if reason:
        pytest.skip(f"ptrace platform unavailable: {reason}")
    memfile = MemoryFile(size=1 << 26)
    platform = PtracePlatform(Config())
    platform.start(memfile)
    try:
        try:
            aspace = platform.new_address_space()
        except (StubError, PermissionError) as e:
            pytest.skip(f"ptrace not permitted here: {e}")
        yield Env(platform, memfile, aspace, platform.new_context(), regs_cls)
    finally:
        platform.close()
        memfile.close()


@pytest.fixture(params=REGS_CLASSES, ids=lambda c: "lazy-fp" if hasattr(c, "fp_pull") else "eager-fp")
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with make_env(request.param) as e:
        yield e


@pytest.fixture
def lazy_env() -> Iterator[Env]:
    """An Env whose Registers have the lazy-FP hook."""
    with make_env(REGS_CLASSES[-1]) as e:
        yield e


def run(env: Env, regs: Registers, aspace: PtraceAddressSpace | None = None) -> tuple[Stop, object]:
    return env.ctx.switch(aspace or env.aspace, regs)


# (1) System calls.


def test_syscall_stop_reports_number_and_takes_the_return_value(env: Env) -> None:
    regs = env.load(mov_eax(39) + SYSCALL + STORE_RAX + mov_eax(60) + SYSCALL)
    stop, fault = run(env, regs)
    assert (stop, fault) == (Stop.SYSCALL, None)
    assert regs.orig_rax == 39
    assert regs.rax == ENOSYS_RAX  # as at Linux's syscall entry
    assert regs.rip == CODE + 7  # past the syscall instruction
    assert regs.rcx == regs.rip and regs.r11 == regs.eflags  # what `syscall` does
    regs.rax = 0x1234_5678_9ABC
    stop, _ = run(env, regs)
    assert stop is Stop.SYSCALL and regs.orig_rax == 60
    assert env.data() == struct.pack("<Q", 0x1234_5678_9ABC)


@pytest.mark.parametrize("code", [512, 513, 514, 516])  # ERESTARTSYS, NOINTR, NOHAND, RESTART_RESTARTBLOCK
def test_restart_codes_reach_the_task_unchanged(env: Env, code: int) -> None:
    # Linux rewinds a system call whose result is -ERESTART* when a signal
    # comes at its return, if orig_rax >= 0: the platform must not let it.
    regs = env.load(mov_eax(39) + SYSCALL + STORE_RAX + mov_eax(60) + SYSCALL)
    assert run(env, regs)[0] is Stop.SYSCALL
    regs.rax = (1 << 64) - code
    assert env.aspace.stub is not None
    os.kill(env.aspace.stub.pid, signal.SIGUSR1)  # a signal at the return
    assert run(env, regs)[0] is Stop.SYSCALL
    assert regs.orig_rax == 60
    assert env.data() == struct.pack("<Q", (1 << 64) - code)


def test_the_host_never_runs_the_call(env: Env) -> None:
    # exit_group(0) under SYSEMU is a stop, and the stub lives on.
    regs = env.load(mov_eax(231) + SYSCALL + mov_eax(39) + SYSCALL)
    assert run(env, regs)[0] is Stop.SYSCALL and regs.orig_rax == 231
    assert run(env, regs)[0] is Stop.SYSCALL and regs.orig_rax == 39


# (2) map / unmap / protect and faults.


def test_write_to_read_only_page_faults_with_write_and_address(env: Env) -> None:
    regs = env.load(mov_eax(7) + STORE_EAX + mov_eax(39) + SYSCALL, data_prot=PROT_READ)
    regs.rdi = DATA + 0x10
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr) == (signal.SIGSEGV, SEGV_ACCERR, DATA + 0x10)
    assert fault.write and not fault.exec
    assert regs.rip == CODE + 5  # the faulting store
    # The signal was not delivered: make the page writable and go on.
    env.aspace.protect(DATA, PAGE, RW)
    assert run(env, regs)[0] is Stop.SYSCALL and regs.orig_rax == 39
    assert env.data(at=DATA + 0x10, n=4) == struct.pack("<I", 7)


def test_read_of_read_only_page_works(env: Env) -> None:
    regs = env.load(LOAD_EAX + mov_eax(39) + SYSCALL, data_prot=PROT_READ)
    assert run(env, regs)[0] is Stop.SYSCALL


def test_executing_a_non_exec_page_faults_as_exec(env: Env) -> None:
    regs = env.load(mov_eax(39) + SYSCALL)
    env.aspace.protect(CODE, PAGE, PROT_READ)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr) == (signal.SIGSEGV, SEGV_ACCERR, CODE)
    assert fault.exec and not fault.write


def test_access_after_unmap_is_maperr_then_accerr_once_mapped_read_only(env: Env) -> None:
    regs = env.load(mov_eax(5) + STORE_EAX + mov_eax(39) + SYSCALL)
    off = _file_offset(env.aspace, DATA)
    env.aspace.unmap(DATA, PAGE)
    assert env.aspace.mappings() == [(CODE, CODE + PAGE, RX)]
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr) == (signal.SIGSEGV, SEGV_MAPERR, DATA)
    assert not fault.write  # unknowable for a missing page
    # A kernel mapping it read-only (copy-on-write) learns it was a write.
    env.aspace.map(DATA, PAGE, off, PROT_READ)
    stop, fault = run(env, regs)
    assert fault is not None and fault.code == SEGV_ACCERR and fault.write
    env.aspace.map(DATA, PAGE, off, RW)
    assert run(env, regs)[0] is Stop.SYSCALL


def test_map_replaces_and_tracks_protections(env: Env) -> None:
    a = env.aspace
    off = env.memfile.allocate(4 * PAGE)
    a.map(DATA, 4 * PAGE, off, RW)
    a.protect(DATA + PAGE, PAGE, PROT_READ)
    a.unmap(DATA + 2 * PAGE, PAGE)
    assert a.mappings() == [
        (DATA, DATA + PAGE, RW), (DATA + PAGE, DATA + 2 * PAGE, PROT_READ), (DATA + 3 * PAGE, DATA + 4 * PAGE, RW)
    ]
    # protect over a hole changes the mapped pages only.
    a.protect(DATA, 4 * PAGE, PROT_READ)
    assert a.mappings() == [(DATA, DATA + 2 * PAGE, PROT_READ), (DATA + 3 * PAGE, DATA + 4 * PAGE, PROT_READ)]
    assert a.stub is not None
    perms = {line.split()[0]: line.split()[1] for line in a.stub.maps()}
    assert perms[f"{DATA:08x}-{DATA + 2 * PAGE:08x}"] == "r--s"
    assert perms[f"{DATA + 3 * PAGE:08x}-{DATA + 4 * PAGE:08x}"] == "r--s"


def test_injected_call_failure_raises_its_errno(env: Env) -> None:
    assert env.aspace.stub is not None
    pid = env.aspace.stub.pid
    resource.prlimit(pid, resource.RLIMIT_AS, (1 << 20, 1 << 20))
    off = env.memfile.allocate(1 << 21)
    with pytest.raises(InjectedSyscallError) as e:
        env.aspace.map(DATA, 1 << 21, off, RW)
    assert e.value.errno == errno.ENOMEM
    assert "mmap" in str(e.value)
    assert env.aspace.mappings() == []
    # A failed MAP_FIXED over a mapping leaves the range unmapped, and says so.
    env.aspace.map(DATA, PAGE, env.page(), RW)
    with pytest.raises(InjectedSyscallError):
        env.aspace.map(DATA, 1 << 21, off, RW)
    assert env.aspace.mappings() == []
    assert env.aspace.stub is not None and len(env.aspace.stub.maps()) == 2  # the stub's page, [vsyscall]


def test_tracking_can_be_reread_from_the_stub(env: Env) -> None:
    a = env.aspace
    a.map(CODE, 2 * PAGE, env.memfile.allocate(2 * PAGE), RX)
    a.map(DATA, PAGE, env.page(), RW)
    a.map(DATA + PAGE, PAGE, env.page(), 0)
    a.protect(CODE + PAGE, PAGE, PROT_READ)
    tracked = a.mappings()
    assert tracked == [(CODE, CODE + PAGE, RX), (CODE + PAGE, CODE + 2 * PAGE, PROT_READ),
                       (DATA, DATA + PAGE, RW), (DATA + PAGE, DATA + 2 * PAGE, 0)]
    a.prots.set(CODE, DATA + 2 * PAGE, RW)  # forget it all
    a._resync()  # what a failed call does
    assert a.mappings() == tracked


def test_bad_ranges_are_refused(env: Env) -> None:
    a = env.aspace
    with pytest.raises(ValueError):
        a.map(DATA + 1, PAGE, 0, RW)
    with pytest.raises(ValueError):
        a.map(DATA, 100, 0, RW)
    with pytest.raises(ValueError):
        a.map(STUB_START, PAGE, 0, RW)
    with pytest.raises(ValueError):
        a.unmap(STUB_START - PAGE, 2 * PAGE)
    assert (STUB_START, STUB_END) in PtracePlatform.reserved
    assert MAX_USER_ADDRESS == STUB_START and SYSCALL_ADDR in range(STUB_START, STUB_START + PAGE)


def test_stub_holds_only_its_page_and_the_memory_file(env: Env) -> None:
    stub = env.aspace.stub
    assert stub is not None
    maps = stub.maps()
    assert len(maps) == 2, maps
    assert maps[0].startswith(f"{STUB_START:x}-{STUB_START + PAGE:x} r-xp")
    assert maps[1].endswith("[vsyscall]")
    assert os.listdir(f"/proc/{stub.pid}/fd") == ["0"]
    assert os.readlink(f"/proc/{stub.pid}/fd/0").startswith("/memfd:")
    assert os.fstat(env.memfile.fd).st_ino == os.stat(f"/proc/{stub.pid}/fd/0").st_ino
    assert len(STUB_ELF) <= PAGE  # one page, mapped again at STUB_START


# (3) Registers.


def test_general_registers_and_fs_base_round_trip(env: Env) -> None:
    regs = env.load(SYSCALL + LOAD_FS0 + STORE_RAX + SYSCALL)
    env.memfile.write(_file_offset(env.aspace, DATA) + 0x100, struct.pack("<Q", 0xFEEDFACE))
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


def test_sse_register_in_and_out(env: Env) -> None:
    regs = env.load(MOVQ_XMM0 + PCMPEQD_XMM1 + SYSCALL)
    struct.pack_into("<Q", regs.fpstate, 160, 0xABCDEF0123456789)  # FXSAVE XMM0
    assert run(env, regs)[0] is Stop.SYSCALL
    assert env.data() == struct.pack("<Q", 0xABCDEF0123456789)
    assert regs.fpstate[176:192] == b"\xff" * 16  # XMM1 set by the code


def test_avx_register_in(env: Env) -> None:
    if "avx" not in Path("/proc/cpuinfo").read_text().split():
        pytest.skip("no AVX on this host")
    regs = env.load(VMOVDQU_YMM0 + SYSCALL)
    lo, hi = bytes(range(16)), bytes(range(100, 116))
    regs.fpstate[160:176] = lo  # XMM0
    regs.fpstate[576:592] = hi  # YMM0's upper half: the XSAVE AVX component
    struct.pack_into("<Q", regs.fpstate, 512, 0x7)  # XSTATE_BV: x87 | SSE | AVX
    assert run(env, regs)[0] is Stop.SYSCALL
    assert env.data(n=32) == lo + hi
    assert regs.fpstate[576:592] == hi


def test_fp_state_is_per_registers_object_on_a_shared_stub(env: Env) -> None:
    regs_a = env.load(MOVQ_XMM0 + SYSCALL + b"\xeb\xf8")  # L: movq [rdi], xmm0; syscall; jmp L
    regs_b = env.regs_cls(regs_a.regs, regs_a.fpstate)
    regs_c = Registers(regs_a.regs, regs_a.fpstate)  # core's class, whatever env uses
    struct.pack_into("<Q", regs_a.fpstate, 160, 0xAAAA)
    struct.pack_into("<Q", regs_b.fpstate, 160, 0xBBBB)
    struct.pack_into("<Q", regs_c.fpstate, 160, 0xCCCC)
    contexts = [env.ctx, env.platform.new_context(), env.platform.new_context()]
    for _ in range(3):
        for ctx, regs, value in zip(contexts, (regs_a, regs_b, regs_c), (0xAAAA, 0xBBBB, 0xCCCC), strict=True):
            assert ctx.switch(env.aspace, regs)[0] is Stop.SYSCALL
            assert env.data() == struct.pack("<Q", value)
    # Changing an image in place is seen too.
    struct.pack_into("<Q", regs_a.fpstate, 160, 0xDDDD)
    assert env.ctx.switch(env.aspace, regs_a)[0] is Stop.SYSCALL
    assert env.data() == struct.pack("<Q", 0xDDDD)
    assert regs_b.fpstate[160:168] == struct.pack("<Q", 0xBBBB)


def test_bad_xsave_header_is_an_error(env: Env) -> None:
    regs = env.load(SYSCALL)
    struct.pack_into("<Q", regs.fpstate, 520, 1 << 63)  # XCOMP_BV: compacted, not allowed
    with pytest.raises(OSError):
        run(env, regs)


def test_lazy_fp_is_read_when_first_asked(lazy_env: Env) -> None:
    env = lazy_env
    regs = env.load(PCMPEQD_XMM1 + SYSCALL)
    assert run(env, regs)[0] is Stop.SYSCALL
    assert regs.fp_pull is not None  # type: ignore[attr-defined]
    assert regs.fpstate[176:192] == b"\xff" * 16
    assert regs.fp_pull is None  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(regs)).fpstate[176:192] == b"\xff" * 16


def test_lazy_fp_follows_a_task_to_another_stub(lazy_env: Env) -> None:
    env = lazy_env
    regs = env.load(LOAD_XMM0 + SYSCALL)
    env.memfile.write(_file_offset(env.aspace, DATA), struct.pack("<Q", 0x5151))
    assert run(env, regs)[0] is Stop.SYSCALL  # xmm0 = 0x5151, left in the first stub
    second = env.platform.new_address_space()
    store = env.load(MOVQ_XMM0 + SYSCALL, aspace=second)
    regs.rip, regs.rdi = store.rip, store.rdi
    assert run(env, regs, second)[0] is Stop.SYSCALL
    assert env.data(second) == struct.pack("<Q", 0x5151)


def test_lazy_fp_is_saved_before_the_stub_goes(lazy_env: Env) -> None:
    env = lazy_env
    regs = env.load(LOAD_XMM0 + SYSCALL)
    env.memfile.write(_file_offset(env.aspace, DATA), struct.pack("<Q", 0x7373))
    assert run(env, regs)[0] is Stop.SYSCALL
    env.aspace.release()
    assert regs.fp_pull is None  # type: ignore[attr-defined]
    assert regs.fpstate[160:168] == struct.pack("<Q", 0x7373)


def test_lazy_fp_read_outside_the_tracer_thread_is_refused(lazy_env: Env) -> None:
    env = lazy_env
    regs = env.load(PCMPEQD_XMM1 + SYSCALL)
    assert run(env, regs)[0] is Stop.SYSCALL
    errors: list[BaseException] = []

    def other() -> None:
        try:
            regs.fpstate  # noqa: B018
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert regs.fpstate[176:192] == b"\xff" * 16  # still there for the tracer


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


def test_int3_is_sigtrap(env: Env) -> None:
    regs = env.load(INT3 + mov_eax(39) + SYSCALL)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None and fault.signo == signal.SIGTRAP
    assert regs.rip == CODE + 1
    assert run(env, regs)[0] is Stop.SYSCALL


def test_single_step_with_trap_flag(env: Env) -> None:
    regs = env.load(mov_eax(1) + mov_eax(2) + SYSCALL)
    regs.eflags |= 0x100
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None and fault.signo == signal.SIGTRAP
    assert regs.rip == CODE + 5 and regs.rax == 1


def test_unmapped_rip_is_sigsegv_exec(env: Env) -> None:
    regs = env.regs_cls.for_entry(0x12345000, 0)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr, fault.exec) == (signal.SIGSEGV, SEGV_MAPERR, 0x12345000, True)


@pytest.mark.parametrize("entry", [0, 0x400, 0x800])  # gettimeofday, time, getcpu
def test_vsyscall_page_is_a_fault_not_a_host_call(env: Env, entry: int) -> None:
    # mov rax, VSYSCALL + entry; mov rdi, rsi (= DATA); call rax; syscall
    target = 0xFFFF_FFFF_FF60_0000 + entry
    regs = env.load(b"\x48\xb8" + struct.pack("<Q", target) + b"\xff\xd0" + SYSCALL)
    regs.rsi = DATA
    env.memfile.write(_file_offset(env.aspace, DATA), b"\xaa" * 16)
    stop, fault = run(env, regs)
    assert stop is Stop.FAULT and fault is not None
    assert (fault.signo, fault.code, fault.addr, fault.exec) == (signal.SIGSEGV, SEGV_MAPERR, target, True)
    assert regs.rip == target and regs.rsp == DATA + PAGE - 8  # as at the call's target
    assert env.data(n=16) == b"\xaa" * 16  # the host wrote nothing
    assert env.aspace.stub is not None
    status = Path(f"/proc/{env.aspace.stub.pid}/status").read_text()
    assert "Seccomp:\t2" in status


# (5) Interrupts and stray signals.


def _watchdog(env: Env, seconds: float) -> threading.Timer:
    """Kill the stub if the test hangs, so a broken interrupt fails instead."""
    stub = env.aspace.stub
    assert stub is not None
    t = threading.Timer(seconds, stub.signal, (signal.SIGKILL,))
    t.daemon = True
    t.start()
    return t


def test_interrupt_from_another_thread_stops_a_busy_loop(env: Env) -> None:
    regs = env.load(JMP_SELF)
    dog = _watchdog(env, 20)
    threading.Timer(0.05, env.ctx.interrupt).start()
    t0 = time.monotonic()
    stop, fault = run(env, regs)
    dog.cancel()
    assert (stop, fault) == (Stop.INTERRUPT, None)
    assert regs.rip == CODE
    assert time.monotonic() - t0 < 5
    # The interrupt is used up: the next switch runs again (until the next one).
    threading.Timer(0.02, env.ctx.interrupt).start()
    assert run(env, regs)[0] is Stop.INTERRUPT


def test_interrupt_before_switch_returns_at_once(env: Env) -> None:
    regs = env.load(mov_eax(39) + SYSCALL)
    env.ctx.interrupt()
    assert run(env, regs) == (Stop.INTERRUPT, None)
    assert regs.rip == CODE  # nothing ran
    assert run(env, regs)[0] is Stop.SYSCALL


def test_foreign_signals_are_not_delivered(env: Env) -> None:
    regs = env.load(SPIN_RCX + mov_eax(39) + SYSCALL)
    regs.rcx = 1000
    stub = env.aspace.stub
    assert stub is not None
    os.kill(stub.pid, signal.SIGUSR1)  # default action: terminate
    os.kill(stub.pid, signal.SIGCHLD)  # looks like an interrupt, but none is pending
    stop, _ = run(env, regs)
    assert stop is Stop.SYSCALL and regs.orig_rax == 39
    assert psutil.Process(stub.pid).status() != psutil.STATUS_ZOMBIE


class Alarm(Exception):
    pass


def test_an_exception_in_a_wait_leaves_the_stub_usable(env: Env) -> None:
    regs = env.load(JMP_SELF + mov_eax(39) + SYSCALL)

    def alarm(signo: int, frame: object) -> None:
        raise Alarm

    old = signal.signal(signal.SIGALRM, alarm)
    dog = _watchdog(env, 20)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
            run(env, regs)  # interrupted while the stub spins
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        dog.cancel()
    regs.rip = CODE + 2  # past the loop
    assert run(env, regs)[0] is Stop.SYSCALL and regs.orig_rax == 39


def test_killed_stub_is_an_error_and_reaped(env: Env) -> None:
    regs = env.load(JMP_SELF)
    stub = env.aspace.stub
    assert stub is not None
    threading.Timer(0.05, os.kill, (stub.pid, signal.SIGKILL)).start()
    with pytest.raises(StubError, match="SIGKILL"):
        run(env, regs)
    assert not psutil.pid_exists(stub.pid) or psutil.Process(stub.pid).ppid() != os.getpid()


def test_switch_from_another_thread_is_refused(env: Env) -> None:
    regs = env.load(SYSCALL)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            env.ctx.switch(env.aspace, regs)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError) and "tracer thread" in str(errors[0])


# (6) Several address spaces.


def test_two_address_spaces_at_once(env: Env) -> None:
    second = env.platform.new_address_space()
    code = LOAD_EDX + SYSCALL + STORE_EAX + b"\xeb\xf8"  # L: edx = [rdi]; syscall; [rdi] = eax; jmp L
    regs_a = env.load(code)
    regs_b = env.load(code, aspace=second)
    env.memfile.write(_file_offset(env.aspace, DATA), struct.pack("<I", 1))
    env.memfile.write(_file_offset(second, DATA), struct.pack("<I", 2))
    ctx_b = env.platform.new_context()
    for i in range(3):
        assert env.ctx.switch(env.aspace, regs_a)[0] is Stop.SYSCALL
        assert ctx_b.switch(second, regs_b)[0] is Stop.SYSCALL
        assert regs_a.rdx == 1 + 10 * i and regs_b.rdx == 2 + 10 * i
        regs_a.rax = regs_a.rdx + 10
        regs_b.rax = regs_b.rdx + 10
    assert env.data(n=4) == struct.pack("<I", 21)
    assert env.data(second, n=4) == struct.pack("<I", 22)
    assert env.aspace.stub is not None and second.stub is not None
    assert env.aspace.stub.pid != second.stub.pid
    second.release()
    with pytest.raises(StubError):
        ctx_b.switch(second, regs_b)


# (7) Hygiene.


def _children() -> list[psutil.Process]:
    return psutil.Process().children()


@contextlib.contextmanager
def _closed_platform(n_aspaces: int) -> Iterator[tuple[PtracePlatform, list[PtraceAddressSpace], Env]]:
    """A started platform with ``n_aspaces`` address spaces and an Env on the
    first; the block must close the platform. Afterwards no child process
    (no zombie either) and no fd of it may be left."""
    reason = ptrace_unavailable()
    if reason:
        pytest.skip(f"ptrace platform unavailable: {reason}")
    memfile = MemoryFile(size=1 << 24)
    fds_before = sorted(os.listdir("/proc/self/fd"))
    children_before = {p.pid for p in _children()}
    platform = PtracePlatform(Config())
    platform.start(memfile)
    try:
        aspaces = [platform.new_address_space() for _ in range(n_aspaces)]
    except StubError as e:
        platform.close()
        pytest.skip(f"ptrace not permitted here: {e}")
    yield platform, aspaces, Env(platform, memfile, aspaces[0], platform.new_context())
    assert {p.pid for p in _children()} == children_before
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    memfile.close()


def test_close_leaves_no_process_and_no_fd() -> None:
    affinity_before = os.sched_getaffinity(0)
    with _closed_platform(3) as (platform, aspaces, env):
        regs = env.load(mov_eax(39) + SYSCALL)
        assert env.ctx.switch(aspaces[0], regs)[0] is Stop.SYSCALL
        pids = {a.stub.pid for a in aspaces if a.stub}
        assert pids <= {p.pid for p in _children()}
        if platform.cpu is not None:
            assert os.sched_getaffinity(0) == {platform.cpu}
            for pid in pids:
                assert os.sched_getaffinity(pid) == {platform.cpu}
        aspaces[1].release()
        assert aspaces[1].stub is None
        platform.close()
        platform.close()  # idempotent
    assert os.sched_getaffinity(0) == affinity_before


def test_pinning_can_be_turned_off() -> None:
    reason = ptrace_unavailable()
    if reason:
        pytest.skip(f"ptrace platform unavailable: {reason}")
    memfile = MemoryFile(size=1 << 24)
    before = os.sched_getaffinity(0)
    platform = PtracePlatform(Config(), pin_cpu=False)
    platform.start(memfile)
    try:
        assert platform.cpu is None and os.sched_getaffinity(0) == before
    finally:
        platform.close()
        memfile.close()


def test_pin_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRUNSC_PTRACE_PIN", "off")
    assert PtracePlatform(Config()).pin_cpu is False
    monkeypatch.setenv("PYRUNSC_PTRACE_PIN", "on")
    assert PtracePlatform(Config()).pin_cpu is True
    monkeypatch.setenv("PYRUNSC_PTRACE_PIN", "0")
    assert PtracePlatform(Config()).pin_cpu == 0
    monkeypatch.setenv("PYRUNSC_PTRACE_PIN", "cpu1")
    assert PtracePlatform(Config()).pin_cpu == 1
    monkeypatch.delenv("PYRUNSC_PTRACE_PIN")
    assert PtracePlatform(Config()).pin_cpu is True


# (8) A stub thread per context.

LOOP = SYSCALL + b"\xeb\xfc"  # L: syscall; jmp L
#: L: syscall; movdqu [rdi], xmm0; movdqu [rdi+16], xmm15; mov [rdi+32], r12;
#: mov [rdi+40], rbx; mov [rdi+48], r9; jmp L
STORE_STATE = (SYSCALL + b"\xf3\x0f\x7f\x07" + b"\xf3\x44\x0f\x7f\x7f\x10" + b"\x4c\x89\x67\x20"
               + b"\x48\x89\x5f\x28" + b"\x4c\x89\x4f\x30" + b"\xeb\xe6")
SPIN_AT = 0x500000  # a page of JMP_SELF, mapped by _spin_page


def _tids(aspace: PtraceAddressSpace) -> list[int]:
    """The stub's threads as Linux lists them (/proc/PID/task): an unreaped
    thread would still be there."""
    assert aspace.stub is not None
    return aspace.stub.tids()


def _spin_page(env: Env, aspace: PtraceAddressSpace) -> None:
    aspace.map(SPIN_AT, PAGE, env.page(JMP_SELF), RX)


def test_each_context_gets_its_own_stub_thread(env: Env) -> None:
    a = env.aspace
    assert a.stub is not None
    pid = a.stub.pid
    first = env.load(LOOP)
    regs = [env.regs_cls(first.regs, first.fpstate) for _ in range(3)]
    ctxs = [env.ctx, env.platform.new_context(), env.platform.new_context()]
    assert _tids(a) == [pid] and all(c.thread is None for c in ctxs)
    for ctx, r in zip(ctxs, regs, strict=True):
        assert ctx.switch(a, r)[0] is Stop.SYSCALL
    tids = [c.thread for c in ctxs]
    assert tids[0] == pid and len(set(tids)) == 3  # the leader, then two new threads
    assert _tids(a) == sorted(t for t in tids if t is not None) == sorted(a.threads())
    for tid in tids:  # each a thread of the stub, with its seccomp filter
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        assert f"Tgid:\t{pid}\n" in status and "Seccomp:\t2" in status
    for _ in range(3):  # and each keeps its thread
        for ctx, r, tid in zip(ctxs, regs, tids, strict=True):
            assert ctx.switch(a, r)[0] is Stop.SYSCALL and ctx.thread == tid
    # A context gives its thread back when released: the thread ends, reaped.
    ctxs[1].release()
    assert ctxs[1].thread is None
    assert _tids(a) == sorted([pid, tids[2]])  # type: ignore[list-item]
    # The leader cannot end before its process: it waits for the next context.
    ctxs[0].release()
    assert _tids(a) == sorted([pid, tids[2]])  # type: ignore[list-item]
    newcomer = env.platform.new_context()
    assert newcomer.switch(a, regs[0])[0] is Stop.SYSCALL and newcomer.thread == pid
    # A released context can run again, in a new thread.
    assert ctxs[1].switch(a, regs[1])[0] is Stop.SYSCALL
    assert len(_tids(a)) == 3 and ctxs[1].thread not in (pid, tids[2])
    # Releasing the address space ends them all.
    a.release()
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    assert all(c.thread is None for c in (ctxs[1], ctxs[2], newcomer))
    with pytest.raises(StubError):
        ctxs[2].switch(a, regs[2])


def test_a_context_moving_to_another_address_space_gives_its_thread_back(env: Env) -> None:
    a, b = env.aspace, env.platform.new_address_space()
    assert a.stub is not None and b.stub is not None
    regs_a, regs_b = env.load(LOOP), env.load(LOOP, aspace=b)
    stay, move = env.ctx, env.platform.new_context()
    assert stay.switch(a, regs_a)[0] is Stop.SYSCALL
    assert move.switch(a, env.regs_cls(regs_a.regs, regs_a.fpstate))[0] is Stop.SYSCALL
    assert len(_tids(a)) == 2
    assert move.switch(b, regs_b)[0] is Stop.SYSCALL  # as after an execve
    assert move.thread == b.stub.pid and _tids(a) == [a.stub.pid] and _tids(b) == [b.stub.pid]
    # The leader goes back idle when its context moves on, and is taken again.
    assert stay.switch(b, env.regs_cls(regs_b.regs, regs_b.fpstate))[0] is Stop.SYSCALL
    assert len(_tids(b)) == 2 and _tids(a) == [a.stub.pid]
    assert move.switch(a, regs_a)[0] is Stop.SYSCALL and move.thread == a.stub.pid
    assert stay.thread not in (None, b.stub.pid) and _tids(b) == sorted([b.stub.pid, stay.thread])  # type: ignore[list-item]
    third = env.platform.new_context()  # takes b's idle leader: no new thread
    assert third.switch(b, regs_b)[0] is Stop.SYSCALL and third.thread == b.stub.pid and len(_tids(b)) == 2


def test_register_and_fp_state_stay_with_their_thread(env: Env) -> None:
    """Three tasks with distinctive general and vector registers take turns,
    each in its own context, many times (with a mapping change and a new
    context coming in between); each stores its registers at every turn."""
    a = env.aspace
    base = env.load(STORE_STATE)
    tasks = []
    for i in range(3):
        r = env.regs_cls(base.regs, base.fpstate)
        r.rdi = DATA + 0x100 * i
        r.r12, r.rbx, r.r9 = 0x1200 + i, 0xB000 + i, 0x9900 + i
        r.fpstate[160:176] = bytes([0x10 * i + 1]) * 16  # xmm0
        r.fpstate[400:416] = bytes([0x10 * i + 2]) * 16  # xmm15
        tasks.append(r)

    def expected(i: int) -> bytes:
        return (bytes([0x10 * i + 1]) * 16 + bytes([0x10 * i + 2]) * 16
                + struct.pack("<3Q", 0x1200 + i, 0xB000 + i, 0x9900 + i))

    ctxs = [env.ctx, env.platform.new_context()]
    for turn in range(60):
        if turn == 20:
            a.map(DATA + PAGE, PAGE, env.page(), RW)  # injected into the leader
        if turn == 30:
            ctxs.append(env.platform.new_context())  # a clone while the others hold state
        for i, ctx in enumerate(ctxs):
            r = tasks[i]
            r.rax = turn
            assert ctx.switch(a, r)[0] is Stop.SYSCALL
            assert (r.r12, r.rbx, r.r9, r.rdi) == (0x1200 + i, 0xB000 + i, 0x9900 + i, DATA + 0x100 * i)
            if turn > (30 if i == 2 else 0):  # after its first system call
                assert env.data(at=DATA + 0x100 * i, n=56) == expected(i), (turn, i)
    assert len(set(c.thread for c in ctxs)) == 3
    for i, r in enumerate(tasks):
        assert r.fpstate[160:176] == bytes([0x10 * i + 1]) * 16 and r.fpstate[400:416] == bytes([0x10 * i + 2]) * 16


def test_interrupt_reaches_the_running_thread(env: Env) -> None:
    a = env.aspace
    _spin_page(env, a)
    regs_a = env.load(LOOP)
    regs_b = env.regs_cls(regs_a.regs, regs_a.fpstate)
    ctx_a, ctx_b = env.ctx, env.platform.new_context()
    assert ctx_a.switch(a, regs_a)[0] is Stop.SYSCALL
    assert ctx_b.switch(a, regs_b)[0] is Stop.SYSCALL  # ctx_b now has a thread of its own
    assert ctx_b.thread != ctx_a.thread
    regs_b.rip = SPIN_AT
    dog = _watchdog(env, 20)
    try:
        # An interrupt of the other context does not stop this one.
        threading.Timer(0.05, ctx_a.interrupt).start()
        threading.Timer(0.3, ctx_b.interrupt).start()
        t0 = time.monotonic()
        assert ctx_b.switch(a, regs_b) == (Stop.INTERRUPT, None)
        assert 0.25 < time.monotonic() - t0 < 5
        assert regs_b.rip == SPIN_AT
        assert ctx_a.switch(a, regs_a) == (Stop.INTERRUPT, None)  # its own, kept for it
        # Again, with the leader's context spinning while another thread exists.
        regs_a.rip = SPIN_AT
        threading.Timer(0.05, ctx_a.interrupt).start()
        assert ctx_a.switch(a, regs_a) == (Stop.INTERRUPT, None)
        regs_b.rip = CODE
        assert ctx_b.switch(a, regs_b)[0] is Stop.SYSCALL
    finally:
        dog.cancel()


@pytest.mark.parametrize("spinner", ["leader", "thread"])
def test_killed_stub_with_threads_is_an_error_and_all_reaped(env: Env, spinner: str) -> None:
    """SIGKILL ends every thread of a stub: each is reaped, whichever the
    running context waits on (Linux reports the leader's death only after
    the others are reaped)."""
    a = env.aspace
    assert a.stub is not None
    pid = a.stub.pid
    _spin_page(env, a)
    base = env.load(LOOP)
    ctxs = [env.ctx, env.platform.new_context(), env.platform.new_context()]
    regs = [env.regs_cls(base.regs, base.fpstate) for _ in ctxs]
    for ctx, r in zip(ctxs, regs, strict=True):
        assert ctx.switch(a, r)[0] is Stop.SYSCALL
    assert len(_tids(a)) == 3
    i = 0 if spinner == "leader" else 1
    regs[i].rip = SPIN_AT
    threading.Timer(0.05, os.kill, (pid, signal.SIGKILL)).start()
    with pytest.raises(StubError, match="SIGKILL"):
        ctxs[i].switch(a, regs[i])
    assert not Path(f"/proc/{pid}").exists()  # every thread reaped, the leader too
    assert pid not in {p.pid for p in _children()}
    with pytest.raises(StubError):
        ctxs[2 - i].switch(a, regs[2 - i])
    a.release()


def test_interrupt_by_tgkill_without_thread_pidfds(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux before 6.9 has no PIDFD_THREAD: threads are signalled by tgkill."""
    real = os.pidfd_open

    def pidfd_open(pid: int, flags: int = 0) -> int:
        if flags & os.O_EXCL:  # PIDFD_THREAD
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(pid, flags)

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    a = env.aspace
    _spin_page(env, a)
    regs_a = env.load(LOOP)
    regs_b = env.regs_cls(regs_a.regs, regs_a.fpstate)
    ctx_b = env.platform.new_context()
    assert env.ctx.switch(a, regs_a)[0] is Stop.SYSCALL
    assert ctx_b.switch(a, regs_b)[0] is Stop.SYSCALL
    assert a.stub is not None and ctx_b.thread is not None
    assert a.stub.threads[ctx_b.thread].pidfd == -1
    regs_b.rip = SPIN_AT
    dog = _watchdog(env, 20)
    threading.Timer(0.05, ctx_b.interrupt).start()
    assert ctx_b.switch(a, regs_b) == (Stop.INTERRUPT, None)
    dog.cancel()
    ctx_b.release()
    assert len(_tids(a)) == 1


def test_lazy_fp_is_saved_before_a_thread_ends(lazy_env: Env) -> None:
    env = lazy_env
    regs = env.load(LOAD_XMM0 + SYSCALL)
    env.memfile.write(_file_offset(env.aspace, DATA), struct.pack("<Q", 0x6262))
    assert env.ctx.switch(env.aspace, env.regs_cls(regs.regs, regs.fpstate))[0] is Stop.SYSCALL  # the leader
    ctx = env.platform.new_context()
    assert ctx.switch(env.aspace, regs)[0] is Stop.SYSCALL
    assert regs.fp_pull is not None  # type: ignore[attr-defined]
    ctx.release()
    assert len(_tids(env.aspace)) == 1
    assert regs.fp_pull is None  # type: ignore[attr-defined]
    assert regs.fpstate[160:168] == struct.pack("<Q", 0x6262)


def test_close_with_threads_leaves_no_process_and_no_fd() -> None:
    with _closed_platform(2) as (platform, aspaces, env):
        for a in aspaces:
            base = env.load(LOOP, aspace=a)
            for _ in range(3):
                assert platform.new_context().switch(a, env.regs_cls(base.regs, base.fpstate))[0] is Stop.SYSCALL
        assert [len(_tids(a)) for a in aspaces] == [3, 3]
        platform.close()
