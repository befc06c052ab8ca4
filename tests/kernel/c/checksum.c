/* Exact preemption: threads compute checksums with integer and SSE (double)
 * arithmetic and no system calls, so the kernel preempts them again and
 * again; a SIGPROF handler that clobbers the FP registers runs in the middle
 * of the computation. Every checksum must be the native run's, bit for bit:
 * a register (general, flags or XMM) changed at one of those interruptions
 * would change it. Prints "ok ..." lines with the checksums, and "all ok";
 * SIGALRM (default: death) ends it if it never finishes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

enum { NTHREADS = 3 };
static const long ITERS = 40000000;
static volatile long progress[NTHREADS];
static volatile int finished, started_at_first_finish;
static volatile sig_atomic_t profs;
static uint64_t sums[NTHREADS];
static double floats[NTHREADS];

static void on_prof(int sig) {
    (void)sig;
    volatile double x = 3.0;
    for (int i = 0; i < 64; i++)
        x = x * 1.25 - 0.5; /* the handler's own XMM values */
    profs++;
}

static void *compute(void *arg) {
    long id = (long)arg;
    uint64_t h = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1);
    double f = 1.0 + (double)id, g = 0.5;
    for (long i = 0; i < ITERS; i++) {
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9ull;
        h += (uint64_t)i;
        f = f * 0.999999 + g;
        g = g * 1.0000001 - 1e-9 * f;
        if ((i & 0xFFFF) == 0)
            progress[id] = i + 1;
    }
    sums[id] = h;
    floats[id] = f + g;
    if (__sync_fetch_and_add(&finished, 1) == 0) {
        int n = 0;
        for (int j = 0; j < NTHREADS; j++)
            n += progress[j] != 0;
        started_at_first_finish = n;
    }
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(60);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_prof;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval it = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_PROF, &it, NULL);
    pthread_t th[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, compute, (void *)i);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_PROF, &it, NULL);
    if (started_at_first_finish == NTHREADS)
        printf("ok all %d threads computed at once\n", NTHREADS);
    else
        printf("FAIL only %d threads had started when the first finished\n", started_at_first_finish);
    if (profs > 0)
        printf("ok SIGPROF handlers ran during the computation\n");
    else
        printf("FAIL no SIGPROF\n");
    for (int i = 0; i < NTHREADS; i++)
        printf("ok thread %d checksum %016llx %a\n", i, (unsigned long long)sums[i], floats[i]);
    printf("all ok\n");
    return 0;
}
