/* The floor for bench/apply.sh: a plain C program that does what `tenet apply` does for
 * N files in 10 directories, with no engine, no sandbox and no Wasm.
 *   floor write DIR N  create/overwrite: for each file write a temporary beside it,
 *                      set its mode, rename it over the target (atomic, like Tenet)
 *   floor write-sync DIR N  the same with an fsync per file before the rename (as
 *                      Tenet's file provider does)
 *   floor check DIR N  the converged check: stat + read + compare each file
 * Build: cc -O2 -o floor bench/floor.c */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: floor write|check DIR N\n"); return 2; }
    const char *dir = argv[2];
    int n = atoi(argv[3]);
    int sync_mode = strcmp(argv[1], "write-sync") == 0;
    int write_mode = sync_mode || strcmp(argv[1], "write") == 0;
    char path[4096], tmp[4096], want[256], have[256];
    int changed = 0;
    for (int d = 0; d < 10; d++) {
        snprintf(path, sizeof path, "%s/d%d", dir, d);
        if (write_mode) mkdir(path, 0755);
        for (int f = 0; f < n / 10; f++) {
            snprintf(path, sizeof path, "%s/d%d/f%d.txt", dir, d, f);
            int len = snprintf(want, sizeof want, "file %d/%d v1\n", d, f);
            if (write_mode) {
                snprintf(tmp, sizeof tmp, "%s/d%d/.f%d.txt.tmp", dir, d, f);
                int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
                if (fd < 0) { perror(tmp); return 1; }
                fchmod(fd, 0644);
                if (write(fd, want, len) != len) { perror("write"); return 1; }
                if (sync_mode && fsync(fd) != 0) { perror("fsync"); return 1; }
                close(fd);
                if (rename(tmp, path) != 0) { perror("rename"); return 1; }
            } else {
                struct stat st;
                if (lstat(path, &st) != 0 || (st.st_mode & 07777) != 0644) { changed++; continue; }
                int fd = open(path, O_RDONLY);
                ssize_t got = fd < 0 ? -1 : read(fd, have, sizeof have);
                if (fd >= 0) close(fd);
                if (got != len || memcmp(have, want, len) != 0) changed++;
            }
        }
    }
    if (!write_mode) printf("%d files differ\n", changed);
    return 0;
}
