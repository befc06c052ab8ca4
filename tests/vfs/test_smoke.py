"""A first pass through the VFS on tmpfs; the thorough tests live beside it."""

from __future__ import annotations

from pyrunsc.core.vfs.namei import FSContext
from pyrunsc.core.vfs.vfs import VirtualFilesystem

from .conftest import listdir, read_file, write_file


def test_create_write_read_list(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/a", 0o755)
    write_file(vfs, ctx, "/a/f", b"hello")
    assert read_file(vfs, ctx, "/a/f") == b"hello"
    assert listdir(vfs, ctx, "/a") == ["f"]
    assert vfs.stat(ctx, ctx.cwd, "/a/f").size == 5
