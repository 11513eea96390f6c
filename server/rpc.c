/* The RPC front end: framing and connection handling.
 *
 * Connection life: accept → read frames → per frame: unpack → submit →
 * (reply cb) → encode → write. On EOF, a read error, a write error or bad
 * input the connection stops reading, cancels what it has pending and is
 * freed once every pending request's callback has fired and every write
 * has completed. */
#include "rpc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/queue.h"

struct rpc_server
{
    uv_loop_t *loop;
    struct dispatch *d;
    uv_tcp_t listener;
    size_t max_frame;
    tn_queue conns;
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
    unsigned writes;      /* writes in flight */
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
};

struct rpcWrite
{
    uv_write_t req;
    struct rpcConn *c;
    uint8_t *buf;
};

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
    free(c);
    s->open_handles--;
    rpcMaybeFreeServer(s);
}

/* Close the handle once nothing references the connection any more. */
static void connMaybeClose(struct rpcConn *c)
{
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
    TN_QUEUE_FOREACH(q, &c->pending)
    {
        struct rpcReq *r = TN_QUEUE_DATA(q, struct rpcReq, queue);
        dispatchCancel(c->s->d, &r->dr);
    }
    connMaybeClose(c);
}

static void writeCb(uv_write_t *req, int status)
{
    struct rpcWrite *w = req->data;
    struct rpcConn *c = w->c;
    free(w->buf);
    free(w);
    c->writes--;
    if (status != 0) {
        connShutdown(c);
    }
    connMaybeClose(c);
}

static void connSend(struct rpcConn *c, const Tn__Response *resp)
{
    struct rpcWrite *w;
    size_t len;
    uv_buf_t b;
    int rv;

    if (c->handle_closed) {
        return;
    }
    w = calloc(1, sizeof *w);
    if (w == NULL) {
        connShutdown(c);
        return;
    }
    rv = tn_frame_encode(&resp->base, SIZE_MAX, &w->buf, &len);
    if (rv != 0) {
        free(w);
        connShutdown(c);
        return;
    }
    w->c = c;
    w->req.data = w;
    b = uv_buf_init((char *)w->buf, (unsigned)len);
    /* Write at once when the socket takes it all (libuv refuses while
     * earlier writes are queued, so order is kept): this saves the
     * EPOLL_CTL_MOD round trip uv_write costs on every reply. */
    rv = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rv == (int)len) {
        free(w->buf);
        free(w);
        return;
    }
    if (rv > 0) {
        b.base += rv;
        b.len -= (unsigned)rv;
    } else if (rv != UV_EAGAIN) {
        free(w->buf);
        free(w);
        connShutdown(c);
        return;
    }
    rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, writeCb);
    if (rv != 0) {
        free(w->buf);
        free(w);
        connShutdown(c);
        return;
    }
    c->writes++;
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
    tn_queue_remove(&r->queue);
    if (!c->closing) {
        connSend(c, resp);
    }
    tn__request__free_unpacked(r->request, NULL);
    free(r);
    connMaybeClose(c);
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
        tn_queue_insert_tail(&c->pending, &r->queue);
        if (dispatchSubmit(c->s->d, &r->dr) != 0) {
            Tn__Response resp = TN__RESPONSE__INIT;
            tn_queue_remove(&r->queue);
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

void rpcServerClose(struct rpc_server *s, void (*cb)(void *data), void *data)
{
    tn_queue *q;
    s->close_cb = cb;
    s->close_data = data;
    rpcServerStopListening(s);
    s->closing = true;
    /* connShutdown may remove the connection from the list: walk a copy. */
    q = tn_queue_head(&s->conns);
    while (q != &s->conns) {
        struct rpcConn *c = TN_QUEUE_DATA(q, struct rpcConn, queue);
        q = q->next;
        connShutdown(c);
    }
    rpcMaybeFreeServer(s);
}
