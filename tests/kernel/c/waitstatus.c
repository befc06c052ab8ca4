/* fork, exec and wait: the status word a parent gets for each way a child
 * can end (exit codes, exec'd programs, deaths by signal), the same through
 * waitid's siginfo and the SIGCHLD siginfo, and wait's errors.
 *
 * Core dumps are off in every process (RLIMIT_CORE 0, as in the sandbox, and
 * not dumpable, so that a core_pattern pipe cannot take one either). Linux
 * sets the core flag (WCOREDUMP, CLD_DUMPED) only when a core file was
 * written (fs/coredump.c coredump_finish), so a SIGSEGV or SIGABRT death
 * reports 0x0b or 0x06 with WCOREDUMP false.
 *
 * Prints one line per child, "ok NAME: ..." or "FAIL NAME: ...", and exits 0
 * only if every check passes. The output does not depend on pids or
 * addresses: the test compares it with a native run of the same binary. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

static void no_core_dumps(void) {
  struct rlimit rl;
  getrlimit(RLIMIT_CORE, &rl);
  rl.rlim_cur = 0;
  setrlimit(RLIMIT_CORE, &rl);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* "exited 42", "killed by 11", with the raw word and what each macro says. */
static void describe(char *out, size_t n, int st) {
  snprintf(out, n, "status 0x%04x WIFEXITED %d WEXITSTATUS %d WIFSIGNALED %d WTERMSIG %d WCOREDUMP %d WIFSTOPPED %d",
           st, WIFEXITED(st) ? 1 : 0, WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? 1 : 0,
           WIFSIGNALED(st) ? WTERMSIG(st) : -1, WIFSIGNALED(st) ? (WCOREDUMP(st) ? 1 : 0) : -1,
           WIFSTOPPED(st) ? 1 : 0);
}

static void expect(const char *name, int st, int want) {
  char got[200], exp[200];
  describe(got, sizeof got, st);
  if (st == want) {
    printf("ok %s: %s\n", name, got);
  } else {
    failures++;
    describe(exp, sizeof exp, want);
    printf("FAIL %s: %s, want %s\n", name, got, exp);
  }
}

static volatile sig_atomic_t chld_code, chld_status, chld_pid, chld_count;

static void on_chld(int sig, siginfo_t *info, void *uc) {
  (void)sig; (void)uc;
  chld_code = info->si_code;
  chld_status = info->si_status;
  chld_pid = info->si_pid;
  chld_count++;
}

/* Runs as the exec'd program: "waitstatus exit N", "... segv", "... kill SIG". */
static int child_main(int argc, char **argv) {
  no_core_dumps();
  if (argc == 3 && !strcmp(argv[1], "exit")) return atoi(argv[2]);
  if (argc == 2 && !strcmp(argv[1], "segv")) *(volatile int *)8 = 1;
  if (argc == 3 && !strcmp(argv[1], "kill")) kill(getpid(), atoi(argv[2]));
  return 99;
}

static int run_child(void (*body)(void)) {
  pid_t pid = fork();
  if (pid == 0) {
    body();
    _exit(98);
  }
  int st = -1;
  pid_t got = waitpid(pid, &st, 0);
  if (got != pid) {
    failures++;
    printf("FAIL waitpid returned %d, errno %s\n", got, strerrorname_np(errno));
  }
  return st;
}

static void exit0(void) { _exit(0); }
static void exit42(void) { _exit(42); }
static void exit255(void) { _exit(255); }
static void exit259(void) { _exit(259); } /* only the low 8 bits: 3 */
static void exit_libc(void) { exit(17); }
static void segv(void) { *(volatile int *)8 = 1; }
static void do_abort(void) { abort(); }
static void quit(void) { kill(getpid(), SIGQUIT); }
static void term(void) { kill(getpid(), SIGTERM); }
static void usr1(void) { raise(SIGUSR1); }
static void fpe(void) { __asm__ volatile("xor %%ecx, %%ecx; mov $1, %%eax; cltd; idiv %%ecx" ::: "eax", "ecx", "edx"); }
static void ill(void) { __asm__ volatile("ud2"); }
static void trap(void) { __asm__ volatile("int3"); }
static void pipe_(void) {
  int p[2];
  pipe(p);
  close(p[0]);
  write(p[1], "x", 1);
}
static void exec_exit(void) { execl("/proc/self/exe", "waitstatus", "exit", "7", (char *)0); }
static void exec_segv(void) { execl("/proc/self/exe", "waitstatus", "segv", (char *)0); }
static void exec_kill(void) { execl("/proc/self/exe", "waitstatus", "kill", "15", (char *)0); }
static void exec_missing(void) {
  execl("/nonexistent/program", "x", (char *)0);
  _exit(errno == ENOENT ? 127 : 126);
}

int main(int argc, char **argv) {
  if (argc > 1) return child_main(argc, argv);
  no_core_dumps();
  setvbuf(stdout, NULL, _IOLBF, 0);

  expect("_exit(0)", run_child(exit0), 0x0000);
  expect("_exit(42)", run_child(exit42), 0x2a00);
  expect("_exit(255)", run_child(exit255), 0xff00);
  expect("_exit(259) keeps the low 8 bits", run_child(exit259), 0x0300);
  expect("exit(17) through libc", run_child(exit_libc), 0x1100);
  expect("SIGSEGV from a bad write, no core written", run_child(segv), SIGSEGV);
  expect("SIGABRT from abort(), no core written", run_child(do_abort), SIGABRT);
  expect("SIGQUIT sent to itself", run_child(quit), SIGQUIT);
  expect("SIGTERM sent to itself", run_child(term), SIGTERM);
  expect("SIGUSR1 raised", run_child(usr1), SIGUSR1);
  expect("SIGFPE from a division by zero", run_child(fpe), SIGFPE);
  expect("SIGILL from ud2", run_child(ill), SIGILL);
  expect("SIGTRAP from int3", run_child(trap), SIGTRAP);
  expect("SIGPIPE from a write to a pipe without readers", run_child(pipe_), SIGPIPE);
  expect("exec'd program returns 7", run_child(exec_exit), 0x0700);
  expect("exec'd program faults", run_child(exec_segv), SIGSEGV);
  expect("exec'd program kills itself", run_child(exec_kill), SIGTERM);
  expect("exec of a missing program fails ENOENT", run_child(exec_missing), 0x7f00);

  /* vfork + exec. */
  pid_t pid = vfork();
  if (pid == 0) {
    execl("/proc/self/exe", "waitstatus", "exit", "3", (char *)0);
    _exit(126);
  }
  int st = -1;
  waitpid(pid, &st, 0);
  expect("vfork and exec'd program returns 3", st, 0x0300);

  /* The parent of vfork sleeps until the child exits (or execs): the
   * child's writes come before the parent's. */
  int order[2];
  pipe(order);
  pid = vfork();
  if (pid == 0) {
    write(order[1], "c", 1);
    write(order[1], "C", 1);
    _exit(0);
  }
  write(order[1], "p", 1);
  char seen[4] = {0};
  read(order[0], seen, 3);
  close(order[0]);
  close(order[1]);
  waitpid(pid, &st, 0);
  int ok = !strcmp(seen, "cCp");
  printf("%s vfork's parent resumes when the child exits: \"%s\"\n", ok ? "ok" : "FAIL", seen);
  failures += !ok;

  /* ... but it still dies of a fatal signal while it waits. Its vfork child
   * is orphaned: natively it comes back to us as a subreaper (the sandbox
   * runs this program as init). */
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  pipe(order);
  pid = fork();
  if (pid == 0) {
    close(order[1]);
    if (vfork() == 0) {
      char c;
      read(order[0], &c, 1); /* until the grandparent says so */
      _exit(0);
    }
    _exit(1);
  }
  close(order[0]);
  usleep(50000);
  kill(pid, SIGTERM);
  waitpid(pid, &st, 0);
  expect("SIGTERM kills a parent waiting in vfork", st, SIGTERM);
  write(order[1], "x", 1);
  close(order[1]);
  pid_t orphan = wait(&st);
  ok = orphan > 0 && st == 0;
  printf("%s its vfork child goes on and is reaped: status 0x%04x\n", ok ? "ok" : "FAIL", st);
  failures += !ok;

  /* Killed by the parent while it waits: SIGKILL, and SIGTERM. */
  int sigs[] = {SIGKILL, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) {
    int p[2];
    pipe(p);
    pid = fork();
    if (pid == 0) {
      close(p[0]);
      write(p[1], "r", 1);
      for (;;) pause();
    }
    close(p[1]);
    char c;
    read(p[0], &c, 1); /* it is running */
    close(p[0]);
    kill(pid, sigs[i]);
    waitpid(pid, &st, 0);
    char name[64];
    snprintf(name, sizeof name, "killed by the parent with %s", sigabbrev_np(sigs[i]));
    expect(name, st, sigs[i]);
  }

  /* waitid: CLD_EXITED with the code, CLD_KILLED (not CLD_DUMPED) with the signal. */
  struct {
    void (*body)(void);
    int code, status;
    const char *name;
  } ids[] = {
      {exit42, CLD_EXITED, 42, "waitid of _exit(42)"},
      {segv, CLD_KILLED, SIGSEGV, "waitid of a SIGSEGV death"},
      {do_abort, CLD_KILLED, SIGABRT, "waitid of an abort()"},
  };
  for (int i = 0; i < 3; i++) {
    pid = fork();
    if (pid == 0) {
      ids[i].body();
      _exit(98);
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = waitid(P_PID, pid, &si, WEXITED);
    int ok = r == 0 && si.si_signo == SIGCHLD && si.si_pid == pid && si.si_code == ids[i].code &&
             si.si_status == ids[i].status;
    printf("%s %s: si_signo %d si_code %d si_status %d\n", ok ? "ok" : "FAIL", ids[i].name, si.si_signo,
           si.si_code, si.si_status);
    failures += !ok;
  }

  /* WNOWAIT leaves the zombie; a second wait reaps it. */
  pid = fork();
  if (pid == 0) _exit(5);
  siginfo_t si;
  memset(&si, 0, sizeof si);
  waitid(P_PID, pid, &si, WEXITED | WNOWAIT);
  st = -1;
  pid_t again = waitpid(pid, &st, 0);
  ok = si.si_status == 5 && again == pid && st == 0x0500;
  printf("%s WNOWAIT then waitpid: si_status %d, then status 0x%04x\n", ok ? "ok" : "FAIL", si.si_status, st);
  failures += !ok;

  /* WNOHANG while the child runs; then the right child among two. */
  int hold[2];
  pipe(hold);
  pid_t a = fork();
  if (a == 0) {
    char c;
    close(hold[1]);
    read(hold[0], &c, 1);
    _exit(11);
  }
  pid_t b = fork();
  if (b == 0) {
    char c;
    close(hold[1]);
    read(hold[0], &c, 1);
    _exit(22);
  }
  close(hold[0]);
  int r = waitpid(-1, &st, WNOHANG);
  printf("%s WNOHANG while both run returns %d\n", r == 0 ? "ok" : "FAIL", r);
  failures += r != 0;
  close(hold[1]); /* both read end of file and exit */
  int sb = -1, sa = -1;
  pid_t gb = waitpid(b, &sb, 0), ga = waitpid(a, &sa, 0);
  ok = gb == b && ga == a && sb == 0x1600 && sa == 0x0b00;
  printf("%s waitpid of each by pid: 0x%04x 0x%04x\n", ok ? "ok" : "FAIL", sb, sa);
  failures += !ok;
  errno = 0;
  r = waitpid(-1, &st, 0);
  ok = r == -1 && errno == ECHILD;
  printf("%s no children left: %d %s\n", ok ? "ok" : "FAIL", r, strerrorname_np(errno));
  failures += !ok;
  errno = 0;
  r = waitpid(getpid(), &st, WNOHANG);
  ok = r == -1 && errno == ECHILD;
  printf("%s waitpid of a pid that is not a child: %d %s\n", ok ? "ok" : "FAIL", r, strerrorname_np(errno));
  failures += !ok;

  /* SIGCHLD's siginfo says how the child ended. */
  struct sigaction sa_chld = {0};
  sa_chld.sa_sigaction = on_chld;
  sa_chld.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGCHLD, &sa_chld, NULL);
  struct {
    void (*body)(void);
    int code, status;
    const char *name;
  } chld[] = {
      {exit42, CLD_EXITED, 42, "SIGCHLD for _exit(42)"},
      {term, CLD_KILLED, SIGTERM, "SIGCHLD for a SIGTERM death"},
      {segv, CLD_KILLED, SIGSEGV, "SIGCHLD for a SIGSEGV death"},
  };
  for (int i = 0; i < 3; i++) {
    chld_count = 0;
    pid = fork();
    if (pid == 0) {
      chld[i].body();
      _exit(98);
    }
    waitpid(pid, &st, 0);
    ok = chld_count == 1 && chld_pid == pid && chld_code == chld[i].code && chld_status == chld[i].status;
    printf("%s %s: count %d si_code %d si_status %d\n", ok ? "ok" : "FAIL", chld[i].name, (int)chld_count,
           (int)chld_code, (int)chld_status);
    failures += !ok;
  }

  printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
