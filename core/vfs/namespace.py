"""Building the sandbox's mount namespace from the compiled mounts.

The seed's ``createMountNamespace``, ``createRootMount`` and ``mountSubmount``
(gVisor ``runsc/boot/fs.go``, commit 80bdf8a4):

1. The root filesystem is mounted; its submount destinations (plus ``/dev``,
   ``/sys``, ``/proc`` and ``/tmp``, always mounted) get stub directories in a
   small tmpfs tree, overlaid *under* the root, so that mount points exist
   without creating anything on the host. With ``--overlay`` a tmpfs upper
   layer then goes over it all, so no write reaches the host.
2. Each mount, in order, is mounted the same way (stub overlay for its own
   submounts; a tmpfs overlay over a writable bind mount with ``--overlay``)
   and attached at its destination.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from dataclasses import replace

from ..errors import ConfigError, PyrunscError, SyscallError
from ..kernel.auth import Credentials
from ..mounts import MountFlags, ResolvedMount, subtargets
from ..spec import Mount as SpecMount
from .filesystem import MountContext
from .inode import Superblock
from .mount import Dentry, Mount, MountNamespace
from .namei import FSContext, resolve
from .overlay import overlay_superblock, stub_tree, tmpfs_overlay

log = logging.getLogger("pyrunsc.vfs")

#: Mounted in every sandbox whether or not the spec asks (the seed).
ALWAYS_MOUNTED = ("/dev", "/sys", "/proc", "/tmp")


def _superblock(ctx: MountContext, r: ResolvedMount, flags: MountFlags) -> Superblock:
    fs = ctx.filesystems.get(r.fs_name)
    if fs is None:
        raise PyrunscError(f"mount at {r.mount.destination}: no filesystem {r.fs_name!r} is installed")
    try:
        return fs.mount(ctx, r.mount.source or "none", flags, ",".join(r.data))
    except SyscallError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR) and r.mount.type == "bind":
            file, field = r.mount.origin or (None, f"mount at {r.mount.destination}")
            what = "does not exist" if e.errno == errno.ENOENT else "is not a folder (only folders can be bound yet)"
            raise ConfigError(f"the source {r.mount.source!r} of the mount at {r.mount.destination} {what}",
                              file=file, field=field) from e
        raise PyrunscError(
            f"cannot mount {r.fs_name} at {r.mount.destination} (source {r.mount.source or 'none'!r}): {e}"
        ) from e


def _layered(
    ctx: MountContext, sb: Superblock, submounts: list[str], overlay: bool, flags: MountFlags
) -> tuple[Superblock, MountFlags]:
    """``sb`` with stub directories for ``submounts`` under it and, with
    ``overlay``, a tmpfs upper layer over it (the lower then read-only)."""
    if submounts:
        name = sb.fs_name
        sb = overlay_superblock(sb, stub_tree(ctx, submounts))
        # The stubs are an implementation detail: show the real type and links.
        sb.fs_name = name
        sb.merged_nlink_one = False
    if overlay:
        sb = tmpfs_overlay(ctx, sb)
        flags = replace(flags, read_only=False)
    return sb, flags


def build_mount_namespace(
    ctx: MountContext,
    root: ResolvedMount,
    mounts: Sequence[ResolvedMount],
    compiled: Sequence[SpecMount],
    *,
    root_sb: Superblock | None = None,
) -> MountNamespace:
    """The namespace for ``root`` and ``mounts`` (resolved, in compiled order).

    ``compiled`` is the whole compiled list (including mounts skipped for an
    unknown type, as the seed computes submounts over it). ``root_sb`` replaces
    mounting ``root`` (tests, restore). Raises PyrunscError naming the mount
    that failed.
    """
    sb = root_sb if root_sb is not None else _superblock(ctx, root, root.flags)
    root_base = sb
    root_subs = sorted(set(subtargets("/", compiled)) | {p.lstrip("/") for p in ALWAYS_MOUNTED})
    sb, root_flags = _layered(ctx, sb, root_subs, root.overlay, root.flags)
    ns = MountNamespace(
        Mount(sb, Dentry(sb.root()), root_flags, device=root.device, source=root.mount.source,
              data=",".join(root.data), base=root_base)
    )
    fs_ctx = FSContext(ns, ns.root, ns.root, Credentials())
    for r in mounts:
        flags = r.flags
        sb = base = _superblock(ctx, r, flags)
        sb, flags = _layered(ctx, sb, subtargets(r.mount.destination, compiled), r.overlay, flags)
        try:
            at = resolve(fs_ctx, ns.root, r.mount.destination)
        except SyscallError as e:
            raise PyrunscError(f"mount point {r.mount.destination} cannot be reached: {e}") from e
        if not at.inode.is_dir() and sb.root().is_dir():
            raise PyrunscError(
                f"mount at {r.mount.destination}: the mount point is not a directory",
            ) from SyscallError(errno.ENOTDIR)
        ns.attach(
            at,
            Mount(sb, Dentry(sb.root()), flags, device=r.device, source=r.mount.source or r.fs_name,
                  data=",".join(r.data), base=base),
        )
        log.info("mounted %s at %s", r.fs_name, r.mount.destination)
    return ns
