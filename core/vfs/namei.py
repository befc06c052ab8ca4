"""Path resolution (Linux ``fs/namei.c``; gVisor ``vfs.ResolvingPath``).

A walk starts at the context's root for an absolute path, else at a start
point (the cwd or a dirfd). Each step needs search (x) permission on the
directory; ``.`` stays, ``..`` stops at the context's root and climbs out of a
mount root to its mount point; a name that is a mount point leads into the
mount stacked on it. Symlinks are followed in the middle of a path always, and
at the end when asked (or when a trailing slash follows them); more than 40 in
one walk is ELOOP. A name longer than 255 bytes, or a path of 4096 bytes or
more, is ENAMETOOLONG. A trailing slash requires a directory (ENOTDIR).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from ..errors import SyscallError
from ..kernel.auth import Credentials
from .mount import MountNamespace, VirtualDentry
from .permissions import MAY_EXEC, check_permission

MAX_SYMLINKS = 40
NAME_MAX = 255
PATH_MAX = 4096


@dataclass
class FSContext:
    """The filesystem view of a task (Linux ``struct fs_struct`` plus creds):
    its mount namespace, root, cwd, credentials and umask."""

    ns: MountNamespace
    root: VirtualDentry
    cwd: VirtualDentry
    creds: Credentials
    umask: int = 0o022


def check_path(path: str) -> None:
    """ENOENT for an empty path, ENAMETOOLONG for 4096 bytes or more."""
    if not path:
        raise SyscallError(errno.ENOENT)
    if len(os.fsencode(path)) >= PATH_MAX:
        raise SyscallError(errno.ENAMETOOLONG)


def check_name(name: str) -> None:
    if len(os.fsencode(name)) > NAME_MAX:
        raise SyscallError(errno.ENAMETOOLONG, name[:32] + "...")


def _parent(ctx: FSContext, vd: VirtualDentry) -> VirtualDentry:
    """Where ``..`` leads from ``vd`` (Linux ``follow_dotdot`` then
    ``step_into``): the process root and the namespace root stay; a mount's
    root climbs to its mount point's parent; and a mount stacked on the
    directory reached is entered, as for any other name."""
    if vd == ctx.root:
        return vd
    while vd.dentry is vd.mount.root:
        m = vd.mount
        if m.parent is None or m.mountpoint is None:
            return vd  # the namespace's root: .. stays
        vd = VirtualDentry(m.parent, m.mountpoint)
        if vd == ctx.root:
            return vd
    parent = vd.dentry.parent
    if parent is None:
        return vd
    return ctx.ns.follow_mounts(VirtualDentry(vd.mount, parent))


def _step(ctx: FSContext, cur: VirtualDentry, name: str) -> VirtualDentry:
    if not cur.inode.is_dir():
        raise SyscallError(errno.ENOTDIR)
    check_permission(ctx.creds, cur.inode, MAY_EXEC)
    if name == ".":
        return cur
    if name == "..":
        return _parent(ctx, cur)
    check_name(name)
    child = VirtualDentry(cur.mount, cur.dentry.child(name))
    return ctx.ns.follow_mounts(child)


def _walk(
    ctx: FSContext, start: VirtualDentry, path: str, follow: bool, budget: list[int]
) -> VirtualDentry:
    cur = ctx.root if path.startswith("/") else start
    names = [n for n in path.split("/") if n]
    trailing = path.endswith("/") and bool(names)
    for i, name in enumerate(names):
        last = i == len(names) - 1
        nxt = _step(ctx, cur, name)
        if nxt.inode.is_symlink() and (not last or follow or trailing):
            budget[0] -= 1
            if budget[0] < 0:
                raise SyscallError(errno.ELOOP)
            target = nxt.inode.get_link(ctx)
            if isinstance(target, VirtualDentry):
                nxt = target
            else:
                if not target:
                    raise SyscallError(errno.ENOENT)
                nxt = _walk(ctx, cur, target, True, budget)
        cur = nxt
    if trailing and not cur.inode.is_dir():
        raise SyscallError(errno.ENOTDIR)
    return cur


def resolve(ctx: FSContext, start: VirtualDentry, path: str, *, follow: bool = True) -> VirtualDentry:
    """Where ``path`` leads from ``start``; ``follow`` follows a final symlink.

    Errors: ENOENT, ENOTDIR, EACCES (search), ELOOP, ENAMETOOLONG.
    """
    check_path(path)
    return _walk(ctx, start, path, follow, [MAX_SYMLINKS])


@dataclass
class ParentPath:
    """A path split for a call that creates or removes its last name.

    ``name`` is the last component (possibly ``.`` or ``..``, which each call
    refuses with its own errno) and ``trailing_slash`` tells whether the path
    ended with ``/``. ``name`` is "" for a path that names the root.
    """

    parent: VirtualDentry
    name: str
    trailing_slash: bool


def resolve_parent(
    ctx: FSContext, start: VirtualDentry, path: str, *, budget: list[int] | None = None
) -> ParentPath:
    """Resolve all but the last component of ``path`` (Linux ``filename_parentat``).

    The parent must be a directory the caller may search (ENOTDIR, EACCES:
    Linux ``link_path_walk`` checks every directory before the last name,
    including the one that holds it). ``budget`` (a one-item list) shares a
    symlink count with an enclosing walk, as open(O_CREAT) following a
    dangling symlink does. Errors: those of :func:`resolve`.
    """
    check_path(path)
    stripped = path.rstrip("/")
    trailing = stripped != path
    if not stripped:  # "/" or "///"
        return ParentPath(ctx.root, "", trailing)
    head, _, name = stripped.rpartition("/")
    if "/" in stripped:
        parent = _walk(ctx, start, head or "/", True, budget if budget is not None else [MAX_SYMLINKS])
    else:
        parent = start
    if not parent.inode.is_dir():
        raise SyscallError(errno.ENOTDIR)
    check_permission(ctx.creds, parent.inode, MAY_EXEC)
    if name not in (".", ".."):
        check_name(name)
    return ParentPath(parent, name, trailing)
