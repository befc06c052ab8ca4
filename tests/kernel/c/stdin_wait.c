/* Wait for stdin (the caller's pipe or terminal) while a child process keeps
 * making system calls: `stdin_wait MODE` with MODE read, poll, select or
 * epoll (or timeout: a poll of 300 ms). Prints "waiting" first, then what
 * it got on stdin, how long it waited ("info waited S")
 * and how many ticks the child made meanwhile ("info ticks N"). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const char *mode = argc > 1 ? argv[1] : "read";
  int ticks[2];
  pipe(ticks);
  pid_t child = fork();
  if (child == 0) {
    close(ticks[0]);
    close(0);
    for (;;) {
      for (int i = 0; i < 100; i++) getppid();
      if (write(ticks[1], "t", 1) != 1) _exit(0);
    }
  }
  close(ticks[1]);
  printf("waiting\n");
  double t0 = now();
  int ready = -1;
  if (strcmp(mode, "poll") == 0) {
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    ready = poll(&pfd, 1, 10000);
    printf("poll %d revents %s\n", ready, pfd.revents & POLLIN ? "POLLIN" : "-");
  } else if (strcmp(mode, "select") == 0) {
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(0, &rd);
    struct timeval tv = {10, 0};
    ready = select(1, &rd, NULL, NULL, &tv);
    printf("select %d readable %d\n", ready, FD_ISSET(0, &rd));
  } else if (strcmp(mode, "epoll") == 0) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 7}, out;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) != 0) printf("epoll_ctl errno %d\n", errno);
    ready = epoll_wait(ep, &out, 1, 10000);
    printf("epoll %d data %llu\n", ready, (unsigned long long)out.data.u64);
  } else if (strcmp(mode, "timeout") == 0) {
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    ready = poll(&pfd, 1, 300);
    printf("poll %d (timeout)\n", ready);
  }
  double waited = now() - t0;
  char buf[256];
  ssize_t n = ready == 0 ? 0 : read(0, buf, sizeof buf - 1);
  if (strcmp(mode, "read") == 0) waited = now() - t0;
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  fcntl(ticks[0], F_SETFL, O_NONBLOCK);
  char tbuf[65536];
  long total = 0, k;
  while ((k = read(ticks[0], tbuf, sizeof tbuf)) > 0) total += k;
  buf[n > 0 ? n : 0] = 0;
  printf("read %zd %s", n, buf);
  if (n <= 0 || buf[n - 1] != '\n') printf("\n");
  printf("info waited %.3f\n", waited);
  printf("info ticks %ld\n", total);
  return 0;
}
