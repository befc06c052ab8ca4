"""Dentries, mounts and the mount namespace (Linux ``fs/dcache.c``,
``fs/namespace.c``; gVisor ``vfs.Dentry``, ``vfs.Mount``, ``vfs.MountNamespace``).

A :class:`Dentry` names an inode within one superblock's tree and caches its
looked-up children. A :class:`Mount` attaches a superblock's root dentry at a
(mount, dentry) point of its parent; a :class:`VirtualDentry` is such a pair,
which is what a path resolves to.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from ..errors import SyscallError

if TYPE_CHECKING:
    from ..mounts import MountFlags
    from .inode import Inode, Superblock


class Dentry:
    """A name for an inode in one superblock's tree.

    ``parent`` is None only for a superblock's root. ``children`` caches
    looked-up names; ``mounts`` counts mounts whose mount point is this dentry.
    ``dead`` is set once the name is unlinked, so open files and cwds that
    still hold it see a deleted path.
    """

    __slots__ = ("children", "dead", "inode", "mounts", "name", "parent")

    def __init__(self, inode: Inode, name: str = "", parent: Dentry | None = None) -> None:
        self.inode = inode
        self.name = name
        self.parent = parent
        self.children: dict[str, Dentry] = {}
        self.mounts = 0
        self.dead = False

    def child(self, name: str) -> Dentry:
        """The child ``name``, looked up through the inode on a cache miss
        (or when the superblock does not cache, e.g. proc); ENOENT if absent."""
        cached = self.children.get(name)
        if cached is not None and (self.inode.sb.cache_dentries or cached.mounts):
            return cached
        try:
            inode = self.inode.lookup(name)
        except SyscallError as e:
            if cached is not None and e.errno == errno.ENOENT:
                self.drop(name)  # gone by itself (a proc pid): forget it
            raise
        if cached is not None and cached.inode is inode:
            return cached
        d = Dentry(inode, name, self)
        self.children[name] = d
        if not self.inode.sb.cache_dentries:
            self._forget_gone()
        return d

    def _forget_gone(self) -> None:
        """Drop cached children that nothing mounts on and whose inode is
        gone. Without this a superblock that does not cache dentries kept
        the dentry (and through it the task) of every /proc/<pid> ever
        looked up: a name that is never looked up again was never dropped,
        so a shell loop grew the sentry's memory and every checkpoint image
        without bound. Swept when the count reaches a power of two (from
        16), so that it costs O(1) per lookup amortized."""
        n = len(self.children)
        if n < 16 or n & (n - 1):
            return
        for name in [k for k, c in self.children.items() if not c.mounts and c.inode.gone()]:
            self.drop(name)

    def add(self, name: str, inode: Inode) -> Dentry:
        """Cache a child the VFS just created."""
        d = Dentry(inode, name, self)
        self.children[name] = d
        return d

    def drop(self, name: str) -> None:
        """Forget the child ``name`` (unlinked or renamed away)."""
        d = self.children.pop(name, None)
        if d is not None:
            d.dead = True

    def is_ancestor_of(self, other: Dentry) -> bool:
        """True when ``other`` is this dentry or below it."""
        d: Dentry | None = other
        while d is not None:
            if d is self:
                return True
            d = d.parent
        return False

    def __repr__(self) -> str:
        return f"<Dentry {self.name!r} ino={self.inode.ino}>"


class Mount:
    """A superblock attached at a point of the namespace.

    ``device`` is the mount's device string (``9pfs-/data``, ``none``),
    ``source`` what /proc/mounts shows first, ``flags`` its MountFlags.
    ``base`` is the filesystem's own superblock under any layers the boot
    loader put over it (stub folders, a tmpfs overlay): what a restore
    re-binds to its new source, found by ``base.fs_name`` and ``device``.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        sb: Superblock,
        root: Dentry,
        flags: MountFlags,
        *,
        device: str = "none",
        source: str = "none",
        data: str = "",
        parent: Mount | None = None,
        mountpoint: Dentry | None = None,
        base: Superblock | None = None,
    ) -> None:
        self.id = next(Mount._ids)
        self.sb = sb
        self.base = base if base is not None else sb
        self.root = root
        self.flags = flags
        self.device = device
        self.source = source
        self.data = data
        self.parent = parent
        self.mountpoint = mountpoint

    @property
    def read_only(self) -> bool:
        return self.flags.read_only or self.sb.read_only

    def __repr__(self) -> str:
        return f"<Mount {self.id} {self.sb.fs_name} on {self.mountpoint!r}>"


class VirtualDentry(NamedTuple):
    """A (mount, dentry) pair: where a path leads."""

    mount: Mount
    dentry: Dentry

    @property
    def inode(self) -> Inode:
        return self.dentry.inode


class MountNamespace:
    """A tree of mounts (Linux ``struct mnt_namespace``).

    Mounts stack: mounting on a point that already has a mount hides it, as
    Linux does; :meth:`mount_at` gives the topmost.
    """

    def __init__(self, root: Mount) -> None:
        self.root_mount = root
        self._on: dict[tuple[Mount, Dentry], Mount] = {}
        self._order: list[Mount] = [root]

    @property
    def root(self) -> VirtualDentry:
        return VirtualDentry(self.root_mount, self.root_mount.root)

    def attach(self, at: VirtualDentry, mount: Mount) -> None:
        """Attach ``mount`` at ``at`` (resolved through mounts already there)."""
        at = self.follow_mounts(at)
        mount.parent, mount.mountpoint = at.mount, at.dentry
        self._on[(at.mount, at.dentry)] = mount
        at.dentry.mounts += 1
        self._order.append(mount)

    def mount_at(self, vd: VirtualDentry) -> Mount | None:
        return self._on.get((vd.mount, vd.dentry))

    def follow_mounts(self, vd: VirtualDentry) -> VirtualDentry:
        """Step down through every mount stacked on ``vd``."""
        while (m := self._on.get((vd.mount, vd.dentry))) is not None:
            vd = VirtualDentry(m, m.root)
        return vd

    def mounts(self) -> Iterator[Mount]:
        """Every mount, in the order they were attached (``/proc/mounts``)."""
        return iter(self._order)

    def is_mountpoint(self, vd: VirtualDentry) -> bool:
        return (vd.mount, vd.dentry) in self._on

    def path(self, vd: VirtualDentry, root: VirtualDentry | None = None) -> str:
        """The absolute path of ``vd`` seen from ``root`` (Linux ``d_path``); a
        deleted name gets `` (deleted)``, as Linux shows it."""
        root = root or self.root
        parts: list[str] = []
        deleted = vd.dentry.dead
        mount, d = vd.mount, vd.dentry
        d_: Dentry | None
        while not (mount is root.mount and d is root.dentry):
            if d is mount.root:
                up, at = mount.parent, mount.mountpoint
                if up is None or at is None:
                    break
                mount, d = up, at
                continue
            parts.append(d.name)
            d_ = d.parent
            if d_ is None:
                break
            d = d_
        path = "/" + "/".join(reversed(parts))
        return path + " (deleted)" if deleted else path
