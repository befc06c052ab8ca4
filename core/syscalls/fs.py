"""File system calls: thin decoders over the VFS (Linux ``fs/*.c``; gVisor
``syscalls/linux/sys_file.go``, ``sys_read_write.go``, ``sys_stat.go``)."""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..kernel import signals
from ..kernel.wait import TaskWaker, Wait
from ..vfs.file import O_PATH, FileDescription, file_accessed
from ..vfs.host import (
    FIONREAD,
    TCGETS,
    TCSETS,
    TCSETSF,
    TCSETSW,
    TERMIOS_SIZE,
    TIOCGPGRP,
    TIOCGSID,
    TIOCGWINSZ,
    TIOCSPGRP,
    HostFileOps,
)
from ..vfs.inode import Stat, major, minor
from ..vfs.mount import VirtualDentry
from ..vfs.namei import PATH_MAX, resolve
from ..vfs.pipe import PipeEndOps, WouldBlock
from ..vfs.poll import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT
from ..vfs.vfs import UTIME_NOW, UTIME_OMIT, Timespec
from . import Block, syscall, to_signed

SIGPIPE = 13

if TYPE_CHECKING:
    from ..kernel.task import Task

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH = 0x100, 0x200, 0x400, 0x1000
AT_EACCESS = 0x200
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL = 0, 1, 2, 3, 4
F_GETLK, F_SETLK, F_SETLKW = 5, 6, 7
F_DUPFD_CLOEXEC, F_GETPIPE_SZ, F_SETPIPE_SZ = 1030, 1032, 1031
FD_CLOEXEC = 1
MAX_RW_COUNT = 0x7FFFF000
IOV_MAX = 1024

STAT = struct.Struct("<QQQIIIIQqqqqqqqqq24x")
STATX = struct.Struct("<IIQIIIHxxQQQQqIxxxxqIxxxxqIxxxxqIxxxxIIIIQ96x")
STATFS = struct.Struct("<qqqqqqqiiqqqqq")
IOVEC = struct.Struct("<QQ")
DIRENT64_HEAD = struct.Struct("<QqHB")
STATX_BASIC_STATS, STATX_BTIME, STATX_MNT_ID = 0x7FF, 0x800, 0x1000


def fd_of(task: Task, fd: int) -> FileDescription:
    return task.fdtable.get(to_signed(fd) if fd >> 63 else fd)


def path_arg(task: Task, addr: int) -> str:
    """A path argument; EFAULT for a bad pointer, ENAMETOOLONG past PATH_MAX."""
    return os.fsdecode(task.mm.read_cstring(addr, PATH_MAX))


def start_of(task: Task, dirfd: int, path: str) -> VirtualDentry:
    """Where a relative ``path`` starts: the cwd for AT_FDCWD, else ``dirfd``'s
    directory (ENOTDIR if it is not one, EBADF if not open)."""
    dirfd = _int32(dirfd)
    if path.startswith("/") or dirfd == AT_FDCWD:
        return task.fs.cwd
    vd = task.fdtable.get(dirfd).vd
    if path and not vd.inode.is_dir():
        raise SyscallError(errno.ENOTDIR)
    return vd


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def lookup_at(task: Task, dirfd: int, path: str, flags: int, *, follow_default: bool = True) -> VirtualDentry:
    """``*at`` resolution with AT_EMPTY_PATH and AT_SYMLINK_(NO)FOLLOW."""
    dirfd = _int32(dirfd)
    if not path:
        if not flags & AT_EMPTY_PATH:
            raise SyscallError(errno.ENOENT)
        return task.fs.cwd if dirfd == AT_FDCWD else task.fdtable.get(dirfd).vd
    follow = (follow_default and not flags & AT_SYMLINK_NOFOLLOW) or bool(flags & AT_SYMLINK_FOLLOW)
    return resolve(task.fs, start_of(task, dirfd, path), path, follow=follow)


# Open and close.


def do_open(task: Task, dirfd: int, path_addr: int, flags: int, mode: int) -> int:
    path = path_arg(task, path_addr)
    flags &= 0xFFFFFFFF
    try:
        desc = task.kernel.vfs.open(task.fs, start_of(task, _int32(dirfd), path), path, flags | os.O_LARGEFILE, mode)
    except WouldBlock:
        raise Block() from None  # a FIFO waiting for its other end
    try:
        return task.fdtable.install(desc, cloexec=bool(flags & os.O_CLOEXEC))
    except SyscallError:
        desc.dec_ref()
        raise


@syscall("open", "sOm")
def sys_open(task: Task, path: int, flags: int, mode: int) -> int:
    return do_open(task, AT_FDCWD, path, flags, mode)


@syscall("openat", "dsOm")
def sys_openat(task: Task, dirfd: int, path: int, flags: int, mode: int) -> int:
    return do_open(task, dirfd, path, flags, mode)


@syscall("creat", "sm")
def sys_creat(task: Task, path: int, mode: int) -> int:
    return do_open(task, AT_FDCWD, path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)


@syscall("close", "i")
def sys_close(task: Task, fd: int) -> int:
    task.fdtable.close(_int32(fd))
    return 0


@syscall("close_range", "iii")
def sys_close_range(task: Task, first: int, last: int, flags: int) -> int:
    if first > last or flags & ~0x6:
        raise SyscallError(errno.EINVAL)
    for fd, _, _ in list(task.fdtable):
        if first <= fd <= last:
            if flags & 0x4:  # CLOSE_RANGE_CLOEXEC
                task.fdtable.set_cloexec(fd, True)
            else:
                task.fdtable.close(fd)
    return 0


# Reading and writing.


def _check_count(count: int) -> int:
    if to_signed(count) < 0:
        raise SyscallError(errno.EINVAL)
    return min(count, MAX_RW_COUNT)


def waiting(task: Task, desc: FileDescription, events: int) -> Block | SyscallError:
    """What a call that would block on ``desc`` until it has ``events``
    raises: EAGAIN with O_NONBLOCK, else Block (the task waits and the call
    is served again). A file that mirrors a host fd (the caller's stdin)
    names it in ``task.wait``, for the kernel's idle wait to sleep on."""
    if desc.flags & os.O_NONBLOCK:
        return SyscallError(errno.EAGAIN)
    host = desc.ops.host_waits(desc, events)
    if host:
        task.wait = Wait(host_fds=host)
    queues = desc.ops.wait_queues(desc)
    if queues:
        if task.waker is None:
            task.waker = TaskWaker(task)
        task.waker.hang(queues, events)
    return Block()


@syscall("read", "ioi")
def sys_read(task: Task, fd: int, buf: int, count: int) -> int:
    desc = fd_of(task, fd)
    count = _check_count(count)
    if desc.inode.is_dir() and not desc.flags & O_PATH:
        raise SyscallError(errno.EISDIR)
    list(task.mm._spans(buf, count, 2))  # EFAULT before consuming input
    try:
        data = desc.read(count)
    except WouldBlock:
        raise waiting(task, desc, EPOLLIN) from None
    task.mm.copy_out(buf, data)
    return len(data)


@syscall("write", "ibi")
def sys_write(task: Task, fd: int, buf: int, count: int) -> int:
    desc = fd_of(task, fd)
    data = task.mm.copy_in(buf, _check_count(count))
    return _write(task, desc, data)


def _write(task: Task, desc: FileDescription, data: bytes, offset: int | None = None) -> int:
    if desc.writable and data:
        task.kernel.vfs.remove_privs(task.fs, desc)
    try:
        return desc.write(data) if offset is None else desc.pwrite(data, offset)
    except WouldBlock:
        raise waiting(task, desc, EPOLLOUT) from None
    except SyscallError as e:
        if e.errno == errno.EPIPE:
            # Linux pipe_write: send_sig(SIGPIPE, current): to the writing thread.
            signals.send(task, SIGPIPE)
        raise


@syscall("pread64", "ioii")
def sys_pread64(task: Task, fd: int, buf: int, count: int, offset: int) -> int:
    desc = fd_of(task, fd)
    data = desc.pread(_check_count(count), to_signed(offset))
    task.mm.copy_out(buf, data)
    return len(data)


@syscall("pwrite64", "ibii")
def sys_pwrite64(task: Task, fd: int, buf: int, count: int, offset: int) -> int:
    desc = fd_of(task, fd)
    return _write(task, desc, task.mm.copy_in(buf, _check_count(count)), to_signed(offset))


def _iovecs(task: Task, iov: int, count: int) -> list[tuple[int, int]]:
    if count > IOV_MAX:
        raise SyscallError(errno.EINVAL)
    raw = task.mm.copy_in(iov, IOVEC.size * count)
    out = [IOVEC.unpack_from(raw, i * IOVEC.size) for i in range(count)]
    total = 0
    for _, n in out:
        if to_signed(n) < 0:
            raise SyscallError(errno.EINVAL)
        total += n
    if total > 0x7FFFFFFFFFFFFFFF:
        raise SyscallError(errno.EINVAL)
    return out


@syscall("readv", "ipi")
def sys_readv(task: Task, fd: int, iov: int, count: int) -> int:
    desc = fd_of(task, fd)
    vecs = _iovecs(task, iov, count)
    total = sum(n for _, n in vecs)
    try:
        data = desc.read(min(total, MAX_RW_COUNT))
    except WouldBlock:
        raise waiting(task, desc, EPOLLIN) from None
    _scatter(task, vecs, data)
    return len(data)


def _scatter(task: Task, vecs: list[tuple[int, int]], data: bytes) -> None:
    pos = 0
    for base, n in vecs:
        if pos >= len(data):
            break
        chunk = data[pos : pos + n]
        task.mm.copy_out(base, chunk)
        pos += len(chunk)


@syscall("writev", "ipi")
def sys_writev(task: Task, fd: int, iov: int, count: int) -> int:
    desc = fd_of(task, fd)
    data = b"".join(task.mm.copy_in(base, n) for base, n in _iovecs(task, iov, count) if n)
    return _write(task, desc, data[:MAX_RW_COUNT])


@syscall("preadv", "ipii")
def sys_preadv(task: Task, fd: int, iov: int, count: int, offset: int) -> int:
    desc = fd_of(task, fd)
    vecs = _iovecs(task, iov, count)
    data = desc.pread(min(sum(n for _, n in vecs), MAX_RW_COUNT), to_signed(offset))
    _scatter(task, vecs, data)
    return len(data)


@syscall("pwritev", "ipii")
def sys_pwritev(task: Task, fd: int, iov: int, count: int, offset: int) -> int:
    desc = fd_of(task, fd)
    data = b"".join(task.mm.copy_in(base, n) for base, n in _iovecs(task, iov, count) if n)
    return _write(task, desc, data, to_signed(offset))


@syscall("lseek", "iii")
def sys_lseek(task: Task, fd: int, offset: int, whence: int) -> int:
    return fd_of(task, fd).seek(to_signed(offset), whence)


@syscall("sendfile", "iipi")
def sys_sendfile(task: Task, out_fd: int, in_fd: int, offset_ptr: int, count: int) -> int:
    src, dst = fd_of(task, in_fd), fd_of(task, out_fd)
    if not src.readable or not dst.writable:
        raise SyscallError(errno.EBADF)
    count = _check_count(count)
    if offset_ptr:
        (off,) = struct.unpack("<q", task.mm.copy_in(offset_ptr, 8))
        data = src.pread(count, off)
        n = _write(task, dst, data) if data else 0
        task.mm.copy_out(offset_ptr, struct.pack("<q", off + n))
        return n
    if count and not dst.ops.readiness(dst) & (EPOLLOUT | EPOLLERR | EPOLLHUP):
        raise waiting(task, dst, EPOLLOUT)  # wait for room before taking input
    try:
        data = src.read(count)
    except WouldBlock:
        raise waiting(task, src, EPOLLIN) from None
    return _write(task, dst, data) if data else 0


@syscall("copy_file_range", "ipipii")
def sys_copy_file_range(task: Task, fd_in: int, off_in: int, fd_out: int, off_out: int, length: int,
                        flags: int) -> int:
    if flags:
        raise SyscallError(errno.EINVAL)
    src, dst = fd_of(task, fd_in), fd_of(task, fd_out)
    if not src.readable or not dst.writable or dst.flags & os.O_APPEND:
        raise SyscallError(errno.EBADF)
    if not src.inode.is_regular() or not dst.inode.is_regular():
        raise SyscallError(errno.EINVAL if not src.inode.is_dir() else errno.EISDIR)
    count = _check_count(length)
    pin = struct.unpack("<q", task.mm.copy_in(off_in, 8))[0] if off_in else None
    pout = struct.unpack("<q", task.mm.copy_in(off_out, 8))[0] if off_out else None
    data = src.pread(count, pin) if pin is not None else src.read(count)
    n = (dst.pwrite(data, pout) if pout is not None else dst.write(data)) if data else 0
    if pin is not None:
        task.mm.copy_out(off_in, struct.pack("<q", pin + len(data)))
    if pout is not None:
        task.mm.copy_out(off_out, struct.pack("<q", pout + n))
    return n


# Attributes.


def pack_stat(s: Stat) -> bytes:
    return STAT.pack(
        s.dev, s.ino, s.nlink, s.mode, s.uid, s.gid, 0, s.rdev, s.size, s.blksize, s.blocks,
        s.atime // 10**9, s.atime % 10**9, s.mtime // 10**9, s.mtime % 10**9, s.ctime // 10**9, s.ctime % 10**9,
    )


@syscall("stat", "sp")
def sys_stat(task: Task, path: int, buf: int) -> int:
    vd = lookup_at(task, AT_FDCWD, path_arg(task, path), 0)
    task.mm.copy_out(buf, pack_stat(task.kernel.vfs.stat_vd(vd)))
    return 0


@syscall("lstat", "sp")
def sys_lstat(task: Task, path: int, buf: int) -> int:
    vd = lookup_at(task, AT_FDCWD, path_arg(task, path), AT_SYMLINK_NOFOLLOW)
    task.mm.copy_out(buf, pack_stat(task.kernel.vfs.stat_vd(vd)))
    return 0


@syscall("fstat", "ip")
def sys_fstat(task: Task, fd: int, buf: int) -> int:
    task.mm.copy_out(buf, pack_stat(task.kernel.vfs.stat_vd(fd_of(task, fd).vd)))
    return 0


@syscall("newfstatat", "dspx")
def sys_newfstatat(task: Task, dirfd: int, path: int, buf: int, flags: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800):
        raise SyscallError(errno.EINVAL)
    vd = lookup_at(task, dirfd, path_arg(task, path), flags)
    task.mm.copy_out(buf, pack_stat(task.kernel.vfs.stat_vd(vd)))
    return 0


@syscall("statx", "dsxxp")
def sys_statx(task: Task, dirfd: int, path: int, flags: int, mask: int, buf: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800 | 0x6000) or mask & 0x80000000:
        raise SyscallError(errno.EINVAL)
    vd = lookup_at(task, dirfd, path_arg(task, path), flags)
    s = task.kernel.vfs.stat_vd(vd)
    got = STATX_BASIC_STATS | STATX_MNT_ID | (STATX_BTIME if s.btime is not None else 0)
    bt = s.btime or 0
    data = STATX.pack(
        got, s.blksize, 0, s.nlink, s.uid, s.gid, s.mode & 0xFFFF, s.ino, s.size, s.blocks, 0,
        s.atime // 10**9, s.atime % 10**9, bt // 10**9, bt % 10**9, s.ctime // 10**9, s.ctime % 10**9,
        s.mtime // 10**9, s.mtime % 10**9, major(s.rdev), minor(s.rdev), major(s.dev), minor(s.dev), s.mount_id,
    )
    task.mm.copy_out(buf, data)
    return 0


def _statfs(task: Task, vd: VirtualDentry, buf: int) -> int:
    s = task.kernel.vfs.statfs_vd(vd)
    task.mm.copy_out(buf, STATFS.pack(s.type, s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree,
                                      0, 0, s.namelen, s.frsize, s.flags, 0, 0))
    return 0


@syscall("statfs", "sp")
def sys_statfs(task: Task, path: int, buf: int) -> int:
    return _statfs(task, lookup_at(task, AT_FDCWD, path_arg(task, path), 0), buf)


@syscall("fstatfs", "ip")
def sys_fstatfs(task: Task, fd: int, buf: int) -> int:
    return _statfs(task, fd_of(task, fd).vd, buf)


@syscall("getdents64", "ipi")
def sys_getdents64(task: Task, fd: int, buf: int, count: int) -> int:
    desc = fd_of(task, fd)
    if desc.flags & O_PATH:
        raise SyscallError(errno.EBADF)
    if not desc.inode.is_dir():
        raise SyscallError(errno.ENOTDIR)
    out = bytearray()
    last = None
    for e in desc.ops.iterate(desc, desc.offset):
        name = os.fsencode(e.name) + b"\0"
        reclen = (DIRENT64_HEAD.size + len(name) + 7) & ~7
        if len(out) + reclen > count:
            if not out:
                raise SyscallError(errno.EINVAL)
            break
        out += DIRENT64_HEAD.pack(e.ino, e.cookie, reclen, e.type) + name.ljust(reclen - DIRENT64_HEAD.size, b"\0")
        last = e.cookie
    task.mm.copy_out(buf, bytes(out))
    if last is not None:
        desc.offset = last
    file_accessed(desc)
    return len(out)


@syscall("access", "si")
def sys_access(task: Task, path: int, mode: int) -> int:
    p = path_arg(task, path)
    task.kernel.vfs.access(task.fs, start_of(task, AT_FDCWD, p), p, mode)
    return 0


@syscall("faccessat", "dsi")
def sys_faccessat(task: Task, dirfd: int, path: int, mode: int) -> int:
    p = path_arg(task, path)
    task.kernel.vfs.access(task.fs, start_of(task, dirfd, p), p, mode)
    return 0


@syscall("faccessat2", "isix")
def sys_faccessat2(task: Task, dirfd: int, path: int, mode: int, flags: int) -> int:
    if flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    p = path_arg(task, path)
    if not p and flags & AT_EMPTY_PATH:
        vd = lookup_at(task, dirfd, p, flags)
        from ..vfs.permissions import may_access

        if mode and not may_access(task.fs.creds, vd.inode, mode):
            raise SyscallError(errno.EACCES)
        return 0
    task.kernel.vfs.access(task.fs, start_of(task, dirfd, p), p, mode, flags)
    return 0


def _readlink(task: Task, dirfd: int, path: int, buf: int, size: int) -> int:
    if to_signed(size) <= 0:
        raise SyscallError(errno.EINVAL)
    p = path_arg(task, path)
    vd = lookup_at(task, dirfd, p, AT_SYMLINK_NOFOLLOW | (AT_EMPTY_PATH if not p else 0))
    if not vd.inode.is_symlink():
        raise SyscallError(errno.EINVAL if p else errno.ENOENT)
    target = os.fsencode(vd.inode.readlink())[:size]
    task.mm.copy_out(buf, target)
    return len(target)


@syscall("readlink", "soi")
def sys_readlink(task: Task, path: int, buf: int, size: int) -> int:
    return _readlink(task, AT_FDCWD, path, buf, size)


@syscall("readlinkat", "dsoi")
def sys_readlinkat(task: Task, dirfd: int, path: int, buf: int, size: int) -> int:
    return _readlink(task, dirfd, path, buf, size)


# Creating and removing names.


@syscall("mkdir", "sm")
def sys_mkdir(task: Task, path: int, mode: int) -> int:
    p = path_arg(task, path)
    task.kernel.vfs.mkdir(task.fs, start_of(task, AT_FDCWD, p), p, mode)
    return 0


@syscall("mkdirat", "dsm")
def sys_mkdirat(task: Task, dirfd: int, path: int, mode: int) -> int:
    p = path_arg(task, path)
    task.kernel.vfs.mkdir(task.fs, start_of(task, dirfd, p), p, mode)
    return 0


@syscall("mknod", "sxx")
def sys_mknod(task: Task, path: int, mode: int, dev: int) -> int:
    p = path_arg(task, path)
    task.kernel.vfs.mknod(task.fs, start_of(task, AT_FDCWD, p), p, mode & 0xFFFFFFFF, dev)
    return 0


@syscall("mknodat", "isxx")
def sys_mknodat(task: Task, dirfd: int, path: int, mode: int, dev: int) -> int:
    p = path_arg(task, path)
    task.kernel.vfs.mknod(task.fs, start_of(task, dirfd, p), p, mode & 0xFFFFFFFF, dev)
    return 0


@syscall("rmdir", "s")
def sys_rmdir(task: Task, path: int) -> int:
    p = path_arg(task, path)
    task.kernel.vfs.rmdir(task.fs, start_of(task, AT_FDCWD, p), p)
    return 0


@syscall("unlink", "s")
def sys_unlink(task: Task, path: int) -> int:
    p = path_arg(task, path)
    task.kernel.vfs.unlink(task.fs, start_of(task, AT_FDCWD, p), p)
    return 0


@syscall("unlinkat", "dsx")
def sys_unlinkat(task: Task, dirfd: int, path: int, flags: int) -> int:
    if flags & ~AT_REMOVEDIR:
        raise SyscallError(errno.EINVAL)
    p = path_arg(task, path)
    start = start_of(task, dirfd, p)
    if flags & AT_REMOVEDIR:
        task.kernel.vfs.rmdir(task.fs, start, p)
    else:
        task.kernel.vfs.unlink(task.fs, start, p)
    return 0


def _rename(task: Task, olddirfd: int, oldpath: int, newdirfd: int, newpath: int, flags: int) -> int:
    op, np = path_arg(task, oldpath), path_arg(task, newpath)
    task.kernel.vfs.rename(task.fs, start_of(task, olddirfd, op), op, start_of(task, newdirfd, np), np, flags)
    return 0


@syscall("rename", "ss")
def sys_rename(task: Task, oldpath: int, newpath: int) -> int:
    return _rename(task, AT_FDCWD, oldpath, AT_FDCWD, newpath, 0)


@syscall("renameat", "isis")
def sys_renameat(task: Task, olddirfd: int, oldpath: int, newdirfd: int, newpath: int) -> int:
    return _rename(task, olddirfd, oldpath, newdirfd, newpath, 0)


@syscall("renameat2", "isisx")
def sys_renameat2(task: Task, olddirfd: int, oldpath: int, newdirfd: int, newpath: int, flags: int) -> int:
    return _rename(task, olddirfd, oldpath, newdirfd, newpath, flags)


def _link(task: Task, olddirfd: int, oldpath: int, newdirfd: int, newpath: int, flags: int) -> int:
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    op, np = path_arg(task, oldpath), path_arg(task, newpath)
    vfs = task.kernel.vfs
    if not op and flags & AT_EMPTY_PATH:
        # linkat(fd, "", ..., AT_EMPTY_PATH) names an open file; Linux needs
        # CAP_DAC_READ_SEARCH for it.
        from ..kernel.auth import CAP_DAC_READ_SEARCH

        if not task.fs.creds.has_cap(CAP_DAC_READ_SEARCH):
            raise SyscallError(errno.ENOENT)
        old = lookup_at(task, olddirfd, op, flags)
        vfs.link_vd(task.fs, old, start_of(task, newdirfd, np), np)
        return 0
    vfs.link(task.fs, start_of(task, olddirfd, op), op, start_of(task, newdirfd, np), np,
             follow=bool(flags & AT_SYMLINK_FOLLOW))
    return 0


@syscall("link", "ss")
def sys_link(task: Task, oldpath: int, newpath: int) -> int:
    return _link(task, AT_FDCWD, oldpath, AT_FDCWD, newpath, 0)


@syscall("linkat", "isisx")
def sys_linkat(task: Task, olddirfd: int, oldpath: int, newdirfd: int, newpath: int, flags: int) -> int:
    return _link(task, olddirfd, oldpath, newdirfd, newpath, flags)


@syscall("symlink", "ss")
def sys_symlink(task: Task, target: int, linkpath: int) -> int:
    t, p = path_arg(task, target), path_arg(task, linkpath)
    task.kernel.vfs.symlink(task.fs, t, start_of(task, AT_FDCWD, p), p)
    return 0


@syscall("symlinkat", "sis")
def sys_symlinkat(task: Task, target: int, dirfd: int, linkpath: int) -> int:
    t, p = path_arg(task, target), path_arg(task, linkpath)
    task.kernel.vfs.symlink(task.fs, t, start_of(task, dirfd, p), p)
    return 0


# Changing attributes.


@syscall("chmod", "sm")
def sys_chmod(task: Task, path: int, mode: int) -> int:
    task.kernel.vfs.chmod(task.fs, lookup_at(task, AT_FDCWD, path_arg(task, path), 0), mode)
    return 0


@syscall("fchmod", "ix")
def sys_fchmod(task: Task, fd: int, mode: int) -> int:
    desc = fd_of(task, fd)
    if desc.flags & O_PATH:
        raise SyscallError(errno.EBADF)
    task.kernel.vfs.chmod(task.fs, desc.vd, mode)
    return 0


@syscall("fchmodat", "dsm")
def sys_fchmodat(task: Task, dirfd: int, path: int, mode: int) -> int:
    task.kernel.vfs.chmod(task.fs, lookup_at(task, dirfd, path_arg(task, path), 0), mode)
    return 0


def _chown(task: Task, vd: VirtualDentry, uid: int, gid: int) -> int:
    task.kernel.vfs.chown(task.fs, vd, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF)
    return 0


@syscall("chown", "sii")
def sys_chown(task: Task, path: int, uid: int, gid: int) -> int:
    return _chown(task, lookup_at(task, AT_FDCWD, path_arg(task, path), 0), uid, gid)


@syscall("lchown", "sii")
def sys_lchown(task: Task, path: int, uid: int, gid: int) -> int:
    return _chown(task, lookup_at(task, AT_FDCWD, path_arg(task, path), AT_SYMLINK_NOFOLLOW), uid, gid)


@syscall("fchown", "iii")
def sys_fchown(task: Task, fd: int, uid: int, gid: int) -> int:
    desc = fd_of(task, fd)
    if desc.flags & O_PATH:
        raise SyscallError(errno.EBADF)
    return _chown(task, desc.vd, uid, gid)


@syscall("fchownat", "isiix")
def sys_fchownat(task: Task, dirfd: int, path: int, uid: int, gid: int, flags: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    return _chown(task, lookup_at(task, dirfd, path_arg(task, path), flags), uid, gid)


@syscall("truncate", "si")
def sys_truncate(task: Task, path: int, length: int) -> int:
    task.kernel.vfs.truncate(task.fs, lookup_at(task, AT_FDCWD, path_arg(task, path), 0), to_signed(length))
    return 0


@syscall("ftruncate", "ii")
def sys_ftruncate(task: Task, fd: int, length: int) -> int:
    desc = fd_of(task, fd)
    task.kernel.vfs.ftruncate(desc, to_signed(length))
    task.kernel.vfs.remove_privs(task.fs, desc)
    return 0


@syscall("fallocate", "ixii")
def sys_fallocate(task: Task, fd: int, mode: int, offset: int, length: int) -> int:
    desc = fd_of(task, fd)
    task.kernel.vfs.fallocate(desc, mode, to_signed(offset), to_signed(length))
    task.kernel.vfs.remove_privs(task.fs, desc)
    return 0


@syscall("fsync", "i")
def sys_fsync(task: Task, fd: int) -> int:
    task.kernel.vfs.fsync(fd_of(task, fd))
    return 0


@syscall("fdatasync", "i")
def sys_fdatasync(task: Task, fd: int) -> int:
    task.kernel.vfs.fsync(fd_of(task, fd))
    return 0


@syscall("sync")
def sys_sync(task: Task) -> int:
    return 0


@syscall("syncfs", "i")
def sys_syncfs(task: Task, fd: int) -> int:
    fd_of(task, fd)
    return 0


@syscall("fadvise64", "iiii")
def sys_fadvise64(task: Task, fd: int, offset: int, length: int, advice: int) -> int:
    desc = fd_of(task, fd)
    if isinstance(desc.ops, PipeEndOps):
        raise SyscallError(errno.ESPIPE)
    if advice > 5 or to_signed(length) < 0:
        raise SyscallError(errno.EINVAL)
    return 0


@syscall("utimensat", "ispx")
def sys_utimensat(task: Task, dirfd: int, path: int, times: int, flags: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    if times:
        a_sec, a_nsec, m_sec, m_nsec = struct.unpack("<qqqq", task.mm.copy_in(times, 32))
        atime, mtime = Timespec(a_sec, a_nsec), Timespec(m_sec, m_nsec)
        for t in (atime, mtime):
            if t.nsec not in (UTIME_NOW, UTIME_OMIT) and not 0 <= t.nsec < 10**9:
                raise SyscallError(errno.EINVAL)
    else:
        atime, mtime = Timespec(), Timespec()
    if path:
        vd = lookup_at(task, dirfd, path_arg(task, path), flags)
    else:
        vd = task.fdtable.get(_int32(dirfd)).vd  # utimensat(fd, NULL, ...) = futimens
    task.kernel.vfs.utimens(task.fs, vd, atime, mtime)
    return 0


@syscall("utimes", "sp")
def sys_utimes(task: Task, path: int, times: int) -> int:
    if times:
        a_sec, a_usec, m_sec, m_usec = struct.unpack("<qqqq", task.mm.copy_in(times, 32))
        if not (0 <= a_usec < 10**6 and 0 <= m_usec < 10**6):
            raise SyscallError(errno.EINVAL)
        atime, mtime = Timespec(a_sec, a_usec * 1000), Timespec(m_sec, m_usec * 1000)
    else:
        atime, mtime = Timespec(), Timespec()
    task.kernel.vfs.utimens(task.fs, lookup_at(task, AT_FDCWD, path_arg(task, path), 0), atime, mtime)
    return 0


# The working directory.


@syscall("getcwd", "oi")
def sys_getcwd(task: Task, buf: int, size: int) -> int:
    path = os.fsencode(task.fs.ns.path(task.fs.cwd, task.fs.root))
    if task.fs.cwd.dentry.dead:
        path = b"(unreachable)" + path
    data = path + b"\0"
    if len(data) > size:
        raise SyscallError(errno.ERANGE)
    task.mm.copy_out(buf, data)
    return len(data)


def _chdir(task: Task, vd: VirtualDentry) -> int:
    from ..vfs.permissions import MAY_EXEC, check_permission

    if not vd.inode.is_dir():
        raise SyscallError(errno.ENOTDIR)
    check_permission(task.fs.creds, vd.inode, MAY_EXEC)
    task.fs.cwd = vd
    return 0


@syscall("chdir", "s")
def sys_chdir(task: Task, path: int) -> int:
    return _chdir(task, lookup_at(task, AT_FDCWD, path_arg(task, path), 0))


@syscall("fchdir", "i")
def sys_fchdir(task: Task, fd: int) -> int:
    return _chdir(task, fd_of(task, fd).vd)


# Descriptors.


@syscall("dup", "i")
def sys_dup(task: Task, fd: int) -> int:
    desc = fd_of(task, fd)
    desc.inc_ref()
    try:
        return task.fdtable.install(desc)
    except SyscallError:
        desc.dec_ref()
        raise


def _dup3(task: Task, old: int, new: int, flags: int) -> int:
    desc = fd_of(task, old)
    new = _int32(new)
    if new < 0 or new >= task.fdtable.limit:
        raise SyscallError(errno.EBADF)
    desc.inc_ref()
    task.fdtable.install_at(new, desc, cloexec=bool(flags & os.O_CLOEXEC))
    return new


@syscall("dup2", "ii")
def sys_dup2(task: Task, old: int, new: int) -> int:
    if _int32(old) == _int32(new):
        fd_of(task, old)
        return _int32(new)
    return _dup3(task, old, new, 0)


@syscall("dup3", "iix")
def sys_dup3(task: Task, old: int, new: int, flags: int) -> int:
    if flags & ~os.O_CLOEXEC or _int32(old) == _int32(new):
        raise SyscallError(errno.EINVAL)
    return _dup3(task, old, new, flags)


@syscall("fcntl", "iix")
def sys_fcntl(task: Task, fd: int, cmd: int, arg: int) -> int:
    fd = _int32(fd)
    desc = task.fdtable.get(fd)
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        if _int32(arg) < 0 or _int32(arg) >= task.fdtable.limit:
            raise SyscallError(errno.EINVAL)
        desc.inc_ref()
        try:
            return task.fdtable.install(desc, min_fd=_int32(arg), cloexec=cmd == F_DUPFD_CLOEXEC)
        except SyscallError:
            desc.dec_ref()
            raise
    if cmd == F_GETFD:
        return FD_CLOEXEC if task.fdtable.get_cloexec(fd) else 0
    if cmd == F_SETFD:
        task.fdtable.set_cloexec(fd, bool(arg & FD_CLOEXEC))
        return 0
    if cmd == F_GETFL:
        return desc.flags | os.O_LARGEFILE
    if cmd == F_SETFL:
        if desc.flags & O_PATH:
            raise SyscallError(errno.EBADF)
        desc.set_status_flags(arg)
        return 0
    if cmd == F_GETPIPE_SZ and isinstance(desc.ops, PipeEndOps):
        return desc.ops.pipe.capacity
    if cmd in (F_GETLK, F_SETLK, F_SETLKW):
        raise SyscallError(errno.ENOLCK, "record locks are not supported yet")
    raise SyscallError(errno.EINVAL)


@syscall("ioctl", "ixx")
def sys_ioctl(task: Task, fd: int, request: int, arg: int) -> int:
    desc = fd_of(task, fd)
    request &= 0xFFFFFFFF
    ops = desc.ops
    if request == FIONREAD:
        if isinstance(ops, PipeEndOps):
            n = len(ops.pipe)
        elif isinstance(ops, HostFileOps):
            n = ops.readable_bytes()
        elif desc.inode.is_regular():
            n = max(desc.inode.size - desc.offset, 0)
        else:
            raise SyscallError(errno.ENOTTY)
        task.mm.copy_out(arg, struct.pack("<i", n))
        return 0
    if isinstance(ops, HostFileOps):
        if request == TCGETS:
            task.mm.copy_out(arg, ops.termios())
            return 0
        if request in (TCSETS, TCSETSW, TCSETSF):
            ops.set_termios(request, task.mm.copy_in(arg, TERMIOS_SIZE))
            return 0
        if request == TIOCGWINSZ:
            task.mm.copy_out(arg, ops.winsize())
            return 0
        if request in (TIOCGPGRP, TIOCSPGRP, TIOCGSID):
            return _host_tty_job_control(task, ops, request, arg)
    return ops.ioctl(desc, request, arg)


def _host_tty_job_control(task: Task, ops: HostFileOps, request: int, arg: int) -> int:
    """The caller's terminal as the sandbox's controlling terminal (gVisor
    ``fsimpl/host/tty.go``): its foreground process group is kept in the
    sentry, never set on the host terminal; it starts as init's group and
    the session is init's. TIOCSPGRP: EPERM for a group outside the caller's
    session (Linux ``tiocspgrp``), EINVAL for a negative one; ENOTTY when the
    host fd is not a terminal."""
    if not ops.is_terminal():
        raise SyscallError(errno.ENOTTY)
    kernel = task.kernel
    init = kernel.init_group()
    key = os.fstat(ops.inode.host_fd).st_rdev
    if request == TIOCGSID:
        task.mm.copy_out(arg, struct.pack("<i", init.sid if init is not None else task.sid))
        return 0
    if request == TIOCGPGRP:
        fg = kernel.tty_foreground.get(key, init.pgid if init is not None else task.pgid)
        task.mm.copy_out(arg, struct.pack("<i", fg))
        return 0
    (pgid,) = struct.unpack("<i", task.mm.copy_in(arg, 4))
    if pgid < 0:
        raise SyscallError(errno.EINVAL)
    if init is not None and task.sid != init.sid:
        raise SyscallError(errno.ENOTTY)  # not the caller's controlling terminal
    if not any(t.tg.pgid == pgid and t.tg.sid == task.sid and t.tg.exit_status is None
               for t in kernel.tasks.values()):
        raise SyscallError(errno.EPERM)
    kernel.tty_foreground[key] = pgid
    return 0


# Pipes.


def _pipe(task: Task, addr: int, flags: int) -> int:
    from ..vfs.pipe import new_pipe

    if flags & ~(os.O_CLOEXEC | os.O_NONBLOCK | os.O_DIRECT):
        raise SyscallError(errno.EINVAL)
    creds = task.fs.creds
    reader, writer = new_pipe(task.kernel.pipe_mount, creds.euid, creds.egid, flags)
    cloexec = bool(flags & os.O_CLOEXEC)
    fds: list[int] = []
    try:
        for desc in (reader, writer):
            fds.append(task.fdtable.install(desc, cloexec=cloexec))
        task.mm.copy_out(addr, struct.pack("<ii", *fds))
    except SyscallError:
        for fd in fds:
            task.fdtable.close(fd)
        for desc in (reader, writer)[len(fds):]:
            desc.dec_ref()
        raise
    return 0


@syscall("pipe", "p")
def sys_pipe(task: Task, addr: int) -> int:
    return _pipe(task, addr, 0)


@syscall("pipe2", "px")
def sys_pipe2(task: Task, addr: int, flags: int) -> int:
    return _pipe(task, addr, flags)
