/* Lock-service metrics: outcome counters, latency histograms and a bounded
 * top-k sketch of the most contended resources.
 *
 * Pure data: callers pass durations in; nothing here reads a clock. The
 * dispatch records, the HTTP shim renders (`GET /metrics`,
 * `GET /v1/stats/contention`). */
#ifndef TN_METRICS_H_
#define TN_METRICS_H_

#include <stddef.h>
#include <stdint.h>

#define METRICS_STATUSES 16
#define METRICS_BUCKETS 16
#define METRICS_TOPK 64
#define METRICS_RESOURCE_MAX 512

/* Buckets (seconds): 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25
 * 0.5 1 2.5 5 10 30 60, then +Inf. */
struct metrics_hist
{
    uint64_t buckets[METRICS_BUCKETS + 1]; /* last: above every bound */
    uint64_t count;
    double sum;                            /* seconds */
};

void metricsHistObserve(struct metrics_hist *h, double seconds);
/* The q-quantile (0 < q < 1) estimated as the upper bound of the bucket it
 * falls in, in milliseconds; 0 if empty. */
uint32_t metricsHistQuantileMs(const struct metrics_hist *h, double q);

struct metrics_contended
{
    char resource[METRICS_RESOURCE_MAX + 1];
    uint64_t weight;     /* space-saving count (conflicts + waits) */
    uint64_t error;      /* over-estimation bound of weight */
    uint64_t conflicts;
    uint64_t acquires;
    struct metrics_hist wait;
    struct metrics_hist hold;
};

struct metrics
{
    uint64_t acquire[METRICS_STATUSES];   /* by outcome status */
    uint64_t renew[METRICS_STATUSES];
    uint64_t release[METRICS_STATUSES];
    uint64_t keepalive[METRICS_STATUSES];
    uint64_t incidents;        /* renew/release after the lease expired */
    struct metrics_hist acquire_latency;
    struct metrics_hist wait_time;   /* queued acquires: request → grant */
    struct metrics_hist hold_time;   /* grant → clean release */
    struct metrics_contended top[METRICS_TOPK];
    unsigned n_top;
};

void metricsInit(struct metrics *m);

/* An acquire finished with @status after @seconds (queued: it waited). */
void metricsAcquire(struct metrics *m,
                    const char *resource,
                    int status,
                    double seconds,
                    int queued);
void metricsRelease(struct metrics *m,
                    const char *resource,
                    int status,
                    double held_seconds /* < 0: unknown */);
void metricsRenew(struct metrics *m, int status);
void metricsKeepalive(struct metrics *m, int status);

/* Copy out the @max most contended resources, heaviest first. */
size_t metricsTop(const struct metrics *m,
                  const struct metrics_contended **out,
                  size_t max);

/* Render in the Prometheus text format through @emit. @gauges are facts
 * read elsewhere (FSM and dispatch). */
struct metrics_gauges
{
    uint64_t sessions;
    uint64_t locks_held;
    uint64_t waiters;
    uint64_t grants;
    uint64_t releases;
    uint64_t expiries;
    uint64_t lock_delay_hits;
    uint64_t conflicts;
    uint64_t late_requests;
    uint64_t leader_changes;
    uint64_t requests;
    uint64_t in_flight;
    uint64_t batches;
    uint64_t commands;
    uint64_t forwarded;
    uint64_t expiries_proposed;
    uint64_t parked;
    uint64_t leases_tracked;
};
typedef void (*metrics_emit_fn)(void *ctx, const char *text, size_t len);
void metricsRender(const struct metrics *m,
                   const struct metrics_gauges *g,
                   metrics_emit_fn emit,
                   void *ctx);

#endif /* TN_METRICS_H_ */
