"""The overlay filesystem (core/vfs/overlay.py) through the VFS: a tmpfs upper
over a tmpfs lower, mounted as a namespace root or at a path, checked against
Linux overlayfs semantics (copy-up, whiteouts, opaque directories, merged
readdir, EXDEV for lower directory renames, EROFS) and against plain tmpfs for
random operation sequences."""

from __future__ import annotations

import errno
import os
import stat as st
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import Inode, SetAttr, Superblock, makedev
from pyrunsc.core.vfs.mount import MountNamespace
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.overlay import (
    OPAQUE_XATTR,
    OverlayInode,
    OverlaySuperblock,
    overlay_superblock,
    stub_tree,
    tmpfs_overlay,
)
from pyrunsc.core.vfs.vfs import RENAME_EXCHANGE, Timespec, VirtualFilesystem
from pyrunsc.plugins.fs_tmpfs.tmpfs import TmpfsSuperblock

from .conftest import listdir, mount_at, new_mount, read_file, user_ctx, write_file

ROOT = Credentials()


def ns_ctx(sb: Superblock, flags: MountFlags | None = None) -> FSContext:
    """Root's view of a namespace whose root is ``sb``."""
    ns = MountNamespace(new_mount(sb, flags))
    return FSContext(ns, ns.root, ns.root, ROOT, umask=0o022)


def errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except SyscallError as e:
        return e.errno
    raise AssertionError("no error")


def snapshot(vfs: VirtualFilesystem, ctx: FSContext, path: str = "/") -> dict[str, object]:
    """Every name below ``path``: (type, perms, uid, gid, contents/target/rdev, sorted xattrs)."""
    out: dict[str, object] = {}
    for name in sorted(listdir(vfs, ctx, path)):
        p = path.rstrip("/") + "/" + name
        s = vfs.stat(ctx, ctx.cwd, p, follow=False)
        kind = st.S_IFMT(s.mode)
        inode = resolve(ctx, ctx.cwd, p, follow=False).inode
        xattrs = sorted(inode.listxattr())
        if kind == st.S_IFDIR:
            out[p] = ("dir", s.mode & 0o7777, s.uid, s.gid, xattrs)
            out.update(snapshot(vfs, ctx, p))
        elif kind == st.S_IFLNK:
            out[p] = ("lnk", vfs.readlink(ctx, ctx.cwd, p), s.uid, s.gid)
        elif kind == st.S_IFREG:
            out[p] = ("reg", s.mode & 0o7777, s.uid, s.gid, read_file(vfs, ctx, p), xattrs, s.mtime)
        else:
            out[p] = (kind, s.mode & 0o7777, s.rdev)
    return out


def populate(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    """The lower layer's files."""
    for d, mode in (("/etc", 0o755), ("/home", 0o755), ("/home/user", 0o700), ("/home/user/sub", 0o750),
                    ("/data", 0o777), ("/data/empty", 0o755), ("/bin", 0o755)):
        vfs.mkdir(ctx, ctx.cwd, d, mode)
    write_file(vfs, ctx, "/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    write_file(vfs, ctx, "/etc/hostname", b"lower-host\n")
    write_file(vfs, ctx, "/home/user/notes.txt", b"notes " * 1000, mode=0o600)
    write_file(vfs, ctx, "/home/user/sub/deep.txt", b"deep")
    write_file(vfs, ctx, "/bin/busybox", b"\x7fELF...", mode=0o755)
    vfs.symlink(ctx, "busybox", ctx.cwd, "/bin/sh")
    vfs.mknod(ctx, ctx.cwd, "/data/null", st.S_IFCHR | 0o666, makedev(1, 3))
    for p in ("/home/user", "/home/user/notes.txt", "/home/user/sub", "/home/user/sub/deep.txt"):
        vfs.chown(ctx, resolve(ctx, ctx.cwd, p), 1000, 1000)
    notes = resolve(ctx, ctx.cwd, "/home/user/notes.txt").inode
    notes.setxattr("user.tag", b"important")
    # Old times, so that a copy-up that loses them shows.
    for p in ("/etc/passwd", "/home/user/notes.txt", "/etc"):
        vfs.utimens(ctx, resolve(ctx, ctx.cwd, p), Timespec(1_000_000, 0), Timespec(2_000_000, 0))


@dataclass
class Layers:
    lower: Superblock
    upper: Superblock
    overlay: OverlaySuperblock
    octx: FSContext  # the overlay as the namespace root

    # The layers alone, each time through a new namespace: the overlay changes
    # them beneath any dentries cached by an earlier look.
    @property
    def lctx(self) -> FSContext:
        return ns_ctx(self.lower)

    @property
    def uctx(self) -> FSContext:
        return ns_ctx(self.upper)


@pytest.fixture
def layers(vfs: VirtualFilesystem, mctx: MountContext) -> Layers:
    lower = mctx.new_superblock("tmpfs", "mode=755")
    lctx = ns_ctx(lower)
    populate(vfs, lctx)
    upper = mctx.new_superblock("tmpfs", "mode=755")
    ov = overlay_superblock(upper, lower)
    return Layers(lower, upper, ov, ns_ctx(ov))


# Reading.


def test_reads_come_from_the_lower_layer(vfs: VirtualFilesystem, layers: Layers) -> None:
    o, low = layers.octx, layers.lctx
    assert read_file(vfs, o, "/etc/passwd") == b"root:x:0:0:root:/root:/bin/sh\n"
    assert sorted(listdir(vfs, o, "/")) == ["bin", "data", "etc", "home"]
    assert vfs.readlink(o, o.cwd, "/bin/sh") == "busybox"
    assert read_file(vfs, o, "/bin/sh") == b"\x7fELF..."
    s, ls = vfs.stat(o, o.cwd, "/home/user/notes.txt"), vfs.stat(low, low.cwd, "/home/user/notes.txt")
    assert (s.mode, s.uid, s.gid, s.size, s.mtime) == (ls.mode, ls.uid, ls.gid, ls.size, ls.mtime)
    assert resolve(o, o.cwd, "/home/user/notes.txt").inode.getxattr("user.tag") == b"important"
    assert listdir(vfs, layers.uctx, "/") == []  # reading created nothing


def test_the_same_snapshot_as_the_lower_before_any_write(vfs: VirtualFilesystem, layers: Layers) -> None:
    assert snapshot(vfs, layers.octx) == snapshot(vfs, layers.lctx)
    assert listdir(vfs, layers.uctx, "/") == []


def test_overlay_mounted_at_a_path(vfs: VirtualFilesystem, ctx: FSContext, layers: Layers) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/mnt", 0o755)
    mount_at(ctx, "/mnt", layers.overlay)
    write_file(vfs, ctx, "/mnt/etc/hostname", b"sandbox\n")
    assert read_file(vfs, ctx, "/mnt/etc/hostname") == b"sandbox\n"
    assert read_file(vfs, layers.lctx, "/etc/hostname") == b"lower-host\n"
    assert read_file(vfs, layers.uctx, "/etc/hostname") == b"sandbox\n"
    # .. climbs out of the overlay's root to the mount point's parent.
    assert sorted(listdir(vfs, ctx, "/mnt/etc/../..")) == ["mnt"]


# Copy-up.


def test_write_copies_up_and_leaves_the_lower_untouched(vfs: VirtualFilesystem, layers: Layers) -> None:
    before = snapshot(vfs, layers.lctx)
    o = layers.octx
    fd = vfs.open(o, o.cwd, "/home/user/notes.txt", os.O_WRONLY | os.O_APPEND)
    fd.write(b"more")
    fd.dec_ref()
    assert read_file(vfs, o, "/home/user/notes.txt") == b"notes " * 1000 + b"more"
    assert snapshot(vfs, layers.lctx) == before
    u = layers.uctx
    assert read_file(vfs, u, "/home/user/notes.txt") == b"notes " * 1000 + b"more"
    us = vfs.stat(u, u.cwd, "/home/user/notes.txt")
    assert (st.S_IMODE(us.mode), us.uid, us.gid) == (0o600, 1000, 1000)
    assert resolve(u, u.cwd, "/home/user/notes.txt").inode.getxattr("user.tag") == b"important"
    # The parents were made in the upper with the lower's attributes; only the path was copied.
    for d, mode, uid in (("/home", 0o755, 0), ("/home/user", 0o700, 1000)):
        ds = vfs.stat(u, u.cwd, d)
        assert (st.S_IMODE(ds.mode), ds.uid) == (mode, uid)
    assert listdir(vfs, u, "/") == ["home"]
    assert listdir(vfs, u, "/home/user") == ["notes.txt"]


def test_copy_up_keeps_times_and_mode(vfs: VirtualFilesystem, layers: Layers) -> None:
    o, u = layers.octx, layers.uctx
    vfs.chmod(o, resolve(o, o.cwd, "/etc/passwd"), 0o600)
    s = vfs.stat(o, o.cwd, "/etc/passwd")
    assert st.S_IMODE(s.mode) == 0o600
    assert (s.atime, s.mtime) == (1_000_000 * 10**9, 2_000_000 * 10**9)
    assert read_file(vfs, u, "/etc/passwd") == b"root:x:0:0:root:/root:/bin/sh\n"
    es = vfs.stat(u, u.cwd, "/etc")
    assert es.mtime == 2_000_000 * 10**9  # the parent's times were copied too
    assert st.S_IMODE(vfs.stat(layers.lctx, layers.lctx.cwd, "/etc/passwd").mode) == 0o644


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda vfs, c, vd: vfs.chown(c, vd, 5, 6), id="chown"),
        pytest.param(lambda vfs, c, vd: vfs.utimens(c, vd, Timespec(7, 0), Timespec(8, 0)), id="utimens"),
        pytest.param(lambda vfs, c, vd: vd.inode.setxattr("user.new", b"v"), id="setxattr"),
        pytest.param(lambda vfs, c, vd: vd.inode.removexattr("user.tag"), id="removexattr"),
        pytest.param(lambda vfs, c, vd: vfs.truncate(c, vd, 3), id="truncate"),
    ],
)
def test_attribute_changes_copy_up(
    vfs: VirtualFilesystem, layers: Layers, change: Callable[[VirtualFilesystem, FSContext, object], None]
) -> None:
    o = layers.octx
    before = snapshot(vfs, layers.lctx)
    vd = resolve(o, o.cwd, "/home/user/notes.txt")
    change(vfs, o, vd)
    after = snapshot(vfs, o)["/home/user/notes.txt"]
    assert after != before["/home/user/notes.txt"]
    assert snapshot(vfs, layers.lctx) == before
    assert "notes.txt" in listdir(vfs, layers.uctx, "/home/user")
    upper_view = snapshot(vfs, layers.uctx)["/home/user/notes.txt"]
    assert upper_view[:6] == after[:6]  # type: ignore[index]


def test_chown_of_a_lower_symlink_copies_the_link(vfs: VirtualFilesystem, layers: Layers) -> None:
    o, u = layers.octx, layers.uctx
    vfs.chown(o, resolve(o, o.cwd, "/bin/sh", follow=False), 1000, 1000)
    assert vfs.readlink(u, u.cwd, "/bin/sh") == "busybox"
    assert vfs.stat(u, u.cwd, "/bin/sh", follow=False).uid == 1000
    assert vfs.stat(o, o.cwd, "/bin/busybox").uid == 0
    assert "busybox" not in listdir(vfs, u, "/bin")


def test_chmod_of_a_lower_device_copies_the_node(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    vfs.chmod(o, resolve(o, o.cwd, "/data/null"), 0o600)
    u = layers.uctx
    s = vfs.stat(u, u.cwd, "/data/null")
    assert st.S_ISCHR(s.mode) and s.rdev == makedev(1, 3) and st.S_IMODE(s.mode) == 0o600
    assert st.S_IMODE(vfs.stat(layers.lctx, layers.lctx.cwd, "/data/null").mode) == 0o644  # umask 022


def test_truncating_open_skips_the_data_copy(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    write_file(vfs, o, "/home/user/notes.txt", b"short")
    assert read_file(vfs, o, "/home/user/notes.txt") == b"short"
    assert read_file(vfs, layers.lctx, "/home/user/notes.txt") == b"notes " * 1000


def test_a_reader_opened_before_copy_up_sees_the_new_data(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    reader = vfs.open(o, o.cwd, "/etc/hostname", os.O_RDONLY)
    assert reader.read(5) == b"lower"
    write_file(vfs, o, "/etc/hostname", b"upper-host\n")
    assert reader.read(100) == b"-host\n"  # offset 5 of the new contents
    assert reader.seek(0, os.SEEK_END) == len(b"upper-host\n")
    reader.dec_ref()


def test_sparse_file_copies_up_with_its_size(vfs: VirtualFilesystem, layers: Layers) -> None:
    low, o = layers.lctx, layers.octx
    fd = vfs.open(low, low.cwd, "/data/sparse", os.O_CREAT | os.O_WRONLY, 0o644)
    fd.pwrite(b"end", 3 * 4096 * 16)
    fd.dec_ref()
    vfs.chmod(o, resolve(o, o.cwd, "/data/sparse"), 0o600)
    data = read_file(vfs, layers.uctx, "/data/sparse")
    assert len(data) == 3 * 4096 * 16 + 3 and data.endswith(b"end") and not data[:-3].strip(b"\0")


# Deletion: whiteouts and opaque directories.


def test_unlink_leaves_a_whiteout(vfs: VirtualFilesystem, layers: Layers) -> None:
    o, u = layers.octx, layers.uctx
    vfs.unlink(o, o.cwd, "/etc/hostname")
    assert errno_of(lambda: vfs.stat(o, o.cwd, "/etc/hostname")) == errno.ENOENT
    assert "hostname" not in listdir(vfs, o, "/etc")
    ws = vfs.stat(u, u.cwd, "/etc/hostname")
    assert st.S_ISCHR(ws.mode) and ws.rdev == 0
    assert read_file(vfs, layers.lctx, "/etc/hostname") == b"lower-host\n"
    assert errno_of(lambda: vfs.unlink(o, o.cwd, "/etc/hostname")) == errno.ENOENT


def test_unlink_of_an_upper_only_file_leaves_no_whiteout(vfs: VirtualFilesystem, layers: Layers) -> None:
    o, u = layers.octx, layers.uctx
    write_file(vfs, o, "/etc/new", b"x")
    vfs.unlink(o, o.cwd, "/etc/new")
    assert listdir(vfs, u, "/etc") == []
    assert "new" not in listdir(vfs, o, "/etc")


def test_recreate_a_file_after_unlink(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    vfs.unlink(o, o.cwd, "/etc/hostname")
    write_file(vfs, o, "/etc/hostname", b"again\n")
    assert read_file(vfs, o, "/etc/hostname") == b"again\n"
    assert listdir(vfs, o, "/etc").count("hostname") == 1
    vfs.unlink(o, o.cwd, "/etc/hostname")  # and away again: a whiteout once more
    assert "hostname" not in listdir(vfs, o, "/etc")


def test_rmdir_whiteout_and_opaque_recreation(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    assert errno_of(lambda: vfs.rmdir(o, o.cwd, "/home/user/sub")) == errno.ENOTEMPTY
    vfs.unlink(o, o.cwd, "/home/user/sub/deep.txt")
    assert listdir(vfs, o, "/home/user/sub") == []
    vfs.rmdir(o, o.cwd, "/home/user/sub")  # its upper copy held a whiteout
    assert sorted(listdir(vfs, o, "/home/user")) == ["notes.txt"]
    u = layers.uctx
    assert st.S_ISCHR(vfs.stat(u, u.cwd, "/home/user/sub").mode)
    vfs.mkdir(o, o.cwd, "/home/user/sub", 0o700)
    assert listdir(vfs, o, "/home/user/sub") == []  # the lower's deep.txt does not show through
    u = layers.uctx
    upper_sub = resolve(u, u.cwd, "/home/user/sub").inode
    assert upper_sub.getxattr(OPAQUE_XATTR) == b"y"
    sub = resolve(o, o.cwd, "/home/user/sub").inode
    assert errno_of(lambda: sub.getxattr(OPAQUE_XATTR)) == errno.EOPNOTSUPP
    assert OPAQUE_XATTR not in sub.listxattr()
    assert errno_of(lambda: sub.setxattr("trusted.overlay.opaque", b"n")) == errno.EOPNOTSUPP
    write_file(vfs, o, "/home/user/sub/fresh", b"f")
    assert listdir(vfs, o, "/home/user/sub") == ["fresh"]
    assert read_file(vfs, layers.lctx, "/home/user/sub/deep.txt") == b"deep"


def test_rmdir_of_a_lower_only_empty_directory(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    vfs.rmdir(o, o.cwd, "/data/empty")
    assert "empty" not in listdir(vfs, o, "/data")
    assert listdir(vfs, layers.lctx, "/data/empty") == []
    write_file(vfs, o, "/data/empty", b"now a file")
    assert read_file(vfs, o, "/data/empty") == b"now a file"


def test_unlinked_open_file_is_released_on_close(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    write_file(vfs, o, "/etc/tmp", b"x" * 10000)
    upper = layers.upper
    assert isinstance(upper, TmpfsSuperblock)
    inodes, pages = upper.inodes, upper.used_pages
    fd = vfs.open(o, o.cwd, "/etc/tmp", os.O_RDWR)
    vfs.unlink(o, o.cwd, "/etc/tmp")
    assert fd.pread(4, 0) == b"xxxx"
    assert upper.inodes == inodes
    fd.dec_ref()
    assert (upper.inodes, upper.used_pages) == (inodes - 1, pages - 3)


def test_upper_inodes_are_not_leaked(vfs: VirtualFilesystem, layers: Layers) -> None:
    o, upper = layers.octx, layers.upper
    assert isinstance(upper, TmpfsSuperblock)
    base = upper.inodes
    vfs.unlink(o, o.cwd, "/etc/hostname")
    assert upper.inodes == base + 2  # /etc and the whiteout
    write_file(vfs, o, "/etc/hostname", b"x")  # the whiteout goes, the file comes
    vfs.unlink(o, o.cwd, "/etc/hostname")  # and back
    vfs.mkdir(o, o.cwd, "/etc/d", 0o755)
    vfs.rmdir(o, o.cwd, "/etc/d")
    assert upper.inodes == base + 2
    write_file(vfs, o, "/home/user/sub/new", b"n")
    vfs.unlink(o, o.cwd, "/home/user/sub/new")
    vfs.unlink(o, o.cwd, "/home/user/sub/deep.txt")
    vfs.rmdir(o, o.cwd, "/home/user/sub")
    assert upper.inodes == base + 5  # and /home, /home/user, the whiteout of sub
    fd = vfs.open(o, o.cwd, "/etc/passwd", os.O_RDONLY)
    vfs.rename(o, o.cwd, "/etc/passwd", o.cwd, "/etc/hostname")  # over a whiteout
    assert fd.read(4) == b"root"
    fd.dec_ref()
    assert upper.inodes == base + 6  # passwd's copy and its whiteout, less hostname's whiteout


# readdir.


def test_readdir_merges_layers(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    write_file(vfs, o, "/etc/motd", b"hi")
    vfs.mkdir(o, o.cwd, "/etc/ssl", 0o755)
    vfs.unlink(o, o.cwd, "/etc/passwd")
    write_file(vfs, o, "/etc/hostname", b"mine\n")  # in both layers now: listed once
    fd = vfs.open(o, o.cwd, "/etc", os.O_RDONLY | os.O_DIRECTORY)
    entries = fd.getdents()
    fd.dec_ref()
    names = [e.name for e in entries]
    assert names[:2] == [".", ".."]
    assert sorted(names[2:]) == ["hostname", "motd", "ssl"]
    cookies = [e.cookie for e in entries]
    assert cookies == sorted(cookies) and len(set(cookies)) == len(cookies) and min(cookies[2:]) > 2
    for e in entries[2:]:
        s = vfs.stat(o, o.cwd, "/etc/" + e.name)
        assert e.ino == s.ino
        assert e.type == (4 if e.name == "ssl" else 8)


def test_readdir_cookies_stay_valid_while_the_directory_changes(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    for i in range(10):
        write_file(vfs, layers.lctx, f"/data/l{i}", b"")
    for i in range(10):
        write_file(vfs, o, f"/data/u{i}", b"")
    fd = vfs.open(o, o.cwd, "/data", os.O_RDONLY | os.O_DIRECTORY)
    first = [e.name for e in fd.getdents(max_entries=8)]
    rest_before = {e.name for e in vfs.open(o, o.cwd, "/data", os.O_RDONLY).getdents()} - set(first)
    # Changes behind the reader: one not yet read goes, one already read goes, one is added.
    gone = sorted(n for n in rest_before if n[0] in "lu")[0]
    vfs.unlink(o, o.cwd, "/data/" + gone)
    vfs.unlink(o, o.cwd, "/data/" + [n for n in first if n[0] in "lu"][-1])
    write_file(vfs, o, "/data/added", b"")
    rest = [e.name for e in fd.getdents()]
    fd.dec_ref()
    assert not set(first) & set(rest)  # nothing twice
    assert set(rest) == (rest_before - {gone}) | {"added"}


def test_opaque_directory_from_the_upper_hides_the_lower(vfs: VirtualFilesystem, mctx: MountContext) -> None:
    lower = mctx.new_superblock("tmpfs", "mode=755")
    lctx = ns_ctx(lower)
    vfs.mkdir(lctx, lctx.cwd, "/d", 0o755)
    write_file(vfs, lctx, "/d/hidden", b"")
    upper = mctx.new_superblock("tmpfs", "mode=755")
    uctx = ns_ctx(upper)
    vfs.mkdir(uctx, uctx.cwd, "/d", 0o755)
    write_file(vfs, uctx, "/d/shown", b"")
    o = ns_ctx(overlay_superblock(upper, lower))
    assert sorted(listdir(vfs, o, "/d")) == ["hidden", "shown"]  # merged
    resolve(uctx, uctx.cwd, "/d").inode.setxattr(OPAQUE_XATTR, b"y")
    o2 = ns_ctx(overlay_superblock(upper, lower))
    assert listdir(vfs, o2, "/d") == ["shown"]
    assert errno_of(lambda: vfs.stat(o2, o2.cwd, "/d/hidden")) == errno.ENOENT


def test_merged_directory_reports_one_link(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    assert vfs.stat(o, o.cwd, "/etc").nlink == 2  # lower only
    write_file(vfs, o, "/etc/x", b"")
    assert vfs.stat(o, o.cwd, "/etc").nlink == 1  # merged (Linux ovl_getattr)


# Links and renames.


def test_hard_link_of_a_lower_file(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    vfs.link(o, o.cwd, "/etc/passwd", o.cwd, "/etc/passwd.bak")
    a, b = vfs.stat(o, o.cwd, "/etc/passwd"), vfs.stat(o, o.cwd, "/etc/passwd.bak")
    assert a.ino == b.ino and a.nlink == b.nlink == 2
    write_file(vfs, o, "/etc/passwd.bak", b"changed\n")
    assert read_file(vfs, o, "/etc/passwd") == b"changed\n"
    assert read_file(vfs, layers.lctx, "/etc/passwd") == b"root:x:0:0:root:/root:/bin/sh\n"
    assert "passwd.bak" not in listdir(vfs, layers.lctx, "/etc")
    vfs.unlink(o, o.cwd, "/etc/passwd")
    assert vfs.stat(o, o.cwd, "/etc/passwd.bak").nlink == 1
    assert errno_of(lambda: vfs.stat(o, o.cwd, "/etc/passwd")) == errno.ENOENT


def test_hard_links_within_the_lower_stay_one_file(vfs: VirtualFilesystem, layers: Layers) -> None:
    low, o = layers.lctx, layers.octx
    vfs.link(low, low.cwd, "/etc/passwd", low.cwd, "/bin/passwd-link")
    assert vfs.stat(o, o.cwd, "/etc/passwd").ino == vfs.stat(o, o.cwd, "/bin/passwd-link").ino
    write_file(vfs, o, "/bin/passwd-link", b"via link\n")
    assert read_file(vfs, o, "/etc/passwd") == b"via link\n"
    vfs.rename(o, o.cwd, "/etc/passwd", o.cwd, "/etc/passwd2")  # links the copy in /etc first
    assert read_file(vfs, o, "/etc/passwd2") == b"via link\n"
    assert vfs.stat(o, o.cwd, "/etc/passwd2").ino == vfs.stat(o, o.cwd, "/bin/passwd-link").ino


def test_rename_a_lower_file(vfs: VirtualFilesystem, layers: Layers) -> None:
    o, u = layers.octx, layers.uctx
    ino = vfs.stat(o, o.cwd, "/etc/hostname").ino
    vfs.rename(o, o.cwd, "/etc/hostname", o.cwd, "/home/hostname.old")
    assert read_file(vfs, o, "/home/hostname.old") == b"lower-host\n"
    assert vfs.stat(o, o.cwd, "/home/hostname.old").ino == ino
    assert "hostname" not in listdir(vfs, o, "/etc")
    assert st.S_ISCHR(vfs.stat(u, u.cwd, "/etc/hostname").mode)  # whiteout
    assert read_file(vfs, layers.lctx, "/etc/hostname") == b"lower-host\n"


def test_rename_over_a_lower_file(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    write_file(vfs, o, "/etc/passwd.new", b"new\n")
    vfs.rename(o, o.cwd, "/etc/passwd.new", o.cwd, "/etc/passwd")
    assert read_file(vfs, o, "/etc/passwd") == b"new\n"
    assert sorted(listdir(vfs, o, "/etc")) == ["hostname", "passwd"]
    vfs.rename(o, o.cwd, "/etc/hostname", o.cwd, "/etc/passwd")  # lower over (now) upper
    assert read_file(vfs, o, "/etc/passwd") == b"lower-host\n"
    assert listdir(vfs, o, "/etc") == ["passwd"]


def test_rename_directories(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    # A directory with a lower layer: EXDEV, as Linux overlayfs without redirect_dir.
    assert errno_of(lambda: vfs.rename(o, o.cwd, "/home/user", o.cwd, "/home/other")) == errno.EXDEV
    write_file(vfs, o, "/home/user/x", b"")  # merged now: still EXDEV
    assert errno_of(lambda: vfs.rename(o, o.cwd, "/home/user", o.cwd, "/home/other")) == errno.EXDEV
    # An upper-only directory moves, with its contents.
    vfs.mkdir(o, o.cwd, "/work", 0o755)
    write_file(vfs, o, "/work/f", b"w")
    vfs.rename(o, o.cwd, "/work", o.cwd, "/etc/work")
    assert read_file(vfs, o, "/etc/work/f") == b"w"
    assert "work" not in listdir(vfs, o, "/")
    # Over an empty lower directory: the moved directory becomes opaque.
    write_file(vfs, layers.lctx, "/data/empty/.keep", b"")  # hidden below, once replaced
    vfs.unlink(o, o.cwd, "/data/empty/.keep")
    vfs.rename(o, o.cwd, "/etc/work", o.cwd, "/data/empty")
    assert listdir(vfs, o, "/data/empty") == ["f"]
    assert listdir(vfs, layers.lctx, "/data/empty") == [".keep"]


def test_rename_exchange_of_files(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    vfs.rename(o, o.cwd, "/etc/passwd", o.cwd, "/etc/hostname", RENAME_EXCHANGE)
    assert read_file(vfs, o, "/etc/passwd") == b"lower-host\n"
    assert read_file(vfs, o, "/etc/hostname") == b"root:x:0:0:root:/root:/bin/sh\n"


def test_stat_dev_and_ino(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    before = vfs.stat(o, o.cwd, "/home/user/notes.txt")
    assert before.dev == layers.overlay.dev != layers.lower.dev
    write_file(vfs, o, "/home/user/notes.txt", b"x")
    after = vfs.stat(o, o.cwd, "/home/user/notes.txt")
    assert (after.dev, after.ino) == (before.dev, before.ino)  # stable across copy-up
    inos = {vfs.stat(o, o.cwd, p).ino for p in ("/", "/etc", "/etc/passwd", "/home", "/home/user/notes.txt")}
    assert len(inos) == 5
    assert vfs.stat(o, o.cwd, "/etc").ino == vfs.stat(o, o.cwd, "/etc/").ino


def test_tmpfile_and_fifo_and_whiteout_mknod(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    fd = vfs.open(o, o.cwd, "/etc", os.O_TMPFILE | os.O_RDWR, 0o600)
    fd.write(b"anon")
    assert fd.pread(4, 0) == b"anon"
    fd.dec_ref()
    vfs.mknod(o, o.cwd, "/etc/fifo", st.S_IFIFO | 0o644)
    assert st.S_ISFIFO(vfs.stat(o, o.cwd, "/etc/fifo").mode)
    assert errno_of(lambda: vfs.mknod(o, o.cwd, "/etc/wh", st.S_IFCHR | 0o644, 0)) == errno.EPERM


def test_permissions_apply_to_the_merged_view(vfs: VirtualFilesystem, layers: Layers) -> None:
    o = layers.octx
    user = user_ctx(o, 1000, 1000)
    other = user_ctx(o, 2000, 2000)
    assert read_file(vfs, user, "/home/user/notes.txt").startswith(b"notes")
    assert errno_of(lambda: read_file(vfs, other, "/home/user/notes.txt")) == errno.EACCES
    assert errno_of(lambda: write_file(vfs, other, "/etc/x", b"")) == errno.EACCES
    write_file(vfs, user, "/home/user/mine", b"m")
    assert vfs.stat(layers.uctx, layers.uctx.cwd, "/home/user/mine").uid == 1000


# Read-only.


@pytest.mark.parametrize("how", ["upper-superblock", "overlay-option", "mount-flag"])
def test_read_only_upper_refuses_writes(vfs: VirtualFilesystem, mctx: MountContext, how: str) -> None:
    lower = mctx.new_superblock("tmpfs", "mode=755")
    lctx = ns_ctx(lower)
    populate(vfs, lctx)
    upper = mctx.new_superblock("tmpfs", "mode=755")
    flags = None
    if how == "upper-superblock":
        upper.read_only = True
        ov = overlay_superblock(upper, lower)
    elif how == "overlay-option":
        ov = overlay_superblock(upper, lower, read_only=True)
    else:
        ov = overlay_superblock(upper, lower)
        flags = MountFlags(read_only=True)
    o = ns_ctx(ov, flags)
    assert read_file(vfs, o, "/etc/passwd").startswith(b"root")
    assert sorted(listdir(vfs, o, "/home/user")) == ["notes.txt", "sub"]
    refused: list[Callable[[], object]] = [
        lambda: vfs.open(o, o.cwd, "/etc/passwd", os.O_WRONLY),
        lambda: vfs.open(o, o.cwd, "/etc/new", os.O_CREAT | os.O_WRONLY, 0o644),
        lambda: vfs.unlink(o, o.cwd, "/etc/hostname"),
        lambda: vfs.rmdir(o, o.cwd, "/data/empty"),
        lambda: vfs.mkdir(o, o.cwd, "/data/new", 0o755),
        lambda: vfs.chmod(o, resolve(o, o.cwd, "/etc/passwd"), 0o600),
        lambda: vfs.truncate(o, resolve(o, o.cwd, "/etc/passwd"), 0),
        lambda: vfs.rename(o, o.cwd, "/etc/passwd", o.cwd, "/etc/p"),
        lambda: vfs.link(o, o.cwd, "/etc/passwd", o.cwd, "/etc/p"),
    ]
    for call in refused:
        assert errno_of(call) == errno.EROFS
    if how != "mount-flag":  # the overlay itself refuses, whatever the VFS checked
        notes = resolve(o, o.cwd, "/home/user/notes.txt").inode
        assert errno_of(lambda: notes.setxattr("user.x", b"")) == errno.EROFS
        assert errno_of(lambda: notes.setattr(SetAttr(mode=0o600))) == errno.EROFS
    assert listdir(vfs, ns_ctx(upper), "/") == []


# The seed's submount stubs: the real mount as the upper over a stub tree.


def host_like(vfs: VirtualFilesystem, mctx: MountContext) -> tuple[Superblock, FSContext]:
    """A tmpfs standing for a host folder served to the sandbox."""
    sb = mctx.new_superblock("tmpfs", "mode=755")
    c = ns_ctx(sb)
    vfs.mkdir(c, c.cwd, "/etc", 0o755)
    write_file(vfs, c, "/etc/hostname", b"host\n")
    vfs.mkdir(c, c.cwd, "/srv", 0o700)
    return sb, c


def test_stub_tree(vfs: VirtualFilesystem, mctx: MountContext) -> None:
    sb = stub_tree(mctx, ["proc", "mnt/data/deep", "/mnt/other", "etc/hostname"])
    c = ns_ctx(sb)
    assert sorted(listdir(vfs, c, "/")) == ["etc", "mnt", "proc"]
    assert sorted(listdir(vfs, c, "/mnt")) == ["data", "other"]
    assert st.S_IMODE(vfs.stat(c, c.cwd, "/mnt/data/deep").mode) == 0o755
    assert errno_of(lambda: stub_tree(mctx, ["a/../../b"])) == errno.EINVAL


@pytest.mark.parametrize("read_only", ["mount-flag", "upper-superblock"])
def test_stub_overlay_on_a_read_only_mount_hosts_submounts(
    vfs: VirtualFilesystem, mctx: MountContext, read_only: str
) -> None:
    host, hctx = host_like(vfs, mctx)
    before = snapshot(vfs, hctx)
    flags = MountFlags(read_only=True) if read_only == "mount-flag" else None
    if read_only == "upper-superblock":
        host.read_only = True
    ov = overlay_superblock(host, stub_tree(mctx, ["proc", "mnt/data", "etc/hostname", "srv/www"]))
    o = ns_ctx(ov, flags)
    assert sorted(listdir(vfs, o, "/")) == ["etc", "mnt", "proc", "srv"]
    assert st.S_ISREG(vfs.stat(o, o.cwd, "/etc/hostname").mode)  # the host's file wins over the stub
    assert st.S_IMODE(vfs.stat(o, o.cwd, "/srv").mode) == 0o700  # the host's attributes
    data = mctx.new_superblock("tmpfs", "mode=1777")
    mount_at(o, "/mnt/data", data)
    mount_at(o, "/srv/www", mctx.new_superblock("tmpfs", "mode=755"))
    write_file(vfs, o, "/mnt/data/file", b"in the submount")
    assert read_file(vfs, o, "/mnt/data/file") == b"in the submount"
    assert errno_of(lambda: vfs.mkdir(o, o.cwd, "/mnt/x", 0o755)) == errno.EROFS
    assert errno_of(lambda: write_file(vfs, o, "/etc/hostname", b"no")) == errno.EROFS
    assert snapshot(vfs, hctx) == before  # nothing was made on the "host"
    assert sorted(listdir(vfs, hctx, "/")) == ["etc", "srv"]


def test_stub_overlay_on_a_writable_mount_creates_nothing_for_lookups(
    vfs: VirtualFilesystem, mctx: MountContext
) -> None:
    host, hctx = host_like(vfs, mctx)
    ov = overlay_superblock(host, stub_tree(mctx, ["proc", "mnt/data"]))
    o = ns_ctx(ov)
    mount_at(o, "/proc", mctx.new_superblock("tmpfs", "mode=555"))
    for p in ("/mnt", "/mnt/data", "/proc"):
        vfs.stat(o, o.cwd, p)
        listdir(vfs, o, p)
        fd = vfs.open(o, o.cwd, p, os.O_RDONLY | os.O_DIRECTORY)
        fd.getdents()
        fd.dec_ref()
    write_file(vfs, o, "/etc/hostname", b"written\n")  # the host is written where it exists
    assert read_file(vfs, hctx, "/etc/hostname") == b"written\n"
    assert sorted(listdir(vfs, hctx, "/")) == ["etc", "srv"]
    write_file(vfs, o, "/mnt/new", b"")  # a write below a stub makes the stub real (as gVisor)
    assert listdir(vfs, hctx, "/mnt") == ["new"]


def test_tmpfs_overlay_over_a_stub_overlay(vfs: VirtualFilesystem, mctx: MountContext) -> None:
    """``--overlay`` on a root with submounts: nothing at all reaches the host."""
    host, hctx = host_like(vfs, mctx)
    before = snapshot(vfs, hctx)
    stubbed = overlay_superblock(host, stub_tree(mctx, ["mnt/data"]))
    top = tmpfs_overlay(mctx, stubbed)
    o = ns_ctx(top)
    assert st.S_IMODE(vfs.stat(o, o.cwd, "/").mode) == 0o755
    write_file(vfs, o, "/etc/hostname", b"sandbox\n")
    write_file(vfs, o, "/mnt/new", b"x")
    vfs.mkdir(o, o.cwd, "/srv/sub", 0o755)
    vfs.unlink(o, o.cwd, "/etc/hostname")
    mount_at(o, "/mnt/data", mctx.new_superblock("tmpfs", ""))
    assert sorted(listdir(vfs, o, "/mnt")) == ["data", "new"]
    assert snapshot(vfs, hctx) == before
    assert sorted(listdir(vfs, ns_ctx(top.upper), "/")) == ["etc", "mnt", "srv"]


def test_tmpfs_overlay_copies_the_lower_root_attributes(vfs: VirtualFilesystem, mctx: MountContext) -> None:
    lower = mctx.new_superblock("tmpfs", "mode=750,uid=1000,gid=100")
    ov = tmpfs_overlay(mctx, lower, "size=1m")
    o = ns_ctx(ov)
    s = vfs.stat(o, o.cwd, "/")
    assert (st.S_IMODE(s.mode), s.uid, s.gid) == (0o750, 1000, 100)
    assert ov.statfs().blocks == 256  # the upper's size


class FileRootSuperblock(Superblock):
    """A superblock whose root is one tmpfs file (what a bind mount of a file,
    e.g. /etc/hostname, looks like to the overlay)."""

    def __init__(self, file: Inode) -> None:
        super().__init__("file", 0)
        self.file = file

    def root(self) -> Inode:
        return self.file


def test_overlay_over_a_file(vfs: VirtualFilesystem, mctx: MountContext, ctx: FSContext) -> None:
    src = mctx.new_superblock("tmpfs", "mode=755")
    sctx = ns_ctx(src)
    write_file(vfs, sctx, "/hostname", b"host\n")
    ov = tmpfs_overlay(mctx, FileRootSuperblock(resolve(sctx, sctx.cwd, "/hostname").inode))
    write_file(vfs, ctx, "/hostname", b"")
    mount_at(ctx, "/hostname", ov)
    assert read_file(vfs, ctx, "/hostname") == b"host\n"
    fd = vfs.open(ctx, ctx.cwd, "/hostname", os.O_WRONLY | os.O_TRUNC)
    fd.write(b"sandbox\n")
    fd.dec_ref()
    assert read_file(vfs, ctx, "/hostname") == b"sandbox\n"
    assert read_file(vfs, sctx, "/hostname") == b"host\n"
    assert vfs.stat(ctx, ctx.cwd, "/hostname").nlink == 1


def test_overlay_inodes_are_overlay_inodes(layers: Layers) -> None:
    root = layers.overlay.root()
    assert isinstance(root, OverlayInode) and root.is_merged()
    assert isinstance(root.lookup("etc"), OverlayInode)
    assert root.lookup("etc") is root.lookup("etc")


# Overlay over tmpfs behaves like plain tmpfs for random operation sequences.

DIRS = ["/", "/a", "/b", "/a/c"]
NAMES = ["x", "y", "c", "a"]


def _tmpfs_pair(vfs: VirtualFilesystem, mctx: MountContext) -> tuple[FSContext, FSContext, Superblock]:
    def seed(c: FSContext) -> None:
        vfs.mkdir(c, c.cwd, "/a", 0o755)
        vfs.mkdir(c, c.cwd, "/a/c", 0o755)
        vfs.mkdir(c, c.cwd, "/b", 0o755)
        write_file(vfs, c, "/x", b"root x")
        write_file(vfs, c, "/a/x", b"a x")
        write_file(vfs, c, "/a/c/y", b"deep y")

    plain = ns_ctx(mctx.new_superblock("tmpfs", "mode=755"))
    seed(plain)
    lower = mctx.new_superblock("tmpfs", "mode=755")
    seed(ns_ctx(lower))
    over = ns_ctx(overlay_superblock(mctx.new_superblock("tmpfs", "mode=755"), lower))
    return plain, over, lower


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return ("ok", fn())
    except SyscallError as e:
        return ("err", e.errno)


def _tree(vfs: VirtualFilesystem, c: FSContext) -> dict[str, object]:
    return {p: v[:5] if isinstance(v, tuple) and v[0] == "reg" else v for p, v in snapshot(vfs, c).items()}


def _links(vfs: VirtualFilesystem, c: FSContext) -> list[list[str]]:
    """Groups of paths that are one file (ino and nlink agree)."""
    groups: dict[int, list[str]] = {}
    nlinks: dict[int, int] = {}
    for p, v in snapshot(vfs, c).items():
        if isinstance(v, tuple) and v[0] == "reg":
            s = vfs.stat(c, c.cwd, p)
            groups.setdefault(s.ino, []).append(p)
            nlinks[s.ino] = s.nlink
    return sorted([*sorted(g), f"nlink={nlinks[i]}"] for i, g in groups.items())


class OverlayMatchesTmpfs(RuleBasedStateMachine):
    """Each step runs on plain tmpfs and on an overlay whose lower started
    with the same files; errors and trees must agree, and the lower never changes."""

    def __init__(self) -> None:
        super().__init__()
        from pyrunsc.core.mm.memfile import MemoryFile
        from pyrunsc.core.plugins import Plugins

        self.memfile = MemoryFile(size=1 << 26)
        self.vfs = VirtualFilesystem()
        mctx = MountContext(self.vfs, self.memfile, filesystems=dict(Plugins().registry.filesystems))
        self.plain, self.over, self.lower = _tmpfs_pair(self.vfs, mctx)
        self.lower_before = _tree(self.vfs, ns_ctx(self.lower))

    def teardown(self) -> None:
        self.memfile.close()

    def both(self, op: Callable[[FSContext], object]) -> None:
        a, b = _outcome(lambda: op(self.plain)), _outcome(lambda: op(self.over))
        assert a == b

    @initialize()
    def start(self) -> None:
        pass

    @rule(d=hs.sampled_from(DIRS), n=hs.sampled_from(NAMES), data=hs.binary(max_size=20))
    def write(self, d: str, n: str, data: bytes) -> None:
        self.both(lambda c: write_file(self.vfs, c, d.rstrip("/") + "/" + n, data))

    @rule(d=hs.sampled_from(DIRS), n=hs.sampled_from(NAMES), data=hs.binary(min_size=1, max_size=8))
    def append(self, d: str, n: str, data: bytes) -> None:
        def op(c: FSContext) -> None:
            fd = self.vfs.open(c, c.cwd, d.rstrip("/") + "/" + n, os.O_WRONLY | os.O_APPEND)
            try:
                fd.write(data)
            finally:
                fd.dec_ref()

        self.both(op)

    @rule(d=hs.sampled_from(DIRS), n=hs.sampled_from(NAMES))
    def unlink(self, d: str, n: str) -> None:
        self.both(lambda c: self.vfs.unlink(c, c.cwd, d.rstrip("/") + "/" + n))

    @rule(d=hs.sampled_from(DIRS), n=hs.sampled_from(NAMES))
    def mkdir(self, d: str, n: str) -> None:
        self.both(lambda c: self.vfs.mkdir(c, c.cwd, d.rstrip("/") + "/" + n, 0o755))

    @rule(d=hs.sampled_from(DIRS), n=hs.sampled_from(NAMES))
    def rmdir(self, d: str, n: str) -> None:
        self.both(lambda c: self.vfs.rmdir(c, c.cwd, d.rstrip("/") + "/" + n))

    @rule(d=hs.sampled_from(DIRS), n=hs.sampled_from(NAMES), mode=hs.sampled_from([0o600, 0o755, 0o4711]))
    def chmod(self, d: str, n: str, mode: int) -> None:
        self.both(lambda c: self.vfs.chmod(c, resolve(c, c.cwd, d.rstrip("/") + "/" + n), mode))

    @rule(d1=hs.sampled_from(DIRS), n1=hs.sampled_from(NAMES), d2=hs.sampled_from(DIRS), n2=hs.sampled_from(NAMES),
          exchange=hs.booleans())
    def rename(self, d1: str, n1: str, d2: str, n2: str, exchange: bool) -> None:
        old, new = d1.rstrip("/") + "/" + n1, d2.rstrip("/") + "/" + n2
        flags = RENAME_EXCHANGE if exchange else 0

        def op(c: FSContext) -> None:
            self.vfs.rename(c, c.cwd, old, c.cwd, new, flags)

        over = _outcome(lambda: op(self.over))
        if over == ("err", errno.EXDEV):
            # By design: a directory with a lower layer does not move (Linux
            # without redirect_dir); the plain tmpfs is left as it is too.
            moved = [old, new] if exchange else [old]
            assert any(st.S_ISDIR(self.vfs.stat(self.over, self.over.cwd, p, follow=False).mode) for p in moved)
            return
        assert _outcome(lambda: op(self.plain)) == over

    @rule(d1=hs.sampled_from(DIRS), n1=hs.sampled_from(NAMES), d2=hs.sampled_from(DIRS), n2=hs.sampled_from(NAMES))
    def link(self, d1: str, n1: str, d2: str, n2: str) -> None:
        old, new = d1.rstrip("/") + "/" + n1, d2.rstrip("/") + "/" + n2
        self.both(lambda c: self.vfs.link(c, c.cwd, old, c.cwd, new))

    @rule(d=hs.sampled_from(DIRS), n=hs.sampled_from(NAMES), size=hs.integers(0, 9000))
    def truncate(self, d: str, n: str, size: int) -> None:
        self.both(lambda c: self.vfs.truncate(c, resolve(c, c.cwd, d.rstrip("/") + "/" + n), size))

    @rule(d=hs.sampled_from(DIRS))
    def listing(self, d: str) -> None:
        def op(c: FSContext) -> object:
            return sorted(listdir(self.vfs, c, d))

        self.both(op)

    @invariant()
    def same_trees(self) -> None:
        assert _tree(self.vfs, self.plain) == _tree(self.vfs, self.over)
        assert _tree(self.vfs, ns_ctx(self.lower)) == self.lower_before
        # Hard links agree: the same names share an inode on both.
        assert _links(self.vfs, self.plain) == _links(self.vfs, self.over)


TestOverlayMatchesTmpfs = OverlayMatchesTmpfs.TestCase
TestOverlayMatchesTmpfs.settings = settings(
    # OVL_EXAMPLES=2000 for a longer search.
    max_examples=int(os.environ.get("OVL_EXAMPLES", "60")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
