"""ctypes bindings for ptrace(2) and the few host calls the platform needs.

Linux ABI constants (``include/uapi/linux/ptrace.h``, ``elf.h``,
``asm-generic/siginfo.h``) and one ``libc.ptrace`` function object with its
argument types set, so that a call converts four integers and nothing else.

All ptrace requests for a tracee must come from the host thread that is its
tracer (for a stub started with ``PTRACE_TRACEME``, the thread that spawned
it); from any other thread Linux answers ESRCH.
"""

from __future__ import annotations

import ctypes
import os
import struct

# Requests (include/uapi/linux/ptrace.h, arch/x86/include/uapi/asm/ptrace-abi.h).
PTRACE_TRACEME = 0
PTRACE_PEEKUSER = 3
PTRACE_POKEDATA = 5
PTRACE_POKEUSER = 6
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SYSEMU = 31
PTRACE_SYSEMU_SINGLESTEP = 32

# Options.
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_EXITKILL = 0x100000

#: The event of a clone stop with TRACECLONE (``status >> 16``).
PTRACE_EVENT_CLONE = 3

#: waitpid option: wait for threads and clone children too (Linux ``__WALL``).
WALL = 0x40000000

#: Regset note type of the XSAVE image (``include/uapi/linux/elf.h``).
NT_X86_XSTATE = 0x202

#: What WSTOPSIG gives at a system-call stop with TRACESYSGOOD.
SYSCALL_STOP = 0x80 | 5  # SIGTRAP | 0x80

# si_code values (include/uapi/asm-generic/siginfo.h).
SI_USER = 0
SI_KERNEL = 0x80
SI_TKILL = -6
SEGV_MAPERR = 1
SEGV_ACCERR = 2

#: ``struct siginfo`` is 128 bytes: si_signo, si_errno, si_code (int each),
#: padding, then the union: si_addr (u64) for faults, si_pid/si_uid (int) for kill.
SIGINFO_SIZE = 128
SIGINFO_HEAD = struct.Struct("<iii4xQ")
SIGINFO_PID = struct.Struct("<16xi")

#: Byte offsets in ``struct user_regs_struct`` (PTRACE_PEEKUSER addresses).
OFF_RAX = 10 * 8
OFF_RIP = 16 * 8

_libc = ctypes.CDLL(None, use_errno=True)

#: ``long ptrace(request, pid, addr, data)``; returns -1 with errno on failure
#: (PEEK requests return the word: check errno).
raw_ptrace = _libc.ptrace
raw_ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong)
raw_ptrace.restype = ctypes.c_long

_libc_noerrno = ctypes.CDLL(None)

#: The same function without ctypes' errno bookkeeping (about 0.15 µs less per
#: call): for the hot path, which calls :func:`errno_of` only after a -1.
fast_ptrace = _libc_noerrno.ptrace
fast_ptrace.argtypes = raw_ptrace.argtypes
fast_ptrace.restype = ctypes.c_long

_sched_getcpu = _libc.sched_getcpu
_sched_getcpu.argtypes = ()
_sched_getcpu.restype = ctypes.c_int

get_errno = ctypes.get_errno
set_errno = ctypes.set_errno


class PtraceError(OSError):
    """A ptrace request failed: ``errno``, the request and the pid in the message."""


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    """One ptrace request; raises :class:`PtraceError` with Linux's errno."""
    r = raw_ptrace(request, pid, addr, data)
    if r == -1:
        err = get_errno()
        if err:
            raise PtraceError(err, f"ptrace({request:#x}, pid {pid}): {os.strerror(err)}")
    return int(r)


def errno_of(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    """The errno of a request that :data:`fast_ptrace` just failed, found by
    making it again through :data:`raw_ptrace` (requests on a stopped tracee
    fail the same way twice; 0 if it succeeds this time)."""
    set_errno(0)
    if raw_ptrace(request, pid, addr, data) == -1:
        return get_errno()
    return 0


def peekuser(pid: int, offset: int) -> int:
    """The u64 at byte ``offset`` of the tracee's ``user`` area (registers)."""
    set_errno(0)
    r = raw_ptrace(PTRACE_PEEKUSER, pid, offset, 0)
    if r == -1:
        err = get_errno()
        if err:
            raise PtraceError(err, f"PTRACE_PEEKUSER({offset}), pid {pid}: {os.strerror(err)}")
    return int(r) & 0xFFFFFFFFFFFFFFFF


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
SYS_TGKILL = 234

#: ``pidfd_open`` flag for a pidfd of one thread, not of its process (Linux 6.9):
#: ``pidfd_send_signal`` through it sends a thread-directed signal.
PIDFD_THREAD = os.O_EXCL


def tgkill(tgid: int, tid: int, sig: int) -> None:
    """Send ``sig`` to thread ``tid`` of process ``tgid`` (tgkill(2)); OSError on failure."""
    if _syscall(ctypes.c_long(SYS_TGKILL), ctypes.c_long(tgid), ctypes.c_long(tid), ctypes.c_long(sig)) == -1:
        err = get_errno()
        raise OSError(err, f"tgkill({tgid}, {tid}, {sig}): {os.strerror(err)}")


def current_cpu() -> int:
    """The CPU the calling thread runs on now (``sched_getcpu``)."""
    return int(_sched_getcpu())


class IOVec(ctypes.Structure):
    """``struct iovec`` (PTRACE_GETREGSET/SETREGSET take one)."""

    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


def xstate_size(pid: int) -> int:
    """The size in bytes of the XSAVE image that PTRACE_GETREGSET NT_X86_XSTATE
    gives for ``pid`` on this host (Linux ``fpu_user_cfg.max_size``: 832 with AVX,
    2696 with AVX-512 and PKRU); SETREGSET needs exactly that many."""
    buf = ctypes.create_string_buffer(1 << 16)
    iov = IOVec(ctypes.addressof(buf), len(buf))
    ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, ctypes.addressof(iov))
    return int(iov.len)
