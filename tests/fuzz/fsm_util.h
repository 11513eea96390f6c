/* Shared by the harnesses that drive the state machine: a small, fixed
 * starting state (so that fuzzed commands meet sessions, holders, waiters,
 * a semaphore, a lock-delay and an exactly-once client), the invariants of
 * a lock table, and the snapshot round trip. */
#ifndef TN_FUZZ_FSM_UTIL_H_
#define TN_FUZZ_FSM_UTIL_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsm.h"
#include "tenure.pb-c.h"

/* Cluster time of the first setup batch; each later batch adds 1000 ms. */
#define FUZZ_T0 UINT64_C(1767225600000)

/* What fuzzFsmSetup() built (the seed generator names these in the seeds
 * it writes; the values are deterministic). */
struct fuzz_world
{
    uint64_t index;          /* last applied index */
    uint64_t now_ms;         /* cluster time of the last batch */
    uint64_t alice;          /* session "alice", ttl 10 s */
    uint64_t bob;            /* session "bob", ttl 5 s */
    uint64_t token_orders;   /* alice's exclusive token on "orders/1" */
    uint64_t token_cfg;      /* alice's shared token on "cfg" */
    uint64_t token_pool;     /* bob's token on the semaphore "pool" (3) */
    uint64_t token_eph;      /* an ephemeral session's token on "eph/1" */
    uint64_t eph_session;
};

/* fsmInit with the default configuration, then a few setup batches:
 * member 1; sessions alice and bob; alice holds "orders/1" (exclusive, 2 s
 * lock-delay) and "cfg" (shared, with bob); bob holds one of the 3 permits
 * of "pool" and waits (client 42, seq 1) for "orders/1"; an ephemeral
 * session of "carol" holds "eph/1"; alice releases a token on "gone" (a
 * tombstone). Aborts if any step does not give the expected outcome. */
void fuzzFsmSetup(struct fsm *f, struct fuzz_world *w);

/* Apply @b at @index, then check the invariants of the lock table. */
void fuzzFsmApply(struct fsm *f,
                  uint64_t index,
                  const Tn__Batch *b,
                  struct fsm_result *results);

/* Invariants every reachable state keeps (aborts on a violation):
 * resources valid and in strictly ascending byte order; an exclusive lock
 * has at most one holder; a semaphore at most `permits`; holders in
 * strictly ascending token order, none above the lock's last_token; every
 * holder's session exists; a lock that is listed is not entirely idle. */
void fuzzFsmCheck(const struct fsm *f);

/* Snapshot @f, restore the bytes into a fresh FSM, snapshot that: the two
 * snapshots must be byte-identical and the restore must succeed. Returns
 * the first snapshot (malloc'ed) through @snap/@len if not NULL. */
void fuzzSnapshotRoundTrip(const struct fsm *f, void **snap, size_t *len);

/* FNV-1a 64, as the snapshot trailer uses. */
uint64_t fuzzFnv1a(const uint8_t *p, size_t n);

/* A batch of @n commands with version 1, term 1 and the given clock. */
void fuzzBatchInit(Tn__Batch *b, Tn__Command **cmds, size_t n, uint64_t now_ms);

#endif /* TN_FUZZ_FSM_UTIL_H_ */
