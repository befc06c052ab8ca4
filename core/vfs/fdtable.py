"""The FD table (Linux ``struct files_struct``; gVisor ``kernel.FDTable``).

Maps small integers to file descriptions with a close-on-exec flag each. New
descriptors take the lowest free number at or above a minimum; RLIMIT_NOFILE
bounds them (EMFILE).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

from ..errors import SyscallError
from .file import FileDescription


class FDTable:
    """fd -> (FileDescription, close-on-exec). The table holds one reference
    per slot: :meth:`install` takes over the caller's, :meth:`close` drops it."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._slots: dict[int, tuple[FileDescription, bool]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[tuple[int, FileDescription, bool]]:
        for fd in sorted(self._slots):
            desc, cloexec = self._slots[fd]
            yield fd, desc, cloexec

    def install(self, desc: FileDescription, *, min_fd: int = 0, cloexec: bool = False) -> int:
        """The lowest free fd >= ``min_fd`` now naming ``desc``; EMFILE past the limit."""
        fd = min_fd
        while fd in self._slots:
            fd += 1
        if fd >= self.limit:
            raise SyscallError(errno.EMFILE if min_fd < self.limit else errno.EINVAL)
        self._slots[fd] = (desc, cloexec)
        return fd

    def install_at(self, fd: int, desc: FileDescription, *, cloexec: bool = False) -> None:
        """Make ``fd`` name ``desc`` (dup2/dup3), closing what it named; EBADF
        when ``fd`` is out of range."""
        if not 0 <= fd < self.limit:
            raise SyscallError(errno.EBADF)
        old = self._slots.get(fd)
        self._slots[fd] = (desc, cloexec)
        if old is not None:
            old[0].dec_ref()

    def get(self, fd: int) -> FileDescription:
        """EBADF when ``fd`` is not open."""
        try:
            return self._slots[fd][0]
        except KeyError:
            raise SyscallError(errno.EBADF) from None

    def get_cloexec(self, fd: int) -> bool:
        self.get(fd)
        return self._slots[fd][1]

    def set_cloexec(self, fd: int, cloexec: bool) -> None:
        desc = self.get(fd)
        self._slots[fd] = (desc, cloexec)

    def close(self, fd: int) -> None:
        try:
            desc, _ = self._slots.pop(fd)
        except KeyError:
            raise SyscallError(errno.EBADF) from None
        desc.dec_ref()

    def fork(self) -> FDTable:
        """A copy sharing every description (fork without CLONE_FILES)."""
        child = FDTable(self.limit)
        for fd, (desc, cloexec) in self._slots.items():
            desc.inc_ref()
            child._slots[fd] = (desc, cloexec)
        return child

    def close_on_exec(self) -> None:
        for fd in [fd for fd, (_, cloexec) in self._slots.items() if cloexec]:
            self.close(fd)

    def close_all(self) -> None:
        for fd in list(self._slots):
            self.close(fd)
