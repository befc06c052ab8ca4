"""The guest machine: its physical layout, the "kernel" pages every address
space maps (GDT, IDT, exception stubs, the LSTAR page, per-vCPU TSS+stack),
4-level page tables, and the two ways a system call enters the sentry.

Guest-physical layout (gVisor ``pkg/sentry/platform/kvm`` maps the sentry's
own memory 1:1; we keep it smaller since the sentry stays on the host):

- [0, :data:`POOL_SIZE`): the *pool*, an anonymous host mapping: the kernel
  pages (pool page i is kernel page i, at guest-virtual ``KERNEL_START + i*4K``)
  and page-table pages (allocated from :data:`PT_FIRST_PAGE` on);
- [:data:`MEM_BASE`, ``MEM_BASE + memfile.size``): the memory file, so a
  guest-physical address is ``MEM_BASE + offset`` (registered in chunks).

Guest-virtual: the kernel pages sit at [:data:`KERNEL_START`,
:data:`KERNEL_END`), in the lower half because PVM faults on upper-half guest
addresses (PLATFORM-FACTS); that range is ``KVMPlatform.reserved``.

Entries (:class:`Entry`): a user ``syscall`` jumps to LSTAR, whose page holds
the entry's :attr:`Entry.lstar_code` (then ``hlt`` to the end of the page).

- PVM, port exit (:class:`PvmPortEntry`, the default on PVM): the jump stays in
  user mode (ring 3, IF clear by SFMASK) and LSTAR holds ``out 0x80, al``,
  which the vCPU's TSS I/O bitmap lets user mode do: KVM emulates it and
  returns KVM_EXIT_IO with the vCPU still in user mode. Return: the sentry
  writes the task's registers into kvm_run's sync regs (rip = the user rip,
  IF set) and KVM_RUN enters user mode there; no guest ring-0 code runs. A
  vCPU in ring 0 (after an exception stub, or a new vCPU) is brought to user
  mode the same way, with the user-mode sregs in kvm_run's sync sregs.
- PVM, #GP exit (:class:`PvmEntry`): LSTAR holds ``hlt``, which in ring 3
  raises #GP; IDT vector 13 runs the ring-0 stub ``push 13; hlt; add
  rsp,16; iretq``: KVM_EXIT_HLT with an interrupt frame whose RIP is LSTAR.
  Return: ``iretq`` from a rewritten frame. On this project's PVM host the
  ring-0 instructions are emulated one by one: this path costs about 9 us
  more than the port exit (``benchmarks/kvm_roundtrip.py``).
- Both PVM entries need the LSTAR page to be a *user* page.
- VMX/SVM (:class:`Ring0Entry`): the jump enters ring 0 at LSTAR (supervisor
  page), ``hlt`` exits with RIP = LSTAR+1; return: ``sysretq`` with rcx = rip,
  r11 = rflags (or ``iretq`` when the kernel changed rcx/r11).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator

PAGE = 4096
#: Guest-virtual range of the kernel pages (2 MiB, one page table).
KERNEL_START = 0x7FFF_FFC0_0000
KERNEL_END = KERNEL_START + 0x20_0000
#: Kernel page indices (pool pages and guest-virtual pages alike).
GDT_PAGE, IDT_PAGE, STUB_PAGE, LSTAR_PAGE, KERNEL_PT_PAGE = 0, 1, 2, 3, 4
VCPU_FIRST_PAGE = 16
MAX_VCPUS = 256
#: First pool page handed out for page tables.
PT_FIRST_PAGE = 512
POOL_SIZE = 1 << 30
MEM_BASE = POOL_SIZE

GDT_VA = KERNEL_START + GDT_PAGE * PAGE
IDT_VA = KERNEL_START + IDT_PAGE * PAGE
STUB_VA = KERNEL_START + STUB_PAGE * PAGE
LSTAR = KERNEL_START + LSTAR_PAGE * PAGE
#: The ring-0 return path: ``add rsp, 16; iretq`` (rsp at the frame's vector slot).
RESUME = STUB_VA
STUB_SLOT = 16

# Selectors, Linux layout (arch/x86/include/asm/segment.h).
KERNEL_CS, KERNEL_DS, USER32_CS, USER_DS, USER_CS, TSS_SEL = 0x10, 0x18, 0x23, 0x2B, 0x33, 0x40
GDT_ENTRIES = {
    KERNEL_CS: 0x00AF9B000000FFFF,  # 64-bit code, DPL 0, accessed
    KERNEL_DS: 0x00CF93000000FFFF,  # data, DPL 0
    USER32_CS: 0x00CFFB000000FFFF,  # 32-bit code, DPL 3
    USER_DS: 0x00CFF3000000FFFF,  # data, DPL 3
    USER_CS: 0x00AFFB000000FFFF,  # 64-bit code, DPL 3
}
GDT_LIMIT = TSS_SEL + 16 - 1
STAR = USER32_CS << 48 | KERNEL_CS << 32
SFMASK = 0x47700  # TF DF IF IOPL NT AC cleared at syscall (Linux)
CR0 = 0x80010033  # PG WP NE ET MP PE
CR4 = 0x40620  # PAE OSFXSR OSXMMEXCPT OSXSAVE
EFER = 0xD01  # SCE LME LMA NXE
#: Vectors that push an error code.
ERROR_CODE_VECTORS = frozenset((8, 10, 11, 12, 13, 14, 17, 21, 29, 30))
#: Vectors user code may raise with ``int n`` / ``int3`` / ``into`` (Linux: DPL 3).
USER_GATES = frozenset((3, 4))
TSS_SIZE = 104
#: The I/O port :class:`PvmPortEntry`'s LSTAR code writes to; the only port the
#: TSS I/O bitmap may open to user mode.
EXIT_PORT = 0x80
#: The TSS's I/O bitmap (right after it): ports 0 .. EXIT_PORT|7, then the
#: terminating 0xFF byte the CPU reads past the last port.
IO_BITMAP_SIZE = EXIT_PORT // 8 + 2
#: The TSS limit (TR and GDT): the TSS and its I/O bitmap.
TSS_LIMIT = TSS_SIZE + IO_BITMAP_SIZE - 1

# Page-table entry bits.
PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D = 0x1, 0x2, 0x4, 0x20, 0x40
PTE_NX = 1 << 63
PTE_ADDR = 0x000F_FFFF_FFFF_F000
TABLE_FLAGS = PTE_P | PTE_RW | PTE_US | PTE_A
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4

#: The interrupt frame the stubs leave on the vCPU stack, lowest address first:
#: vector, error code, then what the CPU pushed: rip, cs, rflags, rsp, ss.
FRAME = struct.Struct("<7Q")
FRAME_SIZE = FRAME.size
#: The LSTAR page's code for :class:`PvmEntry` and :class:`Ring0Entry`: ``hlt; sysretq``.
LSTAR_CODE = b"\xf4\x48\x0f\x07"
#: :class:`PvmPortEntry`'s: ``out EXIT_PORT, al`` (KVM_EXIT_IO, rip = LSTAR + 2).
LSTAR_PORT_CODE = bytes((0xE6, EXIT_PORT))
_HLT_IRET = b"\xf4\x48\x83\xc4\x10\x48\xcf"  # hlt; add rsp, 16; iretq


def pte_flags(prot: int, user: bool = True) -> int:
    """Leaf PTE bits for mmap protections: 0 when PROT_NONE (not present);
    readable whenever mapped (x86 has no write- or exec-only pages)."""
    if not prot & (PROT_READ | PROT_WRITE | PROT_EXEC):
        return 0
    flags = PTE_P | PTE_A | PTE_D | (PTE_US if user else 0)
    if prot & PROT_WRITE:
        flags |= PTE_RW
    if not prot & PROT_EXEC:
        flags |= PTE_NX
    return flags


def vcpu_page(index: int) -> int:
    """The kernel page (pool page and virtual page index) of vCPU ``index``:
    its TSS at the bottom, its ring-0 stack above."""
    if not 0 <= index < MAX_VCPUS:
        raise ValueError(f"vCPU index {index} out of range (max {MAX_VCPUS})")
    return VCPU_FIRST_PAGE + index


def vcpu_tss_va(index: int) -> int:
    return KERNEL_START + vcpu_page(index) * PAGE


def vcpu_frame_va(index: int) -> int:
    """Where the stubs' frame is (rsp at the vector slot): top of the page less the frame."""
    return vcpu_tss_va(index) + PAGE - FRAME_SIZE


def stub_code() -> bytes:
    """The stub page: RESUME at 0, then one 16-byte slot per vector 0..31
    (``[push 0;] push v; hlt; add rsp,16; iretq``)."""
    code = bytearray(PAGE)
    code[0:6] = b"\x48\x83\xc4\x10\x48\xcf"  # add rsp, 16; iretq
    for v in range(32):
        stub = (b"" if v in ERROR_CODE_VECTORS else b"\x6a\x00") + bytes((0x6A, v)) + _HLT_IRET
        at = STUB_SLOT * (v + 1)
        code[at : at + len(stub)] = stub
    return bytes(code)


def stub_va(vector: int) -> int:
    return STUB_VA + STUB_SLOT * (vector + 1)


def gdt() -> bytes:
    """The GDT page: Linux's layout; the TSS descriptor (0x40) is vCPU 0's
    (each vCPU's TR is loaded with its own base by KVM_SET_SREGS)."""
    page = bytearray(PAGE)
    for sel, desc in GDT_ENTRIES.items():
        struct.pack_into("<Q", page, sel & ~7, desc)
    base, limit = vcpu_tss_va(0), TSS_LIMIT
    low = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | 0x8B << 40 | ((limit >> 16) & 0xF) << 48 | \
        ((base >> 24) & 0xFF) << 56
    struct.pack_into("<QQ", page, TSS_SEL, low, base >> 32)
    return bytes(page)


def idt() -> bytes:
    """The IDT page: interrupt gates for vectors 0..31 to their stubs (DPL 3
    for int3/into, else 0); 32..255 not present (a user ``int n`` is #GP)."""
    page = bytearray(PAGE)
    for v in range(32):
        off = stub_va(v)
        attr = 0xEE if v in USER_GATES else 0x8E
        struct.pack_into("<HHBBHII", page, 16 * v, off & 0xFFFF, KERNEL_CS, 0, attr, (off >> 16) & 0xFFFF,
                         off >> 32, 0)
    return bytes(page)


def tss(index: int, port: int = 0) -> bytes:
    """vCPU ``index``'s TSS and I/O bitmap (:data:`TSS_LIMIT` + 1 bytes): RSP0 =
    the top of its page; every port closed to user mode but ``port`` (when
    not 0)."""
    t = bytearray(TSS_LIMIT + 1)
    struct.pack_into("<Q", t, 4, vcpu_tss_va(index) + PAGE)
    struct.pack_into("<H", t, 102, TSS_SIZE)
    t[TSS_SIZE:] = b"\xff" * IO_BITMAP_SIZE
    if port:
        if not 0 < port <= EXIT_PORT | 7:
            raise ValueError(f"port {port:#x} is past the I/O bitmap")
        t[TSS_SIZE + port // 8] &= ~(1 << port % 8)
    return bytes(t)


def lstar_page(code: bytes) -> bytes:
    """The LSTAR page: ``code``, then ``hlt`` (a #GP in user mode) to its end,
    so that a jump anywhere else in the page faults there."""
    return code + b"\xf4" * (PAGE - len(code))


class Entry:
    """How a user ``syscall`` reaches the sentry and how the task returns."""

    name = ""
    #: Whether the LSTAR page is a user page.
    lstar_user = True
    #: Whether returns from a system call may use ``sysretq`` at LSTAR+1.
    sysret = False
    #: The code at LSTAR.
    lstar_code = LSTAR_CODE
    #: The I/O port the TSS opens to user mode (0: none).
    exit_port = 0
    #: Whether the vCPU returns to user mode by having its registers (and, from
    #: ring 0, its sregs) set through kvm_run's sync regs, rather than by a
    #: guest ``iretq``/``sysretq``.
    register_return = False

    def kernel_pte(self, page: int) -> int:
        """The leaf PTE (flags and guest-physical address) of kernel page ``page``."""
        gpa = page * PAGE
        if page == STUB_PAGE:
            return gpa | pte_flags(PROT_READ | PROT_EXEC, user=False)
        if page == LSTAR_PAGE:
            return gpa | pte_flags(PROT_READ | PROT_EXEC, user=self.lstar_user)
        if page == IDT_PAGE:
            return gpa | pte_flags(PROT_READ, user=False)
        return gpa | pte_flags(PROT_READ | PROT_WRITE, user=False)  # GDT (accessed bits), TSS+stack

    def kernel_table(self) -> array:
        """The shared page table of [KERNEL_START, KERNEL_END) (512 PTEs)."""
        pt = array("Q", bytes(PAGE))
        for page in (GDT_PAGE, IDT_PAGE, STUB_PAGE, LSTAR_PAGE):
            pt[page] = self.kernel_pte(page)
        for i in range(MAX_VCPUS):
            pt[vcpu_page(i)] = self.kernel_pte(vcpu_page(i))
        return pt


class PvmEntry(Entry):
    """PVM (``kvm_pvm``): the LSTAR ``hlt`` runs in ring 3 and raises #GP;
    a vector-13 frame at LSTAR is a system call; return by ``iretq``."""

    name = "pvm"
    lstar_user = True
    sysret = False


class Ring0Entry(Entry):
    """VMX/SVM: ring-0 LSTAR entry (supervisor page); ``hlt`` exits at
    LSTAR+1; return by ``sysretq`` at LSTAR+1."""

    name = "ring0"
    lstar_user = False
    sysret = True


class PvmPortEntry(Entry):
    """PVM, port exit: the LSTAR ``out`` gives KVM_EXIT_IO in user mode (IF
    clear: a system call); return by setting the registers."""

    name = "pvm-io"
    lstar_user = True
    sysret = False
    lstar_code = LSTAR_PORT_CODE
    exit_port = EXIT_PORT
    register_return = True


ENTRIES: dict[str, type[Entry]] = {"pvm-io": PvmPortEntry, "pvm": PvmEntry, "ring0": Ring0Entry}


class PoolAllocator:
    """Page-table pages of the pool: page indices from :data:`PT_FIRST_PAGE`.

    Freed pages are not reused (a shadow MMU, as PVM's, may hold a cached
    shadow of a freed page-table page until the next global flush); the
    platform calls :meth:`recycle` right after such a flush.
    """

    def __init__(self, pages: int = POOL_SIZE // PAGE) -> None:
        self.limit = pages
        self.next = PT_FIRST_PAGE
        self.free: list[int] = []
        self.retired: list[int] = []

    def alloc(self) -> int:
        if self.free:
            return self.free.pop()
        if self.next >= self.limit:
            raise MemoryError("KVM page-table pool exhausted")
        self.next += 1
        return self.next - 1

    def release(self, page: int) -> None:
        self.retired.append(page)

    def recycle(self) -> None:
        self.free += self.retired
        self.retired = []


class PageTables:
    """One address space's 4-level page tables in the pool (``mem``: the pool
    as a ``Q`` memoryview; entries are u64).

    Leaf PTEs: present ones map ``MEM_BASE + offset`` with :func:`pte_flags`;
    a PROT_NONE page keeps its guest-physical address with P clear (so a later
    ``protect`` finds it); 0 is unmapped. Intermediate tables are created on
    demand and kept until :meth:`release`. Methods return True when a
    present translation was removed or reduced (the TLB/shadow MMU must then
    be flushed before the guest runs again).
    """

    def __init__(self, mem: memoryview, alloc: PoolAllocator, kernel_pt_gpa: int) -> None:
        self.mem = mem
        self.alloc = alloc
        self.pages: list[int] = []
        self.root = self._new_table()
        #: CR3 of this address space (the root table's guest-physical address).
        self.cr3 = self.root * PAGE
        self._leaf: dict[int, int] = {}  # 2 MiB index -> PT page
        self._link(KERNEL_START, kernel_pt_gpa)

    def _new_table(self) -> int:
        page = self.alloc.alloc()
        self.mem[page * 512 : page * 512 + 512] = array("Q", bytes(PAGE))
        self.pages.append(page)
        return page

    def _walk(self, addr: int, create: bool, leaf_gpa: int = 0) -> int:
        """The PT page mapping ``addr`` (creating the path, or linking
        ``leaf_gpa`` as it), or -1 when absent."""
        table = self.root
        for shift in (39, 30, 21):
            idx = table * 512 + (addr >> shift & 511)
            entry = self.mem[idx]
            if shift == 21 and leaf_gpa:
                self.mem[idx] = leaf_gpa | TABLE_FLAGS
                return leaf_gpa // PAGE
            if not entry & PTE_P:
                if not create:
                    return -1
                new = self._new_table()
                self.mem[idx] = new * PAGE | TABLE_FLAGS
                table = new
            else:
                table = (entry & PTE_ADDR) // PAGE
        return table

    def _link(self, addr: int, pt_gpa: int) -> None:
        self._walk(addr, True, pt_gpa)

    def _table(self, addr: int, create: bool) -> int:
        key = addr >> 21
        pt = self._leaf.get(key)
        if pt is None:
            pt = self._walk(addr, create)
            if pt < 0:
                return -1
            self._leaf[key] = pt
        return pt

    def _chunks(self, addr: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(address, first PTE index, PTE count) per page table the range touches."""
        end = addr + length
        while addr < end:
            nxt = min((addr | 0x1F_FFFF) + 1, end)
            yield addr, addr >> 12 & 511, (nxt - addr) >> 12
            addr = nxt

    def map(self, addr: int, length: int, gpa: int, prot: int) -> bool:
        """Map [addr, addr+length) to guest-physical ``gpa`` with ``prot``."""
        flags = pte_flags(prot)
        stale = False
        for a, first, count in self._chunks(addr, length):
            base = self._table(a, True) * 512 + first
            old = self.mem[base : base + count]
            g = gpa + (a - addr)
            new = array("Q", range(g | flags, (g | flags) + count * PAGE, PAGE))
            if not stale and any(x & PTE_P for x in old.tolist()):
                stale = old.tolist() != new.tolist()
            old[:] = new
        return stale

    def unmap(self, addr: int, length: int) -> bool:
        stale = False
        for a, first, count in self._chunks(addr, length):
            pt = self._table(a, False)
            if pt < 0:
                continue
            view = self.mem[pt * 512 + first : pt * 512 + first + count]
            stale = stale or any(x & PTE_P for x in view.tolist())
            view[:] = array("Q", bytes(8 * count))
        return stale

    def protect(self, addr: int, length: int, prot: int) -> bool:
        flags = pte_flags(prot)
        stale = False
        for a, first, count in self._chunks(addr, length):
            pt = self._table(a, False)
            if pt < 0:
                continue
            view = self.mem[pt * 512 + first : pt * 512 + first + count]
            old = view.tolist()
            new = [(x & PTE_ADDR) | flags if x else 0 for x in old]
            if not stale:
                stale = any(o & PTE_P and o != n for o, n in zip(old, new, strict=True))
            view[:] = array("Q", new)
        return stale

    def lookup(self, addr: int) -> int:
        """The leaf PTE for ``addr`` (0 when unmapped)."""
        pt = self._table(addr, False)
        return 0 if pt < 0 else self.mem[pt * 512 + (addr >> 12 & 511)]

    def release(self) -> None:
        for page in self.pages:
            self.alloc.release(page)
        self.pages = []
        self._leaf.clear()
