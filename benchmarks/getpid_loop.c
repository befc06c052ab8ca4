/* A getpid loop with no libc: `getpid_loop N` makes N getpid system calls,
 * then exit_group(0). Built with gcc -static -nostdlib by ptrace_roundtrip.py,
 * so that native runs, the C tracer and the Python platform run the same code. */

#define SYS_getpid 39
#define SYS_exit_group 231

static inline long sys1(long nr, long a0)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a0) : "rcx", "r11", "memory");
    return ret;
}

static long parse(const char *s)
{
    long n = 0;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (*s++ - '0');
    return n;
}

__attribute__((used, noreturn)) void cmain(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    long n = argc > 1 ? parse(argv[1]) : 1000000;
    for (long i = 0; i < n; i++)
        sys1(SYS_getpid, 0);
    sys1(SYS_exit_group, 0);
    for (;;) {
    }
}

__asm__(".globl _start\n"
        "_start:\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call cmain\n"
        "  hlt\n");
