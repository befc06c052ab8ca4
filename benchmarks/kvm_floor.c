/* KVM_RUN loops in C, for benchmarks/kvm_roundtrip.py: built as a shared
 * library and called through ctypes on a vCPU the KVM platform set up (KVM
 * refuses KVM_RUN from another process). They separate what the VM exit and
 * entry cost from what the Python around them does.
 *
 * kvm_run_loop: KVM_RUN n times, nothing else: the floor of an entry path
 * when the guest itself returns to where it exits from.
 *
 * kvm_syscall_loop: the register return of the KVM platform's port entry,
 * in C: at each KVM_EXIT_IO (a system call), answer rax = 1 and set rip =
 * rcx, rflags = r11 (the user's) through the sync regs, then KVM_RUN.
 *
 * Both return the number of KVM_RUNs that exited as `exit_reason` (n when all
 * did), or -errno. */

#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>

#define KVM_RUN 0xAE80
#define SYNC_REGS 304 /* struct kvm_run: s.regs.regs */
#define DIRTY_REGS 296
#define EXIT_REASON 8
#define KVM_SYNC_X86_REGS 1

/* struct kvm_regs */
enum { RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP, R8, R9, R10, R11, R12, R13, R14, R15, RIP, RFLAGS };

long kvm_run_loop(int fd, volatile uint8_t *run, long n, uint32_t exit_reason)
{
    long ok = 0;
    for (long i = 0; i < n; i++) {
        if (ioctl(fd, KVM_RUN, 0) < 0)
            return -errno;
        ok += *(volatile uint32_t *)(run + EXIT_REASON) == exit_reason;
    }
    return ok;
}

long kvm_syscall_loop(int fd, volatile uint8_t *run, long n, uint32_t exit_reason)
{
    volatile uint64_t *regs = (volatile uint64_t *)(run + SYNC_REGS);
    long ok = 0;
    for (long i = 0; i < n; i++) {
        if (*(volatile uint32_t *)(run + EXIT_REASON) != exit_reason)
            return ok;
        regs[RAX] = 1;
        regs[RIP] = regs[RCX];
        regs[RFLAGS] = regs[R11] | 0x202;
        *(volatile uint64_t *)(run + DIRTY_REGS) = KVM_SYNC_X86_REGS;
        if (ioctl(fd, KVM_RUN, 0) < 0)
            return -errno;
        ok++;
    }
    return ok;
}
