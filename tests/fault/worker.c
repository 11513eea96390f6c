/* tenure fault harness: a worker process.
 *
 *   tenure-fault worker --kind lib|http --id W --actors N --seed S
 *       --rpc EP,... --http IP:PORT,... --store SOCKET --history FILE
 *       [--hot N] [--cold N] [--ttl MS]
 *
 * Runs N actor threads. Each repeats: pick a resource (a few hot ones, many
 * cold ones) → acquire → fenced write(s) to the store with the token, each
 * only while the lease is safe → release. Library actors also hold one
 * "anchor" lock for the whole run (their session is kept alive in the
 * background), which the final-state check looks for.
 *
 * Every operation is appended to the history file as one line (a single
 * write(2) with O_APPEND, so lines never interleave):
 *
 *   S actor t session                       session opened
 *   A actor res t_inv t_cmp rc token deadline kind   acquire (deadline: the
 *                                           safe deadline at the grant)
 *   W actor res token t_inv t_cmp accepted deadline   fenced write
 *   R actor res token t_inv t_cmp rc        release (t_inv of the first try)
 *   J actor t                               on_jeopardy
 *   O actor t                               on_safe
 *   L actor t observed_deadline rc          on_lost (observed_deadline: the
 *                                           latest safe deadline the actor saw)
 *   N actor res token                       anchor held
 *   Q actor t res token rc                  quiesced; anchor renewed with rc
 *   X actor t what                          a note (abandoned session, ...)
 *
 * Worker 2 (a library worker) is a patient client: connect_timeout_ms 6 s.
 *
 * SIGUSR1: quiesce (finish the current operation, renew the anchor, write
 * Q, keep the session alive). SIGTERM: close the sessions and exit. */
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tenure.h"

#define WORKER_MAX_ACTORS 16
#define WORKER_MAX_HTTP 8
#define RESOLVE_US (15 * 1000000LL)
#define HTTP_RETRY_US (6 * 1000000LL)

static volatile sig_atomic_t quiesce_flag;
static volatile sig_atomic_t exit_flag;

struct worker
{
    const char *kind;
    int id;
    int n_actors;
    uint64_t seed;
    const char *rpc;
    const char *store_path;
    int hist_fd;
    int hot;
    int cold;
    uint32_t ttl_ms;
    int n_http;
    char http_ip[WORKER_MAX_HTTP][32];
    int http_port[WORKER_MAX_HTTP];
    tn_client *client;
};

struct actor
{
    struct worker *w;
    uint32_t id;
    struct rng rng;
    int store_fd;
    pthread_t thread;
    tn_session *session;
    atomic_bool lost;
    atomic_llong observed_deadline;
    tn_lock *anchor;
    char anchor_res[64];
    uint64_t op;
};

static void hist(struct worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void hist(struct worker *w, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n > sizeof line - 2) {
        n = (int)sizeof line - 2;
    }
    line[n++] = '\n';
    if (writeAll(w->hist_fd, line, (size_t)n) != 0) {
        _exit(3);
    }
}

static void onSignal(int sig)
{
    if (sig == SIGUSR1) {
        quiesce_flag = 1;
    } else {
        exit_flag = 1;
    }
}

static void pickResource(struct actor *a, char *res, size_t len)
{
    struct worker *w = a->w;
    if (w->cold == 0 || rngPct(&a->rng, 55)) {
        strf(res, len, "hot/%d", (int)rngRange(&a->rng, 0, w->hot - 1));
    } else {
        strf(res, len, "cold/%d", (int)rngRange(&a->rng, 0, w->cold - 1));
    }
}

static void noteDeadline(struct actor *a, int64_t deadline)
{
    long long old = atomic_load(&a->observed_deadline);
    while (deadline > old &&
           !atomic_compare_exchange_weak(&a->observed_deadline, &old,
                                         deadline)) {
    }
}

/* Samples the session's safe deadline (a lower bound of the library's). */
static void sampleSession(struct actor *a)
{
    if (a->session == NULL) {
        return;
    }
    int64_t t = nowUs();
    int64_t v = tn_session_valid_for_ms(a->session);
    if (v > 0) {
        noteDeadline(a, t + v * 1000);
    }
}

/* Performs the fenced writes of one grant; returns when done or unsafe. */
static void fencedWrites(struct actor *a, const char *res, uint64_t token,
                         int64_t deadline, tn_lock *l)
{
    int writes = (int)rngRange(&a->rng, 1, 3);
    for (int k = 0; k < writes && !exit_flag; k++) {
        int64_t t_chk = nowUs();
        if (t_chk >= deadline || (l != NULL && !tn_lock_valid(l))) {
            return; /* no longer safe: never write */
        }
        /* Work between the check and the write: where a pause of the
         * holder bites (sometimes long, so that a SIGSTOP often lands
         * here and the write arrives late, with a stale token). */
        sleepUs(rngPct(&a->rng, 20) ? rngRange(&a->rng, 0, 250000)
                                    : rngRange(&a->rng, 0, 12000));
        bool accepted = false;
        if (storeWrite(a->store_fd, res, token, a->id, &accepted) != 0) {
            _exit(4); /* the coordinator is gone */
        }
        hist(a->w, "W %u %s %llu %lld %lld %d %lld", a->id, res,
             (unsigned long long)token, (long long)t_chk, (long long)nowUs(),
             accepted ? 1 : 0, (long long)deadline);
        sleepUs(rngRange(&a->rng, 2000, 30000));
    }
}

/* ------------------------------------------------------------ library */

static void libOnJeopardy(tn_session *s, void *data)
{
    struct actor *a = data;
    (void)s;
    hist(a->w, "J %u %lld", a->id, (long long)nowUs());
}

static void libOnSafe(tn_session *s, void *data)
{
    struct actor *a = data;
    (void)s;
    hist(a->w, "O %u %lld", a->id, (long long)nowUs());
}

static void libOnLost(tn_session *s, int rc, void *data)
{
    struct actor *a = data;
    (void)s;
    hist(a->w, "L %u %lld %lld %d", a->id, (long long)nowUs(),
         (long long)atomic_load(&a->observed_deadline), rc);
    atomic_store(&a->lost, true);
}

static bool transient(int rc)
{
    return rc == TN_TIMEOUT || rc == TN_UNAVAILABLE || rc == TN_NO_QUORUM ||
           rc == TN_COMMIT_UNKNOWN || rc == TN_NOT_LEADER ||
           rc == TN_CANCELED || rc == TN_NO_SPACE || rc == TN_RATE_LIMITED ||
           rc == TN_INTERNAL || rc == TN_PROTOCOL;
}

static void libDropSession(struct actor *a, const char *why)
{
    if (a->anchor != NULL) {
        tn_lock_free(a->anchor);
        a->anchor = NULL;
    }
    if (a->session != NULL) {
        hist(a->w, "X %u %lld drop-session:%s", a->id, (long long)nowUs(),
             why);
        int rc = tn_session_close(a->session);
        (void)rc;
        a->session = NULL;
    }
    atomic_store(&a->lost, false);
    atomic_store(&a->observed_deadline, 0);
}

/* Acquire, recorded; resolves an unknown outcome by asking again with the
 * same session (idempotent). Returns the rc and the lock on TN_OK. */
static int libAcquire(struct actor *a, const char *res, uint32_t wait_ms,
                      tn_lock **out, int64_t *deadline)
{
    struct tn_acquire_opts o;
    memset(&o, 0, sizeof o);
    o.wait_ms = wait_ms;
    int64_t t_inv = nowUs();
    int rc = tn_lock_acquire(a->session, res, &o, out);
    int64_t t_cmp = nowUs();
    *deadline = 0;
    if (rc == TN_OK) {
        *deadline = t_cmp + tn_lock_valid_for_ms(*out) * 1000;
    }
    hist(a->w, "A %u %s %lld %lld %d %llu %lld lib", a->id, res,
         (long long)t_inv, (long long)t_cmp, rc,
         rc == TN_OK ? (unsigned long long)tn_lock_token(*out) : 0ULL,
         (long long)*deadline);
    if (!transient(rc)) {
        return rc;
    }
    /* Unknown: the grant may have happened. Ask again (try, same session)
     * until a definite answer; a live session would otherwise keep a lock
     * nobody knows about for ever. */
    int64_t until = nowUs() + RESOLVE_US;
    while (nowUs() < until && !exit_flag) {
        sleepMs(150);
        memset(&o, 0, sizeof o);
        t_inv = nowUs();
        rc = tn_lock_acquire(a->session, res, &o, out);
        t_cmp = nowUs();
        *deadline = 0;
        if (rc == TN_OK) {
            *deadline = t_cmp + tn_lock_valid_for_ms(*out) * 1000;
        }
        hist(a->w, "A %u %s %lld %lld %d %llu %lld lib", a->id, res,
             (long long)t_inv, (long long)t_cmp, rc,
             rc == TN_OK ? (unsigned long long)tn_lock_token(*out) : 0ULL,
             (long long)*deadline);
        if (!transient(rc)) {
            return rc;
        }
    }
    libDropSession(a, "unresolved-acquire");
    return TN_TIMEOUT;
}

static void libRelease(struct actor *a, const char *res, tn_lock *l)
{
    uint64_t token = tn_lock_token(l);
    int64_t t_inv = nowUs();
    int rc = tn_lock_release(l);
    int64_t until = nowUs() + RESOLVE_US;
    while (transient(rc) && nowUs() < until && !exit_flag) {
        sleepMs(150);
        rc = tn_lock_release(l);
    }
    hist(a->w, "R %u %s %llu %lld %lld %d", a->id, res,
         (unsigned long long)token, (long long)t_inv, (long long)nowUs(), rc);
    tn_lock_free(l);
    if (transient(rc)) {
        libDropSession(a, "unresolved-release");
    }
}

static bool libEnsureSession(struct actor *a)
{
    if (a->session != NULL && atomic_load(&a->lost)) {
        libDropSession(a, "lost");
    }
    if (a->session == NULL) {
        struct tn_session_opts so;
        memset(&so, 0, sizeof so);
        so.data = a;
        so.on_jeopardy = libOnJeopardy;
        so.on_safe = libOnSafe;
        so.on_lost = libOnLost;
        char holder[32];
        strf(holder, sizeof holder, "actor-%u", a->id);
        int64_t t_inv = nowUs();
        int rc = tn_session_open(a->w->client, holder, a->w->ttl_ms, &so,
                                 &a->session);
        if (rc != TN_OK) {
            a->session = NULL;
            sleepMs(100);
            return false;
        }
        noteDeadline(a, t_inv); /* a floor; sampled properly below */
        hist(a->w, "S %u %lld %llu", a->id, (long long)nowUs(),
             (unsigned long long)tn_session_id(a->session));
        sampleSession(a);
    }
    if (a->anchor == NULL) {
        tn_lock *l = NULL;
        int64_t deadline;
        int rc = libAcquire(a, a->anchor_res, 0, &l, &deadline);
        if (rc == TN_OK) {
            a->anchor = l;
            hist(a->w, "N %u %s %llu", a->id, a->anchor_res,
                 (unsigned long long)tn_lock_token(l));
        } else {
            if (rc == TN_SESSION_EXPIRED) {
                libDropSession(a, "expired");
            }
            sleepMs(100);
            return false;
        }
    }
    return true;
}

static void libQuiesce(struct actor *a)
{
    int64_t until = nowUs() + 20 * 1000000LL;
    int rc = -1;
    uint64_t token = 0;
    while (!exit_flag && nowUs() < until) {
        if (!libEnsureSession(a)) {
            continue;
        }
        token = tn_lock_token(a->anchor);
        rc = tn_lock_renew(a->anchor, 0);
        if (rc == TN_OK || !transient(rc)) {
            break;
        }
        sleepMs(200);
    }
    sampleSession(a);
    hist(a->w, "Q %u %lld %s %llu %d", a->id, (long long)nowUs(),
         a->anchor_res, (unsigned long long)token, rc);
}

static void *libActor(void *arg)
{
    struct actor *a = arg;
    struct worker *w = a->w;
    while (!exit_flag && !quiesce_flag) {
        if (!libEnsureSession(a)) {
            continue;
        }
        sampleSession(a);
        char res[64];
        pickResource(a, res, sizeof res);
        uint32_t wait_ms = res[0] == 'h' && rngPct(&a->rng, 50)
                               ? (uint32_t)rngRange(&a->rng, 50, 400)
                               : 0;
        tn_lock *l = NULL;
        int64_t deadline;
        a->op++;
        int rc = libAcquire(a, res, wait_ms, &l, &deadline);
        if (rc == TN_OK) {
            fencedWrites(a, res, tn_lock_token(l), deadline, l);
            libRelease(a, res, l);
        } else if (rc == TN_SESSION_EXPIRED) {
            libDropSession(a, "expired");
        }
        sleepUs(rngRange(&a->rng, 0, 20000));
    }
    if (quiesce_flag && !exit_flag) {
        libQuiesce(a);
        while (!exit_flag) {
            sampleSession(a);
            sleepMs(50);
        }
    }
    if (a->anchor != NULL) {
        tn_lock_free(a->anchor);
        a->anchor = NULL;
    }
    if (a->session != NULL) {
        tn_session_close(a->session);
        a->session = NULL;
    }
    (void)w;
    return NULL;
}

/* --------------------------------------------------------------- HTTP */

int httpStatusToTn(int status, const char *body)
{
    switch (status) {
        case 200:
        case 201:
        case 204:
            return TN_OK;
        case 409:
            return body != NULL && strstr(body, "lock-delay") != NULL
                       ? TN_LOCK_DELAY
                       : TN_HELD;
        case 410:
            return body != NULL && strstr(body, "lease-expired") != NULL
                       ? TN_LEASE_EXPIRED
                       : TN_SESSION_EXPIRED;
        case 412:
            return TN_TOKEN_MISMATCH;
        case 400:
        case 422:
        case 428:
            return TN_INVALID_ARGUMENT;
        case 429:
            return TN_RATE_LIMITED;
        case 503:
            return body != NULL && strstr(body, "no-space") != NULL
                       ? TN_NO_SPACE
                       : TN_NO_QUORUM;
        case 507:
            return TN_NO_SPACE;
        case 504:
            return TN_COMMIT_UNKNOWN;
        case 0:
            return TN_UNAVAILABLE;
        default:
            return TN_INTERNAL;
    }
}

static bool httpTransient(int status)
{
    return status == 0 || status == 502 || status == 503 || status == 504 ||
           status == 500 || status == 429;
}

static void *httpActor(void *arg)
{
    struct actor *a = arg;
    struct worker *w = a->w;
    while (!exit_flag && !quiesce_flag) {
        char res[64];
        pickResource(a, res, sizeof res);
        a->op++;
        uint32_t wait_ms = res[0] == 'h' && rngPct(&a->rng, 50)
                               ? (uint32_t)rngRange(&a->rng, 50, 400)
                               : 0;
        char body[160];
        strf(body, sizeof body,
                 "{\"holder\":\"http-%u\",\"ttl_ms\":%u,\"wait_ms\":%u}", a->id,
                 w->ttl_ms, wait_ms);
        char headers[160];
        strf(headers, sizeof headers, "Idempotency-Key: k%llx-%u-%llu-a",
                 (unsigned long long)w->seed, a->id,
                 (unsigned long long)a->op);
        char path[96];
        strf(path, sizeof path, "/v1/locks/%s", res);
        int64_t t_inv = nowUs();
        int64_t until = t_inv + HTTP_RETRY_US;
        struct hresp r;
        int status = 0;
        int rc = TN_UNAVAILABLE;
        uint64_t token = 0;
        int64_t deadline = 0;
        for (;;) {
            int node = (int)rngRange(&a->rng, 0, w->n_http - 1);
            status = hRequest(w->http_ip[node], w->http_port[node], "PUT",
                              path, headers, body, 4000 + (int)wait_ms, &r);
            if (status < 0) {
                status = 0;
            }
            int64_t t_cmp = nowUs();
            rc = httpStatusToTn(status, r.body);
            if (rc == TN_OK) {
                token = strtoull(r.etag, NULL, 10);
                json_t *j = json_loads(r.body ? r.body : "", 0, NULL);
                json_t *v = j ? json_object_get(j, "valid_for_ms") : NULL;
                int64_t valid = json_is_integer(v) ? json_integer_value(v) : 0;
                json_decref(j);
                /* valid_for_ms counts from when the request was sent: the
                 * first attempt is the earliest it can have been granted. */
                deadline = t_inv + valid * 1000;
                if (token == 0) {
                    rc = TN_PROTOCOL;
                }
            }
            hFree(&r);
            if (!httpTransient(status) || t_cmp >= until || exit_flag) {
                break;
            }
            sleepMs(150);
        }
        if (httpTransient(status) && rc != TN_OK) {
            rc = status == 0 ? TN_UNAVAILABLE : rc;
        }
        hist(w, "A %u %s %lld %lld %d %llu %lld http", a->id, res,
             (long long)t_inv, (long long)nowUs(), rc,
             (unsigned long long)token, (long long)deadline);
        if (rc == TN_OK) {
            fencedWrites(a, res, token, deadline, NULL);
            strf(headers, sizeof headers,
                     "If-Match: \"%llu\"\r\nIdempotency-Key: k%llx-%u-%llu-r",
                     (unsigned long long)token, (unsigned long long)w->seed,
                     a->id, (unsigned long long)a->op);
            int64_t r_inv = nowUs();
            until = r_inv + HTTP_RETRY_US;
            for (;;) {
                int node = (int)rngRange(&a->rng, 0, w->n_http - 1);
                status = hRequest(w->http_ip[node], w->http_port[node],
                                  "DELETE", path, headers, NULL, 4000, &r);
                if (status < 0) {
                    status = 0;
                }
                rc = httpStatusToTn(status, r.body);
                hFree(&r);
                if (!httpTransient(status) || nowUs() >= until || exit_flag) {
                    break;
                }
                sleepMs(150);
            }
            if (httpTransient(status)) {
                rc = status == 0 ? TN_UNAVAILABLE : TN_TIMEOUT;
            }
            hist(w, "R %u %s %llu %lld %lld %d", a->id, res,
                 (unsigned long long)token, (long long)r_inv,
                 (long long)nowUs(), rc);
        }
        sleepUs(rngRange(&a->rng, 0, 20000));
    }
    if (quiesce_flag && !exit_flag) {
        hist(w, "Q %u %lld - 0 0", a->id, (long long)nowUs());
        while (!exit_flag) {
            sleepMs(50);
        }
    }
    return NULL;
}

/* --------------------------------------------------------------- main */

static int parseHttpList(struct worker *w, const char *list)
{
    char buf[512];
    strf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *it = strtok_r(buf, ",", &save); it != NULL;
         it = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(it, ':');
        if (colon == NULL || w->n_http == WORKER_MAX_HTTP) {
            return -1;
        }
        *colon = '\0';
        strf(w->http_ip[w->n_http], sizeof w->http_ip[0], "%s", it);
        w->http_port[w->n_http] = atoi(colon + 1);
        w->n_http++;
    }
    return w->n_http > 0 ? 0 : -1;
}

int workerMain(int argc, char **argv)
{
    struct worker w;
    memset(&w, 0, sizeof w);
    w.kind = "lib";
    w.n_actors = 3;
    w.hot = 3;
    w.cold = 200;
    w.ttl_ms = 2000;
    const char *history = NULL;
    const char *http = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i];
        const char *v = argv[i + 1];
        if (strcmp(k, "--kind") == 0) {
            w.kind = v;
        } else if (strcmp(k, "--id") == 0) {
            w.id = atoi(v);
        } else if (strcmp(k, "--actors") == 0) {
            w.n_actors = atoi(v);
        } else if (strcmp(k, "--seed") == 0) {
            w.seed = strtoull(v, NULL, 10);
        } else if (strcmp(k, "--rpc") == 0) {
            w.rpc = v;
        } else if (strcmp(k, "--http") == 0) {
            http = v;
        } else if (strcmp(k, "--store") == 0) {
            w.store_path = v;
        } else if (strcmp(k, "--history") == 0) {
            history = v;
        } else if (strcmp(k, "--hot") == 0) {
            w.hot = atoi(v);
        } else if (strcmp(k, "--cold") == 0) {
            w.cold = atoi(v);
        } else if (strcmp(k, "--ttl") == 0) {
            w.ttl_ms = (uint32_t)atoi(v);
        }
    }
    if (w.n_actors < 1 || w.n_actors > WORKER_MAX_ACTORS || history == NULL ||
        w.store_path == NULL || w.hot < 1 ||
        (strcmp(w.kind, "lib") == 0 && w.rpc == NULL) ||
        (strcmp(w.kind, "http") == 0 &&
         (http == NULL || parseHttpList(&w, http) != 0))) {
        fprintf(stderr, "tenure-fault worker: bad arguments\n");
        return 2;
    }
    w.hist_fd = open(history, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w.hist_fd < 0) {
        fprintf(stderr, "tenure-fault worker: %s: %s\n", history,
                strerror(errno));
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = onSignal;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    bool lib = strcmp(w.kind, "lib") == 0;
    if (lib) {
        struct tn_client_opts o;
        memset(&o, 0, sizeof o);
        /* Worker 2 is a patient client (slow network, long timeouts): it
         * keeps waiting on a leader that went silent, so a deposed leader
         * that wakes up and answers it from memory (DESIGN §4 rule 3) is
         * caught by the early-expiry check. */
        bool patient = w.id == 2;
        o.timeout_ms = patient ? 8000 : 4000;
        o.connect_timeout_ms = patient ? 6000 : 500;
        char err[TN_ERRMSG_BUF_SIZE];
        int rc = tn_client_open2(w.rpc, &o, &w.client, err);
        if (rc != TN_OK) {
            fprintf(stderr, "tenure-fault worker: tn_client_open: %s\n", err);
            return 2;
        }
    }
    struct actor actors[WORKER_MAX_ACTORS];
    memset(actors, 0, sizeof actors);
    for (int i = 0; i < w.n_actors; i++) {
        struct actor *a = &actors[i];
        a->w = &w;
        a->id = (uint32_t)(w.id * 100 + i);
        rngSeed(&a->rng, w.seed * 1000003ULL + a->id);
        strf(a->anchor_res, sizeof a->anchor_res, "anchor/%u", a->id);
        a->store_fd = storeConnect(w.store_path);
        if (a->store_fd < 0) {
            fprintf(stderr, "tenure-fault worker: cannot reach the store\n");
            return 2;
        }
        if (pthread_create(&a->thread, NULL, lib ? libActor : httpActor, a) !=
            0) {
            return 2;
        }
    }
    for (int i = 0; i < w.n_actors; i++) {
        pthread_join(actors[i].thread, NULL);
        close(actors[i].store_fd);
    }
    if (w.client != NULL) {
        tn_client_close(w.client);
    }
    close(w.hist_fd);
    return 0;
}
