"""Restore of 9p mounts: a superblock given a new channel (``rebind``)
re-walks every inode by path from the new root and re-opens the fids that
were open; a pickled mount (what a checkpoint saves) holds no fid or channel
and is re-bound the same way. Paths that are gone are a clear error."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudpickle
import pytest

from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.file import FileDescription
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.mount import MountNamespace
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.plugins.fs_9p import NinePFS
from pyrunsc.plugins.fs_9p.clientfs import NinePInode, NinePRestoreError, NinePSuperblock
from pyrunsc.plugins.fs_9p.gofer import Gofer
from pyrunsc.plugins.fs_9p.p9 import Client

from ..vfs.conftest import new_mount
from . import test_clientfs_support as support
from .test_clientfs_support import Env, fails, mount_data, populate

# Fixtures (test_clientfs_support.py).
plugins, mctx, env_factory, env = support.plugins, support.mctx, support.env_factory, support.env


@pytest.fixture
def gofers() -> Iterator[Callable[[Path], Client]]:
    """``new_channel(folder)``: a client on a new gofer serving ``folder``."""
    made: list[Gofer] = []

    def new_channel(folder: Path) -> Client:
        g = Gofer(folder)
        made.append(g)
        a, b = socket.socketpair()
        g.start(a)
        return Client(b, timeout=20)

    yield new_channel
    for g in made:
        g.close()


def moved_copy(env: Env, name: str = "moved") -> Path:
    """Copy the served folder elsewhere and retire the old gofer (and folder)."""
    new = env.host.parent / name
    shutil.copytree(env.host, new, symlinks=True)
    env.gofer.close()
    shutil.rmtree(env.host)
    return new


def test_rebind_to_a_moved_copy(env: Env, gofers: Callable[[Path], Client]) -> None:
    data = (env.host / "big.bin").read_bytes()
    reader = env.open("big.bin", os.O_RDONLY)
    rw = env.open("sub/inner.txt", os.O_RDWR)
    lister = env.open("sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert reader.read(1000) == data[:1000]
        x_ino = env.stat("sub/deeper/x").ino
        listed = [e.name for e in lister.getdents(3)]
        new = moved_copy(env)
        env.sb.rebind(gofers(new))
        # Open files continue where they were, on the copy.
        assert reader.read(1000) == data[1000:2000]
        rw.seek(0, 2)
        rw.write(b"more\n")
        assert (new / "sub" / "inner.txt").read_bytes() == b"inner\nmore\n"
        # The listing continues without repeating itself.
        rest = [e.name for e in lister.getdents()]
        assert sorted(listed + rest) == sorted([".", "..", "deeper", "inner.txt"])
        # Cached names work and keep the inode numbers the sandbox saw.
        assert env.stat("sub/deeper/x").ino == x_ino
        assert env.read("sub/deeper/x") == b"x"
        env.write("after.txt", b"written after the restore")
        assert (new / "after.txt").read_bytes() == b"written after the restore"
        assert env.stat("sub/inner.txt").size == len(b"inner\nmore\n")
    finally:
        for fd in (reader, rw, lister):
            fd.dec_ref()


def test_a_path_that_is_gone_is_a_clear_error(env: Env, gofers: Callable[[Path], Client]) -> None:
    fd = env.open("sub/inner.txt", os.O_RDONLY)
    try:
        env.stat("hello.txt")
        new = moved_copy(env)
        os.unlink(new / "sub" / "inner.txt")
        os.unlink(new / "hello.txt")
        os.mkdir(new / "hello.txt")  # the name is back, as a folder
        with pytest.raises(NinePRestoreError) as info:
            env.sb.rebind(gofers(new))
        msg = str(info.value)
        assert str(env.host) in msg  # the mount
        assert "/sub/inner.txt (no longer exists)" in msg
        assert "/hello.txt (was -, now d)" in msg
        assert "/sub/deeper" not in msg  # the rest was re-bound
    finally:
        fd.dec_ref()


def test_a_file_deleted_while_open_cannot_be_restored(env: Env, gofers: Callable[[Path], Client]) -> None:
    fd = env.open("hello.txt", os.O_RDONLY)
    try:
        env.vfs.unlink(env.ctx, env.ctx.root, "/m/hello.txt")
        new = moved_copy(env)
        with pytest.raises(NinePRestoreError, match=r"/hello.txt \(deleted while open\)"):
            env.sb.rebind(gofers(new))
    finally:
        fd.dec_ref()


def test_hard_links_are_found_by_any_name(env: Env, gofers: Callable[[Path], Client]) -> None:
    env.vfs.link(env.ctx, env.ctx.root, "/m/hello.txt", env.ctx.root, "/m/sub/second")
    fd = env.open("hello.txt", os.O_RDONLY)
    try:
        inode = fd.inode
        assert isinstance(inode, NinePInode)
        assert inode.paths() == ["/hello.txt", "/sub/second"]
        new = moved_copy(env)
        os.unlink(new / "hello.txt")
        env.sb.rebind(gofers(new))
        assert fd.pread(100, 0) == b"hello world\n"
    finally:
        fd.dec_ref()


def test_rename_updates_the_path_restore_walks(env: Env, gofers: Callable[[Path], Client]) -> None:
    fd = env.open("sub/deeper/x", os.O_RDONLY)
    try:
        env.vfs.rename(env.ctx, env.ctx.root, "/m/sub", env.ctx.root, "/m/renamed")
        inode = fd.inode
        assert isinstance(inode, NinePInode)
        assert inode.path() == "/renamed/deeper/x"
        new = moved_copy(env)
        env.sb.rebind(gofers(new))
        assert fd.pread(10, 0) == b"x"
    finally:
        fd.dec_ref()


def test_a_pickled_mount_is_rebuilt_by_path(
    mctx: MountContext, tmp_path: Path, gofers: Callable[[Path], Client]
) -> None:
    """What a checkpoint does: the mount namespace and an open file are
    pickled with no fid or channel; after loading, the mount answers EIO
    until re-bound, then carries on."""
    host = tmp_path / "root"
    populate(host)
    g = Gofer(host)
    a, b = socket.socketpair()
    g.start(a)
    fdno = b.detach()
    sb = NinePFS.mount(mctx, str(host), MountFlags(), mount_data(fdno))
    assert isinstance(sb, NinePSuperblock)
    ns = MountNamespace(new_mount(sb))
    ctx = FSContext(ns, ns.root, ns.root, Credentials())
    desc = mctx.vfs.open(ctx, ctx.root, "/big.bin", os.O_RDONLY)
    data = (host / "big.bin").read_bytes()
    assert desc.read(5000) == data[:5000]
    mctx.vfs.stat(ctx, ctx.root, "/sub/deeper/x")
    image = cloudpickle.dumps((ns, desc))
    sb.close()
    g.close()

    ns2, desc2 = cloudpickle.loads(image)
    assert isinstance(desc2, FileDescription)
    sb2 = ns2.root_mount.sb
    assert isinstance(sb2, NinePSuperblock) and sb2.client is None
    ctx2 = FSContext(ns2, ns2.root, ns2.root, Credentials())
    err = fails(errno.EIO, desc2.read, 10)
    assert "not restored" in str(err)
    new = tmp_path / "restored"
    shutil.copytree(host, new, symlinks=True)
    sb2.restore(gofers(new))
    assert desc2.read(5000) == data[5000:10000]
    assert mctx.vfs.stat(ctx2, ctx2.root, "/sub/deeper/x").size == 1
    assert resolve(ctx2, ctx2.root, "/sub/inner.txt").inode.read(0, 100) == b"inner\n"
    desc2.dec_ref()
    sb2.close()


def test_reconnect_from_restore_mount_data(env: Env) -> None:
    """The restore environment gives the mount's data with the new gofer's
    fd; ``reconnect`` connects by it and re-walks."""
    fd = env.open("sub/inner.txt", os.O_RDONLY)
    try:
        new = moved_copy(env)
        g = Gofer(new)
        env.extra.append(g)
        a, b = socket.socketpair()
        g.start(a)
        n = b.detach()
        env.sb.reconnect(env.mctx, mount_data(n))
        assert fd.pread(100, 0) == b"inner\n"
        assert env.sb.channel().sock.fileno() == n
    finally:
        fd.dec_ref()
