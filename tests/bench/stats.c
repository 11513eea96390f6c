/* tnbench: latency histograms, the grant log and its safety check, and
 * /proc sampling of CPU and memory. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* ------------------------------------------------------------ histogram */

static unsigned histIndex(uint64_t v)
{
    unsigned e;
    if (v < HIST_SUB) {
        return (unsigned)v;
    }
    e = 63u - (unsigned)__builtin_clzll(v); /* e >= HIST_SUB_BITS */
    return (e - HIST_SUB_BITS + 1) * HIST_SUB +
           (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The middle of bucket @i. */
static uint64_t histValue(unsigned i)
{
    unsigned e;
    uint64_t lo;
    uint64_t width;
    if (i < HIST_SUB) {
        return i;
    }
    e = i / HIST_SUB + HIST_SUB_BITS - 1;
    lo = (uint64_t)(HIST_SUB + i % HIST_SUB) << (e - HIST_SUB_BITS);
    width = (uint64_t)1 << (e - HIST_SUB_BITS);
    return lo + width / 2;
}

void histRecord(struct hist *h, uint64_t ns)
{
    h->b[histIndex(ns)]++;
    h->count++;
    h->sum += ns;
    if (ns > h->max) {
        h->max = ns;
    }
}

uint64_t histPercentile(const struct hist *h, double p)
{
    uint64_t rank;
    uint64_t seen = 0;
    if (h->count == 0) {
        return 0;
    }
    rank = (uint64_t)(p * (double)h->count + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > h->count) {
        rank = h->count;
    }
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = histValue(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

void histMerge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        into->b[i] += from->b[i];
    }
    into->count += from->count;
    into->sum += from->sum;
    if (from->max > into->max) {
        into->max = from->max;
    }
}

/* ---------------------------------------------------------------- grants */

size_t grantsAdd(struct grants *g,
                 uint32_t res,
                 uint32_t client,
                 uint64_t token,
                 uint64_t t_grant)
{
    struct grant *r;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 65536;
        struct grant *v;
        if (g->limit != 0 && g->n >= g->limit) {
            g->dropped++;
            return SIZE_MAX;
        }
        v = realloc(g->v, cap * sizeof *v);
        if (v == NULL) {
            g->dropped++;
            return SIZE_MAX;
        }
        g->v = v;
        g->cap = cap;
    }
    r = &g->v[g->n];
    r->res = res;
    r->client = client;
    r->token = token;
    r->t_grant = t_grant;
    r->t_end = UINT64_MAX;
    return g->n++;
}

void grantsEnd(struct grants *g, size_t i, uint64_t t_end)
{
    if (i < g->n && t_end < g->v[i].t_end) {
        g->v[i].t_end = t_end;
    }
}

static int grantCmp(const void *pa, const void *pb)
{
    const struct grant *a = pa;
    const struct grant *b = pb;
    if (a->res != b->res) {
        return a->res < b->res ? -1 : 1;
    }
    if (a->t_grant != b->t_grant) {
        return a->t_grant < b->t_grant ? -1 : 1;
    }
    if (a->token != b->token) {
        return a->token < b->token ? -1 : 1;
    }
    return 0;
}

static int tokenCmp(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa;
    uint64_t b = *(const uint64_t *)pb;
    return a < b ? -1 : a > b;
}

static double relMs(uint64_t t)
{
    if (t == UINT64_MAX) {
        return -1;
    }
    return (double)(t - B->t0) / 1e6;
}

/* Per resource, in order of grant: every grant must begin after every
 * earlier grant's window ended, and carry a larger token. */
void grantsCheck(struct grants *g, struct safety *out, int show)
{
    int shown = 0;
    uint64_t *tokens;
    memset(out, 0, sizeof *out);
    if (g->n == 0) {
        return;
    }
    qsort(g->v, g->n, sizeof *g->v, grantCmp);
    for (size_t i = 0; i < g->n;) {
        size_t j = i;
        uint64_t max_end = g->v[i].t_end;
        size_t max_end_at = i;
        out->resources++;
        for (j = i + 1; j < g->n && g->v[j].res == g->v[i].res; j++) {
            const struct grant *p = &g->v[j - 1];
            const struct grant *c = &g->v[j];
            if (c->t_grant < max_end) {
                out->overlaps++;
                if (shown++ < show) {
                    const struct grant *o = &g->v[max_end_at];
                    fprintf(stderr,
                            "VIOLATION overlap: resource %u: client %u token "
                            "%" PRIu64 " held [%.3f, %.3f] ms; client %u "
                            "token %" PRIu64 " granted at %.3f ms\n",
                            c->res, o->client, o->token, relMs(o->t_grant),
                            relMs(o->t_end), c->client, c->token,
                            relMs(c->t_grant));
                }
            }
            if (c->token <= p->token) {
                out->token_order++;
                if (shown++ < show) {
                    fprintf(stderr,
                            "VIOLATION token order: resource %u: token "
                            "%" PRIu64 " (client %u, %.3f ms) after token "
                            "%" PRIu64 " (client %u, %.3f ms)\n",
                            c->res, c->token, c->client, relMs(c->t_grant),
                            p->token, p->client, relMs(p->t_grant));
                }
            }
            /* UINT64_MAX (never released) is the latest end of all. */
            if (c->t_end > max_end) {
                max_end = c->t_end;
                max_end_at = j;
            }
        }
        i = j;
    }
    out->checked = g->n;
    /* Tokens are unique cluster-wide: no two grants may share one. */
    tokens = malloc(g->n * sizeof *tokens);
    if (tokens != NULL) {
        for (size_t i = 0; i < g->n; i++) {
            tokens[i] = g->v[i].token;
        }
        qsort(tokens, g->n, sizeof *tokens, tokenCmp);
        for (size_t i = 1; i < g->n; i++) {
            if (tokens[i] == tokens[i - 1]) {
                out->duplicate_token++;
                if (shown++ < show) {
                    fprintf(stderr,
                            "VIOLATION token %" PRIu64 " granted twice\n",
                            tokens[i]);
                }
            }
        }
        free(tokens);
    }
}

/* ------------------------------------------------------------ processes */

static int readFile(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;
    if (f == NULL) {
        return -1;
    }
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

static uint64_t statusKb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (p == NULL) {
        return 0;
    }
    p += strlen(key);
    while (*p == ' ' || *p == '\t' || *p == ':') {
        p++;
    }
    return strtoull(p, NULL, 10);
}

int procSample(pid_t pid, struct proc_sample *s)
{
    char path[64];
    char buf[4096];
    const char *p;
    unsigned long long ut = 0;
    unsigned long long st = 0;
    memset(s, 0, sizeof *s);
    s->t_ns = nowNs();
    if (pid == 0) {
        snprintf(path, sizeof path, "/proc/self/stat");
    } else {
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    }
    if (readFile(path, buf, sizeof buf) != 0) {
        return -1;
    }
    /* Fields after the command name, which may hold spaces and ')'. */
    p = strrchr(buf, ')');
    if (p == NULL) {
        return -1;
    }
    /* ") S ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     *  utime stime" */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &ut, &st) != 2) {
        return -1;
    }
    s->cpu_ticks = ut + st;
    if (pid == 0) {
        snprintf(path, sizeof path, "/proc/self/status");
    } else {
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    }
    if (readFile(path, buf, sizeof buf) != 0) {
        return -1;
    }
    s->rss_kb = statusKb(buf, "VmRSS");
    s->hwm_kb = statusKb(buf, "VmHWM");
    s->ok = true;
    return 0;
}

double procCpuPercent(const struct proc_sample *a, const struct proc_sample *b)
{
    long hz = sysconf(_SC_CLK_TCK);
    double secs;
    if (!a->ok || !b->ok || b->t_ns <= a->t_ns || hz <= 0) {
        return -1;
    }
    secs = (double)(b->t_ns - a->t_ns) / 1e9;
    return 100.0 * (double)(b->cpu_ticks - a->cpu_ticks) / (double)hz / secs;
}

bool procIsTenured(pid_t pid)
{
    char path[64];
    char buf[512];
    const char *base;
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    if (pid <= 0 || readFile(path, buf, sizeof buf) != 0) {
        return false;
    }
    base = strrchr(buf, '/');
    base = base ? base + 1 : buf;
    return strcmp(base, "tenured") == 0;
}

/* The checker must catch what it exists to catch: a synthetic log with
 * known violations (run by `tnbench --self-test` and the smoke test). */
int grantsSelfTest(void)
{
    static const struct
    {
        uint32_t res;
        uint64_t token;
        uint64_t t_grant;
        uint64_t t_end; /* 0: never released */
    } cases[] = {
        { 1, 1, 100, 200 },  { 1, 2, 210, 300 },  /* fine */
        { 1, 3, 300, 400 },                       /* fine: touching */
        { 2, 5, 100, 200 },  { 2, 6, 150, 250 },  /* overlap */
        { 3, 9, 100, 200 },  { 3, 8, 300, 400 },  /* token went down */
        { 4, 12, 100, 0 },   { 4, 13, 500, 600 }, /* overlap: never released */
        { 5, 1, 100, 200 },                       /* token 1 again */
    };
    struct grants g;
    struct safety s;
    memset(&g, 0, sizeof g);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t at = grantsAdd(&g, cases[i].res, (uint32_t)i, cases[i].token,
                              cases[i].t_grant);
        if (cases[i].t_end != 0) {
            grantsEnd(&g, at, cases[i].t_end);
        }
    }
    grantsCheck(&g, &s, 0);
    free(g.v);
    printf("self-test  checker found %" PRIu64 " overlaps (want 2), %" PRIu64
           " token order (want 1), %" PRIu64 " duplicates (want 1)\n",
           s.overlaps, s.token_order, s.duplicate_token);
    return s.overlaps == 2 && s.token_order == 1 && s.duplicate_token == 1 &&
                   s.checked == sizeof cases / sizeof cases[0]
               ? 0
               : 1;
}
