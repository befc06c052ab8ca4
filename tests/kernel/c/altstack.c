/* SIGSEGV caught by a handler on an alternate stack (sigaltstack +
 * SA_ONSTACK), left with siglongjmp: for a write to an unmapped page, a write
 * to a read-only page, a read of a PROT_NONE page, a jump to a non-executable
 * page and a stack overflow (which only an alternate stack can handle). Each
 * time the handler must run inside the alternate stack, see the faulting
 * address and si_code, and find itself "on stack" (SS_ONSTACK); after the
 * jump out SIGSEGV is unblocked and the alternate stack no longer in use.
 * With SS_DISABLE the handler runs on the ordinary stack.
 *
 * Addresses are printed as offsets from the page they hit, so the output can
 * be compared with a native run. Prints "ok NAME" or "FAIL NAME: ..." lines
 * and exits 0 only if all pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALT_SIZE (64 * 1024)

static char *alt;
static sigjmp_buf jump;
static volatile uintptr_t h_addr, h_sp, h_frame_sp;
static volatile int h_code, h_signo, h_onstack_flag, h_count, h_uc_flags, h_change_errno;
static volatile uintptr_t h_uc_sp;

static int in_alt(uintptr_t p) { return p >= (uintptr_t)alt && p < (uintptr_t)alt + ALT_SIZE; }

static void on_segv(int sig, siginfo_t *si, void *ucv) {
  ucontext_t *uc = ucv;
  char here;
  h_signo = sig;
  h_code = si->si_code;
  h_addr = (uintptr_t)si->si_addr;
  h_sp = (uintptr_t)&here;
  h_uc_sp = (uintptr_t)uc->uc_stack.ss_sp;
  h_uc_flags = uc->uc_stack.ss_flags;
  stack_t now;
  sigaltstack(NULL, &now);
  h_onstack_flag = now.ss_flags;
  /* The stack in use cannot be changed, not even to itself. */
  stack_t same = {.ss_sp = alt, .ss_size = ALT_SIZE, .ss_flags = 0};
  h_change_errno = !in_alt(h_sp) ? 0 : sigaltstack(&same, NULL) == 0 ? 0 : errno;
  h_count++;
  siglongjmp(jump, 1);
}

static int failures;

static void report(const char *name, int want_code, void *page, uintptr_t want_off, int want_alt) {
  sigset_t mask;
  sigprocmask(SIG_SETMASK, NULL, &mask);
  stack_t after;
  sigaltstack(NULL, &after);
  long off = (long)(h_addr - (uintptr_t)page);
  int ok = h_count == 1 && h_signo == SIGSEGV && h_code == want_code && (page == NULL || off == (long)want_off) &&
           in_alt(h_sp) == want_alt && (h_onstack_flag == (want_alt ? SS_ONSTACK : SS_DISABLE)) &&
           !sigismember(&mask, SIGSEGV) && after.ss_flags == (want_alt ? 0 : SS_DISABLE) &&
           h_uc_sp == (want_alt ? (uintptr_t)alt : 0) && h_uc_flags == (want_alt ? 0 : SS_DISABLE) &&
           h_change_errno == (want_alt ? EPERM : 0);
  printf("%s %s: si_code %d, si_addr page%+ld, handler %s the alternate stack, ss_flags in handler %d, "
         "uc_stack %s flags %d, changing it there: %s, after: SIGSEGV %s, ss_flags %d\n",
         ok ? "ok" : "FAIL", name, h_code, page ? off : 0L, in_alt(h_sp) ? "on" : "off", h_onstack_flag,
         h_uc_sp == (uintptr_t)alt ? "alt" : h_uc_sp ? "other" : "null", h_uc_flags,
         h_change_errno ? strerrorname_np(h_change_errno) : "allowed",
         sigismember(&mask, SIGSEGV) ? "blocked" : "unblocked", after.ss_flags);
  failures += !ok;
  h_count = 0;
}

static int depth;
#pragma GCC diagnostic ignored "-Winfinite-recursion"
static int recurse(volatile char *prev) {
  volatile char buf[1024];
  buf[0] = prev ? prev[0] + 1 : 0;
  depth++;
  return recurse(buf) + buf[1];
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  long pagesz = sysconf(_SC_PAGESIZE);
  alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  stack_t ss = {.ss_sp = alt, .ss_size = ALT_SIZE, .ss_flags = 0};
  if (sigaltstack(&ss, NULL)) {
    perror("sigaltstack");
    return 1;
  }
  struct sigaction sa = {0};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, NULL);

  /* An unmapped page: below mmap_min_addr (64 KiB), nothing is ever mapped. */
  char *hole = (char *)0x3000;
  if (sigsetjmp(jump, 1) == 0) *(volatile char *)(hole + 123) = 1;
  report("write to an unmapped page", SEGV_MAPERR, hole, 123, 1);

  /* A read-only page. */
  char *ro = mmap(NULL, pagesz, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sigsetjmp(jump, 1) == 0) *(volatile char *)(ro + 4000) = 1;
  report("write to a read-only page", SEGV_ACCERR, ro, 4000, 1);

  /* A PROT_NONE page. */
  char *none = mmap(NULL, pagesz, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sigsetjmp(jump, 1) == 0) (void)*(volatile char *)(none + 8);
  report("read of a PROT_NONE page", SEGV_ACCERR, none, 8, 1);

  /* A jump to a page that is not executable: si_addr is the target. */
  char *data = mmap(NULL, pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  memset(data, 0xC3, pagesz); /* ret: it would return if it ran */
  if (sigsetjmp(jump, 1) == 0) ((void (*)(void))(data + 16))();
  report("call into a non-executable page", SEGV_ACCERR, data, 16, 1);

  /* The same fault again: the first jump out left SIGSEGV unblocked. */
  if (sigsetjmp(jump, 1) == 0) *(volatile char *)(ro + 1) = 1;
  report("a second fault after siglongjmp", SEGV_ACCERR, ro, 1, 1);

  /* Stack overflow: only a handler on the alternate stack can run. */
  if (sigsetjmp(jump, 1) == 0) recurse(NULL);
  report("stack overflow", SEGV_MAPERR, NULL, 0, 1);
  printf("%s recursion went deeper than 1000 frames\n", depth > 1000 ? "ok" : "FAIL");
  failures += depth <= 1000;

  /* Without the alternate stack, the handler runs on the ordinary one. */
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, NULL);
  if (sigsetjmp(jump, 1) == 0) *(volatile char *)(hole + 5) = 1;
  report("SS_DISABLE: handler on the ordinary stack", SEGV_MAPERR, hole, 5, 0);

  /* Without SA_ONSTACK, too. */
  ss.ss_flags = 0;
  sigaltstack(&ss, NULL);
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  if (sigsetjmp(jump, 1) == 0) *(volatile char *)(hole + 6) = 1;
  printf("%s no SA_ONSTACK: handler %s the alternate stack\n", !in_alt(h_sp) && h_count == 1 ? "ok" : "FAIL",
         in_alt(h_sp) ? "on" : "off");
  failures += in_alt(h_sp) || h_count != 1;
  h_count = 0;

  printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
