/* Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<name>/).
 *
 *   fuzz_gen_seeds DIR      (tests/fuzz/run.sh --seeds does this)
 *
 * Each seed is a small, valid (or deliberately almost valid) input in the
 * format its harness reads, built from the real encoders (protobuf-c,
 * commandEncode, fsmSnapshot), so that the fuzzer starts deep inside the
 * parsers. Output is deterministic: rerunning rewrites the same files. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "command.h"
#include "fsm.h"
#include "fsm_util.h"
#include "fuzz.h"
#include "tenure.pb-c.h"

static const char *root;
static struct fuzz_world W;
static struct fsm F;

struct out
{
    uint8_t *p;
    size_t len;
    size_t cap;
};

static void put(struct out *o, const void *data, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n) {
            cap *= 2;
        }
        o->p = realloc(o->p, cap);
        FUZZ_CHECK(o->p != NULL, "out of memory");
        o->cap = cap;
    }
    if (n > 0) {
        memcpy(o->p + o->len, data, n);
    }
    o->len += n;
}

static void putU8(struct out *o, uint8_t v)
{
    put(o, &v, 1);
}

static void putStr(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void mkdirs(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkdir %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static void writeSeed(const char *target, const char *name, const void *p,
                      size_t n)
{
    char dir[1024];
    char path[1100];
    FILE *f;

    snprintf(dir, sizeof dir, "%s/%s", root, target);
    mkdirs(dir);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static void writeOut(const char *target, const char *name, struct out *o)
{
    writeSeed(target, name, o->p, o->len);
    free(o->p);
    memset(o, 0, sizeof *o);
}

/* ---------------------------------------------------------------- frame */

static void putFrame(struct out *o, const Tn__Request *rq)
{
    size_t n = tn__request__get_packed_size(rq);
    uint8_t *b = malloc(n + 4);
    FUZZ_CHECK(b != NULL, "out of memory");
    b[0] = (uint8_t)(n >> 24);
    b[1] = (uint8_t)(n >> 16);
    b[2] = (uint8_t)(n >> 8);
    b[3] = (uint8_t)n;
    tn__request__pack(rq, b + 4);
    put(o, b, n + 4);
    free(b);
}

/* Fills @rq with request number @k (0..N_REQUESTS-1), one per body. */
#define N_REQUESTS 17
static const char *const requestNames[N_REQUESTS] = {
    "session_open", "keepalive",     "session_close", "acquire",
    "acquire_wait", "release",       "renew",         "get_lock",
    "list_locks",   "cluster",       "member_info",   "member_add",
    "member_remove", "transfer",     "snapshot_save", "snapshot_restore",
    "acquire_sem",
};

struct reqBodies
{
    Tn__SessionOpen so;
    Tn__SessionKeepalive ka;
    Tn__SessionClose sc;
    Tn__Acquire ac;
    Tn__Release rl;
    Tn__Renew rn;
    Tn__GetLock gl;
    Tn__ListLocks ll;
    Tn__ClusterStatus cs;
    Tn__MemberInfo mi;
    Tn__MemberAdd ma;
    Tn__MemberRemove mr;
    Tn__LeaderTransfer lt;
    Tn__SnapshotSave ss;
    Tn__SnapshotRestore sr;
};

static void makeRequest(int k, Tn__Request *rq, struct reqBodies *b,
                        uint8_t *snap, size_t snap_len)
{
    tn__request__init(rq);
    rq->id = (uint64_t)k + 1;
    rq->client_id = 77;
    rq->seq = (uint64_t)k + 1;
    switch (k) {
    case 0:
        tn__session_open__init(&b->so);
        b->so.holder = (char *)"dave";
        b->so.ttl_ms = 8000;
        rq->body_case = TN__REQUEST__BODY_SESSION_OPEN;
        rq->session_open = &b->so;
        break;
    case 1:
        tn__session_keepalive__init(&b->ka);
        b->ka.session = W.alice;
        rq->body_case = TN__REQUEST__BODY_KEEPALIVE;
        rq->keepalive = &b->ka;
        break;
    case 2:
        tn__session_close__init(&b->sc);
        b->sc.session = W.bob;
        rq->body_case = TN__REQUEST__BODY_SESSION_CLOSE;
        rq->session_close = &b->sc;
        break;
    case 3:
    case 4:
    case 16:
        tn__acquire__init(&b->ac);
        b->ac.session = k == 16 ? W.alice : W.bob;
        b->ac.resource = (char *)(k == 3 ? "orders/2" : k == 4 ? "cfg"
                                                                : "pool");
        b->ac.mode = k == 16 ? TN__LOCK_MODE__SEMAPHORE : TN__LOCK_MODE__EXCLUSIVE;
        b->ac.permits = k == 16 ? 3 : 0;
        b->ac.wait_ms = k == 4 ? 2000 : 0;
        b->ac.lock_delay_ms = 500;
        rq->body_case = TN__REQUEST__BODY_ACQUIRE;
        rq->acquire = &b->ac;
        if (k == 4) {
            rq->client_id = 0; /* the dispatch assigns its own */
        }
        break;
    case 5:
        tn__release__init(&b->rl);
        b->rl.resource = (char *)"orders/1";
        b->rl.token = W.token_orders;
        rq->body_case = TN__REQUEST__BODY_RELEASE;
        rq->release = &b->rl;
        break;
    case 6:
        tn__renew__init(&b->rn);
        b->rn.resource = (char *)"pool";
        b->rn.token = W.token_pool;
        b->rn.ttl_ms = 20000;
        rq->body_case = TN__REQUEST__BODY_RENEW;
        rq->renew = &b->rn;
        break;
    case 7:
        tn__get_lock__init(&b->gl);
        b->gl.resource = (char *)"orders/1";
        b->gl.stale = 1;
        b->gl.index = 2;
        b->gl.wait_ms = 100;
        rq->body_case = TN__REQUEST__BODY_GET_LOCK;
        rq->get_lock = &b->gl;
        break;
    case 8:
        tn__list_locks__init(&b->ll);
        b->ll.prefix = (char *)"o";
        b->ll.limit = 2;
        rq->body_case = TN__REQUEST__BODY_LIST_LOCKS;
        rq->list_locks = &b->ll;
        break;
    case 9:
        tn__cluster_status__init(&b->cs);
        rq->body_case = TN__REQUEST__BODY_CLUSTER_STATUS;
        rq->cluster_status = &b->cs;
        break;
    case 10:
        tn__member_info__init(&b->mi);
        b->mi.id = 2;
        b->mi.rpc_address = (char *)"127.0.0.1:7202";
        b->mi.http_address = (char *)"127.0.0.1:7302";
        b->mi.raft_address = (char *)"127.0.0.1:7102";
        rq->body_case = TN__REQUEST__BODY_MEMBER_INFO;
        rq->member_info = &b->mi;
        break;
    case 11:
        tn__member_add__init(&b->ma);
        b->ma.id = 4;
        b->ma.raft_address = (char *)"127.0.0.1:7104";
        rq->body_case = TN__REQUEST__BODY_MEMBER_ADD;
        rq->member_add = &b->ma;
        break;
    case 12:
        tn__member_remove__init(&b->mr);
        b->mr.id = 3;
        rq->body_case = TN__REQUEST__BODY_MEMBER_REMOVE;
        rq->member_remove = &b->mr;
        break;
    case 13:
        tn__leader_transfer__init(&b->lt);
        b->lt.id = 2;
        rq->body_case = TN__REQUEST__BODY_TRANSFER;
        rq->transfer = &b->lt;
        break;
    case 14:
        tn__snapshot_save__init(&b->ss);
        rq->body_case = TN__REQUEST__BODY_SNAPSHOT_SAVE;
        rq->snapshot_save = &b->ss;
        break;
    default:
        tn__snapshot_restore__init(&b->sr);
        b->sr.snapshot.data = snap;
        b->sr.snapshot.len = snap_len;
        rq->body_case = TN__REQUEST__BODY_SNAPSHOT_RESTORE;
        rq->snapshot_restore = &b->sr;
        break;
    }
}

static void frameSeeds(uint8_t *snap, size_t snap_len)
{
    struct out o = { 0 };
    struct reqBodies b;
    Tn__Request rq;
    char name[64];

    for (int k = 0; k < N_REQUESTS; k++) {
        makeRequest(k, &rq, &b, snap, snap_len);
        putU8(&o, 0);
        putFrame(&o, &rq);
        snprintf(name, sizeof name, "%02d-%s", k, requestNames[k]);
        writeOut("frame", name, &o);
    }
    /* Everything a session does, in 3-byte pieces. */
    putU8(&o, 3);
    for (int k = 0; k < 10; k++) {
        makeRequest(k, &rq, &b, snap, snap_len);
        putFrame(&o, &rq);
    }
    writeOut("frame", "50-stream-chunked", &o);
    /* A frame, then a header over the 64 KiB maximum. */
    makeRequest(3, &rq, &b, snap, snap_len);
    putU8(&o, 0);
    putFrame(&o, &rq);
    put(&o, "\x00\x01\x00\x01", 4);
    writeOut("frame", "51-too-big", &o);
    /* A group other than 0, and a truncated frame. */
    makeRequest(5, &rq, &b, snap, snap_len);
    rq.group = 1;
    putU8(&o, 0);
    putFrame(&o, &rq);
    put(&o, "\x00\x00\x00\x09\x08\x01", 6);
    writeOut("frame", "52-group-truncated", &o);
}

/* -------------------------------------------------------------- command */

static void putEntry(struct out *o, Tn__Command **cmds, size_t n,
                     uint64_t now_ms)
{
    Tn__Batch b;
    void *buf = NULL;
    size_t len = 0;

    fuzzBatchInit(&b, cmds, n, now_ms);
    b.nonce = 9;
    FUZZ_CHECK(commandEncode(&b, malloc, &buf, &len) == 0, "encode");
    put(o, buf, len);
    free(buf);
}

static void commandSeeds(uint8_t *snap, size_t snap_len)
{
    struct out o = { 0 };
    struct reqBodies b[N_REQUESTS];
    Tn__Request rq[N_REQUESTS];
    Tn__Command c[N_REQUESTS + 3];
    Tn__Command *cp[N_REQUESTS + 3];
    Tn__SessionExpire se = TN__SESSION_EXPIRE__INIT;
    Tn__Tick tick = TN__TICK__INIT;
    size_t n = 0;
    char name[64];

    /* One entry per command kind, then one with all of them. */
    for (int k = 0; k < N_REQUESTS; k++) {
        Tn__Command *x = &c[n];
        makeRequest(k, &rq[k], &b[k], snap, snap_len);
        tn__command__init(x);
        x->client_id = 500;
        x->seq = (uint64_t)k + 1;
        switch (rq[k].body_case) {
        case TN__REQUEST__BODY_SESSION_OPEN:
            x->body_case = TN__COMMAND__BODY_SESSION_OPEN;
            x->session_open = rq[k].session_open;
            break;
        case TN__REQUEST__BODY_KEEPALIVE:
            x->body_case = TN__COMMAND__BODY_KEEPALIVE;
            x->keepalive = rq[k].keepalive;
            break;
        case TN__REQUEST__BODY_SESSION_CLOSE:
            x->body_case = TN__COMMAND__BODY_SESSION_CLOSE;
            x->session_close = rq[k].session_close;
            break;
        case TN__REQUEST__BODY_ACQUIRE:
            x->body_case = TN__COMMAND__BODY_ACQUIRE;
            x->acquire = rq[k].acquire;
            break;
        case TN__REQUEST__BODY_RELEASE:
            x->body_case = TN__COMMAND__BODY_RELEASE;
            x->release = rq[k].release;
            break;
        case TN__REQUEST__BODY_RENEW:
            x->body_case = TN__COMMAND__BODY_RENEW;
            x->renew = rq[k].renew;
            break;
        case TN__REQUEST__BODY_MEMBER_INFO:
            x->body_case = TN__COMMAND__BODY_MEMBER;
            x->member = rq[k].member_info;
            break;
        case TN__REQUEST__BODY_SNAPSHOT_RESTORE:
            x->body_case = TN__COMMAND__BODY_RESTORE;
            x->restore = rq[k].snapshot_restore;
            break;
        default:
            continue;
        }
        cp[n] = x;
        snprintf(name, sizeof name, "%02d-%s", k, requestNames[k]);
        putEntry(&o, &cp[n], 1, W.now_ms + 1000);
        writeOut("command", name, &o);
        n++;
    }
    se.session = W.alice;
    se.epoch = 1;
    tn__command__init(&c[n]);
    c[n].body_case = TN__COMMAND__BODY_SESSION_EXPIRE;
    c[n].session_expire = &se;
    cp[n] = &c[n];
    putEntry(&o, &cp[n], 1, W.now_ms + 20000);
    writeOut("command", "30-expire", &o);
    n++;
    tn__command__init(&c[n]);
    c[n].body_case = TN__COMMAND__BODY_TICK;
    c[n].tick = &tick;
    cp[n] = &c[n];
    putEntry(&o, &cp[n], 1, W.now_ms + 65000);
    writeOut("command", "31-tick-late", &o);
    n++;
    /* All but the restore (which wants an empty table), in one entry. */
    {
        Tn__Command *all[N_REQUESTS + 3];
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (cp[i]->body_case != TN__COMMAND__BODY_RESTORE) {
                all[m++] = cp[i];
            }
        }
        putEntry(&o, all, m, W.now_ms + 3000);
        writeOut("command", "40-mixed", &o);
    }
    /* Malformed: bad magic, and non-zero padding. */
    putEntry(&o, &cp[0], 1, W.now_ms);
    o.p[0] ^= 0x20;
    writeOut("command", "50-bad-magic", &o);
    putEntry(&o, &cp[0], 1, W.now_ms);
    o.p[o.len - 1] = 1;
    writeOut("command", "51-bad-padding", &o);
}

/* ------------------------------------------------------------- snapshot */

static void snapshotSeed(const char *name, const struct fsm *f)
{
    void *s = NULL;
    size_t len = 0;
    FUZZ_CHECK(fsmSnapshot(f, &s, &len) == 0 && len >= 8, "snapshot");
    /* Without the checksum: the harness appends it. */
    writeSeed("snapshot", name, s, len - 8);
    free(s);
}

static void snapshotSeeds(void)
{
    struct fsm_config fc;
    struct fsm empty;
    struct fsm later;
    struct fuzz_world w;
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Command *cp = &c;
    Tn__SessionExpire se = TN__SESSION_EXPIRE__INIT;
    Tn__Batch b;

    fsmConfigDefaults(&fc);
    FUZZ_CHECK(fsmInit(&empty, &fc) == 0, "init");
    snapshotSeed("00-empty", &empty);
    fsmClose(&empty);
    snapshotSeed("01-world", &F);
    /* Alice expires: orders/1 goes into lock-delay with bob waiting,
     * tombstones "expired", the exactly-once table keeps client 42. */
    fuzzFsmSetup(&later, &w);
    se.session = w.alice;
    se.epoch = 1;
    c.body_case = TN__COMMAND__BODY_SESSION_EXPIRE;
    c.session_expire = &se;
    fuzzBatchInit(&b, &cp, 1, w.now_ms + 11000);
    fsmApply(&later, w.index + 1, &b, NULL);
    snapshotSeed("02-lock-delay", &later);
    fsmClose(&later);
}

/* ----------------------------------------------------------------- http */

static void httpSeed(const char *name, uint8_t flags, uint8_t status,
                     const char *req)
{
    struct out o = { 0 };
    putU8(&o, flags);
    putU8(&o, status);
    putU8(&o, 0);
    putU8(&o, 0);
    putStr(&o, req);
    writeOut("http", name, &o);
}

static void httpSeeds(void)
{
    static const struct
    {
        const char *name;
        uint8_t flags;
        uint8_t status;
        const char *req;
    } seeds[] = {
        { "00-acquire", 0, 0,
          "PUT /v1/locks/orders%2F1 HTTP/1.1\r\nHost: t\r\n"
          "Content-Type: application/json\r\nContent-Length: 30\r\n\r\n"
          "{\"holder\":\"w1\",\"ttl_ms\":10000}" },
        { "01-acquire-held", 0, 1,
          "PUT /v1/locks/a HTTP/1.1\r\nHost: t\r\nContent-Length: 45\r\n\r\n"
          "{\"session\":\"7\",\"wait_ms\":100,\"mode\":\"shared\"}" },
        { "02-renew", 0, 0,
          "PUT /v1/locks/a HTTP/1.1\r\nHost: t\r\nIf-Match: \"4242\"\r\n"
          "Content-Length: 16\r\n\r\n{\"ttl_ms\":20000}" },
        { "03-release", 0, 0,
          "DELETE /v1/locks/a HTTP/1.1\r\nHost: t\r\nIf-Match: 4242\r\n"
          "Idempotency-Key: rel-1\r\n\r\n" },
        { "04-get-watch", 0, 0,
          "GET /v1/locks/a?consistency=stale&index=5&wait=2s HTTP/1.1\r\n"
          "Host: t\r\n\r\n" },
        { "05-list", 0, 0,
          "GET /v1/locks?prefix=orders%2F&limit=10 HTTP/1.1\r\n\r\n" },
        { "06-fence", 0, 0, "GET /v1/fence/a?token=4242 HTTP/1.1\r\n\r\n" },
        { "07-cluster", 0, 0, "GET /v1/cluster HTTP/1.1\r\n\r\n" },
        { "08-session-open", 0, 0,
          "POST /v1/sessions HTTP/1.1\r\nContent-Length: 29\r\n\r\n"
          "{\"holder\":\"w\",\"ttl_ms\":15000}" },
        { "09-session-keepalive", 0, 0,
          "PUT /v1/sessions/99 HTTP/1.1\r\nContent-Length: 0\r\n\r\n" },
        { "10-session-close", 0, 0,
          "DELETE /v1/sessions/99 HTTP/1.1\r\n\r\n" },
        { "11-status-page", 4, 0, "GET / HTTP/1.1\r\n\r\n" },
        { "12-contention", 4, 0,
          "GET /v1/stats/contention?top=2 HTTP/1.1\r\n\r\n" },
        { "13-metrics", 0, 0, "GET /metrics HTTP/1.1\r\n\r\n" },
        { "14-health", 0, 3,
          "GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n" },
        { "15-options", 0, 0, "OPTIONS /v1/locks/a HTTP/1.1\r\n\r\n" },
        { "16-pipelined", 2, 0,
          "GET /v1/locks/a HTTP/1.1\r\n\r\n"
          "PUT /v1/locks/b HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
          "DELETE /v1/locks/b HTTP/1.1\r\nIf-Match: \"1\"\r\n\r\n"
          "GET /v1/cluster HTTP/1.1\r\nConnection: close\r\n\r\n" },
        { "17-chunked", 0, 0,
          "PUT /v1/locks/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
          "5\r\n{\"hol\r\n9\r\nder\":\"x\"}\r\n0\r\n\r\n" },
        { "18-expect-continue", 8, 0,
          "PUT /v1/locks/d HTTP/1.1\r\nExpect: 100-continue\r\n"
          "Content-Length: 2\r\n\r\n{}" },
        { "19-http10", 0, 0, "GET /v1/locks/a HTTP/1.0\r\n\r\n" },
        { "20-garbage", 0, 0, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03" },
        { "21-not-leader", 0, 6, "PUT /v1/locks/e HTTP/1.1\r\n\r\n" },
        { "22-head", 0, 0, "HEAD /v1/locks/a HTTP/1.1\r\n\r\n" },
        { "23-http2-preface", 0, 0,
          "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" },
        { "24-refused", 1, 0, "GET /v1/locks/a HTTP/1.1\r\n\r\n" },
        { "25-bad-resource", 0, 0,
          "PUT /v1/locks/a%00b HTTP/1.1\r\n\r\n" },
        { "26-request-id", 0, 9,
          "PUT /v1/locks/f HTTP/1.1\r\nX-Request-Id: abc-123\r\n"
          "Content-Length: 14\r\n\r\n{\"mode\":\"bad\"}" },
    };
    char name[64];

    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        httpSeed(seeds[i].name, seeds[i].flags, seeds[i].status,
                 seeds[i].req);
    }
    /* A canned answer: a lock held by two holders, for GET and PUT. */
    {
        Tn__Response r = TN__RESPONSE__INIT;
        Tn__LockInfo li = TN__LOCK_INFO__INIT;
        Tn__Holder h = TN__HOLDER__INIT;
        Tn__Holder *hs[2] = { &h, &h };
        struct out o = { 0 };
        size_t n;
        uint8_t *buf;

        h.session = 5;
        h.holder = (char *)"x";
        h.token = 99;
        h.acquired_at_ms = 1;
        h.ttl_ms = 1000;
        h.expires_in_ms = 10;
        li.resource = (char *)"a";
        li.mode = TN__LOCK_MODE__SHARED;
        li.token = 99;
        li.generation = 1;
        li.n_holders = 2;
        li.holders = hs;
        r.status = TN__STATUS__OK;
        r.body_case = TN__RESPONSE__BODY_LOCK;
        r.lock = &li;
        n = tn__response__get_packed_size(&r);
        buf = malloc(n);
        FUZZ_CHECK(buf != NULL, "out of memory");
        tn__response__pack(&r, buf);
        putU8(&o, 0);
        putU8(&o, 0);
        putU8(&o, (uint8_t)(n >> 8));
        putU8(&o, (uint8_t)n);
        put(&o, buf, n);
        putStr(&o, "GET /v1/locks/a HTTP/1.1\r\n\r\n"
                   "PUT /v1/locks/a HTTP/1.1\r\n\r\n");
        snprintf(name, sizeof name, "30-canned-lock");
        writeOut("http", name, &o);
        free(buf);
    }
}

/* ----------------------------------------------------------------- json */

static void jsonSeeds(void)
{
    static const struct
    {
        uint8_t route;
        uint8_t status;
        const char *body;
    } seeds[] = {
        { 0, 0, "{\"holder\":\"w1\",\"ttl_ms\":10000,\"wait_ms\":500}" },
        { 0, 1, "{\"mode\":\"semaphore\",\"permits\":3,\"session\":\"42\"}" },
        { 0, 2, "{\"mode\":\"shared\",\"lock_delay_ms\":1000,\"holder\":"
                "\"\\u00e9t\\u00e9\"}" },
        { 1, 0, "{\"ttl_ms\":20000}" },
        { 2, 0, "{\"holder\":\"svc-a\",\"ttl_ms\":15000}" },
        { 3, 0, "" },
        { 4, 0, "{\"session\":18446744073709551615}" },
        { 5, 0, "{}" },
        { 0, 9, "{\"holder\":\"a\\u0000b\"}" },
        { 0, 0, "{\"ttl_ms\":1e3,\"ttl_ms\":2}" },
        { 0, 0, "[1,2,3]" },
        { 0, 0, "{\"unknown\":true}" },
        { 2, 0, "{\"holder\":null,\"ttl_ms\":\"5\"}" },
        { 0, 0, "{\"holder\":\"x\"" },
    };
    char name[64];

    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        struct out o = { 0 };
        putU8(&o, seeds[i].route);
        putU8(&o, seeds[i].status);
        putStr(&o, seeds[i].body);
        snprintf(name, sizeof name, "%02zu", i);
        writeOut("json", name, &o);
    }
}

/* ------------------------------------------------------------ http_text */

static void textSeeds(void)
{
    static const struct
    {
        uint8_t sel;
        const char *text;
        size_t len; /* 0: strlen */
    } seeds[] = {
        { 0, "orders/42", 0 },
        { 0, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92", 0 },
        { 0, "a\x7f", 0 },
        { 0, "\xc2\x85", 0 },
        { 0, "\xed\xa0\x80", 0 },
        { 0, "\xc0\xaf", 0 },
        { 0, "a\0b", 3 },
        { 1, "orders%2F42", 0 },
        { 1, "%E2%82%AC%zz", 0 },
        { 1, "%4", 0 },
        { 1, "a+b%20c", 0 },
        { 2, "\"4587520\"", 0 },
        { 2, " 42 ", 0 },
        { 2, "W/\"1\"", 0 },
        { 2, "\"18446744073709551616\"", 0 },
        { 2, "*", 0 },
    };
    char name[64];

    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        struct out o = { 0 };
        putU8(&o, seeds[i].sel);
        put(&o, seeds[i].text,
            seeds[i].len ? seeds[i].len : strlen(seeds[i].text));
        snprintf(name, sizeof name, "%02zu", i);
        writeOut("http_text", name, &o);
    }
}

int main(int argc, char **argv)
{
    void *snap = NULL;
    size_t snap_len = 0;
    struct fsm_config fc;
    struct fsm small;
    Tn__Command c = TN__COMMAND__INIT;
    Tn__Command *cp = &c;
    Tn__SessionOpen so = TN__SESSION_OPEN__INIT;
    Tn__Batch b;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    fuzzFsmSetup(&F, &W);
    /* A small snapshot (one session) for the restore requests. */
    fsmConfigDefaults(&fc);
    FUZZ_CHECK(fsmInit(&small, &fc) == 0, "init");
    so.holder = (char *)"r";
    so.ttl_ms = 5000;
    c.body_case = TN__COMMAND__BODY_SESSION_OPEN;
    c.session_open = &so;
    fuzzBatchInit(&b, &cp, 1, FUZZ_T0);
    fsmApply(&small, 1, &b, NULL);
    FUZZ_CHECK(fsmSnapshot(&small, &snap, &snap_len) == 0, "snapshot");
    fsmClose(&small);

    frameSeeds(snap, snap_len);
    commandSeeds(snap, snap_len);
    snapshotSeeds();
    httpSeeds();
    jsonSeeds();
    textSeeds();
    free(snap);
    fsmClose(&F);
    printf("seeds written under %s\n", root);
    return 0;
}
