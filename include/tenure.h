/* libtenure: the client library of the tenure distributed lock service.
 *
 * This is the one public header. It declares a blocking API for ordinary
 * programs:
 *
 *   tn_client   a connection to a tenure cluster (a list of endpoints). It
 *               finds the leader, reconnects, follows NOT_LEADER redirects
 *               and retries requests with the same (client id, sequence
 *               number), so every mutation is applied exactly once.
 *   tn_session  a client's liveness on the cluster, with a TTL. The library
 *               keeps it alive in the background (about every TTL/3, with
 *               jitter) and tracks a conservative local deadline.
 *   tn_lock     a lock held by a session on one resource, with the fencing
 *               token the protected resource must check.
 *
 * Example (error handling shortened):
 *
 *     tn_client *c;
 *     tn_session *s;
 *     tn_lock *l;
 *     tn_client_open("10.0.0.1:7101,10.0.0.2:7101,10.0.0.3:7101", NULL, &c);
 *     tn_session_open(c, "billing-worker-7", 10000, NULL, &s);
 *     if (tn_lock_acquire(s, "orders/42", NULL, &l) == TN_OK) {
 *         while (work_left() && tn_lock_valid(l)) {
 *             write_to_store(tn_lock_token(l), ...); // store checks token
 *         }
 *         tn_lock_release(l);
 *         tn_lock_free(l);
 *     }
 *     tn_session_close(s);
 *     tn_client_close(c);
 *
 * Conventions
 *
 * - Functions return int: TN_OK (0) on success, otherwise a positive TN_*
 *   code (see TN_ERRNO_MAP). tn_strerror() names a code;
 *   tn_client_errmsg() holds a longer message about the last failure.
 * - Thread safety: every handle may be used from several threads at once,
 *   except that a handle must not be used after (or concurrently with) the
 *   call that frees it (tn_client_close, tn_session_close,
 *   tn_session_abandon, tn_lock_free).
 * - Strings passed in are copied (or only read during the call); strings
 *   returned by accessors are owned by the handle and live as long as it.
 * - Every network call has a deadline (struct tn_client_opts); a call never
 *   blocks longer than its deadline plus a few milliseconds.
 * - The library has no global state, starts no thread before
 *   tn_client_open(), never prints, and never calls exit() or abort() on
 *   errors from the network or from the caller's input.
 * - Time: local deadlines are measured on CLOCK_MONOTONIC. Times reported by
 *   the cluster (acquired_at_ms, lock_delay_until_ms) are cluster time:
 *   milliseconds since the Unix epoch, stamped by the leader.
 */
#ifndef TENURE_H_
#define TENURE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef TN_API
#ifdef TN_BUILDING_LIBRARY
#define TN_API __attribute__((visibility("default")))
#else
#define TN_API
#endif
#endif

/* ------------------------------------------------------------- version */

#define TN_VERSION_MAJOR 0
#define TN_VERSION_MINOR 1
#define TN_VERSION_PATCH 0
#define TN_VERSION_NUMBER \
    (TN_VERSION_MAJOR * 10000 + TN_VERSION_MINOR * 100 + TN_VERSION_PATCH)

/* The version of the library actually loaded, as TN_VERSION_NUMBER would
 * compute it. Compare with TN_VERSION_NUMBER to detect a header/library
 * mismatch. */
TN_API int tn_version_number(void);

/* The same as a "MAJOR.MINOR.PATCH" string (static storage). */
TN_API const char *tn_version_string(void);

/* -------------------------------------------------------------- errors */

/* X(NAME, value, description). Codes 0..99 are the wire Status values of
 * proto/tenure.proto (the RPC, the library and the HTTP shim share them);
 * codes from 100 up are produced by the library only. */
#define TN_ERRNO_MAP(X)                                                 \
    X(OK, 0, "success")                                                 \
    X(HELD, 1, "lock held by someone else (or the wait ran out)")       \
    X(LOCK_DELAY, 2, "lock is in its lock-delay after an expiry")       \
    X(TOKEN_MISMATCH, 3, "token is stale: a newer holder has the lock") \
    X(LEASE_EXPIRED, 4, "lease expired before this request")            \
    X(SESSION_EXPIRED, 5, "session expired, closed or unknown")         \
    X(NOT_LEADER, 6, "node is not the leader")                          \
    X(NO_QUORUM, 7, "no leader or no quorum")                           \
    X(COMMIT_UNKNOWN, 8, "outcome of the request unknown")              \
    X(INVALID_ARGUMENT, 9, "invalid argument")                          \
    X(RATE_LIMITED, 10, "rate limited")                                 \
    X(TIMEOUT, 11, "deadline exceeded")                                 \
    X(CANCELED, 12, "canceled")                                         \
    X(NO_SPACE, 13, "cluster refuses writes: disk space low")           \
    X(NOT_FOUND, 14, "not found")                                       \
    X(INTERNAL, 15, "internal error")                                   \
    X(REFUSED, 16, "refused now (membership change or quorum at risk)") \
    X(NOMEM, 100, "out of memory")                                      \
    X(UNAVAILABLE, 101, "no endpoint reachable")                        \
    X(PROTOCOL, 102, "malformed or unexpected reply")                   \
    X(USAGE, 103, "invalid use of the API")                             \
    X(CLOSED, 104, "handle is closed")                                  \
    X(SYSTEM, 105, "system error")

enum {
#define TN__ERRNO_ENUM(NAME, VALUE, TEXT) TN_##NAME = VALUE,
    TN_ERRNO_MAP(TN__ERRNO_ENUM)
#undef TN__ERRNO_ENUM
};

/* Static description of @rc; "unknown error" for codes not in the map. */
TN_API const char *tn_strerror(int rc);

/* Static upper-case name of @rc without the TN_ prefix ("HELD"), or
 * "UNKNOWN". Handy for logs and JSON output. */
TN_API const char *tn_errname(int rc);

/* Size of the per-client error message buffer, NUL included. */
#define TN_ERRMSG_BUF_SIZE 256

/* ------------------------------------------------------------- handles */

typedef struct tn_client tn_client;
typedef struct tn_session tn_session;
typedef struct tn_lock tn_lock;

/* -------------------------------------------------------------- client */

/* Options of tn_client_open(). Zero-initialise the struct (or pass NULL):
 * every zero field means "the default". */
struct tn_client_opts
{
    /* Deadline of one call that talks to the cluster, retries and redirects
     * included, in milliseconds. Default 5000. An acquire with wait_ms adds
     * its wait to this. */
    uint32_t timeout_ms;

    /* Deadline of one TCP connection attempt, and the silence after which
     * a connection with requests unanswered (queued acquires and watches
     * excepted) is taken for hung and replaced: a frozen node still
     * accepts connections. Default 1000. */
    uint32_t connect_timeout_ms;

    /* Lease safety margins (DESIGN §4 rule 5). A lease granted or renewed
     * by a request sent at t_send with TTL ttl is considered safe until
     *     t_send + ttl * (1 - drift_ppm / 1e6) - margin_ms
     * on CLOCK_MONOTONIC. drift_ppm (rho) bounds how much faster the
     * cluster's clocks may run than ours; margin_ms (epsilon) covers the
     * time between checking tn_lock_valid() and the protected write landing.
     * Defaults: drift_ppm 10000 (1 %), margin_ms 50. A value of
     * TN_OPT_ZERO requests an explicit zero. */
    uint32_t drift_ppm;
    uint32_t margin_ms;

    /* Largest frame accepted from the cluster (and sent to it), bytes.
     * Default 64 MiB: replies like snapshots can exceed the daemon's own
     * request limit (--max-frame, 1 MiB by default). */
    uint32_t max_frame;

    /* The progress interval of the cluster's nodes (tenured
     * --watch-progress-ms): a node sends every streamed watch an event at
     * least this often, the current state again when nothing changed. A
     * watch whose connection has received nothing for 3 times this long is
     * taken for cut off from a dead or frozen node: the connection is
     * replaced and the watch resumes elsewhere from its last index. Default
     * TN_WATCH_PROGRESS_MS; TN_OPT_ZERO turns the check off (for nodes
     * older than progress events, which would otherwise be left every
     * 15 s of quiet and rejoined). */
    uint32_t watch_progress_ms;

    uint64_t reserved[8]; /* must be zero */
};

/* Use in a tn_*_opts field to mean an explicit 0 where 0 means default. */
#define TN_OPT_ZERO UINT32_MAX

/* Default progress interval of streamed watches, in milliseconds (see
 * tn_client_opts.watch_progress_ms and docs/protocol.md). */
#define TN_WATCH_PROGRESS_MS 5000

/* Open a client on @endpoints, a comma-separated list of "host:port"
 * (IPv6 as "[addr]:port"; spaces around entries are ignored), e.g.
 * "127.0.0.1:7101,127.0.0.1:7102". @opts may be NULL; it is copied.
 *
 * Starts one I/O thread. Does not connect yet: the first call that needs
 * the cluster does, so this succeeds even if no endpoint is up.
 *
 * On success stores a new handle in *@out and returns TN_OK. Errors:
 * TN_INVALID_ARGUMENT (bad endpoint list or options), TN_NOMEM, TN_SYSTEM
 * (could not start the thread); *@out is untouched on error. Use
 * tn_client_open2() to also get a message saying what was wrong. */
TN_API int tn_client_open(const char *endpoints,
                          const struct tn_client_opts *opts,
                          tn_client **out);

/* Like tn_client_open(), and on failure writes a message to @errmsg (at
 * most TN_ERRMSG_BUF_SIZE bytes, NUL-terminated) if it is not NULL. */
TN_API int tn_client_open2(const char *endpoints,
                           const struct tn_client_opts *opts,
                           tn_client **out,
                           char *errmsg);

/* Close the client and free it.
 *
 * Calls still in flight on other threads return TN_CANCELED. Sessions whose
 * handles are still open are abandoned (see tn_session_abandon()): their
 * keepalives stop and the cluster expires them, and their locks, after
 * their TTL. Session and lock handles that are still open stay valid as
 * memory: every call on them then returns TN_CLOSED (accessors keep
 * working, tn_lock_valid() returns false); they must still be freed with
 * tn_session_close()/tn_lock_free(). No callback fires after this returns.
 * Must not be called from a session callback of the same client. */
TN_API void tn_client_close(tn_client *c);

/* The message about the most recent failure of a call on @c, from any
 * thread ("" if none). The buffer lives as long as @c. When several
 * threads share @c, another thread's failure may overwrite the message at
 * any time: read it with tn_client_errmsg_copy() instead. */
TN_API const char *tn_client_errmsg(tn_client *c);

/* Copy the message of tn_client_errmsg() into @buf (@len bytes,
 * NUL-terminated, truncated if needed). Safe with concurrent failures. */
TN_API void tn_client_errmsg_copy(tn_client *c, char *buf, size_t len);

/* The client id used for exactly-once requests (random, non-zero). */
TN_API uint64_t tn_client_id(tn_client *c);

/* ------------------------------------------------------------- session */

/* Callbacks of a session. They fire on a thread of the library that
 * delivers the callbacks of one client one at a time, in order, never
 * concurrently and never from inside the call that caused them. A callback
 * may call any tn_* function (including blocking ones and
 * tn_session_close() of its own session) except tn_client_close() of its
 * own client. It should return soon: later callbacks wait for it. */
struct tn_session_opts
{
    void *data; /* passed to every callback */

    /* The safe deadline passed without a successful renewal: the session
     * may already have expired on the cluster. Every holder of a lock of
     * this session must stop writing to what the lock protects. Fires at
     * most once per loss of safety. */
    void (*on_jeopardy)(tn_session *s, void *data);

    /* A renewal succeeded after on_jeopardy: the locks are safe again
     * (tn_lock_valid() is true) until the new deadline. */
    void (*on_safe)(tn_session *s, void *data);

    /* The cluster said the session is gone (@rc is TN_SESSION_EXPIRED), so
     * all its locks are gone too. Final: the session is dead, keepalives
     * stop, no other callback of it fires afterwards. Does not fire for
     * tn_session_close() or tn_session_abandon(). */
    void (*on_lost)(tn_session *s, int rc, void *data);

    /* Keepalive interval, ms. Default: a third of the granted TTL, with
     * jitter (each interval is drawn from [0.75, 1] x the interval). */
    uint32_t keepalive_ms;

    uint64_t reserved[8]; /* must be zero */
};

/* Open a session named @holder (free text shown to other clients, e.g.
 * "billing-worker-7"; NULL means "<hostname>:<pid>"), asking for a TTL of
 * @ttl_ms (the cluster clamps it to its range: read the granted one with
 * tn_session_ttl_ms()). @opts may be NULL; it is copied.
 *
 * The library renews the session in the background until
 * tn_session_close(), tn_session_abandon(), tn_client_close(), or until the
 * cluster says it is gone.
 *
 * Returns TN_OK and stores the handle in *@out, or an error:
 * TN_INVALID_ARGUMENT, TN_TIMEOUT, TN_UNAVAILABLE (no endpoint reachable),
 * TN_NO_QUORUM, TN_CLOSED, TN_NOMEM, ... A TN_TIMEOUT may leave an unused
 * session on the cluster; it expires after its TTL. */
TN_API int tn_session_open(tn_client *c,
                           const char *holder,
                           uint32_t ttl_ms,
                           const struct tn_session_opts *opts,
                           tn_session **out);

/* Close the session on the cluster (which releases every lock it holds and
 * drops its queued acquires), stop its keepalives and free the handle. No
 * callback of @s fires once this returns (when called from a callback, the
 * callbacks after the current one). Lock handles of the session stay valid
 * as memory and must still be freed with tn_lock_free().
 *
 * Returns TN_OK, or the error of the close request (the handle is freed in
 * every case; the cluster expires the session after its TTL if the close
 * did not reach it). TN_SESSION_EXPIRED if it had already expired. */
TN_API int tn_session_close(tn_session *s);

/* Stop the keepalives and free the handle without telling the cluster: the
 * session and its locks stay until the TTL runs out (what a crash would
 * do). tenurectl's one-shot acquire uses this. Lock handles stay valid as
 * memory and must still be freed. */
TN_API void tn_session_abandon(tn_session *s);

/* The session id given by the cluster. */
TN_API uint64_t tn_session_id(const tn_session *s);

/* The session epoch (bumped by the cluster on every logged renewal). */
TN_API uint64_t tn_session_epoch(const tn_session *s);

/* The TTL granted by the cluster, ms. */
TN_API uint32_t tn_session_ttl_ms(const tn_session *s);

/* The holder name (owned by @s). */
TN_API const char *tn_session_holder(const tn_session *s);

/* The client of @s. */
TN_API tn_client *tn_session_client(const tn_session *s);

/* Milliseconds until the session's safe deadline (t_send + ttl x (1 - rho)
 * - epsilon of its latest successful renewal), or 0 if that passed, the
 * session is lost, closed or its client closed. */
TN_API int64_t tn_session_valid_for_ms(const tn_session *s);

/* tn_session_valid_for_ms(s) > 0. */
TN_API bool tn_session_valid(const tn_session *s);

/* ---------------------------------------------------------------- locks */

enum tn_lock_mode {
    TN_MODE_EXCLUSIVE = 0, /* one holder */
    TN_MODE_SHARED = 1,    /* many readers; writers are preferred */
    TN_MODE_SEMAPHORE = 2  /* up to `permits` holders */
};

/* The name of @mode ("exclusive", "shared", "semaphore", or "unknown"). */
TN_API const char *tn_mode_name(int mode);

/* Largest holder name copied into struct tn_holder_info, NUL excluded;
 * longer names are truncated. */
#define TN_HOLDER_MAX 255

/* One holder of a lock, as the cluster reports it. */
struct tn_holder_info
{
    uint64_t session;        /* the holder's session id */
    uint64_t token;          /* the holder's fencing token (0: unknown) */
    uint64_t acquired_at_ms; /* cluster time of the grant */
    int64_t expires_in_ms;   /* as seen by the answering node; -1: unknown */
    uint32_t ttl_ms;         /* the holder's lease TTL */
    char holder[TN_HOLDER_MAX + 1]; /* the holder's name */
};

/* Why an acquire did not get the lock: filled in when tn_lock_acquire()
 * returns TN_HELD or TN_LOCK_DELAY. */
struct tn_conflict
{
    int status;                   /* TN_HELD or TN_LOCK_DELAY */
    int mode;                     /* enum tn_lock_mode of the holders */
    uint32_t n_holders;           /* number of holders */
    uint32_t queue_len;           /* acquires waiting in the queue */
    uint64_t lock_delay_until_ms; /* cluster time; 0: no lock-delay */
    struct tn_holder_info holder; /* the first holder (if n_holders > 0) */
};

/* Options of tn_lock_acquire(). Zero-initialised (or NULL) means: exclusive,
 * try once, no lock-delay. */
struct tn_acquire_opts
{
    int mode;               /* enum tn_lock_mode */
    uint32_t permits;       /* TN_MODE_SEMAPHORE: size of the semaphore */
    uint32_t wait_ms;       /* 0: fail at once if held; else wait up to this
                               long in the cluster's FIFO queue */
    uint32_t lock_delay_ms; /* if this lock is later freed by expiry, nobody
                               may take it for this long (capped) */
    uint32_t timeout_ms;    /* deadline of the call; 0: the client's
                               timeout_ms + wait_ms */

    /* If not NULL, filled in when the call returns TN_HELD or
     * TN_LOCK_DELAY (left untouched otherwise). */
    struct tn_conflict *conflict;

    uint64_t reserved[6]; /* must be zero */
};

/* Acquire a lock on @resource (1..512 bytes of UTF-8 without control
 * characters; copied) for session @s. @opts may be NULL.
 *
 * Returns:
 *   TN_OK               the lock is held; *@out is a new handle. Acquiring a
 *                       lock the session already holds returns the same
 *                       token (a new handle).
 *   TN_HELD             someone else holds it (and the wait, if any, ran
 *                       out); opts->conflict says who.
 *   TN_LOCK_DELAY       freed by an expiry, not takeable until
 *                       conflict->lock_delay_until_ms.
 *   TN_SESSION_EXPIRED  the session is gone.
 *   TN_INVALID_ARGUMENT bad resource or options (see tn_client_errmsg()).
 *   TN_TIMEOUT          the deadline passed; the acquire may still have
 *                       been granted: acquiring again with the same session
 *                       returns that grant's token, or the session's end
 *                       releases it.
 *   TN_UNAVAILABLE, TN_NO_QUORUM, TN_CLOSED, TN_CANCELED, TN_NOMEM, ...
 * *@out is set only on TN_OK. */
TN_API int tn_lock_acquire(tn_session *s,
                           const char *resource,
                           const struct tn_acquire_opts *opts,
                           tn_lock **out);

/* Release the lock on the cluster. Returns TN_OK (also when a retry finds
 * it already released by us), TN_LEASE_EXPIRED (the lease ran out before:
 * someone else may have written meanwhile), TN_TOKEN_MISMATCH (a newer
 * holder has the lock; it was not touched), TN_TIMEOUT, ... The handle stays
 * allocated: free it with tn_lock_free(). From the call on
 * tn_lock_valid() is false. After a transient error (TN_TIMEOUT,
 * TN_UNAVAILABLE, ...) the release may be retried; after a final answer
 * (TN_OK, TN_LEASE_EXPIRED, TN_TOKEN_MISMATCH, TN_SESSION_EXPIRED) a second
 * release returns TN_USAGE. TN_CLOSED if the session or client was closed
 * (closing the session released the lock). */
TN_API int tn_lock_release(tn_lock *l);

/* Renew the lease behind the lock's token (and so its session), asking for
 * @ttl_ms (0: the session's TTL). Keepalives already renew the session in
 * the background; this is for explicit renewals. Returns TN_OK,
 * TN_LEASE_EXPIRED, TN_TOKEN_MISMATCH, TN_TIMEOUT, ... */
TN_API int tn_lock_renew(tn_lock *l, uint32_t ttl_ms);

/* Free the handle. Does not release the lock on the cluster: if it is still
 * held it stays held until released by token (tn_release()), or until the
 * session ends. */
TN_API void tn_lock_free(tn_lock *l);

/* The fencing token: unique per grant, strictly increasing per resource and
 * cluster-wide. Send it with every write to the protected resource, which
 * must reject tokens lower than the highest it has seen. */
TN_API uint64_t tn_lock_token(const tn_lock *l);

/* The per-resource grant counter (informational). */
TN_API uint64_t tn_lock_generation(const tn_lock *l);

/* The resource name (owned by @l). */
TN_API const char *tn_lock_resource(const tn_lock *l);

/* The session that holds the lock. */
TN_API tn_session *tn_lock_session(const tn_lock *l);

/* The lock's mode (enum tn_lock_mode). */
TN_API int tn_lock_mode(const tn_lock *l);

/* Milliseconds until the lock's safe deadline, or 0 if it passed or the
 * lock was released, its session lost or closed, or its client closed.
 * The deadline is t_send + ttl x (1 - rho) - epsilon on CLOCK_MONOTONIC,
 * where t_send is when the request that granted the lock, or the latest
 * successful renewal of its session or lease, was first sent. */
TN_API int64_t tn_lock_valid_for_ms(const tn_lock *l);

/* tn_lock_valid_for_ms(l) > 0: the holder may write (with the token). */
TN_API bool tn_lock_valid(const tn_lock *l);

/* ------------------------------------------- requests by resource/token */

/* Release the lock granted with @token on @resource, without a handle
 * (tenurectl release). Same results as tn_lock_release(). */
TN_API int tn_release(tn_client *c, const char *resource, uint64_t token);

/* Renew the lease behind @token on @resource (tenurectl renew). @ttl_ms 0
 * keeps the session's TTL. If @granted_ttl_ms is not NULL it receives the
 * granted TTL. Same results as tn_lock_renew(). */
TN_API int tn_renew(tn_client *c,
                    const char *resource,
                    uint64_t token,
                    uint32_t ttl_ms,
                    uint32_t *granted_ttl_ms);

/* ---------------------------------------------------------- inspection */

enum tn_lock_state {
    TN_STATE_FREE = 0,      /* no holders, no lock-delay */
    TN_STATE_HELD = 1,      /* at least one holder */
    TN_STATE_LOCK_DELAY = 2 /* no holders, lock-delay running */
};

/* A lock as the cluster reports it. Filled in by tn_lock_status() and
 * tn_lock_list(); free what it owns with tn_lock_info_clear(). */
struct tn_lock_info
{
    char *resource;               /* owned, NUL-terminated */
    int state;                    /* enum tn_lock_state */
    int mode;                     /* enum tn_lock_mode of the holders */
    uint32_t permits;             /* semaphore size */
    uint64_t generation;          /* per-resource grant counter */
    uint32_t queue_len;           /* waiting acquires */
    uint64_t lock_delay_until_ms; /* cluster time; 0: none */
    uint64_t index;               /* Raft index the answer reflects */
    size_t n_holders;
    struct tn_holder_info *holders; /* owned array of n_holders */
};

/* Free what @info owns and zero it. NULL is ignored. */
TN_API void tn_lock_info_clear(struct tn_lock_info *info);

/* Options of the read calls. Zero (or NULL) means a linearizable read. */
struct tn_read_opts
{
    bool stale; /* answer from any node's state, without a leader check */
    uint32_t timeout_ms;  /* 0: the client's timeout_ms */
    uint64_t reserved[4]; /* must be zero */
};

/* The state of @resource. Fills *@out (free with tn_lock_info_clear());
 * a free, unknown resource gives state TN_STATE_FREE and no holders.
 * Returns TN_OK or an error (then *@out is zeroed). */
TN_API int tn_lock_status(tn_client *c,
                          const char *resource,
                          const struct tn_read_opts *opts,
                          struct tn_lock_info *out);

/* Wait for a change of @resource after Raft index @after_index (0: return
 * the current state), for at most @wait_ms, then report its state like
 * tn_lock_status(). out->index is the index to pass to the next call. */
TN_API int tn_lock_watch(tn_client *c,
                         const char *resource,
                         uint64_t after_index,
                         uint32_t wait_ms,
                         struct tn_lock_info *out);

/* The locks whose resource starts with @prefix (NULL or "": all), at most
 * @limit of them (0: the cluster's default). On TN_OK stores a new array in
 * *@out and its length in *@n (free with tn_lock_list_free()). */
TN_API int tn_lock_list(tn_client *c,
                        const char *prefix,
                        uint32_t limit,
                        const struct tn_read_opts *opts,
                        struct tn_lock_info **out,
                        size_t *n);

/* Free an array returned by tn_lock_list(). NULL is ignored. */
TN_API void tn_lock_list_free(struct tn_lock_info *locks, size_t n);

/* ------------------------------------------------------ streamed watches */

/* A streamed watch of one resource or of every resource under a prefix.
 * The cluster sends the full current state at every change (docs/protocol.md
 * "Streamed watches"); the library reconnects, follows the leader and
 * resumes from the index of the last event it received, so a watcher may
 * miss intermediate states (several changes in a row, a slow reader) but
 * never the latest one, and event indexes never go down. */
typedef struct tn_watch tn_watch;

enum tn_watch_flags {
    TN_WATCH_PREFIX = 1 << 0, /* @resource is a prefix ("" or NULL: all) */
    TN_WATCH_STALE = 1 << 1   /* served by any node from its own state */
};

/* One event: the state right after a change (or the initial state). */
struct tn_watch_event
{
    uint64_t index;             /* Raft index; resume after it */
    size_t n_locks;             /* one resource: always 1 (its state, maybe
                                   free); a prefix: the known locks, in byte
                                   order of the resource */
    struct tn_lock_info *locks; /* owned array of n_locks */
};

/* Free what an event owns and zero it. NULL is ignored. */
TN_API void tn_watch_event_clear(struct tn_watch_event *ev);

/* Start watching @resource (with TN_WATCH_PREFIX: every resource starting
 * with it). With @after_index 0 the first event is the current state;
 * otherwise events come for changes after that index (the first one at
 * once if something changed since). Returns TN_OK at once (it does not
 * wait for the cluster: connection problems are retried in the background
 * and events arrive through tn_watch_next()), or TN_USAGE /
 * TN_INVALID_ARGUMENT (bad resource or prefix) / TN_CLOSED / TN_NOMEM.
 * On a client of <tenure/uv.h> use tn_uv_watch_open() instead. */
TN_API int tn_watch_open(tn_client *c,
                         const char *resource,
                         int flags,
                         uint64_t after_index,
                         tn_watch **out);

/* Wait up to @timeout_ms (0: do not wait) for the next event and move it
 * into @out (free with tn_watch_event_clear()). Returns TN_OK, TN_TIMEOUT
 * when none came in time (the watch goes on), or, once every received
 * event has been returned, the error that ended the watch (TN_CANCELED when
 * the client was closed, TN_INVALID_ARGUMENT, TN_REFUSED for too many
 * watches on one connection, ...) on every later call. The library keeps at
 * most 64 events not yet returned: past that, the newest replaces the last
 * one kept (a slow reader skips intermediate states, never the latest). */
TN_API int tn_watch_next(tn_watch *w,
                         uint32_t timeout_ms,
                         struct tn_watch_event *out);

/* The index of the latest event received (the resume point), or the
 * after_index it was opened with. */
TN_API uint64_t tn_watch_index(tn_watch *w);

/* Stop the watch (the cluster is told) and free the handle. Must not run
 * concurrently with tn_watch_next() on the same handle. NULL is ignored. */
TN_API void tn_watch_close(tn_watch *w);

/* One member of the cluster. */
struct tn_member_info
{
    uint64_t id;
    char *raft_address; /* owned */
    char *rpc_address;  /* owned */
    char *http_address; /* owned */
    char *role;         /* owned: voter / standby / spare */
};

/* The cluster as one node sees it. Free with tn_cluster_info_clear(). */
struct tn_cluster_info
{
    uint64_t node_id;   /* the node that answered */
    char *endpoint;     /* owned: the endpoint that answered */
    char *state;        /* owned: leader / follower / candidate / ... */
    uint64_t leader_id; /* 0: no leader known */
    char *leader_rpc;   /* owned, "" if unknown */
    char *leader_http;  /* owned, "" if unknown */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    size_t n_members;
    struct tn_member_info *members; /* owned array of n_members */
};

/* Free what @info owns and zero it. NULL is ignored. */
TN_API void tn_cluster_info_clear(struct tn_cluster_info *info);

/* Ask one reachable node (the leader if known) about the cluster. Fills
 * *@out; free it with tn_cluster_info_clear(). Returns TN_OK or an error
 * (TN_UNAVAILABLE when no endpoint answers; *@out is then zeroed). */
TN_API int tn_cluster_status(tn_client *c, struct tn_cluster_info *out);

/* ----------------------------------------------------------- operators */

/* Add node @id with Raft address @raft_address ("host:port") to the
 * cluster: it joins as a spare, catches up, then becomes a voter. One
 * membership change at a time. Returns TN_OK once the change is committed,
 * TN_REFUSED (another change in progress; the message says why),
 * TN_INVALID_ARGUMENT, ... */
TN_API int tn_member_add(tn_client *c, uint64_t id, const char *raft_address);

/* Remove node @id. TN_REFUSED when that would lose quorum. */
TN_API int tn_member_remove(tn_client *c, uint64_t id);

/* Hand leadership to node @id (0: the most up-to-date voter), e.g. before
 * restarting the leader. Returns once the transfer has started. */
TN_API int tn_leader_transfer(tn_client *c, uint64_t id);

/* The whole lock table as of a linearizable point, as an opaque byte
 * string: on TN_OK *@buf (free it with tn_free()) holds *@len bytes.
 * Tables over 64 MiB need a larger tn_client_opts.max_frame (the call
 * fails with TN_PROTOCOL saying so). */
TN_API int tn_snapshot_save(tn_client *c, void **buf, size_t *len);

/* Load a saved snapshot into a fresh cluster (one whose lock table is
 * empty). @buf is only read during the call. */
TN_API int tn_snapshot_restore(tn_client *c, const void *buf, size_t len);

/* Free memory the library handed out (tn_snapshot_save()). NULL is
 * ignored. */
TN_API void tn_free(void *p);

#ifdef __cplusplus
}
#endif

#endif /* TENURE_H_ */
