/* tnbench: a small HTTP/1.1 client: one keep-alive connection, one request
 * at a time, replies parsed with http_parser. Only what the benchmark needs
 * from a reply is kept: the status, the ETag as a number, the start of the
 * body (for error messages). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench.h"

enum { HC_IDLE = 0, HC_CONNECTING, HC_UP };

struct htcp
{
    uv_tcp_t h;
    uv_connect_t creq;
    struct hconn *c; /* NULL once orphaned */
};

struct hwreq
{
    uv_write_t w;
    char data[];
};

static char readBuf[64 * 1024];
static http_parser_settings settings;

static int parseAddr(const char *addr, struct sockaddr_in *sa)
{
    char host[BENCH_ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : 0;
    if (n == 0 || n >= sizeof host) {
        return -1;
    }
    memcpy(host, addr, n);
    host[n] = '\0';
    if (strcmp(host, "localhost") == 0) {
        strcpy(host, "127.0.0.1");
    }
    return uv_ip4_addr(host, atoi(colon + 1), sa);
}

/* ---------------------------------------------------------------- parser */

static void headerDone(struct hconn *h)
{
    const char *v = h->value;
    if (h->field_long || h->field_len != 4 ||
        strncasecmp(h->field, "etag", 4) != 0) {
        return;
    }
    h->value[h->value_len] = '\0';
    if (strncmp(v, "W/", 2) == 0) {
        v += 2;
    }
    while (*v == '"' || *v == ' ') {
        v++;
    }
    h->etag = strtoull(v, NULL, 10);
    h->have_etag = true;
}

static int onHeaderField(http_parser *p, const char *at, size_t len)
{
    struct hconn *h = p->data;
    if (h->in_value) {
        headerDone(h);
        h->in_value = false;
        h->field_len = 0;
        h->value_len = 0;
        h->field_long = false;
    }
    if (h->field_len + len >= sizeof h->field) {
        h->field_long = true;
        return 0;
    }
    memcpy(h->field + h->field_len, at, len);
    h->field_len += len;
    return 0;
}

static int onHeaderValue(http_parser *p, const char *at, size_t len)
{
    struct hconn *h = p->data;
    size_t room = sizeof h->value - 1 - h->value_len;
    h->in_value = true;
    if (len > room) {
        len = room;
    }
    memcpy(h->value + h->value_len, at, len);
    h->value_len += len;
    return 0;
}

static int onHeadersComplete(http_parser *p)
{
    struct hconn *h = p->data;
    if (h->in_value) {
        headerDone(h);
    }
    h->in_value = false;
    h->field_len = 0;
    h->value_len = 0;
    h->field_long = false;
    return 0;
}

static int onBody(http_parser *p, const char *at, size_t len)
{
    struct hconn *h = p->data;
    size_t room = sizeof h->body - 1 - h->body_len;
    if (len > room) {
        len = room;
    }
    memcpy(h->body + h->body_len, at, len);
    h->body_len += len;
    h->body[h->body_len] = '\0';
    return 0;
}

static int onMessageComplete(http_parser *p)
{
    struct hconn *h = p->data;
    h->status = (int)p->status_code;
    h->keep_alive = http_should_keep_alive(p) != 0;
    h->complete = true;
    http_parser_pause(p, 1); /* one reply per request */
    return 0;
}

/* ------------------------------------------------------------ connection */

void hconnInit(struct hconn *h, const char *addr)
{
    memset(h, 0, sizeof *h);
    snprintf(h->addr, sizeof h->addr, "%s", addr);
    if (settings.on_message_complete == NULL) {
        settings.on_header_field = onHeaderField;
        settings.on_header_value = onHeaderValue;
        settings.on_headers_complete = onHeadersComplete;
        settings.on_body = onBody;
        settings.on_message_complete = onMessageComplete;
    }
}

static void tcpClosed(uv_handle_t *hd)
{
    free(hd->data);
}

static void hconnDrop(struct hconn *h)
{
    if (h->tcp != NULL) {
        h->tcp->c = NULL;
        uv_close((uv_handle_t *)&h->tcp->h, tcpClosed);
        h->tcp = NULL;
    }
    h->state = HC_IDLE;
}

/* Ends the request in progress with @status (an HTTP status or < 0). */
static void hconnFinish(struct hconn *h, int status)
{
    hconn_cb cb = h->cb;
    if (!h->busy) {
        return;
    }
    h->busy = false;
    h->cb = NULL;
    cb(h, status);
}

static void hconnFail(struct hconn *h)
{
    hconnDrop(h);
    hconnFinish(h, CALL_ECONN);
}

static void allocCb(uv_handle_t *hd, size_t hint, uv_buf_t *buf)
{
    (void)hd;
    (void)hint;
    *buf = uv_buf_init(readBuf, sizeof readBuf);
}

static void readCb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct htcp *t = s->data;
    struct hconn *h = t->c;
    size_t used;
    if (h == NULL || n == 0) {
        return;
    }
    if (n < 0) {
        if (h->busy) {
            /* A reply delimited by the end of the stream completes here. */
            http_parser_execute(&h->parser, &settings, NULL, 0);
            if (h->complete) {
                hconnDrop(h);
                hconnFinish(h, h->status);
                return;
            }
        }
        hconnFail(h);
        return;
    }
    if (!h->busy) {
        hconnFail(h); /* bytes nobody asked for */
        return;
    }
    used = http_parser_execute(&h->parser, &settings, buf->base, (size_t)n);
    if (h->complete) {
        if (used < (size_t)n || !h->keep_alive) {
            hconnDrop(h); /* extra bytes, or the server closes */
        }
        hconnFinish(h, h->status);
        return;
    }
    if (HTTP_PARSER_ERRNO(&h->parser) != HPE_OK) {
        fprintf(stderr, "tnbench: %s: bad HTTP reply: %s\n", h->addr,
                http_errno_name(HTTP_PARSER_ERRNO(&h->parser)));
        hconnFail(h);
    }
}

static void writeCb(uv_write_t *w, int status)
{
    struct htcp *t = w->handle->data;
    free(w);
    if (status < 0 && t->c != NULL) {
        hconnFail(t->c);
    }
}

static void hconnSend(struct hconn *h)
{
    uv_buf_t b = uv_buf_init(h->out, (unsigned)h->out_len);
    struct hwreq *w;
    int n;
    http_parser_init(&h->parser, HTTP_RESPONSE);
    h->parser.data = h;
    h->t_sent = nowNs();
    n = uv_try_write((uv_stream_t *)&h->tcp->h, &b, 1);
    if (n == UV_EAGAIN) {
        n = 0;
    }
    if (n < 0) {
        hconnFail(h);
        return;
    }
    if ((size_t)n == h->out_len) {
        return;
    }
    w = malloc(sizeof *w + h->out_len - (size_t)n);
    if (w == NULL) {
        hconnFail(h);
        return;
    }
    memcpy(w->data, h->out + n, h->out_len - (size_t)n);
    b = uv_buf_init(w->data, (unsigned)(h->out_len - (size_t)n));
    if (uv_write(&w->w, (uv_stream_t *)&h->tcp->h, &b, 1, writeCb) != 0) {
        free(w);
        hconnFail(h);
    }
}

static void connectCb(uv_connect_t *req, int status)
{
    struct htcp *t = req->handle->data;
    struct hconn *h = t->c;
    if (h == NULL) {
        return;
    }
    if (status < 0 || uv_read_start((uv_stream_t *)&t->h, allocCb, readCb)) {
        hconnFail(h);
        return;
    }
    h->state = HC_UP;
    if (h->busy) {
        hconnSend(h);
    }
}

static void hconnConnect(struct hconn *h)
{
    struct sockaddr_in sa;
    struct htcp *t;
    if (parseAddr(h->addr, &sa) != 0) {
        fprintf(stderr, "tnbench: bad address '%s'\n", h->addr);
        exit(2);
    }
    t = calloc(1, sizeof *t);
    if (t == NULL) {
        fprintf(stderr, "tnbench: out of memory\n");
        exit(3);
    }
    uv_tcp_init(B->loop, &t->h);
    t->h.data = t;
    t->c = h;
    h->tcp = t;
    h->state = HC_CONNECTING;
    uv_tcp_nodelay(&t->h, 1);
    if (uv_tcp_connect(&t->creq, &t->h, (const struct sockaddr *)&sa,
                       connectCb) != 0) {
        hconnFail(h);
    }
}

void hconnRequest(struct hconn *h,
                  const char *method,
                  const char *path,
                  const char *extra,
                  const char *body,
                  hconn_cb cb)
{
    int n;
    if (body != NULL) {
        n = snprintf(h->out, sizeof h->out,
                     "%s %s HTTP/1.1\r\nHost: %s\r\n%s"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, h->addr, extra ? extra : "", strlen(body),
                     body);
    } else {
        n = snprintf(h->out, sizeof h->out, "%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
                     method, path, h->addr, extra ? extra : "");
    }
    if (n < 0 || (size_t)n >= sizeof h->out) {
        fprintf(stderr, "tnbench: HTTP request too long\n");
        exit(3);
    }
    h->out_len = (size_t)n;
    h->cb = cb;
    h->busy = true;
    h->complete = false;
    h->status = 0;
    h->etag = 0;
    h->have_etag = false;
    h->body_len = 0;
    h->body[0] = '\0';
    h->in_value = false;
    h->field_len = 0;
    h->value_len = 0;
    h->field_long = false;
    switch (h->state) {
    case HC_UP:
        hconnSend(h);
        break;
    case HC_IDLE:
        hconnConnect(h);
        break;
    default:
        break; /* sent when connected */
    }
}
