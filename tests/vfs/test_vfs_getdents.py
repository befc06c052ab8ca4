"""getdents64 through the VFS on tmpfs (Linux ``fs/readdir.c``, ``fs/libfs.c``).

Entries carry inode numbers, ``d_type`` and a cookie (the offset to resume
after them). Cookies stay valid while the directory changes: an entry that
exists for the whole listing is returned exactly once, and none is repeated.
"""

from __future__ import annotations

import errno
import functools
import os
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.vfs.file import O_PATH, SEEK_CUR, SEEK_SET, FileDescription
from pyrunsc.core.vfs.filesystem import FilesystemType, MountContext
from pyrunsc.core.vfs.inode import DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_REG, DT_SOCK, makedev
from pyrunsc.core.vfs.mount import MountNamespace
from pyrunsc.core.vfs.namei import FSContext
from pyrunsc.core.vfs.vfs import VirtualFilesystem

from .conftest import mount_at, new_mount, write_file


def fails(code: int, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Call ``fn`` and require a SyscallError with ``code``."""
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value.name}"


def opendir(vfs: VirtualFilesystem, ctx: FSContext, path: str) -> FileDescription:
    return vfs.open(ctx, ctx.root, path, os.O_RDONLY | os.O_DIRECTORY)


def read_all(fd: FileDescription, chunk: int | None = None) -> list[str]:
    names: list[str] = []
    while batch := fd.getdents(chunk):
        names += [e.name for e in batch]
    return names


def test_entries_types_and_inode_numbers(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    write_file(vfs, ctx, "/d/reg", b"")
    vfs.mkdir(ctx, ctx.root, "/d/dir", 0o755)
    vfs.symlink(ctx, "reg", ctx.root, "/d/lnk")
    vfs.mknod(ctx, ctx.root, "/d/fifo", 0o010644)
    vfs.mknod(ctx, ctx.root, "/d/chr", 0o020644, makedev(1, 3))
    vfs.mknod(ctx, ctx.root, "/d/sock", 0o140644)
    fd = opendir(vfs, ctx, "/d")
    entries = fd.getdents()
    fd.dec_ref()
    by_name = {e.name: e for e in entries}
    assert [e.name for e in entries[:2]] == [".", ".."]
    assert len(entries) == len(by_name) == 8
    assert {n: e.type for n, e in by_name.items()} == {
        ".": DT_DIR, "..": DT_DIR, "reg": DT_REG, "dir": DT_DIR, "lnk": DT_LNK,
        "fifo": DT_FIFO, "chr": DT_CHR, "sock": DT_SOCK,
    }
    for name, e in by_name.items():
        want = vfs.stat(ctx, ctx.root, f"/d/{name}", follow=False).ino
        assert e.ino == want, name
    cookies = [e.cookie for e in entries]
    assert cookies == sorted(cookies) and len(set(cookies)) == len(cookies)


def test_dotdot_of_a_mount_root_is_itself(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext) -> None:
    """Linux ``dcache_readdir``: ``..`` is the parent within the filesystem;
    a filesystem's root is its own parent."""
    vfs.mkdir(ctx, ctx.root, "/m", 0o755)
    mount_at(ctx, "/m", mctx.new_superblock("tmpfs", ""))
    for path in ("/", "/m"):
        fd = opendir(vfs, ctx, path)
        dot, dotdot = fd.getdents(2)
        fd.dec_ref()
        assert dot.ino == dotdot.ino == vfs.stat(ctx, ctx.root, path).ino


def test_an_empty_directory_has_dot_and_dotdot(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.root, "/e", 0o755)
    fd = opendir(vfs, ctx, "/e")
    assert read_all(fd) == [".", ".."]
    assert fd.getdents() == []  # end of directory, again and again
    fd.dec_ref()


def test_partial_reads_resume_at_the_cookie(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    names = [f"f{i:03}" for i in range(50)]
    for name in names:
        write_file(vfs, ctx, f"/d/{name}", b"")
    fd = opendir(vfs, ctx, "/d")
    first = fd.getdents(7)
    assert len(first) == 7
    assert fd.offset == first[-1].cookie
    rest = read_all(fd, 5)
    assert sorted([e.name for e in first] + rest) == sorted([".", "..", *names])
    # Seeking back to a cookie resumes right after that entry.
    fd.seek(first[3].cookie, SEEK_SET)
    assert fd.getdents(1)[0].name == first[4].name
    assert fd.seek(0, SEEK_CUR) == first[4].cookie
    fd.seek(0, SEEK_SET)
    assert read_all(fd)[:2] == [".", ".."]
    fd.dec_ref()


def test_getdents_errors(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    write_file(vfs, ctx, "/f", b"")
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    fd = vfs.open(ctx, ctx.root, "/f", os.O_RDONLY)
    fails(errno.ENOTDIR, fd.getdents)
    fd.dec_ref()
    fd = vfs.open(ctx, ctx.root, "/d", O_PATH)
    fails(errno.EBADF, fd.getdents)
    fd.dec_ref()


def test_a_removed_directory_lists_as_enoent(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    """Linux ``iterate_dir``: a dead directory (IS_DEADDIR) gives ENOENT, not
    even ``.`` and ``..``."""
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    fd = opendir(vfs, ctx, "/d")
    vfs.rmdir(ctx, ctx.root, "/d")
    fails(errno.ENOENT, fd.getdents)
    fd.dec_ref()


def _check_listing_while_changing(
    vfs: VirtualFilesystem, ctx: FSContext, rng: random.Random, initial: int, chunk: int, steps: int
) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    present = {f"i{i}" for i in range(initial)}
    for name in present:
        write_file(vfs, ctx, f"/d/{name}", b"")
    throughout = set(present)
    counter = 0
    fd = opendir(vfs, ctx, "/d")
    seen: list[str] = []
    for _ in range(steps):
        batch = fd.getdents(chunk)
        seen += [e.name for e in batch]
        for _ in range(rng.randrange(4)):
            if present and rng.random() < 0.5:
                victim = rng.choice(sorted(present))
                vfs.unlink(ctx, ctx.root, f"/d/{victim}")
                present.discard(victim)
                throughout.discard(victim)
            else:
                counter += 1
                name = f"n{counter}"
                write_file(vfs, ctx, f"/d/{name}", b"")
                present.add(name)
        if not batch:
            break
    seen += read_all(fd, chunk)
    fd.dec_ref()
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    missing = throughout - set(seen)
    assert not missing, f"entries present throughout were lost: {sorted(missing)}"
    assert set(seen) <= {".", ".."} | {f"i{i}" for i in range(initial)} | {f"n{i}" for i in range(1, counter + 1)}


def test_cookies_survive_creates_and_deletes(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    _check_listing_while_changing(vfs, ctx, random.Random(7), initial=40, chunk=3, steps=100)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    initial=st.integers(0, 30),
    chunk=st.integers(1, 8),
    steps=st.integers(1, 40),
)
def test_cookies_survive_random_changes(seed: int, initial: int, chunk: int, steps: int) -> None:
    # Hypothesis runs the body many times; function-scoped fixtures would be
    # shared between runs, so each run builds its own namespace.
    mf = MemoryFile(size=1 << 24)
    try:
        vfs = VirtualFilesystem()
        mc = MountContext(vfs, mf, filesystems=_filesystems())
        ns = MountNamespace(new_mount(mc.new_superblock("tmpfs", "mode=755")))
        ctx = FSContext(ns, ns.root, ns.root, Credentials())
        _check_listing_while_changing(vfs, ctx, random.Random(seed), initial, chunk, steps)
    finally:
        mf.close()


@functools.cache
def _filesystems() -> dict[str, type[FilesystemType]]:
    return dict(Plugins().registry.filesystems)


def test_rename_within_the_directory_does_not_lose_other_entries(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.root, "/d", 0o755)
    for i in range(10):
        write_file(vfs, ctx, f"/d/f{i}", b"")
    fd = opendir(vfs, ctx, "/d")
    seen = [e.name for e in fd.getdents(5)]
    vfs.rename(ctx, ctx.root, "/d/f0", ctx.root, "/d/renamed")  # f0 was already listed
    vfs.rename(ctx, ctx.root, "/d/f9", ctx.root, "/d/f9b")  # f9 was not
    seen += read_all(fd)
    fd.dec_ref()
    assert {f"f{i}" for i in range(1, 9)} <= set(seen)
    assert len(seen) == len(set(seen))
