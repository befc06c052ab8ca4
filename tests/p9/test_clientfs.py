"""The 9p client filesystem against our gofer, through the VFS API: walk,
read, readdir, getattr, create, write, mkdir, rename, unlink, symlink,
readlink, link, truncate, chmod, chown, utimens, statfs, fsync, xattrs, the
errors the VFS tests expect of tmpfs where they apply, EROFS from a read-only
export, the exclusive and shared caches, and the mount data."""

from __future__ import annotations

import errno
import os
import random
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.file import SEEK_SET
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import DT_DIR, DT_LNK, DT_REG
from pyrunsc.core.vfs.namei import resolve
from pyrunsc.core.vfs.vfs import RENAME_EXCHANGE, RENAME_NOREPLACE, Timespec
from pyrunsc.plugins.fs_9p import NinePFS
from pyrunsc.plugins.fs_9p.clientfs import V9FS_MAGIC, NinePInode, NinePSuperblock
from pyrunsc.plugins.fs_9p.gofer import Gofer, ListenAddress, Listener

from . import test_clientfs_support as support
from .test_clientfs_support import Env, channel, fails, mount_data, user_view

# Fixtures (test_clientfs_support.py).
plugins, mctx, env_factory, env = support.plugins, support.mctx, support.env_factory, support.env

O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL = os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_EXCL


# Walking and reading.


def test_walk_and_read(env: Env) -> None:
    assert env.read("hello.txt") == b"hello world\n"
    assert env.read("sub/inner.txt") == b"inner\n"
    assert env.read("sub/deeper/x") == b"x"
    assert env.read("big.bin") == (env.host / "big.bin").read_bytes()
    assert env.read("link_in") == b"hello world\n"  # the VFS follows the symlink
    fails(errno.ENOENT, env.read, "nope")
    fails(errno.ENOENT, env.read, "sub/nope/x")
    fails(errno.ENOTDIR, env.read, "hello.txt/x")
    fails(errno.EISDIR, env.read, "sub")


def test_dotdot_climbs_the_namespace_not_the_host(env: Env) -> None:
    # .. at the mount root is the mount point's parent (the tmpfs root).
    vd = resolve(env.ctx, env.ctx.root, "/m/sub/../..")
    assert vd == env.ctx.root
    fails(errno.ENOENT, env.read, "../outside/secret.txt")
    fails(errno.ENOENT, env.read, "sub/../../../outside/secret.txt")


def test_symlinks_out_of_the_folder_resolve_inside_the_sandbox(env: Env) -> None:
    secret = env.outside / "secret.txt"
    os.symlink(str(secret), env.host / "abs")
    os.symlink("../outside/secret.txt", env.host / "rel")
    os.symlink(str(env.outside), env.host / "absdir")
    for name in ("abs", "rel", "absdir/secret.txt"):
        fails(errno.ENOENT, env.read, name)
    assert env.vfs.readlink(env.ctx, env.ctx.root, "/m/abs") == str(secret)
    # Writes through them create nothing outside either.
    fails(errno.ENOENT, env.open, "abs", O_WRONLY | O_CREAT)
    assert secret.read_bytes() == env.secret


def test_reads_at_offsets_and_past_the_end(env: Env) -> None:
    data = (env.host / "big.bin").read_bytes()
    fd = env.open("big.bin", O_RDONLY)
    try:
        for off, n in ((0, 1), (5, 100_000), (len(data) - 10, 100), (len(data), 10), (len(data) + 5, 10)):
            assert fd.pread(n, off) == data[off:off + n]
        fd.seek(300_000, SEEK_SET)
        assert fd.read(1 << 20) == data[300_000:]
        assert fd.read(10) == b""
    finally:
        fd.dec_ref()


def test_small_msize_splits_reads_and_writes(env_factory: Callable[..., Env]) -> None:
    env = env_factory(msize=8192)
    assert env.sb.channel().msize == 8192
    data = (env.host / "big.bin").read_bytes()
    before = env.requests.get("Tread", 0)
    assert env.read("big.bin") == data
    assert env.requests["Tread"] - before >= len(data) // (8192 - 24)
    payload = os.urandom(100_000)
    env.write("w.bin", payload)
    assert (env.host / "w.bin").read_bytes() == payload


def test_getattr_is_the_hosts(env: Env) -> None:
    os.utime(env.host / "hello.txt", ns=(1_600_000_000_123_456_789, 1_650_000_000_987_654_321))
    s = env.stat("hello.txt")
    h = os.lstat(env.host / "hello.txt")
    assert (s.mode, s.uid, s.gid, s.nlink, s.size, s.ino, s.blocks) == (
        h.st_mode, h.st_uid, h.st_gid, h.st_nlink, h.st_size, h.st_ino, h.st_blocks)
    assert (s.atime, s.mtime, s.ctime) == (h.st_atime_ns, h.st_mtime_ns, h.st_ctime_ns)
    assert s.dev == env.sb.dev
    d = env.stat("sub")
    assert stat.S_ISDIR(d.mode) and d.nlink == os.lstat(env.host / "sub").st_nlink
    ln = env.stat("link_in", follow=False)
    assert stat.S_ISLNK(ln.mode) and ln.size == len("hello.txt")
    assert env.stat("link_in").ino == h.st_ino


# Directories.


def test_readdir_names_types_and_inode_numbers(env: Env) -> None:
    fd = env.open("", O_RDONLY | os.O_DIRECTORY)
    try:
        entries = {e.name: e for e in fd.getdents()}
    finally:
        fd.dec_ref()
    assert set(entries) == {".", "..", *os.listdir(env.host)}
    assert entries["sub"].type == DT_DIR and entries["hello.txt"].type == DT_REG
    assert entries["link_in"].type == DT_LNK
    for name in os.listdir(env.host):
        assert entries[name].ino == os.lstat(env.host / name).st_ino == env.stat(name, follow=False).ino
    assert env.ls("empty") == []
    fails(errno.ENOTDIR, env.open, "hello.txt", O_RDONLY | os.O_DIRECTORY)


def test_readdir_cookies_survive_changes(env: Env) -> None:
    rng = random.Random(5)
    env.vfs.mkdir(env.ctx, env.ctx.root, "/m/d", 0o755)
    present = {f"i{i}" for i in range(40)}
    for name in present:
        env.write(f"d/{name}", b"")
    throughout, counter = set(present), 0
    fd = env.open("d", O_RDONLY | os.O_DIRECTORY)
    seen: list[str] = []
    try:
        while batch := fd.getdents(3):
            seen += [e.name for e in batch]
            for _ in range(rng.randrange(4)):
                if present and rng.random() < 0.5:
                    victim = rng.choice(sorted(present))
                    env.vfs.unlink(env.ctx, env.ctx.root, f"/m/d/{victim}")
                    present.discard(victim)
                    throughout.discard(victim)
                else:
                    counter += 1
                    env.write(f"d/n{counter}", b"")
                    present.add(f"n{counter}")
        # lseek back to a cookie resumes after that entry.
        fd.seek(0, SEEK_SET)
        first = fd.getdents(4)
        rest = fd.getdents()
        fd.seek(first[-1].cookie, SEEK_SET)
        assert fd.getdents() == rest
    finally:
        fd.dec_ref()
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    assert not throughout - set(seen)


def test_mkdir(env: Env) -> None:
    env.vfs.mkdir(env.ctx, env.ctx.root, "/m/new", 0o777)
    h = os.lstat(env.host / "new")
    assert stat.S_ISDIR(h.st_mode) and stat.S_IMODE(h.st_mode) == 0o755  # the sandbox's umask, exactly
    env.vfs.mkdir(env.ctx, env.ctx.root, "/m/new/deeper/", 0o700)
    assert stat.S_IMODE(os.lstat(env.host / "new" / "deeper").st_mode) == 0o700
    assert env.ls("new") == ["deeper"]
    fails(errno.EEXIST, env.vfs.mkdir, env.ctx, env.ctx.root, "/m/new", 0o755)
    fails(errno.EEXIST, env.vfs.mkdir, env.ctx, env.ctx.root, "/m/hello.txt", 0o755)
    fails(errno.ENOENT, env.vfs.mkdir, env.ctx, env.ctx.root, "/m/nope/x", 0o755)
    fails(errno.ENOTDIR, env.vfs.mkdir, env.ctx, env.ctx.root, "/m/hello.txt/x", 0o755)
    # The parent's link count and times follow.
    assert env.stat("new").nlink == 3


def test_create_and_write(env: Env) -> None:
    fd = env.open("f.txt", O_CREAT | O_EXCL | O_RDWR, 0o666)
    try:
        assert fd.write(b"abc") == 3
        assert fd.pwrite(b"XY", 10) == 2
        assert fd.pread(100, 0) == b"abc" + bytes(7) + b"XY"
        fd.seek(0, SEEK_SET)
        assert fd.read(3) == b"abc"
    finally:
        fd.dec_ref()
    h = os.lstat(env.host / "f.txt")
    assert stat.S_IMODE(h.st_mode) == 0o644 and h.st_size == 12
    assert (env.host / "f.txt").read_bytes() == b"abc" + bytes(7) + b"XY"
    assert env.stat("f.txt").size == 12
    fails(errno.EEXIST, env.open, "f.txt", O_CREAT | O_EXCL | O_WRONLY)
    fails(errno.ENOENT, env.open, "nope/f", O_CREAT | O_WRONLY)
    fails(errno.EISDIR, env.open, "sub", O_WRONLY)
    # O_TRUNC and O_APPEND.
    fd = env.open("f.txt", O_WRONLY | os.O_TRUNC)
    fd.dec_ref()
    assert (env.host / "f.txt").read_bytes() == b"" and env.stat("f.txt").size == 0
    for chunk in (b"one ", b"two"):
        fd = env.open("f.txt", O_WRONLY | os.O_APPEND)
        fd.write(chunk)
        fd.dec_ref()
    assert (env.host / "f.txt").read_bytes() == b"one two"


def test_big_writes_and_reads_round_trip(env: Env) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 5)
    env.write("big.out", payload)
    assert (env.host / "big.out").read_bytes() == payload
    assert env.read("big.out") == payload
    assert env.stat("big.out").size == len(payload)


def test_new_files_belong_to_the_caller(env: Env) -> None:
    if os.geteuid() != 0:
        pytest.skip("the gofer can chown only as root")
    env.vfs.chmod(env.ctx, resolve(env.ctx, env.ctx.root, "/m/sub"), 0o777)
    user = user_view(env.ctx, 1234, 5678)
    env.vfs.open(user, user.root, "/m/sub/mine", O_CREAT | O_WRONLY, 0o600).dec_ref()
    env.vfs.mkdir(user, user.root, "/m/sub/mydir", 0o700)
    env.vfs.symlink(user, "target", user.root, "/m/sub/mylink")
    for name in ("mine", "mydir", "mylink"):
        h = os.lstat(env.host / "sub" / name)
        assert (h.st_uid, h.st_gid) == (1234, 5678), name
        s = env.stat(f"sub/{name}", follow=False)
        assert (s.uid, s.gid) == (1234, 5678)
    # A set-group-ID directory gives its group.
    os.chmod(env.host / "sub" / "mydir", 0o2777)
    os.chown(env.host / "sub" / "mydir", 1234, 4242)
    env.sb.root()  # the cached inode does not know yet: exclusive access is assumed
    dirnode = resolve(env.ctx, env.ctx.root, "/m/sub/mydir").inode
    assert isinstance(dirnode, NinePInode)
    dirnode._stale = True
    env.stat("sub/mydir")
    env.vfs.open(user, user.root, "/m/sub/mydir/g", O_CREAT | O_WRONLY, 0o600).dec_ref()
    assert os.lstat(env.host / "sub" / "mydir" / "g").st_gid == 4242


def test_unlink(env: Env) -> None:
    fd = env.open("hello.txt", O_RDONLY)
    try:
        env.vfs.unlink(env.ctx, env.ctx.root, "/m/hello.txt")
        assert not (env.host / "hello.txt").exists()
        assert fd.pread(100, 0) == b"hello world\n"  # open files live on
        assert fd.inode.stat().nlink == 0
    finally:
        fd.dec_ref()
    fails(errno.ENOENT, env.stat, "hello.txt")
    fails(errno.ENOENT, env.vfs.unlink, env.ctx, env.ctx.root, "/m/hello.txt")
    fails(errno.EISDIR, env.vfs.unlink, env.ctx, env.ctx.root, "/m/sub")
    fails(errno.ENOTDIR, env.vfs.unlink, env.ctx, env.ctx.root, "/m/sub/inner.txt/")
    assert "hello.txt" not in env.ls()


def test_rmdir(env: Env) -> None:
    env.vfs.rmdir(env.ctx, env.ctx.root, "/m/empty")
    assert not (env.host / "empty").exists()
    fails(errno.ENOTEMPTY, env.vfs.rmdir, env.ctx, env.ctx.root, "/m/sub")
    fails(errno.ENOTDIR, env.vfs.rmdir, env.ctx, env.ctx.root, "/m/hello.txt")
    fails(errno.ENOENT, env.vfs.rmdir, env.ctx, env.ctx.root, "/m/empty")
    fails(errno.EBUSY, env.vfs.rmdir, env.ctx, env.ctx.root, "/m")  # the mount point


def test_rename_files(env: Env) -> None:
    v, c, r = env.vfs, env.ctx, env.ctx.root
    before = env.stat("hello.txt").ino
    v.rename(c, r, "/m/hello.txt", r, "/m/sub/moved.txt")
    assert (env.host / "sub" / "moved.txt").read_bytes() == b"hello world\n"
    assert not (env.host / "hello.txt").exists()
    assert env.stat("sub/moved.txt").ino == before
    assert env.read("sub/moved.txt") == b"hello world\n"
    # Over an existing file, which is then gone.
    (env.host / "victim").write_bytes(b"old")
    env.stat("victim")
    v.rename(c, r, "/m/sub/moved.txt", r, "/m/victim")
    assert (env.host / "victim").read_bytes() == b"hello world\n"
    assert sorted(os.listdir(env.host / "sub")) == ["deeper", "inner.txt"]
    # Linux's checks, then the server's.
    fails(errno.EEXIST, v.rename, c, r, "/m/victim", r, "/m/big.bin", RENAME_NOREPLACE)
    fails(errno.EINVAL, v.rename, c, r, "/m/victim", r, "/m/big.bin", RENAME_EXCHANGE)  # 9P has no exchange
    fails(errno.ENOENT, v.rename, c, r, "/m/nope", r, "/m/x")
    fails(errno.EINVAL, v.rename, c, r, "/m/sub", r, "/m/sub/deeper/sub")
    fails(errno.ENOTEMPTY, v.rename, c, r, "/m/empty", r, "/m/sub")
    fails(errno.EISDIR, v.rename, c, r, "/m/victim", r, "/m/empty")
    fails(errno.ENOTDIR, v.rename, c, r, "/m/empty", r, "/m/victim")


def test_rename_a_directory_keeps_what_is_cached_below_it(env: Env) -> None:
    v, c, r = env.vfs, env.ctx, env.ctx.root
    fd = env.open("sub/deeper/x", O_RDWR)
    inner = resolve(c, r, "/m/sub/inner.txt").inode
    assert isinstance(inner, NinePInode)
    try:
        v.rename(c, r, "/m/sub", r, "/m/empty/sub2")
        assert (env.host / "empty" / "sub2" / "deeper" / "x").read_bytes() == b"x"
        # The open file and the cached inodes still work, under their new paths.
        assert fd.pwrite(b"y", 1) == 1
        assert fd.pread(10, 0) == b"xy"
        assert inner.path() == "/empty/sub2/inner.txt"
        assert env.read("empty/sub2/inner.txt") == b"inner\n"
        v.chmod(c, resolve(c, r, "/m/empty/sub2/inner.txt"), 0o600)
        assert stat.S_IMODE(os.lstat(env.host / "empty" / "sub2" / "inner.txt").st_mode) == 0o600
        fails(errno.ENOENT, env.stat, "sub")
    finally:
        fd.dec_ref()
    assert (env.host / "empty" / "sub2" / "deeper" / "x").read_bytes() == b"xy"


def test_symlink_and_readlink(env: Env) -> None:
    env.vfs.symlink(env.ctx, "sub/inner.txt", env.ctx.root, "/m/sl")
    assert os.readlink(env.host / "sl") == "sub/inner.txt"
    assert env.vfs.readlink(env.ctx, env.ctx.root, "/m/sl") == "sub/inner.txt"
    assert env.read("sl") == b"inner\n"
    assert stat.S_ISLNK(env.stat("sl", follow=False).mode)
    fails(errno.EEXIST, env.vfs.symlink, env.ctx, "x", env.ctx.root, "/m/sl")
    fails(errno.ENOENT, env.vfs.symlink, env.ctx, "", env.ctx.root, "/m/empty_target")
    fails(errno.EINVAL, env.vfs.readlink, env.ctx, env.ctx.root, "/m/hello.txt")
    os.symlink("/made/on/host", env.host / "hostlink")
    assert env.vfs.readlink(env.ctx, env.ctx.root, "/m/hostlink") == "/made/on/host"


def test_link(env: Env) -> None:
    env.vfs.link(env.ctx, env.ctx.root, "/m/hello.txt", env.ctx.root, "/m/sub/hard")
    h1, h2 = os.lstat(env.host / "hello.txt"), os.lstat(env.host / "sub" / "hard")
    assert h1.st_ino == h2.st_ino and h1.st_nlink == 2
    a, b = env.stat("hello.txt"), env.stat("sub/hard")
    assert a.ino == b.ino and a.nlink == b.nlink == 2
    assert resolve(env.ctx, env.ctx.root, "/m/hello.txt").inode is resolve(env.ctx, env.ctx.root, "/m/sub/hard").inode
    env.vfs.unlink(env.ctx, env.ctx.root, "/m/hello.txt")
    assert env.stat("sub/hard").nlink == 1
    assert env.read("sub/hard") == b"hello world\n"
    fails(errno.EPERM, env.vfs.link, env.ctx, env.ctx.root, "/m/sub", env.ctx.root, "/m/subdir_link")
    fails(errno.EEXIST, env.vfs.link, env.ctx, env.ctx.root, "/m/sub/hard", env.ctx.root, "/m/big.bin")
    fails(errno.EXDEV, env.vfs.link, env.ctx, env.ctx.root, "/m/big.bin", env.ctx.root, "/outside_mount")


def test_mknod_regular_and_fifo_only(env: Env) -> None:
    env.vfs.mknod(env.ctx, env.ctx.root, "/m/fifo", stat.S_IFIFO | 0o644)
    env.vfs.mknod(env.ctx, env.ctx.root, "/m/plain", 0o600)
    assert stat.S_ISFIFO(os.lstat(env.host / "fifo").st_mode)
    assert stat.S_ISREG(os.lstat(env.host / "plain").st_mode)
    assert stat.S_ISFIFO(env.stat("fifo").mode)
    fails(errno.EPERM, env.vfs.mknod, env.ctx, env.ctx.root, "/m/dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    fails(errno.EPERM, env.vfs.mknod, env.ctx, env.ctx.root, "/m/sock", stat.S_IFSOCK | 0o600)
    assert not (env.host / "dev").exists() and not (env.host / "sock").exists()


# Attributes.


def test_truncate_and_ftruncate(env: Env) -> None:
    vd = resolve(env.ctx, env.ctx.root, "/m/hello.txt")
    env.vfs.truncate(env.ctx, vd, 5)
    assert (env.host / "hello.txt").read_bytes() == b"hello"
    assert env.stat("hello.txt").size == 5
    fd = env.open("hello.txt", O_RDWR)
    try:
        env.vfs.ftruncate(fd, 100)
        assert os.lstat(env.host / "hello.txt").st_size == 100
        assert fd.inode.size == 100
    finally:
        fd.dec_ref()
    fails(errno.EISDIR, env.vfs.truncate, env.ctx, resolve(env.ctx, env.ctx.root, "/m/sub"), 0)


def test_chmod_chown_utimens(env: Env) -> None:
    vd = resolve(env.ctx, env.ctx.root, "/m/hello.txt")
    env.vfs.chmod(env.ctx, vd, 0o4710)
    assert stat.S_IMODE(os.lstat(env.host / "hello.txt").st_mode) == 0o4710
    assert stat.S_IMODE(env.stat("hello.txt").mode) == 0o4710
    if os.geteuid() == 0:
        env.vfs.chown(env.ctx, vd, 321, 654)
        h = os.lstat(env.host / "hello.txt")
        assert (h.st_uid, h.st_gid) == (321, 654)
        assert (env.stat("hello.txt").uid, env.stat("hello.txt").gid) == (321, 654)
    env.vfs.utimens(env.ctx, vd, Timespec(1_500_000_000, 1), Timespec(1_600_000_000, 999_999_999))
    h = os.lstat(env.host / "hello.txt")
    assert (h.st_atime_ns, h.st_mtime_ns) == (1_500_000_000_000_000_001, 1_600_000_000_999_999_999)
    s = env.stat("hello.txt")
    assert (s.atime, s.mtime) == (h.st_atime_ns, h.st_mtime_ns) and s.ctime == h.st_ctime_ns
    # A user who does not own the file.
    user = user_view(env.ctx)
    fails(errno.EPERM, env.vfs.chmod, user, vd, 0o777)


def test_statfs(env: Env) -> None:
    s = env.vfs.statfs(env.ctx, env.ctx.root, "/m/sub")
    h = os.statvfs(env.host)
    assert s.type == V9FS_MAGIC
    assert (s.bsize, s.blocks, s.files) == (h.f_bsize, h.f_blocks, h.f_files)


def test_fsync(env: Env) -> None:
    fd = env.open("hello.txt", O_RDWR)
    try:
        fd.write(b"HELLO")
        before = env.requests.get("Tfsync", 0)
        env.vfs.fsync(fd)
        assert env.requests["Tfsync"] == before + 1
    finally:
        fd.dec_ref()
    fd = env.open("hello.txt", os.O_PATH)
    try:
        fails(errno.EBADF, env.vfs.fsync, fd)
    finally:
        fd.dec_ref()


def test_xattrs(env: Env) -> None:
    inode = resolve(env.ctx, env.ctx.root, "/m/hello.txt").inode
    try:
        os.setxattr(env.host / "hello.txt", "user.probe", b"1")
    except OSError:
        pytest.skip("the host filesystem has no user xattrs")
    inode.setxattr("user.color", b"blue")
    assert os.getxattr(env.host / "hello.txt", "user.color") == b"blue"
    assert inode.getxattr("user.color") == b"blue"
    assert set(inode.listxattr()) == {"user.probe", "user.color"}
    inode.removexattr("user.color")
    assert "user.color" not in os.listxattr(env.host / "hello.txt")
    fails(errno.ENODATA, inode.getxattr, "user.color")
    fails(errno.ENODATA, inode.removexattr, "user.color")
    fails(errno.EOPNOTSUPP, inode.setxattr, "trusted.x", b"1")


# Read-only.


def test_a_read_only_export_is_erofs(env_factory: Callable[..., Env]) -> None:
    env = env_factory(read_only_export=True)
    v, c, r = env.vfs, env.ctx, env.ctx.root
    assert env.read("hello.txt") == b"hello world\n"
    assert env.ls("sub") == ["deeper", "inner.txt"]
    vd = resolve(c, r, "/m/hello.txt")
    for call in (
        lambda: env.open("new", O_CREAT | O_WRONLY),
        lambda: env.open("hello.txt", O_WRONLY),
        lambda: v.mkdir(c, r, "/m/d", 0o755),
        lambda: v.mknod(c, r, "/m/f", 0o644),
        lambda: v.symlink(c, "x", r, "/m/l"),
        lambda: v.link(c, r, "/m/hello.txt", r, "/m/h2"),
        lambda: v.unlink(c, r, "/m/hello.txt"),
        lambda: v.rmdir(c, r, "/m/empty"),
        lambda: v.rename(c, r, "/m/hello.txt", r, "/m/h3"),
        lambda: v.chmod(c, vd, 0o600),
        lambda: v.truncate(c, vd, 0),
        lambda: v.utimens(c, vd, Timespec(1, 1), Timespec(1, 1)),
    ):
        fails(errno.EROFS, call)
    assert sorted(os.listdir(env.host)) == ["big.bin", "empty", "hello.txt", "link_in", "sub"]
    assert (env.host / "hello.txt").read_bytes() == b"hello world\n"


def test_a_read_only_mount_is_erofs_before_the_server(env_factory: Callable[..., Env]) -> None:
    env = env_factory(flags=MountFlags(read_only=True))
    assert env.sb.read_only
    before = env.count()
    fails(errno.EROFS, env.open, "new", O_CREAT | O_WRONLY)
    fails(errno.EROFS, env.vfs.mkdir, env.ctx, env.ctx.root, "/m/d", 0o755)
    inode = resolve(env.ctx, env.ctx.root, "/m/hello.txt").inode
    fails(errno.EROFS, inode.write, 0, b"x")
    assert not {"Tlcreate", "Tmkdir", "Twrite"} & set(env.requests), env.requests
    assert env.count() >= before


# Caching.


def test_exclusive_cache_stat_sends_nothing_once_warm(env: Env) -> None:
    env.stat("sub/inner.txt")
    before = dict(env.requests)
    for _ in range(200):
        env.stat("sub/inner.txt")
        env.stat("sub")
    assert env.requests == before
    # Our own change is seen at once.
    env.write("sub/inner.txt", b"longer content\n")
    assert env.stat("sub/inner.txt").size == len(b"longer content\n")
    # Someone else's is not (exclusive access is assumed) ...
    (env.host / "sub" / "inner.txt").write_bytes(b"x")
    assert env.stat("sub/inner.txt").size == len(b"longer content\n")
    # ... except names: a lookup that misses asks the server again.
    (env.host / "sub" / "newer").write_bytes(b"n")
    assert env.read("sub/newer") == b"n"


def test_shared_cache_revalidates(env_factory: Callable[..., Env]) -> None:
    env = env_factory(cache="shared")
    assert env.sb.shared and not env.sb.cache_dentries
    assert env.stat("sub/inner.txt").size == 6
    first = resolve(env.ctx, env.ctx.root, "/m/sub/inner.txt").inode
    (env.host / "sub" / "inner.txt").write_bytes(b"changed on the host\n")
    assert env.stat("sub/inner.txt").size == 20
    assert env.read("sub/inner.txt") == b"changed on the host\n"
    assert resolve(env.ctx, env.ctx.root, "/m/sub/inner.txt").inode is first  # the same file, the same inode
    (env.host / "sub" / "late").write_bytes(b"")
    assert "late" in env.ls("sub")
    os.unlink(env.host / "sub" / "late")
    assert "late" not in env.ls("sub")
    fails(errno.ENOENT, env.stat, "sub/late")
    # A name taken by another file on the host leads to that file.
    os.unlink(env.host / "sub" / "inner.txt")
    (env.host / "sub" / "inner.txt").write_bytes(b"replaced")
    assert env.read("sub/inner.txt") == b"replaced"
    before = env.count()
    env.stat("sub/inner.txt")
    assert env.count() > before


def test_fids_do_not_leak(env: Env) -> None:
    conn = env.gofer.connections[0]
    env.read("sub/inner.txt")
    env.ls("sub")
    baseline = len(conn.fids)
    for i in range(50):
        env.read("sub/inner.txt")
        env.ls("sub")
        fd = env.open("hello.txt", O_RDWR)
        fd.write(b"x")
        fd.dec_ref()
        env.write(f"tmp{i}", b"t")
        env.vfs.unlink(env.ctx, env.ctx.root, f"/m/tmp{i}")
    # Unlinked files' inodes are collected; their fids go at the next operation.
    import gc

    gc.collect()
    env.stat("sub")
    env.ls("")
    assert len(conn.fids) <= baseline + 2, (baseline, len(conn.fids))


# Mounting.


def test_mount_data_errors(mctx: MountContext, tmp_path: Path) -> None:
    g = Gofer(tmp_path)
    try:
        fd, _ = channel(g)
        fs = NinePFS
        fails(errno.EINVAL, fs.mount, mctx, "x", MountFlags(), f"trans=fd,rfdno={fd},wfdno={fd + 100}")
        fails(errno.EINVAL, fs.mount, mctx, "x", MountFlags(), "trans=fd")
        fails(errno.EINVAL, fs.mount, mctx, "x", MountFlags(), f"trans=fd,rfdno={fd},wfdno={fd},bogus=1")
        fails(errno.EINVAL, fs.mount, mctx, "x", MountFlags(), f"trans=fd,rfdno={fd},wfdno={fd},cache=maybe")
        fails(errno.EINVAL, fs.mount, mctx, "x", MountFlags(), f"trans=fd,rfdno={fd},wfdno={fd},msize=12")
        fails(errno.EINVAL, fs.mount, mctx, "x", MountFlags(), "trans=virtio")
        r, w = os.pipe()
        try:
            fails(errno.EINVAL, fs.mount, mctx, "x", MountFlags(), f"trans=fd,rfdno={r},wfdno={r}")
        finally:
            os.close(r)
            os.close(w)
        closed = os.open("/dev/null", os.O_RDONLY)
        os.close(closed)
        fails(errno.EBADF, fs.mount, mctx, "x", MountFlags(), f"trans=fd,rfdno={closed},wfdno={closed}")
        # An aname the server does not know.
        fails(errno.ENOENT, fs.mount, mctx, "x", MountFlags(), mount_data(fd, "aname=/elsewhere"))
        # A failed mount closes the channel it took over.
        with pytest.raises(OSError):
            os.fstat(fd)
        fails(errno.EINVAL, fs.mount, mctx, "none", MountFlags(), "trans=unix")
        fails(errno.ENOENT, fs.mount, mctx, "x", MountFlags(), f"trans=unix,addr={tmp_path}/nosock")
    finally:
        g.close()


def test_mount_context_may_hold_the_channel(mctx: MountContext, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"via ctx")
    g = Gofer(tmp_path)
    try:
        a, b = socket.socketpair()
        g.start(a)
        mctx.gofer[7] = b
        sb = NinePFS.mount(mctx, str(tmp_path), MountFlags(), "trans=fd,rfdno=7,wfdno=7")
        assert isinstance(sb, NinePSuperblock)
        inode = sb.root().lookup("f")
        assert inode.read(0, 100) == b"via ctx"
        sb.close()
    finally:
        g.close()


def test_an_external_server_over_a_unix_socket(mctx: MountContext, tmp_path: Path) -> None:
    from pyrunsc.core.config import Config
    from pyrunsc.core.mounts import FdDispenser, resolve_mount
    from pyrunsc.core.plugins import Plugins
    from pyrunsc.core.spec import Mount

    served = tmp_path / "export"
    served.mkdir()
    (served / "remote.txt").write_bytes(b"remote data")
    g = Gofer(served, anames=["/export"])
    listener = Listener(g, ListenAddress.parse(f"unix:{tmp_path}/g.sock"))
    import threading

    t = threading.Thread(target=listener.serve_forever, daemon=True)
    t.start()
    try:
        spec_mount = Mount("/mnt/remote", "9p", f"unix:{tmp_path}/g.sock", ("aname=/export", "cache=shared", "ro"))
        r = resolve_mount(Plugins(), spec_mount, Config(), FdDispenser())
        assert r is not None and r.fs_name == "9p" and r.flags.read_only
        assert r.data == ("trans=unix", f"addr={tmp_path}/g.sock", "aname=/export", "cache=shared")
        sb = NinePFS.mount(mctx, spec_mount.source or "", r.flags, ",".join(r.data))
        assert isinstance(sb, NinePSuperblock) and sb.shared and sb.read_only
        f = sb.root().lookup("remote.txt")
        assert f.read(0, 100) == b"remote data"
        fails(errno.EROFS, f.write, 0, b"x")
        sb.close()
    finally:
        listener.close()
        g.close()


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("/plain/path", (), "unix:PATH or tcp:HOST:PORT"),
        ("unix:relative", (), "must be absolute"),
        ("tcp:host:99999", (), "PORT is 1 to 65535"),
        ("unix:/a,b", (), "cannot hold"),
        ("unix:/s", ("msize=12",), "msize is"),
        ("unix:/s", ("cache=sometimes",), "cache is one of"),
        ("unix:/s", ("trans=tcp",), "does not take option"),
    ],
)
def test_9p_spec_mount_errors(source: str, options: tuple[str, ...], message: str) -> None:
    from pyrunsc.core.config import Config
    from pyrunsc.core.errors import ConfigError
    from pyrunsc.core.mounts import FdDispenser, resolve_mount
    from pyrunsc.core.plugins import Plugins
    from pyrunsc.core.spec import Mount

    with pytest.raises(ConfigError, match=message):
        resolve_mount(Plugins(), Mount("/mnt", "9p", source, options), Config(), FdDispenser())


def test_bind_mount_options(plugins: object) -> None:
    from pyrunsc.core.config import Config
    from pyrunsc.core.errors import ConfigError
    from pyrunsc.core.mounts import FdDispenser, resolve_mount
    from pyrunsc.core.plugins import Plugins
    from pyrunsc.core.spec import Mount

    p = Plugins()
    r = resolve_mount(p, Mount("/d", "bind", "/src", ("cache=shared",)), Config(), FdDispenser([5]))
    assert r is not None
    assert r.data == ("trans=fd", "rfdno=5", "wfdno=5", "privateunixsocket=true", "cache=shared")
    with pytest.raises(ConfigError, match="aname applies to mounts of type 9p only"):
        resolve_mount(p, Mount("/d", "bind", "/src", ("aname=/x",)), Config(), FdDispenser([5]))
    r = resolve_mount(p, Mount("/d", "bind", "/src", ("cache=shared",)), Config(file_access="direct"), FdDispenser())
    assert r is not None and r.fs_name == "hostfs"


def test_a_dead_channel_is_eio(env: Env) -> None:
    inode = resolve(env.ctx, env.ctx.root, "/m/hello.txt").inode
    env.gofer.close()
    err = fails(errno.EIO, env.read, "sub/inner.txt")
    assert "9p" in str(err)
    fails(errno.EIO, inode.read, 0, 10)
    with pytest.raises(SyscallError):
        env.ls("sub")
