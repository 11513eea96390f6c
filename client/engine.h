/* The request engine: runs on one libuv loop and carries requests to the
 * cluster.
 *
 * It keeps one TCP connection, to the leader when it knows it, and sends
 * every submitted request on it, many in flight at once (replies are matched
 * by request id and may come in any order). It hides from its users:
 *
 *   - leader discovery: NOT_LEADER answers name the leader; the engine
 *     reconnects there and resends. Without a name it tries the next
 *     endpoint after a short backoff;
 *   - reconnects: a failed or closed connection moves its in-flight requests
 *     back to the waiting list; they are resent on the next connection;
 *   - retries: NO_QUORUM, COMMIT_UNKNOWN, RATE_LIMITED and server TIMEOUT
 *     answers are retried after a jittered backoff;
 *   - exactly-once: a mutating request gets its (client_id, seq) when it is
 *     first sent and keeps it through every resend. The cluster remembers
 *     the replies of a client's ENGINE_SEQ_WINDOW highest sequence numbers
 *     only, so a new number is handed out only while it is less than
 *     ENGINE_SEQ_WINDOW above the lowest one still outstanding (ops that
 *     may wait long on the server, like queued acquires, do not hold the
 *     window back; if a retry of one of them is refused as too old, it is
 *     sent again under a new number: the operations are idempotent per
 *     session and token);
 *   - deadlines: every op completes by its deadline at the latest.
 *
 * Happy path of an op: engineSubmit -> WAITING -> (connected) SENT -> reply
 * with a final status -> cb(op, status, response).
 * Failure modes: deadline passes (cb with TN_TIMEOUT, or TN_UNAVAILABLE if no
 * node was ever reached, or TN_NO_QUORUM if the last answers were "no leader"
 * / "no quorum"); engineClose (cb with TN_CANCELED); out of memory encoding
 * (TN_NOMEM); request too large (TN_INVALID_ARGUMENT).
 *
 * Streams (op->stream, a Watch request): every Response with `more` set
 * goes to event_cb and the op stays on the wire; only a final answer
 * completes it. A stream has no deadline (deadline_ns UINT64_MAX), is
 * resent after a reconnect or a redirect (event_cb keeps the request's
 * resume index current), treats a server's CANCELED (node shutting down)
 * as retryable, and ends only with a final error or engineCancel(). Nodes
 * send progress events to quiet streams, so a connection with a stream on
 * it that stays silent for ENGINE_STREAM_SILENCE progress intervals is
 * hung: it is dropped and the stream resumes on the next one.
 *
 * Threading: every function must be called on the loop thread, and every
 * callback fires there. The callback of an op never fires from inside
 * engineSubmit. */
#ifndef TN_CLIENT_ENGINE_H_
#define TN_CLIENT_ENGINE_H_

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "endpoint.h"
#include "list.h"
#include "tenure.pb-c.h"

#define ENGINE_ERRMSG_SIZE 256

/* Progress intervals of silence after which a stream's connection is hung. */
#define ENGINE_STREAM_SILENCE 3

/* Replies remembered per client by the cluster (fsm client_window). */
#define ENGINE_SEQ_WINDOW 64

struct engine;
struct engine_op;

/* @rc is the final status: the wire Status of @response (which is then not
 * NULL and valid only during the call), or a library code (TN_TIMEOUT,
 * TN_UNAVAILABLE, TN_CANCELED, ...) with @response NULL. */
typedef void (*engine_op_cb)(struct engine_op *op,
                             int rc,
                             const Tn__Response *response);

/* A stream's event (@response valid only during the call). */
typedef void (*engine_event_cb)(struct engine_op *op,
                                const Tn__Response *response);

struct engine_op
{
    void *data;           /* user data */
    Tn__Request *request; /* borrowed until cb; body set by the user. The
                             engine sets id, client_id and seq. */
    bool mutating;        /* needs (client_id, seq) */
    bool may_wait;        /* the server may hold it long (queued acquire) */
    uint64_t deadline_ns; /* absolute, leaseNow() clock */
    engine_op_cb cb;
    bool stream;             /* a streamed watch */
    engine_event_cb event_cb; /* stream events */

    /* Set by the engine, readable in cb. */
    uint64_t first_sent_ns;          /* 0: never written to a socket */
    uint64_t sent_ns;                /* latest write to a socket */
    char errmsg[ENGINE_ERRMSG_SIZE]; /* why it failed ("" if it did not) */

    /* private */
    struct list link;
    int state;
    int fail_rc;      /* FAILED: the code to complete with */
    uint64_t id;      /* request id of the latest send */
    size_t frame_len; /* encoded size of the latest send */
    uint64_t seq;
    unsigned attempts;
    int last_status;      /* last retryable answer, or 0 */
    bool reached;         /* some node answered it at least once */
    uint64_t retry_at_ns; /* DELAYED: when to move back to WAITING */
};

struct engine_config
{
    /* Also the silence after which a connection with requests in flight
     * (other than long waits) and no answer at all is taken for hung: a
     * SIGSTOPped or wedged node still completes TCP handshakes. */
    uint32_t connect_timeout_ms;
    uint32_t max_frame;
    /* The nodes' stream progress interval: a connection carrying a stream
     * that has received nothing for ENGINE_STREAM_SILENCE times this is
     * taken for hung like above. 0: streams may stay silent forever. */
    uint32_t watch_progress_ms;
};

struct conn;

struct engine
{
    uv_loop_t *loop;
    struct engine_config config;
    struct endpoint *endpoints; /* owned */
    size_t n_endpoints;
    size_t next_endpoint;   /* round-robin cursor */
    struct endpoint leader; /* hint from NOT_LEADER / ClusterInfo */
    bool has_leader;
    struct endpoint bad_leader;   /* a hinted leader we could not reach,
                                     or a node found hung */
    uint64_t bad_leader_until_ns; /* ignore hints naming it, and skip it
                                     in the round-robin, until then */
    struct conn *conn;            /* current connection, or NULL */
    uint64_t client_id;
    uint64_t next_seq;
    uint64_t next_id;
    struct list waiting;        /* ops to send when connected */
    struct list sent;           /* ops on the wire */
    struct list delayed;        /* ops backing off before a retry */
    struct list failed;         /* ops to complete from the kick timer */
    uv_timer_t deadline_timer;  /* fires at the earliest deadline */
    uv_timer_t retry_timer;     /* delayed ops and reconnect backoff */
    uv_timer_t kick_timer;      /* deferred completions */
    uv_timer_t watch_timer;     /* hung-connection detection */
    uint64_t deadline_armed_ns; /* when deadline_timer fires; 0: idle */
    uint64_t reconnect_at_ns;   /* no new connection before this */
    unsigned failures;          /* connection attempts failed in a row */
    uint64_t rand_state;        /* jitter */
    char last_error[ENGINE_ERRMSG_SIZE]; /* last connection error */
    bool closing;
    int open_handles;
    void (*close_cb)(struct engine *e);
    void *data;
};

/* Initialise @e on @loop. Takes ownership of @endpoints (an array of @n
 * from endpointParseList). @client_id must be non-zero. Returns 0 or a
 * TN_* error (then @endpoints is still the caller's). */
int engineInit(struct engine *e,
               uv_loop_t *loop,
               const struct engine_config *config,
               struct endpoint *endpoints,
               size_t n,
               uint64_t client_id);

/* Submit @op. Its callback fires exactly once, later (never from inside
 * this call). Must not be called once engineClose() has been. */
void engineSubmit(struct engine *e, struct engine_op *op);

/* Cancel @op if it has not completed: its cb fires later with TN_CANCELED.
 * A stream on the wire is also cancelled on the server (WatchCancel). */
void engineCancel(struct engine *e, struct engine_op *op);

/* Complete every op with TN_CANCELED, close the connection and the timers,
 * then call @cb (from the loop). */
void engineClose(struct engine *e, void (*cb)(struct engine *e));

/* A hint that @rpc ("host:port") is the leader (e.g. from ClusterInfo). */
void engineLeaderHint(struct engine *e, const char *rpc);

/* The label of the endpoint the current connection goes to, or NULL. */
const char *engineCurrentEndpoint(const struct engine *e);

/* A uniformly random number in [0, n) (n > 0) from the engine's generator
 * (not for cryptography). */
uint64_t engineRandom(struct engine *e, uint64_t n);

#endif /* TN_CLIENT_ENGINE_H_ */
