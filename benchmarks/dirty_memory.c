/* The program benchmarks/checkpoint_restore.py checkpoints: it mallocs N MiB,
 * fills them (non-zero pseudo-random bytes, or zeros with "zero": committed
 * but zero pages), prints "ready <sum>", then waits in a read of stdin. The
 * first thing it does once that read returns (after a restore: the restored
 * program's first instruction past the system call) is print "resumed"; then
 * it sums the memory again and prints "sum <sum>", which must be the sum
 * printed before the checkpoint.
 *
 * Usage: dirty_memory N [random|zero]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t sum(const uint64_t *p, size_t words) {
    uint64_t s = 0;
    for (size_t i = 0; i < words; i++)
        s = s * 31 + p[i];
    return s;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    size_t n = (size_t)atol(argv[1]) << 20, words = n / 8;
    int zero = argc > 2 && strcmp(argv[2], "zero") == 0;
    uint64_t *p = malloc(n), x = 0x9e3779b97f4a7c15ULL;
    if (p == NULL)
        return 1;
    for (size_t i = 0; i < words; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = zero ? 0 : x | 1; /* no page is all zeros */
    }
    printf("ready %016llx\n", (unsigned long long)sum(p, words));
    fflush(stdout);
    char c;
    ssize_t r = read(0, &c, 1);
    printf("resumed %zd\n", r);
    fflush(stdout);
    printf("sum %016llx\n", (unsigned long long)sum(p, words));
    return 0;
}
