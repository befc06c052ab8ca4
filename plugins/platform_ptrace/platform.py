"""The ptrace platform (gVisor ``pkg/sentry/platform/ptrace``).

- One :class:`~.stub.Stub` process per address space; application memory is
  the sandbox's memory file, mapped into the stub by injected
  ``mmap(MAP_SHARED|MAP_FIXED)`` system calls (``munmap``, ``mprotect`` too).
- A context switch writes the task's registers, resumes the stub with
  PTRACE_SYSEMU and waits: a system-call stop is a system call (never run by
  the host); a signal-delivery stop is a fault, an interrupt or a stray
  signal, which is always suppressed (the stub never receives a signal).
- Registers go in with PTRACE_SETREGS, or with one PTRACE_POKEUSER of rax
  when the stub holds the rest already (after a system call, 0.8 µs less),
  and come back with PTRACE_GETREGS. The XSAVE image goes in with
  PTRACE_SETREGSET NT_X86_XSTATE only when it differs from what the stub
  holds. It comes back with PTRACE_GETREGSET after every stop, unless the
  Registers class has the lazy-FP hook (``fp_pull``, see :mod:`.lazyfp`):
  then it stays in the stub until read, saving a ptrace call per switch.
- Every ptrace request comes from one host thread, the *tracer*: the thread
  that called :meth:`PtracePlatform.start`. ``new_address_space``,
  ``AddressSpace.map/unmap/protect`` and ``Context.switch`` must be called
  from it (they raise RuntimeError otherwise), and so must reads of a lazy
  ``fpstate``. ``Context.interrupt``, ``AddressSpace.release`` and
  ``Platform.close`` work from any thread.
- By default the tracer thread, and so every stub it starts, is pinned to one
  CPU: a ptrace round trip is then about 4x faster on a small VM.
- A jump into ``[vsyscall]`` (which no process can unmap) would make the host
  run gettimeofday/time/getcpu for the task; the stub's seccomp filter traps
  them and the switch reports a SIGSEGV fetch fault at that address instead,
  as Linux with ``vsyscall=none`` does (the kernel may emulate the call).

Reserved addresses: every stub keeps [``STUB_START``, ``STUB_END``) =
[0x7fff_fffe_f000, 0x7fff_ffff_f000) for itself (``PtracePlatform.reserved``);
application mappings must stay below 0x7fff_fffe_f000.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import os
import platform as host
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar, Protocol

from pyrunsc.core.platform import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace, Context, Fault, Platform, Stop

from .ptrace import (
    NT_X86_XSTATE,
    OFF_RAX,
    PTRACE_GETREGS,
    PTRACE_GETREGSET,
    PTRACE_GETSIGINFO,
    PTRACE_POKEUSER,
    PTRACE_SETREGS,
    PTRACE_SETREGSET,
    PTRACE_SYSEMU,
    PTRACE_SYSEMU_SINGLESTEP,
    SEGV_ACCERR,
    SIGINFO_HEAD,
    SIGINFO_PID,
    SIGINFO_SIZE,
    SYSCALL_STOP,
    IOVec,
    PtraceError,
    current_cpu,
    errno_of,
    fast_ptrace,
    xstate_size,
)
from .stub import (
    MAP_FIXED,
    MAP_SHARED,
    MAX_USER_ADDRESS,
    PAGE_SIZE,
    STUB_END,
    STUB_MEMFD,
    STUB_START,
    SYS_MMAP,
    SYS_MPROTECT,
    SYS_MUNMAP,
    InjectedSyscallError,
    Stub,
    StubError,
    open_stub_elf,
)

if TYPE_CHECKING:
    from pyrunsc.core.arch import Registers
    from pyrunsc.core.config import Config
    from pyrunsc.core.mm.memfile import MemoryFile

YAMA_PTRACE_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"

#: Environment switch for CPU pinning when the platform is built from a Config:
#: ``off`` (no pinning), ``on`` (the default: the CPU the tracer runs on) or a CPU number.
PIN_ENV = "PYRUNSC_PTRACE_PIN"

#: The signal :meth:`PtraceContext.interrupt` sends to a running stub (gVisor's
#: ``platform.SignalInterrupt``): ignored by default, should it ever be delivered.
SIGNAL_INTERRUPT = int(signal.SIGCHLD)

#: Signals that a fault raises synchronously (reported when the kernel sent them,
#: ``si_code > 0``).
FAULT_SIGNALS = frozenset(int(s) for s in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                                          signal.SIGTRAP, signal.SIGSYS))

_USER_REGS_PACK = struct.Struct("<27Q")
_NO_SYSCALL = 0xFFFF_FFFF_FFFF_FFFF
_TF = 0x100  # EFLAGS trap flag: single-stepping
_EINVAL = 22
SYS_SECCOMP = 1  # si_code of a seccomp SIGSYS
SEGV_MAPERR = 1
#: The x86-64 vsyscall page, which no stub can unmap.
VSYSCALL_ADDR = 0xFFFF_FFFF_FF60_0000
_INTERRUPTED: tuple[Stop, Fault | None] = (Stop.INTERRUPT, None)
_SYSCALL: tuple[Stop, Fault | None] = (Stop.SYSCALL, None)
_SYSCALL_STATUS = SYSCALL_STOP << 8 | 0x7F  # the wait status of a SYSEMU stop
#: rax values (-ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK)
#: with which Linux restarts a system call when orig_rax >= 0.
_ERESTART = frozenset((1 << 64) - e for e in (512, 513, 514, 516))
_setattr = object.__setattr__
waitpid = os.waitpid


class _LazyFP(Protocol):
    """Registers with the lazy-FP hook (see :mod:`.lazyfp`)."""

    fp_pull: Callable[[bytearray], None] | None
    fpstate: bytearray


class _StubState:
    """Per-stub context-switch state: the stub, its buffers (XSAVE image and
    its iovec, siginfo), and where its FP state stands.

    The FP state the stub holds is either
    - ``holder``'s: a Registers (of a type with the lazy-FP hook, see
      :func:`_lazy_fp`) whose image was not read back after its last switch;
      its ``fp_pull`` is :attr:`pull`, which reads it when first asked;
    - or ``shadow``: a copy of the image it was last set to or read as;
    - or unknown (both None).
    """

    __slots__ = (
        "fp",
        "fp_mv",
        "fpsize",
        "holder",
        "iov",
        "iov_addr",
        "pid",
        "pull",
        "regs",
        "regs_addr",
        "segs",
        "shadow",
        "si",
        "si_addr",
        "stub",
        "tracer",
    )

    def __init__(self, stub: Stub, fpsize: int, tracer: int) -> None:
        self.stub = stub
        self.pid = stub.pid
        self.regs = stub.regs
        self.regs_addr = stub.regs_addr
        self.segs = stub.cs_ss_segs
        self.tracer = tracer
        self.fpsize = fpsize
        self.fp = ctypes.create_string_buffer(fpsize)
        self.fp_mv = memoryview(self.fp).cast("B")
        self.iov = IOVec(ctypes.addressof(self.fp), fpsize)
        self.iov_addr = ctypes.addressof(self.iov)
        self.si = ctypes.create_string_buffer(SIGINFO_SIZE)
        self.si_addr = ctypes.addressof(self.si)
        self.shadow: bytearray | None = None
        self.holder: _LazyFP | None = None
        self.pull = self._pull  # bound once: its identity marks "the image is in this stub"

    def get_fp(self, into: bytearray) -> None:
        """PTRACE_GETREGSET NT_X86_XSTATE into ``into`` (its first ``fpsize``
        bytes at most); the stub's state is then known to be ``into``."""
        if fast_ptrace(PTRACE_GETREGSET, self.pid, NT_X86_XSTATE, self.iov_addr) == -1:
            self.shadow = None
            _check(PTRACE_GETREGSET, self.pid, NT_X86_XSTATE, self.iov_addr, "PTRACE_GETREGSET NT_X86_XSTATE")
        n = min(len(into), self.fpsize)
        into[:n] = self.fp_mv[:n]
        self.shadow = bytearray(into)

    def set_fp(self, image: bytearray) -> None:
        """PTRACE_SETREGSET NT_X86_XSTATE from ``image``, unless the stub holds it already."""
        if image == self.shadow:
            return
        n = min(len(image), self.fpsize)
        self.fp_mv[:n] = image[:n]
        if fast_ptrace(PTRACE_SETREGSET, self.pid, NT_X86_XSTATE, self.iov_addr) == -1:
            self.shadow = None
            _check(PTRACE_SETREGSET, self.pid, NT_X86_XSTATE, self.iov_addr, "PTRACE_SETREGSET NT_X86_XSTATE")
        self.shadow = bytearray(image)

    def _pull(self, into: bytearray) -> None:
        """The lazy-FP hook: ``holder``'s image is asked for (Registers.fpstate
        was read). Tracer thread only; StubError if the stub is gone."""
        if threading.get_ident() != self.tracer:
            raise RuntimeError("a task's FP state was read outside the tracer thread while its stub held it")
        if not self.stub.alive:
            raise StubError(f"stub {self.pid} is gone with a task's FP state")
        self.get_fp(into)
        self.holder = None

    def evict(self) -> None:
        """Bring ``holder``'s image out of the stub into its Registers (before
        another image goes in, or the stub goes away)."""
        h = self.holder
        if h is not None:
            if h.fp_pull is self.pull:
                h.fpstate  # noqa: B018 - reading it pulls it (and clears holder)
            else:  # it was replaced meanwhile: what the stub holds is no one's
                self.shadow = None
            self.holder = None


#: Per Registers class: does it have the lazy-FP hook ``fp_pull``?
_LAZY_FP: dict[type, bool] = {}


def _lazy_fp(cls: type) -> bool:
    """Whether Registers of class ``cls`` support lazy FP state: a ``fp_pull``
    attribute (None, or a callable that fills the image it is given) that the
    ``fpstate`` getter calls (once, then clears) before returning the image,
    and that assigning ``fpstate`` clears. See the package docs."""
    lazy = _LAZY_FP.get(cls)
    if lazy is None:
        lazy = _LAZY_FP[cls] = hasattr(cls, "fp_pull")
    return lazy


class _Prots:
    """What is mapped in a stub: disjoint [start, end) ranges with their prot,
    kept sorted (the stub's address space is only ever changed by us)."""

    __slots__ = ("ends", "prots", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.prots: list[int] = []

    def at(self, addr: int) -> int | None:
        """The prot of the page holding ``addr``, None if unmapped."""
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and self.ends[i] > addr:
            return self.prots[i]
        return None

    def clear(self, lo: int, hi: int) -> bool:
        """Forget [lo, hi); whether anything was mapped there."""
        i = bisect.bisect_right(self.starts, lo) - 1
        if i < 0 or self.ends[i] <= lo:
            i += 1
        j = i
        while j < len(self.starts) and self.starts[j] < hi:
            j += 1
        if i == j:
            return False
        keep_s: list[int] = []
        keep_e: list[int] = []
        keep_p: list[int] = []
        if self.starts[i] < lo:
            keep_s.append(self.starts[i])
            keep_e.append(lo)
            keep_p.append(self.prots[i])
        if self.ends[j - 1] > hi:
            keep_s.append(hi)
            keep_e.append(self.ends[j - 1])
            keep_p.append(self.prots[j - 1])
        self.starts[i:j], self.ends[i:j], self.prots[i:j] = keep_s, keep_e, keep_p
        return True

    def set(self, lo: int, hi: int, prot: int) -> None:
        self.clear(lo, hi)
        i = bisect.bisect_left(self.starts, lo)
        self.starts.insert(i, lo)
        self.ends.insert(i, hi)
        self.prots.insert(i, prot)
        # Merge with equal neighbours.
        if i + 1 < len(self.starts) and self.starts[i + 1] == hi and self.prots[i + 1] == prot:
            self.ends[i] = self.ends[i + 1]
            del self.starts[i + 1], self.ends[i + 1], self.prots[i + 1]
        if i > 0 and self.ends[i - 1] == lo and self.prots[i - 1] == prot:
            self.ends[i - 1] = self.ends[i]
            del self.starts[i], self.ends[i], self.prots[i]

    def runs(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The maximal mapped stretches of [lo, hi), whatever their prots."""
        out: list[tuple[int, int]] = []
        i = bisect.bisect_right(self.starts, lo) - 1
        if i < 0 or self.ends[i] <= lo:
            i += 1
        while i < len(self.starts) and self.starts[i] < hi:
            s, e = max(self.starts[i], lo), min(self.ends[i], hi)
            if out and out[-1][1] == s:
                out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
            i += 1
        return out

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(zip(self.starts, self.ends, self.prots, strict=True))


def _check_range(addr: int, length: int) -> None:
    if addr % PAGE_SIZE or length % PAGE_SIZE or length <= 0 or addr < 0:
        raise ValueError(f"range {addr:#x}+{length:#x} is not page-aligned and non-empty")
    if addr + length > MAX_USER_ADDRESS:
        raise ValueError(
            f"range {addr:#x}+{length:#x} reaches the stub's reserved range "
            f"[{STUB_START:#x}, {STUB_END:#x}) or beyond")


class PtraceAddressSpace(AddressSpace):
    """An address space held by one stub process.

    ``map``/``unmap``/``protect`` take page-aligned ``addr`` and ``length`` in
    bytes below :data:`~.stub.MAX_USER_ADDRESS` (else ValueError) and cost one
    injected system call each (about 20 µs); a failing call raises
    :class:`~.stub.InjectedSyscallError` with Linux's errno. Tracer thread only,
    except :meth:`release`.
    """

    def __init__(self, platform: PtracePlatform, stub: Stub, fpsize: int) -> None:
        self._platform = platform
        self.stub: Stub | None = stub
        self.state: _StubState | None = _StubState(stub, fpsize, platform._tracer)
        self.prots = _Prots()
        self.pid = stub.pid

    def _live_stub(self) -> Stub:
        stub = self.stub
        if stub is None:
            raise StubError(f"address space of stub {self.pid} was released")
        self._platform._check_thread()
        return stub

    def map(self, addr: int, length: int, offset: int, prot: int) -> None:
        """``mmap(addr, length, prot, MAP_SHARED|MAP_FIXED, memfile, offset)`` in
        the stub: replaces whatever was mapped there (Linux MAP_FIXED). If it
        fails, the range is unmapped (what was there may be gone already)."""
        _check_range(addr, length)
        if offset % PAGE_SIZE or offset < 0:
            raise ValueError(f"memory-file offset {offset:#x} is not page-aligned")
        if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
            raise ValueError(f"bad prot {prot:#x}")
        stub = self._live_stub()
        try:
            stub.syscall(SYS_MMAP, addr, length, prot, MAP_SHARED | MAP_FIXED, STUB_MEMFD, offset)
        except InjectedSyscallError:
            with contextlib.suppress(InjectedSyscallError):
                stub.syscall(SYS_MUNMAP, addr, length)
            self._resync()
            raise
        self.prots.set(addr, addr + length, prot)

    def unmap(self, addr: int, length: int) -> None:
        """``munmap(addr, length)``: holes in the range are fine (as in Linux);
        nothing is injected if nothing is mapped there."""
        _check_range(addr, length)
        stub = self._live_stub()
        if self.prots.runs(addr, addr + length):
            try:
                stub.syscall(SYS_MUNMAP, addr, length)
            except InjectedSyscallError:
                self._resync()
                raise
            self.prots.clear(addr, addr + length)

    def protect(self, addr: int, length: int, prot: int) -> None:
        """``mprotect`` on the mapped stretches of the range, one call each;
        unmapped pages in it stay unmapped (Linux would fail with ENOMEM, but
        the kernel's VMAs, not the platform's mappings, decide that)."""
        _check_range(addr, length)
        if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
            raise ValueError(f"bad prot {prot:#x}")
        stub = self._live_stub()
        for lo, hi in self.prots.runs(addr, addr + length):
            try:
                stub.syscall(SYS_MPROTECT, lo, hi - lo, prot)
            except InjectedSyscallError:
                self._resync()
                raise
            self.prots.set(lo, hi, prot)

    def _resync(self) -> None:
        """Re-read what is mapped from the stub's /proc/PID/maps (after a
        failed call, which Linux may have applied in part)."""
        prots = _Prots()
        if self.stub is not None:
            for line in self.stub.maps():
                rng, perms = line.split()[:2]
                lo, hi = (int(x, 16) for x in rng.split("-"))
                if hi <= MAX_USER_ADDRESS:
                    prot = (PROT_READ if perms[0] == "r" else 0) | (PROT_WRITE if perms[1] == "w" else 0)
                    prots.set(lo, hi, prot | (PROT_EXEC if perms[2] == "x" else 0))
        self.prots = prots

    def mappings(self) -> list[tuple[int, int, int]]:
        """(start, end, prot) of what is mapped, as the platform tracks it."""
        return list(self.prots)

    def release(self) -> None:
        """Kill and reap the stub (SIGKILL, waitpid); idempotent, any thread.
        A task FP image still in the stub (lazy FP) is read out first when
        called from the tracer thread; from another thread it is lost (the
        Registers keep their previous image)."""
        stub, self.stub = self.stub, None
        st, self.state = self.state, None
        if stub is None:
            return
        try:
            if st is not None and st.holder is not None:
                h = st.holder
                if threading.get_ident() == st.tracer and stub.alive:
                    with contextlib.suppress(OSError, StubError):
                        st.evict()
                if h.fp_pull is st.pull:
                    object.__setattr__(h, "fp_pull", None)
                st.holder = None
        finally:
            stub.kill()
            self._platform._aspaces.discard(self)

    def __getstate__(self) -> object:
        raise TypeError("a ptrace address space holds a host process; rebuild it on restore, do not pickle it")


class PtraceContext(Context):
    """Runs tasks in stubs. Contexts share their address space's stub thread:
    a switch sets every register, so whichever task ran there last does not
    matter (gVisor keeps one stub thread per tracer thread the same way)."""

    def __init__(self, platform: PtracePlatform) -> None:
        self._platform = platform
        self._tracer = platform._tracer
        self._pending = False
        self._running: Stub | None = None
        self._mypid = os.getpid()

    def switch(self, aspace: AddressSpace, regs: Registers) -> tuple[Stop, Fault | None]:
        """Run ``regs`` in ``aspace`` (a :class:`PtraceAddressSpace`) until:

        - a system call: (Stop.SYSCALL, None); ``regs.orig_rax`` is its number,
          ``regs.rax`` is -ENOSYS (as at Linux's syscall entry), ``regs.rip`` is
          past the ``syscall`` instruction, rcx/r11 hold rip/rflags;
        - a fault: (Stop.FAULT, Fault) with the signal Linux sends
          (SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGTRAP/SIGSYS), ``si_code``, ``si_addr``
          and for SIGSEGV ``exec``/``write`` (see :meth:`_fault`); ``regs.rip``
          is the faulting instruction;
        - :meth:`interrupt`: (Stop.INTERRUPT, None) with the state at that point,
          or at once without running if the interrupt came before.

        ``regs.regs`` is updated in place. So is ``regs.fpstate`` (the XSAVE
        image), unless the Registers class has the lazy-FP hook: then the
        image stays in the stub and ``regs.fp_pull`` fetches it when
        ``fpstate`` is first read (see :mod:`.lazyfp`). Segment selectors are
        always the stub's own (user CS/SS, null DS/ES/FS/GS: gVisor
        ``resetSysemuRegs``); fs_base/gs_base are the task's. Tracer thread
        only. Raises PtraceError (e.g. EIO for a non-canonical fs_base, EINVAL
        for a bad XSAVE header) and StubError if the stub died or was released.
        """
        if threading.get_ident() != self._tracer:
            self._platform._check_thread()
            self._tracer = self._platform._tracer
        st: _StubState | None = aspace.state  # type: ignore[attr-defined]
        if st is None:
            raise StubError("switch into a released address space")
        self._running = st.stub
        try:
            if self._pending:
                self._pending = False
                return _INTERRUPTED
            pid = st.pid
            ptrace = fast_ptrace
            stub = st.stub
            r = regs.regs
            # Registers the stub holds already but rax (the usual case after a
            # system call) need one PTRACE_POKEUSER: 0.8 µs less than SETREGS.
            # Not for the ERESTART* codes, which would make Linux rewind rip
            # on a signal: a full SETREGS puts orig_rax = -1 (no system call).
            rax = r[10]
            held = stub.held
            if stub.held_ok and rax not in _ERESTART:
                held[10] = rax
                full = r != held
            else:
                full = True
            if full:
                stub.held_ok = False
                cs, ss, ds, es, fs, gs = st.segs
                _USER_REGS_PACK.pack_into(st.regs, 0, *r[:15], _NO_SYSCALL, r[16], cs, r[18], r[19], ss, r[21],
                                          r[22], ds, es, fs, gs)
                if ptrace(PTRACE_SETREGS, pid, 0, st.regs_addr) == -1:
                    _check(PTRACE_SETREGS, pid, 0, st.regs_addr, "PTRACE_SETREGS")
            elif ptrace(PTRACE_POKEUSER, pid, OFF_RAX, rax) == -1:
                stub.held_ok = False
                _check(PTRACE_POKEUSER, pid, OFF_RAX, rax, "PTRACE_POKEUSER rax")
            lazy = _LAZY_FP.get(type(regs))
            if lazy is None:
                lazy = _lazy_fp(type(regs))
            lregs: _LazyFP = regs  # type: ignore[assignment]  # (when lazy)
            if not lazy:
                if st.holder is not None:
                    st.evict()
                st.set_fp(regs.fpstate)
            elif lregs.fp_pull is not st.pull:  # else its image is in the stub already
                image = regs.fpstate  # (pulled from wherever it is)
                st.evict()
                st.set_fp(image)
            request = PTRACE_SYSEMU_SINGLESTEP if r[18] & _TF else PTRACE_SYSEMU
            while True:
                if ptrace(request, pid, 0, 0) == -1:
                    _check(request, pid, 0, 0, "PTRACE_SYSEMU")
                try:
                    _, status = waitpid(pid, 0)
                except BaseException as e:
                    # A signal handler raised (KeyboardInterrupt...) or another
                    # thread reaped the stub: leave the stub stopped, or dead.
                    stub.held_ok = False
                    stub.stop_after(e)
                    raise
                if status == _SYSCALL_STATUS:
                    result: tuple[Stop, Fault | None] = _SYSCALL
                    break
                if status & 0xFF != 0x7F:
                    st.stub._died(status)
                # A signal-delivery stop (or a group-stop: GETSIGINFO says EINVAL).
                if ptrace(PTRACE_GETSIGINFO, pid, 0, st.si_addr) == -1:
                    if errno_of(PTRACE_GETSIGINFO, pid, 0, st.si_addr) == _EINVAL:
                        continue
                    _check(PTRACE_GETSIGINFO, pid, 0, st.si_addr, "PTRACE_GETSIGINFO")
                signo, _errno, code, addr = SIGINFO_HEAD.unpack_from(st.si)
                if code > 0 and signo in FAULT_SIGNALS:
                    result = (Stop.FAULT, None)
                    break
                if (signo == SIGNAL_INTERRUPT and code <= 0 and self._pending
                        and SIGINFO_PID.unpack_from(st.si)[0] == self._mypid):
                    self._pending = False
                    result = _INTERRUPTED
                    break
                # Anything else (a stale interrupt, a signal from another
                # process) is dropped: resuming with signal 0 suppresses it.
            if ptrace(PTRACE_GETREGS, pid, 0, st.regs_addr) == -1:
                _check(PTRACE_GETREGS, pid, 0, st.regs_addr, "PTRACE_GETREGS")
            r[:] = held[:] = _USER_REGS_PACK.unpack_from(st.regs)
            stub.held_ok = True
            if lazy:
                st.holder = lregs
                st.shadow = None
                _setattr(regs, "fp_pull", st.pull)
            else:
                st.get_fp(regs.fpstate)
            if result is _SYSCALL or result is _INTERRUPTED:
                return result
            return (Stop.FAULT, self._fault(aspace, regs, signo, code, addr))  # type: ignore[arg-type]
        finally:
            self._running = None

    @staticmethod
    def _fault(aspace: PtraceAddressSpace, regs: Registers, signo: int, code: int, addr: int) -> Fault:
        """The Fault for a kernel-sent signal. For SIGSEGV, ptrace does not show
        the page-fault error code (x86 puts it only in the signal frame's
        ``sigcontext.err``; siginfo has no trap number for page faults), so:

        - ``exec`` when ``si_addr == rip``, or when ``si_addr`` starts a page
          less than 16 bytes after ``rip`` (an instruction crossing into it);
          this is gVisor's rule, plus the crossing case;
        - ``write`` when it is SEGV_ACCERR on a page mapped readable (a read
          would not have faulted) and not an instruction fetch;
        - otherwise ``write`` is False: for SEGV_MAPERR and PROT_NONE pages a
          read and a write look the same. A kernel that maps the page
          read-only then sees a write fault again as ACCERR, now known.
        """
        if signo == signal.SIGSYS and code == SYS_SECCOMP and addr >> 12 == VSYSCALL_ADDR >> 12:
            # The stub's seccomp filter trapped a jump into [vsyscall]; Linux
            # had already emulated the `ret`. Undo it and report the fetch
            # fault that Linux without vsyscall emulation gives (gVisor
            # ``patchSignalInfo``): the kernel emulates the call or kills.
            regs.rip = addr
            regs.rsp = regs.rsp - 8
            return Fault(signal.SIGSEGV, SEGV_MAPERR, addr, exec=True)
        fault = Fault(signo, code, addr)
        if signo == signal.SIGSEGV:
            rip = regs.rip
            fetch = addr == rip or (addr % PAGE_SIZE == 0 and 0 < addr - rip < 16)
            fault.exec = fetch
            if code == SEGV_ACCERR and not fetch:
                prot = aspace.prots.at(addr)
                if prot is not None and prot & PROT_READ:
                    if prot & PROT_WRITE:
                        fault.exec = True  # reads and writes were allowed
                    else:
                        fault.write = True
        return fault

    def interrupt(self) -> None:
        """Make the running (or next) switch return Stop.INTERRUPT: sets a flag
        and sends SIGCHLD to the stub it runs in, through a pidfd. Any thread,
        or a signal handler."""
        self._pending = True
        stub = self._running
        if stub is not None:
            stub.signal(SIGNAL_INTERRUPT)

    def release(self) -> None:
        """Nothing to free: contexts own no host resources."""
        self._pending = False

    def __getstate__(self) -> object:
        raise TypeError("a ptrace context belongs to a live platform; create a new one on restore")


def _check(request: int, pid: int, addr: int, data: int, what: str) -> None:
    """After :data:`fast_ptrace` gave -1: raise PtraceError with the errno."""
    err = errno_of(request, pid, addr, data)
    if err:
        raise PtraceError(err, f"{what}, stub {pid}: {os.strerror(err)}")


def _pin_from_env() -> bool | int:
    value = os.environ.get(PIN_ENV, "on").strip().lower()
    if value in ("off", "no", "false"):
        return False
    if value in ("on", "yes", "true", ""):
        return True
    if value.startswith("cpu"):
        value = value[3:]
    return int(value)


class PtracePlatform(Platform):
    """The ptrace platform: one stub process per address space.

    ``pin_cpu``: True pins the tracer thread (and so its stubs) to the CPU it
    runs on at :meth:`start`, an int pins to that CPU, False does not pin;
    None (what a Config-built platform gets) reads ``PYRUNSC_PTRACE_PIN``
    (``on``, ``off`` or a CPU number; default on). :meth:`close` restores the
    tracer thread's previous affinity.
    """

    name = "ptrace"
    #: Address ranges no application mapping may use ([start, end) bytes);
    #: the kernel reads this into ``Layout.reserved``.
    reserved: ClassVar[list[tuple[int, int]]] = [(STUB_START, STUB_END)]

    @classmethod
    def probe(cls) -> str | None:
        if host.system() != "Linux" or host.machine() != "x86_64":
            return f"needs Linux on x86_64, this is {host.system()} on {host.machine()}"
        try:
            with open(YAMA_PTRACE_SCOPE) as f:
                scope = f.read().strip()
        except OSError:
            return None
        # Scope 3 forbids ptrace altogether; scope 2 needs CAP_SYS_PTRACE,
        # which root has. A tracer of its own children passes 0 and 1.
        if scope == "3" or (scope == "2" and os.geteuid() != 0):
            return f"{YAMA_PTRACE_SCOPE} is {scope}, which forbids tracing"
        return None

    def __init__(self, config: Config, *, pin_cpu: bool | int | None = None) -> None:
        super().__init__(config)
        self.pin_cpu: bool | int = _pin_from_env() if pin_cpu is None else pin_cpu
        self.cpu: int | None = None
        self._tracer = 0
        self._tracer_tid = 0
        self._old_affinity: set[int] | None = None
        self._elf_fd = -1
        self._elf_path = ""
        self._memfile: MemoryFile | None = None
        self._fpsize = 0
        self._aspaces: set[PtraceAddressSpace] = set()

    def start(self, memfile: MemoryFile) -> None:
        """Make the calling thread the tracer; pin it (see ``pin_cpu``); put the
        stub image in a memfd. Stubs map ``memfile.fd`` as their fd 0."""
        if self._tracer:
            raise RuntimeError("PtracePlatform.start called twice")
        self._memfile = memfile
        self._tracer = threading.get_ident()
        self._tracer_tid = threading.get_native_id()
        if self.pin_cpu is not False:
            self._old_affinity = os.sched_getaffinity(0)
            cpu = current_cpu() if self.pin_cpu is True else int(self.pin_cpu)
            if cpu not in self._old_affinity:
                cpu = min(self._old_affinity)
            os.sched_setaffinity(0, {cpu})
            self.cpu = cpu
        self._elf_fd = open_stub_elf()
        self._elf_path = f"/proc/self/fd/{self._elf_fd}"

    def _check_thread(self) -> None:
        if not self._tracer:
            raise RuntimeError("PtracePlatform.start has not been called")
        if threading.get_ident() != self._tracer:
            raise RuntimeError(
                "ptrace platform used from a thread other than the one that called start(): "
                "Linux accepts ptrace requests only from the tracer thread")

    def new_address_space(self) -> PtraceAddressSpace:
        """A new stub (about 1 ms): its address space is empty but for the
        reserved range. Tracer thread only; StubError if it cannot start
        (e.g. EPERM: ptrace not permitted)."""
        self._check_thread()
        if self._memfile is None or self._elf_fd < 0:
            raise RuntimeError("platform is closed")
        stub = Stub.spawn(self._elf_path, self._memfile.fd)
        try:
            if not self._fpsize:
                self._fpsize = xstate_size(stub.pid)
            aspace = PtraceAddressSpace(self, stub, self._fpsize)
        except BaseException:
            stub.kill()
            raise
        self._aspaces.add(aspace)
        return aspace

    def new_context(self) -> PtraceContext:
        return PtraceContext(self)

    @property
    def xstate_size(self) -> int:
        """Bytes of the host's XSAVE image (0 before the first address space)."""
        return self._fpsize

    def close(self) -> None:
        """Kill and reap every stub, close the stub image's fd, and restore the
        tracer thread's CPU affinity. Idempotent; any thread."""
        for aspace in list(self._aspaces):
            aspace.release()
        if self._elf_fd >= 0:
            os.close(self._elf_fd)
            self._elf_fd = -1
        if self._old_affinity is not None:
            with contextlib.suppress(OSError):  # the tracer thread may be gone
                os.sched_setaffinity(self._tracer_tid, self._old_affinity)
            self._old_affinity = None
        self._memfile = None

    def __getstate__(self) -> object:
        raise TypeError("the ptrace platform holds host processes; create a new one on restore")
