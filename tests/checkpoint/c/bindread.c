/* A file of a bind mount read across a checkpoint: /data/file is opened
 * and its first FIRST bytes read and printed, /data/out.txt is opened for
 * appending and "before" written; then the program reads its stdin to the
 * end (it waits there while checkpointed). After the restore it prints the
 * open file's offset, reads the next SECOND bytes from it and prints them,
 * appends "after" through the same descriptor, and opens a file that was
 * made only after the checkpoint (/data/new.txt) and prints its contents.
 * Each printed chunk is on its own line, prefixed. Exits 1 on an error. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define FIRST 5000
#define SECOND 7000

static char buf[SECOND + 1];

static int fail(const char *what) {
    printf("FAIL %s\n", what);
    perror(what);
    return 1;
}

int main(void) {
    int fd = open("/data/file", O_RDONLY);
    if (fd < 0)
        return fail("open /data/file");
    int out = open("/data/out.txt", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (out < 0)
        return fail("open /data/out.txt");
    ssize_t n = read(fd, buf, FIRST);
    if (n != FIRST)
        return fail("first read");
    printf("first %.*s\n", (int)n, buf);
    if (write(out, "before\n", 7) != 7)
        return fail("write before");
    printf("waiting\n");
    fflush(stdout);
    char c[64];
    while (read(0, c, sizeof c) > 0)
        ;
    printf("offset %ld\n", (long)lseek(fd, 0, SEEK_CUR));
    n = read(fd, buf, SECOND);
    if (n != SECOND)
        return fail("second read");
    printf("second %.*s\n", (int)n, buf);
    if (write(out, "after\n", 6) != 6)
        return fail("write after");
    int nfd = open("/data/new.txt", O_RDONLY);
    if (nfd < 0)
        return fail("open /data/new.txt");
    n = read(nfd, buf, SECOND);
    if (n < 0)
        return fail("read new.txt");
    printf("new %.*s", (int)n, buf);
    close(out);
    close(fd);
    return 0;
}
