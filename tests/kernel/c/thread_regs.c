/* Register state of threads never leaks from one to another: each thread
 * loads distinctive values into its general registers and its SSE (and,
 * with AVX, the upper halves of its YMM) registers, then makes thousands of
 * system calls (sched_yield and getpid; the sandbox switches threads at
 * each one) and checks that every register kept its value. A system call
 * may change only rax, rcx and r11.
 * Prints "ok ..." lines; exits 1 at the first mismatch. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); \
    printf("\n"); fflush(stdout); exit(1); } } while (0)

enum { NTHREADS = 3, CALLS = 3000 };

/* The state spin() loads and stores: xmm0-15 (or ymm0-15), then rbx, rbp,
 * r8, r9, r10, r12, r13, r14, r15, rdx, rsi, rdi. */
struct state {
    unsigned char vec[16][32];
    unsigned long gpr[12];
};

/* spin_sse(in, calls, out) and spin_avx(in, calls, out): load the state at
 * in, make `calls` system calls (alternately sched_yield and getpid), store
 * the state at out. */
void spin_sse(const struct state *in, long calls, struct state *out);
void spin_avx(const struct state *in, long calls, struct state *out);

#define SPIN(name, mov, reg, size)                                                         \
    __asm__(".text\n.globl " #name "\n" #name ":\n"                                      \
            "push %rbx\npush %rbp\npush %r12\npush %r13\npush %r14\npush %r15\n"          \
            "push %rdx\npush %rsi\n"                                                      \
            LOADV(mov, reg)                                                               \
            "mov 512(%rdi), %rbx\nmov 520(%rdi), %rbp\nmov 528(%rdi), %r8\n"             \
            "mov 536(%rdi), %r9\nmov 544(%rdi), %r10\nmov 552(%rdi), %r12\n"             \
            "mov 560(%rdi), %r13\nmov 568(%rdi), %r14\nmov 576(%rdi), %r15\n"            \
            "mov 584(%rdi), %rdx\nmov 592(%rdi), %rsi\nmov 600(%rdi), %rdi\n"            \
            "1:\nmov $24, %eax\ntestq $1, (%rsp)\njz 2f\nmov $39, %eax\n2:\nsyscall\n"     \
            "decq (%rsp)\njnz 1b\n"                                                       \
            "mov 8(%rsp), %rax\n"                                                         \
            STOREV(mov, reg)                                                              \
            "mov %rbx, 512(%rax)\nmov %rbp, 520(%rax)\nmov %r8, 528(%rax)\n"             \
            "mov %r9, 536(%rax)\nmov %r10, 544(%rax)\nmov %r12, 552(%rax)\n"             \
            "mov %r13, 560(%rax)\nmov %r14, 568(%rax)\nmov %r15, 576(%rax)\n"            \
            "mov %rdx, 584(%rax)\nmov %rsi, 592(%rax)\nmov %rdi, 600(%rax)\n"            \
            "add $16, %rsp\npop %r15\npop %r14\npop %r13\npop %r12\npop %rbp\npop %rbx\n" \
            "ret\n")
#define LOADV(mov, reg)                                                                          \
    #mov " 0(%rdi), %" #reg "0\n" #mov " 32(%rdi), %" #reg "1\n" #mov " 64(%rdi), %" #reg "2\n"    \
    #mov " 96(%rdi), %" #reg "3\n" #mov " 128(%rdi), %" #reg "4\n" #mov " 160(%rdi), %" #reg "5\n" \
    #mov " 192(%rdi), %" #reg "6\n" #mov " 224(%rdi), %" #reg "7\n" #mov " 256(%rdi), %" #reg "8\n" \
    #mov " 288(%rdi), %" #reg "9\n" #mov " 320(%rdi), %" #reg "10\n" #mov " 352(%rdi), %" #reg "11\n" \
    #mov " 384(%rdi), %" #reg "12\n" #mov " 416(%rdi), %" #reg "13\n" #mov " 448(%rdi), %" #reg "14\n" \
    #mov " 480(%rdi), %" #reg "15\n"
#define STOREV(mov, reg)                                                                         \
    #mov " %" #reg "0, 0(%rax)\n" #mov " %" #reg "1, 32(%rax)\n" #mov " %" #reg "2, 64(%rax)\n"    \
    #mov " %" #reg "3, 96(%rax)\n" #mov " %" #reg "4, 128(%rax)\n" #mov " %" #reg "5, 160(%rax)\n" \
    #mov " %" #reg "6, 192(%rax)\n" #mov " %" #reg "7, 224(%rax)\n" #mov " %" #reg "8, 256(%rax)\n" \
    #mov " %" #reg "9, 288(%rax)\n" #mov " %" #reg "10, 320(%rax)\n" #mov " %" #reg "11, 352(%rax)\n" \
    #mov " %" #reg "12, 384(%rax)\n" #mov " %" #reg "13, 416(%rax)\n" #mov " %" #reg "14, 448(%rax)\n" \
    #mov " %" #reg "15, 480(%rax)\n"

SPIN(spin_sse, movdqu, xmm, 16);
SPIN(spin_avx, vmovdqu, ymm, 32);

static int avx;
static pthread_barrier_t start;

static void *run(void *arg) {
    long me = (long)arg;
    struct state in, out;
    int width = avx ? 32 : 16;
    memset(&in, 0, sizeof in);
    for (int r = 0; r < 16; r++)
        for (int b = 0; b < width; b++)
            in.vec[r][b] = (unsigned char)(me * 64 + r * 3 + b + 1);
    for (int i = 0; i < 12; i++)
        in.gpr[i] = 0x1000000000000000ul * (unsigned long)(me + 1) + 0x10101ul * (unsigned long)(i + 1);
    memset(&out, 0, sizeof out);
    pthread_barrier_wait(&start);
    if (avx)
        spin_avx(&in, CALLS, &out);
    else
        spin_sse(&in, CALLS, &out);
    for (int r = 0; r < 16; r++)
        CHECK(!memcmp(in.vec[r], out.vec[r], width), "thread %ld: %smm%d changed", me, avx ? "y" : "x", r);
    for (int i = 0; i < 12; i++)
        CHECK(in.gpr[i] == out.gpr[i], "thread %ld: register %d is %#lx, not %#lx", me, i, out.gpr[i], in.gpr[i]);
    return NULL;
}

int main(void) {
    __builtin_cpu_init();
    avx = __builtin_cpu_supports("avx");
    pthread_t th[NTHREADS];
    pthread_barrier_init(&start, NULL, NTHREADS + 1);
    for (long i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&th[i], NULL, run, (void *)(i + 1)) == 0, "pthread_create");
    run((void *)0);
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
    printf("ok %d threads kept their general and vector registers across %d system calls each\n", NTHREADS + 1,
           CALLS);
    printf("all ok\n");
    return 0;
}
