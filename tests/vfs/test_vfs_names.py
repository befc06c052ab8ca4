"""Creating, removing and renaming names on tmpfs: mkdir(2), mknod(2),
symlink(2), readlink(2), link(2), unlink(2), rmdir(2), rename(2)/renameat2(2),
with Linux's errors in Linux's order (``fs/namei.c`` ``filename_create``,
``may_create``, ``may_delete``, ``do_renameat2``, ``vfs_rename``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import Stat, makedev
from pyrunsc.core.vfs.mount import VirtualDentry
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.vfs import RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, VirtualFilesystem

from .conftest import listdir, mount_at, read_file, user_ctx, write_file


def fails(code: int, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Call ``fn`` and require a SyscallError with ``code``."""
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value.name}"


class Names:
    """Short calls on one context: ``n.mkdir("/a")``."""

    def __init__(self, vfs: VirtualFilesystem, ctx: FSContext) -> None:
        self.vfs, self.ctx = vfs, ctx

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self.vfs.mkdir(self.ctx, self.ctx.cwd, path, mode)

    def mknod(self, path: str, mode: int, rdev: int = 0) -> None:
        self.vfs.mknod(self.ctx, self.ctx.cwd, path, mode, rdev)

    def symlink(self, target: str, path: str) -> None:
        self.vfs.symlink(self.ctx, target, self.ctx.cwd, path)

    def link(self, old: str, new: str, *, follow: bool = False) -> None:
        self.vfs.link(self.ctx, self.ctx.cwd, old, self.ctx.cwd, new, follow=follow)

    def unlink(self, path: str) -> None:
        self.vfs.unlink(self.ctx, self.ctx.cwd, path)

    def rmdir(self, path: str) -> None:
        self.vfs.rmdir(self.ctx, self.ctx.cwd, path)

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        self.vfs.rename(self.ctx, self.ctx.cwd, old, self.ctx.cwd, new, flags)

    def write(self, path: str, data: bytes = b"", mode: int = 0o644) -> None:
        write_file(self.vfs, self.ctx, path, data, mode)

    def read(self, path: str) -> bytes:
        return read_file(self.vfs, self.ctx, path)

    def ls(self, path: str = "/") -> list[str]:
        return sorted(listdir(self.vfs, self.ctx, path))

    def st(self, path: str, follow: bool = True) -> Stat:
        return self.vfs.stat(self.ctx, self.ctx.cwd, path, follow=follow)

    def vd(self, path: str) -> VirtualDentry:
        return resolve(self.ctx, self.ctx.cwd, path)

    def exists(self, path: str) -> bool:
        try:
            self.st(path, follow=False)
        except SyscallError as e:
            assert e.errno == errno.ENOENT
            return False
        return True


@pytest.fixture
def n(vfs: VirtualFilesystem, ctx: FSContext) -> Names:
    return Names(vfs, ctx)


@pytest.fixture
def u(vfs: VirtualFilesystem, ctx: FSContext) -> Names:
    """The same namespace as uid/gid 1000."""
    return Names(vfs, user_ctx(ctx))


@pytest.fixture
def ro(n: Names, mctx: MountContext) -> str:
    """/ro: a read-only tmpfs holding a file f and a directory d."""
    n.mkdir("/ro")
    sb = mctx.new_superblock("tmpfs", "mode=777")
    mount_at(n.ctx, "/ro", sb)
    n.write("/ro/f", b"f")
    n.mkdir("/ro/d")
    mount_at(n.ctx, "/ro", sb, MountFlags(read_only=True))
    return "/ro"


@pytest.fixture
def other(n: Names, mctx: MountContext) -> str:
    """/mnt: a second tmpfs."""
    n.mkdir("/mnt")
    mount_at(n.ctx, "/mnt", mctx.new_superblock("tmpfs", "mode=755"))
    return "/mnt"


# mkdir.


def test_mkdir(n: Names) -> None:
    n.mkdir("/a", 0o777)
    st = n.st("/a")
    assert st.mode == 0o40755  # umask 022
    assert st.nlink == 2
    assert n.st("/").nlink == 3
    n.mkdir("/a/b/")  # a trailing slash is fine for mkdir
    assert n.st("/a").nlink == 3
    assert n.ls("/a") == ["b"]


def test_mkdir_keeps_only_permission_and_sticky_bits(n: Names) -> None:
    """Linux ``vfs_mkdir``: mode & (S_IRWXUGO | S_ISVTX); set-id bits come only
    from a set-group-ID parent."""
    n.ctx.umask = 0
    n.mkdir("/all", 0o7777)
    assert n.st("/all").mode == 0o41777
    n.vfs.chmod(n.ctx, n.vd("/all"), 0o2755)
    n.mkdir("/all/sub", 0o755)
    assert n.st("/all/sub").mode == 0o42755  # inherits S_ISGID
    n.mknod("/all/file", 0o107777)
    assert n.st("/all/file").mode == 0o107777  # mknod keeps them


def test_mkdir_errors(n: Names, u: Names, ro: str) -> None:
    n.mkdir("/a")
    n.write("/f")
    fails(errno.EEXIST, n.mkdir, "/a")
    fails(errno.EEXIST, n.mkdir, "/f")
    fails(errno.EEXIST, n.mkdir, "/f/")
    fails(errno.EEXIST, n.mkdir, "/a/.")
    fails(errno.EEXIST, n.mkdir, "/a/..")
    fails(errno.EEXIST, n.mkdir, "/")
    fails(errno.ENOENT, n.mkdir, "/none/x")
    fails(errno.ENOTDIR, n.mkdir, "/f/x")
    fails(errno.EACCES, u.mkdir, "/a/x")
    fails(errno.EEXIST, u.mkdir, "/a")  # EEXIST comes before EACCES
    fails(errno.EROFS, n.mkdir, "/ro/x")
    fails(errno.EEXIST, n.mkdir, "/ro/d")  # and before EROFS


# mknod.


def test_mknod_kinds(n: Names) -> None:
    n.mknod("/fifo", 0o010644)
    n.mknod("/reg", 0o644)  # no type: a regular file
    n.mknod("/reg2", 0o100600)
    n.mknod("/chr", 0o020600, makedev(1, 3))
    n.mknod("/blk", 0o060600, makedev(8, 1))
    n.mknod("/sock", 0o140755)
    assert n.st("/fifo").mode == 0o010644
    assert n.st("/reg").mode == 0o100644
    assert n.st("/reg2").mode == 0o100600
    assert n.st("/chr").mode == 0o020600
    assert n.st("/chr").rdev == makedev(1, 3)
    assert n.st("/blk").rdev == makedev(8, 1)
    assert n.st("/sock").mode == 0o140755
    n.write("/reg", b"data")
    assert n.read("/reg") == b"data"


def test_mknod_errors(n: Names, u: Names, ro: str) -> None:
    fails(errno.EPERM, n.mknod, "/d", 0o040755)
    fails(errno.EINVAL, n.mknod, "/l", 0o120777)
    fails(errno.EINVAL, n.mknod, "/bad", 0o170644)
    n.mkdir("/pub", 0o777)
    n.vfs.chmod(n.ctx, n.vd("/pub"), 0o777)
    fails(errno.EPERM, u.mknod, "/pub/chr", 0o020644, makedev(1, 3))  # needs CAP_MKNOD
    fails(errno.EACCES, u.mknod, "/chr", 0o020644, makedev(1, 3))  # EACCES comes first
    u.mknod("/pub/fifo", 0o010644)  # FIFOs need no capability
    assert (n.st("/pub/fifo").uid, n.st("/pub/fifo").gid) == (1000, 1000)
    fails(errno.EEXIST, n.mknod, "/pub", 0o010644)
    fails(errno.ENOENT, n.mknod, "/new/", 0o010644)  # a trailing slash on a new name
    fails(errno.EEXIST, n.mknod, "/pub/", 0o010644)
    fails(errno.EROFS, n.mknod, "/ro/x", 0o010644)


# symlink and readlink.


def test_symlink_and_readlink(n: Names) -> None:
    n.symlink("some/where", "/l")
    st = n.st("/l", follow=False)
    assert st.mode == 0o120777
    assert st.size == len("some/where")
    assert n.vfs.readlink(n.ctx, n.ctx.cwd, "/l") == "some/where"
    target = "t" * 4095
    n.symlink(target, "/long")
    assert n.vfs.readlink(n.ctx, n.ctx.cwd, "/long") == target
    fails(errno.ENAMETOOLONG, n.symlink, "t" * 4096, "/toolong")
    fails(errno.ENOENT, n.symlink, "", "/empty")
    fails(errno.EEXIST, n.symlink, "x", "/l")
    fails(errno.EEXIST, n.symlink, "x", "/")
    fails(errno.ENOENT, n.symlink, "x", "/new/")
    n.write("/f")
    fails(errno.EINVAL, n.vfs.readlink, n.ctx, n.ctx.cwd, "/f")
    fails(errno.EINVAL, n.vfs.readlink, n.ctx, n.ctx.cwd, "/")
    fails(errno.ENOENT, n.vfs.readlink, n.ctx, n.ctx.cwd, "/none")
    assert n.exists("/l") and not n.exists("/toolong")


def test_symlink_errors(n: Names, u: Names, ro: str) -> None:
    fails(errno.EACCES, u.symlink, "x", "/l")
    fails(errno.EROFS, n.symlink, "x", "/ro/l")
    fails(errno.EEXIST, n.symlink, "x", "/ro/f")
    n.symlink("x", "/mine")
    assert n.st("/mine", follow=False).uid == 0


# link.


def test_link(n: Names) -> None:
    n.write("/f", b"shared")
    n.mkdir("/d")
    n.link("/f", "/d/g")
    assert n.st("/f").nlink == 2
    assert n.st("/d/g").ino == n.st("/f").ino
    n.write("/d/g", b"changed")
    assert n.read("/f") == b"changed"
    n.unlink("/f")
    assert n.st("/d/g").nlink == 1
    assert n.read("/d/g") == b"changed"


def test_link_follows_symlinks_only_when_asked(n: Names) -> None:
    n.write("/f")
    n.symlink("/f", "/l")
    n.link("/l", "/hard_to_link")
    assert n.st("/hard_to_link", follow=False).mode == 0o120777
    assert n.st("/l", follow=False).nlink == 2
    n.link("/l", "/hard_to_file", follow=True)
    assert n.st("/hard_to_file", follow=False).ino == n.st("/f").ino
    assert n.st("/f").nlink == 2


def test_link_errors(n: Names, u: Names, ro: str, other: str) -> None:
    n.write("/f")
    n.mkdir("/d")
    fails(errno.EPERM, n.link, "/d", "/d2")
    fails(errno.EEXIST, n.link, "/f", "/d")
    fails(errno.EEXIST, n.link, "/f", "/f")
    fails(errno.EEXIST, n.link, "/f", "/d/.")
    fails(errno.ENOENT, n.link, "/none", "/x")
    fails(errno.ENOENT, n.link, "/f", "/new/")
    fails(errno.ENOTDIR, n.link, "/f/", "/x")
    fails(errno.EXDEV, n.link, "/f", "/mnt/f")
    fails(errno.EXDEV, n.link, "/ro/f", "/x")
    fails(errno.EROFS, n.link, "/f", "/ro/x")  # EROFS comes before EXDEV (Linux filename_create)
    fails(errno.EROFS, n.link, "/ro/f", "/ro/x")
    fails(errno.EEXIST, n.link, "/ro/f", "/ro/d")
    fails(errno.EACCES, u.link, "/f", "/d/x")
    assert n.st("/f").nlink == 1


def test_link_of_an_unlinked_open_file_is_enoent(n: Names) -> None:
    n.write("/f", b"x")
    fd = n.vfs.open(n.ctx, n.ctx.cwd, "/f", os.O_RDONLY)
    n.unlink("/f")
    fails(errno.ENOENT, n.vfs.link_vd, n.ctx, fd.vd, n.ctx.cwd, "/back")
    fd.dec_ref()
    assert not n.exists("/back")


def test_link_vd_names_an_open_file(n: Names) -> None:
    n.write("/f", b"x")
    fd = n.vfs.open(n.ctx, n.ctx.cwd, "/f", os.O_RDONLY)
    n.vfs.link_vd(n.ctx, fd.vd, n.ctx.cwd, "/g")
    assert n.st("/g").ino == n.st("/f").ino
    assert n.st("/f").nlink == 2
    fails(errno.EEXIST, n.vfs.link_vd, n.ctx, fd.vd, n.ctx.cwd, "/g")
    fd.dec_ref()


# unlink.


def test_unlink(n: Names) -> None:
    n.write("/f")
    n.mkdir("/d")
    n.symlink("/d", "/l")
    n.unlink("/f")
    n.unlink("/l")  # removes the link, not its target
    assert n.ls() == ["d"]
    n.mknod("/fifo", 0o010644)
    n.unlink("/fifo")


def test_unlink_errors(n: Names, u: Names, ro: str, other: str) -> None:
    n.write("/f")
    n.mkdir("/d")
    n.symlink("/d", "/l")
    fails(errno.EISDIR, n.unlink, "/d")
    fails(errno.EISDIR, n.unlink, "/d/")
    fails(errno.ENOTDIR, n.unlink, "/f/")
    fails(errno.ENOTDIR, n.unlink, "/l/")
    fails(errno.ENOENT, n.unlink, "/none")
    fails(errno.ENOENT, n.unlink, "/none/")
    fails(errno.EISDIR, n.unlink, "/d/.")
    fails(errno.EISDIR, n.unlink, "/d/..")
    fails(errno.EISDIR, n.unlink, "/")
    fails(errno.EACCES, u.unlink, "/f")
    fails(errno.EROFS, n.unlink, "/ro/f")
    fails(errno.EROFS, n.unlink, "/ro/none")  # EROFS before ENOENT
    fails(errno.EISDIR, n.unlink, "/mnt")
    assert n.ls() == ["d", "f", "l", "mnt", "ro"]


def test_unlink_and_rmdir_of_mount_points_are_ebusy(n: Names, mctx: MountContext) -> None:
    n.mkdir("/d")
    n.mkdir("/d/m")
    mount_at(n.ctx, "/d/m", mctx.new_superblock("tmpfs", ""))
    fails(errno.EBUSY, n.rmdir, "/d/m")
    fails(errno.EBUSY, n.rename, "/d/m", "/d/x")
    n.mkdir("/d/y")
    fails(errno.EBUSY, n.rename, "/d/y", "/d/m")
    fails(errno.EBUSY, n.rename, "/d/y", "/d/m", RENAME_EXCHANGE)
    fails(errno.ENOTEMPTY, n.rmdir, "/d")
    fails(errno.EINVAL, n.rmdir, "/d/m/.")


def test_sticky_directory(n: Names, vfs: VirtualFilesystem, ctx: FSContext) -> None:
    n.mkdir("/tmp")
    vfs.chmod(ctx, n.vd("/tmp"), 0o1777)
    alice = Names(vfs, user_ctx(ctx, 1000, 1000))
    bob = Names(vfs, user_ctx(ctx, 1001, 1001))
    alice.write("/tmp/a", b"alice")
    vfs.chmod(alice.ctx, n.vd("/tmp/a"), 0o666)
    alice.mkdir("/tmp/adir")
    vfs.chmod(alice.ctx, n.vd("/tmp/adir"), 0o777)
    bob.write("/tmp/b")
    n.write("/tmp/r", mode=0o666)
    fails(errno.EPERM, bob.unlink, "/tmp/a")
    fails(errno.EPERM, bob.rename, "/tmp/a", "/tmp/c")
    fails(errno.EPERM, bob.rename, "/tmp/b", "/tmp/a")  # replacing someone else's file
    fails(errno.EPERM, bob.rmdir, "/tmp/adir")
    fails(errno.EPERM, alice.unlink, "/tmp/r")
    bob.write("/tmp/a", b"bob can still write")  # only removal and renaming are limited
    bob.rename("/tmp/b", "/tmp/b2")
    bob.unlink("/tmp/b2")
    alice.rename("/tmp/a", "/tmp/a2")
    alice.rmdir("/tmp/adir")
    # The directory's owner and root may remove anything.
    n.unlink("/tmp/a2")
    vfs.chown(ctx, n.vd("/tmp"), 1001, -1)
    bob.unlink("/tmp/r")
    assert n.ls("/tmp") == []


# rmdir.


def test_rmdir(n: Names) -> None:
    n.mkdir("/a")
    n.mkdir("/a/b")
    assert n.st("/a").nlink == 3
    n.rmdir("/a/b/")
    assert n.st("/a").nlink == 2
    n.rmdir("/a")
    assert n.ls() == []
    assert n.st("/").nlink == 2


def test_rmdir_errors(n: Names, u: Names, ro: str) -> None:
    n.mkdir("/a")
    n.mkdir("/a/b")
    n.write("/f")
    n.symlink("/a", "/l")
    fails(errno.ENOTEMPTY, n.rmdir, "/a")
    fails(errno.EINVAL, n.rmdir, "/a/b/.")
    fails(errno.EINVAL, n.rmdir, ".")
    fails(errno.ENOTEMPTY, n.rmdir, "/a/b/..")
    fails(errno.EBUSY, n.rmdir, "/")
    fails(errno.ENOTDIR, n.rmdir, "/f")
    fails(errno.ENOTDIR, n.rmdir, "/f/")
    fails(errno.ENOTDIR, n.rmdir, "/l")
    fails(errno.ENOTDIR, n.rmdir, "/l/")
    fails(errno.ENOENT, n.rmdir, "/none")
    fails(errno.EACCES, u.rmdir, "/a/b")
    fails(errno.EROFS, n.rmdir, "/ro/d")
    fails(errno.EROFS, n.rmdir, "/ro/none")
    fails(errno.EBUSY, n.rmdir, "/ro")


# rename.


def test_rename_a_file(n: Names) -> None:
    n.write("/f", b"f")
    n.mkdir("/d")
    n.rename("/f", "/d/g")
    assert n.ls() == ["d"]
    assert n.read("/d/g") == b"f"
    n.rename("/d/g", "/d/g")  # to itself: nothing happens
    assert n.read("/d/g") == b"f"


def test_rename_replaces_a_file_and_frees_it(n: Names) -> None:
    sb = n.ctx.root.mount.sb
    n.write("/a", b"a")
    n.write("/b", b"b" * 10000)
    inodes, pages = sb.inodes, sb.used_pages  # type: ignore[attr-defined]
    n.rename("/a", "/b")
    assert n.ls() == ["b"]
    assert n.read("/b") == b"a"
    assert sb.inodes == inodes - 1  # type: ignore[attr-defined]
    assert sb.used_pages == pages - 3  # type: ignore[attr-defined]


def test_rename_over_a_hard_link_of_itself_does_nothing(n: Names) -> None:
    """POSIX: when old and new are links to the same file, rename does nothing."""
    n.write("/f", b"x")
    n.link("/f", "/g")
    n.rename("/f", "/g")
    assert n.ls() == ["f", "g"]
    assert n.st("/f").nlink == 2


def test_rename_directories(n: Names) -> None:
    n.mkdir("/a")
    n.mkdir("/a/sub")
    n.write("/a/sub/f", b"deep")
    n.mkdir("/b")
    n.mkdir("/empty")
    n.rename("/a/sub", "/b/sub")
    assert n.st("/a").nlink == 2
    assert n.st("/b").nlink == 3
    assert n.read("/b/sub/f") == b"deep"
    assert n.st("/b/sub/..").ino == n.st("/b").ino
    n.rename("/b/sub", "/empty")  # over an empty directory
    assert n.read("/empty/f") == b"deep"
    assert n.st("/b").nlink == 2
    assert n.st("/").nlink == 5  # /, a, b, empty + "."
    n.rename("/empty", "/moved/")  # a trailing slash on the new name of a directory
    assert n.ls() == ["a", "b", "moved"]


def test_rename_errors(n: Names, ro: str, other: str) -> None:
    n.mkdir("/a")
    n.mkdir("/a/b")
    n.mkdir("/a/b/c")
    n.write("/f")
    n.write("/g")
    n.mkdir("/full")
    n.write("/full/x")
    n.mkdir("/empty")
    fails(errno.EINVAL, n.rename, "/a", "/a/b/new")  # into its own subtree
    fails(errno.EINVAL, n.rename, "/a", "/a/new")
    fails(errno.ENOTEMPTY, n.rename, "/a/b/c", "/a")  # onto an ancestor
    fails(errno.EINVAL, n.rename, "/a/b/c", "/a", RENAME_EXCHANGE)
    fails(errno.EINVAL, n.rename, "/a", "/a/b", RENAME_EXCHANGE)
    fails(errno.EBUSY, n.rename, ".", "/x")
    fails(errno.EBUSY, n.rename, "/a/..", "/x")
    fails(errno.EBUSY, n.rename, "/f", "/a/.")
    fails(errno.EEXIST, n.rename, "/f", "/a/.", RENAME_NOREPLACE)
    fails(errno.EBUSY, n.rename, "/f", "/")
    fails(errno.ENOTDIR, n.rename, "/empty", "/f")
    fails(errno.EISDIR, n.rename, "/f", "/empty")
    fails(errno.ENOTEMPTY, n.rename, "/empty", "/full")
    fails(errno.ENOTDIR, n.rename, "/f", "/f/")
    fails(errno.ENOTDIR, n.rename, "/f/", "/h")
    fails(errno.ENOTDIR, n.rename, "/f", "/h/")
    fails(errno.ENOENT, n.rename, "/none", "/h")
    fails(errno.ENOENT, n.rename, "/none", "/f", RENAME_NOREPLACE)
    fails(errno.ENOENT, n.rename, "/f", "/none/h")
    fails(errno.EXDEV, n.rename, "/f", "/mnt/f")
    fails(errno.EXDEV, n.rename, "/ro/f", "/x")
    fails(errno.EROFS, n.rename, "/ro/f", "/ro/g")
    fails(errno.EROFS, n.rename, "/ro/none", "/ro/g")
    assert n.ls() == ["a", "empty", "f", "full", "g", "mnt", "ro"]


def test_rename_of_a_mount_point_is_ebusy(n: Names, other: str) -> None:
    n.mkdir("/d")
    fails(errno.EBUSY, n.rename, "/mnt", "/d/x")
    fails(errno.EBUSY, n.rename, "/d", "/mnt")


def test_renameat2_flags(n: Names) -> None:
    n.write("/f", b"f")
    n.write("/g", b"g")
    fails(errno.EINVAL, n.rename, "/f", "/g", RENAME_NOREPLACE | RENAME_EXCHANGE)
    fails(errno.EINVAL, n.rename, "/f", "/g", 8)
    fails(errno.EINVAL, n.rename, "/f", "/g", RENAME_EXCHANGE | RENAME_WHITEOUT)
    fails(errno.EEXIST, n.rename, "/f", "/g", RENAME_NOREPLACE)
    fails(errno.EEXIST, n.rename, "/f", "/f", RENAME_NOREPLACE)
    n.rename("/f", "/h", RENAME_NOREPLACE)
    assert n.ls() == ["g", "h"]
    fails(errno.ENOENT, n.rename, "/h", "/none", RENAME_EXCHANGE)
    n.rename("/h", "/g", RENAME_EXCHANGE)
    assert (n.read("/g"), n.read("/h")) == (b"f", b"g")


def test_rename_exchange_of_a_file_and_a_directory_across_directories(n: Names) -> None:
    n.mkdir("/p1")
    n.mkdir("/p2")
    n.mkdir("/p1/d")
    n.write("/p1/d/inner", b"in")
    n.write("/p2/f", b"file")
    n.mkdir("/full")
    n.write("/full/x")
    ino_d, ino_f = n.st("/p1/d").ino, n.st("/p2/f").ino
    n.rename("/p1/d", "/p2/f", RENAME_EXCHANGE)
    assert (n.st("/p1/d").ino, n.st("/p2/f").ino) == (ino_f, ino_d)
    assert n.read("/p1/d") == b"file"
    assert n.read("/p2/f/inner") == b"in"
    assert (n.st("/p1").nlink, n.st("/p2").nlink) == (2, 3)
    assert n.st("/p2/f/..").ino == n.st("/p2").ino
    # Exchanging with a non-empty directory is fine; trailing slashes need directories.
    n.rename("/p2/f", "/full", RENAME_EXCHANGE)
    assert n.ls("/full") == ["inner"]
    fails(errno.ENOTDIR, n.rename, "/p1/d/", "/full", RENAME_EXCHANGE)
    fails(errno.ENOTDIR, n.rename, "/full", "/p1/d/", RENAME_EXCHANGE)
    n.rename("/p1/d", "/full/", RENAME_EXCHANGE)
    assert n.read("/full") == b"file"


def test_rename_permissions(n: Names, u: Names, vfs: VirtualFilesystem, ctx: FSContext) -> None:
    n.mkdir("/pub")
    vfs.chmod(ctx, n.vd("/pub"), 0o777)
    n.mkdir("/pub2")
    vfs.chmod(ctx, n.vd("/pub2"), 0o777)
    n.mkdir("/pub/rootdir")  # 0755, root's: the user cannot rewrite its ".."
    n.write("/pub/rootfile")
    u.rename("/pub/rootfile", "/pub2/rootfile")  # a file needs no write permission of its own
    u.rename("/pub/rootdir", "/pub/renamed")  # nor a directory staying in its parent
    fails(errno.EACCES, u.rename, "/pub/renamed", "/pub2/moved")  # but moving it does
    n.mkdir("/closed")
    fails(errno.EACCES, u.rename, "/pub2/rootfile", "/closed/x")
    fails(errno.EACCES, u.rename, "/closed", "/pub/closed")
    assert n.ls("/pub2") == ["rootfile"]


def test_open_files_survive_rename_over_them(n: Names) -> None:
    sb = n.ctx.root.mount.sb
    n.write("/victim", b"old data")
    n.write("/new", b"new")
    fd = n.vfs.open(n.ctx, n.ctx.cwd, "/victim", os.O_RDONLY)
    n.rename("/new", "/victim")
    assert fd.read(100) == b"old data"
    assert n.vfs.stat_vd(fd.vd).nlink == 0
    inodes = sb.inodes  # type: ignore[attr-defined]
    fd.dec_ref()
    assert sb.inodes == inodes - 1  # type: ignore[attr-defined]
    assert n.read("/victim") == b"new"


def test_rmdir_and_rename_over_of_open_directories(n: Names) -> None:
    sb = n.ctx.root.mount.sb
    n.mkdir("/d")
    n.mkdir("/e")
    fd = n.vfs.open(n.ctx, n.ctx.cwd, "/d", os.O_RDONLY | os.O_DIRECTORY)
    fd2 = n.vfs.open(n.ctx, n.ctx.cwd, "/e", os.O_RDONLY | os.O_DIRECTORY)
    inodes = sb.inodes  # type: ignore[attr-defined]
    n.rmdir("/d")
    n.mkdir("/f")
    n.rename("/f", "/e")
    assert n.vfs.stat_vd(fd.vd).nlink == 0
    assert n.vfs.stat_vd(fd2.vd).nlink == 0
    fails(errno.ENOENT, n.vfs.mkdir, n.ctx, fd.vd, "x", 0o755)
    fails(errno.ENOENT, n.vfs.mkdir, n.ctx, fd2.vd, "x", 0o755)
    fd.dec_ref()
    fd2.dec_ref()
    assert sb.inodes == inodes - 1  # type: ignore[attr-defined]  # d and the old e freed, f made
