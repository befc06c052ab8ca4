"""The proc filesystem's superblock, root and system-wide files (Linux
``fs/proc/root.c``, ``base.c``, ``meminfo.c``, ``stat.c``, ``proc_sysctl.c``;
gVisor ``fsimpl/proc/tasks.go``, ``tasks_files.go``, ``tasks_sys.go``).

The root (0555) lists, in this order::

    self           -> "<tgid>" of the task being served (readlink and follow: ENOENT when none)
    thread-self    -> "<tgid>/task/<tid>"
    mounts         -> "self/mounts"
    cmdline        "BOOT_IMAGE=/vmlinuz-<release>-pyrunsc quiet\\n"
    cpuinfo        the host's CPU descriptions for the sandbox's CPUs (see :func:`sandbox_cpuinfo`)
    filesystems    "nodev\\t<name>\\n" per registered filesystem type
    loadavg        "0.00 0.00 0.00 <running>/<tasks> <last pid>\\n"
    meminfo        Linux's layout; MemTotal the host's memory (at most the memory file's size),
                   used memory what the memory file holds
    stat           cpu lines, intr, ctxt, btime, processes, procs_running, procs_blocked, softirq
    uptime         "<uptime> <idle>\\n" in seconds, from the sentry's monotonic clock
    version        "Linux version <release> <version>\\n" from the UTS namespace (as gVisor)
    sys/kernel/{hostname, domainname, ostype, osrelease, version, pid_max, cap_last_cap, ngroups_max}
    sys/fs/{file-max, nr_open}
    sys/vm/{overcommit_memory, max_map_count, mmap_min_addr}
    <pid>/         one per thread-group leader of the kernel (see :mod:`.tasks`)

and looks up ``<tid>`` of any task, leader or not (hidden from the listing,
as on Linux). The pid directories come and go with the tasks: the superblock
does not cache dentries (:attr:`Superblock.cache_dentries` False) and a pid's
directory inode lives as long as its task.

Files are mode 0444 and report size 0. Following proc's policy (Linux
``proc_reg_write``), opening a read-only file for writing works where the
mode allows it (root) and each write is EIO. ``sys/kernel/hostname`` and
``domainname`` (0644) take writes: the value up to the first newline or NUL,
at most 64 bytes, becomes the UTS namespace's; EPERM for a writer without
CAP_SYS_ADMIN, as sethostname(2) (Linux checks only the mode, which lets
root through).

The kernel is what ``MountContext.kernel`` names; when proc is mounted before
the kernel exists (the sandbox builds its mounts first), it is looked up again
at each access until set. Without a kernel there are no tasks, ``self`` is
ENOENT and the UTS names are the defaults.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pyrunsc.core.abi import CAPABILITIES
from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import CAP_SYS_ADMIN
from pyrunsc.core.vfs.inode import DT_DIR, DirEntry, Inode, Stat
from pyrunsc.core.vfs.synthetic import File, Link, Node, SyntheticDir, SyntheticSuperblock, SyntheticSymlink

from .tasks import USER_HZ, TaskDir, alive, resident_bytes, sandbox_cpus

if TYPE_CHECKING:
    from pyrunsc.core.kernel.kernel import Kernel, UTSNamespace
    from pyrunsc.core.kernel.task import Task
    from pyrunsc.core.mm.memfile import MemoryFile
    from pyrunsc.core.vfs.filesystem import FilesystemType, MountContext

PROC_SUPER_MAGIC = 0x9FA0
#: The highest pid (gVisor ``kernel.TasksLimit``).
PID_MAX = 4194304
#: Linux ``sysctl_nr_open``'s default: the most RLIMIT_NOFILE may be raised to.
NR_OPEN = 1048576
#: Linux ``files_stat.max_files`` when memory does not bound it.
FILE_MAX = 2**63 - 1
#: Linux ``__NEW_UTS_LEN``: the longest host or domain name.
UTS_LEN = 64
MMAP_MIN_ADDR = 65536
MAX_MAP_COUNT = 65530


def _host_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


_CPUINFO_FIELDS = re.compile(r"^(processor|physical id|siblings|core id|cpu cores|apicid|initial apicid)(\s*):")


def sandbox_cpuinfo(host: str, ncpus: int) -> str:
    """``/proc/cpuinfo`` for ``ncpus`` CPUs from the host's text ``host``:
    the host's first ``ncpus`` processor blocks (repeated when it has fewer),
    renumbered so that each CPU is its own core of package 0, as the sandbox's
    sysfs topology says (``processor``, ``core id``, ``apicid``,
    ``initial apicid`` = i; ``physical id`` 0; ``siblings``, ``cpu cores`` =
    ncpus). Without host text, minimal blocks (processor, vendor_id, model
    name)."""
    blocks = [b for b in host.split("\n\n") if b.strip().startswith("processor")]
    if not blocks:
        blocks = ["processor\t: 0\nvendor_id\t: unknown\nmodel name\t: unknown"]
    out = []
    for i in range(ncpus):
        values = {"processor": i, "physical id": 0, "siblings": ncpus, "core id": i, "cpu cores": ncpus,
                  "apicid": i, "initial apicid": i}
        lines = []
        for line in blocks[i % len(blocks)].strip("\n").split("\n"):
            m = _CPUINFO_FIELDS.match(line)
            lines.append(f"{m.group(1)}{m.group(2)}: {values[m.group(1)]}" if m else line)
        out.append("\n".join(lines) + "\n\n")
    return "".join(out)


def host_memory() -> int:
    """The host's physical memory in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - not Linux
        return 0


class SelfLink(SyntheticSymlink):
    """``self`` (``thread`` False) or ``thread-self`` (Linux
    ``proc_self_get_link``, ``proc_thread_self_get_link``): the current task's
    tgid, or ``<tgid>/task/<tid>``; ENOENT for readlink and follow when no
    task is being served."""

    def __init__(self, sb: ProcSuperblock, *, thread: bool) -> None:
        super().__init__(sb, "")
        self.thread = thread

    def readlink(self) -> str:
        sb = self.sb
        assert isinstance(sb, ProcSuperblock)
        kernel = sb.kernel
        cur = kernel.current if kernel is not None else None
        if cur is None:
            raise SyscallError(errno.ENOENT)
        return f"{cur.tgid}/task/{cur.tid}" if self.thread else str(cur.tgid)

    def get_link(self, ctx: Any) -> Any:
        return self.readlink()

    @property
    def size(self) -> int:
        try:
            return len(self.readlink())
        except SyscallError:
            return 0


def _pid_name(name: str) -> int | None:
    """The pid a name stands for: canonical decimal only (Linux
    ``name_to_int``: no sign, no leading zero)."""
    if not name.isascii() or not name.isdigit() or (len(name) > 1 and name[0] == "0"):
        return None
    return int(name)


class ProcRoot(SyntheticDir):
    """The root: the fixed entries first (cookies 3...), then a directory per
    thread-group leader by pid, with cookie ``pid_base + pid`` so that a
    listing resumes correctly while processes come and go."""

    def __init__(self, sb: ProcSuperblock) -> None:
        super().__init__(sb, 0o555)
        self._tasks: dict[int, TaskDir] = {}

    @property
    def pid_base(self) -> int:
        return 3 + len(self.children)

    def _proc(self) -> ProcSuperblock:
        sb = self.sb
        assert isinstance(sb, ProcSuperblock)
        return sb

    def _prune(self) -> list[Task]:
        """The live tasks, forgetting the directories of the dead."""
        kernel = self._proc().kernel
        tasks = list(kernel.tasks.values()) if kernel is not None else []
        for tid in [tid for tid, d in self._tasks.items() if not alive(d.task)]:
            del self._tasks[tid]
        return tasks

    def task_dir(self, task: Task) -> TaskDir:
        """The directory of ``task`` (the same inode while it lives)."""
        d = self._tasks.get(task.tid)
        if d is None or d.task is not task:
            d = TaskDir(self._proc(), task)
            self._tasks[task.tid] = d
        return d

    def lookup(self, name: str) -> Inode:
        if name in self.children:
            return self.children[name]
        pid = _pid_name(name)
        kernel = self._proc().kernel
        task = kernel.tasks.get(pid) if kernel is not None and pid is not None else None
        self._prune()
        if task is None:
            raise SyscallError(errno.ENOENT)
        return self.task_dir(task)

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        yield from super().iterate(cookie)
        base = self.pid_base
        leaders = sorted((t for t in self._prune() if t.tid == t.tgid), key=lambda t: t.tid)
        for t in leaders:
            if base + t.tid > cookie:
                yield DirEntry(str(t.tid), self.task_dir(t).ino, DT_DIR, base + t.tid)

    def stat(self) -> Stat:
        """nlink counts the pid directories too."""
        s = super().stat()
        s.nlink += sum(1 for t in self._prune() if t.tid == t.tgid)
        return s


class ProcSuperblock(SyntheticSuperblock):
    """One proc instance (see the module docstring).

    ``kernel`` is the kernel whose tasks it shows (None: none yet; see
    ``context``); ``filesystems`` the registered filesystem types by name;
    ``context`` a MountContext whose ``kernel`` is used once it is set (it is
    not kept in a checkpoint).
    """

    cache_dentries = False

    def __init__(
        self,
        kernel: Kernel | None = None,
        *,
        filesystems: dict[str, type[FilesystemType]] | None = None,
        context: MountContext | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__("proc", PROC_SUPER_MAGIC, file_size=0, refuse_write_open=False, dir_mode=0o555,
                         file_mode=0o444, clock=clock)
        self._kernel = kernel
        self._context = context
        self.filesystems = filesystems if filesystems is not None else {}
        self._cpuinfo: str | None = None
        #: The sentry's CPU time when this proc was made: /proc/stat and
        #: uptime count the sandbox's busy time from here.
        self._cpu_base = time.process_time_ns()
        root = ProcRoot(self)
        for name, node in self.tree().items():
            root.add(name, self.make(node))
        self.set_root(root)

    @property
    def kernel(self) -> Kernel | None:
        if self._kernel is None and self._context is not None and self._context.kernel is not None:
            self._kernel = self._context.kernel
        return self._kernel

    def __getstate__(self) -> dict[str, Any]:
        """The mount context is not saved; the busy time is saved as a count,
        so that it goes on from there in the restoring process."""
        state = self.__dict__.copy()
        state["_context"] = None
        state["_cpu_base"] = self.busy_ns()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cpu_base = time.process_time_ns() - state["_cpu_base"]

    def tree(self) -> dict[str, Node]:
        """The fixed entries of the root."""
        return {
            "self": SelfLink(self, thread=False),
            "thread-self": SelfLink(self, thread=True),
            "mounts": Link("self/mounts"),
            "cmdline": self.cmdline,
            "cpuinfo": self.cpuinfo,
            "filesystems": self.filesystems_text,
            "loadavg": self.loadavg,
            "meminfo": self.meminfo,
            "stat": self.stat_text,
            "uptime": self.uptime,
            "version": self.version,
            "sys": {
                "kernel": {
                    "hostname": File(lambda: self.uts().hostname + "\n", 0o644, self.set_hostname),
                    "domainname": File(lambda: self.uts().domainname + "\n", 0o644, self.set_domainname),
                    "ostype": lambda: self.uts().sysname + "\n",
                    "osrelease": lambda: self.uts().release + "\n",
                    "version": lambda: self.uts().version + "\n",
                    "pid_max": f"{PID_MAX}\n",
                    "cap_last_cap": f"{len(CAPABILITIES) - 1}\n",
                    "ngroups_max": "65536\n",
                },
                "fs": {"file-max": f"{FILE_MAX}\n", "nr_open": f"{NR_OPEN}\n"},
                "vm": {
                    "overcommit_memory": "0\n",
                    "max_map_count": f"{MAX_MAP_COUNT}\n",
                    "mmap_min_addr": f"{MMAP_MIN_ADDR}\n",
                },
            },
        }

    # The kernel's state, or defaults before there is a kernel.

    def uts(self) -> UTSNamespace:
        kernel = self.kernel
        if kernel is not None:
            return kernel.uts
        from pyrunsc.core.kernel.kernel import UTSNamespace

        return UTSNamespace()

    def tasks(self) -> list[Task]:
        kernel = self.kernel
        return list(kernel.tasks.values()) if kernel is not None else []

    def ncpus(self) -> int:
        return sandbox_cpus(self.kernel)

    def uptime_ns(self) -> int:
        kernel = self.kernel
        return kernel.timekeeper.monotonic() if kernel is not None else 0

    def busy_ns(self) -> int:
        """CPU time the sentry spent since proc was mounted (the sandbox's
        busy time), at most the uptime times the CPUs."""
        if self.kernel is None:
            return 0
        return min(max(0, time.process_time_ns() - self._cpu_base), self.uptime_ns() * self.ncpus())

    def running(self) -> int:
        """Tasks running or ready to run (state R: Linux ``nr_running``)."""
        kernel = self.kernel
        if kernel is None:
            return 0
        return sum(1 for t in kernel.tasks.values() if kernel.task_state(t) == "R")

    def last_pid(self) -> int:
        kernel = self.kernel
        if kernel is None:
            return 0
        return max(getattr(kernel, "_next_tid", 1) - 1, max(kernel.tasks, default=0))

    def memfile(self) -> MemoryFile | None:
        kernel = self.kernel
        if kernel is not None:
            return kernel.memfile
        return self._context.memfile if self._context is not None else None

    # The files.

    def cmdline(self) -> str:
        return f"BOOT_IMAGE=/vmlinuz-{self.uts().release}-pyrunsc quiet\n"

    def cpuinfo(self) -> str:
        if self._cpuinfo is None:
            self._cpuinfo = _host_cpuinfo()
        return sandbox_cpuinfo(self._cpuinfo, self.ncpus())

    def filesystems_text(self) -> str:
        """Linux ``filesystems_proc_show``: ``nodev`` unless the type needs a
        block device (a ``requires_dev`` class attribute), a tab, the name."""
        return "".join(
            f"{'' if getattr(fs, 'requires_dev', False) else 'nodev'}\t{name}\n"
            for name, fs in self.filesystems.items()
        )

    def loadavg(self) -> str:
        """gVisor's: no load is tracked, so the averages are 0.00."""
        return f"0.00 0.00 0.00 {self.running()}/{len(self.tasks())} {self.last_pid()}\n"

    def uptime(self) -> str:
        """Linux ``uptime_proc_show``: seconds since boot and seconds all
        CPUs were idle (uptime times CPUs less the sentry's CPU time)."""
        up = self.uptime_ns()
        idle = max(0, up * self.ncpus() - self.busy_ns())
        return f"{up // 10**9}.{up % 10**9 // 10**7:02d} {idle // 10**9}.{idle % 10**9 // 10**7:02d}\n"

    def version(self) -> str:
        u = self.uts()
        return f"{u.sysname} version {u.release} {u.version}\n"

    def meminfo(self) -> str:
        """Linux ``meminfo_proc_show``'s layout (``%-16s%8lu kB``), gVisor's
        figures: MemTotal the host's memory (at most the memory file's size);
        used is what the memory file holds, split into the tasks' anonymous
        memory and the rest (tmpfs: Shmem and Cached); MemAvailable is
        MemFree, as there is no swap."""
        mf = self.memfile()
        total = host_memory()
        used = anon = 0
        if mf is not None:
            total = min(total, mf.size) if total else mf.size
            used = os.fstat(mf.fd).st_blocks * 512
            seen: set[tuple[int, int, int]] = set()
            for t in self.tasks():
                if t.mm is None:
                    continue
                for v in t.mm.vmas():
                    key = (id(v.extent), v.ext_off, v.length)
                    if key not in seen:
                        seen.add(key)
                        anon += resident_bytes(mf, v.mem_offset(v.start), v.length)
        used = min(max(used, anon), total)
        shmem = used - anon
        free = total - used
        rows: list[tuple[str, int | None]] = [
            ("MemTotal", total), ("MemFree", free), ("MemAvailable", free), ("Buffers", 0), ("Cached", shmem),
            ("SwapCached", 0), ("Active", anon + shmem), ("Inactive", 0), ("Active(anon)", anon + shmem),
            ("Inactive(anon)", 0), ("Active(file)", 0), ("Inactive(file)", 0), ("Unevictable", 0),
            ("Mlocked", 0), ("SwapTotal", 0), ("SwapFree", 0), ("Dirty", 0), ("Writeback", 0),
            ("AnonPages", anon), ("Mapped", 0), ("Shmem", shmem), ("Slab", 0), ("SReclaimable", 0),
            ("SUnreclaim", 0), ("KernelStack", 0), ("PageTables", 0), ("CommitLimit", total),
            ("Committed_AS", used), ("VmallocTotal", 34359738367 * 1024), ("VmallocUsed", 0),
            ("VmallocChunk", 0), ("HugePages_Total", None), ("HugePages_Free", None), ("HugePages_Rsvd", None),
            ("HugePages_Surp", None), ("Hugepagesize", 2048 * 1024),
        ]
        return "".join(
            f"{name + ':':<16}{value >> 10:8d} kB\n" if value is not None else f"{name + ':':<16}{0:8d}\n"
            for name, value in rows
        )

    def stat_text(self) -> str:
        """Linux ``show_stat``: the sentry's CPU time as user time and the rest
        of each CPU's uptime as idle (USER_HZ ticks), no interrupt or context
        switch counts, ``btime`` (boot, in seconds since the epoch),
        ``processes`` (tasks created since boot), ``procs_running``,
        ``procs_blocked`` 0."""
        n = self.ncpus()
        up = self.uptime_ns()
        busy = self.busy_ns()
        per_user = busy // n * USER_HZ // 10**9
        per_idle = max(0, up - busy // n) * USER_HZ // 10**9
        lines = [f"cpu  {per_user * n} 0 0 {per_idle * n} 0 0 0 0 0 0"]
        lines += [f"cpu{i} {per_user} 0 0 {per_idle} 0 0 0 0 0 0" for i in range(n)]
        kernel = self.kernel
        btime = (time.time_ns() - up) // 10**9 if kernel is None else (kernel.timekeeper.realtime() - up) // 10**9
        lines += [
            "intr 0", "ctxt 0", f"btime {btime}", f"processes {self.last_pid()}",
            f"procs_running {self.running()}", "procs_blocked 0", "softirq 0 0 0 0 0 0 0 0 0 0 0",
        ]
        return "\n".join(lines) + "\n"

    # Writable sysctls.

    def _uts_value(self, data: bytes) -> str:
        """Linux ``proc_dostring``: up to the first newline or NUL, at most
        UTS_LEN bytes; EPERM without CAP_SYS_ADMIN."""
        kernel = self.kernel
        cur = kernel.current if kernel is not None else None
        if cur is not None and not cur.creds.has_cap(CAP_SYS_ADMIN):
            raise SyscallError(errno.EPERM)
        value = re.split(rb"[\n\0]", data, maxsplit=1)[0][:UTS_LEN]
        return os.fsdecode(value)

    def set_hostname(self, data: bytes) -> None:
        self.uts().hostname = self._uts_value(data)

    def set_domainname(self, data: bytes) -> None:
        self.uts().domainname = self._uts_value(data)


__all__ = ["PROC_SUPER_MAGIC", "ProcRoot", "ProcSuperblock", "SelfLink", "sandbox_cpuinfo"]
