/* Replays inputs through a fuzz harness without libFuzzer: the harness of
 * each fuzz_replay_* test of the default suite (any compiler, any
 * sanitizer).
 *
 *   fuzz_replay_<target> PATH...
 *
 * Each PATH is a file or a directory (its regular files, in name order;
 * not recursive). A missing directory is skipped (regressions/<target>/
 * may not exist yet). Prints one line per input only with -v; closes with
 * "N passed, 0 failed" (a failing input crashes the process, which is the
 * point: the sanitizer or FUZZ_CHECK report names it, and the "replaying"
 * line printed before each input says which file it was). */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Harnesses without an initializer get this one (weak: a harness's own
 * definition wins). */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static bool verbose;
static unsigned long n_inputs;

static int readFile(const char *path, uint8_t **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0;
    size_t cap = 0;

    if (f == NULL) {
        return -1;
    }
    for (;;) {
        size_t n;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, ncap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return -1;
            }
            buf = nb;
            cap = ncap;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    *out = buf;
    *out_len = len;
    return 0;
}

static int runFile(const char *path)
{
    uint8_t *buf;
    size_t len;

    if (readFile(path, &buf, &len) != 0) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* Printed before the run so that a crash is attributed to its input. */
    fprintf(stderr, "replaying %s (%zu bytes)\n", path, len);
    /* libFuzzer hands the harness an exact-size heap copy: do the same so
     * that ASan catches reads past the end. */
    {
        uint8_t *exact = malloc(len > 0 ? len : 1);
        if (exact == NULL) {
            free(buf);
            return -1;
        }
        memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    n_inputs++;
    if (verbose) {
        fprintf(stderr, "ok %s\n", path);
    }
    return 0;
}

static int cmpNames(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int runDir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;
    size_t cap = 0;
    int rv = 0;

    if (d == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        fprintf(stderr, "replay: cannot open %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue; /* ., .., .gitkeep and other hidden files */
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (nn == NULL) {
                rv = -1;
                break;
            }
            names = nn;
            cap = ncap;
        }
        names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        if (names[n] == NULL) {
            rv = -1;
            break;
        }
        sprintf(names[n], "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n > 0) {
        qsort(names, n, sizeof *names, cmpNames);
    }
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (rv == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode) &&
            runFile(names[i]) != 0) {
            rv = -1;
        }
        free(names[i]);
    }
    free(names);
    return rv;
}

int main(int argc, char **argv)
{
    int failed = 0;
    int i = 1;

    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        verbose = true;
        i++;
    }
    LLVMFuzzerInitialize(&argc, &argv);
    for (; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            if (errno == ENOENT) {
                continue;
            }
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            failed = 1;
        } else if (S_ISDIR(st.st_mode)) {
            failed |= runDir(argv[i]) != 0;
        } else {
            failed |= runFile(argv[i]) != 0;
        }
    }
    if (n_inputs == 0) {
        fprintf(stderr, "replay: no input found\n");
        failed = 1;
    }
    printf("%lu passed, %d failed\n", n_inputs, failed);
    return failed ? 1 : 0;
}
