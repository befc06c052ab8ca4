"""The KVM platform (gVisor ``pkg/sentry/platform/kvm``, adapted to a sentry
that stays on the host and to PVM).

- One VM per platform. Guest-physical memory is the pool (kernel pages and
  page tables, see :mod:`.machine`) plus the memory file at ``MEM_BASE +
  offset``, registered with KVM_SET_USER_MEMORY_REGION in 256 MiB slots as
  address spaces first map them: application memory is shared, never copied.
- An address space is a set of 4-level page tables (:class:`.machine.PageTables`)
  with real permissions (user, read-only, NX via EFER.NXE). A change that
  removes or reduces a present translation marks the VM for a flush, done
  before the next KVM_RUN by deleting and re-adding the pool's memory slot:
  KVM then zaps every shadow page / EPT entry and flushes guest TLBs (PVM
  uses a shadow MMU, which does not see page-table writes made from the host).
- A context is one vCPU. ``switch`` writes the task's registers into the
  kvm_run sync-regs area (KVM_CAP_SYNC_REGS: no GET/SET_REGS ioctl). How the
  vCPU then gets to user mode depends on the entry (:mod:`.machine`):

  - with :class:`~.machine.PvmPortEntry` (PVM's default) the registers are
    simply the task's (rip = its rip, IF set): a vCPU stopped in user mode (a
    system call's KVM_EXIT_IO, an interrupt) resumes there with nothing else
    written; one in ring 0 (an exception stub, a new vCPU) or with another
    CR3 or FS/GS base also gets the user-mode sregs through the sync sregs
    (KVM_SYNC_X86_SREGS; no SET_SREGS or SET_MSRS ioctl);
  - otherwise an ``iretq`` frame goes onto the vCPU's ring-0 stack and the
    vCPU enters at ``RESUME`` (``add rsp,16; iretq``), after KVM_SET_SREGS
    when the CR3 changed (KVM_SET_MSRS when only FS/GS did).

  Exceptions come back as a ``hlt`` in ring 0 after an exception stub
  pushed its vector (KVM_EXIT_HLT); system calls as the entry says.
- FP state: KVM_SET_XSAVE when the task's image differs from what the vCPU
  holds; after a stop the image stays in the vCPU until read (``fp_pull``).
- fs_base/gs_base: user code cannot change them (CR4.FSGSBASE is off); they
  are set with the sregs, or KVM_SET_MSRS (see above), when they change.
- ``interrupt()`` sets ``immediate_exit`` in kvm_run and sends
  :data:`SIGNAL_INTERRUPT` to the thread in KVM_RUN (gVisor's
  ``bluepill``/``SignalInterrupt`` scheme): KVM_RUN returns EINTR. That
  stops the vCPU between two of KVM's steps, which may be part way through
  an event (a PVM ``syscall`` that has jumped to LSTAR but not yet raised its
  #GP, an exception KVM has queued, an exception stub). Stop.INTERRUPT is
  returned only where KVM says an interrupt could be taken
  (``ready_for_interrupt_injection``: user mode, at an instruction boundary,
  nothing pending); elsewhere the vCPU runs on with an interrupt window
  requested, to that point (KVM_EXIT_IRQ_WINDOW_OPEN) or to its stub's
  ``hlt``, whose stop is reported with the interrupt still pending. gVisor
  gets the same guarantee by injecting an interrupt through the guest IDT
  once the window is open.

Threads: any thread may call ``switch``, one at a time per context; a vCPU
may move between host threads. ``interrupt`` works from any thread or a
signal handler. :meth:`KVMPlatform.start` installs a no-op Python handler for
:data:`SIGNAL_INTERRUPT` when there is none, which needs the main thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import signal
import struct
import threading
from typing import TYPE_CHECKING, ClassVar

from pyrunsc.core.arch import Registers
from pyrunsc.core.platform import PROT_EXEC, PROT_READ, AddressSpace, Context, Fault, Platform, Stop

from . import kvm
from .kvm import KVMError
from .machine import (
    CR0,
    CR4,
    EFER,
    ENTRIES,
    EXIT_PORT,
    FRAME,
    GDT_LIMIT,
    GDT_PAGE,
    GDT_VA,
    IDT_PAGE,
    IDT_VA,
    KERNEL_CS,
    KERNEL_DS,
    KERNEL_END,
    KERNEL_PT_PAGE,
    KERNEL_START,
    LSTAR,
    LSTAR_PAGE,
    MAX_VCPUS,
    MEM_BASE,
    PAGE,
    POOL_SIZE,
    PTE_ADDR,
    PTE_P,
    PTE_US,
    RESUME,
    SFMASK,
    STAR,
    STUB_PAGE,
    STUB_VA,
    TSS_LIMIT,
    TSS_SEL,
    USER_CS,
    USER_DS,
    Entry,
    PageTables,
    PoolAllocator,
    PvmEntry,
    gdt,
    idt,
    lstar_page,
    stub_code,
    tss,
    vcpu_page,
    vcpu_tss_va,
)

if TYPE_CHECKING:
    from pyrunsc.core.config import Config
    from pyrunsc.core.mm.memfile import MemoryFile

DEV_KVM = "/dev/kvm"
#: The only KVM API version there has ever been (Linux ``KVM_API_VERSION``).
KVM_API_VERSION = 12
#: The signal that kicks a vCPU thread out of KVM_RUN (gVisor uses SIGCHLD;
#: SIGURG, as Go's preemption, is one the sandbox does not otherwise use).
SIGNAL_INTERRUPT = signal.SIGURG
#: Environment setting of the system-call entry when the platform is built
#: from a Config: ``pvm-io``, ``pvm`` or ``ring0`` (see :mod:`.machine`);
#: unset: the best this host has.
ENTRY_ENV = "PYRUNSC_KVM_ENTRY"
#: Memory-file bytes per memory slot.
SLOT_CHUNK = 256 << 20
#: Highest user address + 1 with 4-level paging.
USER_TOP = 0x8000_0000_0000

_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_ENOSYS_RAX = (1 << 64) - errno.ENOSYS
#: EFLAGS bits user code controls (Linux FLAG_MASK, plus ID); IF and bit 1 forced on.
_USER_FLAGS = 0x254DD5
_SYNC = kvm.KVM_REGS
_SYNC_OFF = kvm.RUN_SYNC_REGS
_EXIT_HLT = kvm.KVM_EXIT_HLT
_EXIT_IO = kvm.KVM_EXIT_IO
_DIRTY = kvm.RUN_DIRTY_REGS
_DIRTY_REGS = kvm.KVM_SYNC_X86_REGS
_DIRTY_ALL = kvm.KVM_SYNC_X86_REGS | kvm.KVM_SYNC_X86_SREGS
#: Sync sregs fields the register return updates: FS and GS base, CR3.
_SREGS_FS = kvm.RUN_SYNC_SREGS + 24 * 3
_SREGS_GS = kvm.RUN_SYNC_SREGS + 24 * 4
_SREGS_CR3 = kvm.RUN_SYNC_SREGS + kvm.SREGS_CR0 + 16
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_EXIT_REASON = kvm.RUN_EXIT_REASON
_get_ident = threading.get_ident
#: rip after the LSTAR ``out`` of PvmPortEntry.
_PORT_RIP = LSTAR + 2
#: The lowest canonical upper-half address (4-level paging).
_UPPER_HALF = (1 << 64) - USER_TOP
_EXIT_IRQ_WINDOW_OPEN = kvm.KVM_EXIT_IRQ_WINDOW_OPEN
_READY = kvm.RUN_READY_FOR_INTERRUPT_INJECTION
_WINDOW = kvm.RUN_REQUEST_INTERRUPT_WINDOW
_EINTR = errno.EINTR
_IF = 0x200
_INTERRUPTED: tuple[Stop, Fault | None] = (Stop.INTERRUPT, None)
_SYSCALL: tuple[Stop, Fault | None] = (Stop.SYSCALL, None)
_run_ioctl = kvm.raw_ioctl
_KVM_RUN = kvm.KVM_RUN
_setattr = object.__setattr__

SEGV_MAPERR, SEGV_ACCERR, SI_KERNEL = 1, 2, 0x80
ILL_ILLOPN, FPE_INTDIV, BUS_ADRALN, TRAP_TRACE = 2, 1, 1, 2
#: Exception vector -> (signal, si_code, si_addr is rip) as Linux's traps.c sends
#: for user-mode faults; #PF (14) and #GP (13) are decoded apart.
VECTOR_SIGNALS: dict[int, tuple[int, int, bool]] = {
    0: (signal.SIGFPE, FPE_INTDIV, True),  # #DE
    1: (signal.SIGTRAP, TRAP_TRACE, True),  # #DB (single step)
    3: (signal.SIGTRAP, SI_KERNEL, False),  # #BP (int3)
    4: (signal.SIGSEGV, SI_KERNEL, False),  # #OF
    5: (signal.SIGSEGV, SI_KERNEL, False),  # #BR
    6: (signal.SIGILL, ILL_ILLOPN, True),  # #UD
    7: (signal.SIGSEGV, SI_KERNEL, False),  # #NM (never: CR0.TS is clear)
    10: (signal.SIGSEGV, SI_KERNEL, False),  # #TS
    11: (signal.SIGBUS, SI_KERNEL, False),  # #NP
    12: (signal.SIGBUS, SI_KERNEL, False),  # #SS
    16: (signal.SIGFPE, 0, True),  # #MF
    17: (signal.SIGBUS, BUS_ADRALN, False),  # #AC
    19: (signal.SIGFPE, 0, True),  # #XM
}


class GuestError(RuntimeError):
    """The guest did something the platform cannot turn into a signal (a
    triple fault, a failed entry, an exit it does not expect). It concerns the
    sandbox whose vCPU it was; the message has the exit and the registers."""


def kvm_unavailable() -> str | None:
    """None when /dev/kvm can be opened and speaks API 12, else why not (one line)."""
    try:
        fd = os.open(DEV_KVM, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{DEV_KVM} does not exist (no KVM on this host)"
    except PermissionError:
        return f"no permission to open {DEV_KVM} (add the user to the kvm group)"
    except OSError as e:
        return f"cannot open {DEV_KVM}: {errno.errorcode.get(e.errno or 0, e.errno)}"
    try:
        version = fcntl.ioctl(fd, kvm.KVM_GET_API_VERSION)
    except OSError as e:
        return f"KVM_GET_API_VERSION failed: {e.strerror}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"KVM API version {version}, need {KVM_API_VERSION}"
    return None


def _buffer_address(buf: mmap.mmap) -> int:
    """The address of a writable mmap (the ctypes export is dropped at once)."""
    c = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(c)
    finally:
        del c


def build_sregs(template: bytes | bytearray, cr3: int, tss_va: int, fs_base: int, gs_base: int,
                user: bool = False) -> bytearray:
    """struct kvm_sregs for ring 0 in long mode: Linux's kernel CS/SS (user
    CS/SS with ``user``), null DS/ES/FS/GS (DPL 3: ``iretq`` keeps them)
    carrying the task's FS/GS bases, TR at the vCPU's TSS, our GDT/IDT,
    CR0/CR3/CR4/EFER. ``template`` gives apic_base (what KVM_GET_SREGS said)."""
    s = bytearray(template)
    seg = kvm.KVM_SEGMENT.pack_into
    if user:
        seg(s, 0, 0, 0xFFFFFFFF, USER_CS, 11, 1, 3, 0, 1, 1, 1, 0, 0)  # cs
        seg(s, 24 * 5, 0, 0xFFFFFFFF, USER_DS, 3, 1, 3, 1, 1, 0, 1, 0, 0)  # ss
    else:
        seg(s, 0, 0, 0xFFFFFFFF, KERNEL_CS, 11, 1, 0, 0, 1, 1, 1, 0, 0)  # cs
        seg(s, 24 * 5, 0, 0xFFFFFFFF, KERNEL_DS, 3, 1, 0, 1, 1, 0, 1, 0, 0)  # ss
    for i, base in ((1, 0), (2, 0), (3, fs_base), (4, gs_base)):  # ds es fs gs
        seg(s, 24 * i, base, 0xFFFFFFFF, 0, 3, 1, 3, 1, 1, 0, 1, 0, 0)
    seg(s, 24 * 6, tss_va, TSS_LIMIT, TSS_SEL, 11, 1, 0, 0, 0, 0, 0, 0, 0)  # tr
    seg(s, 24 * 7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1)  # ldt (unusable)
    struct.pack_into("<QHxxxxxx", s, 192, GDT_VA, GDT_LIMIT)
    struct.pack_into("<QHxxxxxx", s, 208, IDT_VA, 0xFFF)
    cr = kvm.SREGS_CR0
    apic_base = struct.unpack_from("<Q", s, cr + 48)[0]
    struct.pack_into("<7Q", s, cr, CR0, 0, cr3, CR4, 0, EFER, apic_base)
    s[280:312] = bytes(32)
    return s


class KVMAddressSpace(AddressSpace):
    """Page tables for one ``mm``. ``map`` takes memory-file ranges
    (``offset`` bytes into the file), MAP_FIXED-style; addresses and lengths
    are page-aligned and must stay below 2**47 outside
    ``KVMPlatform.reserved`` (ValueError otherwise)."""

    def __init__(self, platform: KVMPlatform) -> None:
        self._platform = platform
        self.tables: PageTables | None = PageTables(platform._pool_q, platform._alloc, KERNEL_PT_PAGE * PAGE)

    def _check(self, addr: int, length: int) -> PageTables:
        if self.tables is None:
            raise RuntimeError("KVM address space used after release")
        if addr % PAGE or length % PAGE or length <= 0:
            raise ValueError(f"unaligned range {addr:#x}+{length:#x}")
        if addr < 0 or addr + length > USER_TOP or (addr < KERNEL_END and addr + length > KERNEL_START):
            raise ValueError(f"range {addr:#x}+{length:#x} is outside user space or in the platform's reserved range")
        return self.tables

    def map(self, addr: int, length: int, offset: int, prot: int) -> None:
        t = self._check(addr, length)
        self._platform._ensure_memory(offset, length)
        if t.map(addr, length, MEM_BASE + offset, prot):
            self._platform._flush_needed = True

    def unmap(self, addr: int, length: int) -> None:
        if self._check(addr, length).unmap(addr, length):
            self._platform._flush_needed = True

    def protect(self, addr: int, length: int, prot: int) -> None:
        if self._check(addr, length).protect(addr, length, prot):
            self._platform._flush_needed = True

    def release(self) -> None:
        """Retire the page-table pages (reused after the next VM flush)."""
        if self.tables is not None:
            self.tables.release()
            self.tables = None
            self._platform._flush_needed = True

    def __getstate__(self) -> object:
        raise TypeError("a KVM address space lives in a VM; rebuild it on restore, do not pickle it")


class KVMContext(Context):
    """One vCPU. See the module docs for how a switch runs."""

    def __init__(self, platform: KVMPlatform, index: int, vcpu: tuple[int, mmap.mmap] | None = None) -> None:
        self._platform = platform
        self.index = index
        self._pending = False
        self._thread = 0
        if vcpu is not None:  # a released context's vCPU (KVM never frees a vCPU before its VM)
            self.fd, self.run = vcpu
        else:
            self.fd = kvm.ioctl(platform._vm_fd, kvm.KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU")
            try:
                self.run = mmap.mmap(self.fd, platform._run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except BaseException:
                os.close(self.fd)
                raise
        self._page_off = vcpu_page(index) * PAGE
        self._frame_off = self._page_off + PAGE - FRAME.size
        self._frame_va = vcpu_tss_va(index) + PAGE - FRAME.size
        self._aspace: KVMAddressSpace | None = None
        self._cr3 = -1
        self._fs = self._gs = 0
        self._in_user = False
        self._at_sysret = False
        self._xsave = bytearray(kvm.XSAVE_BYTES)
        self._fp_shadow: bytearray | None = None
        self._holder: Registers | None = None
        self._pull = self._pull_fp  # bound once: its identity marks "the image is in this vCPU"
        self._sregs_template = bytearray(kvm.SREGS_SIZE)
        #: Interrupts that found the vCPU part way through an event (it ran on).
        self.unfinished = 0
        #: How the last system call arrived: "pvm-io", "pvm" or "ring0" (what the probe reads).
        self.last_entry = ""
        if vcpu is None:
            try:
                self._setup()
            except BaseException:
                self._close()
                raise
        else:  # (apic_base for the sregs)
            kvm.ioctl(self.fd, kvm.KVM_GET_SREGS, self._sregs_template, "KVM_GET_SREGS")
        if platform.entry.register_return:
            # The user-mode sregs, kept in kvm_run (KVM does not write them back:
            # valid_regs is REGS only); a switch patches CR3 and FS/GS base.
            start = kvm.RUN_SYNC_SREGS
            self.run[start : start + kvm.SREGS_SIZE] = build_sregs(self._sregs_template, 0, vcpu_tss_va(index), 0, 0,
                                                                   user=True)
        self.run[kvm.RUN_IMMEDIATE_EXIT] = 0
        self._fs = self._gs = -1  # unknown: set with the first switch's sregs

    def _setup(self) -> None:
        p = self._platform
        p._pool[self._page_off : self._page_off + TSS_LIMIT + 1] = tss(self.index, p.entry.exit_port)
        kvm.ioctl(self.fd, kvm.KVM_SET_CPUID2, bytearray(p._cpuid), "KVM_SET_CPUID2")
        kvm.ioctl(self.fd, kvm.KVM_GET_SREGS, self._sregs_template, "KVM_GET_SREGS")
        self._set_sregs(0)
        kvm.ioctl(self.fd, kvm.KVM_SET_XCRS, kvm.xcrs(p._xcr0), "KVM_SET_XCRS")
        self._set_msrs([(kvm.MSR_STAR, STAR), (kvm.MSR_LSTAR, LSTAR), (kvm.MSR_CSTAR, LSTAR),
                        (kvm.MSR_SYSCALL_MASK, SFMASK), (kvm.MSR_FS_BASE, 0), (kvm.MSR_GS_BASE, 0),
                        (kvm.MSR_KERNEL_GS_BASE, 0)])
        # Every register zero (KVM's reset RDX = 0x600 would reach the task).
        kvm.ioctl(self.fd, kvm.KVM_SET_REGS, bytearray(_SYNC.pack(*([0] * 17), 2)), "KVM_SET_REGS")
        struct.pack_into("<QQ", self.run, kvm.RUN_VALID_REGS, kvm.KVM_SYNC_X86_REGS, 0)

    def _set_sregs(self, cr3: int) -> None:
        s = build_sregs(self._sregs_template, cr3, vcpu_tss_va(self.index), self._fs, self._gs)
        kvm.ioctl(self.fd, kvm.KVM_SET_SREGS, s, "KVM_SET_SREGS")
        self._cr3 = cr3
        self._in_user = False
        self._at_sysret = False

    def _set_msrs(self, pairs: list[tuple[int, int]]) -> None:
        n = kvm.ioctl(self.fd, kvm.KVM_SET_MSRS, kvm.msrs(pairs), "KVM_SET_MSRS")
        if n != len(pairs):
            bad = pairs[n]
            raise KVMError(errno.EINVAL, f"KVM_SET_MSRS: MSR {bad[0]:#x} refused value {bad[1]:#x}")

    # FP state.

    def _pull_fp(self, into: bytearray) -> None:
        """The lazy-FP hook: KVM_GET_XSAVE into ``into`` (4096 bytes)."""
        if self.fd < 0:
            raise RuntimeError("a task's FP state was read after its vCPU was released")
        kvm.ioctl(self.fd, kvm.KVM_GET_XSAVE, self._xsave, "KVM_GET_XSAVE")
        n = min(len(into), kvm.XSAVE_BYTES)
        into[:n] = self._xsave[:n]
        self._fp_shadow = bytearray(into)
        self._holder = None

    def _evict(self) -> None:
        h = self._holder
        if h is not None:
            if h.fp_pull is self._pull:
                h.fpstate  # noqa: B018 - reading it pulls it
            else:
                self._fp_shadow = None
            self._holder = None

    def _load_fp(self, regs: Registers) -> None:
        image = regs.fpstate  # pulled from wherever it was
        self._evict()
        if image != self._fp_shadow:
            n = min(len(image), kvm.XSAVE_BYTES)
            self._xsave[:n] = image[:n]
            try:
                kvm.ioctl(self.fd, kvm.KVM_SET_XSAVE, self._xsave, "KVM_SET_XSAVE")
            except KVMError:
                self._fp_shadow = None
                raise
            self._fp_shadow = bytearray(image)

    # Running.

    def switch(self, aspace: AddressSpace, regs: Registers) -> tuple[Stop, Fault | None]:
        """Run ``regs`` in ``aspace`` (a :class:`KVMAddressSpace`) until:

        - a system call: (Stop.SYSCALL, None); ``orig_rax`` is its number,
          ``rax`` -ENOSYS, ``rip`` past the ``syscall``, rcx/r11 = rip/rflags
          (as at Linux's entry and on the ptrace platform);
        - a fault: (Stop.FAULT, Fault), the signal Linux's traps.c sends:
          #PF SIGSEGV (si_addr = CR2; MAPERR/ACCERR; write/exec from the error
          code), #GP SIGSEGV SI_KERNEL, #UD SIGILL, #DE SIGFPE, int3 SIGTRAP...
          (:data:`VECTOR_SIGNALS`); ``rip`` at the faulting instruction;
        - :meth:`interrupt`: (Stop.INTERRUPT, None) with the task's state at
          the instruction it resumes from. An interrupt that finds the vCPU
          part way through a system call or fault lets it finish: that stop
          is returned, and the next switch returns Stop.INTERRUPT at once
          (another host signal to this thread only restarts KVM_RUN).

        ``regs.regs`` is updated in place; ``cs``/``ss`` are always 0x33/0x2b,
        ``ds``..``gs`` kept. The FP image stays in the vCPU until
        ``regs.fpstate`` is read (``fp_pull``). Raises GuestError on a triple
        fault or an unexpected exit, KVMError when an ioctl fails (e.g. EINVAL
        for a bad XSAVE header or a non-canonical fs_base), RuntimeError for a
        released address space or context.
        """
        if self.fd < 0:
            raise RuntimeError("switch on a released KVM context")
        if self._pending:
            self._pending = False
            self.run[kvm.RUN_IMMEDIATE_EXIT] = 0
            return _INTERRUPTED
        p = self._platform
        if p._flush_needed:
            p._flush()
        tables = aspace.tables  # type: ignore[attr-defined]
        if tables is None:
            raise RuntimeError("switch into a released KVM address space")
        r = regs.regs
        run = self.run
        cr3 = tables.cr3
        rip = r[16]
        if rip >= USER_TOP:  # iretq/sysretq would fault in ring 0: Linux sends SIGSEGV
            return (Stop.FAULT, Fault(signal.SIGSEGV, SI_KERNEL, 0))
        flags = (r[18] & _USER_FLAGS) | 0x202
        if r[21] != self._fs or r[22] != self._gs:
            for base in (r[21], r[22]):  # (KVM would load either into the MSR as it is)
                if USER_TOP <= base < _UPPER_HALF:
                    raise KVMError(errno.EINVAL, f"non-canonical FS/GS base {base:#x}")
        direct = p.entry.register_return
        if not direct:
            need_sregs = cr3 != self._cr3 or self._in_user
            if r[21] != self._fs or r[22] != self._gs:
                if not need_sregs:
                    self._set_msrs([(kvm.MSR_FS_BASE, r[21]), (kvm.MSR_GS_BASE, r[22])])
                self._fs, self._gs = r[21], r[22]
            if need_sregs:
                try:
                    self._set_sregs(cr3)
                except KVMError:
                    self._cr3 = -1
                    raise
        self._aspace = aspace  # type: ignore[assignment]
        if regs.fp_pull is not self._pull:
            self._load_fp(regs)
        if direct:
            # Straight to user mode: the registers alone when the vCPU stopped
            # in user mode with this CR3 and FS/GS base, else with the sregs.
            dirty = _DIRTY_REGS
            if not self._in_user or cr3 != self._cr3 or r[21] != self._fs or r[22] != self._gs:
                fs, gs = r[21], r[22]
                _U64.pack_into(run, _SREGS_FS, fs)
                _U64.pack_into(run, _SREGS_GS, gs)
                _U64.pack_into(run, _SREGS_CR3, cr3)
                self._cr3, self._fs, self._gs = cr3, fs, gs  # (-1 again if KVM_RUN fails)
                dirty = _DIRTY_ALL
            _SYNC.pack_into(run, _SYNC_OFF, r[10], r[5], r[11], r[12], r[13], r[14], r[19], r[4], r[9], r[8], r[7],
                            r[6], r[3], r[2], r[1], r[0], rip, flags)
            run[_DIRTY] = dirty
        else:
            if self._at_sysret and p.entry.sysret and r[11] == rip and r[6] == r[18]:
                _SYNC.pack_into(run, _SYNC_OFF, r[10], r[5], r[11], r[12], r[13], r[14], r[19], r[4], r[9], r[8],
                                r[7], flags, r[3], r[2], r[1], r[0], LSTAR + 1, 2)
            else:
                FRAME.pack_into(p._pool, self._frame_off, 0, 0, rip, USER_CS, flags, r[19], USER_DS)
                _SYNC.pack_into(run, _SYNC_OFF, r[10], r[5], r[11], r[12], r[13], r[14], self._frame_va, r[4], r[9],
                                r[8], r[7], r[6], r[3], r[2], r[1], r[0], RESUME, 2)
            run[_DIRTY] = _DIRTY_REGS
        gate, lock = p._gate, p._gate_lock  # (the lock itself: `with` a Condition is a Python call)
        window = False  # an interrupt window is requested: the vCPU runs on to it
        self._thread = _get_ident()
        try:
            while True:
                with lock:
                    while p._flushing:
                        gate.wait()
                    p._running += 1
                    # Cleared under the gate, so a flush's kick is never lost;
                    # set again for an interrupt that came before (its signal is spent).
                    run[kvm.RUN_IMMEDIATE_EXIT] = 1 if self._pending and not window else 0
                rc = _run_ioctl(self.fd, _KVM_RUN, 0)
                err = ctypes.get_errno() if rc < 0 else 0
                with lock:
                    p._running -= 1
                    if p._flushing:
                        gate.notify_all()
                if rc < 0:
                    if err != _EINTR:
                        self._cr3 = -1  # (sync sregs may not have been taken)
                        raise KVMError(err, f"KVM_RUN: {os.strerror(err)}")
                    if not self._pending:
                        continue  # a flush's kick or a foreign signal: KVM_RUN resumes where it was
                    if run[_READY]:
                        return self._interrupted(regs)
                    if not window:  # part way through an event: run on, asking KVM for the next point
                        window = True
                        run[_WINDOW] = 1
                        self.unfinished += 1
                    continue
                reason = _U32.unpack_from(run, _EXIT_REASON)[0]
                if reason == _EXIT_IO:
                    return self._port_exit(regs)  # (an interrupt still pending is taken by the next switch)
                if reason == _EXIT_HLT:
                    return self._stopped(regs)  # (an interrupt still pending is taken by the next switch)
                if reason == _EXIT_IRQ_WINDOW_OPEN and window:
                    return self._interrupted(regs)
                raise self._guest_error(reason)
        finally:
            self._thread = 0
            if window:
                run[_WINDOW] = 0
            if self._holder is not regs:
                self._evict()
                self._holder = regs
                self._fp_shadow = None
            _setattr(regs, "fp_pull", self._pull)

    def _stopped(self, regs: Registers) -> tuple[Stop, Fault | None]:
        """A HLT exit: decode the system call or exception."""
        (rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, krip,
         _kflags) = _SYNC.unpack_from(self.run, _SYNC_OFF)
        r = regs.regs
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9] = r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8
        r[10], r[11], r[12], r[13], r[14] = rax, rcx, rdx, rsi, rdi
        r[17], r[20] = USER_CS, USER_DS
        self._in_user = False
        if krip == LSTAR + 1:  # ring-0 LSTAR entry (VMX/SVM): `hlt` ran in ring 0
            r[15], r[10], r[16], r[18], r[19] = rax, _ENOSYS_RAX, rcx, r11, rsp
            self._at_sysret = True
            self.last_entry = "ring0"
            return _SYSCALL
        self._at_sysret = False
        if not STUB_VA < krip < STUB_VA + PAGE:
            raise GuestError(f"vCPU {self.index}: hlt at unexpected rip {krip:#x}")
        vector, error, frip, _fcs, fflags, frsp, _fss = FRAME.unpack_from(self._platform._pool, self._frame_off)
        r[16], r[18], r[19] = frip, fflags, frsp
        if vector == 13 and frip == LSTAR and not fflags & 0x200:
            # PVM: `syscall` stayed in ring 3 and its `hlt` raised #GP. (IF is
            # clear only after `syscall`, by SFMASK: a plain jump here has IF set.)
            r[15], r[10], r[16], r[18] = rax, _ENOSYS_RAX, rcx, r11
            self.last_entry = "pvm"
            return _SYSCALL
        if frip >> 12 == LSTAR >> 12:  # a jump into the LSTAR page: as if it were not mapped
            return (Stop.FAULT, Fault(signal.SIGSEGV, SEGV_MAPERR, frip, exec=True))
        return (Stop.FAULT, self._fault(vector, error, frip))

    def _port_exit(self, regs: Registers) -> tuple[Stop, Fault | None]:
        """A KVM_EXIT_IO: the system call of :class:`~.machine.PvmPortEntry`
        when at LSTAR's ``out`` with IF clear (user code runs with IF set; a
        ``syscall`` clears it). The vCPU stays in user mode."""
        (rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, krip,
         kflags) = _SYNC.unpack_from(self.run, _SYNC_OFF)
        r = regs.regs
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9] = r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8
        r[12], r[13], r[14], r[17], r[19], r[20] = rdx, rsi, rdi, USER_CS, rsp, USER_DS
        self._in_user = True
        if krip == _PORT_RIP and not kflags & _IF:
            r[15], r[10], r[11], r[16], r[18] = rax, _ENOSYS_RAX, rcx, rcx, r11
            self.last_entry = "pvm-io"
            return _SYSCALL
        r[10], r[11], r[18] = rax, rcx, kflags
        return self._stray_port(regs, krip)

    def _stray_port(self, regs: Registers, rip: int) -> tuple[Stop, Fault | None]:
        """Port I/O by user code (the TSS bitmap lets it reach EXIT_PORT), or a
        jump to LSTAR. Linux sends SIGSEGV for both (a #GP; a jump to an
        unmapped page); the task's rip is that of the instruction."""
        r = regs.regs
        if rip == _PORT_RIP:  # a jump to LSTAR with IF set
            r[16] = LSTAR
            return (Stop.FAULT, Fault(signal.SIGSEGV, SEGV_MAPERR, LSTAR, exec=True))
        direction = self.run[kvm.RUN_IO]
        if direction != kvm.KVM_EXIT_IO_OUT:
            # An IN is completed by the next KVM_RUN, which would then overwrite
            # the registers it is given: complete it now, without entering.
            run = self.run
            _U64.pack_into(run, _DIRTY, 0)
            run[kvm.RUN_IMMEDIATE_EXIT] = 1
            _run_ioctl(self.fd, _KVM_RUN, 0)
            run[kvm.RUN_IMMEDIATE_EXIT] = 1 if self._pending else 0
        else:  # KVM ran the OUT: rip is past it
            rip = self._port_insn_start(rip)
        r[16] = rip
        return (Stop.FAULT, Fault(signal.SIGSEGV, SI_KERNEL, 0))

    def _port_insn_start(self, after: int) -> int:
        """Where the user ``out``/``outs`` that ends at ``after`` begins
        (``after`` itself when the bytes before it are not one)."""
        b = self._read_user(after - 3, 3) if after % PAGE >= 3 else b""
        if len(b) == 3:
            if b[1] in (0xE6, 0xE7) and b[2] == EXIT_PORT:  # out imm8, al/eax
                return after - 3 if b[0] == 0x66 else after - 2
            if b[2] in (0xEE, 0xEF, 0x6E, 0x6F):  # out dx, al/eax; outs
                return after - 2 if b[1] in (0x66, 0xF2, 0xF3) else after - 1
        return after

    def _fault(self, vector: int, error: int, rip: int) -> Fault:
        if vector == 14:
            s = bytearray(kvm.SREGS_SIZE)
            kvm.ioctl(self.fd, kvm.KVM_GET_SREGS, s, "KVM_GET_SREGS")
            cr2 = struct.unpack_from("<Q", s, kvm.SREGS_CR0 + 8)[0]
            if error & 1:
                code = SEGV_ACCERR
            else:  # not present: PROT_NONE (address kept, P clear) is ACCERR as in Linux
                pte = self._aspace.tables.lookup(cr2) if self._aspace and self._aspace.tables else 0
                code = SEGV_ACCERR if pte & PTE_ADDR and not pte & PTE_P else SEGV_MAPERR
            return Fault(signal.SIGSEGV, code, cr2, write=bool(error & 2), exec=bool(error & 16))
        if vector == 13 or (vector == 6 and self._read_user(rip, 1) == b"\xcd"):
            # #GP, or PVM's #UD for a user `int n` (real hardware: #GP, the
            # gate's DPL being 0): SIGSEGV SI_KERNEL as Linux sends.
            return Fault(signal.SIGSEGV, SI_KERNEL, 0)
        sig = VECTOR_SIGNALS.get(vector)
        if sig is None:
            raise GuestError(f"vCPU {self.index}: exception vector {vector} (error {error:#x}) at rip {rip:#x}")
        signo, code, at_rip = sig
        return Fault(int(signo), code, rip if at_rip else 0)

    def _read_user(self, addr: int, n: int) -> bytes:
        """Up to ``n`` bytes of the task's memory at ``addr`` (within one page),
        through its page tables; b"" when not mapped readable."""
        a = self._aspace
        pte = a.tables.lookup(addr) if a is not None and a.tables is not None else 0
        mf = self._platform._memfile
        if not pte & PTE_P or not pte & PTE_US or mf is None:
            return b""
        off = (pte & PTE_ADDR) - MEM_BASE + addr % PAGE
        return mf.read(off, min(n, PAGE - addr % PAGE))

    def _interrupted(self, regs: Registers) -> tuple[Stop, Fault | None]:
        """Stop.INTERRUPT at a point where KVM could inject an interrupt
        (``ready_for_interrupt_injection`` or an open interrupt window): the
        guest's IF is set, so it is in user mode (ring 0 here always runs with
        IF clear), at an instruction boundary, with no exception pending or
        half-delivered. The sync registers (KVM stores them on every return,
        EINTR included) are then the task's, exactly.

        Anywhere else the state is not the task's to resume: at LSTAR with IF
        clear (a PVM ``syscall`` whose ``hlt`` has not yet raised #GP: resumed
        with IF set, as every user resume is, that ``hlt`` was a #GP with IF
        set, a SIGSEGV at LSTAR, and the system call was lost: issue #8); with
        an exception queued (e.g. that #GP, or an ``int3`` trap that
        KVM_GET_VCPU_EVENTS does not even report), which new registers drop or
        deliver at the wrong place; in ring 0. :meth:`switch` runs those on."""
        (rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, krip,
         kflags) = _SYNC.unpack_from(self.run, _SYNC_OFF)
        if not kflags & _IF:
            raise GuestError(f"vCPU {self.index}: KVM would take an interrupt with IF clear at rip {krip:#x}")
        r = regs.regs
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] = r15, r14, r13, r12, rbp, rbx, r11, r10
        r[8], r[9], r[10], r[11], r[12], r[13], r[14] = r9, r8, rax, rcx, rdx, rsi, rdi
        r[16], r[17], r[18], r[19], r[20] = krip, USER_CS, kflags, rsp, USER_DS
        self._in_user = True  # the next switch reloads the ring-0 sregs
        self._pending = False
        self.run[kvm.RUN_IMMEDIATE_EXIT] = 0
        return _INTERRUPTED

    def _guest_error(self, reason: int) -> GuestError:
        regs = _SYNC.unpack_from(self.run, _SYNC_OFF)
        name = kvm.EXIT_NAMES.get(reason, str(reason))
        extra = ""
        if reason == kvm.KVM_EXIT_FAIL_ENTRY:
            extra = f", hardware_entry_failure_reason {struct.unpack_from('<Q', self.run, 32)[0]:#x}"
        elif reason == kvm.KVM_EXIT_INTERNAL_ERROR:
            extra = f", suberror {struct.unpack_from('<I', self.run, 32)[0]}"
        return GuestError(f"vCPU {self.index}: unexpected KVM exit {name}{extra} at rip {regs[16]:#x} "
                          f"rsp {regs[6]:#x} rflags {regs[17]:#x}")

    def interrupt(self) -> None:
        """Make the running (or next) switch return Stop.INTERRUPT: sets
        ``immediate_exit`` and signals the thread in KVM_RUN. Any thread, or a
        signal handler."""
        self._pending = True
        run = self.run
        if not run.closed:
            run[kvm.RUN_IMMEDIATE_EXIT] = 1
        t = self._thread
        if t:
            with contextlib.suppress(OSError):
                signal.pthread_kill(t, SIGNAL_INTERRUPT)

    def release(self) -> None:
        """Bring a held FP image out and give the vCPU back to the platform
        for the next :meth:`KVMPlatform.new_context` (KVM frees vCPUs only
        with their VM; :meth:`KVMPlatform.close` closes them). Idempotent."""
        if self.fd < 0:
            return
        try:
            self._evict()
        finally:
            p = self._platform
            p._contexts.discard(self)
            if p._vm_fd >= 0:
                p._idle.append((self.index, self.fd, self.run))
            else:
                self._close()
            self.fd = -1

    def _close(self) -> None:
        if not self.run.closed:
            self.run.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __getstate__(self) -> object:
        raise TypeError("a KVM context is a vCPU; create a new one on restore")


def _noop_handler(signo: int, frame: object) -> None:
    """The handler of SIGNAL_INTERRUPT: its only job is to make KVM_RUN return."""


class KVMPlatform(Platform):
    """The KVM platform: vCPUs run application code; exits come to the sentry.

    ``entry`` (after :meth:`start`) is the :class:`~.machine.Entry` that the
    start-up probe found: :class:`~.machine.PvmPortEntry` on PVM hosts
    (:class:`~.machine.PvmEntry` when asked for with ``entry="pvm"`` or
    :data:`ENTRY_ENV`, or when KVM cannot sync sregs),
    :class:`~.machine.Ring0Entry` on VMX/SVM.
    """

    #: An interrupt stops a task only at a point it resumes from exactly (see
    #: :meth:`KVMContext._interrupted`), so the kernel may preempt tasks.
    preemptible = True

    name = "kvm"
    #: Address ranges no application mapping may use ([start, end) bytes): the
    #: guest "kernel" pages; the kernel reads this into ``Layout.reserved``.
    reserved: ClassVar[list[tuple[int, int]]] = [(KERNEL_START, KERNEL_END)]

    @classmethod
    def probe(cls) -> str | None:
        return kvm_unavailable()

    def __init__(self, config: Config, entry: str | None = None) -> None:
        super().__init__(config)
        if entry is None:
            entry = os.environ.get(ENTRY_ENV) or None
        if entry is not None and entry not in ENTRIES:
            raise ValueError(f"unknown KVM entry {entry!r} (one of {', '.join(ENTRIES)})")
        #: The entry asked for (None: the best this host has).
        self._want_entry = entry
        self._kvm_fd = self._vm_fd = -1
        self._pool: mmap.mmap | None = None
        self._pool_q: memoryview | None = None
        self._memfile: MemoryFile | None = None
        self._mem_addr = 0
        self._slots: set[int] = set()
        self._contexts: set[KVMContext] = set()
        self._idle: list[tuple[int, int, mmap.mmap]] = []
        self._next_index = 0
        self._flush_needed = False
        self._lock = threading.Lock()
        #: Guards ``_running`` (vCPUs in KVM_RUN) and ``_flushing``.
        self._gate_lock = threading.Lock()
        self._gate = threading.Condition(self._gate_lock)
        self._running = 0
        self._flushing = False
        self.entry: Entry = PvmEntry()
        self.flushes = 0

    def start(self, memfile: MemoryFile) -> None:
        """Create the VM: open /dev/kvm, check KVM_CAP_SYNC_REGS and
        KVM_CAP_IMMEDIATE_EXIT, build the pool, register it, then probe which
        system-call entry this host gives. KVMError / GuestError if it cannot."""
        if self._vm_fd >= 0:
            raise RuntimeError("KVMPlatform.start called twice")
        why = kvm_unavailable()
        if why:
            raise KVMError(errno.ENODEV, why)
        self._memfile = memfile
        try:
            self._kvm_fd = os.open(DEV_KVM, os.O_RDWR | os.O_CLOEXEC)
            for cap, name in ((kvm.KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS"),
                              (kvm.KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")):
                if not kvm.ioctl(self._kvm_fd, kvm.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION"):
                    raise KVMError(errno.ENOTSUP, f"this KVM lacks {name}")
            self._sync_sregs = bool(kvm.ioctl(self._kvm_fd, kvm.KVM_CHECK_EXTENSION, kvm.KVM_CAP_SYNC_REGS,
                                              "KVM_CHECK_EXTENSION") & kvm.KVM_SYNC_X86_SREGS)
            self._vm_fd = kvm.ioctl(self._kvm_fd, kvm.KVM_CREATE_VM, 0, "KVM_CREATE_VM")
            os.set_inheritable(self._vm_fd, False)
            self._run_size = kvm.ioctl(self._kvm_fd, kvm.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")
            self._cpuid = kvm.supported_cpuid(self._kvm_fd)
            leaf = kvm.cpuid_entry(self._cpuid, 0xD, 0)
            self._xcr0 = ((leaf[0] | leaf[3] << 32) if leaf else 3) & 0xE7 | 3
            self._pool = mmap.mmap(-1, POOL_SIZE, mmap.MAP_PRIVATE | _MAP_NORESERVE,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
            self._pool_q = memoryview(self._pool).cast("Q")
            self._alloc = PoolAllocator()
            self._write_kernel_pages()
            self._pool_addr = _buffer_address(self._pool)
            self._mem_addr = _buffer_address(memfile.map)
            self._set_slot(0, 0, POOL_SIZE, self._pool_addr)
            self._install_signal()
            self._probe_entry()
        except BaseException:
            self.close()
            raise

    def _write_kernel_pages(self) -> None:
        pool = self._pool
        assert pool is not None
        pool[GDT_PAGE * PAGE : (GDT_PAGE + 1) * PAGE] = gdt()
        pool[IDT_PAGE * PAGE : (IDT_PAGE + 1) * PAGE] = idt()
        pool[STUB_PAGE * PAGE : (STUB_PAGE + 1) * PAGE] = stub_code()
        pool[LSTAR_PAGE * PAGE : (LSTAR_PAGE + 1) * PAGE] = lstar_page(self.entry.lstar_code)
        pool[KERNEL_PT_PAGE * PAGE : (KERNEL_PT_PAGE + 1) * PAGE] = self.entry.kernel_table().tobytes()

    def _install_signal(self) -> None:
        current = signal.getsignal(SIGNAL_INTERRUPT)
        if callable(current):
            return
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(f"KVMPlatform.start needs a handler for {SIGNAL_INTERRUPT.name}: start it from the "
                               "main thread once, or install one")
        signal.signal(SIGNAL_INTERRUPT, _noop_handler)

    def _probe_entry(self) -> None:
        """Run one user ``syscall`` and see how it arrives: a #GP frame at LSTAR
        (PVM) or a ring-0 ``hlt`` at LSTAR (VMX/SVM). Selects ``entry``: on
        PVM, the port exit unless ``entry="pvm"`` was asked for (or KVM cannot
        sync sregs)."""
        probe_page = KERNEL_PT_PAGE + 1  # a spare pool page, below the vCPU pages
        assert self._pool is not None
        self._pool[probe_page * PAGE : probe_page * PAGE + 4] = b"\x0f\x05\xeb\xfe"  # syscall; jmp .
        aspace = KVMAddressSpace(self)
        ctx = self.new_context()
        try:
            assert aspace.tables is not None
            aspace.tables.map(0x10000, PAGE, probe_page * PAGE, PROT_READ | PROT_EXEC)
            regs = Registers.for_entry(0x10000, 0x10000 + PAGE)
            regs.rax = 39
            stop, fault = ctx.switch(aspace, regs)
            if stop is not Stop.SYSCALL or regs.orig_rax != 39:
                raise GuestError(f"KVM entry probe: a user syscall gave {stop} {fault} at rip {regs.rip:#x}")
            kind = getattr(ctx, "last_entry", "pvm")
        finally:
            ctx.release()
            aspace.release()
        want = self._want_entry
        if kind == "pvm" and want != "pvm" and self._sync_sregs:
            kind = "pvm-io"
        if want is not None and want != kind:
            raise KVMError(errno.ENOTSUP, f"KVM entry {want!r} asked for, but this host gives {kind!r}")
        self.entry = entry = ENTRIES[kind]()
        assert self._pool is not None and self._pool_q is not None
        self._pool[LSTAR_PAGE * PAGE : (LSTAR_PAGE + 1) * PAGE] = lstar_page(entry.lstar_code)
        for index, _fd, _run in self._idle:  # the probe's vCPU: its TSS opens the entry's port
            at = vcpu_page(index) * PAGE
            self._pool[at : at + TSS_LIMIT + 1] = tss(index, entry.exit_port)
        self._pool_q[KERNEL_PT_PAGE * 512 + LSTAR_PAGE] = entry.kernel_pte(LSTAR_PAGE)  # ring0: supervisor
        self._flush_needed = True

    def _set_slot(self, slot: int, gpa: int, size: int, addr: int) -> None:
        kvm.ioctl(self._vm_fd, kvm.KVM_SET_USER_MEMORY_REGION, kvm.memory_region(slot, gpa, size, addr),
                  "KVM_SET_USER_MEMORY_REGION")

    def _ensure_memory(self, offset: int, length: int) -> None:
        """Register the memory-file slots covering [offset, offset+length)."""
        mf = self._memfile
        if mf is None:
            raise RuntimeError("KVM platform is not started or closed")
        if offset < 0 or offset + length > mf.size:
            raise ValueError(f"memory-file range {offset:#x}+{length:#x} beyond its size {mf.size:#x}")
        for chunk in range(offset // SLOT_CHUNK, (offset + length - 1) // SLOT_CHUNK + 1):
            if chunk not in self._slots:
                with self._lock:
                    if chunk not in self._slots:
                        start = chunk * SLOT_CHUNK
                        self._set_slot(1 + chunk, MEM_BASE + start, min(SLOT_CHUNK, mf.size - start),
                                       self._mem_addr + start)
                        self._slots.add(chunk)

    def _flush(self) -> None:
        """Drop every cached translation: stop every vCPU in KVM_RUN (set
        ``immediate_exit`` and signal its thread, as a TLB shootdown would),
        delete and re-add the pool's slot (KVM zaps all shadow pages / EPT
        entries and flushes guest TLBs), let the vCPUs go on, and let retired
        page-table pages be reused. The vCPUs resume where they were: no
        spurious INTERRUPT."""
        gate = self._gate
        with gate:
            if not self._flush_needed:
                return  # another thread did it
            self._flushing = True
            try:
                while self._running:
                    for ctx in list(self._contexts):
                        t = ctx._thread
                        if t and not ctx.run.closed:
                            ctx.run[kvm.RUN_IMMEDIATE_EXIT] = 1
                            with contextlib.suppress(OSError):
                                signal.pthread_kill(t, SIGNAL_INTERRUPT)
                    gate.wait(0.05)
                self._flush_needed = False
                self._set_slot(0, 0, 0, self._pool_addr)
                self._set_slot(0, 0, POOL_SIZE, self._pool_addr)
                self._alloc.recycle()
                self.flushes += 1
            finally:
                self._flushing = False
                gate.notify_all()

    def new_address_space(self) -> KVMAddressSpace:
        """Empty page tables (but for the kernel pages). RuntimeError before start."""
        if self._pool_q is None:
            raise RuntimeError("KVM platform is not started or closed")
        return KVMAddressSpace(self)

    def new_context(self) -> KVMContext:
        """A vCPU: a released one, or a new one. RuntimeError past MAX_VCPUS."""
        if self._vm_fd < 0:
            raise RuntimeError("KVM platform is not started or closed")
        with self._lock:
            if self._idle:
                index, fd, run = self._idle.pop()
                ctx = KVMContext(self, index, (fd, run))
                self._contexts.add(ctx)
                return ctx
            if self._next_index >= MAX_VCPUS:
                raise RuntimeError(f"more than {MAX_VCPUS} KVM contexts")
            index, self._next_index = self._next_index, self._next_index + 1
        ctx = KVMContext(self, index)  # (an index whose vCPU failed is not reused)
        self._contexts.add(ctx)
        return ctx

    def close(self) -> None:
        """Release every vCPU, close the VM and /dev/kvm, unmap the pool.
        Idempotent. Address spaces become unusable."""
        for ctx in list(self._contexts):
            ctx.release()
        for _index, fd, run in self._idle:
            run.close()
            os.close(fd)
        self._idle.clear()
        for attr in ("_vm_fd", "_kvm_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
        if self._pool_q is not None:
            self._pool_q.release()
            self._pool_q = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._slots.clear()
        self._memfile = None

    def __getstate__(self) -> object:
        raise TypeError("the KVM platform holds a VM; create a new one on restore")
