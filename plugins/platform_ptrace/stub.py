"""The stub: a tiny hand-made static ELF that hosts one application address space.

gVisor (``pkg/sentry/platform/ptrace/stub_amd64.s``, ``subprocess.go``) runs
application code in traced "stub" processes whose address space holds nothing
but the stub's own page and what the sentry maps there. Ours is a 64-bit
ET_EXEC image of a few hundred bytes, built here in Python at import (no
assembler needed), written to a memfd and started with ``posix_spawn`` on
``/proc/self/fd/N``: no Python runs in the child, nothing of the sentry's
address space is copied, and no fork-with-threads hazard exists.

What the stub's code does, before any tracer touches it (no stack needed):

1. ``mmap(STUB_START, 4096, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED, 1, 0)``:
   maps its own file page (fd 1, put there by posix_spawn) again at the top of
   the address space, and jumps there;
2. ``munmap(0, STUB_START)`` and ``munmap`` of the rest of the reserved range:
   the load address, ``[stack]``, ``[vdso]``, ``[vvar]`` and ``[vvar_vclock]``
   are gone (``[vsyscall]``, above ``TASK_SIZE``, cannot be unmapped and stays);
3. ``close_range(1, ~0U, 0)``: the only fd left is 0, the memory file;
4. ``prctl(PR_SET_NAME, "pyrunsc-stub")``;
5. ``prctl(PR_SET_NO_NEW_PRIVS)`` and a seccomp filter that traps (SIGSYS)
   gettimeofday, time and getcpu, the calls Linux runs for a jump into
   ``[vsyscall]`` (application system calls never reach seccomp: SYSEMU stops
   them first; gVisor's stub does the same);
6. ``ptrace(PTRACE_TRACEME)`` and ``int3``: it stops with SIGTRAP, traced by
   the thread that spawned it.

Any failing step exits with the errno as status. After that the tracer only
ever points ``rip`` at :data:`SYSCALL_ADDR` (``syscall; int3``) to inject a
system call, or at application code under ``PTRACE_SYSEMU``.

More threads of a stub (:meth:`Stub.new_thread`) come from a ``clone`` of
the first one injected there: sharing everything and needing no stack, each
starts at the ``int3`` after the ``syscall``, traced (TRACECLONE) and
stopped by SIGSTOP. One ends (:meth:`Stub.end_thread`) by an injected
``exit``; all end with the process (:meth:`Stub.kill`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import struct

from .ptrace import (
    OFF_RAX,
    OFF_RIP,
    PIDFD_THREAD,
    PTRACE_CONT,
    PTRACE_GETREGS,
    PTRACE_O_EXITKILL,
    PTRACE_O_TRACECLONE,
    PTRACE_O_TRACESYSGOOD,
    PTRACE_SETOPTIONS,
    PTRACE_SETREGS,
    WALL,
    peekuser,
    ptrace,
    tgkill,
)

PAGE_SIZE = 4096

#: Linux ``TASK_SIZE`` with 4-level paging: the end of user space.
TASK_SIZE = 0x7FFF_FFFF_F000
#: The range every stub reserves at the top of user space, [STUB_START, STUB_END):
#: the stub's code page is at STUB_START, the rest is kept empty. Application
#: mappings must stay below :data:`MAX_USER_ADDRESS` (the kernel's
#: ``Layout.reserved`` gets this range from ``PtracePlatform.reserved``).
STUB_START = 0x7FFF_FFFE_F000
STUB_END = TASK_SIZE
MAX_USER_ADDRESS = STUB_START

#: Where execve first loads the image; unmapped again at once.
LOAD_ADDR = 0x40_0000
#: The memory file's fd number inside every stub.
STUB_MEMFD = 0
#: The ELF image's fd number in the child while it starts (closed by the stub).
_STUB_ELF_FD = 1

SYS_MMAP, SYS_MPROTECT, SYS_MUNMAP, SYS_CLONE, SYS_EXIT = 9, 10, 11, 56, 60
SYS_PTRACE, SYS_PRCTL, SYS_EXIT_GROUP, SYS_CLOSE_RANGE = 101, 157, 231, 436
PROT_READ, PROT_EXEC = 1, 4
#: clone flags of a new stub thread: a thread of the stub process, sharing
#: everything (pthread_create's, less the TLS and tid words; no stack: the
#: stub's code uses none).
CLONE_STUB_THREAD = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000  # VM FS FILES SIGHAND THREAD SYSVSEM
MAP_SHARED, MAP_PRIVATE, MAP_FIXED = 0x01, 0x02, 0x10
PR_SET_NAME, PR_SET_NO_NEW_PRIVS = 15, 38
SYS_SECCOMP, SECCOMP_SET_MODE_FILTER = 317, 1
#: The system calls behind the vsyscall page's three entries.
VSYSCALL_CALLS = (96, 201, 309)  # gettimeofday, time, getcpu
#: seccomp filter: trap VSYSCALL_CALLS, allow the rest (struct sock_filter).
_FILTER = b"".join(struct.pack("<HBBI", *insn) for insn in (
    (0x20, 0, 0, 0),  # ld [0]: seccomp_data.nr
    (0x15, 3, 0, VSYSCALL_CALLS[0]),  # jeq -> trap
    (0x15, 2, 0, VSYSCALL_CALLS[1]),
    (0x15, 1, 0, VSYSCALL_CALLS[2]),
    (0x06, 0, 0, 0x7FFF0000),  # ret SECCOMP_RET_ALLOW
    (0x06, 0, 0, 0x00030000),  # ret SECCOMP_RET_TRAP
))

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_CODE_OFF = _EHDR.size + 2 * _PHDR.size


class _Asm:
    """Just enough of an x86-64 assembler for the stub: bytes, labels, rel32 jumps."""

    def __init__(self, base: int) -> None:
        self.base = base  # address of code[0] once relocated
        self.code = bytearray()
        self.labels: dict[str, int] = {}
        self.fixups: list[tuple[int, str]] = []

    def emit(self, *parts: bytes) -> None:
        for p in parts:
            self.code += p

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def jnz(self, name: str) -> None:  # jne/jnz rel32
        self.emit(b"\x0f\x85")
        self.fixups.append((len(self.code), name))
        self.emit(b"\0\0\0\0")

    def mov_imm32(self, reg: str, value: int) -> None:
        ops = {"eax": b"\xb8", "edi": b"\xbf", "esi": b"\xbe", "edx": b"\xba",
               "r10d": b"\x41\xba", "r8d": b"\x41\xb8"}
        self.emit(ops[reg], struct.pack("<I", value & 0xFFFFFFFF))

    def mov_imm64(self, reg: str, value: int) -> None:
        ops = {"rax": b"\x48\xb8", "rdi": b"\x48\xbf", "rsi": b"\x48\xbe", "rdx": b"\x48\xba"}
        self.emit(ops[reg], struct.pack("<Q", value))

    def syscall_checked(self, nr: int) -> None:
        """``mov eax, nr; syscall; test rax, rax; jnz fail``."""
        self.mov_imm32("eax", nr)
        self.emit(b"\x0f\x05", b"\x48\x85\xc0")
        self.jnz("fail")

    def finish(self) -> bytes:
        for at, name in self.fixups:
            struct.pack_into("<i", self.code, at, self.labels[name] - (at + 4))
        return bytes(self.code)


def _emit(a: _Asm, where: dict[str, int]) -> None:
    """The stub's code; ``where`` gives label offsets from a previous pass
    (instruction sizes never depend on them, so two passes settle)."""

    def at(name: str) -> int:
        return a.base + where.get(name, 0)

    # 1. Map our own file page at STUB_START and jump there.
    a.mov_imm64("rdi", STUB_START)
    a.mov_imm32("esi", PAGE_SIZE)
    a.mov_imm32("edx", PROT_READ | PROT_EXEC)
    a.mov_imm32("r10d", MAP_PRIVATE | MAP_FIXED)
    a.mov_imm32("r8d", _STUB_ELF_FD)
    a.emit(b"\x45\x31\xc9")  # xor r9d, r9d
    a.mov_imm32("eax", SYS_MMAP)
    a.emit(b"\x0f\x05", b"\x48\x39\xf8")  # syscall; cmp rax, rdi
    a.jnz("fail")
    a.mov_imm64("rax", at("high"))
    a.emit(b"\xff\xe0")  # jmp rax
    a.label("high")
    # 2. Unmap everything else below TASK_SIZE.
    a.emit(b"\x31\xff")  # xor edi, edi
    a.mov_imm64("rsi", STUB_START)
    a.syscall_checked(SYS_MUNMAP)
    a.mov_imm64("rdi", STUB_START + PAGE_SIZE)
    a.mov_imm32("esi", STUB_END - STUB_START - PAGE_SIZE)
    a.syscall_checked(SYS_MUNMAP)
    # 3. Keep only fd 0 (the memory file).
    a.mov_imm32("edi", 1)
    a.mov_imm32("esi", 0xFFFFFFFF)
    a.emit(b"\x31\xd2")  # xor edx, edx
    a.syscall_checked(SYS_CLOSE_RANGE)
    # 4. A name for ps.
    a.mov_imm32("edi", PR_SET_NAME)
    a.mov_imm64("rsi", at("name"))
    a.syscall_checked(SYS_PRCTL)
    # 5. Trap the vsyscall page's system calls.
    a.mov_imm32("edi", PR_SET_NO_NEW_PRIVS)
    a.mov_imm32("esi", 1)
    a.emit(b"\x31\xd2", b"\x45\x31\xd2", b"\x45\x31\xc0")  # xor edx, r10d, r8d
    a.syscall_checked(SYS_PRCTL)
    a.mov_imm32("edi", SECCOMP_SET_MODE_FILTER)
    a.emit(b"\x31\xf6")  # xor esi, esi
    a.mov_imm64("rdx", at("fprog"))
    a.syscall_checked(SYS_SECCOMP)
    # 6. Be traced by the thread that spawned us, and stop.
    a.emit(b"\x31\xff", b"\x31\xf6", b"\x31\xd2", b"\x45\x31\xd2")  # xor edi, esi, edx, r10d
    a.syscall_checked(SYS_PTRACE)
    a.emit(b"\xcc")  # int3: the first stop
    a.emit(b"\x31\xff")  # resumed as is: exit_group(0)
    a.mov_imm32("eax", SYS_EXIT_GROUP)
    a.emit(b"\x0f\x05")
    a.label("fail")  # exit_group(-rax)
    a.emit(b"\x89\xc7", b"\xf7\xdf")  # mov edi, eax; neg edi
    a.mov_imm32("eax", SYS_EXIT_GROUP)
    a.emit(b"\x0f\x05", b"\x0f\x0b")  # syscall; ud2
    a.label("syscall")  # The injection point.
    a.emit(b"\x0f\x05", b"\xcc", b"\x0f\x0b")  # syscall; int3; ud2
    a.label("name")
    a.emit(b"pyrunsc-stub\0")
    a.emit(bytes(-len(a.code) % 8))
    a.label("fprog")  # struct sock_fprog
    a.emit(struct.pack("<H6xQ", len(_FILTER) // 8, at("filter")))
    a.label("filter")
    a.emit(_FILTER)


def _build() -> tuple[bytes, int]:
    """The stub's ELF image and the offset of its ``syscall; int3`` in its page."""
    first = _Asm(STUB_START + _CODE_OFF)
    _emit(first, {})
    a = _Asm(STUB_START + _CODE_OFF)
    _emit(a, first.labels)
    code = a.finish()
    size = _CODE_OFF + len(code)
    if size > PAGE_SIZE:  # the stub maps only its first page at STUB_START
        raise AssertionError(f"stub image is {size} bytes, more than a page")
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr = _EHDR.pack(ident, 2, 0x3E, 1, LOAD_ADDR + _CODE_OFF, _EHDR.size, 0, 0, _EHDR.size, _PHDR.size, 2, 0, 0, 0)
    load = _PHDR.pack(1, 5, 0, LOAD_ADDR, LOAD_ADDR, size, size, PAGE_SIZE)  # PT_LOAD R+X
    gnu_stack = _PHDR.pack(0x6474E551, 6, 0, 0, 0, 0, 0, 16)  # PT_GNU_STACK RW: no READ_IMPLIES_EXEC
    return ehdr + load + gnu_stack + code, _CODE_OFF + a.labels["syscall"]


#: The stub's ELF image (ET_EXEC, x86-64, one R+X PT_LOAD at LOAD_ADDR).
STUB_ELF, _SYSCALL_OFF = _build()
#: The stub's ``syscall`` instruction; ``int3`` follows it, so an injected
#: system call stops with SIGTRAP at ``SYSCALL_ADDR + 3``.
SYSCALL_ADDR = STUB_START + _SYSCALL_OFF
_SYSCALL_DONE = SYSCALL_ADDR + 3

# Register indexes in user_regs_struct.
_RAX, _ORIG_RAX, _RIP, _RDI, _RSI, _RDX, _R10, _R8, _R9 = 10, 15, 16, 14, 13, 12, 7, 9, 8
_USER_REGS = struct.Struct("<27Q")
_NO_SYSCALL = 0xFFFF_FFFF_FFFF_FFFF  # orig_rax = -1: not in a system call
waitpid = os.waitpid


class StubError(RuntimeError):
    """A stub could not be started, or died under us (its pid and how)."""


class InjectedSyscallError(OSError):
    """A system call injected into a stub failed; ``errno`` is Linux's answer."""


def describe_status(status: int) -> str:
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return f"exited with status {code}" + (f" ({os.strerror(code)})" if code else "")
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"wait status {status:#x}"


class StubThread:
    """One thread of a stub process, traced by the tracer thread: its ``tid``,
    a way to signal it alone (a thread pidfd, or tgkill on kernels before
    6.9), the ctypes buffer its register requests use (``regs``: 27 u64
    user_regs_struct) and the general registers it holds (``held``, valid
    while ``held_ok``: injected system calls and SETREGS clear it).

    Only the tracer thread may call :meth:`syscall` and :meth:`wait`;
    :meth:`signal` works from any thread.
    """

    __slots__ = ("alive", "held", "held_ok", "pidfd", "regs", "regs_addr", "stub", "tid", "wait_id")

    def __init__(self, stub: Stub, tid: int) -> None:
        self.stub = stub
        self.tid = tid
        self.alive = True
        self.pidfd = -1
        self.regs = (ctypes.c_uint64 * 27)()
        self.regs_addr = ctypes.addressof(self.regs)
        self.held = [0] * 27
        self.held_ok = False
        #: What waitpid is given to wait for this thread: its tid, or -pid (the
        #: stub's process group) for the leader of a stub with other threads,
        #: whose death Linux reports only once every other thread is reaped.
        self.wait_id = tid

    def _open_pidfd(self) -> None:
        try:
            self.pidfd = os.pidfd_open(self.tid, PIDFD_THREAD)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: no PIDFD_THREAD before Linux 6.9; tgkill then
                raise

    def syscall(self, nr: int, a0: int = 0, a1: int = 0, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
        """Run system call ``nr`` with up to six arguments in this thread; its
        result (>= 0). Raises :class:`InjectedSyscallError` with the errno when
        Linux answers -errno, :class:`StubError` if the stub died.

        The thread's general registers are not restored afterwards: every
        context switch sets them all (its FP state is left untouched).
        Signals that stop the thread meanwhile are suppressed (an interrupt
        stays pending in its context).
        """
        self.held_ok = False
        r = self.stub._inject
        r[_RAX], r[_RDI], r[_RSI], r[_RDX], r[_R10], r[_R8], r[_R9] = nr, a0, a1, a2, a3, a4, a5
        tid = self.tid
        _USER_REGS.pack_into(self.regs, 0, *r)
        ptrace(PTRACE_SETREGS, tid, 0, self.regs_addr)
        while True:
            ptrace(PTRACE_CONT, tid, 0, 0)
            status = self.wait()
            if (status >> 8) & 0xFF == signal.SIGTRAP and peekuser(tid, OFF_RIP) == _SYSCALL_DONE:
                break
            # Another signal or an event (a clone's), before or after the call ran: suppress it, go on.
        ret = peekuser(tid, OFF_RAX)
        if ret >= 0xFFFF_FFFF_FFFF_F001:  # -4095..-1
            err = 0x1_0000_0000_0000_0000 - ret
            raise InjectedSyscallError(
                err, f"{_NAMES.get(nr, nr)}({', '.join(hex(x) for x in (a0, a1, a2, a3, a4, a5))}) in stub "
                f"{self.stub.pid} thread {tid}: {os.strerror(err)}")
        return ret

    def wait(self) -> int:
        """The next wait status of this thread, which must be a stop; raises
        :class:`StubError` (after reaping the whole stub) if it died."""
        status = self.next_status()
        if status & 0xFF != 0x7F:
            self.died(status)
        return status

    def next_status(self) -> int:
        """The next wait status of this thread, a stop or its death."""
        status = self.stub.stashed.pop(self.tid, None)
        if status is None:
            pid, status = waitpid(self.wait_id, WALL)
            if pid != self.tid:
                status = self.collect(pid, status)
        return status

    def collect(self, pid: int, status: int) -> int:
        """A wait on the stub's process group (see ``wait_id``) gave another
        thread's report, ``pid`` and ``status``: keep it for that thread's
        next wait (a new thread's first stop; a death, the stub being
        killed) and wait on for this one's. Its status."""
        stub = self.stub
        while pid != self.tid:
            stub.stashed[pid] = status
            other = stub.threads.get(pid)
            if other is not None and status & 0xFF != 0x7F:
                other.gone()  # reaped
            pid, status = waitpid(self.wait_id, WALL)
        return status

    def stop_after(self, error: BaseException) -> None:
        """Bring the thread back to a ptrace stop after ``error`` escaped a
        wait while it ran (so that the next request finds it stopped); if it
        is gone (ChildProcessError: reaped elsewhere), mark it dead and raise
        StubError from ``error``."""
        if isinstance(error, ChildProcessError):
            self.gone()
            raise StubError(f"stub {self.stub.pid} thread {self.tid} was reaped by someone else "
                            "(platform closed?)") from error
        self.signal(signal.SIGCHLD)  # a stop the next switch drops as stale
        with contextlib.suppress(BaseException):
            self.wait()

    def died(self, status: int) -> None:
        """This thread was reported dead with ``status``: only SIGKILL kills a
        stub thread behind the tracer's back, so the whole stub is going:
        reap it, and raise StubError."""
        self.gone()
        self.stub.kill()
        raise StubError(f"stub {self.stub.pid} thread {self.tid} {describe_status(status)}")

    def gone(self) -> None:
        """The thread is dead and reaped: forget its pidfd."""
        self.alive = False
        fd, self.pidfd = self.pidfd, -1
        if fd >= 0:
            os.close(fd)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this thread alone (through its thread pidfd: never
        to a reused tid; by tgkill before Linux 6.9). Safe from any thread;
        does nothing once the thread is gone."""
        if not self.alive:
            return
        fd = self.pidfd
        with contextlib.suppress(OSError):
            if fd >= 0:
                signal.pidfd_send_signal(fd, sig)
            else:
                tgkill(self.stub.pid, self.tid, sig)


class Stub:
    """One traced stub process: ``pid``, a ``pidfd`` to signal it safely, and
    its threads (``threads`` by tid; ``leader`` is the first, which lives as
    long as the process).

    Every thread is traced by the tracer thread (TRACECLONE makes each new
    one traced from its start) and must be reaped by it: :meth:`end_thread`
    reaps one, :meth:`kill` them all. Only the tracer thread may call
    :meth:`syscall`, :meth:`new_thread` and :meth:`end_thread`; :meth:`kill`
    and :meth:`signal` work from any thread of the sentry.
    """

    __slots__ = ("_inject", "alive", "cs_ss_segs", "leader", "pid", "pidfd", "stashed", "threads")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.alive = True
        self.pidfd = -1
        self.leader = StubThread(self, pid)
        self.threads: dict[int, StubThread] = {pid: self.leader}
        #: Wait statuses collected for a thread other than the one waited for.
        self.stashed: dict[int, int] = {}
        #: The stub's CS, SS, DS, ES, FS, GS selectors, which every switch keeps.
        self.cs_ss_segs: tuple[int, ...] = ()
        self._inject: list[int] = []

    @classmethod
    def spawn(cls, elf_path: str, memfd: int) -> Stub:
        """Start a stub from the ELF at ``elf_path`` (a ``/proc/self/fd/N`` path)
        with ``memfd`` as its fd 0; returns it stopped and traced by the
        calling thread, with TRACESYSGOOD|TRACECLONE|EXITKILL set.

        The child gets an empty signal mask, default dispositions and a new
        session (no terminal signals reach it; its process group is its own,
        which :meth:`kill` waits on). Raises :class:`StubError` if the stub
        exits instead (status = the errno of the step that failed, e.g.
        EPERM when ptrace is not allowed).
        """
        sigs = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
        pid = os.posix_spawn(
            elf_path, ["pyrunsc-stub"], {},
            file_actions=[(os.POSIX_SPAWN_DUP2, memfd, STUB_MEMFD), (os.POSIX_SPAWN_DUP2, _elf_fd(elf_path), 1)],
            setsid=True, setsigmask=(), setsigdef=sigs,
        )
        stub = cls(pid)
        try:
            _, status = waitpid(pid, 0)
            if not os.WIFSTOPPED(status):
                stub.alive = stub.leader.alive = False
                raise StubError(f"stub {pid} {describe_status(status)} while starting")
            if os.WSTOPSIG(status) != signal.SIGTRAP:
                raise StubError(f"stub {pid} stopped with signal {os.WSTOPSIG(status)}, expected SIGTRAP")
            ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL)
            leader = stub.leader
            ptrace(PTRACE_GETREGS, pid, 0, leader.regs_addr)
            init = list(leader.regs)
            # The user segment selectors every switch uses (gVisor resetSysemuRegs).
            stub.cs_ss_segs = (init[17], init[20], init[23], init[24], init[25], init[26])
            init[_ORIG_RAX] = _NO_SYSCALL
            init[_RIP] = SYSCALL_ADDR
            stub._inject = init
            stub.pidfd = os.pidfd_open(pid)
            leader._open_pidfd()
        except BaseException:
            stub.kill()
            raise
        return stub

    def syscall(self, nr: int, a0: int = 0, a1: int = 0, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
        """:meth:`StubThread.syscall` in the leader (any stopped thread
        would do: they share the address space and the fd table)."""
        return self.leader.syscall(nr, a0, a1, a2, a3, a4, a5)

    def new_thread(self) -> StubThread:
        """A new thread of the stub, stopped (in the signal-delivery stop of
        the SIGSTOP that auto-attach gives it); an injected clone in the
        leader. Its registers are the leader's at the clone, FP state
        included: a switch must set them all. Raises
        :class:`InjectedSyscallError` (EAGAIN at a thread limit) and
        :class:`StubError` (the stub died)."""
        leader = self.leader
        # The new thread's first stop may come before the leader's: wait on
        # the process group from now on (StubThread.collect keeps it).
        leader.wait_id = -self.pid
        try:
            tid = leader.syscall(SYS_CLONE, CLONE_STUB_THREAD)
        except BaseException:
            self._set_wait_id()
            raise
        t = StubThread(self, tid)
        self.threads[tid] = t
        t.wait()
        try:
            t._open_pidfd()
        except BaseException:
            self.end_thread(t)
            raise
        return t

    def end_thread(self, t: StubThread) -> None:
        """End thread ``t`` (not the leader) and reap it: an injected
        ``exit(0)``. If that fails (the stub is dying), :meth:`kill` reaps it
        later. Tracer thread only."""
        if t is self.leader:
            raise ValueError("the leader of a stub lives as long as its process")
        try:
            if t.alive and self.alive:
                r = list(self._inject)
                r[_RAX], r[_RDI] = SYS_EXIT, 0
                _USER_REGS.pack_into(t.regs, 0, *r)
                ptrace(PTRACE_SETREGS, t.tid, 0, t.regs_addr)
                while True:
                    ptrace(PTRACE_CONT, t.tid, 0, 0)
                    if t.next_status() & 0xFF != 0x7F:
                        break
                    # A stop for a pending signal before the call: go on.
                t.gone()
        finally:
            if not t.alive:
                self.threads.pop(t.tid, None)
                self.stashed.pop(t.tid, None)
                self._set_wait_id()

    def _set_wait_id(self) -> None:
        self.leader.wait_id = self.pid if len(self.threads) == 1 else -self.pid

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the stub process (through its pidfd: never to a
        reused pid). Safe from any thread; does nothing once the stub is gone."""
        fd = self.pidfd
        if fd >= 0 and self.alive:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, sig)

    def kill(self) -> None:
        """SIGKILL the stub and reap every thread of it; idempotent, callable
        from any thread.

        Each traced thread's death is reported to the tracer, the leader's
        only once all others are reaped: so this waits on the stub's process
        group (its own since setsid), which also finds a thread whose tid a
        clone in progress had not yet told.
        """
        if self.alive:
            self.alive = False
            with contextlib.suppress(ProcessLookupError):
                if self.pidfd >= 0:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                else:  # still starting: not reaped, so the pid is still ours
                    os.kill(self.pid, signal.SIGKILL)
            while True:
                try:
                    waitpid(-self.pid, WALL)
                except ChildProcessError:
                    break
        for t in self.threads.values():
            t.gone()
        self.stashed.clear()
        fd, self.pidfd = self.pidfd, -1
        if fd >= 0:
            os.close(fd)

    def maps(self) -> list[str]:
        """Lines of the stub's /proc/PID/maps."""
        with open(f"/proc/{self.pid}/maps") as f:
            return f.read().splitlines()

    def tids(self) -> list[int]:
        """The tids in the stub's /proc/PID/task (what Linux sees)."""
        return sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))


_NAMES = {SYS_MMAP: "mmap", SYS_MPROTECT: "mprotect", SYS_MUNMAP: "munmap", SYS_CLONE: "clone"}


def _elf_fd(elf_path: str) -> int:
    return int(elf_path.rsplit("/", 1)[1])


def open_stub_elf() -> int:
    """A close-on-exec memfd holding :data:`STUB_ELF`, numbered 3 or above (so
    that the stub's fd 0 and 1 can be assigned without clobbering it)."""
    fd = os.memfd_create("pyrunsc-stub", os.MFD_CLOEXEC)
    try:
        os.write(fd, STUB_ELF)
        if fd < 3:
            import fcntl

            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = high
    except BaseException:
        os.close(fd)
        raise
    return fd
