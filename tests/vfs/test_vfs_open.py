"""open(2), file descriptions and the FD table on tmpfs (Linux ``fs/open.c``,
``fs/namei.c`` ``do_open``/``may_open``, ``fs/file.c``, ``fs/read_write.c``).

Offsets, access modes and status flags (O_APPEND, O_NONBLOCK, O_DIRECTORY,
O_PATH, O_TRUNC, O_CREAT|O_EXCL, O_TMPFILE, O_NOATIME), reference counts
shared by dup and fork, and the FD table (FD_CLOEXEC, lowest free number,
EMFILE, dup2).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, Credentials
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.fdtable import FDTable
from pyrunsc.core.vfs.file import (
    O_PATH,
    O_TMPFILE,
    SEEK_CUR,
    SEEK_DATA,
    SEEK_END,
    SEEK_HOLE,
    SEEK_SET,
    FileDescription,
    FileOps,
)
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import makedev
from pyrunsc.core.vfs.namei import FSContext
from pyrunsc.core.vfs.vfs import VirtualFilesystem

from .conftest import listdir, mount_at, read_file, user_ctx, write_file


def fails(code: int, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Call ``fn`` and require a SyscallError with ``code``."""
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value.name}"


def open_(vfs: VirtualFilesystem, ctx: FSContext, path: str, flags: int, mode: int = 0o644) -> FileDescription:
    return vfs.open(ctx, ctx.cwd, path, flags, mode)


@pytest.fixture
def f(vfs: VirtualFilesystem, ctx: FSContext) -> str:
    """/f holding b"0123456789", mode 0644, owned by root."""
    write_file(vfs, ctx, "/f", b"0123456789")
    return "/f"


# Offsets, reads and writes.


def test_read_and_write_move_the_offset(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    fd = open_(vfs, ctx, f, os.O_RDWR)
    assert fd.read(3) == b"012"
    assert fd.offset == 3
    assert fd.write(b"ab") == 2
    assert fd.offset == 5
    assert fd.read(100) == b"56789"
    assert fd.read(100) == b""
    assert fd.offset == 10
    fd.dec_ref()
    assert read_file(vfs, ctx, f) == b"012ab56789"


def test_each_open_has_its_own_offset(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    a, b = open_(vfs, ctx, f, os.O_RDONLY), open_(vfs, ctx, f, os.O_RDONLY)
    assert a.read(4) == b"0123"
    assert b.read(2) == b"01"
    assert a.read(2) == b"45"
    a.dec_ref()
    b.dec_ref()


def test_pread_and_pwrite_leave_the_offset(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    fd = open_(vfs, ctx, f, os.O_RDWR)
    fd.seek(2, SEEK_SET)
    assert fd.pread(3, 5) == b"567"
    assert fd.pwrite(b"XY", 8) == 2
    assert fd.pread(10, 20) == b""
    assert fd.offset == 2
    assert fd.pwrite(b"!", 12) == 1  # past the end: a hole of zeros in between
    assert fd.pread(100, 0) == b"01234567XY\0\0!"
    fails(errno.EINVAL, fd.pread, 1, -1)
    fails(errno.EINVAL, fd.pwrite, b"x", -1)
    fails(errno.EINVAL, fd.pread, -1, 0)
    fd.dec_ref()


def test_access_mode_decides_read_and_write(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    ro, wo = open_(vfs, ctx, f, os.O_RDONLY), open_(vfs, ctx, f, os.O_WRONLY)
    fails(errno.EBADF, ro.write, b"x")
    fails(errno.EBADF, ro.pwrite, b"x", 0)
    fails(errno.EBADF, wo.read, 1)
    fails(errno.EBADF, wo.pread, 1, 0)
    assert wo.write(b"AB") == 2
    assert ro.read(3) == b"AB2"
    ro.dec_ref()
    wo.dec_ref()


def test_access_mode_3_needs_read_and_write_permission_and_gives_neither(
    vfs: VirtualFilesystem, ctx: FSContext, f: str
) -> None:
    """Linux: O_ACCMODE (3) checks MAY_READ|MAY_WRITE and opens for neither."""
    user = user_ctx(ctx)
    fails(errno.EACCES, open_, vfs, user, f, os.O_ACCMODE)
    fd = open_(vfs, ctx, f, os.O_ACCMODE)
    fails(errno.EBADF, fd.read, 1)
    fails(errno.EBADF, fd.write, b"x")
    fd.dec_ref()


def test_lseek(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    fd = open_(vfs, ctx, f, os.O_RDWR)
    assert fd.seek(4, SEEK_SET) == 4
    assert fd.seek(-2, SEEK_CUR) == 2
    assert fd.read(1) == b"2"
    assert fd.seek(-1, SEEK_END) == 9
    assert fd.read(5) == b"9"
    assert fd.seek(100, SEEK_END) == 110  # beyond the end is allowed
    assert fd.read(1) == b""
    fails(errno.EINVAL, fd.seek, -1, SEEK_SET)
    fails(errno.EINVAL, fd.seek, -200, SEEK_END)
    fails(errno.EINVAL, fd.seek, 0, 7)
    assert fd.offset == 110  # failed seeks leave it
    assert fd.seek(0, SEEK_DATA) == 0  # a file with no holes: all data
    assert fd.seek(3, SEEK_HOLE) == 10  # the implicit hole at the end
    fails(errno.ENXIO, fd.seek, 10, SEEK_DATA)
    fails(errno.ENXIO, fd.seek, 10, SEEK_HOLE)
    fails(errno.ENXIO, fd.seek, -1, SEEK_DATA)
    fd.dec_ref()


def test_lseek_on_a_directory(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    """tmpfs directories (Linux ``dcache_dir_lseek``) take SEEK_SET and
    SEEK_CUR only: SEEK_END, SEEK_DATA and SEEK_HOLE are EINVAL."""
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    fd = open_(vfs, ctx, "/d", os.O_RDONLY | os.O_DIRECTORY)
    assert fd.seek(0, SEEK_SET) == 0
    assert fd.seek(2, SEEK_CUR) == 2
    for whence in (SEEK_END, SEEK_DATA, SEEK_HOLE):
        fails(errno.EINVAL, fd.seek, 0, whence)
    fails(errno.EISDIR, fd.read, 1)
    fd.dec_ref()


def test_o_append(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    fd = open_(vfs, ctx, f, os.O_WRONLY | os.O_APPEND)
    fd.seek(0, SEEK_SET)
    assert fd.write(b"ab") == 2
    assert fd.offset == 12
    # pwrite on an O_APPEND description appends too (a documented Linux bug).
    assert fd.pwrite(b"cd", 0) == 2
    assert read_file(vfs, ctx, f) == b"0123456789abcd"
    # ftruncate is fine on O_APPEND (only the append-only inode flag refuses it).
    vfs.ftruncate(fd, 3)
    assert fd.write(b"Z") == 1
    assert read_file(vfs, ctx, f) == b"012Z"
    fd.dec_ref()


def test_status_flags_are_kept_and_only_setfl_bits_change(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    fd = open_(vfs, ctx, f, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_TRUNC)
    assert fd.flags & os.O_NONBLOCK
    assert fd.flags & os.O_ACCMODE == os.O_RDWR
    assert not fd.flags & (os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_EXCL)
    fd.set_status_flags(os.O_APPEND | os.O_WRONLY | os.O_TRUNC)
    assert fd.flags & os.O_ACCMODE == os.O_RDWR  # the access mode stays
    assert fd.flags & os.O_APPEND
    assert not fd.flags & os.O_NONBLOCK
    assert not fd.flags & os.O_TRUNC
    fd.dec_ref()


# O_DIRECTORY, O_PATH, O_TRUNC.


def test_o_directory(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    vfs.symlink(ctx, "/d", ctx.root, "/ld")
    fails(errno.ENOTDIR, open_, vfs, ctx, f, os.O_RDONLY | os.O_DIRECTORY)
    for path in ("/d", "/ld", "/"):
        fd = open_(vfs, ctx, path, os.O_RDONLY | os.O_DIRECTORY)
        assert fd.inode.is_dir()
        fd.dec_ref()
    fails(errno.EISDIR, open_, vfs, ctx, "/d", os.O_WRONLY)
    fails(errno.EISDIR, open_, vfs, ctx, "/d", os.O_RDWR | os.O_DIRECTORY)
    fails(errno.EISDIR, open_, vfs, ctx, "/d", os.O_RDONLY | os.O_TRUNC)


def test_o_path_does_no_io(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    fd = open_(vfs, ctx, f, O_PATH | os.O_RDWR)
    for call in (
        lambda: fd.read(1),
        lambda: fd.write(b"x"),
        lambda: fd.pread(1, 0),
        lambda: fd.pwrite(b"x", 0),
        lambda: fd.seek(0, SEEK_SET),
        lambda: vfs.ftruncate(fd, 0),
        lambda: vfs.fallocate(fd, 0, 0, 10),
        lambda: vfs.fsync(fd),
    ):
        fails(errno.EBADF, call)
    assert vfs.stat_vd(fd.vd).size == 10
    fd.dec_ref()
    dfd = open_(vfs, ctx, "/d", O_PATH)
    fails(errno.EBADF, dfd.getdents)
    assert vfs.stat(ctx, dfd.vd, ".").ino == dfd.inode.ino  # usable as a dirfd
    dfd.dec_ref()


def test_o_path_needs_no_permission_and_ignores_other_flags(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    write_file(vfs, ctx, "/d/secret", b"s", mode=0o000)
    user = user_ctx(ctx)
    fd = open_(vfs, user, "/d/secret", O_PATH | os.O_RDWR | os.O_TRUNC)
    assert vfs.stat_vd(fd.vd).size == 1  # not truncated
    fd.dec_ref()
    fails(errno.ENOENT, open_, vfs, ctx, "/d/new", O_PATH | os.O_CREAT)  # O_CREAT is ignored
    # O_PATH | O_TMPFILE is O_PATH | O_DIRECTORY: the directory itself.
    fd = open_(vfs, ctx, "/d", O_PATH | O_TMPFILE | os.O_RDWR)
    assert fd.inode.is_dir()
    fd.dec_ref()
    assert listdir(vfs, ctx, "/d") == ["secret"]


def test_o_trunc(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    fd = open_(vfs, ctx, f, os.O_WRONLY | os.O_TRUNC)
    assert vfs.stat_vd(fd.vd).size == 0
    fd.dec_ref()
    write_file(vfs, ctx, f, b"abc")
    # O_RDONLY | O_TRUNC truncates too on Linux, and needs write permission.
    fd = open_(vfs, ctx, f, os.O_RDONLY | os.O_TRUNC)
    assert vfs.stat_vd(fd.vd).size == 0
    fd.dec_ref()
    write_file(vfs, ctx, "/ro", b"keep", mode=0o644)
    user = user_ctx(ctx)
    fails(errno.EACCES, open_, vfs, user, "/ro", os.O_RDONLY | os.O_TRUNC)
    assert read_file(vfs, ctx, "/ro") == b"keep"


# O_CREAT.


def test_o_creat_and_o_excl(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    fd = open_(vfs, ctx, "/new", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    st = vfs.stat_vd(fd.vd)
    assert st.mode == 0o100644  # umask 022
    assert st.size == 0
    assert (st.uid, st.gid) == (0, 0)
    fd.dec_ref()
    fails(errno.EEXIST, open_, vfs, ctx, "/new", os.O_CREAT | os.O_EXCL | os.O_RDWR)
    # Without O_EXCL an existing file is opened as it is (mode unchanged).
    fd = open_(vfs, ctx, f, os.O_CREAT | os.O_RDONLY, 0o600)
    assert fd.read(3) == b"012"
    assert vfs.stat_vd(fd.vd).mode == 0o100644
    fd.dec_ref()
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    fails(errno.EISDIR, open_, vfs, ctx, "/d", os.O_CREAT | os.O_RDONLY)
    fails(errno.EEXIST, open_, vfs, ctx, "/d", os.O_CREAT | os.O_EXCL | os.O_RDONLY)
    fails(errno.ENOENT, open_, vfs, ctx, "/nothing/x", os.O_CREAT | os.O_RDONLY)
    fails(errno.ENOTDIR, open_, vfs, ctx, "/f/x", os.O_CREAT | os.O_RDONLY)


def test_o_creat_of_dot_dotdot_and_root(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    """Linux ``do_open``: O_EXCL on an existing name is EEXIST before a
    directory is EISDIR."""
    for path in ("/", ".", "..", "/."):
        fails(errno.EISDIR, open_, vfs, ctx, path, os.O_CREAT | os.O_RDONLY)
        fails(errno.EEXIST, open_, vfs, ctx, path, os.O_CREAT | os.O_EXCL | os.O_RDONLY)


def test_o_creat_with_a_trailing_slash_is_eisdir(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    """Linux ``open_last_lookups``: O_CREAT and a trailing slash is EISDIR,
    whatever is (or is not) there."""
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    for path in ("/f/", "/new/", "/d/"):
        fails(errno.EISDIR, open_, vfs, ctx, path, os.O_CREAT | os.O_RDONLY)
        fails(errno.EISDIR, open_, vfs, ctx, path, os.O_CREAT | os.O_EXCL | os.O_RDONLY)
    assert sorted(listdir(vfs, ctx, "/")) == ["d", "f"]


def test_o_creat_with_o_directory_is_einval(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    """Linux 6.4 and later: O_CREAT | O_DIRECTORY is EINVAL."""
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    fails(errno.EINVAL, open_, vfs, ctx, "/new", os.O_CREAT | os.O_DIRECTORY | os.O_RDONLY)
    fails(errno.EINVAL, open_, vfs, ctx, "/d", os.O_CREAT | os.O_DIRECTORY | os.O_RDONLY)
    assert listdir(vfs, ctx, "/") == ["d"]


def test_o_creat_through_a_dangling_symlink_creates_its_target(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    vfs.symlink(ctx, "d/target", ctx.root, "/link")
    vfs.symlink(ctx, "link", ctx.root, "/link2")
    fails(errno.EEXIST, open_, vfs, ctx, "/link", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    fails(errno.ELOOP, open_, vfs, ctx, "/link", os.O_CREAT | os.O_NOFOLLOW | os.O_WRONLY)
    fd = open_(vfs, ctx, "/link2", os.O_CREAT | os.O_WRONLY, 0o600)
    fd.write(b"via link")
    fd.dec_ref()
    assert listdir(vfs, ctx, "/d") == ["target"]
    assert read_file(vfs, ctx, "/d/target") == b"via link"
    assert vfs.stat(ctx, ctx.cwd, "/d/target").mode == 0o100600
    # Into a missing directory: ENOENT; a target with a trailing slash: EISDIR.
    vfs.symlink(ctx, "missing/t", ctx.root, "/bad")
    fails(errno.ENOENT, open_, vfs, ctx, "/bad", os.O_CREAT | os.O_WRONLY)
    vfs.symlink(ctx, "t3/", ctx.root, "/slash")
    fails(errno.EISDIR, open_, vfs, ctx, "/slash", os.O_CREAT | os.O_WRONLY)
    # Existing targets are opened; loops are ELOOP.
    vfs.symlink(ctx, "/d/target", ctx.root, "/good")
    fd = open_(vfs, ctx, "/good", os.O_CREAT | os.O_RDONLY)
    assert fd.read(3) == b"via"
    fd.dec_ref()
    vfs.symlink(ctx, "loop", ctx.root, "/loop")
    fails(errno.ELOOP, open_, vfs, ctx, "/loop", os.O_CREAT | os.O_WRONLY)


def test_o_creat_permissions_and_read_only_mounts(
    vfs: VirtualFilesystem, ctx: FSContext, f: str, mctx: MountContext
) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    user = user_ctx(ctx)
    fails(errno.EACCES, open_, vfs, user, "/d/new", os.O_CREAT | os.O_WRONLY)
    vfs.mkdir(ctx, ctx.root, "/ro", 0o755)
    mount_at(ctx, "/ro", mctx.new_superblock("tmpfs", "mode=777"), MountFlags(read_only=True))
    fails(errno.EROFS, open_, vfs, ctx, "/ro/new", os.O_CREAT | os.O_WRONLY)
    fails(errno.EROFS, open_, vfs, user, "/ro/new", os.O_CREAT | os.O_RDONLY)
    fails(errno.EROFS, open_, vfs, ctx, "/ro", O_TMPFILE | os.O_RDWR)


def test_read_only_mount_refuses_write_opens_before_permission(
    vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext
) -> None:
    """A read-only mount answers EROFS for writing a file, directory or
    symlink before any EACCES, as a fresh read-only mount does on Linux (its
    superblock is read-only: ``sb_permission``); FIFOs and devices stay
    writable."""
    vfs.mkdir(ctx, ctx.root, "/m", 0o755)
    sb = mctx.new_superblock("tmpfs", "mode=755")
    m = mount_at(ctx, "/m", sb, MountFlags())
    write_file(vfs, ctx, "/m/f", b"data", mode=0o600)
    vfs.mknod(ctx, ctx.root, "/m/fifo", 0o010666)
    ro_ctx_mount = mount_at(ctx, "/m", sb, MountFlags(read_only=True))  # the same tmpfs, read-only on top
    assert ro_ctx_mount.read_only and not m.read_only
    user = user_ctx(ctx)
    for who in (ctx, user):
        fails(errno.EROFS, open_, vfs, who, "/m/f", os.O_WRONLY)
        fails(errno.EROFS, open_, vfs, who, "/m/f", os.O_RDONLY | os.O_TRUNC)
    fails(errno.EACCES, open_, vfs, user, "/m/f", os.O_RDONLY)
    fd = open_(vfs, ctx, "/m/f", os.O_RDONLY)
    assert fd.read(10) == b"data"
    fd.dec_ref()
    fd = open_(vfs, ctx, "/m/fifo", os.O_RDWR | os.O_TRUNC)
    assert fd.write(b"x") == 1
    fd.dec_ref()


def test_o_noatime_needs_the_owner(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    user = user_ctx(ctx)
    fails(errno.EPERM, open_, vfs, user, f, os.O_RDONLY | os.O_NOATIME)
    fd = open_(vfs, ctx, f, os.O_RDONLY | os.O_NOATIME)
    fd.dec_ref()


def test_permission_checks_at_open(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    write_file(vfs, ctx, "/r", b"r", mode=0o644)
    write_file(vfs, ctx, "/none", b"n", mode=0o000)
    user = user_ctx(ctx)
    fd = open_(vfs, user, "/r", os.O_RDONLY)
    fd.dec_ref()
    fails(errno.EACCES, open_, vfs, user, "/r", os.O_WRONLY)
    fails(errno.EACCES, open_, vfs, user, "/r", os.O_RDWR)
    fails(errno.EACCES, open_, vfs, user, "/none", os.O_RDONLY)
    # Root's CAP_DAC_OVERRIDE reads and writes a mode-0 file.
    fd = open_(vfs, ctx, "/none", os.O_RDWR)
    assert fd.read(1) == b"n"
    fd.dec_ref()
    # CAP_DAC_READ_SEARCH alone reads but does not write.
    reader = FSContext(
        ctx.ns, ctx.root, ctx.cwd, Credentials.for_user(1000, 1000, caps=1 << CAP_DAC_READ_SEARCH), ctx.umask
    )
    fd = open_(vfs, reader, "/none", os.O_RDONLY)
    fd.dec_ref()
    fails(errno.EACCES, open_, vfs, reader, "/none", os.O_WRONLY)
    writer = FSContext(
        ctx.ns, ctx.root, ctx.cwd, Credentials.for_user(1000, 1000, caps=1 << CAP_DAC_OVERRIDE), ctx.umask
    )
    fd = open_(vfs, writer, "/none", os.O_WRONLY)
    fd.dec_ref()


def test_special_files(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext) -> None:
    """Sockets and unregistered devices: ENXIO after the permission check;
    registered character devices get their driver's FileOps; a nodev mount
    refuses device opens with EACCES (Linux ``may_open_dev``)."""

    class Echo(FileOps):
        seekable = False

        def read(self, fd: FileDescription, length: int, offset: int) -> bytes:
            return b"e" * length

    vfs.devices.register(42, 7, lambda fd: Echo())
    vfs.mknod(ctx, ctx.root, "/sock", 0o140666)
    vfs.mknod(ctx, ctx.root, "/dev42", 0o020666, makedev(42, 7))
    vfs.mknod(ctx, ctx.root, "/dev43", 0o020600, makedev(43, 0))
    vfs.mknod(ctx, ctx.root, "/blk", 0o060666, makedev(8, 0))
    fails(errno.ENXIO, open_, vfs, ctx, "/sock", os.O_RDWR)
    fails(errno.ENXIO, open_, vfs, ctx, "/dev43", os.O_RDONLY)
    fails(errno.ENXIO, open_, vfs, ctx, "/blk", os.O_RDONLY)
    fails(errno.EACCES, open_, vfs, user_ctx(ctx), "/dev43", os.O_RDONLY)
    fd = open_(vfs, ctx, "/dev42", os.O_RDONLY)
    assert fd.read(3) == b"eee"
    fails(errno.ESPIPE, fd.seek, 0, SEEK_SET)
    fd.dec_ref()
    vfs.mkdir(ctx, ctx.root, "/nodev", 0o755)
    sb = mctx.new_superblock("tmpfs", "mode=755")
    mount_at(ctx, "/nodev", sb)
    vfs.mknod(ctx, ctx.root, "/nodev/dev42", 0o020666, makedev(42, 7))
    mount_at(ctx, "/nodev", sb, MountFlags(no_dev=True))
    fails(errno.EACCES, open_, vfs, ctx, "/nodev/dev42", os.O_RDONLY)


def test_fsync(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    vfs.mknod(ctx, ctx.root, "/fifo", 0o010644)
    for path, flags in ((f, os.O_RDONLY), (f, os.O_WRONLY), ("/d", os.O_RDONLY)):
        fd = open_(vfs, ctx, path, flags)
        vfs.fsync(fd)
        fd.dec_ref()
    fd = open_(vfs, ctx, "/fifo", os.O_RDWR)
    fails(errno.EINVAL, vfs.fsync, fd)  # pipes have no fsync
    fd.dec_ref()


# O_TMPFILE.


def test_o_tmpfile(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    sb = ctx.root.mount.sb
    inodes = sb.inodes  # type: ignore[attr-defined]
    fd = open_(vfs, ctx, "/d", O_TMPFILE | os.O_RDWR, 0o640)
    st = vfs.stat_vd(fd.vd)
    assert st.nlink == 0
    assert st.mode == 0o100640
    assert fd.write(b"temporary") == 9
    assert fd.pread(100, 0) == b"temporary"
    assert listdir(vfs, ctx, "/d") == []
    assert sb.inodes == inodes + 1  # type: ignore[attr-defined]
    assert sb.used_pages == 1  # type: ignore[attr-defined]
    fd.dec_ref()
    assert sb.inodes == inodes  # type: ignore[attr-defined]
    assert sb.used_pages == 0  # type: ignore[attr-defined]


def test_o_tmpfile_errors(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    fails(errno.EINVAL, open_, vfs, ctx, "/d", O_TMPFILE | os.O_RDONLY)
    fails(errno.EINVAL, open_, vfs, ctx, "/d", O_TMPFILE | os.O_RDWR | os.O_CREAT)
    fails(errno.ENOTDIR, open_, vfs, ctx, f, O_TMPFILE | os.O_RDWR)
    fails(errno.ENOENT, open_, vfs, ctx, "/nothing", O_TMPFILE | os.O_RDWR)
    fails(errno.EACCES, open_, vfs, user_ctx(ctx), "/d", O_TMPFILE | os.O_RDWR)


def test_o_tmpfile_can_be_linked_unless_o_excl(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    """linkat(fd, "", AT_EMPTY_PATH) on an O_TMPFILE file gives it a name once
    (Linux I_LINKABLE); with O_EXCL it never can (ENOENT)."""
    fd = open_(vfs, ctx, "/", O_TMPFILE | os.O_RDWR, 0o600)
    fd.write(b"kept")
    vfs.link_vd(ctx, fd.vd, ctx.root, "/named")
    assert vfs.stat_vd(fd.vd).nlink == 1
    assert read_file(vfs, ctx, "/named") == b"kept"
    vfs.unlink(ctx, ctx.root, "/named")
    fails(errno.ENOENT, vfs.link_vd, ctx, fd.vd, ctx.root, "/again")
    fd.dec_ref()
    fd = open_(vfs, ctx, "/", O_TMPFILE | os.O_RDWR | os.O_EXCL, 0o600)
    fails(errno.ENOENT, vfs.link_vd, ctx, fd.vd, ctx.root, "/named")
    fd.dec_ref()
    assert listdir(vfs, ctx, "/") == []


# Reference counts, dup and fork.


def test_dup_shares_the_description(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    table = FDTable()
    fd = open_(vfs, ctx, f, os.O_RDWR)
    a = table.install(fd)
    fd.inc_ref()
    b = table.install(fd)
    assert fd.refs == 2
    assert table.get(a) is table.get(b)
    assert table.get(a).read(4) == b"0123"
    assert table.get(b).read(2) == b"45"  # one offset
    table.get(b).set_status_flags(os.O_APPEND)
    assert table.get(a).flags & os.O_APPEND  # one set of status flags
    table.close(a)
    assert fd.refs == 1
    assert table.get(b).read(1) == b"6"
    table.close(b)
    assert fd.refs == 0
    fails(errno.EBADF, table.get, b)
    fails(errno.EBADF, table.close, b)


def test_fork_shares_descriptions(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    parent = FDTable()
    n = parent.install(open_(vfs, ctx, f, os.O_RDONLY), cloexec=True)
    child = parent.fork()
    desc = parent.get(n)
    assert child.get(n) is desc
    assert child.get_cloexec(n)
    assert desc.refs == 2
    assert child.get(n).read(3) == b"012"
    assert parent.get(n).read(3) == b"345"  # the offset is shared across fork
    parent.close(n)
    assert desc.refs == 1
    assert child.get(n).read(1) == b"6"
    child.close_all()
    assert desc.refs == 0
    assert len(child) == 0


def test_last_close_frees_an_unlinked_file(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    sb = ctx.root.mount.sb
    table = FDTable()
    n = table.install(open_(vfs, ctx, f, os.O_RDONLY))
    child = table.fork()
    vfs.unlink(ctx, ctx.root, f)
    pages = sb.used_pages  # type: ignore[attr-defined]
    assert pages == 1
    table.close(n)
    assert sb.used_pages == 1  # type: ignore[attr-defined]
    assert child.get(n).read(100) == b"0123456789"
    child.close(n)
    assert sb.used_pages == 0  # type: ignore[attr-defined]


def test_fd_table_lowest_free_number(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    table = FDTable()
    fds = [table.install(open_(vfs, ctx, f, os.O_RDONLY)) for _ in range(4)]
    assert fds == [0, 1, 2, 3]
    table.close(1)
    table.close(2)
    assert table.install(open_(vfs, ctx, f, os.O_RDONLY)) == 1
    assert table.install(open_(vfs, ctx, f, os.O_RDONLY), min_fd=3) == 4  # F_DUPFD from 3
    assert table.install(open_(vfs, ctx, f, os.O_RDONLY)) == 2
    assert table.install(open_(vfs, ctx, f, os.O_RDONLY), min_fd=10) == 10
    assert [n for n, _, _ in table] == [0, 1, 2, 3, 4, 10]
    table.close_all()


def test_fd_table_limit(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    table = FDTable(limit=3)
    for _ in range(3):
        table.install(open_(vfs, ctx, f, os.O_RDONLY))
    extra = open_(vfs, ctx, f, os.O_RDONLY)
    fails(errno.EMFILE, table.install, extra)
    fails(errno.EINVAL, table.install, extra, min_fd=3)  # F_DUPFD past RLIMIT_NOFILE
    fails(errno.EBADF, table.install_at, 3, extra)  # dup2 past the limit
    fails(errno.EBADF, table.install_at, -1, extra)
    table.close(1)
    assert table.install(extra) == 1
    table.close_all()


def test_close_on_exec(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    table = FDTable()
    keep = table.install(open_(vfs, ctx, f, os.O_RDONLY))
    drop = table.install(open_(vfs, ctx, f, os.O_RDONLY), cloexec=True)
    later = table.install(open_(vfs, ctx, f, os.O_RDONLY))
    table.set_cloexec(later, True)
    table.set_cloexec(drop, False)
    table.set_cloexec(drop, True)
    dropped = table.get(drop)
    table.close_on_exec()
    assert [n for n, _, _ in table] == [keep]
    assert dropped.refs == 0
    assert not table.get_cloexec(keep)
    fails(errno.EBADF, table.get_cloexec, drop)
    fails(errno.EBADF, table.set_cloexec, drop, True)


def test_install_at_is_dup2(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    write_file(vfs, ctx, "/g", b"g")
    table = FDTable()
    a = table.install(open_(vfs, ctx, f, os.O_RDONLY))
    b = table.install(open_(vfs, ctx, "/g", os.O_RDONLY), cloexec=True)
    old_b = table.get(b)
    desc = table.get(a)
    desc.inc_ref()
    table.install_at(b, desc)  # dup2(a, b): b's old description is closed
    assert old_b.refs == 0
    assert table.get(b) is desc
    assert not table.get_cloexec(b)  # dup2 clears FD_CLOEXEC on the new fd
    assert desc.refs == 2
    desc.inc_ref()
    table.install_at(7, desc, cloexec=True)  # a free slot above the others
    assert table.get_cloexec(7)
    assert [n for n, _, _ in table] == [0, 1, 7]
    table.close_all()
    assert desc.refs == 0


def test_description_keeps_its_name_after_rename(vfs: VirtualFilesystem, ctx: FSContext, f: str) -> None:
    fd = open_(vfs, ctx, f, os.O_RDWR)
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    vfs.rename(ctx, ctx.root, f, ctx.root, "/d/moved")
    assert ctx.ns.path(fd.vd) == "/d/moved"
    fd.write(b"X")
    assert read_file(vfs, ctx, "/d/moved") == b"X123456789"
    vfs.unlink(ctx, ctx.root, "/d/moved")
    assert ctx.ns.path(fd.vd) == "/d/moved (deleted)"
    fd.dec_ref()
