/* Orphans go to init, and init reaps them. Run as PID 1 (the sandbox's
 * init; natively under `unshare --pid --fork`).
 *
 * 1. A child forks a grandchild and exits: the grandchild's getppid()
 *    becomes 1, init can see it as its own child (WNOHANG: 0, not ECHILD)
 *    and reaps it with wait().
 * 2. A grandchild exits while its parent is alive and has not reaped it
 *    (waitid WNOWAIT), then the parent exits: the zombie goes to init,
 *    which reaps it with its status.
 * 3. The same two levels further down (init -> P -> Q -> Z, Z a zombie
 *    when Q exits, P alive): init is sent SIGCHLD for the zombie it
 *    inherits (Linux reparent_leader -> do_notify_parent), with the zombie's
 *    pid and status, so an init that reaps on SIGCHLD does not leak it.
 *
 * Prints "ok NAME" or "FAIL NAME: ..." lines and exits 0 only if all pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define CHECK(name, ok, ...)          \
  do {                                \
    int ok_ = (ok);                   \
    printf("%s %s", ok_ ? "ok" : "FAIL", name); \
    if (!ok_) {                       \
      printf(": ");                   \
      printf(__VA_ARGS__);            \
    }                                 \
    printf("\n");                     \
    failures += !ok_;                 \
  } while (0)

static volatile sig_atomic_t chld_count, chld_pid, chld_code, chld_status;

static void on_chld(int sig, siginfo_t *si, void *uc) {
  (void)sig; (void)uc;
  if (chld_count++ == 0) {
    chld_pid = si->si_pid;
    chld_code = si->si_code;
    chld_status = si->si_status;
  }
}

static pid_t read_pid(int fd) {
  pid_t pid = -1;
  if (read(fd, &pid, sizeof pid) != sizeof pid) return -1;
  return pid;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  CHECK("this program is PID 1", getpid() == 1, "getpid() = %d", getpid());

  /* 1. A live orphan. */
  int info[2], go[2];
  pipe(info);
  pipe(go);
  pid_t a = fork();
  if (a == 0) {
    pid_t b = fork();
    if (b == 0) {
      close(info[0]);
      close(info[1]);
      close(go[1]);
      int tries = 0;
      while (getppid() != 1 && tries++ < 5000) usleep(1000);
      char c;
      read(go[0], &c, 1); /* init has looked at us */
      _exit(getppid() == 1 ? 7 : 8);
    }
    write(info[1], &b, sizeof b);
    _exit(3);
  }
  close(info[1]);
  close(go[0]);
  pid_t b = read_pid(info[0]);
  close(info[0]);
  int st = -1;
  pid_t r = waitpid(a, &st, 0);
  CHECK("the child exits 3", r == a && st == 0x0300, "status %#06x", st);
  r = waitpid(b, &st, WNOHANG);
  CHECK("the running grandchild is now init's child (WNOHANG returns 0)", r == 0, "waitpid returned %d (%s)", r,
        r < 0 ? strerrorname_np(errno) : "no error");
  write(go[1], "g", 1);
  close(go[1]);
  st = -1;
  r = wait(&st);
  CHECK("wait() reaps it; it saw getppid() == 1 (status 7)", r == b && st == 0x0700, "status %#06x", st);

  /* 2. A zombie orphan. */
  pipe(info);
  a = fork();
  if (a == 0) {
    close(info[0]);
    pid_t z = fork();
    if (z == 0) _exit(5);
    siginfo_t si;
    waitid(P_PID, z, &si, WEXITED | WNOWAIT); /* z is a zombie now, still ours */
    write(info[1], &z, sizeof z);
    _exit(4);
  }
  close(info[1]);
  pid_t z = read_pid(info[0]);
  close(info[0]);
  st = -1;
  r = waitpid(a, &st, 0);
  CHECK("the zombie's parent exits 4", r == a && st == 0x0400, "status %#06x", st);
  st = -1;
  r = waitpid(z, &st, 0);
  CHECK("init reaps the zombie it inherited (status 5)", r == z && st == 0x0500, "waitpid returned %s, status %#06x",
        r == z ? "its pid" : "something else", st);
  r = waitpid(-1, &st, WNOHANG);
  CHECK("no children left", r == -1 && errno == ECHILD, "waitpid returned %d", r);

  /* 3. SIGCHLD for an inherited zombie. */
  struct sigaction sa = {0};
  sa.sa_sigaction = on_chld;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGCHLD, &sa, NULL);
  int done[2];
  pipe(info);
  pipe(go);
  pipe(done);
  pid_t p = fork();
  if (p == 0) {
    close(info[0]);
    close(go[1]);
    close(done[0]);
    pid_t q = fork();
    if (q == 0) {
      pid_t zz = fork();
      if (zz == 0) _exit(6);
      siginfo_t si;
      waitid(P_PID, zz, &si, WEXITED | WNOWAIT);
      write(info[1], &zz, sizeof zz);
      _exit(0); /* zz goes to init, a zombie */
    }
    int qst;
    waitpid(q, &qst, 0);
    write(done[1], "d", 1); /* q is gone: init has been told about zz */
    char c;
    read(go[0], &c, 1);
    _exit(0);
  }
  close(info[1]);
  close(go[0]);
  close(done[1]);
  pid_t zz = read_pid(info[0]);
  char c;
  read(done[0], &c, 1);
  CHECK("SIGCHLD for the inherited zombie: one signal, its pid, CLD_EXITED, status 6",
        chld_count == 1 && chld_pid == zz && chld_code == CLD_EXITED && chld_status == 6,
        "count %d, si_code %d, si_status %d, %s pid", (int)chld_count, (int)chld_code, (int)chld_status,
        chld_pid == zz ? "its" : "another");
  st = -1;
  r = waitpid(zz, &st, 0);
  CHECK("init reaps it (status 6)", r == zz && st == 0x0600, "status %#06x", st);
  write(go[1], "g", 1);
  st = -1;
  r = waitpid(p, &st, 0);
  CHECK("the middle process exits 0", r == p && st == 0, "status %#06x", st);

  printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
