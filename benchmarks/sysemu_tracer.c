/* A minimal PTRACE_SYSEMU tracer: the floor for a ptrace platform.
 *
 *   sysemu_tracer [--xstate] [--poke] [--no-pin] PROGRAM ARG
 *
 * Runs PROGRAM ARG traced; every system call stops it (PTRACE_SYSEMU) and is
 * answered with rax = 1 without running it, until exit_group, which ends the
 * run. With --xstate each round trip also reads and writes the XSAVE image
 * (PTRACE_GETREGSET/SETREGSET NT_X86_XSTATE), as a platform that keeps the FP
 * state must. With --poke rax is written with PTRACE_POKEUSER instead of
 * PTRACE_SETREGS (what the platform does when nothing else changed).
 * Pinned to the CPU it starts on unless --no-pin.
 * Prints: calls=N us_per_call=X
 */
#define _GNU_SOURCE
#include <elf.h>
#include <sched.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PTRACE_SYSEMU
#define PTRACE_SYSEMU 31
#endif
#ifndef PTRACE_O_EXITKILL
#define PTRACE_O_EXITKILL 0x100000
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int xstate = 0, poke = 0, pin = 1, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--xstate"))
            xstate = 1;
        else if (!strcmp(argv[i], "--poke"))
            poke = 1;
        else if (!strcmp(argv[i], "--no-pin"))
            pin = 0;
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: %s [--xstate] [--poke] [--no-pin] PROGRAM ARG\n", argv[0]);
        return 2;
    }
    if (pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(sched_getcpu(), &set);
        if (sched_setaffinity(0, sizeof(set), &set)) {
            perror("sched_setaffinity");
            return 1;
        }
    }
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        char *args[] = {argv[i], argv[i + 1], NULL};
        char *env[] = {NULL};
        execve(argv[i], args, env);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0); /* the SIGTRAP after execve */
    if (!WIFSTOPPED(status)) {
        fprintf(stderr, "child did not stop\n");
        return 1;
    }
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL);
    struct user_regs_struct regs;
    static unsigned char xbuf[1 << 14];
    struct iovec iov = {xbuf, sizeof(xbuf)};
    long calls = 0;
    double t0 = 0;
    for (;;) {
        if (ptrace(PTRACE_SYSEMU, pid, 0, 0) < 0) {
            perror("PTRACE_SYSEMU");
            return 1;
        }
        if (waitpid(pid, &status, 0) < 0 || !WIFSTOPPED(status)) {
            fprintf(stderr, "child ended unexpectedly\n");
            return 1;
        }
        if (WSTOPSIG(status) != (SIGTRAP | 0x80))
            continue; /* a signal: suppress it */
        ptrace(PTRACE_GETREGS, pid, 0, &regs);
        if (xstate)
            ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, &iov);
        if (calls == 0)
            t0 = now();
        if (regs.orig_rax == 231)
            break;
        calls++;
        regs.rax = 1;
        if (poke)
            ptrace(PTRACE_POKEUSER, pid, offsetof(struct user_regs_struct, rax), regs.rax);
        else
            ptrace(PTRACE_SETREGS, pid, 0, &regs);
        if (xstate)
            ptrace(PTRACE_SETREGSET, pid, NT_X86_XSTATE, &iov);
    }
    double t1 = now();
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    /* From the first getpid stop to the exit_group stop: `calls` round trips. */
    printf("calls=%ld us_per_call=%.3f\n", calls, calls > 1 ? (t1 - t0) / (calls) * 1e6 : 0.0);
    return 0;
}
