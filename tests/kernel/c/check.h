/* What the static test programs share: CHECK(name, cond) prints "ok NAME"
 * or "FAIL NAME (errno N)" and counts failures (exit with failures != 0);
 * now() is CLOCK_MONOTONIC in seconds. */
#ifndef PYRUNSC_CHECK_H
#define PYRUNSC_CHECK_H
#include <errno.h>
#include <stdio.h>
#include <time.h>

static int failures;
#define CHECK(name, cond)                                                  \
  do {                                                                     \
    if (cond) printf("ok %s\n", name);                                     \
    else { failures++; printf("FAIL %s (errno %d)\n", name, errno); }      \
  } while (0)

static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
#endif
