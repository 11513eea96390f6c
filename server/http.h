/* The HTTP shim: a second front end onto the one dispatch (DESIGN §6).
 *
 * Each daemon serves HTTP/1.1 on its own port. A request is parsed with
 * http_parser, its JSON body with jansson, turned into a Tn__Request and
 * submitted to the dispatch through a small backend vtable (so that unit
 * tests can plug in a fake dispatch). The Tn__Response is mapped onto a
 * status code, headers (ETag, Location, Retry-After, ...) and a JSON body;
 * errors are RFC 9457 problem documents. docs/http.md is the reference of
 * every endpoint, status and problem type.
 *
 * Connections are keep-alive; pipelined requests are answered in the order
 * they arrived even when the dispatch completes them out of order. Safe
 * requests (GET, HEAD, OPTIONS) on one connection run concurrently; a PUT,
 * POST or DELETE runs alone, after everything before it was answered
 * (RFC 9112 §9.3.2).
 *
 * Threading: everything runs on the loop thread passed to httpServerInit. */
#ifndef TN_HTTP_H_
#define TN_HTTP_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <uv.h>

#include "dispatch.h"
#include "lib/queue.h"

/* How the shim reaches the dispatch. The daemon fills this from dispatch.c
 * with httpBackendFromDispatch() below; tests fill it with a fake.
 *
 * submit: same contract as dispatchSubmit(): 0 means req->cb fires exactly
 *   once, later, never from inside submit; non-zero means it never fires.
 * cancel: same contract as dispatchCancel().
 * health: same contract as dispatchHealth() (synchronous, cheap).
 * metrics: optional (NULL). Called synchronously while GET /metrics is
 *   answered; appends the node's own metrics (sessions, locks held,
 *   expiries, leader changes...) in the Prometheus text format (HELP and
 *   TYPE lines included, names prefixed tenure_, each ending with a newline)
 *   by calling @emit as often as it likes.
 * contention: optional (NULL: GET /v1/stats/contention answers 404).
 *   Synchronous: fill at most @max entries of @out with the most contended
 *   resources, most contended first, and return how many. Strings must stay
 *   valid until the next call into the backend. */
typedef void (*http_emit_fn)(void *ctx, const char *text, size_t len);

struct http_contention
{
    const char *resource;
    uint64_t conflicts;   /* acquires answered HELD / LOCK_DELAY */
    uint64_t acquires;    /* all acquires seen */
    uint32_t waiters;     /* queued right now */
    uint32_t wait_p50_ms; /* time from request to grant */
    uint32_t wait_p99_ms;
    uint32_t hold_p50_ms; /* time from grant to release / expiry */
    uint32_t hold_p99_ms;
};

struct http_backend
{
    void *data;
    int (*submit)(void *data, struct dispatch_req *req);
    void (*cancel)(void *data, struct dispatch_req *req);
    void (*health)(void *data, struct dispatch_health *out);
    void (*metrics)(void *data, http_emit_fn emit, void *ctx);
    size_t (*contention)(void *data, struct http_contention *out, size_t max);
};

/* Log hook: one complete key=value line per event, without a newline, e.g.
 * `event=conflict resource="orders/42" requester="b" holder="a" ...`.
 * @level follows enum tn_log_level of lib/log.h (0 debug .. 3 error). */
typedef void (*http_log_fn)(void *data, int level, const char *line);

/* Tunables. httpConfigDefaults() fills every field; change what you need. */
struct http_config
{
    size_t max_header_bytes;     /* request line + headers: 8192 (431/414) */
    size_t max_body_bytes;       /* request body: 65536 (413) */
    unsigned max_connections;    /* accepted beyond this are closed: 4096 */
    unsigned max_pipeline;       /* requests in progress per connection
                                    before it stops reading: 32 */
    uint32_t idle_timeout_ms;    /* keep-alive connection idle: 60000 */
    uint32_t request_timeout_ms; /* to receive one whole request: 30000 */
    uint32_t linger_ms;          /* after an error reply, drain input: 2000 */
    uint32_t default_ttl_ms;     /* acquire without session nor ttl_ms: 15000 */
    uint32_t max_holder_bytes;   /* holder name length (400): 256 */
    uint32_t max_idempotency_key_bytes; /* 255 */
    uint32_t validity_margin_ms; /* ε of DESIGN §4.5 for valid_for_ms: 100 */
    uint32_t drift_permille;     /* ρ of DESIGN §4.5, in 1/1000: 10 */
    uint32_t list_limit;         /* GET /v1/locks default limit; 0: server */
    http_log_fn log;             /* NULL: silent */
    void *log_data;
};

void httpConfigDefaults(struct http_config *c);

/* Operations the shim submits, for per-operation counters. */
enum http_op {
    HTTP_OP_ACQUIRE,
    HTTP_OP_RENEW,
    HTTP_OP_RELEASE,
    HTTP_OP_GET,
    HTTP_OP_LIST,
    HTTP_OP_FENCE,
    HTTP_OP_CLUSTER,
    HTTP_OP_SESSION_OPEN,
    HTTP_OP_SESSION_KEEPALIVE,
    HTTP_OP_SESSION_CLOSE,
    HTTP_OP_COUNT
};

#define HTTP_STATUS_COUNT 16 /* Tn__Status values 0..15 */
#define HTTP_LATENCY_BUCKETS 16

/* Upper bounds (seconds) of the latency histogram buckets, then +Inf. */
extern const double httpLatencyBounds[HTTP_LATENCY_BUCKETS];

/* Counters for /metrics. Read with httpServerStats(). */
struct http_stats
{
    uint64_t connections_accepted;
    uint64_t connections_rejected; /* over max_connections */
    uint64_t connections_open;
    uint64_t requests;             /* complete requests parsed */
    uint64_t in_flight;            /* submitted to the backend, not answered */
    uint64_t responses[6];         /* by class: [1]=1xx .. [5]=5xx */
    uint64_t codes[600];           /* by status code */
    uint64_t conflicts;            /* 409 lock-held / lock-delay */
    uint64_t lock_delay_hits;      /* 409 lock-delay */
    uint64_t parse_errors;         /* malformed HTTP, 408, 413, 414, 431 */
    /* dispatch answers by operation and Tn__Status */
    uint64_t outcomes[HTTP_OP_COUNT][HTTP_STATUS_COUNT];
    /* submit → answer, per operation: per-bucket (not cumulative) counts (the
     * last one is +Inf), sum in seconds, count */
    uint64_t latency_buckets[HTTP_OP_COUNT][HTTP_LATENCY_BUCKETS + 1];
    double latency_sum[HTTP_OP_COUNT];
    uint64_t latency_count[HTTP_OP_COUNT];
};

struct http_server;
typedef void (*http_close_cb)(struct http_server *s);

/* Allocated by the caller; fields below "private" are not to be touched. */
struct http_server
{
    void *data; /* user data */
    /* private */
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct http_backend backend;
    struct http_config cfg;
    struct sockaddr_storage addr;
    tn_queue conns;       /* struct http_conn, open or closing */
    unsigned n_conns;     /* connections not yet freed */
    bool listener_open;   /* uv_close() not called on listener yet */
    bool listener_closed; /* listener close callback ran */
    bool closing;
    http_close_cb close_cb;
    uint64_t next_id;     /* request ids and Tn__Request.id */
    uint32_t id_prefix;   /* random, per server: makes request ids unique */
    uint64_t rng;         /* xorshift state for Retry-After jitter */
    struct http_stats stats;
    int64_t date_sec;     /* the second date_text names */
    char date_text[32];   /* IMF-fixdate for the Date header */
    char errmsg[256];
};

/* Prepare @s to serve on @address ("127.0.0.1:7201", "[::1]:7201"; literal
 * IP addresses only, port 0 picks a free port). @backend and @cfg are
 * copied; @cfg may be NULL for the defaults. Nothing is bound yet.
 *
 * Returns 0, or a negative libuv error code (UV_EINVAL for a bad address)
 * with httpServerErrmsg() saying why; on error there is nothing to close.
 * After success, httpServerClose() must be called eventually. */
int httpServerInit(struct http_server *s,
                   uv_loop_t *loop,
                   const struct http_backend *backend,
                   const char *address,
                   const struct http_config *cfg);

/* Bind and listen. Returns 0 or a negative libuv error code (e.g.
 * UV_EADDRINUSE) with httpServerErrmsg() set; call httpServerClose() either
 * way. */
int httpServerStart(struct http_server *s);

/* The port actually bound (useful with port 0), or -1 if not listening. */
int httpServerPort(const struct http_server *s);

const char *httpServerErrmsg(const struct http_server *s);

void httpServerStats(const struct http_server *s, struct http_stats *out);

/* Stop accepting, close every connection (pending backend requests are
 * canceled through backend.cancel and their callbacks awaited), then call
 * @cb (may be NULL) once every handle is closed and all memory is freed.
 * @cb always fires from a later loop iteration. */
void httpServerClose(struct http_server *s, http_close_cb cb);

/* ------------------------------------------------------------------
 * Pure helpers, exposed for tests and for the RPC front end.
 * ------------------------------------------------------------------ */

/* Why a resource id was rejected (NULL if it is valid): a resource id is
 * 1..512 bytes of well-formed UTF-8 with no control characters (C0, DEL,
 * C1). @len excludes any terminator; embedded NULs are control chars. */
const char *httpResourceInvalid(const char *id, size_t len);

/* Percent-decode @in[0..len) into @out (room for len + 1 bytes; the result
 * is NUL-terminated; '+' stays '+'). Returns the decoded length, or -1 on a
 * malformed escape. */
long httpPercentDecode(const char *in, size_t len, char *out);

/* Parse an If-Match value naming one fencing token: `"123"` (or bare
 * `123`). Returns 0 and sets *token (non-zero), or -1 with *why set. */
int httpParseTokenTag(const char *value, uint64_t *token, const char **why);

/* The exactly-once client id the shim uses for an Idempotency-Key: a
 * non-zero 64-bit hash of the key, the operation and the resource (so one
 * key reused for another operation never replays the wrong answer). */
uint64_t httpIdempotencyClientId(const char *key,
                                 const char *op,
                                 const char *resource);

/* ------------------------------------------------------------------
 * The daemon's backend: the real dispatch. Static inline so that code
 * which never calls it (unit tests with a fake) does not need dispatch.c.
 * ------------------------------------------------------------------ */

static inline int httpDispatchSubmit_(void *data, struct dispatch_req *req)
{
    return dispatchSubmit((struct dispatch *)data, req);
}

static inline void httpDispatchCancel_(void *data, struct dispatch_req *req)
{
    dispatchCancel((struct dispatch *)data, req);
}

static inline void httpDispatchHealth_(void *data,
                                       struct dispatch_health *out)
{
    dispatchHealth((struct dispatch *)data, out);
}

static inline void httpBackendFromDispatch(struct http_backend *b,
                                           struct dispatch *d)
{
    memset(b, 0, sizeof *b); /* metrics (and future hooks) stay NULL */
    b->data = d;
    b->submit = httpDispatchSubmit_;
    b->cancel = httpDispatchCancel_;
    b->health = httpDispatchHealth_;
}

#endif /* TN_HTTP_H_ */
