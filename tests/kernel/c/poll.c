/* poll, ppoll, select and pselect6 on pipes between processes, with
 * timeouts, signals and temporary masks; eventfd. Runs natively and in the
 * sandbox alike. Prints "ok NAME" or "FAIL NAME" lines, "info NAME VALUE"
 * lines for the test to compare, and exits 0 only if all pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"


/* A child that writes `msg` to `fd` after `ms` milliseconds, then exits. */
static pid_t write_later(int fd, int ms, const char *msg) {
  pid_t pid = fork();
  if (pid == 0) {
    usleep(ms * 1000);
    if (write(fd, msg, strlen(msg)) < 0) _exit(1);
    _exit(0);
  }
  return pid;
}

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig) { (void)sig; got_usr1++; }

static sigset_t current_mask(void) {
  sigset_t s;
  sigprocmask(SIG_BLOCK, NULL, &s);
  return s;
}

static void test_poll(void) {
  int p[2];
  pipe(p);
  struct pollfd pfd = {.fd = p[0], .events = POLLIN};

  /* Nothing to read: a zero timeout answers at once, a timeout is honoured. */
  double t0 = now();
  int r = poll(&pfd, 1, 0);
  CHECK("poll timeout 0 on an empty pipe returns 0 at once", r == 0 && now() - t0 < 0.05);
  t0 = now();
  r = poll(&pfd, 1, 150);
  double dt = now() - t0;
  CHECK("poll timeout 150 ms returns 0", r == 0 && pfd.revents == 0);
  CHECK("poll waited about 150 ms", dt >= 0.14 && dt < 1.0);

  /* Another process writes later: poll wakes with POLLIN. */
  pid_t child = write_later(p[1], 100, "x");
  t0 = now();
  r = poll(&pfd, 1, 5000);
  dt = now() - t0;
  CHECK("poll wakes when another process writes", r == 1 && pfd.revents == POLLIN);
  CHECK("poll woke after the write, not before", dt >= 0.08 && dt < 4.0);
  waitpid(child, NULL, 0);
  char c;
  read(p[0], &c, 1);

  /* Write end: POLLOUT while there is room. */
  struct pollfd two[3] = {{.fd = p[0], .events = POLLIN}, {.fd = p[1], .events = POLLOUT}, {.fd = -1, .events = POLLIN}};
  r = poll(two, 3, 0);
  CHECK("write end is POLLOUT, empty read end nothing, negative fd ignored",
        r == 1 && two[0].revents == 0 && two[1].revents == POLLOUT && two[2].revents == 0);

  /* A full pipe is not writable. */
  fcntl(p[1], F_SETFL, O_NONBLOCK);
  char buf[4096] = {0};
  while (write(p[1], buf, sizeof buf) > 0) {}
  r = poll(&two[1], 1, 0);
  CHECK("a full pipe is not POLLOUT", r == 0 && two[1].revents == 0);
  while (read(p[0], buf, sizeof buf) == sizeof buf && poll(&two[1], 1, 0) == 0) {}
  CHECK("reading makes it POLLOUT again", two[1].revents == POLLOUT);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  while (read(p[0], buf, sizeof buf) > 0) {}

  /* Hang-up and errors are reported unasked. */
  close(p[1]);
  pfd.events = 0;
  r = poll(&pfd, 1, 1000);
  CHECK("read end with no writer is POLLHUP (unasked, without POLLIN)", r == 1 && pfd.revents == POLLHUP);
  close(p[0]);
  pipe(p);
  close(p[0]);
  struct pollfd w = {.fd = p[1], .events = POLLOUT};
  r = poll(&w, 1, 0);
  CHECK("write end with no reader is POLLOUT|POLLERR", r == 1 && w.revents == (POLLOUT | POLLERR));
  close(p[1]);
  struct pollfd bad = {.fd = p[1], .events = POLLIN};
  r = poll(&bad, 1, 0);
  CHECK("a closed fd is POLLNVAL", r == 1 && bad.revents == POLLNVAL);

  /* Regular files are always ready; nfds past RLIMIT_NOFILE is EINVAL. */
  int f = open("/bin/poll", O_RDONLY);
  struct pollfd rf = {.fd = f, .events = POLLIN | POLLOUT | POLLPRI};
  r = poll(&rf, 1, 0);
  CHECK("a regular file is POLLIN|POLLOUT", r == 1 && rf.revents == (POLLIN | POLLOUT));
  close(f);
  errno = 0;
  CHECK("poll with nfds over RLIMIT_NOFILE is EINVAL", syscall(SYS_poll, NULL, 1 << 20, 0) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("poll with a bad array is EFAULT", syscall(SYS_poll, 8, 1, 0) == -1 && errno == EFAULT);

  /* No fds and a timeout: a sleep. */
  t0 = now();
  r = poll(NULL, 0, 60);
  CHECK("poll of no fds sleeps for its timeout", r == 0 && now() - t0 >= 0.05);
}

static void test_signals(void) {
  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART; /* poll and select never restart */
  sigaction(SIGUSR1, &sa, NULL);
  int p[2];
  pipe(p);
  pid_t parent = getpid();

  /* A signal interrupts poll: EINTR even with SA_RESTART. */
  pid_t child = fork();
  if (child == 0) {
    usleep(100000);
    kill(parent, SIGUSR1);
    _exit(0);
  }
  struct pollfd pfd = {.fd = p[0], .events = POLLIN};
  got_usr1 = 0;
  errno = 0;
  int r = poll(&pfd, 1, 5000);
  CHECK("a signal interrupts poll with EINTR despite SA_RESTART", r == -1 && errno == EINTR && got_usr1 == 1);
  waitpid(child, NULL, 0);

  /* select too, and its timeout is not restarted. */
  child = fork();
  if (child == 0) {
    usleep(100000);
    kill(parent, SIGUSR1);
    _exit(0);
  }
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(p[0], &rd);
  struct timeval tv = {5, 0};
  got_usr1 = 0;
  errno = 0;
  r = select(p[0] + 1, &rd, NULL, NULL, &tv);
  CHECK("a signal interrupts select with EINTR", r == -1 && errno == EINTR && got_usr1 == 1);
  waitpid(child, NULL, 0);

  /* ppoll with a temporary mask: SIGUSR1 is blocked outside, pending, and
   * delivered during the call only; the old mask is back afterwards. */
  sigset_t block, empty;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigemptyset(&empty);
  sigprocmask(SIG_BLOCK, &block, NULL);
  kill(getpid(), SIGUSR1);
  got_usr1 = 0;
  struct timespec ts = {5, 0};
  errno = 0;
  r = ppoll(&pfd, 1, &ts, &empty);
  sigset_t after = current_mask();
  CHECK("ppoll unblocks a pending signal: EINTR, the handler ran", r == -1 && errno == EINTR && got_usr1 == 1);
  CHECK("ppoll's old mask is back after the handler", sigismember(&after, SIGUSR1));

  /* ppoll with a mask that still blocks: the timeout passes, mask unchanged. */
  kill(getpid(), SIGUSR1);
  got_usr1 = 0;
  ts.tv_sec = 0;
  ts.tv_nsec = 50 * 1000000;
  r = syscall(SYS_ppoll, &pfd, 1, &ts, &block, 8); /* glibc's ppoll hides the write-back */
  after = current_mask();
  CHECK("ppoll with the signal blocked times out", r == 0 && got_usr1 == 0 && sigismember(&after, SIGUSR1));
  CHECK("ppoll writes back what is left of its timeout", ts.tv_sec == 0 && ts.tv_nsec == 0);

  /* pselect6 likewise, and a timeout of 0 still reports the signal. */
  FD_ZERO(&rd);
  FD_SET(p[0], &rd);
  struct timespec zero = {0, 0};
  errno = 0;
  r = pselect(p[0] + 1, &rd, NULL, NULL, &zero, &empty);
  after = current_mask();
  CHECK("pselect with a mask unblocking a pending signal is EINTR", r == -1 && errno == EINTR && got_usr1 == 1);
  CHECK("pselect's old mask is back", sigismember(&after, SIGUSR1));
  sigprocmask(SIG_UNBLOCK, &block, NULL);

  /* ppoll: a bad sigsetsize is EINVAL. */
  errno = 0;
  r = syscall(SYS_ppoll, &pfd, 1, &ts, &empty, 4);
  CHECK("ppoll with a sigsetsize of 4 is EINVAL", r == -1 && errno == EINVAL);
  ts.tv_nsec = 1000000000;
  errno = 0;
  CHECK("ppoll with tv_nsec of 1e9 is EINVAL", ppoll(&pfd, 1, &ts, NULL) == -1 && errno == EINVAL);
  close(p[0]);
  close(p[1]);
  signal(SIGUSR1, SIG_DFL);
}

static void test_select(void) {
  int p[2];
  pipe(p);
  fd_set rd, wr;

  /* Timeout, with what is left written back (0 once it passed). */
  FD_ZERO(&rd);
  FD_SET(p[0], &rd);
  struct timeval tv = {0, 120000};
  double t0 = now();
  int r = select(p[0] + 1, &rd, NULL, NULL, &tv);
  double dt = now() - t0;
  CHECK("select timeout returns 0 and clears the set", r == 0 && !FD_ISSET(p[0], &rd));
  CHECK("select waited about 120 ms", dt >= 0.11 && dt < 1.0);
  CHECK("select writes back the time left (none)", tv.tv_sec == 0 && tv.tv_usec == 0);

  /* Another process writes: readable; with the write end both counted. */
  pid_t child = write_later(p[1], 80, "y");
  FD_ZERO(&rd);
  FD_SET(p[0], &rd);
  FD_ZERO(&wr);
  tv.tv_sec = 5;
  tv.tv_usec = 0;
  r = select(p[0] + 1, &rd, &wr, NULL, &tv);
  CHECK("select wakes when another process writes", r == 1 && FD_ISSET(p[0], &rd));
  CHECK("select leaves the rest of its timeout", tv.tv_sec <= 4 && tv.tv_sec >= 3);
  waitpid(child, NULL, 0);
  FD_ZERO(&rd);
  FD_SET(p[0], &rd);
  FD_ZERO(&wr);
  FD_SET(p[1], &wr);
  int maxfd = p[0] > p[1] ? p[0] : p[1];
  r = select(maxfd + 1, &rd, &wr, NULL, NULL);
  CHECK("select counts each ready bit", r == 2 && FD_ISSET(p[0], &rd) && FD_ISSET(p[1], &wr));

  /* The select system call itself (glibc's select is pselect6): its
   * microseconds may exceed a second, C division normalises them, and a
   * time still negative after that is EINVAL. */
  FD_ZERO(&rd);
  tv.tv_sec = -1;
  tv.tv_usec = 1000001;
  CHECK("SYS_select with {-1 s, 1000001 us} is valid (1 us)", syscall(SYS_select, 0, NULL, NULL, NULL, &tv) == 0);
  tv.tv_sec = 1;
  tv.tv_usec = -1;
  errno = 0;
  CHECK("SYS_select with {1 s, -1 us} is EINVAL", syscall(SYS_select, 1, &rd, NULL, NULL, &tv) == -1 && errno == EINVAL);
  tv.tv_sec = 0;
  tv.tv_usec = 50000;
  r = syscall(SYS_select, 0, NULL, NULL, NULL, &tv);
  CHECK("SYS_select sleeps and writes back a timeval", r == 0 && tv.tv_sec == 0 && tv.tv_usec == 0);
  FD_ZERO(&rd);
  FD_SET(p[0], &rd);
  tv.tv_sec = 7;
  tv.tv_usec = 0;
  r = syscall(SYS_select, p[0] + 1, &rd, NULL, NULL, &tv);
  CHECK("SYS_select returning at once leaves most of the timeval", r == 1 && tv.tv_sec == 6 && tv.tv_usec > 900000);

  /* A closed fd in a set is EBADF; a negative nfds EINVAL. */
  int closed = dup(p[0]);
  close(closed);
  FD_ZERO(&rd);
  FD_SET(closed, &rd);
  tv.tv_sec = 0;
  errno = 0;
  CHECK("select on a closed fd is EBADF", select(closed + 1, &rd, NULL, NULL, &tv) == -1 && errno == EBADF);
  errno = 0;
  CHECK("select with nfds -1 is EINVAL", select(-1, NULL, NULL, NULL, &tv) == -1 && errno == EINVAL);

  /* Hang-up counts as readable. */
  close(p[1]);
  char c;
  read(p[0], &c, 1);
  FD_ZERO(&rd);
  FD_SET(p[0], &rd);
  r = select(p[0] + 1, &rd, NULL, NULL, NULL);
  CHECK("select sees a hung-up pipe as readable", r == 1 && FD_ISSET(p[0], &rd));
  close(p[0]);
}

/* A poll that times out while another process keeps making system calls:
 * the child must have made progress meanwhile. */
static void test_progress(void) {
  int ticks[2], idle[2];
  pipe(ticks);
  pipe(idle);
  pid_t child = fork();
  if (child == 0) {
    close(ticks[0]);
    for (;;) {
      for (int i = 0; i < 100; i++) getppid();
      if (write(ticks[1], "t", 1) != 1) _exit(0);
    }
  }
  close(ticks[1]);
  struct pollfd pfd = {.fd = idle[0], .events = POLLIN};
  double t0 = now();
  int r = poll(&pfd, 1, 200);
  double dt = now() - t0;
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  fcntl(ticks[0], F_SETFL, O_NONBLOCK);
  char buf[65536];
  long n = 0, k;
  while ((k = read(ticks[0], buf, sizeof buf)) > 0) n += k;
  CHECK("poll of 200 ms times out with 0", r == 0);
  printf("info poll_200ms_elapsed %.3f\n", dt);
  printf("info progress_ticks %ld\n", n);
  CHECK("poll of 200 ms took about 200 ms", dt >= 0.19 && dt < 2.0);
  CHECK("another process made progress meanwhile", n >= 5);
  close(ticks[0]);
  close(idle[0]);
  close(idle[1]);
}

static void test_eventfd(void) {
  uint64_t v;
  int e = eventfd(3, 0);
  CHECK("eventfd", e >= 0);
  CHECK("eventfd read gives the counter", read(e, &v, 8) == 8 && v == 3);
  struct pollfd pfd = {.fd = e, .events = POLLIN | POLLOUT};
  CHECK("an eventfd at 0 is POLLOUT only", poll(&pfd, 1, 0) == 1 && pfd.revents == POLLOUT);
  v = 5;
  CHECK("eventfd write adds", write(e, &v, 8) == 8);
  v = 2;
  write(e, &v, 8);
  CHECK("an eventfd above 0 is POLLIN|POLLOUT", poll(&pfd, 1, 0) == 1 && pfd.revents == (POLLIN | POLLOUT));
  CHECK("the counter summed", read(e, &v, 8) == 8 && v == 7);
  errno = 0;
  CHECK("a 4-byte read is EINVAL", read(e, &v, 4) == -1 && errno == EINVAL);
  errno = 0;
  CHECK("a 4-byte write is EINVAL", write(e, &v, 4) == -1 && errno == EINVAL);
  v = UINT64_MAX;
  errno = 0;
  CHECK("writing 2^64-1 is EINVAL", write(e, &v, 8) == -1 && errno == EINVAL);
  char link[64] = {0};
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", e);
  readlink(path, link, sizeof link - 1);
  CHECK("an eventfd is anon_inode:[eventfd]", strcmp(link, "anon_inode:[eventfd]") == 0);

  /* A blocking read waits for another process's write. */
  pid_t child = fork();
  if (child == 0) {
    usleep(100000);
    uint64_t one = 42;
    write(e, &one, 8);
    _exit(0);
  }
  double t0 = now();
  CHECK("a blocking read waits for the write", read(e, &v, 8) == 8 && v == 42 && now() - t0 >= 0.08);
  waitpid(child, NULL, 0);
  close(e);

  /* Semaphore mode: one at a time; EFD_NONBLOCK gives EAGAIN at 0. */
  e = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
  CHECK("EFD_CLOEXEC sets FD_CLOEXEC", fcntl(e, F_GETFD) == FD_CLOEXEC);
  CHECK("EFD_NONBLOCK sets O_NONBLOCK", (fcntl(e, F_GETFL) & O_NONBLOCK) && (fcntl(e, F_GETFL) & O_ACCMODE) == O_RDWR);
  CHECK("semaphore read 1", read(e, &v, 8) == 8 && v == 1);
  CHECK("semaphore read 1 again", read(e, &v, 8) == 8 && v == 1);
  errno = 0;
  CHECK("semaphore at 0 is EAGAIN", read(e, &v, 8) == -1 && errno == EAGAIN);
  v = UINT64_MAX - 1;
  CHECK("writing up to 2^64-2 works", write(e, &v, 8) == 8);
  pfd.events = POLLOUT;
  CHECK("at 2^64-2 it is not writable", poll(&pfd, 1, 0) == 0);
  v = 1;
  errno = 0;
  CHECK("a write past 2^64-2 is EAGAIN", write(e, &v, 8) == -1 && errno == EAGAIN);
  close(e);
  errno = 0;
  CHECK("eventfd2 with a bad flag is EINVAL", syscall(SYS_eventfd2, 0, 0x100) == -1 && errno == EINVAL);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  test_poll();
  test_signals();
  test_select();
  test_progress();
  test_eventfd();
  printf("%d failures\n", failures);
  return failures != 0;
}
