"""Process identity, limits and control (Linux ``kernel/sys.c``,
``kernel/exit.c``, ``arch/x86/kernel/process_64.c``; gVisor
``syscalls/linux/sys_identity.go``, ``sys_rlimit.go``, ``sys_prctl.go``)."""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import replace
from typing import TYPE_CHECKING

from ..abi import RLIM_INFINITY, RLIMITS
from ..errors import SyscallError
from ..kernel.auth import NO_ID, Credentials
from . import Block, TaskExit, syscall

if TYPE_CHECKING:
    from ..kernel.task import Task, ThreadGroup

CAP_SETUID, CAP_SETGID, CAP_SYS_RESOURCE, CAP_SYS_ADMIN = 7, 6, 24, 21
ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS = 0x1001, 0x1002, 0x1003, 0x1004
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 2, 3, 4
PR_SET_NAME, PR_GET_NAME, PR_CAPBSET_READ, PR_GET_SECUREBITS = 15, 16, 23, 27
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 36, 37, 38, 39
PR_SET_KEEPCAPS, PR_GET_KEEPCAPS = 8, 7
RLIMIT64 = struct.Struct("<QQ")


@syscall("exit", "i")
def sys_exit(task: Task, status: int) -> int:
    raise TaskExit(status & 0xFF, group=False)


@syscall("exit_group", "i")
def sys_exit_group(task: Task, status: int) -> int:
    raise TaskExit(status & 0xFF, group=True)


@syscall("getpid")
def sys_getpid(task: Task) -> int:
    return task.tgid


@syscall("gettid")
def sys_gettid(task: Task) -> int:
    return task.tid


@syscall("getppid")
def sys_getppid(task: Task) -> int:
    return task.parent.tgid if task.parent is not None else 0


@syscall("getpgrp")
def sys_getpgrp(task: Task) -> int:
    return task.pgid


def _process(task: Task, pid: int) -> ThreadGroup:
    """The process ``pid`` (0: the caller's); ESRCH if there is none."""
    pid = _int32(pid)
    if pid == 0:
        return task.tg
    tg = task.kernel.thread_group(pid) if pid > 0 else None
    if tg is None or tg.exit_status is not None:
        raise SyscallError(errno.ESRCH)
    return tg


@syscall("getpgid", "i")
def sys_getpgid(task: Task, pid: int) -> int:
    return _process(task, pid).pgid


@syscall("getsid", "i")
def sys_getsid(task: Task, pid: int) -> int:
    return _process(task, pid).sid


@syscall("setpgid", "ii")
def sys_setpgid(task: Task, pid: int, pgid: int) -> int:
    """setpgid(2) (Linux ``kernel/sys.c``): the caller or one of its children
    joins or starts a process group in the caller's session. ESRCH if
    ``pid`` is neither; EACCES for a child that has exec'd (not tracked: never);
    EPERM for a session leader, another session, or a group that does not
    exist in the session; EINVAL for a negative ``pgid``."""
    pgid = _int32(pgid)
    if pgid < 0:
        raise SyscallError(errno.EINVAL)
    target = _process(task, pid)
    if target is not task.tg and target.parent is not task.tg:
        raise SyscallError(errno.ESRCH)
    if target.sid != task.sid:
        raise SyscallError(errno.EPERM)
    if target.sid == target.tgid:
        raise SyscallError(errno.EPERM)  # a session leader cannot change its group
    pgid = pgid or target.tgid
    if pgid != target.tgid and not any(
        t.tg.pgid == pgid and t.tg.sid == task.sid and t.tg.exit_status is None for t in task.kernel.tasks.values()
    ):
        raise SyscallError(errno.EPERM)
    target.pgid = pgid
    return 0


@syscall("setsid")
def sys_setsid(task: Task) -> int:
    """setsid(2): EPERM if a process group with the caller's PID exists."""
    tg = task.tg
    if any(t.tg.pgid == tg.tgid for t in task.kernel.tasks.values() if t.tg.exit_status is None):
        raise SyscallError(errno.EPERM)
    tg.sid = tg.pgid = tg.tgid
    return tg.sid


# Credentials (Linux kernel/sys.c, kernel/cred.c).


def _set_creds(task: Task, creds: Credentials) -> None:
    """Apply Linux's capability rules on uid changes (capabilities(7)
    "Effect of user ID changes on capabilities")."""
    old = task.fs.creds
    if 0 in (old.uid, old.euid, old.suid) and 0 not in (creds.uid, creds.euid, creds.suid):
        creds = replace(creds, permitted=0, effective=0, ambient=0)
    elif old.euid == 0 and creds.euid != 0:
        creds = replace(creds, effective=0)
    elif old.euid != 0 and creds.euid == 0:
        creds = replace(creds, effective=creds.permitted)
    task.fs.creds = creds


def _id(v: int) -> int | None:
    v &= 0xFFFFFFFF
    return None if v == NO_ID else v


@syscall("getuid")
def sys_getuid(task: Task) -> int:
    return task.fs.creds.uid


@syscall("geteuid")
def sys_geteuid(task: Task) -> int:
    return task.fs.creds.euid


@syscall("getgid")
def sys_getgid(task: Task) -> int:
    return task.fs.creds.gid


@syscall("getegid")
def sys_getegid(task: Task) -> int:
    return task.fs.creds.egid


@syscall("setuid", "i")
def sys_setuid(task: Task, uid: int) -> int:
    c = task.fs.creds
    u = _id(uid)
    if u is None:
        raise SyscallError(errno.EINVAL)
    if c.has_cap(CAP_SETUID):
        _set_creds(task, replace(c, uid=u, euid=u, suid=u, fsuid=u))
    elif u in (c.uid, c.suid):
        _set_creds(task, replace(c, euid=u, fsuid=u))
    else:
        raise SyscallError(errno.EPERM)
    return 0


@syscall("setgid", "i")
def sys_setgid(task: Task, gid: int) -> int:
    c = task.fs.creds
    g = _id(gid)
    if g is None:
        raise SyscallError(errno.EINVAL)
    if c.has_cap(CAP_SETGID):
        task.fs.creds = replace(c, gid=g, egid=g, sgid=g, fsgid=g)
    elif g in (c.gid, c.sgid):
        task.fs.creds = replace(c, egid=g, fsgid=g)
    else:
        raise SyscallError(errno.EPERM)
    return 0


@syscall("setresuid", "iii")
def sys_setresuid(task: Task, r: int, e: int, s: int) -> int:
    c = task.fs.creds
    ids = [_id(r), _id(e), _id(s)]
    allowed = {c.uid, c.euid, c.suid}
    if not c.has_cap(CAP_SETUID) and any(i is not None and i not in allowed for i in ids):
        raise SyscallError(errno.EPERM)
    uid = c.uid if ids[0] is None else ids[0]
    euid = c.euid if ids[1] is None else ids[1]
    suid = c.suid if ids[2] is None else ids[2]
    _set_creds(task, replace(c, uid=uid, euid=euid, suid=suid, fsuid=euid))
    return 0


@syscall("setresgid", "iii")
def sys_setresgid(task: Task, r: int, e: int, s: int) -> int:
    c = task.fs.creds
    ids = [_id(r), _id(e), _id(s)]
    allowed = {c.gid, c.egid, c.sgid}
    if not c.has_cap(CAP_SETGID) and any(i is not None and i not in allowed for i in ids):
        raise SyscallError(errno.EPERM)
    gid = c.gid if ids[0] is None else ids[0]
    egid = c.egid if ids[1] is None else ids[1]
    sgid = c.sgid if ids[2] is None else ids[2]
    task.fs.creds = replace(c, gid=gid, egid=egid, sgid=sgid, fsgid=egid)
    return 0


@syscall("setreuid", "ii")
def sys_setreuid(task: Task, r: int, e: int) -> int:
    c = task.fs.creds
    ru, eu = _id(r), _id(e)
    if not c.has_cap(CAP_SETUID):
        if ru is not None and ru not in (c.uid, c.euid):
            raise SyscallError(errno.EPERM)
        if eu is not None and eu not in (c.uid, c.euid, c.suid):
            raise SyscallError(errno.EPERM)
    uid = c.uid if ru is None else ru
    euid = c.euid if eu is None else eu
    suid = euid if ru is not None or (eu is not None and eu != c.uid) else c.suid
    _set_creds(task, replace(c, uid=uid, euid=euid, suid=suid, fsuid=euid))
    return 0


@syscall("setregid", "ii")
def sys_setregid(task: Task, r: int, e: int) -> int:
    c = task.fs.creds
    rg, eg = _id(r), _id(e)
    if not c.has_cap(CAP_SETGID):
        if rg is not None and rg not in (c.gid, c.egid):
            raise SyscallError(errno.EPERM)
        if eg is not None and eg not in (c.gid, c.egid, c.sgid):
            raise SyscallError(errno.EPERM)
    gid = c.gid if rg is None else rg
    egid = c.egid if eg is None else eg
    sgid = egid if rg is not None or (eg is not None and eg != c.gid) else c.sgid
    task.fs.creds = replace(c, gid=gid, egid=egid, sgid=sgid, fsgid=egid)
    return 0


@syscall("getresuid", "ppp")
def sys_getresuid(task: Task, r: int, e: int, s: int) -> int:
    c = task.fs.creds
    for addr, v in ((r, c.uid), (e, c.euid), (s, c.suid)):
        task.mm.copy_out(addr, struct.pack("<I", v))
    return 0


@syscall("getresgid", "ppp")
def sys_getresgid(task: Task, r: int, e: int, s: int) -> int:
    c = task.fs.creds
    for addr, v in ((r, c.gid), (e, c.egid), (s, c.sgid)):
        task.mm.copy_out(addr, struct.pack("<I", v))
    return 0


@syscall("setfsuid", "i")
def sys_setfsuid(task: Task, uid: int) -> int:
    c = task.fs.creds
    old = c.fsuid
    u = _id(uid)
    if u is not None and (c.has_cap(CAP_SETUID) or u in (c.uid, c.euid, c.suid, c.fsuid)):
        task.fs.creds = replace(c, fsuid=u)
    return old


@syscall("setfsgid", "i")
def sys_setfsgid(task: Task, gid: int) -> int:
    c = task.fs.creds
    old = c.fsgid
    g = _id(gid)
    if g is not None and (c.has_cap(CAP_SETGID) or g in (c.gid, c.egid, c.sgid, c.fsgid)):
        task.fs.creds = replace(c, fsgid=g)
    return old


@syscall("getgroups", "ip")
def sys_getgroups(task: Task, size: int, addr: int) -> int:
    groups = task.fs.creds.groups
    size &= 0xFFFFFFFF
    if size == 0:
        return len(groups)
    if size >> 31:
        raise SyscallError(errno.EINVAL)
    if size < len(groups):
        raise SyscallError(errno.EINVAL)
    task.mm.copy_out(addr, struct.pack(f"<{len(groups)}I", *groups))
    return len(groups)


@syscall("setgroups", "ip")
def sys_setgroups(task: Task, size: int, addr: int) -> int:
    if not task.fs.creds.has_cap(CAP_SETGID):
        raise SyscallError(errno.EPERM)
    size &= 0xFFFFFFFF
    if size > 65536:
        raise SyscallError(errno.EINVAL)
    groups = struct.unpack(f"<{size}I", task.mm.copy_in(addr, 4 * size)) if size else ()
    task.fs.creds = replace(task.fs.creds, groups=tuple(groups))
    return 0


@syscall("capget", "pp")
def sys_capget(task: Task, header: int, data: int) -> int:
    version, pid = struct.unpack("<Ii", task.mm.copy_in(header, 8))
    if version not in (0x19980330, 0x20071026, 0x20080522):
        task.mm.copy_out(header, struct.pack("<I", 0x20080522))
        raise SyscallError(errno.EINVAL)
    if pid not in (0, task.tgid):
        raise SyscallError(errno.ESRCH)
    if data:
        c = task.fs.creds
        words = 1 if version == 0x19980330 else 2
        out = b""
        for i in range(words):
            out += struct.pack("<III", c.effective >> (32 * i) & 0xFFFFFFFF, c.permitted >> (32 * i) & 0xFFFFFFFF,
                               c.inheritable >> (32 * i) & 0xFFFFFFFF)
        task.mm.copy_out(data, out)
    return 0


@syscall("capset", "pp")
def sys_capset(task: Task, header: int, data: int) -> int:
    version, pid = struct.unpack("<Ii", task.mm.copy_in(header, 8))
    if version not in (0x19980330, 0x20071026, 0x20080522):
        raise SyscallError(errno.EINVAL)
    if pid not in (0, task.tgid):
        raise SyscallError(errno.EPERM)
    words = 1 if version == 0x19980330 else 2
    raw = task.mm.copy_in(data, 12 * words)
    eff = perm = inh = 0
    for i in range(words):
        e, p, h = struct.unpack_from("<III", raw, 12 * i)
        eff |= e << (32 * i)
        perm |= p << (32 * i)
        inh |= h << (32 * i)
    c = task.fs.creds
    # Linux cap_capset: permitted may only shrink, effective within permitted,
    # inheritable within permitted|bounding.
    if perm & ~c.permitted or eff & ~perm or inh & ~(c.inheritable | c.permitted) & ~c.bounding:
        raise SyscallError(errno.EPERM)
    task.fs.creds = replace(c, effective=eff, permitted=perm, inheritable=inh)
    return 0


@syscall("umask", "x")
def sys_umask(task: Task, mask: int) -> int:
    old = task.fs.umask
    task.fs.umask = mask & 0o777
    return old


# Thread bookkeeping that glibc sets up at start.


@syscall("set_tid_address", "p")
def sys_set_tid_address(task: Task, addr: int) -> int:
    task.clear_child_tid = addr
    return task.tid


@syscall("set_robust_list", "pi")
def sys_set_robust_list(task: Task, head: int, length: int) -> int:
    if length != 24:
        raise SyscallError(errno.EINVAL)
    task.robust_list = (head, length)
    return 0


@syscall("get_robust_list", "ipp")
def sys_get_robust_list(task: Task, pid: int, head_ptr: int, len_ptr: int) -> int:
    if pid not in (0, task.tid):
        raise SyscallError(errno.ESRCH)
    task.mm.copy_out(head_ptr, struct.pack("<Q", task.robust_list[0]))
    task.mm.copy_out(len_ptr, struct.pack("<Q", task.robust_list[1]))
    return 0


@syscall("arch_prctl", "xx")
def sys_arch_prctl(task: Task, code: int, addr: int) -> int:
    """ARCH_SET_FS/GS and ARCH_GET_FS/GS; EPERM for an address outside user space."""
    if code in (ARCH_SET_FS, ARCH_SET_GS):
        if addr >= 0x7FFFFFFFF000:
            raise SyscallError(errno.EPERM)
        if code == ARCH_SET_FS:
            task.regs.fs_base = addr
        else:
            task.regs.gs_base = addr
        return 0
    if code in (ARCH_GET_FS, ARCH_GET_GS):
        task.mm.copy_out(addr, struct.pack("<Q", task.regs.fs_base if code == ARCH_GET_FS else task.regs.gs_base))
        return 0
    raise SyscallError(errno.EINVAL)


@syscall("prctl", "ixxxx")
def sys_prctl(task: Task, option: int, a2: int, a3: int, a4: int, a5: int) -> int:
    if option == PR_SET_NAME:
        name = task.mm.read_cstring(a2, 4096)[:15]
        task.comm = os.fsdecode(name)
        return 0
    if option == PR_GET_NAME:
        task.mm.copy_out(a2, os.fsencode(task.comm)[:15].ljust(16, b"\0"))
        return 0
    if option == PR_SET_PDEATHSIG:
        if a2 > 64:
            raise SyscallError(errno.EINVAL)
        task.pdeath_signal = a2
        return 0
    if option == PR_GET_PDEATHSIG:
        task.mm.copy_out(a2, struct.pack("<i", task.pdeath_signal))
        return 0
    if option == PR_GET_DUMPABLE:
        return 1
    if option == PR_SET_DUMPABLE:
        if a2 not in (0, 1):
            raise SyscallError(errno.EINVAL)
        return 0
    if option == PR_SET_NO_NEW_PRIVS:
        if a2 != 1 or a3 or a4 or a5:
            raise SyscallError(errno.EINVAL)
        task.no_new_privs = True
        return 0
    if option == PR_GET_NO_NEW_PRIVS:
        return int(task.no_new_privs)
    if option == PR_CAPBSET_READ:
        if a2 > 40:
            raise SyscallError(errno.EINVAL)
        return task.fs.creds.bounding >> a2 & 1
    if option == PR_GET_SECUREBITS:
        return 0
    if option == PR_GET_KEEPCAPS:
        return 0
    raise SyscallError(errno.EINVAL)


# Resource limits (Linux kernel/sys.c do_prlimit).


def _prlimit(task: Task, resource: int, new: tuple[int, int] | None) -> tuple[int, int]:
    if resource >= len(RLIMITS):
        raise SyscallError(errno.EINVAL)
    old = task.rlimits[resource]
    if new is not None:
        soft, hard = new
        if soft > hard:
            raise SyscallError(errno.EINVAL)
        if hard > old[1] and not task.fs.creds.has_cap(CAP_SYS_RESOURCE):
            raise SyscallError(errno.EPERM)
        if resource == 7 and hard > 1048576 and hard != RLIM_INFINITY:
            raise SyscallError(errno.EPERM)  # RLIMIT_NOFILE above nr_open
        task.rlimits[resource] = (soft, hard)
        if resource == 7:
            task.fdtable.limit = min(soft, 1048576)
    return old


@syscall("prlimit64", "iipp")
def sys_prlimit64(task: Task, pid: int, resource: int, new: int, old: int) -> int:
    if pid not in (0, task.tgid):
        raise SyscallError(errno.ESRCH)
    value = RLIMIT64.unpack(task.mm.copy_in(new, 16)) if new else None
    prev = _prlimit(task, resource, value)
    if old:
        task.mm.copy_out(old, RLIMIT64.pack(*prev))
    return 0


@syscall("getrlimit", "ip")
def sys_getrlimit(task: Task, resource: int, addr: int) -> int:
    task.mm.copy_out(addr, RLIMIT64.pack(*_prlimit(task, resource, None)))
    return 0


@syscall("setrlimit", "ip")
def sys_setrlimit(task: Task, resource: int, addr: int) -> int:
    _prlimit(task, resource, RLIMIT64.unpack(task.mm.copy_in(addr, 16)))
    return 0


@syscall("getrusage", "ip")
def sys_getrusage(task: Task, who: int, addr: int) -> int:
    who = who - (1 << 64) if who >> 63 else who
    if who not in (0, -1, 1):
        raise SyscallError(errno.EINVAL)
    ns = task.kernel.timekeeper.cpu_time() if who != -1 else 0
    tv = struct.pack("<qq", ns // 10**9, ns % 10**9 // 1000)
    task.mm.copy_out(addr, tv + tv + bytes(144 - 32))
    return 0


@syscall("times", "p")
def sys_times(task: Task, addr: int) -> int:
    ticks = task.kernel.timekeeper.cpu_time() // 10**7
    if addr:
        task.mm.copy_out(addr, struct.pack("<qqqq", ticks, 0, 0, 0))
    return task.kernel.timekeeper.monotonic() // 10**7


# Scheduling.


@syscall("sched_yield")
def sys_sched_yield(task: Task) -> int:
    """The caller goes to the back of the run queue (Linux ``do_sched_yield``)."""
    task.kernel.yielded = True
    return 0


@syscall("sched_getaffinity", "iip")
def sys_sched_getaffinity(task: Task, pid: int, size: int, addr: int) -> int:
    """The sandbox's CPUs (as many as the host lets the sentry use)."""
    if pid not in (0, task.tid):
        raise SyscallError(errno.ESRCH)
    ncpu = os.cpu_count() or 1
    need = max(8, (ncpu + 63) // 64 * 8)
    if size < need or size % 8:
        raise SyscallError(errno.EINVAL)
    mask = (1 << ncpu) - 1
    task.mm.copy_out(addr, mask.to_bytes(need, "little"))
    return need


@syscall("sched_setaffinity", "iip")
def sys_sched_setaffinity(task: Task, pid: int, size: int, addr: int) -> int:
    if pid not in (0, task.tid):
        raise SyscallError(errno.ESRCH)
    mask = int.from_bytes(task.mm.copy_in(addr, min(size, 128)), "little")
    if not mask & ((1 << (os.cpu_count() or 1)) - 1):
        raise SyscallError(errno.EINVAL)
    return 0


@syscall("getcpu", "ppp")
def sys_getcpu(task: Task, cpu: int, node: int, cache: int) -> int:
    if cpu:
        task.mm.copy_out(cpu, struct.pack("<I", 0))
    if node:
        task.mm.copy_out(node, struct.pack("<I", 0))
    return 0


@syscall("getpriority", "ii")
def sys_getpriority(task: Task, which: int, who: int) -> int:
    if which > 2:
        raise SyscallError(errno.EINVAL)
    return 20  # nice 0, as the syscall encodes it (20 - nice)



# Processes: clone, fork, vfork, wait4, waitid (Linux kernel/fork.c, kernel/exit.c).

CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_PIDFD, CLONE_PTRACE, CLONE_VFORK, CLONE_PARENT, CLONE_THREAD = 0x1000, 0x2000, 0x4000, 0x8000, 0x10000
CLONE_NEWNS, CLONE_SYSVSEM, CLONE_SETTLS, CLONE_PARENT_SETTID = 0x20000, 0x40000, 0x80000, 0x100000
CLONE_CHILD_CLEARTID, CLONE_DETACHED, CLONE_UNTRACED, CLONE_CHILD_SETTID = 0x200000, 0x400000, 0x800000, 0x1000000
WNOHANG, WUNTRACED, WCONTINUED, WEXITED, WNOWAIT = 1, 2, 8, 4, 0x1000000
WALL, WCLONE, WNOTHREAD = 0x40000000, 0x80000000, 0x20000000
P_ALL, P_PID, P_PGID, P_PIDFD = 0, 1, 2, 3
SIGCHLD = 17


def do_clone(task: Task, flags: int, stack: int, parent_tid: int, child_tid: int, tls: int) -> int:
    """clone(2) (Linux ``kernel/fork.c`` ``copy_process``): a thread with
    CLONE_THREAD, else a child process; CLONE_VM, CLONE_FS, CLONE_FILES and
    CLONE_SIGHAND share what they name. EINVAL for the combinations Linux
    refuses (CLONE_THREAD without CLONE_SIGHAND, CLONE_SIGHAND without
    CLONE_VM, CLONE_FS with CLONE_NEWNS), EPERM for new namespaces. With
    CLONE_VFORK the caller waits until the child execs or exits."""
    if flags & CLONE_THREAD and not flags & CLONE_SIGHAND:
        raise SyscallError(errno.EINVAL)
    if flags & CLONE_SIGHAND and not flags & CLONE_VM:
        raise SyscallError(errno.EINVAL)
    if flags & CLONE_FS and flags & CLONE_NEWNS:
        raise SyscallError(errno.EINVAL)
    if flags & CLONE_NEWNS or flags & 0x7E000000 & ~(CLONE_CHILD_SETTID | CLONE_DETACHED | CLONE_UNTRACED):
        raise SyscallError(errno.EPERM if flags & (CLONE_NEWNS | 0x7C000000) else errno.EINVAL)
    if flags & CLONE_PIDFD:
        raise SyscallError(errno.EINVAL, "CLONE_PIDFD is not supported")
    child = task.kernel.clone_task(
        task,
        thread=bool(flags & CLONE_THREAD),
        share_vm=bool(flags & CLONE_VM),
        share_fs=bool(flags & CLONE_FS),
        share_files=bool(flags & CLONE_FILES),
        share_sighand=bool(flags & CLONE_SIGHAND),
        vfork=bool(flags & CLONE_VFORK),
        stack=stack,
        tls=tls if flags & CLONE_SETTLS else None,
        exit_signal=0 if flags & CLONE_THREAD else flags & 0xFF,
    )
    tid = struct.pack("<i", child.tid)
    if flags & CLONE_PARENT_SETTID and parent_tid:
        task.mm.copy_out(parent_tid, tid)
    if flags & CLONE_CHILD_SETTID and child_tid:
        child.mm.copy_out(child_tid, tid)
    if flags & CLONE_CHILD_CLEARTID:
        child.clear_child_tid = child_tid
    if flags & CLONE_VFORK:
        task.waiter = VforkWait(child.tid)
        raise Block()
    return child.tid


class VforkWait:
    """A vfork parent parked until its child execs or exits (Linux
    ``wait_for_vfork_done``); signals wait too: it is not interruptible."""

    interruptible = False

    def __init__(self, tid: int) -> None:
        self.tid = tid


def _clone_entry(task: Task, flags: int, stack: int, parent_tid: int, child_tid: int, tls: int) -> int:
    """A clone call served again after a vfork parks its caller: the child
    PID once released, else keep waiting; otherwise a new clone."""
    w = task.waiter
    if isinstance(w, VforkWait):
        if task.vfork_child is not None:
            raise Block()
        task.waiter = None
        return w.tid
    return do_clone(task, flags, stack, parent_tid, child_tid, tls)


@syscall("clone", "xppppx")
def sys_clone(task: Task, flags: int, stack: int, parent_tid: int, child_tid: int, tls: int) -> int:
    return _clone_entry(task, flags & 0xFFFFFFFF, stack, parent_tid, child_tid, tls)


CLONE_ARGS = struct.Struct("<11Q")


@syscall("clone3", "pi")
def sys_clone3(task: Task, addr: int, size: int) -> int:
    """clone3(2) with ``struct clone_args`` (flags, pidfd, child_tid,
    parent_tid, exit_signal, stack, stack_size, tls, set_tid...); EINVAL for
    a size below CLONE_ARGS_SIZE_VER0 (64) or set_tid (not supported)."""
    if isinstance(task.waiter, VforkWait):
        return _clone_entry(task, 0, 0, 0, 0, 0)
    if size < 64 or size > 4096:
        raise SyscallError(errno.EINVAL)
    raw = task.mm.copy_in(addr, min(size, CLONE_ARGS.size)).ljust(CLONE_ARGS.size, b"\0")
    if size > CLONE_ARGS.size and any(task.mm.copy_in(addr + CLONE_ARGS.size, size - CLONE_ARGS.size)):
        raise SyscallError(errno.E2BIG)
    flags, _pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, _cgroup = (
        CLONE_ARGS.unpack(raw))
    if flags >> 32 or exit_signal > 64 or (flags & CLONE_THREAD and exit_signal) or set_tid or set_tid_size:
        raise SyscallError(errno.EINVAL)
    if (stack == 0) != (stack_size == 0):
        raise SyscallError(errno.EINVAL)
    return do_clone(task, flags | exit_signal, stack + stack_size if stack else 0, parent_tid, child_tid, tls)


@syscall("fork")
def sys_fork(task: Task) -> int:
    return _clone_entry(task, SIGCHLD, 0, 0, 0, 0)


@syscall("vfork")
def sys_vfork(task: Task) -> int:
    return _clone_entry(task, CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0)


def _matches(task: Task, child: ThreadGroup, pid: int) -> bool:
    if pid > 0:
        return child.tgid == pid
    if pid == -1:
        return True
    if pid == 0:
        return child.pgid == task.pgid
    return child.pgid == -pid


def _reap(task: Task, child: ThreadGroup) -> None:
    task.tg.children.remove(child)
    task.kernel.tasks.pop(child.tgid, None)


def _children(task: Task, pid: int, options: int) -> list[ThreadGroup]:
    """The children ``task`` may wait for: its whole thread group's (Linux
    waits on behalf of the process unless __WNOTHREAD), matching ``pid``;
    __WCLONE selects children with an exit signal other than SIGCHLD, __WALL
    both. ECHILD when there are none."""
    out = []
    for c in task.tg.children:
        if not _matches(task, c, pid):
            continue
        if not options & WALL and bool(options & WCLONE) != (c.exit_signal != SIGCHLD):
            continue
        out.append(c)
    if not out:
        raise SyscallError(errno.ECHILD)
    return out


def _event(child: ThreadGroup, options: int) -> tuple[str, int, int] | None:
    """What a wait can report for ``child`` now: ("exited", si_code, status)
    with si_code CLD_EXITED/KILLED/DUMPED, ("stopped", CLD_STOPPED, signo) with
    WUNTRACED, ("continued", CLD_CONTINUED, SIGCONT) with WCONTINUED."""
    st = child.exit_status
    if st is not None:
        if not options & WEXITED:
            return None
        return ("exited", 1, st.code) if not st.signal else ("exited", 3 if st.core else 2, st.signal)
    rep = child.report
    if rep is not None:
        if rep[0] == "stopped" and options & WUNTRACED:
            return ("stopped", 5, rep[1])
        if rep[0] == "continued" and options & WCONTINUED:
            return ("continued", 6, rep[1])
    return None


@syscall("wait4", "ipxp")
def sys_wait4(task: Task, pid: int, status: int, options: int, rusage: int) -> int:
    """wait4(2) (Linux ``kernel/exit.c`` ``do_wait``): reap a zombie child, or
    report a stop (WUNTRACED: status ``sig << 8 | 0x7f``) or a continue
    (WCONTINUED: 0xffff); ECHILD with no such child; 0 with WNOHANG while
    none has news; otherwise wait (Block)."""
    pid = _int32(pid)
    if options & ~(WNOHANG | WUNTRACED | WCONTINUED | WALL | WCLONE | WNOTHREAD):
        raise SyscallError(errno.EINVAL)
    for child in _children(task, pid, options):
        ev = _event(child, options | WEXITED)
        if ev is None:
            continue
        kind, _, value = ev
        if kind == "exited":
            assert child.exit_status is not None
            word = child.exit_status.wait_status
        elif kind == "stopped":
            word = value << 8 | 0x7F
        else:
            word = 0xFFFF
        if status:
            task.mm.copy_out(status, struct.pack("<i", word))
        if rusage:
            task.mm.copy_out(rusage, bytes(144))
        if kind == "exited":
            _reap(task, child)
        else:
            child.report = None
        return child.tgid
    if options & WNOHANG:
        return 0
    raise Block()


@syscall("waitid", "iipxp")
def sys_waitid(task: Task, idtype: int, ident: int, infop: int, options: int, rusage: int) -> int:
    """waitid(2) for exited (WEXITED), stopped (WUNTRACED, alias WSTOPPED) and
    continued (WCONTINUED) children, with WNOHANG and WNOWAIT."""
    ident = _int32(ident)
    if not options & (WEXITED | WUNTRACED | WCONTINUED) or options & ~(
        WNOHANG | WEXITED | WUNTRACED | WCONTINUED | WNOWAIT | WALL | WCLONE | WNOTHREAD
    ):
        raise SyscallError(errno.EINVAL)
    if idtype == P_ALL:
        pid = -1
    elif idtype == P_PID:
        if ident <= 0:
            raise SyscallError(errno.EINVAL)
        pid = ident
    elif idtype == P_PGID:
        if ident < 0:
            raise SyscallError(errno.EINVAL)
        pid = -ident if ident > 0 else 0
    else:
        raise SyscallError(errno.EINVAL)
    for child in _children(task, pid, options):
        ev = _event(child, options)
        if ev is None:
            continue
        kind, code, value = ev
        if infop:
            # siginfo_t: si_signo, si_errno, si_code, then si_pid, si_uid, si_status.
            task.mm.copy_out(infop, struct.pack("<iii4xiIi", SIGCHLD, 0, code, child.tgid,
                                                child.leader.fs.creds.uid, value).ljust(128, b"\0"))
        if not options & WNOWAIT:
            if kind == "exited":
                _reap(task, child)
            else:
                child.report = None
        return 0
    if options & WNOHANG:
        if infop:
            task.mm.copy_out(infop, bytes(128))
        return 0
    raise Block()


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v
