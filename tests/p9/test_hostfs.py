"""Direct file access (hostfs) through the VFS API: the operations on the
host folder, stable listings, data I/O, restore by host path, and escape
attempts -- ``..`` chains, an absolute symlink to a secret planted OUTSIDE
the root by the test itself, relative symlinks climbing out, a file swapped
for a symlink, and a rename racing walks. Each escape test asserts that no
byte of the secret comes back and that the secret file is unchanged.

(No test here points at a real system file: secrets are planted in the
test's own temporary folder.)"""

from __future__ import annotations

import errno
import os
import random
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudpickle
import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.file import SEEK_DATA, SEEK_HOLE, SEEK_SET, FileDescription
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import DT_DIR, DT_LNK, DT_REG, Inode
from pyrunsc.core.vfs.mount import MountNamespace
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.vfs import RENAME_EXCHANGE, Timespec, VirtualFilesystem
from pyrunsc.plugins.fs_9p.hostfs import HOSTFS_MAGIC, HostFSInode, HostFSRestoreError, HostFSSuperblock

from ..vfs.conftest import listdir, mount_at, new_mount, read_file, write_file
from . import test_clientfs_support as support
from .test_clientfs_support import fails, populate

# Fixtures (test_clientfs_support.py).
plugins, mctx = support.plugins, support.mctx

O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL = os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_EXCL


class H:
    """hostfs of ``host`` mounted at /m of a tmpfs namespace; ``outside`` is
    the root's sibling holding ``secret.txt`` and ``secretdir/secret.txt``."""

    def __init__(self, mctx: MountContext, base: Path, flags: MountFlags | None = None) -> None:
        self.host, self.outside = base / "root", base / "outside"
        populate(self.host)
        (self.outside / "secretdir").mkdir(parents=True)
        self.secret = b"SECRET-" + os.urandom(16).hex().encode()
        (self.outside / "secret.txt").write_bytes(self.secret)
        (self.outside / "secretdir" / "secret.txt").write_bytes(self.secret)
        self.vfs: VirtualFilesystem = mctx.vfs
        sb = mctx.filesystems["hostfs"].mount(mctx, str(self.host), flags or MountFlags(),
                                             f"root={self.host},dont_translate_ownership=true")
        assert isinstance(sb, HostFSSuperblock)
        self.sb = sb
        ns = MountNamespace(new_mount(mctx.new_superblock("tmpfs", "mode=755")))
        self.ctx = FSContext(ns, ns.root, ns.root, Credentials(), umask=0o022)
        self.vfs.mkdir(self.ctx, self.ctx.root, "/m", 0o755)
        self.mount = mount_at(self.ctx, "/m", sb, flags)
        self.loot: list[bytes] = []

    def p(self, path: str) -> str:
        return "/m/" + path if path else "/m"

    def read(self, path: str) -> bytes:
        data = read_file(self.vfs, self.ctx, self.p(path))
        self.loot.append(data)
        return data

    def write(self, path: str, data: bytes) -> None:
        write_file(self.vfs, self.ctx, self.p(path), data)

    def ls(self, path: str = "") -> list[str]:
        names = sorted(listdir(self.vfs, self.ctx, self.p(path)))
        self.loot += [n.encode() for n in names]
        return names

    def open(self, path: str, flags: int, mode: int = 0o644) -> FileDescription:
        return self.vfs.open(self.ctx, self.ctx.root, self.p(path), flags, mode)

    def vd_inode(self, path: str, follow: bool = True) -> Inode:
        return resolve(self.ctx, self.ctx.root, self.p(path), follow=follow).inode

    def assert_clean(self) -> None:
        blob = b"\0".join(self.loot)
        assert self.secret not in blob
        assert (self.outside / "secret.txt").read_bytes() == self.secret
        assert (self.outside / "secretdir" / "secret.txt").read_bytes() == self.secret


@pytest.fixture
def h(mctx: MountContext, tmp_path: Path) -> H:
    return H(mctx, tmp_path)


# The operations, checked on the host.


def test_read_walk_and_getattr(h: H) -> None:
    assert h.read("hello.txt") == b"hello world\n"
    assert h.read("sub/deeper/x") == b"x"
    assert h.read("big.bin") == (h.host / "big.bin").read_bytes()
    assert h.read("link_in") == b"hello world\n"
    s = h.vfs.stat(h.ctx, h.ctx.root, "/m/sub/inner.txt")
    hs = os.lstat(h.host / "sub" / "inner.txt")
    assert (s.mode, s.uid, s.gid, s.nlink, s.size, s.ino, s.mtime, s.ctime) == (
        hs.st_mode, hs.st_uid, hs.st_gid, hs.st_nlink, hs.st_size, hs.st_ino, hs.st_mtime_ns, hs.st_ctime_ns)
    # Direct access shares the folder: host changes show at once.
    (h.host / "sub" / "inner.txt").write_bytes(b"changed")
    assert h.vfs.stat(h.ctx, h.ctx.root, "/m/sub/inner.txt").size == 7
    fails(errno.ENOENT, h.read, "nope")
    fails(errno.ENOTDIR, h.read, "hello.txt/x")
    fails(errno.EISDIR, h.read, "sub")


def test_create_write_mkdir_with_exact_modes(h: H) -> None:
    old = os.umask(0o077)  # the sentry's own umask must not change what the sandbox asked
    try:
        ctx0 = FSContext(h.ctx.ns, h.ctx.root, h.ctx.cwd, Credentials(), umask=0)
        h.vfs.mkdir(ctx0, ctx0.root, "/m/d", 0o777)
        fd = h.vfs.open(ctx0, ctx0.root, "/m/d/f", O_CREAT | O_EXCL | O_RDWR, 0o666)
        try:
            assert fd.write(b"abc") == 3
            assert fd.pwrite(b"Z", 5) == 1
            assert fd.pread(10, 0) == b"abc\0\0Z"
        finally:
            fd.dec_ref()
        h.vfs.mknod(ctx0, ctx0.root, "/m/d/fifo", stat.S_IFIFO | 0o666)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(h.host / "d").st_mode) == 0o777
    assert stat.S_IMODE(os.lstat(h.host / "d" / "f").st_mode) == 0o666
    assert stat.S_IMODE(os.lstat(h.host / "d" / "fifo").st_mode) == 0o666
    assert (h.host / "d" / "f").read_bytes() == b"abc\0\0Z"
    fails(errno.EEXIST, h.open, "d/f", O_CREAT | O_EXCL | O_WRONLY)
    fails(errno.EEXIST, h.vfs.mkdir, h.ctx, h.ctx.root, "/m/d", 0o755)


def test_big_data_append_fallocate_and_seek(h: H) -> None:
    payload = os.urandom(2 * 1024 * 1024 + 3)
    h.write("big.out", payload)
    assert (h.host / "big.out").read_bytes() == payload
    assert h.read("big.out") == payload
    for part in (b"one ", b"two"):
        fd = h.open("log", O_WRONLY | O_CREAT | os.O_APPEND)
        fd.write(part)
        fd.dec_ref()
    assert (h.host / "log").read_bytes() == b"one two"
    fd = h.open("sparse", O_CREAT | O_RDWR)
    try:
        fd.pwrite(b"data", 1 << 20)
        try:
            h.vfs.fallocate(fd, 0x01, 0, 4096)  # FALLOC_FL_KEEP_SIZE
        except SyscallError as e:
            assert e.errno == errno.EOPNOTSUPP
        assert fd.inode.size == (1 << 20) + 4
        assert fd.seek(0, SEEK_DATA) <= 1 << 20
        assert fd.seek(1 << 20, SEEK_HOLE) == (1 << 20) + 4
    finally:
        fd.dec_ref()


def test_rename_unlink_rmdir_symlink_link(h: H) -> None:
    v, c, r = h.vfs, h.ctx, h.ctx.root
    fd = h.open("sub/deeper/x", O_RDWR)
    try:
        v.rename(c, r, "/m/sub", r, "/m/empty/moved")
        assert (h.host / "empty" / "moved" / "deeper" / "x").exists()
        fd.pwrite(b"Y", 1)
        assert (h.host / "empty" / "moved" / "deeper" / "x").read_bytes() == b"xY"
        inode = fd.inode
        assert isinstance(inode, HostFSInode) and inode.path() == "/empty/moved/deeper/x"
    finally:
        fd.dec_ref()
    (h.host / "a").write_bytes(b"A")
    (h.host / "b").mkdir()
    v.rename(c, r, "/m/a", r, "/m/b", RENAME_EXCHANGE)
    assert (h.host / "a").is_dir() and (h.host / "b").read_bytes() == b"A"
    v.unlink(c, r, "/m/b")
    assert not (h.host / "b").exists()
    fails(errno.ENOTEMPTY, v.rmdir, c, r, "/m/empty")
    v.rmdir(c, r, "/m/a")
    v.symlink(c, "hello.txt", r, "/m/sl")
    assert os.readlink(h.host / "sl") == "hello.txt"
    assert v.readlink(c, r, "/m/sl") == "hello.txt"
    v.link(c, r, "/m/hello.txt", r, "/m/hard")
    assert os.lstat(h.host / "hard").st_ino == os.lstat(h.host / "hello.txt").st_ino
    assert h.vd_inode("hard") is h.vd_inode("hello.txt")
    v.link(c, r, "/m/sl", r, "/m/sl2")  # a symlink is linked itself, never its target
    assert os.readlink(h.host / "sl2") == "hello.txt"
    assert os.lstat(h.host / "sl2").st_ino == os.lstat(h.host / "sl").st_ino
    fails(errno.EPERM, v.mknod, c, r, "/m/dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    fails(errno.EPERM, v.mknod, c, r, "/m/sock", stat.S_IFSOCK | 0o600)
    assert not (h.host / "dev").exists() and not (h.host / "sock").exists()


def test_attributes(h: H) -> None:
    vd = resolve(h.ctx, h.ctx.root, "/m/hello.txt")
    h.vfs.chmod(h.ctx, vd, 0o640)
    h.vfs.truncate(h.ctx, vd, 5)
    h.vfs.utimens(h.ctx, vd, Timespec(1_500_000_000, 3), Timespec(1_600_000_000, 4))
    hs = os.lstat(h.host / "hello.txt")
    assert (stat.S_IMODE(hs.st_mode), hs.st_size, hs.st_atime_ns, hs.st_mtime_ns) == (
        0o640, 5, 1_500_000_000_000_000_003, 1_600_000_000_000_000_004)
    if os.geteuid() == 0:
        h.vfs.chown(h.ctx, vd, 77, 88)
        hs = os.lstat(h.host / "hello.txt")
        assert (hs.st_uid, hs.st_gid) == (77, 88)
    s = h.vfs.statfs(h.ctx, h.ctx.root, "/m")
    assert s.type == HOSTFS_MAGIC and s.blocks == os.statvfs(h.host).f_blocks
    fd = h.open("hello.txt", O_RDWR)
    h.vfs.fsync(fd)
    fd.dec_ref()


def test_listing_types_inode_numbers_and_stable_cookies(h: H) -> None:
    fd = h.open("", O_RDONLY | os.O_DIRECTORY)
    try:
        ents = {e.name: e for e in fd.getdents()}
    finally:
        fd.dec_ref()
    assert set(ents) - {".", ".."} == set(os.listdir(h.host))
    assert (ents["sub"].type, ents["hello.txt"].type, ents["link_in"].type) == (DT_DIR, DT_REG, DT_LNK)
    assert ents["hello.txt"].ino == os.lstat(h.host / "hello.txt").st_ino
    rng = random.Random(3)
    (h.host / "d").mkdir()
    present = {f"i{i}" for i in range(30)}
    for n in present:
        (h.host / "d" / n).write_bytes(b"")
    throughout, counter, seen = set(present), 0, []
    fd = h.open("d", O_RDONLY | os.O_DIRECTORY)
    try:
        while batch := fd.getdents(4):
            seen += [e.name for e in batch]
            for _ in range(rng.randrange(4)):
                if present and rng.random() < 0.5:
                    victim = rng.choice(sorted(present))
                    os.unlink(h.host / "d" / victim)  # changes by the host too
                    present.discard(victim)
                    throughout.discard(victim)
                else:
                    counter += 1
                    h.write(f"d/n{counter}", b"")
                    present.add(f"n{counter}")
        fd.seek(0, SEEK_SET)
        first = fd.getdents(3)
        rest = fd.getdents()
        fd.seek(first[-1].cookie, SEEK_SET)
        assert fd.getdents() == rest
    finally:
        fd.dec_ref()
    assert len(seen) == len(set(seen))
    assert not throughout - set(seen)


def test_user_xattrs_only(h: H) -> None:
    inode = h.vd_inode("hello.txt")
    try:
        os.setxattr(h.host / "hello.txt", "user.probe", b"1")
    except OSError:
        pytest.skip("the host filesystem has no user xattrs")
    inode.setxattr("user.k", b"v")
    assert os.getxattr(h.host / "hello.txt", "user.k") == b"v"
    assert inode.getxattr("user.k") == b"v"
    assert set(inode.listxattr()) == {"user.probe", "user.k"}
    inode.removexattr("user.k")
    fails(errno.ENODATA, inode.getxattr, "user.k")
    for name in ("trusted.x", "security.capability", "system.posix_acl_access", "user."):
        fails(errno.EOPNOTSUPP, inode.setxattr, name, b"\x01\x00\x00\x02")
        fails(errno.EOPNOTSUPP, inode.getxattr, name)
    assert "security.capability" not in os.listxattr(h.host / "hello.txt")


def test_read_only(mctx: MountContext, tmp_path: Path) -> None:
    h = H(mctx, tmp_path, MountFlags(read_only=True))
    assert h.read("hello.txt") == b"hello world\n"
    root = h.sb.root()
    inode = root.lookup("hello.txt")
    for call in (
        lambda: inode.write(0, b"x"),
        lambda: inode.truncate(0),
        lambda: root.create("n", 0o100644, Credentials()),
        lambda: root.mkdir("n", 0o40755, Credentials()),
        lambda: root.unlink("hello.txt", inode),
        lambda: root.rename("hello.txt", root, "h2"),
        lambda: h.open("hello.txt", O_WRONLY),
    ):
        fails(errno.EROFS, call)
    assert (h.host / "hello.txt").read_bytes() == b"hello world\n"
    assert sorted(os.listdir(h.host)) == ["big.bin", "empty", "hello.txt", "link_in", "sub"]


# Escapes.


@pytest.mark.parametrize(
    "path",
    ["..", "../outside/secret.txt", "sub/../../outside/secret.txt", "sub/deeper/../../../outside/secretdir/secret.txt",
     "../" * 20 + "outside/secret.txt"],
)
def test_dotdot_chains_stay_in_the_namespace(h: H, path: str) -> None:
    try:
        h.read(path)
    except SyscallError as e:
        assert e.errno in (errno.ENOENT, errno.EISDIR)
    h.assert_clean()


@pytest.mark.parametrize("name", ["..", ".", "", "../outside", "ABSOLUTE", "sub/../..", "a\0b", "x/y"])
def test_the_inodes_refuse_names_that_are_not_one_entry(h: H, name: str) -> None:
    # An absolute name points into the test's own outside folder, never at a system file.
    name = str(h.outside / "planted") if name == "ABSOLUTE" else name
    root = h.sb.root()
    fails(errno.EINVAL, root.lookup, name)
    for make in (root.create, root.mkdir):
        fails(errno.EINVAL, make, name, 0o644, Credentials())
    fails(errno.EINVAL, root.symlink, name, "x", Credentials())
    fails(errno.EINVAL, root.rename, "hello.txt", root, name)
    assert sorted(os.listdir(h.outside)) == ["secret.txt", "secretdir"]
    h.assert_clean()


def test_symlinks_out_of_the_root_lead_nowhere(h: H) -> None:
    secret = h.outside / "secret.txt"
    os.symlink(str(secret), h.host / "abs")
    os.symlink("../outside/secret.txt", h.host / "rel")
    os.symlink("../../outside", h.host / "sub" / "updir")
    os.symlink(str(h.outside), h.host / "absdir")
    for path in ("abs", "rel", "sub/updir/secret.txt", "absdir/secret.txt", "absdir/secretdir/secret.txt"):
        fails(errno.ENOENT, h.read, path)
        # Writing through them, even with O_CREAT, reaches nothing outside.
        fails(errno.ENOENT, h.open, path, O_WRONLY | O_CREAT | os.O_TRUNC)
    fails(errno.ENOENT, h.ls, "absdir")
    # The symlink inodes themselves: never followed by the host.
    for name in ("abs", "rel", "absdir"):
        link = h.sb.root().lookup(name)
        assert link.is_symlink()
        fails(errno.ENOTDIR, link.lookup, "secret.txt")
        fails(errno.EINVAL, link.read, 0, 100)
        fails(errno.EINVAL, link.write, 0, b"pwned")
        fails(errno.EINVAL, link.truncate, 0)
        fails(errno.EOPNOTSUPP, link.setxattr, "trusted.x", b"1")
        fails(errno.EPERM, link.setxattr, "user.x", b"1")
        h.loot.append(link.readlink().encode())
        with pytest.raises(SyscallError):
            h.open(name, O_RDONLY | os.O_NOFOLLOW)
    # utimens and chown of a symlink change the link, not its target.
    before = os.stat(secret)
    vd = resolve(h.ctx, h.ctx.root, "/m/abs", follow=False)
    h.vfs.utimens(h.ctx, vd, Timespec(1_000_000_000, 0), Timespec(1_000_000_000, 0))
    if os.geteuid() == 0:
        h.vfs.chown(h.ctx, vd, 4321, 4321)
        assert os.lstat(h.host / "abs").st_uid == 4321
    after = os.stat(secret)
    assert (after.st_mtime_ns, after.st_uid) == (before.st_mtime_ns, before.st_uid)
    assert os.lstat(h.host / "abs").st_mtime_ns == 1_000_000_000 * 10**9
    h.assert_clean()


def test_a_file_swapped_for_a_symlink_after_the_walk(h: H) -> None:
    inode = h.sb.root().lookup("hello.txt")
    os.rename(h.host / "hello.txt", h.host / "hello.moved")
    os.symlink(str(h.outside / "secret.txt"), h.host / "hello.txt")
    data = inode.read(0, 100)
    h.loot.append(data)
    assert data == b"hello world\n"  # the walked file, whatever the name now holds
    assert inode.write(0, b"HELLO") == 5
    assert (h.host / "hello.moved").read_bytes() == b"HELLO world\n"
    # A fresh walk meets the symlink and the VFS resolves it inside the sandbox.
    h.mount.root.children.clear()
    fails(errno.ENOENT, h.read, "hello.txt")
    h.assert_clean()


def test_rename_racing_walks(h: H) -> None:
    """A host thread keeps swapping the directory ``d`` (holding
    secretdir/secret.txt = INSIDE) with a symlink ``d`` -> the outside
    folder (holding the real secret at the same relative path); the sentry's
    one thread walks through the inodes with fresh lookups and through the
    VFS with its dentry cache dropped."""
    (h.host / "d" / "secretdir").mkdir(parents=True)
    (h.host / "d" / "secretdir" / "secret.txt").write_bytes(b"INSIDE")
    stop = threading.Event()
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    root = h.sb.root()

    def attack() -> None:
        try:
            while not stop.is_set():
                os.rename(h.host / "d", h.host / "d.real")
                os.symlink(str(h.outside), h.host / "d")
                time.sleep(0)
                os.unlink(h.host / "d")
                os.rename(h.host / "d.real", h.host / "d")
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    def note(key: str) -> None:
        with lock:
            outcomes[key] = outcomes.get(key, 0) + 1

    def walk_inodes_once() -> None:
        try:
            try:
                data = root.lookup("d").lookup("secretdir").lookup("secret.txt").read(0, 100)
                with lock:
                    h.loot.append(data)
                note("read")
            except SyscallError as e:
                note(errno.errorcode[e.errno])
        except BaseException as e:  # pragma: no cover
            errors.append(e)
            stop.set()

    def walk_vfs_once() -> None:
        try:
            h.mount.root.children.pop("d", None)
            try:
                data = read_file(h.vfs, h.ctx, "/m/d/secretdir/secret.txt")
                with lock:
                    h.loot.append(data)
                note("read")
            except SyscallError as e:
                note(errno.errorcode[e.errno])
        except BaseException as e:  # pragma: no cover
            errors.append(e)
            stop.set()

    def walk() -> None:
        # The sentry is one thread: its walks race the host, not each other.
        while not stop.is_set():
            for step in (walk_inodes_once, walk_vfs_once):
                step()

    threads = [threading.Thread(target=attack), threading.Thread(target=walk)]
    for t in threads:
        t.start()

    def enough() -> bool:
        with lock:
            return outcomes.get("read", 0) > 10 and sum(v for k, v in outcomes.items() if k != "read") > 10

    # At least 2 s of racing, and more on a loaded machine until both
    # outcomes were seen often enough (the walker may get few turns).
    deadline = time.monotonic() + 20
    time.sleep(2.0)
    while not enough() and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    h.assert_clean()
    assert b"INSIDE" in b"".join(h.loot)
    assert outcomes.get("read", 0) > 10, outcomes
    assert sum(v for k, v in outcomes.items() if k != "read") > 10, outcomes


def test_host_fifos_and_devices_are_never_opened(h: H) -> None:
    os.mkfifo(h.host / "hostfifo")
    fd = h.open("hostfifo", O_RDWR)  # the sentry's own pipe: opening the host FIFO would block here
    try:
        fd.write(b"to the sentry pipe")
        r = os.open(h.host / "hostfifo", os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(r, 100) == b""  # nothing came through the host FIFO
        finally:
            os.close(r)
    finally:
        fd.dec_ref()
    fails(errno.EINVAL, h.sb.root().lookup("hostfifo").read, 0, 10)


# Restore.


def test_restore_by_host_path(mctx: MountContext, tmp_path: Path) -> None:
    """What a checkpoint does with a direct mount: pickled without host fds,
    then opened again by host path (here a moved copy) and walked again."""
    host = tmp_path / "root"
    populate(host)
    sb = HostFSSuperblock(str(host))
    ns = MountNamespace(new_mount(sb))
    ctx = FSContext(ns, ns.root, ns.root, Credentials())
    vfs = mctx.vfs
    data = (host / "big.bin").read_bytes()
    fd = vfs.open(ctx, ctx.root, "/big.bin", O_RDONLY)
    w = vfs.open(ctx, ctx.root, "/sub/inner.txt", O_RDWR)
    assert fd.read(1000) == data[:1000]
    ino = vfs.stat(ctx, ctx.root, "/sub/deeper/x").ino
    image = cloudpickle.dumps((ns, fd, w))
    fd.dec_ref()
    w.dec_ref()
    ns2, fd2, w2 = cloudpickle.loads(image)
    sb2 = ns2.root_mount.sb
    assert isinstance(sb2, HostFSSuperblock)
    fails(errno.EIO, fd2.read, 10)
    copy = tmp_path / "copy"
    shutil.copytree(host, copy, symlinks=True)
    sb2.restore(str(copy))
    assert fd2.read(1000) == data[1000:2000]
    w2.seek(0, 2)
    w2.write(b"restored\n")
    assert (copy / "sub" / "inner.txt").read_bytes() == b"inner\nrestored\n"
    assert (host / "sub" / "inner.txt").read_bytes() == b"inner\n"
    ctx2 = FSContext(ns2, ns2.root, ns2.root, Credentials())
    assert vfs.stat(ctx2, ctx2.root, "/sub/deeper/x").ino == ino
    assert read_file(vfs, ctx2, "/sub/deeper/x") == b"x"
    fd2.dec_ref()
    w2.dec_ref()
    # A path that is gone is named.
    image = cloudpickle.dumps((ns2, vfs.open(ctx2, ctx2.root, "/hello.txt", O_RDONLY)))
    ns3, _ = cloudpickle.loads(image)
    os.unlink(copy / "hello.txt")
    with pytest.raises(HostFSRestoreError, match=r"/hello.txt \(no longer exists\)"):
        ns3.root_mount.sb.restore(str(copy))
    with pytest.raises(HostFSRestoreError, match="cannot open the source"):
        ns3.root_mount.sb.restore(str(tmp_path / "nowhere"))


def test_mount_source_errors(mctx: MountContext, tmp_path: Path) -> None:
    fs = mctx.filesystems["hostfs"]
    fails(errno.ENOENT, fs.mount, mctx, "none", MountFlags(), f"root={tmp_path}/missing")
    (tmp_path / "file").write_bytes(b"")
    fails(errno.ENOTDIR, fs.mount, mctx, "none", MountFlags(), f"root={tmp_path}/file")


@pytest.fixture
def many(mctx: MountContext, tmp_path: Path) -> Iterator[Callable[[], H]]:
    n = iter(range(100))
    yield lambda: H(mctx, tmp_path / f"h{next(n)}")


def test_no_fd_leaks(many: Callable[[], H]) -> None:
    h = many()
    h.read("hello.txt")
    base = len(os.listdir("/proc/self/fd"))
    for i in range(50):
        h.read("hello.txt")
        h.write(f"t{i}", b"x")
        h.vfs.unlink(h.ctx, h.ctx.root, f"/m/t{i}")
        h.ls("sub")
    import gc

    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= base + 2


def test_reconnect_from_restore_mount_data(h: H, tmp_path: Path) -> None:
    fd = h.open("sub/inner.txt", O_RDONLY)
    try:
        copy = tmp_path / "copy"
        shutil.copytree(h.host, copy, symlinks=True)
        (copy / "sub" / "inner.txt").write_bytes(b"the copy\n")
        h.sb.reconnect(None, f"root={copy},dont_translate_ownership=true")
        assert fd.pread(100, 0) == b"the copy\n"
        assert h.sb.root_path == str(copy)
    finally:
        fd.dec_ref()
