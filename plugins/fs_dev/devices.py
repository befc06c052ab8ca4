"""The character devices the sentry serves, registered with a VFS's
DeviceRegistry (Linux ``register_chrdev``; gVisor ``vfs.RegisterDevice``), so
that a device node opens as the same device on any filesystem (devtmpfs,
tmpfs after ``mknod c 1 3``, a 9p root).

=========== ======= ===============================================================
node        dev     opens as
=========== ======= ===============================================================
null        1:3     :mod:`.memdev`
zero        1:5     :mod:`.memdev`
full        1:7     :mod:`.memdev`
random      1:8     :mod:`.memdev`
urandom     1:9     :mod:`.memdev`
tty         5:0     the opener's controlling terminal; ENXIO without one (Linux
                    ``tty_open_current_tty``). The kernel provides it through
                    :attr:`DevState.controlling_tty` (processes issue).
console     5:1     the system console; ENODEV without one (Linux
                    ``tty_lookup_driver``). The kernel may set :attr:`DevState.console`.
ptmx        5:2     a new pty master: on the devpts instance the node belongs
                    to (``/dev/pts/ptmx``), else on the kernel's first devpts
                    instance (the one the loader mounts at ``/dev/pts``);
                    ENODEV when there is none.
pts/N       136:N   the slave of pty N (:func:`.devpts.open_pts`), registered
                    as each pty is allocated.
=========== ======= ===============================================================

The state behind these openers is one :class:`DevState` per DeviceRegistry
(that is, per kernel); :func:`install_devices` makes it and registers the
openers once, however many times devtmpfs and devpts are mounted.
"""

from __future__ import annotations

import errno
import weakref
from typing import TYPE_CHECKING, Any

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.vfs.file import FileDescription, FileOps

from .devpts import PTMX_MINOR, TTYAUX_MAJOR, DevptsSuperblock
from .memdev import MEM_DEVICES, MEM_MAJOR

if TYPE_CHECKING:
    from pyrunsc.core.vfs.vfs import DeviceOpener, DeviceRegistry, VirtualFilesystem

TTY_MINOR, CONSOLE_MINOR = 0, 1

_STATES: weakref.WeakKeyDictionary[DeviceRegistry, DevState] = weakref.WeakKeyDictionary()


class DevState:
    """What the sentry's devices share within one kernel.

    ``initial_devpts``: the devpts instance ``/dev/ptmx`` opens on (the first
    mounted). ``controlling_tty``: called to open ``/dev/tty`` (the kernel
    finds the calling task's controlling terminal), None until processes exist.
    ``console``: the opener of ``/dev/console``, None when there is none.
    """

    def __init__(self, registry: DeviceRegistry) -> None:
        self.registry = registry
        self.initial_devpts: DevptsSuperblock | None = None
        self.controlling_tty: DeviceOpener | None = None
        self.console: DeviceOpener | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A restored kernel finds its state again (the weak map is not saved).
        self.__dict__.update(state)
        _STATES[self.registry] = self

    def open_tty(self, fd: FileDescription) -> FileOps:
        """/dev/tty: ENXIO without a controlling terminal."""
        if self.controlling_tty is None:
            raise SyscallError(errno.ENXIO)
        return self.controlling_tty(fd)

    def open_console(self, fd: FileDescription) -> FileOps:
        """/dev/console: ENODEV without a console."""
        if self.console is None:
            raise SyscallError(errno.ENODEV)
        return self.console(fd)

    def open_ptmx(self, fd: FileDescription) -> FileOps:
        """/dev/ptmx or /dev/pts/ptmx: a new pty master; ENODEV without devpts,
        ENOSPC when the instance's ``max`` ptys are open."""
        sb = fd.inode.sb
        if not isinstance(sb, DevptsSuperblock):
            if self.initial_devpts is None:
                raise SyscallError(errno.ENODEV, "no devpts is mounted")
            sb = self.initial_devpts
        return sb.new_pty()


def dev_state(vfs: VirtualFilesystem) -> DevState:
    """The device state of ``vfs``'s kernel, with its devices registered."""
    return install_devices(vfs.devices)


def install_devices(registry: DeviceRegistry) -> DevState:
    """Register the sentry's character devices with ``registry`` (once) and
    return their state. Idempotent."""
    state = _STATES.get(registry)
    if state is not None:
        return state
    state = DevState(registry)
    for minor, _name, opener in MEM_DEVICES:
        registry.register(MEM_MAJOR, minor, opener)
    registry.register(TTYAUX_MAJOR, TTY_MINOR, state.open_tty)
    registry.register(TTYAUX_MAJOR, CONSOLE_MINOR, state.open_console)
    registry.register(TTYAUX_MAJOR, PTMX_MINOR, state.open_ptmx)
    _STATES[registry] = state
    return state
