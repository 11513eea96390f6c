/* The request engine: one connection, leader discovery, retries, deadlines.
 *
 * Connection lifecycle (struct conn):
 *   RESOLVING (uv_getaddrinfo) -> CONNECTING (uv_tcp_connect, guarded by a
 *   connect timer) -> READY (reading frames, sending ops) -> CLOSING (handles
 *   closing; freed when the last close callback fired).
 * Any failure on the way (resolution, refused, connect timeout, read error,
 * EOF, oversized or undecodable frame, write error) detaches the connection
 * from the engine, moves its in-flight ops back to the front of the waiting
 * list and lets engineKick() pick the next target: the leader if a
 * NOT_LEADER named one, else the next endpoint round-robin, with an
 * exponential, jittered backoff once every endpoint failed in a row.
 *
 * Op lifecycle: see engine.h. */
#include "engine.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "lease.h"
#include "tenure.h"

enum { OP_IDLE = 0, OP_WAITING, OP_SENT, OP_DELAYED, OP_FAILED, OP_DONE };

enum { CONN_RESOLVING = 1, CONN_CONNECTING, CONN_READY, CONN_CLOSING };

#define CONN_READ_BUF   (64 * 1024)
#define RETRY_BASE_MS   25
#define RETRY_MAX_MS    1000
#define WATCH_PERIOD_MS 100

struct conn
{
    struct engine *e;     /* NULL once detached from the engine */
    struct engine *owner; /* counts this connection in open_handles */
    struct endpoint ep;
    int state;
    int refs; /* open handles and pending requests */
    bool gai_pending;
    bool tcp_open;
    uv_getaddrinfo_t gai;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_timer_t timer; /* connect timeout */
    struct tn_frame_reader reader;
    char *rbuf;          /* owned */
    uint64_t last_rx_ns; /* when bytes last arrived */
    uint8_t *out;        /* owned: frames of this flush, not written yet */
    size_t out_len;
    size_t out_cap;
};

struct write_req
{
    uv_write_t req;
    struct conn *conn;
    uint8_t *buf; /* owned */
};

static void engineKick(struct engine *e);
static void engineMaybeClosed(struct engine *e);
static void connDrop(struct conn *conn, bool failure, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define connFail(conn, ...) connDrop(conn, true, __VA_ARGS__)

/* ------------------------------------------------------------- helpers */

uint64_t engineRandom(struct engine *e, uint64_t n)
{
    /* xorshift64* */
    uint64_t x = e->rand_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    e->rand_state = x;
    return (x * 0x2545F4914F6CDD1DULL) % n;
}

/* Backoff before retry number @attempt (0-based): 25 ms doubling up to 1 s,
 * each drawn from [half, full]. */
static uint64_t backoffNs(struct engine *e, unsigned attempt)
{
    uint64_t ms = RETRY_BASE_MS;
    while (attempt-- > 0 && ms < RETRY_MAX_MS) {
        ms *= 2;
    }
    if (ms > RETRY_MAX_MS) {
        ms = RETRY_MAX_MS;
    }
    ms = ms / 2 + engineRandom(e, ms / 2 + 1);
    return ms * 1000000u;
}

static void setTimer(uv_timer_t *t, uint64_t at_ns, uv_timer_cb cb)
{
    uint64_t now = leaseNow();
    uint64_t ms = at_ns > now ? (at_ns - now + 999999u) / 1000000u : 0;
    uv_update_time(t->loop);
    uv_timer_start(t, cb, ms, 0);
}

/* --------------------------------------------------------- op handling */

static void opComplete(struct engine *e,
                       struct engine_op *op,
                       int rc,
                       const Tn__Response *response)
{
    (void)e;
    listRemove(&op->link);
    op->state = OP_DONE;
    op->cb(op, rc, response);
}

static void deadlineTimerCb(uv_timer_t *t);

static void armDeadline(struct engine *e, uint64_t deadline_ns)
{
    if (e->closing || deadline_ns == UINT64_MAX) {
        return; /* closing, or a stream: no deadline */
    }
    if (e->deadline_armed_ns != 0 && e->deadline_armed_ns <= deadline_ns) {
        return;
    }
    e->deadline_armed_ns = deadline_ns;
    setTimer(&e->deadline_timer, deadline_ns, deadlineTimerCb);
}

static int deadlineCode(struct engine_op *op)
{
    if (op->first_sent_ns == 0) {
        return TN_UNAVAILABLE;
    }
    if (op->last_status == TN_NO_QUORUM || op->last_status == TN_NOT_LEADER) {
        return TN_NO_QUORUM;
    }
    return TN_TIMEOUT;
}

static void expireList(struct engine *e, struct list *head, uint64_t now)
{
    struct list *l = head->next;
    while (l != head) {
        struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
        l = l->next;
        if (op->deadline_ns <= now) {
            int rc = deadlineCode(op);
            if (op->errmsg[0] == '\0') {
                if (rc == TN_UNAVAILABLE) {
                    snprintf(op->errmsg, sizeof op->errmsg,
                             "no endpoint reachable: %.200s",
                             e->last_error[0] ? e->last_error : "no answer");
                } else if (rc == TN_NO_QUORUM) {
                    snprintf(op->errmsg, sizeof op->errmsg,
                             "deadline exceeded: no leader elected "
                             "(%u attempts)",
                             op->attempts);
                } else {
                    snprintf(op->errmsg, sizeof op->errmsg,
                             "deadline exceeded after %u attempts; the "
                             "outcome is unknown",
                             op->attempts);
                }
            }
            opComplete(e, op, rc, NULL);
        }
    }
}

static void minDeadline(struct list *head, uint64_t *min)
{
    struct list *l;
    for (l = head->next; l != head; l = l->next) {
        struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
        if (op->deadline_ns < *min) {
            *min = op->deadline_ns;
        }
    }
}

static void deadlineTimerCb(uv_timer_t *t)
{
    struct engine *e = t->data;
    uint64_t now = leaseNow();
    uint64_t next = UINT64_MAX;

    e->deadline_armed_ns = 0;
    expireList(e, &e->waiting, now);
    expireList(e, &e->sent, now);
    expireList(e, &e->delayed, now);
    if (e->closing) {
        return;
    }
    engineKick(e); /* the seq window may have opened */
    minDeadline(&e->waiting, &next);
    minDeadline(&e->sent, &next);
    minDeadline(&e->delayed, &next);
    if (next != UINT64_MAX) {
        armDeadline(e, next);
    }
}

static void retryTimerCb(uv_timer_t *t);

static void armRetry(struct engine *e)
{
    uint64_t next = UINT64_MAX;
    struct list *l;

    if (e->closing) {
        return;
    }
    for (l = e->delayed.next; l != &e->delayed; l = l->next) {
        struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
        if (op->retry_at_ns < next) {
            next = op->retry_at_ns;
        }
    }
    if (e->conn == NULL && !listEmpty(&e->waiting) &&
        e->reconnect_at_ns < next) {
        next = e->reconnect_at_ns;
    }
    if (next == UINT64_MAX) {
        uv_timer_stop(&e->retry_timer);
        return;
    }
    setTimer(&e->retry_timer, next, retryTimerCb);
}

static void retryTimerCb(uv_timer_t *t)
{
    struct engine *e = t->data;
    uint64_t now = leaseNow();
    struct list *l = e->delayed.next;

    while (l != &e->delayed) {
        struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
        l = l->next;
        if (op->retry_at_ns <= now) {
            listRemove(&op->link);
            op->state = OP_WAITING;
            listPush(&e->waiting, &op->link);
        }
    }
    engineKick(e);
    armRetry(e);
}

/* Retry @op after a backoff, keeping its (client_id, seq). */
static void opDelay(struct engine *e, struct engine_op *op)
{
    listRemove(&op->link);
    op->state = OP_DELAYED;
    op->retry_at_ns = leaseNow() + backoffNs(e, op->attempts);
    listPush(&e->delayed, &op->link);
    armRetry(e);
}

static void kickTimerCb(uv_timer_t *t)
{
    struct engine *e = t->data;
    struct list *l;

    while ((l = e->failed.next) != &e->failed) {
        struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
        opComplete(e, op, op->fail_rc, NULL);
    }
}

/* Complete @op with @rc from the kick timer (never synchronously). */
static void opFailLater(struct engine *e, struct engine_op *op, int rc)
{
    listRemove(&op->link);
    op->state = OP_FAILED;
    op->fail_rc = rc;
    listPush(&e->failed, &op->link);
    if (!e->closing) {
        uv_timer_start(&e->kick_timer, kickTimerCb, 0, 0);
    }
}

/* -------------------------------------------------------- connections */

static void connRelease(struct conn *conn)
{
    struct engine *owner = conn->owner;

    if (--conn->refs > 0) {
        return;
    }
    tn_frame_reader_close(&conn->reader);
    free(conn->rbuf);
    free(conn->out);
    free(conn);
    owner->open_handles--;
    engineMaybeClosed(owner);
}

static void connHandleCloseCb(uv_handle_t *h)
{
    struct conn *conn = h->data;
    connRelease(conn);
}

/* Engine-side bookkeeping of a freed connection. */
static void engineConnGone(struct engine *e);

/* Detach @conn from its engine (if still attached) and close it. */
static void connDestroy(struct conn *conn)
{
    struct engine *e = conn->e;

    if (conn->state == CONN_CLOSING) {
        return;
    }
    conn->state = CONN_CLOSING;
    if (e != NULL) {
        if (e->conn == conn) {
            e->conn = NULL;
        }
        conn->e = NULL;
    }
    if (conn->gai_pending) {
        uv_cancel((uv_req_t *)&conn->gai);
    }
    if (conn->tcp_open) {
        uv_close((uv_handle_t *)&conn->tcp, connHandleCloseCb);
    }
    uv_close((uv_handle_t *)&conn->timer, connHandleCloseCb);
    connRelease(conn); /* the engine's reference */
    if (e != NULL) {
        engineConnGone(e);
    }
}

/* Close @conn and put its in-flight ops back in the queue. @failure: count
 * it as a failed attempt (for the reconnect backoff); a redirect is not. */
static void connDrop(struct conn *conn, bool failure, const char *fmt, ...)
{
    struct engine *e = conn->e;
    char msg[ENGINE_ERRMSG_SIZE - 64];
    va_list ap;

    if (e == NULL || conn->state == CONN_CLOSING) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(e->last_error, sizeof e->last_error, "%.60s: %.180s",
             conn->ep.label, msg);
    /* The ops on the wire go back to the front of the queue, in order. */
    {
        struct list requeue;
        listInit(&requeue);
        while (!listEmpty(&e->sent)) {
            struct list *l = listShift(&e->sent);
            struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
            op->state = OP_WAITING;
            listPush(&requeue, l);
        }
        listSplice(&requeue, &e->waiting);
        listSplice(&e->waiting, &requeue);
    }
    if (e->has_leader && strcmp(e->leader.label, conn->ep.label) == 0) {
        e->has_leader = false;
        if (failure && conn->state != CONN_READY) {
            /* Followers may keep naming it for a while (until they notice
             * it is gone): do not bounce between them and it. */
            e->bad_leader = conn->ep;
            e->bad_leader_until_ns = leaseNow() + 1000 * 1000000ULL;
        }
    }
    if (failure) {
        e->failures++;
    }
    if (failure && e->failures >= e->n_endpoints) {
        e->reconnect_at_ns =
            leaseNow() + backoffNs(e, (unsigned)(e->failures - e->n_endpoints));
    }
    connDestroy(conn);
}

static void engineSendOp(struct engine *e, struct engine_op *op);

/* The lowest sequence number still outstanding among the ops that hold
 * the window, or 0 if none. */
static uint64_t lowestOutstanding(struct engine *e)
{
    struct list *heads[3] = { &e->waiting, &e->sent, &e->delayed };
    uint64_t low = 0;
    for (int i = 0; i < 3; i++) {
        struct list *l;
        for (l = heads[i]->next; l != heads[i]; l = l->next) {
            struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
            if (op->seq != 0 && !op->may_wait && (low == 0 || op->seq < low)) {
                low = op->seq;
            }
        }
    }
    return low;
}

/* Whether a new sequence number may be handed out now. */
static bool seqWindowOpen(struct engine *e)
{
    uint64_t low = lowestOutstanding(e);
    return low == 0 || e->next_seq - low < ENGINE_SEQ_WINDOW;
}

static void writeCb(uv_write_t *req, int status);

/* Write the frames engineSendOp queued: at once when the socket takes them
 * all, else through uv_write, which takes the buffer over. */
static void connWriteOut(struct conn *conn)
{
    struct write_req *w;
    uv_buf_t buf = uv_buf_init((char *)conn->out, (unsigned)conn->out_len);
    int rv;

    if (conn->out_len == 0) {
        return;
    }
    conn->out_len = 0;
    rv = uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
    if (rv == (int)buf.len) {
        return;
    }
    if (rv > 0) {
        buf.base += rv;
        buf.len -= (unsigned)rv;
    } else if (rv != UV_EAGAIN) {
        connFail(conn, "write: %s", uv_strerror(rv));
        return;
    }
    w = malloc(sizeof *w);
    if (w == NULL) {
        connFail(conn, "write: out of memory");
        return;
    }
    w->conn = conn;
    w->buf = conn->out;
    conn->out = NULL;
    conn->out_cap = 0;
    rv = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &buf, 1, writeCb);
    if (rv != 0) {
        free(w->buf);
        free(w);
        connFail(conn, "write: %s", uv_strerror(rv));
    }
}

/* Send what waits; the requests of one flush leave in one write. */
static void connFlush(struct engine *e)
{
    struct list *l = e->waiting.next;
    struct conn *conn = e->conn;
    while (l != &e->waiting && e->conn != NULL &&
           e->conn->state == CONN_READY) {
        struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
        l = l->next;
        if (op->mutating && op->seq == 0) {
            if (!seqWindowOpen(e)) {
                continue; /* waits for an older op to complete */
            }
            op->seq = e->next_seq++;
        }
        engineSendOp(e, op);
    }
    if (conn != NULL && e->conn == conn && conn->state == CONN_READY) {
        connWriteOut(conn);
    }
}

static void writeCb(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *conn = w->conn;

    free(w->buf);
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        connFail(conn, "write: %s", uv_strerror(status));
    }
}

static void handleResponse(struct conn *conn, const Tn__Response *r);

static void allocCb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *conn = h->data;
    (void)suggested;
    buf->base = conn->rbuf;
    buf->len = CONN_READ_BUF;
}

/* A reply frame over the limit: resending would get the same reply, so
 * the op it answers fails (TN_PROTOCOL) instead of being retried. The
 * Response's id is its first field (protobuf-c writes fields in order):
 * read it from the start of the payload if those bytes are there. */
static void connTooBig(struct conn *conn)
{
    struct engine *e = conn->e;
    const uint8_t *p = conn->reader.buf + conn->reader.off;
    size_t have = conn->reader.len - conn->reader.off;
    uint32_t n = 0;
    uint64_t id = 0;
    bool found = false;

    if (have >= TN_FRAME_HEADER) {
        n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
            (uint32_t)p[3];
    }
    if (have > TN_FRAME_HEADER + 1 && p[TN_FRAME_HEADER] == 0x08) {
        unsigned shift = 0;
        for (size_t i = TN_FRAME_HEADER + 1; i < have && shift < 64; i++) {
            id |= (uint64_t)(p[i] & 0x7f) << shift;
            shift += 7;
            if ((p[i] & 0x80) == 0) {
                found = true;
                break;
            }
        }
    }
    if (found && e != NULL) {
        struct list *l;
        for (l = e->sent.next; l != &e->sent; l = l->next) {
            struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
            if (op->id == id) {
                snprintf(op->errmsg, sizeof op->errmsg,
                         "reply of %" PRIu32
                         " bytes is over max_frame (%zu): "
                         "raise tn_client_opts.max_frame",
                         n, conn->reader.max);
                opComplete(e, op, TN_PROTOCOL, NULL);
                break;
            }
        }
    }
    connFail(conn, "reply frame of %" PRIu32 " bytes over %zu", n,
             conn->reader.max);
}

static void readCb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *conn = s->data;
    const uint8_t *payload;
    size_t len;
    int rv;

    if (nread == 0 || conn->state != CONN_READY) {
        return;
    }
    if (nread < 0) {
        connFail(conn, "%s",
                 nread == UV_EOF ? "connection closed by peer"
                                 : uv_strerror((int)nread));
        return;
    }
    conn->last_rx_ns = leaseNow();
    rv = tn_frame_reader_feed(&conn->reader, buf->base, (size_t)nread);
    if (rv == TN_FRAME_NOMEM) {
        connFail(conn, "out of memory reading a reply");
        return;
    }
    if (rv == TN_FRAME_TOO_BIG) {
        connTooBig(conn);
        return;
    }
    while (conn->state == CONN_READY) {
        Tn__Response *r;
        rv = tn_frame_reader_next(&conn->reader, &payload, &len);
        if (rv == 0) {
            break;
        }
        if (rv < 0) {
            connTooBig(conn);
            return;
        }
        r = tn__response__unpack(NULL, len, payload);
        if (r == NULL) {
            connFail(conn, "undecodable reply (%zu bytes)", len);
            return;
        }
        handleResponse(conn, r);
        tn__response__free_unpacked(r, NULL);
    }
}

static void connectTimerCb(uv_timer_t *t)
{
    struct conn *conn = t->data;
    connFail(conn, "connect timed out");
}

static void connectCb(uv_connect_t *req, int status)
{
    struct conn *conn = req->data;
    struct engine *e = conn->e;
    int rv;

    if (e == NULL || conn->state != CONN_CONNECTING) {
        goto out;
    }
    if (status < 0) {
        connFail(conn, "connect: %s", uv_strerror(status));
        goto out;
    }
    uv_timer_stop(&conn->timer);
    uv_tcp_nodelay(&conn->tcp, 1);
    rv = uv_read_start((uv_stream_t *)&conn->tcp, allocCb, readCb);
    if (rv != 0) {
        connFail(conn, "read: %s", uv_strerror(rv));
        goto out;
    }
    conn->state = CONN_READY;
    connFlush(e);
out:
    connRelease(conn); /* the connect request */
}

static void gaiCb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct conn *conn = req->data;
    struct engine *e = conn->e;
    int rv;

    conn->gai_pending = false;
    if (e == NULL || conn->state != CONN_RESOLVING) {
        uv_freeaddrinfo(res);
        goto out;
    }
    if (status < 0 || res == NULL) {
        uv_freeaddrinfo(res);
        connFail(conn, "resolve: %s",
                 status < 0 ? uv_strerror(status) : "no address");
        goto out;
    }
    rv = uv_tcp_init(e->loop, &conn->tcp);
    if (rv != 0) {
        uv_freeaddrinfo(res);
        connFail(conn, "tcp: %s", uv_strerror(rv));
        goto out;
    }
    conn->tcp.data = conn;
    conn->tcp_open = true;
    conn->refs++; /* the tcp handle */
    conn->connect.data = conn;
    rv = uv_tcp_connect(&conn->connect, &conn->tcp, res->ai_addr, connectCb);
    uv_freeaddrinfo(res);
    if (rv != 0) {
        connFail(conn, "connect: %s", uv_strerror(rv));
        goto out;
    }
    conn->refs++; /* the connect request */
    conn->state = CONN_CONNECTING;
out:
    connRelease(conn); /* the resolution request */
}

/* Start a connection to @ep; the engine's current connection becomes it. */
static void connStart(struct engine *e, const struct endpoint *ep)
{
    struct conn *conn = calloc(1, sizeof *conn);
    struct addrinfo hints;
    char port[8];
    int rv;

    if (conn != NULL) {
        conn->rbuf = malloc(CONN_READ_BUF);
    }
    if (conn == NULL || conn->rbuf == NULL) {
        free(conn);
        snprintf(e->last_error, sizeof e->last_error, "out of memory");
        e->reconnect_at_ns = leaseNow() + 100 * 1000000u;
        armRetry(e);
        return;
    }
    conn->e = e;
    conn->owner = e;
    conn->ep = *ep;
    conn->last_rx_ns = leaseNow();
    conn->refs = 2; /* the engine, the timer */
    tn_frame_reader_init(&conn->reader, e->config.max_frame);
    uv_timer_init(e->loop, &conn->timer);
    conn->timer.data = conn;
    e->conn = conn;
    e->open_handles++;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%u", (unsigned)ep->port);
    conn->gai.data = conn;
    conn->state = CONN_RESOLVING;
    rv = uv_getaddrinfo(e->loop, &conn->gai, gaiCb, ep->host, port, &hints);
    if (rv != 0) {
        connFail(conn, "resolve: %s", uv_strerror(rv));
        return;
    }
    conn->gai_pending = true;
    conn->refs++;
    uv_timer_start(&conn->timer, connectTimerCb, e->config.connect_timeout_ms,
                   0);
}

/* ------------------------------------------------------------- engine */

static void engineMaybeClosed(struct engine *e)
{
    if (e->closing && e->open_handles == 0 && e->close_cb != NULL) {
        void (*cb)(struct engine *) = e->close_cb;
        e->close_cb = NULL;
        free(e->endpoints);
        e->endpoints = NULL;
        cb(e);
    }
}

static void engineConnGone(struct engine *e)
{
    if (e->closing) {
        return;
    }
    engineKick(e);
    armRetry(e);
}

/* Every WATCH_PERIOD_MS while requests are on the wire: a connection that
 * has had a request unanswered for connect_timeout_ms, and has received
 * nothing meanwhile, is hung (a frozen node still accepts connections and
 * data): drop it, stay away from it for a while, and resend elsewhere.
 * Long waits (queued acquires, long polls) do not count. A stream does,
 * with a longer limit: its node sends a progress event at least every
 * watch_progress_ms, so ENGINE_STREAM_SILENCE intervals with nothing
 * received mean a dead, frozen or cut-off node. */
static void watchTimerCb(uv_timer_t *t)
{
    struct engine *e = t->data;
    struct conn *conn = e->conn;
    uint64_t now = leaseNow();
    uint64_t silence = (uint64_t)e->config.connect_timeout_ms * 1000000u;
    uint64_t stream_silence = (uint64_t)e->config.watch_progress_ms *
                              ENGINE_STREAM_SILENCE * 1000000u;
    struct list *l;

    if (listEmpty(&e->sent)) {
        uv_timer_stop(t);
        return;
    }
    if (conn == NULL || conn->state != CONN_READY) {
        return;
    }
    for (l = e->sent.next; l != &e->sent; l = l->next) {
        struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
        uint64_t since =
            op->sent_ns > conn->last_rx_ns ? op->sent_ns : conn->last_rx_ns;
        uint64_t limit = op->stream     ? stream_silence
                         : op->may_wait ? 0
                                        : silence;
        if (limit != 0 && now - since > limit) {
            /* Hung: neither its hints nor the round-robin lead back to it
             * for a while (a frozen node still accepts connections). */
            e->bad_leader = conn->ep;
            e->bad_leader_until_ns = now + 1000 * 1000000ULL;
            connFail(conn, "%s for %u ms",
                     op->stream ? "no stream event or progress" : "no answer",
                     (unsigned)((now - since) / 1000000u));
            return;
        }
    }
}

static void engineSendOp(struct engine *e, struct engine_op *op)
{
    struct conn *conn = e->conn;
    size_t len;

    op->id = ++e->next_id;
    op->request->id = op->id;
    op->request->group = 0;
    if (op->mutating) {
        op->request->client_id = e->client_id;
        op->request->seq = op->seq;
    }
    len = tn_frame_size(&op->request->base, e->config.max_frame);
    if (len == 0) {
        snprintf(op->errmsg, sizeof op->errmsg,
                 "request larger than the frame limit");
        opFailLater(e, op, TN_INVALID_ARGUMENT);
        return;
    }
    if (conn->out_len + len > conn->out_cap) {
        size_t cap = conn->out_cap != 0 ? conn->out_cap : 1024;
        uint8_t *p;
        while (cap < conn->out_len + len) {
            cap *= 2;
        }
        p = realloc(conn->out, cap);
        if (p == NULL) {
            snprintf(op->errmsg, sizeof op->errmsg,
                     "out of memory encoding the request");
            opFailLater(e, op, TN_NOMEM);
            return;
        }
        conn->out = p;
        conn->out_cap = cap;
    }
    tn_frame_write(&op->request->base, len, conn->out + conn->out_len);
    conn->out_len += len;
    op->frame_len = len;
    op->sent_ns = leaseNow();
    if (op->first_sent_ns == 0) {
        op->first_sent_ns = op->sent_ns;
    }
    if (!uv_is_active((uv_handle_t *)&e->watch_timer)) {
        uv_timer_start(&e->watch_timer, watchTimerCb, WATCH_PERIOD_MS,
                       WATCH_PERIOD_MS);
    }
    op->attempts++;
    listRemove(&op->link);
    op->state = OP_SENT;
    listPush(&e->sent, &op->link);
}

static void engineKick(struct engine *e)
{
    if (e->closing || listEmpty(&e->waiting)) {
        return;
    }
    if (e->conn != NULL) {
        connFlush(e);
        return;
    }
    if (leaseNow() < e->reconnect_at_ns) {
        armRetry(e);
        return;
    }
    if (e->has_leader) {
        struct endpoint ep = e->leader;
        connStart(e, &ep);
    } else {
        size_t i = e->next_endpoint++ % e->n_endpoints;
        if (e->n_endpoints > 1 && leaseNow() < e->bad_leader_until_ns &&
            strcmp(e->endpoints[i].label, e->bad_leader.label) == 0) {
            /* Just found hung or unreachable: try the next one first. */
            i = e->next_endpoint++ % e->n_endpoints;
        }
        connStart(e, &e->endpoints[i]);
    }
}

void engineLeaderHint(struct engine *e, const char *rpc)
{
    struct endpoint ep;
    char msg[128];

    if (rpc == NULL || rpc[0] == '\0' ||
        endpointParse(rpc, strlen(rpc), &ep, msg, sizeof msg) != 0) {
        return;
    }
    e->leader = ep;
    e->has_leader = true;
}

const char *engineCurrentEndpoint(const struct engine *e)
{
    return e->conn != NULL ? e->conn->ep.label : NULL;
}

static bool isRetryable(const struct engine_op *op, int status)
{
    return status == TN__STATUS__NO_QUORUM ||
           status == TN__STATUS__COMMIT_UNKNOWN ||
           status == TN__STATUS__RATE_LIMITED ||
           status == TN__STATUS__TIMEOUT ||
           /* A stream ended by the node (shutting down): resume elsewhere.
            * (Our own cancels complete locally first.) */
           (op->stream && status == TN__STATUS__CANCELED);
}

static void handleResponse(struct conn *conn, const Tn__Response *r)
{
    struct engine *e = conn->e;
    struct engine_op *op = NULL;
    struct list *l;
    int status = (int)r->status;

    for (l = e->sent.next; l != &e->sent; l = l->next) {
        struct engine_op *o = LIST_ENTRY(l, struct engine_op, link);
        if (o->id == r->id) {
            op = o;
            break;
        }
    }
    if (op == NULL && r->id == 0 && status != TN__STATUS__OK) {
        /* A connection-level error (the daemon closes the connection
         * next). If it refuses a frame as too large, the culprit is the
         * largest request in flight when that is over the daemon's default
         * limit: resending it would fail the same way. */
        struct engine_op *big = NULL;
        for (l = e->sent.next; l != &e->sent; l = l->next) {
            struct engine_op *o = LIST_ENTRY(l, struct engine_op, link);
            if (big == NULL || o->frame_len > big->frame_len) {
                big = o;
            }
        }
        snprintf(e->last_error, sizeof e->last_error, "%.60s: %.180s",
                 conn->ep.label, r->message != NULL ? r->message : "");
        if (big != NULL && status == TN__STATUS__INVALID_ARGUMENT &&
            big->frame_len > TN_FRAME_MAX_DEFAULT) {
            snprintf(big->errmsg, sizeof big->errmsg,
                     "%.180s (request of %zu bytes)",
                     r->message != NULL ? r->message : "refused",
                     big->frame_len);
            opComplete(e, big, TN_INVALID_ARGUMENT, NULL);
        }
        return;
    }
    if (op == NULL) {
        return; /* a late answer to an op that timed out */
    }
    op->reached = true;
    if (op->stream && r->more) {
        e->failures = 0;
        e->reconnect_at_ns = 0;
        op->attempts = 0; /* backoffs restart after a working stream */
        op->event_cb(op, r);
        return;
    }

    if (status == TN__STATUS__NOT_LEADER) {
        struct endpoint ep;
        char msg[128];
        bool hinted = r->leader_rpc != NULL && r->leader_rpc[0] != '\0' &&
                      endpointParse(r->leader_rpc, strlen(r->leader_rpc), &ep,
                                    msg, sizeof msg) == 0 &&
                      strcmp(ep.label, conn->ep.label) != 0;

        op->last_status = TN_NOT_LEADER;
        if (hinted && strcmp(ep.label, e->bad_leader.label) == 0 &&
            leaseNow() < e->bad_leader_until_ns) {
            /* It names the leader we just failed to reach: stay on this
             * connection (reads still work here) and ask again later, when
             * a new leader may be known. */
            snprintf(op->errmsg, sizeof op->errmsg,
                     "the leader %.60s is unreachable", ep.label);
            opDelay(e, op);
            return;
        }
        if (hinted) {
            /* Go to the leader: resend everything there. (The failure
             * count is not reset: a hint naming a dead node must not make
             * the client spin between it and the follower.) */
            e->leader = ep;
            e->has_leader = true;
            listRemove(&op->link);
            op->state = OP_WAITING;
            listPush(&e->waiting, &op->link);
            connDrop(conn, false, "not the leader (leader is %s)", ep.label);
            return;
        }
        /* No leader known here: back off, and try another node. */
        if (e->has_leader && strcmp(e->leader.label, conn->ep.label) == 0) {
            e->has_leader = false;
        }
        opDelay(e, op);
        connFail(conn, "no leader known");
        return;
    }
    e->failures = 0;
    e->reconnect_at_ns = 0;
    if (isRetryable(op, status)) {
        op->last_status = status;
        if (r->message != NULL && r->message[0] != '\0') {
            snprintf(op->errmsg, sizeof op->errmsg, "%.60s: %.180s",
                     conn->ep.label, r->message);
        }
        opDelay(e, op);
        if (status == TN__STATUS__NO_QUORUM) {
            /* This node may be cut off from the majority: try another. */
            connFail(conn, "no quorum");
        }
        return;
    }
    if (status == TN__STATUS__INVALID_ARGUMENT && op->mutating &&
        op->attempts > 1 && r->message != NULL &&
        strncmp(r->message, "seq:", 4) == 0) {
        /* A resend was refused because its sequence number left the
         * cluster's reply window: its outcome is no longer known. The
         * operations are idempotent per session and token, so send it
         * again as a new request. */
        listRemove(&op->link);
        op->seq = 0;
        op->state = OP_WAITING;
        listPush(&e->waiting, &op->link);
        engineKick(e);
        return;
    }
    if (status != TN__STATUS__OK && r->message != NULL &&
        r->message[0] != '\0') {
        snprintf(op->errmsg, sizeof op->errmsg, "%s", r->message);
    } else {
        op->errmsg[0] = '\0';
    }
    if (r->body_case == TN__RESPONSE__BODY_CLUSTER && r->cluster != NULL &&
        r->cluster->leader_rpc != NULL && r->cluster->leader_rpc[0] != '\0' &&
        !e->has_leader) {
        engineLeaderHint(e, r->cluster->leader_rpc);
    }
    {
        bool held_seq = op->seq != 0;
        opComplete(e, op, status, r); /* @op may be gone afterwards */
        if (held_seq) {
            engineKick(e); /* the seq window may have opened */
        }
    }
}

int engineInit(struct engine *e,
               uv_loop_t *loop,
               const struct engine_config *config,
               struct endpoint *endpoints,
               size_t n,
               uint64_t client_id)
{
    memset(e, 0, sizeof *e);
    if (n == 0 || client_id == 0) {
        return TN_INVALID_ARGUMENT;
    }
    e->loop = loop;
    e->config = *config;
    e->endpoints = endpoints;
    e->n_endpoints = n;
    e->client_id = client_id;
    e->next_seq = 1;
    e->rand_state = client_id ^ uv_hrtime();
    if (e->rand_state == 0) {
        e->rand_state = 0x9E3779B97F4A7C15ULL;
    }
    /* Start at a random endpoint, so clients spread over the nodes. */
    e->next_endpoint = (size_t)engineRandom(e, n);
    listInit(&e->waiting);
    listInit(&e->sent);
    listInit(&e->delayed);
    listInit(&e->failed);
    uv_timer_init(loop, &e->deadline_timer);
    uv_timer_init(loop, &e->retry_timer);
    uv_timer_init(loop, &e->kick_timer);
    uv_timer_init(loop, &e->watch_timer);
    e->watch_timer.data = e;
    e->deadline_timer.data = e;
    e->retry_timer.data = e;
    e->kick_timer.data = e;
    e->open_handles = 4;
    return TN_OK;
}

void engineSubmit(struct engine *e, struct engine_op *op)
{
    op->first_sent_ns = 0;
    op->errmsg[0] = '\0';
    op->attempts = 0;
    op->last_status = 0;
    op->reached = false;
    op->id = 0;
    listInit(&op->link);
    op->seq = 0; /* handed out when first sent */
    if (e->closing) {
        snprintf(op->errmsg, sizeof op->errmsg, "client is closing");
        opFailLater(e, op, TN_CANCELED);
        return;
    }
    op->state = OP_WAITING;
    listPush(&e->waiting, &op->link);
    armDeadline(e, op->deadline_ns);
    engineKick(e);
}

/* Write a WatchCancel for the stream @op (sent as request @op->id on the
 * current connection); its answer matches no op and is dropped. */
static void sendWatchCancel(struct engine *e, struct engine_op *op)
{
    Tn__Request req = TN__REQUEST__INIT;
    Tn__WatchCancel body = TN__WATCH_CANCEL__INIT;
    struct conn *conn = e->conn;
    struct write_req *w;
    uv_buf_t buf;
    uint8_t *frame;
    size_t len;

    if (conn == NULL || conn->state != CONN_READY) {
        return; /* the stream died with its connection */
    }
    body.watch_id = op->id;
    req.id = ++e->next_id;
    req.body_case = TN__REQUEST__BODY_WATCH_CANCEL;
    req.watch_cancel = &body;
    if (tn_frame_encode(&req.base, e->config.max_frame, &frame, &len) !=
        TN_FRAME_OK) {
        return;
    }
    w = malloc(sizeof *w);
    if (w == NULL) {
        free(frame);
        return;
    }
    w->conn = conn;
    w->buf = frame;
    buf = uv_buf_init((char *)frame, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&conn->tcp, &buf, 1, writeCb) != 0) {
        free(frame);
        free(w);
    }
}

void engineCancel(struct engine *e, struct engine_op *op)
{
    switch (op->state) {
        case OP_SENT:
            if (op->stream) {
                sendWatchCancel(e, op);
            }
            /* fall through */
        case OP_WAITING:
        case OP_DELAYED:
            snprintf(op->errmsg, sizeof op->errmsg, "canceled");
            opFailLater(e, op, TN_CANCELED);
            break;
        default:
            break; /* completing or completed already */
    }
}

static void engineHandleCloseCb(uv_handle_t *h)
{
    struct engine *e = h->data;
    e->open_handles--;
    engineMaybeClosed(e);
}

static void cancelList(struct engine *e, struct list *head)
{
    struct list *l;
    while ((l = head->next) != head) {
        struct engine_op *op = LIST_ENTRY(l, struct engine_op, link);
        int rc = op->state == OP_FAILED ? op->fail_rc : TN_CANCELED;
        if (rc == TN_CANCELED) {
            snprintf(op->errmsg, sizeof op->errmsg, "client is closing");
        }
        opComplete(e, op, rc, NULL);
    }
}

void engineClose(struct engine *e, void (*cb)(struct engine *e))
{
    e->closing = true;
    e->close_cb = cb;
    cancelList(e, &e->failed);
    cancelList(e, &e->waiting);
    cancelList(e, &e->sent);
    cancelList(e, &e->delayed);
    if (e->conn != NULL) {
        connDestroy(e->conn);
    }
    uv_close((uv_handle_t *)&e->deadline_timer, engineHandleCloseCb);
    uv_close((uv_handle_t *)&e->retry_timer, engineHandleCloseCb);
    uv_close((uv_handle_t *)&e->kick_timer, engineHandleCloseCb);
    uv_close((uv_handle_t *)&e->watch_timer, engineHandleCloseCb);
}
