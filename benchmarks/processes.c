/* Process benchmarks timed from inside, for benchmarks/processes.py: the same
 * static program runs natively and in a sandbox, so the sandbox's start-up is
 * never in its figures.
 *
 *   processes spawn N PROGRAM [ARG...]   N x (fork, execve PROGRAM, waitpid);
 *                                        every child must exit 0
 *       prints: iterations=N us_per_iteration=X
 *   processes pipe TOTAL CHUNK           a child reads and discards TOTAL bytes
 *                                        the parent writes in CHUNK-byte writes;
 *                                        the child checks the count and a sample
 *                                        of the bytes and exits 0 if all is right
 *       prints: bytes=TOTAL chunk=CHUNK seconds=S mib_per_s=X
 *   processes time PROGRAM [ARG...]      fork, execve PROGRAM, waitpid, once;
 *                                        the program's stdout is left as it is
 *       prints on stderr: status=S us=X
 *
 * Times are CLOCK_MONOTONIC. Exit status 1 on any failure, with a message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "processes: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* fork, execve argv[0], waitpid; the child's wait status. */
static int run(char **argv)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        execve(argv[0], argv, environ);
        fprintf(stderr, "processes: execve %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid");
    return status;
}

static int spawn(long n, char **argv)
{
    double t = now();
    for (long i = 0; i < n; i++) {
        int status = run(argv);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "processes: %s: wait status %#x at iteration %ld\n", argv[0], status, i);
            return 1;
        }
    }
    double dt = now() - t;
    printf("iterations=%ld us_per_iteration=%.3f\n", n, dt / n * 1e6);
    return 0;
}

/* Byte i of the stream is i % 251, so a lost or repeated chunk shows. */
static unsigned char expected(long long offset)
{
    return (unsigned char)(offset % 251);
}

static int reader(int fd, long long total, long chunk)
{
    char *buf = malloc(chunk);
    if (!buf)
        die("malloc");
    long long got = 0;
    for (;;) {
        ssize_t r = read(fd, buf, chunk);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (r == 0)
            break;
        if ((unsigned char)buf[0] != expected(got) || (unsigned char)buf[r - 1] != expected(got + r - 1)) {
            fprintf(stderr, "processes: wrong bytes at offset %lld\n", got);
            return 1;
        }
        got += r;
    }
    if (got != total) {
        fprintf(stderr, "processes: read %lld bytes, want %lld\n", got, total);
        return 1;
    }
    return 0;
}

static int pipe_throughput(long long total, long chunk)
{
    /* The writer's buffer holds every phase of the pattern: chunk + 251 bytes. */
    unsigned char *buf = malloc(chunk + 251);
    if (!buf)
        die("malloc");
    for (long i = 0; i < chunk + 251; i++)
        buf[i] = expected(i);
    int fds[2];
    if (pipe(fds) < 0)
        die("pipe");
    double t = now();
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(fds[1]);
        _exit(reader(fds[0], total, chunk));
    }
    close(fds[0]);
    long long sent = 0;
    while (sent < total) {
        long n = total - sent < chunk ? (long)(total - sent) : chunk;
        ssize_t w = write(fds[1], buf + sent % 251, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        sent += w;
    }
    close(fds[1]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid");
    double dt = now() - t;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "processes: reader wait status %#x\n", status);
        return 1;
    }
    printf("bytes=%lld chunk=%ld seconds=%.6f mib_per_s=%.1f\n", total, chunk, dt, total / dt / (1 << 20));
    return 0;
}

static int time_one(char **argv)
{
    fflush(stdout);
    double t = now();
    int status = run(argv);
    double dt = now() - t;
    fprintf(stderr, "status=%d us=%.1f\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
            dt * 1e6);
    return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "spawn") == 0)
        return spawn(atol(argv[2]), argv + 3);
    if (argc == 4 && strcmp(argv[1], "pipe") == 0)
        return pipe_throughput(atoll(argv[2]), atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "time") == 0)
        return time_one(argv + 2);
    fprintf(stderr, "usage: processes spawn N PROGRAM [ARG...] | pipe TOTAL CHUNK | time PROGRAM [ARG...]\n");
    return 2;
}
