/* fsm_mem: the lock table's memory per held lock, without a cluster.
 *
 * Opens M sessions and acquires N locks in them (lock i in session i mod M,
 * resource "fill/<8 hex>/<i>", holder "fill-<j>", as tnbench's fill does),
 * 100 commands per batch, with exactly-once ids from 16 clients. Prints the
 * RSS and heap growth per lock, then times a snapshot and its restore.
 *
 *   fsm_mem [LOCKS [SESSIONS]]      (default 1000000 100000) */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsm.h"

#define PER_BATCH 100
#define CLIENTS 16

static long rssKiB(void)
{
    long pages = 0;
    long rss = 0;
    FILE *fp = fopen("/proc/self/statm", "r");

    if (fp != NULL) {
        if (fscanf(fp, "%ld %ld", &pages, &rss) != 2) {
            rss = 0;
        }
        fclose(fp);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static size_t heapBytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct filler
{
    struct fsm fsm;
    uint64_t index;
    uint64_t now;
    uint64_t seq[CLIENTS];
    Tn__Command cmds[PER_BATCH];
    Tn__Command *ptrs[PER_BATCH];
    Tn__SessionOpen opens[PER_BATCH];
    Tn__Acquire acqs[PER_BATCH];
    char text[PER_BATCH][48];
    struct fsm_result results[PER_BATCH];
    size_t n;
};

static void flush(struct filler *F)
{
    Tn__Batch b = TN__BATCH__INIT;

    if (F->n == 0) {
        return;
    }
    b.version = 1;
    b.term = 1;
    b.now_ms = F->now;
    b.n_commands = F->n;
    b.commands = F->ptrs;
    F->index++;
    fsmApply(&F->fsm, F->index, &b, F->results);
    for (size_t i = 0; i < F->n; i++) {
        if (F->results[i].status != TN__STATUS__OK) {
            fprintf(stderr, "command %zu: status %d\n", i,
                    F->results[i].status);
            exit(1);
        }
    }
    F->now += 1;
    F->n = 0;
}

static Tn__Command *next(struct filler *F, uint64_t i)
{
    Tn__Command *c = &F->cmds[F->n];
    unsigned k = (unsigned)(i % CLIENTS);

    tn__command__init(c);
    c->client_id = 1000 + k;
    c->seq = ++F->seq[k];
    F->ptrs[F->n] = c;
    return c;
}

int main(int argc, char **argv)
{
    uint64_t locks = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    uint64_t nsess = argc > 2 ? strtoull(argv[2], NULL, 10) : locks / 10;
    struct filler *F = calloc(1, sizeof *F);
    uint64_t *sessions = calloc(nsess, sizeof *sessions);
    struct fsm_config config;
    long rss0, rss1;
    size_t heap0, heap1;
    void *snap;
    size_t snap_len;
    double t0, t1, t2;
    struct fsm copy;

    if (F == NULL || sessions == NULL || nsess == 0) {
        return 1;
    }
    fsmConfigDefaults(&config);
    if (fsmInit(&F->fsm, &config) != 0) {
        return 1;
    }
    F->now = 1767225600000ULL;
    rss0 = rssKiB();
    heap0 = heapBytes();

    for (uint64_t j = 0; j < nsess; j++) {
        Tn__Command *c = next(F, j);
        Tn__SessionOpen *o = &F->opens[F->n];
        tn__session_open__init(o);
        snprintf(F->text[F->n], sizeof F->text[0], "fill-%" PRIu64, j);
        o->holder = F->text[F->n];
        o->ttl_ms = 10000;
        c->body_case = TN__COMMAND__BODY_SESSION_OPEN;
        c->session_open = o;
        F->n++;
        if (F->n == PER_BATCH) {
            uint64_t first = j + 1 - PER_BATCH;
            flush(F);
            for (size_t k = 0; k < PER_BATCH; k++) {
                sessions[first + k] = F->results[k].session;
            }
        }
    }
    if (F->n > 0) {
        uint64_t first = nsess - F->n;
        size_t n = F->n;
        flush(F);
        for (size_t k = 0; k < n; k++) {
            sessions[first + k] = F->results[k].session;
        }
    }
    for (uint64_t i = 0; i < locks; i++) {
        Tn__Command *c = next(F, i);
        Tn__Acquire *a = &F->acqs[F->n];
        tn__acquire__init(a);
        snprintf(F->text[F->n], sizeof F->text[0], "fill/%08x/%" PRIu64,
                 0x5eed1234u, i);
        a->session = sessions[i % nsess];
        a->resource = F->text[F->n];
        c->body_case = TN__COMMAND__BODY_ACQUIRE;
        c->acquire = a;
        F->n++;
        if (F->n == PER_BATCH) {
            flush(F);
        }
    }
    flush(F);
    rss1 = rssKiB();
    heap1 = heapBytes();
    printf("locks %" PRIu64 " sessions %" PRIu64 "\n", locks, nsess);
    printf("rss  %ld -> %ld KiB: %.1f B per lock\n", rss0, rss1,
           (double)(rss1 - rss0) * 1024.0 / (double)locks);
    printf("heap %zu -> %zu B: %.1f B per lock\n", heap0, heap1,
           (double)(heap1 - heap0) / (double)locks);

    t0 = seconds();
    if (fsmSnapshot(&F->fsm, &snap, &snap_len) != 0) {
        return 1;
    }
    t1 = seconds();
    if (fsmInit(&copy, &config) != 0 ||
        fsmRestore(&copy, snap, snap_len) != 0) {
        fprintf(stderr, "restore failed\n");
        return 1;
    }
    t2 = seconds();
    printf("snapshot %zu B (%.1f B per lock) in %.0f ms; restore %.0f ms\n",
           snap_len, (double)snap_len / (double)locks, (t1 - t0) * 1e3,
           (t2 - t1) * 1e3);
    fsmClose(&copy);
    free(snap);
    fsmClose(&F->fsm);
    free(sessions);
    free(F);
    return 0;
}
