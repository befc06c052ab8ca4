"""The memory file: one memfd holding all application memory and tmpfs data.

gVisor ``pkg/sentry/pgalloc``: the sentry allocates page-aligned ranges of one
host file, maps them into application address spaces (the platform maps the
same file), and keeps tmpfs file contents there too, so that a checkpoint
saves memory by reading the file's data extents (``SEEK_DATA``/``SEEK_HOLE``)
rather than walking Python objects.

The file is sized large and sparse up front and mapped once into the sentry;
untouched ranges cost nothing. Freed ranges are punched out
(``MADV_REMOVE``), so they read back as zeros and return their memory.
"""

from __future__ import annotations

import bisect
import mmap
import os

PAGE_SIZE = 4096

#: The memory file's virtual size: a ceiling on what a sandbox can allocate.
#: Sparse: only pages written cost memory.
DEFAULT_SIZE = 1 << 40


def page_round_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def page_round_down(n: int) -> int:
    return n & ~(PAGE_SIZE - 1)


class MemoryFile:
    """Allocates page-aligned ranges of one memfd, mapped into the sentry.

    ``fd`` is inheritable (no ``MFD_CLOEXEC``) so that ptrace stubs can map it.
    Offsets and lengths are in bytes. ``allocate`` raises MemoryError when the
    file's virtual size is used up.
    """

    def __init__(self, name: str = "pyrunsc-memory", size: int = DEFAULT_SIZE) -> None:
        self.size = page_round_up(size)
        self.fd = os.memfd_create(name, 0)
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.map)
        # Free ranges as sorted, disjoint, non-adjacent (start, end) pairs.
        self._starts: list[int] = [0]
        self._ends: list[int] = [self.size]
        self.allocated = 0

    def allocate(self, length: int) -> int:
        """A zero-filled range of ``length`` bytes (rounded up to pages); first fit."""
        length = page_round_up(max(length, 1))
        for i, (start, end) in enumerate(zip(self._starts, self._ends, strict=True)):
            if end - start >= length:
                if end - start == length:
                    del self._starts[i], self._ends[i]
                else:
                    self._starts[i] = start + length
                self.allocated += length
                return start
        raise MemoryError(f"memory file exhausted: {length} bytes wanted, {self.size - self.allocated} free")

    def free(self, offset: int, length: int) -> None:
        """Return a range from :meth:`allocate`; its contents become zeros."""
        length = page_round_up(length)
        end = offset + length
        self.map.madvise(mmap.MADV_REMOVE, offset, length)
        self.allocated -= length
        i = bisect.bisect_left(self._starts, offset)
        merge_left = i > 0 and self._ends[i - 1] == offset
        merge_right = i < len(self._starts) and self._starts[i] == end
        if merge_left and merge_right:
            self._ends[i - 1] = self._ends[i]
            del self._starts[i], self._ends[i]
        elif merge_left:
            self._ends[i - 1] = end
        elif merge_right:
            self._starts[i] = offset
        else:
            self._starts.insert(i, offset)
            self._ends.insert(i, end)

    def zero(self, offset: int, length: int) -> None:
        """Zero a byte range; whole pages inside it are punched out."""
        first = page_round_up(offset)
        last = page_round_down(offset + length)
        if first < last:
            self.map.madvise(mmap.MADV_REMOVE, first, last - first)
            self.map[offset:first] = bytes(first - offset)
            self.map[last : offset + length] = bytes(offset + length - last)
        else:
            self.map[offset : offset + length] = bytes(length)

    def read(self, offset: int, length: int) -> bytes:
        return self.map[offset : offset + length]

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.map[offset : offset + len(data)] = data

    def close(self) -> None:
        self.view.release()
        self.map.close()
        os.close(self.fd)

    def allocator_state(self) -> dict[str, object]:
        """What :meth:`set_allocator_state` needs to hand out the same free
        ranges after a restore (gVisor ``pgalloc`` ``SaveTo``): sizes in
        bytes, free ranges as parallel start and end lists."""
        return {"size": self.size, "starts": list(self._starts), "ends": list(self._ends),
                "allocated": self.allocated}

    def set_allocator_state(self, state: dict[str, object]) -> None:
        """Take the allocation of a saved memory file whose pages were loaded
        into this one; ValueError when the sizes differ or the ranges are not
        sorted, disjoint and inside the file."""
        starts, ends, allocated = state["starts"], state["ends"], state["allocated"]
        if state["size"] != self.size:
            raise ValueError(f"the saved memory file has {state['size']} bytes, this one {self.size}")
        if not (isinstance(starts, list) and isinstance(ends, list) and isinstance(allocated, int)):
            raise ValueError("malformed allocator state")
        prev = -1
        for a, b in zip(starts, ends, strict=True):
            if not (prev < a < b <= self.size):
                raise ValueError(f"bad free range [{a}, {b}) in the allocator state")
            prev = b
        self._starts, self._ends, self.allocated = list(starts), list(ends), allocated

    def __getstate__(self) -> dict[str, object]:
        raise TypeError("a MemoryFile is saved by the checkpoint code, page by page, not pickled")
