"""The contract between the kernel and platform plugins.

A platform runs application code and reports back on each system call, fault or
interrupt (gVisor ``pkg/sentry/platform/platform.go``). Platform plugins
contribute :class:`Platform` subclasses through the ``register_types`` hook
(``register.add_platform(PtracePlatform)``); the ``platform_create`` hook builds
the one that a :class:`~.config.Config` names.

The kernel never knows which platform it runs on:

- all application memory is in the sandbox's :class:`~.mm.memfile.MemoryFile`;
  an :class:`AddressSpace` maps ranges of it at virtual addresses with given
  protections (always as shared mappings of the file: copy-on-write and
  private memory are the kernel's business);
- a :class:`Context` runs a task's :class:`~.arch.Registers` in an address
  space until the next system call, fault or interrupt, and reports which.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .arch import Registers
    from .config import Config
    from .mm.memfile import MemoryFile

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4


class Stop(enum.Enum):
    """Why :meth:`Context.switch` returned."""

    #: The task made a system call: ``regs.orig_rax`` is its number, ``regs.rip``
    #: is past the ``syscall`` instruction; the kernel sets ``regs.rax``.
    SYSCALL = "syscall"
    #: The task faulted; :class:`Fault` says how.
    FAULT = "fault"
    #: :meth:`Context.interrupt` was called (a signal to deliver, a preemption).
    INTERRUPT = "interrupt"


@dataclass
class Fault:
    """A synchronous fault, as the signal Linux would send: ``signo`` (SIGSEGV,
    SIGBUS, SIGILL, SIGFPE, SIGTRAP), ``code`` (``si_code``), ``addr`` (``si_addr``),
    and for SIGSEGV whether it was a write / an instruction fetch."""

    signo: int
    code: int = 0
    addr: int = 0
    write: bool = False
    exec: bool = False


class AddressSpace:
    """Where a task's memory is mapped on the platform (one per ``mm``).

    Addresses and lengths are page-aligned bytes. ``map`` replaces whatever was
    mapped in the range (MAP_FIXED semantics).
    """

    def map(self, addr: int, length: int, offset: int, prot: int) -> None:
        """Map memory-file bytes [offset, offset+length) at ``addr`` with ``prot``."""
        raise NotImplementedError

    def unmap(self, addr: int, length: int) -> None:
        raise NotImplementedError

    def protect(self, addr: int, length: int, prot: int) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """Free the platform's resources (a stub process, page tables)."""


class Context:
    """Runs tasks: one per task thread (ptrace: a stub thread; kvm: a vCPU)."""

    def switch(self, aspace: AddressSpace, regs: Registers) -> tuple[Stop, Fault | None]:
        """Run ``regs`` in ``aspace`` until a system call, fault or interrupt;
        ``regs`` is updated in place with the state at that point."""
        raise NotImplementedError

    def interrupt(self) -> None:
        """Make a running (or the next) :meth:`switch` return INTERRUPT soon;
        safe to call from another thread or a signal handler."""

    def release(self) -> None:
        """Free the platform's resources for this context."""


class Platform:
    """A way to run application code; subclass it in a plugin.

    ``name`` is what ``--platform`` and ``runtime.platform`` select. A platform
    is created once per sandbox with its config and memory file.
    """

    name: ClassVar[str] = ""
    #: Whether the kernel may preempt a task that computes without system
    #: calls by :meth:`Context.interrupt` at any instruction (a timer thread
    #: does so every 10 ms). A platform that cannot resume such a task
    #: faithfully yet says False.
    preemptible: ClassVar[bool] = True

    @classmethod
    def probe(cls) -> str | None:
        """None when this platform can run on this host, else why not (one line).

        Must be cheap and must not leave anything open; ``pyrunsc plugins``
        calls it for every platform.
        """
        return None

    def __init__(self, config: Config) -> None:
        self.config = config

    def start(self, memfile: MemoryFile) -> None:
        """Prepare to run tasks whose memory is ``memfile`` (called once, before
        any address space or context is made)."""
        raise NotImplementedError

    def new_address_space(self) -> AddressSpace:
        raise NotImplementedError

    def new_context(self) -> Context:
        raise NotImplementedError

    def close(self) -> None:
        """Release everything; no host process or fd of the platform survives."""
