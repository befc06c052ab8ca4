/* Preemption: threads that compute without system calls must not keep the
 * others from running, and ITIMER_VIRTUAL counts the time they compute.
 * Prints "ok ..." lines and "all ok"; SIGALRM (default: death) ends it if a
 * step never finishes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile int stop;
static volatile long spins[2];
static volatile sig_atomic_t ticks;

static void *spin(void *arg) {
    long i = (long)arg;
    while (!stop)
        spins[i]++;
    return NULL;
}

static void on_vtalrm(int sig) { (void)sig; ticks++; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(20);
    pthread_t th[2];
    for (long i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, spin, (void *)i);
    usleep(100000);
    printf("ok main runs while two threads compute\n");
    while (!spins[0] || !spins[1])
        usleep(10000);
    printf("ok both computing threads ran\n");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_vtalrm;
    sigaction(SIGVTALRM, &sa, NULL);
    struct itimerval it = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_VIRTUAL, &it, NULL);
    volatile long x = 0;
    while (ticks < 3)
        x++;
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_VIRTUAL, &it, NULL);
    printf("ok ITIMER_VIRTUAL fires during a busy loop\n");
    stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    printf("all ok\n");
    return 0;
}
