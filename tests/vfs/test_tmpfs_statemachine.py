"""tmpfs through the VFS against the host kernel, driven by random sequences.

A hypothesis state machine applies the same operations (create, write at an
offset, append, read, truncate, mkdir, rmdir, unlink, rename and renameat2,
link, symlink) to a tmpfs through :class:`VirtualFilesystem` and to a
temporary folder on the host's own filesystem through ``os`` calls, as root
on both sides. Each operation must succeed on both or fail with the same
errno; after every step both trees must hold the same names, types, file
contents, symlink targets and link counts.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.mount import Dentry, Mount, MountNamespace
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.vfs import RENAME_EXCHANGE, RENAME_NOREPLACE, VirtualFilesystem

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="compares with the host kernel as root")

_libc = ctypes.CDLL(None, use_errno=True)
TMPFS_MAGIC = 0x01021994

# A small name space so that operations collide: files, folders and symlinks
# at up to three levels, with the same names at each; a trailing slash now
# and then.
PATHS = ["a", "b", "c", "a/b", "c/a", "c/c", "c/c/b"]
paths = st.sampled_from(PATHS)
slashed = st.sampled_from([*PATHS, *PATHS, *PATHS, *(p + "/" for p in PATHS)])

Outcome = tuple[str, Any]


def outcome(fn: Any, *args: Any) -> Outcome:
    """("ok", value) or ("err", errno name) for a call on either side."""
    try:
        return ("ok", fn(*args))
    except SyscallError as e:
        return ("err", errno.errorcode[e.errno])
    except OSError as e:
        return ("err", errno.errorcode[e.errno or 0])


def host_root() -> str:
    """A fresh folder on a disk filesystem (not tmpfs), so the host side is
    a different implementation from the one under test."""
    for base in (os.environ.get("PYRUNSC_HOST_TMP"), "/var/tmp", tempfile.gettempdir(), os.getcwd()):
        if base and os.path.isdir(base) and _fs_magic(base) != TMPFS_MAGIC:
            return tempfile.mkdtemp(prefix="pyrunsc-sm-", dir=base)
    pytest.skip("no non-tmpfs folder to compare with")


def _fs_magic(path: str) -> int:
    class StatFS(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 120)]

    buf = StatFS()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return -1
    return int(buf.f_type) & 0xFFFFFFFF


class Host:
    """The host side: ``os`` calls relative to a folder's fd."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        os.close(self.fd)
        shutil.rmtree(self.root, ignore_errors=True)

    def _open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode, dir_fd=self.fd)

    def create(self, path: str, flags: int) -> None:
        os.close(self._open(path, flags))

    def pwrite(self, path: str, flags: int, data: bytes, offset: int) -> int:
        fd = self._open(path, flags)
        try:
            return os.pwrite(fd, data, offset) if not flags & os.O_APPEND else os.write(fd, data)
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes:
        fd = self._open(path, os.O_RDONLY)
        try:
            out = b""
            while chunk := os.read(fd, 1 << 16):
                out += chunk
            return out
        finally:
            os.close(fd)

    def truncate(self, path: str, length: int) -> None:
        os.truncate(os.path.join(self.root, path), length)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755, dir_fd=self.fd)

    def rmdir(self, path: str) -> None:
        os.rmdir(path, dir_fd=self.fd)

    def unlink(self, path: str) -> None:
        os.unlink(path, dir_fd=self.fd)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path, dir_fd=self.fd)

    def link(self, old: str, new: str) -> None:
        os.link(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def rename(self, old: str, new: str, flags: int) -> None:
        if _libc.renameat2(self.fd, os.fsencode(old), self.fd, os.fsencode(new), flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def tree(self) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}

        def walk(rel: str) -> None:
            for entry in os.scandir(os.path.join(self.root, rel) if rel else self.root):
                path = f"{rel}/{entry.name}" if rel else entry.name
                s = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(s.st_mode):
                    out[path] = ("dir", s.st_nlink, stat.S_IMODE(s.st_mode))
                    walk(path)
                elif stat.S_ISLNK(s.st_mode):
                    out[path] = ("link", os.readlink(entry.path))
                else:
                    with open(entry.path, "rb") as f:
                        out[path] = ("file", s.st_nlink, s.st_size, f.read())

        walk("")
        return out


class Ours:
    """The tmpfs side: the same calls through the VFS."""

    def __init__(self, memfile: MemoryFile, filesystems: dict[str, Any]) -> None:
        self.vfs = VirtualFilesystem()
        mc = MountContext(self.vfs, memfile, filesystems=filesystems)
        sb = mc.new_superblock("tmpfs", "mode=755")
        ns = MountNamespace(Mount(sb, Dentry(sb.root()), MountFlags()))
        self.ctx = FSContext(ns, ns.root, ns.root, Credentials(), umask=0o022)

    def create(self, path: str, flags: int) -> None:
        self.vfs.open(self.ctx, self.ctx.cwd, path, flags, 0o644).dec_ref()

    def pwrite(self, path: str, flags: int, data: bytes, offset: int) -> int:
        fd = self.vfs.open(self.ctx, self.ctx.cwd, path, flags)
        try:
            return fd.pwrite(data, offset) if not flags & os.O_APPEND else fd.write(data)
        finally:
            fd.dec_ref()

    def read(self, path: str) -> bytes:
        fd = self.vfs.open(self.ctx, self.ctx.cwd, path, os.O_RDONLY)
        try:
            out = b""
            while chunk := fd.read(1 << 16):
                out += chunk
            return out
        finally:
            fd.dec_ref()

    def truncate(self, path: str, length: int) -> None:
        self.vfs.truncate(self.ctx, resolve(self.ctx, self.ctx.cwd, path), length)

    def mkdir(self, path: str) -> None:
        self.vfs.mkdir(self.ctx, self.ctx.cwd, path, 0o755)

    def rmdir(self, path: str) -> None:
        self.vfs.rmdir(self.ctx, self.ctx.cwd, path)

    def unlink(self, path: str) -> None:
        self.vfs.unlink(self.ctx, self.ctx.cwd, path)

    def symlink(self, target: str, path: str) -> None:
        self.vfs.symlink(self.ctx, target, self.ctx.cwd, path)

    def link(self, old: str, new: str) -> None:
        self.vfs.link(self.ctx, self.ctx.cwd, old, self.ctx.cwd, new)

    def rename(self, old: str, new: str, flags: int) -> None:
        self.vfs.rename(self.ctx, self.ctx.cwd, old, self.ctx.cwd, new, flags)

    def tree(self) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}

        def walk(rel: str) -> None:
            fd = self.vfs.open(self.ctx, self.ctx.cwd, rel or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                names = [e.name for e in fd.getdents() if e.name not in (".", "..")]
            finally:
                fd.dec_ref()
            for name in names:
                path = f"{rel}/{name}" if rel else name
                s = self.vfs.stat(self.ctx, self.ctx.cwd, path, follow=False)
                if stat.S_ISDIR(s.mode):
                    out[path] = ("dir", s.nlink, stat.S_IMODE(s.mode))
                    walk(path)
                elif stat.S_ISLNK(s.mode):
                    out[path] = ("link", self.vfs.readlink(self.ctx, self.ctx.cwd, path))
                else:
                    out[path] = ("file", s.nlink, s.size, self.read(path))

        walk("")
        return out


_FILESYSTEMS: dict[str, Any] = {}


def _filesystems() -> dict[str, Any]:
    if not _FILESYSTEMS:
        _FILESYSTEMS.update(Plugins().registry.filesystems)
    return _FILESYSTEMS


class TmpfsAgainstHost(RuleBasedStateMachine):
    #: Paths that were created at some point, so that later operations often
    #: find something there (they may be gone again: errors are compared too).
    made = Bundle("made")

    def __init__(self) -> None:
        super().__init__()
        old_umask = os.umask(0o022)
        self._old_umask = old_umask
        self.memfile = MemoryFile(size=1 << 26)
        self.ours = Ours(self.memfile, _filesystems())
        self.host = Host(host_root())

    def both(self, op: str, *args: Any) -> Outcome:
        ours = outcome(getattr(self.ours, op), *args)
        theirs = outcome(getattr(self.host, op), *args)
        assert ours == theirs, f"{op}{args}: tmpfs gave {ours}, the host gave {theirs}"
        return ours

    def made_if_ok(self, result: Outcome, path: str) -> Any:
        return multiple(path.rstrip("/")) if result[0] == "ok" else multiple()

    @rule(
        target=made,
        path=slashed,
        excl=st.booleans(),
        trunc=st.booleans(),
    )
    def create(self, path: str, excl: bool, trunc: bool) -> Any:
        flags = os.O_CREAT | os.O_WRONLY | (os.O_EXCL if excl else 0) | (os.O_TRUNC if trunc else 0)
        return self.made_if_ok(self.both("create", path, flags), path)

    @rule(
        path=st.one_of(made, paths),
        offset=st.sampled_from([0, 1, 100, 4095, 4096, 5000, 12288, 20000]),
        byte=st.integers(0, 255),
        length=st.sampled_from([0, 1, 10, 4096, 5000]),
        append=st.booleans(),
        create=st.booleans(),
    )
    def write(self, path: str, offset: int, byte: int, length: int, append: bool, create: bool) -> None:
        flags = os.O_WRONLY | (os.O_APPEND if append else 0) | (os.O_CREAT if create else 0)
        self.both("pwrite", path, flags, bytes([byte]) * length, offset)

    @rule(path=st.one_of(made, slashed))
    def read(self, path: str) -> None:
        self.both("read", path)

    @rule(path=st.one_of(made, paths), length=st.sampled_from([0, 1, 4096, 4097, 10000]))
    def truncate(self, path: str, length: int) -> None:
        self.both("truncate", path, length)

    @rule(target=made, path=slashed)
    def mkdir(self, path: str) -> Any:
        return self.made_if_ok(self.both("mkdir", path), path)

    @rule(path=st.one_of(made, slashed))
    def rmdir(self, path: str) -> None:
        self.both("rmdir", path)

    @rule(path=st.one_of(made, slashed))
    def unlink(self, path: str) -> None:
        self.both("unlink", path)

    # Targets stay inside the folder: ".." from its top would leave it on the host.
    @rule(target=made, dest=st.sampled_from([*PATHS, "nowhere", "a/b/", "c/"]), path=slashed)
    def symlink(self, dest: str, path: str) -> Any:
        return self.made_if_ok(self.both("symlink", dest, path), path)

    @rule(target=made, old=st.one_of(made, slashed), new=st.one_of(slashed, made))
    def link(self, old: str, new: str) -> Any:
        return self.made_if_ok(self.both("link", old, new), new)

    @rule(
        target=made,
        old=st.one_of(made, slashed),
        new=st.one_of(slashed, made),
        flags=st.sampled_from([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]),
    )
    def rename(self, old: str, new: str, flags: int) -> Any:
        return self.made_if_ok(self.both("rename", old, new, flags), new)

    @invariant()
    def same_trees(self) -> None:
        ours, theirs = self.ours.tree(), self.host.tree()
        assert ours == theirs

    def teardown(self) -> None:
        self.host.close()
        self.memfile.close()
        os.umask(self._old_umask)


#: SM_EXAMPLES=5000 for a longer hunt; the default keeps the run to seconds.
TmpfsAgainstHost.TestCase.settings = settings(
    max_examples=int(os.environ.get("SM_EXAMPLES", "200")), stateful_step_count=30, deadline=None
)
test_tmpfs_against_the_host = TmpfsAgainstHost.TestCase
