"""platform_ptrace: application code in traced stub processes under
``PTRACE_SYSEMU`` (gVisor ``pkg/sentry/platform/ptrace``)."""

from __future__ import annotations

import os
import platform as host

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.platform import Platform
from pyrunsc.core.plugins import Register

YAMA_PTRACE_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"


class PtracePlatform(Platform):
    """The ptrace platform: one stub process per address space."""

    name = "ptrace"

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


@hookimpl
def register_types(register: Register) -> None:
    register.add_platform(PtracePlatform)
