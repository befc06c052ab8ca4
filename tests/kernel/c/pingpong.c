/* Pipe ping-pong between two processes: 10,000 round trips of one byte each
 * way. The parent sends a byte, the child answers with a function of it, and
 * both check every byte they get; then the child reports how many it saw and
 * both see end of file when the other closes.
 *
 * Prints a few "ok NAME" or "FAIL NAME: ..." lines and exits 0 only if all
 * pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 10000

static unsigned char ping(int i) { return (unsigned char)(i * 7 + 3); }
static unsigned char pong(unsigned char b) { return (unsigned char)(b ^ 0xA5) + 1; }

int main(void) {
  int down[2], up[2];
  if (pipe(down) || pipe(up)) {
    printf("FAIL pipe: %s\n", strerror(errno));
    return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(down[1]);
    close(up[0]);
    int bad = 0, n = 0;
    unsigned char b;
    ssize_t r;
    while ((r = read(down[0], &b, 1)) == 1) {
      if (b != ping(n)) bad++;
      n++;
      unsigned char a = pong(b);
      if (write(up[1], &a, 1) != 1) _exit(3);
    }
    /* The parent closed its end: read gives 0, not an error. Report the
     * count and the mismatches as the last 8 bytes. */
    int report[2] = {n, bad};
    if (r != 0 || write(up[1], report, sizeof report) != (ssize_t)sizeof report) _exit(4);
    _exit(bad ? 2 : 0);
  }
  close(down[0]);
  close(up[1]);
  int bad = 0, short_io = 0;
  for (int i = 0; i < ROUNDS; i++) {
    unsigned char b = ping(i), a;
    if (write(down[1], &b, 1) != 1 || read(up[0], &a, 1) != 1) {
      short_io++;
      break;
    }
    if (a != pong(b)) bad++;
  }
  int failures = 0;
  printf("%s %d round trips, every answer right (%d wrong, %d short)\n", bad || short_io ? "FAIL" : "ok", ROUNDS,
         bad, short_io);
  failures += bad || short_io;
  close(down[1]);
  int report[2] = {-1, -1};
  ssize_t r = read(up[0], report, sizeof report);
  int ok = r == (ssize_t)sizeof report && report[0] == ROUNDS && report[1] == 0;
  printf("%s the child saw %d bytes, %d wrong, then end of file\n", ok ? "ok" : "FAIL", report[0], report[1]);
  failures += !ok;
  unsigned char extra;
  r = read(up[0], &extra, 1);
  printf("%s end of file once the child has exited: read returns %zd\n", r == 0 ? "ok" : "FAIL", r);
  failures += r != 0;
  int st = -1;
  waitpid(pid, &st, 0);
  ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  printf("%s child exit status 0x%04x\n", ok ? "ok" : "FAIL", st);
  failures += !ok;
  printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
