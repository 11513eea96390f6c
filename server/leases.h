/* Leader-side lease keeper: a deadline per live session.
 *
 * Only the leader keeps deadlines (followers never expire anything). Pure:
 * every function takes `now` (the leader's CLOCK_MONOTONIC, ms) as an
 * argument and nothing here reads a clock, so tests drive it in virtual
 * time. Deadlines only ever move later (a lease is never shortened). */
#ifndef TN_LEASES_H_
#define TN_LEASES_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 40 bytes, carved out of blocks of LEASES_BLOCK (no per-lease malloc).
 * A pointer stays valid until the lease is removed or the set cleared. */
struct lease
{
    uint64_t session;
    uint64_t epoch;
    uint64_t deadline_ms;  /* leader clock; UINT64_MAX while expiring */
    uint32_t ttl_ms;
    uint32_t heap_pos;     /* private */
    bool expiring;         /* an expiry entry has been proposed */
};

#define LEASES_BLOCK 256

struct leases_block; /* private */
union leases_slot;   /* private */

struct leases
{
    struct lease **heap;   /* owned; min-heap on deadline_ms */
    size_t n;
    size_t cap;
    struct lease **slots;  /* owned; open-addressing table by session */
    size_t n_slots;        /* power of two */
    struct leases_block *blocks; /* owned; where the leases live */
    union leases_slot *spare; /* free leases, linked */
};

void leasesInit(struct leases *l);
void leasesClose(struct leases *l);
/* Forget every lease (this node stopped being leader). */
void leasesClear(struct leases *l);
size_t leasesCount(const struct leases *l);

struct lease *leasesGet(const struct leases *l, uint64_t session);

/* Insert, or update epoch/ttl and move the deadline to max(old, deadline).
 * Clears `expiring`. Returns 0 or -1 when out of memory. */
int leasesExtend(struct leases *l,
                 uint64_t session,
                 uint64_t epoch,
                 uint32_t ttl_ms,
                 uint64_t deadline_ms);

/* Restart a lease at exactly @deadline_ms (earlier or later): only for a
 * lease nobody was promised anything about yet (a per-lock session that
 * just got its lock after waiting). Returns 0 or -1 (out of memory). */
int leasesRestart(struct leases *l,
                  uint64_t session,
                  uint64_t epoch,
                  uint32_t ttl_ms,
                  uint64_t deadline_ms);

void leasesRemove(struct leases *l, uint64_t session);

/* The lease with the earliest deadline that is not already expiring, if its
 * deadline is <= now; else NULL. */
struct lease *leasesNextExpired(struct leases *l, uint64_t now_ms);

/* Mark an expired lease as expiring (an expiry entry was proposed), or
 * bring it back (the proposal failed) with the deadline @retry_ms. */
void leasesSetExpiring(struct leases *l, struct lease *lease);
void leasesUnsetExpiring(struct leases *l, struct lease *lease,
                         uint64_t retry_ms);

/* Earliest deadline of a non-expiring lease, or UINT64_MAX. */
uint64_t leasesNextDeadline(const struct leases *l);

#endif /* TN_LEASES_H_ */
