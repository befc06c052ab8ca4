/* epoll on pipes and eventfds: level and edge triggering, EPOLLONESHOT,
 * EPOLL_CTL_MOD/DEL, the errors of epoll_ctl and epoll_wait, nesting, the
 * last close of a watched file, timeouts, other processes and signals.
 * Runs natively and in the sandbox alike. Prints "ok NAME" or "FAIL NAME"
 * lines and exits 0 only if all pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"


static int add(int ep, int fd, uint32_t events, uint64_t data) {
  struct epoll_event ev = {.events = events, .data.u64 = data};
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static int mod(int ep, int fd, uint32_t events, uint64_t data) {
  struct epoll_event ev = {.events = events, .data.u64 = data};
  return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

/* epoll_wait with a zero timeout; the first event in *out. */
static int peek(int ep, struct epoll_event *out, int max) { return epoll_wait(ep, out, max, 0); }

static void test_errors(void) {
  errno = 0;
  CHECK("epoll_create(0) is EINVAL", epoll_create(0) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("epoll_create1 with a bad flag is EINVAL", epoll_create1(1) == -1 && errno == EINVAL);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  CHECK("epoll_create1(EPOLL_CLOEXEC) sets FD_CLOEXEC", ep >= 0 && fcntl(ep, F_GETFD) == FD_CLOEXEC);
  char link[64] = {0}, path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", ep);
  readlink(path, link, sizeof link - 1);
  CHECK("an epoll is anon_inode:[eventpoll]", strcmp(link, "anon_inode:[eventpoll]") == 0);
  int p[2];
  pipe(p);
  int file = open("/bin/epoll", O_RDONLY);
  struct epoll_event ev = {.events = EPOLLIN};

  errno = 0;
  CHECK("epoll_ctl on a closed epfd is EBADF", epoll_ctl(999, EPOLL_CTL_ADD, p[0], &ev) == -1 && errno == EBADF);
  errno = 0;
  CHECK("epoll_ctl of a closed fd is EBADF", epoll_ctl(ep, EPOLL_CTL_ADD, 999, &ev) == -1 && errno == EBADF);
  errno = 0;
  CHECK("epoll_ctl of a regular file is EPERM", epoll_ctl(ep, EPOLL_CTL_ADD, file, &ev) == -1 && errno == EPERM);
  errno = 0;
  CHECK("epoll_ctl on a non-epoll epfd is EINVAL", epoll_ctl(p[0], EPOLL_CTL_ADD, p[1], &ev) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("adding an epoll to itself is EINVAL", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("an unknown op is EINVAL", epoll_ctl(ep, 7, p[0], &ev) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("a bad event pointer is EFAULT", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], (struct epoll_event *)8) == -1 &&
        errno == EFAULT);
  CHECK("EPOLL_CTL_DEL takes no event", epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == -1 && errno == ENOENT);
  errno = 0;
  CHECK("EPOLL_CTL_MOD of an unwatched fd is ENOENT", mod(ep, p[0], EPOLLIN, 0) == -1 && errno == ENOENT);
  CHECK("EPOLL_CTL_ADD", add(ep, p[0], EPOLLIN, 1) == 0);
  errno = 0;
  CHECK("adding it again is EEXIST", add(ep, p[0], EPOLLIN, 1) == -1 && errno == EEXIST);
  int d = dup(p[0]);
  CHECK("the same file under another fd is another item", add(ep, d, EPOLLIN, 2) == 0);
  errno = 0;
  CHECK("EPOLLEXCLUSIVE with MOD is EINVAL", mod(ep, p[0], EPOLLIN | EPOLLEXCLUSIVE, 1) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("EPOLLEXCLUSIVE with EPOLLPRI is EINVAL", add(ep, p[1], EPOLLPRI | EPOLLEXCLUSIVE, 3) == -1 && errno == EINVAL);
  CHECK("EPOLLEXCLUSIVE with EPOLLOUT is accepted", add(ep, p[1], EPOLLOUT | EPOLLEXCLUSIVE, 3) == 0);
  errno = 0;
  CHECK("EPOLL_CTL_MOD of an EPOLLEXCLUSIVE item is EINVAL", mod(ep, p[1], EPOLLOUT, 3) == -1 && errno == EINVAL);
  int inner = epoll_create1(0);
  errno = 0;
  CHECK("EPOLLEXCLUSIVE on an epoll is EINVAL", add(ep, inner, EPOLLIN | EPOLLEXCLUSIVE, 4) == -1 && errno == EINVAL);

  struct epoll_event out[4];
  errno = 0;
  CHECK("epoll_wait with maxevents 0 is EINVAL", epoll_wait(ep, out, 0, 0) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("epoll_wait on a pipe is EINVAL", epoll_wait(p[0], out, 1, 0) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("epoll_wait on a closed fd is EBADF", epoll_wait(999, out, 1, 0) == -1 && errno == EBADF);
  errno = 0;
  CHECK("epoll_pwait with a sigsetsize of 4 is EINVAL",
        syscall(SYS_epoll_pwait, ep, out, 1, 0, &(sigset_t){0}, 4) == -1 && errno == EINVAL);
  close(inner);
  close(d);
  close(file);
  close(p[0]);
  close(p[1]);
  close(ep);
}

static void test_loops(void) {
  int a = epoll_create1(0), b = epoll_create1(0);
  CHECK("an epoll inside another", add(a, b, EPOLLIN, 0) == 0);
  errno = 0;
  CHECK("a loop is ELOOP", add(b, a, EPOLLIN, 0) == -1 && errno == ELOOP);
  close(a);
  close(b);
  /* A chain e0 > e1 > ...: how deep Linux lets it go (EP_MAX_NESTS). */
  int e[8], depth = 0;
  for (int i = 0; i < 8; i++) e[i] = epoll_create1(0);
  for (int i = 0; i < 7; i++) {
    if (add(e[i], e[i + 1], EPOLLIN, 0) != 0) break;
    depth++;
  }
  printf("info chain_built_downwards %d errno %d\n", depth, errno);
  CHECK("a chain of 5 epolls is allowed, a 6th link is ELOOP", depth == 4 && errno == ELOOP);
  for (int i = 0; i < 8; i++) close(e[i]);
  /* Built from the bottom up. */
  for (int i = 0; i < 8; i++) e[i] = epoll_create1(0);
  depth = 0;
  errno = 0;
  for (int i = 7; i > 0; i--) {
    if (add(e[i - 1], e[i], EPOLLIN, 0) != 0) break;
    depth++;
  }
  printf("info chain_built_upwards %d errno %d\n", depth, errno);
  CHECK("the same limit built from the bottom up", depth == 4 && errno == ELOOP);
  for (int i = 0; i < 8; i++) close(e[i]);
}

static void test_triggering(void) {
  int p[2];
  pipe(p);
  struct epoll_event out[4];
  int lt = epoll_create1(0), et = epoll_create1(0), once = epoll_create1(0);
  add(lt, p[0], EPOLLIN, 11);
  add(et, p[0], EPOLLIN | EPOLLET, 22);
  add(once, p[0], EPOLLIN | EPOLLONESHOT, 33);
  CHECK("nothing ready on an empty pipe", peek(lt, out, 4) == 0 && peek(et, out, 4) == 0 && peek(once, out, 4) == 0);

  write(p[1], "ab", 2);
  int n = peek(lt, out, 4);
  CHECK("level-triggered: ready with its data", n == 1 && out[0].events == EPOLLIN && out[0].data.u64 == 11);
  CHECK("level-triggered: ready again while unread", peek(lt, out, 4) == 1);
  n = peek(et, out, 4);
  CHECK("edge-triggered: ready once", n == 1 && out[0].data.u64 == 22);
  CHECK("edge-triggered: not again without a new write", peek(et, out, 4) == 0);
  write(p[1], "c", 1);
  CHECK("edge-triggered: a new write makes it ready, though never drained", peek(et, out, 4) == 1);
  CHECK("edge-triggered: and then not", peek(et, out, 4) == 0);
  char buf[8];
  read(p[0], buf, 1);
  CHECK("edge-triggered: a read is no event for EPOLLIN", peek(et, out, 4) == 0);
  n = peek(once, out, 4);
  CHECK("oneshot: ready once", n == 1 && out[0].data.u64 == 33);
  CHECK("oneshot: then disarmed", peek(once, out, 4) == 0);
  write(p[1], "d", 1);
  CHECK("oneshot: a write does not re-arm it", peek(once, out, 4) == 0);
  CHECK("oneshot: EPOLL_CTL_MOD re-arms it", mod(once, p[0], EPOLLIN | EPOLLONESHOT, 44) == 0);
  n = peek(once, out, 4);
  CHECK("oneshot: ready again with the new data", n == 1 && out[0].data.u64 == 44);
  CHECK("EPOLL_CTL_MOD to EPOLLOUT on a read end: nothing", mod(lt, p[0], EPOLLOUT, 55) == 0 && peek(lt, out, 4) == 0);
  CHECK("EPOLL_CTL_MOD back to EPOLLIN", mod(lt, p[0], EPOLLIN, 66) == 0 && peek(lt, out, 4) == 1 &&
        out[0].data.u64 == 66);
  CHECK("EPOLL_CTL_DEL", epoll_ctl(lt, EPOLL_CTL_DEL, p[0], NULL) == 0 && peek(lt, out, 4) == 0);

  /* Drained: level-triggered goes quiet. */
  add(lt, p[0], EPOLLIN, 11);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  while (read(p[0], buf, sizeof buf) > 0) {}
  CHECK("level-triggered: drained, not ready", peek(lt, out, 4) == 0);

  /* The write end, and hang-up reported unasked. */
  add(lt, p[1], EPOLLOUT, 77);
  n = peek(lt, out, 4);
  CHECK("a pipe's write end is EPOLLOUT", n == 1 && out[0].events == EPOLLOUT && out[0].data.u64 == 77);
  epoll_ctl(lt, EPOLL_CTL_DEL, p[1], NULL);
  close(p[1]);
  n = peek(lt, out, 4);
  CHECK("no writer left: EPOLLHUP, unasked", n == 1 && out[0].events == EPOLLHUP && out[0].data.u64 == 11);
  n = peek(et, out, 4);
  CHECK("edge-triggered sees the hang-up", n == 1 && (out[0].events & EPOLLHUP));
  close(p[0]);
  close(lt);
  close(et);
  close(once);
}

static void test_fairness_and_close(void) {
  int a[2], b[2];
  pipe(a);
  pipe(b);
  int ep = epoll_create1(0);
  add(ep, a[0], EPOLLIN, 1);
  add(ep, b[0], EPOLLIN, 2);
  write(a[1], "x", 1);
  write(b[1], "x", 1);
  struct epoll_event out[4];
  int n1 = epoll_wait(ep, out, 1, 0);
  uint64_t first = out[0].data.u64;
  int n2 = epoll_wait(ep, out, 1, 0);
  uint64_t second = out[0].data.u64;
  CHECK("maxevents 1 takes ready items in turn", n1 == 1 && n2 == 1 && first == 1 && second == 2);
  CHECK("both together", epoll_wait(ep, out, 4, 0) == 2);

  /* Closing one of two fds of a file: still watched, under the old fd. */
  int d = dup(a[0]);
  close(a[0]);
  int n = epoll_wait(ep, out, 4, 0);
  CHECK("a closed fd whose file is still open keeps reporting", n == 2);
  /* The last close removes it. */
  close(d);
  n = epoll_wait(ep, out, 4, 0);
  CHECK("the last close of a file removes it", n == 1 && out[0].data.u64 == 2);
  errno = 0;
  /* a[0]'s number may be reused; DEL of the new file there is ENOENT. */
  int again = eventfd(0, 0);
  CHECK("a reused fd number is not the old item", epoll_ctl(ep, EPOLL_CTL_DEL, again, NULL) == -1 && errno == ENOENT);
  close(again);
  close(a[1]);
  close(b[0]);
  close(b[1]);
  close(ep);
}

static void test_eventfd_and_nesting(void) {
  int e = eventfd(0, EFD_NONBLOCK);
  int ep = epoll_create1(0), et = epoll_create1(0);
  add(ep, e, EPOLLIN | EPOLLOUT, 5);
  add(et, e, EPOLLIN | EPOLLET, 6);
  struct epoll_event out[4];
  int n = peek(ep, out, 4);
  CHECK("an eventfd at 0 is EPOLLOUT", n == 1 && out[0].events == EPOLLOUT);
  CHECK("edge-triggered eventfd at 0: nothing", peek(et, out, 4) == 0);
  uint64_t v = 1;
  write(e, &v, 8);
  n = peek(ep, out, 4);
  CHECK("an eventfd above 0 is EPOLLIN|EPOLLOUT", n == 1 && out[0].events == (EPOLLIN | EPOLLOUT));
  CHECK("edge-triggered eventfd: one event per write", peek(et, out, 4) == 1 && peek(et, out, 4) == 0);
  write(e, &v, 8);
  CHECK("edge-triggered eventfd: the next write is another", peek(et, out, 4) == 1);

  /* An epoll inside an epoll is readable while the inner one has events. */
  int outer = epoll_create1(0);
  add(outer, ep, EPOLLIN, 9);
  n = peek(outer, out, 4);
  CHECK("the outer epoll reports the inner one", n == 1 && out[0].events == EPOLLIN && out[0].data.u64 == 9);
  struct pollfd pfd = {.fd = ep, .events = POLLIN};
  CHECK("poll on an epoll with events: POLLIN", poll(&pfd, 1, 0) == 1 && pfd.revents == POLLIN);
  read(e, &v, 8);
  mod(ep, e, EPOLLIN, 5);
  CHECK("the inner one quiet: so is the outer", peek(outer, out, 4) == 0 && poll(&pfd, 1, 0) == 0);
  close(outer);
  close(et);
  close(ep);
  close(e);
}

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig) { (void)sig; got_usr1++; }

static void test_waiting(void) {
  int p[2];
  pipe(p);
  int ep = epoll_create1(0);
  add(ep, p[0], EPOLLIN, 1);
  struct epoll_event out[4];
  double t0 = now();
  int n = epoll_wait(ep, out, 4, 120);
  double dt = now() - t0;
  CHECK("epoll_wait times out with 0", n == 0);
  CHECK("epoll_wait waited about 120 ms", dt >= 0.11 && dt < 1.0);

  pid_t child = fork();
  if (child == 0) {
    usleep(100000);
    write(p[1], "z", 1);
    _exit(0);
  }
  t0 = now();
  n = epoll_wait(ep, out, 4, -1);
  dt = now() - t0;
  CHECK("epoll_wait wakes when another process writes", n == 1 && out[0].data.u64 == 1 && dt >= 0.08);
  waitpid(child, NULL, 0);

  /* An eventfd written by another process wakes a blocked epoll_wait. */
  int e = eventfd(0, 0);
  add(ep, e, EPOLLIN | EPOLLET, 2);
  char c;
  read(p[0], &c, 1);
  child = fork();
  if (child == 0) {
    usleep(80000);
    uint64_t v = 3;
    write(e, &v, 8);
    _exit(0);
  }
  n = epoll_wait(ep, out, 4, 5000);
  CHECK("an eventfd write in another process wakes epoll_wait", n == 1 && out[0].data.u64 == 2);
  waitpid(child, NULL, 0);

  /* Signals: EINTR even with SA_RESTART; epoll_pwait's mask for the call. */
  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  pid_t parent = getpid();
  child = fork();
  if (child == 0) {
    usleep(100000);
    kill(parent, SIGUSR1);
    _exit(0);
  }
  errno = 0;
  n = epoll_wait(ep, out, 4, 5000);
  CHECK("a signal interrupts epoll_wait with EINTR", n == -1 && errno == EINTR && got_usr1 == 1);
  waitpid(child, NULL, 0);
  sigset_t block, empty, after;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigemptyset(&empty);
  sigprocmask(SIG_BLOCK, &block, NULL);
  kill(getpid(), SIGUSR1);
  got_usr1 = 0;
  errno = 0;
  n = epoll_pwait(ep, out, 4, 5000, &empty);
  sigprocmask(SIG_BLOCK, NULL, &after);
  CHECK("epoll_pwait unblocks a pending signal: EINTR", n == -1 && errno == EINTR && got_usr1 == 1);
  CHECK("epoll_pwait's old mask is back", sigismember(&after, SIGUSR1));
  kill(getpid(), SIGUSR1);
  n = epoll_pwait(ep, out, 4, 30, &block);
  CHECK("epoll_pwait with the signal blocked times out", n == 0 && got_usr1 == 1);
  struct timespec ts = {0, 40 * 1000000};
  t0 = now();
  n = syscall(SYS_epoll_pwait2, ep, out, 4, &ts, NULL, 8);
  CHECK("epoll_pwait2 with a timespec times out", n == 0 && now() - t0 >= 0.035);
  ts.tv_nsec = -1;
  errno = 0;
  CHECK("epoll_pwait2 with a bad timespec is EINVAL",
        syscall(SYS_epoll_pwait2, ep, out, 4, &ts, NULL, 8) == -1 && errno == EINVAL);
  sigprocmask(SIG_UNBLOCK, &block, NULL);
  CHECK("the signal still pending is delivered once unblocked", got_usr1 == 2);
  signal(SIGUSR1, SIG_DFL);
  close(e);
  close(p[0]);
  close(p[1]);
  close(ep);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  test_errors();
  test_loops();
  test_triggering();
  test_fairness_and_close();
  test_eventfd_and_nesting();
  test_waiting();
  printf("%d failures\n", failures);
  return failures != 0;
}
