/* Threads in the sandbox: pthread create/join with a mutex and a condition
 * variable across 4 threads, TIDs, thread-directed signals, robust mutexes
 * whose owner dies, exit_group from a thread, and execve from a thread.
 * Prints "ok ..." lines; exits 1 at the first mismatch. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); \
    printf("\n"); fflush(stdout); exit(1); } } while (0)

enum { NTHREADS = 4, ROUNDS = 2000 };
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_cv = PTHREAD_COND_INITIALIZER;
static int turn, counter;
static pid_t tids[NTHREADS];

/* Threads take turns in order: each waits on the condition variable for its
 * turn, so every round is a handoff between threads through futexes. */
static void *worker(void *arg) {
    int me = (int)(long)arg;
    tids[me] = (pid_t)syscall(SYS_gettid);
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        while (turn % NTHREADS != me)
            pthread_cond_wait(&turn_cv, &lock);
        counter++;
        turn++;
        pthread_cond_broadcast(&turn_cv);
        pthread_mutex_unlock(&lock);
    }
    return (void *)(long)(me + 100);
}

static void test_turns(void) {
    pthread_t th[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, (void *)i) == 0, "pthread_create");
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        CHECK(pthread_join(th[i], &ret) == 0, "pthread_join");
        CHECK((long)ret == i + 100, "thread %d returned %ld", i, (long)ret);
    }
    CHECK(counter == NTHREADS * ROUNDS, "counter %d", counter);
    for (int i = 0; i < NTHREADS; i++) {
        CHECK(tids[i] != getpid() && tids[i] > 0, "tid %d", tids[i]);
        for (int j = 0; j < i; j++)
            CHECK(tids[i] != tids[j], "tids %d and %d are equal", i, j);
    }
    printf("ok %d threads took %d turns in order through a mutex and a condition variable\n", NTHREADS, counter);
}

static volatile sig_atomic_t got_tid;
static void on_usr1(int sig) { (void)sig; got_tid = (sig_atomic_t)syscall(SYS_gettid); }
static volatile int spin_stop;
static volatile pid_t spinner_tid;
static void *spinner(void *arg) {
    (void)arg;
    spinner_tid = (pid_t)syscall(SYS_gettid);
    while (!spin_stop && !got_tid)
        sched_yield();
    return NULL;
}

static void test_tgkill(void) {
    signal(SIGUSR1, on_usr1);
    pthread_t th;
    pthread_create(&th, NULL, spinner, NULL);
    while (!spinner_tid)
        sched_yield();
    CHECK(syscall(SYS_tgkill, getpid(), spinner_tid, SIGUSR1) == 0, "tgkill: %s", strerror(errno));
    pthread_join(th, NULL);
    CHECK(got_tid == spinner_tid, "the handler ran in %d, not the target %d", (int)got_tid, spinner_tid);
    CHECK(syscall(SYS_tgkill, getpid(), 999999, SIGUSR1) == -1 && errno == ESRCH, "tgkill of no thread");
    printf("ok tgkill runs the handler in the target thread\n");
}

static pthread_mutex_t robust;
static void *die_holding(void *arg) {
    (void)arg;
    pthread_mutex_lock(&robust);
    syscall(SYS_exit, 0); /* the thread ends without unlocking */
    return NULL;
}

static void test_robust(void) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&robust, &a);
    pthread_t th;
    pthread_create(&th, NULL, die_holding, NULL);
    pthread_join(th, NULL);
    int r = pthread_mutex_lock(&robust);
    CHECK(r == EOWNERDEAD, "lock after the owner died: %d (%s)", r, strerror(r));
    pthread_mutex_consistent(&robust);
    pthread_mutex_unlock(&robust);
    printf("ok a robust mutex whose owner died gives EOWNERDEAD\n");
}

static void *exit_all(void *arg) {
    (void)arg;
    exit(7); /* exit_group: ends the main thread, which is blocked below */
    return NULL;
}

static void test_exit_group_from_thread(void) {
    pid_t pid = fork();
    if (pid == 0) {
        pthread_t th;
        pthread_create(&th, NULL, exit_all, NULL);
        for (;;)
            pause();
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7, "status %#x", st);
    printf("ok exit from a thread ends the process with its status\n");
}

static void *exec_it(void *arg) {
    (void)arg;
    execl("/bin/sh", "sh", "-c", "echo exec from a thread: pid $$", (char *)NULL);
    return NULL;
}

static void test_exec_from_thread(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        printf("child pid %d\n", getpid());
        fflush(stdout);
        pthread_t th;
        pthread_create(&th, NULL, exec_it, NULL);
        for (;;)
            pause();
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
    printf("ok execve from a thread keeps the process's PID\n");
}

static void *leader_gone(void *arg) {
    (void)arg;
    usleep(50000);
    printf("ok the process lives on after its main thread exits\n");
    fflush(stdout);
    return (void *)3;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && !strcmp(argv[1], "leader-exit")) {
        pthread_t th;
        pthread_create(&th, NULL, leader_gone, NULL);
        pthread_exit(NULL); /* status 0 once the last thread is done */
    }
    test_turns();
    test_tgkill();
    test_robust();
    test_exit_group_from_thread();
    test_exec_from_thread();
    printf("all ok\n");
    return 0;
}
