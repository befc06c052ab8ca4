"""The ptrace platform (gVisor ``pkg/sentry/platform/ptrace``).

- One :class:`~.stub.Stub` process per address space; application memory is
  the sandbox's memory file, mapped into the stub by injected
  ``mmap(MAP_SHARED|MAP_FIXED)`` system calls (``munmap``, ``mprotect`` too),
  made in the stub's first thread, its *leader* (any stopped thread would do).
- In it, one stub thread per context that runs there. gVisor keeps a stub
  thread per (tracer thread, address space); here one tracer thread serves
  every task, so each context gets its own: a thread holds the general
  registers and the XSAVE image of the task that last ran in it, which is
  its context's task, so threads of one process running in turn switch as
  cheaply as a lone thread (one POKEUSER of rax, no FP write), instead of
  rewriting every register and the XSAVE image at each switch.
- A context's first switch into an address space takes the leader if no
  context holds it, else a new thread: an injected ``clone(CLONE_VM|CLONE_FS|
  CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM)`` in the leader.
  With PTRACE_O_TRACECLONE (and EXITKILL, inherited) the new thread is
  traced by the tracer from its start and stops with SIGSTOP, which its
  first switch suppresses. A context gives its thread back when released
  or when it switches into another address space (after an execve): the
  thread ends by an injected ``exit(0)`` and is reaped, after its task's
  FP image is read out; the leader, which cannot end before its process,
  waits idle for the next context. ``AddressSpace.release`` kills the stub
  (SIGKILL) and reaps every thread of it.
- Waits: each thread is waited for by its tid, but the leader of a stub
  with other threads by the stub's process group (its own: it calls
  setsid), because Linux reports a leader's death only once every other
  thread is reaped. A report for another thread met there is kept for that
  thread (a new thread's first stop) or marks it dead (the stub was
  killed); a thread that dies means the stub was killed, and the whole stub
  is reaped at once. No stub process or thread is ever left a zombie.
- A context switch writes the task's registers, resumes the thread with
  PTRACE_SYSEMU and waits: a system-call stop is a system call (never run by
  the host); a signal-delivery stop is a fault, an interrupt or a stray
  signal, which is always suppressed (the stub never receives a signal).
- Registers go in with PTRACE_SETREGS, or with one PTRACE_POKEUSER of rax
  when the thread holds the rest already (after a system call, 0.8 µs
  less), and come back with PTRACE_GETREGS. The XSAVE image goes in with
  PTRACE_SETREGSET NT_X86_XSTATE only when it differs from what the thread
  holds. It comes back with PTRACE_GETREGSET after every stop, unless the
  Registers class has the lazy-FP hook (``fp_pull``, see :mod:`.lazyfp`):
  then it stays in the thread until read, saving a ptrace call per switch.
- :meth:`PtraceContext.interrupt` sends SIGCHLD to the thread its context
  runs in, through a thread pidfd (``PIDFD_THREAD``, Linux 6.9; tgkill
  before), so no other thread of the stub takes it.
- Every ptrace request comes from one host thread, the *tracer*: the thread
  that called :meth:`PtracePlatform.start`. ``new_address_space``,
  ``AddressSpace.map/unmap/protect`` and ``Context.switch`` must be called
  from it (they raise RuntimeError otherwise), and so must reads of a lazy
  ``fpstate``. ``Context.interrupt``, ``AddressSpace.release`` and
  ``Platform.close`` work from any thread; ``Context.release`` too (from
  another thread its stub thread waits idle until the stub goes).
- By default the tracer thread, and so every stub it starts, is pinned to one
  CPU: a ptrace round trip is then about 4x faster on a small VM.
- A jump into ``[vsyscall]`` (which no process can unmap) would make the host
  run gettimeofday/time/getcpu for the task; the stub's seccomp filter
  (inherited by every thread) traps them and the switch reports a SIGSEGV
  fetch fault at that address instead, as Linux with ``vsyscall=none`` does
  (the kernel may emulate the call).

Reserved addresses: every stub keeps [``STUB_START``, ``STUB_END``) =
[0x7fff_fffe_f000, 0x7fff_ffff_f000) for itself (``PtracePlatform.reserved``);
application mappings must stay below 0x7fff_fffe_f000.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
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
    WALL,
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
    StubThread,
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
_WALL = WALL


class _LazyFP(Protocol):
    """Registers with the lazy-FP hook (see :mod:`.lazyfp`)."""

    fp_pull: Callable[[bytearray], None] | None
    fpstate: bytearray


class _StubState:
    """Per-stub-thread context-switch state: the thread, its buffers (XSAVE
    image and its iovec, siginfo), and where its FP state stands.

    The FP state the thread holds is either
    - ``holder``'s: a Registers (of a type with the lazy-FP hook, see
      :func:`_lazy_fp`) whose image was not read back after its last switch;
      its ``fp_pull`` is :attr:`pull`, which reads it when first asked;
    - or ``shadow``: a copy of the image it was last set to or read as;
    - or unknown (both None).

    ``released`` is set when the thread goes back to no context, for good:
    ended, or its address space released.
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
        "released",
        "segs",
        "shadow",
        "si",
        "si_addr",
        "thread",
        "tracer",
    )

    def __init__(self, thread: StubThread, fpsize: int, tracer: int) -> None:
        self.thread = thread
        self.pid = thread.tid
        self.regs = thread.regs
        self.regs_addr = thread.regs_addr
        self.segs = thread.stub.cs_ss_segs
        self.tracer = tracer
        self.released = False
        self.fpsize = fpsize
        self.fp = ctypes.create_string_buffer(fpsize)
        self.fp_mv = memoryview(self.fp).cast("B")
        self.iov = IOVec(ctypes.addressof(self.fp), fpsize)
        self.iov_addr = ctypes.addressof(self.iov)
        self.si = ctypes.create_string_buffer(SIGINFO_SIZE)
        self.si_addr = ctypes.addressof(self.si)
        self.shadow: bytearray | None = None
        self.holder: _LazyFP | None = None
        self.pull = self._pull  # bound once: its identity marks "the image is in this thread"

    def get_fp(self, into: bytearray) -> None:
        """PTRACE_GETREGSET NT_X86_XSTATE into ``into`` (its first ``fpsize``
        bytes at most); the thread's state is then known to be ``into``."""
        if fast_ptrace(PTRACE_GETREGSET, self.pid, NT_X86_XSTATE, self.iov_addr) == -1:
            self.shadow = None
            _check(PTRACE_GETREGSET, self.pid, NT_X86_XSTATE, self.iov_addr, "PTRACE_GETREGSET NT_X86_XSTATE")
        n = min(len(into), self.fpsize)
        into[:n] = self.fp_mv[:n]
        self.shadow = bytearray(into)

    def set_fp(self, image: bytearray) -> None:
        """PTRACE_SETREGSET NT_X86_XSTATE from ``image``, unless the thread holds it already."""
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
        was read). Tracer thread only; StubError if the thread is gone."""
        if threading.get_ident() != self.tracer:
            raise RuntimeError("a task's FP state was read outside the tracer thread while its stub held it")
        if not self.thread.alive:
            raise StubError(f"stub thread {self.pid} is gone with a task's FP state")
        self.get_fp(into)
        self.holder = None

    def evict(self) -> None:
        """Bring ``holder``'s image out of the thread into its Registers
        (before another image goes in, or the thread goes away)."""
        h = self.holder
        if h is not None:
            if h.fp_pull is self.pull:
                h.fpstate  # noqa: B018 - reading it pulls it (and clears holder)
            else:  # it was replaced meanwhile: what the thread holds is no one's
                self.shadow = None
            self.holder = None

    def drop(self) -> None:
        """The thread is going away: save ``holder``'s image when that is
        possible (tracer thread, thread alive), and unhook it in any case
        (the Registers then keep their previous image)."""
        h = self.holder
        if h is None:
            return
        if threading.get_ident() == self.tracer and self.thread.alive and self.thread.stub.alive:
            with contextlib.suppress(OSError, StubError):
                self.evict()
        if h.fp_pull is self.pull:
            _setattr(h, "fp_pull", None)
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
    """An address space held by one stub process, with a stub thread for each
    context that runs in it.

    ``map``/``unmap``/``protect`` take page-aligned ``addr`` and ``length`` in
    bytes below :data:`~.stub.MAX_USER_ADDRESS` (else ValueError) and cost one
    injected system call each (about 20 µs), made in the stub's leader thread;
    a failing call raises :class:`~.stub.InjectedSyscallError` with Linux's
    errno. Tracer thread only, except :meth:`release`.

    Threads: the leader is the first context's; each further context that
    switches in gets a new thread (:meth:`take_thread`, an injected clone),
    which ends when the context gives it back (:meth:`give_thread`). The
    leader, which cannot end before its process, waits idle for the next
    context instead.
    """

    def __init__(self, platform: PtracePlatform, stub: Stub, fpsize: int) -> None:
        self._platform = platform
        self.stub: Stub | None = stub
        self.pid = stub.pid
        self._fpsize = fpsize
        leader = _StubState(stub.leader, fpsize, platform._tracer)
        #: Every live thread's state, by tid; and those that no context holds.
        self._states: dict[int, _StubState] = {stub.pid: leader}
        self._idle: list[_StubState] = [leader]
        self.prots = _Prots()

    def _live_stub(self) -> Stub:
        stub = self.stub
        if stub is None:
            raise StubError(f"address space of stub {self.pid} was released")
        self._platform._check_thread()
        if not stub.alive:
            raise StubError(f"stub {self.pid} was killed")
        return stub

    def take_thread(self) -> _StubState:
        """A stub thread for a context to run in: an idle one, else a new one.
        Tracer thread only; StubError once released."""
        stub = self._live_stub()
        if self._idle:
            return self._idle.pop()
        st = _StubState(stub.new_thread(), self._fpsize, self._platform._tracer)
        self._states[st.pid] = st
        return st

    def give_thread(self, st: _StubState) -> None:
        """A context is done with ``st``'s thread: it ends (its FP image, if a
        task's, read out first), unless it is the leader, which waits idle.
        From another thread than the tracer, it waits idle too (it ends with
        the stub)."""
        stub = self.stub
        if stub is None or st.released or self._states.get(st.pid) is not st:
            return
        if st.thread is stub.leader or threading.get_ident() != st.tracer:
            self._idle.append(st)
            return
        del self._states[st.pid]
        st.released = True
        st.drop()
        with contextlib.suppress(OSError, StubError):  # a dying stub: kill() reaps it
            stub.end_thread(st.thread)

    def threads(self) -> list[int]:
        """The tids of the stub's threads (the leader first), as the platform
        tracks them."""
        return sorted(self._states, key=lambda tid: (tid != self.pid, tid))

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
        """Kill and reap the stub, every thread of it (SIGKILL, waitpid);
        idempotent, any thread. Task FP images still in the stub's threads
        (lazy FP) are read out first when called from the tracer thread; from
        another thread they are lost (the Registers keep their previous
        image). Contexts that ran here get a new thread on their next switch
        elsewhere."""
        stub, self.stub = self.stub, None
        if stub is None:
            return
        states = list(self._states.values())
        self._states.clear()
        self._idle.clear()
        try:
            for st in states:
                st.released = True
                st.drop()
        finally:
            stub.kill()
            self._platform._aspaces.discard(self)

    def __getstate__(self) -> object:
        raise TypeError("a ptrace address space holds a host process; rebuild it on restore, do not pickle it")


class PtraceContext(Context):
    """Runs tasks in stub threads: its own thread in each address space it
    switches into (gVisor keeps one per tracer thread and address space; here
    one tracer thread serves every context). A switch into an address space
    other than the last one gives the old thread back and takes one there.

    The thread holds the general registers and (lazy FP) the XSAVE image of
    the task that last ran in it, usually this context's own task: its next
    switch then writes only rax, and no FP state."""

    def __init__(self, platform: PtracePlatform) -> None:
        self._platform = platform
        self._tracer = platform._tracer
        self._pending = False
        self._running: StubThread | None = None
        self._mypid = os.getpid()
        #: The address space of the last switch and this context's thread there.
        self._aspace: PtraceAddressSpace | None = None
        self._st: _StubState | None = None

    @property
    def thread(self) -> int | None:
        """The tid of this context's stub thread (in the address space of its
        last switch), None if it has none."""
        st = self._st
        return None if st is None or st.released else st.pid

    def _enter(self, aspace: AddressSpace) -> _StubState:
        """Take a thread in ``aspace``, giving back the one held elsewhere."""
        if not isinstance(aspace, PtraceAddressSpace):
            raise TypeError(f"not a ptrace address space: {aspace!r}")
        old, old_aspace = self._st, self._aspace
        self._st = self._aspace = None
        if old is not None and old_aspace is not None:
            old_aspace.give_thread(old)
        if aspace.stub is None:
            raise StubError("switch into a released address space")
        st = aspace.take_thread()
        self._st, self._aspace = st, aspace
        return st

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
        image stays in the stub thread and ``regs.fp_pull`` fetches it when
        ``fpstate`` is first read (see :mod:`.lazyfp`). Segment selectors are
        always the stub's own (user CS/SS, null DS/ES/FS/GS: gVisor
        ``resetSysemuRegs``); fs_base/gs_base are the task's. The first
        switch into an address space takes a thread there (a new one costs
        an injected clone). Tracer thread only. Raises PtraceError (e.g. EIO
        for a non-canonical fs_base, EINVAL for a bad XSAVE header) and
        StubError if the stub died or was released.
        """
        if threading.get_ident() != self._tracer:
            self._platform._check_thread()
            self._tracer = self._platform._tracer
        st = self._st
        if st is None or aspace is not self._aspace or st.released:
            st = self._enter(aspace)
        thread = st.thread
        self._running = thread
        try:
            if self._pending:
                self._pending = False
                return _INTERRUPTED
            pid = st.pid
            ptrace = fast_ptrace
            r = regs.regs
            # Registers the thread holds already but rax (the usual case after
            # a system call) need one PTRACE_POKEUSER: 0.8 µs less than SETREGS.
            # Not for the ERESTART* codes, which would make Linux rewind rip
            # on a signal: a full SETREGS puts orig_rax = -1 (no system call).
            rax = r[10]
            held = thread.held
            if thread.held_ok and rax not in _ERESTART:
                held[10] = rax
                full = r != held
            else:
                full = True
            if full:
                thread.held_ok = False
                cs, ss, ds, es, fs, gs = st.segs
                _USER_REGS_PACK.pack_into(st.regs, 0, *r[:15], _NO_SYSCALL, r[16], cs, r[18], r[19], ss, r[21],
                                          r[22], ds, es, fs, gs)
                if ptrace(PTRACE_SETREGS, pid, 0, st.regs_addr) == -1:
                    _check(PTRACE_SETREGS, pid, 0, st.regs_addr, "PTRACE_SETREGS", thread)
            elif ptrace(PTRACE_POKEUSER, pid, OFF_RAX, rax) == -1:
                thread.held_ok = False
                _check(PTRACE_POKEUSER, pid, OFF_RAX, rax, "PTRACE_POKEUSER rax", thread)
            lazy = _LAZY_FP.get(type(regs))
            if lazy is None:
                lazy = _lazy_fp(type(regs))
            lregs: _LazyFP = regs  # type: ignore[assignment]  # (when lazy)
            if not lazy:
                if st.holder is not None:
                    st.evict()
                st.set_fp(regs.fpstate)
            elif lregs.fp_pull is not st.pull:  # else its image is in the thread already
                image = regs.fpstate  # (pulled from wherever it is)
                st.evict()
                st.set_fp(image)
            request = PTRACE_SYSEMU_SINGLESTEP if r[18] & _TF else PTRACE_SYSEMU
            wait_id = thread.wait_id
            while True:
                if ptrace(request, pid, 0, 0) == -1:
                    _check(request, pid, 0, 0, "PTRACE_SYSEMU", thread)
                try:
                    p, status = waitpid(wait_id, _WALL)
                    if p != pid:  # another thread's report (see StubThread.wait_id)
                        status = thread.collect(p, status)
                except BaseException as e:
                    # A signal handler raised (KeyboardInterrupt...) or another
                    # thread reaped the stub: leave the thread stopped, or dead.
                    thread.held_ok = False
                    thread.stop_after(e)
                    raise
                if status == _SYSCALL_STATUS:
                    result: tuple[Stop, Fault | None] = _SYSCALL
                    break
                if status & 0xFF != 0x7F:
                    thread.died(status)
                # A signal-delivery stop (or a group-stop: GETSIGINFO says EINVAL).
                if ptrace(PTRACE_GETSIGINFO, pid, 0, st.si_addr) == -1:
                    if errno_of(PTRACE_GETSIGINFO, pid, 0, st.si_addr) == _EINVAL:
                        continue
                    _check(PTRACE_GETSIGINFO, pid, 0, st.si_addr, "PTRACE_GETSIGINFO", thread)
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
                # process, the first SIGSTOP of a new thread resumed before)
                # is dropped: resuming with signal 0 suppresses it.
            if ptrace(PTRACE_GETREGS, pid, 0, st.regs_addr) == -1:
                _check(PTRACE_GETREGS, pid, 0, st.regs_addr, "PTRACE_GETREGS", thread)
            r[:] = held[:] = _USER_REGS_PACK.unpack_from(st.regs)
            thread.held_ok = True
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
        and sends SIGCHLD to the stub thread it runs in (through a thread
        pidfd, so no other thread of the stub takes it). Any thread, or a
        signal handler."""
        self._pending = True
        thread = self._running
        if thread is not None:
            thread.signal(SIGNAL_INTERRUPT)

    def release(self) -> None:
        """Give this context's stub thread back: it ends (the leader of a
        stub waits idle for another context instead). Tracer thread (from
        another, the thread just waits idle until its stub is released)."""
        self._pending = False
        st, aspace = self._st, self._aspace
        self._st = self._aspace = None
        if st is not None and aspace is not None:
            aspace.give_thread(st)

    def __getstate__(self) -> object:
        raise TypeError("a ptrace context belongs to a live platform; create a new one on restore")


def _check(request: int, pid: int, addr: int, data: int, what: str, thread: StubThread | None = None) -> None:
    """After :data:`fast_ptrace` gave -1: raise PtraceError with the errno,
    or StubError if ``thread`` was found dead meanwhile (ESRCH: its death
    was collected while another thread waited)."""
    err = errno_of(request, pid, addr, data)
    if err:
        if thread is not None and err == errno.ESRCH:
            status = thread.stub.stashed.get(pid)
            if not thread.alive or not thread.stub.alive or (status is not None and status & 0xFF != 0x7F):
                raise StubError(f"{what}: stub {thread.stub.pid} thread {pid} is dead")
        raise PtraceError(err, f"{what}, stub thread {pid}: {os.strerror(err)}")


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
    """The ptrace platform: one stub process per address space, one stub
    thread in it per context that runs there.

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
