"""Saving and loading the kernel's object graph (gVisor ``pkg/sentry/state``).

The kernel is pickled with cloudpickle, except for what belongs to the host
and this run of the sentry, which is saved by reference (pickle's
``persistent_id``) and supplied anew on load:

- the :class:`~..mm.memfile.MemoryFile`: its pages travel in ``pages.img``;
  only its allocator state (which ranges are free) is in the blob;
- the :class:`~..platform.Platform`: the restoring sandbox's own, perhaps
  another kind (registers and memory are platform-neutral);
- every :class:`~..platform.Context` and :class:`~..platform.AddressSpace`:
  loaded as None, then rebuilt by :meth:`Kernel.attach_platform`.

Host fds held by filesystems are dropped by their own ``__getstate__`` and
re-opened when their mounts are re-bound (:mod:`.restore`). Counters kept
on classes (mount ids, anonymous device numbers) are saved too, so objects
made after a restore never take a restored one's number.

The blob is unpickled only after the image's MAC and checksums were
verified (:meth:`.image.CheckpointImage.load`): unpickling runs code.
"""

from __future__ import annotations

import io
import itertools
import pickle
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..mm.memfile import MemoryFile
from ..platform import AddressSpace, Context, Platform
from ..vfs.inode import Superblock
from ..vfs.mount import Mount

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

#: What is saved by reference, by its persistent id.
_MEMFILE, _PLATFORM, _CONTEXT, _ASPACE = "memfile", "platform", "context", "aspace"


class _KernelPickler(cloudpickle.Pickler):  # type: ignore[misc]
    def __init__(self, file: io.BytesIO, memfile: MemoryFile) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.memfile = memfile

    def persistent_id(self, obj: object) -> str | None:
        if isinstance(obj, MemoryFile):
            if obj is not self.memfile:
                raise pickle.PicklingError("the kernel refers to a memory file that is not its own")
            return _MEMFILE
        if isinstance(obj, Platform):
            return _PLATFORM
        if isinstance(obj, Context):
            return _CONTEXT
        if isinstance(obj, AddressSpace):
            return _ASPACE
        return None


class _KernelUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, memfile: MemoryFile, platform: Platform) -> None:
        super().__init__(file)
        self.memfile = memfile
        self.platform = platform

    def persistent_load(self, pid: object) -> object:
        if pid == _MEMFILE:
            return self.memfile
        if pid == _PLATFORM:
            return self.platform
        if pid in (_CONTEXT, _ASPACE):
            return None
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def save_kernel(kernel: Kernel) -> bytes:
    """The kernel's object graph as bytes. Call it at a safe point of the run
    loop: no task in a system call or in application code. TypeError or
    pickle.PicklingError when an object cannot be saved (the message names it)."""
    buf = io.BytesIO()
    payload: dict[str, Any] = {
        "kernel": kernel,
        "memfile": kernel.memfile.allocator_state(),
        "mount_id": _next_mount_id(),
        "next_dev": Superblock._next_dev,
    }
    _KernelPickler(buf, kernel.memfile).dump(payload)
    return buf.getvalue()


def load_kernel(blob: bytes, memfile: MemoryFile, platform: Platform) -> Kernel:
    """The kernel saved by :func:`save_kernel`, its memory in ``memfile``
    (pages already loaded) and ``platform`` in place of the saved one. The
    caller then re-binds mounts and stdio and calls
    :meth:`Kernel.attach_platform`. ``blob`` must have been verified."""
    payload = _KernelUnpickler(io.BytesIO(blob), memfile, platform).load()
    memfile.set_allocator_state(payload["memfile"])
    Mount._ids = itertools.count(max(_next_mount_id(), payload["mount_id"]))
    Superblock._next_dev = max(Superblock._next_dev, payload["next_dev"])
    kernel: Kernel = payload["kernel"]
    return kernel


def _next_mount_id() -> int:
    """The id the next mount will get (the counter is left as it was)."""
    value = next(Mount._ids)
    Mount._ids = itertools.count(value)
    return value
