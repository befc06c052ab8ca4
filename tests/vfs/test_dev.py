"""devtmpfs, the memory devices and devpts through the VFS (Linux
``drivers/char/mem.c``, ``drivers/tty/pty.c``, ``n_tty.c``; gVisor
``fsimpl/dev``, ``fsimpl/devpts``, ``devices/memdev``)."""

from __future__ import annotations

import errno
import os
import pickle
import select
import signal
import stat
import struct
import time
from collections.abc import Iterator

import cloudpickle
import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.vfs.file import SEEK_CUR, FileDescription
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import major, makedev, minor
from pyrunsc.core.vfs.mount import MountNamespace
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.pipe import WouldBlock
from pyrunsc.core.vfs.vfs import VirtualFilesystem
from pyrunsc.plugins.fs_dev import dev_state
from pyrunsc.plugins.fs_dev.devpts import DEVPTS_SUPER_MAGIC, DevptsSuperblock
from pyrunsc.plugins.fs_dev.tty import (
    ECHO,
    FIONREAD,
    ICANON,
    ICRNL,
    IXON,
    ONLCR,
    OPOST,
    TCFLSH,
    TCGETS,
    TCGETS2,
    TCIFLUSH,
    TCSETS,
    TCSETSF,
    TIOCGPKT,
    TIOCGPTLCK,
    TIOCGPTN,
    TIOCGWINSZ,
    TIOCOUTQ,
    TIOCPKT,
    TIOCSIG,
    TIOCSPTLCK,
    TIOCSWINSZ,
    TTY_IOCTLS,
    VEOF,
    VMIN,
    VTIME,
    LineDiscipline,
    PtyEndOps,
    Termios,
)

from .conftest import listdir, mount_at, new_mount, read_file, user_ctx

TMPFS_MAGIC = 0x01021994
#: (name, major, minor, permission bits) of every device node in /dev, as Linux.
NODES = [
    ("null", 1, 3, 0o666), ("zero", 1, 5, 0o666), ("full", 1, 7, 0o666), ("random", 1, 8, 0o666),
    ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666), ("console", 5, 1, 0o600), ("ptmx", 5, 2, 0o666),
]
LINKS = [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
         ("stderr", "/proc/self/fd/2")]


@pytest.fixture
def dev(vfs: VirtualFilesystem, mctx: MountContext, ctx: FSContext) -> FSContext:
    """/dev (devtmpfs) and /dev/pts (devpts) mounted in the tmpfs root; /tmp a directory of the root."""
    vfs.mkdir(ctx, ctx.cwd, "/dev", 0o755)
    vfs.mkdir(ctx, ctx.cwd, "/tmp", 0o755)
    vfs.chmod(ctx, resolve(ctx, ctx.root, "/tmp"), 0o1777)
    mount_at(ctx, "/dev", mctx.new_superblock("devtmpfs"))
    mount_at(ctx, "/dev/pts", mctx.new_superblock("devpts"))
    return ctx


def op(vfs: VirtualFilesystem, ctx: FSContext, path: str, flags: int = os.O_RDWR) -> FileDescription:
    return vfs.open(ctx, ctx.cwd, path, flags)


def err(fn: object, *args: object, **kw: object) -> int:
    """The errno ``fn(*args)`` fails with."""
    assert callable(fn)
    with pytest.raises(SyscallError) as e:
        fn(*args, **kw)
    return e.value.errno


@pytest.fixture
def pty(vfs: VirtualFilesystem, dev: FSContext) -> Iterator[tuple[FileDescription, FileDescription]]:
    """An unlocked pty: (master from /dev/ptmx, slave /dev/pts/N)."""
    m = op(vfs, dev, "/dev/ptmx")
    m.ops.ioctl(m, TIOCSPTLCK, 0)
    n = m.ops.ioctl(m, TIOCGPTN, 0)
    s = op(vfs, dev, f"/dev/pts/{n}")
    yield m, s
    for fd in (s, m):
        if fd.refs:
            fd.dec_ref()


def ops(fd: FileDescription) -> PtyEndOps:
    assert isinstance(fd.ops, PtyEndOps)
    return fd.ops


def drain(fd: FileDescription) -> bytes:
    out = b""
    while True:
        try:
            chunk = fd.read(65536)
        except WouldBlock:
            return out
        if not chunk:
            return out
        out += chunk


# devtmpfs: what /dev holds.


def test_dev_lists_devices_links_and_directories(vfs: VirtualFilesystem, dev: FSContext) -> None:
    names = listdir(vfs, dev, "/dev")
    assert sorted(names) == sorted([n[0] for n in NODES] + [n for n, _ in LINKS] + ["shm", "pts"])


@pytest.mark.parametrize(("name", "maj", "mnr", "perms"), NODES)
def test_device_nodes_have_linux_numbers_and_modes(
    vfs: VirtualFilesystem, dev: FSContext, name: str, maj: int, mnr: int, perms: int
) -> None:
    st = vfs.stat(dev, dev.cwd, f"/dev/{name}")
    assert stat.S_ISCHR(st.mode)
    assert st.mode & 0o7777 == perms
    assert (major(st.rdev), minor(st.rdev)) == (maj, mnr)
    assert (st.uid, st.gid, st.size) == (0, 0, 0)


@pytest.mark.parametrize(("name", "target"), LINKS)
def test_symlinks_point_into_proc_self_fd(vfs: VirtualFilesystem, dev: FSContext, name: str, target: str) -> None:
    assert vfs.readlink(dev, dev.cwd, f"/dev/{name}") == target
    st = vfs.stat(dev, dev.cwd, f"/dev/{name}", follow=False)
    assert stat.S_ISLNK(st.mode) and st.size == len(target)
    # Without /proc mounted, following them finds nothing.
    assert err(vfs.stat, dev, dev.cwd, f"/dev/{name}") == errno.ENOENT


def test_dev_is_a_devtmpfs_of_mode_0755(vfs: VirtualFilesystem, dev: FSContext) -> None:
    vd_root = vfs.stat(dev, dev.cwd, "/dev")
    assert stat.S_ISDIR(vd_root.mode) and vd_root.mode & 0o7777 == 0o755
    assert vfs.statfs(dev, dev.cwd, "/dev").type == TMPFS_MAGIC  # Linux devtmpfs is shmem too
    assert resolve(dev, dev.root, "/dev").mount.sb.fs_name == "devtmpfs"


def test_dev_shm_is_a_sticky_world_writable_tmpfs_directory(vfs: VirtualFilesystem, dev: FSContext) -> None:
    st = vfs.stat(dev, dev.cwd, "/dev/shm")
    assert stat.S_ISDIR(st.mode) and st.mode & 0o7777 == 0o1777
    assert vfs.statfs(dev, dev.cwd, "/dev/shm").type == TMPFS_MAGIC
    alice, bob = user_ctx(dev, 1000, 1000), user_ctx(dev, 1001, 1001)
    fd = vfs.open(alice, alice.cwd, "/dev/shm/sem.x", os.O_CREAT | os.O_RDWR, 0o666)
    assert fd.write(b"shared") == 6
    fd.dec_ref()
    assert read_file(vfs, bob, "/dev/shm/sem.x") == b"shared"
    assert err(vfs.unlink, bob, bob.cwd, "/dev/shm/sem.x") == errno.EPERM  # sticky
    vfs.unlink(alice, alice.cwd, "/dev/shm/sem.x")


def test_dev_pts_is_where_devpts_is_mounted(vfs: VirtualFilesystem, dev: FSContext) -> None:
    assert vfs.statfs(dev, dev.cwd, "/dev/pts").type == DEVPTS_SUPER_MAGIC
    assert listdir(vfs, dev, "/dev/pts") == ["ptmx"]
    st = vfs.stat(dev, dev.cwd, "/dev/pts")
    assert st.mode == stat.S_IFDIR | 0o755 and st.ino == 1


def test_devtmpfs_takes_tmpfs_options_only(mctx: MountContext) -> None:
    sb = mctx.new_superblock("devtmpfs", "size=1m")
    assert sb.statfs().blocks == 256
    assert err(mctx.new_superblock, "devtmpfs", "colour=red") == errno.EINVAL


# The memory devices.


def test_null_reads_end_of_file_and_swallows_writes(vfs: VirtualFilesystem, dev: FSContext) -> None:
    fd = op(vfs, dev, "/dev/null")
    assert fd.read(100) == b""
    assert fd.write(b"x" * 10000) == 10000
    assert fd.pwrite(b"abc", 12345) == 3
    assert fd.pread(10, 99) == b""
    fd.dec_ref()


def test_zero_reads_zeros_and_swallows_writes(vfs: VirtualFilesystem, dev: FSContext) -> None:
    fd = op(vfs, dev, "/dev/zero")
    assert fd.read(4096) == bytes(4096)
    assert fd.pread(7, 1 << 40) == bytes(7)
    assert fd.read(0) == b""
    assert fd.write(b"data") == 4
    fd.dec_ref()


def test_full_reads_zeros_and_writes_enospc(vfs: VirtualFilesystem, dev: FSContext) -> None:
    fd = op(vfs, dev, "/dev/full")
    assert fd.read(33) == bytes(33)
    assert err(fd.write, b"x") == errno.ENOSPC
    assert err(fd.pwrite, b"x", 0) == errno.ENOSPC
    fd.dec_ref()


@pytest.mark.parametrize("name", ["random", "urandom"])
def test_random_devices_read_entropy_and_accept_writes(vfs: VirtualFilesystem, dev: FSContext, name: str) -> None:
    fd = op(vfs, dev, f"/dev/{name}")
    a, b = fd.read(64), fd.read(64)
    assert len(a) == len(b) == 64 and a != b
    assert fd.write(b"seed") == 4
    fd.dec_ref()


def test_memory_devices_are_usable_by_everyone(vfs: VirtualFilesystem, dev: FSContext) -> None:
    user = user_ctx(dev)
    for name in ("null", "zero", "full", "random", "urandom"):
        op(vfs, user, f"/dev/{name}").dec_ref()


def test_memory_device_offsets_do_not_matter(vfs: VirtualFilesystem, dev: FSContext) -> None:
    fd = op(vfs, dev, "/dev/zero")
    fd.seek(100, SEEK_CUR)
    assert fd.read(3) == bytes(3)
    fd.dec_ref()


def test_tty_without_controlling_terminal_is_enxio(vfs: VirtualFilesystem, dev: FSContext) -> None:
    assert err(op, vfs, dev, "/dev/tty") == errno.ENXIO
    assert err(op, vfs, user_ctx(dev), "/dev/tty", os.O_RDONLY) == errno.ENXIO


def test_console_without_console_is_enodev_and_root_only(vfs: VirtualFilesystem, dev: FSContext) -> None:
    assert err(op, vfs, dev, "/dev/console") == errno.ENODEV
    assert err(op, vfs, user_ctx(dev), "/dev/console") == errno.EACCES


def test_a_kernel_supplied_controlling_terminal_opens_as_dev_tty(
    vfs: VirtualFilesystem, dev: FSContext, pty: tuple[FileDescription, FileDescription]
) -> None:
    m, s = pty
    slave_inode = s.inode
    assert isinstance(slave_inode.sb, DevptsSuperblock)
    state = dev_state(vfs)
    state.controlling_tty = lambda fd: slave_inode.pty.open_slave()  # type: ignore[attr-defined]
    tty = op(vfs, dev, "/dev/tty")
    m.write(b"hi\n")
    assert tty.read(10) == b"hi\n"
    tty.dec_ref()


# Device numbers on any filesystem.


def test_mknod_null_on_tmpfs_opens_the_null_device(vfs: VirtualFilesystem, dev: FSContext) -> None:
    vfs.mknod(dev, dev.cwd, "/tmp/null", stat.S_IFCHR | 0o666, makedev(1, 3))
    fd = op(vfs, dev, "/tmp/null")
    assert fd.write(b"gone") == 4 and fd.read(10) == b""
    fd.dec_ref()
    vfs.mknod(dev, dev.cwd, "/tmp/full", stat.S_IFCHR | 0o666, makedev(1, 7))
    fd = op(vfs, dev, "/tmp/full")
    assert err(fd.write, b"x") == errno.ENOSPC
    fd.dec_ref()


def test_mknod_of_a_device_needs_cap_mknod(vfs: VirtualFilesystem, dev: FSContext) -> None:
    user = user_ctx(dev)
    assert err(vfs.mknod, user, user.cwd, "/tmp/null", stat.S_IFCHR | 0o666, makedev(1, 3)) == errno.EPERM


def test_unknown_device_number_is_enxio(vfs: VirtualFilesystem, dev: FSContext) -> None:
    vfs.mknod(dev, dev.cwd, "/tmp/what", stat.S_IFCHR | 0o666, makedev(1, 42))
    assert err(op, vfs, dev, "/tmp/what") == errno.ENXIO


def test_ptmx_made_with_mknod_opens_a_pty_on_dev_pts(vfs: VirtualFilesystem, dev: FSContext) -> None:
    vfs.mknod(dev, dev.cwd, "/tmp/ptmx", stat.S_IFCHR | 0o666, makedev(5, 2))
    m = op(vfs, dev, "/tmp/ptmx")
    assert m.ops.ioctl(m, TIOCGPTN, 0) == 0
    assert listdir(vfs, dev, "/dev/pts") == ["ptmx", "0"]
    m.dec_ref()


def test_pty_slave_made_with_mknod_elsewhere_is_eio(
    vfs: VirtualFilesystem, dev: FSContext, pty: tuple[FileDescription, FileDescription]
) -> None:
    vfs.mknod(dev, dev.cwd, "/tmp/pts0", stat.S_IFCHR | 0o620, makedev(136, 0))
    assert err(op, vfs, dev, "/tmp/pts0") == errno.EIO


def test_devices_are_registered_by_devpts_alone_too(
    vfs: VirtualFilesystem, mctx: MountContext, ctx: FSContext
) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/pts", 0o755)
    mount_at(ctx, "/pts", mctx.new_superblock("devpts"))
    vfs.mknod(ctx, ctx.cwd, "/zero", stat.S_IFCHR | 0o666, makedev(1, 5))
    fd = op(vfs, ctx, "/zero")
    assert fd.read(2) == b"\0\0"
    fd.dec_ref()
    m = op(vfs, ctx, "/pts/ptmx")
    assert listdir(vfs, ctx, "/pts") == ["ptmx", "0"]
    m.dec_ref()


def test_registration_is_once_per_kernel(vfs: VirtualFilesystem, mctx: MountContext) -> None:
    mctx.new_superblock("devtmpfs")
    state = dev_state(vfs)
    mctx.new_superblock("devtmpfs")
    mctx.new_superblock("devpts")
    assert dev_state(vfs) is state
    assert dev_state(VirtualFilesystem()) is not state


def test_ptmx_without_devpts_is_enodev(vfs: VirtualFilesystem, mctx: MountContext, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/dev", 0o755)
    mount_at(ctx, "/dev", mctx.new_superblock("devtmpfs"))
    assert err(op, vfs, ctx, "/dev/ptmx") == errno.ENODEV


# devpts: allocation and the /dev/pts directory.


def test_opening_ptmx_creates_the_slave_node(vfs: VirtualFilesystem, dev: FSContext) -> None:
    m = op(vfs, dev, "/dev/ptmx")
    assert m.ops.ioctl(m, TIOCGPTN, 0) == 0
    assert listdir(vfs, dev, "/dev/pts") == ["ptmx", "0"]
    st = vfs.stat(dev, dev.cwd, "/dev/pts/0")
    assert stat.S_ISCHR(st.mode) and st.mode & 0o7777 == 0o600
    assert (major(st.rdev), minor(st.rdev)) == (136, 0)
    assert st.ino == 3  # Linux: index + 3
    m2 = op(vfs, dev, "/dev/pts/ptmx")
    assert m2.ops.ioctl(m2, TIOCGPTN, 0) == 1
    assert listdir(vfs, dev, "/dev/pts") == ["ptmx", "0", "1"]
    m.dec_ref()
    assert listdir(vfs, dev, "/dev/pts") == ["ptmx", "1"]
    assert err(vfs.stat, dev, dev.cwd, "/dev/pts/0") == errno.ENOENT
    m2.dec_ref()


def test_devpts_ptmx_node(vfs: VirtualFilesystem, dev: FSContext) -> None:
    st = vfs.stat(dev, dev.cwd, "/dev/pts/ptmx")
    assert st.mode == stat.S_IFCHR | 0o666 and st.ino == 2
    assert (major(st.rdev), minor(st.rdev)) == (5, 2)


def test_indices_are_the_lowest_free_once_both_ends_close(
    vfs: VirtualFilesystem, dev: FSContext, pty: tuple[FileDescription, FileDescription]
) -> None:
    m, s = pty
    m.dec_ref()
    # The slave still holds index 0.
    m1 = op(vfs, dev, "/dev/ptmx")
    assert m1.ops.ioctl(m1, TIOCGPTN, 0) == 1
    s.dec_ref()
    m2 = op(vfs, dev, "/dev/ptmx")
    assert m2.ops.ioctl(m2, TIOCGPTN, 0) == 0
    assert vfs.stat(dev, dev.cwd, "/dev/pts/0").ino == 3  # index + 3, whatever came before
    assert vfs.stat(dev, dev.cwd, "/dev/pts/1").ino == 4
    m1.dec_ref()
    m2.dec_ref()


def test_devpts_names_cannot_be_created_or_removed(vfs: VirtualFilesystem, dev: FSContext) -> None:
    assert err(vfs.mkdir, dev, dev.cwd, "/dev/pts/d", 0o755) == errno.EPERM
    assert err(vfs.open, dev, dev.cwd, "/dev/pts/f", os.O_CREAT | os.O_WRONLY, 0o644) == errno.EACCES
    assert err(vfs.unlink, dev, dev.cwd, "/dev/pts/ptmx") == errno.EPERM
    assert err(vfs.stat, dev, dev.cwd, "/dev/pts/00") == errno.ENOENT


def test_devpts_mount_options(vfs: VirtualFilesystem, mctx: MountContext, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/pts", 0o755)
    sb = mctx.new_superblock("devpts", "newinstance,ptmxmode=0620,mode=0620,gid=5,max=1")
    mount_at(ctx, "/pts", sb)
    assert vfs.stat(ctx, ctx.cwd, "/pts/ptmx").mode & 0o777 == 0o620
    m = op(vfs, ctx, "/pts/ptmx")
    st = vfs.stat(ctx, ctx.cwd, "/pts/0")
    assert (st.mode & 0o777, st.gid) == (0o620, 5)
    assert err(op, vfs, ctx, "/pts/ptmx") == errno.ENOSPC  # max=1
    m.dec_ref()
    for bad in ("colour=red", "mode=999", "max=lots", "uid=x"):
        assert err(mctx.new_superblock, "devpts", bad) == errno.EINVAL


def test_devpts_instances_are_shared_unless_newinstance(mctx: MountContext) -> None:
    first = mctx.new_superblock("devpts")
    assert mctx.new_superblock("devpts") is first
    private = mctx.new_superblock("devpts", "newinstance")
    assert private is not first
    assert isinstance(first, DevptsSuperblock) and isinstance(private, DevptsSuperblock)
    assert first.statfs().type == private.statfs().type == DEVPTS_SUPER_MAGIC


def test_each_devpts_instance_has_its_own_indices(vfs: VirtualFilesystem, dev: FSContext, mctx: MountContext) -> None:
    vfs.mkdir(dev, dev.cwd, "/tmp/pts", 0o755)
    mount_at(dev, "/tmp/pts", mctx.new_superblock("devpts", "newinstance"))
    a = op(vfs, dev, "/dev/ptmx")
    b = op(vfs, dev, "/tmp/pts/ptmx")
    assert a.ops.ioctl(a, TIOCGPTN, 0) == b.ops.ioctl(b, TIOCGPTN, 0) == 0
    b.ops.ioctl(b, TIOCSPTLCK, 0)
    s = op(vfs, dev, "/tmp/pts/0")
    b.write(b"private\n")
    assert s.read(100) == b"private\n"
    assert err(s.read, 100) == errno.EAGAIN  # /dev/pts/0 is another pty
    for fd in (s, a, b):
        fd.dec_ref()


# ptys: locking, data and hang-up.


def test_a_new_pty_is_locked_until_unlockpt(vfs: VirtualFilesystem, dev: FSContext) -> None:
    m = op(vfs, dev, "/dev/ptmx")
    assert m.ops.ioctl(m, TIOCGPTLCK, 0) == 1
    assert err(op, vfs, dev, "/dev/pts/0") == errno.EIO
    assert m.ops.ioctl(m, TIOCSPTLCK, 0) == 0
    assert m.ops.ioctl(m, TIOCGPTLCK, 0) == 0
    s = op(vfs, dev, "/dev/pts/0")
    s.dec_ref()
    m.dec_ref()


def test_master_writes_reach_the_slave_with_crnl_and_echo(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    assert m.write(b"hello\r") == 6
    assert s.read(100) == b"hello\n"  # ICRNL
    assert m.read(100) == b"hello\r\n"  # the echo, ONLCR


def test_slave_writes_reach_the_master_with_onlcr(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    assert s.write(b"out\nput") == 7
    assert m.read(3) == b"out"
    assert m.read(100) == b"\r\nput"


def test_empty_ends_would_block(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    assert err(m.read, 10) == errno.EAGAIN
    assert err(s.read, 10) == errno.EAGAIN
    m.write(b"partial")  # no newline: canonical mode waits for the line
    assert err(s.read, 10) == errno.EAGAIN


def test_canonical_mode_reads_one_line_at_a_time(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.write(b"one\ntwo\n")
    assert s.read(100) == b"one\n"
    assert s.read(2) == b"tw"
    assert s.read(100) == b"o\n"


def test_line_editing(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.write(b"abx\x7fc\n")  # VERASE
    assert s.read(100) == b"abc\n"
    m.write(b"junk\x15ok\n")  # VKILL
    assert s.read(100) == b"ok\n"
    m.write(b"keep drop\x17\n")  # VWERASE
    assert s.read(100) == b"keep \n"


def test_veof_ends_a_line_and_alone_reads_as_end_of_file(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.write(b"ab\x04\x04")
    assert s.read(100) == b"ab"
    assert s.read(100) == b""
    assert err(s.read, 100) == errno.EAGAIN


def test_isig_characters_queue_signals_and_flush(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.write(b"typed\x03")
    assert ops(m).pty.signals == [signal.SIGINT]
    assert err(s.read, 100) == errno.EAGAIN  # the line was flushed
    assert drain(m).endswith(b"^C")
    m.write(b"\x1c\x1a")
    assert ops(m).pty.signals == [signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP]


def test_ixon_stops_and_starts_slave_output(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.write(b"\x13")
    assert err(s.write, b"x") == errno.EAGAIN
    m.write(b"\x11")
    assert s.write(b"x") == 1
    assert m.read(10) == b"x"


def test_termios_is_kept_and_shared_by_both_ends(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    raw = ops(s).get_termios()
    assert len(raw) == 36 and TTY_IOCTLS[TCGETS] == ("struct_out", 36)
    iflag, oflag, cflag, lflag, line = struct.unpack_from("<4IB", raw)
    # Linux's pty slave defaults (tty_std_termios with cflag B38400|CS8|CREAD).
    assert (iflag, oflag, cflag, lflag, line) == (0o2400, 0o5, 0o277, 0o105073, 0)
    assert raw[17:] == b"\x03\x1c\x7f\x15\x04\x00\x01\x00\x11\x13\x1a\x00\x12\x0f\x17\x16\x00\x00\x00"
    assert ops(m).get_termios() == raw  # TCGETS on the master reads the slave's
    t = Termios.unpack(raw)
    t.lflag &= ~(ICANON | ECHO)
    t.iflag &= ~(ICRNL | IXON)
    t.oflag &= ~OPOST
    ops(m).ioctl_in(m, TCSETS, t.pack())
    assert Termios.unpack(ops(s).ioctl_out(s, TCGETS)).lflag & (ICANON | ECHO) == 0
    m.write(b"a\rb")
    assert s.read(100) == b"a\rb"  # raw: no line, no translation
    assert err(m.read, 100) == errno.EAGAIN  # no echo
    s.write(b"x\ny")
    assert m.read(100) == b"x\ny"  # no OPOST


def test_tcsets_forces_cs8_and_checks_the_size(pty: tuple[FileDescription, FileDescription]) -> None:
    _, s = pty
    t = Termios.unpack(ops(s).get_termios())
    t.cflag = 0o17 | 0o20 | 0o400  # CS7 | PARENB
    ops(s).set_termios(t.pack())
    assert Termios.unpack(ops(s).get_termios()).cflag == 0o277
    assert err(ops(s).set_termios, b"\0" * 60) == errno.EINVAL  # glibc's struct, not the kernel's
    two = ops(s).ioctl_out(s, TCGETS2)
    assert len(two) == 44 and struct.unpack_from("<2I", two, 36) == (38400, 38400)


def test_tcsetsf_flushes_input_first(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.write(b"stale\n")
    ops(s).ioctl_in(s, TCSETSF, ops(s).get_termios())
    assert err(s.read, 100) == errno.EAGAIN


def test_noncanonical_vmin_zero_reads_return_at_once(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    t = Termios.unpack(ops(s).get_termios())
    t.lflag &= ~ICANON
    t.cc[VMIN] = 0
    t.cc[VTIME] = 0
    ops(s).set_termios(t.pack())
    assert s.read(10) == b""
    t.cc[VMIN] = 3
    ops(s).set_termios(t.pack())
    m.write(b"ab")
    assert err(s.read, 10) == errno.EAGAIN  # fewer than VMIN bytes
    m.write(b"c")
    assert s.read(10) == b"abc"


def test_switching_icanon_off_releases_the_partial_line(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.write(b"half")
    t = Termios.unpack(ops(s).get_termios())
    t.lflag &= ~ICANON
    ops(s).set_termios(t.pack())
    assert s.read(10) == b"half"


def test_int_valued_ioctls(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.write(b"line\n")
    assert s.ops.ioctl(s, FIONREAD, 0) == 5
    assert m.ops.ioctl(m, FIONREAD, 0) == 6  # the echo "line\r\n"
    assert m.ops.ioctl(m, TIOCOUTQ, 0) == 0
    assert s.ops.ioctl(s, TCFLSH, TCIFLUSH) == 0
    assert s.ops.ioctl(s, FIONREAD, 0) == 0
    assert err(s.ops.ioctl, s, TCFLSH, 7) == errno.EINVAL
    assert TTY_IOCTLS[TIOCGPTN] == ("int_out", 4) and TTY_IOCTLS[TIOCSPTLCK] == ("int_in", 4)


def test_master_only_ioctls_are_enotty_on_the_slave(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    for request in (TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK, TIOCPKT, TIOCSIG):
        assert err(s.ops.ioctl, s, request, 0) == errno.ENOTTY
    assert err(m.ops.ioctl, m, 0x1234, 0) == errno.ENOTTY
    assert err(m.ops.ioctl, m, TCGETS, 0) == errno.EFAULT  # struct requests go through ioctl_out


def test_tiocsig_queues_only_job_control_signals(pty: tuple[FileDescription, FileDescription]) -> None:
    m, _ = pty
    assert m.ops.ioctl(m, TIOCSIG, signal.SIGINT) == 0
    assert err(m.ops.ioctl, m, TIOCSIG, signal.SIGKILL) == errno.EINVAL
    assert ops(m).pty.signals == [signal.SIGINT]


def test_window_size(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    assert ops(s).ioctl_out(s, TIOCGWINSZ) == bytes(8)
    ops(m).ioctl_in(m, TIOCSWINSZ, struct.pack("<4H", 24, 80, 0, 0))
    assert struct.unpack("<4H", ops(s).get_winsize()) == (24, 80, 0, 0)
    assert ops(m).pty.signals == [signal.SIGWINCH]
    ops(m).set_winsize(struct.pack("<4H", 24, 80, 0, 0))
    assert ops(m).pty.signals == [signal.SIGWINCH]  # no change, no signal


def test_packet_mode_prefixes_master_reads(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    m.ops.ioctl(m, TIOCPKT, 1)
    assert m.ops.ioctl(m, TIOCGPKT, 0) == 1
    s.write(b"data")
    assert m.read(100) == b"\x00data"


def test_ptys_are_not_seekable(pty: tuple[FileDescription, FileDescription]) -> None:
    m, s = pty
    assert err(m.seek, 0, 0) == errno.ESPIPE
    assert err(s.pread, 1, 0) == errno.ESPIPE


def test_closing_the_master_hangs_up_the_slave(
    vfs: VirtualFilesystem, dev: FSContext, pty: tuple[FileDescription, FileDescription]
) -> None:
    m, s = pty
    m.write(b"unread\n")
    m.dec_ref()
    assert s.read(100) == b""
    assert err(s.write, b"x") == errno.EIO
    assert err(ops(s).get_termios) == errno.EIO
    assert err(op, vfs, dev, "/dev/pts/0") == errno.ENOENT


def test_master_reads_eio_once_every_slave_closed(
    vfs: VirtualFilesystem, dev: FSContext, pty: tuple[FileDescription, FileDescription]
) -> None:
    m, s = pty
    s.write(b"last words")
    s.dec_ref()
    assert m.read(100) == b"last words"
    assert err(m.read, 100) == errno.EIO
    s2 = op(vfs, dev, "/dev/pts/0")  # reopening clears it
    assert err(m.read, 100) == errno.EAGAIN
    s2.dec_ref()


def test_master_read_before_any_slave_open_would_block(vfs: VirtualFilesystem, dev: FSContext) -> None:
    m = op(vfs, dev, "/dev/ptmx")
    assert err(m.read, 10) == errno.EAGAIN
    m.dec_ref()


# The line discipline against the host's (Linux n_tty through a real pty).


def _host_pty(data: bytes) -> tuple[list[bytes], bytes]:
    """(slave reads, master echo) for ``data`` written to a host pty master."""
    try:
        master, slave = os.openpty()
    except OSError as e:  # pragma: no cover - no ptys on this host
        pytest.skip(f"no host pty: {e}")
    try:
        os.set_blocking(master, False)
        os.set_blocking(slave, False)
        os.write(master, data)
        echo = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                break
            echo += os.read(master, 65536)
        reads = []
        for _ in range(8):
            try:
                reads.append(os.read(slave, 65536))
            except BlockingIOError:
                break
        return reads, echo
    finally:
        os.close(master)
        os.close(slave)


def _ours(data: bytes) -> tuple[list[bytes], bytes]:
    ld = LineDiscipline()
    ld.receive(data)
    reads = []
    for _ in range(8):
        try:
            reads.append(ld.read(65536, nonblock=True))
        except WouldBlock:
            break
    return reads, bytes(ld.out)


@pytest.mark.parametrize(
    "data",
    [
        b"hello\rworld\n", b"abc\x7fd\n", b"foo, bar!!\x17\x17x\n", b"xyz\x15q\n", b"ab\x04", b"\x04",
        b"a\x03b\n", b"\x01\x7f\n", b"t\tab\n", b"a\x16\x7fb\n", b"q\x13w\x11e\n", b"\x1a\x1c\n",
        b"a\x00b\n", b"\x1b[A\n", b"a\x04b\x04\x04",
    ],
)
def test_line_discipline_matches_linux(data: bytes) -> None:
    assert _ours(data) == _host_pty(data)


def test_termios_defaults_match_a_linux_pty_slave() -> None:
    try:
        master, slave = os.openpty()
    except OSError as e:  # pragma: no cover
        pytest.skip(f"no host pty: {e}")
    try:
        import termios as host_termios

        iflag, oflag, cflag, lflag, _, _, cc = host_termios.tcgetattr(slave)
    finally:
        os.close(master)
        os.close(slave)
    t = Termios()
    assert (t.iflag, t.oflag, t.cflag, t.lflag) == (iflag, oflag, cflag, lflag)
    assert [c[0] if isinstance(c, bytes) else c for c in cc[:17]] == list(t.cc[:17])
    assert t.cc[VEOF] == 4 and t.oflag & ONLCR


def test_dentries_of_dead_slaves_are_not_reused(vfs: VirtualFilesystem, dev: FSContext) -> None:
    """devpts names come and go; a stale dentry never resurrects a pty."""
    m = op(vfs, dev, "/dev/ptmx")
    m.ops.ioctl(m, TIOCSPTLCK, 0)
    op(vfs, dev, "/dev/pts/0").dec_ref()
    m.dec_ref()
    m2 = op(vfs, dev, "/dev/ptmx")  # index 0 again, a new pty
    m2.ops.ioctl(m2, TIOCSPTLCK, 0)
    s2 = op(vfs, dev, "/dev/pts/0")
    m2.write(b"new\n")
    assert s2.read(10) == b"new\n"
    s2.dec_ref()
    m2.dec_ref()



def test_device_state_survives_a_checkpoint_round_trip(vfs: VirtualFilesystem, mctx: MountContext) -> None:
    """The kernel is cloudpickled: a restored VFS finds its devpts again."""
    sb = mctx.new_superblock("devpts")
    vfs2, sb2 = pickle.loads(cloudpickle.dumps((vfs, sb)))
    state = dev_state(vfs2)
    assert state is not dev_state(vfs) and state.initial_devpts is sb2
    ns = MountNamespace(new_mount(sb2))
    ctx2 = FSContext(ns, ns.root, ns.root, Credentials())
    m = vfs2.open(ctx2, ctx2.cwd, "/ptmx", os.O_RDWR)
    assert m.ops.ioctl(m, TIOCGPTN, 0) == 0 and listdir(vfs2, ctx2, "/") == ["ptmx", "0"]
    m.dec_ref()
