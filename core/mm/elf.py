"""Loading static ELF programs and building the initial stack
(Linux ``fs/binfmt_elf.c`` ``load_elf_binary``/``create_elf_tables``; gVisor
``pkg/sentry/loader``).

Static ``ET_EXEC`` and static-PIE ``ET_DYN`` x86-64 programs are supported; a
program that needs an interpreter (PT_INTERP) is ENOEXEC for now. The stack
holds argc, argv, envp and the auxiliary vector (AT_PHDR, AT_ENTRY, AT_RANDOM,
AT_EXECFN, AT_HWCAP, ... but no AT_SYSINFO_EHDR: there is no vDSO).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SyscallError
from ..platform import PROT_EXEC, PROT_READ, PROT_WRITE
from .memfile import PAGE_SIZE, page_round_down, page_round_up
from .mm import ELF_ET_DYN_BASE, MemoryManager

ELF_MAGIC = b"\x7fELF"
ET_EXEC, ET_DYN = 2, 3
EM_X86_64 = 62
PT_LOAD, PT_INTERP, PT_PHDR, PT_GNU_STACK = 1, 3, 6, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")

AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_HWCAP2, AT_EXECFN, AT_MINSIGSTKSZ = 23, 25, 26, 31, 51

#: The largest argv+envp Linux accepts at once (``MAX_ARG_STRLEN`` is per string).
MAX_ARG_STRLEN = 32 * PAGE_SIZE


def _host_auxv() -> dict[int, int]:
    """The host's auxv values we pass on (hardware capabilities, signal stack size)."""
    try:
        with open("/proc/self/auxv", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    out = {}
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack_from("<QQ", raw, i)
        out[key] = value
    return out


HOST_AUXV = _host_auxv()


@dataclass
class ELFInfo:
    """A parsed program: entry point, load bias, program headers and where they are."""

    entry: int
    bias: int
    phdr_addr: int
    phnum: int
    end: int


@dataclass
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    prot: int


def parse(header: bytes, path: str = "") -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """The ELF header fields and program headers; ENOEXEC with a reason for
    anything that is not a loadable x86-64 ELF."""
    if len(header) < EHDR.size or header[:4] != ELF_MAGIC:
        raise SyscallError(errno.ENOEXEC, f"{path}: not an ELF file")
    eh = EHDR.unpack_from(header)
    ident, e_type, e_machine = eh[0], eh[1], eh[2]
    if ident[4] != 2 or ident[5] != 1:
        raise SyscallError(errno.ENOEXEC, f"{path}: not a 64-bit little-endian ELF")
    if e_machine != EM_X86_64:
        raise SyscallError(errno.ENOEXEC, f"{path}: ELF for machine {e_machine}, not x86-64 (62)")
    if e_type not in (ET_EXEC, ET_DYN):
        raise SyscallError(errno.ENOEXEC, f"{path}: ELF type {e_type} is not an executable")
    phoff, phentsize, phnum = eh[5], eh[9], eh[10]
    if phentsize != PHDR.size or phnum == 0 or phnum > 4096 or phoff + phnum * phentsize > len(header):
        raise SyscallError(errno.ENOEXEC, f"{path}: bad program headers")
    phdrs = [PHDR.unpack_from(header, phoff + i * phentsize) for i in range(phnum)]
    return eh, phdrs


def _prot(flags: int) -> int:
    return (PROT_READ if flags & PF_R else 0) | (PROT_WRITE if flags & PF_W else 0) | (
        PROT_EXEC if flags & PF_X else 0
    )


def load(mm: MemoryManager, read: Callable[[int, int], bytes], path: str) -> ELFInfo:
    """Map ``path``'s PT_LOAD segments into ``mm``; ``read(offset, n)`` reads the file.

    Raises SyscallError ENOEXEC (not a static x86-64 executable) or ENOMEM.
    """
    header = read(0, PAGE_SIZE)
    eh, phdrs = parse(header, path)
    e_type, entry, phoff = eh[1], eh[4], eh[5]
    if any(p[0] == PT_INTERP for p in phdrs):
        raise SyscallError(errno.ENOEXEC, f"{path}: dynamically linked programs are not supported yet")
    segments = [
        Segment(p[3], p[2], p[5], p[6], _prot(p[1]))
        for p in phdrs if p[0] == PT_LOAD and p[6] > 0
    ]
    if not segments:
        raise SyscallError(errno.ENOEXEC, f"{path}: no loadable segment")
    for s in segments:
        if s.filesz > s.memsz or s.vaddr % PAGE_SIZE != s.offset % PAGE_SIZE:
            raise SyscallError(errno.ENOEXEC, f"{path}: bad segment at {s.vaddr:#x}")
    bias = ELF_ET_DYN_BASE - page_round_down(min(s.vaddr for s in segments)) if e_type == ET_DYN else 0
    mapped_end = 0
    for s in sorted(segments, key=lambda s: s.vaddr):
        start = page_round_down(bias + s.vaddr)
        end = page_round_up(bias + s.vaddr + s.memsz)
        file_start = page_round_down(s.offset)
        data = read(file_start, s.offset + s.filesz - file_start) if s.filesz else b""
        if start < mapped_end:
            # The segment begins in a page the previous one mapped: write its
            # bytes there and widen that page's protection.
            overlap = mapped_end - start
            seg_start = bias + s.vaddr
            seg_end = min(mapped_end, bias + s.vaddr + s.memsz)
            if seg_end > seg_start:
                head = data[seg_start - start : seg_end - start]
                mm.copy_out_force(seg_start, head.ljust(seg_end - seg_start, b"\0"))
            last = mm.find(start)
            if last is not None and last.prot | s.prot != last.prot:
                mm.protect(start, PAGE_SIZE, last.prot | s.prot)
            data = data[overlap:]
            start = mapped_end
        if end > start:
            mm.map_data(start, end - start, s.prot, data, fixed=True, name=path, file_offset=file_start)
        mapped_end = max(mapped_end, end)
    phdr_addr = 0
    for p in phdrs:
        if p[0] == PT_PHDR:
            phdr_addr = bias + p[3]
    if not phdr_addr:
        for s in segments:
            if s.offset <= phoff < s.offset + s.filesz:
                phdr_addr = bias + s.vaddr + (phoff - s.offset)
    info = ELFInfo(entry=bias + entry, bias=bias, phdr_addr=phdr_addr, phnum=len(phdrs),
                   end=max(bias + s.vaddr + s.memsz for s in segments))
    mm.set_brk_start(info.end)
    mm.executable = path
    return info


def build_stack(
    mm: MemoryManager,
    info: ELFInfo,
    argv: list[bytes],
    envp: list[bytes],
    execfn: bytes,
    *,
    uid: int = 0,
    euid: int = 0,
    gid: int = 0,
    egid: int = 0,
    stack_size: int = 8 << 20,
) -> int:
    """Map the stack and lay out argc, argv, envp and auxv as Linux does;
    returns the initial stack pointer (16-byte aligned, pointing at argc).
    E2BIG when a string is longer than MAX_ARG_STRLEN."""
    for s in (*argv, *envp):
        if len(s) + 1 > MAX_ARG_STRLEN:
            raise SyscallError(errno.E2BIG)
    top = mm.layout.stack_top
    stack_size = max(page_round_up(stack_size), 32 * PAGE_SIZE)
    mm.map_anonymous(top - stack_size, stack_size, PROT_READ | PROT_WRITE, fixed=True, name="[stack]",
                     growsdown=True)
    sp = top

    def push(data: bytes) -> int:
        nonlocal sp
        sp -= len(data)
        mm.copy_out(sp, data)
        return sp

    push(b"\0" * 8)  # Linux leaves the top word as an end marker
    execfn_addr = push(execfn + b"\0")
    env_end = sp
    env_addrs = [push(e + b"\0") for e in reversed(envp)][::-1]
    arg_end = sp
    arg_addrs = [push(a + b"\0") for a in reversed(argv)][::-1]
    mm.arg_start, mm.arg_end = (arg_addrs[0] if arg_addrs else arg_end), arg_end
    mm.env_start, mm.env_end = (env_addrs[0] if env_addrs else env_end), env_end
    platform_addr = push(b"x86_64\0")
    random_addr = push(os.urandom(16))
    sp &= ~0xF
    auxv = [
        (AT_HWCAP, HOST_AUXV.get(AT_HWCAP, 0)),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_CLKTCK, 100),
        (AT_PHDR, info.phdr_addr),
        (AT_PHENT, PHDR.size),
        (AT_PHNUM, info.phnum),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, info.entry),
        (AT_UID, uid),
        (AT_EUID, euid),
        (AT_GID, gid),
        (AT_EGID, egid),
        (AT_SECURE, 0),
        (AT_RANDOM, random_addr),
        (AT_HWCAP2, HOST_AUXV.get(AT_HWCAP2, 0)),
        (AT_EXECFN, execfn_addr),
        (AT_PLATFORM, platform_addr),
    ]
    if AT_MINSIGSTKSZ in HOST_AUXV:
        auxv.append((AT_MINSIGSTKSZ, HOST_AUXV[AT_MINSIGSTKSZ]))
    auxv.append((AT_NULL, 0))
    mm.auxv = auxv
    words: list[int] = [len(argv), *arg_addrs, 0, *env_addrs, 0]
    for k, v in auxv:
        words += [k, v]
    if len(words) % 2:
        sp -= 8  # keep rsp 16-byte aligned at argc
    table = struct.pack(f"<{len(words)}Q", *words)
    sp -= len(table)
    mm.copy_out(sp, table)
    return sp
