/* A process with threads that sleep: `sleepers N` starts N threads that
 * sleep 30 s each, then waits for them (pthread_join). For ps and
 * /proc/PID/task to show a multi-threaded process. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void *nap(void *arg) {
    (void)arg;
    sleep(30);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2;
    pthread_t threads[16];
    if (n < 0 || n > 16)
        return 2;
    for (int i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, nap, NULL) != 0)
            return 1;
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    return 0;
}
