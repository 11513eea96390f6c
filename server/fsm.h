/* The lock table: a pure, deterministic state machine.
 *
 * No clock, no I/O, no raft. Every replica applies the same batches in the
 * same order and ends in the same state. Time enters only through the
 * leader-stamped `now_ms` of each batch (cluster time, never decreasing
 * inside the FSM) and the Raft index passed with it.
 *
 * Commands and batches are the protobuf messages of proto/tenure.proto
 * (Tn__Command, Tn__Batch); decoding and encoding live in command.c. Statuses
 * are the wire enum values (TN__STATUS__*). */
#ifndef TN_FSM_H_
#define TN_FSM_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tenure.pb-c.h"

/* Limits on the text fields of commands (bytes). Resource IDs must be
 * 1..FSM_RESOURCE_MAX bytes of valid UTF-8 without control characters (C0,
 * DEL, C1); holder names 0..FSM_HOLDER_MAX bytes with the same rules;
 * member addresses 0..FSM_ADDRESS_MAX. */
#define FSM_RESOURCE_MAX 512
#define FSM_HOLDER_MAX 256
#define FSM_ADDRESS_MAX 256

/* Configuration of the state machine. Must be identical on every replica
 * (the values become part of the replicated behaviour). */
struct fsm_config
{
    uint32_t min_ttl_ms;       /* session TTLs are clamped to [min, max] */
    uint32_t max_ttl_ms;
    uint32_t max_lock_delay_ms;/* per-request lock-delay is capped to this */
    uint32_t max_wait_ms;      /* acquire wait_ms is capped to this */
    uint32_t tombstones;       /* how many ended tokens are remembered */
    uint32_t client_ttl_ms;    /* idle exactly-once client entries expire */
    uint32_t client_window;    /* replies remembered per client id */
};

/* Fill @c with the defaults (min 1000 ms, max 300000 ms, lock-delay cap
 * 60000 ms, wait cap 300000 ms, 65536 tombstones, client ttl 600000 ms,
 * window 64). */
void fsmConfigDefaults(struct fsm_config *c);

/* The outcome of one command. Strings point into the FSM and are valid only
 * until the next call that mutates it. */
struct fsm_result
{
    int status;              /* TN__STATUS__* */
    bool replayed;           /* answered from the exactly-once reply table */
    bool queued;             /* acquire is waiting; the answer comes later as
                                an FSM_EVENT_WAIT_DONE with the same
                                (client_id, seq). Results are final as of
                                the end of the batch: an acquire queued (or
                                retried) in a batch and ended by a later
                                command of the same batch reports its final
                                outcome instead (its WAIT_DONE, emitted
                                during fsmApply, can then be ignored). */
    uint64_t session;        /* session opened / used */
    uint64_t epoch;          /* session epoch after this command */
    uint32_t ttl_ms;         /* granted TTL */
    uint64_t token;          /* granted (or renewed / released) token */
    uint64_t generation;     /* per-resource grant counter */
    int mode;                /* TN__LOCK_MODE__* */
    /* HELD / LOCK_DELAY / TOKEN_MISMATCH: who is in the way. */
    uint64_t holder_session;
    const char *holder;      /* holder name, NUL-terminated, or NULL */
    uint64_t holder_token;
    uint64_t acquired_at_ms; /* cluster time of the holder's grant (also set
                                on OK renew/release: the caller's grant) */
    uint32_t holder_ttl_ms;
    uint32_t queue_len;
    uint64_t lock_delay_until_ms;
    const char *message;     /* static detail string for errors, or NULL */
    /* LEASE_EXPIRED for a lease that ended by expiry (a safety incident):
     * when it ended (cluster time) and whose it was. */
    bool late;
    uint64_t ended_at_ms;
    const char *late_holder;
};

enum fsm_event_type {
    FSM_EVENT_SESSION_OPEN = 1, /* session, epoch, ttl_ms */
    FSM_EVENT_SESSION_RENEW,    /* session, epoch, ttl_ms (logged renewal) */
    FSM_EVENT_SESSION_END,      /* session (closed, expired, last lock gone) */
    FSM_EVENT_WAIT_DONE,        /* client_id, seq, result: a queued acquire
                                   was granted, ran out of time or ended */
    FSM_EVENT_LOCK_CHANGE,      /* resource: state changed (for watches) */
};

struct fsm_event
{
    enum fsm_event_type type;
    uint64_t index;             /* Raft index of the entry being applied */
    uint64_t session;
    uint64_t epoch;
    uint32_t ttl_ms;
    uint64_t client_id;
    uint64_t seq;
    const struct fsm_result *result;
    const char *resource;
    size_t resource_len;
};

/* Called synchronously from fsmApply for each event, in order. Must not call
 * back into the FSM's mutating functions. */
typedef void (*fsm_event_cb)(void *data, const struct fsm_event *event);

struct fsm_impl; /* private */

struct fsm
{
    struct fsm_config config;
    void *data;              /* passed to event_cb */
    fsm_event_cb event_cb;   /* may be NULL */
    struct fsm_impl *impl;   /* owned */
};

/* Returns 0, or TN__STATUS__INTERNAL when out of memory. */
int fsmInit(struct fsm *f, const struct fsm_config *config);
void fsmClose(struct fsm *f);

/* Check a resource ID the way Acquire/Release/Renew do, so that front ends
 * can answer 400 before proposing anything. Returns true if valid; else sets
 * *message (if not NULL) to a static string naming the problem. */
bool fsmResourceValid(const char *resource, size_t len, const char **message);

/* Apply one batch committed at Raft @index. Writes one result per command
 * into @results (batch->n_commands entries; @results may be NULL to discard
 * them). Never fails: a malformed command gets INVALID_ARGUMENT. Fencing
 * tokens granted by this entry are max(last_token + 1, index << 16), so they
 * are unique, strictly increasing and identical on every replica; session
 * ids follow the same scheme with their own counter. Out of memory while
 * applying aborts the process (fail-stop: a replica that skipped part of an
 * entry would silently diverge).
 *
 * Order inside one batch: cluster time := max(time, now_ms), term :=
 * max(term, batch term); timers that are due fire in deadline order
 * (lock-delay ends before waiter deadlines at the same instant); idle
 * exactly-once clients are dropped; then each command, each followed by the
 * hand-off of every lock it freed (grants to the next waiters, WAIT_DONE,
 * LOCK_CHANGE).
 *
 * Outcomes by command (status, then what else is set):
 *   SessionOpen       OK: session, epoch 1, granted ttl_ms. Holder must be
 *                     <= FSM_HOLDER_MAX bytes of printable UTF-8.
 *   SessionKeepalive  OK: epoch + 1 (SESSION_RENEW). SESSION_EXPIRED if the
 *                     session is gone.
 *   SessionClose      OK: clean release of every lock (no lock-delay,
 *                     tombstones "released"), queued acquires end with
 *                     WAIT_DONE(SESSION_EXPIRED). SESSION_EXPIRED if gone.
 *   SessionExpire     OK: as close, but locks are freed by expiry (their
 *                     lock-delay starts, tombstones "expired").
 *                     SESSION_EXPIRED if already gone. INVALID_ARGUMENT and
 *                     nothing changes when the batch term is lower than one
 *                     already applied (a deposed leader) or the epoch is not
 *                     the session's (renewed since); the result then carries
 *                     the current epoch and ttl_ms so the leader can re-arm.
 *   Acquire           OK: token, generation, session (the ephemeral one if
 *                     session was 0), epoch, ttl_ms, mode. OK + replayed:
 *                     the session already holds it (same token).
 *                     OK + queued: waiting (holder fields filled); the final
 *                     answer is a WAIT_DONE with (client_id, seq): OK,
 *                     HELD / LOCK_DELAY (wait ran out), SESSION_EXPIRED
 *                     (session ended) or INVALID_ARGUMENT (the same session
 *                     got the lock in another mode meanwhile).
 *                     HELD / LOCK_DELAY (+ lock_delay_until_ms): not now and
 *                     wait_ms is 0 (a wait that would end before the
 *                     lock-delay does is refused at once). SESSION_EXPIRED:
 *                     unknown session. INVALID_ARGUMENT: bad resource, mode,
 *                     permits (0, or not the semaphore's N), another mode
 *                     than the session's current hold, or session 0 without
 *                     ttl_ms.
 *   Release           OK: freed (token, session, generation). OK + replayed:
 *                     the token was already released. LEASE_EXPIRED: the
 *                     token's lease expired before (counted in
 *                     late_requests), or it ended so long ago it is no
 *                     longer remembered and nobody holds the lock (not
 *                     counted). TOKEN_MISMATCH (+ holder fields): someone
 *                     else holds it under another token; untouched.
 *                     INVALID_ARGUMENT: token 0 or never granted.
 *   Renew             As Release, but a valid token renews the holder's
 *                     session (epoch + 1, ttl_ms if non-zero) and a
 *                     released token gives LEASE_EXPIRED (not counted).
 *   Tick              OK (time moves; timers fire before it).
 *   MemberInfo        OK; INVALID_ARGUMENT for id 0 or bad addresses.
 *   Restore           (operator snapshot load) OK: the saved table replaces
 *                     this one; index, term, cluster time and members stay
 *                     this cluster's, token / session / timer counters take
 *                     the max of both (tokens never repeat); every restored
 *                     session gets a SESSION_OPEN, every lock a LOCK_CHANGE;
 *                     deadlines already past fire at once. REFUSED if this
 *                     table has sessions or locks; INVALID_ARGUMENT if the
 *                     snapshot does not pass fsmRestore's checks.
 * With client_id != 0 (and client_window > 0): seq must be >= 1; a (client,
 * seq) already answered returns the stored answer with replayed = true (a
 * still-waiting acquire returns queued again); a seq at or below the
 * highest one evicted from the client's window gets INVALID_ARGUMENT (the
 * outcome is no longer known). The window keeps the highest seqs.
 * The per-resource generation restarts at 1 when a resource was free and
 * forgotten (no holders, waiters or lock-delay); tokens never go back. */
void fsmApply(struct fsm *f,
              uint64_t index,
              const Tn__Batch *batch,
              struct fsm_result *results);

/* Cluster time (ms) and the highest leader term seen in applied batches. */
uint64_t fsmNow(const struct fsm *f);
uint64_t fsmTerm(const struct fsm *f);
/* Index of the last applied entry (0 if none). */
uint64_t fsmIndex(const struct fsm *f);

/* The earliest cluster time at which a Tick would change something (a
 * queued waiter runs out of time, a lock-delay ends: waiters get in, or the
 * resource becomes free for watchers), or UINT64_MAX. The leader proposes a
 * Tick once its clock passes it. */
uint64_t fsmNextDeadline(const struct fsm *f);

/* Read views. */
struct fsm_session_view
{
    uint64_t id;
    uint64_t epoch;
    uint32_t ttl_ms;
    const char *holder;
    uint64_t created_at_ms;
    uint32_t n_locks;
};

/* Returns false if there is no such session. */
bool fsmSessionGet(const struct fsm *f,
                   uint64_t id,
                   struct fsm_session_view *out);

/* Calls @cb for each live session (in id order); stops if cb returns
 * non-zero. */
void fsmSessionForEach(const struct fsm *f,
                       int (*cb)(void *data,
                                 const struct fsm_session_view *s),
                       void *data);

struct fsm_holder_view
{
    uint64_t session;
    const char *holder;
    uint64_t token;
    uint64_t acquired_at_ms;
    uint32_t ttl_ms;
};

struct fsm_lock_view
{
    const char *resource;
    size_t resource_len;
    int mode;                  /* TN__LOCK_MODE__* of the current holders */
    uint32_t permits;
    uint64_t generation;
    uint64_t last_token;       /* highest token ever granted on it */
    uint32_t n_holders;
    const struct fsm_holder_view *holders; /* valid until the next apply */
    uint32_t queue_len;
    uint64_t lock_delay_until_ms;
    uint64_t modified_index;   /* Raft index of the last change */
};

/* Returns false if the resource has no holders, no waiters and no active
 * lock-delay (it is free and unknown). Holders are in token (grant) order;
 * the holders array is valid until the next apply or the next
 * fsmLockGet / fsmLockForEach (reads share a scratch buffer: call them from
 * one thread). */
bool fsmLockGet(const struct fsm *f,
                const char *resource,
                size_t len,
                struct fsm_lock_view *out);

/* Calls @cb for each resource whose name starts with @prefix, in byte
 * order; stops if cb returns non-zero. The view (and its holders array) is
 * valid only during the callback. */
void fsmLockForEach(const struct fsm *f,
                    const char *prefix,
                    size_t prefix_len,
                    int (*cb)(void *data, const struct fsm_lock_view *l),
                    void *data);

/* Member addresses recorded through MemberInfo commands. */
bool fsmMemberGet(const struct fsm *f,
                  uint64_t id,
                  const char **rpc_address,
                  const char **http_address);

struct fsm_member_view
{
    uint64_t id;
    const char *raft_address;
    const char *rpc_address;
    const char *http_address;
};

/* Calls @cb for each recorded member in id order; stops if cb returns
 * non-zero. */
void fsmMemberForEach(const struct fsm *f,
                      int (*cb)(void *data, const struct fsm_member_view *m),
                      void *data);

/* Counters for metrics. */
struct fsm_stats
{
    uint64_t sessions;
    uint64_t locks_held;        /* held (resource, holder) pairs */
    uint64_t waiters;
    uint64_t grants;
    uint64_t releases;
    uint64_t expiries;          /* sessions expired */
    uint64_t lock_delay_hits;
    uint64_t conflicts;
    uint64_t late_requests;     /* renew/release after the lease expired */
};
void fsmStats(const struct fsm *f, struct fsm_stats *out);

/* Serialize the whole state into a malloc'ed buffer. Returns 0 or
 * TN__STATUS__INTERNAL (out of memory). */
int fsmSnapshot(const struct fsm *f, void **buf, size_t *len);

/* Replace the state with a snapshot. On any malformed input returns
 * TN__STATUS__INVALID_ARGUMENT and leaves the FSM unchanged; never crashes.
 * Does not take ownership of @buf. */
int fsmRestore(struct fsm *f, const void *buf, size_t len);

#endif /* TN_FSM_H_ */
