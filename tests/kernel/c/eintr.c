/* A blocked read of a pipe meets a signal: without SA_RESTART it fails
 * EINTR once the handler has run; with SA_RESTART it is restarted and
 * returns the data the child writes after the signal. The same for a
 * blocked wait4. Sleeps are never restarted: nanosleep fails EINTR even with
 * SA_RESTART (Linux returns -ERESTART_RESTARTBLOCK, which a handler turns
 * into EINTR) and says how much time was left; so do pause and sigsuspend
 * (-ERESTARTNOHAND). A signal that is ignored interrupts nothing.
 *
 * In each case a child sends SIGUSR1 to the parent after a short sleep,
 * sleeps again, then writes or exits. Prints "ok NAME" or "FAIL NAME: ..."
 * lines and exits 0 only if all pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAUSE_US 30000

static volatile sig_atomic_t handled;
static void on_usr1(int sig) { (void)sig; handled++; }

static int failures;

static void set_handler(int flags, void (*h)(int)) {
  struct sigaction sa = {0};
  sa.sa_handler = h;
  sa.sa_flags = flags;
  sigaction(SIGUSR1, &sa, NULL);
}

/* A child that signals the parent, then writes "late" to fd (if >= 0)
 * and exits with code 9. */
static pid_t signaller(int fd) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    usleep(PAUSE_US);
    kill(parent, SIGUSR1);
    usleep(PAUSE_US);
    if (fd >= 0) write(fd, "late", 4);
    _exit(9);
  }
  return pid;
}

static void read_case(const char *name, int flags, void (*h)(int), int want_eintr) {
  int p[2];
  pipe(p);
  set_handler(flags, h);
  handled = 0;
  pid_t pid = signaller(p[1]);
  char buf[16] = {0};
  errno = 0;
  ssize_t n = read(p[0], buf, sizeof buf - 1);
  int err = errno;
  int was_handled = handled;
  int ok;
  if (want_eintr) {
    /* The data comes later; the next read gets it. */
    ok = n == -1 && err == EINTR && was_handled == 1;
    char again[16] = {0};
    ssize_t m = read(p[0], again, sizeof again - 1);
    ok = ok && m == 4 && !strcmp(again, "late");
    printf("%s %s: read returned %zd (%s), handler ran %d time(s), then read returned %zd \"%s\"\n",
           ok ? "ok" : "FAIL", name, n, n < 0 ? strerrorname_np(err) : "no error", was_handled, m, again);
  } else {
    ok = n == 4 && !strcmp(buf, "late") && was_handled == (h == on_usr1 ? 1 : 0);
    printf("%s %s: read returned %zd \"%s\", handler ran %d time(s)\n", ok ? "ok" : "FAIL", name, n, buf,
           was_handled);
  }
  failures += !ok;
  int st;
  waitpid(pid, &st, 0);
  close(p[0]);
  close(p[1]);
}

static void wait_case(const char *name, int flags, int want_eintr) {
  set_handler(flags, on_usr1);
  handled = 0;
  pid_t pid = signaller(-1);
  int st = -1;
  errno = 0;
  pid_t r = waitpid(pid, &st, 0);
  int err = errno;
  int ok;
  if (want_eintr) {
    ok = r == -1 && err == EINTR && handled == 1;
    pid_t r2 = waitpid(pid, &st, 0);
    ok = ok && r2 == pid && st == 0x0900;
    printf("%s %s: waitpid returned %s (%s), handler ran %d time(s), then the child's status 0x%04x\n",
           ok ? "ok" : "FAIL", name, r == -1 ? "-1" : "the pid", r == -1 ? strerrorname_np(err) : "no error",
           (int)handled, st);
  } else {
    ok = r == pid && st == 0x0900 && handled == 1;
    printf("%s %s: waitpid returned %s with status 0x%04x, handler ran %d time(s)\n", ok ? "ok" : "FAIL", name,
           r == pid ? "the pid" : "something else", st, (int)handled);
  }
  failures += !ok;
}

static void sleep_case(const char *name, int flags) {
  set_handler(flags, on_usr1);
  handled = 0;
  pid_t pid = signaller(-1);
  struct timespec req = {.tv_sec = 2, .tv_nsec = 0}, rem = {0, 0};
  errno = 0;
  int r = nanosleep(&req, &rem);
  int err = errno;
  /* About 2 s minus the child's first pause were left. */
  int ok = r == -1 && err == EINTR && handled == 1 && rem.tv_sec == 1 && rem.tv_nsec > 0;
  printf("%s %s: nanosleep returned %d (%s), handler ran %d time(s), %s second(s) left\n", ok ? "ok" : "FAIL",
         name, r, r ? strerrorname_np(err) : "no error", (int)handled, rem.tv_sec == 1 ? "1.x" : "not 1.x");
  failures += !ok;
  int st;
  waitpid(pid, &st, 0);
}

/* pause and sigsuspend wait for a handler to run: they return EINTR after
 * it, SA_RESTART or not (-ERESTARTNOHAND), and sigsuspend's mask is undone. */
static void pause_case(const char *name, int flags, int use_sigsuspend) {
  set_handler(flags, on_usr1);
  handled = 0;
  sigset_t block, old, during;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigprocmask(SIG_BLOCK, &block, &old);
  pid_t pid = signaller(-1);
  errno = 0;
  int r;
  if (use_sigsuspend) {
    sigemptyset(&during);
    r = sigsuspend(&during);
  } else {
    sigprocmask(SIG_SETMASK, &old, NULL);
    r = pause();
  }
  int err = errno;
  sigset_t now;
  sigprocmask(SIG_SETMASK, NULL, &now);
  int still_blocked = sigismember(&now, SIGUSR1);
  int ok = r == -1 && err == EINTR && handled == 1 && still_blocked == use_sigsuspend;
  printf("%s %s: returned %d (%s), handler ran %d time(s), SIGUSR1 %s afterwards\n", ok ? "ok" : "FAIL", name, r,
         r ? strerrorname_np(err) : "no error", (int)handled, still_blocked ? "blocked" : "unblocked");
  failures += !ok;
  sigprocmask(SIG_SETMASK, &old, NULL);
  int st;
  waitpid(pid, &st, 0);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  read_case("pipe read, no SA_RESTART", 0, on_usr1, 1);
  read_case("pipe read, SA_RESTART", SA_RESTART, on_usr1, 0);
  read_case("pipe read, signal ignored", 0, SIG_IGN, 0);
  wait_case("waitpid, no SA_RESTART", 0, 1);
  wait_case("waitpid, SA_RESTART", SA_RESTART, 0);
  sleep_case("nanosleep, no SA_RESTART", 0);
  sleep_case("nanosleep, SA_RESTART", SA_RESTART);
  pause_case("pause, no SA_RESTART", 0, 0);
  pause_case("pause, SA_RESTART", SA_RESTART, 0);
  pause_case("sigsuspend, no SA_RESTART", 0, 1);
  pause_case("sigsuspend, SA_RESTART", SA_RESTART, 1);
  printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
