"""Our 9p client filesystem against a real 9P2000.L server: diod (Debian
package ``diod``), run as ``diod -f -n -N -l SOCK -e DIR`` on a unix socket
in a temporary folder (no network), one server per test. Through the VFS API:
walk, read, readdir, getattr, create, write, mkdir, rename, unlink and
symlink, each checked on the host folder diod exports.

diod differs from our gofer in ways the client must absorb: it answers
Tunlinkat and Trenameat with EOPNOTSUPP (so Tremove and Trename stand in),
its fids are paths (a rename leaves the fids below the old name dangling, so
the client walks them again), it lists ``.`` and ``..``, and it refuses
Tattach without a numeric user (``dfltuid``)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.mount import MountNamespace
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.vfs import Timespec
from pyrunsc.plugins.fs_9p import NinePFS
from pyrunsc.plugins.fs_9p.clientfs import NinePSuperblock

from ..vfs.conftest import listdir, mount_at, new_mount, read_file, write_file
from . import test_clientfs_support as support
from .test_clientfs_support import fails, populate

# Fixtures (test_clientfs_support.py).
plugins, mctx = support.plugins, support.mctx

pytestmark = pytest.mark.slow

DIOD = shutil.which("diod") or "/usr/sbin/diod"
if not os.access(DIOD, os.X_OK):  # pragma: no cover
    pytest.skip("diod (Debian package diod) is not installed", allow_module_level=True)


class Diod:
    """A diod serving ``export`` on the unix socket ``sock``."""

    def __init__(self, base: Path) -> None:
        self.export = base / "export"
        populate(self.export)
        self.sock = base / "diod.sock"
        self.log = base / "diod.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [DIOD, "-f", "-n", "-N", "-l", str(self.sock), "-e", str(self.export), "-L", "stderr"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"diod exited: {self.log.read_text()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.sock))
                return
            except OSError:
                time.sleep(0.02)
        self.close()
        raise RuntimeError("diod did not listen in time")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def diod(tmp_path: Path) -> Iterator[Diod]:
    d = Diod(tmp_path)
    yield d
    d.close()


class Mounted:
    def __init__(self, mctx: MountContext, diod: Diod, cache: str = "exclusive") -> None:
        self.diod, self.host, self.vfs = diod, diod.export, mctx.vfs
        data = f"trans=unix,addr={diod.sock},aname={diod.export},dfltuid=0,msize=65536,cache={cache}"
        sb = NinePFS.mount(mctx, f"unix:{diod.sock}", MountFlags(), data)
        assert isinstance(sb, NinePSuperblock)
        self.sb = sb
        ns = MountNamespace(new_mount(mctx.new_superblock("tmpfs", "mode=755")))
        self.ctx = FSContext(ns, ns.root, ns.root, Credentials(), umask=0o022)
        self.vfs.mkdir(self.ctx, self.ctx.root, "/m", 0o755)
        mount_at(self.ctx, "/m", sb)

    def read(self, path: str) -> bytes:
        return read_file(self.vfs, self.ctx, "/m/" + path)

    def write(self, path: str, data: bytes) -> None:
        write_file(self.vfs, self.ctx, "/m/" + path, data)

    def ls(self, path: str = "") -> list[str]:
        return sorted(listdir(self.vfs, self.ctx, "/m/" + path))


@pytest.fixture
def mnt(mctx: MountContext, diod: Diod) -> Iterator[Mounted]:
    mt = Mounted(mctx, diod)
    yield mt
    mt.sb.close()


def test_walk_read_and_getattr(mnt: Mounted) -> None:
    assert mnt.read("hello.txt") == b"hello world\n"
    assert mnt.read("sub/deeper/x") == b"x"
    assert mnt.read("big.bin") == (mnt.host / "big.bin").read_bytes()  # many msize-sized reads
    assert mnt.read("link_in") == b"hello world\n"
    fails(errno.ENOENT, mnt.read, "nope")
    fails(errno.ENOTDIR, mnt.read, "hello.txt/x")
    # (A file not looked up yet: exclusive access caches attributes.)
    os.utime(mnt.host / "sub" / "inner.txt", ns=(1_600_000_000_000_000_001, 1_650_000_000_000_000_002))
    s = mnt.vfs.stat(mnt.ctx, mnt.ctx.root, "/m/sub/inner.txt")
    h = os.lstat(mnt.host / "sub" / "inner.txt")
    assert (s.mode, s.uid, s.gid, s.nlink, s.size, s.ino) == (
        h.st_mode, h.st_uid, h.st_gid, h.st_nlink, h.st_size, h.st_ino)
    assert (s.atime, s.mtime, s.ctime) == (h.st_atime_ns, h.st_mtime_ns, h.st_ctime_ns)
    assert s.btime is None  # diod says "valid" with a zero birth time
    assert stat.S_ISLNK(mnt.vfs.stat(mnt.ctx, mnt.ctx.root, "/m/link_in", follow=False).mode)


def test_readdir(mnt: Mounted) -> None:
    assert mnt.ls() == sorted(os.listdir(mnt.host))  # diod's "." and ".." are the VFS's own
    assert mnt.ls("sub") == ["deeper", "inner.txt"]
    assert mnt.ls("empty") == []
    fd = mnt.vfs.open(mnt.ctx, mnt.ctx.root, "/m/sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries = fd.getdents()
        assert [e.name for e in entries[:2]] == [".", ".."]
        for e in entries[2:]:
            assert e.ino == os.lstat(mnt.host / "sub" / e.name).st_ino
    finally:
        fd.dec_ref()


def test_create_and_write(mnt: Mounted) -> None:
    payload = os.urandom(300_000)
    mnt.write("new.bin", payload)
    assert (mnt.host / "new.bin").read_bytes() == payload
    assert stat.S_IMODE(os.lstat(mnt.host / "new.bin").st_mode) == 0o644
    fd = mnt.vfs.open(mnt.ctx, mnt.ctx.root, "/m/new.bin", os.O_RDWR)
    try:
        assert fd.pwrite(b"HEAD", 0) == 4
    finally:
        fd.dec_ref()
    assert (mnt.host / "new.bin").read_bytes()[:4] == b"HEAD"
    assert mnt.vfs.stat(mnt.ctx, mnt.ctx.root, "/m/new.bin").size == 300_000
    fails(errno.EEXIST, mnt.vfs.open, mnt.ctx, mnt.ctx.root, "/m/new.bin", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    vd = resolve(mnt.ctx, mnt.ctx.root, "/m/new.bin")
    mnt.vfs.truncate(mnt.ctx, vd, 10)
    mnt.vfs.chmod(mnt.ctx, vd, 0o600)
    mnt.vfs.utimens(mnt.ctx, vd, Timespec(1_000_000_000, 5), Timespec(1_100_000_000, 7))
    h = os.lstat(mnt.host / "new.bin")
    assert (h.st_size, stat.S_IMODE(h.st_mode), h.st_atime_ns, h.st_mtime_ns) == (
        10, 0o600, 1_000_000_000_000_000_005, 1_100_000_000_000_000_007)


def test_mkdir(mnt: Mounted) -> None:
    mnt.vfs.mkdir(mnt.ctx, mnt.ctx.root, "/m/d1", 0o750)
    mnt.vfs.mkdir(mnt.ctx, mnt.ctx.root, "/m/d1/d2", 0o777)
    assert stat.S_IMODE(os.lstat(mnt.host / "d1").st_mode) == 0o750
    assert stat.S_IMODE(os.lstat(mnt.host / "d1" / "d2").st_mode) == 0o755
    mnt.write("d1/d2/f", b"deep")
    assert (mnt.host / "d1" / "d2" / "f").read_bytes() == b"deep"
    fails(errno.EEXIST, mnt.vfs.mkdir, mnt.ctx, mnt.ctx.root, "/m/d1", 0o755)


def test_rename(mnt: Mounted) -> None:
    v, c, r = mnt.vfs, mnt.ctx, mnt.ctx.root
    v.rename(c, r, "/m/hello.txt", r, "/m/sub/renamed.txt")
    assert (mnt.host / "sub" / "renamed.txt").read_bytes() == b"hello world\n"
    assert not (mnt.host / "hello.txt").exists()
    assert mnt.read("sub/renamed.txt") == b"hello world\n"
    # A directory with cached and open files below it: diod's fids are
    # paths, so the client walks them again by their new names.
    fd = v.open(c, r, "/m/sub/deeper/x", os.O_RDWR)
    inner = resolve(c, r, "/m/sub/inner.txt").inode
    try:
        v.rename(c, r, "/m/sub", r, "/m/moved")
        assert sorted(os.listdir(mnt.host / "moved")) == ["deeper", "inner.txt", "renamed.txt"]
        assert fd.pwrite(b"Y", 1) == 1
        assert mnt.read("moved/deeper/x") == b"xY"
        v.chmod(c, resolve(c, r, "/m/moved/inner.txt"), 0o640)
        assert stat.S_IMODE(os.lstat(mnt.host / "moved" / "inner.txt").st_mode) == 0o640
        assert inner.stat().mode & 0o777 == 0o640
        mnt.write("moved/deeper/new", b"n")
        assert (mnt.host / "moved" / "deeper" / "new").read_bytes() == b"n"
    finally:
        fd.dec_ref()
    # Over an existing file.
    v.rename(c, r, "/m/moved/renamed.txt", r, "/m/big.bin")
    assert (mnt.host / "big.bin").read_bytes() == b"hello world\n"
    fails(errno.ENOTEMPTY, v.rename, c, r, "/m/empty", r, "/m/moved")


def test_unlink_and_rmdir(mnt: Mounted) -> None:
    v, c, r = mnt.vfs, mnt.ctx, mnt.ctx.root
    fd = v.open(c, r, "/m/hello.txt", os.O_RDONLY)
    try:
        v.unlink(c, r, "/m/hello.txt")
        assert not (mnt.host / "hello.txt").exists()
        assert fd.pread(100, 0) == b"hello world\n"
        assert fd.inode.stat().nlink == 0
    finally:
        fd.dec_ref()
    fails(errno.ENOENT, v.stat, c, r, "/m/hello.txt")
    assert "hello.txt" not in mnt.ls()
    v.rmdir(c, r, "/m/empty")
    assert not (mnt.host / "empty").exists()
    fails(errno.ENOTEMPTY, v.rmdir, c, r, "/m/sub")
    # A hard link keeps the file reachable by its other name.
    v.link(c, r, "/m/sub/inner.txt", r, "/m/hard")
    assert os.lstat(mnt.host / "hard").st_nlink == 2
    v.unlink(c, r, "/m/sub/inner.txt")
    assert v.stat(c, r, "/m/hard").nlink == 1
    assert mnt.read("hard") == b"inner\n"


def test_symlink(mnt: Mounted) -> None:
    v, c, r = mnt.vfs, mnt.ctx, mnt.ctx.root
    v.symlink(c, "sub/inner.txt", r, "/m/sl")
    assert os.readlink(mnt.host / "sl") == "sub/inner.txt"
    assert v.readlink(c, r, "/m/sl") == "sub/inner.txt"
    assert mnt.read("sl") == b"inner\n"
    v.symlink(c, "/nowhere/at/all", r, "/m/dangling")
    assert os.readlink(mnt.host / "dangling") == "/nowhere/at/all"
    fails(errno.ENOENT, mnt.read, "dangling")


def test_mknod_fifo_and_statfs(mnt: Mounted) -> None:
    mnt.vfs.mknod(mnt.ctx, mnt.ctx.root, "/m/fifo", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(os.lstat(mnt.host / "fifo").st_mode)
    s = mnt.vfs.statfs(mnt.ctx, mnt.ctx.root, "/m")
    assert s.blocks == os.statvfs(mnt.host).f_blocks


def test_shared_cache_sees_host_changes(mctx: MountContext, diod: Diod) -> None:
    mt = Mounted(mctx, diod, cache="shared")
    try:
        assert mt.read("hello.txt") == b"hello world\n"
        (diod.export / "hello.txt").write_bytes(b"changed")
        (diod.export / "fresh").write_bytes(b"")
        assert mt.read("hello.txt") == b"changed"
        assert "fresh" in mt.ls()
        # A folder renamed on the host: the same inodes, walked by their new names.
        assert mt.read("sub/inner.txt") == b"inner\n"
        inner = resolve(mt.ctx, mt.ctx.root, "/m/sub/inner.txt").inode
        os.rename(diod.export / "sub", diod.export / "sub2")
        fails(errno.ENOENT, mt.read, "sub/inner.txt")
        vd = resolve(mt.ctx, mt.ctx.root, "/m/sub2/inner.txt")
        assert vd.inode is inner
        mt.vfs.chmod(mt.ctx, vd, 0o604)
        assert stat.S_IMODE(os.lstat(diod.export / "sub2" / "inner.txt").st_mode) == 0o604
    finally:
        mt.sb.close()


def test_diod_refusing_the_attach_fails_the_mount(mctx: MountContext, diod: Diod) -> None:
    # Without a numeric user (diod: "user lookup: Input/output error") ...
    data = f"trans=unix,addr={diod.sock},aname={diod.export},dfltuid=4294967295"
    fails(errno.EIO, NinePFS.mount, mctx, "x", MountFlags(), data)
    # ... or for a folder it does not export.
    fails(errno.EPERM, NinePFS.mount, mctx, "x", MountFlags(), f"trans=unix,addr={diod.sock},aname=/not/exported")
