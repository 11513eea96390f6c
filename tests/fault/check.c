/* tenure fault harness: the history checker.
 *
 * Inputs: the workers' history files (see worker.c for the format), the
 * fenced store's log, and the final state read after healing.
 *
 * Checks (each failure is a violation, printed with the evidence):
 *  1. mutual exclusion: per resource, the safe windows of grants with
 *     different tokens never overlap. A grant's window runs from the moment
 *     the holder learnt of it (acquire completed) to the earlier of its safe
 *     deadline (tn_lock_valid_for_ms / valid_for_ms at the grant) and the
 *     moment the holder started to release it;
 *  2. tokens: a grant that completed before another was invoked on the same
 *     resource has the lower token; one token never names two grants
 *     (other actor or other resource);
 *  3. the fenced store: accepted tokens never go down per resource; every
 *     accepted token was granted to the writer; no write sent inside the
 *     writer's safe window was rejected (someone newer wrote during it);
 *  4. no acknowledged release lost: a token whose release was acknowledged
 *     is not held in the final state;
 *  5. no acknowledged grant lost: every anchor lock renewed at quiesce is
 *     held with the same token in the final state (unless its session lost
 *     safety afterwards), and the library and HTTP views of the anchors
 *     agree;
 *  6. no session expired before the client's safe deadline: the cluster
 *     never told a client its session was gone while the library still
 *     considered it safe;
 *  7. availability: the cluster served again within the bound after every
 *     fault healed. */
#include "coord.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tenure.h"

#define MAX_REPORT 20

struct grant
{
    int res;
    uint32_t actor;
    uint64_t token;
    int64_t t_inv;
    int64_t t_cmp;
    int64_t deadline;
    int64_t end;
    bool http;
};

struct release
{
    int res;
    uint32_t actor;
    uint64_t token;
    int64_t t_inv;
    int rc;
};

struct actor_event
{
    uint32_t actor;
    char type; /* J L Q */
    int64_t t;
    int64_t observed;
    int rc;
    int res;
    uint64_t token;
};

struct hist
{
    char **names;
    size_t n_names;
    size_t cap_names;
    struct grant *grants;
    size_t n_grants;
    size_t cap_grants;
    struct release *rels;
    size_t n_rels;
    size_t cap_rels;
    struct actor_event *evs;
    size_t n_evs;
    size_t cap_evs;
    long ops;
    long violations;
    long reported;
};

#define PUSH(arr, n, cap, item)                                        \
    do {                                                               \
        if ((n) == (cap)) {                                            \
            (cap) = (cap) ? (cap) * 2 : 1024;                          \
            void *grown_ = realloc((arr), (cap) * sizeof *(arr));      \
            if (grown_ == NULL) {                                      \
                abort();                                               \
            }                                                          \
            (arr) = grown_;                                            \
        }                                                              \
        (arr)[(n)++] = (item);                                         \
    } while (0)

static void violation(struct hist *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void violation(struct hist *h, const char *fmt, ...)
{
    h->violations++;
    if (h->reported++ >= MAX_REPORT) {
        return;
    }
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "VIOLATION: %s\n", line);
}

static int resIndex(struct hist *h, const char *name)
{
    /* Linear probing would be faster; the names are few hundred. */
    for (size_t i = h->n_names; i > 0; i--) {
        if (strcmp(h->names[i - 1], name) == 0) {
            return (int)(i - 1);
        }
    }
    char *copy = strdup(name);
    if (copy == NULL) {
        abort();
    }
    PUSH(h->names, h->n_names, h->cap_names, copy);
    return (int)h->n_names - 1;
}

static int resLookup(struct hist *h, const char *name)
{
    for (size_t i = 0; i < h->n_names; i++) {
        if (strcmp(h->names[i], name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static double rel(const struct env *e, int64_t t)
{
    return (double)(t - e->t_start) / 1e6;
}

static void loadHistory(struct hist *h, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    char line[1024];
    while (fgets(line, sizeof line, f) != NULL) {
        char res[STORE_RES_MAX + 8];
        unsigned actor;
        long long a1, a2, a3;
        unsigned long long tok;
        int rc;
        char kind[16];
        switch (line[0]) {
            case 'A':
                if (sscanf(line, "A %u %71s %lld %lld %d %llu %lld %15s",
                           &actor, res, &a1, &a2, &rc, &tok, &a3,
                           kind) == 8) {
                    h->ops++;
                    if (rc == TN_OK) {
                        struct grant g = {
                            .res = resIndex(h, res), .actor = actor,
                            .token = tok, .t_inv = a1, .t_cmp = a2,
                            .deadline = a3, .end = a3,
                            .http = strcmp(kind, "http") == 0
                        };
                        PUSH(h->grants, h->n_grants, h->cap_grants, g);
                    }
                }
                break;
            case 'W':
                h->ops++; /* writes are checked from the store's log */
                break;
            case 'R':
                if (sscanf(line, "R %u %71s %llu %lld %lld %d", &actor, res,
                           &tok, &a1, &a2, &rc) == 6) {
                    h->ops++;
                    struct release r = { .res = resIndex(h, res),
                                         .actor = actor, .token = tok,
                                         .t_inv = a1, .rc = rc };
                    PUSH(h->rels, h->n_rels, h->cap_rels, r);
                }
                break;
            case 'J':
                if (sscanf(line, "J %u %lld", &actor, &a1) == 2) {
                    struct actor_event ev = { .actor = actor, .type = 'J',
                                              .t = a1 };
                    PUSH(h->evs, h->n_evs, h->cap_evs, ev);
                }
                break;
            case 'L':
                if (sscanf(line, "L %u %lld %lld %d", &actor, &a1, &a2,
                           &rc) == 4) {
                    struct actor_event ev = { .actor = actor, .type = 'L',
                                              .t = a1, .observed = a2,
                                              .rc = rc };
                    PUSH(h->evs, h->n_evs, h->cap_evs, ev);
                }
                break;
            case 'Q':
                if (sscanf(line, "Q %u %lld %71s %llu %d", &actor, &a1, res,
                           &tok, &rc) == 5) {
                    struct actor_event ev = {
                        .actor = actor, .type = 'Q', .t = a1, .rc = rc,
                        .res = strcmp(res, "-") == 0 ? -1 : resIndex(h, res),
                        .token = tok
                    };
                    PUSH(h->evs, h->n_evs, h->cap_evs, ev);
                }
                break;
            default:
                break;
        }
    }
    fclose(f);
}

static int cmpGrantStart(const void *a, const void *b)
{
    const struct grant *x = a;
    const struct grant *y = b;
    if (x->res != y->res) {
        return x->res < y->res ? -1 : 1;
    }
    if (x->t_cmp != y->t_cmp) {
        return x->t_cmp < y->t_cmp ? -1 : 1;
    }
    return 0;
}

static int cmpRel(const void *a, const void *b)
{
    const struct release *x = a;
    const struct release *y = b;
    if (x->res != y->res) {
        return x->res < y->res ? -1 : 1;
    }
    if (x->token != y->token) {
        return x->token < y->token ? -1 : 1;
    }
    if (x->actor != y->actor) {
        return x->actor < y->actor ? -1 : 1;
    }
    if (x->t_inv != y->t_inv) {
        return x->t_inv < y->t_inv ? -1 : 1;
    }
    return 0;
}

/* Window end: the first release the holder started after the grant. */
static void computeEnds(struct hist *h)
{
    if (h->n_rels > 0) {
        qsort(h->rels, h->n_rels, sizeof *h->rels, cmpRel);
    }
    for (size_t i = 0; i < h->n_grants; i++) {
        struct grant *g = &h->grants[i];
        struct release key = { .res = g->res, .token = g->token,
                               .actor = g->actor, .t_inv = INT64_MIN };
        size_t lo = 0;
        size_t hi = h->n_rels;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (cmpRel(&h->rels[mid], &key) < 0) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for (size_t k = lo; k < h->n_rels; k++) {
            const struct release *r = &h->rels[k];
            if (r->res != g->res || r->token != g->token ||
                r->actor != g->actor) {
                break;
            }
            if (r->t_inv >= g->t_cmp && r->t_inv < g->end) {
                g->end = r->t_inv;
            }
        }
        if (g->end < g->t_cmp) {
            g->end = g->t_cmp; /* never safe: an empty window */
        }
    }
}

static void checkExclusion(struct hist *h, const struct env *e)
{
    /* h->grants sorted by (res, t_cmp). Keep the two latest-ending windows
     * with different tokens seen so far in this resource. */
    size_t i = 0;
    while (i < h->n_grants) {
        int res = h->grants[i].res;
        const struct grant *top[2] = { NULL, NULL };
        for (; i < h->n_grants && h->grants[i].res == res; i++) {
            const struct grant *g = &h->grants[i];
            for (int k = 0; k < 2; k++) {
                const struct grant *o = top[k];
                if (o != NULL && o->token != g->token &&
                    g->t_cmp < o->end && g->end > g->t_cmp) {
                    violation(h,
                              "mutual exclusion: %s held by actor %u "
                              "(token %llu, safe %.3f..%.3fs) and actor %u "
                              "(token %llu, safe %.3f..%.3fs)",
                              h->names[res], o->actor,
                              (unsigned long long)o->token,
                              rel(e, o->t_cmp), rel(e, o->end), g->actor,
                              (unsigned long long)g->token, rel(e, g->t_cmp),
                              rel(e, g->end));
                    break;
                }
            }
            /* Insert g among the top two by end (distinct tokens). */
            if (top[0] != NULL && top[0]->token == g->token) {
                if (g->end > top[0]->end) {
                    top[0] = g;
                }
            } else if (top[1] != NULL && top[1]->token == g->token) {
                if (g->end > top[1]->end) {
                    top[1] = g;
                }
            } else if (top[0] == NULL || g->end > top[0]->end) {
                top[1] = top[0];
                top[0] = g;
            } else if (top[1] == NULL || g->end > top[1]->end) {
                top[1] = g;
            }
            if (top[1] != NULL && top[0] != NULL &&
                top[1]->end > top[0]->end) {
                const struct grant *t = top[0];
                top[0] = top[1];
                top[1] = t;
            }
        }
    }
}

static int cmpGrantInv(const void *a, const void *b)
{
    const struct grant *const *x = a;
    const struct grant *const *y = b;
    if ((*x)->res != (*y)->res) {
        return (*x)->res < (*y)->res ? -1 : 1;
    }
    if ((*x)->t_inv != (*y)->t_inv) {
        return (*x)->t_inv < (*y)->t_inv ? -1 : 1;
    }
    return 0;
}

static int cmpU64(const void *a, const void *b)
{
    const struct grant *const *x = a;
    const struct grant *const *y = b;
    if ((*x)->token != (*y)->token) {
        return (*x)->token < (*y)->token ? -1 : 1;
    }
    return 0;
}

static void checkTokens(struct hist *h, const struct env *e)
{
    size_t n = h->n_grants;
    const struct grant **by_inv = calloc(n + 1, sizeof *by_inv);
    if (by_inv == NULL) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        by_inv[i] = &h->grants[i];
    }
    qsort(by_inv, n, sizeof *by_inv, cmpGrantInv);
    /* h->grants is sorted by (res, t_cmp): sweep both per resource. */
    size_t c = 0;
    size_t v = 0;
    while (v < n) {
        int res = by_inv[v]->res;
        while (c < n && h->grants[c].res < res) {
            c++;
        }
        const struct grant *maxg = NULL;
        for (; v < n && by_inv[v]->res == res; v++) {
            const struct grant *b = by_inv[v];
            while (c < n && h->grants[c].res == res &&
                   h->grants[c].t_cmp < b->t_inv) {
                if (maxg == NULL || h->grants[c].token > maxg->token) {
                    maxg = &h->grants[c];
                }
                c++;
            }
            if (maxg != NULL && maxg->token >= b->token &&
                !(maxg->token == b->token && maxg->actor == b->actor)) {
                violation(h,
                          "token order: %s: grant to actor %u completed at "
                          "%.3fs with token %llu, then a grant to actor %u "
                          "invoked at %.3fs got token %llu",
                          h->names[res], maxg->actor, rel(e, maxg->t_cmp),
                          (unsigned long long)maxg->token, b->actor,
                          rel(e, b->t_inv), (unsigned long long)b->token);
            }
        }
    }
    /* Uniqueness: one token, one (resource, actor). */
    for (size_t i = 0; i < n; i++) {
        by_inv[i] = &h->grants[i];
    }
    qsort(by_inv, n, sizeof *by_inv, cmpU64);
    for (size_t i = 1; i < n; i++) {
        const struct grant *a = by_inv[i - 1];
        const struct grant *b = by_inv[i];
        if (a->token == b->token &&
            (a->res != b->res || a->actor != b->actor)) {
            violation(h,
                      "token reuse: token %llu granted for %s to actor %u "
                      "and for %s to actor %u",
                      (unsigned long long)a->token, h->names[a->res],
                      a->actor, h->names[b->res], b->actor);
        }
    }
    free(by_inv);
}

static const struct grant *findGrant(const struct hist *h, int res,
                                     uint32_t actor, uint64_t token)
{
    /* grants sorted by (res, t_cmp): binary search the resource range. */
    size_t lo = 0;
    size_t hi = h->n_grants;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (h->grants[mid].res < res) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    const struct grant *best = NULL;
    for (size_t i = lo; i < h->n_grants && h->grants[i].res == res; i++) {
        const struct grant *g = &h->grants[i];
        if (g->actor == actor && g->token == token &&
            (best == NULL || g->end > best->end)) {
            best = g;
        }
    }
    return best;
}

static void checkStore(struct hist *h, const struct check_input *in,
                       struct check_result *out)
{
    const struct env *e = in->e;
    /* Per resource, the highest accepted token so far (by name index). */
    size_t cap = h->n_names + 1;
    uint64_t *highest = calloc(cap, sizeof *highest);
    if (highest == NULL) {
        abort();
    }
    for (size_t i = 0; i < in->n_store; i++) {
        const struct store_entry *w = &in->store[i];
        int res = resLookup(h, w->resource);
        if (w->accepted) {
            out->writes_accepted++;
        } else {
            out->writes_rejected++;
        }
        if (res < 0) {
            if (w->accepted) {
                violation(h,
                          "store: accepted token %llu on %s from actor %u, "
                          "which no recorded grant gave",
                          (unsigned long long)w->token, w->resource,
                          w->actor);
            }
            continue;
        }
        const struct grant *g = findGrant(h, res, w->actor, w->token);
        if (w->accepted) {
            if (w->token < highest[res]) {
                violation(h,
                          "store: accepted token %llu on %s after token "
                          "%llu",
                          (unsigned long long)w->token, w->resource,
                          (unsigned long long)highest[res]);
            } else {
                highest[res] = w->token;
            }
            if (g == NULL) {
                violation(h,
                          "store: accepted token %llu on %s from actor %u, "
                          "which no recorded grant gave",
                          (unsigned long long)w->token, w->resource,
                          w->actor);
            }
        } else if (g != NULL && w->t_recv < g->deadline) {
            violation(h,
                      "fencing: a write by actor %u with token %llu on %s "
                      "reached the store at %.3fs, inside its safe window "
                      "(until %.3fs), and was rejected: token %llu had "
                      "already written",
                      w->actor, (unsigned long long)w->token, w->resource,
                      rel(e, w->t_recv), rel(e, g->deadline),
                      (unsigned long long)w->highest_before);
        }
    }
    free(highest);
}

static bool heldFinal(const struct check_input *in, const char *res,
                      uint64_t token)
{
    for (size_t i = 0; i < in->n_final; i++) {
        if (in->final_locks[i].token == token &&
            strcmp(in->final_locks[i].resource, res) == 0) {
            return true;
        }
    }
    return false;
}

static void checkFinal(struct hist *h, const struct check_input *in)
{
    const struct env *e = in->e;
    if (!in->final_ok) {
        violation(h, "final state: could not read the lock table after "
                     "healing");
        return;
    }
    for (size_t i = 0; i < h->n_rels; i++) {
        const struct release *r = &h->rels[i];
        if (r->rc == TN_OK && heldFinal(in, h->names[r->res], r->token)) {
            violation(h,
                      "lost release: actor %u's release of %s (token %llu) "
                      "was acknowledged at %.3fs, yet the lock is held with "
                      "that token after healing",
                      r->actor, h->names[r->res],
                      (unsigned long long)r->token, rel(e, r->t_inv));
        }
    }
    for (size_t i = 0; i < h->n_evs; i++) {
        const struct actor_event *q = &h->evs[i];
        if (q->type != 'Q' || q->res < 0) {
            continue;
        }
        if (q->rc != TN_OK) {
            /* The renewal at quiesce failed: only excusable when the
             * session had lost safety (jeopardy) before. */
            bool excused = false;
            for (size_t k = 0; k < h->n_evs; k++) {
                if (h->evs[k].actor == q->actor &&
                    (h->evs[k].type == 'J' || h->evs[k].type == 'L')) {
                    excused = true;
                }
            }
            if (!excused) {
                violation(h,
                          "lost grant: actor %u's anchor %s (token %llu) "
                          "could not be renewed at quiesce (%s) although its "
                          "session never lost safety",
                          q->actor, h->names[q->res],
                          (unsigned long long)q->token, tn_errname(q->rc));
            }
            continue;
        }
        if (heldFinal(in, h->names[q->res], q->token)) {
            bool http_has = false;
            for (size_t k = 0; k < in->n_http_anchors; k++) {
                if (in->http_anchors[k].token == q->token &&
                    strcmp(in->http_anchors[k].resource, h->names[q->res]) ==
                        0) {
                    http_has = true;
                }
            }
            if (in->http_ok && !http_has) {
                violation(h,
                          "final state: the library lists %s with token "
                          "%llu but GET /v1/locks does not",
                          h->names[q->res], (unsigned long long)q->token);
            }
            continue;
        }
        bool excused = false;
        for (size_t k = 0; k < h->n_evs; k++) {
            if (h->evs[k].actor == q->actor && h->evs[k].t > q->t &&
                (h->evs[k].type == 'J' || h->evs[k].type == 'L')) {
                excused = true;
            }
        }
        if (!excused) {
            violation(h,
                      "lost grant: actor %u's anchor %s (token %llu, renewed "
                      "at %.3fs) is not held after healing",
                      q->actor, h->names[q->res],
                      (unsigned long long)q->token, rel(e, q->t));
        }
    }
}

static long checkSessions(struct hist *h, const struct env *e)
{
    long lost = 0;
    for (size_t i = 0; i < h->n_evs; i++) {
        const struct actor_event *l = &h->evs[i];
        lost += l->type == 'L';
        if (l->type == 'L' && l->t < l->observed) {
            violation(h,
                      "early expiry: the cluster told actor %u at %.3fs that "
                      "its session was gone (%s), but the client's safe "
                      "deadline ran until %.3fs",
                      l->actor, rel(e, l->t), tn_errname(l->rc),
                      rel(e, l->observed));
        }
    }
    return lost;
}

int checkHistory(const struct check_input *in, struct check_result *out)
{
    const struct env *e = in->e;
    struct hist h;
    memset(&h, 0, sizeof h);
    memset(out, 0, sizeof *out);
    for (int w = 0; w < e->n_workers; w++) {
        loadHistory(&h, e->workers[w].history);
    }
    computeEnds(&h);
    if (h.n_grants > 0) {
        qsort(h.grants, h.n_grants, sizeof *h.grants, cmpGrantStart);
    }
    checkExclusion(&h, e);
    checkTokens(&h, e);
    checkStore(&h, in, out);
    checkFinal(&h, in);
    out->sessions_lost = checkSessions(&h, e);
    for (int f = 0; f < e->n_fault_recs; f++) {
        struct fault_rec *r = &in->e->faults[f];
        int64_t until = f + 1 < e->n_fault_recs ? e->faults[f + 1].t_inject
                                                 : INT64_MAX;
        r->sessions_lost = 0;
        for (size_t i = 0; i < h.n_evs; i++) {
            r->sessions_lost += h.evs[i].type == 'L' &&
                                h.evs[i].t >= r->t_inject &&
                                h.evs[i].t < until;
        }
        if (r->recovery_ms < 0) {
            violation(&h,
                      "availability: no recovery within %d ms after healing "
                      "fault #%d (%s: %s)",
                      e->recovery_bound_ms, f + 1, faultName(r->kind),
                      r->what);
        }
    }
    if (h.reported > MAX_REPORT) {
        fprintf(stderr, "(%ld more violations not shown)\n",
                h.reported - MAX_REPORT);
    }
    out->ops = h.ops;
    out->grants = (long)h.n_grants;
    out->violations = h.violations;
    for (size_t i = 0; i < h.n_names; i++) {
        free(h.names[i]);
    }
    free(h.names);
    free(h.grants);
    free(h.rels);
    free(h.evs);
    return 0;
}

/* ------------------------------------------------------------ self-test */

/* Runs the checker on one synthetic history; returns its violations. */
static long selfCase(const char *name, const char *history,
                     const struct store_entry *store, size_t n_store,
                     struct final_lock *final_locks, size_t n_final)
{
    static struct env e;
    memset(&e, 0, sizeof e);
    e.n_workers = 1;
    strf(e.workers[0].history, sizeof e.workers[0].history,
         "/tmp/tenure-fault-selftest-%d.txt", (int)getpid());
    FILE *f = fopen(e.workers[0].history, "w");
    if (f == NULL) {
        return -1;
    }
    fputs(history, f);
    fclose(f);
    struct check_input in = { .e = &e, .store = store, .n_store = n_store,
                              .final_locks = final_locks,
                              .n_final = n_final, .final_ok = true };
    struct check_result res;
    fprintf(stderr, "--- checker self-test: %s\n", name);
    checkHistory(&in, &res);
    unlink(e.workers[0].history);
    return res.violations;
}

int checkSelfTest(void)
{
    int failed = 0;
    struct {
        const char *name;
        const char *history;
        long want;
    } cases[] = {
        { "clean: two holders one after the other",
          "A 1 r 1000 2000 0 100 9000 lib\n"
          "R 1 r 100 5000 6000 0\n"
          "A 2 r 5500 7000 0 200 15000 lib\n"
          "R 2 r 200 8000 9000 0\n",
          0 },
        { "overlap: a second holder inside the first's safe window",
          "A 1 r 1000 2000 0 100 9000 lib\n"
          "A 2 r 3000 4000 0 200 12000 http\n",
          1 },
        { "no overlap once the first started its release",
          "A 1 r 1000 2000 0 100 9000 lib\n"
          "R 1 r 100 3000 3500 11\n"
          "A 2 r 3100 4000 0 200 12000 http\n",
          0 },
        { "token order: a later grant with a smaller token",
          "A 1 r 1000 2000 0 100 3000 lib\n"
          "R 1 r 100 2500 2600 0\n"
          "A 2 r 4000 5000 0 50 6000 lib\n",
          1 },
        { "token reuse across resources",
          "A 1 r 1000 2000 0 100 3000 lib\n"
          "A 2 s 1000 2000 0 100 3000 lib\n",
          1 },
        { "early expiry: lost while the client's deadline ran",
          "L 1 5000 9000 5\n",
          1 },
        { "expiry after the deadline is fine",
          "L 1 9500 9000 5\n",
          0 },
        { "lost grant: an anchor renewed at quiesce is gone",
          "A 1 anchor/1 1000 2000 0 100 3000 lib\n"
          "Q 1 5000 anchor/1 100 0\n",
          1 },
        { "lost release: released token still held",
          "A 1 r 1000 2000 0 100 3000 lib\n"
          "R 1 r 100 2500 2600 0\n",
          1 },
    };
    struct final_lock held = { .resource = "r", .token = 100 };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool with_final = strstr(cases[i].name, "lost release") != NULL;
        long got = selfCase(cases[i].name, cases[i].history, NULL, 0,
                            with_final ? &held : NULL, with_final ? 1 : 0);
        if (got != cases[i].want) {
            fprintf(stderr, "SELF-TEST FAILED: %s: %ld violations, want %ld\n",
                    cases[i].name, got, cases[i].want);
            failed++;
        }
    }
    /* The store: a lower token accepted after a higher one, and a write
     * rejected inside its writer's safe window. */
    struct store_entry st[3];
    memset(st, 0, sizeof st);
    strf(st[0].resource, sizeof st[0].resource, "r");
    st[0].token = 200;
    st[0].actor = 2;
    st[0].accepted = true;
    st[0].t_recv = 4500;
    st[1] = st[0];
    st[1].token = 100;
    st[1].actor = 1;
    st[1].t_recv = 4600;
    st[1].accepted = true; /* a broken store */
    st[2] = st[1];
    st[2].accepted = false;
    st[2].t_recv = 4700;
    const char *hist = "A 1 r 1000 2000 0 100 9000 lib\n"
                       "R 1 r 100 8000 8100 0\n"
                       "A 2 r 3000 4000 0 200 12000 lib\n";
    /* 1 overlap + 1 lower token accepted + 1 rejected inside window. */
    long got = selfCase("store: lower token accepted, write rejected in its "
                        "window", hist, st, 3, NULL, 0);
    if (got != 3) {
        fprintf(stderr, "SELF-TEST FAILED: store case: %ld violations, "
                        "want 3\n", got);
        failed++;
    }
    printf("checker self-test: %s\n", failed ? "FAIL" : "PASS");
    return failed ? 1 : 0;
}
