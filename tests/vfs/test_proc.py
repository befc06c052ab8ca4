"""proc through the VFS (Linux ``fs/proc``; gVisor ``fsimpl/proc``): every
file is made from the sentry's state (a Kernel without a platform, tasks made
by hand with real memory managers over the memory file), and formats are
checked against Linux's, using the host's own /proc where it helps."""

from __future__ import annotations

import errno
import os
import pickle
import re
import resource
import stat
import struct
from collections.abc import Iterator

import cloudpickle
import pytest

from pyrunsc.core.abi import CAPABILITIES, RLIM_INFINITY, RLIMITS
from pyrunsc.core.arch import Registers
from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import ALL_CAPS, CAP_SYS_ADMIN, Credentials
from pyrunsc.core.kernel.kernel import ExitStatus, Kernel
from pyrunsc.core.kernel.task import SignalAction, Task, ThreadGroup
from pyrunsc.core.mm.elf import ELFInfo, build_stack
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.mm.mm import MemoryManager
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.platform import PROT_EXEC, PROT_READ, PROT_WRITE
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.vfs.fdtable import FDTable
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import DT_DIR, DT_LNK, major, minor
from pyrunsc.core.vfs.mount import Dentry, Mount, MountNamespace
from pyrunsc.core.vfs.namei import FSContext, resolve
from pyrunsc.core.vfs.pipe import new_pipe, pipefs_mount
from pyrunsc.core.vfs.vfs import VirtualFilesystem
from pyrunsc.plugins.fs_proc import PROC_SUPER_MAGIC, Procfs, ProcSuperblock
from pyrunsc.plugins.fs_proc.procfs import sandbox_cpuinfo
from pyrunsc.plugins.fs_proc.tasks import cpu_mask, escape_path

from .conftest import listdir, mount_at, write_file

EXE = "/bin/busybox"
ARGV = [b"sh", b"-c", b"echo hi"]
ENVP = [b"PATH=/bin", b"HOME=/root"]
HOST_CPUS = len(os.sched_getaffinity(0))
CAP_SYS_PTRACE = CAPABILITIES.index("CAP_SYS_PTRACE")
STATIC = ["self", "thread-self", "mounts", "cmdline", "cpuinfo", "filesystems", "loadavg", "meminfo", "stat",
          "uptime", "version", "sys"]
TASK_ENTRIES = ["fd", "fdinfo", "environ", "auxv", "status", "limits", "comm", "cmdline", "stat", "statm", "maps",
                "cwd", "root", "exe", "mounts", "mountinfo"]


@pytest.fixture
def memfile() -> Iterator[MemoryFile]:
    """Room for the heap's 1 GiB reservation (the file is sparse)."""
    mf = MemoryFile(size=1 << 33)
    yield mf
    mf.close()


@pytest.fixture
def kernel(vfs: VirtualFilesystem, memfile: MemoryFile, ns: MountNamespace, mctx: MountContext) -> Kernel:
    k = Kernel(None, memfile, vfs, ns)  # type: ignore[arg-type]  # no platform: the sentry's view only
    mctx.kernel = k
    return k


@pytest.fixture
def proc(vfs: VirtualFilesystem, mctx: MountContext, ctx: FSContext, kernel: Kernel) -> Mount:
    """proc at /proc (nosuid,nodev,noexec, source "proc"), /tmp and /home exist."""
    for d in ("/proc", "/tmp", "/home"):
        vfs.mkdir(ctx, ctx.cwd, d, 0o755)
    sb = mctx.new_superblock("proc")
    m = Mount(sb, Dentry(sb.root()), MountFlags(no_suid=True, no_dev=True, no_exec=True), source="proc")
    ctx.ns.attach(resolve(ctx, ctx.root, "/proc"), m)
    return m


def make_task(
    kernel: Kernel, tid: int, *, creds: Credentials | None = None, comm: str = "sh", argv: list[bytes] = ARGV,
    envp: list[bytes] = ENVP, parent: Task | None = None, cwd: str = "/", thread_of: Task | None = None,
) -> Task:
    """A task with busybox-like memory: code and data of EXE, a heap, and a
    stack with argv/envp/auxv as the ELF loader lays them out."""
    mm = MemoryManager(kernel.memfile)
    mm.map_data(0x400000, 0x2000, PROT_READ | PROT_EXEC, b"\x7fELF" + bytes(0x1FFC), fixed=True, name=EXE)
    mm.map_data(0x402000, 0x1000, PROT_READ | PROT_WRITE, b"data", fixed=True, name=EXE, file_offset=0x2000)
    mm.set_brk_start(0x403000)
    mm.set_brk(0x405000)
    mm.copy_out(0x403000, b"heap")
    mm.executable = EXE
    build_stack(mm, ELFInfo(entry=0x400100, bias=0, phdr_addr=0x400040, phnum=2, end=0x403000), argv, envp,
                EXE.encode())
    ns = kernel.ns
    creds = creds or Credentials()
    fs = FSContext(ns, ns.root, ns.root, creds)
    fs.cwd = resolve(fs, ns.root, cwd)
    task = Task(kernel, tid, Registers(), mm, fs, FDTable(), comm=comm)
    if thread_of is not None:
        task.tg = thread_of.tg
        task.tg.tasks.append(task)
    else:
        pgid = parent.pgid if parent else tid
        task.tg = ThreadGroup(tid, task, [task], parent=parent.tg if parent else None, pgid=pgid, sid=pgid)
        if parent is not None:
            parent.tg.children.append(task.tg)
    kernel.tasks[tid] = task
    return task


@pytest.fixture
def init(kernel: Kernel, proc: Mount) -> Task:
    """Task 1 (root), the one being served."""
    t = make_task(kernel, 1)
    kernel.current = t
    return t


def read(vfs: VirtualFilesystem, ctx: FSContext, path: str) -> bytes:
    fd = vfs.open(ctx, ctx.cwd, path, os.O_RDONLY)
    try:
        out = b""
        while chunk := fd.read(4096):
            out += chunk
        return out
    finally:
        fd.dec_ref()


def text(vfs: VirtualFilesystem, ctx: FSContext, path: str) -> str:
    return read(vfs, ctx, path).decode()


def err(fn: object, *args: object) -> int:
    assert callable(fn)
    with pytest.raises(SyscallError) as e:
        fn(*args)
    return e.value.errno


def status_fields(s: str) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition(":\t") for line in s.splitlines())}


def host_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def user_creds(uid: int = 1000, gid: int = 1000, caps: int | None = None) -> Credentials:
    return Credentials.for_user(uid, gid, caps=caps)


# The root directory.


def test_root_lists_fixed_entries_then_leaders(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                               init: Task) -> None:
    make_task(kernel, 7, parent=init)
    assert listdir(vfs, ctx, "/proc") == [*STATIC, "1", "7"]
    st = vfs.stat(ctx, ctx.cwd, "/proc")
    assert st.mode == stat.S_IFDIR | 0o555
    assert st.nlink == 2 + 1 + 2  # sys/ and the two pid directories
    assert vfs.statfs(ctx, ctx.cwd, "/proc").type == PROC_SUPER_MAGIC == 0x9FA0


def test_pid_directories_come_and_go(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    t = make_task(kernel, 5, parent=init)
    ino = vfs.stat(ctx, ctx.cwd, "/proc/5").ino
    assert vfs.stat(ctx, ctx.cwd, "/proc/5").ino == ino  # the same inode while the task lives
    fd = vfs.open(ctx, ctx.cwd, "/proc/5/status", os.O_RDONLY)
    del kernel.tasks[5]
    assert "5" not in listdir(vfs, ctx, "/proc")
    assert err(vfs.stat, ctx, ctx.cwd, "/proc/5") == errno.ENOENT
    assert err(fd.pread, 100, 0) == errno.ESRCH  # Linux: reading a dead task's file
    fd.dec_ref()
    t2 = make_task(kernel, 5, parent=init, comm="again")  # the pid reused by a new task
    assert t2 is not t
    assert vfs.stat(ctx, ctx.cwd, "/proc/5").ino != ino
    assert text(vfs, ctx, "/proc/5/comm") == "again\n"


def test_pid_names_are_canonical(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    for name in ("01", "+1", "1 ", "99", "x"):
        assert err(vfs.stat, ctx, ctx.cwd, f"/proc/{name}") == errno.ENOENT


def test_threads_are_found_but_not_listed(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                          init: Task) -> None:
    # A thread of task 1: tgid 1, tid 3 (Linux: /proc/3 exists, hidden from readdir).
    th = make_task(kernel, 3, thread_of=init)
    assert listdir(vfs, ctx, "/proc")[len(STATIC):] == ["1"]
    assert vfs.stat(ctx, ctx.cwd, "/proc/3").mode == stat.S_IFDIR | 0o555
    assert listdir(vfs, ctx, "/proc/1/task") == ["1", "3"]
    assert text(vfs, ctx, "/proc/1/task/3/stat").split()[0] == "3"
    assert status_fields(text(vfs, ctx, "/proc/1/status"))["Threads"] == "2"
    kernel.current = th
    assert vfs.readlink(ctx, ctx.cwd, "/proc/self") == "1"
    assert vfs.readlink(ctx, ctx.cwd, "/proc/thread-self") == "1/task/3"


def test_getdents_cookies_survive_exits(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    for tid in (4, 9):
        make_task(kernel, tid, parent=init)
    fd = vfs.open(ctx, ctx.cwd, "/proc", os.O_RDONLY | os.O_DIRECTORY)
    first = fd.getdents(2 + len(STATIC) + 2)  # ., .., fixed entries, 1 and 4
    assert [e.name for e in first][-2:] == ["1", "4"]
    assert first[-1].type == DT_DIR
    del kernel.tasks[4]  # the last entry read goes away: the listing goes on after it
    assert [e.name for e in fd.getdents()] == ["9"]
    fd.dec_ref()


def test_dead_pid_dentries_are_forgotten(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task,
                                         proc: Mount) -> None:
    """A pid looked up once and never again (a shell loop's children, each
    re-executing through /proc/self/exe) does not keep its task in the dentry
    cache: the sentry's memory and a checkpoint image stayed growing."""
    for tid in range(2, 42):
        task = make_task(kernel, tid, parent=init)
        vfs.stat(ctx, ctx.cwd, f"/proc/{tid}/comm")
        del kernel.tasks[tid]
        task.mm.release()
    cached = proc.root.children
    assert len(cached) <= 32
    assert "2" not in cached


# self and thread-self.


def test_self_and_thread_self(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    assert vfs.readlink(ctx, ctx.cwd, "/proc/self") == "1"
    assert vfs.readlink(ctx, ctx.cwd, "/proc/thread-self") == "1/task/1"
    assert vfs.stat(ctx, ctx.cwd, "/proc/self").ino == vfs.stat(ctx, ctx.cwd, "/proc/1").ino
    assert vfs.stat(ctx, ctx.cwd, "/proc/thread-self").ino == vfs.stat(ctx, ctx.cwd, "/proc/1/task/1").ino
    other = make_task(kernel, 2, parent=init, comm="other")
    kernel.current = other
    assert vfs.readlink(ctx, ctx.cwd, "/proc/self") == "2"
    assert text(vfs, ctx, "/proc/self/comm") == "other\n"


def test_self_without_a_current_task_is_enoent(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                                init: Task) -> None:
    kernel.current = None
    assert err(vfs.readlink, ctx, ctx.cwd, "/proc/self") == errno.ENOENT
    assert err(vfs.stat, ctx, ctx.cwd, "/proc/self/status") == errno.ENOENT
    assert err(vfs.stat, ctx, ctx.cwd, "/proc/thread-self") == errno.ENOENT
    assert err(vfs.open, ctx, ctx.cwd, "/proc/mounts", os.O_RDONLY) == errno.ENOENT  # -> self/mounts
    st = vfs.stat(ctx, ctx.cwd, "/proc/self", follow=False)
    assert stat.S_ISLNK(st.mode) and st.uid == 0


# A task's directory.


def test_task_directory_entries(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    assert listdir(vfs, ctx, "/proc/1") == ["task", *TASK_ENTRIES]
    assert listdir(vfs, ctx, "/proc/1/task") == ["1"]
    assert listdir(vfs, ctx, "/proc/1/task/1") == TASK_ENTRIES  # a thread has no task/
    modes = {name: stat.S_IMODE(vfs.stat(ctx, ctx.cwd, f"/proc/1/{name}", follow=False).mode)
             for name in ["task", *TASK_ENTRIES]}
    assert modes == {
        "task": 0o555, "fd": 0o500, "fdinfo": 0o555, "environ": 0o400, "auxv": 0o400, "status": 0o444,
        "limits": 0o444, "comm": 0o644, "cmdline": 0o444, "stat": 0o444, "statm": 0o444, "maps": 0o444,
        "cwd": 0o777, "root": 0o777, "exe": 0o777, "mounts": 0o444, "mountinfo": 0o444,
    }
    st = vfs.stat(ctx, ctx.cwd, "/proc/1/status")
    assert (st.size, st.nlink) == (0, 1)  # proc files report size 0


def test_entries_are_owned_by_the_tasks_effective_ids(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                                      init: Task) -> None:
    t = make_task(kernel, 2, parent=init, creds=Credentials.for_user(1000, 100).with_ids(euid=1001, egid=101))
    for path in ("/proc/2", "/proc/2/status", "/proc/2/fd", "/proc/2/task/2/maps"):
        st = vfs.stat(ctx, ctx.cwd, path)
        assert (st.uid, st.gid) == (1001, 101), path
    assert vfs.stat(ctx, ctx.cwd, "/proc/2/cwd", follow=False).uid == 1001
    t.fs.creds = t.fs.creds.with_ids(euid=1000, egid=100)  # setresuid: proc follows (pid_revalidate)
    assert (vfs.stat(ctx, ctx.cwd, "/proc/2/status").uid, vfs.stat(ctx, ctx.cwd, "/proc/2").gid) == (1000, 100)
    assert vfs.stat(ctx, ctx.cwd, "/proc/cpuinfo").uid == 0
    vd = resolve(ctx, ctx.root, "/proc/2/status")
    assert err(vfs.chmod, ctx, vd, 0o666) == errno.EPERM  # proc_setattr


def test_cmdline_and_environ_come_from_task_memory(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    assert read(vfs, ctx, "/proc/1/cmdline") == b"sh\0-c\0echo hi\0"
    assert read(vfs, ctx, "/proc/1/environ") == b"PATH=/bin\0HOME=/root\0"
    # The program rewrites its argv in place (setproctitle): the new text
    # counts up to its NUL (Linux get_mm_cmdline).
    mm = init.mm
    area = mm.arg_end - mm.arg_start
    mm.copy_out(mm.arg_start, b"worker\0" + b"x" * (area - 7))
    assert read(vfs, ctx, "/proc/1/cmdline") == b"worker"
    # ... and without a NUL at all, it runs on into the environment up to its first NUL.
    mm.copy_out(mm.arg_start, b"y" * area)
    assert read(vfs, ctx, "/proc/1/cmdline") == b"y" * area + b"PATH=/bin"


def test_cmdline_of_a_task_without_memory_is_empty(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                                  init: Task) -> None:
    t = make_task(kernel, 2, parent=init)
    t.mm.arg_start = t.mm.arg_end = 0
    assert read(vfs, ctx, "/proc/2/cmdline") == b""


def test_auxv_is_the_saved_vector(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    raw = read(vfs, ctx, "/proc/1/auxv")
    pairs = [struct.unpack_from("<QQ", raw, i) for i in range(0, len(raw), 16)]
    assert pairs == init.mm.auxv and pairs[-1] == (0, 0)
    assert dict(pairs)[9] == 0x400100  # AT_ENTRY


def test_comm_reads_and_writes(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    init.comm = "a b)c"
    assert text(vfs, ctx, "/proc/1/comm") == "a b)c\n"
    fd = vfs.open(ctx, ctx.cwd, "/proc/1/comm", os.O_WRONLY)
    assert fd.write(b"renamed-to-something-long\n") == 26
    assert init.comm == "renamed-to-some"  # TASK_COMM_LEN - 1 bytes
    fd.dec_ref()
    other = make_task(kernel, 2, parent=init)
    kernel.current = other  # another process may not (Linux comm_write: EINVAL)
    fd = vfs.open(ctx, ctx.cwd, "/proc/1/comm", os.O_WRONLY)
    assert err(fd.write, b"x") == errno.EINVAL
    fd.dec_ref()


def test_exe_cwd_and_root_links(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/home/u", 0o755)
    write_file(vfs, ctx, "/home/u/notes", b"hello")
    init.fs.cwd = resolve(ctx, ctx.root, "/home/u")
    assert vfs.readlink(ctx, ctx.cwd, "/proc/1/exe") == EXE
    assert vfs.readlink(ctx, ctx.cwd, "/proc/1/cwd") == "/home/u"
    assert vfs.readlink(ctx, ctx.cwd, "/proc/1/root") == "/"
    # Following gives the place itself, which a walk can go on from.
    assert resolve(ctx, ctx.root, "/proc/1/cwd") == init.fs.cwd
    assert resolve(ctx, ctx.root, "/proc/self/root") == ctx.ns.root
    assert read(vfs, ctx, "/proc/1/cwd/notes") == b"hello"
    vfs.unlink(ctx, ctx.cwd, "/home/u/notes")
    vfs.rmdir(ctx, ctx.cwd, "/home/u")
    assert vfs.readlink(ctx, ctx.cwd, "/proc/1/cwd") == "/home/u (deleted)"
    assert vfs.stat(ctx, ctx.cwd, "/proc/1/exe", follow=False).size == 0  # as Linux's magic links


def test_exe_before_exec_is_enoent(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    t = make_task(kernel, 2, parent=init)
    t.mm.executable = ""
    assert err(vfs.readlink, ctx, ctx.cwd, "/proc/2/exe") == errno.ENOENT


def test_root_link_seen_from_a_chrooted_reader(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                               init: Task) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/home/jail", 0o755)
    jailed = make_task(kernel, 2, parent=init, cwd="/home/jail")
    jailed.fs.root = resolve(ctx, ctx.root, "/home/jail")
    assert vfs.readlink(ctx, ctx.cwd, "/proc/2/root") == "/home/jail"  # seen by init
    kernel.current = jailed
    assert vfs.readlink(ctx, ctx.cwd, "/proc/2/cwd") == "/"  # seen by itself


def test_fd_directory(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    write_file(vfs, ctx, "/tmp/a file", b"x" * 10)
    f = vfs.open(ctx, ctx.cwd, "/tmp/a file", os.O_RDWR | os.O_APPEND)
    f.seek(3, os.SEEK_SET)
    d = vfs.open(ctx, ctx.cwd, "/tmp", os.O_RDONLY | os.O_DIRECTORY)
    r, w = new_pipe(pipefs_mount(), 0, 0)
    table = init.fdtable
    assert table.install(f) == 0
    assert table.install(d, cloexec=True) == 1
    assert table.install(r) == 2
    assert table.install(w, min_fd=10) == 10
    assert listdir(vfs, ctx, "/proc/1/fd") == ["0", "1", "2", "10"]
    fdd = vfs.open(ctx, ctx.cwd, "/proc/1/fd", os.O_RDONLY | os.O_DIRECTORY)
    assert {e.type for e in fdd.getdents() if e.name not in (".", "..")} == {DT_LNK}
    fdd.dec_ref()
    assert vfs.readlink(ctx, ctx.cwd, "/proc/1/fd/0") == "/tmp/a file"
    assert vfs.readlink(ctx, ctx.cwd, "/proc/self/fd/1") == "/tmp"
    assert vfs.readlink(ctx, ctx.cwd, "/proc/1/fd/2") == f"pipe:[{r.inode.ino}]"
    assert resolve(ctx, ctx.root, "/proc/1/fd/2") == r.vd  # following gives the description's place
    assert resolve(ctx, ctx.root, "/proc/1/fd/0") == f.vd
    modes = [stat.S_IMODE(vfs.stat(ctx, ctx.cwd, f"/proc/1/fd/{n}", follow=False).mode) for n in (0, 2, 10)]
    assert modes == [0o700, 0o500, 0o300]  # lrwx, lr-x, l-wx as on Linux
    # fdinfo: pos, flags in octal (with O_CLOEXEC from the fd; O_LARGEFILE but for pipes), mnt_id, ino.
    assert listdir(vfs, ctx, "/proc/1/fdinfo") == ["0", "1", "2", "10"]
    info = text(vfs, ctx, "/proc/1/fdinfo/0")
    assert info == (f"pos:\t3\nflags:\t0{os.O_RDWR | os.O_APPEND | 0o100000:o}\nmnt_id:\t{f.vd.mount.id}\n"
                    f"ino:\t{f.inode.ino}\n")
    flags1 = int(status_fields(text(vfs, ctx, "/proc/1/fdinfo/1"))["flags"], 8)
    assert flags1 & os.O_CLOEXEC and flags1 & os.O_DIRECTORY
    assert status_fields(text(vfs, ctx, "/proc/1/fdinfo/10"))["flags"] == "01"  # O_WRONLY
    assert stat.S_IMODE(vfs.stat(ctx, ctx.cwd, "/proc/1/fdinfo/0").mode) == 0o400
    # A closed fd is gone; a reused number names the new file.
    table.close(2)
    assert err(vfs.readlink, ctx, ctx.cwd, "/proc/1/fd/2") == errno.ENOENT
    assert err(vfs.stat, ctx, ctx.cwd, "/proc/1/fdinfo/2") == errno.ENOENT
    assert "2" not in listdir(vfs, ctx, "/proc/1/fd")
    table.install_at(0, vfs.open(ctx, ctx.cwd, "/tmp", os.O_RDONLY))
    assert vfs.readlink(ctx, ctx.cwd, "/proc/1/fd/0") == "/tmp"
    for name in ("-1", "00", "x", "3"):
        assert err(vfs.readlink, ctx, ctx.cwd, f"/proc/1/fd/{name}") == errno.ENOENT
    table.close_all()


def test_fdinfo_opened_then_fd_closed(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    init.fdtable.install(vfs.open(ctx, ctx.cwd, "/tmp", os.O_RDONLY))
    fd = vfs.open(ctx, ctx.cwd, "/proc/1/fdinfo/0", os.O_RDONLY)
    init.fdtable.close(0)
    assert err(fd.pread, 100, 0) == errno.ENOENT
    fd.dec_ref()


def test_maps_are_the_vmas(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    maps = text(vfs, ctx, "/proc/1/maps")
    lines = maps.splitlines()
    assert [line.rstrip() for line in lines] == [line.rstrip() for line in init.mm.maps()]
    assert lines[0].startswith("00400000-00402000 r-xp 00000000 00:00 0 ") and lines[0].endswith(EXE)
    assert lines[1].startswith("00402000-00403000 rw-p 00002000 ")
    assert lines[2].startswith("00403000-00405000 rw-p ") and lines[2].endswith("[heap]")
    assert lines[-1].endswith("[stack]")
    # The host's maps lines have the same shape (the fixed fields end with a space, name or not).
    shape = re.compile(r"^[0-9a-f]+-[0-9a-f]+ [r-][w-][x-][ps] [0-9a-f]{8} [0-9a-f]{2}:[0-9a-f]{2} \d+ ( *\S.*)?$")
    assert all(shape.match(line) for line in lines)
    assert all(shape.match(line) for line in host_text("/proc/self/maps").splitlines())


def test_stat_has_linux_52_fields(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    init.comm = "odd) name"
    init.sigmask = 1 << 1
    init.actions = {13: SignalAction(handler=1), 2: SignalAction(handler=0x401000), 15: SignalAction(handler=0)}
    child = make_task(kernel, 4, parent=init)
    line = text(vfs, ctx, "/proc/1/stat")
    assert line.endswith("\n")
    assert len(host_text("/proc/self/stat").split()) == 52
    pid, rest = line.split(" (", 1)
    comm, rest = rest.rsplit(") ", 1)
    f = [pid, comm, *rest.split()]
    assert len(f) == 52
    assert (f[0], f[1], f[2], f[3], f[4], f[5]) == ("1", "odd) name", "R", "0", "1", "1")
    assert f[19] == "1"  # num_threads
    assert int(f[22]) == sum(v.length for v in init.mm.vmas())  # vsize
    assert int(f[23]) == 5  # rss in pages: code (2), data, heap and stack (1 each: what was written)
    assert int(f[24]) == RLIM_INFINITY  # rsslim
    assert (int(f[25]), int(f[26])) == (0x400000, 0x402000)  # startcode endcode
    assert (f[30], f[31], f[32], f[33]) == ("0", str(1 << 1), str(1 << 12), str(1 << 1))  # signal blocked ign cgt
    assert f[37] == "17"  # exit_signal SIGCHLD
    assert [int(x) for x in f[44:51]] == [0x402000, 0x403000, 0x403000, init.mm.arg_start, init.mm.arg_end,
                                          init.mm.env_start, init.mm.env_end]
    # The other task is sleeping; its parent is 1.
    f4 = text(vfs, ctx, "/proc/4/stat").split()
    assert (f4[2], f4[3]) == ("S", "1")
    assert child.tid == 4


def test_stat_rss_counts_resident_pages(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    before = int(text(vfs, ctx, "/proc/1/stat").rsplit(") ", 1)[1].split()[21])
    init.mm.copy_out(0x404000, b"touch")  # the heap's second page
    after = int(text(vfs, ctx, "/proc/1/stat").rsplit(") ", 1)[1].split()[21])
    assert after == before + 1


def test_stat_hides_addresses_from_others(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                          init: Task) -> None:
    user = make_task(kernel, 2, parent=init, creds=user_creds())
    kernel.current = user
    f = text(vfs, user.fs, "/proc/1/stat").rsplit(") ", 1)[1].split()
    field = lambda i: f[i - 3]  # noqa: E731  # f[0] is field 3 (state)
    assert field(24) != "0"  # rss is shown
    assert all(field(i) == "0" for i in (26, 27, 45, 46, 47, 48, 49, 50, 51))  # the addresses are not
    own = text(vfs, user.fs, "/proc/2/stat").rsplit(") ", 1)[1].split()
    assert own[26 - 3] == str(0x400000)


def test_status_fields_follow_linux(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    init.fs.umask = 0o027
    init.sigmask = (1 << 9) | (1 << 0)
    init.actions = {13: SignalAction(handler=1), 10: SignalAction(handler=0x401000)}
    init.no_new_privs = True
    creds = Credentials(uid=1, gid=2, euid=3, egid=4, suid=5, sgid=6, fsuid=7, fsgid=8, groups=(10, 20),
                        effective=0x3, permitted=0x7, inheritable=0x1, bounding=ALL_CAPS, ambient=0)
    init.fs.creds = creds
    kernel.current = None  # sentry-internal reader
    s = text(vfs, ctx, "/proc/1/status")
    keys = [line.split(":\t")[0] for line in s.splitlines()]
    host_keys = [line.split(":")[0] for line in host_text("/proc/self/status").splitlines()]
    # Every field is one Linux has, in Linux's order.
    assert [k for k in host_keys if k in keys] == keys
    f = status_fields(s)
    assert f["Name"] == "sh" and f["Umask"] == "0027" and f["State"] == "S (sleeping)"
    assert (f["Tgid"], f["Pid"], f["PPid"], f["TracerPid"], f["Ngid"]) == ("1", "1", "0", "0", "0")
    assert f["Uid"] == "1\t3\t5\t7" and f["Gid"] == "2\t4\t6\t8"
    assert f["Groups"] == "10 20 "
    assert f["FDSize"] == "64"
    assert (f["SigBlk"], f["SigIgn"], f["SigCgt"]) == (f"{0x201:016x}", f"{1 << 12:016x}", f"{1 << 9:016x}")
    assert f["SigPnd"] == f["ShdPnd"] == "0" * 16
    assert (f["CapInh"], f["CapPrm"], f["CapEff"]) == ("0" * 15 + "1", "0" * 15 + "7", "0" * 15 + "3")
    assert f["CapBnd"] == f"{ALL_CAPS:016x}" and f["CapAmb"] == "0" * 16
    assert (f["NoNewPrivs"], f["Seccomp"], f["Threads"]) == ("1", "0", "1")
    assert f["SigQ"] == "0/0"  # RLIMIT_SIGPENDING of a new sandbox
    size = sum(v.length for v in init.mm.vmas())
    assert f["VmSize"] == f"{size >> 10:8d} kB" and f["VmPeak"] == f["VmSize"]
    assert f["VmStk"].split()[0] == str(8 << 10)  # the 8 MiB stack
    assert f["VmExe"].split()[0] == "8" and f["VmData"].split()[0] == "12"  # data page + 2 heap pages
    rss = int(f["VmRSS"].split()[0])
    assert rss == sum(int(f[k].split()[0]) for k in ("RssAnon", "RssFile", "RssShmem")) > 0
    assert f["Cpus_allowed"] == cpu_mask(HOST_CPUS)
    assert f["Cpus_allowed_list"] == ("0" if HOST_CPUS == 1 else f"0-{HOST_CPUS - 1}")


def test_status_escapes_the_name_and_counts_fds(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    init.comm = "a\nb\\c"
    init.fdtable.install(vfs.open(ctx, ctx.cwd, "/tmp", os.O_RDONLY), min_fd=100)
    f = status_fields(text(vfs, ctx, "/proc/1/status"))
    assert f["Name"] == "a\\nb\\\\c"
    assert f["FDSize"] == "128"  # Linux's fd table doubles past 64
    init.fdtable.close_all()


def test_statm(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    size, resident, shared, text_, lib, data, dt = map(int, text(vfs, ctx, "/proc/1/statm").split())
    assert size == sum(v.length for v in init.mm.vmas()) // 4096
    assert text_ == 2 and lib == 0 and dt == 0
    assert data == (8 << 20) // 4096 + 3  # stack + data page + heap
    assert 0 < shared <= resident
    assert len(host_text("/proc/self/statm").split()) == 7


def test_limits_match_linux_byte_for_byte(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    # Give the task this process's limits: the table must be the host's own.
    for i in range(len(RLIMITS)):
        soft, hard = resource.getrlimit(i)
        init.rlimits[i] = (RLIM_INFINITY if soft == resource.RLIM_INFINITY else soft,
                           RLIM_INFINITY if hard == resource.RLIM_INFINITY else hard)
    assert text(vfs, ctx, "/proc/1/limits") == host_text("/proc/self/limits")


def test_mounts_and_mountinfo(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext, proc: Mount,
                              init: Task) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/home/my data", 0o755)
    data = mount_at(ctx, "/home/my data", mctx.new_superblock("tmpfs", "size=1m"),
                    MountFlags(read_only=True, no_atime=True, no_exec=True))
    data.source, data.data = "tmpfs", "size=1m"
    root = ctx.ns.root_mount
    mounts = text(vfs, ctx, "/proc/mounts")
    assert mounts == text(vfs, ctx, "/proc/1/mounts") == text(vfs, ctx, "/proc/self/mounts")
    assert vfs.readlink(ctx, ctx.cwd, "/proc/mounts") == "self/mounts"
    assert mounts.splitlines() == [
        f"{root.source} / tmpfs rw,relatime 0 0",
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
        "tmpfs /home/my\\040data tmpfs ro,noexec,noatime,size=1m 0 0",
    ]
    info = text(vfs, ctx, "/proc/1/mountinfo").splitlines()
    dev = proc.sb.dev
    assert info[0].startswith(f"{root.id} {root.id} ")  # the root is its own parent, as in gVisor
    assert info[1] == (f"{proc.id} {root.id} {major(dev)}:{minor(dev)} / /proc "
                       "rw,nosuid,nodev,noexec,relatime - proc proc rw")
    assert info[2].endswith("/ /home/my\\040data ro,noexec,noatime - tmpfs tmpfs rw,size=1m")
    # Same shape as the host's mountinfo lines.
    shape = re.compile(r"^\d+ \d+ \d+:\d+ \S+ \S+ \S+( \S+)* - \S+ \S+ \S+$")
    assert all(shape.match(line) for line in info)
    assert all(shape.match(line) for line in host_text("/proc/self/mountinfo").splitlines())
    assert len(host_text("/proc/self/mounts").splitlines()[0].split()) == len(mounts.splitlines()[0].split()) == 6


def test_mounts_seen_from_a_chroot(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext, kernel: Kernel,
                                   init: Task) -> None:
    vfs.mkdir(ctx, ctx.cwd, "/home/jail", 0o755)
    vfs.mkdir(ctx, ctx.cwd, "/home/jail/tmp", 0o755)
    mount_at(ctx, "/home/jail/tmp", mctx.new_superblock("tmpfs"))
    jailed = make_task(kernel, 2, parent=init)
    jailed.fs.root = resolve(ctx, ctx.root, "/home/jail")
    lines = text(vfs, ctx, "/proc/2/mounts").splitlines()
    assert [line.split()[1] for line in lines] == ["/tmp"]  # / and /proc lie outside its root
    assert [line.split()[1] for line in text(vfs, ctx, "/proc/1/mounts").splitlines()] == [
        "/", "/proc", "/home/jail/tmp"]


def test_task_directory_of_a_thread(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    assert text(vfs, ctx, "/proc/1/task/1/stat") == text(vfs, ctx, "/proc/1/stat")
    assert read(vfs, ctx, "/proc/1/task/1/cmdline") == read(vfs, ctx, "/proc/1/cmdline")
    assert vfs.readlink(ctx, ctx.cwd, "/proc/1/task/1/exe") == EXE
    assert err(vfs.stat, ctx, ctx.cwd, "/proc/1/task/2") == errno.ENOENT


# Task states (Kernel.task_state).


def states(vfs: VirtualFilesystem, ctx: FSContext, path: str) -> tuple[str, str]:
    """(stat's state letter, status's State line) of ``path`` (``/proc/N``)."""
    letter = text(vfs, ctx, f"{path}/stat").rsplit(") ", 1)[1].split()[0]
    return letter, status_fields(text(vfs, ctx, f"{path}/status"))["State"]


def test_states_follow_the_run_queues(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    ready = make_task(kernel, 2, parent=init, comm="ready")
    parked = make_task(kernel, 3, parent=init, comm="parked")
    stopped = make_task(kernel, 4, parent=init, comm="stopped")
    zombie = make_task(kernel, 5, parent=init, comm="zombie")
    kernel._runnable.append(ready)
    kernel._blocked.append(parked)
    stopped.tg.stop_signal = 19  # SIGSTOP
    kernel._stopped.append(stopped)
    zombie.exit_status = zombie.tg.exit_status = ExitStatus(code=3)
    assert states(vfs, ctx, "/proc/1") == ("R", "R (running)")  # the reader, being served
    assert states(vfs, ctx, "/proc/2") == ("R", "R (running)")
    assert states(vfs, ctx, "/proc/3") == ("S", "S (sleeping)")
    assert states(vfs, ctx, "/proc/4") == ("T", "T (stopped)")
    assert states(vfs, ctx, "/proc/5") == ("Z", "Z (zombie)")
    assert [kernel.task_state(t) for t in (init, ready, parked, stopped, zombie)] == ["R", "R", "S", "T", "Z"]
    # Running means the current task and those ready to run: /proc/loadavg and stat count them.
    assert text(vfs, ctx, "/proc/loadavg").split()[3] == "2/5"
    assert "procs_running 2\n" in text(vfs, ctx, "/proc/stat")
    # SIGCONT: the stopped process's task is about to run again; the parked one wakes.
    stopped.tg.stop_signal = 0
    kernel._blocked.remove(parked)
    kernel._runnable.append(parked)
    assert states(vfs, ctx, "/proc/4")[0] == states(vfs, ctx, "/proc/3")[0] == "R"
    # A task in none of the queues is not running (it waits in a blocking host call).
    kernel._runnable.remove(ready)
    assert states(vfs, ctx, "/proc/2")[0] == "S"


def test_states_of_threads(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    """Each thread has its own state; task/ lists the group's threads, also
    once the leader has exited (a zombie leader of a live process)."""
    proc = make_task(kernel, 2, parent=init, comm="threads")
    t3 = make_task(kernel, 3, thread_of=proc)
    t4 = make_task(kernel, 4, thread_of=proc)
    kernel._blocked += [proc, t3]
    kernel._runnable.append(t4)
    assert listdir(vfs, ctx, "/proc/2/task") == ["2", "3", "4"]
    assert [states(vfs, ctx, f"/proc/2/task/{tid}")[0] for tid in (2, 3, 4)] == ["S", "S", "R"]
    assert states(vfs, ctx, "/proc/4")[0] == "R"  # a thread is found by tid, too
    assert status_fields(text(vfs, ctx, "/proc/2/status"))["Threads"] == "3"
    proc.exit_status = ExitStatus()  # the leader ends alone (pthread_exit in main)
    kernel._blocked.remove(proc)
    assert [states(vfs, ctx, f"/proc/2/task/{tid}")[0] for tid in (2, 3, 4)] == ["Z", "S", "R"]
    t4.tg.stop_signal = 19
    assert [states(vfs, ctx, f"/proc/2/task/{tid}")[0] for tid in (2, 3, 4)] == ["Z", "T", "T"]


def test_no_task_is_current_while_loop_calls_run(kernel: Kernel, init: Task) -> None:
    """Calls handed to the run loop (control requests) run with no task
    being served, so the last one served shows as what it is (parked)."""
    kernel._blocked.append(init)
    seen: list[object] = []
    kernel.call_in_loop(lambda: seen.append((kernel.current, kernel.task_state(init))))
    kernel.call_in_loop(lambda: 1 / 0)  # logged, not raised: the next call still runs
    kernel.call_in_loop(lambda: seen.append("after"))
    kernel.run_calls()
    assert seen == [(None, "S"), "after"]
    assert kernel.current is init and kernel.task_state(init) == "R"
    assert not kernel._calls


# Access checks.


def test_private_files_need_the_owner(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    user = make_task(kernel, 2, parent=init, creds=user_creds())
    kernel.current = user
    assert err(vfs.open, user.fs, user.fs.cwd, "/proc/1/environ", os.O_RDONLY) == errno.EACCES
    assert err(vfs.open, user.fs, user.fs.cwd, "/proc/1/fd", os.O_RDONLY | os.O_DIRECTORY) == errno.EACCES
    assert read(vfs, user.fs, "/proc/2/environ") == b"PATH=/bin\0HOME=/root\0"
    assert read(vfs, user.fs, "/proc/self/environ") == b"PATH=/bin\0HOME=/root\0"
    assert text(vfs, user.fs, "/proc/1/status").startswith("Name:\tsh\n")  # world-readable


def test_magic_links_need_ptrace_access(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                        init: Task) -> None:
    user = make_task(kernel, 2, parent=init, creds=user_creds())
    kernel.current = user
    for name in ("cwd", "root", "exe"):
        assert err(vfs.readlink, user.fs, user.fs.cwd, f"/proc/1/{name}") == errno.EACCES
        assert err(resolve, user.fs, user.fs.root, f"/proc/1/{name}") == errno.EACCES
    assert vfs.readlink(user.fs, user.fs.cwd, "/proc/2/cwd") == "/"
    # CAP_SYS_PTRACE lets a reader through (Linux ptrace_has_cap).
    tracer = make_task(kernel, 3, parent=init, creds=user_creds(caps=1 << CAP_SYS_PTRACE))
    kernel.current = tracer
    assert vfs.readlink(tracer.fs, tracer.fs.cwd, "/proc/1/exe") == EXE
    # Same uid but a different saved uid in the target is not enough.
    make_task(kernel, 4, parent=init, creds=user_creds().with_ids(suid=0))
    kernel.current = user
    assert err(vfs.readlink, user.fs, user.fs.cwd, "/proc/4/cwd") == errno.EACCES


# System-wide files.


def test_cpuinfo_has_the_sandbox_cpus(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    info = text(vfs, ctx, "/proc/cpuinfo")
    assert info.count("processor\t:") == HOST_CPUS
    assert info.endswith("\n\n")
    host = host_text("/proc/cpuinfo")
    model = re.search(r"^model name\s*: (.*)$", host, re.M)
    if model:
        assert f": {model.group(1)}\n" in info
    kernel.application_cores = 3  # type: ignore[attr-defined]
    info = text(vfs, ctx, "/proc/cpuinfo")
    assert re.findall(r"^processor\s*: (\d+)$", info, re.M) == ["0", "1", "2"]


def test_sandbox_cpuinfo_renumbers() -> None:
    host = ("processor\t: 0\nmodel name\t: X\nphysical id\t: 1\nsiblings\t: 8\ncore id\t\t: 5\ncpu cores\t: 4\n"
            "apicid\t\t: 10\n\n")
    out = sandbox_cpuinfo(host, 2)
    assert out == (
        "processor\t: 0\nmodel name\t: X\nphysical id\t: 0\nsiblings\t: 2\ncore id\t\t: 0\ncpu cores\t: 2\n"
        "apicid\t\t: 0\n\n"
        "processor\t: 1\nmodel name\t: X\nphysical id\t: 0\nsiblings\t: 2\ncore id\t\t: 1\ncpu cores\t: 2\n"
        "apicid\t\t: 1\n\n"
    )
    assert sandbox_cpuinfo("", 1).startswith("processor\t: 0\n")


def test_meminfo(vfs: VirtualFilesystem, ctx: FSContext, memfile: MemoryFile, init: Task) -> None:
    info = text(vfs, ctx, "/proc/meminfo")
    names = [line.split(":")[0] for line in info.splitlines()]
    host_names = [line.split(":")[0] for line in host_text("/proc/meminfo").splitlines()]
    assert [n for n in host_names if n in names] == names  # Linux's names, in Linux's order
    assert all(re.match(r"^\S+:\s+\d+( kB)?$", line) for line in info.splitlines())
    kb = {n: int(v.split()[0]) for n, _, v in (line.partition(":") for line in info.splitlines())}
    phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert kb["MemTotal"] == min(phys, memfile.size) >> 10
    assert kb["MemFree"] == kb["MemAvailable"] <= kb["MemTotal"]
    assert kb["AnonPages"] > 0  # the task's written pages
    used = kb["MemTotal"] - kb["MemFree"]
    write_file(vfs, ctx, "/tmp/big", b"z" * (1 << 20))  # tmpfs data lives in the memory file too
    kb2 = {n: int(v.split()[0]) for n, _, v in (line.partition(":") for line in
                                                 text(vfs, ctx, "/proc/meminfo").splitlines())}
    assert kb2["MemTotal"] - kb2["MemFree"] >= used + 1024
    assert kb2["Shmem"] >= 1024 and kb2["Cached"] == kb2["Shmem"]


def test_uptime_stat_loadavg_version(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    kernel.timekeeper._mono_offset += 3600 * 10**9  # an hour since boot
    up, idle = map(float, text(vfs, ctx, "/proc/uptime").split())
    # Both are cut to hundredths, each at its own instant: idle may pass up * CPUs by up to 0.01 * CPUs.
    assert 3600 <= up < 3700 and 0 <= idle <= (up + 0.01) * HOST_CPUS
    assert re.match(r"^\d+\.\d\d \d+\.\d\d\n$", text(vfs, ctx, "/proc/uptime"))
    make_task(kernel, 2, parent=init)
    kernel._next_tid = 3
    s = text(vfs, ctx, "/proc/stat")
    lines = s.splitlines()
    assert lines[0].startswith("cpu  ") and len(lines[0].split()) == 11
    assert [line.split()[0] for line in lines[1 : 1 + HOST_CPUS]] == [f"cpu{i}" for i in range(HOST_CPUS)]
    fields = dict(line.split(" ", 1) for line in lines[1 + HOST_CPUS :])
    btime = int(fields["btime"])
    assert abs(btime - (kernel.timekeeper.realtime() // 10**9 - 3600)) <= 2
    assert (fields["processes"], fields["procs_running"], fields["procs_blocked"]) == ("2", "1", "0")
    host_keys = [line.split()[0] for line in host_text("/proc/stat").splitlines()]
    assert [k for k in fields if k not in host_keys] == []
    assert text(vfs, ctx, "/proc/loadavg") == "0.00 0.00 0.00 1/2 2\n"
    kernel.uts.release, kernel.uts.version = "4.4.0", "#1 SMP Sun Jan 10 15:06:54 PST 2016"
    assert text(vfs, ctx, "/proc/version") == "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n"
    assert text(vfs, ctx, "/proc/cmdline").startswith("BOOT_IMAGE=/vmlinuz-4.4.0-pyrunsc")


def test_filesystems_lists_the_registered_types(vfs: VirtualFilesystem, ctx: FSContext, mctx: MountContext,
                                                init: Task) -> None:
    lines = text(vfs, ctx, "/proc/filesystems").splitlines()
    assert lines == [f"nodev\t{name}" for name in mctx.filesystems]
    assert "nodev\tproc" in lines and "nodev\ttmpfs" in lines
    assert all(re.match(r"^(nodev)?\t\S+$", line) for line in host_text("/proc/filesystems").splitlines())


def test_sysctls(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel, init: Task) -> None:
    kernel.uts.hostname = "box"
    assert listdir(vfs, ctx, "/proc/sys") == ["kernel", "fs", "vm"]
    expect = {
        "kernel/hostname": "box", "kernel/ostype": "Linux", "kernel/osrelease": kernel.uts.release,
        "kernel/version": kernel.uts.version, "kernel/domainname": "(none)", "kernel/pid_max": "4194304",
        "kernel/cap_last_cap": str(len(CAPABILITIES) - 1), "fs/nr_open": "1048576",
        "fs/file-max": str(2**63 - 1), "vm/overcommit_memory": "0", "vm/mmap_min_addr": "65536",
    }
    for path, value in expect.items():
        assert text(vfs, ctx, f"/proc/sys/{path}") == value + "\n", path
    host_cap = host_text("/proc/sys/kernel/cap_last_cap").strip()
    assert int(host_cap) >= len(CAPABILITIES) - 1


def test_hostname_is_writable_with_cap_sys_admin(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                                 init: Task) -> None:
    assert stat.S_IMODE(vfs.stat(ctx, ctx.cwd, "/proc/sys/kernel/hostname").mode) == 0o644
    write_file(vfs, ctx, "/proc/sys/kernel/hostname", b"sandbox\n")
    assert kernel.uts.hostname == "sandbox"
    assert text(vfs, ctx, "/proc/sys/kernel/hostname") == "sandbox\n"
    write_file(vfs, ctx, "/proc/sys/kernel/hostname", b"h" * 80)
    assert kernel.uts.hostname == "h" * 64  # __NEW_UTS_LEN
    # A user may not open it for writing (mode 0644, root's).
    user = make_task(kernel, 2, parent=init, creds=user_creds())
    kernel.current = user
    assert err(vfs.open, user.fs, user.fs.cwd, "/proc/sys/kernel/hostname", os.O_WRONLY) == errno.EACCES
    # Root without CAP_SYS_ADMIN may open it but not set the name.
    weak = make_task(kernel, 3, parent=init, creds=Credentials(effective=ALL_CAPS & ~(1 << CAP_SYS_ADMIN)))
    kernel.current = weak
    fd = vfs.open(weak.fs, weak.fs.cwd, "/proc/sys/kernel/hostname", os.O_WRONLY)
    assert err(fd.write, b"evil") == errno.EPERM
    fd.dec_ref()
    assert kernel.uts.hostname == "h" * 64


@pytest.mark.parametrize("path", ["/proc/cpuinfo", "/proc/sys/kernel/ostype", "/proc/1/status", "/proc/1/stat"])
def test_read_only_files_take_write_opens_and_fail_writes(vfs: VirtualFilesystem, ctx: FSContext, kernel: Kernel,
                                                          init: Task, path: str) -> None:
    fd = vfs.open(ctx, ctx.cwd, path, os.O_WRONLY)  # root: proc opens it (proc_reg_open)
    assert err(fd.write, b"x") == errno.EIO  # ... and fails the write (proc_reg_write)
    fd.dec_ref()
    user = make_task(kernel, 2, parent=init, creds=user_creds())
    assert err(vfs.open, user.fs, user.fs.cwd, path, os.O_WRONLY) == errno.EACCES  # mode 0444


def test_names_cannot_be_created_or_removed(vfs: VirtualFilesystem, ctx: FSContext, init: Task) -> None:
    c = ctx
    assert err(vfs.mkdir, c, c.cwd, "/proc/new", 0o755) == errno.EPERM
    assert err(vfs.mkdir, c, c.cwd, "/proc/1/new", 0o755) == errno.EPERM
    assert err(vfs.unlink, c, c.cwd, "/proc/cpuinfo") == errno.EPERM
    assert err(vfs.unlink, c, c.cwd, "/proc/1/status") == errno.EPERM
    assert err(vfs.open, c, c.cwd, "/proc/1/new", os.O_CREAT | os.O_WRONLY, 0o644) == errno.EACCES
    assert err(vfs.symlink, c, "x", c.cwd, "/proc/link") == errno.EPERM


# Mounting.


def test_proc_takes_no_mount_data(mctx: MountContext) -> None:
    assert err(mctx.new_superblock, "proc", "hidepid=2") == errno.EINVAL
    assert Procfs.data_keys == () and Procfs.mount_types == ("proc",) and Procfs.name == "proc"


def test_proc_mounted_before_the_kernel_exists(vfs: VirtualFilesystem, memfile: MemoryFile, ctx: FSContext,
                                               plugins: Plugins) -> None:
    # The sandbox mounts proc while building the namespace, before the kernel.
    mctx = MountContext(vfs, memfile, filesystems=dict(plugins.registry.filesystems))
    vfs.mkdir(ctx, ctx.cwd, "/proc", 0o755)
    mount_at(ctx, "/proc", mctx.new_superblock("proc"))
    assert listdir(vfs, ctx, "/proc") == STATIC
    assert err(vfs.readlink, ctx, ctx.cwd, "/proc/self") == errno.ENOENT
    assert text(vfs, ctx, "/proc/sys/kernel/hostname") == "localhost\n"
    kernel = Kernel(None, memfile, vfs, ctx.ns)  # type: ignore[arg-type]
    mctx.kernel = kernel
    kernel.current = make_task(kernel, 1)
    assert listdir(vfs, ctx, "/proc") == [*STATIC, "1"]
    assert vfs.readlink(ctx, ctx.cwd, "/proc/self") == "1"


def test_a_kernel_less_proc_pickles(memfile: MemoryFile, vfs: VirtualFilesystem, plugins: Plugins) -> None:
    """A checkpoint pickles the superblock with the kernel; the mount
    context (which holds the memory file) is left out."""
    mctx = MountContext(vfs, memfile, filesystems=dict(plugins.registry.filesystems))
    sb = Procfs.mount(mctx, "proc", MountFlags(), "")
    assert isinstance(sb, ProcSuperblock)
    with pytest.raises(TypeError):
        pickle.dumps(memfile)
    copy = cloudpickle.loads(cloudpickle.dumps(sb))
    assert isinstance(copy, ProcSuperblock) and copy.kernel is None
    assert copy.root().lookup("version").generate().startswith(b"Linux version ")


def test_escape_path() -> None:
    assert escape_path("/a b\tc\nd\\e") == "/a\\040b\\011c\\012d\\134e"
    assert cpu_mask(1) == "1" and cpu_mask(4) == "f" and cpu_mask(40) == "ff,ffffffff"

