"""Path resolution through the VFS on tmpfs (Linux ``fs/namei.c``, path_resolution(7)).

Absolute, relative and dirfd-relative walks, ``.`` and ``..`` (across mounts and
at the process root), symlinks (intermediate, trailing, O_NOFOLLOW, the limit
of 40), trailing slashes, name and path length limits, search permission and
a cwd that was removed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.file import O_PATH
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.mount import VirtualDentry
from pyrunsc.core.vfs.namei import FSContext, resolve, resolve_parent
from pyrunsc.core.vfs.vfs import VirtualFilesystem

from .conftest import listdir, mount_at, read_file, user_ctx, write_file


def fails(code: int, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Call ``fn`` and require a SyscallError with ``code``."""
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value.name}"


def at(ctx: FSContext, path: str) -> VirtualDentry:
    return resolve(ctx, ctx.root, path)


def ino(vfs: VirtualFilesystem, ctx: FSContext, path: str, *, follow: bool = True) -> int:
    return vfs.stat(ctx, ctx.cwd, path, follow=follow).ino


def with_view(ctx: FSContext, root: str | None = None, cwd: str | None = None) -> FSContext:
    """The same task with another root and/or cwd (chroot(2), chdir(2))."""
    new_root = at(ctx, root) if root is not None else ctx.root
    new_cwd = at(ctx, cwd) if cwd is not None else new_root
    return FSContext(ctx.ns, new_root, new_cwd, ctx.creds, ctx.umask)


@pytest.fixture
def tree(vfs: VirtualFilesystem, ctx: FSContext) -> FSContext:
    """/a/b/f ("hello"), /a/g, /top (a file), /a/b/up -> .., /abs -> /a/b, /rel -> a/b."""
    vfs.mkdir(ctx, ctx.root, "/a", 0o755)
    vfs.mkdir(ctx, ctx.root, "/a/b", 0o755)
    write_file(vfs, ctx, "/a/b/f", b"hello")
    write_file(vfs, ctx, "/a/g", b"g")
    write_file(vfs, ctx, "/top", b"top")
    vfs.symlink(ctx, "..", ctx.root, "/a/b/up")
    vfs.symlink(ctx, "/a/b", ctx.root, "/abs")
    vfs.symlink(ctx, "a/b", ctx.root, "/rel")
    return ctx


# Absolute, relative and dirfd-relative.


def test_absolute_and_relative_paths_reach_the_same_file(vfs: VirtualFilesystem, tree: FSContext) -> None:
    want = ino(vfs, tree, "/a/b/f")
    assert ino(vfs, tree, "a/b/f") == want  # cwd is /
    in_a = with_view(tree, cwd="/a")
    assert ino(vfs, in_a, "b/f") == want
    assert ino(vfs, in_a, "./b/./f") == want
    assert ino(vfs, in_a, "/a/b/f") == want  # an absolute path ignores the cwd
    assert read_file(vfs, in_a, "b/f") == b"hello"


def test_dirfd_start_is_used_for_relative_paths_only(vfs: VirtualFilesystem, tree: FSContext) -> None:
    dirfd = vfs.open(tree, tree.cwd, "/a/b", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert vfs.stat(tree, dirfd.vd, "f").ino == ino(vfs, tree, "/a/b/f")
        assert vfs.stat(tree, dirfd.vd, "/a/g").ino == ino(vfs, tree, "/a/g")
        assert vfs.stat(tree, dirfd.vd, "..").ino == ino(vfs, tree, "/a")
        fails(errno.ENOENT, vfs.stat, tree, dirfd.vd, "g")
    finally:
        dirfd.dec_ref()


def test_relative_walk_from_a_file_start_is_enotdir(vfs: VirtualFilesystem, tree: FSContext) -> None:
    fd = vfs.open(tree, tree.cwd, "/top", os.O_RDONLY)
    try:
        fails(errno.ENOTDIR, vfs.stat, tree, fd.vd, "x")
        fails(errno.ENOTDIR, vfs.stat, tree, fd.vd, ".")
    finally:
        fd.dec_ref()


def test_stat_vd_of_an_open_description(vfs: VirtualFilesystem, tree: FSContext) -> None:
    """fstat and fstatat(AT_EMPTY_PATH) go through the description's vd, also
    for O_PATH descriptions and after the name is gone."""
    fd = vfs.open(tree, tree.cwd, "/a/b/f", os.O_RDONLY)
    path_fd = vfs.open(tree, tree.cwd, "/a/b/f", O_PATH)
    try:
        st = vfs.stat_vd(fd.vd)
        assert st.ino == ino(vfs, tree, "/a/b/f")
        assert st.size == 5
        assert st.mount_id == tree.root.mount.id
        assert vfs.stat_vd(path_fd.vd).ino == st.ino
        vfs.unlink(tree, tree.cwd, "/a/b/f")
        assert vfs.stat_vd(fd.vd).nlink == 0
        assert vfs.stat_vd(fd.vd).size == 5
    finally:
        fd.dec_ref()
        path_fd.dec_ref()


def test_empty_path_is_enoent(vfs: VirtualFilesystem, tree: FSContext) -> None:
    fails(errno.ENOENT, vfs.stat, tree, tree.cwd, "")
    fails(errno.ENOENT, vfs.mkdir, tree, tree.cwd, "", 0o755)
    fails(errno.ENOENT, vfs.open, tree, tree.cwd, "", os.O_RDONLY)


# Dot and dot-dot.


def test_dot_and_dotdot(vfs: VirtualFilesystem, tree: FSContext) -> None:
    assert ino(vfs, tree, "/a/./b/../b/f") == ino(vfs, tree, "/a/b/f")
    assert ino(vfs, tree, "/a/b/..") == ino(vfs, tree, "/a")
    assert ino(vfs, tree, "/a/b/../..") == ino(vfs, tree, "/")
    assert ino(vfs, tree, ".") == ino(vfs, tree, "/")
    assert ino(vfs, tree, "//a//b//") == ino(vfs, tree, "/a/b")


def test_dotdot_at_the_namespace_root_stays(vfs: VirtualFilesystem, tree: FSContext) -> None:
    root = ino(vfs, tree, "/")
    assert ino(vfs, tree, "/..") == root
    assert ino(vfs, tree, "/../../..") == root
    assert ino(vfs, tree, "../../a/../..") == root
    assert ino(vfs, tree, "/../a/g") == ino(vfs, tree, "/a/g")


def test_dotdot_at_a_mount_root_climbs_to_the_parent_mount(
    vfs: VirtualFilesystem, tree: FSContext, mctx: MountContext
) -> None:
    vfs.mkdir(tree, tree.root, "/a/mnt", 0o755)
    write_file(vfs, tree, "/a/mnt/hidden", b"under the mount")
    m = mount_at(tree, "/a/mnt", mctx.new_superblock("tmpfs", "mode=700"))
    write_file(vfs, tree, "/a/mnt/inside", b"x")
    # The mount hides what was under it and has its own device.
    assert listdir(vfs, tree, "/a/mnt") == ["inside"]
    assert vfs.stat(tree, tree.cwd, "/a/mnt").dev != vfs.stat(tree, tree.cwd, "/a").dev
    assert vfs.stat(tree, tree.cwd, "/a/mnt").mode & 0o777 == 0o700
    assert vfs.stat(tree, tree.cwd, "/a/mnt").mount_id == m.id
    # .. from the mount's root is the mount point's parent, in the parent mount.
    up = vfs.stat(tree, tree.cwd, "/a/mnt/..")
    assert (up.ino, up.dev) == (ino(vfs, tree, "/a"), vfs.stat(tree, tree.cwd, "/a").dev)
    assert read_file(vfs, tree, "/a/mnt/../g") == b"g"
    # The same from a start inside the mount.
    inside = with_view(tree, root="/", cwd="/a/mnt")
    assert ino(vfs, inside, "../b/f") == ino(vfs, tree, "/a/b/f")
    assert vfs.stat(tree, at(tree, "/a/mnt"), "..").ino == ino(vfs, tree, "/a")


def test_dotdot_through_nested_and_stacked_mounts(
    vfs: VirtualFilesystem, tree: FSContext, mctx: MountContext
) -> None:
    vfs.mkdir(tree, tree.root, "/m", 0o755)
    mount_at(tree, "/m", mctx.new_superblock("tmpfs", "mode=755"))
    vfs.mkdir(tree, tree.root, "/m/n", 0o755)
    mount_at(tree, "/m/n", mctx.new_superblock("tmpfs", "mode=755"))
    top = mount_at(tree, "/m/n", mctx.new_superblock("tmpfs", "mode=711"))  # stacked on the same point
    assert vfs.stat(tree, tree.cwd, "/m/n").mount_id == top.id
    assert vfs.stat(tree, tree.cwd, "/m/n").mode & 0o777 == 0o711
    assert ino(vfs, tree, "/m/n/../..") == ino(vfs, tree, "/")
    assert vfs.stat(tree, tree.cwd, "/m/n/..").dev == vfs.stat(tree, tree.cwd, "/m").dev


def test_dotdot_into_a_directory_that_was_mounted_on_enters_the_mount(
    vfs: VirtualFilesystem, tree: FSContext, mctx: MountContext
) -> None:
    """Linux ``handle_dots`` steps into mounts on where ``..`` leads: a cwd
    under a directory that got mounted on sees the mount at ``..``."""
    vfs.mkdir(tree, tree.root, "/x", 0o755)
    vfs.mkdir(tree, tree.root, "/x/y", 0o755)
    vfs.mkdir(tree, tree.root, "/x/y/z", 0o755)
    deep = with_view(tree, root="/", cwd="/x/y/z")
    mount_at(tree, "/x/y", mctx.new_superblock("tmpfs", "mode=755"))
    write_file(vfs, tree, "/x/y/marker", b"")
    assert listdir(vfs, deep, "..") == ["marker"]
    assert ino(vfs, deep, "../..") == ino(vfs, tree, "/x")


# The process root and the cwd.


def test_process_root_cannot_be_left(vfs: VirtualFilesystem, tree: FSContext) -> None:
    vfs.mkdir(tree, tree.root, "/a/b/etc", 0o755)
    write_file(vfs, tree, "/a/b/etc/passwd", b"jail")
    write_file(vfs, tree, "/etc_outside", b"outside")
    vfs.symlink(tree, "/etc/passwd", tree.root, "/a/b/abs")
    vfs.symlink(tree, "../../../../etc/passwd", tree.root, "/a/b/etc/climb")
    jail = with_view(tree, root="/a/b")
    jail_root = ino(vfs, tree, "/a/b")
    assert ino(vfs, jail, "/") == jail_root
    assert ino(vfs, jail, "/..") == jail_root
    assert ino(vfs, jail, "../../..") == jail_root
    assert read_file(vfs, jail, "/f") == b"hello"
    assert read_file(vfs, jail, "/etc/passwd") == b"jail"
    assert read_file(vfs, jail, "/abs") == b"jail"  # absolute symlink targets start at the process root
    assert read_file(vfs, jail, "/etc/climb") == b"jail"
    assert ino(vfs, jail, "up") == jail_root  # the symlink up -> .. stops at the root too
    fails(errno.ENOENT, vfs.stat, jail, jail.cwd, "/etc_outside")
    fails(errno.ENOENT, vfs.stat, jail, jail.cwd, "/a")


def test_cwd_inside_the_process_root(vfs: VirtualFilesystem, tree: FSContext) -> None:
    vfs.mkdir(tree, tree.root, "/a/b/sub", 0o755)
    task = with_view(tree, root="/a", cwd="/a/b/sub")
    assert ino(vfs, task, "..") == ino(vfs, tree, "/a/b")
    assert read_file(vfs, task, "../f") == b"hello"
    assert ino(vfs, task, "../../../../..") == ino(vfs, tree, "/a")
    assert read_file(vfs, task, "/g") == b"g"


def test_removed_cwd(vfs: VirtualFilesystem, tree: FSContext) -> None:
    """A cwd whose directory was removed still resolves ``.`` (nlink 0) and
    ``..``, but nothing can be created in it (Linux ``IS_DEADDIR``: ENOENT)."""
    vfs.mkdir(tree, tree.root, "/gone", 0o755)
    task = with_view(tree, root="/", cwd="/gone")
    vfs.rmdir(tree, tree.root, "/gone")
    assert vfs.stat(task, task.cwd, ".").nlink == 0
    assert ino(vfs, task, "..") == ino(vfs, tree, "/")
    fails(errno.ENOENT, vfs.stat, task, task.cwd, "x")
    fails(errno.ENOENT, vfs.mkdir, task, task.cwd, "x", 0o755)
    fails(errno.ENOENT, vfs.open, task, task.cwd, "x", os.O_CREAT | os.O_WRONLY, 0o644)
    fails(errno.ENOENT, vfs.mknod, task, task.cwd, "x", 0o10644)
    fails(errno.ENOENT, vfs.symlink, task, "t", task.cwd, "x")
    fails(errno.ENOENT, vfs.link, task, tree.root, "/top", task.cwd, "x")
    fails(errno.ENOENT, vfs.rename, task, tree.root, "/top", task.cwd, "x")
    assert vfs.stat(tree, tree.root, "/top").nlink == 1


# Symlinks.


def test_intermediate_and_trailing_symlinks(vfs: VirtualFilesystem, tree: FSContext) -> None:
    f = ino(vfs, tree, "/a/b/f")
    assert ino(vfs, tree, "/abs/f") == f
    assert ino(vfs, tree, "/rel/f") == f
    assert ino(vfs, tree, "/a/b/up/b/f") == f  # relative targets start at the link's directory
    assert ino(vfs, tree, "/abs") == ino(vfs, tree, "/a/b")
    link = vfs.stat(tree, tree.cwd, "/abs", follow=False)
    assert link.mode & 0o170000 == 0o120000
    assert link.size == len("/a/b")
    assert link.ino != ino(vfs, tree, "/a/b")
    assert vfs.readlink(tree, tree.cwd, "/abs") == "/a/b"
    # A symlink in the middle is followed even with follow=False.
    assert vfs.stat(tree, tree.cwd, "/abs/f", follow=False).ino == f


def test_open_nofollow(vfs: VirtualFilesystem, tree: FSContext) -> None:
    vfs.symlink(tree, "/a/b/f", tree.root, "/lf")
    fails(errno.ELOOP, vfs.open, tree, tree.cwd, "/lf", os.O_RDONLY | os.O_NOFOLLOW)
    fails(errno.ELOOP, vfs.open, tree, tree.cwd, "/lf", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    fails(errno.ENOTDIR, vfs.open, tree, tree.cwd, "/abs", os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
    # O_NOFOLLOW only concerns the last component.
    fd = vfs.open(tree, tree.cwd, "/abs/f", os.O_RDONLY | os.O_NOFOLLOW)
    assert fd.read(10) == b"hello"
    fd.dec_ref()
    # O_PATH | O_NOFOLLOW gives the symlink itself.
    fd = vfs.open(tree, tree.cwd, "/lf", O_PATH | os.O_NOFOLLOW)
    assert fd.inode.is_symlink()
    assert vfs.stat_vd(fd.vd).ino == ino(vfs, tree, "/lf", follow=False)
    fd.dec_ref()
    # A trailing slash makes the symlink followed anyway (Linux LOOKUP_FOLLOW).
    fd = vfs.open(tree, tree.cwd, "/abs/", os.O_RDONLY | os.O_NOFOLLOW)
    assert fd.inode.is_dir()
    fd.dec_ref()


def _chain(vfs: VirtualFilesystem, ctx: FSContext, target: str, n: int, prefix: str) -> str:
    """n symlinks, each to the previous: prefix{n-1} -> ... -> prefix0 -> target."""
    prev = target
    for i in range(n):
        vfs.symlink(ctx, prev, ctx.root, f"/{prefix}{i}")
        prev = f"{prefix}{i}"
    return prev


def test_forty_symlinks_resolve_and_forty_one_are_eloop(vfs: VirtualFilesystem, tree: FSContext) -> None:
    _chain(vfs, tree, "top", 41, "l")
    assert read_file(vfs, tree, "/l39") == b"top"  # 40 links
    fails(errno.ELOOP, vfs.stat, tree, tree.cwd, "/l40")  # 41 links
    fails(errno.ELOOP, vfs.open, tree, tree.cwd, "/l40", os.O_RDONLY)
    assert vfs.stat(tree, tree.cwd, "/l40", follow=False).mode & 0o170000 == 0o120000
    assert vfs.readlink(tree, tree.cwd, "/l40") == "l39"


def test_the_limit_counts_intermediate_links_too(vfs: VirtualFilesystem, tree: FSContext) -> None:
    _chain(vfs, tree, "a", 41, "d")
    assert ino(vfs, tree, "/d39/g") == ino(vfs, tree, "/a/g")
    assert ino(vfs, tree, "/d39/") == ino(vfs, tree, "/a")
    fails(errno.ELOOP, vfs.stat, tree, tree.cwd, "/d40/g")
    fails(errno.ELOOP, vfs.stat, tree, tree.cwd, "/d40/", follow=False)
    # 39 in the chain plus one more link on the way: 40 in all.
    vfs.symlink(tree, "/d38", tree.root, "/via")
    assert ino(vfs, tree, "/via/g") == ino(vfs, tree, "/a/g")
    vfs.symlink(tree, "/d39", tree.root, "/via2")
    fails(errno.ELOOP, vfs.stat, tree, tree.cwd, "/via2/g")


def test_symlink_loops(vfs: VirtualFilesystem, tree: FSContext) -> None:
    vfs.symlink(tree, "loop2", tree.root, "/loop1")
    vfs.symlink(tree, "loop1", tree.root, "/loop2")
    vfs.symlink(tree, "self/x", tree.root, "/self")
    fails(errno.ELOOP, vfs.stat, tree, tree.cwd, "/loop1")
    fails(errno.ELOOP, vfs.stat, tree, tree.cwd, "/loop1/x")
    fails(errno.ELOOP, vfs.stat, tree, tree.cwd, "/self")
    fails(errno.ELOOP, vfs.open, tree, tree.cwd, "/loop1", os.O_RDONLY | os.O_CREAT, 0o644)
    fails(errno.ELOOP, vfs.mkdir, tree, tree.cwd, "/loop1/x", 0o755)
    assert vfs.stat(tree, tree.cwd, "/loop1", follow=False).size == len("loop2")


def test_dangling_symlink(vfs: VirtualFilesystem, tree: FSContext) -> None:
    vfs.symlink(tree, "/nowhere", tree.root, "/dangling")
    fails(errno.ENOENT, vfs.stat, tree, tree.cwd, "/dangling")
    assert vfs.stat(tree, tree.cwd, "/dangling", follow=False).size == len("/nowhere")
    fails(errno.ENOENT, vfs.stat, tree, tree.cwd, "/dangling/x")


# Trailing slashes.


def test_trailing_slashes(vfs: VirtualFilesystem, tree: FSContext) -> None:
    fails(errno.ENOTDIR, vfs.stat, tree, tree.cwd, "/top/")
    fails(errno.ENOTDIR, vfs.stat, tree, tree.cwd, "/top/.")
    fails(errno.ENOTDIR, vfs.stat, tree, tree.cwd, "/top/..")
    fails(errno.ENOTDIR, vfs.stat, tree, tree.cwd, "/top/x")
    fails(errno.ENOTDIR, vfs.open, tree, tree.cwd, "/top/", os.O_RDONLY)
    fails(errno.ENOENT, vfs.stat, tree, tree.cwd, "/nothing/")
    assert ino(vfs, tree, "/a/") == ino(vfs, tree, "/a")
    assert ino(vfs, tree, "/a///") == ino(vfs, tree, "/a")
    # A symlink followed by a slash is followed, even by lstat.
    assert vfs.stat(tree, tree.cwd, "/abs/", follow=False).ino == ino(vfs, tree, "/a/b")
    vfs.symlink(tree, "/top", tree.root, "/ltop")
    fails(errno.ENOTDIR, vfs.stat, tree, tree.cwd, "/ltop/", follow=False)
    assert vfs.readlink(tree, tree.cwd, "/ltop") == "/top"
    fails(errno.EINVAL, vfs.readlink, tree, tree.cwd, "/abs/")


# Length limits.


def test_name_of_255_bytes_works_and_256_is_enametoolong(vfs: VirtualFilesystem, tree: FSContext) -> None:
    ok, too_long = "n" * 255, "n" * 256
    write_file(vfs, tree, "/" + ok, b"x")
    vfs.mkdir(tree, tree.root, "/a/" + ok, 0o755)
    assert read_file(vfs, tree, "/" + ok) == b"x"
    assert ok in listdir(vfs, tree, "/")
    for call in (
        lambda: vfs.stat(tree, tree.cwd, "/" + too_long),
        lambda: vfs.mkdir(tree, tree.cwd, "/" + too_long, 0o755),
        lambda: vfs.open(tree, tree.cwd, "/" + too_long, os.O_CREAT | os.O_WRONLY, 0o644),
        lambda: vfs.unlink(tree, tree.cwd, "/" + too_long),
        lambda: vfs.rmdir(tree, tree.cwd, "/" + too_long),
        lambda: vfs.symlink(tree, "x", tree.cwd, "/" + too_long),
        lambda: vfs.rename(tree, tree.cwd, "/top", tree.cwd, "/" + too_long),
        lambda: vfs.stat(tree, tree.cwd, "/" + too_long + "/x"),
    ):
        fails(errno.ENAMETOOLONG, call)
    # Multi-byte characters count as their UTF-8 bytes.
    fails(errno.ENAMETOOLONG, vfs.mkdir, tree, tree.cwd, "/" + "é" * 128, 0o755)
    vfs.mkdir(tree, tree.cwd, "/" + "é" * 127, 0o755)
    # A missing directory earlier in the path is reported first.
    fails(errno.ENOENT, vfs.stat, tree, tree.cwd, "/nothing/" + too_long)


def test_path_of_4095_bytes_works_and_4096_is_enametoolong(vfs: VirtualFilesystem, tree: FSContext) -> None:
    p4095 = "/" * (4095 - len("a/g")) + "a/g"
    assert len(p4095) == 4095
    assert read_file(vfs, tree, p4095) == b"g"
    p4096 = "/" + p4095
    assert len(p4096) == 4096
    fails(errno.ENAMETOOLONG, vfs.stat, tree, tree.cwd, p4096)
    fails(errno.ENAMETOOLONG, vfs.open, tree, tree.cwd, p4096, os.O_RDONLY)
    fails(errno.ENAMETOOLONG, vfs.mkdir, tree, tree.cwd, p4096[:-1] + "x/", 0o755)
    fails(errno.ENAMETOOLONG, vfs.unlink, tree, tree.cwd, p4096)
    fails(errno.ENAMETOOLONG, vfs.symlink, tree, "t", tree.cwd, p4096)


# Search permission.


def test_search_permission_on_every_directory_of_the_walk(vfs: VirtualFilesystem, tree: FSContext) -> None:
    vfs.mkdir(tree, tree.root, "/locked", 0o766)  # rw but no x for others
    write_file(vfs, tree, "/locked/f", b"secret", mode=0o666)
    user = user_ctx(tree)
    fails(errno.EACCES, vfs.stat, user, user.cwd, "/locked/f")
    fails(errno.EACCES, vfs.stat, user, user.cwd, "/locked/nothing")
    fails(errno.EACCES, vfs.stat, user, user.cwd, "/locked/.")
    # The last directory of a path that creates or removes needs search too
    # (Linux link_path_walk checks every directory before its last name).
    fails(errno.EACCES, vfs.open, user, user.cwd, "/locked/f", os.O_CREAT | os.O_RDWR, 0o644)
    fails(errno.EACCES, vfs.open, user, user.cwd, "/locked/new", os.O_CREAT | os.O_RDWR, 0o644)
    fails(errno.EACCES, vfs.unlink, user, user.cwd, "/locked/nothing")
    fails(errno.EACCES, vfs.mkdir, user, user.cwd, "/locked/f", 0o755)
    fails(errno.EACCES, vfs.readlink, user, user.cwd, "/locked/f")
    inside = FSContext(user.ns, user.root, at(tree, "/locked"), user.creds, user.umask)
    fails(errno.EACCES, vfs.stat, inside, inside.cwd, "f")
    fails(errno.EACCES, vfs.unlink, inside, inside.cwd, "f")
    # Root searches anything (CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH).
    vfs.mkdir(tree, tree.root, "/closed", 0o000)
    write_file(vfs, tree, "/closed/f", b"x")
    assert read_file(vfs, tree, "/closed/f") == b"x"


def test_resolve_parent_splits_the_last_name(tree: FSContext) -> None:
    p = resolve_parent(tree, tree.cwd, "/a/b/new/")
    assert (p.name, p.trailing_slash, p.parent.dentry.name) == ("new", True, "b")
    p = resolve_parent(tree, tree.cwd, "///")
    assert (p.name, p.parent) == ("", tree.root)
    p = resolve_parent(tree, tree.cwd, "/abs/x")  # the symlink before the last name is followed
    assert p.parent.dentry.name == "b"
    fails(errno.ENOTDIR, resolve_parent, tree, tree.cwd, "/top/x")


def test_flags_of_a_read_only_mount_do_not_change_the_walk(
    vfs: VirtualFilesystem, tree: FSContext, mctx: MountContext
) -> None:
    vfs.mkdir(tree, tree.root, "/ro", 0o755)
    sb = mctx.new_superblock("tmpfs", "mode=755")
    mount_at(tree, "/ro", sb, MountFlags(read_only=True))
    assert vfs.stat(tree, tree.cwd, "/ro/.").ino == vfs.stat(tree, tree.cwd, "/ro").ino
    assert listdir(vfs, tree, "/ro") == []
