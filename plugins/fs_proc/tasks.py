"""The per-task part of proc: ``/proc/[pid]`` and ``/proc/[pid]/task/[tid]``
(Linux ``fs/proc/base.c``, ``array.c``, ``fd.c``, ``task_mmu.c``; gVisor
``fsimpl/proc/task.go``, ``task_files.go``, ``task_fds.go``).

Everything here is made from the sentry's own state: the :class:`Task`
(ids, comm, credentials, limits, signal state), its ``mm`` (VMAs over the
memory file, argv/envp in its memory), its ``fs`` (root, cwd, umask) and its
FD table. Nothing is read from the host's /proc.

A task directory holds (Linux's order; a thread's directory has no ``task``)::

    task/        0555  one directory per thread of the group (one thread per task for now)
    fd/          0500  one magic link per open fd, named by number
    fdinfo/      0555  one file per open fd: "pos:\\t%d\\nflags:\\t0%o\\nmnt_id:\\t%d\\nino:\\t%d\\n"
    environ      0400  the environment block, NUL-separated, as in the task's memory
    auxv         0400  the auxiliary vector, (u64 key, u64 value) pairs ending with AT_NULL
    status       0444  "Name:\\tsh\\nUmask:\\t0022\\nState:\\tR (running)\\n..." (Linux ``proc_pid_status``)
    limits       0444  the rlimit table (Linux ``proc_pid_limits``)
    comm         0644  the command name and "\\n"; the task's own thread group may write it
    cmdline      0444  argv, NUL-separated, as in the task's memory
    stat         0444  the 52 fields of Linux ``do_task_stat``, one line
    statm        0444  "size resident shared text lib data dt\\n" in pages
    maps         0444  the VMAs (Linux ``show_map``)
    cwd, root    0777  magic links to the task's working and root directories
    exe          0777  link to the program the task runs (``mm.executable``)
    mounts       0444  the task's mount namespace seen from its root (``/proc/mounts``)
    mountinfo    0444  the same with mount ids (Linux ``show_mountinfo``)

Every entry is owned by the task's effective uid and gid, re-read at each
access as Linux's ``pid_revalidate`` does; chmod is EPERM (``proc_setattr``).
Once the task has exited its directory's lookups are ENOENT and reading a
file opened before is ESRCH. Following or reading a magic link (cwd, root,
exe, fd/N) needs ptrace read access to the task (Linux
``proc_fd_access_allowed``): the same thread group, the same uid/gid triple,
or CAP_SYS_PTRACE; otherwise EACCES.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyrunsc.core.abi import CAPABILITIES, RLIM_INFINITY, RLIMITS
from pyrunsc.core.errors import SyscallError
from pyrunsc.core.platform import PROT_EXEC, PROT_WRITE
from pyrunsc.core.vfs.file import O_ACCMODE, O_PATH, FileDescription
from pyrunsc.core.vfs.inode import DT_DIR, DT_LNK, DT_REG, DirEntry, Inode, SetAttr, major, minor
from pyrunsc.core.vfs.mount import Mount, MountNamespace, VirtualDentry
from pyrunsc.core.vfs.synthetic import SyntheticDir, SyntheticFile, SyntheticSuperblock, SyntheticSymlink

if TYPE_CHECKING:
    from pyrunsc.core.kernel.auth import Credentials
    from pyrunsc.core.kernel.kernel import Kernel
    from pyrunsc.core.kernel.task import Task
    from pyrunsc.core.mm.memfile import MemoryFile
    from pyrunsc.core.mm.mm import MemoryManager

PAGE_SIZE = 4096
#: Clock ticks per second of the times proc reports (Linux ``USER_HZ``).
USER_HZ = 100
#: Linux forces O_LARGEFILE on every open of a 64-bit process; fdinfo shows it.
O_LARGEFILE = 0o100000
CAP_SYS_PTRACE = CAPABILITIES.index("CAP_SYS_PTRACE")
SIGCHLD = 17
SIG_DFL, SIG_IGN = 0, 1
#: First Linux fd table size (``NR_OPEN_DEFAULT``); it doubles as fds grow.
NR_OPEN_DEFAULT = 64

#: Linux ``lnames`` of ``fs/proc/base.c``: the limits table's names and units, by resource.
LIMIT_NAMES: dict[str, tuple[str, str]] = {
    "RLIMIT_CPU": ("Max cpu time", "seconds"),
    "RLIMIT_FSIZE": ("Max file size", "bytes"),
    "RLIMIT_DATA": ("Max data size", "bytes"),
    "RLIMIT_STACK": ("Max stack size", "bytes"),
    "RLIMIT_CORE": ("Max core file size", "bytes"),
    "RLIMIT_RSS": ("Max resident set", "bytes"),
    "RLIMIT_NPROC": ("Max processes", "processes"),
    "RLIMIT_NOFILE": ("Max open files", "files"),
    "RLIMIT_MEMLOCK": ("Max locked memory", "bytes"),
    "RLIMIT_AS": ("Max address space", "bytes"),
    "RLIMIT_LOCKS": ("Max file locks", "locks"),
    "RLIMIT_SIGPENDING": ("Max pending signals", "signals"),
    "RLIMIT_MSGQUEUE": ("Max msgqueue size", "bytes"),
    "RLIMIT_NICE": ("Max nice priority", ""),
    "RLIMIT_RTPRIO": ("Max realtime priority", ""),
    "RLIMIT_RTTIME": ("Max realtime timeout", "us"),
}


# Small helpers.


def alive(task: Task) -> bool:
    """Whether ``task`` is still one of its kernel's tasks."""
    return task.kernel.tasks.get(task.tid) is task


def _check_alive(task: Task) -> None:
    """ESRCH once the task is gone (Linux: reading a file of a dead task)."""
    if not alive(task):
        raise SyscallError(errno.ESRCH)


def _int_attr(obj: object, name: str, default: int = 0) -> int:
    """``obj.name`` when it is an int, else ``default``: fields the kernel may
    not keep yet (start time, CPU times, pending signals)."""
    value = getattr(obj, name, default)
    return value if isinstance(value, int) else default


def ticks(ns: int) -> int:
    """Nanoseconds in USER_HZ clock ticks."""
    return ns * USER_HZ // 1_000_000_000


def sig_bit(sig: int) -> int:
    """Signal ``sig``'s bit in a Linux ``sigset_t`` word."""
    return 1 << (sig - 1)


def escape_path(path: str) -> str:
    """Linux ``mangle`` for mounts files: space, tab, newline and backslash
    as 3-digit octal escapes (``/a b`` -> ``/a\\040b``)."""
    out = []
    for ch in path:
        out.append(f"\\{ord(ch):03o}" if ch in " \t\n\\" else ch)
    return "".join(out)


def escape_comm(comm: str) -> str:
    """A command name as status shows it (Linux ``seq_escape(m, tcomm, "\\n\\\\")``)."""
    return comm.replace("\\", "\\\\").replace("\n", "\\n")


def vd_path(vd: VirtualDentry, ns: MountNamespace, root: VirtualDentry | None = None) -> str:
    """The path of ``vd`` as readlink of a magic link gives it (Linux
    ``d_path``): from ``root``, with `` (deleted)`` for a removed name; the
    name of an anonymous file (``pipe:[12]``, ``anon_inode:[eventfd]``), whose
    dentry stands alone, as Linux ``d_dname`` gives it."""
    d = vd.dentry
    if d.parent is None and d is not vd.mount.root:
        return d.name
    return ns.path(vd, root)


def reachable(vd: VirtualDentry, root: VirtualDentry) -> bool:
    """Whether ``vd`` is ``root`` or below it, across mounts."""
    mount, d = vd.mount, vd.dentry
    while True:
        if mount is root.mount and root.dentry.is_ancestor_of(d):
            return True
        if mount.parent is None or mount.mountpoint is None:
            return False
        mount, d = mount.parent, mount.mountpoint


def may_ptrace(reader: Task | None, creds: Credentials | None, target: Task) -> bool:
    """Linux ``__ptrace_may_access`` with PTRACE_MODE_READ_FSCREDS (less the
    dumpable check): the sentry itself (no reader), the target's own thread
    group, a caller whose fsuid/fsgid equal the target's real, effective and
    saved ids, or one with CAP_SYS_PTRACE."""
    if reader is not None and reader.tgid == target.tgid:
        return True
    if creds is None:
        return True
    t = target.creds
    if creds.fsuid == t.uid == t.euid == t.suid and creds.fsgid == t.gid == t.egid == t.sgid:
        return True
    return creds.has_cap(CAP_SYS_PTRACE)


def _reader(kernel: Kernel) -> tuple[Task | None, Credentials | None]:
    cur = kernel.current
    return cur, (cur.creds if cur is not None else None)


# Memory figures from the VMAs and the memory file.


def resident_bytes(memfile: MemoryFile, offset: int, length: int) -> int:
    """Bytes of [offset, offset+length) of the memory file that hold pages
    (``SEEK_DATA``/``SEEK_HOLE``): what is resident, as the memory file is
    sparse and freed ranges are punched out."""
    fd = memfile.fd
    pos, end, total = offset, offset + length, 0
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        total += hole - data
        pos = hole
    return total


@dataclass
class MemStats:
    """One address space's sizes in bytes (Linux ``task_mem``): ``size`` all
    VMAs; ``rss`` resident, split into anonymous, file-backed and shared;
    ``data`` private writable non-stack, ``stack``, ``exe`` the program's
    code, ``lib`` other executable mappings; and the program's code and data
    ranges (``start_code``...)."""

    size: int = 0
    rss: int = 0
    rss_anon: int = 0
    rss_file: int = 0
    rss_shmem: int = 0
    data: int = 0
    stack: int = 0
    exe: int = 0
    lib: int = 0
    start_code: int = 0
    end_code: int = 0
    start_data: int = 0
    end_data: int = 0


def mem_stats(mm: MemoryManager | None) -> MemStats:
    """The :class:`MemStats` of ``mm`` (all zeros without one)."""
    s = MemStats()
    if mm is None:
        return s
    for v in mm.vmas():
        n = v.length
        s.size += n
        r = resident_bytes(mm.memfile, v.mem_offset(v.start), n)
        s.rss += r
        is_file = bool(v.name) and not v.name.startswith("[")
        if v.shared:
            s.rss_shmem += r
        elif is_file:
            s.rss_file += r
        else:
            s.rss_anon += r
        if v.growsdown:
            s.stack += n
        elif v.prot & PROT_WRITE and not v.shared:
            s.data += n
        program = is_file and v.name == mm.executable
        if v.prot & PROT_EXEC:
            if program:
                s.exe += n
                s.start_code = min(s.start_code or v.start, v.start)
                s.end_code = max(s.end_code, v.end)
            else:
                s.lib += n
        elif program and v.prot & PROT_WRITE:
            s.start_data = min(s.start_data or v.start, v.start)
            s.end_data = max(s.end_data, v.end)
    return s


def kb(n: int) -> str:
    """A status size: ``%8lu kB`` of bytes."""
    return f"{n >> 10:8d} kB"


# What the files hold.


#: The states the kernel tells (``Kernel.task_state``), as status shows them
#: (Linux ``task_state_array``); stat shows the letter.
STATE_NAMES = {"R": "R (running)", "S": "S (sleeping)", "T": "T (stopped)", "Z": "Z (zombie)"}


def task_state(task: Task) -> str:
    """``R (running)`` for the task whose system call is being served (the
    one reading, usually) and tasks ready to run, ``S (sleeping)`` for tasks
    parked in a blocking call, ``T (stopped)`` for the tasks of a stopped
    process, ``Z (zombie)`` for a process that has exited and is not yet
    reaped (``Kernel.task_state``)."""
    return STATE_NAMES[task.kernel.task_state(task)]


def ppid(task: Task) -> int:
    return task.parent.tgid if task.parent is not None else 0


def threads(task: Task) -> list[Task]:
    """The tasks of ``task``'s thread group, by tid."""
    return sorted((t for t in task.kernel.tasks.values() if t.tgid == task.tgid), key=lambda t: t.tid)


def fd_size(task: Task) -> int:
    """Linux's ``max_fds``: 64, doubled until the highest open fd fits."""
    top = max((fd for fd, _, _ in task.fdtable), default=-1)
    size = NR_OPEN_DEFAULT
    while top >= size:
        size *= 2
    return size


def signal_masks(task: Task) -> tuple[int, int, int, int, int]:
    """(pending, shared pending, blocked, ignored, caught) as sigset words."""
    ignored = caught = 0
    for sig, act in task.actions.items():
        if act.handler == SIG_IGN:
            ignored |= sig_bit(sig)
        elif act.handler != SIG_DFL:
            caught |= sig_bit(sig)
    return _int_attr(task, "pending"), _int_attr(task, "shared_pending"), task.sigmask, ignored, caught


def render_cmdline(task: Task) -> bytes:
    """argv as it is in the task's memory between ``arg_start`` and
    ``arg_end`` (Linux ``get_mm_cmdline``, gVisor ``cmdlineData``): when the
    program overwrote the final NUL (setproctitle), up to the first NUL,
    running on into the environment area if there is none, within one page."""
    mm = task.mm
    if mm is None or not mm.arg_start or mm.arg_end <= mm.arg_start:
        return b""
    try:
        data = mm.copy_in(mm.arg_start, mm.arg_end - mm.arg_start)
    except SyscallError:
        return b""
    if not data or data[-1] == 0:
        return data
    nul = data.find(b"\0")
    if nul >= 0:
        return data[:nul]
    room = PAGE_SIZE - len(data)
    if room > 0 and mm.env_start and mm.env_end > mm.env_start:
        try:
            env = mm.copy_in(mm.env_start, min(room, mm.env_end - mm.env_start))
        except SyscallError:
            env = b""
        nul = env.find(b"\0")
        data += env[:nul] if nul >= 0 else env
    return data


def render_environ(task: Task) -> bytes:
    """The environment block between ``env_start`` and ``env_end``."""
    mm = task.mm
    if mm is None or not mm.env_start or mm.env_end <= mm.env_start:
        return b""
    try:
        return mm.copy_in(mm.env_start, mm.env_end - mm.env_start)
    except SyscallError:
        return b""


def render_auxv(task: Task) -> bytes:
    """The saved auxiliary vector as native (u64, u64) pairs, AT_NULL last."""
    mm = task.mm
    pairs = list(mm.auxv) if mm is not None else []
    if not pairs or pairs[-1][0] != 0:
        pairs.append((0, 0))
    return b"".join(struct.pack("<QQ", k & (2**64 - 1), v & (2**64 - 1)) for k, v in pairs)


def render_comm(task: Task) -> str:
    return f"{task.comm}\n"


def render_maps(task: Task) -> str:
    """``mm.maps()``, one line per VMA (Linux ``show_map_vma``). Linux ends
    the fixed fields with a space, so a line without a name ends with one."""
    mm = task.mm
    lines = mm.maps() if mm is not None else []
    return "".join(line + ("\n" if line.endswith(" ") or len(line.split(None, 5)) > 5 else " \n") for line in lines)


def render_limits(task: Task) -> str:
    """Linux ``proc_pid_limits``: a ``%-25s %-20s %-20s %-10s`` header, then
    each resource's name, soft and hard limits (``unlimited`` for
    RLIM_INFINITY) and unit, in resource order."""
    out = [f"{'Limit':<25} {'Soft Limit':<20} {'Hard Limit':<20} {'Units':<10}\n"]
    for i, res in enumerate(RLIMITS):
        name, unit = LIMIT_NAMES[res]
        soft, hard = task.rlimits.get(i, (RLIM_INFINITY, RLIM_INFINITY))
        line = f"{name:<25} "
        for v in (soft, hard):
            line += f"{'unlimited' if v >= RLIM_INFINITY or v < 0 else str(v):<20} "
        if unit:
            line += f"{unit:<10}"
        out.append(line + "\n")
    return "".join(out)


def sandbox_cpus(kernel: Kernel | None) -> int:
    n = getattr(kernel, "application_cores", None)
    if isinstance(n, int) and n > 0:
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_mask(n: int) -> str:
    """Linux ``%*pb`` of CPUs 0..n-1 among n: 32-bit hex words, most
    significant first, the first with only the digits its bits need."""
    words = (n + 31) // 32
    out = []
    for w in reversed(range(words)):
        bits = min(32, n - 32 * w)
        width = 8 if w < words - 1 or n % 32 == 0 else (n % 32 + 3) // 4
        out.append(f"{(1 << bits) - 1:0{width}x}")
    return ",".join(out)


def render_status(task: Task) -> str:
    """Linux ``proc_pid_status`` (``array.c``), the fields of Linux 5.x that
    the sentry knows, in Linux's order: ids, memory (VmPeak and VmHWM are
    the current figures: no high-water mark is kept), signal masks as 16 hex
    digits, capability sets, NoNewPrivs, Seccomp 0 and the CPUs."""
    creds = task.creds
    m = mem_stats(task.mm)
    pnd, shd, blk, ign, cgt = signal_masks(task)
    ncpus = sandbox_cpus(task.kernel)
    groups = " ".join(str(g) for g in creds.groups) + " "  # Linux leaves a trailing space
    sigq_limit = task.rlimits.get(RLIMITS.index("RLIMIT_SIGPENDING"), (0, 0))[0]
    lines = [
        ("Name", escape_comm(task.comm)),
        ("Umask", f"{task.fs.umask:04o}"),
        ("State", task_state(task)),
        ("Tgid", task.tgid),
        ("Ngid", 0),
        ("Pid", task.tid),
        ("PPid", ppid(task)),
        ("TracerPid", 0),
        ("Uid", f"{creds.uid}\t{creds.euid}\t{creds.suid}\t{creds.fsuid}"),
        ("Gid", f"{creds.gid}\t{creds.egid}\t{creds.sgid}\t{creds.fsgid}"),
        ("FDSize", fd_size(task)),
        ("Groups", groups),
        ("NStgid", task.tgid),
        ("NSpid", task.tid),
        ("NSpgid", task.pgid),
        ("NSsid", task.sid),
        ("VmPeak", kb(m.size)),
        ("VmSize", kb(m.size)),
        ("VmLck", kb(0)),
        ("VmPin", kb(0)),
        ("VmHWM", kb(m.rss)),
        ("VmRSS", kb(m.rss)),
        ("RssAnon", kb(m.rss_anon)),
        ("RssFile", kb(m.rss_file)),
        ("RssShmem", kb(m.rss_shmem)),
        ("VmData", kb(m.data)),
        ("VmStk", kb(m.stack)),
        ("VmExe", kb(m.exe)),
        ("VmLib", kb(m.lib)),
        ("VmPTE", kb(0)),
        ("VmSwap", kb(0)),
        ("HugetlbPages", kb(0)),
        ("CoreDumping", 0),
        ("Threads", len(threads(task)) or 1),
        ("SigQ", f"0/{sigq_limit}"),
        ("SigPnd", f"{pnd:016x}"),
        ("ShdPnd", f"{shd:016x}"),
        ("SigBlk", f"{blk:016x}"),
        ("SigIgn", f"{ign:016x}"),
        ("SigCgt", f"{cgt:016x}"),
        ("CapInh", f"{creds.inheritable:016x}"),
        ("CapPrm", f"{creds.permitted:016x}"),
        ("CapEff", f"{creds.effective:016x}"),
        ("CapBnd", f"{creds.bounding:016x}"),
        ("CapAmb", f"{creds.ambient:016x}"),
        ("NoNewPrivs", int(task.no_new_privs)),
        ("Seccomp", 0),
        ("Cpus_allowed", cpu_mask(ncpus)),
        ("Cpus_allowed_list", "0" if ncpus == 1 else f"0-{ncpus - 1}"),
        ("Mems_allowed", "1"),
        ("Mems_allowed_list", "0"),
        ("voluntary_ctxt_switches", 0),
        ("nonvoluntary_ctxt_switches", 0),
    ]
    return "".join(f"{k}:\t{v}\n" for k, v in lines)


def render_stat(task: Task) -> str:
    """Linux ``do_task_stat``: the 52 space-separated fields of proc(5), one
    line: ``pid (comm) state ppid pgrp session tty_nr tpgid flags minflt
    cminflt majflt cmajflt utime stime cutime cstime priority nice
    num_threads itrealvalue starttime vsize rss rsslim startcode endcode
    startstack kstkesp kstkeip signal blocked sigignore sigcatch wchan nswap
    cnswap exit_signal processor rt_priority policy delayacct_blkio_ticks
    guest_time cguest_time start_data end_data start_brk arg_start arg_end
    env_start env_end exit_code``.

    Times are USER_HZ ticks: ``starttime`` since boot from ``task.start_time``
    (monotonic ns), ``utime``/``stime`` from ``task.utime``/``task.stime``
    (ns), 0 while the kernel keeps none. The addresses are shown only to a
    reader with ptrace access, 0 to others, as Linux does; ``startstack`` is
    ``mm.start_stack`` when the loader keeps it.
    """
    kernel = task.kernel
    m = mem_stats(task.mm)
    pnd, _, blk, ign, cgt = signal_masks(task)
    reader, creds = _reader(kernel)
    mm = task.mm
    show = mm is not None and may_ptrace(reader, creds, task)
    rss_soft = task.rlimits.get(RLIMITS.index("RLIMIT_RSS"), (RLIM_INFINITY, RLIM_INFINITY))[0]
    nice = _int_attr(task, "nice")
    fields: list[object] = [
        task.tid, f"({task.comm})", task_state(task)[0], ppid(task), task.pgid, task.sid,
        0, -1, 0,  # tty_nr tpgid flags
        0, 0, 0, 0,  # minflt cminflt majflt cmajflt
        ticks(_int_attr(task, "utime")), ticks(_int_attr(task, "stime")),
        ticks(_int_attr(task, "cutime")), ticks(_int_attr(task, "cstime")),
        20 + nice, nice, len(threads(task)) or 1, 0,
        ticks(_int_attr(task, "start_time")), m.size, m.rss // PAGE_SIZE, rss_soft,
        m.start_code if show else 0, m.end_code if show else 0,
        _int_attr(mm, "start_stack") if show else 0, 0, 0,  # startstack kstkesp kstkeip
        pnd, blk, ign, cgt, 0, 0, 0,  # signal blocked sigignore sigcatch wchan nswap cnswap
        _int_attr(task, "exit_signal", SIGCHLD) if task.tid == task.tgid else 0,
        0, 0, 0, 0, 0, 0,  # processor rt_priority policy delayacct_blkio_ticks guest_time cguest_time
    ]
    if show and mm is not None:
        fields += [m.start_data, m.end_data, mm.brk_start, mm.arg_start, mm.arg_end, mm.env_start, mm.env_end]
    else:
        fields += [0] * 7
    fields.append(0)  # exit_code
    return " ".join(str(f) for f in fields) + "\n"


def render_statm(task: Task) -> str:
    """Linux ``proc_pid_statm``: ``size resident shared text lib data dt`` in
    pages (shared: file-backed and shared resident pages; lib and dt 0)."""
    m = mem_stats(task.mm)
    p = PAGE_SIZE
    return (
        f"{m.size // p} {m.rss // p} {(m.rss_file + m.rss_shmem) // p} {m.exe // p} 0 "
        f"{(m.data + m.stack) // p} 0\n"
    )


def mount_flags_opts(m: Mount) -> list[str]:
    """Per-mount options as Linux ``show_mnt_opts`` lists them after rw/ro:
    nosuid, nodev, noexec, noatime, nodiratime, relatime."""
    f = m.flags
    opts = ["ro" if m.read_only else "rw"]
    opts += [name for name, on in (("nosuid", f.no_suid), ("nodev", f.no_dev), ("noexec", f.no_exec),
                                   ("noatime", f.no_atime), ("nodiratime", f.no_diratime)) if on]
    if not f.no_atime and not f.strict_atime:
        opts.append("relatime")
    return opts


def _sync_opts(m: Mount) -> list[str]:
    return [n for n, on in (("sync", m.flags.sync), ("dirsync", m.flags.dir_sync)) if on]


def _fs_opts(m: Mount) -> list[str]:
    return [o for o in m.data.split(",") if o]


def _visible_mounts(task: Task) -> Iterator[tuple[Mount, str]]:
    """The mounts of the task's namespace under its root, with their mount
    point paths seen from that root."""
    ns, root = task.fs.ns, task.fs.root
    for m in ns.mounts():
        vd = VirtualDentry(m, m.root)
        if reachable(vd, root):
            yield m, ns.path(vd, root)


def render_mounts(task: Task) -> str:
    """``/proc/[pid]/mounts`` (Linux ``show_vfsmnt``), one line per mount
    visible from the task's root, in mount order: ``source mountpoint fstype
    options 0 0`` where options are ``rw``/``ro``, sync/dirsync, the
    per-mount flags (:func:`mount_flags_opts`) and the mount data. Paths are
    escaped as Linux ``mangle`` does."""
    out = []
    for m, path in _visible_mounts(task):
        rw, *rest = mount_flags_opts(m)
        opts = ",".join([rw, *_sync_opts(m), *rest, *_fs_opts(m)])
        out.append(f"{escape_path(m.source or 'none')} {escape_path(path)} {m.sb.fs_name} {opts} 0 0\n")
    return "".join(out)


def _mount_root(m: Mount) -> str:
    """The path of the mount's root inside its own filesystem ("/" for a
    whole-filesystem mount)."""
    parts = []
    d = m.root
    while d.parent is not None:
        parts.append(d.name)
        d = d.parent
    return "/" + "/".join(reversed(parts))


def render_mountinfo(task: Task) -> str:
    """``/proc/[pid]/mountinfo`` (Linux ``show_mountinfo``): ``id parent
    major:minor root mountpoint mount-options - fstype source super-options``
    per visible mount; the namespace's root mount is its own parent, as in
    gVisor. Super options are the filesystem's rw/ro, sync/dirsync and the
    mount data. No mount is shared, so there are no optional fields."""
    out = []
    for m, path in _visible_mounts(task):
        parent = m.parent.id if m.parent is not None else m.id
        dev = m.sb.dev
        sb_opts = ",".join(["ro" if m.sb.read_only else "rw", *_sync_opts(m), *_fs_opts(m)])
        out.append(
            f"{m.id} {parent} {major(dev)}:{minor(dev)} {escape_path(_mount_root(m))} {escape_path(path)} "
            f"{','.join(mount_flags_opts(m))} - {m.sb.fs_name} {escape_path(m.source or 'none')} {sb_opts}\n"
        )
    return "".join(out)


def fd_flags(desc: FileDescription, cloexec: bool) -> int:
    """The flags fdinfo shows: the description's, O_CLOEXEC from the fd,
    and O_LARGEFILE as Linux forces it on open (not on pipes and other
    anonymous files, which are made without it)."""
    flags = desc.flags | (os.O_CLOEXEC if cloexec else 0)
    d = desc.vd.dentry
    if not (d.parent is None and d is not desc.vd.mount.root):
        flags |= O_LARGEFILE
    return flags


def render_fdinfo(desc: FileDescription, cloexec: bool) -> str:
    """Linux ``seq_show`` of ``fs/proc/fd.c``."""
    return (
        f"pos:\t{desc.offset}\nflags:\t0{fd_flags(desc, cloexec):o}\nmnt_id:\t{desc.vd.mount.id}\n"
        f"ino:\t{desc.inode.ino}\n"
    )


# Inodes.


class TaskOwned(Inode):
    """An inode of a task's directory: owned by the task's euid/egid (read
    at each access); chmod is EPERM, chown is ignored."""

    task: Task

    @property  # type: ignore[override]
    def uid(self) -> int:
        return self.task.creds.euid

    @uid.setter
    def uid(self, value: int) -> None:
        pass

    @property  # type: ignore[override]
    def gid(self) -> int:
        return self.task.creds.egid

    @gid.setter
    def gid(self, value: int) -> None:
        pass

    def setattr(self, attrs: SetAttr) -> None:
        """EPERM for chmod (Linux ``proc_setattr``); times change in memory."""
        if attrs.mode is not None:
            raise SyscallError(errno.EPERM)
        super().setattr(SetAttr(atime=attrs.atime, mtime=attrs.mtime, ctime=attrs.ctime))


class TaskFile(TaskOwned, SyntheticFile):
    """A file of a task whose content ``render(task)`` makes; ESRCH once the task is gone."""

    def __init__(
        self, sb: SyntheticSuperblock, task: Task, render: Callable[[Task], str | bytes], mode: int = 0o444,
        *, writer: Callable[[bytes], None] | None = None,
    ) -> None:
        self.task = task
        self.render = render
        super().__init__(sb, b"", mode, writer=writer)

    def generate(self) -> bytes:
        _check_alive(self.task)
        out = self.render(self.task)
        return out.encode(errors="surrogateescape") if isinstance(out, str) else out


class CommFile(TaskFile):
    """``comm``: written by the task's own thread group only (Linux
    ``comm_write``: EINVAL for others), which sets the name to the first 15
    bytes, up to a NUL (``set_task_comm``); the newline is kept, as Linux does."""

    def __init__(self, sb: SyntheticSuperblock, task: Task) -> None:
        super().__init__(sb, task, render_comm, 0o644, writer=self.write_comm)

    def write_comm(self, data: bytes) -> None:
        _check_alive(self.task)
        cur = self.task.kernel.current
        if cur is not None and cur.tgid != self.task.tgid:
            raise SyscallError(errno.EINVAL)
        name = data[:15].split(b"\0", 1)[0]
        self.task.comm = os.fsdecode(name)


class MagicLink(TaskOwned, SyntheticSymlink):
    """A link whose target is a place, not a path (Linux ``proc_pid_get_link``).

    readlink gives the path (from the reading task's root); following gives
    the place itself. Both need ptrace access to the task (EACCES) and a live
    task (ENOENT). lstat reports size 0, as Linux does.
    """

    def __init__(self, sb: SyntheticSuperblock, task: Task, mode: int = 0o777) -> None:
        self.task = task
        super().__init__(sb, "")
        self.mode = (self.mode & ~0o7777) | mode

    @property
    def size(self) -> int:
        return 0

    def place(self) -> VirtualDentry | str:
        """The place; subclasses say which. ENOENT when there is none."""
        raise SyscallError(errno.ENOENT)

    def _check(self, reader: Task | None, creds: Credentials | None) -> None:
        if not alive(self.task):
            raise SyscallError(errno.ENOENT)
        if not may_ptrace(reader, creds, self.task):
            raise SyscallError(errno.EACCES)

    def readlink(self) -> str:
        kernel = self.task.kernel
        reader, creds = _reader(kernel)
        self._check(reader, creds)
        t = self.place()
        if isinstance(t, str):
            return t
        fs = reader.fs if reader is not None else None
        return vd_path(t, fs.ns if fs is not None else kernel.ns, fs.root if fs is not None else None)

    def get_link(self, ctx: Any) -> Any:
        """The place (a VirtualDentry), or the program's path for ``exe``."""
        reader = self.task.kernel.current
        self._check(reader, getattr(ctx, "creds", None))
        return self.place()


class CwdLink(MagicLink):
    def place(self) -> VirtualDentry | str:
        return self.task.fs.cwd


class RootLink(MagicLink):
    def place(self) -> VirtualDentry | str:
        return self.task.fs.root


class ExeLink(MagicLink):
    """``exe``: the path of the program the task runs (``mm.executable``),
    resolved again when followed; ENOENT before the first exec."""

    def place(self) -> VirtualDentry | str:
        mm = self.task.mm
        if mm is None or not mm.executable:
            raise SyscallError(errno.ENOENT)
        return mm.executable


class FdLink(MagicLink):
    """``fd/N``: the open file ``desc``. Its mode tells the access mode as on
    Linux (``lr-x------`` read, ``l-wx------`` write, ``lrwx------`` both).
    ENOENT once the fd is closed or names another description."""

    def __init__(self, sb: SyntheticSuperblock, task: Task, fd: int, desc: FileDescription) -> None:
        acc = desc.flags & O_ACCMODE
        mode = 0
        if not desc.flags & O_PATH:
            if acc in (os.O_RDONLY, os.O_RDWR):
                mode |= 0o500
            if acc in (os.O_WRONLY, os.O_RDWR):
                mode |= 0o300
        super().__init__(sb, task, mode)
        self.fd = fd
        self.desc = desc

    def place(self) -> VirtualDentry | str:
        try:
            desc = self.task.fdtable.get(self.fd)
        except SyscallError:
            raise SyscallError(errno.ENOENT) from None
        if desc is not self.desc:
            raise SyscallError(errno.ENOENT)
        return desc.vd


class FdInfoFile(TaskFile):
    """``fdinfo/N`` (mode 0400, Linux ``proc_fdinfo_instantiate``); ENOENT once the fd is closed."""

    def __init__(self, sb: SyntheticSuperblock, task: Task, fd: int) -> None:
        self.fd = fd
        super().__init__(sb, task, self._render, 0o400)

    def _render(self, task: Task) -> str:
        try:
            desc = task.fdtable.get(self.fd)
            cloexec = task.fdtable.get_cloexec(self.fd)
        except SyscallError:
            raise SyscallError(errno.ENOENT) from None
        return render_fdinfo(desc, cloexec)


class TaskDirBase(TaskOwned, SyntheticDir):
    """A directory of a task: nothing is found in it once the task is gone."""

    def __init__(self, sb: SyntheticSuperblock, task: Task, mode: int) -> None:
        self.task = task
        super().__init__(sb, mode)

    def gone(self) -> bool:
        """Once the task is gone, so is its directory (the VFS then forgets
        the cached dentry, see :meth:`Dentry._forget_gone`)."""
        return not alive(self.task)

    def lookup(self, name: str) -> Inode:
        if not alive(self.task):
            raise SyscallError(errno.ENOENT)
        return super().lookup(name)

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        if not alive(self.task):
            return iter(())
        return super().iterate(cookie)


class FdDir(TaskDirBase):
    """``fd/`` (0500) or ``fdinfo/`` (0555): one entry per open fd, named by
    its number, listed in order with cookie ``3 + fd``."""

    def __init__(self, sb: SyntheticSuperblock, task: Task, *, info: bool) -> None:
        super().__init__(sb, task, 0o555 if info else 0o500)
        self.info = info
        self._entries: dict[int, tuple[FileDescription, Inode]] = {}

    def _entry(self, fd: int, desc: FileDescription) -> Inode:
        cached = self._entries.get(fd)
        if cached is not None and cached[0] is desc:
            return cached[1]
        inode: Inode = FdInfoFile(self.sb, self.task, fd) if self.info else FdLink(self.sb, self.task, fd, desc)  # type: ignore[arg-type]
        self._entries[fd] = (desc, inode)
        return inode

    def _prune(self) -> list[tuple[int, FileDescription]]:
        open_fds = [(fd, desc) for fd, desc, _ in self.task.fdtable]
        live = {fd for fd, _ in open_fds}
        for fd in [fd for fd in self._entries if fd not in live]:
            del self._entries[fd]
        return open_fds

    def lookup(self, name: str) -> Inode:
        if not alive(self.task) or not name.isdigit() or (name != "0" and name.startswith("0")):
            raise SyscallError(errno.ENOENT)
        fd = int(name)
        try:
            desc = self.task.fdtable.get(fd)
        except SyscallError:
            raise SyscallError(errno.ENOENT) from None
        return self._entry(fd, desc)

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        if not alive(self.task):
            return
        for fd, desc in self._prune():
            if 3 + fd > cookie:
                inode = self._entry(fd, desc)
                yield DirEntry(str(fd), inode.ino, DT_REG if self.info else DT_LNK, 3 + fd)

    def is_empty_dir(self) -> bool:
        return len(self.task.fdtable) == 0


class ThreadsDir(TaskDirBase):
    """``task/``: one directory per thread of the group, named by tid, with
    cookie ``3 + tid``."""

    def __init__(self, sb: SyntheticSuperblock, task: Task) -> None:
        super().__init__(sb, task, 0o555)
        self._dirs: dict[int, TaskDir] = {}

    def _dir(self, t: Task) -> TaskDir:
        d = self._dirs.get(t.tid)
        if d is None or d.task is not t:
            d = TaskDir(self.sb, t, thread=True)  # type: ignore[arg-type]
            self._dirs[t.tid] = d
        return d

    def _members(self) -> list[Task]:
        members = threads(self.task) if alive(self.task) else []
        tids = {t.tid for t in members}
        for tid in [tid for tid in self._dirs if tid not in tids]:
            del self._dirs[tid]
        return members

    def lookup(self, name: str) -> Inode:
        for t in self._members():
            if str(t.tid) == name:
                return self._dir(t)
        raise SyscallError(errno.ENOENT)

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        for t in self._members():
            if 3 + t.tid > cookie:
                yield DirEntry(str(t.tid), self._dir(t).ino, DT_DIR, 3 + t.tid)

    def is_empty_dir(self) -> bool:
        return not self._members()


class TaskDir(TaskDirBase):
    """``/proc/[pid]`` (``thread`` False) or ``/proc/[pid]/task/[tid]``: the
    entries of the module docstring, built once per task."""

    def __init__(self, sb: SyntheticSuperblock, task: Task, *, thread: bool = False) -> None:
        super().__init__(sb, task, 0o555)
        self.thread = thread
        if not thread:
            self.add("task", ThreadsDir(sb, task))
        self.add("fd", FdDir(sb, task, info=False))
        self.add("fdinfo", FdDir(sb, task, info=True))
        self.add("environ", TaskFile(sb, task, render_environ, 0o400))
        self.add("auxv", TaskFile(sb, task, render_auxv, 0o400))
        self.add("status", TaskFile(sb, task, render_status))
        self.add("limits", TaskFile(sb, task, render_limits))
        self.add("comm", CommFile(sb, task))
        self.add("cmdline", TaskFile(sb, task, render_cmdline))
        self.add("stat", TaskFile(sb, task, render_stat))
        self.add("statm", TaskFile(sb, task, render_statm))
        self.add("maps", TaskFile(sb, task, render_maps))
        self.add("cwd", CwdLink(sb, task))
        self.add("root", RootLink(sb, task))
        self.add("exe", ExeLink(sb, task))
        self.add("mounts", TaskFile(sb, task, render_mounts))
        self.add("mountinfo", TaskFile(sb, task, render_mountinfo))


__all__ = [
    "MemStats",
    "TaskDir",
    "alive",
    "cpu_mask",
    "escape_path",
    "may_ptrace",
    "mem_stats",
    "reachable",
    "render_cmdline",
    "render_limits",
    "render_mountinfo",
    "render_mounts",
    "render_stat",
    "render_status",
    "resident_bytes",
    "vd_path",
]
