"""sysfs through the VFS (Linux ``fs/sysfs``, ``drivers/base/cpu.c``; gVisor
``fsimpl/sys``), and the generic read-only synthetic trees it is built from
(``core/vfs/synthetic.py``)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.vfs.file import SEEK_END, SEEK_SET
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import Inode, SetAttr
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.synthetic import (
    Dir,
    File,
    Link,
    SyntheticDir,
    SyntheticFile,
    SyntheticSuperblock,
)
from pyrunsc.core.vfs.vfs import VirtualFilesystem
from pyrunsc.plugins.fs_sys.sysfs import SYSFS_MAGIC, SysfsSuperblock, cpu_list, cpu_mask, sandbox_cpus

from .conftest import listdir, mount_at, read_file, user_ctx

HOST_CPUS = len(os.sched_getaffinity(0))
TOP = ["block", "bus", "class", "dev", "devices", "firmware", "fs", "kernel", "module", "power"]


@pytest.fixture
def sys_(vfs: VirtualFilesystem, mctx: MountContext, ctx: FSContext) -> FSContext:
    """sysfs mounted at /sys in the tmpfs root."""
    vfs.mkdir(ctx, ctx.cwd, "/sys", 0o755)
    mount_at(ctx, "/sys", mctx.new_superblock("sysfs"))
    return ctx


def err(fn: object, *args: object) -> int:
    assert callable(fn)
    with pytest.raises(SyscallError) as e:
        fn(*args)
    return e.value.errno


def nprocs(text: bytes) -> int:
    """What glibc's ``get_nprocs`` makes of a CPU list ("0-3,6\\n" -> 5)."""
    n = 0
    for part in text.decode().strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


# sysfs.


def test_sysfs_top_level(vfs: VirtualFilesystem, sys_: FSContext) -> None:
    assert listdir(vfs, sys_, "/sys") == TOP
    st = vfs.stat(sys_, sys_.cwd, "/sys")
    assert st.mode == stat.S_IFDIR | 0o555  # Linux's sysfs root
    assert vfs.statfs(sys_, sys_.cwd, "/sys").type == SYSFS_MAGIC


@pytest.mark.parametrize("name", ["online", "possible", "present"])
def test_cpu_lists_give_the_sandbox_cpus(vfs: VirtualFilesystem, sys_: FSContext, name: str) -> None:
    text = read_file(vfs, sys_, f"/sys/devices/system/cpu/{name}")
    assert text == (b"0\n" if HOST_CPUS == 1 else f"0-{HOST_CPUS - 1}\n".encode())
    assert nprocs(text) == HOST_CPUS == sandbox_cpus()


def test_cpu_directories_and_topology(vfs: VirtualFilesystem, sys_: FSContext) -> None:
    names = listdir(vfs, sys_, "/sys/devices/system/cpu")
    assert names == ["online", "possible", "present"] + [f"cpu{i}" for i in range(HOST_CPUS)]
    topo = "/sys/devices/system/cpu/cpu0/topology"
    assert listdir(vfs, sys_, topo) == [
        "core_cpus", "core_id", "core_siblings", "package_cpus", "physical_package_id", "thread_siblings",
    ]
    assert read_file(vfs, sys_, f"{topo}/thread_siblings") == (cpu_mask((0,), HOST_CPUS) + "\n").encode()
    assert read_file(vfs, sys_, f"{topo}/physical_package_id") == b"0\n"


def test_cpu_count_follows_the_kernel(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/sys", 0o755)
    mount_at(ctx, "/sys", SysfsSuperblock(4))
    assert read_file(vfs, ctx, "/sys/devices/system/cpu/online") == b"0-3\n"
    assert read_file(vfs, ctx, "/sys/devices/system/cpu/cpu3/topology/core_siblings") == b"f\n"
    assert read_file(vfs, ctx, "/sys/devices/system/cpu/cpu2/topology/core_cpus") == b"4\n"
    assert "cpu4" not in listdir(vfs, ctx, "/sys/devices/system/cpu")


def test_cpu_formats() -> None:
    assert cpu_list(1) == "0\n" and cpu_list(8) == "0-7\n"
    assert cpu_mask(range(2), 2) == "3"
    assert cpu_mask((1,), 2) == "2"
    assert cpu_mask((0,), 8) == "01"
    assert cpu_mask(range(32), 32) == "ffffffff"
    assert cpu_mask(range(40), 40) == "ff,ffffffff"
    assert cpu_mask((33,), 40) == "02,00000000"
    assert cpu_mask((0,), 64) == "00000000,00000001"


def test_transparent_hugepage(vfs: VirtualFilesystem, sys_: FSContext) -> None:
    base = "/sys/kernel/mm/transparent_hugepage"
    assert read_file(vfs, sys_, f"{base}/enabled") == b"always [madvise] never\n"
    assert read_file(vfs, sys_, f"{base}/hpage_pmd_size") == b"2097152\n"


def test_fs_cgroup_is_an_empty_directory(vfs: VirtualFilesystem, sys_: FSContext) -> None:
    assert listdir(vfs, sys_, "/sys/fs/cgroup") == []
    st = vfs.stat(sys_, sys_.cwd, "/sys/fs/cgroup")
    assert st.mode == stat.S_IFDIR | 0o755 and st.nlink == 2


def test_files_report_4096_bytes_mode_0444(vfs: VirtualFilesystem, sys_: FSContext) -> None:
    st = vfs.stat(sys_, sys_.cwd, "/sys/devices/system/cpu/online")
    assert st.mode == stat.S_IFREG | 0o444
    assert (st.size, st.blocks, st.nlink, st.uid, st.gid) == (4096, 0, 1, 0, 0)
    fd = vfs.open(sys_, sys_.cwd, "/sys/devices/system/cpu/online", os.O_RDONLY)
    assert fd.seek(0, SEEK_END) == 4096  # as Linux: lseek goes by st_size
    fd.dec_ref()


def test_directory_link_counts(vfs: VirtualFilesystem, sys_: FSContext) -> None:
    assert vfs.stat(sys_, sys_.cwd, "/sys").nlink == 2 + len(TOP)
    assert vfs.stat(sys_, sys_.cwd, "/sys/devices/system/cpu").nlink == 2 + HOST_CPUS


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC])
def test_writing_is_eacces_for_everyone(vfs: VirtualFilesystem, sys_: FSContext, flags: int) -> None:
    for path in ("/sys/devices/system/cpu/online", "/sys/kernel/mm/transparent_hugepage/enabled"):
        assert err(vfs.open, sys_, sys_.cwd, path, flags) == errno.EACCES  # root: kernfs_fop_open
        user = user_ctx(sys_)
        assert err(vfs.open, user, user.cwd, path, flags) == errno.EACCES  # others: mode 0444


def test_names_cannot_be_created_or_removed(vfs: VirtualFilesystem, sys_: FSContext) -> None:
    c = sys_
    assert err(vfs.mkdir, c, c.cwd, "/sys/fs/cgroup/cpu", 0o755) == errno.EPERM
    assert err(vfs.mknod, c, c.cwd, "/sys/fifo", stat.S_IFIFO | 0o644) == errno.EPERM
    assert err(vfs.symlink, c, "x", c.cwd, "/sys/link") == errno.EPERM
    assert err(vfs.unlink, c, c.cwd, "/sys/devices/system/cpu/online") == errno.EPERM
    assert err(vfs.rmdir, c, c.cwd, "/sys/fs/cgroup") == errno.EPERM
    assert err(vfs.rename, c, c.cwd, "/sys/power", c.cwd, "/sys/power2") == errno.EPERM
    assert err(vfs.open, c, c.cwd, "/sys/new", os.O_CREAT | os.O_WRONLY, 0o644) == errno.EACCES
    assert err(vfs.stat, c, c.cwd, "/sys/nothing") == errno.ENOENT


def test_sysfs_takes_no_mount_data(mctx: MountContext) -> None:
    assert err(mctx.new_superblock, "sysfs", "mode=755") == errno.EINVAL


def test_getdents_resumes_at_a_cookie(vfs: VirtualFilesystem, sys_: FSContext) -> None:
    fd = vfs.open(sys_, sys_.cwd, "/sys", os.O_RDONLY | os.O_DIRECTORY)
    first = fd.getdents(4)
    assert [e.name for e in first] == [".", "..", "block", "bus"]
    assert [e.cookie for e in first] == [1, 2, 3, 4]  # a directory's own cookies start at 3
    rest = fd.getdents()
    assert [e.name for e in rest] == TOP[2:]
    assert fd.getdents() == []
    fd.seek(first[-1].cookie, SEEK_SET)
    assert [e.name for e in fd.getdents(1)] == ["class"]
    fd.dec_ref()


# The synthetic tree helper.


def counting_tree() -> tuple[SyntheticSuperblock, list[int]]:
    calls = [0]

    def tick() -> str:
        calls[0] += 1
        return f"tick {calls[0]}\n"

    sb = SyntheticSuperblock("testfs", 0x1234, file_size=0, refuse_write_open=False)
    sb.build(
        {
            "tick": tick,
            "bin": b"\x00\x01",
            "text": "caf\u00e9\n",
            "secret": File("s\n", mode=0o400),
            "sub": Dir({"deep": {"leaf": "leaf\n"}}, mode=0o700),
            "link": Link("sub/deep"),
            "dyn": Link(lambda: f"target-{calls[0]}"),
        },
        mode=0o555,
    )
    return sb, calls


@pytest.fixture
def syn(vfs: VirtualFilesystem, ctx: FSContext) -> tuple[FSContext, list[int]]:
    sb, calls = counting_tree()
    vfs.mkdir(ctx, ctx.cwd, "/syn", 0o755)
    mount_at(ctx, "/syn", sb)
    return ctx, calls


def test_synthetic_files_are_generated_at_read_time(
    vfs: VirtualFilesystem, syn: tuple[FSContext, list[int]]
) -> None:
    ctx, calls = syn
    assert calls == [0]
    assert read_file(vfs, ctx, "/syn/tick") == b"tick 1\n"
    assert read_file(vfs, ctx, "/syn/tick") == b"tick 2\n"
    assert read_file(vfs, ctx, "/syn/bin") == b"\x00\x01"
    assert read_file(vfs, ctx, "/syn/text") == "caf\u00e9\n".encode()


def test_sequential_reads_keep_one_snapshot_and_pread_regenerates(
    vfs: VirtualFilesystem, syn: tuple[FSContext, list[int]]
) -> None:
    ctx, calls = syn
    fd = vfs.open(ctx, ctx.cwd, "/syn/tick", os.O_RDONLY)
    assert fd.read(3) == b"tic"
    assert fd.read(100) == b"k 1\n"  # the same generation
    assert fd.read(100) == b""
    assert fd.pread(100, 0) == b"tick 2\n"  # another offset: generated again
    assert calls == [2]
    fd.dec_ref()


def test_synthetic_stat_and_links(vfs: VirtualFilesystem, syn: tuple[FSContext, list[int]]) -> None:
    ctx, calls = syn
    st = vfs.stat(ctx, ctx.cwd, "/syn/tick")
    assert st.mode == stat.S_IFREG | 0o444 and st.size == 0 and st.btime is None  # proc-like size 0
    assert vfs.stat(ctx, ctx.cwd, "/syn/secret").mode == stat.S_IFREG | 0o400
    assert vfs.stat(ctx, ctx.cwd, "/syn/sub").mode == stat.S_IFDIR | 0o700
    assert vfs.stat(ctx, ctx.cwd, "/syn").mode == stat.S_IFDIR | 0o555
    assert vfs.readlink(ctx, ctx.cwd, "/syn/link") == "sub/deep"
    assert listdir(vfs, ctx, "/syn/link") == ["leaf"]  # followed
    assert vfs.stat(ctx, ctx.cwd, "/syn/link", follow=False).size == len("sub/deep")
    calls[0] = 7
    assert vfs.readlink(ctx, ctx.cwd, "/syn/dyn") == "target-7"


def test_synthetic_permissions_apply(vfs: VirtualFilesystem, syn: tuple[FSContext, list[int]]) -> None:
    ctx, _ = syn
    user = user_ctx(ctx)
    assert err(read_file, vfs, user, "/syn/secret") == errno.EACCES
    assert err(listdir, vfs, user, "/syn/sub") == errno.EACCES
    assert read_file(vfs, ctx, "/syn/secret") == b"s\n"


def test_proc_style_write_opens_but_writes_eio(vfs: VirtualFilesystem, syn: tuple[FSContext, list[int]]) -> None:
    ctx, _ = syn
    fd = vfs.open(ctx, ctx.cwd, "/syn/text", os.O_WRONLY)
    assert err(fd.write, b"x") == errno.EIO
    fd.dec_ref()


def test_a_file_with_a_writer_takes_writes(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    store: list[bytes] = []

    def writer(data: bytes) -> None:
        if data.strip() not in (b"always", b"madvise", b"never"):
            raise SyscallError(errno.EINVAL)
        store.append(data.strip())

    sb = SyntheticSuperblock("testfs", 0x1234, file_size=4096)
    sb.build({"enabled": File(lambda: b"[" + (store[-1] if store else b"never") + b"]\n", 0o644, writer),
              "ro": "x\n"})
    vfs.mkdir(ctx, ctx.cwd, "/t", 0o755)
    mount_at(ctx, "/t", sb)
    fd = vfs.open(ctx, ctx.cwd, "/t/enabled", os.O_RDWR)
    assert fd.read(100) == b"[never]\n"
    assert fd.write(b"always\n") == 7
    assert err(fd.write, b"sometimes") == errno.EINVAL
    assert fd.pread(100, 0) == b"[always]\n"
    fd.dec_ref()
    assert err(vfs.open, ctx, ctx.cwd, "/t/ro", os.O_WRONLY) == errno.EACCES  # sysfs-style refusal


def test_synthetic_setattr_changes_attributes_and_ignores_size(
    vfs: VirtualFilesystem, syn: tuple[FSContext, list[int]]
) -> None:
    ctx, _ = syn
    vd = resolve(ctx, ctx.root, "/syn/text")
    vfs.chmod(ctx, vd, 0o440)
    vfs.chown(ctx, vd, 5, 6)
    st = vfs.stat(ctx, ctx.cwd, "/syn/text")
    assert (st.mode & 0o777, st.uid, st.gid) == (0o440, 5, 6)
    vfs.truncate(ctx, vd, 0)
    assert read_file(vfs, ctx, "/syn/text") == "caf\u00e9\n".encode()
    sub = resolve(ctx, ctx.root, "/syn/sub").inode
    assert err(sub.setattr, SetAttr(size=0)) == errno.EISDIR


def test_tree_descriptions_are_checked() -> None:
    sb = SyntheticSuperblock("testfs", 0x1234)
    with pytest.raises(RuntimeError):
        sb.root()
    with pytest.raises(ValueError, match="not a synthetic tree node"):
        sb.build({"x": 42})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="invalid name"):
        sb.build({"a/b": "x"})
    with pytest.raises(ValueError, match="invalid name"):
        sb.build({"..": "x"})
    other = SyntheticSuperblock("other", 1)
    with pytest.raises(ValueError, match="belong"):
        sb.build({"x": SyntheticFile(other, "x")})
    d = SyntheticDir(sb)
    d.add("a", SyntheticFile(sb, "a"))
    with pytest.raises(ValueError, match="already"):
        d.add("a", SyntheticFile(sb, "b"))
    with pytest.raises(ValueError, match="root"):
        sb.set_root(SyntheticFile(sb, "f"))
    sb.set_root(d)
    root: Inode = sb.root()
    assert root is d and [e.name for e in d.iterate(0)] == ["a"]


def test_prebuilt_inodes_join_a_tree(vfs: VirtualFilesystem, ctx: FSContext) -> None:
    class Upper(SyntheticFile):
        def generate(self) -> bytes:
            return super().generate().upper()

    sb = SyntheticSuperblock("testfs", 0x1234)
    sb.build({"u": Upper(sb, "shout\n")})
    vfs.mkdir(ctx, ctx.cwd, "/p", 0o755)
    mount_at(ctx, "/p", sb)
    assert read_file(vfs, ctx, "/p/u") == b"SHOUT\n"
