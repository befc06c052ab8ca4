"""A task's address space: VMAs over the memory file (gVisor ``pkg/sentry/mm``,
Linux ``mm/mmap.c``, ``mm/mprotect.c``, ``mm/mremap.c``).

Every VMA's pages live in one contiguous :class:`Extent` of the sandbox's
memory file, which the platform maps at the VMA's addresses. Private memory
is owned by one address space (fork copies it); shared memory's extent is
referenced by every address space that maps it. Unmapping part of a private
VMA punches those pages out of the file at once; an extent returns to the
allocator when no VMA refers to it any more.

The sentry reads and writes application memory through the memory file
(:meth:`MemoryManager.copy_in` / :meth:`copy_out`), checking each address
against the VMAs: a bad pointer is EFAULT, never a crash.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from ..errors import SyscallError
from ..platform import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace
from .memfile import PAGE_SIZE, MemoryFile, page_round_down, page_round_up

log = logging.getLogger("pyrunsc.mm")

MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_DENYWRITE, MAP_EXECUTABLE, MAP_LOCKED = 0x100, 0x800, 0x1000, 0x2000
MAP_NORESERVE, MAP_POPULATE, MAP_NONBLOCK, MAP_STACK = 0x4000, 0x8000, 0x10000, 0x20000
MAP_FIXED_NOREPLACE, MAP_SHARED_VALIDATE = 0x100000, 0x03
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED = 0, 1, 2, 3, 4
MADV_FREE, MADV_REMOVE = 8, 9

#: The top of user space on x86-64 with 4-level paging (Linux ``TASK_SIZE``).
TASK_SIZE = 0x7FFFFFFFF000
#: Lowest address mmap hands out without a hint (Linux ``mmap_min_addr``).
MMAP_MIN_ADDR = 0x10000
#: Load address of a static-PIE (ET_DYN) program (Linux ``ELF_ET_DYN_BASE``).
ELF_ET_DYN_BASE = 0x555555554000
#: Memory-file room reserved for the heap, so brk grows in place.
BRK_RESERVE = 1 << 30


@dataclass(eq=False)
class Extent:
    """A range of the memory file: ``offset``, ``length`` bytes, ``refs`` VMAs."""

    offset: int
    length: int
    refs: int = 0


@dataclass(eq=False)
class VMA:
    """A mapping: [start, end), ``prot``, private or ``shared``, backed by
    ``extent`` from ``ext_off`` on. ``name`` is what /proc/PID/maps shows
    (a path, ``[heap]``, ``[stack]`` or ""); ``file_offset`` the file offset
    of ``start`` for file mappings."""

    start: int
    end: int
    prot: int
    shared: bool
    extent: Extent
    ext_off: int
    name: str = ""
    file_offset: int = 0
    dev: int = 0
    ino: int = 0
    growsdown: bool = False
    #: The most protection mprotect may grant (a read-only file opened for a
    #: shared mapping cannot become writable).
    max_prot: int = PROT_READ | PROT_WRITE | PROT_EXEC

    @property
    def length(self) -> int:
        return self.end - self.start

    def mem_offset(self, addr: int) -> int:
        """The memory-file offset of user address ``addr`` within this VMA."""
        return self.extent.offset + self.ext_off + (addr - self.start)


@dataclass
class Layout:
    """Where things go in a new address space."""

    mmap_base: int = 0x7F0000000000
    stack_top: int = 0x7FFE00000000
    reserved: list[tuple[int, int]] = field(default_factory=list)


class MemoryManager:
    """One address space: VMAs, the program break, and the platform mapping.

    ``aspace`` is the platform's view (None while only the sentry looks, e.g.
    in tests that need no platform). Errors are SyscallError as Linux answers.
    """

    def __init__(self, memfile: MemoryFile, aspace: AddressSpace | None = None, layout: Layout | None = None) -> None:
        self.memfile = memfile
        self.aspace = aspace
        self.layout = layout or Layout()
        self._starts: list[int] = []
        self._vmas: list[VMA] = []
        self.brk_start = 0
        self.brk = 0
        self._brk_extent: Extent | None = None
        # Filled in by the ELF loader; /proc/PID/{auxv,cmdline,environ}.
        self.arg_start = self.arg_end = self.env_start = self.env_end = 0
        self.auxv: list[tuple[int, int]] = []
        self.executable = ""
        #: Tasks sharing this address space (CLONE_VM); Linux ``mm_users``.
        self.users = 1

    # VMA bookkeeping.

    def attach(self, aspace: AddressSpace, reserved: list[tuple[int, int]]) -> None:
        """Map every VMA into ``aspace``, the platform's new view of this
        address space (after a restore, whose kernel holds none), where the
        new platform keeps ``reserved`` ranges for itself. ValueError naming
        a VMA that lies in one (the image came from another platform that
        let the program map there)."""
        for vma in self._vmas:
            for lo, hi in reserved:
                if vma.start < hi and lo < vma.end:
                    raise ValueError(f"the mapping {vma.start:#x}-{vma.end:#x} {vma.name} lies in "
                                     f"[{lo:#x}, {hi:#x}), which this platform reserves")
        self.layout.reserved = list(reserved)
        self.aspace = aspace
        for vma in self._vmas:
            self._platform_map(vma)

    def vmas(self) -> Iterator[VMA]:
        return iter(list(self._vmas))

    def find(self, addr: int) -> VMA | None:
        """The VMA containing ``addr``, or None."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self._vmas[i].end > addr:
            return self._vmas[i]
        return None

    def _insert(self, vma: VMA) -> None:
        i = bisect.bisect_left(self._starts, vma.start)
        self._starts.insert(i, vma.start)
        self._vmas.insert(i, vma)
        vma.extent.refs += 1

    def _remove(self, vma: VMA) -> None:
        i = self._vmas.index(vma)
        del self._starts[i], self._vmas[i]
        self._release_extent(vma.extent)

    def _release_extent(self, ext: Extent) -> None:
        ext.refs -= 1
        if ext.refs == 0:
            self.memfile.free(ext.offset, ext.length)

    def _overlapping(self, start: int, end: int) -> list[VMA]:
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(self._vmas) and self._vmas[i].start < end:
            if self._vmas[i].end > start:
                out.append(self._vmas[i])
            i += 1
        return out

    def _platform_map(self, vma: VMA) -> None:
        if self.aspace is not None:
            self.aspace.map(vma.start, vma.length, vma.mem_offset(vma.start), vma.prot)

    def _carve(self, start: int, end: int) -> list[VMA]:
        """Split VMAs at ``start`` and ``end``; the VMAs inside [start, end)."""
        for v in self._overlapping(start, end):
            if v.start < start:
                self._split(v, start)
        for v in self._overlapping(start, end):
            if v.end > end:
                self._split(v, end)
        return self._overlapping(start, end)

    def _split(self, v: VMA, at: int) -> None:
        right = replace(
            v, start=at, ext_off=v.ext_off + (at - v.start),
            file_offset=v.file_offset + (at - v.start) if v.name and not v.name.startswith("[") else v.file_offset,
        )
        v.end = at
        self._insert(right)

    def _merge_around(self, start: int, end: int) -> None:
        """Merge neighbours that are one mapping in all but name (Linux ``vma_merge``)."""
        i = max(bisect.bisect_right(self._starts, start) - 2, 0)
        while i + 1 < len(self._vmas) and self._vmas[i].start <= end:
            a, b = self._vmas[i], self._vmas[i + 1]
            if (
                a.end == b.start and a.extent is b.extent and a.ext_off + a.length == b.ext_off
                and a.prot == b.prot and a.shared == b.shared and a.name == b.name
                and a.growsdown == b.growsdown and a.max_prot == b.max_prot
            ):
                a.end = b.end
                del self._starts[i + 1], self._vmas[i + 1]
                self._release_extent(b.extent)
                continue
            i += 1

    # Finding room.

    def _free_range(self, start: int, end: int) -> bool:
        if start < MMAP_MIN_ADDR or end > TASK_SIZE or start >= end:
            return False
        if any(lo < end and start < hi for lo, hi in self.layout.reserved):
            return False
        return not self._overlapping(start, end)

    def find_unmapped(self, length: int, hint: int = 0) -> int:
        """An unmapped range of ``length`` bytes: at ``hint`` if free, else the
        highest one below ``mmap_base`` (Linux's top-down allocator); ENOMEM."""
        if hint and self._free_range(page_round_down(hint), page_round_down(hint) + length):
            return page_round_down(hint)
        top = self.layout.mmap_base
        for v in reversed(self._vmas):
            if v.start >= top:
                continue
            if v.end <= top - length and self._free_range(top - length, top):
                return top - length
            top = min(top, v.start)
        if self._free_range(top - length, top):
            return top - length
        # Fall back to a first-fit scan from the bottom.
        addr = MMAP_MIN_ADDR
        for v in self._vmas:
            if v.start - addr >= length and self._free_range(addr, addr + length):
                return addr
            addr = max(addr, v.end)
        raise SyscallError(errno.ENOMEM)

    # mmap(2) and friends.

    def map_anonymous(
        self, addr: int, length: int, prot: int, *, shared: bool = False, fixed: bool = False,
        name: str = "", growsdown: bool = False, noreplace: bool = False,
    ) -> int:
        """A zero-filled mapping; returns its address."""
        length = page_round_up(length)
        if length == 0:
            raise SyscallError(errno.EINVAL)
        addr = self._place(addr, length, fixed, noreplace)
        ext = Extent(self.memfile.allocate(length), length)
        vma = VMA(addr, addr + length, prot, shared, ext, 0, name=name, growsdown=growsdown)
        self._install(vma)
        return addr

    def map_data(
        self, addr: int, length: int, prot: int, data: bytes, *, fixed: bool = False, name: str = "",
        file_offset: int = 0, dev: int = 0, ino: int = 0, noreplace: bool = False,
    ) -> int:
        """A private mapping whose first bytes are ``data`` (a file's contents,
        copied: MAP_PRIVATE semantics) and the rest zeros."""
        length = page_round_up(length)
        if length == 0:
            raise SyscallError(errno.EINVAL)
        addr = self._place(addr, length, fixed, noreplace)
        ext = Extent(self.memfile.allocate(length), length)
        self.memfile.write(ext.offset, data[:length])
        vma = VMA(addr, addr + length, prot, False, ext, 0, name=name, file_offset=file_offset, dev=dev, ino=ino)
        self._install(vma)
        return addr

    def _place(self, addr: int, length: int, fixed: bool, noreplace: bool) -> int:
        if fixed or noreplace:
            if addr % PAGE_SIZE:
                raise SyscallError(errno.EINVAL)
            if addr < MMAP_MIN_ADDR and addr + length > 0 and not noreplace:
                raise SyscallError(errno.EPERM)
            if addr + length > TASK_SIZE:
                raise SyscallError(errno.ENOMEM)
            if noreplace and self._overlapping(addr, addr + length):
                raise SyscallError(errno.EEXIST)
            if any(lo < addr + length and addr < hi for lo, hi in self.layout.reserved):
                raise SyscallError(errno.ENOMEM)
            self.unmap(addr, length)
            return addr
        return self.find_unmapped(length, addr)

    def _install(self, vma: VMA) -> None:
        self._insert(vma)
        self._platform_map(vma)
        self._merge_around(vma.start, vma.end)

    def unmap(self, addr: int, length: int) -> None:
        """munmap(2): EINVAL for an unaligned address or zero length; unmapped
        parts of the range are fine."""
        if addr % PAGE_SIZE or length <= 0:
            raise SyscallError(errno.EINVAL)
        end = addr + page_round_up(length)
        if end > TASK_SIZE:
            raise SyscallError(errno.EINVAL)
        victims = self._carve(addr, end)
        for v in victims:
            if not v.shared and v.extent.refs > 1:
                # Other pieces of this private extent live on: give the pages back now.
                self.memfile.zero(v.mem_offset(v.start), v.length)
            self._remove(v)
        if victims and self.aspace is not None:
            self.aspace.unmap(addr, end - addr)

    def protect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2): ENOMEM if any page in the range is unmapped; EACCES
        beyond a VMA's max_prot; EINVAL for an unaligned address or bad bits."""
        if addr % PAGE_SIZE or prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | 0x01000000 | 0x02000000):
            raise SyscallError(errno.EINVAL)
        prot &= PROT_READ | PROT_WRITE | PROT_EXEC
        end = addr + page_round_up(length)
        if end == addr:
            return
        pos = addr
        for v in self._overlapping(addr, end):
            if v.start > pos:
                raise SyscallError(errno.ENOMEM)
            if prot & ~v.max_prot:
                raise SyscallError(errno.EACCES)
            pos = v.end
        if pos < end:
            raise SyscallError(errno.ENOMEM)
        for v in self._carve(addr, end):
            v.prot = prot
        if self.aspace is not None:
            self.aspace.protect(addr, end - addr, prot)
        self._merge_around(addr, end)

    def remap(self, old: int, old_len: int, new_len: int, flags: int, new_addr: int = 0) -> int:
        """mremap(2) of one VMA: shrink in place, grow in place when the room is
        free, else move with MREMAP_MAYMOVE (copying its pages); EFAULT if
        ``old`` is not mapped, ENOMEM when it cannot grow."""
        if old % PAGE_SIZE or flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
            raise SyscallError(errno.EINVAL)
        if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
            raise SyscallError(errno.EINVAL)
        old_len, new_len = page_round_up(old_len), page_round_up(new_len)
        if new_len == 0:
            raise SyscallError(errno.EINVAL)
        v = self.find(old)
        if v is None or (old_len and old + old_len > v.end):
            raise SyscallError(errno.EFAULT)
        if old_len == 0:
            raise SyscallError(errno.EINVAL if not v.shared else errno.ENOMEM)
        if not flags & MREMAP_FIXED:
            if new_len <= old_len:
                if new_len < old_len:
                    self.unmap(old + new_len, old_len - new_len)
                return old
            if old + old_len == v.end and self._free_range(v.end, old + new_len):
                if v.extent.length - (v.ext_off + v.length) >= new_len - old_len:
                    # The backing has room (the heap): just extend the VMA.
                    self._carve(old, old + old_len)
                    v = self.find(old)
                    assert v is not None
                    v.end = old + new_len
                    self._platform_map(v)
                    return old
                dest = old  # grow in place with new backing, as Linux keeps the address
            elif not flags & MREMAP_MAYMOVE:
                raise SyscallError(errno.ENOMEM)
            else:
                dest = self.find_unmapped(new_len)
        else:
            if new_addr % PAGE_SIZE:
                raise SyscallError(errno.EINVAL)
            if new_addr < old + old_len and old < new_addr + new_len:
                raise SyscallError(errno.EINVAL)
            self.unmap(new_addr, new_len)
            dest = new_addr
        data = self.memfile.read(v.mem_offset(old), min(old_len, new_len))
        ext = Extent(self.memfile.allocate(new_len), new_len)
        self.memfile.write(ext.offset, data)
        moved = VMA(dest, dest + new_len, v.prot, v.shared, ext, 0, name=v.name, file_offset=v.file_offset,
                    dev=v.dev, ino=v.ino, max_prot=v.max_prot)
        if not flags & MREMAP_DONTUNMAP or dest == old:
            self.unmap(old, old_len)
        self._install(moved)
        return dest

    def advise(self, addr: int, length: int, advice: int) -> None:
        """madvise(2): DONTNEED (and FREE, REMOVE) zero private pages; the
        hints are accepted; ENOMEM for unmapped pages; EINVAL for unknown advice."""
        if addr % PAGE_SIZE or length < 0:
            raise SyscallError(errno.EINVAL)
        end = addr + page_round_up(length)
        known = {0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 100, 101, 102}
        if advice not in known:
            raise SyscallError(errno.EINVAL)
        pos = addr
        for v in self._overlapping(addr, end):
            if v.start > pos:
                raise SyscallError(errno.ENOMEM)
            pos = v.end
        if pos < end:
            raise SyscallError(errno.ENOMEM)
        if advice in (MADV_DONTNEED, MADV_FREE, MADV_REMOVE):
            for v in self._overlapping(addr, end):
                lo, hi = max(v.start, addr), min(v.end, end)
                if not v.shared or advice == MADV_REMOVE:
                    self.memfile.zero(v.mem_offset(lo), hi - lo)

    # The program break.

    def set_brk_start(self, addr: int) -> None:
        """Where the heap begins (page-aligned, after the program's bss)."""
        self.brk_start = self.brk = page_round_up(addr)

    def set_brk(self, addr: int) -> int:
        """brk(2): the new break, or the old one when ``addr`` is out of range
        or memory is short (Linux returns the current break on failure)."""
        if addr < self.brk_start:
            return self.brk
        old_top, new_top = page_round_up(self.brk), page_round_up(addr)
        if new_top > old_top:
            if not self._free_range(old_top, new_top) or new_top - self.brk_start > BRK_RESERVE:
                return self.brk
            if self._brk_extent is None or self._brk_extent.refs == 0:
                self._brk_extent = Extent(self.memfile.allocate(BRK_RESERVE), BRK_RESERVE)
            heap = self.find(old_top - 1) if old_top > self.brk_start else None
            if heap is not None and heap.name == "[heap]":
                self._carve(heap.start, heap.end)
                heap.end = new_top
                self._platform_map(heap)
            else:
                ext = self._brk_extent
                vma = VMA(old_top, new_top, PROT_READ | PROT_WRITE, False, ext, old_top - self.brk_start,
                          name="[heap]")
                self._install(vma)
        elif new_top < old_top:
            self.unmap(new_top, old_top - new_top)
        self.brk = addr
        return addr

    # Access from the sentry.

    def _spans(self, addr: int, length: int, prot: int) -> Iterator[tuple[int, int]]:
        """(memory-file offset, length) pieces of [addr, addr+length); EFAULT
        unless every byte is mapped with ``prot``."""
        if length == 0:
            return
        if addr < 0 or addr + length > TASK_SIZE:
            raise SyscallError(errno.EFAULT)
        pos, end = addr, addr + length
        while pos < end:
            v = self.find(pos)
            if v is None or v.prot & prot != prot:
                raise SyscallError(errno.EFAULT)
            n = min(v.end, end) - pos
            yield v.mem_offset(pos), n
            pos += n

    def copy_in(self, addr: int, length: int) -> bytes:
        """``length`` bytes of user memory at ``addr``; EFAULT if unreadable."""
        spans = list(self._spans(addr, length, PROT_READ))
        view = self.memfile.view
        if len(spans) == 1:
            off, n = spans[0]
            return bytes(view[off : off + n])
        return b"".join(bytes(view[off : off + n]) for off, n in spans)

    def copy_out(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` to user memory at ``addr``; EFAULT if not writable."""
        spans = list(self._spans(addr, len(data), PROT_WRITE))
        view = self.memfile.view
        pos = 0
        for off, n in spans:
            view[off : off + n] = data[pos : pos + n]
            pos += n

    def copy_out_force(self, addr: int, data: bytes) -> None:
        """Write even to read-only mappings (the ELF loader, ptrace-like pokes)."""
        for off, n in self._spans(addr, len(data), 0):
            self.memfile.view[off : off + n] = data[:n]
            data = data[n:]

    def read_cstring(self, addr: int, limit: int) -> bytes:
        """A NUL-terminated string at ``addr`` without its NUL; ENAMETOOLONG
        when no NUL comes within ``limit`` bytes, EFAULT on a bad pointer."""
        out = bytearray()
        pos = addr
        while len(out) < limit:
            v = self.find(pos)
            if v is None or not v.prot & PROT_READ:
                raise SyscallError(errno.EFAULT)
            n = min(v.end - pos, PAGE_SIZE - pos % PAGE_SIZE, limit - len(out))
            off = v.mem_offset(pos)
            chunk = self.memfile.view[off : off + n]
            nul = bytes(chunk).find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return bytes(out)
            out += chunk
            pos += n
        raise SyscallError(errno.ENAMETOOLONG)

    # Fork and teardown.

    def fork(self, aspace: AddressSpace | None, copy: Callable[[int, int, int], None] | None = None) -> MemoryManager:
        """A copy for a child process: private memory copied, shared memory shared."""
        child = MemoryManager(self.memfile, aspace, self.layout)
        child.brk_start, child.brk = self.brk_start, self.brk
        child.arg_start, child.arg_end, child.env_start, child.env_end = (
            self.arg_start, self.arg_end, self.env_start, self.env_end,
        )
        child.auxv, child.executable = list(self.auxv), self.executable
        copies: dict[int, Extent] = {}
        for v in self._vmas:
            ext: Extent
            if v.shared:
                ext = v.extent
            elif id(v.extent) in copies:
                ext = copies[id(v.extent)]
            else:
                ext = Extent(self.memfile.allocate(v.extent.length), v.extent.length)
                self._copy_extent(v.extent, ext)
                copies[id(v.extent)] = ext
                if v.extent is self._brk_extent:
                    child._brk_extent = ext
            nv = replace(v, extent=ext)
            child._insert(nv)
            child._platform_map(nv)
        return child

    def futex_key(self, addr: int, private: bool) -> tuple[object, int]:
        """What identifies the futex word at ``addr`` (Linux ``get_futex_key``):
        this address space and ``addr`` for private futexes and private
        mappings; the memory-file offset for shared mappings, so that
        processes mapping the same memory meet. EFAULT if unmapped."""
        vma = self.find(addr)
        if vma is None:
            raise SyscallError(errno.EFAULT)
        if private or not vma.shared:
            return (self, addr)
        return (self.memfile, vma.mem_offset(addr))

    def _copy_extent(self, src: Extent, dst: Extent) -> None:
        """Copy only the data the source holds (holes stay holes)."""
        fd = self.memfile.fd
        pos, end = src.offset, src.offset + src.length
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            self.memfile.view[dst.offset + (data - src.offset) : dst.offset + (hole - src.offset)] = (
                self.memfile.view[data:hole]
            )
            pos = hole

    def acquire(self) -> MemoryManager:
        """One more task shares this address space (CLONE_VM)."""
        self.users += 1
        return self

    def release(self) -> None:
        """A task stops using this address space (exit or exec); the last one
        unmaps everything."""
        self.users -= 1
        if self.users > 0:
            return
        for v in list(self._vmas):
            self._remove(v)
        if self.aspace is not None:
            self.aspace.release()
            self.aspace = None

    def maps(self) -> list[str]:
        """Lines of /proc/PID/maps."""
        out = []
        for v in self._vmas:
            perms = (
                ("r" if v.prot & PROT_READ else "-") + ("w" if v.prot & PROT_WRITE else "-")
                + ("x" if v.prot & PROT_EXEC else "-") + ("s" if v.shared else "p")
            )
            line = f"{v.start:08x}-{v.end:08x} {perms} {v.file_offset:08x} 00:{v.dev:02x} {v.ino}"
            out.append(f"{line:<73}{v.name}".rstrip() if v.name else line)
        return out
