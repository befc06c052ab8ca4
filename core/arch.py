"""x86-64 register state in a platform-neutral form (gVisor ``pkg/sentry/arch``).

:class:`Registers` holds the general registers in the order of Linux's
``struct user_regs_struct`` (what PTRACE_GETREGS gives), FS and GS base
included, plus the floating-point/SSE/AVX state as an XSAVE image in the
standard (non-compacted) format (what PTRACE_GETREGSET NT_X86_XSTATE and
KVM_GET_XSAVE give). Every platform converts to and from this form, so a task
saved on one platform resumes on another.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

#: ``struct user_regs_struct`` field names, in order (27 u64).
REG_NAMES = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
    "ds", "es", "fs", "gs",
)
REG_INDEX = {name: i for i, name in enumerate(REG_NAMES)}
USER_REGS = struct.Struct("<27Q")

#: Linux's user-mode segment selectors (``__USER_CS``, ``__USER_DS``).
USER_CS, USER_DS = 0x33, 0x2B
#: EFLAGS at user entry: IF and the always-one bit 1.
EFLAGS_DEFAULT = 0x202

#: XSAVE image: 512-byte legacy FXSAVE area, 64-byte header, then extended
#: components; 4096 bytes covers x87, SSE, AVX (and AVX-512 on hosts with it).
XSAVE_SIZE = 4096
FXSAVE_SIZE = 512
MXCSR_DEFAULT = 0x1F80
FCW_DEFAULT = 0x37F


def default_xsave() -> bytearray:
    """The FP state of a new task (Linux ``fpstate_init``): FCW 0x37F, MXCSR 0x1F80,
    XSTATE_BV with x87 and SSE."""
    img = bytearray(XSAVE_SIZE)
    struct.pack_into("<H", img, 0, FCW_DEFAULT)
    struct.pack_into("<I", img, 24, MXCSR_DEFAULT)
    struct.pack_into("<I", img, 28, 0xFFFF)  # MXCSR_MASK
    struct.pack_into("<Q", img, 512, 0x3)  # XSTATE_BV: x87 | SSE
    return img


class Registers:
    """A task's user-mode registers: ``regs`` (27 u64, ``REG_NAMES`` order)
    and ``fpstate`` (an XSAVE image, :data:`XSAVE_SIZE` bytes).

    Attribute access by name (``r.rax``, ``r.rip = ...``) reads and writes
    ``regs``; values are kept as unsigned 64-bit.

    ``fp_pull`` lets a platform leave the FP state in the host after a switch:
    None, or a callable that fills the image it is given. Reading ``fpstate``
    calls it first (then clears it; if it raises, it stays); assigning
    ``fpstate`` clears it. (gVisor's ``PullFullState``, made implicit.)
    """

    __slots__ = ("_fpstate", "fp_pull", "regs")
    _fpstate: bytearray

    def __init__(self, regs: list[int] | None = None, fpstate: bytes | bytearray | None = None) -> None:
        self.regs: list[int] = list(regs) if regs is not None else [0] * len(REG_NAMES)
        self.fp_pull: Callable[[bytearray], None] | None = None
        self.fpstate = bytearray(fpstate) if fpstate is not None else default_xsave()

    @property
    def fpstate(self) -> bytearray:
        pull = self.fp_pull
        if pull is not None:
            pull(self._fpstate)
            object.__setattr__(self, "fp_pull", None)
        return self._fpstate

    @fpstate.setter
    def fpstate(self, value: bytearray) -> None:
        object.__setattr__(self, "fp_pull", None)
        object.__setattr__(self, "_fpstate", value)

    @classmethod
    def for_entry(cls, rip: int, rsp: int) -> Registers:
        """Registers for a new program: everything zero but rip, rsp and the
        user segments (zeroed rdx matters: glibc takes it as an atexit hook)."""
        r = cls()
        r.rip, r.rsp = rip, rsp
        r.cs, r.ss, r.ds, r.es = USER_CS, USER_DS, USER_DS, USER_DS
        r.eflags = EFLAGS_DEFAULT
        return r

    def pack(self) -> bytes:
        return USER_REGS.pack(*self.regs)

    @classmethod
    def unpack(cls, data: bytes, fpstate: bytes | bytearray | None = None) -> Registers:
        return cls(list(USER_REGS.unpack(data)), fpstate)

    def copy(self) -> Registers:
        return Registers(self.regs, self.fpstate)

    def __getattr__(self, name: str) -> int:
        try:
            return self.regs[REG_INDEX[name]]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: int) -> None:
        if name in Registers.__slots__ or name == "fpstate":
            object.__setattr__(self, name, value)
            return
        try:
            self.regs[REG_INDEX[name]] = value & 0xFFFFFFFFFFFFFFFF
        except KeyError:
            raise AttributeError(name) from None

    # System call convention (x86-64 Linux).
    def syscall_args(self) -> tuple[int, int, int, int, int, int]:
        """(rdi, rsi, rdx, r10, r8, r9)."""
        g = self.regs
        return (g[14], g[13], g[12], g[7], g[9], g[8])

    def __reduce__(self) -> tuple[type[Registers], tuple[list[int], bytes]]:
        """Pickled as this class whatever platform subclass holds them, so
        that an image restores on any platform."""
        return (Registers, (list(self.regs), bytes(self.fpstate)))

    def __getstate__(self) -> tuple[list[int], bytes]:
        return (self.regs, bytes(self.fpstate))

    def __setstate__(self, state: tuple[list[int], bytes]) -> None:
        object.__setattr__(self, "regs", list(state[0]))
        object.__setattr__(self, "fpstate", bytearray(state[1]))

    def __repr__(self) -> str:
        return f"<Registers rip={self.rip:#x} rsp={self.rsp:#x} rax={self.rax:#x}>"
