"""tmpfs specifics (Linux ``mm/shmem.c``, tmpfs(5)): mount options and their
limits (ENOSPC for pages and inodes), data in the memory file's pages, sparse
files (holes cost nothing; SEEK_DATA/SEEK_HOLE), fallocate(2), and unlinked
files that live on until their last close.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mm.memfile import PAGE_SIZE, MemoryFile
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.vfs.file import SEEK_DATA, SEEK_HOLE, FileDescription
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.mount import MountNamespace
from pyrunsc.core.vfs.namei import FSContext
from pyrunsc.core.vfs.vfs import VirtualFilesystem
from pyrunsc.plugins.fs_tmpfs.tmpfs import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    TmpfsFile,
    TmpfsSuperblock,
    physical_memory,
)

from .conftest import listdir, mount_at, new_mount, read_file, write_file

KEEP, PUNCH = FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def fails(code: int, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Call ``fn`` and require a SyscallError with ``code``."""
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value.name}"


def tmpfs(mctx: MountContext, data: str) -> TmpfsSuperblock:
    sb = mctx.new_superblock("tmpfs", data)
    assert isinstance(sb, TmpfsSuperblock)
    return sb


def fs_at(ctx: FSContext, mctx: MountContext, data: str, path: str = "/m") -> TmpfsSuperblock:
    """A tmpfs mounted with ``data`` at ``path`` (made here)."""
    sb = tmpfs(mctx, data)
    VirtualFilesystem.mkdir(mctx.vfs, ctx, ctx.root, path, 0o755)
    mount_at(ctx, path, sb)
    return sb


def rw(vfs: VirtualFilesystem, ctx: FSContext, path: str) -> FileDescription:
    return vfs.open(ctx, ctx.root, path, os.O_RDWR | os.O_CREAT, 0o644)


def file_inode(fd: FileDescription) -> TmpfsFile:
    assert isinstance(fd.inode, TmpfsFile)
    return fd.inode


# Mount options.


def test_mode_uid_gid_options(mctx: MountContext) -> None:
    root = tmpfs(mctx, "mode=1750,uid=12,gid=34").root()
    assert (root.mode, root.uid, root.gid) == (0o41750, 12, 34)
    root = tmpfs(mctx, "").root()
    assert (root.mode, root.uid, root.gid) == (0o41777, 0, 0)  # Linux's default


@pytest.mark.parametrize(
    ("size", "pages"),
    [("16k", 4), ("1m", 256), ("2M", 512), ("1g", 262144), ("10", 1), ("4096", 1), ("4097", 2)],
)
def test_size_option(mctx: MountContext, size: str, pages: int) -> None:
    assert tmpfs(mctx, f"size={size}").max_pages == pages


def test_size_percent_and_defaults(mctx: MountContext) -> None:
    half_pages = physical_memory() // 2 // PAGE_SIZE
    assert abs(tmpfs(mctx, "size=50%").max_pages - half_pages) <= 1
    default = tmpfs(mctx, "")
    assert abs(default.max_pages - half_pages) <= 1
    assert abs(default.max_inodes - half_pages) <= 1
    assert tmpfs(mctx, "nr_inodes=2k").max_inodes == 2048


@pytest.mark.parametrize("data", ["size=lots", "size=1x", "mode=8", "mode=77777", "uid=-1", "gid=x", "colour=blue"])
def test_bad_options_are_einval(mctx: MountContext, data: str) -> None:
    fails(errno.EINVAL, mctx.new_superblock, "tmpfs", data)


def test_tmpfs_needs_the_memory_file(vfs: VirtualFilesystem, plugins: Plugins) -> None:
    mc = MountContext(vfs, None, filesystems=dict(plugins.registry.filesystems))
    fails(errno.ENODEV, mc.new_superblock, "tmpfs", "")


# Limits.


def test_size_limit_gives_enospc(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext) -> None:
    sb = fs_at(ctx, mctx, "size=16k")
    fd = rw(vfs, ctx, "/m/f")
    assert fd.write(b"x" * 20000) == 16384  # a short write up to the limit
    fails(errno.ENOSPC, fd.write, b"y")
    fails(errno.ENOSPC, fd.pwrite, b"z", 10**9)  # a page far away is a page too
    fails(errno.ENOSPC, vfs.fallocate, fd, 0, 16384, 1)
    vfs.ftruncate(fd, 10**12)  # a size costs nothing
    assert vfs.stat_vd(fd.vd).size == 10**12
    s = vfs.statfs(ctx, ctx.root, "/m")
    assert (s.blocks, s.bfree, s.bavail) == (4, 0, 0)
    vfs.ftruncate(fd, 8192)
    assert sb.used_pages == 2
    assert fd.pwrite(b"w" * 8192, 8192) == 8192
    fd.dec_ref()
    assert vfs.statfs(ctx, ctx.root, "/m").bfree == 0


def test_inode_limit_gives_enospc(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext) -> None:
    """nr_inodes counts the root, every inode and every extra hard link
    (Linux ``shmem_link`` reserves one per link)."""
    sb = fs_at(ctx, mctx, "nr_inodes=4")
    assert vfs.statfs(ctx, ctx.root, "/m").ffree == 3
    write_file(vfs, ctx, "/m/a", b"")
    vfs.link(ctx, ctx.root, "/m/a", ctx.root, "/m/b")
    assert vfs.statfs(ctx, ctx.root, "/m").ffree == 1
    write_file(vfs, ctx, "/m/c", b"")
    assert vfs.statfs(ctx, ctx.root, "/m").ffree == 0
    fails(errno.ENOSPC, vfs.open, ctx, ctx.root, "/m/d", os.O_CREAT | os.O_WRONLY, 0o644)
    fails(errno.ENOSPC, vfs.mkdir, ctx, ctx.root, "/m/d", 0o755)
    fails(errno.ENOSPC, vfs.mknod, ctx, ctx.root, "/m/d", 0o010644)
    fails(errno.ENOSPC, vfs.symlink, ctx, "a", ctx.root, "/m/d")
    fails(errno.ENOSPC, vfs.link, ctx, ctx.root, "/m/a", ctx.root, "/m/d")
    fails(errno.ENOSPC, vfs.open, ctx, ctx.root, "/m", os.O_TMPFILE | os.O_RDWR, 0o600)
    assert sorted(listdir(vfs, ctx, "/m")) == ["a", "b", "c"]
    vfs.unlink(ctx, ctx.root, "/m/b")  # dropping an extra link gives its slot back
    assert vfs.statfs(ctx, ctx.root, "/m").ffree == 1
    vfs.rename(ctx, ctx.root, "/m/c", ctx.root, "/m/a")  # the replaced file goes
    assert vfs.statfs(ctx, ctx.root, "/m").ffree == 2
    assert sb.inodes == 2


def test_long_symlink_targets_take_a_page(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext) -> None:
    """Linux ``shmem_symlink``: a target of 128 bytes or more lives in a page
    (st_blocks 8, ENOSPC on a full tmpfs); shorter ones cost nothing."""
    sb = fs_at(ctx, mctx, "size=8k")
    vfs.symlink(ctx, "s" * 127, ctx.root, "/m/short")
    vfs.symlink(ctx, "l" * 128, ctx.root, "/m/long")
    assert vfs.stat(ctx, ctx.root, "/m/short", follow=False).blocks == 0
    assert vfs.stat(ctx, ctx.root, "/m/long", follow=False).blocks == 8
    assert sb.used_pages == 1
    assert vfs.readlink(ctx, ctx.root, "/m/long") == "l" * 128
    write_file(vfs, ctx, "/m/fill", b"f" * PAGE_SIZE)
    inodes = sb.inodes
    fails(errno.ENOSPC, vfs.symlink, ctx, "x" * 200, ctx.root, "/m/nospace")
    assert sb.inodes == inodes  # nothing half made
    vfs.symlink(ctx, "y" * 100, ctx.root, "/m/fits")
    vfs.unlink(ctx, ctx.root, "/m/long")
    assert sb.used_pages == 1
    vfs.symlink(ctx, "x" * 200, ctx.root, "/m/now_it_fits")
    assert sorted(listdir(vfs, ctx, "/m")) == ["fill", "fits", "now_it_fits", "short"]


def test_zero_means_unlimited(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext) -> None:
    """tmpfs(5): size=0 and nr_inodes=0 remove the limits; statfs then reports 0."""
    fs_at(ctx, mctx, "size=0,nr_inodes=0")
    fd = rw(vfs, ctx, "/m/f")
    assert fd.write(b"x" * 100000) == 100000
    fd.dec_ref()
    for i in range(20):
        vfs.mkdir(ctx, ctx.root, f"/m/d{i}", 0o755)
    s = vfs.statfs(ctx, ctx.root, "/m")
    assert (s.blocks, s.bfree, s.bavail, s.files, s.ffree) == (0, 0, 0, 0, 0)


def test_an_exhausted_memory_file_is_enospc(vfs: VirtualFilesystem, plugins: Plugins) -> None:
    mf = MemoryFile(size=4 * PAGE_SIZE)
    try:
        mc = MountContext(vfs, mf, filesystems=dict(plugins.registry.filesystems))
        sb = mc.new_superblock("tmpfs", "size=1m")
        assert isinstance(sb, TmpfsSuperblock)
        ns = MountNamespace(new_mount(sb))
        ctx = FSContext(ns, ns.root, ns.root, Credentials())
        fd = rw(vfs, ctx, "/f")
        assert fd.write(b"x" * (6 * PAGE_SIZE)) == 4 * PAGE_SIZE
        fails(errno.ENOSPC, fd.write, b"x")
        assert sb.used_pages == 4 == mf.allocated // PAGE_SIZE
        vfs.ftruncate(fd, 0)
        assert sb.used_pages == 0 == mf.allocated
        fd.dec_ref()
    finally:
        mf.close()


# Data in the memory file; sparse files.


def test_data_lives_in_memory_file_pages(vfs: VirtualFilesystem, ctx: FSContext, memfile: MemoryFile) -> None:
    fd = rw(vfs, ctx, "/f")
    fd.pwrite(b"A" * 10 + b"B", PAGE_SIZE - 10)  # across a page boundary
    inode = file_inode(fd)
    assert sorted(inode.pages) == [0, 1]
    assert memfile.read(inode.pages[0] + PAGE_SIZE - 10, 10) == b"A" * 10
    assert memfile.read(inode.pages[1], 1) == b"B"
    memfile.write(inode.pages[1], b"C")  # the memory file is the data
    assert fd.pread(1, PAGE_SIZE) == b"C"
    fd.dec_ref()


def test_holes_cost_nothing(vfs: VirtualFilesystem, ctx: FSContext, memfile: MemoryFile) -> None:
    sb = ctx.root.mount.sb
    assert isinstance(sb, TmpfsSuperblock)
    before = memfile.allocated
    fd = rw(vfs, ctx, "/sparse")
    fd.pwrite(b"end", 1 << 30)
    s = vfs.stat_vd(fd.vd)
    assert s.size == (1 << 30) + 3
    assert s.blocks == PAGE_SIZE // 512
    assert memfile.allocated - before == PAGE_SIZE
    assert sb.used_pages == 1
    assert fd.pread(16, 12345) == bytes(16)  # holes read as zeros without allocating
    assert memfile.allocated - before == PAGE_SIZE
    vfs.ftruncate(fd, 1 << 40)
    assert vfs.stat_vd(fd.vd).blocks == PAGE_SIZE // 512
    fd.dec_ref()


def test_seek_data_and_seek_hole(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    """Data is the pages present (Linux ``shmem_file_llseek``): offsets round
    to pages; the end of the file is a hole; past the end is ENXIO."""
    fd = rw(vfs, ctx, "/f")
    p = PAGE_SIZE
    fd.pwrite(b"a", 2 * p + 5)  # page 2
    fd.pwrite(b"b", 5 * p)  # page 5
    vfs.ftruncate(fd, 7 * p + 100)
    assert fd.seek(0, SEEK_DATA) == 2 * p
    assert fd.seek(0, SEEK_HOLE) == 0
    assert fd.seek(2 * p + 100, SEEK_DATA) == 2 * p + 100
    assert fd.seek(2 * p + 100, SEEK_HOLE) == 3 * p
    assert fd.seek(3 * p, SEEK_DATA) == 5 * p
    assert fd.seek(5 * p, SEEK_HOLE) == 6 * p
    fails(errno.ENXIO, fd.seek, 6 * p, SEEK_DATA)  # only holes up to the end
    assert fd.seek(6 * p, SEEK_HOLE) == 6 * p
    assert fd.seek(7 * p + 99, SEEK_HOLE) == 7 * p + 99
    fails(errno.ENXIO, fd.seek, 7 * p + 100, SEEK_HOLE)
    fails(errno.ENXIO, fd.seek, 7 * p + 100, SEEK_DATA)
    fails(errno.ENXIO, fd.seek, -1, SEEK_HOLE)
    # Data to the very end: the hole is the end of file.
    vfs.ftruncate(fd, 5 * p + 10)
    assert fd.seek(5 * p, SEEK_HOLE) == 5 * p + 10
    assert fd.offset == 5 * p + 10
    fd.dec_ref()
    empty = rw(vfs, ctx, "/empty")
    fails(errno.ENXIO, empty.seek, 0, SEEK_DATA)
    fails(errno.ENXIO, empty.seek, 0, SEEK_HOLE)
    empty.dec_ref()


def test_truncate_frees_pages_and_zeros_the_tail(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    sb = ctx.root.mount.sb
    assert isinstance(sb, TmpfsSuperblock)
    fd = rw(vfs, ctx, "/f")
    fd.write(b"x" * (3 * PAGE_SIZE))
    vfs.ftruncate(fd, PAGE_SIZE + 10)
    assert sb.used_pages == 2
    vfs.ftruncate(fd, 3 * PAGE_SIZE)
    assert fd.pread(3 * PAGE_SIZE, 0) == b"x" * (PAGE_SIZE + 10) + bytes(2 * PAGE_SIZE - 10)
    vfs.ftruncate(fd, 0)
    assert sb.used_pages == 0
    fd.dec_ref()


# fallocate.


def test_fallocate_allocates_zeroed_pages(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    sb = ctx.root.mount.sb
    assert isinstance(sb, TmpfsSuperblock)
    fd = rw(vfs, ctx, "/f")
    fd.write(b"abc")
    vfs.fallocate(fd, 0, 100, 2 * PAGE_SIZE)
    s = vfs.stat_vd(fd.vd)
    assert (s.size, s.blocks, sb.used_pages) == (100 + 2 * PAGE_SIZE, 3 * 8, 3)
    assert fd.pread(200, 0) == b"abc" + bytes(197)
    vfs.fallocate(fd, 0, 0, 10)  # inside the file: the size stays
    assert vfs.stat_vd(fd.vd).size == 100 + 2 * PAGE_SIZE
    fd.dec_ref()


def test_fallocated_pages_read_as_holes_until_written(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    """shmem keeps fallocated pages not up to date until written, and
    SEEK_DATA/SEEK_HOLE see them as holes (they still count in st_blocks)."""
    fd = rw(vfs, ctx, "/f")
    vfs.fallocate(fd, 0, 0, 2 * PAGE_SIZE)
    assert vfs.stat_vd(fd.vd).blocks == 16
    fails(errno.ENXIO, fd.seek, 0, SEEK_DATA)
    assert fd.seek(0, SEEK_HOLE) == 0
    fd.pwrite(b"a", PAGE_SIZE + 904)
    assert fd.seek(0, SEEK_DATA) == PAGE_SIZE
    assert fd.seek(0, SEEK_HOLE) == 0
    assert fd.seek(PAGE_SIZE, SEEK_HOLE) == 2 * PAGE_SIZE
    assert vfs.stat_vd(fd.vd).blocks == 16
    fd.dec_ref()


def test_fallocate_keep_size(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    sb = ctx.root.mount.sb
    assert isinstance(sb, TmpfsSuperblock)
    fd = rw(vfs, ctx, "/f")
    fd.write(b"abc")
    vfs.fallocate(fd, KEEP, 0, 4 * PAGE_SIZE)
    s = vfs.stat_vd(fd.vd)
    assert (s.size, s.blocks, sb.used_pages) == (3, 32, 4)
    # Truncating (even to the same size) drops the pages past the end.
    vfs.ftruncate(fd, 3)
    assert (vfs.stat_vd(fd.vd).blocks, sb.used_pages) == (8, 1)
    vfs.fallocate(fd, KEEP, PAGE_SIZE, PAGE_SIZE)
    vfs.ftruncate(fd, 2 * PAGE_SIZE)  # growing keeps them
    assert sb.used_pages == 2
    fd.dec_ref()


def test_fallocate_punch_hole(vfs: VirtualFilesystem, ctx: FSContext, memfile: MemoryFile) -> None:
    sb = ctx.root.mount.sb
    assert isinstance(sb, TmpfsSuperblock)
    fd = rw(vfs, ctx, "/f")
    fd.write(b"x" * (4 * PAGE_SIZE))
    before = memfile.allocated
    vfs.fallocate(fd, PUNCH, PAGE_SIZE - 10, 2 * PAGE_SIZE + 20)
    assert vfs.stat_vd(fd.vd).size == 4 * PAGE_SIZE
    assert sb.used_pages == 2  # pages 1 and 2 are gone; 0 and 3 are zeroed in part
    assert before - memfile.allocated == 2 * PAGE_SIZE
    data = fd.pread(4 * PAGE_SIZE, 0)
    assert data == b"x" * (PAGE_SIZE - 10) + bytes(2 * PAGE_SIZE + 20) + b"x" * (PAGE_SIZE - 10)
    assert fd.seek(0, SEEK_HOLE) == PAGE_SIZE
    assert fd.seek(PAGE_SIZE, SEEK_DATA) == 3 * PAGE_SIZE
    vfs.fallocate(fd, PUNCH, 0, 100 * PAGE_SIZE)  # past the end is fine
    assert sb.used_pages == 0
    assert vfs.stat_vd(fd.vd).size == 4 * PAGE_SIZE
    fd.dec_ref()


def test_fallocate_errors(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext) -> None:
    fd = rw(vfs, ctx, "/f")
    fails(errno.EOPNOTSUPP, vfs.fallocate, fd, FALLOC_FL_PUNCH_HOLE, 0, 10)  # punching needs KEEP_SIZE
    fails(errno.EOPNOTSUPP, vfs.fallocate, fd, 0x10, 0, 10)  # ZERO_RANGE: not on tmpfs
    fails(errno.EINVAL, vfs.fallocate, fd, 0, -1, 10)
    fails(errno.EINVAL, vfs.fallocate, fd, 0, 0, 0)
    fails(errno.EFBIG, vfs.fallocate, fd, 0, 2**63 - 10, 20)
    fd.dec_ref()
    ro = vfs.open(ctx, ctx.root, "/f", os.O_RDONLY)
    fails(errno.EBADF, vfs.fallocate, ro, 0, 0, 10)
    fails(errno.EOPNOTSUPP, vfs.fallocate, ro, FALLOC_FL_PUNCH_HOLE, 0, 10)  # mode checks come first
    ro.dec_ref()
    sb = fs_at(ctx, mctx, "size=16k")
    fd = rw(vfs, ctx, "/m/f")
    fd.write(b"x")
    fails(errno.ENOSPC, vfs.fallocate, fd, 0, 0, 5 * PAGE_SIZE)
    assert (sb.used_pages, vfs.stat_vd(fd.vd).size) == (1, 1)  # nothing was kept
    fd.dec_ref()


# Unlinked but open.


def test_unlinked_open_files_keep_their_data_until_the_last_close(
    vfs: VirtualFilesystem, ctx: FSContext, memfile: MemoryFile
) -> None:
    sb = ctx.root.mount.sb
    assert isinstance(sb, TmpfsSuperblock)
    base_pages, base_mem, base_inodes = sb.used_pages, memfile.allocated, sb.inodes
    write_file(vfs, ctx, "/f", b"z" * (3 * PAGE_SIZE))
    a = vfs.open(ctx, ctx.root, "/f", os.O_RDWR)
    b = vfs.open(ctx, ctx.root, "/f", os.O_RDONLY)
    vfs.unlink(ctx, ctx.root, "/f")
    assert listdir(vfs, ctx, "/") == []
    assert (sb.used_pages - base_pages, memfile.allocated - base_mem) == (3, 3 * PAGE_SIZE)
    assert sb.inodes == base_inodes + 1
    a.pwrite(b"more", 3 * PAGE_SIZE)  # still writable: one more page
    a.dec_ref()
    assert sb.used_pages - base_pages == 4
    assert b.pread(4, 3 * PAGE_SIZE) == b"more"
    assert b.pread(3, 0) == b"zzz"
    b.dec_ref()
    assert (sb.used_pages, memfile.allocated, sb.inodes) == (base_pages, base_mem, base_inodes)


def test_recreating_the_name_makes_a_new_file(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    write_file(vfs, ctx, "/f", b"old")
    fd = vfs.open(ctx, ctx.root, "/f", os.O_RDONLY)
    vfs.unlink(ctx, ctx.root, "/f")
    write_file(vfs, ctx, "/f", b"new")
    assert fd.read(10) == b"old"
    assert read_file(vfs, ctx, "/f") == b"new"
    assert vfs.stat_vd(fd.vd).ino != vfs.stat(ctx, ctx.root, "/f").ino
    fd.dec_ref()


@pytest.fixture
def leak_check(vfs: VirtualFilesystem, ctx: FSContext, memfile: MemoryFile) -> Iterator[None]:
    """Fails the test if pages or inodes of the root tmpfs leak."""
    sb = ctx.root.mount.sb
    assert isinstance(sb, TmpfsSuperblock)
    before = (sb.used_pages, sb.inodes, memfile.allocated)
    yield
    assert (sb.used_pages, sb.inodes, memfile.allocated) == before


def test_nothing_leaks_through_a_busy_life(vfs: VirtualFilesystem, ctx: FSContext, leak_check: None) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    write_file(vfs, ctx, "/d/a", b"a" * 5000)
    vfs.link(ctx, ctx.root, "/d/a", ctx.root, "/d/b")
    vfs.symlink(ctx, "a", ctx.root, "/d/s")
    fd = vfs.open(ctx, ctx.root, "/d/b", os.O_RDWR)
    tmp = vfs.open(ctx, ctx.root, "/d", os.O_TMPFILE | os.O_RDWR, 0o600)
    tmp.write(b"t" * 9000)
    vfs.rename(ctx, ctx.root, "/d/s", ctx.root, "/d/a")
    vfs.unlink(ctx, ctx.root, "/d/a")
    vfs.unlink(ctx, ctx.root, "/d/b")
    fd.pwrite(b"q", 50000)
    vfs.fallocate(fd, KEEP, 0, 100000)
    dfd = vfs.open(ctx, ctx.root, "/d", os.O_RDONLY | os.O_DIRECTORY)
    vfs.rmdir(ctx, ctx.root, "/d")
    for desc in (fd, tmp, dfd):
        desc.dec_ref()
