/* A signal handler changes nothing the interrupted code can see.
 *
 * regs_spin (assembly, below) puts known values in every general register
 * it can, in xmm0-15 (ymm0-15 with AVX), MXCSR, the x87 control word and two
 * x87 registers, sets DF, writes a pattern into 256 bytes of its stack and
 * into the 128-byte red zone below rsp, then loops on getpid() until a flag
 * is set. A child process sends SIGUSR1 (kill, no timer); the handler
 * records what it sees, clobbers every register it may and sets the flag.
 * After the loop everything must be as it was: rax holds getpid()'s result,
 * rcx and r11 what the last syscall instruction left there (the return
 * address and the flags).
 *
 * The handler must also start as Linux starts it: DF clear, MXCSR and the x87
 * control word at their defaults (the kernel gives a handler a fresh FPU
 * state), with the interrupted registers in its ucontext.
 *
 * Prints "ok NAME" or "FAIL NAME: ..." lines and exits 0 only if all pass;
 * the test compares the output with a native run. */
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

struct ctx {
  uint64_t in[16];            /* 0: rax rbx rcx rdx rsi rdi rbp r8 ... r15 */
  uint64_t out[16];           /* 128 */
  uint8_t vin[16][32];        /* 256: ymm0-15 (xmm0-15: the low 16 bytes) */
  uint8_t vout[16][32];       /* 768 */
  uint8_t red_in[128];        /* 1280: the red zone */
  uint8_t red_out[128];       /* 1408 */
  uint8_t stk_in[256];        /* 1536: stack data above rsp */
  uint8_t stk_out[256];       /* 1792 */
  uint32_t mxcsr_in;          /* 2048 */
  uint32_t mxcsr_out;         /* 2052 */
  uint16_t fcw_in;            /* 2056 */
  uint16_t fcw_out;           /* 2058 */
  uint32_t avx;               /* 2060 */
  uint8_t st_in[2][16];       /* 2064: two 80-bit x87 values */
  uint8_t st_out[2][16];      /* 2096 */
  uint64_t rflags_out;        /* 2128 */
  uint64_t after_syscall;     /* 2136 */
};
_Static_assert(offsetof(struct ctx, vin) == 256, "layout");
_Static_assert(offsetof(struct ctx, red_in) == 1280, "layout");
_Static_assert(offsetof(struct ctx, stk_in) == 1536, "layout");
_Static_assert(offsetof(struct ctx, mxcsr_in) == 2048, "layout");
_Static_assert(offsetof(struct ctx, avx) == 2060, "layout");
_Static_assert(offsetof(struct ctx, st_in) == 2064, "layout");
_Static_assert(offsetof(struct ctx, rflags_out) == 2128, "layout");
_Static_assert(offsetof(struct ctx, after_syscall) == 2136, "layout");

enum { RAX, RBX, RCX, RDX, RSI, RDI, RBP, R8, R9, R10, R11, R12, R13, R14, R15 };
static const char *names[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8",
                              "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};

void regs_spin(struct ctx *c);
extern char regs_spin_after[];

#define V16(op, base)                                                                         \
  op " " base "+0*32(%r15), %xmm0\n" op " " base "+1*32(%r15), %xmm1\n" op " " base           \
     "+2*32(%r15), %xmm2\n" op " " base "+3*32(%r15), %xmm3\n" op " " base "+4*32(%r15), %xmm4\n" \
     op " " base "+5*32(%r15), %xmm5\n" op " " base "+6*32(%r15), %xmm6\n" op " " base            \
     "+7*32(%r15), %xmm7\n" op " " base "+8*32(%r15), %xmm8\n" op " " base "+9*32(%r15), %xmm9\n" \
     op " " base "+10*32(%r15), %xmm10\n" op " " base "+11*32(%r15), %xmm11\n" op " " base        \
     "+12*32(%r15), %xmm12\n" op " " base "+13*32(%r15), %xmm13\n" op " " base                    \
     "+14*32(%r15), %xmm14\n" op " " base "+15*32(%r15), %xmm15\n"
#define Y16(op, base)                                                                         \
  op " " base "+0*32(%r15), %ymm0\n" op " " base "+1*32(%r15), %ymm1\n" op " " base           \
     "+2*32(%r15), %ymm2\n" op " " base "+3*32(%r15), %ymm3\n" op " " base "+4*32(%r15), %ymm4\n" \
     op " " base "+5*32(%r15), %ymm5\n" op " " base "+6*32(%r15), %ymm6\n" op " " base            \
     "+7*32(%r15), %ymm7\n" op " " base "+8*32(%r15), %ymm8\n" op " " base "+9*32(%r15), %ymm9\n" \
     op " " base "+10*32(%r15), %ymm10\n" op " " base "+11*32(%r15), %ymm11\n" op " " base        \
     "+12*32(%r15), %ymm12\n" op " " base "+13*32(%r15), %ymm13\n" op " " base                    \
     "+14*32(%r15), %ymm14\n" op " " base "+15*32(%r15), %ymm15\n"
#define XS16(op, base)                                                                        \
  op " %xmm0, " base "+0*32(%r15)\n" op " %xmm1, " base "+1*32(%r15)\n" op " %xmm2, " base    \
     "+2*32(%r15)\n" op " %xmm3, " base "+3*32(%r15)\n" op " %xmm4, " base "+4*32(%r15)\n" op     \
     " %xmm5, " base "+5*32(%r15)\n" op " %xmm6, " base "+6*32(%r15)\n" op " %xmm7, " base        \
     "+7*32(%r15)\n" op " %xmm8, " base "+8*32(%r15)\n" op " %xmm9, " base "+9*32(%r15)\n" op     \
     " %xmm10, " base "+10*32(%r15)\n" op " %xmm11, " base "+11*32(%r15)\n" op " %xmm12, " base   \
     "+12*32(%r15)\n" op " %xmm13, " base "+13*32(%r15)\n" op " %xmm14, " base "+14*32(%r15)\n"   \
     op " %xmm15, " base "+15*32(%r15)\n"
#define YS16(op, base)                                                                        \
  op " %ymm0, " base "+0*32(%r15)\n" op " %ymm1, " base "+1*32(%r15)\n" op " %ymm2, " base    \
     "+2*32(%r15)\n" op " %ymm3, " base "+3*32(%r15)\n" op " %ymm4, " base "+4*32(%r15)\n" op     \
     " %ymm5, " base "+5*32(%r15)\n" op " %ymm6, " base "+6*32(%r15)\n" op " %ymm7, " base        \
     "+7*32(%r15)\n" op " %ymm8, " base "+8*32(%r15)\n" op " %ymm9, " base "+9*32(%r15)\n" op     \
     " %ymm10, " base "+10*32(%r15)\n" op " %ymm11, " base "+11*32(%r15)\n" op " %ymm12, " base   \
     "+12*32(%r15)\n" op " %ymm13, " base "+13*32(%r15)\n" op " %ymm14, " base "+14*32(%r15)\n"   \
     op " %ymm15, " base "+15*32(%r15)\n"

__asm__(
    ".text\n"
    ".globl regs_spin\n"
    ".globl regs_spin_after\n"
    "regs_spin:\n"
    "push %rbp\n push %rbx\n push %r12\n push %r13\n push %r14\n push %r15\n"
    "mov %rdi, %r15\n"
    "sub $256, %rsp\n"
    /* Stack data above rsp, then the red zone below it. */
    "xor %ecx, %ecx\n"
    "1: mov 1536(%r15,%rcx,8), %rax\n mov %rax, (%rsp,%rcx,8)\n inc %ecx\n cmp $32, %ecx\n jne 1b\n"
    "xor %ecx, %ecx\n"
    "2: mov 1280(%r15,%rcx,8), %rax\n mov %rax, -128(%rsp,%rcx,8)\n inc %ecx\n cmp $16, %ecx\n jne 2b\n"
    "cmpl $0, 2060(%r15)\n je 3f\n"
    Y16("vmovdqu", "256")
    "jmp 4f\n"
    "3:\n"
    V16("movdqu", "256")
    "4:\n"
    "ldmxcsr 2048(%r15)\n"
    "fninit\n fldcw 2056(%r15)\n fldt 2064(%r15)\n fldt 2080(%r15)\n"
    "mov 8(%r15), %rbx\n mov 24(%r15), %rdx\n mov 32(%r15), %rsi\n mov 40(%r15), %rdi\n"
    "mov 48(%r15), %rbp\n mov 56(%r15), %r8\n mov 64(%r15), %r9\n mov 72(%r15), %r10\n"
    "mov 88(%r15), %r12\n mov 96(%r15), %r13\n mov 104(%r15), %r14\n"
    "xor %eax, %eax\n xor %ecx, %ecx\n xor %r11d, %r11d\n"
    "std\n"
    "5: cmpl $0, (%rbx)\n jne 6f\n mov $39, %eax\n syscall\n"
    "regs_spin_after:\n"
    "jmp 5b\n"
    "6:\n"
    "mov %rax, 128(%r15)\n mov %rbx, 136(%r15)\n mov %rcx, 144(%r15)\n mov %rdx, 152(%r15)\n"
    "mov %rsi, 160(%r15)\n mov %rdi, 168(%r15)\n mov %rbp, 176(%r15)\n mov %r8, 184(%r15)\n"
    "mov %r9, 192(%r15)\n mov %r10, 200(%r15)\n mov %r11, 208(%r15)\n mov %r12, 216(%r15)\n"
    "mov %r13, 224(%r15)\n mov %r14, 232(%r15)\n mov %r15, 240(%r15)\n"
    /* pushfq writes the red zone's top quadword: save that one first. */
    "mov -8(%rsp), %rax\n mov %rax, 1408+120(%r15)\n"
    "pushfq\n pop %rax\n mov %rax, 2128(%r15)\n cld\n"
    "xor %ecx, %ecx\n"
    "7: mov -128(%rsp,%rcx,8), %rax\n mov %rax, 1408(%r15,%rcx,8)\n inc %ecx\n cmp $15, %ecx\n jne 7b\n"
    "xor %ecx, %ecx\n"
    "8: mov (%rsp,%rcx,8), %rax\n mov %rax, 1792(%r15,%rcx,8)\n inc %ecx\n cmp $32, %ecx\n jne 8b\n"
    "cmpl $0, 2060(%r15)\n je 9f\n"
    YS16("vmovdqu", "768")
    "vzeroupper\n"
    "jmp 10f\n"
    "9:\n"
    XS16("movdqu", "768")
    "10:\n"
    "stmxcsr 2052(%r15)\n fnstcw 2058(%r15)\n fstpt 2096(%r15)\n fstpt 2112(%r15)\n"
    "pushq $0x1f80\n ldmxcsr (%rsp)\n movw $0x37f, (%rsp)\n fldcw (%rsp)\n pop %rax\n"
    "add $256, %rsp\n"
    "pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbx\n pop %rbp\n"
    "ret\n");

static volatile int flag;
static volatile int handled;
static int avx;
static struct ctx ctx;

/* What the handler saw. */
static volatile uint32_t h_mxcsr;
static volatile uint16_t h_fcw;
static volatile int h_df, h_frame_gregs_ok, h_frame_fp_ok, h_on_main_stack;

static void handler(int sig, siginfo_t *si, void *ucv) {
  (void)sig; (void)si;
  ucontext_t *uc = ucv;
  uint32_t mx;
  uint16_t cw;
  uint64_t fl;
  __asm__ volatile("stmxcsr %0" : "=m"(mx));
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  __asm__ volatile("pushfq; pop %0" : "=r"(fl));
  h_mxcsr = mx;
  h_fcw = cw;
  h_df = fl & 0x400 ? 1 : 0;

  /* The interrupted registers, as the frame holds them. */
  greg_t *g = uc->uc_mcontext.gregs;
  h_frame_gregs_ok = (uint64_t)g[REG_RBX] == ctx.in[RBX] && (uint64_t)g[REG_RDX] == ctx.in[RDX] &&
                     (uint64_t)g[REG_RSI] == ctx.in[RSI] && (uint64_t)g[REG_RDI] == ctx.in[RDI] &&
                     (uint64_t)g[REG_RBP] == ctx.in[RBP] && (uint64_t)g[REG_R8] == ctx.in[R8] &&
                     (uint64_t)g[REG_R9] == ctx.in[R9] && (uint64_t)g[REG_R10] == ctx.in[R10] &&
                     (uint64_t)g[REG_R12] == ctx.in[R12] && (uint64_t)g[REG_R13] == ctx.in[R13] &&
                     (uint64_t)g[REG_R14] == ctx.in[R14] && (uint64_t)g[REG_R15] == (uint64_t)&ctx &&
                     (g[REG_EFL] & 0x400) != 0;
  struct _libc_fpstate *fp = uc->uc_mcontext.fpregs;
  int fp_ok = fp != NULL && fp->mxcsr == ctx.mxcsr_in && fp->cwd == ctx.fcw_in;
  for (int i = 0; fp_ok && i < 16; i++) fp_ok = memcmp(&fp->_xmm[i], ctx.vin[i], 16) == 0;
  h_frame_fp_ok = fp_ok;
  /* The frame is below the interrupted code's red zone. */
  char here;
  h_on_main_stack = (uint64_t)&here < (uint64_t)g[REG_RSP] - 128;

  /* Clobber all that the handler may: vector registers, MXCSR, x87,
   * the caller-saved general registers, DF, and stack below the frame. */
  if (avx)
    __asm__ volatile("vpcmpeqb %%ymm0, %%ymm0, %%ymm0\n vmovdqa %%ymm0, %%ymm1\n vmovdqa %%ymm0, %%ymm2\n"
                     "vmovdqa %%ymm0, %%ymm3\n vmovdqa %%ymm0, %%ymm4\n vmovdqa %%ymm0, %%ymm5\n"
                     "vmovdqa %%ymm0, %%ymm6\n vmovdqa %%ymm0, %%ymm7\n vmovdqa %%ymm0, %%ymm8\n"
                     "vmovdqa %%ymm0, %%ymm9\n vmovdqa %%ymm0, %%ymm10\n vmovdqa %%ymm0, %%ymm11\n"
                     "vmovdqa %%ymm0, %%ymm12\n vmovdqa %%ymm0, %%ymm13\n vmovdqa %%ymm0, %%ymm14\n"
                     "vmovdqa %%ymm0, %%ymm15\n vzeroupper\n" ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
                     "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                     "xmm15");
  else
    __asm__ volatile("pcmpeqb %%xmm0, %%xmm0\n movdqa %%xmm0, %%xmm1\n movdqa %%xmm0, %%xmm2\n"
                     "movdqa %%xmm0, %%xmm3\n movdqa %%xmm0, %%xmm4\n movdqa %%xmm0, %%xmm5\n"
                     "movdqa %%xmm0, %%xmm6\n movdqa %%xmm0, %%xmm7\n movdqa %%xmm0, %%xmm8\n"
                     "movdqa %%xmm0, %%xmm9\n movdqa %%xmm0, %%xmm10\n movdqa %%xmm0, %%xmm11\n"
                     "movdqa %%xmm0, %%xmm12\n movdqa %%xmm0, %%xmm13\n movdqa %%xmm0, %%xmm14\n"
                     "movdqa %%xmm0, %%xmm15\n" ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
                     "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  uint32_t junk_mxcsr = 0x1fbf; /* all exception flags raised */
  uint16_t junk_fcw = 0x0040;   /* every x87 exception unmasked */
  __asm__ volatile("ldmxcsr %0\n fninit\n fldz\n fld1\n fstp %%st(0)\n fstp %%st(0)\n fldcw %1"
                   :: "m"(junk_mxcsr), "m"(junk_fcw));
  __asm__ volatile("mov $-1, %%rax\n mov $-1, %%rbx\n mov $-1, %%rcx\n mov $-1, %%rdx\n mov $-1, %%rsi\n"
                   "mov $-1, %%rdi\n mov $-1, %%r8\n mov $-1, %%r9\n mov $-1, %%r10\n mov $-1, %%r11\n"
                   "mov $-1, %%r12\n mov $-1, %%r13\n mov $-1, %%r14\n mov $-1, %%r15\n std\n cld\n" :::
                   "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
                   "r15", "cc");
  volatile char scratch[4096];
  memset((char *)scratch, 0xEE, sizeof scratch);
  uint16_t def_fcw = 0x037f;
  __asm__ volatile("fldcw %0" :: "m"(def_fcw)); /* x87 exceptions masked again for the C code */
  flag = 1;
  handled++;
}

static int failures;

static void check(const char *name, int ok, const char *detail) {
  printf("%s %s%s%s\n", ok ? "ok" : "FAIL", name, ok ? "" : ": ", ok ? "" : detail);
  failures += !ok;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  __builtin_cpu_init();
  avx = __builtin_cpu_supports("avx");
  printf("avx: %s\n", avx ? "yes" : "no");

  struct sigaction sa = {0};
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGUSR1, &sa, NULL);

  for (int round = 0; round < 4; round++) {
    memset(&ctx, 0, sizeof ctx);
    for (int i = 0; i < 15; i++) ctx.in[i] = 0x0101010101010101ULL * (uint64_t)(i + 1) ^ (uint64_t)round << 56;
    ctx.in[RBX] = (uint64_t)&flag;
    ctx.in[R15] = (uint64_t)&ctx;
    for (int i = 0; i < 16; i++)
      for (int j = 0; j < 32; j++) ctx.vin[i][j] = (uint8_t)(i * 32 + j + round);
    for (int j = 0; j < 128; j++) ctx.red_in[j] = (uint8_t)(0x80 + j + round);
    for (int j = 0; j < 256; j++) ctx.stk_in[j] = (uint8_t)(0x33 * j + round);
    ctx.mxcsr_in = 0x7f80; /* round toward zero */
    ctx.fcw_in = 0x0f7f;   /* round toward zero, extended precision */
    long double a = 3.14159265358979323846L + round, b = -2.71828182845904523536L;
    memcpy(ctx.st_in[0], &a, 10);
    memcpy(ctx.st_in[1], &b, 10);
    ctx.avx = (uint32_t)avx;
    ctx.after_syscall = (uint64_t)regs_spin_after;
    flag = 0;
    handled = 0;

    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
      usleep(20000);
      kill(parent, SIGUSR1);
      _exit(0);
    }
    regs_spin(&ctx);
    int st;
    waitpid(child, &st, 0);

    char detail[4096] = "";
    size_t n = 0;
    uint64_t want[15];
    memcpy(want, ctx.in, sizeof want);
    want[RAX] = (uint64_t)getpid();
    want[RCX] = ctx.after_syscall;
    for (int i = 0; i < 15; i++) {
      uint64_t got = ctx.out[i];
      if (i == R11) got &= 0xcd5, want[i] = 0x444; /* DF, ZF, PF: the flags at the last syscall */
      if (got != want[i])
        n += (size_t)snprintf(detail + n, sizeof detail - n, "%s=%#llx want %#llx; ", names[i],
                              (unsigned long long)got, (unsigned long long)want[i]);
    }
    printf("round %d: handler ran %d time(s)\n", round, handled);
    check("general registers unchanged", n == 0, detail);
    n = 0;
    detail[0] = 0;
    for (int i = 0; i < 16; i++)
      if (memcmp(ctx.vout[i], ctx.vin[i], avx ? 32 : 16))
        n += (size_t)snprintf(detail + n, sizeof detail - n, "%s%d ", avx ? "ymm" : "xmm", i);
    check(avx ? "ymm0-15 unchanged" : "xmm0-15 unchanged", n == 0, detail);
    snprintf(detail, sizeof detail, "mxcsr %#x fcw %#x", ctx.mxcsr_out, ctx.fcw_out);
    check("MXCSR and x87 control word unchanged", ctx.mxcsr_out == ctx.mxcsr_in && ctx.fcw_out == ctx.fcw_in,
          detail);
    check("x87 registers unchanged",
          !memcmp(ctx.st_out[0], ctx.st_in[1], 10) && !memcmp(ctx.st_out[1], ctx.st_in[0], 10), "");
    snprintf(detail, sizeof detail, "rflags %#llx", (unsigned long long)ctx.rflags_out);
    check("DF still set, arithmetic flags as the last cmp left them", (ctx.rflags_out & 0xcd5) == 0x400, detail);
    check("red zone below rsp unchanged", !memcmp(ctx.red_out, ctx.red_in, 128), "");
    check("stack data above rsp unchanged", !memcmp(ctx.stk_out, ctx.stk_in, 256), "");
    snprintf(detail, sizeof detail, "mxcsr %#x fcw %#x df %d", h_mxcsr, h_fcw, h_df);
    check("handler starts with DF clear and default MXCSR and x87 control word",
          h_mxcsr == 0x1f80 && h_fcw == 0x037f && h_df == 0, detail);
    check("handler's ucontext holds the interrupted general registers", h_frame_gregs_ok, "");
    check("handler's ucontext holds the interrupted MXCSR, x87 control word and xmm registers", h_frame_fp_ok,
          "");
    check("handler's frame is below the interrupted code's red zone", h_on_main_stack, "");
  }
  printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
