/* The RPC front end: framing and connection handling.
 *
 * Connection life: accept → read frames → per frame: unpack → submit →
 * (reply cb) → encode → write. On EOF, a read error, a write error or bad
 * input the connection stops reading, cancels what it has pending and is
 * freed once every pending request's callback has fired and every write
 * has completed.
 *
 * Answers are not written one by one: connSend appends the frame to the
 * connection's output buffer, and the buffers are written once per loop
 * iteration (prepare and check handles), so that the answers a pipelining
 * client gets in one turn leave in one write.
 *
 * Streamed watches: a Watch request gets one Response per event (more set)
 * and a final one; it stays on `pending` until the final one. When the
 * socket does not keep up (more than RPC_STREAM_BACKLOG bytes waiting in
 * the output buffer and in libuv), a stream's event is held instead of
 * written, one per stream: a newer event replaces the held one (each event
 * is the full current state, so only intermediate states are skipped).
 * Held events are written as the socket drains (write callbacks), and
 * dropped when the stream ends. A WatchCancel names a watch of the same
 * connection and is answered here; at most RPC_MAX_STREAMS watches run per
 * connection. */
#include "rpc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/queue.h"

#define RPC_MAX_STREAMS    256
#define RPC_STREAM_BACKLOG (256 * 1024)

struct rpc_server
{
    uv_loop_t *loop;
    struct dispatch *d;
    uv_tcp_t listener;
    size_t max_frame;
    tn_queue conns;
    uv_prepare_t flush_prepare; /* write the output buffers before polling */
    uv_check_t flush_check;     /* ... and after the I/O callbacks */
    tn_queue dirty;             /* connections with output to write */
    bool flushing_active;       /* the two handles are started */
    bool listening;
    bool closing;
    unsigned open_handles; /* listener + connections not yet freed */
    void (*close_cb)(void *data);
    void *close_data;
};

struct rpcConn
{
    uv_tcp_t tcp;
    struct rpc_server *s;
    tn_queue queue;
    tn_queue pending;     /* struct rpcReq */
    struct tn_frame_reader reader;
    uint8_t *out;         /* answers not handed to the socket yet */
    size_t out_len;
    size_t out_cap;
    tn_queue dirty;       /* in s->dirty while out_len > 0 */
    unsigned writes;      /* writes in flight */
    unsigned n_streams;   /* watches on pending */
    tn_queue held;        /* struct rpcReq with a held event */
    bool closing;         /* no more reads, no new requests */
    bool handle_closed;   /* uv_close called */
    char peer[64];
};

struct rpcReq
{
    struct dispatch_req dr;
    tn_queue queue;
    struct rpcConn *c;
    Tn__Request *request; /* owned (protobuf-c unpacked) */
    bool stream;          /* a watch, counted in n_streams */
    bool canceled;        /* dispatchCancel was called */
    uint8_t *held;        /* owned: the latest event not yet written */
    size_t held_len;
    tn_queue held_link;   /* in c->held while held != NULL */
};

struct rpcWrite
{
    uv_write_t req;
    struct rpcConn *c;
    uint8_t *buf; /* owned: a former output buffer */
};

/* Output beyond this is written at once rather than at the end of the
 * loop iteration. */
#define OUT_EAGER_BYTES (256 * 1024)

static void rpcMaybeFreeServer(struct rpc_server *s)
{
    if (s->closing && s->open_handles == 0) {
        void (*cb)(void *) = s->close_cb;
        void *data = s->close_data;
        free(s);
        if (cb != NULL) {
            cb(data);
        }
    }
}

static void connFreeCb(uv_handle_t *h)
{
    struct rpcConn *c = h->data;
    struct rpc_server *s = c->s;
    tn_frame_reader_close(&c->reader);
    if (c->out_len > 0) {
        tn_queue_remove(&c->dirty);
    }
    free(c->out);
    free(c);
    s->open_handles--;
    rpcMaybeFreeServer(s);
}

/* Close the handle once nothing references the connection any more. */
static void connFlushOut(struct rpcConn *c);

static void connMaybeClose(struct rpcConn *c)
{
    if (c->closing && !c->handle_closed && tn_queue_empty(&c->pending)) {
        connFlushOut(c);
    }
    if (c->closing && !c->handle_closed && tn_queue_empty(&c->pending) &&
        c->writes == 0) {
        c->handle_closed = true;
        tn_queue_remove(&c->queue);
        uv_close((uv_handle_t *)&c->tcp, connFreeCb);
    }
}

static void connShutdown(struct rpcConn *c)
{
    tn_queue *q;
    if (c->closing) {
        return;
    }
    c->closing = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    /* A closing dispatch answers a cancel at once, which frees that
     * request and maybe others of this connection: walk from the head
     * again after each cancel. */
    for (;;) {
        struct rpcReq *r = NULL;
        TN_QUEUE_FOREACH(q, &c->pending)
        {
            struct rpcReq *p = TN_QUEUE_DATA(q, struct rpcReq, queue);
            if (!p->canceled) {
                r = p;
                break;
            }
        }
        if (r == NULL) {
            break;
        }
        r->canceled = true;
        dispatchCancel(c->s->d, &r->dr);
    }
    connMaybeClose(c);
}

static void connFlushHeld(struct rpcConn *c);

static void writeCb(uv_write_t *req, int status)
{
    struct rpcWrite *w = req->data;
    struct rpcConn *c = w->c;
    free(w->buf);
    free(w);
    c->writes--;
    if (status != 0) {
        connShutdown(c);
    } else {
        connFlushHeld(c);
    }
    connMaybeClose(c);
}

/* Hand the output buffer to the socket: at once if it takes it all (no
 * write request, no EPOLL_CTL_MOD), else the rest goes to uv_write, which
 * takes the buffer over. */
static void connFlushOut(struct rpcConn *c)
{
    struct rpcWrite *w;
    uv_buf_t b;
    int rv;

    if (c->out_len == 0) {
        return;
    }
    tn_queue_remove(&c->dirty);
    b = uv_buf_init((char *)c->out, (unsigned)c->out_len);
    c->out_len = 0;
    if (c->handle_closed) {
        return;
    }
    /* libuv refuses while earlier writes are queued: order is kept. */
    rv = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rv == (int)b.len) {
        return;
    }
    if (rv > 0) {
        b.base += rv;
        b.len -= (unsigned)rv;
    } else if (rv != UV_EAGAIN) {
        connShutdown(c);
        return;
    }
    w = malloc(sizeof *w);
    if (w == NULL) {
        connShutdown(c);
        return;
    }
    w->c = c;
    w->buf = c->out;
    w->req.data = w;
    c->out = NULL;
    c->out_cap = 0;
    rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, writeCb);
    if (rv != 0) {
        free(w->buf);
        free(w);
        connShutdown(c);
        return;
    }
    c->writes++;
}

static void flushAll(struct rpc_server *s)
{
    while (!tn_queue_empty(&s->dirty)) {
        tn_queue *q = tn_queue_head(&s->dirty);
        connFlushOut(TN_QUEUE_DATA(q, struct rpcConn, dirty));
    }
    if (s->flushing_active) {
        uv_prepare_stop(&s->flush_prepare);
        uv_check_stop(&s->flush_check);
        s->flushing_active = false;
    }
}

static void flushPrepareCb(uv_prepare_t *h)
{
    flushAll(h->data);
}

static void flushCheckCb(uv_check_t *h)
{
    flushAll(h->data);
}

/* Room for @size more bytes in the output buffer, or NULL (the
 * connection is then shut down). */
static uint8_t *connReserve(struct rpcConn *c, size_t size)
{
    if (c->out_len + size > c->out_cap) {
        size_t cap = c->out_cap != 0 ? c->out_cap : 512;
        uint8_t *p;
        while (cap < c->out_len + size) {
            cap *= 2;
        }
        p = realloc(c->out, cap);
        if (p == NULL) {
            connShutdown(c);
            return NULL;
        }
        c->out = p;
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

/* @size bytes were written at connReserve()'s pointer: they leave at the
 * end of this loop iteration, together with the other answers of the
 * turn. */
static void connCommit(struct rpcConn *c, size_t size)
{
    struct rpc_server *s = c->s;

    if (c->out_len == 0) {
        tn_queue_insert_tail(&s->dirty, &c->dirty);
    }
    c->out_len += size;
    if (c->out_len >= OUT_EAGER_BYTES) {
        connFlushOut(c);
    } else if (!s->flushing_active && !s->closing) {
        uv_prepare_start(&s->flush_prepare, flushPrepareCb);
        uv_check_start(&s->flush_check, flushCheckCb);
        s->flushing_active = true;
    } else if (s->closing) {
        connFlushOut(c);
    }
}

/* Queue @resp's frame on the connection. */
static void connSend(struct rpcConn *c, const Tn__Response *resp)
{
    size_t size;
    uint8_t *p;

    if (c->handle_closed) {
        return;
    }
    size = tn_frame_size(&resp->base, SIZE_MAX);
    if (size == 0) {
        connShutdown(c);
        return;
    }
    p = connReserve(c, size);
    if (p == NULL) {
        return;
    }
    tn_frame_write(&resp->base, size, p);
    connCommit(c, size);
}

/* Bytes answered but not yet taken by the socket. */
static size_t connBacklog(const struct rpcConn *c)
{
    return c->tcp.write_queue_size + c->out_len;
}

static void reqDropHeld(struct rpcReq *r)
{
    if (r->held != NULL) {
        free(r->held);
        r->held = NULL;
        tn_queue_remove(&r->held_link);
    }
}

/* An event of the stream @r: send it, or hold it while the socket is
 * backed up (replacing an older held one). While events are held, a write
 * is in flight (the output buffer alone never exceeds the backlog: it is
 * written eagerly first): its callback sends them. */
static void connSendEvent(struct rpcConn *c,
                          struct rpcReq *r,
                          const Tn__Response *resp)
{
    uint8_t *buf;
    size_t len;

    if (c->handle_closed) {
        return;
    }
    if (connBacklog(c) <= RPC_STREAM_BACKLOG) {
        reqDropHeld(r); /* superseded */
        connSend(c, resp);
        return;
    }
    if (tn_frame_encode(&resp->base, SIZE_MAX, &buf, &len) != 0) {
        connShutdown(c);
        return;
    }
    if (r->held != NULL) {
        free(r->held);
    } else {
        tn_queue_insert_tail(&c->held, &r->held_link);
    }
    r->held = buf;
    r->held_len = len;
}

/* Send held events while the socket keeps up. */
static void connFlushHeld(struct rpcConn *c)
{
    while (!c->closing && !c->handle_closed && !tn_queue_empty(&c->held) &&
           connBacklog(c) <= RPC_STREAM_BACKLOG) {
        tn_queue *q = tn_queue_head(&c->held);
        struct rpcReq *r = TN_QUEUE_DATA(q, struct rpcReq, held_link);
        size_t len = r->held_len;
        uint8_t *p = connReserve(c, len);
        if (p == NULL) {
            return;
        }
        memcpy(p, r->held, len);
        reqDropHeld(r);
        connCommit(c, len);
    }
}

/* Reply with an error that is not tied to a request, then close. */
static void connFail(struct rpcConn *c, const char *message)
{
    Tn__Response resp = TN__RESPONSE__INIT;
    resp.status = TN__STATUS__INVALID_ARGUMENT;
    resp.message = (char *)message;
    tnWarnf("\"closing rpc connection\" peer=%s reason=\"%s\"", c->peer,
            message);
    connSend(c, &resp);
    connShutdown(c);
}

static void requestCb(struct dispatch_req *dr, const Tn__Response *resp)
{
    struct rpcReq *r = dr->data;
    struct rpcConn *c = r->c;
    if (resp->more && r->stream) {
        /* An event: the stream goes on. */
        if (!c->closing) {
            connSendEvent(c, r, resp);
        }
        return;
    }
    tn_queue_remove(&r->queue);
    if (r->stream) {
        reqDropHeld(r);
        c->n_streams--;
    }
    if (!c->closing) {
        connSend(c, resp);
    }
    tn__request__free_unpacked(r->request, NULL);
    free(r);
    connMaybeClose(c);
}

/* Requests answered by the connection itself: a WatchCancel, and a Watch
 * over the per-connection limit. Returns true if @request was answered. */
static bool connWatchControl(struct rpcConn *c, const Tn__Request *request)
{
    Tn__Response resp = TN__RESPONSE__INIT;
    tn_queue *q;

    resp.id = request->id;
    if (request->body_case == TN__REQUEST__BODY_WATCH &&
        c->n_streams >= RPC_MAX_STREAMS) {
        resp.status = TN__STATUS__REFUSED;
        resp.message = "too many watches on this connection (at most 256)";
        connSend(c, &resp);
        return true;
    }
    if (request->body_case != TN__REQUEST__BODY_WATCH_CANCEL ||
        request->watch_cancel == NULL) {
        return false;
    }
    resp.status = TN__STATUS__NOT_FOUND;
    resp.message = "no such watch on this connection";
    TN_QUEUE_FOREACH(q, &c->pending)
    {
        struct rpcReq *r = TN_QUEUE_DATA(q, struct rpcReq, queue);
        if (r->stream && r->request->id == request->watch_cancel->watch_id) {
            /* Its final CANCELED answer follows. */
            r->canceled = true;
            dispatchCancel(c->s->d, &r->dr);
            resp.status = TN__STATUS__OK;
            resp.message = NULL;
            break;
        }
    }
    connSend(c, &resp);
    return true;
}

static void allocCb(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    static char scratch[64 * 1024]; /* only the loop thread reads */
    (void)h;
    (void)size;
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void readCb(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    struct rpcConn *c = stream->data;
    const uint8_t *payload;
    size_t len;
    int rv;

    if (n == 0 || c->closing) {
        return;
    }
    if (n < 0) {
        connShutdown(c);
        return;
    }
    rv = tn_frame_reader_feed(&c->reader, buf->base, (size_t)n);
    if (rv == TN_FRAME_TOO_BIG) {
        connFail(c, "frame larger than the maximum frame size");
        return;
    }
    if (rv != 0) {
        connShutdown(c);
        return;
    }
    while ((rv = tn_frame_reader_next(&c->reader, &payload, &len)) == 1) {
        struct rpcReq *r;
        Tn__Request *request = tn__request__unpack(NULL, len, payload);
        if (request == NULL) {
            connFail(c, "undecodable request frame");
            return;
        }
        tn_message_strip_unknown(&request->base);
        if (connWatchControl(c, request)) {
            tn__request__free_unpacked(request, NULL);
            if (c->closing) {
                return;
            }
            continue;
        }
        r = calloc(1, sizeof *r);
        if (r == NULL) {
            tn__request__free_unpacked(request, NULL);
            connShutdown(c);
            return;
        }
        r->c = c;
        r->request = request;
        r->dr.data = r;
        r->dr.request = request;
        r->dr.cb = requestCb;
        r->stream = request->body_case == TN__REQUEST__BODY_WATCH;
        if (r->stream) {
            c->n_streams++;
        }
        tn_queue_insert_tail(&c->pending, &r->queue);
        if (dispatchSubmit(c->s->d, &r->dr) != 0) {
            Tn__Response resp = TN__RESPONSE__INIT;
            tn_queue_remove(&r->queue);
            if (r->stream) {
                c->n_streams--;
            }
            resp.id = request->id;
            resp.status = TN__STATUS__CANCELED;
            resp.message = "node shutting down";
            connSend(c, &resp);
            tn__request__free_unpacked(request, NULL);
            free(r);
        }
        if (c->closing) {
            return;
        }
    }
    if (rv < 0) {
        connFail(c, "frame larger than the maximum frame size");
    }
}

static void acceptCb(uv_stream_t *listener, int status)
{
    struct rpc_server *s = listener->data;
    struct rpcConn *c;
    struct sockaddr_storage sa;
    int salen = sizeof sa;

    if (status != 0 || s->closing) {
        return;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->s = s;
    tn_queue_init(&c->pending);
    tn_queue_init(&c->held);
    tn_frame_reader_init(&c->reader, s->max_frame);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    s->open_handles++;
    tn_queue_insert_tail(&s->conns, &c->queue);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = true;
        connMaybeClose(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0 &&
        sa.ss_family == AF_INET) {
        char ip[32];
        uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof ip);
        snprintf(c->peer, sizeof c->peer, "%s:%d", ip,
                 ntohs(((struct sockaddr_in *)&sa)->sin_port));
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, allocCb, readCb) != 0) {
        connShutdown(c);
    }
}

static void startFailCloseCb(uv_handle_t *h)
{
    free(h->data);
}

int rpcServerStart(struct rpc_server **out,
                   uv_loop_t *loop,
                   struct dispatch *d,
                   const char *address,
                   size_t max_frame,
                   char *errmsg,
                   size_t errmsg_len)
{
    struct rpc_server *s;
    struct sockaddr_in sa;
    int rv;

    rv = tnParseIpv4(address, &sa);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "rpc address %s: expected IPv4 host:port",
                 address);
        return rv;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return UV_ENOMEM;
    }
    s->loop = loop;
    s->d = d;
    s->max_frame = max_frame;
    tn_queue_init(&s->conns);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->open_handles = 1;
    rv = uv_tcp_bind(&s->listener, (struct sockaddr *)&sa, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&s->listener, 1024, acceptCb);
    }
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "rpc listen on %s: %s", address,
                 uv_strerror(rv));
        uv_close((uv_handle_t *)&s->listener, startFailCloseCb);
        return rv;
    }
    s->listening = true;
    tn_queue_init(&s->dirty);
    uv_prepare_init(loop, &s->flush_prepare);
    s->flush_prepare.data = s;
    uv_check_init(loop, &s->flush_check);
    s->flush_check.data = s;
    s->open_handles += 2;
    *out = s;
    return 0;
}

static void listenerCloseCb(uv_handle_t *h)
{
    struct rpc_server *s = h->data;
    s->open_handles--;
    rpcMaybeFreeServer(s);
}

void rpcServerStopListening(struct rpc_server *s)
{
    if (s->listening) {
        s->listening = false;
        uv_close((uv_handle_t *)&s->listener, listenerCloseCb);
    }
}

static void flushHandleCloseCb(uv_handle_t *h)
{
    struct rpc_server *s = h->data;
    s->open_handles--;
    rpcMaybeFreeServer(s);
}

void rpcServerClose(struct rpc_server *s, void (*cb)(void *data), void *data)
{
    tn_queue *q;
    s->close_cb = cb;
    s->close_data = data;
    rpcServerStopListening(s);
    s->closing = true;
    /* From now on connSend writes at once. */
    flushAll(s);
    uv_close((uv_handle_t *)&s->flush_prepare, flushHandleCloseCb);
    uv_close((uv_handle_t *)&s->flush_check, flushHandleCloseCb);
    /* connShutdown may remove the connection from the list: walk a copy. */
    q = tn_queue_head(&s->conns);
    while (q != &s->conns) {
        struct rpcConn *c = TN_QUEUE_DATA(q, struct rpcConn, queue);
        q = q->next;
        connShutdown(c);
    }
    rpcMaybeFreeServer(s);
}
