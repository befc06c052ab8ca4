"""platform_ptrace: application code in traced stub processes under
``PTRACE_SYSEMU`` (gVisor ``pkg/sentry/platform/ptrace``).

Modules: :mod:`.ptrace` (ctypes bindings), :mod:`.stub` (the hand-made stub
ELF, a traced stub process and its threads), :mod:`.platform` (the Platform,
AddressSpace and Context), :mod:`.lazyfp` (Registers with the lazy-FP hook).
Every stub reserves [:data:`STUB_START`, :data:`STUB_END`) at the top of user
space (``PtracePlatform.reserved``).
"""

from __future__ import annotations

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.plugins import Register

from .platform import YAMA_PTRACE_SCOPE, PtraceAddressSpace, PtraceContext, PtracePlatform
from .stub import MAX_USER_ADDRESS, STUB_END, STUB_START, InjectedSyscallError, StubError

__all__ = [
    "MAX_USER_ADDRESS",
    "STUB_END",
    "STUB_START",
    "YAMA_PTRACE_SCOPE",
    "InjectedSyscallError",
    "PtraceAddressSpace",
    "PtraceContext",
    "PtracePlatform",
    "StubError",
]


@hookimpl
def register_types(register: Register) -> None:
    register.add_platform(PtracePlatform)
