"""platform_kvm: application code in a ``/dev/kvm`` guest at user privilege
(gVisor ``pkg/sentry/platform/kvm``)."""

from __future__ import annotations

import errno
import fcntl
import os

from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.platform import Platform
from pyrunsc.core.plugins import Register

DEV_KVM = "/dev/kvm"
KVM_GET_API_VERSION = 0xAE00
#: The only KVM API version there has ever been (Linux ``KVM_API_VERSION``).
KVM_API_VERSION = 12


class KVMPlatform(Platform):
    """The KVM platform: vCPUs run application code; exits come to the sentry."""

    name = "kvm"

    @classmethod
    def probe(cls) -> str | None:
        try:
            fd = os.open(DEV_KVM, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return f"{DEV_KVM} does not exist (no KVM on this host)"
        except PermissionError:
            return f"no permission to open {DEV_KVM} (add the user to the kvm group)"
        except OSError as e:
            return f"cannot open {DEV_KVM}: {errno.errorcode.get(e.errno or 0, e.errno)}"
        try:
            version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        except OSError as e:
            return f"KVM_GET_API_VERSION failed: {e.strerror}"
        finally:
            os.close(fd)
        if version != KVM_API_VERSION:
            return f"KVM API version {version}, need {KVM_API_VERSION}"
        return None


@hookimpl
def register_types(register: Register) -> None:
    register.add_platform(KVMPlatform)
