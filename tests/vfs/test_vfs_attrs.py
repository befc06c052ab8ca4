"""Attributes, permissions and timestamps through the VFS on tmpfs: stat(2)
and statx's btime, chmod(2), chown(2), utimensat(2), truncate(2), ftruncate(2),
access(2)/faccessat2, statfs(2), and the atime policies of relatime (the
default), strictatime and noatime (Linux ``fs/attr.c``, ``fs/open.c``,
``fs/utimes.c``, ``fs/inode.c`` ``touch_atime``, ``mm/shmem.c``).

Times come from a clock the tests move by hand.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import NO_ID, Credentials
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.vfs.file import O_PATH, FileDescription
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import Stat
from pyrunsc.core.vfs.mount import MountNamespace, VirtualDentry
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.vfs import (
    AT_EACCESS,
    F_OK,
    R_OK,
    UTIME_NOW,
    UTIME_OMIT,
    W_OK,
    X_OK,
    Timespec,
    VirtualFilesystem,
)
from pyrunsc.plugins.fs_tmpfs.tmpfs import TMPFS_MAGIC

from .conftest import mount_at, new_mount, user_ctx, write_file

SEC = 10**9
DAY = 24 * 3600 * SEC


def fails(code: int, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Call ``fn`` and require a SyscallError with ``code``."""
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value.name}"


class Clock:
    """A realtime clock in ns that only moves when told."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * SEC

    def __call__(self) -> int:
        return self.now

    def tick(self, ns: int = SEC) -> int:
        self.now += ns
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tctx(vfs: VirtualFilesystem, memfile: MemoryFile, plugins: Plugins, clock: Clock) -> FSContext:
    """Root's view of a namespace whose tmpfs root (mode 0755) uses ``clock``."""
    mc = MountContext(vfs, memfile, clock=clock, filesystems=dict(plugins.registry.filesystems))
    ns = MountNamespace(new_mount(mc.new_superblock("tmpfs", "mode=755")))
    return FSContext(ns, ns.root, ns.root, Credentials(), umask=0o022)


@pytest.fixture
def tmc(vfs: VirtualFilesystem, memfile: MemoryFile, plugins: Plugins, clock: Clock) -> MountContext:
    return MountContext(vfs, memfile, clock=clock, filesystems=dict(plugins.registry.filesystems))


def vd(ctx: FSContext, path: str) -> VirtualDentry:
    return resolve(ctx, ctx.root, path)


def st(vfs: VirtualFilesystem, ctx: FSContext, path: str) -> Stat:
    return vfs.stat(ctx, ctx.root, path, follow=False)


def times(s: Stat) -> tuple[int, int, int]:
    return s.atime, s.mtime, s.ctime


def opened(vfs: VirtualFilesystem, ctx: FSContext, path: str, flags: int = os.O_RDONLY) -> FileDescription:
    return vfs.open(ctx, ctx.root, path, flags, 0o644)


# stat.


def test_stat_fields(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock, tmc: MountContext) -> None:
    user = user_ctx(tctx, 1000, 1001)
    vfs.mkdir(tctx, tctx.root, "/pub", 0o777)
    vfs.chmod(tctx, vd(tctx, "/pub"), 0o777)
    write_file(vfs, user, "/pub/f", b"x" * 5000, mode=0o640)
    s = st(vfs, tctx, "/pub/f")
    assert s.mode == 0o100640
    assert (s.uid, s.gid) == (1000, 1001)
    assert (s.size, s.nlink, s.blksize, s.blocks) == (5000, 1, 4096, 16)
    assert s.atime == s.mtime == s.ctime == s.btime == clock.now
    assert s.dev == st(vfs, tctx, "/").dev
    assert s.mount_id == tctx.root.mount.id
    assert s.ino != st(vfs, tctx, "/pub").ino
    d = st(vfs, tctx, "/pub")
    assert (d.mode, d.nlink, d.blocks) == (0o40777, 2, 0)
    vfs.mkdir(tctx, tctx.root, "/m", 0o755)
    mount_at(tctx, "/m", tmc.new_superblock("tmpfs", "mode=700,uid=5,gid=6"))
    m = st(vfs, tctx, "/m")
    assert m.dev != s.dev
    assert (m.mode, m.uid, m.gid) == (0o40700, 5, 6)


# chmod.


def test_chmod(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    user = user_ctx(tctx)
    write_file(vfs, tctx, "/root_file", b"")
    vfs.mkdir(tctx, tctx.root, "/pub", 0o777)
    vfs.chmod(tctx, vd(tctx, "/pub"), 0o777)
    write_file(vfs, user, "/pub/mine", b"")
    before = st(vfs, tctx, "/pub/mine")
    now = clock.tick()
    vfs.chmod(user, vd(tctx, "/pub/mine"), 0o4751 | 0o170000)
    after = st(vfs, tctx, "/pub/mine")
    assert after.mode == 0o104751  # only the permission bits change
    assert (after.atime, after.mtime, after.ctime) == (before.atime, before.mtime, now)
    fails(errno.EPERM, vfs.chmod, user, vd(tctx, "/root_file"), 0o777)
    vfs.chmod(tctx, vd(tctx, "/pub/mine"), 0o600)  # root is CAP_FOWNER
    assert st(vfs, tctx, "/pub/mine").mode == 0o100600


def test_chmod_clears_setgid_for_a_group_the_caller_is_not_in(vfs: VirtualFilesystem, tctx: FSContext) -> None:
    user = user_ctx(tctx, 1000, 1000, groups=(50,))
    vfs.mkdir(tctx, tctx.root, "/pub", 0o777)
    vfs.chmod(tctx, vd(tctx, "/pub"), 0o777)
    write_file(vfs, user, "/pub/f", b"")
    vfs.chown(tctx, vd(tctx, "/pub/f"), -1, 2000)
    vfs.chmod(user, vd(tctx, "/pub/f"), 0o2775)
    assert st(vfs, tctx, "/pub/f").mode == 0o100775
    vfs.chown(user, vd(tctx, "/pub/f"), -1, 50)  # a supplementary group of the owner
    vfs.chmod(user, vd(tctx, "/pub/f"), 0o2775)
    assert st(vfs, tctx, "/pub/f").mode == 0o102775
    vfs.chown(tctx, vd(tctx, "/pub/f"), -1, 2000)
    vfs.chmod(tctx, vd(tctx, "/pub/f"), 0o2775)  # CAP_FSETID keeps it
    assert st(vfs, tctx, "/pub/f").mode == 0o102775


# chown.


def test_chown(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    user = user_ctx(tctx, 1000, 1000, groups=(50,))
    write_file(vfs, tctx, "/f", b"")
    now = clock.tick()
    vfs.chown(tctx, vd(tctx, "/f"), 1000, 1000)
    s = st(vfs, tctx, "/f")
    assert (s.uid, s.gid, s.ctime) == (1000, 1000, now)
    vfs.chown(user, vd(tctx, "/f"), -1, 50)  # the owner, to one of their groups
    vfs.chown(user, vd(tctx, "/f"), 1000, NO_ID)  # to the uid it already has
    assert (st(vfs, tctx, "/f").uid, st(vfs, tctx, "/f").gid) == (1000, 50)
    fails(errno.EPERM, vfs.chown, user, vd(tctx, "/f"), 1001, -1)
    fails(errno.EPERM, vfs.chown, user, vd(tctx, "/f"), -1, 51)
    write_file(vfs, tctx, "/rootfile", b"")
    fails(errno.EPERM, vfs.chown, user, vd(tctx, "/rootfile"), -1, 0)  # not the owner, even to the same group
    fails(errno.EPERM, vfs.chown, user, vd(tctx, "/rootfile"), 0, -1)
    now = clock.tick()
    vfs.chown(user, vd(tctx, "/rootfile"), -1, -1)  # changes nothing, so anyone may, and ctime moves
    assert st(vfs, tctx, "/rootfile").ctime == now


def test_chown_clears_set_id_bits_of_non_directories(vfs: VirtualFilesystem, tctx: FSContext) -> None:
    """Linux ``chown_common``: S_ISUID always (even for root and -1, -1);
    S_ISGID when group-executable, or when the caller is outside the group
    without CAP_FSETID. Directories keep theirs."""
    user = user_ctx(tctx, 1000, 1000)
    write_file(vfs, tctx, "/f", b"")
    for mode, uid, gid, want in (
        (0o6755, 0, 0, 0o755),
        (0o6755, -1, -1, 0o755),
        (0o6745, 0, -1, 0o2745),  # S_ISGID without group x is mandatory locking: kept for root
        (0o2745, -1, -1, 0o2745),
    ):
        vfs.chmod(tctx, vd(tctx, "/f"), mode)
        vfs.chown(tctx, vd(tctx, "/f"), uid, gid)
        assert st(vfs, tctx, "/f").mode & 0o7777 == want, (oct(mode), uid, gid)
    vfs.chown(tctx, vd(tctx, "/f"), 1000, 2000)
    vfs.chmod(tctx, vd(tctx, "/f"), 0o2745)
    vfs.chown(user, vd(tctx, "/f"), -1, -1)  # the owner, outside group 2000
    assert st(vfs, tctx, "/f").mode & 0o7777 == 0o745
    vfs.mkdir(tctx, tctx.root, "/d", 0o755)
    vfs.chmod(tctx, vd(tctx, "/d"), 0o7755)
    vfs.chown(tctx, vd(tctx, "/d"), 1, 1)
    assert st(vfs, tctx, "/d").mode & 0o7777 == 0o7755
    # Clearing the bits is a mode change: a caller that is not the owner may not.
    write_file(vfs, tctx, "/setuid_root", b"")
    vfs.chmod(tctx, vd(tctx, "/setuid_root"), 0o4755)
    fails(errno.EPERM, vfs.chown, user, vd(tctx, "/setuid_root"), -1, -1)
    assert st(vfs, tctx, "/setuid_root").mode & 0o7777 == 0o4755


def test_writing_drops_set_id_bits_unless_cap_fsetid(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    """Linux ``file_remove_privs`` (writes, via :meth:`remove_privs`) and
    ``do_truncate`` (truncate, O_TRUNC): S_ISUID goes, S_ISGID when
    group-executable or the writer is outside the group; CAP_FSETID keeps both."""
    user = user_ctx(tctx, 1000, 1000)
    write_file(vfs, tctx, "/f", b"data")
    vfs.chown(tctx, vd(tctx, "/f"), 1000, 1000)

    def check(mode: int, act: Callable[[], object], want: int) -> None:
        vfs.chmod(tctx, vd(tctx, "/f"), mode)
        act()
        assert st(vfs, tctx, "/f").mode & 0o7777 == want, oct(mode)

    fd = opened(vfs, user, "/f", os.O_WRONLY)
    check(0o6755, lambda: vfs.remove_privs(user, fd), 0o755)
    check(0o6745, lambda: vfs.remove_privs(user, fd), 0o2745)  # in the group, no group x: kept
    check(0o6755, lambda: vfs.remove_privs(tctx, fd), 0o6755)  # CAP_FSETID
    check(0o4755, lambda: vfs.truncate(user, vd(tctx, "/f"), 1), 0o755)
    check(0o4755, lambda: vfs.truncate(tctx, vd(tctx, "/f"), 1), 0o4755)
    check(0o2775, lambda: opened(vfs, user, "/f", os.O_WRONLY | os.O_TRUNC).dec_ref(), 0o775)
    vfs.chown(tctx, vd(tctx, "/f"), 1000, 2000)
    check(0o2745, lambda: vfs.remove_privs(user, fd), 0o745)  # outside group 2000
    vfs.chmod(tctx, vd(tctx, "/f"), 0o755)
    before = st(vfs, tctx, "/f").ctime
    clock.tick()
    vfs.remove_privs(user, fd)  # nothing to drop: ctime stays
    assert st(vfs, tctx, "/f").ctime == before
    vfs.chmod(tctx, vd(tctx, "/f"), 0o4755)
    now = clock.tick()
    vfs.remove_privs(user, fd)
    assert st(vfs, tctx, "/f").ctime == now
    fd.dec_ref()


def test_attribute_changes_on_a_read_only_mount_are_erofs_first(
    vfs: VirtualFilesystem, tctx: FSContext, tmc: MountContext
) -> None:
    """chmod, chown, utimensat and truncate take the mount for writing before
    any permission check (Linux ``mnt_want_write`` comes first)."""
    vfs.mkdir(tctx, tctx.root, "/ro", 0o755)
    sb = tmc.new_superblock("tmpfs", "mode=755")
    mount_at(tctx, "/ro", sb)
    write_file(vfs, tctx, "/ro/f", b"data", mode=0o600)
    mount_at(tctx, "/ro", sb, MountFlags(read_only=True))
    user = user_ctx(tctx)
    f = vd(tctx, "/ro/f")
    for who in (tctx, user):
        fails(errno.EROFS, vfs.chmod, who, f, 0o644)
        fails(errno.EROFS, vfs.chown, who, f, 1000, -1)
        fails(errno.EROFS, vfs.utimens, who, f, Timespec(), Timespec())
        fails(errno.EROFS, vfs.utimens, who, f, Timespec(1, 0), Timespec(1, 0))
        fails(errno.EROFS, vfs.truncate, who, f, 0)
    fails(errno.EISDIR, vfs.truncate, tctx, vd(tctx, "/ro"), 0)
    fails(errno.EINVAL, vfs.truncate, tctx, f, -1)
    assert st(vfs, tctx, "/ro/f").size == 4


# utimensat.


def test_utimens(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    write_file(vfs, tctx, "/f", b"")
    f = vd(tctx, "/f")
    created = clock.now
    now = clock.tick()
    vfs.utimens(tctx, f, Timespec(100, 5), Timespec(200, 6))
    assert times(st(vfs, tctx, "/f")) == (100 * SEC + 5, 200 * SEC + 6, now)
    now = clock.tick()
    vfs.utimens(tctx, f, Timespec(0, UTIME_OMIT), Timespec(0, UTIME_NOW))
    assert times(st(vfs, tctx, "/f")) == (100 * SEC + 5, now, now)
    now2 = clock.tick()
    vfs.utimens(tctx, f, Timespec(7, 0), Timespec(0, UTIME_OMIT))
    assert times(st(vfs, tctx, "/f")) == (7 * SEC, now, now2)
    clock.tick()
    vfs.utimens(tctx, f, Timespec(0, UTIME_OMIT), Timespec(0, UTIME_OMIT))  # nothing at all
    assert times(st(vfs, tctx, "/f")) == (7 * SEC, now, now2)
    assert st(vfs, tctx, "/f").btime == created
    fails(errno.EINVAL, vfs.utimens, tctx, f, Timespec(1, SEC), Timespec(0, UTIME_OMIT))
    fails(errno.EINVAL, vfs.utimens, tctx, f, Timespec(1, -1), Timespec(0, UTIME_NOW))


def test_utimens_permissions(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    """setattr_prepare/may_setattr: explicit times need the owner (or
    CAP_FOWNER); setting both to now also works with write permission."""
    user = user_ctx(tctx)
    write_file(vfs, tctx, "/writable", b"")
    vfs.chmod(tctx, vd(tctx, "/writable"), 0o666)
    write_file(vfs, tctx, "/readonly", b"", mode=0o644)
    now = clock.tick()
    vfs.utimens(user, vd(tctx, "/writable"), Timespec(), Timespec())
    assert times(st(vfs, tctx, "/writable")) == (now, now, now)
    fails(errno.EACCES, vfs.utimens, user, vd(tctx, "/readonly"), Timespec(), Timespec())
    fails(errno.EPERM, vfs.utimens, user, vd(tctx, "/writable"), Timespec(1, 0), Timespec(1, 0))
    fails(errno.EPERM, vfs.utimens, user, vd(tctx, "/writable"), Timespec(0, UTIME_OMIT), Timespec())
    # EINVAL for a bad nsec comes before anything else.
    fails(errno.EINVAL, vfs.utimens, user, vd(tctx, "/readonly"), Timespec(0, 2 * SEC), Timespec())


# truncate and ftruncate.


def test_truncate(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    write_file(vfs, tctx, "/f", b"0123456789")
    vfs.mkdir(tctx, tctx.root, "/d", 0o755)
    vfs.mknod(tctx, tctx.root, "/fifo", 0o010666)
    vfs.symlink(tctx, "/f", tctx.root, "/l")
    now = clock.tick()
    vfs.truncate(tctx, vd(tctx, "/l"), 4)  # through the symlink
    s = st(vfs, tctx, "/f")
    assert (s.size, s.mtime, s.ctime) == (4, now, now)
    vfs.truncate(tctx, vd(tctx, "/f"), 8)
    fd = opened(vfs, tctx, "/f")
    assert fd.read(100) == b"0123\0\0\0\0"
    fd.dec_ref()
    fails(errno.EISDIR, vfs.truncate, tctx, vd(tctx, "/d"), 0)
    fails(errno.EINVAL, vfs.truncate, tctx, vd(tctx, "/fifo"), 0)
    fails(errno.EINVAL, vfs.truncate, tctx, vd(tctx, "/f"), -1)
    fails(errno.EACCES, vfs.truncate, user_ctx(tctx), vd(tctx, "/f"), 0)


def test_ftruncate(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    write_file(vfs, tctx, "/f", b"0123456789")
    ro, rw, path = opened(vfs, tctx, "/f"), opened(vfs, tctx, "/f", os.O_RDWR), opened(vfs, tctx, "/f", O_PATH)
    fails(errno.EINVAL, vfs.ftruncate, ro, 0)
    fails(errno.EBADF, vfs.ftruncate, path, 0)
    fails(errno.EINVAL, vfs.ftruncate, rw, -1)
    fails(errno.EINVAL, vfs.ftruncate, path, -1)  # a negative length is checked first
    now = clock.tick()
    vfs.ftruncate(rw, 10)  # the same size: ftruncate still sets mtime and ctime
    assert (st(vfs, tctx, "/f").mtime, st(vfs, tctx, "/f").ctime) == (now, now)
    vfs.ftruncate(rw, 2)
    assert ro.read(100) == b"01"
    for fd in (ro, rw, path):
        fd.dec_ref()
    vfs.mkdir(tctx, tctx.root, "/d", 0o755)
    d = opened(vfs, tctx, "/d")
    fails(errno.EINVAL, vfs.ftruncate, d, 0)
    d.dec_ref()


# access.


def test_access(vfs: VirtualFilesystem, tctx: FSContext) -> None:
    user = user_ctx(tctx)
    write_file(vfs, tctx, "/rw", b"", mode=0o666)
    vfs.chmod(tctx, vd(tctx, "/rw"), 0o666)
    write_file(vfs, tctx, "/r", b"", mode=0o644)
    write_file(vfs, tctx, "/none", b"", mode=0o000)
    vfs.chmod(tctx, vd(tctx, "/none"), 0)
    write_file(vfs, tctx, "/x_owner", b"", mode=0o744)
    write_file(vfs, tctx, "/x_other", b"", mode=0o601)
    vfs.chmod(tctx, vd(tctx, "/x_other"), 0o601)
    vfs.mkdir(tctx, tctx.root, "/closed", 0o000)
    vfs.chmod(tctx, vd(tctx, "/closed"), 0)

    def ok(ctx: FSContext, path: str, mode: int) -> bool:
        try:
            vfs.access(ctx, ctx.root, path, mode)
        except SyscallError as e:
            assert e.errno == errno.EACCES, e
            return False
        return True

    assert ok(user, "/rw", R_OK | W_OK) and not ok(user, "/rw", X_OK)
    assert ok(user, "/r", R_OK) and not ok(user, "/r", W_OK)
    assert ok(user, "/none", F_OK) and not ok(user, "/none", R_OK)
    assert not ok(user, "/x_owner", X_OK) and ok(user, "/x_other", X_OK)
    assert not ok(user, "/closed", X_OK)
    # Root reads and writes anything, executes what has any x bit, searches any directory.
    assert ok(tctx, "/none", R_OK | W_OK)
    assert not ok(tctx, "/none", X_OK) and not ok(tctx, "/r", X_OK)
    assert ok(tctx, "/x_owner", X_OK) and ok(tctx, "/x_other", X_OK)
    assert ok(tctx, "/closed", R_OK | W_OK | X_OK)
    fails(errno.EINVAL, vfs.access, tctx, tctx.root, "/r", 8)
    fails(errno.ENOENT, vfs.access, tctx, tctx.root, "/nothing", F_OK)


def test_access_uses_real_ids_unless_at_eaccess(vfs: VirtualFilesystem, tctx: FSContext) -> None:
    write_file(vfs, tctx, "/secret", b"", mode=0o600)
    # A set-user-ID-root program run by uid 1000: euid 0, real uid 1000.
    setuid = FSContext(
        tctx.ns, tctx.root, tctx.cwd, Credentials.for_user(0, 0).with_ids(uid=1000, gid=1000), tctx.umask
    )
    fails(errno.EACCES, vfs.access, setuid, setuid.root, "/secret", R_OK)
    vfs.access(setuid, setuid.root, "/secret", R_OK, AT_EACCESS)
    # And the reverse: real root, effective 1000, no capabilities in effect.
    dropped = FSContext(
        tctx.ns, tctx.root, tctx.cwd,
        Credentials.for_user(1000, 1000).with_ids(uid=0, gid=0), tctx.umask,
    )
    vfs.access(dropped, dropped.root, "/secret", R_OK | W_OK)
    fails(errno.EACCES, vfs.access, dropped, dropped.root, "/secret", R_OK, AT_EACCESS)


def test_access_on_read_only_and_noexec_mounts(vfs: VirtualFilesystem, tctx: FSContext, tmc: MountContext) -> None:
    vfs.mkdir(tctx, tctx.root, "/m", 0o755)
    sb = tmc.new_superblock("tmpfs", "mode=755")
    mount_at(tctx, "/m", sb)
    write_file(vfs, tctx, "/m/prog", b"", mode=0o755)
    vfs.mknod(tctx, tctx.root, "/m/fifo", 0o010666)
    mount_at(tctx, "/m", sb, MountFlags(read_only=True, no_exec=True))
    fails(errno.EROFS, vfs.access, tctx, tctx.root, "/m/prog", W_OK)
    fails(errno.EROFS, vfs.access, tctx, tctx.root, "/m", W_OK)
    vfs.access(tctx, tctx.root, "/m/fifo", W_OK)  # special files are not on the filesystem's media
    vfs.access(tctx, tctx.root, "/m/prog", R_OK)
    fails(errno.EACCES, vfs.access, tctx, tctx.root, "/m/prog", X_OK)  # noexec: regular files
    vfs.access(tctx, tctx.root, "/m", X_OK)  # directories stay searchable


# statfs.


def test_statfs(vfs: VirtualFilesystem, tctx: FSContext, tmc: MountContext) -> None:
    vfs.mkdir(tctx, tctx.root, "/m", 0o755)
    mount_at(tctx, "/m", tmc.new_superblock("tmpfs", "size=1m,nr_inodes=100"))
    s = vfs.statfs(tctx, tctx.root, "/m")
    assert (s.type, s.bsize, s.frsize, s.namelen) == (TMPFS_MAGIC, 4096, 4096, 255)
    assert (s.blocks, s.bfree, s.bavail) == (256, 256, 256)
    assert (s.files, s.ffree) == (100, 99)  # the root directory is an inode too
    assert s.flags == 4096  # ST_RELATIME
    write_file(vfs, tctx, "/m/f", b"x" * 4097)
    s = vfs.statfs(tctx, tctx.root, "/m/f")
    assert (s.bfree, s.bavail, s.ffree) == (254, 254, 98)
    for flags, want in (
        (MountFlags(read_only=True), 1 | 4096),
        (MountFlags(no_atime=True), 1024),
        (MountFlags(strict_atime=True), 0),
        (MountFlags(no_suid=True, no_dev=True, no_exec=True, no_diratime=True), 2 | 4 | 8 | 2048 | 4096),
    ):
        vfs.mkdir(tctx, tctx.root, f"/f{want}", 0o755)
        mount_at(tctx, f"/f{want}", tmc.new_superblock("tmpfs", ""), flags)
        assert vfs.statfs(tctx, tctx.root, f"/f{want}").flags == want


# Timestamps.


def test_create_sets_all_times_and_touches_the_parent(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    vfs.mkdir(tctx, tctx.root, "/d", 0o755)
    parent_before = st(vfs, tctx, "/d")
    for i, make in enumerate((
        lambda p: write_file(vfs, tctx, p, b""),
        lambda p: vfs.mkdir(tctx, tctx.root, p, 0o755),
        lambda p: vfs.mknod(tctx, tctx.root, p, 0o010644),
        lambda p: vfs.symlink(tctx, "t", tctx.root, p),
    )):
        now = clock.tick()
        make(f"/d/n{i}")
        s = st(vfs, tctx, f"/d/n{i}")
        assert (s.atime, s.mtime, s.ctime, s.btime) == (now, now, now, now)
        p = st(vfs, tctx, "/d")
        assert (p.atime, p.mtime, p.ctime) == (parent_before.atime, now, now)


def test_write_truncate_and_fallocate_set_mtime_and_ctime(
    vfs: VirtualFilesystem, tctx: FSContext, clock: Clock
) -> None:
    write_file(vfs, tctx, "/f", b"abc")
    fd = opened(vfs, tctx, "/f", os.O_RDWR)
    created = st(vfs, tctx, "/f")
    for act in (
        lambda: fd.pwrite(b"x", 10),
        lambda: vfs.ftruncate(fd, 2),
        lambda: vfs.truncate(tctx, vd(tctx, "/f"), 5),
        lambda: vfs.fallocate(fd, 0, 0, 8192),
        lambda: vfs.fallocate(fd, 1, 8192, 4096),  # KEEP_SIZE
        lambda: vfs.fallocate(fd, 3, 0, 4096),  # PUNCH_HOLE | KEEP_SIZE
        lambda: opened(vfs, tctx, "/f", os.O_WRONLY | os.O_TRUNC).dec_ref(),
    ):
        now = clock.tick()
        act()
        s = st(vfs, tctx, "/f")
        assert (s.atime, s.mtime, s.ctime, s.btime) == (created.atime, now, now, created.btime)
    clock.tick()
    fd.pwrite(b"", 0)  # writing nothing changes nothing
    assert st(vfs, tctx, "/f").mtime == now
    fd.dec_ref()


def test_name_changes_set_ctime_and_the_parents_mtime(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    vfs.mkdir(tctx, tctx.root, "/a", 0o755)
    vfs.mkdir(tctx, tctx.root, "/b", 0o755)
    write_file(vfs, tctx, "/a/f", b"data")
    keep = opened(vfs, tctx, "/a/f")
    made = st(vfs, tctx, "/a/f")

    now = clock.tick()
    vfs.link(tctx, tctx.root, "/a/f", tctx.root, "/b/hard")
    s = st(vfs, tctx, "/a/f")
    assert (s.mtime, s.ctime) == (made.mtime, now)
    assert (st(vfs, tctx, "/b").mtime, st(vfs, tctx, "/b").ctime) == (now, now)
    assert st(vfs, tctx, "/a").mtime != now

    now = clock.tick()
    vfs.rename(tctx, tctx.root, "/a/f", tctx.root, "/b/moved")
    s = st(vfs, tctx, "/b/moved")
    assert (s.mtime, s.ctime) == (made.mtime, now)
    for d in ("/a", "/b"):
        assert (st(vfs, tctx, d).mtime, st(vfs, tctx, d).ctime) == (now, now)

    now = clock.tick()
    vfs.unlink(tctx, tctx.root, "/b/moved")
    assert vfs.stat_vd(keep.vd).ctime == now
    assert (st(vfs, tctx, "/b").mtime, st(vfs, tctx, "/b").ctime) == (now, now)

    vfs.mkdir(tctx, tctx.root, "/a/sub", 0o755)
    sub = opened(vfs, tctx, "/a/sub")
    now = clock.tick()
    vfs.rmdir(tctx, tctx.root, "/a/sub")
    assert vfs.stat_vd(sub.vd).ctime == now  # the removed directory's ctime too
    assert (st(vfs, tctx, "/a").mtime, st(vfs, tctx, "/a").ctime) == (now, now)
    keep.dec_ref()
    sub.dec_ref()


def test_chmod_chown_change_only_ctime(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    write_file(vfs, tctx, "/f", b"")
    made = st(vfs, tctx, "/f")
    now = clock.tick()
    vfs.chmod(tctx, vd(tctx, "/f"), 0o600)
    assert times(st(vfs, tctx, "/f")) == (made.atime, made.mtime, now)
    now = clock.tick()
    vfs.chown(tctx, vd(tctx, "/f"), 5, 5)
    assert times(st(vfs, tctx, "/f")) == (made.atime, made.mtime, now)
    assert st(vfs, tctx, "/").mtime == made.mtime  # the parent is untouched


def _read(vfs: VirtualFilesystem, ctx: FSContext, path: str, flags: int = os.O_RDONLY) -> None:
    fd = opened(vfs, ctx, path, flags)
    fd.read(10)
    fd.dec_ref()


def test_relatime_is_the_default(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    """Linux ``relatime_need_update``: atime moves when it is not after mtime
    or ctime, or when it is a day old."""
    write_file(vfs, tctx, "/f", b"data")
    now = clock.tick()
    _read(vfs, tctx, "/f")
    assert st(vfs, tctx, "/f").atime == now  # atime == mtime: updated
    clock.tick()
    _read(vfs, tctx, "/f")
    assert st(vfs, tctx, "/f").atime == now  # atime is after mtime and ctime now
    changed = clock.tick()
    write_file(vfs, tctx, "/f", b"new")
    clock.tick()
    read_at = clock.tick()
    _read(vfs, tctx, "/f")
    assert st(vfs, tctx, "/f").atime == read_at > changed
    clock.tick(DAY)
    later = clock.now
    _read(vfs, tctx, "/f")
    assert st(vfs, tctx, "/f").atime == later  # a day old
    clock.tick()
    _read(vfs, tctx, "/f", os.O_RDONLY | os.O_NOATIME)
    clock.tick(2 * DAY)
    _read(vfs, tctx, "/f", os.O_RDONLY | os.O_NOATIME)
    assert st(vfs, tctx, "/f").atime == later


def test_strictatime_and_noatime(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock, tmc: MountContext) -> None:
    for name, flags in (("strict", MountFlags(strict_atime=True)), ("noatime", MountFlags(no_atime=True))):
        vfs.mkdir(tctx, tctx.root, f"/{name}", 0o755)
        mount_at(tctx, f"/{name}", tmc.new_superblock("tmpfs", ""), flags)
        write_file(vfs, tctx, f"/{name}/f", b"data")
    made = clock.now
    for _ in range(3):
        now = clock.tick()
        _read(vfs, tctx, "/strict/f")
        _read(vfs, tctx, "/noatime/f")
        assert st(vfs, tctx, "/strict/f").atime == now
        assert st(vfs, tctx, "/noatime/f").atime == made
    clock.tick(2 * DAY)
    _read(vfs, tctx, "/noatime/f")
    assert st(vfs, tctx, "/noatime/f").atime == made


def test_directory_atime(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock, tmc: MountContext) -> None:
    for name, flags in (("rel", MountFlags()), ("nodiratime", MountFlags(no_diratime=True))):
        vfs.mkdir(tctx, tctx.root, f"/{name}", 0o755)
        mount_at(tctx, f"/{name}", tmc.new_superblock("tmpfs", ""), flags)
        vfs.mkdir(tctx, tctx.root, f"/{name}/d", 0o755)
        write_file(vfs, tctx, f"/{name}/f", b"x")
    made = clock.now
    now = clock.tick()
    for name in ("rel", "nodiratime"):
        fd = opened(vfs, tctx, f"/{name}/d", os.O_RDONLY | os.O_DIRECTORY)
        fd.getdents()
        fd.dec_ref()
        _read(vfs, tctx, f"/{name}/f")
    assert st(vfs, tctx, "/rel/d").atime == now
    assert st(vfs, tctx, "/nodiratime/d").atime == made
    assert st(vfs, tctx, "/nodiratime/f").atime == now  # files are not directories


def test_no_atime_updates_on_a_read_only_mount(
    vfs: VirtualFilesystem, tctx: FSContext, clock: Clock, tmc: MountContext
) -> None:
    vfs.mkdir(tctx, tctx.root, "/ro", 0o755)
    sb = tmc.new_superblock("tmpfs", "")
    mount_at(tctx, "/ro", sb)
    write_file(vfs, tctx, "/ro/f", b"x")
    mount_at(tctx, "/ro", sb, MountFlags(read_only=True, strict_atime=True))
    made = clock.now
    clock.tick()
    _read(vfs, tctx, "/ro/f")
    assert st(vfs, tctx, "/ro/f").atime == made


def test_btime_never_changes(vfs: VirtualFilesystem, tctx: FSContext, clock: Clock) -> None:
    write_file(vfs, tctx, "/f", b"x")
    born = st(vfs, tctx, "/f").btime
    clock.tick()
    write_file(vfs, tctx, "/f", b"yy")
    vfs.chmod(tctx, vd(tctx, "/f"), 0o600)
    vfs.utimens(tctx, vd(tctx, "/f"), Timespec(1, 0), Timespec(1, 0))
    vfs.rename(tctx, tctx.root, "/f", tctx.root, "/g")
    assert st(vfs, tctx, "/g").btime == born
    assert st(vfs, tctx, "/g").mtime == SEC
