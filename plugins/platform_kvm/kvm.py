"""ctypes/fcntl bindings for the parts of the ``/dev/kvm`` API the platform uses.

Numbers and layouts are Linux's ``include/uapi/linux/kvm.h`` and
``arch/x86/include/uapi/asm/kvm.h`` (checked on this project's PVM host, see
``PLATFORM-FACTS.md``). Every failing ioctl raises :class:`KVMError` (an
OSError with the errno and the request's name).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_GET_SUPPORTED_CPUID = 0xC008AE05
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_GET_MSRS = 0xC008AE88
KVM_SET_MSRS = 0x4008AE89
KVM_SET_CPUID2 = 0x4008AE90
KVM_GET_XSAVE = 0x9000AEA4
KVM_SET_XSAVE = 0x5000AEA5
KVM_SET_XCRS = 0x4188AEA7

KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_SYNC_X86_REGS = 1
KVM_SYNC_X86_SREGS = 2

# Exit reasons (kvm_run.exit_reason).
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
EXIT_NAMES = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 5: "HLT", 6: "MMIO", 7: "IRQ_WINDOW_OPEN",
              8: "SHUTDOWN (triple fault)", 9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR"}

# struct kvm_run offsets.
RUN_REQUEST_INTERRUPT_WINDOW = 0
RUN_IMMEDIATE_EXIT = 1
RUN_EXIT_REASON = 8
#: Set by KVM on every return from KVM_RUN (EINTR included), without an
#: in-kernel irqchip: the guest could take an interrupt now: IF set, no
#: interrupt shadow, and no exception pending or event half-injected, i.e. at
#: an instruction boundary (Linux ``kvm_vcpu_ready_for_interrupt_injection``;
#: DOSEMU relies on it to change the registers there).
RUN_READY_FOR_INTERRUPT_INJECTION = 12
#: KVM_EXIT_IO: direction (u8, 1 = out), size (u8), port (u16), count (u32), data_offset (u64).
RUN_IO = 32
KVM_EXIT_IO_OUT = 1
RUN_VALID_REGS = 288
RUN_DIRTY_REGS = 296
#: struct kvm_sync_regs: kvm_regs (144 bytes), then kvm_sregs (312), then kvm_vcpu_events.
RUN_SYNC_REGS = 304
RUN_SYNC_SREGS = RUN_SYNC_REGS + 144

#: struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip rflags (18 u64, 144 bytes).
KVM_REGS = struct.Struct("<18Q")
#: struct kvm_segment: base, limit, selector, type, present, dpl, db, s, l, g, avl, unusable, pad.
KVM_SEGMENT = struct.Struct("<QIHBBBBBBBBBx")
SREGS_SIZE = 312
SREGS_CR0 = 224  # cr0 cr2 cr3 cr4 cr8 efer apic_base (u64 each) from here
XSAVE_BYTES = 4096

MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102

_libc = ctypes.CDLL(None, use_errno=True)
#: ioctl(fd, request, integer argument) -> int, without fcntl's buffer handling:
#: the KVM_RUN fast path.
raw_ioctl = _libc.ioctl
raw_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong)
raw_ioctl.restype = ctypes.c_int


class KVMError(OSError):
    """A KVM ioctl failed: ``errno`` and a message naming the request."""


def ioctl(fd: int, request: int, arg: int | bytearray = 0, name: str = "") -> int:
    """``fcntl.ioctl`` raising :class:`KVMError`; a bytearray ``arg`` is read and written in place."""
    try:
        return fcntl.ioctl(fd, request, arg, True) if isinstance(arg, bytearray) else fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise KVMError(e.errno, f"{name or hex(request)}: {os.strerror(e.errno or 0)}") from None


def memory_region(slot: int, guest_phys: int, size: int, userspace_addr: int) -> bytearray:
    """struct kvm_userspace_memory_region (32 bytes; size 0 deletes the slot)."""
    return bytearray(struct.pack("<IIQQQ", slot, 0, guest_phys, size, userspace_addr))


def msrs(pairs: list[tuple[int, int]]) -> bytearray:
    """struct kvm_msrs with its entries (index, value)."""
    buf = bytearray(struct.pack("<II", len(pairs), 0))
    for index, value in pairs:
        buf += struct.pack("<IIQ", index, 0, value)
    return buf


def xcrs(xcr0: int) -> bytearray:
    """struct kvm_xcrs (392 bytes) setting XCR0."""
    buf = bytearray(392)
    struct.pack_into("<IIIIQ", buf, 0, 1, 0, 0, 0, xcr0)
    return buf


def supported_cpuid(kvm_fd: int) -> bytearray:
    """KVM_GET_SUPPORTED_CPUID as a struct kvm_cpuid2 buffer (nent set), ready
    for KVM_SET_CPUID2."""
    nent = 256
    buf = bytearray(8 + 40 * nent)
    struct.pack_into("<I", buf, 0, nent)
    ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID")
    n = struct.unpack_from("<I", buf)[0]
    return buf[: 8 + 40 * n]


def cpuid_entry(cpuid: bytes | bytearray, function: int, index: int = 0) -> tuple[int, int, int, int] | None:
    """(eax, ebx, ecx, edx) of one leaf in a kvm_cpuid2 buffer, or None."""
    n = struct.unpack_from("<I", cpuid)[0]
    for i in range(n):
        fn, idx, flags, a, b, c, d = struct.unpack_from("<7I", cpuid, 8 + 40 * i)
        if fn == function and (idx == index or not flags & 1):
            return a, b, c, d
    return None
