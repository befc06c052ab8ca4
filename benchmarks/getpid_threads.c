/* Threads that make system calls in turn: `getpid_threads T N` runs T
 * threads (the main one and T-1 pthreads), each making N getpid calls, then
 * joins them and exits 0. Built with gcc -static -pthread by
 * thread_switch.py. Under pyrunsc tasks take turns one system call at a
 * time, so with T = 2 every system call switches between the two threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static long calls;

static void *loop(void *arg)
{
    (void)arg;
    for (long i = 0; i < calls; i++)
        syscall(SYS_getpid);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    calls = argc > 2 ? atol(argv[2]) : 100000;
    pthread_t th[64];
    if (threads < 1 || threads > 64)
        return 2;
    for (int i = 1; i < threads; i++)
        if (pthread_create(&th[i], NULL, loop, NULL) != 0)
            return 1;
    loop(NULL);
    for (int i = 1; i < threads; i++)
        pthread_join(th[i], NULL);
    return 0;
}
