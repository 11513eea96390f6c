/* tenure fault harness: the fenced store.
 *
 * What a protected resource does with fencing tokens (DESIGN §4 rule 6):
 * per resource it remembers the highest token it has seen and rejects any
 * write that carries a lower one. A write with the same token as the
 * highest is accepted only from the actor that first wrote with it (one
 * token names one grant). One thread serves every worker over a unix
 * SOCK_SEQPACKET socket, so writes are totally ordered by the store; each
 * is logged with the store's receive time. */
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define STORE_MAX_CONN 256
#define STORE_BUCKETS 4096

struct store_res
{
    char name[STORE_RES_MAX];
    uint64_t highest;
    uint32_t highest_actor;
    struct store_res *next;
};

struct store
{
    int listen_fd;
    int stop_pipe[2];
    pthread_t thread;
    bool started;
    char path[108];
    int conns[STORE_MAX_CONN];
    int n_conns;
    struct store_res *buckets[STORE_BUCKETS];
    struct store_entry *log;
    size_t log_len;
    size_t log_cap;
};

static uint64_t storeHash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

static struct store_res *storeFind(struct store *s, const char *name)
{
    uint64_t h = storeHash(name) % STORE_BUCKETS;
    for (struct store_res *r = s->buckets[h]; r != NULL; r = r->next) {
        if (strcmp(r->name, name) == 0) {
            return r;
        }
    }
    struct store_res *r = calloc(1, sizeof *r);
    if (r == NULL) {
        abort(); /* test harness: out of memory is fatal */
    }
    strf(r->name, sizeof r->name, "%s", name);
    r->next = s->buckets[h];
    s->buckets[h] = r;
    return r;
}

static void storeHandle(struct store *s, int fd)
{
    struct store_req q;
    ssize_t n = recv(fd, &q, sizeof q, 0);
    if (n != (ssize_t)sizeof q) {
        /* EOF or junk: drop the connection. */
        for (int i = 0; i < s->n_conns; i++) {
            if (s->conns[i] == fd) {
                s->conns[i] = s->conns[--s->n_conns];
                break;
            }
        }
        close(fd);
        return;
    }
    q.resource[STORE_RES_MAX - 1] = '\0';
    int64_t t = nowUs();
    struct store_res *r = storeFind(s, q.resource);
    struct store_rep rep = { .highest = r->highest };
    if (q.token > r->highest) {
        rep.accepted = 1;
        r->highest = q.token;
        r->highest_actor = q.actor;
    } else if (q.token == r->highest && q.actor == r->highest_actor) {
        rep.accepted = 1;
    } else {
        rep.accepted = 0;
    }
    if (s->log_len == s->log_cap) {
        s->log_cap = s->log_cap ? s->log_cap * 2 : 4096;
        s->log = realloc(s->log, s->log_cap * sizeof *s->log);
        if (s->log == NULL) {
            abort();
        }
    }
    struct store_entry *e = &s->log[s->log_len++];
    memset(e, 0, sizeof *e);
    e->t_recv = t;
    memcpy(e->resource, q.resource, STORE_RES_MAX);
    e->token = q.token;
    e->highest_before = rep.highest;
    e->actor = q.actor;
    e->accepted = rep.accepted != 0;
    send(fd, &rep, sizeof rep, MSG_NOSIGNAL);
}

static void *storeThread(void *arg)
{
    struct store *s = arg;
    for (;;) {
        struct pollfd p[STORE_MAX_CONN + 2];
        int k = 0;
        p[k++] = (struct pollfd){ .fd = s->stop_pipe[0], .events = POLLIN };
        p[k++] = (struct pollfd){ .fd = s->listen_fd, .events = POLLIN };
        for (int i = 0; i < s->n_conns; i++) {
            p[k++] = (struct pollfd){ .fd = s->conns[i], .events = POLLIN };
        }
        int rv = poll(p, (nfds_t)k, 1000);
        if (rv < 0 && errno != EINTR) {
            break;
        }
        if (rv <= 0) {
            continue;
        }
        if (p[0].revents != 0) {
            break;
        }
        if (p[1].revents & POLLIN) {
            int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                if (s->n_conns < STORE_MAX_CONN) {
                    s->conns[s->n_conns++] = fd;
                } else {
                    close(fd);
                }
            }
        }
        for (int i = 2; i < k; i++) {
            if (p[i].revents != 0) {
                storeHandle(s, p[i].fd);
            }
        }
    }
    return NULL;
}

int storeStart(struct store **out, const char *socket_path)
{
    struct store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -1;
    }
    s->listen_fd = -1;
    s->stop_pipe[0] = s->stop_pipe[1] = -1;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(socket_path) >= sizeof sun.sun_path) {
        free(s);
        return -1;
    }
    strf(sun.sun_path, sizeof sun.sun_path, "%s", socket_path);
    strf(s->path, sizeof s->path, "%s", socket_path);
    unlink(socket_path);
    s->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0 ||
        bind(s->listen_fd, (struct sockaddr *)&sun, sizeof sun) != 0 ||
        listen(s->listen_fd, 128) != 0 || pipe2(s->stop_pipe, O_CLOEXEC)) {
        storeFree(s);
        return -1;
    }
    if (pthread_create(&s->thread, NULL, storeThread, s) != 0) {
        storeFree(s);
        return -1;
    }
    s->started = true;
    *out = s;
    return 0;
}

void storeStop(struct store *s)
{
    if (s == NULL || !s->started) {
        return;
    }
    if (writeAll(s->stop_pipe[1], "x", 1) != 0) {
        /* The thread also wakes every second; it would not notice, though:
         * close the pipe so that poll reports POLLHUP. */
        close(s->stop_pipe[1]);
        s->stop_pipe[1] = -1;
    }
    pthread_join(s->thread, NULL);
    s->started = false;
}

const struct store_entry *storeLog(struct store *s, size_t *n)
{
    *n = s->log_len;
    return s->log;
}

void storeFree(struct store *s)
{
    if (s == NULL) {
        return;
    }
    storeStop(s);
    for (int i = 0; i < s->n_conns; i++) {
        close(s->conns[i]);
    }
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        unlink(s->path);
    }
    for (int i = 0; i < 2; i++) {
        if (s->stop_pipe[i] >= 0) {
            close(s->stop_pipe[i]);
        }
    }
    for (int b = 0; b < STORE_BUCKETS; b++) {
        struct store_res *r = s->buckets[b];
        while (r != NULL) {
            struct store_res *next = r->next;
            free(r);
            r = next;
        }
    }
    free(s->log);
    free(s);
}

int storeConnect(const char *socket_path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    strf(sun.sun_path, sizeof sun.sun_path, "%s", socket_path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int storeWrite(int fd, const char *resource, uint64_t token, uint32_t actor,
               bool *accepted)
{
    struct store_req q;
    memset(&q, 0, sizeof q);
    strf(q.resource, sizeof q.resource, "%s", resource);
    q.token = token;
    q.actor = actor;
    if (send(fd, &q, sizeof q, MSG_NOSIGNAL) != (ssize_t)sizeof q) {
        return -1;
    }
    struct store_rep rep;
    for (;;) {
        ssize_t n = recv(fd, &rep, sizeof rep, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n != (ssize_t)sizeof rep) {
            return -1;
        }
        break;
    }
    *accepted = rep.accepted != 0;
    return 0;
}
