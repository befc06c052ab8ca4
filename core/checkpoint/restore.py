"""``pyrunsc restore``: a sandbox from an image (gVisor ``runsc/cmd/restore.go``,
``runsc/boot/restore.go``; ARCHITECTURE.md "Restore, step by step").

1. :func:`open_checked` (in the ``restore`` command, before anything runs):
   the image's MAC and format version are checked, and the new spec's
   compiled mounts are compared with the saved ones (:func:`mount_changes`):
   a mount may change its host ``source`` (migration), nothing else.
2. :func:`restore_sandbox` (in the new sandbox process): the memory file is
   filled from ``pages.img`` and every part's checksum checked, then the
   kernel is unpickled (:mod:`.state`), every mount is re-bound through the
   restore environment built from the new spec (:func:`rebind_mounts`: by
   filesystem name and device, e.g. ``9p`` and ``9pfs-/data``), the stdio
   descriptions are re-bound to this caller's, the clocks go on from where
   they stood, and each task gets a context and its address space again on
   this sandbox's platform. No new init process is made: the kernel's run
   loop resumes the saved tasks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ImageError, PyrunscError
from ..kernel import timers
from ..mm.memfile import MemoryFile
from ..mounts import FdDispenser, MountArgs, RestoreEnvironment, create_restore_environment
from ..spec import clean_path
from ..vfs.file import FileDescription
from ..vfs.filesystem import MountContext
from ..vfs.host import rebind_stdio
from ..vfs.mount import VirtualDentry
from .image import CheckpointImage, open_image
from .progress import Progress
from .state import load_kernel

if TYPE_CHECKING:
    from ..config import Config
    from ..kernel.kernel import Kernel
    from ..plugins import Plugins
    from ..spec import Spec as Spec

log = logging.getLogger("pyrunsc.restore")


def mark(phase: str) -> None:
    """A debug line on the restore's timeline, ``restore: PHASE at
    monotonic SECONDS`` (CLOCK_MONOTONIC: comparable across the restore's
    processes; ``benchmarks/checkpoint_restore.py`` reads them)."""
    log.debug("restore: %s at monotonic %.6f", phase, time.monotonic())


#: Fields of a compiled mount that must be the same on restore (``source``
#: and ``data`` may change: a moved host folder, new gofer connections).
COMPARED = ("type", "filesystem", "device", "flags", "overlay")


def mount_changes(saved: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[str]:
    """What differs between the saved and the new compiled mounts (rows of
    :func:`~..mounts.mount_rows`, the root first), one line per mount
    naming its destination; [] when the new mounts can take the saved ones'
    place. A changed ``source`` is allowed."""
    problems = []
    old_by = {clean_path(str(m.get("destination"))): m for m in saved}
    new_by = {clean_path(str(m.get("destination"))): m for m in new}
    for dest, m in old_by.items():
        n = new_by.get(dest)
        if n is None:
            problems.append(f"mount at {dest}: in the image, not in the new spec (removed)")
            continue
        for key in COMPARED:
            a, b = m.get(key), n.get(key)
            if a != b:
                problems.append(f"mount at {dest}: {_describe(key, a, b)}")
    for dest in new_by:
        if dest not in old_by:
            problems.append(f"mount at {dest}: in the new spec, not in the image (added)")
    if not problems and list(old_by) != list(new_by):
        problems.append("the mounts are in another order than in the image")
    return problems


def _describe(key: str, saved: Any, new: Any) -> str:
    if key == "flags":
        a, b = set(saved or ()), set(new or ())
        if ("ro" in a) != ("ro" in b):
            where = "the image" if "ro" in a else "the new spec"
            return f"read-only in {where} only (flags {_flags(saved)} in the image, {_flags(new)} now)"
        return f"flags differ ({_flags(saved)} in the image, {_flags(new)} now)"
    hint = " (another --file-access than at the checkpoint?)" if key == "filesystem" else ""
    return f"{key} differs ({saved!r} in the image, {new!r} now){hint}"


def _flags(flags: Any) -> str:
    return ",".join(flags) if flags else "none"


def open_checked(path: Path, key: bytes, new_mounts: Sequence[Mapping[str, Any]]) -> CheckpointImage:
    """The image at ``path``, its MAC and version checked, and its mounts
    matched against ``new_mounts``. ImageError (exit 2) for a bad image;
    ConfigError (exit 2) naming each mount that differs."""
    image = open_image(path, key=key)
    saved = image.header.get("mounts")
    if not isinstance(saved, list):
        raise ImageError("the header has no mount list", file=os.fspath(path))
    problems = mount_changes(saved, new_mounts)
    if problems:
        raise ConfigError(
            "the new spec's mounts do not match the image's: " + "; ".join(problems)
            + " (only a mount's host source may change)",
            file=os.fspath(path),
        )
    return image


def _pop_source(renv: RestoreEnvironment, fs_name: str, device: str) -> MountArgs | None:
    """The next mount source recorded under ``fs_name`` with ``device``."""
    sources = renv.mount_sources.get(fs_name, [])
    for i, args in enumerate(sources):
        if args.dev == device:
            return sources.pop(i)
    return None


def rebind_mounts(kernel: Kernel, renv: RestoreEnvironment, ctx: MountContext,
                  sources: Mapping[str, str]) -> None:
    """Re-bind every mount of the restored ``kernel`` to its source in
    ``renv`` (the seed's restore: each saved mount takes the next
    ``MountArgs`` with its device under its filesystem name). A filesystem
    with host state re-opens it (its superblock's ``reconnect(ctx, data,
    source)``); one whose contents are in the memory file (tmpfs) or made by
    the sentry (proc, sys, dev) needs nothing. ``sources`` maps each
    destination to its new host source. PyrunscError naming the mount when
    none matches or re-binding fails."""
    for mount in kernel.ns.mounts():
        dest = kernel.ns.path(VirtualDentry(mount, mount.root))
        base = mount.base
        args = _pop_source(renv, base.fs_name, mount.device)
        if args is None:
            raise PyrunscError(f"mount at {dest}: no {base.fs_name} source with device {mount.device!r} "
                               "in the restore environment")
        reconnect = getattr(base, "reconnect", None)
        if reconnect is None:
            continue
        source = sources.get(dest, mount.source)
        reconnect(ctx, args.data, source)
        mount.source, mount.data = source, args.data
        log.info("re-bound %s at %s to %s", base.fs_name, dest, source)


def descriptions(kernel: Kernel) -> Iterator[FileDescription]:
    """Every file description in the live tasks' FD tables."""
    for task in kernel.tasks.values():
        if task.exit_status is None:
            for _, desc, _ in task.fdtable:
                yield desc


def restore_kernel(plugins: Plugins, spec: Spec, config: Config, image: CheckpointImage,
                   mounts: Sequence[Mapping[str, Any]], *, gofer_fds: list[int] | None = None,
                   stdio: tuple[int, int, int] = (0, 1, 2),
                   progress: Progress | None = None) -> tuple[Kernel, MemoryFile]:
    """The kernel of ``image``, ready to resume on a new platform of
    ``config``'s kind, with ``spec``'s mounts (``mounts``: its compiled
    mounts as :func:`~..mounts.mount_rows` gives them, for their host
    sources; served over ``gofer_fds``) and ``stdio``. The caller runs it
    (``kernel.run()``) and closes the platform and memory file. ImageError
    for a bad part; PyrunscError (or a plugin's) for a mount that cannot be
    re-bound."""
    memory = image.header.get("memory")
    size = memory.get("file_size") if isinstance(memory, dict) else None
    if not isinstance(size, int) or size <= 0:
        raise ImageError(f"bad memory file size {size!r} in the header", file=os.fspath(image.path))
    memfile = MemoryFile(size=size)
    platform = None
    try:
        mark("loading the pages")
        blob = image.load(memfile, progress=progress)
        mark("pages loaded")
        platform = plugins.platform_create(config)
        platform.start(memfile)
        mark("platform started")
        kernel = load_kernel(blob, memfile, platform)
        kernel.strace = config.strace  # this run's setting, not the checkpointed one's
        mark("kernel unpickled")
        fds = FdDispenser(gofer_fds) if gofer_fds is not None else FdDispenser()
        renv = create_restore_environment(plugins, spec, config, fds)
        ctx = MountContext(kernel.vfs, memfile, filesystems=dict(plugins.registry.filesystems), kernel=kernel)
        rebind_mounts(kernel, renv, ctx, {clean_path(r["destination"]): r["source"] for r in mounts})
        rebind_stdio(descriptions(kernel), stdio)
        kernel.attach_platform(platform)
        timers.reschedule(kernel)
        plugins.after_restore(kernel, renv, dict(image.header))
        mark("mounts and stdio re-bound")
        return kernel, memfile
    except BaseException:
        if platform is not None:
            platform.close()
        memfile.close()
        raise
