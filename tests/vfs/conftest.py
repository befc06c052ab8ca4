"""Shared fixtures for VFS tests: a memory file, the VFS, and a mount namespace
whose root is a fresh tmpfs, driven as root unless a test says otherwise."""

from __future__ import annotations

import os

import pytest

from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import Superblock
from pyrunsc.core.vfs.mount import Dentry, Mount, MountNamespace, VirtualDentry
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.vfs import VirtualFilesystem


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    return Plugins()


@pytest.fixture
def vfs() -> VirtualFilesystem:
    return VirtualFilesystem()


@pytest.fixture
def mctx(vfs: VirtualFilesystem, memfile: MemoryFile, plugins: Plugins) -> MountContext:
    return MountContext(vfs, memfile, filesystems=dict(plugins.registry.filesystems))


def new_mount(sb: Superblock, flags: MountFlags | None = None) -> Mount:
    return Mount(sb, Dentry(sb.root()), flags or MountFlags())


@pytest.fixture
def ns(mctx: MountContext) -> MountNamespace:
    """A namespace whose root is a tmpfs with mode 0755."""
    return MountNamespace(new_mount(mctx.new_superblock("tmpfs", "mode=755")))


@pytest.fixture
def ctx(ns: MountNamespace) -> FSContext:
    """Root's view: all capabilities, umask 022, cwd at /."""
    return FSContext(ns, ns.root, ns.root, Credentials(), umask=0o022)


def user_ctx(ctx: FSContext, uid: int = 1000, gid: int = 1000, groups: tuple[int, ...] = ()) -> FSContext:
    """The same namespace, seen by an unprivileged user."""
    return FSContext(ctx.ns, ctx.root, ctx.cwd, Credentials.for_user(uid, gid, groups), ctx.umask)


def mount_at(ctx: FSContext, path: str, sb: Superblock, flags: MountFlags | None = None) -> Mount:
    """Attach ``sb`` at the existing directory ``path``."""
    m = new_mount(sb, flags)
    ctx.ns.attach(resolve(ctx, ctx.root, path), m)
    return m


def write_file(vfs: VirtualFilesystem, ctx: FSContext, path: str, data: bytes, mode: int = 0o644) -> None:
    fd = vfs.open(ctx, ctx.cwd, path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        assert fd.write(data) == len(data)
    finally:
        fd.dec_ref()


def read_file(vfs: VirtualFilesystem, ctx: FSContext, path: str) -> bytes:
    fd = vfs.open(ctx, ctx.cwd, path, os.O_RDONLY)
    try:
        out = b""
        while chunk := fd.read(65536):
            out += chunk
        return out
    finally:
        fd.dec_ref()


def listdir(vfs: VirtualFilesystem, ctx: FSContext, path: str) -> list[str]:
    fd = vfs.open(ctx, ctx.cwd, path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [e.name for e in fd.getdents() if e.name not in (".", "..")]
    finally:
        fd.dec_ref()


__all__ = ["VirtualDentry", "listdir", "mount_at", "new_mount", "read_file", "user_ctx", "write_file"]
