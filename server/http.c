/* HTTP shim: connections, request parsing, routing and response mapping.
 *
 * Life of one request (happy path):
 *   read -> http_parser callbacks fill conn->cur (an exchange)
 *   on_message_complete -> the exchange joins conn->exchanges (arrival
 *     order) and is routed: answered at once (READY), or turned into a
 *     Tn__Request and submitted to the backend (DISPATCHED)
 *   backend callback -> the Tn__Response is mapped onto status, headers and
 *     body (READY)
 *   connFlush -> READY exchanges at the head of the queue are written in
 *     order (WRITING); a later request that completes first waits its turn
 *
 * Pipelined requests run concurrently only while all of them are safe (GET,
 * HEAD, OPTIONS), as RFC 9112 §9.3.2 allows: a PUT, POST or DELETE is
 * submitted only once everything before it on the connection has been
 * answered, and nothing after it is submitted before it is answered
 * (DEFERRED until then). So a pipelined GET never sees the effect of a
 * DELETE sent after it, and always sees a PUT sent before it.
 *   write callback -> the exchange is freed; reading resumes if pipelining
 *     had paused it
 *
 * Failure modes:
 *   - malformed HTTP or a size limit -> an error exchange is queued behind
 *     the pending ones and reading stops; once it is written the connection
 *     shuts down its write side, drains input for linger_ms (so that the
 *     client reads the error instead of a reset) and closes.
 *   - too many requests in progress on one connection -> the parser is
 *     paused, unparsed bytes are stashed, reading stops until one is done.
 *   - peer EOF -> pending requests are still answered, then close.
 *   - peer reset, write error, timeouts, httpServerClose -> connClose:
 *     dispatched exchanges are canceled through the backend and freed when
 *     their callback fires (with CANCELED); the connection is freed once its
 *     two handles are closed and no callback is outstanding. */
#include "http.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <http_parser.h>
#include <jansson.h>

#include "json.h"

#define PROBLEM_BASE "https://tenure.dev/problems/"
#define READ_CHUNK 16384
#define MAX_REQUEST_ID 128
#define MAX_WAIT_MS 600000u /* long-poll cap */
#define MAX_LIST_LIMIT 100000u

const double httpLatencyBounds[HTTP_LATENCY_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5,   1,      2.5,   5,    10,    30,    60,  300,
};

/* ------------------------------------------------------------ buffers */

struct buf
{
    char *p; /* owned; NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    bool failed; /* an append ran out of memory (the text is incomplete) */
};

static int bufReserve(struct buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    size_t cap;
    char *p;

    if (need <= b->cap) {
        return 0;
    }
    cap = b->cap != 0 ? b->cap : 64;
    while (cap < need) {
        cap *= 2;
    }
    p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = true;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int bufAppend(struct buf *b, const char *data, size_t n)
{
    if (bufReserve(b, n) != 0) {
        return -1;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int bufPrintf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int bufPrintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || bufReserve(b, (size_t)n) != 0) {
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

#define bufLit(b, lit) bufAppend((b), (lit), sizeof(lit) - 1)

static int bufStrAppend(struct buf *b, const char *s)
{
    return bufAppend(b, s, strlen(s));
}

/* Append @v in decimal. */
static int bufU64(struct buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return bufAppend(b, tmp + i, sizeof tmp - i);
}

static void bufReset(struct buf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->p != NULL) {
        b->p[0] = '\0';
    }
}

static void bufFree(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = false;
}

static const char *bufStr(const struct buf *b)
{
    return b->p != NULL ? b->p : "";
}

/* ------------------------------------------------------ structures */

enum ex_state {
    EX_PARSING,    /* headers/body still arriving (conn->cur) */
    EX_DEFERRED,   /* complete, waiting for the requests before it */
    EX_ROUTING,    /* complete, being routed */
    EX_DISPATCHED, /* submitted to the backend */
    EX_READY,      /* response built, waiting for its turn */
    EX_WRITING,    /* uv_write in progress (no longer in the queue) */
};

enum ex_op {
    OP_NONE,
    OP_ACQUIRE,
    OP_RENEW,
    OP_RELEASE,
    OP_GET_LOCK,
    OP_LIST,
    OP_FENCE,
    OP_CLUSTER,
    OP_SESSION_OPEN,
    OP_SESSION_KEEPALIVE,
    OP_SESSION_CLOSE,
};

enum timer_mode { TIMER_NONE, TIMER_IDLE, TIMER_REQUEST, TIMER_LINGER };

struct http_conn;

/* One request/response pair. */
struct http_exchange
{
    tn_queue link; /* conn->exchanges, while PARSING..READY */
    struct http_conn *conn;
    enum ex_state state;
    enum ex_op op;
    bool queued; /* counted in conn->n_live */
    /* request */
    unsigned method;
    bool head;
    bool keep_alive;
    bool http10;
    struct buf url;
    struct buf body;
    char *if_match; /* owned header values, or NULL */
    char *idem_key;
    char *xrid;
    char *expect;
    char request_id[MAX_REQUEST_ID + 1];
    char *path;     /* owned: raw path, for "instance" */
    char *resource; /* owned: decoded resource id */
    char *prefix;   /* owned */
    char *holder;   /* owned copy of the requester's holder name */
    uint64_t token; /* If-Match / fence token */
    uint32_t wait_ms; /* > 0: the request waits (queue or long-poll) */
    uint64_t submitted_ns;
    json_t *json; /* owned: parsed body; req strings may borrow from it */
    Tn__Request req;
    union {
        Tn__Acquire acquire;
        Tn__Release release;
        Tn__Renew renew;
        Tn__GetLock get_lock;
        Tn__ListLocks list_locks;
        Tn__ClusterStatus cluster_status;
        Tn__SessionOpen session_open;
        Tn__SessionKeepalive keepalive;
        Tn__SessionClose session_close;
    } u;
    struct dispatch_req dreq;
    /* response */
    int status;
    bool close_after;
    struct buf hdrs; /* extra response header lines */
    struct buf out;  /* the whole response */
    uv_write_t wreq;
};

struct http_conn
{
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t sreq;
    uv_write_t continue_req;
    struct http_server *srv;
    tn_queue link; /* srv->conns */
    http_parser parser;
    struct http_exchange *cur; /* being parsed */
    tn_queue exchanges;        /* complete, in arrival order, not written */
    unsigned n_live;           /* queued + writing */
    unsigned n_dispatched;     /* backend callbacks outstanding */
    unsigned n_writing;
    int handles_open;
    enum timer_mode tmode;
    bool reading;
    bool paused;     /* parser paused: too many requests in progress */
    bool draining;   /* no more requests will be read */
    bool eof;        /* the peer finished sending */
    bool lingering;  /* final response sent: discarding input */
    bool closing;    /* uv_close called */
    bool continue_pending;
    bool flushing;    /* in connFlush */
    bool flush_again; /* connFlush was asked for while flushing */
    /* parser state */
    struct buf stash; /* unparsed bytes while paused */
    struct buf hfield;
    struct buf hvalue;
    bool in_value;
    size_t header_bytes;
    size_t body_bytes;
    int limit_status; /* 413 / 414 / 431 set by a parser callback */
};

/* ------------------------------------------------------- utilities */

static uint64_t wallMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t serverRand(struct http_server *s)
{
    /* xorshift64* */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static const char *str(const char *s)
{
    return s != NULL ? s : "";
}

static char *strndupOrNull(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static bool isTchar(int c)
{
    return c > 0x20 && c < 0x7f;
}

static void trimOws(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) {
        (*n)--;
    }
}

static const char *modeName(int mode)
{
    switch (mode) {
    case TN__LOCK_MODE__EXCLUSIVE:
        return "exclusive";
    case TN__LOCK_MODE__SHARED:
        return "shared";
    case TN__LOCK_MODE__SEMAPHORE:
        return "semaphore";
    default:
        return "unknown";
    }
}

static const char *reasonPhrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Content";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
    }
}

/* The stable problem types (docs/http.md lists them). */
static const struct
{
    const char *slug;
    const char *title;
} problemTitles[] = {
    { "invalid-request", "The request is malformed" },
    { "invalid-value", "A value is out of range" },
    { "not-found", "No such resource" },
    { "method-not-allowed", "Method not allowed on this resource" },
    { "request-timeout", "The request took too long to arrive" },
    { "lock-held", "The lock is held by someone else" },
    { "lock-delay", "The lock is in its lock-delay after an expiry" },
    { "lease-expired", "The lease behind this token has expired" },
    { "session-expired", "The session is gone" },
    { "token-mismatch", "The token is not the current holder's" },
    { "token-stale", "The token no longer holds the lock" },
    { "body-too-large", "The request body is too large" },
    { "uri-too-long", "The request target is too long" },
    { "precondition-required", "This request needs If-Match" },
    { "rate-limited", "Too many requests" },
    { "headers-too-large", "The request headers are too large" },
    { "internal", "Internal error" },
    { "unavailable", "The service cannot take requests now" },
    { "no-leader", "No leader is known" },
    { "no-quorum", "No quorum is reachable" },
    { "canceled", "The request was canceled" },
    { "commit-unknown", "The outcome is unknown" },
    { "timeout", "The request timed out" },
    { "no-space", "The node is low on disk space" },
    { "http-version-not-supported", "Only HTTP/1.0 and HTTP/1.1 are served" },
};

static const char *problemTitle(const char *slug)
{
    size_t i;
    for (i = 0; i < sizeof problemTitles / sizeof problemTitles[0]; i++) {
        if (strcmp(problemTitles[i].slug, slug) == 0) {
            return problemTitles[i].title;
        }
    }
    return "Error";
}

/* --------------------------------------------------- pure helpers */

const char *httpResourceInvalid(const char *id, size_t len)
{
    const unsigned char *s = (const unsigned char *)id;
    size_t i = 0;

    if (len == 0) {
        return "must not be empty";
    }
    if (len > 512) {
        return "is longer than 512 bytes";
    }
    while (i < len) {
        unsigned c = s[i];
        unsigned n;
        uint32_t cp;
        uint32_t min;
        unsigned k;

        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) {
                return "contains a control character";
            }
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return "is not valid UTF-8";
        }
        if (len - i < n) {
            return "is not valid UTF-8";
        }
        for (k = 1; k < n; k++) {
            unsigned cc = s[i + k];
            if ((cc & 0xc0) != 0x80) {
                return "is not valid UTF-8";
            }
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return "is not valid UTF-8";
        }
        if (cp >= 0x80 && cp <= 0x9f) {
            return "contains a control character";
        }
        i += n;
    }
    return NULL;
}

static int hexVal(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

long httpPercentDecode(const char *in, size_t len, char *out)
{
    size_t i;
    size_t o = 0;

    for (i = 0; i < len; i++) {
        if (in[i] == '%') {
            int hi;
            int lo;
            if (len - i < 3) {
                return -1;
            }
            hi = hexVal((unsigned char)in[i + 1]);
            lo = hexVal((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
    return (long)o;
}

int httpParseTokenTag(const char *value, uint64_t *token, const char **why)
{
    const char *s = value;
    size_t n = strlen(value);
    uint64_t x = 0;
    size_t i;

    trimOws(&s, &n);
    if (n == 1 && s[0] == '*') {
        *why = "must name a token (\"<token>\"), not *";
        return -1;
    }
    if (n >= 2 && s[0] == 'W' && s[1] == '/') {
        *why = "weak tags never match a token";
        return -1;
    }
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    if (n == 0 || n > 20) {
        *why = "must be one quoted token, e.g. \"42\"";
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned d;
        if (s[i] < '0' || s[i] > '9') {
            *why = "must be one quoted token, e.g. \"42\"";
            return -1;
        }
        d = (unsigned)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            *why = "token out of range";
            return -1;
        }
        x = x * 10 + d;
    }
    if (x == 0) {
        *why = "token 0 is never granted";
        return -1;
    }
    *token = x;
    return 0;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t hashBytes(uint64_t h, const char *s)
{
    /* FNV-1a over the bytes and a terminating NUL separator. */
    const unsigned char *p = (const unsigned char *)s;
    for (;; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
        if (*p == '\0') {
            break;
        }
    }
    return h;
}

uint64_t httpIdempotencyClientId(const char *key,
                                 const char *op,
                                 const char *resource)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = hashBytes(h, "tenure-http-idempotency");
    h = hashBytes(h, str(key));
    h = hashBytes(h, str(op));
    h = hashBytes(h, str(resource));
    h = mix64(h);
    return h != 0 ? h : 1;
}

/* ---------------------------------------------------------- config */

void httpConfigDefaults(struct http_config *c)
{
    memset(c, 0, sizeof *c);
    c->max_header_bytes = 8192;
    c->max_body_bytes = 65536;
    c->max_connections = 4096;
    c->max_pipeline = 32;
    c->idle_timeout_ms = 60000;
    c->request_timeout_ms = 30000;
    c->linger_ms = 2000;
    c->default_ttl_ms = 15000;
    c->max_holder_bytes = 256;
    c->max_idempotency_key_bytes = 255;
    c->validity_margin_ms = 100;
    c->drift_permille = 10;
    c->list_limit = 0;
}

/* ------------------------------------------------------- forwards */

static void connClose(struct http_conn *c);
static void connFlush(struct http_conn *c);
static void connTimerUpdate(struct http_conn *c);
static void connFeed(struct http_conn *c, const char *data, size_t n);
static void exchangeRoute(struct http_exchange *ex);
static void exchangeDispatchCb(struct dispatch_req *dreq,
                               const Tn__Response *r);

/* ------------------------------------------------------- logging */

static void logQuoted(struct buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)str(s);
    bufAppend(b, "\"", 1);
    for (; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            bufPrintf(b, "\\%c", *p);
        } else if (*p < 0x20 || *p == 0x7f) {
            bufPrintf(b, "\\x%02x", *p);
        } else {
            bufAppend(b, (const char *)p, 1);
        }
    }
    bufAppend(b, "\"", 1);
}

static void serverLog(struct http_server *s, int level, struct buf *line)
{
    if (s->cfg.log != NULL && line->p != NULL) {
        s->cfg.log(s->cfg.log_data, level, line->p);
    }
}

/* ------------------------------------------------------- exchanges */

/* "%08x-%08llx" of (@prefix, @n), without printf: at least 8 hex digits
 * of @n, more when it needs them. */
static void requestIdFormat(char out[MAX_REQUEST_ID + 1],
                            uint32_t prefix,
                            uint64_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t len = 0;
    size_t i;

    for (i = 0; i < 8; i++) {
        out[i] = hex[(prefix >> (28 - 4 * i)) & 0xf];
    }
    out[8] = '-';
    do {
        tmp[len++] = hex[n & 0xf];
        n >>= 4;
    } while (n != 0);
    while (len < 8) {
        tmp[len++] = '0';
    }
    for (i = 0; i < len; i++) {
        out[9 + i] = tmp[len - 1 - i];
    }
    out[9 + len] = '\0';
}

static struct http_exchange *exchangeNew(struct http_conn *c)
{
    struct http_server *s = c->srv;
    struct http_exchange *ex = calloc(1, sizeof *ex);

    if (ex == NULL) {
        return NULL;
    }
    ex->conn = c;
    ex->state = EX_PARSING;
    tn_queue_init(&ex->link);
    s->next_id++;
    requestIdFormat(ex->request_id, s->id_prefix, s->next_id);
    ex->req = (Tn__Request)TN__REQUEST__INIT;
    return ex;
}

static void exchangeFree(struct http_exchange *ex)
{
    if (ex->queued) {
        ex->conn->n_live--;
        ex->queued = false;
    }
    bufFree(&ex->url);
    bufFree(&ex->body);
    bufFree(&ex->hdrs);
    bufFree(&ex->out);
    free(ex->if_match);
    free(ex->idem_key);
    free(ex->xrid);
    free(ex->expect);
    free(ex->path);
    free(ex->resource);
    free(ex->prefix);
    free(ex->holder);
    if (ex->json != NULL) {
        json_decref(ex->json);
    }
    free(ex);
}

static void exchangeHeaderf(struct http_exchange *ex,
                            const char *name,
                            const char *fmt,
                            ...) __attribute__((format(printf, 3, 4)));

static void exchangeHeaderf(struct http_exchange *ex,
                            const char *name,
                            const char *fmt,
                            ...)
{
    char value[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    bufPrintf(&ex->hdrs, "%s: %s\r\n", name, value);
}

/* The Date header's value, formatted once per second. */
static const char *httpDate(struct http_server *s)
{
    time_t now = time(NULL);
    if ((int64_t)now != s->date_sec || s->date_text[0] == '\0') {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date_text, sizeof s->date_text,
                 "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_sec = (int64_t)now;
    }
    return s->date_text;
}

/* Build the whole response into ex->out and mark the exchange READY. */
static void exchangeSend(struct http_exchange *ex,
                         int status,
                         const char *ctype,
                         const char *body,
                         size_t len)
{
    struct http_conn *c = ex->conn;
    struct http_server *s = c->srv;
    struct buf *o = &ex->out;
    bool no_body = status == 204 || status == 304 || status < 200;

    if (!ex->keep_alive) {
        ex->close_after = true;
    }

    /* Every answer goes through here: plain appends, no printf. */
    bufReset(o);
    if (bufReserve(o, 256 + ex->hdrs.len + len) != 0) {
        ex->close_after = true;
    }
    bufLit(o, "HTTP/1.1 ");
    bufU64(o, (uint64_t)status);
    bufLit(o, " ");
    bufStrAppend(o, reasonPhrase(status));
    bufLit(o, "\r\nDate: ");
    bufStrAppend(o, httpDate(s));
    bufLit(o, "\r\nServer: tenured\r\nX-Request-Id: ");
    bufStrAppend(o, ex->request_id);
    bufLit(o, "\r\nCache-Control: no-store\r\n");
    if (!no_body) {
        if (ctype != NULL) {
            bufLit(o, "Content-Type: ");
            bufStrAppend(o, ctype);
            bufLit(o, "\r\n");
        }
        bufLit(o, "Content-Length: ");
        bufU64(o, len);
        bufLit(o, "\r\n");
    }
    if (ex->hdrs.len > 0) {
        bufAppend(o, ex->hdrs.p, ex->hdrs.len);
    }
    if (ex->close_after) {
        bufLit(o, "Connection: close\r\n");
    } else if (ex->http10) {
        bufLit(o, "Connection: keep-alive\r\n");
    }
    bufAppend(o, "\r\n", 2);
    if (!no_body && !ex->head && len > 0) {
        bufAppend(o, body, len);
    }

    ex->status = status;
    ex->state = EX_READY;
    if (status >= 100 && status < 600) {
        s->stats.responses[status / 100]++;
        s->stats.codes[status]++;
    }
}

/* A JSON object written straight into a buffer, for the answers on the
 * hot path (an acquire): the same text jansson's compact dump gives, with
 * no tree to build and free. Strings must be valid UTF-8 (resources and
 * holders are checked on the way in). */
struct jw
{
    struct buf *b;
    bool first;
};

static void jwKey(struct jw *w, const char *key)
{
    bufAppend(w->b, w->first ? "{\"" : ",\"", 2);
    w->first = false;
    bufStrAppend(w->b, key);
    bufLit(w->b, "\":");
}

static void jwStr(struct jw *w, const char *key, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *run;

    jwKey(w, key);
    if (s == NULL) {
        bufLit(w->b, "null");
        return;
    }
    bufLit(w->b, "\"");
    for (run = s; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[7];
        size_t n = 2;
        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            continue;
        }
        bufAppend(w->b, run, (size_t)(s - run));
        run = s + 1;
        esc[0] = '\\';
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 0xf];
            n = 6;
            break;
        }
        bufAppend(w->b, esc, n);
    }
    bufAppend(w->b, run, (size_t)(s - run));
    bufLit(w->b, "\"");
}

/* As jsonSetU64: a number, or a decimal string above INT64_MAX. */
static void jwU64(struct jw *w, const char *key, uint64_t v)
{
    jwKey(w, key);
    if (v > (uint64_t)INT64_MAX) {
        bufLit(w->b, "\"");
        bufU64(w->b, v);
        bufLit(w->b, "\"");
    } else {
        bufU64(w->b, v);
    }
}

static void jwBool(struct jw *w, const char *key, bool v)
{
    jwKey(w, key);
    if (v) {
        bufLit(w->b, "true");
    } else {
        bufLit(w->b, "false");
    }
}

/* Send @body (stolen) as JSON with a trailing newline. */
static void exchangeJson(struct http_exchange *ex,
                         int status,
                         const char *ctype,
                         json_t *body)
{
    size_t len = 0;
    char *text = body != NULL ? jsonDump(body, &len) : NULL;

    if (body != NULL) {
        json_decref(body);
    }
    if (text == NULL) {
        static const char oom[] =
            "{\"type\":\"" PROBLEM_BASE "internal\",\"status\":500}\n";
        bufReset(&ex->hdrs);
        ex->close_after = true;
        exchangeSend(ex, 500, "application/problem+json", oom,
                     sizeof oom - 1);
        return;
    }
    text[len] = '\n'; /* overwrite the NUL: the length is known */
    exchangeSend(ex, status, ctype != NULL ? ctype : "application/json",
                 text, len + 1);
    free(text);
}

/* A new RFC 9457 problem document. */
static json_t *problemNew(struct http_exchange *ex,
                          int status,
                          const char *slug,
                          const char *detail)
{
    json_t *p = json_object();
    char type[128];

    if (p == NULL) {
        return NULL;
    }
    snprintf(type, sizeof type, PROBLEM_BASE "%s", slug);
    json_object_set_new(p, "type", json_string(type));
    json_object_set_new(p, "title", json_string(problemTitle(slug)));
    json_object_set_new(p, "status", json_integer(status));
    if (detail != NULL) {
        json_t *d = json_string(detail);
        json_object_set_new(p, "detail",
                            d != NULL ? d : json_string("(not UTF-8)"));
    }
    if (ex->path != NULL) {
        json_t *i = json_string(ex->path);
        if (i != NULL) {
            json_object_set_new(p, "instance", i);
        }
    }
    json_object_set_new(p, "request_id", json_string(ex->request_id));
    return p;
}

static void exchangeProblem(struct http_exchange *ex, int status, json_t *p)
{
    exchangeJson(ex, status, "application/problem+json", p);
}

/* A problem with a formatted detail and an optional "field" member. */
static void exchangeProblemf(struct http_exchange *ex,
                             int status,
                             const char *slug,
                             const char *field,
                             const char *fmt,
                             ...) __attribute__((format(printf, 5, 6)));

static void exchangeProblemf(struct http_exchange *ex,
                             int status,
                             const char *slug,
                             const char *field,
                             const char *fmt,
                             ...)
{
    char detail[1024];
    va_list ap;
    json_t *p;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    p = problemNew(ex, status, slug, detail);
    if (p != NULL && field != NULL) {
        json_object_set_new(p, "field", json_string(field));
    }
    exchangeProblem(ex, status, p);
}

/* ------------------------------------------------------ connections */

static void serverMaybeClosed(struct http_server *s)
{
    http_close_cb cb;

    if (!s->closing || !s->listener_closed || s->n_conns > 0 ||
        s->close_cb == NULL) {
        return;
    }
    cb = s->close_cb;
    s->close_cb = NULL;
    cb(s);
}

static void connMaybeFree(struct http_conn *c)
{
    struct http_server *s = c->srv;

    if (!c->closing || c->handles_open > 0 || c->n_dispatched > 0 ||
        c->n_writing > 0) {
        return;
    }
    tn_queue_remove(&c->link);
    s->n_conns--;
    s->stats.connections_open = s->n_conns;
    bufFree(&c->stash);
    bufFree(&c->hfield);
    bufFree(&c->hvalue);
    free(c);
    serverMaybeClosed(s);
}

static void connCloseCb(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    c->handles_open--;
    connMaybeFree(c);
}

static void connClose(struct http_conn *c)
{
    struct http_server *s = c->srv;

    if (c->closing) {
        return;
    }
    c->closing = true;
    if (c->cur != NULL) {
        exchangeFree(c->cur);
        c->cur = NULL;
    }
    while (!tn_queue_empty(&c->exchanges)) {
        tn_queue *q = tn_queue_head(&c->exchanges);
        struct http_exchange *ex = TN_QUEUE_DATA(q, struct http_exchange, link);
        tn_queue_remove(q);
        if (ex->queued) {
            c->n_live--;
            ex->queued = false;
        }
        if (ex->state == EX_DISPATCHED) {
            /* Freed by exchangeDispatchCb, which fires with CANCELED. */
            s->backend.cancel(s->backend.data, &ex->dreq);
        } else {
            exchangeFree(ex);
        }
    }
    uv_close((uv_handle_t *)&c->tcp, connCloseCb);
    uv_close((uv_handle_t *)&c->timer, connCloseCb);
}

static void connStopReading(struct http_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* Every connection reads into the same buffer: the loop runs one read
 * callback at a time, and the parser copies what it keeps (url, headers,
 * body, and the stash of a paused connection) before the callback
 * returns. */
static void connAllocCb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char scratch[READ_CHUNK];
    (void)h;
    (void)suggested;
    *b = uv_buf_init(scratch, sizeof scratch);
}

static void connReadCb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

static void connStartReading(struct http_conn *c)
{
    if (!c->reading && !c->closing) {
        if (uv_read_start((uv_stream_t *)&c->tcp, connAllocCb, connReadCb) !=
            0) {
            connClose(c);
            return;
        }
        c->reading = true;
    }
}

static void connTimerCb(uv_timer_t *t);

static void connTimerUpdate(struct http_conn *c)
{
    const struct http_config *cfg = &c->srv->cfg;
    enum timer_mode want;
    uint64_t ms = 0;

    if (c->closing || c->lingering) {
        return;
    }
    if (c->n_live > 0 || c->draining) {
        want = TIMER_NONE;
    } else if (c->cur != NULL || c->stash.len > 0) {
        want = TIMER_REQUEST;
        ms = cfg->request_timeout_ms;
    } else {
        want = TIMER_IDLE;
        ms = cfg->idle_timeout_ms;
    }
    if (want == c->tmode) {
        return;
    }
    c->tmode = want;
    if (want == TIMER_NONE || ms == 0) {
        uv_timer_stop(&c->timer);
    } else {
        uv_timer_start(&c->timer, connTimerCb, ms, 0);
    }
}

/* Queue @ex behind the pending exchanges. */
static void connEnqueue(struct http_conn *c, struct http_exchange *ex)
{
    tn_queue_insert_tail(&c->exchanges, &ex->link);
    ex->queued = true;
    c->n_live++;
}

/* Stop reading requests and queue a final error response. */
static void connFail(struct http_conn *c,
                     int status,
                     const char *slug,
                     const char *field,
                     const char *detail)
{
    struct http_exchange *ex = c->cur;

    c->cur = NULL;
    if (ex == NULL) {
        ex = exchangeNew(c);
        if (ex == NULL) {
            connClose(c);
            return;
        }
    }
    c->srv->stats.parse_errors++;
    c->draining = true;
    connStopReading(c);
    ex->keep_alive = false;
    ex->close_after = true;
    if (ex->path == NULL && ex->url.len > 0 && ex->url.len < 2048) {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(ex->url.p, ex->url.len, 0, &u) == 0 &&
            (u.field_set & (1 << UF_PATH))) {
            ex->path = strndupOrNull(ex->url.p + u.field_data[UF_PATH].off,
                                     u.field_data[UF_PATH].len);
        }
    }
    connEnqueue(c, ex);
    exchangeProblemf(ex, status, slug, field, "%s", detail);
    connFlush(c);
}

static void connShutdownCb(uv_shutdown_t *req, int status)
{
    struct http_conn *c = req->data;

    if (c->closing) {
        return;
    }
    if (status < 0 || c->srv->cfg.linger_ms == 0) {
        connClose(c);
        return;
    }
    /* Drain what the client still sends, so that closing with unread data
     * does not reset the connection before it reads our answer. */
    c->tmode = TIMER_LINGER;
    uv_timer_start(&c->timer, connTimerCb, c->srv->cfg.linger_ms, 0);
    connStartReading(c);
}

static void connShutdown(struct http_conn *c)
{
    c->lingering = true;
    c->draining = true;
    connStopReading(c);
    uv_timer_stop(&c->timer);
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, connShutdownCb) != 0) {
        connClose(c);
    }
}

static void connResume(struct http_conn *c)
{
    struct buf pending;

    if (!c->paused || c->draining || c->closing ||
        c->n_live >= c->srv->cfg.max_pipeline) {
        return;
    }
    c->paused = false;
    http_parser_pause(&c->parser, 0);
    pending = c->stash;
    memset(&c->stash, 0, sizeof c->stash);
    if (pending.len > 0) {
        connFeed(c, pending.p, pending.len);
    }
    bufFree(&pending);
    if (!c->paused && !c->draining && !c->closing) {
        connStartReading(c);
    }
}

static void exchangeWriteCb(uv_write_t *req, int status)
{
    struct http_exchange *ex = req->data;
    struct http_conn *c = ex->conn;
    bool close_after = ex->close_after;

    c->n_writing--;
    exchangeFree(ex);
    if (c->closing) {
        connMaybeFree(c);
        return;
    }
    if (status < 0) {
        connClose(c);
        return;
    }
    if (close_after) {
        connShutdown(c);
        return;
    }
    if (c->eof && c->n_live == 0) {
        connClose(c);
        return;
    }
    connResume(c);
    connTimerUpdate(c);
}

/* Write the answers that are ready, in order. An answer the socket takes
 * whole at once (the usual case) is done here, without uv_write: that
 * saves the epoll_ctl round trip libuv makes for every queued write. Not
 * reentrant: a flush asked for from inside (connResume parsing pipelined
 * requests that are answered at once) runs after the current one. */
static void connFlush(struct http_conn *c)
{
    bool wrote = false;

    if (c->flushing) {
        c->flush_again = true;
        return;
    }
    c->flushing = true;
    do {
        c->flush_again = false;
        while (!c->closing && !tn_queue_empty(&c->exchanges)) {
            tn_queue *q = tn_queue_head(&c->exchanges);
            struct http_exchange *ex =
                TN_QUEUE_DATA(q, struct http_exchange, link);
            uv_buf_t b;
            int rv;

            if (ex->state != EX_READY) {
                break;
            }
            tn_queue_remove(q);
            ex->state = EX_WRITING;
            b = uv_buf_init(ex->out.p, (unsigned)ex->out.len);
            /* libuv refuses (UV_EAGAIN) while earlier writes are queued,
             * so the order of answers is kept. */
            rv = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
            if (rv == (int)b.len) {
                bool close_after = ex->close_after;
                exchangeFree(ex);
                wrote = true;
                if (close_after) {
                    connShutdown(c);
                    break;
                }
                continue;
            }
            if (rv > 0) {
                b.base += rv;
                b.len -= (unsigned)rv;
            } else if (rv != UV_EAGAIN) {
                exchangeFree(ex);
                connClose(c);
                break;
            }
            ex->wreq.data = ex;
            rv = uv_write(&ex->wreq, (uv_stream_t *)&c->tcp, &b, 1,
                          exchangeWriteCb);
            if (rv != 0) {
                exchangeFree(ex);
                connClose(c);
                break;
            }
            c->n_writing++;
            if (ex->close_after) {
                /* Nothing after this one is answered. */
                c->draining = true;
                connStopReading(c);
                break;
            }
        }
        /* What exchangeWriteCb does after a write, for those written
         * here. */
        if (wrote && !c->closing && !c->lingering) {
            wrote = false;
            if (c->eof && c->n_live == 0) {
                connClose(c);
                break;
            }
            connResume(c);
        }
    } while (c->flush_again && !c->closing);
    c->flushing = false;
}

static void connTimerCb(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    enum timer_mode mode = c->tmode;

    c->tmode = TIMER_NONE;
    if (c->closing) {
        return;
    }
    switch (mode) {
    case TIMER_REQUEST:
        if (c->n_live == 0) {
            connFail(c, 408, "request-timeout", NULL,
                     "the request did not arrive in time");
            return;
        }
        break;
    case TIMER_IDLE:
    case TIMER_LINGER:
        connClose(c);
        return;
    case TIMER_NONE:
        break;
    }
}

/* ------------------------------------------------ parser callbacks */

static int headerStore(char **slot, const char *v, size_t n)
{
    if (*slot == NULL) {
        *slot = strndupOrNull(v, n);
        return *slot != NULL ? 0 : -1;
    } else {
        /* Repeated header: combine as a list (RFC 9110 §5.3). */
        size_t old = strlen(*slot);
        char *p = realloc(*slot, old + 2 + n + 1);
        if (p == NULL) {
            return -1;
        }
        memcpy(p + old, ", ", 2);
        memcpy(p + old + 2, v, n);
        p[old + 2 + n] = '\0';
        *slot = p;
        return 0;
    }
}

static int connCommitHeader(struct http_conn *c)
{
    struct http_exchange *ex = c->cur;
    const char *name = bufStr(&c->hfield);
    const char *v = bufStr(&c->hvalue);
    size_t n = c->hvalue.len;
    int rv = 0;

    trimOws(&v, &n);
    if (strcasecmp(name, "if-match") == 0) {
        rv = headerStore(&ex->if_match, v, n);
    } else if (strcasecmp(name, "idempotency-key") == 0) {
        rv = headerStore(&ex->idem_key, v, n);
    } else if (strcasecmp(name, "x-request-id") == 0) {
        rv = headerStore(&ex->xrid, v, n);
    } else if (strcasecmp(name, "expect") == 0) {
        rv = headerStore(&ex->expect, v, n);
    }
    c->header_bytes += 4; /* ": " and CRLF */
    bufReset(&c->hfield);
    bufReset(&c->hvalue);
    c->in_value = false;
    return rv;
}

static int headerBytes(struct http_conn *c, size_t n, int status)
{
    c->header_bytes += n;
    if (c->header_bytes > c->srv->cfg.max_header_bytes) {
        c->limit_status = status;
        return -1;
    }
    return 0;
}

static int onMessageBegin(http_parser *p)
{
    struct http_conn *c = p->data;

    if (c->closing || c->draining) {
        return -1;
    }
    if (c->cur == NULL) {
        c->cur = exchangeNew(c);
        if (c->cur == NULL) {
            return -1;
        }
    }
    c->header_bytes = 0;
    c->body_bytes = 0;
    c->limit_status = 0;
    c->in_value = false;
    bufReset(&c->hfield);
    bufReset(&c->hvalue);
    return 0;
}

static int onUrl(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;

    if (headerBytes(c, n, 414) != 0) {
        return -1;
    }
    return bufAppend(&c->cur->url, at, n);
}

static int onHeaderField(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;

    if (c->in_value && connCommitHeader(c) != 0) {
        return -1;
    }
    if (headerBytes(c, n, 431) != 0) {
        return -1;
    }
    return bufAppend(&c->hfield, at, n);
}

static int onHeaderValue(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;

    c->in_value = true;
    if (headerBytes(c, n, 431) != 0) {
        return -1;
    }
    return bufAppend(&c->hvalue, at, n);
}

static void continueWriteCb(uv_write_t *req, int status)
{
    struct http_conn *c = req->data;
    (void)status;
    c->continue_pending = false;
}

static int onHeadersComplete(http_parser *p)
{
    static char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct http_conn *c = p->data;
    struct http_exchange *ex = c->cur;

    if (c->in_value && connCommitHeader(c) != 0) {
        return -1;
    }
    /* http_parser takes any digits as the version; HTTP/2 (its "PRI *"
     * preface) or "HTTP/9.9" must not be served as if it were 1.1. */
    if (p->http_major != 1) {
        c->limit_status = 505;
        return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) &&
        p->content_length > c->srv->cfg.max_body_bytes) {
        c->limit_status = 413;
        return -1;
    }
    /* Answer "Expect: 100-continue" when nothing is queued ahead of this
     * request (otherwise the 100 would jump the queue; the client then just
     * sends the body after its own timeout). */
    if (ex->expect != NULL && strcasecmp(ex->expect, "100-continue") == 0 &&
        c->n_live == 0 && !c->continue_pending && p->content_length > 0 &&
        (p->flags & F_CONTENTLENGTH)) {
        uv_buf_t b = uv_buf_init(continue_line, sizeof continue_line - 1);
        c->continue_req.data = c;
        if (uv_write(&c->continue_req, (uv_stream_t *)&c->tcp, &b, 1,
                     continueWriteCb) == 0) {
            c->continue_pending = true;
        }
    }
    return 0;
}

static int onBody(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;

    c->body_bytes += n;
    if (c->body_bytes > c->srv->cfg.max_body_bytes) {
        c->limit_status = 413;
        return -1;
    }
    return bufAppend(&c->cur->body, at, n);
}

static bool requestIdValid(const char *s)
{
    size_t n = strlen(s);
    size_t i;

    if (n == 0 || n > MAX_REQUEST_ID) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (!isTchar((unsigned char)s[i]) || s[i] == '"' || s[i] == '\\') {
            return false;
        }
    }
    return true;
}

static bool methodSafe(unsigned method)
{
    return method == HTTP_GET || method == HTTP_HEAD ||
           method == HTTP_OPTIONS;
}

/* May @ex be routed now? Not while an earlier request waits to be routed,
 * nor while an earlier one is with the backend unless both are safe. */
static bool connMayRoute(struct http_conn *c, struct http_exchange *ex)
{
    tn_queue *q;

    TN_QUEUE_FOREACH(q, &c->exchanges)
    {
        struct http_exchange *e = TN_QUEUE_DATA(q, struct http_exchange, link);
        if (e == ex) {
            return true;
        }
        if (e->state == EX_DEFERRED) {
            return false;
        }
        if (e->state == EX_DISPATCHED &&
            (!methodSafe(e->method) || !methodSafe(ex->method))) {
            return false;
        }
    }
    return true;
}

/* Route the deferred requests whose turn has come, in order. */
static void connRouteDeferred(struct http_conn *c)
{
    tn_queue *q;

    TN_QUEUE_FOREACH(q, &c->exchanges)
    {
        struct http_exchange *ex = TN_QUEUE_DATA(q, struct http_exchange,
                                                 link);
        if (ex->state != EX_DEFERRED) {
            continue;
        }
        if (!connMayRoute(c, ex)) {
            return;
        }
        ex->state = EX_ROUTING;
        exchangeRoute(ex);
        if (c->eof && ex->state == EX_DISPATCHED && ex->wait_ms > 0) {
            /* As connCancelWaiting() does for those routed before EOF. */
            c->srv->backend.cancel(c->srv->backend.data, &ex->dreq);
        }
    }
}

static int onMessageComplete(http_parser *p)
{
    struct http_conn *c = p->data;
    struct http_exchange *ex = c->cur;
    struct http_server *s = c->srv;
    bool keep_alive;

    c->cur = NULL;
    s->stats.requests++;
    ex->method = p->method;
    ex->head = p->method == HTTP_HEAD;
    ex->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    ex->http10 = p->http_major == 1 && p->http_minor == 0;
    if (ex->xrid != NULL && requestIdValid(ex->xrid)) {
        snprintf(ex->request_id, sizeof ex->request_id, "%s", ex->xrid);
    }
    keep_alive = ex->keep_alive;
    connEnqueue(c, ex);
    if (connMayRoute(c, ex)) {
        ex->state = EX_ROUTING;
        exchangeRoute(ex);
    } else {
        ex->state = EX_DEFERRED;
    }
    connFlush(c); /* may free ex (write error closes the connection) */

    if (c->closing) {
        http_parser_pause(p, 1);
    } else if (!keep_alive) {
        /* Last request of this connection: ignore anything after it. */
        c->draining = true;
        http_parser_pause(p, 1);
    } else if (c->n_live >= s->cfg.max_pipeline) {
        c->paused = true;
        http_parser_pause(p, 1);
    }
    return 0;
}

static const http_parser_settings parserSettings = {
    .on_message_begin = onMessageBegin,
    .on_url = onUrl,
    .on_header_field = onHeaderField,
    .on_header_value = onHeaderValue,
    .on_headers_complete = onHeadersComplete,
    .on_body = onBody,
    .on_message_complete = onMessageComplete,
};

static void connParseError(struct http_conn *c, enum http_errno err)
{
    char detail[256];

    switch (c->limit_status) {
    case 505:
        snprintf(detail, sizeof detail,
                 "HTTP/%u.%u is not served; use HTTP/1.1",
                 c->parser.http_major, c->parser.http_minor);
        connFail(c, 505, "http-version-not-supported", "http", detail);
        return;
    case 413:
        snprintf(detail, sizeof detail,
                 "the body is larger than %zu bytes",
                 c->srv->cfg.max_body_bytes);
        connFail(c, 413, "body-too-large", "body", detail);
        return;
    case 414:
        snprintf(detail, sizeof detail,
                 "the request target is longer than %zu bytes",
                 c->srv->cfg.max_header_bytes);
        connFail(c, 414, "uri-too-long", "url", detail);
        return;
    case 431:
        snprintf(detail, sizeof detail,
                 "the request line and headers exceed %zu bytes",
                 c->srv->cfg.max_header_bytes);
        connFail(c, 431, "headers-too-large", "headers", detail);
        return;
    default:
        snprintf(detail, sizeof detail, "malformed HTTP: %s",
                 http_errno_description(err));
        connFail(c, 400, "invalid-request", "http", detail);
        return;
    }
}

static void connFeed(struct http_conn *c, const char *data, size_t n)
{
    size_t parsed;
    enum http_errno err;

    if (c->draining || c->closing) {
        return;
    }
    parsed = http_parser_execute(&c->parser, &parserSettings, data, n);
    if (c->closing) {
        return;
    }
    err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED) {
        if (c->draining) {
            /* Keep reading (and discarding) so that a client that goes away
             * while its last request waits is noticed and the request
             * withdrawn (connCancelWaiting). */
            return;
        }
        if (parsed < n && bufAppend(&c->stash, data + parsed, n - parsed)) {
            connClose(c);
            return;
        }
        connStopReading(c);
        return;
    }
    if (err != HPE_OK) {
        connParseError(c, err);
        return;
    }
    if (c->parser.upgrade) {
        /* Upgrades are not supported; the request was answered normally
         * and the connection closes after it. */
        c->draining = true;
        connStopReading(c);
    }
}

/* After EOF, requests that could wait for a long time (an acquire in the
 * server's queue, a long-poll) are withdrawn: most likely nobody is left to
 * read the answer (this is what nginx does on a client abort). Short
 * requests are still answered, for clients that half-close. */
static void connCancelWaiting(struct http_conn *c)
{
    struct http_server *s = c->srv;
    tn_queue *q;

    TN_QUEUE_FOREACH(q, &c->exchanges)
    {
        struct http_exchange *ex = TN_QUEUE_DATA(q, struct http_exchange, link);
        if (ex->state == EX_DISPATCHED && ex->wait_ms > 0) {
            s->backend.cancel(s->backend.data, &ex->dreq);
        }
    }
}

static void connReadCb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct http_conn *c = stream->data;

    if (nread > 0 && !c->lingering) {
        connFeed(c, b->base, (size_t)nread);
        connTimerUpdate(c);
    } else if (nread < 0) {
        if (c->lingering || nread != UV_EOF) {
            connClose(c);
        } else {
            /* The peer is done sending: answer what is pending, then
             * close. A partial request is dropped. */
            c->eof = true;
            c->draining = true;
            connStopReading(c);
            if (c->cur != NULL) {
                exchangeFree(c->cur);
                c->cur = NULL;
            }
            if (c->n_live == 0) {
                connClose(c);
            } else {
                connCancelWaiting(c);
            }
        }
    }
}

static void serverConnectionCb(uv_stream_t *listener, int status)
{
    struct http_server *s = listener->data;
    struct http_conn *c;

    if (status < 0 || s->closing) {
        return;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->srv = s;
    tn_queue_init(&c->exchanges);
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    tn_queue_insert_tail(&s->conns, &c->link);
    s->n_conns++;
    s->stats.connections_open = s->n_conns;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;

    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        connClose(c);
        return;
    }
    s->stats.connections_accepted++;
    if (s->n_conns > s->cfg.max_connections) {
        s->stats.connections_rejected++;
        connClose(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    connStartReading(c);
    connTimerUpdate(c);
}

/* --------------------------------------------------------- routing */

enum {
    M_GET = 1 << 0, /* and HEAD */
    M_PUT = 1 << 1,
    M_DELETE = 1 << 2,
    M_POST = 1 << 3,
};

/* Answer OPTIONS and wrong methods. Returns true to go on. */
static bool methodCheck(struct http_exchange *ex,
                        unsigned mask,
                        const char *allow)
{
    unsigned m = 0;

    switch (ex->method) {
    case HTTP_GET:
    case HTTP_HEAD:
        m = M_GET;
        break;
    case HTTP_PUT:
        m = M_PUT;
        break;
    case HTTP_DELETE:
        m = M_DELETE;
        break;
    case HTTP_POST:
        m = M_POST;
        break;
    case HTTP_OPTIONS:
        exchangeHeaderf(ex, "Allow", "%s, OPTIONS", allow);
        exchangeSend(ex, 204, NULL, NULL, 0);
        return false;
    default:
        break;
    }
    if ((m & mask) == 0) {
        exchangeHeaderf(ex, "Allow", "%s, OPTIONS", allow);
        exchangeProblemf(ex, 405, "method-not-allowed", NULL,
                         "%s is not allowed here; allowed: %s",
                         http_method_str((enum http_method)ex->method),
                         allow);
        return false;
    }
    return true;
}

struct qparam
{
    const char *name;
    char *value; /* owned, decoded; NULL when absent */
};

static void queryFree(struct qparam *params, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        free(params[i].value);
        params[i].value = NULL;
    }
}

/* Parse the query string into @params (only those names are accepted).
 * Returns 0, or -1 after answering 400. */
static int queryParse(struct http_exchange *ex,
                      const char *q,
                      size_t len,
                      struct qparam *params,
                      size_t n)
{
    size_t i = 0;

    while (i < len) {
        size_t start = i;
        size_t eq = (size_t)-1;
        size_t klen;
        size_t vlen;
        char *key;
        char *value;
        size_t k;
        bool found = false;

        while (i < len && q[i] != '&') {
            if (q[i] == '=' && eq == (size_t)-1) {
                eq = i;
            }
            i++;
        }
        if (i == start) {
            i++;
            continue;
        }
        klen = (eq != (size_t)-1 ? eq : i) - start;
        vlen = eq != (size_t)-1 ? i - eq - 1 : 0;
        key = malloc(klen + 1);
        value = malloc(vlen + 1);
        if (key == NULL || value == NULL ||
            httpPercentDecode(q + start, klen, key) < 0 ||
            httpPercentDecode(eq != (size_t)-1 ? q + eq + 1 : "", vlen,
                              value) < 0) {
            free(key);
            free(value);
            exchangeProblemf(ex, 400, "invalid-request", "query",
                             "malformed percent-encoding in the query");
            return -1;
        }
        for (k = 0; k < n; k++) {
            if (strcmp(params[k].name, key) == 0) {
                found = true;
                if (params[k].value != NULL) {
                    exchangeProblemf(ex, 400, "invalid-request", key,
                                     "query parameter '%s' is repeated",
                                     key);
                    free(key);
                    free(value);
                    return -1;
                }
                params[k].value = value;
                value = NULL;
                break;
            }
        }
        if (!found) {
            bool printable = httpResourceInvalid(key, strlen(key)) == NULL;
            exchangeProblemf(ex, 400, "invalid-request", "query",
                             "unknown query parameter '%s'",
                             printable ? key : "?");
            free(key);
            free(value);
            return -1;
        }
        free(key);
        free(value);
        i++;
    }
    return 0;
}

/* Decode and validate a resource id from the path. Returns 0, or -1 after
 * answering 400. */
static int exchangeResource(struct http_exchange *ex,
                            const char *raw,
                            size_t len,
                            const char *field)
{
    char *id = malloc(len + 1);
    long n;
    const char *why;

    if (id == NULL) {
        exchangeProblemf(ex, 500, "internal", NULL, "out of memory");
        return -1;
    }
    n = httpPercentDecode(raw, len, id);
    if (n < 0) {
        free(id);
        exchangeProblemf(ex, 400, "invalid-request", field,
                         "%s: malformed percent-encoding", field);
        return -1;
    }
    if (strlen(id) != (size_t)n) {
        why = "contains a control character";
    } else {
        why = httpResourceInvalid(id, (size_t)n);
    }
    if (why != NULL) {
        free(id);
        exchangeProblemf(ex, 400, "invalid-request", field, "%s %s", field,
                         why);
        return -1;
    }
    ex->resource = id;
    return 0;
}

static bool bodyBlank(const struct buf *b)
{
    size_t i;
    for (i = 0; i < b->len; i++) {
        char ch = b->p[i];
        if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
            return false;
        }
    }
    return true;
}

/* Parse the body as a JSON object with only @allowed keys into ex->json
 * (an empty body is {}). Returns 0, or -1 after answering 400. */
static int exchangeBody(struct http_exchange *ex, const char *const *allowed)
{
    json_error_t err;
    const char *unknown;

    if (bodyBlank(&ex->body)) {
        ex->json = json_object();
        if (ex->json == NULL) {
            exchangeProblemf(ex, 500, "internal", NULL, "out of memory");
            return -1;
        }
        return 0;
    }
    ex->json = json_loadb(ex->body.p, ex->body.len, JSON_REJECT_DUPLICATES,
                          &err);
    if (ex->json == NULL) {
        exchangeProblemf(ex, 400, "invalid-request", "body",
                         "malformed JSON at line %d column %d: %s", err.line,
                         err.column, err.text);
        return -1;
    }
    if (!json_is_object(ex->json)) {
        exchangeProblemf(ex, 400, "invalid-request", "body",
                         "the body must be a JSON object");
        return -1;
    }
    unknown = jsonUnknownKey(ex->json, allowed);
    if (unknown != NULL) {
        struct buf names = { 0 };
        const char *const *a;
        for (a = allowed; *a != NULL; a++) {
            bufPrintf(&names, "%s%s", a == allowed ? "" : ", ", *a);
        }
        exchangeProblemf(ex, 400, "invalid-request", unknown,
                         "unknown field '%s'; allowed here: %s", unknown,
                         names.len > 0 ? names.p : "none (empty body)");
        bufFree(&names);
        return -1;
    }
    return 0;
}

/* A string field that contains control characters (or a NUL, which C
 * strings cannot carry) is malformed: 400 before any range check. Returns
 * 0, or -1 after answering. */
static int stringFieldClean(struct http_exchange *ex, const char *field)
{
    const json_t *v = json_object_get(ex->json, field);
    const char *why;

    if (!json_is_string(v)) {
        return 0;
    }
    why = httpResourceInvalid(json_string_value(v), json_string_length(v));
    if (why != NULL && json_string_length(v) > 0 &&
        strcmp(why, "contains a control character") == 0) {
        exchangeProblemf(ex, 400, "invalid-request", field,
                         "field '%s' must not contain control characters",
                         field);
        return -1;
    }
    return 0;
}

/* Report a jsonGet*() failure. Returns true when the field is usable
 * (present or absent). */
static bool fieldOk(struct http_exchange *ex,
                    enum json_get rc,
                    const char *field,
                    const char *type,
                    const char *range)
{
    json_t *p;

    switch (rc) {
    case JSON_GET_OK:
    case JSON_GET_ABSENT:
        return true;
    case JSON_GET_TYPE:
        exchangeProblemf(ex, 400, "invalid-request", field,
                         "field '%s' must be %s", field, type);
        return false;
    case JSON_GET_RANGE:
        p = problemNew(ex, 422, "invalid-value", NULL);
        if (p != NULL) {
            char detail[256];
            snprintf(detail, sizeof detail, "field '%s' must be within %s",
                     field, range);
            json_object_set_new(p, "detail", json_string(detail));
            json_object_set_new(p, "field", json_string(field));
            json_object_set_new(p, "allowed", json_string(range));
        }
        exchangeProblem(ex, 422, p);
        return false;
    }
    return false;
}

static int exchangeIdempotency(struct http_exchange *ex,
                               const char *op,
                               const char *target)
{
    const char *k = ex->idem_key;
    size_t n;
    size_t i;

    if (k == NULL) {
        ex->req.client_id = 0;
        ex->req.seq = 0;
        return 0;
    }
    n = strlen(k);
    if (n == 0 || n > ex->conn->srv->cfg.max_idempotency_key_bytes) {
        exchangeProblemf(ex, 400, "invalid-request", "Idempotency-Key",
                         "Idempotency-Key must be 1..%u characters",
                         ex->conn->srv->cfg.max_idempotency_key_bytes);
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (!isTchar((unsigned char)k[i]) && k[i] != ' ') {
            exchangeProblemf(ex, 400, "invalid-request", "Idempotency-Key",
                             "Idempotency-Key must be printable ASCII");
            return -1;
        }
    }
    ex->req.client_id = httpIdempotencyClientId(k, op, target);
    ex->req.seq = 1;
    return 0;
}

static void exchangeSubmit(struct http_exchange *ex)
{
    struct http_conn *c = ex->conn;
    struct http_server *s = c->srv;
    int rv;

    ex->req.id = ++s->next_id;
    ex->req.forward = 1;
    ex->dreq.data = ex;
    ex->dreq.request = &ex->req;
    ex->dreq.cb = exchangeDispatchCb;
    ex->submitted_ns = uv_hrtime();
    rv = s->backend.submit(s->backend.data, &ex->dreq);
    if (rv != 0) {
        exchangeHeaderf(ex, "Retry-After", "1");
        exchangeProblemf(ex, 503, "unavailable", NULL,
                         "the node refused the request (code %d)", rv);
        return;
    }
    ex->state = EX_DISPATCHED;
    c->n_dispatched++;
    s->stats.in_flight++;
}

static int parseMode(struct http_exchange *ex, Tn__LockMode *mode)
{
    const json_t *v = json_object_get(ex->json, "mode");
    const char *m;
    json_t *p;

    *mode = TN__LOCK_MODE__EXCLUSIVE;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        exchangeProblemf(ex, 400, "invalid-request", "mode",
                         "field 'mode' must be a string");
        return -1;
    }
    m = json_string_value(v);
    if (strcasecmp(m, "exclusive") == 0) {
        *mode = TN__LOCK_MODE__EXCLUSIVE;
    } else if (strcasecmp(m, "shared") == 0) {
        *mode = TN__LOCK_MODE__SHARED;
    } else if (strcasecmp(m, "semaphore") == 0) {
        *mode = TN__LOCK_MODE__SEMAPHORE;
    } else {
        p = problemNew(ex, 422, "invalid-value",
                       "field 'mode' must be one of exclusive, shared, "
                       "semaphore");
        if (p != NULL) {
            json_object_set_new(p, "field", json_string("mode"));
            json_object_set_new(p, "allowed",
                                json_string("exclusive, shared, semaphore"));
        }
        exchangeProblem(ex, 422, p);
        return -1;
    }
    return 0;
}

static void routeAcquire(struct http_exchange *ex)
{
    static const char *const keys[] = { "holder",  "ttl_ms",
                                        "wait_ms", "mode",
                                        "permits", "lock_delay_ms",
                                        "session", NULL };
    const struct http_config *cfg = &ex->conn->srv->cfg;
    Tn__Acquire *a = &ex->u.acquire;
    uint64_t session = 0;
    const char *holder = NULL;
    uint32_t ttl_ms = 0;
    uint32_t wait_ms = 0;
    uint32_t lock_delay_ms = 0;
    uint32_t permits = 0;
    Tn__LockMode mode;
    enum json_get prc;
    enum json_get trc;
    char range[64];

    if (exchangeBody(ex, keys) != 0 || stringFieldClean(ex, "holder") != 0) {
        return;
    }
    snprintf(range, sizeof range, "1..%u bytes", cfg->max_holder_bytes);
    if (!fieldOk(ex, jsonGetU64(ex->json, "session", 1, UINT64_MAX, &session),
                 "session", "a positive integer (or a decimal string)",
                 "1..18446744073709551615") ||
        !fieldOk(ex,
                 jsonGetString(ex->json, "holder", 1, cfg->max_holder_bytes,
                               &holder),
                 "holder", "a string", range)) {
        return;
    }
    trc = jsonGetU32(ex->json, "ttl_ms", 1, UINT32_MAX, &ttl_ms);
    if (!fieldOk(ex, trc, "ttl_ms", "an integer", "1..4294967295") ||
        !fieldOk(ex, jsonGetU32(ex->json, "wait_ms", 0, UINT32_MAX, &wait_ms),
                 "wait_ms", "an integer", "0..4294967295") ||
        !fieldOk(ex,
                 jsonGetU32(ex->json, "lock_delay_ms", 0, UINT32_MAX,
                            &lock_delay_ms),
                 "lock_delay_ms", "an integer", "0..4294967295")) {
        return;
    }
    if (parseMode(ex, &mode) != 0) {
        return;
    }
    prc = jsonGetU32(ex->json, "permits", 1, UINT32_MAX, &permits);
    if (!fieldOk(ex, prc, "permits", "an integer", "1..4294967295")) {
        return;
    }
    if (mode == TN__LOCK_MODE__SEMAPHORE && prc == JSON_GET_ABSENT) {
        json_t *p = problemNew(ex, 422, "invalid-value",
                               "mode semaphore needs 'permits' (>= 1)");
        if (p != NULL) {
            json_object_set_new(p, "field", json_string("permits"));
            json_object_set_new(p, "allowed", json_string("1..4294967295"));
        }
        exchangeProblem(ex, 422, p);
        return;
    }
    if (mode != TN__LOCK_MODE__SEMAPHORE && prc == JSON_GET_OK) {
        json_t *p = problemNew(ex, 422, "invalid-value",
                               "'permits' applies only to mode semaphore");
        if (p != NULL) {
            json_object_set_new(p, "field", json_string("permits"));
            json_object_set_new(p, "allowed",
                                json_string("only with mode semaphore"));
        }
        exchangeProblem(ex, 422, p);
        return;
    }
    if (session == 0 && holder == NULL) {
        exchangeProblemf(ex, 400, "invalid-request", "holder",
                         "field 'holder' is required without 'session'");
        return;
    }
    if (session == 0 && trc == JSON_GET_ABSENT) {
        ttl_ms = cfg->default_ttl_ms;
    }
    if (exchangeIdempotency(ex, "acquire", ex->resource) != 0) {
        return;
    }
    if (holder != NULL) {
        ex->holder = strdup(holder);
    }
    *a = (Tn__Acquire)TN__ACQUIRE__INIT;
    a->session = session;
    a->resource = ex->resource;
    a->mode = mode;
    a->permits = permits;
    a->wait_ms = wait_ms;
    a->lock_delay_ms = lock_delay_ms;
    a->holder = holder != NULL ? (char *)holder : (char *)"";
    a->ttl_ms = ttl_ms;
    ex->wait_ms = wait_ms;
    ex->op = OP_ACQUIRE;
    ex->req.body_case = TN__REQUEST__BODY_ACQUIRE;
    ex->req.acquire = a;
    exchangeSubmit(ex);
}

static int exchangeIfMatch(struct http_exchange *ex)
{
    const char *why = NULL;

    if (ex->if_match == NULL) {
        exchangeProblemf(ex, 428, "precondition-required", "If-Match",
                         "send If-Match: \"<token>\" with the token of your "
                         "lock (the ETag of the acquire)");
        return -1;
    }
    if (httpParseTokenTag(ex->if_match, &ex->token, &why) != 0) {
        exchangeProblemf(ex, 400, "invalid-request", "If-Match",
                         "If-Match %s", why);
        return -1;
    }
    return 0;
}

static void routeRenew(struct http_exchange *ex)
{
    static const char *const keys[] = { "ttl_ms", NULL };
    Tn__Renew *r = &ex->u.renew;
    uint32_t ttl_ms = 0;

    if (exchangeIfMatch(ex) != 0 || exchangeBody(ex, keys) != 0) {
        return;
    }
    if (!fieldOk(ex, jsonGetU32(ex->json, "ttl_ms", 1, UINT32_MAX, &ttl_ms),
                 "ttl_ms", "an integer", "1..4294967295")) {
        return;
    }
    if (exchangeIdempotency(ex, "renew", ex->resource) != 0) {
        return;
    }
    *r = (Tn__Renew)TN__RENEW__INIT;
    r->resource = ex->resource;
    r->token = ex->token;
    r->ttl_ms = ttl_ms;
    ex->op = OP_RENEW;
    ex->req.body_case = TN__REQUEST__BODY_RENEW;
    ex->req.renew = r;
    exchangeSubmit(ex);
}

static void routeRelease(struct http_exchange *ex)
{
    Tn__Release *r = &ex->u.release;

    if (exchangeIfMatch(ex) != 0 ||
        exchangeIdempotency(ex, "release", ex->resource) != 0) {
        return;
    }
    *r = (Tn__Release)TN__RELEASE__INIT;
    r->resource = ex->resource;
    r->token = ex->token;
    ex->op = OP_RELEASE;
    ex->req.body_case = TN__REQUEST__BODY_RELEASE;
    ex->req.release = r;
    exchangeSubmit(ex);
}

/* "stale" → true; "linearizable" or absent → false. */
static int parseConsistency(struct http_exchange *ex,
                            const char *v,
                            protobuf_c_boolean *stale)
{
    *stale = 0;
    if (v == NULL || strcmp(v, "linearizable") == 0) {
        return 0;
    }
    if (strcmp(v, "stale") == 0) {
        *stale = 1;
        return 0;
    }
    exchangeProblemf(ex, 400, "invalid-request", "consistency",
                     "consistency must be 'stale' or 'linearizable'");
    return -1;
}

static int parseU64Param(struct http_exchange *ex,
                         const char *name,
                         const char *v,
                         uint64_t *out)
{
    uint64_t x = 0;
    size_t i;
    size_t n = strlen(v);

    if (n == 0 || n > 20) {
        goto bad;
    }
    for (i = 0; i < n; i++) {
        unsigned d;
        if (v[i] < '0' || v[i] > '9') {
            goto bad;
        }
        d = (unsigned)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            goto bad;
        }
        x = x * 10 + d;
    }
    *out = x;
    return 0;
bad:
    exchangeProblemf(ex, 400, "invalid-request", name,
                     "query parameter '%s' must be a non-negative integer",
                     name);
    return -1;
}

/* A duration: "1500" (ms), "1500ms", "10s", "2m". */
static int parseDuration(struct http_exchange *ex,
                         const char *name,
                         const char *v,
                         uint32_t max_ms,
                         uint32_t *out)
{
    char *end;
    unsigned long long x;
    unsigned long long mul = 1;

    if (v[0] < '0' || v[0] > '9') {
        goto bad;
    }
    x = strtoull(v, &end, 10);
    if (strcmp(end, "") == 0 || strcmp(end, "ms") == 0) {
        mul = 1;
    } else if (strcmp(end, "s") == 0) {
        mul = 1000;
    } else if (strcmp(end, "m") == 0) {
        mul = 60000;
    } else {
        goto bad;
    }
    if (x > max_ms / mul) {
        json_t *p = problemNew(ex, 422, "invalid-value", NULL);
        char detail[128];
        snprintf(detail, sizeof detail, "%s must be at most %ums", name,
                 max_ms);
        if (p != NULL) {
            json_object_set_new(p, "detail", json_string(detail));
            json_object_set_new(p, "field", json_string(name));
        }
        exchangeProblem(ex, 422, p);
        return -1;
    }
    *out = (uint32_t)(x * mul);
    return 0;
bad:
    exchangeProblemf(ex, 400, "invalid-request", name,
                     "%s must be a duration such as 1500, 1500ms, 10s or 2m",
                     name);
    return -1;
}

static void routeGetLock(struct http_exchange *ex, const char *q, size_t qlen)
{
    struct qparam params[] = { { "consistency", NULL },
                               { "index", NULL },
                               { "wait", NULL } };
    Tn__GetLock *g = &ex->u.get_lock;

    *g = (Tn__GetLock)TN__GET_LOCK__INIT;
    if (queryParse(ex, q, qlen, params, 3) != 0 ||
        parseConsistency(ex, params[0].value, &g->stale) != 0 ||
        (params[1].value != NULL &&
         parseU64Param(ex, "index", params[1].value, &g->index) != 0) ||
        (params[2].value != NULL &&
         parseDuration(ex, "wait", params[2].value, MAX_WAIT_MS,
                       &g->wait_ms) != 0)) {
        queryFree(params, 3);
        return;
    }
    queryFree(params, 3);
    g->resource = ex->resource;
    ex->wait_ms = g->wait_ms;
    ex->op = OP_GET_LOCK;
    ex->req.body_case = TN__REQUEST__BODY_GET_LOCK;
    ex->req.get_lock = g;
    exchangeSubmit(ex);
}

static void routeFence(struct http_exchange *ex,
                       const char *raw,
                       size_t len,
                       const char *q,
                       size_t qlen);

/* Does the query string have a parameter named @name (plain ASCII)? */
static bool queryHas(const char *q, size_t len, const char *name)
{
    size_t n = strlen(name);
    size_t i = 0;

    while (i < len) {
        size_t start = i;
        while (i < len && q[i] != '&') {
            i++;
        }
        if (i - start >= n && memcmp(q + start, name, n) == 0 &&
            (i - start == n || q[start + n] == '=')) {
            return true;
        }
        i++;
    }
    return false;
}

static void routeLock(struct http_exchange *ex,
                      const char *raw,
                      size_t len,
                      const char *q,
                      size_t qlen)
{
    if (!methodCheck(ex, M_GET | M_PUT | M_DELETE,
                     "GET, HEAD, PUT, DELETE")) {
        return;
    }
    /* DESIGN §6 also names the write gate GET /v1/locks/{id}/check?token=T:
     * an alias of /v1/fence/{id}. A state read takes no token parameter
     * (it would be a 400), so the alias never hides a lock named ".../check". */
    if ((ex->method == HTTP_GET || ex->method == HTTP_HEAD) && len > 6 &&
        memcmp(raw + len - 6, "/check", 6) == 0 &&
        queryHas(q, qlen, "token")) {
        routeFence(ex, raw, len - 6, q, qlen);
        return;
    }
    if (exchangeResource(ex, raw, len, "resource") != 0) {
        return;
    }
    if (ex->method == HTTP_GET || ex->method == HTTP_HEAD) {
        routeGetLock(ex, q, qlen);
        return;
    }
    if (qlen > 0) {
        exchangeProblemf(ex, 400, "invalid-request", "query",
                         "%s takes no query parameters",
                         http_method_str((enum http_method)ex->method));
        return;
    }
    if (ex->method == HTTP_DELETE) {
        routeRelease(ex);
    } else if (ex->if_match != NULL) {
        routeRenew(ex);
    } else {
        routeAcquire(ex);
    }
}

static void routeFence(struct http_exchange *ex,
                       const char *raw,
                       size_t len,
                       const char *q,
                       size_t qlen)
{
    struct qparam params[] = { { "token", NULL }, { "consistency", NULL } };
    Tn__GetLock *g = &ex->u.get_lock;
    const char *why;

    if (!methodCheck(ex, M_GET, "GET, HEAD") ||
        exchangeResource(ex, raw, len, "resource") != 0) {
        return;
    }
    *g = (Tn__GetLock)TN__GET_LOCK__INIT;
    if (queryParse(ex, q, qlen, params, 2) != 0 ||
        parseConsistency(ex, params[1].value, &g->stale) != 0) {
        queryFree(params, 2);
        return;
    }
    if (params[0].value == NULL) {
        queryFree(params, 2);
        exchangeProblemf(ex, 400, "invalid-request", "token",
                         "query parameter 'token' is required");
        return;
    }
    if (httpParseTokenTag(params[0].value, &ex->token, &why) != 0) {
        queryFree(params, 2);
        exchangeProblemf(ex, 400, "invalid-request", "token", "token %s",
                         why);
        return;
    }
    queryFree(params, 2);
    g->resource = ex->resource;
    ex->op = OP_FENCE;
    ex->req.body_case = TN__REQUEST__BODY_GET_LOCK;
    ex->req.get_lock = g;
    exchangeSubmit(ex);
}

static void routeList(struct http_exchange *ex, const char *q, size_t qlen)
{
    struct qparam params[] = { { "prefix", NULL },
                               { "consistency", NULL },
                               { "limit", NULL } };
    Tn__ListLocks *l = &ex->u.list_locks;
    uint64_t limit = ex->conn->srv->cfg.list_limit;

    if (!methodCheck(ex, M_GET, "GET, HEAD")) {
        return;
    }
    *l = (Tn__ListLocks)TN__LIST_LOCKS__INIT;
    if (queryParse(ex, q, qlen, params, 3) != 0 ||
        parseConsistency(ex, params[1].value, &l->stale) != 0 ||
        (params[2].value != NULL &&
         parseU64Param(ex, "limit", params[2].value, &limit) != 0)) {
        queryFree(params, 3);
        return;
    }
    if (params[2].value != NULL && (limit == 0 || limit > MAX_LIST_LIMIT)) {
        json_t *p = problemNew(ex, 422, "invalid-value",
                               "limit must be within 1..100000");
        queryFree(params, 3);
        if (p != NULL) {
            json_object_set_new(p, "field", json_string("limit"));
            json_object_set_new(p, "allowed", json_string("1..100000"));
        }
        exchangeProblem(ex, 422, p);
        return;
    }
    ex->prefix = params[0].value;
    params[0].value = NULL;
    queryFree(params, 3);
    if (ex->prefix != NULL && ex->prefix[0] != '\0') {
        const char *why = httpResourceInvalid(ex->prefix, strlen(ex->prefix));
        if (why != NULL) {
            exchangeProblemf(ex, 400, "invalid-request", "prefix", "prefix %s",
                             why);
            return;
        }
    }
    l->prefix = ex->prefix != NULL ? ex->prefix : (char *)"";
    l->limit = (uint32_t)limit;
    ex->op = OP_LIST;
    ex->req.body_case = TN__REQUEST__BODY_LIST_LOCKS;
    ex->req.list_locks = l;
    exchangeSubmit(ex);
}

static void routeCluster(struct http_exchange *ex, size_t qlen)
{
    if (!methodCheck(ex, M_GET, "GET, HEAD")) {
        return;
    }
    if (qlen > 0) {
        exchangeProblemf(ex, 400, "invalid-request", "query",
                         "/v1/cluster takes no query parameters");
        return;
    }
    ex->u.cluster_status = (Tn__ClusterStatus)TN__CLUSTER_STATUS__INIT;
    ex->op = OP_CLUSTER;
    ex->req.body_case = TN__REQUEST__BODY_CLUSTER_STATUS;
    ex->req.cluster_status = &ex->u.cluster_status;
    exchangeSubmit(ex);
}

static json_t *healthJson(struct http_server *s, struct dispatch_health *h)
{
    json_t *o = json_object();

    memset(h, 0, sizeof *h);
    if (s->backend.health != NULL) {
        s->backend.health(s->backend.data, h);
    }
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "status", json_string("ok"));
    jsonSetU64(o, "node_id", h->node_id);
    json_object_set_new(o, "is_leader", json_boolean(h->is_leader));
    json_object_set_new(o, "has_leader", json_boolean(h->has_leader));
    json_object_set_new(o, "ready", json_boolean(h->ready));
    jsonSetU64(o, "term", h->term);
    jsonSetU64(o, "commit_index", h->commit_index);
    jsonSetU64(o, "applied_index", h->applied_index);
    return o;
}

static void routeHealth(struct http_exchange *ex, bool readiness)
{
    struct dispatch_health h;
    json_t *o;

    if (!methodCheck(ex, M_GET, "GET, HEAD")) {
        return;
    }
    o = healthJson(ex->conn->srv, &h);
    /* The status page of any node probes every member's health. */
    exchangeHeaderf(ex, "Access-Control-Allow-Origin", "*");
    if (!readiness) {
        exchangeJson(ex, 200, NULL, o);
        return;
    }
    if (h.ready) {
        if (o != NULL) {
            json_object_set_new(o, "status", json_string("ready"));
        }
        exchangeJson(ex, 200, NULL, o);
        return;
    }
    if (o != NULL) {
        json_object_set_new(o, "status", json_string("not-ready"));
        json_object_set_new(o, "reason",
                            json_string(h.has_leader
                                            ? "catching up with the leader"
                                            : "no leader known"));
    }
    exchangeHeaderf(ex, "Retry-After", "1");
    exchangeJson(ex, 503, NULL, o);
}

static const char *const opNames[HTTP_OP_COUNT] = {
    "acquire", "renew",   "release",           "get",          "list",
    "fence",   "cluster", "session_open", "session_keepalive", "session_close",
};

static const char *const statusNames[HTTP_STATUS_COUNT] = {
    "ok",          "held",           "lock_delay",       "token_mismatch",
    "lease_expired", "session_expired", "not_leader",    "no_quorum",
    "commit_unknown", "invalid_argument", "rate_limited", "timeout",
    "canceled",    "no_space",       "not_found",        "internal",
};

static void metricHead(struct buf *b,
                       const char *name,
                       const char *type,
                       const char *help)
{
    bufPrintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metricEmit(void *ctx, const char *text, size_t len)
{
    bufAppend(ctx, text, len);
}

/* GET /metrics: the Prometheus text exposition format (version 0.0.4). */
static void routeMetrics(struct http_exchange *ex)
{
    struct http_server *s = ex->conn->srv;
    const struct http_stats *st = &s->stats;
    struct dispatch_health h;
    struct buf b = { 0 };
    int op;
    int i;

    if (!methodCheck(ex, M_GET, "GET, HEAD")) {
        return;
    }
    memset(&h, 0, sizeof h);
    if (s->backend.health != NULL) {
        s->backend.health(s->backend.data, &h);
    }

    metricHead(&b, "tenure_node_is_leader", "gauge",
               "1 if this node is the Raft leader.");
    bufPrintf(&b, "tenure_node_is_leader %d\n", h.is_leader ? 1 : 0);
    metricHead(&b, "tenure_node_has_leader", "gauge",
               "1 if this node knows a leader.");
    bufPrintf(&b, "tenure_node_has_leader %d\n", h.has_leader ? 1 : 0);
    metricHead(&b, "tenure_node_ready", "gauge",
               "1 if this node knows a leader and has caught up.");
    bufPrintf(&b, "tenure_node_ready %d\n", h.ready ? 1 : 0);
    metricHead(&b, "tenure_raft_term", "gauge", "Current Raft term.");
    bufPrintf(&b, "tenure_raft_term %" PRIu64 "\n", h.term);
    metricHead(&b, "tenure_raft_commit_index", "gauge",
               "Highest Raft index known to be committed.");
    bufPrintf(&b, "tenure_raft_commit_index %" PRIu64 "\n", h.commit_index);
    metricHead(&b, "tenure_raft_applied_index", "gauge",
               "Highest Raft index applied to the lock table.");
    bufPrintf(&b, "tenure_raft_applied_index %" PRIu64 "\n",
              h.applied_index);

    metricHead(&b, "tenure_http_connections_open", "gauge",
               "Open HTTP connections.");
    bufPrintf(&b, "tenure_http_connections_open %u\n", s->n_conns);
    metricHead(&b, "tenure_http_connections_accepted_total", "counter",
               "HTTP connections accepted.");
    bufPrintf(&b, "tenure_http_connections_accepted_total %" PRIu64 "\n",
              st->connections_accepted);
    metricHead(&b, "tenure_http_connections_rejected_total", "counter",
               "HTTP connections closed at once (over the connection limit).");
    bufPrintf(&b, "tenure_http_connections_rejected_total %" PRIu64 "\n",
              st->connections_rejected);
    metricHead(&b, "tenure_http_parse_errors_total", "counter",
               "Requests rejected as malformed, too large or too slow.");
    bufPrintf(&b, "tenure_http_parse_errors_total %" PRIu64 "\n",
              st->parse_errors);
    metricHead(&b, "tenure_http_requests_in_flight", "gauge",
               "HTTP requests submitted to the cluster and not answered.");
    bufPrintf(&b, "tenure_http_requests_in_flight %" PRIu64 "\n",
              st->in_flight);
    metricHead(&b, "tenure_http_responses_total", "counter",
               "HTTP responses by status code.");
    for (i = 100; i < 600; i++) {
        if (st->codes[i] != 0) {
            bufPrintf(&b, "tenure_http_responses_total{code=\"%d\"} %" PRIu64
                          "\n", i, st->codes[i]);
        }
    }
    metricHead(&b, "tenure_http_conflicts_total", "counter",
               "409 answers to acquires, by kind.");
    bufPrintf(&b, "tenure_http_conflicts_total{kind=\"lock_held\"} %" PRIu64
                  "\n", st->conflicts - st->lock_delay_hits);
    bufPrintf(&b, "tenure_http_conflicts_total{kind=\"lock_delay\"} %" PRIu64
                  "\n", st->lock_delay_hits);

    metricHead(&b, "tenure_http_operations_total", "counter",
               "Cluster answers to HTTP requests, by operation and outcome.");
    for (op = 0; op < HTTP_OP_COUNT; op++) {
        for (i = 0; i < HTTP_STATUS_COUNT; i++) {
            bool main_op = op <= HTTP_OP_RELEASE && i == 0;
            if (st->outcomes[op][i] != 0 || main_op) {
                bufPrintf(&b, "tenure_http_operations_total{op=\"%s\","
                              "outcome=\"%s\"} %" PRIu64 "\n",
                          opNames[op], statusNames[i], st->outcomes[op][i]);
            }
        }
    }
    metricHead(&b, "tenure_http_operation_duration_seconds", "histogram",
               "From submitting an HTTP request to the cluster to its "
               "answer (includes queue waits and long-polls).");
    for (op = 0; op < HTTP_OP_COUNT; op++) {
        uint64_t cum = 0;
        if (st->latency_count[op] == 0 && op > HTTP_OP_RELEASE) {
            continue;
        }
        for (i = 0; i <= HTTP_LATENCY_BUCKETS; i++) {
            cum += st->latency_buckets[op][i];
            if (i < HTTP_LATENCY_BUCKETS) {
                bufPrintf(&b,
                          "tenure_http_operation_duration_seconds_bucket{"
                          "op=\"%s\",le=\"%g\"} %" PRIu64 "\n",
                          opNames[op], httpLatencyBounds[i], cum);
            } else {
                bufPrintf(&b,
                          "tenure_http_operation_duration_seconds_bucket{"
                          "op=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
                          opNames[op], cum);
            }
        }
        bufPrintf(&b,
                  "tenure_http_operation_duration_seconds_sum{op=\"%s\"} "
                  "%.6f\n",
                  opNames[op], st->latency_sum[op]);
        bufPrintf(&b,
                  "tenure_http_operation_duration_seconds_count{op=\"%s\"} "
                  "%" PRIu64 "\n",
                  opNames[op], st->latency_count[op]);
    }
    if (s->backend.metrics != NULL) {
        s->backend.metrics(s->backend.data, metricEmit, &b);
    }
    exchangeSend(ex, 200, "text/plain; version=0.0.4; charset=utf-8",
                 bufStr(&b), b.len);
    bufFree(&b);
}

/* GET /: a small status page (members with their state and health, the
 * leader, term, locks held with holders and time left, most contended
 * resources), refreshing itself every 2 s. Plain HTML, CSS and JS; every
 * value is inserted with textContent (holder names are user input). It
 * works from any node: the data comes from this node's API (the lock list
 * is a linearizable read, relayed to the leader, which knows the time left;
 * without a leader it falls back to this node's stale view), member health
 * from each member's /healthz (which allows CORS). Rows carry data-member /
 * data-state and data-resource / data-holder attributes for scripts and
 * tests (tests/integration/test_status_page.sh). */
static const char statusPage[] =
    "<!doctype html>\n"
    "<html lang=\"en\">\n"
    "<head>\n"
    "<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>tenure</title>\n"
    "<style>\n"
    "body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }\n"
    "h1 { font-size: 1.4em; margin: 0 0 .2em; }\n"
    "h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }\n"
    "table { border-collapse: collapse; min-width: 40em; }\n"
    "th, td { text-align: left; padding: .25em .8em .25em 0; border-bottom: 1px solid #ddd; }\n"
    "th { font-weight: 600; color: #555; }\n"
    "code, .mono { font-family: ui-monospace, monospace; }\n"
    ".ok { color: #17803d; } .bad { color: #b42318; } .warn { color: #b54708; }\n"
    ".muted { color: #777; }\n"
    "#error { color: #b42318; }\n"
    "#summary span { margin-right: 1.2em; }\n"
    "</style>\n"
    "</head>\n"
    "<body>\n"
    "<h1>tenure</h1>\n"
    "<div id=\"summary\" class=\"muted\">\n"
    "<span>node <b id=\"node\">…</b></span>\n"
    "<span>leader <b id=\"leader\">…</b></span>\n"
    "<span>term <b id=\"term\">…</b></span>\n"
    "<span>commit <b id=\"commit\">…</b></span>\n"
    "<span>applied <b id=\"applied\">…</b></span>\n"
    "<span>updated <b id=\"updated\">never</b></span>\n"
    "</div>\n"
    "<div id=\"error\"></div>\n"
    "<h2>Members</h2>\n"
    "<table><thead><tr><th>id</th><th>role</th><th>state</th><th>raft</th><th>rpc</th><th>http</th><th>health</th></tr></thead>\n"
    "<tbody id=\"members\"></tbody></table>\n"
    "<h2>Locks held</h2>\n"
    "<div id=\"locks-note\" class=\"muted\"></div>\n"
    "<table><thead><tr><th>resource</th><th>state</th><th>mode</th><th>holder</th><th>token</th><th>time left</th><th>queue</th></tr></thead>\n"
    "<tbody id=\"locks\"></tbody></table>\n"
    "<h2>Most contended</h2>\n"
    "<div id=\"contention-note\" class=\"muted\"></div>\n"
    "<table><thead><tr><th>resource</th><th>conflicts</th><th>acquires</th><th>waiters</th><th>wait p50 / p99</th><th>hold p50 / p99</th></tr></thead>\n"
    "<tbody id=\"contention\"></tbody></table>\n"
    "<p class=\"muted\">Refreshes every 2 s. API: <code>/v1/cluster</code>, <code>/v1/locks</code>, <code>/v1/stats/contention</code>, <code>/metrics</code>.</p>\n"
    "<script>\n"
    "\"use strict\";\n"
    "function $(id) { return document.getElementById(id); }\n"
    "function el(tag, text, cls) {\n"
    "  var e = document.createElement(tag);\n"
    "  if (text !== undefined && text !== null) e.textContent = String(text);\n"
    "  if (cls) e.className = cls;\n"
    "  return e;\n"
    "}\n"
    "function row(cells, attrs) {\n"
    "  var tr = document.createElement(\"tr\");\n"
    "  Object.keys(attrs || {}).forEach(function (k) { tr.setAttribute(k, String(attrs[k])); });\n"
    "  cells.forEach(function (c) { tr.appendChild(c instanceof Node ? c : el(\"td\", c)); });\n"
    "  return tr;\n"
    "}\n"
    "function fill(id, rows, empty, width) {\n"
    "  var t = $(id);\n"
    "  while (t.firstChild) t.removeChild(t.firstChild);\n"
    "  if (rows.length === 0) {\n"
    "    var td = el(\"td\", empty, \"muted\");\n"
    "    td.colSpan = width;\n"
    "    rows = [row([td])];\n"
    "  }\n"
    "  rows.forEach(function (r) { t.appendChild(r); });\n"
    "}\n"
    "function getJSON(url) {\n"
    "  return fetch(url, { cache: \"no-store\" }).then(function (r) {\n"
    "    if (!r.ok) throw new Error(url + \": HTTP \" + r.status);\n"
    "    return r.json();\n"
    "  });\n"
    "}\n"
    "function secs(ms) { return ms === undefined || ms === null || ms < 0 ? \"?\" : (ms / 1000).toFixed(1) + \" s\"; }\n"
    "function health(m, td) {\n"
    "  if (!m.http_address) { td.textContent = \"?\"; return; }\n"
    "  fetch(\"http://\" + m.http_address + \"/healthz\", { cache: \"no-store\" })\n"
    "    .then(function (r) { return r.json(); })\n"
    "    .then(function (h) {\n"
    "      td.textContent = h.ready ? \"ready\" : (h.has_leader ? \"catching up\" : \"no leader\");\n"
    "      td.className = h.ready ? \"ok\" : \"warn\";\n"
    "    })\n"
    "    .catch(function () { td.textContent = \"unreachable\"; td.className = \"bad\"; });\n"
    "}\n"
    "var cluster = null;\n"
    "function showCluster(c) {\n"
    "  cluster = c;\n"
    "  $(\"node\").textContent = c.node_id + \" (\" + c.state + \")\";\n"
    "  $(\"leader\").textContent = c.leader_id === null ? \"none\" : c.leader_id + \" at \" + c.leader_http;\n"
    "  $(\"leader\").classList.toggle(\"bad\", c.leader_id === null);\n"
    "  $(\"term\").textContent = c.term;\n"
    "  $(\"commit\").textContent = c.commit_index;\n"
    "  $(\"applied\").textContent = c.applied_index;\n"
    "  fill(\"members\", c.members.map(function (m) {\n"
    "    var h = el(\"td\", \"…\");\n"
    "    var state = m.leader ? \"leader\" : (c.leader_id === null ? \"?\" : \"follower\");\n"
    "    health(m, h);\n"
    "    return row([el(\"td\", m.id), m.role, el(\"td\", state, m.leader ? \"ok\" : \"\"),\n"
    "                el(\"td\", m.raft_address, \"mono\"), el(\"td\", m.rpc_address, \"mono\"),\n"
    "                el(\"td\", m.http_address, \"mono\"), h],\n"
    "               { \"data-member\": m.id, \"data-state\": state });\n"
    "  }), \"no members\", 7);\n"
    "}\n"
    "function showLocks(l, stale) {\n"
    "  var note = stale ? \"No leader reachable: this node's own (possibly stale) view; time left unknown. \" : \"\";\n"
    "  if (l.count >= 500) note += \"Showing the first 500.\";\n"
    "  $(\"locks-note\").textContent = note;\n"
    "  fill(\"locks\", l.locks.filter(function (k) { return k.state !== \"free\"; }).map(function (k) {\n"
    "    var h = k.holders[0] || {};\n"
    "    var names = k.holders.map(function (x) { return x.holder; }).join(\", \");\n"
    "    return row([el(\"td\", k.resource, \"mono\"), el(\"td\", k.state, k.state === \"held\" ? \"ok\" : \"warn\"), k.mode,\n"
    "                names, el(\"td\", k.token === null ? \"\" : k.token, \"mono\"),\n"
    "                k.state === \"held\" ? secs(h.expires_in_ms) : \"\", k.queue_len],\n"
    "               { \"data-resource\": k.resource, \"data-holder\": names });\n"
    "  }), \"no locks held\", 7);\n"
    "}\n"
    "function showContention(s) {\n"
    "  $(\"contention-note\").textContent = \"\";\n"
    "  fill(\"contention\", (s.resources || []).map(function (r) {\n"
    "    return row([el(\"td\", r.resource, \"mono\"), r.conflicts, r.acquires, r.waiters,\n"
    "                secs(r.wait_p50_ms) + \" / \" + secs(r.wait_p99_ms),\n"
    "                secs(r.hold_p50_ms) + \" / \" + secs(r.hold_p99_ms)]);\n"
    "  }), \"no contention recorded\", 6);\n"
    "}\n"
    "function refresh() {\n"
    "  var errors = [];\n"
    "  var done = function () {\n"
    "    $(\"error\").textContent = errors.join(\"; \");\n"
    "    $(\"updated\").textContent = new Date().toLocaleTimeString();\n"
    "  };\n"
    "  Promise.all([\n"
    "    getJSON(\"/v1/cluster\").then(showCluster).catch(function (e) { errors.push(String(e)); }),\n"
    "    getJSON(\"/v1/locks?limit=500\").then(function (l) { showLocks(l, false); }).catch(function () {\n"
    "      return getJSON(\"/v1/locks?limit=500&consistency=stale\").then(function (l) { showLocks(l, true); });\n"
    "    }).catch(function (e) { errors.push(String(e)); }),\n"
    "    getJSON(\"/v1/stats/contention?top=10\").then(showContention).catch(function () {\n"
    "      fill(\"contention\", [], \"not available on this node\", 6);\n"
    "    })\n"
    "  ]).then(function () {\n"
    "    /* The leader answers the acquires, so it keeps the statistics. */\n"
    "    var note = $(\"contention-note\");\n"
    "    while (note.firstChild) note.removeChild(note.firstChild);\n"
    "    if (cluster && cluster.state !== \"leader\" && cluster.leader_http) {\n"
    "      var a = el(\"a\", \"the leader's page\");\n"
    "      a.href = \"http://\" + cluster.leader_http + \"/\";\n"
    "      note.appendChild(document.createTextNode(\"This node is not the leader; contention is tracked by the leader: see \"));\n"
    "      note.appendChild(a);\n"
    "      note.appendChild(document.createTextNode(\".\"));\n"
    "    }\n"
    "  }).then(done);\n"
    "}\n"
    "refresh();\n"
    "setInterval(refresh, 2000);\n"
    "</script>\n"
    "</body>\n"
    "</html>\n";

static void routeStatusPage(struct http_exchange *ex)
{
    if (!methodCheck(ex, M_GET, "GET, HEAD")) {
        return;
    }
    exchangeHeaderf(ex, "Content-Security-Policy",
                    "default-src 'self'; connect-src *; "
                    "script-src 'unsafe-inline'; style-src 'unsafe-inline'");
    exchangeSend(ex, 200, "text/html; charset=utf-8", statusPage,
                 sizeof statusPage - 1);
}

#define MAX_CONTENTION_TOP 100

/* GET /v1/stats/contention?top=N (default 10, at most 100). */
static void routeContention(struct http_exchange *ex, const char *q,
                            size_t qlen)
{
    struct http_server *s = ex->conn->srv;
    struct qparam params[] = { { "top", NULL } };
    struct http_contention top[MAX_CONTENTION_TOP];
    uint64_t n = 10;
    size_t got;
    size_t i;
    json_t *o;
    json_t *a;

    if (!methodCheck(ex, M_GET, "GET, HEAD")) {
        return;
    }
    if (queryParse(ex, q, qlen, params, 1) != 0 ||
        (params[0].value != NULL &&
         parseU64Param(ex, "top", params[0].value, &n) != 0)) {
        queryFree(params, 1);
        return;
    }
    queryFree(params, 1);
    if (n == 0 || n > MAX_CONTENTION_TOP) {
        json_t *p = problemNew(ex, 422, "invalid-value",
                               "top must be within 1..100");
        if (p != NULL) {
            json_object_set_new(p, "field", json_string("top"));
            json_object_set_new(p, "allowed", json_string("1..100"));
        }
        exchangeProblem(ex, 422, p);
        return;
    }
    if (s->backend.contention == NULL) {
        exchangeProblemf(ex, 404, "not-found", NULL,
                         "contention statistics are not available on this "
                         "node");
        return;
    }
    memset(top, 0, sizeof top);
    got = s->backend.contention(s->backend.data, top, (size_t)n);
    if (got > n) {
        got = (size_t)n;
    }
    o = json_object();
    a = json_array();
    if (o == NULL || a == NULL) {
        json_decref(o);
        json_decref(a);
        exchangeJson(ex, 500, NULL, NULL);
        return;
    }
    for (i = 0; i < got; i++) {
        json_t *r = json_object();
        if (r == NULL) {
            continue;
        }
        jsonSetStr(r, "resource", top[i].resource);
        jsonSetU64(r, "conflicts", top[i].conflicts);
        jsonSetU64(r, "acquires", top[i].acquires);
        json_object_set_new(r, "waiters", json_integer(top[i].waiters));
        json_object_set_new(r, "wait_p50_ms", json_integer(top[i].wait_p50_ms));
        json_object_set_new(r, "wait_p99_ms", json_integer(top[i].wait_p99_ms));
        json_object_set_new(r, "hold_p50_ms", json_integer(top[i].hold_p50_ms));
        json_object_set_new(r, "hold_p99_ms", json_integer(top[i].hold_p99_ms));
        json_array_append_new(a, r);
    }
    json_object_set_new(o, "resources", a);
    exchangeJson(ex, 200, NULL, o);
}

static int parseSessionId(struct http_exchange *ex,
                          const char *raw,
                          size_t len,
                          uint64_t *sid)
{
    uint64_t x = 0;
    size_t i;

    if (len == 0 || len > 20) {
        goto bad;
    }
    for (i = 0; i < len; i++) {
        unsigned d;
        if (raw[i] < '0' || raw[i] > '9') {
            goto bad;
        }
        d = (unsigned)(raw[i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            goto bad;
        }
        x = x * 10 + d;
    }
    if (x == 0) {
        goto bad;
    }
    *sid = x;
    return 0;
bad:
    exchangeProblemf(ex, 400, "invalid-request", "session",
                     "the session id must be a positive decimal integer");
    return -1;
}

static void routeSessions(struct http_exchange *ex, size_t qlen)
{
    static const char *const keys[] = { "holder", "ttl_ms", NULL };
    const struct http_config *cfg = &ex->conn->srv->cfg;
    Tn__SessionOpen *o = &ex->u.session_open;
    const char *holder = NULL;
    uint32_t ttl_ms = 0;
    enum json_get trc;
    char range[64];

    if (!methodCheck(ex, M_POST, "POST")) {
        return;
    }
    if (qlen > 0) {
        exchangeProblemf(ex, 400, "invalid-request", "query",
                         "POST /v1/sessions takes no query parameters");
        return;
    }
    if (exchangeBody(ex, keys) != 0 || stringFieldClean(ex, "holder") != 0) {
        return;
    }
    snprintf(range, sizeof range, "1..%u bytes", cfg->max_holder_bytes);
    if (!fieldOk(ex,
                 jsonGetString(ex->json, "holder", 1, cfg->max_holder_bytes,
                               &holder),
                 "holder", "a string", range)) {
        return;
    }
    trc = jsonGetU32(ex->json, "ttl_ms", 1, UINT32_MAX, &ttl_ms);
    if (!fieldOk(ex, trc, "ttl_ms", "an integer", "1..4294967295")) {
        return;
    }
    if (holder == NULL) {
        exchangeProblemf(ex, 400, "invalid-request", "holder",
                         "field 'holder' is required");
        return;
    }
    if (trc == JSON_GET_ABSENT) {
        ttl_ms = cfg->default_ttl_ms;
    }
    if (exchangeIdempotency(ex, "session-open", holder) != 0) {
        return;
    }
    *o = (Tn__SessionOpen)TN__SESSION_OPEN__INIT;
    o->holder = (char *)holder;
    o->ttl_ms = ttl_ms;
    ex->op = OP_SESSION_OPEN;
    ex->req.body_case = TN__REQUEST__BODY_SESSION_OPEN;
    ex->req.session_open = o;
    exchangeSubmit(ex);
}

static void routeSession(struct http_exchange *ex,
                         const char *raw,
                         size_t len,
                         size_t qlen)
{
    static const char *const none[] = { NULL };
    uint64_t sid;
    char target[24];

    if (!methodCheck(ex, M_PUT | M_DELETE, "PUT, DELETE")) {
        return;
    }
    if (parseSessionId(ex, raw, len, &sid) != 0) {
        return;
    }
    if (qlen > 0) {
        exchangeProblemf(ex, 400, "invalid-request", "query",
                         "this endpoint takes no query parameters");
        return;
    }
    if (ex->method == HTTP_PUT && exchangeBody(ex, none) != 0) {
        return;
    }
    snprintf(target, sizeof target, "%" PRIu64, sid);
    if (ex->method == HTTP_PUT) {
        if (exchangeIdempotency(ex, "session-keepalive", target) != 0) {
            return;
        }
        ex->u.keepalive = (Tn__SessionKeepalive)TN__SESSION_KEEPALIVE__INIT;
        ex->u.keepalive.session = sid;
        ex->op = OP_SESSION_KEEPALIVE;
        ex->req.body_case = TN__REQUEST__BODY_KEEPALIVE;
        ex->req.keepalive = &ex->u.keepalive;
    } else {
        if (exchangeIdempotency(ex, "session-close", target) != 0) {
            return;
        }
        ex->u.session_close = (Tn__SessionClose)TN__SESSION_CLOSE__INIT;
        ex->u.session_close.session = sid;
        ex->op = OP_SESSION_CLOSE;
        ex->req.body_case = TN__REQUEST__BODY_SESSION_CLOSE;
        ex->req.session_close = &ex->u.session_close;
    }
    exchangeSubmit(ex);
}

static bool pathIs(const char *path, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(path, want, len) == 0;
}

static bool pathHasPrefix(const char *path, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(path, prefix, n) == 0;
}

static void exchangeRoute(struct http_exchange *ex)
{
    struct http_parser_url u;
    const char *path;
    size_t plen;
    const char *q = "";
    size_t qlen = 0;

    http_parser_url_init(&u);
    if (http_parser_parse_url(ex->url.p != NULL ? ex->url.p : "", ex->url.len,
                              ex->method == HTTP_CONNECT, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        exchangeProblemf(ex, 400, "invalid-request", "url",
                         "the request target is not a valid path");
        return;
    }
    path = ex->url.p + u.field_data[UF_PATH].off;
    plen = u.field_data[UF_PATH].len;
    ex->path = strndupOrNull(path, plen);
    if (u.field_set & (1 << UF_QUERY)) {
        q = ex->url.p + u.field_data[UF_QUERY].off;
        qlen = u.field_data[UF_QUERY].len;
    }

    if (pathHasPrefix(path, plen, "/v1/locks/")) {
        routeLock(ex, path + 10, plen - 10, q, qlen);
    } else if (pathIs(path, plen, "/v1/locks")) {
        routeList(ex, q, qlen);
    } else if (pathHasPrefix(path, plen, "/v1/fence/")) {
        routeFence(ex, path + 10, plen - 10, q, qlen);
    } else if (pathIs(path, plen, "/v1/cluster")) {
        routeCluster(ex, qlen);
    } else if (pathIs(path, plen, "/v1/sessions")) {
        routeSessions(ex, qlen);
    } else if (pathHasPrefix(path, plen, "/v1/sessions/")) {
        routeSession(ex, path + 13, plen - 13, qlen);
    } else if (pathIs(path, plen, "/")) {
        routeStatusPage(ex);
    } else if (pathIs(path, plen, "/v1/stats/contention")) {
        routeContention(ex, q, qlen);
    } else if (pathIs(path, plen, "/metrics")) {
        routeMetrics(ex);
    } else if (pathIs(path, plen, "/healthz")) {
        routeHealth(ex, false);
    } else if (pathIs(path, plen, "/readyz")) {
        routeHealth(ex, true);
    } else {
        exchangeProblemf(ex, 404, "not-found", NULL,
                         "no such endpoint; see docs/http.md");
    }
}

/* ------------------------------------------------ response mapping */

static uint32_t validForMs(const struct http_config *cfg, uint32_t ttl_ms)
{
    uint64_t drift = (uint64_t)ttl_ms * cfg->drift_permille / 1000;
    uint64_t cut = drift + cfg->validity_margin_ms;
    return ttl_ms > cut ? (uint32_t)(ttl_ms - cut) : 0;
}

static int64_t holderRemainingMs(const Tn__Holder *h)
{
    if (h->expires_in_ms >= 0) {
        return h->expires_in_ms;
    }
    return h->ttl_ms;
}

static json_t *holderJson(const Tn__Holder *h)
{
    json_t *o = json_object();

    if (o == NULL) {
        return NULL;
    }
    jsonSetStr(o, "holder", h->holder);
    jsonSetU64(o, "session", h->session);
    jsonSetU64(o, "token", h->token);
    jsonSetTimeMs(o, "acquired_at", h->acquired_at_ms);
    json_object_set_new(o, "ttl_ms", json_integer(h->ttl_ms));
    json_object_set_new(o, "expires_in_ms", json_integer(h->expires_in_ms));
    return o;
}

static const char *lockStateName(const Tn__LockInfo *l, uint64_t now_ms)
{
    if (l->n_holders > 0) {
        return "held";
    }
    if (l->lock_delay_until_ms != 0 && l->lock_delay_until_ms > now_ms) {
        return "lock-delay";
    }
    return "free";
}

/* The state document of one lock (GET /v1/locks/{id} and the list). */
static json_t *lockStateJson(const Tn__LockInfo *l, uint64_t now_ms)
{
    json_t *o = json_object();
    json_t *hs = json_array();
    size_t i;

    if (o == NULL || hs == NULL) {
        json_decref(o);
        json_decref(hs);
        return NULL;
    }
    jsonSetStr(o, "resource", l->resource);
    jsonSetStr(o, "state", lockStateName(l, now_ms));
    jsonSetStr(o, "mode", modeName(l->mode));
    jsonSetU64(o, "generation", l->generation);
    if (l->n_holders > 0) {
        jsonSetU64(o, "token", l->holders[0]->token);
    } else {
        json_object_set_new(o, "token", json_null());
    }
    if (l->mode == TN__LOCK_MODE__SEMAPHORE) {
        json_object_set_new(o, "permits", json_integer(l->permits));
    }
    for (i = 0; i < l->n_holders; i++) {
        json_array_append_new(hs, holderJson(l->holders[i]));
    }
    json_object_set_new(o, "holders", hs);
    json_object_set_new(o, "queue_len", json_integer(l->queue_len));
    jsonSetTimeMs(o, "lock_delay_until", l->lock_delay_until_ms);
    return o;
}

/* Milliseconds until the lock could be free: the longest remaining lease,
 * plus any lock-delay still to run. */
static uint64_t lockWaitMs(const Tn__LockInfo *l, uint64_t now_ms)
{
    int64_t longest = 0;
    uint64_t wait;
    size_t i;

    for (i = 0; i < l->n_holders; i++) {
        int64_t r = holderRemainingMs(l->holders[i]);
        if (r > longest) {
            longest = r;
        }
    }
    wait = (uint64_t)longest;
    if (l->lock_delay_until_ms > now_ms) {
        uint64_t delay = l->lock_delay_until_ms - now_ms;
        if (l->n_holders == 0 || delay > wait) {
            wait = delay > wait ? delay : wait;
        }
    }
    return wait;
}

/* Retry-After in whole seconds: ceil(wait + jitter), at least 1. The jitter
 * (0..10% + 0..500 ms) spreads retries of many waiting clients. */
static unsigned retryAfterSecs(struct http_server *s, uint64_t wait_ms)
{
    uint64_t span = wait_ms / 10 + 500;
    uint64_t ms = wait_ms + serverRand(s) % (span + 1);
    uint64_t secs = (ms + 999) / 1000;
    if (secs < 1) {
        secs = 1;
    }
    if (secs > 86400) {
        secs = 86400;
    }
    return (unsigned)secs;
}

static const Tn__LockInfo *responseLock(const Tn__Response *r)
{
    if (r->body_case == TN__RESPONSE__BODY_LOCK && r->lock != NULL) {
        return r->lock;
    }
    return NULL;
}

static void logConflict(struct http_exchange *ex,
                        const char *kind,
                        const Tn__LockInfo *l,
                        uint64_t wait)
{
    struct http_server *s = ex->conn->srv;
    struct buf line = { 0 };

    if (s->cfg.log == NULL) {
        return;
    }
    bufPrintf(&line, "event=conflict kind=%s resource=", kind);
    logQuoted(&line, ex->resource);
    bufPrintf(&line, " requester=");
    logQuoted(&line, ex->holder);
    if (ex->op == OP_ACQUIRE && ex->u.acquire.session != 0) {
        bufPrintf(&line, " requester_session=%" PRIu64,
                  ex->u.acquire.session);
    }
    bufPrintf(&line, " holder=");
    logQuoted(&line, l != NULL && l->n_holders > 0 ? l->holders[0]->holder
                                                    : NULL);
    bufPrintf(&line, " wait_ms=%" PRIu32 " retry_in_ms=%" PRIu64
                     " queue_len=%" PRIu32 " request_id=%s",
              ex->wait_ms, wait, l != NULL ? l->queue_len : 0,
              ex->request_id);
    serverLog(s, 1, &line);
    bufFree(&line);
}

/* 409 lock-held / lock-delay. */
static void answerConflict(struct http_exchange *ex,
                           const Tn__Response *r,
                           bool delay)
{
    struct http_server *s = ex->conn->srv;
    const Tn__LockInfo *l = responseLock(r);
    uint64_t now = wallMs();
    uint64_t wait = l != NULL ? lockWaitMs(l, now) : 0;
    const Tn__Holder *h = l != NULL && l->n_holders > 0 ? l->holders[0] : NULL;
    char detail[1024];
    json_t *p;

    s->stats.conflicts++;
    if (delay) {
        s->stats.lock_delay_hits++;
        snprintf(detail, sizeof detail,
                 "%s was freed by an expiry and is in lock-delay for another "
                 "%" PRIu64 " ms",
                 str(ex->resource), wait);
    } else if (h != NULL) {
        snprintf(detail, sizeof detail,
                 "%s is held by \"%s\" (%s) for up to another %" PRId64
                 " ms; %" PRIu32 " waiting",
                 str(ex->resource), str(h->holder), modeName(l->mode),
                 holderRemainingMs(h), l->queue_len);
    } else {
        snprintf(detail, sizeof detail, "%s is held by someone else%s%s",
                 str(ex->resource), r->message[0] != '\0' ? ": " : "",
                 str(r->message));
    }
    p = problemNew(ex, 409, delay ? "lock-delay" : "lock-held", detail);
    if (p != NULL) {
        jsonSetStr(p, "resource", ex->resource);
        if (h != NULL) {
            jsonSetStr(p, "holder", h->holder);
            jsonSetU64(p, "holder_session", h->session);
            jsonSetU64(p, "holder_token", h->token);
            jsonSetTimeMs(p, "acquired_at", h->acquired_at_ms);
            json_object_set_new(p, "expires_in_ms",
                                json_integer(holderRemainingMs(h)));
        }
        if (l != NULL) {
            size_t i;
            json_t *hs = json_array();
            jsonSetStr(p, "mode", modeName(l->mode));
            json_object_set_new(p, "queue_len", json_integer(l->queue_len));
            if (l->generation != 0) {
                jsonSetU64(p, "generation", l->generation);
            }
            for (i = 0; hs != NULL && i < l->n_holders; i++) {
                json_array_append_new(hs, holderJson(l->holders[i]));
            }
            json_object_set_new(p, "holders", hs);
            if (l->lock_delay_until_ms != 0) {
                jsonSetTimeMs(p, "lock_delay_until", l->lock_delay_until_ms);
            }
        }
        json_object_set_new(p, "retry_after_ms", json_integer((json_int_t)wait));
    }
    exchangeHeaderf(ex, "Retry-After", "%u", retryAfterSecs(s, wait));
    if (h != NULL) {
        exchangeHeaderf(ex, "ETag", "\"%" PRIu64 "\"", h->token);
    }
    logConflict(ex, delay ? "lock-delay" : "lock-held", l, wait);
    exchangeProblem(ex, 409, p);
}

/* The leading identifier of a server message ("ttl_ms: ..."), if any. */
static void messageField(const char *msg, char *out, size_t size)
{
    size_t i = 0;

    out[0] = '\0';
    while (msg[i] != '\0' && i + 1 < size &&
           ((msg[i] >= 'a' && msg[i] <= 'z') || msg[i] == '_' ||
            (msg[i] >= '0' && msg[i] <= '9'))) {
        i++;
    }
    if (i > 0 && i + 1 < size && msg[i] == ':') {
        memcpy(out, msg, i);
        out[i] = '\0';
    }
}

/* Everything that is not a success of the operation. */
static void answerFailure(struct http_exchange *ex, const Tn__Response *r)
{
    struct http_server *s = ex->conn->srv;
    const char *msg = str(r->message);
    const Tn__LockInfo *l = responseLock(r);
    json_t *p;
    char field[64];

    switch (r->status) {
    case TN__STATUS__HELD:
        answerConflict(ex, r, false);
        return;
    case TN__STATUS__LOCK_DELAY:
        answerConflict(ex, r, true);
        return;
    case TN__STATUS__TOKEN_MISMATCH:
        p = problemNew(ex, 412, "token-mismatch",
                       msg[0] != '\0'
                           ? msg
                           : "the token is not the current holder's; the "
                             "current lock was not touched");
        if (p != NULL) {
            jsonSetStr(p, "resource", ex->resource);
            jsonSetU64(p, "token", ex->token);
        }
        if (l != NULL && l->n_holders > 0) {
            exchangeHeaderf(ex, "ETag", "\"%" PRIu64 "\"",
                            l->holders[0]->token);
            if (p != NULL) {
                jsonSetStr(p, "holder", l->holders[0]->holder);
                jsonSetU64(p, "holder_token", l->holders[0]->token);
            }
        }
        exchangeProblem(ex, 412, p);
        return;
    case TN__STATUS__LEASE_EXPIRED:
        p = problemNew(ex, 410, "lease-expired",
                       msg[0] != '\0' ? msg
                                      : "the lease behind this token expired "
                                        "before this request");
        if (p != NULL) {
            jsonSetStr(p, "resource", ex->resource);
            jsonSetU64(p, "token", ex->token);
        }
        exchangeProblem(ex, 410, p);
        return;
    case TN__STATUS__SESSION_EXPIRED:
        exchangeProblemf(ex, 410, "session-expired", "session", "%s",
                         msg[0] != '\0' ? msg
                                        : "the session expired, was closed "
                                          "or never existed");
        return;
    case TN__STATUS__NOT_LEADER:
        p = problemNew(ex, 503, "no-leader",
                       msg[0] != '\0' ? msg : "no leader is known right now");
        if (p != NULL && r->leader_id != 0) {
            jsonSetU64(p, "leader_id", r->leader_id);
            if (r->leader_http != NULL && r->leader_http[0] != '\0') {
                jsonSetStr(p, "leader_http", r->leader_http);
            }
        }
        exchangeHeaderf(ex, "Retry-After", "1");
        exchangeProblem(ex, 503, p);
        return;
    case TN__STATUS__NO_QUORUM:
        exchangeHeaderf(ex, "Retry-After", "1");
        exchangeProblemf(ex, 503, "no-quorum", NULL, "%s",
                         msg[0] != '\0' ? msg
                                        : "no majority of the cluster is "
                                          "reachable");
        return;
    case TN__STATUS__COMMIT_UNKNOWN:
        exchangeProblemf(ex, 504, "commit-unknown", NULL,
                         "%s%sthe outcome is unknown; retry with the same "
                         "Idempotency-Key",
                         msg, msg[0] != '\0' ? "; " : "");
        return;
    case TN__STATUS__TIMEOUT:
        exchangeProblemf(ex, 504, "timeout", NULL, "%s",
                         msg[0] != '\0' ? msg : "the request timed out");
        return;
    case TN__STATUS__INVALID_ARGUMENT:
        messageField(msg, field, sizeof field);
        exchangeProblemf(ex, 422, "invalid-value",
                         field[0] != '\0' ? field : NULL, "%s",
                         msg[0] != '\0' ? msg : "a value is out of range");
        return;
    case TN__STATUS__RATE_LIMITED:
        exchangeHeaderf(ex, "Retry-After", "1");
        exchangeProblemf(ex, 429, "rate-limited", NULL, "%s",
                         msg[0] != '\0' ? msg : "slow down");
        return;
    case TN__STATUS__CANCELED:
        exchangeHeaderf(ex, "Retry-After", "1");
        exchangeProblemf(ex, 503, "canceled", NULL, "%s",
                         msg[0] != '\0' ? msg : "the request was canceled");
        return;
    case TN__STATUS__NO_SPACE:
        exchangeProblemf(ex, 507, "no-space", NULL, "%s",
                         msg[0] != '\0' ? msg : "the node refuses writes");
        return;
    case TN__STATUS__NOT_FOUND:
        exchangeProblemf(ex, 404, "not-found", NULL, "%s",
                         msg[0] != '\0' ? msg : "not found");
        return;
    default:
        (void)s;
        exchangeProblemf(ex, 500, "internal", NULL, "%s (status %d)",
                         msg[0] != '\0' ? msg : "internal error",
                         (int)r->status);
        return;
    }
}

static void answerAcquire(struct http_exchange *ex, const Tn__Response *r)
{
    const struct http_config *cfg = &ex->conn->srv->cfg;
    const Tn__LockInfo *l = responseLock(r);
    struct buf body = { 0 };
    struct jw w = { &body, true };
    struct buf *h = &ex->hdrs;
    bool replayed;

    if (l == NULL || l->token == 0) {
        exchangeProblemf(ex, 500, "internal", NULL,
                         "the node granted the lock without a token");
        return;
    }
    replayed = l->replayed;
    /* Hot path: the body and headers are written directly (the same text
     * a jansson object would dump to). */
    if (bufReserve(&body, 256) != 0) {
        exchangeProblemf(ex, 500, "internal", NULL, "out of memory");
        return;
    }
    jwStr(&w, "resource", ex->resource);
    jwU64(&w, "token", l->token);
    jwU64(&w, "generation", l->generation);
    jwU64(&w, "session", l->session);
    jwStr(&w, "mode", modeName(l->mode));
    if (l->mode == TN__LOCK_MODE__SEMAPHORE) {
        jwU64(&w, "permits", l->permits);
    }
    jwU64(&w, "ttl_ms", l->ttl_ms);
    jwU64(&w, "valid_for_ms", validForMs(cfg, l->ttl_ms));
    if (ex->holder != NULL) {
        jwStr(&w, "holder", ex->holder);
    }
    jwBool(&w, "replayed", replayed);
    bufLit(&body, "}\n");

    bufLit(h, "ETag: \"");
    bufU64(h, l->token);
    bufLit(h, "\"\r\n");
    if (replayed && ex->idem_key != NULL) {
        bufLit(h, "Idempotent-Replayed: true\r\n");
    }
    if (!replayed) {
        static const char hex[] = "0123456789ABCDEF";
        const unsigned char *p = (const unsigned char *)ex->resource;
        const unsigned char *run;
        bufLit(h, "Location: /v1/locks/");
        for (run = p; *p != '\0'; p++) {
            char esc[3];
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
                *p == '_' || *p == '~' || *p == '/') {
                continue;
            }
            bufAppend(h, (const char *)run, (size_t)(p - run));
            run = p + 1;
            esc[0] = '%';
            esc[1] = hex[*p >> 4];
            esc[2] = hex[*p & 0xf];
            bufAppend(h, esc, 3);
        }
        bufAppend(h, (const char *)run, (size_t)(p - run));
        bufLit(h, "\r\n");
    }
    if (body.failed || h->failed) {
        bufFree(&body);
        bufReset(h);
        exchangeProblemf(ex, 500, "internal", NULL, "out of memory");
        return;
    }
    exchangeSend(ex, replayed ? 200 : 201, "application/json", body.p,
                 body.len);
    bufFree(&body);
}

static void answerRenew(struct http_exchange *ex, const Tn__Response *r)
{
    const struct http_config *cfg = &ex->conn->srv->cfg;
    const Tn__LockInfo *l = responseLock(r);
    uint64_t token = l != NULL && l->token != 0 ? l->token : ex->token;
    json_t *o = json_object();

    if (o != NULL) {
        jsonSetStr(o, "resource", ex->resource);
        jsonSetU64(o, "token", token);
        if (l != NULL) {
            jsonSetU64(o, "generation", l->generation);
            jsonSetU64(o, "session", l->session);
            json_object_set_new(o, "ttl_ms", json_integer(l->ttl_ms));
            json_object_set_new(o, "valid_for_ms",
                                json_integer(validForMs(cfg, l->ttl_ms)));
        }
    }
    exchangeHeaderf(ex, "ETag", "\"%" PRIu64 "\"", token);
    if (l != NULL && l->replayed && ex->idem_key != NULL) {
        exchangeHeaderf(ex, "Idempotent-Replayed", "true");
    }
    exchangeJson(ex, 200, NULL, o);
}

static void answerGetLock(struct http_exchange *ex, const Tn__Response *r)
{
    const Tn__LockInfo *l = responseLock(r);
    Tn__LockInfo free_lock = TN__LOCK_INFO__INIT;
    json_t *o;

    if (r->status == TN__STATUS__NOT_FOUND || l == NULL) {
        /* A resource nobody ever locked is free. */
        free_lock.resource = ex->resource;
        l = &free_lock;
    }
    o = lockStateJson(l, wallMs());
    if (o != NULL) {
        /* The name as asked, even if the node echoes nothing. */
        jsonSetStr(o, "resource", ex->resource);
        jsonSetU64(o, "index", r->index);
    }
    if (l->n_holders > 0) {
        exchangeHeaderf(ex, "ETag", "\"%" PRIu64 "\"", l->holders[0]->token);
    }
    exchangeHeaderf(ex, "X-Tenure-Index", "%" PRIu64, r->index);
    exchangeJson(ex, 200, NULL, o);
}

static void answerFence(struct http_exchange *ex, const Tn__Response *r)
{
    const Tn__LockInfo *l = responseLock(r);
    size_t i;

    if (r->status == TN__STATUS__OK && l != NULL) {
        for (i = 0; i < l->n_holders; i++) {
            if (l->holders[i]->token == ex->token) {
                exchangeHeaderf(ex, "ETag", "\"%" PRIu64 "\"", ex->token);
                exchangeSend(ex, 204, NULL, NULL, 0);
                return;
            }
        }
        if (l->n_holders > 0) {
            answerConflict(ex, r, false);
            return;
        }
    }
    {
        json_t *p = problemNew(ex, 412, "token-stale",
                               "this token does not hold the lock any more; "
                               "reject the write");
        if (p != NULL) {
            jsonSetStr(p, "resource", ex->resource);
            jsonSetU64(p, "token", ex->token);
        }
        exchangeProblem(ex, 412, p);
    }
}

static void answerList(struct http_exchange *ex, const Tn__Response *r)
{
    const Tn__LockList *list =
        r->body_case == TN__RESPONSE__BODY_LIST ? r->list : NULL;
    uint64_t now = wallMs();
    json_t *o = json_object();
    json_t *a = json_array();
    size_t i;

    if (o == NULL || a == NULL) {
        json_decref(o);
        json_decref(a);
        exchangeJson(ex, 500, NULL, NULL);
        return;
    }
    for (i = 0; list != NULL && i < list->n_locks; i++) {
        json_array_append_new(a, lockStateJson(list->locks[i], now));
    }
    json_object_set_new(o, "locks", a);
    json_object_set_new(o, "count", json_integer((json_int_t)json_array_size(a)));
    jsonSetU64(o, "index", r->index);
    exchangeHeaderf(ex, "X-Tenure-Index", "%" PRIu64, r->index);
    exchangeJson(ex, 200, NULL, o);
}

static void answerCluster(struct http_exchange *ex, const Tn__Response *r)
{
    const Tn__ClusterInfo *ci =
        r->body_case == TN__RESPONSE__BODY_CLUSTER ? r->cluster : NULL;
    json_t *o;
    json_t *ms;
    size_t i;

    if (ci == NULL) {
        exchangeProblemf(ex, 500, "internal", NULL,
                         "the node answered without cluster information");
        return;
    }
    o = json_object();
    ms = json_array();
    if (o == NULL || ms == NULL) {
        json_decref(o);
        json_decref(ms);
        exchangeJson(ex, 500, NULL, NULL);
        return;
    }
    jsonSetU64(o, "node_id", ci->node_id);
    jsonSetStr(o, "state", ci->state);
    if (ci->leader_id != 0) {
        jsonSetU64(o, "leader_id", ci->leader_id);
        jsonSetStr(o, "leader_rpc", ci->leader_rpc);
        jsonSetStr(o, "leader_http", ci->leader_http);
    } else {
        json_object_set_new(o, "leader_id", json_null());
        json_object_set_new(o, "leader_rpc", json_null());
        json_object_set_new(o, "leader_http", json_null());
    }
    jsonSetU64(o, "term", ci->term);
    jsonSetU64(o, "commit_index", ci->commit_index);
    jsonSetU64(o, "applied_index", ci->applied_index);
    for (i = 0; i < ci->n_members; i++) {
        const Tn__Member *m = ci->members[i];
        json_t *mo = json_object();
        if (mo == NULL) {
            continue;
        }
        jsonSetU64(mo, "id", m->id);
        jsonSetStr(mo, "raft_address", m->raft_address);
        jsonSetStr(mo, "rpc_address", m->rpc_address);
        jsonSetStr(mo, "http_address", m->http_address);
        jsonSetStr(mo, "role", m->role);
        json_object_set_new(mo, "leader",
                            json_boolean(m->id == ci->leader_id &&
                                         ci->leader_id != 0));
        json_array_append_new(ms, mo);
    }
    json_object_set_new(o, "members", ms);
    exchangeJson(ex, 200, NULL, o);
}

static void answerSession(struct http_exchange *ex, const Tn__Response *r)
{
    const struct http_config *cfg = &ex->conn->srv->cfg;
    const Tn__SessionInfo *si =
        r->body_case == TN__RESPONSE__BODY_SESSION ? r->session : NULL;
    json_t *o;

    if (ex->op == OP_SESSION_CLOSE) {
        exchangeSend(ex, 204, NULL, NULL, 0);
        return;
    }
    o = json_object();
    if (o != NULL) {
        uint64_t sid = si != NULL ? si->session : ex->u.keepalive.session;
        jsonSetU64(o, "session", sid);
        if (si != NULL) {
            jsonSetU64(o, "epoch", si->epoch);
            json_object_set_new(o, "ttl_ms", json_integer(si->ttl_ms));
            json_object_set_new(o, "valid_for_ms",
                                json_integer(validForMs(cfg, si->ttl_ms)));
            if (si->holder != NULL && si->holder[0] != '\0') {
                jsonSetStr(o, "holder", si->holder);
            }
        }
    }
    if (ex->op == OP_SESSION_OPEN) {
        if (si == NULL || si->session == 0) {
            json_decref(o);
            exchangeProblemf(ex, 500, "internal", NULL,
                             "the node opened a session without an id");
            return;
        }
        exchangeHeaderf(ex, "Location", "/v1/sessions/%" PRIu64, si->session);
        exchangeJson(ex, 201, NULL, o);
        return;
    }
    exchangeJson(ex, 200, NULL, o);
}

static void exchangeAnswer(struct http_exchange *ex, const Tn__Response *r)
{
    if (r == NULL) {
        exchangeProblemf(ex, 500, "internal", NULL, "no response");
        return;
    }
    switch (ex->op) {
    case OP_GET_LOCK:
        if (r->status == TN__STATUS__OK ||
            r->status == TN__STATUS__NOT_FOUND) {
            answerGetLock(ex, r);
            return;
        }
        break;
    case OP_FENCE:
        if (r->status == TN__STATUS__OK ||
            r->status == TN__STATUS__NOT_FOUND) {
            answerFence(ex, r);
            return;
        }
        break;
    default:
        if (r->status != TN__STATUS__OK) {
            break;
        }
        switch (ex->op) {
        case OP_ACQUIRE:
            answerAcquire(ex, r);
            return;
        case OP_RENEW:
            answerRenew(ex, r);
            return;
        case OP_RELEASE:
            if (responseLock(r) != NULL && r->lock->replayed &&
                ex->idem_key != NULL) {
                exchangeHeaderf(ex, "Idempotent-Replayed", "true");
            }
            exchangeSend(ex, 204, NULL, NULL, 0);
            return;
        case OP_LIST:
            answerList(ex, r);
            return;
        case OP_CLUSTER:
            answerCluster(ex, r);
            return;
        case OP_SESSION_OPEN:
        case OP_SESSION_KEEPALIVE:
        case OP_SESSION_CLOSE:
            answerSession(ex, r);
            return;
        default:
            exchangeProblemf(ex, 500, "internal", NULL, "unexpected answer");
            return;
        }
    }
    answerFailure(ex, r);
}

static int opIndex(enum ex_op op)
{
    switch (op) {
    case OP_ACQUIRE: return HTTP_OP_ACQUIRE;
    case OP_RENEW: return HTTP_OP_RENEW;
    case OP_RELEASE: return HTTP_OP_RELEASE;
    case OP_GET_LOCK: return HTTP_OP_GET;
    case OP_LIST: return HTTP_OP_LIST;
    case OP_FENCE: return HTTP_OP_FENCE;
    case OP_CLUSTER: return HTTP_OP_CLUSTER;
    case OP_SESSION_OPEN: return HTTP_OP_SESSION_OPEN;
    case OP_SESSION_KEEPALIVE: return HTTP_OP_SESSION_KEEPALIVE;
    case OP_SESSION_CLOSE: return HTTP_OP_SESSION_CLOSE;
    default: return -1;
    }
}

static void statsRecord(struct http_server *s,
                        const struct http_exchange *ex,
                        const Tn__Response *r)
{
    int op = opIndex(ex->op);
    double secs = (double)(uv_hrtime() - ex->submitted_ns) / 1e9;
    int status = r != NULL ? (int)r->status : TN__STATUS__INTERNAL;
    int b;

    if (op < 0) {
        return;
    }
    if (status < 0 || status >= HTTP_STATUS_COUNT) {
        status = TN__STATUS__INTERNAL;
    }
    s->stats.outcomes[op][status]++;
    for (b = 0; b < HTTP_LATENCY_BUCKETS; b++) {
        if (secs <= httpLatencyBounds[b]) {
            break;
        }
    }
    s->stats.latency_buckets[op][b]++;
    s->stats.latency_sum[op] += secs;
    s->stats.latency_count[op]++;
}

static void exchangeDispatchCb(struct dispatch_req *dreq,
                               const Tn__Response *r)
{
    struct http_exchange *ex = dreq->data;
    struct http_conn *c = ex->conn;
    struct http_server *s = c->srv;

    c->n_dispatched--;
    s->stats.in_flight--;
    statsRecord(s, ex, r);
    if (c->closing) {
        exchangeFree(ex);
        connMaybeFree(c);
        return;
    }
    exchangeAnswer(ex, r);
    connRouteDeferred(c);
    connFlush(c);
    connTimerUpdate(c);
}

/* ----------------------------------------------------------- server */

static int parseAddress(const char *address, struct sockaddr_storage *out)
{
    const char *colon;
    char host[64];
    char *end;
    unsigned long port;
    size_t hlen;

    if (address == NULL) {
        return UV_EINVAL;
    }
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (close == NULL || close[1] != ':') {
            return UV_EINVAL;
        }
        hlen = (size_t)(close - address - 1);
        if (hlen == 0 || hlen >= sizeof host) {
            return UV_EINVAL;
        }
        memcpy(host, address + 1, hlen);
        host[hlen] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(address, ':');
        if (colon == NULL) {
            return UV_EINVAL;
        }
        hlen = (size_t)(colon - address);
        if (hlen == 0 || hlen >= sizeof host) {
            return UV_EINVAL;
        }
        memcpy(host, address, hlen);
        host[hlen] = '\0';
    }
    if (colon[1] == '\0') {
        return UV_EINVAL;
    }
    port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port > 65535) {
        return UV_EINVAL;
    }
    memset(out, 0, sizeof *out);
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0) {
        return 0;
    }
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0) {
        return 0;
    }
    return UV_EINVAL;
}

int httpServerInit(struct http_server *s,
                   uv_loop_t *loop,
                   const struct http_backend *backend,
                   const char *address,
                   const struct http_config *cfg)
{
    void *data = s->data;
    uint64_t seed[2] = { 0, 0 };
    int rv;

    memset(s, 0, sizeof *s);
    s->data = data;
    if (cfg != NULL) {
        s->cfg = *cfg;
    } else {
        httpConfigDefaults(&s->cfg);
    }
    if (backend == NULL || backend->submit == NULL ||
        backend->cancel == NULL) {
        snprintf(s->errmsg, sizeof s->errmsg,
                 "http: backend needs submit and cancel");
        return UV_EINVAL;
    }
    rv = parseAddress(address, &s->addr);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg,
                 "http: bad address '%s' (want IP:PORT or [IPv6]:PORT)",
                 address != NULL ? address : "(null)");
        return rv;
    }
    s->loop = loop;
    s->backend = *backend;
    tn_queue_init(&s->conns);
    if (uv_random(NULL, NULL, seed, sizeof seed, 0, NULL) != 0) {
        seed[0] = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)s;
        seed[1] = uv_hrtime();
    }
    s->id_prefix = (uint32_t)seed[0];
    s->rng = seed[1] != 0 ? seed[1] : 0x9e3779b97f4a7c15ULL;
    rv = uv_tcp_init(loop, &s->listener);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "uv_tcp_init(): %s",
                 uv_strerror(rv));
        return rv;
    }
    s->listener.data = s;
    s->listener_open = true;
    return 0;
}

int httpServerStart(struct http_server *s)
{
    char name[INET6_ADDRSTRLEN + 8] = "?";
    int rv;

    if (s->addr.ss_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)&s->addr, name, sizeof name);
    } else {
        uv_ip4_name((const struct sockaddr_in *)&s->addr, name, sizeof name);
    }
    rv = uv_tcp_bind(&s->listener, (const struct sockaddr *)&s->addr, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&s->listener, 511, serverConnectionCb);
    }
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "http: listen on %s port %d: %s",
                 name,
                 ntohs(s->addr.ss_family == AF_INET6
                           ? ((struct sockaddr_in6 *)&s->addr)->sin6_port
                           : ((struct sockaddr_in *)&s->addr)->sin_port),
                 uv_strerror(rv));
        return rv;
    }
    return 0;
}

int httpServerPort(const struct http_server *s)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;

    if (!s->listener_open ||
        uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) != 0) {
        return -1;
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    if (ss.ss_family == AF_INET) {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return -1;
}

const char *httpServerErrmsg(const struct http_server *s)
{
    return s->errmsg;
}

void httpServerStats(const struct http_server *s, struct http_stats *out)
{
    *out = s->stats;
    out->connections_open = s->n_conns;
}

static void serverListenerCloseCb(uv_handle_t *h)
{
    struct http_server *s = h->data;
    s->listener_closed = true;
    serverMaybeClosed(s);
}

void httpServerClose(struct http_server *s, http_close_cb cb)
{
    tn_queue *q;

    s->closing = true;
    s->close_cb = cb;
    if (s->listener_open) {
        s->listener_open = false;
        uv_close((uv_handle_t *)&s->listener, serverListenerCloseCb);
    } else {
        s->listener_closed = true;
    }
    TN_QUEUE_FOREACH(q, &s->conns)
    {
        struct http_conn *c = TN_QUEUE_DATA(q, struct http_conn, link);
        connClose(c);
    }
}
