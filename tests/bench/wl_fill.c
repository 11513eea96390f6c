/* tnbench: fill — hold many locks, measure the servers' memory per lock and
 * the CPU it takes to keep the sessions alive.
 *
 * Phases: open --sessions sessions → acquire --locks locks (lock i in
 * session i mod M, resource fill/<run>/<i>) → hold them --duration s →
 * close the sessions (which releases every lock). Requests are pipelined,
 * --window per connection over --clients connections. Keepalives run from
 * the first session on, paced evenly (each session every ttl/3), on their
 * own connections so that they never queue behind the fill. RSS is read
 * before the fill, after it, after the hold and after the close. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { PH_OPEN = 0, PH_ACQUIRE, PH_HOLD, PH_CLOSE, PH_DONE };

#define KA_CONNS 8
#define KA_WINDOW 256
#define TICK_MS 10

struct fconn
{
    struct rconn conn;
    struct call *calls;
    uint64_t *job;     /* job index of each call */
    uint32_t *free;    /* stack of free call indexes */
    uint32_t n_free;
    uint32_t n_calls;
};

static struct
{
    int phase;
    uint64_t next;       /* next job of the phase */
    uint64_t total;      /* jobs in the phase */
    uint64_t done;       /* finished jobs */
    uint64_t failed;     /* failed jobs of the phase */
    uint64_t nsess;
    uint64_t nlocks;
    uint64_t *session;   /* per session: id, 0 if none */
    uint64_t *safe;      /* per session: lease end as the client sees it */
    uint32_t *ttl;
    uint8_t *closing;    /* per session: close sent, no more keepalives */
    size_t *grant;       /* per lock: grant log index */
    struct fconn *fc;
    int nfc;
    struct fconn kc[KA_CONNS];
    int kc_next;
    uv_timer_t tick;
    uv_timer_t limit;
    double ka_quota;
    uint64_t ka_next;
    uint64_t ka_sent;
    uint64_t ka_ok;
    uint64_t ka_behind;  /* keepalives that found no free slot */
    uint64_t ka_sent_hold;
    uint64_t t_phase[PH_DONE + 1];
    struct proc_sample base[BENCH_MAX_NODES];
    struct proc_sample filled[BENCH_MAX_NODES];
    struct proc_sample held[BENCH_MAX_NODES];
    struct proc_sample closed[BENCH_MAX_NODES];
    struct proc_sample self_filled;
    uint64_t failed_by_phase[PH_DONE];
    uint64_t t_progress; /* last successful reply */
} F;

#define STALL_NS (30ull * 1000000000ull)

static const char *const phaseNames[] = { "open", "acquire", "hold", "close" };

static void fillPump(struct fconn *fc);
static void fillPhase(int phase);

static void sampleNodes(struct proc_sample *out)
{
    for (int i = 0; i < B->n_nodes; i++) {
        procSample(B->nodes[i].pid, &out[i]);
    }
}

static void fconnInit(struct fconn *fc, const char *addr, uint32_t window,
                      call_done_cb done)
{
    rconnInit(&fc->conn, addr, window);
    fc->n_calls = window;
    fc->calls = calloc(window, sizeof *fc->calls);
    fc->job = calloc(window, sizeof *fc->job);
    fc->free = calloc(window, sizeof *fc->free);
    if (fc->calls == NULL || fc->job == NULL || fc->free == NULL) {
        fprintf(stderr, "tnbench: out of memory\n");
        exit(3);
    }
    for (uint32_t i = 0; i < window; i++) {
        callInit(&fc->calls[i], &fc->conn, done, fc);
        fc->free[i] = window - 1 - i;
    }
    fc->n_free = window;
}

static struct call *fconnTake(struct fconn *fc, uint64_t job)
{
    uint32_t i;
    if (fc->n_free == 0) {
        return NULL;
    }
    i = fc->free[--fc->n_free];
    fc->job[i] = job;
    return &fc->calls[i];
}

static uint64_t fconnPut(struct fconn *fc, struct call *k)
{
    uint32_t i = (uint32_t)(k - fc->calls);
    fc->free[fc->n_free++] = i;
    return fc->job[i];
}

/* ------------------------------------------------------------ keepalives */

static void kaDone(struct call *k, int status, const Tn__Response *r)
{
    struct fconn *fc = k->data;
    uint64_t s = fconnPut(fc, k);
    if (status == TN__STATUS__OK && F.session[s] == k->u.ka.session) {
        uint32_t ttl = F.ttl[s];
        uint64_t su;
        if (r->body_case == TN__RESPONSE__BODY_SESSION && r->session->ttl_ms) {
            ttl = r->session->ttl_ms;
        }
        su = safeUntil(k->t_first, ttl);
        if (su > F.safe[s]) {
            F.safe[s] = su;
        }
        F.ka_ok++;
        F.t_progress = nowNs();
        if (F.phase == PH_HOLD && B->measuring) {
            histRecord(&B->h[0], nowNs() - k->t_first);
        }
    } else if (status == TN__STATUS__SESSION_EXPIRED) {
        if (!F.closing[s] && F.session[s] == k->u.ka.session) {
            /* Lost (not one we closed ourselves): its locks ended at the
             * latest when its lease did, as this client computes it. */
            B->sessions_lost++;
            F.session[s] = 0;
            for (uint64_t i = s; i < F.nlocks; i += F.nsess) {
                grantsEnd(&B->grants, F.grant[i], F.safe[s]);
            }
        }
    } else {
        benchError(status);
    }
}

static void tickCb(uv_timer_t *t)
{
    double period_ms = (double)B->ttl_ms / 3.0;
    (void)t;
    if (F.phase >= PH_DONE) {
        return;
    }
    if (nowNs() - F.t_progress > STALL_NS) {
        /* Nothing answered for 30 s (the cluster is gone?): stop here
         * rather than retrying every request to its deadline. */
        fprintf(stderr, "tnbench: fill: no successful reply for 30 s in "
                        "phase %s; giving up\n",
                phaseNames[F.phase]);
        B->aborted = true;
        if (F.phase < PH_HOLD) {
            F.failed_by_phase[F.phase] = F.failed;
        }
        F.phase = PH_DONE;
        uv_stop(B->loop);
        return;
    }
    F.ka_quota += (double)F.nsess * TICK_MS / period_ms;
    while (F.ka_quota >= 1.0) {
        uint64_t s = F.ka_next++ % F.nsess;
        struct fconn *fc = NULL;
        struct call *k;
        F.ka_quota -= 1.0;
        if (F.session[s] == 0 || F.closing[s]) {
            continue;
        }
        for (int tries = 0; tries < KA_CONNS && fc == NULL; tries++) {
            struct fconn *c = &F.kc[F.kc_next++ % KA_CONNS];
            if (c->n_free > 0) {
                fc = c;
            }
        }
        if (fc == NULL) {
            F.ka_behind++;
            F.ka_next--; /* this session again next time */
            break;
        }
        k = fconnTake(fc, s);
        callKeepalive(k, F.session[s]);
        callStart(k, B->ttl_ms);
        F.ka_sent++;
        if (F.phase == PH_HOLD) {
            F.ka_sent_hold++;
        }
    }
    if (F.ka_quota > (double)F.nsess) {
        F.ka_quota = 0;
    }
}

/* ------------------------------------------------------------------ jobs */

static void jobDone(struct call *k, int status, const Tn__Response *r)
{
    struct fconn *fc = k->data;
    uint64_t j = fconnPut(fc, k);
    uint64_t now = nowNs();
    bool ok = status == TN__STATUS__OK;
    switch (F.phase) {
    case PH_OPEN:
        if (ok && r->body_case == TN__RESPONSE__BODY_SESSION) {
            F.session[j] = r->session->session;
            F.ttl[j] = r->session->ttl_ms ? r->session->ttl_ms : B->ttl_ms;
            F.safe[j] = safeUntil(k->t_first, F.ttl[j]);
            histRecord(&B->h[2], now - k->t_first);
        } else {
            ok = false;
        }
        break;
    case PH_ACQUIRE:
        if (ok && r->body_case == TN__RESPONSE__BODY_LOCK) {
            F.grant[j] = grantsAdd(&B->grants, (uint32_t)j,
                                   (uint32_t)(j % F.nsess), r->lock->token, now);
            histRecord(&B->h[1], now - k->t_first);
        } else {
            ok = false;
        }
        break;
    case PH_CLOSE: {
        uint64_t end = k->t_first < F.safe[j] ? k->t_first : F.safe[j];
        for (uint64_t i = j; i < F.nlocks; i += F.nsess) {
            grantsEnd(&B->grants, F.grant[i], end);
        }
        F.session[j] = 0;
        if (ok) {
            histRecord(&B->h[3], now - k->t_first);
        }
        break;
    }
    default:
        break;
    }
    if (ok) {
        F.t_progress = now;
    } else {
        F.failed++;
        benchError(status == TN__STATUS__OK ? CALL_EPROTO : status);
        if (status == TN__STATUS__SESSION_EXPIRED) {
            B->sessions_lost++;
        }
    }
    F.done++;
    if (F.done == F.total) {
        fillPhase(F.phase + 1);
        return;
    }
    fillPump(fc);
}

static void fillPump(struct fconn *fc)
{
    while (F.next < F.total && fc->n_free > 0) {
        uint64_t j = F.next;
        struct call *k;
        if (F.phase == PH_ACQUIRE && F.session[j % F.nsess] == 0) {
            /* Its session never opened: count it and move on. */
            F.next++;
            F.failed++;
            F.done++;
            benchError(TN__STATUS__SESSION_EXPIRED);
            if (F.done == F.total) {
                fillPhase(F.phase + 1);
                return;
            }
            continue;
        }
        if (F.phase == PH_CLOSE && F.session[j] == 0) {
            F.next++;
            F.done++;
            if (F.done == F.total) {
                fillPhase(F.phase + 1);
                return;
            }
            continue;
        }
        F.next++;
        k = fconnTake(fc, j);
        switch (F.phase) {
        case PH_OPEN: {
            char holder[32];
            snprintf(holder, sizeof holder, "fill-%" PRIu64, j);
            callSessionOpen(k, holder, B->ttl_ms);
            break;
        }
        case PH_ACQUIRE: {
            char res[BENCH_RES_MAX];
            snprintf(res, sizeof res, "fill/%s/%" PRIu64, B->run_id, j);
            callAcquire(k, F.session[j % F.nsess], res, 0);
            break;
        }
        case PH_CLOSE:
            /* Keepalives go on for the others until they are closed. */
            F.closing[j] = 1;
            callSessionClose(k, F.session[j]);
            break;
        default:
            break;
        }
        callStart(k, 60000);
    }
}

static void progressLine(void)
{
    if (!B->quiet) {
        double secs = (double)(nowNs() - F.t_phase[F.phase]) / 1e9;
        fprintf(stderr,
                "tnbench: fill: %s: %" PRIu64 " in %.1f s (%.0f/s), %" PRIu64
                " failed\n",
                phaseNames[F.phase], F.total, secs,
                secs > 0 ? (double)F.total / secs : 0, F.failed);
    }
}

static void holdOver(void)
{
    /* benchStopMeasuring() ran: the hold is over; close everything (the
     * fill has its own time limit). */
    uv_timer_stop(&B->hard_timer);
    sampleNodes(F.held);
    fillPhase(PH_CLOSE);
}

static void fillPhase(int phase)
{
    uint64_t now = nowNs();
    if (phase > PH_OPEN && F.phase < phase) {
        if (F.phase != PH_HOLD) {
            progressLine();
        }
        F.failed_by_phase[F.phase] = F.failed;
    }
    F.phase = phase;
    F.t_phase[phase] = now;
    F.next = 0;
    F.done = 0;
    F.failed = 0;
    switch (phase) {
    case PH_OPEN:
        F.total = F.nsess;
        break;
    case PH_ACQUIRE:
        F.total = F.nlocks;
        break;
    case PH_HOLD:
        F.total = 0;
        sampleNodes(F.filled);
        procSample(0, &F.self_filled);
        B->on_stop = holdOver;
        benchStartClock(); /* warm-up, then --duration; CPU over the hold */
        return;
    case PH_CLOSE:
        F.total = F.nsess;
        break;
    case PH_DONE:
        sampleNodes(F.closed);
        uv_stop(B->loop);
        return;
    default:
        return;
    }
    for (int i = 0; i < F.nfc; i++) {
        fillPump(&F.fc[i]);
    }
}

static void limitCb(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "tnbench: fill: over its time limit, stopping\n");
    B->aborted = true;
    if (F.phase < PH_HOLD) {
        F.failed_by_phase[F.phase] = F.failed;
    }
    uv_stop(B->loop);
}

/* Appends the fill's own figures to the report. */
static void fillReport(void)
{
    double open_s = (double)(F.t_phase[PH_ACQUIRE] - F.t_phase[PH_OPEN]) / 1e9;
    double acq_s = (double)(F.t_phase[PH_HOLD] - F.t_phase[PH_ACQUIRE]) / 1e9;
    double close_s = F.t_phase[PH_DONE] > F.t_phase[PH_CLOSE]
                         ? (double)(F.t_phase[PH_DONE] - F.t_phase[PH_CLOSE]) / 1e9
                         : 0;
    double hold_s = B->t_stop > B->t_measure
                        ? (double)(B->t_stop - B->t_measure) / 1e9
                        : 0;
    B->op_secs[1] = acq_s;
    B->op_secs[2] = open_s;
    B->op_secs[3] = close_s;
    benchExtra("fill       %" PRIu64 " locks in %" PRIu64
               " sessions (ttl %u ms), %d connections x %u in flight\n",
               F.nlocks, F.nsess, B->ttl_ms, F.nfc, B->window);
    benchExtra("           open %.1f s (%.0f/s), acquire %.1f s (%.0f/s, "
               "pipelined), close %.1f s (%.0f locks/s released)\n",
               open_s, open_s > 0 ? (double)F.nsess / open_s : 0, acq_s,
               acq_s > 0 ? (double)F.nlocks / acq_s : 0, close_s,
               close_s > 0 ? (double)F.nlocks / close_s : 0);
    benchExtra("           failed: open %" PRIu64 ", acquire %" PRIu64
               ", close %" PRIu64 "; keepalives sent %" PRIu64 " (ok %" PRIu64
               ", %" PRIu64 " times the keepalive window was full)\n",
               F.failed_by_phase[PH_OPEN], F.failed_by_phase[PH_ACQUIRE],
               F.failed_by_phase[PH_CLOSE], F.ka_sent, F.ka_ok, F.ka_behind);
    benchExtra("           hold %.1f s: %.0f keepalives/s; cpu %% above is "
               "over the hold (keepalives only)\n",
               hold_s, hold_s > 0 ? (double)B->h[0].count / hold_s : 0);
    benchExtra("%-16s %10s %10s %10s %10s %12s %12s\n", "memory", "base MiB",
               "filled", "held", "closed", "B/lock fill", "B/lock held");
    for (int i = 0; i < B->n_nodes; i++) {
        char name[32];
        double per_fill = ((double)F.filled[i].rss_kb - (double)F.base[i].rss_kb) *
                          1024.0 / (double)F.nlocks;
        double per_held = ((double)F.held[i].rss_kb - (double)F.base[i].rss_kb) *
                          1024.0 / (double)F.nlocks;
        snprintf(name, sizeof name, "node%u%s", B->nodes[i].id,
                 B->nodes[i].id == B->leader_id ? " (leader)" : "");
        benchExtra("%-16s %10.1f %10.1f %10.1f %10.1f %12.0f %12.0f\n", name,
                   (double)F.base[i].rss_kb / 1024.0,
                   (double)F.filled[i].rss_kb / 1024.0,
                   (double)F.held[i].rss_kb / 1024.0,
                   (double)F.closed[i].rss_kb / 1024.0, per_fill, per_held);
    }
    benchExtra("           (B/lock: RSS growth over the base divided by the "
               "locks held, sessions included)\n");
}

int wlFill(void)
{
    F.nsess = B->sessions;
    F.nlocks = B->locks;
    if (F.nsess > F.nlocks) {
        F.nsess = F.nlocks;
    }
    if (F.nlocks > UINT32_MAX) {
        fprintf(stderr, "tnbench: fill: too many locks\n");
        return 2;
    }
    F.session = calloc(F.nsess, sizeof *F.session);
    F.safe = calloc(F.nsess, sizeof *F.safe);
    F.ttl = calloc(F.nsess, sizeof *F.ttl);
    F.closing = calloc(F.nsess, sizeof *F.closing);
    F.grant = malloc(F.nlocks * sizeof *F.grant);
    F.nfc = B->clients;
    F.fc = calloc((size_t)F.nfc, sizeof *F.fc);
    if (!F.session || !F.safe || !F.ttl || !F.closing || !F.grant || !F.fc) {
        fprintf(stderr, "tnbench: out of memory\n");
        return 3;
    }
    for (uint64_t i = 0; i < F.nlocks; i++) {
        F.grant[i] = SIZE_MAX;
    }
    B->op_names[0] = "keepalive";
    B->op_names[1] = "acquire";
    B->op_names[2] = "open";
    B->op_names[3] = "close";
    for (int i = 0; i < F.nfc; i++) {
        const char *addr = B->forward ? B->rpc_eps[i % B->n_rpc]
                                      : B->target_rpc;
        fconnInit(&F.fc[i], addr, B->window, jobDone);
    }
    for (int i = 0; i < KA_CONNS; i++) {
        fconnInit(&F.kc[i], B->target_rpc, KA_WINDOW, kaDone);
    }
    sampleNodes(F.base);
    B->before_report = fillReport;
    B->t0 = nowNs();
    F.t_progress = B->t0;
    uv_timer_init(B->loop, &F.tick);
    uv_timer_start(&F.tick, tickCb, TICK_MS, TICK_MS);
    uv_timer_init(B->loop, &F.limit);
    uv_timer_start(&F.limit, limitCb, 1800 * 1000, 0); /* 30 minutes */
    fillPhase(PH_OPEN);
    return 0;
}
