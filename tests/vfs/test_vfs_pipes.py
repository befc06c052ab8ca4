"""Pipes and FIFOs (pipe(7); Linux ``fs/pipe.c``, ``fifo_open``).

A pipe holds 64 KiB. Writes of at most PIPE_BUF (4096) bytes are atomic:
they go in whole or, when they do not fit, not at all (WouldBlock, EAGAIN);
larger writes are partial. Reading an empty pipe with no writer is end of
file; writing with no reader is EPIPE. Where Linux would block, the VFS
raises WouldBlock and the kernel's run loop parks the task.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.fdtable import FDTable
from pyrunsc.core.vfs.file import SEEK_SET, FileDescription
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.mount import Mount
from pyrunsc.core.vfs.namei import FSContext
from pyrunsc.core.vfs.pipe import (
    DEFAULT_CAPACITY,
    PIPE_BUF,
    PIPEFS_MAGIC,
    PipeSuperblock,
    WouldBlock,
    new_pipe,
    pipefs_mount,
)
from pyrunsc.core.vfs.vfs import VirtualFilesystem

from .conftest import mount_at, user_ctx


def fails(code: int, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Call ``fn`` and require a SyscallError with ``code``."""
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value.name}"


def blocks(fn: Callable[..., object], *args: object) -> None:
    """``fn`` would block: WouldBlock, whose errno is EAGAIN."""
    with pytest.raises(WouldBlock) as info:
        fn(*args)
    assert info.value.errno == errno.EAGAIN


@pytest.fixture
def pipefs() -> Mount:
    return pipefs_mount()


@pytest.fixture
def pipe(pipefs: Mount) -> tuple[FileDescription, FileDescription]:
    return new_pipe(pipefs, 1000, 1000)


def test_pipefs_mount(pipefs: Mount, vfs: VirtualFilesystem) -> None:
    assert isinstance(pipefs.sb, PipeSuperblock)
    assert pipefs.root.inode.is_dir()
    r, w = new_pipe(pipefs, 0, 0)
    assert r.vd.mount is w.vd.mount is pipefs
    assert vfs.statfs_vd(r.vd).type == PIPEFS_MAGIC
    assert vfs.statfs_vd(r.vd).flags == 0  # as fstatfs on a Linux pipe
    assert pipefs_mount().sb is not pipefs.sb
    r.dec_ref()
    w.dec_ref()


def test_pipe_ends(pipe: tuple[FileDescription, FileDescription], vfs: VirtualFilesystem) -> None:
    r, w = pipe
    assert w.write(b"hello") == 5
    assert r.read(3) == b"hel"
    assert r.read(100) == b"lo"
    fails(errno.EBADF, r.write, b"x")
    fails(errno.EBADF, w.read, 1)
    s = vfs.stat_vd(r.vd)
    assert s.mode == 0o010600
    assert (s.uid, s.gid, s.nlink) == (1000, 1000, 1)
    assert s.ino == vfs.stat_vd(w.vd).ino
    w.write(b"buffered")
    assert vfs.stat_vd(r.vd).size == 0  # Linux reports 0; FIONREAD tells what is buffered
    r.dec_ref()
    w.dec_ref()


def test_pipes_are_not_seekable(pipe: tuple[FileDescription, FileDescription], vfs: VirtualFilesystem) -> None:
    r, w = pipe
    fails(errno.ESPIPE, r.seek, 0, SEEK_SET)
    fails(errno.ESPIPE, r.pread, 1, 0)
    fails(errno.ESPIPE, w.pwrite, b"x", 0)
    fails(errno.EINVAL, r.pread, 1, -1)  # a negative offset is EINVAL first (Linux ksys_pread64)
    fails(errno.EINVAL, vfs.fsync, r)
    fails(errno.ESPIPE, vfs.fallocate, w, 0, 0, 10)
    fails(errno.EINVAL, vfs.ftruncate, w, 0)
    r.dec_ref()
    w.dec_ref()


def test_empty_pipe_would_block_then_eof_without_writers(pipe: tuple[FileDescription, FileDescription]) -> None:
    r, w = pipe
    blocks(r.read, 10)
    assert r.read(0) == b""
    w.write(b"last")
    w.dec_ref()
    assert r.read(2) == b"la"  # what was written is still read
    assert r.read(10) == b"st"
    assert r.read(10) == b""  # then end of file
    r.dec_ref()


def test_epipe_without_readers(pipe: tuple[FileDescription, FileDescription]) -> None:
    r, w = pipe
    r.dec_ref()
    fails(errno.EPIPE, w.write, b"x")
    assert w.write(b"") == 0  # Linux pipe_write: a null write succeeds before the reader check
    w.dec_ref()


def test_capacity_is_64_kib(pipe: tuple[FileDescription, FileDescription]) -> None:
    r, w = pipe
    assert DEFAULT_CAPACITY == 65536 and PIPE_BUF == 4096
    for _ in range(16):
        assert w.write(b"x" * 4096) == 4096
    blocks(w.write, b"y")
    blocks(w.write, b"y" * 5000)
    assert len(r.read(1)) == 1
    assert w.write(b"z") == 1
    r.dec_ref()
    w.dec_ref()


def test_small_writes_are_atomic_and_large_ones_partial(pipe: tuple[FileDescription, FileDescription]) -> None:
    r, w = pipe
    w.write(b"a" * (DEFAULT_CAPACITY - 100))
    blocks(w.write, b"b" * PIPE_BUF)  # 4096 bytes do not fit in 100: nothing goes in
    blocks(w.write, b"b" * 101)
    assert w.write(b"c" * (PIPE_BUF + 1)) == 100  # more than PIPE_BUF: as much as fits
    data = b""
    while chunk := _read_now(r, 65536):
        data += chunk
    assert data == b"a" * (DEFAULT_CAPACITY - 100) + b"c" * 100
    assert w.write(b"d" * 100) == 100
    r.dec_ref()
    w.dec_ref()


def _read_now(r: FileDescription, n: int) -> bytes:
    try:
        return r.read(n)
    except WouldBlock:
        return b""


def test_nonblocking_flag_and_shared_ends(pipefs: Mount) -> None:
    r, w = new_pipe(pipefs, 0, 0, os.O_NONBLOCK)
    assert r.flags & os.O_NONBLOCK and w.flags & os.O_NONBLOCK
    assert r.flags & os.O_ACCMODE == os.O_RDONLY and w.flags & os.O_ACCMODE == os.O_WRONLY
    table = FDTable()
    rn, wn = table.install(r), table.install(w)
    child = table.fork()  # the child shares both ends
    table.close(wn)
    blocks(r.read, 1)  # the child's copy of the write end is still open
    child.get(wn).write(b"from child")
    assert table.get(rn).read(100) == b"from child"
    child.close(wn)
    assert table.get(rn).read(100) == b""
    table.close_all()
    child.close_all()
    assert r.refs == 0


# FIFOs.


@pytest.fixture
def fifo(vfs: VirtualFilesystem, ctx: FSContext) -> str:
    vfs.mknod(ctx, ctx.root, "/fifo", 0o010666)
    return "/fifo"


def _open(vfs: VirtualFilesystem, ctx: FSContext, path: str, flags: int) -> FileDescription:
    return vfs.open(ctx, ctx.root, path, flags)


def test_fifo_open_rules(vfs: VirtualFilesystem, ctx: FSContext, fifo: str) -> None:
    """Linux ``fifo_open``: a non-blocking reader opens at once; a non-blocking
    writer without a reader is ENXIO; blocking opens wait for the other end;
    O_RDWR never waits."""
    fails(errno.ENXIO, _open, vfs, ctx, fifo, os.O_WRONLY | os.O_NONBLOCK)
    blocks(_open, vfs, ctx, fifo, os.O_RDONLY)
    blocks(_open, vfs, ctx, fifo, os.O_WRONLY)
    r = _open(vfs, ctx, fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = _open(vfs, ctx, fifo, os.O_WRONLY | os.O_NONBLOCK)
    blocking_w = _open(vfs, ctx, fifo, os.O_WRONLY)  # a reader is there now
    blocking_r = _open(vfs, ctx, fifo, os.O_RDONLY)  # and writers
    rw = _open(vfs, ctx, fifo, os.O_RDWR)
    for fd in (r, w, blocking_w, blocking_r, rw):
        fd.dec_ref()


def test_fifo_data_and_eof(vfs: VirtualFilesystem, ctx: FSContext, fifo: str) -> None:
    r = _open(vfs, ctx, fifo, os.O_RDONLY | os.O_NONBLOCK)
    assert r.read(10) == b""  # no writer yet: end of file
    w = _open(vfs, ctx, fifo, os.O_WRONLY)
    blocks(r.read, 10)
    assert w.write(b"through the fifo") == 16
    assert r.read(7) == b"through"
    w.dec_ref()
    assert r.read(100) == b" the fifo"
    assert r.read(100) == b""
    r.dec_ref()


def test_fifo_epipe_and_seek(vfs: VirtualFilesystem, ctx: FSContext, fifo: str) -> None:
    r = _open(vfs, ctx, fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = _open(vfs, ctx, fifo, os.O_WRONLY | os.O_TRUNC)  # O_TRUNC means nothing here
    fails(errno.ESPIPE, w.seek, 0, SEEK_SET)
    r.dec_ref()
    fails(errno.EPIPE, w.write, b"x")
    w.dec_ref()


def test_fifo_contents_go_when_the_last_end_closes(vfs: VirtualFilesystem, ctx: FSContext, fifo: str) -> None:
    """The pipe of a FIFO lives while it is open; reopening gives an empty one."""
    rw = _open(vfs, ctx, fifo, os.O_RDWR)
    rw.write(b"left behind")
    rw.dec_ref()
    rw = _open(vfs, ctx, fifo, os.O_RDWR | os.O_NONBLOCK)
    blocks(rw.read, 100)
    rw.dec_ref()


def test_fifo_stat_and_permissions(vfs: VirtualFilesystem, ctx: FSContext, fifo: str, mctx: MountContext) -> None:
    rw = _open(vfs, ctx, fifo, os.O_RDWR)
    rw.write(b"abc")
    s = vfs.stat(ctx, ctx.root, fifo)
    assert (s.mode, s.size) == (0o010644, 0)
    rw.dec_ref()
    vfs.mknod(ctx, ctx.root, "/private", 0o010600)
    fails(errno.EACCES, _open, vfs, user_ctx(ctx), "/private", os.O_RDONLY | os.O_NONBLOCK)
    # A FIFO on a read-only mount still opens for writing.
    vfs.mkdir(ctx, ctx.root, "/ro", 0o755)
    sb = mctx.new_superblock("tmpfs", "")
    mount_at(ctx, "/ro", sb)
    vfs.mknod(ctx, ctx.root, "/ro/fifo", 0o010666)
    mount_at(ctx, "/ro", sb, MountFlags(read_only=True))
    rw = _open(vfs, ctx, "/ro/fifo", os.O_RDWR)
    assert rw.write(b"ok") == 2
    rw.dec_ref()


def test_fifo_times(vfs: VirtualFilesystem, ctx: FSContext, fifo: str, pipefs: Mount) -> None:
    """Writing a FIFO sets its mtime and ctime, reading bytes its atime (by
    the mount's atime policy); a pipe(2) pipe keeps its times."""
    sb = ctx.root.mount.sb
    clock = [2 * 10**18]  # after the real time the FIFO was made with
    sb.now = lambda: clock[0]  # type: ignore[method-assign]
    rw = _open(vfs, ctx, fifo, os.O_RDWR | os.O_NONBLOCK)
    before = vfs.stat(ctx, ctx.root, fifo)
    clock[0] += 10**9
    blocks(rw.read, 1)
    assert rw.write(b"") == 0
    s = vfs.stat(ctx, ctx.root, fifo)
    assert (s.atime, s.mtime, s.ctime) == (before.atime, before.mtime, before.ctime)
    rw.write(b"abc")
    s = vfs.stat(ctx, ctx.root, fifo)
    assert (s.atime, s.mtime, s.ctime) == (before.atime, clock[0], clock[0])
    clock[0] += 10**9
    rw.read(1)
    assert vfs.stat(ctx, ctx.root, fifo).atime == clock[0]
    rw.dec_ref()
    r, w = new_pipe(pipefs, 0, 0)
    made = vfs.stat_vd(r.vd)
    pipefs.sb.now = lambda: made.mtime + 10**9  # type: ignore[method-assign]
    w.write(b"x")
    r.read(1)
    after = vfs.stat_vd(r.vd)
    assert (after.atime, after.mtime, after.ctime) == (made.atime, made.mtime, made.ctime)
    r.dec_ref()
    w.dec_ref()


def test_fifo_capacity_and_atomicity(vfs: VirtualFilesystem, ctx: FSContext, fifo: str) -> None:
    rw = _open(vfs, ctx, fifo, os.O_RDWR | os.O_NONBLOCK)
    assert rw.write(b"x" * 70000) == DEFAULT_CAPACITY
    blocks(rw.write, b"y")
    rw.read(10)
    blocks(rw.write, b"y" * 11)
    assert rw.write(b"y" * 10) == 10
    rw.dec_ref()
