/* libtenure against fake daemons: leader discovery, redirects, retries with
 * the same (client_id, seq), out-of-order replies, deadlines, keepalives and
 * the jeopardy / safe / lost callbacks, close.
 *
 * The library's sources are compiled into this test. The fake daemons run
 * on one thread with poll(): each listens on 127.0.0.1 (port 0), speaks the
 * real framing and protobuf messages, and shares one small lock table with
 * an exactly-once reply table, so a retried request gets the original
 * answer. Knobs make a node redirect, stay silent, drop the connection after
 * applying a request, answer COMMIT_UNKNOWN or NO_QUORUM, fail keepalives,
 * or hold replies back and send them in reverse order. */
#include "lib/test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../client/check.c"
#include "../../client/client.c"
#include "../../client/endpoint.c"
#include "../../client/engine.c"
#include "../../client/errors.c"
#include "../../client/lease.c"
#include "../../client/read.c"
#include "../../client/session.c"

/* ------------------------------------------------------ fake daemons */

enum fake_mode {
    FAKE_LEADER = 0,  /* answers everything */
    FAKE_FOLLOWER,    /* NOT_LEADER naming the leader (node leader_idx) */
    FAKE_NO_LEADER,   /* NOT_LEADER without a leader */
    FAKE_SILENT,      /* accepts and reads, never answers */
    FAKE_DOWN         /* not listening: connection refused */
};

enum keepalive_mode {
    KA_OK = 0,
    KA_SILENT,
    KA_EXPIRED,
    KA_NO_QUORUM
};

#define FAKE_NODES 3
#define FAKE_CONNS 64
#define FAKE_LOG 8192
#define FAKE_ITEMS 1024

struct fake_log_entry
{
    int node;
    int body;
    uint64_t client_id;
    uint64_t seq;
    uint64_t at_ns; /* leaseNow() on arrival */
};

struct fake_conn
{
    int fd; /* -1: free slot */
    int node;
    struct tn_frame_reader reader;
};

struct fake_session
{
    uint64_t id;
    uint32_t ttl_ms;
    char holder[64];
    bool alive;
};

struct fake_lock
{
    char resource[520];
    uint64_t token;
    uint64_t session;
    bool held;
};

struct fake_reply
{
    uint64_t client_id;
    uint64_t seq;
    uint8_t *packed; /* Response without id */
    size_t len;
};

struct held_reply
{
    int fd;
    uint8_t *frame;
    size_t len;
};

struct fake
{
    pthread_t thread;
    pthread_mutex_t mu;
    int wake[2];
    bool stop;
    int lfd[FAKE_NODES];
    int port[FAKE_NODES];
    enum fake_mode mode[FAKE_NODES];
    int leader_idx;
    struct fake_conn conns[FAKE_CONNS];

    /* Knobs (mu). */
    int drop_after_apply;   /* close the connection instead of answering */
    int commit_unknown;     /* apply, answer COMMIT_UNKNOWN */
    int no_quorum;          /* answer NO_QUORUM without applying */
    enum keepalive_mode ka_mode;
    char ignore_resource[64]; /* acquires of it: no answer, not applied */
    size_t big_message;       /* pad cluster_status answers to this size */
    int reorder;            /* hold acquire replies until this many */
    struct held_reply held[FAKE_ITEMS];
    int n_held;

    /* State (mu). */
    uint64_t next_session;
    uint64_t next_token;
    struct fake_session sessions[FAKE_ITEMS];
    int n_sessions;
    struct fake_lock locks[FAKE_ITEMS];
    int n_locks;
    struct fake_reply replies[FAKE_ITEMS * 4];
    int n_replies;
    unsigned applied;       /* mutations applied (not replays) */
    unsigned keepalives;    /* keepalives answered OK */
    struct fake_log_entry log[FAKE_LOG];
    int n_log;
};

static void fakeSendFrame(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        buf += w;
        len -= (size_t)w;
    }
}

static void fakeSend(struct fake *f, int fd, Tn__Response *resp, bool hold)
{
    uint8_t *frame;
    size_t len;
    if (tn_frame_encode(&resp->base, TN_FRAME_MAX_DEFAULT, &frame, &len) !=
        0) {
        return;
    }
    if (hold && f->n_held < FAKE_ITEMS) {
        f->held[f->n_held].fd = fd;
        f->held[f->n_held].frame = frame;
        f->held[f->n_held].len = len;
        f->n_held++;
        if (f->n_held >= f->reorder) {
            for (int i = f->n_held - 1; i >= 0; i--) {
                fakeSendFrame(f->held[i].fd, f->held[i].frame,
                              f->held[i].len);
                free(f->held[i].frame);
            }
            f->n_held = 0;
        }
        return;
    }
    fakeSendFrame(fd, frame, len);
    free(frame);
}

static struct fake_session *fakeSession(struct fake *f, uint64_t id)
{
    for (int i = 0; i < f->n_sessions; i++) {
        if (f->sessions[i].id == id && f->sessions[i].alive) {
            return &f->sessions[i];
        }
    }
    return NULL;
}

static struct fake_lock *fakeLock(struct fake *f, const char *resource)
{
    for (int i = 0; i < f->n_locks; i++) {
        if (f->locks[i].held && strcmp(f->locks[i].resource, resource) == 0) {
            return &f->locks[i];
        }
    }
    return NULL;
}

/* Apply a mutation to the lock table; fills @resp (which may point at the
 * static storage below: the caller packs it right away). */
static void fakeApply(struct fake *f, const Tn__Request *rq, Tn__Response *resp)
{
    static Tn__SessionInfo si;
    static Tn__LockInfo li;
    static Tn__Holder h;
    static Tn__Holder *hs[1];
    struct fake_session *s;
    struct fake_lock *l;

    tn__session_info__init(&si);
    tn__lock_info__init(&li);
    tn__holder__init(&h);
    hs[0] = &h;
    resp->status = TN__STATUS__OK;
    f->applied++;
    switch (rq->body_case) {
    case TN__REQUEST__BODY_SESSION_OPEN:
        s = &f->sessions[f->n_sessions++];
        s->id = ++f->next_session;
        s->ttl_ms = rq->session_open->ttl_ms < 100 ? 100
                                                   : rq->session_open->ttl_ms;
        snprintf(s->holder, sizeof s->holder, "%s",
                 rq->session_open->holder);
        s->alive = true;
        si.session = s->id;
        si.epoch = 1;
        si.ttl_ms = s->ttl_ms;
        resp->body_case = TN__RESPONSE__BODY_SESSION;
        resp->session = &si;
        break;
    case TN__REQUEST__BODY_SESSION_CLOSE:
        s = fakeSession(f, rq->session_close->session);
        if (s == NULL) {
            resp->status = TN__STATUS__SESSION_EXPIRED;
            break;
        }
        s->alive = false;
        for (int i = 0; i < f->n_locks; i++) {
            if (f->locks[i].session == s->id) {
                f->locks[i].held = false;
            }
        }
        break;
    case TN__REQUEST__BODY_ACQUIRE:
        s = fakeSession(f, rq->acquire->session);
        if (s == NULL) {
            resp->status = TN__STATUS__SESSION_EXPIRED;
            break;
        }
        l = fakeLock(f, rq->acquire->resource);
        resp->body_case = TN__RESPONSE__BODY_LOCK;
        resp->lock = &li;
        li.resource = rq->acquire->resource;
        if (l != NULL && l->session != s->id) {
            struct fake_session *o = fakeSession(f, l->session);
            resp->status = TN__STATUS__HELD;
            h.session = l->session;
            h.token = l->token;
            h.holder = o != NULL ? o->holder : "";
            h.acquired_at_ms = 1700000000000ULL;
            h.expires_in_ms = 1234;
            li.holders = hs;
            li.n_holders = 1;
            li.queue_len = 2;
            break;
        }
        if (l == NULL) {
            l = &f->locks[f->n_locks++];
            snprintf(l->resource, sizeof l->resource, "%s",
                     rq->acquire->resource);
            l->token = ++f->next_token;
            l->session = s->id;
            l->held = true;
        }
        li.token = l->token;
        li.generation = l->token;
        li.ttl_ms = s->ttl_ms;
        li.session = s->id;
        break;
    case TN__REQUEST__BODY_RELEASE:
    case TN__REQUEST__BODY_RENEW: {
        const char *res = rq->body_case == TN__REQUEST__BODY_RELEASE
                              ? rq->release->resource
                              : rq->renew->resource;
        uint64_t token = rq->body_case == TN__REQUEST__BODY_RELEASE
                             ? rq->release->token
                             : rq->renew->token;
        l = fakeLock(f, res);
        if (l == NULL) {
            resp->status = TN__STATUS__LEASE_EXPIRED;
        } else if (l->token != token) {
            resp->status = TN__STATUS__TOKEN_MISMATCH;
        } else if (rq->body_case == TN__REQUEST__BODY_RELEASE) {
            l->held = false;
        } else {
            s = fakeSession(f, l->session);
            resp->body_case = TN__RESPONSE__BODY_LOCK;
            resp->lock = &li;
            li.token = token;
            li.ttl_ms = s != NULL ? s->ttl_ms : 0;
        }
        break;
    }
    default:
        resp->status = TN__STATUS__INVALID_ARGUMENT;
        break;
    }
}

static void fakeRead(struct fake *f, int node, const Tn__Request *rq,
                     Tn__Response *resp)
{
    static Tn__LockInfo li;
    static Tn__Holder h;
    static Tn__Holder *hs[1];
    static Tn__ClusterInfo ci;
    static char rpc[64];
    struct fake_lock *l;

    resp->status = TN__STATUS__OK;
    if (rq->body_case == TN__REQUEST__BODY_CLUSTER_STATUS) {
        static char big[1 << 16];
        if (f->big_message > 0 && f->big_message < sizeof big) {
            memset(big, 'x', f->big_message);
            big[f->big_message] = '\0';
            resp->message = big;
        }
        tn__cluster_info__init(&ci);
        snprintf(rpc, sizeof rpc, "127.0.0.1:%d", f->port[f->leader_idx]);
        ci.node_id = (uint64_t)node + 1;
        ci.leader_id = (uint64_t)f->leader_idx + 1;
        ci.leader_rpc = rpc;
        ci.term = 7;
        ci.state = f->mode[node] == FAKE_LEADER ? "leader" : "follower";
        resp->body_case = TN__RESPONSE__BODY_CLUSTER;
        resp->cluster = &ci;
        return;
    }
    if (rq->body_case == TN__REQUEST__BODY_GET_LOCK) {
        tn__lock_info__init(&li);
        tn__holder__init(&h);
        hs[0] = &h;
        li.resource = rq->get_lock->resource;
        l = fakeLock(f, rq->get_lock->resource);
        if (l != NULL) {
            struct fake_session *s = fakeSession(f, l->session);
            h.session = l->session;
            h.token = l->token;
            h.holder = s != NULL ? s->holder : "";
            li.holders = hs;
            li.n_holders = 1;
            li.generation = l->token;
        }
        resp->body_case = TN__RESPONSE__BODY_LOCK;
        resp->lock = &li;
        return;
    }
    resp->status = TN__STATUS__INVALID_ARGUMENT;
}

static struct fake_reply *fakeReplyFind(struct fake *f, uint64_t cid,
                                        uint64_t seq)
{
    for (int i = 0; i < f->n_replies; i++) {
        if (f->replies[i].client_id == cid && f->replies[i].seq == seq) {
            return &f->replies[i];
        }
    }
    return NULL;
}

static bool isMutation(int body)
{
    return body == TN__REQUEST__BODY_SESSION_OPEN ||
           body == TN__REQUEST__BODY_SESSION_CLOSE ||
           body == TN__REQUEST__BODY_ACQUIRE ||
           body == TN__REQUEST__BODY_RELEASE ||
           body == TN__REQUEST__BODY_RENEW ||
           body == TN__REQUEST__BODY_KEEPALIVE;
}

/* Handle one request; returns false to close the connection. */
static bool fakeHandle(struct fake *f, struct fake_conn *fc,
                       const Tn__Request *rq)
{
    Tn__Response resp = TN__RESPONSE__INIT;
    int node = fc->node;
    bool mutation = isMutation(rq->body_case);
    bool linear_read = rq->body_case == TN__REQUEST__BODY_GET_LOCK &&
                       !rq->get_lock->stale;
    char rpc[64];

    if (f->n_log < FAKE_LOG) {
        f->log[f->n_log].node = node;
        f->log[f->n_log].body = rq->body_case;
        f->log[f->n_log].client_id = rq->client_id;
        f->log[f->n_log].seq = rq->seq;
        f->log[f->n_log].at_ns = leaseNow();
        f->n_log++;
    }
    resp.id = rq->id;
    if (f->mode[node] == FAKE_SILENT) {
        return true;
    }
    if (f->mode[node] != FAKE_LEADER && (mutation || linear_read)) {
        resp.status = TN__STATUS__NOT_LEADER;
        if (f->mode[node] == FAKE_FOLLOWER) {
            snprintf(rpc, sizeof rpc, "127.0.0.1:%d", f->port[f->leader_idx]);
            resp.leader_rpc = rpc;
            resp.leader_id = (uint64_t)f->leader_idx + 1;
        }
        fakeSend(f, fc->fd, &resp, false);
        return true;
    }
    if (!mutation) {
        fakeRead(f, node, rq, &resp);
        fakeSend(f, fc->fd, &resp, false);
        return true;
    }
    if (rq->body_case == TN__REQUEST__BODY_KEEPALIVE) {
        static Tn__SessionInfo si;
        struct fake_session *s = fakeSession(f, rq->keepalive->session);
        switch (f->ka_mode) {
        case KA_SILENT:
            return true;
        case KA_NO_QUORUM:
            resp.status = TN__STATUS__NO_QUORUM;
            break;
        case KA_EXPIRED:
            if (s != NULL) {
                s->alive = false;
            }
            resp.status = TN__STATUS__SESSION_EXPIRED;
            break;
        case KA_OK:
            if (s == NULL) {
                resp.status = TN__STATUS__SESSION_EXPIRED;
                break;
            }
            tn__session_info__init(&si);
            si.session = s->id;
            si.ttl_ms = s->ttl_ms;
            si.epoch = 1;
            resp.body_case = TN__RESPONSE__BODY_SESSION;
            resp.session = &si;
            f->keepalives++;
            break;
        }
        fakeSend(f, fc->fd, &resp, false);
        return true;
    }
    if (rq->body_case == TN__REQUEST__BODY_ACQUIRE &&
        f->ignore_resource[0] != '\0' &&
        strcmp(rq->acquire->resource, f->ignore_resource) == 0) {
        return true;
    }
    if (f->no_quorum > 0) {
        f->no_quorum--;
        resp.status = TN__STATUS__NO_QUORUM;
        fakeSend(f, fc->fd, &resp, false);
        return true;
    }
    {
        struct fake_reply *saved = fakeReplyFind(f, rq->client_id, rq->seq);
        if (saved != NULL) {
            /* Exactly-once: the original answer, marked replayed. */
            Tn__Response *old =
                tn__response__unpack(NULL, saved->len, saved->packed);
            old->id = rq->id;
            if (old->body_case == TN__RESPONSE__BODY_LOCK) {
                old->lock->replayed = true;
            }
            fakeSend(f, fc->fd, old, false);
            tn__response__free_unpacked(old, NULL);
            return true;
        }
    }
    fakeApply(f, rq, &resp);
    if (rq->client_id != 0 && f->n_replies < FAKE_ITEMS * 4) {
        struct fake_reply *r = &f->replies[f->n_replies++];
        uint64_t id = resp.id;
        resp.id = 0;
        r->client_id = rq->client_id;
        r->seq = rq->seq;
        r->len = protobuf_c_message_get_packed_size(&resp.base);
        r->packed = malloc(r->len);
        protobuf_c_message_pack(&resp.base, r->packed);
        resp.id = id;
    }
    if (f->drop_after_apply > 0) {
        f->drop_after_apply--;
        return false;
    }
    if (f->commit_unknown > 0) {
        f->commit_unknown--;
        Tn__Response cu = TN__RESPONSE__INIT;
        cu.id = rq->id;
        cu.status = TN__STATUS__COMMIT_UNKNOWN;
        fakeSend(f, fc->fd, &cu, false);
        return true;
    }
    fakeSend(f, fc->fd, &resp,
             f->reorder > 1 && rq->body_case == TN__REQUEST__BODY_ACQUIRE);
    return true;
}

static void fakeCloseConn(struct fake_conn *fc)
{
    close(fc->fd);
    fc->fd = -1;
    tn_frame_reader_close(&fc->reader);
}

static void *fakeMain(void *arg)
{
    struct fake *f = arg;
    struct pollfd pfds[1 + FAKE_NODES + FAKE_CONNS];
    int owner[1 + FAKE_NODES + FAKE_CONNS];

    for (;;) {
        int n = 0;
        pthread_mutex_lock(&f->mu);
        if (f->stop) {
            pthread_mutex_unlock(&f->mu);
            break;
        }
        pfds[n].fd = f->wake[0];
        pfds[n].events = POLLIN;
        owner[n++] = -1;
        for (int i = 0; i < FAKE_NODES; i++) {
            if (f->lfd[i] >= 0) {
                pfds[n].fd = f->lfd[i];
                pfds[n].events = POLLIN;
                owner[n++] = 1000 + i;
            }
        }
        for (int i = 0; i < FAKE_CONNS; i++) {
            if (f->conns[i].fd >= 0) {
                pfds[n].fd = f->conns[i].fd;
                pfds[n].events = POLLIN;
                owner[n++] = i;
            }
        }
        pthread_mutex_unlock(&f->mu);

        if (poll(pfds, (nfds_t)n, 100) <= 0) {
            continue;
        }
        pthread_mutex_lock(&f->mu);
        for (int k = 0; k < n; k++) {
            if (pfds[k].revents == 0) {
                continue;
            }
            if (owner[k] == -1) {
                char buf[64];
                ssize_t r = read(f->wake[0], buf, sizeof buf);
                (void)r;
            } else if (owner[k] >= 1000) {
                int node = owner[k] - 1000;
                int fd = accept(pfds[k].fd, NULL, NULL);
                int slot = -1;
                if (fd < 0) {
                    continue;
                }
                for (int i = 0; i < FAKE_CONNS; i++) {
                    if (f->conns[i].fd < 0) {
                        slot = i;
                        break;
                    }
                }
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                f->conns[slot].fd = fd;
                f->conns[slot].node = node;
                tn_frame_reader_init(&f->conns[slot].reader,
                                     TN_FRAME_MAX_DEFAULT);
            } else {
                struct fake_conn *fc = &f->conns[owner[k]];
                uint8_t buf[65536];
                const uint8_t *payload;
                size_t len;
                ssize_t r;
                if (fc->fd != pfds[k].fd) {
                    continue;
                }
                r = read(fc->fd, buf, sizeof buf);
                if (r <= 0) {
                    fakeCloseConn(fc);
                    continue;
                }
                if (tn_frame_reader_feed(&fc->reader, buf, (size_t)r) != 0) {
                    fakeCloseConn(fc);
                    continue;
                }
                while (fc->fd >= 0 &&
                       tn_frame_reader_next(&fc->reader, &payload, &len) ==
                           1) {
                    Tn__Request *rq = tn__request__unpack(NULL, len, payload);
                    bool keep;
                    if (rq == NULL) {
                        fakeCloseConn(fc);
                        break;
                    }
                    keep = fakeHandle(f, fc, rq);
                    tn__request__free_unpacked(rq, NULL);
                    if (!keep) {
                        fakeCloseConn(fc);
                    }
                }
            }
        }
        pthread_mutex_unlock(&f->mu);
    }
    return NULL;
}

static int listenAny(int *port)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0) {
        close(fd);
        return -1;
    }
    getsockname(fd, (struct sockaddr *)&a, &alen);
    *port = ntohs(a.sin_port);
    return fd;
}

static struct fake *fakeStart(void)
{
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->mu, NULL);
    assert_int_equal(pipe(f->wake), 0);
    for (int i = 0; i < FAKE_CONNS; i++) {
        f->conns[i].fd = -1;
    }
    for (int i = 0; i < FAKE_NODES; i++) {
        f->lfd[i] = listenAny(&f->port[i]);
        assert_true(f->lfd[i] >= 0);
        f->mode[i] = i == 0 ? FAKE_LEADER : FAKE_FOLLOWER;
    }
    f->leader_idx = 0;
    f->reorder = 0;
    assert_int_equal(pthread_create(&f->thread, NULL, fakeMain, f), 0);
    return f;
}

static void fakeWake(struct fake *f)
{
    ssize_t r = write(f->wake[1], "x", 1);
    (void)r;
}

static void fakeStop(struct fake *f)
{
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_mutex_unlock(&f->mu);
    fakeWake(f);
    pthread_join(f->thread, NULL);
    for (int i = 0; i < FAKE_CONNS; i++) {
        if (f->conns[i].fd >= 0) {
            fakeCloseConn(&f->conns[i]);
        }
    }
    for (int i = 0; i < FAKE_NODES; i++) {
        if (f->lfd[i] >= 0) {
            close(f->lfd[i]);
        }
    }
    for (int i = 0; i < f->n_replies; i++) {
        free(f->replies[i].packed);
    }
    for (int i = 0; i < f->n_held; i++) {
        free(f->held[i].frame);
    }
    close(f->wake[0]);
    close(f->wake[1]);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* Set node @i's mode (FAKE_DOWN closes its listener; connections to it are
 * dropped). */
static void fakeSetMode(struct fake *f, int i, enum fake_mode mode)
{
    pthread_mutex_lock(&f->mu);
    f->mode[i] = mode;
    if (mode == FAKE_LEADER) {
        f->leader_idx = i;
    }
    if (mode == FAKE_DOWN || mode == FAKE_SILENT) {
        for (int k = 0; k < FAKE_CONNS; k++) {
            if (f->conns[k].fd >= 0 && f->conns[k].node == i &&
                mode == FAKE_DOWN) {
                fakeCloseConn(&f->conns[k]);
            }
        }
        if (mode == FAKE_DOWN && f->lfd[i] >= 0) {
            close(f->lfd[i]);
            f->lfd[i] = -1;
        }
    }
    pthread_mutex_unlock(&f->mu);
    fakeWake(f);
}

static void fakeEndpoint(struct fake *f, int i, char *buf, size_t len)
{
    snprintf(buf, len, "127.0.0.1:%d", f->port[i]);
}

/* Requests of body @body seen by node @node (-1: any), and how many
 * distinct (client_id, seq) pairs they had. */
static int fakeCountOn(struct fake *f, int node, int body, int *distinct)
{
    int n = 0;
    int d = 0;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->n_log; i++) {
        if (f->log[i].body != body || (node >= 0 && f->log[i].node != node)) {
            continue;
        }
        n++;
        bool seen = false;
        for (int j = 0; j < i; j++) {
            if (f->log[j].body == body &&
                f->log[j].client_id == f->log[i].client_id &&
                f->log[j].seq == f->log[i].seq) {
                seen = true;
                break;
            }
        }
        if (!seen) {
            d++;
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (distinct != NULL) {
        *distinct = d;
    }
    return n;
}

static int fakeCount(struct fake *f, int body, int *distinct)
{
    return fakeCountOn(f, -1, body, distinct);
}

/* Counters read under the lock (never assert while holding it: a failed
 * assertion jumps out of the test and would leave it locked). */
static unsigned fakeApplied(struct fake *f)
{
    unsigned v;
    pthread_mutex_lock(&f->mu);
    v = f->applied;
    pthread_mutex_unlock(&f->mu);
    return v;
}

static unsigned fakeKeepalives(struct fake *f)
{
    unsigned v;
    pthread_mutex_lock(&f->mu);
    v = f->keepalives;
    pthread_mutex_unlock(&f->mu);
    return v;
}

static uint64_t fakeLastToken(struct fake *f)
{
    uint64_t v;
    pthread_mutex_lock(&f->mu);
    v = f->next_token;
    pthread_mutex_unlock(&f->mu);
    return v;
}

/* ---------------------------------------------------------- fixture */

struct fixture
{
    struct fake *fake;
    tn_client *c;
    char endpoints[256];
};

static int setUp(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    char a[64];
    char b[64];
    char c[64];
    fx->fake = fakeStart();
    fakeEndpoint(fx->fake, 0, a, sizeof a);
    fakeEndpoint(fx->fake, 1, b, sizeof b);
    fakeEndpoint(fx->fake, 2, c, sizeof c);
    snprintf(fx->endpoints, sizeof fx->endpoints, "%s,%s,%s", a, b, c);
    *state = fx;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *fx = *state;
    if (fx->c != NULL) {
        tn_client_close(fx->c);
    }
    fakeStop(fx->fake);
    free(fx);
    return 0;
}

static tn_client *openClient(struct fixture *fx, const char *endpoints,
                             uint32_t timeout_ms)
{
    struct tn_client_opts o;
    tn_client *c;
    memset(&o, 0, sizeof o);
    o.timeout_ms = timeout_ms;
    o.connect_timeout_ms = 300;
    assert_int_equal(tn_client_open(endpoints != NULL ? endpoints
                                                      : fx->endpoints,
                                    &o, &c),
                     TN_OK);
    return c;
}

static uint64_t nowMs(void)
{
    return leaseNow() / 1000000u;
}

static void sleepMs(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------ tests */

/* Session, acquire, status, release, close: the happy path, with one
 * increasing sequence number per mutating request. */
static void test_basic(void **state)
{
    struct fixture *fx = *state;
    struct tn_lock_info info;
    tn_session *s;
    tn_lock *l;

    fx->c = openClient(fx, NULL, 2000);
    assert_true(tn_client_id(fx->c) != 0);
    assert_int_equal(tn_session_open(fx->c, "worker-1", 10000, NULL, &s),
                     TN_OK);
    assert_true(tn_session_id(s) > 0);
    assert_int_equal(tn_session_ttl_ms(s), 10000);
    assert_string_equal(tn_session_holder(s), "worker-1");
    assert_true(tn_session_valid(s));
    assert_int_equal(tn_lock_acquire(s, "orders/42", NULL, &l), TN_OK);
    assert_true(tn_lock_token(l) > 0);
    assert_string_equal(tn_lock_resource(l), "orders/42");
    assert_ptr_equal(tn_lock_session(l), s);
    assert_true(tn_lock_valid(l));
    assert_true(tn_lock_valid_for_ms(l) > 9000);
    assert_true(tn_lock_valid_for_ms(l) <= 9850);

    assert_int_equal(tn_lock_status(fx->c, "orders/42", NULL, &info), TN_OK);
    assert_int_equal(info.state, TN_STATE_HELD);
    assert_int_equal(info.n_holders, 1);
    assert_string_equal(info.holders[0].holder, "worker-1");
    assert_int_equal(info.holders[0].token, tn_lock_token(l));
    tn_lock_info_clear(&info);

    assert_int_equal(tn_lock_release(l), TN_OK);
    assert_false(tn_lock_valid(l));
    assert_int_equal(tn_lock_release(l), TN_USAGE);
    tn_lock_free(l);
    assert_int_equal(tn_lock_status(fx->c, "orders/42", NULL, &info), TN_OK);
    assert_int_equal(info.state, TN_STATE_FREE);
    assert_string_equal(info.resource, "orders/42");
    tn_lock_info_clear(&info);
    assert_int_equal(tn_session_close(s), TN_OK);

    /* One client id; sequence numbers increase: open, acquire, release,
     * close. */
    {
        struct fake_log_entry log[64];
        int n = 0;
        uint64_t last = 0;
        pthread_mutex_lock(&fx->fake->mu);
        for (int i = 0; i < fx->fake->n_log && n < 64; i++) {
            /* The leader's log (the first request may have gone to a
             * follower first, and come to the leader redirected). */
            if (isMutation(fx->fake->log[i].body) &&
                fx->fake->log[i].node == 0) {
                log[n++] = fx->fake->log[i];
            }
        }
        pthread_mutex_unlock(&fx->fake->mu);
        assert_true(n >= 4);
        for (int i = 0; i < n; i++) {
            if (log[i].body == TN__REQUEST__BODY_KEEPALIVE) {
                /* Answered from memory: no exactly-once identity. */
                assert_int_equal(log[i].client_id, 0);
                continue;
            }
            assert_int_equal(log[i].client_id, tn_client_id(fx->c));
            assert_true(log[i].seq > last);
            last = log[i].seq;
        }
    }
}

/* A second holder gets TN_HELD with who holds it; the message names them. */
static void test_conflict(void **state)
{
    struct fixture *fx = *state;
    struct tn_conflict k;
    struct tn_acquire_opts o;
    tn_client *c2 = openClient(fx, NULL, 2000);
    tn_session *a;
    tn_session *b;
    tn_lock *l;
    tn_lock *l2 = NULL;
    char msg[TN_ERRMSG_BUF_SIZE];

    fx->c = openClient(fx, NULL, 2000);
    assert_int_equal(tn_session_open(fx->c, "alice", 10000, NULL, &a), TN_OK);
    assert_int_equal(tn_session_open(c2, "bob", 10000, NULL, &b), TN_OK);
    assert_int_equal(tn_lock_acquire(a, "r", NULL, &l), TN_OK);
    memset(&o, 0, sizeof o);
    memset(&k, 0xff, sizeof k);
    o.conflict = &k;
    assert_int_equal(tn_lock_acquire(b, "r", &o, &l2), TN_HELD);
    assert_null(l2);
    assert_int_equal(k.status, TN_HELD);
    assert_int_equal(k.n_holders, 1);
    assert_int_equal(k.queue_len, 2);
    assert_string_equal(k.holder.holder, "alice");
    assert_int_equal(k.holder.session, tn_session_id(a));
    assert_int_equal(k.holder.token, tn_lock_token(l));
    assert_int_equal(k.holder.expires_in_ms, 1234);
    tn_client_errmsg_copy(c2, msg, sizeof msg);
    assert_non_null(strstr(msg, "alice"));
    /* Re-acquiring a held lock in the same session: the same token. */
    assert_int_equal(tn_lock_acquire(a, "r", NULL, &l2), TN_OK);
    assert_int_equal(tn_lock_token(l2), tn_lock_token(l));
    tn_lock_free(l2);
    tn_lock_free(l);
    tn_session_close(b);
    tn_session_close(a);
    tn_client_close(c2);
}

/* Bad input is refused locally with TN_INVALID_ARGUMENT and a message. */
static void test_invalid_arguments(void **state)
{
    struct fixture *fx = *state;
    struct tn_acquire_opts o;
    tn_session *s;
    tn_lock *l;
    tn_client *c;
    char msg[TN_ERRMSG_BUF_SIZE];

    assert_int_equal(tn_client_open2("nope", NULL, &c, msg),
                     TN_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "nope"));
    fx->c = openClient(fx, NULL, 2000);
    assert_int_equal(tn_session_open(fx->c, "x", 0, NULL, &s),
                     TN_INVALID_ARGUMENT);
    assert_int_equal(tn_session_open(fx->c, "bad\nname", 1000, NULL, &s),
                     TN_INVALID_ARGUMENT);
    assert_int_equal(tn_session_open(fx->c, NULL, 10000, NULL, &s), TN_OK);
    assert_true(strlen(tn_session_holder(s)) > 0); /* host:pid */
    assert_int_equal(tn_lock_acquire(s, "", NULL, &l), TN_INVALID_ARGUMENT);
    assert_int_equal(tn_lock_acquire(s, "a\x01", NULL, &l),
                     TN_INVALID_ARGUMENT);
    assert_non_null(strstr(tn_client_errmsg(fx->c), "control"));
    memset(&o, 0, sizeof o);
    o.mode = TN_MODE_SEMAPHORE;
    assert_int_equal(tn_lock_acquire(s, "a", &o, &l), TN_INVALID_ARGUMENT);
    o.mode = 9;
    assert_int_equal(tn_lock_acquire(s, "a", &o, &l), TN_INVALID_ARGUMENT);
    assert_int_equal(tn_release(fx->c, "a", 0), TN_INVALID_ARGUMENT);
    tn_session_close(s);
}

/* A follower's NOT_LEADER names the leader: the library goes there, even
 * when the leader is not in the endpoint list. */
static void test_redirect_to_leader(void **state)
{
    struct fixture *fx = *state;
    char ep[64];
    tn_session *s;
    tn_lock *l;
    int distinct;

    fakeSetMode(fx->fake, 0, FAKE_FOLLOWER);
    fakeSetMode(fx->fake, 2, FAKE_LEADER);
    fakeEndpoint(fx->fake, 1, ep, sizeof ep);
    fx->c = openClient(fx, ep, 3000);
    assert_int_equal(tn_session_open(fx->c, "w", 10000, NULL, &s), TN_OK);
    assert_int_equal(tn_lock_acquire(s, "x", NULL, &l), TN_OK);
    /* The session open went to node 1 first, then to node 2, both times
     * with the same (client_id, seq). */
    assert_int_equal(fakeCount(fx->fake, TN__REQUEST__BODY_SESSION_OPEN,
                               &distinct),
                     2);
    assert_int_equal(distinct, 1);
    /* Afterwards the client stays on the leader. */
    assert_int_equal(fakeCount(fx->fake, TN__REQUEST__BODY_ACQUIRE, NULL), 1);
    tn_lock_free(l);
    tn_session_close(s);
}

/* Nodes that know no leader are skipped: the library tries the others. */
static void test_no_leader_tries_others(void **state)
{
    struct fixture *fx = *state;
    tn_session *s;

    fakeSetMode(fx->fake, 0, FAKE_NO_LEADER);
    fakeSetMode(fx->fake, 1, FAKE_NO_LEADER);
    fakeSetMode(fx->fake, 2, FAKE_LEADER);
    fx->c = openClient(fx, NULL, 3000);
    for (int i = 0; i < 5; i++) {
        tn_client *c = openClient(fx, NULL, 3000);
        assert_int_equal(tn_session_open(c, "w", 10000, NULL, &s), TN_OK);
        tn_session_abandon(s);
        tn_client_close(c);
    }
}

/* The reply is lost (connection dropped after the leader applied it): the
 * retry carries the same (client_id, seq) and gets the original answer. */
static void test_retry_after_drop_is_exactly_once(void **state)
{
    struct fixture *fx = *state;
    tn_session *s;
    tn_lock *l;
    unsigned applied;
    int distinct;

    fx->c = openClient(fx, NULL, 3000);
    assert_int_equal(tn_session_open(fx->c, "w", 10000, NULL, &s), TN_OK);
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->drop_after_apply = 1;
    applied = fx->fake->applied;
    pthread_mutex_unlock(&fx->fake->mu);
    assert_int_equal(tn_lock_acquire(s, "once", NULL, &l), TN_OK);
    assert_int_equal(fakeApplied(fx->fake), applied + 1);
    assert_int_equal(fakeLastToken(fx->fake), tn_lock_token(l));
    /* The leader saw it twice (the reconnect may also have visited a
     * follower, which redirected), always as the same (client_id, seq). */
    assert_int_equal(fakeCountOn(fx->fake, 0, TN__REQUEST__BODY_ACQUIRE,
                                 NULL),
                     2);
    assert_true(fakeCount(fx->fake, TN__REQUEST__BODY_ACQUIRE, &distinct) >=
                2);
    assert_int_equal(distinct, 1);
    /* The same for a release whose answer is lost. */
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->drop_after_apply = 1;
    applied = fx->fake->applied;
    pthread_mutex_unlock(&fx->fake->mu);
    assert_int_equal(tn_lock_release(l), TN_OK);
    assert_int_equal(fakeApplied(fx->fake), applied + 1);
    assert_int_equal(fakeCountOn(fx->fake, 0, TN__REQUEST__BODY_RELEASE,
                                 NULL),
                     2);
    assert_true(fakeCount(fx->fake, TN__REQUEST__BODY_RELEASE, &distinct) >=
                2);
    assert_int_equal(distinct, 1);
    tn_lock_free(l);
    tn_session_close(s);
}

/* COMMIT_UNKNOWN and NO_QUORUM are retried with the same (client_id, seq)
 * until an answer comes. */
static void test_retry_commit_unknown_and_no_quorum(void **state)
{
    struct fixture *fx = *state;
    tn_session *s;
    tn_lock *l;
    int distinct;

    fx->c = openClient(fx, NULL, 5000);
    assert_int_equal(tn_session_open(fx->c, "w", 10000, NULL, &s), TN_OK);
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->commit_unknown = 1;
    pthread_mutex_unlock(&fx->fake->mu);
    assert_int_equal(tn_lock_acquire(s, "cu", NULL, &l), TN_OK);
    assert_int_equal(fakeCount(fx->fake, TN__REQUEST__BODY_ACQUIRE,
                               &distinct),
                     2);
    assert_int_equal(distinct, 1);
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->no_quorum = 3;
    pthread_mutex_unlock(&fx->fake->mu);
    assert_int_equal(tn_lock_release(l), TN_OK);
    /* Three NO_QUORUM answers and the final one, all from the leader (a
     * NO_QUORUM also makes the library try another node, which
     * redirects back). */
    assert_int_equal(fakeCountOn(fx->fake, 0, TN__REQUEST__BODY_RELEASE,
                                 NULL),
                     4);
    assert_true(fakeCount(fx->fake, TN__REQUEST__BODY_RELEASE, &distinct) >=
                4);
    assert_int_equal(distinct, 1);
    tn_lock_free(l);
    tn_session_close(s);
}

/* A node that never answers: the call ends at its deadline with
 * TN_TIMEOUT, not later. */
static void test_deadline(void **state)
{
    struct fixture *fx = *state;
    char ep[64];
    tn_session *s;
    uint64_t t0;

    fakeSetMode(fx->fake, 0, FAKE_SILENT);
    fakeEndpoint(fx->fake, 0, ep, sizeof ep);
    fx->c = openClient(fx, ep, 300);
    t0 = nowMs();
    assert_int_equal(tn_session_open(fx->c, "w", 10000, NULL, &s),
                     TN_TIMEOUT);
    assert_true(nowMs() - t0 >= 295);
    assert_true(nowMs() - t0 < 1000);
    assert_non_null(strstr(tn_client_errmsg(fx->c), "deadline"));
}

/* Nothing listening anywhere: TN_UNAVAILABLE by the deadline. */
static void test_unavailable(void **state)
{
    struct fixture *fx = *state;
    struct tn_cluster_info ci;
    uint64_t t0;

    fakeSetMode(fx->fake, 0, FAKE_DOWN);
    fakeSetMode(fx->fake, 1, FAKE_DOWN);
    fakeSetMode(fx->fake, 2, FAKE_DOWN);
    fx->c = openClient(fx, NULL, 400);
    t0 = nowMs();
    assert_int_equal(tn_cluster_status(fx->c, &ci), TN_UNAVAILABLE);
    assert_true(nowMs() - t0 < 1500);
    assert_non_null(strstr(tn_client_errmsg(fx->c), "no endpoint reachable"));
}

/* When the leader goes down the library finds the new one. */
static void test_failover(void **state)
{
    struct fixture *fx = *state;
    tn_session *s;
    tn_lock *l;

    fx->c = openClient(fx, NULL, 3000);
    assert_int_equal(tn_session_open(fx->c, "w", 10000, NULL, &s), TN_OK);
    assert_int_equal(tn_lock_acquire(s, "f", NULL, &l), TN_OK);
    fakeSetMode(fx->fake, 0, FAKE_DOWN);
    fakeSetMode(fx->fake, 1, FAKE_LEADER);
    fakeSetMode(fx->fake, 2, FAKE_FOLLOWER);
    assert_int_equal(tn_lock_release(l), TN_OK);
    tn_lock_free(l);
    tn_session_close(s);
}

struct racer
{
    tn_session *s;
    int i;
    int rc;
    uint64_t token;
};

static void *racerMain(void *arg)
{
    struct racer *r = arg;
    char res[32];
    tn_lock *l;
    snprintf(res, sizeof res, "res/%d", r->i);
    r->rc = tn_lock_acquire(r->s, res, NULL, &l);
    if (r->rc == TN_OK) {
        r->token = tn_lock_token(l);
        tn_lock_free(l);
    }
    return NULL;
}

/* 64 threads acquire through one client at once; replies come back in
 * reverse order, in groups of 8; everyone gets their own token. */
static void test_concurrent_out_of_order(void **state)
{
    struct fixture *fx = *state;
    struct racer r[64];
    pthread_t t[64];
    tn_session *s;

    fx->c = openClient(fx, NULL, 5000);
    assert_int_equal(tn_session_open(fx->c, "w", 10000, NULL, &s), TN_OK);
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->reorder = 8;
    pthread_mutex_unlock(&fx->fake->mu);
    for (int i = 0; i < 64; i++) {
        r[i].s = s;
        r[i].i = i;
        r[i].rc = -1;
        assert_int_equal(pthread_create(&t[i], NULL, racerMain, &r[i]), 0);
    }
    for (int i = 0; i < 64; i++) {
        pthread_join(t[i], NULL);
    }
    for (int i = 0; i < 64; i++) {
        assert_int_equal(r[i].rc, TN_OK);
        for (int j = 0; j < i; j++) {
            assert_int_not_equal(r[i].token, r[j].token);
        }
    }
    tn_session_close(s);
}

struct events
{
    pthread_mutex_t mu;
    int jeopardy;
    int safe;
    int lost;
    int lost_rc;
    bool close_in_lost;
    int close_rc;
};

static void onJeopardy(tn_session *s, void *data)
{
    struct events *e = data;
    (void)s;
    pthread_mutex_lock(&e->mu);
    e->jeopardy++;
    pthread_mutex_unlock(&e->mu);
}

static void onSafe(tn_session *s, void *data)
{
    struct events *e = data;
    (void)s;
    pthread_mutex_lock(&e->mu);
    e->safe++;
    pthread_mutex_unlock(&e->mu);
}

static void onLost(tn_session *s, int rc, void *data)
{
    struct events *e = data;
    bool close_it;
    pthread_mutex_lock(&e->mu);
    e->lost++;
    e->lost_rc = rc;
    close_it = e->close_in_lost;
    pthread_mutex_unlock(&e->mu);
    if (close_it) {
        int crc = tn_session_close(s);
        pthread_mutex_lock(&e->mu);
        e->close_rc = crc;
        pthread_mutex_unlock(&e->mu);
    }
}

static int eventCount(struct events *e, int *field)
{
    int v;
    pthread_mutex_lock(&e->mu);
    v = *field;
    pthread_mutex_unlock(&e->mu);
    return v;
}

/* Wait up to @ms for *@field to reach @want. */
static bool waitEvent(struct events *e, int *field, int want, unsigned ms)
{
    uint64_t end = nowMs() + ms;
    while (nowMs() < end) {
        if (eventCount(e, field) >= want) {
            return true;
        }
        sleepMs(5);
    }
    return eventCount(e, field) >= want;
}

/* Keepalives run at about a third of the TTL; when they stop working the
 * session goes into jeopardy at its safe deadline (locks turn invalid),
 * back to safe when they work again, and lost when the cluster says the
 * session expired. */
static void test_keepalive_callbacks(void **state)
{
    struct fixture *fx = *state;
    struct events ev;
    struct tn_session_opts so;
    tn_session *s;
    tn_lock *l;
    uint64_t t0;
    unsigned kas;

    memset(&ev, 0, sizeof ev);
    pthread_mutex_init(&ev.mu, NULL);
    memset(&so, 0, sizeof so);
    so.data = &ev;
    so.on_jeopardy = onJeopardy;
    so.on_safe = onSafe;
    so.on_lost = onLost;
    fx->c = openClient(fx, NULL, 2000);
    assert_int_equal(tn_session_open(fx->c, "w", 600, &so, &s), TN_OK);
    assert_int_equal(tn_lock_acquire(s, "k", NULL, &l), TN_OK);

    /* TTL 600 ms: keepalives every 150-200 ms keep it valid. */
    sleepMs(1000);
    kas = fakeKeepalives(fx->fake);
    assert_true(kas >= 4);
    assert_true(kas <= 8);
    assert_true(tn_lock_valid(l));
    assert_int_equal(eventCount(&ev, &ev.jeopardy), 0);

    /* Keepalives unanswered: jeopardy within the safe window
     * (600 x 0.99 - 50 = 544 ms after the last renewal was sent). */
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->ka_mode = KA_SILENT;
    pthread_mutex_unlock(&fx->fake->mu);
    t0 = nowMs();
    assert_true(waitEvent(&ev, &ev.jeopardy, 1, 1500));
    assert_true(nowMs() - t0 <= 560);
    assert_false(tn_lock_valid(l));
    assert_int_equal(tn_lock_valid_for_ms(l), 0);
    assert_false(tn_session_valid(s));

    /* Back to working: safe again. */
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->ka_mode = KA_OK;
    pthread_mutex_unlock(&fx->fake->mu);
    assert_true(waitEvent(&ev, &ev.safe, 1, 1500));
    assert_true(tn_lock_valid(l));
    assert_int_equal(eventCount(&ev, &ev.jeopardy), 1);

    /* The cluster says it is gone: lost, final. */
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->ka_mode = KA_EXPIRED;
    pthread_mutex_unlock(&fx->fake->mu);
    assert_true(waitEvent(&ev, &ev.lost, 1, 1500));
    assert_int_equal(eventCount(&ev, &ev.lost_rc), TN_SESSION_EXPIRED);
    assert_false(tn_lock_valid(l));
    assert_int_equal(tn_lock_acquire(s, "k2", NULL, &l), TN_SESSION_EXPIRED);
    sleepMs(300);
    assert_int_equal(eventCount(&ev, &ev.lost), 1);
    assert_int_equal(eventCount(&ev, &ev.safe), 1);
    tn_lock_free(l);
    tn_session_close(s);
    pthread_mutex_destroy(&ev.mu);
}

/* A callback may close its own session (no deadlock), and no callback
 * fires for a session after tn_session_close() returns. */
static void test_close_from_callback(void **state)
{
    struct fixture *fx = *state;
    struct events ev;
    struct tn_session_opts so;
    tn_session *s;

    memset(&ev, 0, sizeof ev);
    pthread_mutex_init(&ev.mu, NULL);
    ev.close_in_lost = true;
    ev.close_rc = -1;
    memset(&so, 0, sizeof so);
    so.data = &ev;
    so.on_lost = onLost;
    so.on_jeopardy = onJeopardy;
    fx->c = openClient(fx, NULL, 2000);
    assert_int_equal(tn_session_open(fx->c, "w", 300, &so, &s), TN_OK);
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->ka_mode = KA_EXPIRED;
    pthread_mutex_unlock(&fx->fake->mu);
    assert_true(waitEvent(&ev, &ev.lost, 1, 2000));
    assert_true(waitEvent(&ev, &ev.close_rc, 0, 2000));
    assert_int_equal(eventCount(&ev, &ev.close_rc), TN_SESSION_EXPIRED);
    pthread_mutex_destroy(&ev.mu);
}

/* tn_session_abandon() stops the keepalives and tells the cluster nothing. */
static void test_abandon(void **state)
{
    struct fixture *fx = *state;
    tn_session *s;
    unsigned kas;

    fx->c = openClient(fx, NULL, 2000);
    assert_int_equal(tn_session_open(fx->c, "w", 300, NULL, &s), TN_OK);
    sleepMs(250);
    tn_session_abandon(s);
    sleepMs(50);
    kas = fakeKeepalives(fx->fake);
    assert_true(kas >= 1);
    sleepMs(400);
    assert_int_equal(fakeKeepalives(fx->fake), kas);
    assert_int_equal(fakeCount(fx->fake, TN__REQUEST__BODY_SESSION_CLOSE,
                               NULL),
                     0);
}

struct blocked
{
    tn_client *c;
    int rc;
};

static void *blockedMain(void *arg)
{
    struct blocked *b = arg;
    struct tn_cluster_info ci;
    b->rc = tn_cluster_status(b->c, &ci);
    return NULL;
}

/* tn_client_close() cancels calls in flight on other threads; handles that
 * outlive the client answer TN_CLOSED and can still be freed. */
static void test_close_cancels(void **state)
{
    struct fixture *fx = *state;
    struct blocked b;
    pthread_t t;
    tn_session *s;
    tn_lock *l;
    tn_client *c;
    uint64_t t0;

    c = openClient(fx, NULL, 10000);
    assert_int_equal(tn_session_open(c, "w", 10000, NULL, &s), TN_OK);
    assert_int_equal(tn_lock_acquire(s, "c", NULL, &l), TN_OK);
    fakeSetMode(fx->fake, 0, FAKE_SILENT);
    fakeSetMode(fx->fake, 1, FAKE_SILENT);
    fakeSetMode(fx->fake, 2, FAKE_SILENT);
    b.c = c;
    b.rc = -1;
    assert_int_equal(pthread_create(&t, NULL, blockedMain, &b), 0);
    sleepMs(100);
    t0 = nowMs();
    tn_client_close(c);
    pthread_join(t, NULL);
    assert_true(nowMs() - t0 < 1000);
    assert_int_equal(b.rc, TN_CANCELED);
    assert_false(tn_lock_valid(l));
    assert_int_equal(tn_lock_release(l), TN_CLOSED);
    assert_int_equal(tn_lock_acquire(s, "d", NULL, &l), TN_CLOSED);
    tn_lock_free(l);
    assert_int_equal(tn_session_close(s), TN_CLOSED);
}

/* Cluster status comes from whichever node answers and names the leader. */
static void test_cluster_status(void **state)
{
    struct fixture *fx = *state;
    struct tn_cluster_info ci;
    char ep[64];

    fakeEndpoint(fx->fake, 1, ep, sizeof ep);
    fx->c = openClient(fx, ep, 2000);
    assert_int_equal(tn_cluster_status(fx->c, &ci), TN_OK);
    assert_int_equal(ci.node_id, 2);
    assert_int_equal(ci.leader_id, 1);
    assert_string_equal(ci.state, "follower");
    assert_string_equal(ci.endpoint, ep);
    assert_int_equal(ci.term, 7);
    tn_cluster_info_clear(&ci);
    assert_null(ci.state);
}

struct stuck
{
    tn_session *s;
    int rc;
    uint64_t start_ns; /* atomic: before the call (its deadline is later
                          than this + the client's timeout) */
};

static void *stuckMain(void *arg)
{
    struct stuck *st = arg;
    tn_lock *l;
    __atomic_store_n(&st->start_ns, leaseNow(), __ATOMIC_RELEASE);
    st->rc = tn_lock_acquire(st->s, "stuck", NULL, &l);
    return NULL;
}

/* The cluster remembers the replies of a client's 64 highest sequence
 * numbers: while one request is unanswered, the library hands out no
 * number 64 or more above it (so its retry could never be refused as too
 * old); the others wait, and go on once it completes. Keepalives need no
 * number and are never held back. */
static void test_seq_window(void **state)
{
    struct fixture *fx = *state;
    struct stuck st;
    pthread_t t;
    tn_session *s;
    uint64_t stuck_seq = 0;
    uint64_t stuck_deadline_ns;
    int late = 0;

    fx->c = openClient(fx, NULL, 1500);
    assert_int_equal(tn_session_open(fx->c, "w", 600, NULL, &s), TN_OK);
    pthread_mutex_lock(&fx->fake->mu);
    snprintf(fx->fake->ignore_resource, sizeof fx->fake->ignore_resource,
             "stuck");
    pthread_mutex_unlock(&fx->fake->mu);
    st.s = s;
    st.rc = -1;
    st.start_ns = 0;
    assert_int_equal(pthread_create(&t, NULL, stuckMain, &st), 0);
    sleepMs(100);
    for (int i = 0; i < 100; i++) {
        char res[32];
        tn_lock *l;
        snprintf(res, sizeof res, "w/%d", i);
        assert_int_equal(tn_lock_acquire(s, res, NULL, &l), TN_OK);
        assert_int_equal(tn_lock_release(l), TN_OK);
        tn_lock_free(l);
    }
    pthread_join(t, NULL);
    assert_int_equal(st.rc, TN_TIMEOUT);
    /* The stuck request completes at its deadline, no earlier than this;
     * only then may a number 64 above its own be handed out. */
    stuck_deadline_ns = __atomic_load_n(&st.start_ns, __ATOMIC_ACQUIRE) +
                        1500 * 1000000ULL;
    /* The session stayed valid meanwhile: keepalives were not held back. */
    assert_true(tn_session_valid(s));

    pthread_mutex_lock(&fx->fake->mu);
    for (int i = 0; i < fx->fake->n_log; i++) {
        if (fx->fake->log[i].body == TN__REQUEST__BODY_ACQUIRE &&
            stuck_seq == 0 && fx->fake->log[i].node == 0) {
            /* The first acquire is the stuck one. */
            stuck_seq = fx->fake->log[i].seq;
        }
    }
    for (int i = 0; i < fx->fake->n_log; i++) {
        const struct fake_log_entry *e = &fx->fake->log[i];
        if (e->seq >= stuck_seq + ENGINE_SEQ_WINDOW &&
            e->at_ns < stuck_deadline_ns) {
            late++;
        }
    }
    pthread_mutex_unlock(&fx->fake->mu);
    assert_true(stuck_seq > 0);
    assert_int_equal(late, 0);
    tn_session_close(s);
}

/* Followers that name a leader which is down: the library backs off
 * instead of bouncing between them at full speed, and the call ends at its
 * deadline. */
static void test_redirect_to_dead_leader_backs_off(void **state)
{
    struct fixture *fx = *state;
    struct tn_cluster_info ci;
    tn_session *s;
    uint64_t t0;
    int n;

    fakeSetMode(fx->fake, 2, FAKE_DOWN);
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->mode[0] = FAKE_FOLLOWER;
    fx->fake->mode[1] = FAKE_FOLLOWER;
    fx->fake->leader_idx = 2;
    pthread_mutex_unlock(&fx->fake->mu);
    fx->c = openClient(fx, NULL, 1000);
    t0 = nowMs();
    assert_int_not_equal(tn_session_open(fx->c, "w", 10000, NULL, &s), TN_OK);
    assert_true(nowMs() - t0 < 1500);
    n = fakeCount(fx->fake, TN__REQUEST__BODY_SESSION_OPEN, NULL);
    assert_true(n >= 1);
    assert_true(n <= 30);
    /* Reads any node answers still work. */
    assert_int_equal(tn_cluster_status(fx->c, &ci), TN_OK);
    tn_cluster_info_clear(&ci);
}

/* A reply over the client's frame limit fails its call at once with
 * TN_PROTOCOL and a message saying which limit to raise (resending would
 * only get the same reply); the other calls go on. */
static void test_reply_too_big(void **state)
{
    struct fixture *fx = *state;
    struct tn_client_opts o;
    struct tn_cluster_info ci;
    tn_session *s;
    uint64_t t0;

    memset(&o, 0, sizeof o);
    o.timeout_ms = 3000;
    o.max_frame = 2048;
    assert_int_equal(tn_client_open(fx->endpoints, &o, &fx->c), TN_OK);
    assert_int_equal(tn_session_open(fx->c, "w", 10000, NULL, &s), TN_OK);
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->big_message = 4000;
    pthread_mutex_unlock(&fx->fake->mu);
    t0 = nowMs();
    assert_int_equal(tn_cluster_status(fx->c, &ci), TN_PROTOCOL);
    assert_true(nowMs() - t0 < 1000);
    assert_non_null(strstr(tn_client_errmsg(fx->c), "max_frame"));
    pthread_mutex_lock(&fx->fake->mu);
    fx->fake->big_message = 0;
    pthread_mutex_unlock(&fx->fake->mu);
    assert_int_equal(tn_cluster_status(fx->c, &ci), TN_OK);
    tn_cluster_info_clear(&ci);
    assert_true(tn_session_valid(s));
    tn_session_close(s);
}

/* A leader that freezes (SIGSTOP: it still accepts connections and data,
 * and answers nothing) is given up after connect_timeout_ms of silence;
 * the calls and the keepalives move to the new leader, and the session
 * stays valid. */
static void test_frozen_leader(void **state)
{
    struct fixture *fx = *state;
    tn_session *s;
    tn_lock *l;
    unsigned kas;
    uint64_t t0;

    fx->c = openClient(fx, NULL, 5000); /* connect_timeout_ms = 300 */
    assert_int_equal(tn_session_open(fx->c, "w", 1500, NULL, &s), TN_OK);
    assert_int_equal(tn_lock_acquire(s, "frozen", NULL, &l), TN_OK);
    fakeSetMode(fx->fake, 0, FAKE_SILENT);
    fakeSetMode(fx->fake, 1, FAKE_LEADER);
    fakeSetMode(fx->fake, 2, FAKE_FOLLOWER);
    kas = fakeKeepalives(fx->fake);
    t0 = nowMs();
    assert_int_equal(tn_lock_release(l), TN_OK);
    assert_true(nowMs() - t0 < 1500);
    tn_lock_free(l);
    /* Keepalives reach the new leader; the session never lapses. */
    for (int i = 0; i < 30; i++) {
        assert_true(tn_session_valid(s));
        sleepMs(50);
    }
    assert_true(fakeKeepalives(fx->fake) > kas);
    assert_int_equal(tn_session_close(s), TN_OK);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setUp, tearDown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_basic),
        T(test_conflict),
        T(test_invalid_arguments),
        T(test_redirect_to_leader),
        T(test_no_leader_tries_others),
        T(test_retry_after_drop_is_exactly_once),
        T(test_retry_commit_unknown_and_no_quorum),
        T(test_deadline),
        T(test_unavailable),
        T(test_failover),
        T(test_concurrent_out_of_order),
        T(test_keepalive_callbacks),
        T(test_close_from_callback),
        T(test_abandon),
        T(test_close_cancels),
        T(test_cluster_status),
        T(test_seq_window),
        T(test_redirect_to_dead_leader_backs_off),
        T(test_reply_too_big),
        T(test_frozen_leader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
