/* Signal delivery on an rt_sigframe: handlers with siginfo, masks restored by
 * rt_sigreturn, registers preserved across a handler, SA_RESTART versus EINTR,
 * a SIGSEGV handler that sees the faulting address, and the alternate stack.
 * Prints "ok NAME" or "FAIL NAME" lines and exits 0 only if all pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static volatile sig_atomic_t got, got_code, got_pid;
static volatile uintptr_t fault_addr;
static volatile int on_alt;
static sigjmp_buf jump;
static char altstack[1 << 16];

static void on_usr1(int sig, siginfo_t *info, void *uc) {
  (void)uc;
  got = sig;
  got_code = info->si_code;
  got_pid = info->si_pid;
  char here;
  on_alt = &here >= altstack && &here < altstack + sizeof altstack;
}

static void on_segv(int sig, siginfo_t *info, void *uc) {
  (void)sig; (void)uc;
  fault_addr = (uintptr_t)info->si_addr;
  siglongjmp(jump, 1);
}

static void on_alarm(int sig) { (void)sig; got = SIGALRM; }

int main(void) {
  struct sigaction sa = {0};
  sa.sa_sigaction = on_usr1;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGUSR1, &sa, NULL);

  /* A handler runs on a frame and returns; registers and the mask come back. */
  register long keep asm("r12") = 0x1234567890L;
  kill(getpid(), SIGUSR1);
  asm volatile("" : "+r"(keep));
  CHECK("handler ran with siginfo", got == SIGUSR1 && got_code == SI_USER && got_pid == getpid());
  CHECK("callee-saved register survives the handler", keep == 0x1234567890L);

  /* A blocked signal waits until unblocked. */
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  got = 0;
  sigprocmask(SIG_BLOCK, &set, &old);
  kill(getpid(), SIGUSR1);
  CHECK("blocked signal not delivered", got == 0);
  sigset_t pend;
  sigpending(&pend);
  CHECK("sigpending shows it", sigismember(&pend, SIGUSR1));
  sigprocmask(SIG_SETMASK, &old, NULL);
  CHECK("delivered once unblocked", got == SIGUSR1);

  /* SIGSEGV handler sees the address. */
  sa.sa_sigaction = on_segv;
  sigaction(SIGSEGV, &sa, NULL);
  if (sigsetjmp(jump, 1) == 0) {
    *(volatile int *)0x1234 = 1;
  }
  CHECK("SIGSEGV handler got si_addr", fault_addr == 0x1234);

  /* The alternate stack. */
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
  sigaltstack(&ss, NULL);
  sa.sa_sigaction = on_usr1;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGUSR2, &sa, NULL);
  on_alt = 0;
  kill(getpid(), SIGUSR2);
  CHECK("SA_ONSTACK handler ran on the alternate stack", on_alt);

  /* A child's exit sends SIGCHLD to a handler. */
  sa.sa_sigaction = on_usr1;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGCHLD, &sa, NULL);
  got = 0;
  pid_t child = fork();
  if (child == 0) _exit(5);
  int status = 0;
  waitpid(child, &status, 0);
  CHECK("SIGCHLD delivered", got == SIGCHLD);
  CHECK("child status", WIFEXITED(status) && WEXITSTATUS(status) == 5);

  /* A default action kills a child: the parent sees WIFSIGNALED. */
  child = fork();
  if (child == 0) { kill(getpid(), SIGTERM); for (;;) pause(); }
  waitpid(child, &status, 0);
  CHECK("child killed by SIGTERM", WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);

  printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
