"""Publishing an image folder all at once, or not at all.

An image is written as files that have no name yet (``O_TMPFILE`` in the
target's parent folder): if the writer fails, is interrupted or is killed,
even with SIGKILL, the kernel frees them and nothing is left behind. Only
when every file is written and fsynced are they linked into a fresh
temporary sibling folder, which is fsynced and renamed onto the target with
``renameat2(RENAME_NOREPLACE)`` (or ``RENAME_EXCHANGE`` to replace an older
image when asked), and the parent folder is fsynced.

Where ``O_TMPFILE`` is not supported (9p, NFS, old overlayfs), the files are
written into the temporary sibling from the start; a failure removes it, and
one left by a killed writer (its pid in its name is gone) is removed by the
next write to the same target.

Temporary siblings are named ``.<name>.partial-<pid>-<random>``. Our own
code; runsc (``runsc/cmd/checkpoint.go``) writes in place.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from types import TracebackType

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_SYS_RENAMEAT2 = 316  # x86-64

_libc = ctypes.CDLL(None, use_errno=True)


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """rename(2) with flags; OSError as the call fails (EINVAL: the
    filesystem does not take the flags)."""
    func = getattr(_libc, "renameat2", None)
    args = (_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    ret = func(*args) if func is not None else _libc.syscall(_SYS_RENAMEAT2, *args)
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_name(target: Path) -> re.Pattern[str]:
    """The names of ``target``'s temporary siblings; group 1 is the writer's pid."""
    return re.compile(rf"\.{re.escape(target.name)}\.partial-(\d+)-[0-9a-f]+")


def sweep_partials(target: Path) -> list[Path]:
    """Remove temporary siblings of ``target`` whose writer is gone; the removed paths."""
    pattern = partial_name(target)
    removed: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


class StagedFolder:
    """A folder of new files that appears at ``target`` complete, or never.

    Use as a context manager: :meth:`create` each file (an fd open for
    reading and writing, mode 0600), write it, then :meth:`commit`. Leaving
    the block without a commit (an exception, KeyboardInterrupt) removes
    everything written. The folder is made mode 0700: an image holds the
    sandbox's memory.

    ``replace``: an existing target is swapped out, if it is an image folder
    (holds ``marker``) or an empty folder; otherwise an existing target is
    FileExistsError. Missing parent folders are made (as ``runsc checkpoint``
    makes the image path).

    :raises FileExistsError: the target exists and may not be replaced (also
        when it appears while writing).
    :raises OSError: the files cannot be created or written.
    """

    def __init__(self, target: Path, *, replace: bool = False, marker: str = "", use_tmpfile: bool = True) -> None:
        self.target = Path(os.path.abspath(target))
        self.replace = replace
        self.marker = marker
        self.use_tmpfile = use_tmpfile
        self.files: dict[str, int] = {}
        self.temp: Path | None = None
        self.committed = False

    def __enter__(self) -> StagedFolder:
        self.check_target()
        parent = self.target.parent
        if os.path.lexists(parent) and not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(parent))
        parent.mkdir(parents=True, exist_ok=True)
        sweep_partials(self.target)
        if self.use_tmpfile:
            try:
                os.close(self._tmpfile())
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self.use_tmpfile = False
        if not self.use_tmpfile:
            self.temp = self._make_temp()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
        if not self.committed and self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None

    def check_target(self) -> None:
        """FileExistsError unless the target is absent, or replaceable and ``replace``."""
        if not os.path.lexists(self.target):
            return
        if not self.replace:
            raise FileExistsError(errno.EEXIST, "already exists", os.fspath(self.target))
        if self.target.is_symlink() or not self.target.is_dir():
            raise FileExistsError(errno.EEXIST, "exists and is not a folder", os.fspath(self.target))
        names = {p.name for p in self.target.iterdir()}
        if names and (not self.marker or self.marker not in names):
            raise FileExistsError(errno.EEXIST, "exists and is not an image folder", os.fspath(self.target))

    def _tmpfile(self) -> int:
        return os.open(self.target.parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)

    def _make_temp(self) -> Path:
        while True:
            temp = self.target.parent / f".{self.target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                temp.mkdir(mode=0o700)
                return temp
            except FileExistsError:
                continue

    def create(self, name: str) -> int:
        """A new empty file that will be ``target/name``: an fd (owned here)."""
        if name in self.files or "/" in name:
            raise ValueError(f"bad or repeated file name {name!r}")
        if self.use_tmpfile:
            fd = self._tmpfile()
        else:
            assert self.temp is not None
            fd = os.open(self.temp / name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.files[name] = fd
        return fd

    def commit(self) -> None:
        """fsync every file, give them their names, and rename the folder onto the target."""
        for fd in self.files.values():
            os.fsync(fd)
        if self.use_tmpfile:
            self.temp = self._make_temp()
            dfd = os.open(self.temp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for name, fd in self.files.items():
                    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd, follow_symlinks=True)
                os.fsync(dfd)
            finally:
                os.close(dfd)
        else:
            assert self.temp is not None
            _fsync_dir(self.temp)
        self.close()
        assert self.temp is not None
        self._publish(self.temp)
        _fsync_dir(self.target.parent)
        self.committed = True

    def _publish(self, temp: Path) -> None:
        """Rename ``temp`` onto the target: never over anything, or swapping out
        a replaceable old image, which is then removed."""
        exists = os.path.lexists(self.target)
        if exists and not self.replace:
            raise FileExistsError(errno.EEXIST, "appeared while writing", os.fspath(self.target))
        if exists:
            self.check_target()  # it may have changed while writing
        try:
            _renameat2(temp, self.target, _RENAME_EXCHANGE if exists else _RENAME_NOREPLACE)
        except OSError as e:
            if e.errno == errno.EEXIST:
                raise FileExistsError(errno.EEXIST, "appeared while writing", os.fspath(self.target)) from None
            if e.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            self._publish_plain(temp, exists)
            return
        if exists:  # the old image is now at temp
            shutil.rmtree(temp, ignore_errors=True)
        self.temp = None

    def _publish_plain(self, temp: Path, exists: bool) -> None:
        """The same with plain renames, for filesystems without renameat2's flags."""
        old = None
        if exists:
            old = self._make_temp()
            os.rmdir(old)
            os.rename(self.target, old)
        elif os.path.lexists(self.target):
            raise FileExistsError(errno.EEXIST, "appeared while writing", os.fspath(self.target))
        os.rename(temp, self.target)
        self.temp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        for fd in self.files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.files = {}
