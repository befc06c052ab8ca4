/* Threads across a checkpoint: three threads hand a counter around a ring
 * (a mutex and a condition variable, one increment per turn), and one more
 * thread computes with doubles and a long double in a loop without system
 * calls, under a non-default rounding mode (round toward zero).
 *
 * The ring stops at HALF ("half" is printed) until the main thread has
 * read its stdin to the end. Then the FP thread starts ("fp started"), so
 * a checkpoint taken after that line finds the ring threads waiting on the
 * condition variable, the main thread in a read, and the FP thread
 * computing. A restore whose stdin is /dev/null ends the read: the FP
 * thread is stopped (it does not compete with the ring for the sandbox's
 * run loop) and the ring goes on to TOTAL. The FP results, kept in xmm and
 * x87 registers within each chunk of the loop, are compared bit for bit
 * with the same computation redone from scratch for the same number of
 * iterations: a register, MXCSR or the x87 control word lost or changed
 * across the checkpoint would make them differ. */
#include <fenv.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NRING 3
#define HALF 200
#define TOTAL 600
#define CHUNK 2000000L

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn, count, go;
static int turns[NRING];
static volatile int stop, fp_started;

struct fp { double s, x, y; long double l; long n; };

/* n more iterations of the series in *st: the values stay in registers
 * (xmm for the doubles, the x87 stack for the long double) until the end. */
static __attribute__((noinline)) void series(struct fp *st, long n) {
    double s = st->s, x = st->x, y = st->y;
    long double l = st->l;
    for (long i = 0; i < n; i++) {
        s += x;
        x *= 1.0000001;
        y = y * 0.999 + s * 1e-9;
        l += (long double)x / 3;
    }
    st->s = s, st->x = x, st->y = y, st->l = l;
    st->n += n;
}

static struct fp fp_result;

static void *fp_thread(void *arg) {
    (void)arg;
    struct fp st = {0, 1.0, 0.5, 0, 0};
    fesetround(FE_TOWARDZERO);
    fp_started = 1;
    while (!stop)
        series(&st, CHUNK);
    fp_result = st;
    return NULL;
}

static void *ring(void *arg) {
    int me = (int)(intptr_t)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (count < TOTAL && (turn != me || (count == HALF && !go)))
            pthread_cond_wait(&cv, &mu);
        if (count >= TOTAL)
            break;
        count++;
        turns[me]++;
        turn = (me + 1) % NRING;
        if (count == HALF) {
            printf("half %d\n", count);
            fflush(stdout);
        }
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(void) {
    pthread_t fp, rt[NRING];
    for (int i = 0; i < NRING; i++)
        pthread_create(&rt[i], NULL, ring, (void *)(intptr_t)i);
    pthread_mutex_lock(&mu);
    while (count < HALF)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    pthread_create(&fp, NULL, fp_thread, NULL);
    while (!fp_started)
        usleep(1000);
    printf("fp started\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    stop = 1;
    pthread_join(fp, NULL);
    pthread_mutex_lock(&mu);
    go = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < NRING; i++)
        pthread_join(rt[i], NULL);
    printf("count %d turns %d %d %d\n", count, turns[0], turns[1], turns[2]);

    struct fp again = {0, 1.0, 0.5, 0, 0};
    fesetround(FE_TOWARDZERO);
    for (long left = fp_result.n; left > 0; left -= CHUNK)
        series(&again, left < CHUNK ? left : CHUNK);
    int same = memcmp(&again.s, &fp_result.s, sizeof(double)) == 0 && memcmp(&again.x, &fp_result.x, sizeof(double)) == 0
               && memcmp(&again.y, &fp_result.y, sizeof(double)) == 0 && memcmp(&again.l, &fp_result.l, 10) == 0;
    if (same && fp_result.n >= CHUNK)
        printf("fp ok\n");
    else
        printf("FAIL fp: %ld iterations: s %a x %a y %a l %La, again s %a x %a y %a l %La\n", fp_result.n, fp_result.s,
               fp_result.x, fp_result.y, fp_result.l, again.s, again.x, again.y, again.l);
    return 0;
}
