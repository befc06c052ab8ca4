"""platform_kvm: application code in a ``/dev/kvm`` guest at user privilege
(gVisor ``pkg/sentry/platform/kvm``).

Modules: :mod:`.kvm` (ioctl numbers, layouts, ctypes), :mod:`.machine` (the
guest's layout, descriptor tables, exception stubs, page tables and the two
system-call entries), :mod:`.platform` (Platform, AddressSpace, Context).
The guest "kernel" pages take [:data:`KERNEL_START`, :data:`KERNEL_END`)
(``KVMPlatform.reserved``).
"""

from __future__ import annotations

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.plugins import Register

from .kvm import KVMError
from .machine import KERNEL_END, KERNEL_START, PvmEntry, PvmPortEntry, Ring0Entry
from .platform import (
    DEV_KVM,
    ENTRY_ENV,
    KVM_API_VERSION,
    SIGNAL_INTERRUPT,
    GuestError,
    KVMAddressSpace,
    KVMContext,
    KVMPlatform,
)

__all__ = [
    "DEV_KVM",
    "ENTRY_ENV",
    "KERNEL_END",
    "KERNEL_START",
    "KVM_API_VERSION",
    "SIGNAL_INTERRUPT",
    "GuestError",
    "KVMAddressSpace",
    "KVMContext",
    "KVMError",
    "KVMPlatform",
    "PvmEntry",
    "PvmPortEntry",
    "Ring0Entry",
]


@hookimpl
def register_types(register: Register) -> None:
    register.add_platform(KVMPlatform)
