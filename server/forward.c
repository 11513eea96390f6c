/* Forwarder: relays requests from a follower to the leader.
 *
 * Happy path: send → (connect if needed) → write frame → read frames →
 * match the response id → cb(OK response).
 * Failures: connect error, read error/EOF, garbage from the peer, a new
 * leader address: every pending request fails (COMMIT_UNKNOWN: a mutation
 * may or may not have been applied; the client retries with the same seq). */
#include "forward.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "lib/addr.h"
#include "lib/log.h"

struct fwdConn
{
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct forwarder *f;
    char address[128];
    bool connected;
    bool closing;
    struct tn_frame_reader reader;
    tn_queue pending;  /* forward_req waiting for a response */
    tn_queue unsent;   /* fwdWrite waiting for the connection */
};

struct fwdWrite
{
    uv_write_t req;
    tn_queue queue;
    uint8_t *buf;
    size_t len;
};

struct forwarder
{
    uv_loop_t *loop;
    size_t max_frame;
    struct fwdConn *conn;
    uint64_t next_id;
    bool closing;
    unsigned open_conns;
};

int forwarderInit(struct forwarder **out, uv_loop_t *loop, size_t max_frame)
{
    struct forwarder *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return TN__STATUS__INTERNAL;
    }
    f->loop = loop;
    f->max_frame = max_frame;
    f->next_id = 1;
    *out = f;
    return 0;
}

static void fwdMaybeFree(struct forwarder *f)
{
    if (f->closing && f->open_conns == 0) {
        free(f);
    }
}

static void fwdConnCloseCb(uv_handle_t *h)
{
    struct fwdConn *c = h->data;
    struct forwarder *f = c->f;
    tn_frame_reader_close(&c->reader);
    free(c);
    f->open_conns--;
    fwdMaybeFree(f);
}

/* Fail everything pending on @c and close it. */
static void fwdConnDrop(struct fwdConn *c, int status)
{
    struct forwarder *f = c->f;

    if (c->closing) {
        return;
    }
    c->closing = true;
    if (f->conn == c) {
        f->conn = NULL;
    }
    while (!tn_queue_empty(&c->unsent)) {
        tn_queue *q = tn_queue_head(&c->unsent);
        struct fwdWrite *w = TN_QUEUE_DATA(q, struct fwdWrite, queue);
        tn_queue_remove(q);
        free(w->buf);
        free(w);
    }
    while (!tn_queue_empty(&c->pending)) {
        tn_queue *q = tn_queue_head(&c->pending);
        struct forward_req *r = TN_QUEUE_DATA(q, struct forward_req, queue);
        tn_queue_remove(q);
        r->cb(r, status, NULL);
    }
    uv_close((uv_handle_t *)&c->tcp, fwdConnCloseCb);
}

static void fwdWriteCb(uv_write_t *req, int status)
{
    struct fwdWrite *w = req->data;
    struct fwdConn *c = req->handle->data;
    free(w->buf);
    free(w);
    if (status != 0 && !c->closing) {
        tnWarnf("\"forward write failed\" leader=%s error=\"%s\"", c->address,
                uv_strerror(status));
        fwdConnDrop(c, TN__STATUS__COMMIT_UNKNOWN);
    }
}

static void fwdFlush(struct fwdConn *c)
{
    while (c->connected && !tn_queue_empty(&c->unsent)) {
        tn_queue *q = tn_queue_head(&c->unsent);
        struct fwdWrite *w = TN_QUEUE_DATA(q, struct fwdWrite, queue);
        uv_buf_t b = uv_buf_init((char *)w->buf, (unsigned)w->len);
        int rv;
        tn_queue_remove(q);
        w->req.data = w;
        rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, fwdWriteCb);
        if (rv != 0) {
            free(w->buf);
            free(w);
            fwdConnDrop(c, TN__STATUS__COMMIT_UNKNOWN);
            return;
        }
    }
}

static void fwdAllocCb(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    static char scratch[64 * 1024]; /* the loop thread is the only user */
    (void)h;
    (void)size;
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void fwdReadCb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct fwdConn *c = s->data;
    const uint8_t *payload;
    size_t len;
    int rv;

    if (n == 0 || c->closing) {
        return;
    }
    if (n < 0) {
        fwdConnDrop(c, TN__STATUS__COMMIT_UNKNOWN);
        return;
    }
    if (tn_frame_reader_feed(&c->reader, buf->base, (size_t)n) != 0) {
        fwdConnDrop(c, TN__STATUS__COMMIT_UNKNOWN);
        return;
    }
    while ((rv = tn_frame_reader_next(&c->reader, &payload, &len)) == 1) {
        Tn__Response *resp = tn__response__unpack(NULL, len, payload);
        struct forward_req *r = NULL;
        tn_queue *q;
        if (resp == NULL) {
            tnWarnf("\"garbage from leader\" leader=%s", c->address);
            fwdConnDrop(c, TN__STATUS__COMMIT_UNKNOWN);
            return;
        }
        TN_QUEUE_FOREACH(q, &c->pending)
        {
            struct forward_req *p =
                TN_QUEUE_DATA(q, struct forward_req, queue);
            if (p->id == resp->id) {
                r = p;
                break;
            }
        }
        if (r != NULL) {
            tn_queue_remove(&r->queue);
            r->cb(r, 0, resp);
        }
        tn__response__free_unpacked(resp, NULL);
        if (c->closing) {
            return;
        }
    }
    if (rv < 0) {
        fwdConnDrop(c, TN__STATUS__COMMIT_UNKNOWN);
    }
}

static void fwdConnectCb(uv_connect_t *req, int status)
{
    struct fwdConn *c = req->data;
    if (c->closing) {
        return;
    }
    if (status != 0) {
        tnWarnf("\"cannot reach leader\" leader=%s error=\"%s\"", c->address,
                uv_strerror(status));
        fwdConnDrop(c, TN__STATUS__NO_QUORUM);
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, fwdAllocCb, fwdReadCb) != 0) {
        fwdConnDrop(c, TN__STATUS__NO_QUORUM);
        return;
    }
    fwdFlush(c);
}

static struct fwdConn *fwdConnOpen(struct forwarder *f, const char *address)
{
    struct fwdConn *c;
    struct sockaddr_in sa;

    if (strlen(address) >= sizeof c->address ||
        tnParseIpv4(address, &sa) != 0) {
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->f = f;
    strcpy(c->address, address);
    tn_queue_init(&c->pending);
    tn_queue_init(&c->unsent);
    tn_frame_reader_init(&c->reader, f->max_frame);
    uv_tcp_init(f->loop, &c->tcp);
    c->tcp.data = c;
    f->open_conns++;
    c->connect.data = c;
    if (uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&sa,
                       fwdConnectCb) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, fwdConnCloseCb);
        return NULL;
    }
    return c;
}

int forwarderSend(struct forwarder *f,
                  const char *address,
                  const Tn__Request *request,
                  struct forward_req *req,
                  forward_cb cb)
{
    struct fwdConn *c = f->conn;
    struct fwdWrite *w;
    Tn__Request copy = *request;
    int rv;

    if (f->closing) {
        return TN__STATUS__CANCELED;
    }
    if (c != NULL && strcmp(c->address, address) != 0) {
        fwdConnDrop(c, TN__STATUS__COMMIT_UNKNOWN);
        c = NULL;
    }
    if (c == NULL) {
        c = fwdConnOpen(f, address);
        if (c == NULL) {
            return TN__STATUS__NO_QUORUM;
        }
        f->conn = c;
    }
    w = calloc(1, sizeof *w);
    if (w == NULL) {
        return TN__STATUS__INTERNAL;
    }
    req->cb = cb;
    req->f = f;
    req->id = f->next_id++;
    copy.id = req->id;
    copy.forward = false; /* one hop only: never loop between followers */
    rv = tn_frame_encode(&copy.base, f->max_frame, &w->buf, &w->len);
    if (rv != 0) {
        free(w);
        return rv == TN_FRAME_TOO_BIG ? TN__STATUS__INVALID_ARGUMENT
                                      : TN__STATUS__INTERNAL;
    }
    tn_queue_insert_tail(&c->pending, &req->queue);
    tn_queue_insert_tail(&c->unsent, &w->queue);
    fwdFlush(c);
    return 0;
}

void forwarderClose(struct forwarder *f)
{
    f->closing = true;
    if (f->conn != NULL) {
        fwdConnDrop(f->conn, TN__STATUS__CANCELED);
    }
    fwdMaybeFree(f);
}
