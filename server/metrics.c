/* Lock-service metrics and the top-k contention sketch (space-saving). */
#include "metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tenure.pb-c.h"

static const double bounds[METRICS_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25,   0.5,   1,      2.5,   5,    10,    30,    60,
};

static const char *const statusNames[METRICS_STATUSES] = {
    "ok",           "held",          "lock_delay",     "token_mismatch",
    "lease_expired", "session_expired", "not_leader",   "no_quorum",
    "commit_unknown", "invalid_argument", "rate_limited", "timeout",
    "canceled",     "no_space",      "not_found",      "internal",
};

void metricsInit(struct metrics *m)
{
    memset(m, 0, sizeof *m);
}

void metricsHistObserve(struct metrics_hist *h, double seconds)
{
    unsigned i = 0;
    if (seconds < 0) {
        seconds = 0;
    }
    while (i < METRICS_BUCKETS && seconds > bounds[i]) {
        i++;
    }
    h->buckets[i]++;
    h->count++;
    h->sum += seconds;
}

uint32_t metricsHistQuantileMs(const struct metrics_hist *h, double q)
{
    uint64_t rank;
    uint64_t seen = 0;
    if (h->count == 0) {
        return 0;
    }
    rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count) {
        rank = h->count - 1;
    }
    for (unsigned i = 0; i <= METRICS_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen > rank) {
            double b = i < METRICS_BUCKETS ? bounds[i] : bounds[METRICS_BUCKETS - 1];
            return (uint32_t)(b * 1000.0 + 0.5);
        }
    }
    return (uint32_t)(bounds[METRICS_BUCKETS - 1] * 1000.0);
}

static int statusIndex(int status)
{
    return status >= 0 && status < METRICS_STATUSES ? status
                                                    : TN__STATUS__INTERNAL;
}

/* Space-saving: a tracked resource gains weight; an untracked one takes the
 * slot of the lightest entry, inheriting its weight as the error bound. Only
 * contention (conflicts, waits) adds weight, so uncontended traffic never
 * evicts anything. */
static struct metrics_contended *topFind(struct metrics *m,
                                         const char *resource)
{
    for (unsigned i = 0; i < m->n_top; i++) {
        if (strcmp(m->top[i].resource, resource) == 0) {
            return &m->top[i];
        }
    }
    return NULL;
}

static struct metrics_contended *topTake(struct metrics *m,
                                         const char *resource)
{
    struct metrics_contended *e;
    uint64_t min_weight;

    if (m->n_top < METRICS_TOPK) {
        e = &m->top[m->n_top++];
        memset(e, 0, sizeof *e);
    } else {
        e = &m->top[0];
        for (unsigned i = 1; i < m->n_top; i++) {
            if (m->top[i].weight < e->weight) {
                e = &m->top[i];
            }
        }
        min_weight = e->weight;
        memset(e, 0, sizeof *e);
        e->weight = min_weight;
        e->error = min_weight;
    }
    snprintf(e->resource, sizeof e->resource, "%s", resource);
    return e;
}

void metricsAcquire(struct metrics *m,
                    const char *resource,
                    int status,
                    double seconds,
                    int queued)
{
    struct metrics_contended *e;
    bool contended = status == TN__STATUS__HELD ||
                     status == TN__STATUS__LOCK_DELAY || queued;

    m->acquire[statusIndex(status)]++;
    metricsHistObserve(&m->acquire_latency, seconds);
    if (queued && status == TN__STATUS__OK) {
        metricsHistObserve(&m->wait_time, seconds);
    }
    if (resource == NULL) {
        return;
    }
    e = topFind(m, resource);
    if (e == NULL && !contended) {
        return;
    }
    if (e == NULL) {
        e = topTake(m, resource);
    }
    e->acquires++;
    if (contended) {
        e->weight++;
    }
    if (status == TN__STATUS__HELD || status == TN__STATUS__LOCK_DELAY) {
        e->conflicts++;
    }
    if (status == TN__STATUS__OK) {
        metricsHistObserve(&e->wait, queued ? seconds : 0);
    }
}

void metricsRelease(struct metrics *m,
                    const char *resource,
                    int status,
                    double held_seconds)
{
    struct metrics_contended *e;
    m->release[statusIndex(status)]++;
    if (status == TN__STATUS__LEASE_EXPIRED) {
        m->incidents++;
    }
    if (status != TN__STATUS__OK || held_seconds < 0) {
        return;
    }
    metricsHistObserve(&m->hold_time, held_seconds);
    if (resource != NULL && (e = topFind(m, resource)) != NULL) {
        metricsHistObserve(&e->hold, held_seconds);
    }
}

void metricsRenew(struct metrics *m, int status)
{
    m->renew[statusIndex(status)]++;
    if (status == TN__STATUS__LEASE_EXPIRED) {
        m->incidents++;
    }
}

void metricsKeepalive(struct metrics *m, int status)
{
    m->keepalive[statusIndex(status)]++;
}

static int topCompare(const void *a, const void *b)
{
    const struct metrics_contended *x = *(const struct metrics_contended *const *)a;
    const struct metrics_contended *y = *(const struct metrics_contended *const *)b;
    if (x->weight != y->weight) {
        return x->weight > y->weight ? -1 : 1;
    }
    return strcmp(x->resource, y->resource);
}

size_t metricsTop(const struct metrics *m,
                  const struct metrics_contended **out,
                  size_t max)
{
    const struct metrics_contended *all[METRICS_TOPK];
    size_t n = m->n_top;
    for (size_t i = 0; i < n; i++) {
        all[i] = &m->top[i];
    }
    qsort(all, n, sizeof all[0], topCompare);
    if (n > max) {
        n = max;
    }
    memcpy(out, all, n * sizeof all[0]);
    return n;
}

/* ------------------------------------------------------------ rendering */

struct out
{
    metrics_emit_fn emit;
    void *ctx;
};

static void outf(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void outf(struct out *o, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0) {
        o->emit(o->ctx, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    }
}

static void head(struct out *o, const char *name, const char *type,
                 const char *help)
{
    outf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void byStatus(struct out *o, const char *name, const char *help,
                     const uint64_t *counts)
{
    head(o, name, "counter", help);
    for (int i = 0; i < METRICS_STATUSES; i++) {
        if (counts[i] > 0 || i == 0) {
            outf(o, "%s{outcome=\"%s\"} %llu\n", name, statusNames[i],
                 (unsigned long long)counts[i]);
        }
    }
}

static void hist(struct out *o, const char *name, const char *help,
                 const struct metrics_hist *h)
{
    uint64_t cum = 0;
    head(o, name, "histogram", help);
    for (unsigned i = 0; i < METRICS_BUCKETS; i++) {
        cum += h->buckets[i];
        outf(o, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
             (unsigned long long)cum);
    }
    outf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name,
         (unsigned long long)h->count);
    outf(o, "%s_sum %.6f\n", name, h->sum);
    outf(o, "%s_count %llu\n", name, (unsigned long long)h->count);
}

static void gauge(struct out *o, const char *name, const char *type,
                  const char *help, uint64_t v)
{
    head(o, name, type, help);
    outf(o, "%s %llu\n", name, (unsigned long long)v);
}

void metricsRender(const struct metrics *m,
                   const struct metrics_gauges *g,
                   metrics_emit_fn emit,
                   void *ctx)
{
    struct out o = { emit, ctx };

    byStatus(&o, "tenure_acquire_total",
             "Acquire requests answered by this leader, by outcome.",
             m->acquire);
    byStatus(&o, "tenure_renew_total",
             "Renew requests answered by this leader, by outcome.", m->renew);
    byStatus(&o, "tenure_release_total",
             "Release requests answered by this leader, by outcome.",
             m->release);
    byStatus(&o, "tenure_keepalive_total",
             "Session keepalives answered by this leader, by outcome.",
             m->keepalive);
    hist(&o, "tenure_acquire_duration_seconds",
         "Time from an acquire's arrival to its answer.", &m->acquire_latency);
    hist(&o, "tenure_acquire_wait_seconds",
         "Time queued acquires waited before their grant.", &m->wait_time);
    hist(&o, "tenure_lock_hold_seconds",
         "Time from grant to clean release.", &m->hold_time);
    gauge(&o, "tenure_safety_incidents_total", "counter",
          "Renew or release requests that arrived after their lease had "
          "expired.",
          m->incidents);
    gauge(&o, "tenure_sessions", "gauge", "Live sessions.", g->sessions);
    gauge(&o, "tenure_locks_held", "gauge",
          "Held (resource, holder) pairs.", g->locks_held);
    gauge(&o, "tenure_lock_waiters", "gauge", "Queued acquires.",
          g->waiters);
    gauge(&o, "tenure_grants_total", "counter",
          "Locks granted (state machine, this replica).", g->grants);
    gauge(&o, "tenure_releases_total", "counter",
          "Locks freed by a clean release (state machine).", g->releases);
    gauge(&o, "tenure_session_expiries_total", "counter",
          "Sessions ended by expiry (state machine).", g->expiries);
    gauge(&o, "tenure_lock_delay_hits_total", "counter",
          "Acquires refused or queued because of a lock-delay.",
          g->lock_delay_hits);
    gauge(&o, "tenure_conflicts_total", "counter",
          "Acquires that found the lock held (state machine).", g->conflicts);
    gauge(&o, "tenure_late_requests_total", "counter",
          "Renew/release after the lease expired (state machine).",
          g->late_requests);
    gauge(&o, "tenure_leader_changes_total", "counter",
          "Times this node became leader.", g->leader_changes);
    gauge(&o, "tenure_requests_total", "counter",
          "Requests submitted to the dispatch.", g->requests);
    gauge(&o, "tenure_requests_in_flight", "gauge",
          "Requests submitted and not answered yet.", g->in_flight);
    gauge(&o, "tenure_raft_batches_total", "counter",
          "Raft entries proposed by this node.", g->batches);
    gauge(&o, "tenure_raft_commands_total", "counter",
          "Commands carried in the proposed entries.", g->commands);
    gauge(&o, "tenure_forwarded_total", "counter",
          "Requests relayed to the leader.", g->forwarded);
    gauge(&o, "tenure_expiries_proposed_total", "counter",
          "Session expiries proposed by this node as leader.",
          g->expiries_proposed);
    gauge(&o, "tenure_acquires_parked_total", "counter",
          "Queued acquires held back to ride in the next entry.", g->parked);
    gauge(&o, "tenure_leases_tracked", "gauge",
          "Session deadlines kept by this node (leader only).",
          g->leases_tracked);
}
