"""The sentry's side of ``pyrunsc checkpoint`` (gVisor ``runsc/cmd/checkpoint.go``
and ``kernel.SaveTo``).

The request reaches the sandbox's control channel and runs in the run loop
at a safe point (:meth:`Kernel.call_in_loop`): no task is in a system call
or in application code, so every task's registers, signal state and
blocked call are in the kernel's objects. There the header is made, the
``before_checkpoint`` hook is called, the kernel is pickled
(:mod:`.state`) and the image written (:func:`.image.write_image`: to a
temporary folder, renamed when complete). Then, unless the sandbox is to
keep running, the run loop ends (:meth:`Kernel.halt`): the container
stops with status 0, as a checkpointed runsc container does.

A checkpoint that fails leaves no image and the sandbox running.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..kernel.kernel import ExitStatus, Kernel
from ..mm.memfile import PAGE_SIZE
from ..vfs.mount import VirtualDentry
from .image import new_header, write_image
from .progress import Progress
from .state import save_kernel

if TYPE_CHECKING:
    from ..plugins import Plugins

log = logging.getLogger("pyrunsc.checkpoint")


@dataclass
class SandboxFacts:
    """What the sandbox process knows of its container, for the header:
    its ID, platform, spec digest, and compiled mounts
    (:func:`~..mounts.mount_rows`, the root first)."""

    container_id: str
    platform: str
    spec_digest: str
    mounts: Sequence[Mapping[str, Any]]
    plugins: Plugins | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointRequest:
    """What ``pyrunsc checkpoint`` asks: where (an absolute path), the image
    key, ``none`` or ``zstd`` compression, and whether the sandbox keeps
    running afterwards."""

    image_path: str
    key: bytes
    compression: str = "none"
    leave_running: bool = False


def task_rows(kernel: Kernel) -> list[dict[str, Any]]:
    """One row per process, live or zombie, by PID: pid, ppid, threads,
    state and command, for the header's ``tasks``."""
    rows = []
    for tid in sorted(kernel.tasks):
        task = kernel.tasks[tid]
        tg = task.tg
        if tg.tgid != tid:
            continue
        live = tg.live_tasks
        rows.append({
            "pid": tg.tgid,
            "ppid": tg.parent.tgid if tg.parent is not None else 0,
            "threads": len(live) or 1,
            "state": "Z" if tg.exit_status is not None else kernel.task_state(live[0] if live else task),
            "command": tg.leader.comm,
        })
    return rows


def tmpfs_rows(kernel: Kernel) -> list[dict[str, Any]]:
    """The bytes each tmpfs mount holds (its pages in the memory file)."""
    rows = []
    for mount in kernel.ns.mounts():
        used = getattr(mount.base, "used_pages", None)
        if isinstance(used, int):
            rows.append({"destination": kernel.ns.path(VirtualDentry(mount, mount.root)),
                         "bytes": used * PAGE_SIZE})
    return rows


def checkpoint(kernel: Kernel, facts: SandboxFacts, request: CheckpointRequest,
               progress: Progress | None = None) -> dict[str, Any]:
    """Write the image of ``kernel`` as ``request`` asks; run-loop thread,
    at a safe point. Returns a summary: ``image``, ``memory_saved``,
    ``memory_committed`` and ``kernel_bytes`` (bytes), ``processes``,
    ``stopped``, and ``seconds``, the time it took here (from the safe point
    to the image in place; the debug log has its parts).

    Raises ImageError (the folder exists), PyrunscError (it cannot be
    written), PluginError (a ``before_checkpoint`` hook failed); the
    sandbox then goes on running and no image is left.
    """
    t0 = time.perf_counter()
    header = new_header(
        container_id=facts.container_id, platform=facts.platform, spec_digest=facts.spec_digest,
        mounts=facts.mounts, tasks=task_rows(kernel), tmpfs=tmpfs_rows(kernel),
    )
    if facts.plugins is not None:
        facts.plugins.before_checkpoint(kernel, header)
    t1 = time.perf_counter()
    blob = save_kernel(kernel)
    t2 = time.perf_counter()
    full = write_image(Path(request.image_path), header, blob, kernel.memfile, key=request.key,
                       compression=request.compression, progress=progress)
    t3 = time.perf_counter()
    log.debug("checkpoint: header %.1f ms, kernel pickled %.1f ms (%d bytes), image written %.1f ms",
              (t1 - t0) * 1e3, (t2 - t1) * 1e3, len(blob), (t3 - t2) * 1e3)
    if not request.leave_running:
        kernel.halt(ExitStatus())
    return {
        "image": os.fspath(request.image_path),
        "memory_saved": full["memory"]["saved"],
        "memory_committed": full["memory"]["committed"],
        "kernel_bytes": len(blob),
        "processes": len(header["tasks"]),
        "stopped": not request.leave_running,
        "seconds": round(t3 - t0, 6),
    }
