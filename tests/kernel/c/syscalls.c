/* Checks single system calls precisely: return values, errno, EFAULT on bad
 * pointers, mmap/mprotect/munmap semantics and brk growth. Prints one line per
 * check, "ok NAME" or "FAIL NAME: detail", and exits 0 only if all pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(name, cond, ...)                                             \
  do {                                                                     \
    if (cond) {                                                            \
      printf("ok %s\n", name);                                             \
    } else {                                                               \
      failures++;                                                          \
      printf("FAIL %s: ", name);                                           \
      printf(__VA_ARGS__);                                                 \
      printf(" (errno %d)\n", errno);                                      \
    }                                                                      \
  } while (0)

/* Raw syscall returning -errno, so libc wrappers cannot hide anything. */
static long raw(long nr, long a, long b, long c, long d, long e, long f) {
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}

int main(void) {
  char *bad = (char *)16; /* never mapped: below mmap_min_addr */

  /* Errors. */
  CHECK("unknown syscall is ENOSYS", raw(1000, 0, 0, 0, 0, 0, 0) == -ENOSYS, "got %ld", raw(1000, 0, 0, 0, 0, 0, 0));
  CHECK("close bad fd is EBADF", raw(SYS_close, 999, 0, 0, 0, 0, 0) == -EBADF, "");
  CHECK("open missing is ENOENT", raw(SYS_open, (long)"/nonexistent", O_RDONLY, 0, 0, 0, 0) == -ENOENT, "");
  CHECK("open bad pointer is EFAULT", raw(SYS_open, (long)bad, O_RDONLY, 0, 0, 0, 0) == -EFAULT, "");
  CHECK("write bad buffer is EFAULT", raw(SYS_write, 1, (long)bad, 10, 0, 0, 0) == -EFAULT, "");
  CHECK("read into bad buffer is EFAULT",
        raw(SYS_read, open("/bin/busybox", O_RDONLY), (long)bad, 10, 0, 0, 0) == -EFAULT, "");
  CHECK("uname bad pointer is EFAULT", raw(SYS_uname, (long)bad, 0, 0, 0, 0, 0) == -EFAULT, "");
  CHECK("clock_gettime bad clock is EINVAL",
        raw(SYS_clock_gettime, 12345, (long)&(struct timespec){0}, 0, 0, 0, 0) == -EINVAL, "");
  CHECK("mkdir existing is EEXIST", raw(SYS_mkdir, (long)"/tmp", 0755, 0, 0, 0, 0) == -EEXIST, "");
  CHECK("rmdir non-empty is ENOTEMPTY", (mkdir("/tmp/d", 0755), close(open("/tmp/d/f", O_CREAT | O_WRONLY, 0644)),
                                          raw(SYS_rmdir, (long)"/tmp/d", 0, 0, 0, 0, 0) == -ENOTEMPTY), "");
  CHECK("unlink a directory is EISDIR", raw(SYS_unlink, (long)"/tmp/d", 0, 0, 0, 0, 0) == -EISDIR, "");
  CHECK("lseek on a pipe is ESPIPE", ({ int p[2]; pipe(p); raw(SYS_lseek, p[0], 0, SEEK_SET, 0, 0, 0) == -ESPIPE; }), "");

  /* uname reports the sandbox, not the host. */
  struct utsname u;
  uname(&u);
  CHECK("uname sysname Linux", strcmp(u.sysname, "Linux") == 0, "%s", u.sysname);
  CHECK("uname release 4.4.0", strcmp(u.release, "4.4.0") == 0, "%s", u.release);

  /* mmap, mprotect, munmap. */
  long pg = sysconf(_SC_PAGESIZE);
  char *m = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK("mmap anonymous", m != MAP_FAILED && ((long)m % pg) == 0, "%p", m);
  CHECK("anonymous memory is zero", m[0] == 0 && m[4 * pg - 1] == 0, "");
  m[pg] = 42;
  CHECK("mprotect splits", mprotect(m + pg, pg, PROT_READ) == 0, "");
  CHECK("write to read-only page via syscall is EFAULT",
        raw(SYS_read, open("/bin/busybox", O_RDONLY), (long)(m + pg), 4, 0, 0, 0) == -EFAULT, "");
  CHECK("read-only page keeps data", m[pg] == 42, "");
  CHECK("munmap middle", munmap(m + 2 * pg, pg) == 0, "");
  CHECK("unmapped page is EFAULT for the kernel", raw(SYS_write, 1, (long)(m + 2 * pg), 1, 0, 0, 0) == -EFAULT, "");
  CHECK("mprotect over a hole is ENOMEM", mprotect(m, 4 * pg, PROT_READ) == -1 && errno == ENOMEM, "");
  CHECK("munmap unaligned is EINVAL", munmap(m + 1, pg) == -1 && errno == EINVAL, "");
  char *f = mmap((void *)0x10000000, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  CHECK("mmap MAP_FIXED", f == (char *)0x10000000, "%p", f);
  CHECK("MAP_FIXED_NOREPLACE over a mapping is EEXIST",
        mmap(f, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED && errno == EEXIST, "");
  f[0] = 7;
  char *r = mremap(f, pg, 8 * pg, MREMAP_MAYMOVE);
  CHECK("mremap grows in place", r == f, "%p", r);
  CHECK("mremap keeps data", r != MAP_FAILED && r[0] == 7 && r[8 * pg - 1] == 0, "");
  int fd = open("/bin/busybox", O_RDONLY);
  unsigned char *fm = mmap(NULL, pg, PROT_READ, MAP_PRIVATE, fd, 0);
  CHECK("mmap a file", fm != MAP_FAILED && memcmp(fm, "\x7f" "ELF", 4) == 0, "");

  /* brk grows and shrinks. */
  char *b0 = sbrk(0);
  CHECK("brk grows", sbrk(1 << 20) == b0 && (char *)sbrk(0) == b0 + (1 << 20), "");
  b0[(1 << 20) - 1] = 1;
  CHECK("brk shrinks", brk(b0) == 0 && sbrk(0) == b0, "");
  CHECK("brk below start fails", (long)raw(SYS_brk, 4096, 0, 0, 0, 0, 0) == (long)sbrk(0), "");

  /* Limits and identity. */
  struct rlimit rl;
  CHECK("getrlimit NOFILE", getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == 1024, "%lu", rl.rlim_cur);
  CHECK("getpid is 1", getpid() == 1, "%d", getpid());

  printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
