/* Futexes, timers, job control and signal queueing, checked precisely:
 * raw futex(2) operations (private, shared across fork, timeouts, requeue,
 * bitsets), alarm/setitimer/timer_create, sigtimedwait and sigqueue, and
 * stop/continue as wait4 and waitid report them. Prints "ok ..." lines;
 * exits 1 at the first mismatch. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); \
    printf(" (errno %d %s)\n", errno, strerror(errno)); fflush(stdout); exit(1); } } while (0)

static long futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts, uint32_t *addr2, uint32_t val3) {
    return syscall(SYS_futex, addr, op, val, ts, addr2, val3);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint32_t word, word2;
static volatile int woke;
static void *waiter(void *arg) {
    uint32_t *w = arg;
    long r = futex(w, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    __atomic_add_fetch(&woke, r == 0 ? 1 : 100, __ATOMIC_SEQ_CST);
    return NULL;
}

static void test_futex_private(void) {
    CHECK(futex(&word, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0) == -1 && errno == EAGAIN, "wait on a changed word");
    struct timespec ts = {0, 100 * 1000 * 1000};
    double t0 = now();
    CHECK(futex(&word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0) == -1 && errno == ETIMEDOUT, "timed wait");
    double dt = now() - t0;
    CHECK(dt >= 0.099 && dt < 1.0, "timed wait took %.3f s", dt);
    CHECK(futex((uint32_t *)((char *)&word + 1), FUTEX_WAKE, 1, NULL, NULL, 0) == -1 && errno == EINVAL,
          "misaligned");
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, waiter, &word);
    usleep(100000);
    CHECK(futex(&word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) == 1, "wake one");
    usleep(50000);
    CHECK(woke == 1, "one woken, got %d", woke);
    /* Requeue the other two onto word2, then wake them there. */
    CHECK(futex(&word, FUTEX_CMP_REQUEUE_PRIVATE, 0, (void *)(long)10, &word2, 1) == -1 && errno == EAGAIN,
          "cmp_requeue with a wrong value");
    CHECK(futex(&word, FUTEX_CMP_REQUEUE_PRIVATE, 0, (void *)(long)10, &word2, 0) == 2, "requeue two");
    CHECK(futex(&word, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0) == 0, "none left on word");
    CHECK(futex(&word2, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0) == 2, "two on word2");
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    CHECK(woke == 3, "all woken, got %d", woke);
    printf("ok futex wait/wake/timeout/requeue (private)\n");
}

static void *bitset_waiter(void *arg) {
    long r = futex(&word, FUTEX_WAIT_BITSET_PRIVATE, 0, NULL, NULL, (uint32_t)(long)arg);
    __atomic_add_fetch(&woke, r == 0 ? 1 : 100, __ATOMIC_SEQ_CST);
    return NULL;
}

static void test_futex_bitset(void) {
    woke = 0;
    pthread_t a, b;
    pthread_create(&a, NULL, bitset_waiter, (void *)1L);
    pthread_create(&b, NULL, bitset_waiter, (void *)2L);
    usleep(100000);
    CHECK(futex(&word, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL, NULL, 2) == 1, "bitset 2 wakes one");
    CHECK(futex(&word, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL, NULL, 0) == -1 && errno == EINVAL, "bitset 0");
    CHECK(futex(&word, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL, NULL, 1) == 1, "bitset 1 wakes the other");
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    /* An absolute CLOCK_REALTIME deadline in the past times out at once. */
    struct timespec past;
    clock_gettime(CLOCK_REALTIME, &past);
    past.tv_sec -= 1;
    CHECK(futex(&word, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 0, &past, NULL, FUTEX_BITSET_MATCH_ANY) == -1
          && errno == ETIMEDOUT, "absolute deadline in the past");
    printf("ok futex bitsets and absolute deadlines\n");
}

static void test_futex_shared(void) {
    uint32_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared != MAP_FAILED, "mmap");
    pid_t pid = fork();
    if (pid == 0) {
        long r = futex(shared, FUTEX_WAIT, 0, NULL, NULL, 0);
        _exit(r == 0 && shared[0] == 5 ? 0 : 1);
    }
    int n = 0;
    for (int i = 0; i < 200 && n == 0; i++) {
        usleep(10000);
        shared[0] = 5;
        n = (int)futex(shared, FUTEX_WAKE, 1, NULL, NULL, 0);
        if (!n)
            shared[0] = 0;
    }
    CHECK(n == 1, "the child was woken through shared memory");
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    printf("ok a shared futex wakes another process\n");
}

static volatile sig_atomic_t alarms, vt;
static void on_alarm(int sig) { (void)sig; alarms++; }

static void test_alarm_and_itimer(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    CHECK(alarm(5) == 0, "no alarm before");
    unsigned left = alarm(0);
    CHECK(left == 5 || left == 4, "alarm left %u", left);
    struct itimerval it = {{0, 50000}, {0, 50000}}, old;
    double t0 = now();
    CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer");
    while (alarms < 4)
        pause();
    double dt = now() - t0;
    CHECK(dt >= 0.19 && dt < 2.0, "4 ticks of 50 ms took %.3f s", dt);
    CHECK(getitimer(ITIMER_REAL, &old) == 0 && old.it_interval.tv_usec == 50000, "getitimer");
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, &old);
    CHECK(old.it_interval.tv_usec == 50000 && old.it_value.tv_usec <= 50000, "old value");
    CHECK(setitimer(5, &it, NULL) == -1 && errno == EINVAL, "bad which");
    printf("ok alarm and ITIMER_REAL\n");
}

static void test_posix_timers(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGRTMIN;
    ev.sigev_value.sival_int = 4242;
    timer_t t;
    CHECK(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0, "timer_create");
    struct itimerspec its = {{0, 0}, {0, 80 * 1000 * 1000}};
    double t0 = now();
    CHECK(timer_settime(t, 0, &its, NULL) == 0, "timer_settime");
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    double dt = now() - t0;
    CHECK(sig == SIGRTMIN, "sigwaitinfo gave %d", sig);
    CHECK(si.si_code == SI_TIMER && si.si_value.sival_int == 4242, "si_code %d value %d", si.si_code,
          si.si_value.sival_int);
    CHECK(dt >= 0.079 && dt < 1.0, "one-shot took %.3f s", dt);
    struct itimerspec cur;
    CHECK(timer_gettime(t, &cur) == 0 && cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0, "disarmed");
    /* Periodic, with overruns while the signal stays blocked and pending. */
    its.it_interval.tv_nsec = its.it_value.tv_nsec = 20 * 1000 * 1000;
    timer_settime(t, 0, &its, NULL);
    usleep(150000);
    sig = sigwaitinfo(&set, &si);
    CHECK(sig == SIGRTMIN && si.si_overrun >= 3, "overrun %d", si.si_overrun);
    CHECK(timer_delete(t) == 0, "timer_delete");
    CHECK(timer_delete(t) == -1 && errno == EINVAL, "deleted twice");
    struct timespec ts = {0, 50 * 1000 * 1000};
    t0 = now();
    CHECK(sigtimedwait(&set, &si, &ts) == -1 && errno == EAGAIN, "sigtimedwait times out");
    CHECK(now() - t0 >= 0.049, "sigtimedwait waited");
    union sigval v = {.sival_int = 77};
    CHECK(sigqueue(getpid(), SIGRTMIN, v) == 0, "sigqueue");
    CHECK(sigwaitinfo(&set, &si) == SIGRTMIN && si.si_code == SI_QUEUE && si.si_value.sival_int == 77 &&
          si.si_pid == getpid(), "sigqueue info code %d value %d", si.si_code, si.si_value.sival_int);
    printf("ok timer_create/settime/gettime/delete, overruns, sigtimedwait, sigqueue\n");
}

static void test_job_control(void) {
    pid_t pid = fork();
    if (pid == 0) {
        raise(SIGSTOP);
        /* Wait to be killed: a child that exited once continued could be
         * reaped as exited before the parent's WCONTINUED wait saw it
         * continue (it did natively, under load). */
        for (;;)
            pause();
    }
    int st;
    CHECK(waitpid(pid, &st, WUNTRACED) == pid, "waitpid WUNTRACED");
    CHECK(WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP && st == 0x137f, "stopped status %#x", st);
    CHECK(waitpid(pid, &st, WNOHANG | WUNTRACED) == 0, "a stop is reported once");
    kill(pid, SIGCONT);
    CHECK(waitpid(pid, &st, WCONTINUED) == pid && WIFCONTINUED(st) && st == 0xffff, "continued %#x", st);
    kill(pid, SIGKILL);
    CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "killed %#x", st);

    /* SIGTSTP stops only outside an orphaned process group (POSIX): the
     * child gets a group of its own, whose parent is in another group of the
     * same session. */
    pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        for (;;)
            pause();
    }
    setpgid(pid, pid);
    kill(pid, SIGTSTP);
    siginfo_t si;
    CHECK(waitid(P_PID, pid, &si, WSTOPPED) == 0 && si.si_code == CLD_STOPPED && si.si_status == SIGTSTP,
          "waitid stopped: code %d status %d", si.si_code, si.si_status);
    kill(pid, SIGCONT);
    CHECK(waitid(P_PID, pid, &si, WCONTINUED) == 0 && si.si_code == CLD_CONTINUED && si.si_status == SIGCONT,
          "waitid continued: code %d status %d", si.si_code, si.si_status);
    kill(pid, SIGTERM);
    CHECK(waitid(P_PID, pid, &si, WEXITED) == 0 && si.si_code == CLD_KILLED && si.si_status == SIGTERM,
          "waitid killed: code %d", si.si_code);
    printf("ok stop and continue as wait4 and waitid report them\n");
}

static void test_groups(void) {
    pid_t pid = fork();
    if (pid == 0) {
        for (;;)
            pause();
    }
    CHECK(setpgid(pid, pid) == 0, "setpgid of a child");
    CHECK(getpgid(pid) == pid, "getpgid of a child");
    CHECK(getsid(pid) == getsid(0), "getsid of a child");
    CHECK(setpgid(pid, 424242) == -1 && errno == EPERM, "a group that does not exist");
    CHECK(kill(-pid, SIGTERM) == 0, "kill of a process group");
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "status %#x", st);
    CHECK(getpgid(999999) == -1 && errno == ESRCH, "getpgid of no process");
    printf("ok process groups: setpgid, getpgid, getsid, kill(-pgid)\n");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_futex_private();
    test_futex_bitset();
    test_futex_shared();
    test_alarm_and_itimer();
    test_posix_timers();
    test_job_control();
    test_groups();
    printf("all ok\n");
    return 0;
}
