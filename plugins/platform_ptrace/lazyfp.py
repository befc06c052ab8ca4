"""Registers with the lazy-FP hook that the ptrace platform can use.

Reading the XSAVE image back after every context switch costs one more
ptrace call (PTRACE_GETREGSET NT_X86_XSTATE, about 2 µs here, as much as
PTRACE_GETREGS). With this hook the platform leaves the image in the stub
after a switch and sets ``fp_pull``; the image is read when something reads
``fpstate`` (signal delivery, fork, a checkpoint), or when another task's
image must go into that stub, or the stub is released. gVisor's KVM and
systrap platforms do the same through ``PullFullState``.

The hook, as proposed for ``pyrunsc.core.arch.Registers`` itself:

- ``fp_pull``: None, or a callable that fills the bytearray it is given with
  the current image (it may raise; the hook then stays set);
- reading ``fpstate`` calls ``fp_pull`` (if set) on the stored image, then
  clears it; assigning ``fpstate`` clears it.

Any Registers class with an ``fp_pull`` attribute gets lazy FP from the
platform; others get the image read back after every switch. Pulls must
happen in the tracer thread (the platform raises RuntimeError otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

from pyrunsc.core.arch import Registers


class LazyFPRegisters(Registers):
    """:class:`~pyrunsc.core.arch.Registers` with the lazy-FP hook (see the module docs)."""

    __slots__ = ("fp_pull",)
    fp_pull: Callable[[bytearray], None] | None

    def __init__(self, regs: list[int] | None = None, fpstate: bytes | bytearray | None = None) -> None:
        object.__setattr__(self, "fp_pull", None)
        super().__init__(regs, fpstate)

    @property
    def fpstate(self) -> bytearray:
        image: bytearray = _BASE_FPSTATE.__get__(self)
        pull: Callable[[bytearray], None] | None = self.fp_pull
        if pull is not None:
            pull(image)
            object.__setattr__(self, "fp_pull", None)
        return image

    @fpstate.setter
    def fpstate(self, value: bytearray) -> None:
        object.__setattr__(self, "fp_pull", None)
        _BASE_FPSTATE.__set__(self, value)


#: Registers' own slot for the image (the property above shadows it).
_BASE_FPSTATE = Registers.__dict__["fpstate"]
