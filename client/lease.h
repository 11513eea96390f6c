/* Lease deadline arithmetic and the jeopardy state machine (pure: the
 * caller passes the time in, so tests drive it with a fake clock).
 *
 * DESIGN §4 rule 5: a lease granted or renewed by a request first sent at
 * t_send (CLOCK_MONOTONIC) with TTL ttl is safe until
 *
 *     safe_until = t_send + ttl * (1 - rho) - epsilon
 *
 * The cluster starts counting the TTL no earlier than it receives the
 * request, which is after t_send; rho bounds how much faster its clock may
 * run than ours; epsilon covers the time between a check and the write it
 * guards. Renewals only ever move safe_until forward.
 *
 * States and events:
 *
 *     NONE --renewed--> SAFE --tick past safe_until--> JEOPARDY (event)
 *     JEOPARDY --renewed, new safe_until in the future--> SAFE (event)
 *     any but LOST --lost--> LOST (event, final)
 */
#ifndef TN_CLIENT_LEASE_H_
#define TN_CLIENT_LEASE_H_

#include <stdbool.h>
#include <stdint.h>

struct lease_params
{
    uint32_t drift_ppm; /* rho in parts per million */
    uint32_t margin_ms; /* epsilon */
};

#define LEASE_DRIFT_PPM_DEFAULT 10000
#define LEASE_MARGIN_MS_DEFAULT 50

enum lease_state {
    LEASE_NONE = 0, /* never granted */
    LEASE_SAFE,
    LEASE_JEOPARDY,
    LEASE_LOST
};

enum lease_event {
    LEASE_EVENT_NONE = 0,
    LEASE_EVENT_JEOPARDY,
    LEASE_EVENT_SAFE,
    LEASE_EVENT_LOST
};

struct lease
{
    enum lease_state state;
    uint64_t safe_until_ns; /* 0 while NONE */
};

/* The monotonic clock of the library, ns (CLOCK_MONOTONIC). */
uint64_t leaseNow(void);

/* t_send + ttl * (1 - rho) - epsilon, never before @t_send_ns (a TTL
 * shorter than the margins gives a lease that is never safe). */
uint64_t leaseDeadline(const struct lease_params *p,
                       uint64_t t_send_ns,
                       uint32_t ttl_ms);

/* Whole milliseconds left until @deadline_ns at @now_ns, 0 if none. */
int64_t leaseRemainingMs(uint64_t deadline_ns, uint64_t now_ns);

void leaseInit(struct lease *l);

/* A request first sent at @t_send_ns that grants or renews the lease for
 * @ttl_ms succeeded; @now_ns is the time of the answer. Returns
 * LEASE_EVENT_SAFE when this ends a jeopardy, else LEASE_EVENT_NONE. */
enum lease_event leaseRenewed(struct lease *l,
                              const struct lease_params *p,
                              uint64_t t_send_ns,
                              uint32_t ttl_ms,
                              uint64_t now_ns);

/* Time passes. Returns LEASE_EVENT_JEOPARDY when the safe deadline passed
 * while SAFE (the state becomes JEOPARDY), else LEASE_EVENT_NONE. */
enum lease_event leaseTick(struct lease *l, uint64_t now_ns);

/* The cluster said the lease is gone. Returns LEASE_EVENT_LOST the first
 * time, LEASE_EVENT_NONE afterwards. */
enum lease_event leaseLost(struct lease *l);

/* Milliseconds of safety left at @now_ns (0 unless SAFE or JEOPARDY with
 * time left — JEOPARDY always has none). */
int64_t leaseValidForMs(const struct lease *l, uint64_t now_ns);

#endif /* TN_CLIENT_LEASE_H_ */
