/* memhog MIB [CHUNK_MIB=4] [DELAY_MS=0] [HOLD=1]
 *
 * Allocates MIB mebibytes in CHUNK_MIB pieces, touching every page (so they count as anon-rss
 * in the memory cgroup), sleeping DELAY_MS after each piece; then holds the memory until killed
 * (HOLD=1) or exits 0 (HOLD=0). The memory hog of the real node's workload image: run past a
 * container's memory limit, the kernel OOM-kills it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 64;
    long chunk = argc > 2 ? atol(argv[2]) : 4;
    long delay_ms = argc > 3 ? atol(argv[3]) : 0;
    int hold = argc > 4 ? atoi(argv[4]) : 1;
    long done = 0;
    if (chunk < 1) chunk = 1;
    printf("memhog pid=%d target=%ldMiB chunk=%ldMiB\n", (int)getpid(), mib, chunk);
    fflush(stdout);
    while (done < mib) {
        char *p = malloc((size_t)chunk << 20);
        if (p == NULL) {
            printf("malloc failed at %ldMiB\n", done);
            fflush(stdout);
            break;
        }
        memset(p, 0x5a, (size_t)chunk << 20);
        done += chunk;
        if (done % 64 == 0) {
            printf("allocated %ldMiB\n", done);
            fflush(stdout);
        }
        if (delay_ms > 0) {
            struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    printf("done %ldMiB, %s\n", done, hold ? "holding" : "exiting");
    fflush(stdout);
    while (hold) pause();
    return 0;
}
