"""Memory system calls (Linux ``mm/mmap.c``, ``mm/mprotect.c``, ``mm/mremap.c``,
``mm/madvise.c``; gVisor ``syscalls/linux/sys_mmap.go``)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..mm.memfile import PAGE_SIZE, page_round_up
from ..mm.mm import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    TASK_SIZE,
)
from ..platform import PROT_EXEC, PROT_READ, PROT_WRITE
from . import syscall, to_signed

if TYPE_CHECKING:
    from ..kernel.task import Task

_KNOWN_FLAGS = 0x1FFFFF


@syscall("brk", "x")
def sys_brk(task: Task, addr: int) -> int:
    return task.mm.set_brk(addr)


@syscall("mmap", "xixxii")
def sys_mmap(task: Task, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    """mmap(2): anonymous (private or shared) and private file mappings; a
    shared writable file mapping is ENODEV until the page cache is shared."""
    if length == 0 or page_round_up(length) > TASK_SIZE or offset % PAGE_SIZE:
        raise SyscallError(errno.EINVAL)
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
        raise SyscallError(errno.EINVAL)
    kind = flags & 0x3
    if kind not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE):
        raise SyscallError(errno.EINVAL)
    if kind == MAP_SHARED_VALIDATE and flags & ~_KNOWN_FLAGS:
        raise SyscallError(errno.EOPNOTSUPP)
    fixed = bool(flags & MAP_FIXED)
    noreplace = bool(flags & MAP_FIXED_NOREPLACE)
    shared = kind != MAP_PRIVATE
    mm = task.mm
    if flags & MAP_ANONYMOUS:
        return mm.map_anonymous(addr, length, prot, shared=shared, fixed=fixed, noreplace=noreplace,
                                growsdown=bool(flags & MAP_GROWSDOWN))
    desc = task.fdtable.get(to_signed(fd) if fd >> 63 else fd & 0xFFFFFFFF)
    if not desc.readable:
        raise SyscallError(errno.EACCES)
    inode = desc.inode
    if inode.is_dir() or not (inode.is_regular() or inode.type == 0o020000):
        raise SyscallError(errno.ENODEV)
    if shared and prot & PROT_WRITE:
        if not desc.writable:
            raise SyscallError(errno.EACCES)
        raise SyscallError(errno.ENODEV, "shared writable file mappings are not supported yet")
    if desc.vd.mount.flags.no_exec and prot & PROT_EXEC:
        raise SyscallError(errno.EPERM)
    data = desc.ops.read(desc, page_round_up(length), offset) if inode.is_regular() else b""
    name = task.kernel.ns.path(desc.vd)
    vaddr = mm.map_data(addr, length, prot, data, fixed=fixed, noreplace=noreplace, name=name, file_offset=offset,
                        dev=inode.sb.dev, ino=inode.ino)
    if shared:
        v = mm.find(vaddr)
        if v is not None and not desc.writable:
            v.max_prot &= ~PROT_WRITE
    return vaddr


@syscall("munmap", "xi")
def sys_munmap(task: Task, addr: int, length: int) -> int:
    task.mm.unmap(addr, length)
    return 0


@syscall("mprotect", "xix")
def sys_mprotect(task: Task, addr: int, length: int, prot: int) -> int:
    task.mm.protect(addr, length, prot)
    return 0


@syscall("mremap", "xiixx")
def sys_mremap(task: Task, old: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    return task.mm.remap(old, old_len, new_len, flags, new_addr)


@syscall("madvise", "xii")
def sys_madvise(task: Task, addr: int, length: int, advice: int) -> int:
    task.mm.advise(addr, length, advice)
    return 0


@syscall("msync", "xix")
def sys_msync(task: Task, addr: int, length: int, flags: int) -> int:
    if addr % PAGE_SIZE or flags & ~0x7 or (flags & 1 and flags & 4):
        raise SyscallError(errno.EINVAL)
    end = addr + page_round_up(length)
    pos = addr
    while pos < end:
        v = task.mm.find(pos)
        if v is None:
            raise SyscallError(errno.ENOMEM)
        pos = v.end
    return 0


@syscall("mincore", "xip")
def sys_mincore(task: Task, addr: int, length: int, vec: int) -> int:
    if addr % PAGE_SIZE:
        raise SyscallError(errno.EINVAL)
    pages = page_round_up(length) // PAGE_SIZE
    for i in range(pages):
        if task.mm.find(addr + i * PAGE_SIZE) is None:
            raise SyscallError(errno.ENOMEM)
    task.mm.copy_out(vec, b"\x01" * pages)
    return 0


@syscall("mlock", "xi")
def sys_mlock(task: Task, addr: int, length: int) -> int:
    """Memory is never paged out of the memory file; locking only checks the range."""
    if task.mm.find(addr & ~(PAGE_SIZE - 1)) is None:
        raise SyscallError(errno.ENOMEM)
    return 0


@syscall("munlock", "xi")
def sys_munlock(task: Task, addr: int, length: int) -> int:
    return 0
