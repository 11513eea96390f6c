/* tenure fault harness: time, randomness, commands, files. */
#include "fault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t nowUs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void sleepUs(int64_t us)
{
    if (us <= 0) {
        return;
    }
    struct timespec ts = { .tv_sec = us / 1000000,
                           .tv_nsec = (long)(us % 1000000) * 1000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void sleepMs(int ms)
{
    sleepUs((int64_t)ms * 1000);
}

void rngSeed(struct rng *r, uint64_t seed)
{
    r->s = seed ^ 0x6a09e667f3bcc909ULL;
}

uint64_t rngNext(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int64_t rngRange(struct rng *r, int64_t lo, int64_t hi)
{
    if (hi <= lo) {
        return lo;
    }
    return lo + (int64_t)(rngNext(r) % (uint64_t)(hi - lo + 1));
}

bool rngPct(struct rng *r, int pct)
{
    return (int)(rngNext(r) % 100) < pct;
}

static int64_t log_start_us;

void flogSetStart(int64_t start_us)
{
    log_start_us = start_us;
}

void flog(const char *fmt, ...)
{
    char line[2048];
    int64_t t = nowUs() - log_start_us;
    int n = snprintf(line, sizeof line, "[fault %4lld.%03llds] ",
                     (long long)(t / 1000000), (long long)(t / 1000 % 1000));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

int runCmd(const char *const *argv, const char *input, char *out,
           size_t out_len, int timeout_ms)
{
    int in_pipe[2] = { -1, -1 };
    int out_pipe[2];
    if (out != NULL && out_len > 0) {
        out[0] = '\0';
    }
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
        return -1;
    }
    if (input != NULL && pipe2(in_pipe, O_CLOEXEC) != 0) {
        close(out_pipe[0]);
        close(out_pipe[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(out_pipe[0]);
        close(out_pipe[1]);
        if (input != NULL) {
            close(in_pipe[0]);
            close(in_pipe[1]);
        }
        return -1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        if (input != NULL) {
            dup2(in_pipe[0], STDIN_FILENO);
        } else if (null >= 0) {
            dup2(null, STDIN_FILENO);
        }
        dup2(out_pipe[1], STDOUT_FILENO);
        dup2(out_pipe[1], STDERR_FILENO);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out_pipe[1]);
    if (input != NULL) {
        close(in_pipe[0]);
        /* Inputs are small (nft rule sets): one write fits the pipe. */
        if (writeAll(in_pipe[1], input, strlen(input)) != 0) {
            /* The child's exit status will tell. */
        }
        close(in_pipe[1]);
    }
    size_t used = 0;
    int64_t deadline = nowUs() + (int64_t)timeout_ms * 1000;
    bool timed_out = false;
    for (;;) {
        int64_t left = (deadline - nowUs()) / 1000;
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p = { .fd = out_pipe[0], .events = POLLIN };
        int rv = poll(&p, 1, (int)left);
        if (rv < 0 && errno == EINTR) {
            continue;
        }
        if (rv <= 0) {
            continue;
        }
        char buf[1024];
        ssize_t n = read(out_pipe[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        if (out != NULL && used + 1 < out_len) {
            size_t take = (size_t)n;
            if (take > out_len - used - 1) {
                take = out_len - used - 1;
            }
            memcpy(out + used, buf, take);
            used += take;
            out[used] = '\0';
        }
    }
    close(out_pipe[0]);
    if (timed_out) {
        kill(pid, SIGKILL);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    if (timed_out || !WIFEXITED(status)) {
        return -1;
    }
    return WEXITSTATUS(status);
}

int runCmdf(char *out, size_t out_len, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    const char *argv[64];
    int k = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " ", &save); tok != NULL && k < 63;
         tok = strtok_r(NULL, " ", &save)) {
        argv[k++] = tok;
    }
    argv[k] = NULL;
    if (k == 0) {
        return -1;
    }
    return runCmd(argv, NULL, out, out_len, 20000);
}

void strf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

bool haveProgram(const char *name)
{
    const char *path = getenv("PATH");
    char buf[4096];
    strf(buf, sizeof buf, "%s:/usr/sbin:/sbin",
             path != NULL ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *dir = strtok_r(buf, ":", &save); dir != NULL;
         dir = strtok_r(NULL, ":", &save)) {
        char full[FAULT_PATH];
        strf(full, sizeof full, "%s/%s", dir, name);
        if (access(full, X_OK) == 0) {
            return true;
        }
    }
    return false;
}

int mkdirP(const char *path, int mode)
{
    char buf[FAULT_PATH];
    strf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST) {
                return -1;
            }
            *p = '/';
        }
    }
    if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST) {
        return -1;
    }
    return 0;
}

void removeTree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 ||
                    strcmp(e->d_name, "..") == 0) {
                    continue;
                }
                char child[FAULT_PATH];
                int n = snprintf(child, sizeof child, "%s/%s", path,
                                 e->d_name);
                if (n > 0 && (size_t)n < sizeof child) {
                    removeTree(child);
                }
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int copyFile(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[65536];
    int rv = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rv = -1;
            break;
        }
        if (n == 0) {
            break;
        }
        if (writeAll(out, buf, (size_t)n) != 0) {
            rv = -1;
            break;
        }
    }
    if (fsync(out) != 0) {
        rv = -1;
    }
    close(in);
    close(out);
    return rv;
}

int copyTree(const char *from, const char *to)
{
    struct stat st;
    if (lstat(from, &st) != 0) {
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        return copyFile(from, to, st.st_mode & 0777);
    }
    if (mkdir(to, st.st_mode & 0777) != 0 && errno != EEXIST) {
        return -1;
    }
    DIR *d = opendir(from);
    if (d == NULL) {
        return -1;
    }
    int rv = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            strcmp(e->d_name, "lost+found") == 0) {
            continue;
        }
        char a[FAULT_PATH];
        char b[FAULT_PATH];
        strf(a, sizeof a, "%s/%s", from, e->d_name);
        strf(b, sizeof b, "%s/%s", to, e->d_name);
        if (copyTree(a, b) != 0) {
            rv = -1;
        }
    }
    closedir(d);
    return rv;
}

char *readTail(const char *path, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = calloc(1, max + 1);
    if (buf == NULL) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    if (fd < 0) {
        return buf;
    }
    struct stat st;
    off_t start = 0;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size > max) {
        start = st.st_size - (off_t)max;
    }
    ssize_t n = pread(fd, buf, max, start);
    close(fd);
    if (n > 0) {
        buf[n] = '\0';
    }
    return buf;
}

int writeAll(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
