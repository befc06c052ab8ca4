/* A 200 MiB heap filled with a pseudo-random pattern, then a checksum over
 * it computed in passes (each pass folds every word into the running sum
 * several times: slow on purpose), one progress line per pass.
 *
 *   bigheap N   exactly N passes (the native reference run);
 *   bigheap     passes until stdin is readable (checked with poll after
 *               each pass), so a checkpoint lands mid-computation and the
 *               restored run, given a readable stdin, finishes its pass.
 *
 * Besides the heap, 100 MiB are calloc'd and never touched (no page of
 * them is ever committed) and 32 MiB are malloc'd and each page written
 * with a zero (committed, but all zeros): neither belongs in pages.img. */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define HEAP_BYTES (200ul << 20)
#define UNTOUCHED_BYTES (100ul << 20)
#define ZEROED_BYTES (32ul << 20)
#define ROUNDS 8

static uint64_t next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static uint64_t pass(const uint64_t *heap, size_t words, uint64_t h, int p) {
    for (size_t i = 0; i < words; i++) {
        uint64_t w = heap[i] + (uint64_t)p;
        for (int r = 0; r < ROUNDS; r++) {
            h = (h ^ w) * 0x100000001b3ull;
            h ^= h >> 29;
            w = (w << 7) | (w >> 57);
        }
    }
    return h;
}

static int stdin_ready(void) {
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
}

int main(int argc, char **argv) {
    long fixed = argc > 1 ? atol(argv[1]) : 0;
    size_t words = HEAP_BYTES / 8;
    uint64_t *heap = malloc(HEAP_BYTES);
    unsigned char *untouched = calloc(1, UNTOUCHED_BYTES);
    volatile unsigned char *zeroed = malloc(ZEROED_BYTES);
    if (!heap || !untouched || !zeroed) {
        printf("FAIL malloc\n");
        return 1;
    }
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < words; i++)
        heap[i] = next(&seed);
    for (size_t i = 0; i < ZEROED_BYTES; i += 4096)
        zeroed[i] = 0;
    printf("filled %lu MiB\n", HEAP_BYTES >> 20);
    fflush(stdout);
    uint64_t h = 0xcbf29ce484222325ull;
    int p;
    for (p = 1;; p++) {
        h = pass(heap, words, h, p);
        printf("pass %d %016llx\n", p, (unsigned long long)h);
        fflush(stdout);
        if (fixed ? p >= fixed : stdin_ready())
            break;
    }
    /* Read (not write) one byte of each: still zero, and the untouched
     * region's pages are read here only after the checkpoint. */
    printf("checksum %016llx after %d passes (%d %d)\n", (unsigned long long)h, p, untouched[UNTOUCHED_BYTES / 2],
           zeroed[ZEROED_BYTES / 2]);
    return 0;
}
