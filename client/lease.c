/* Lease deadline arithmetic and the jeopardy state machine. */
#include "lease.h"

#include <time.h>

uint64_t leaseNow(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t leaseDeadline(const struct lease_params *p,
                       uint64_t t_send_ns,
                       uint32_t ttl_ms)
{
    uint64_t ttl_ns = (uint64_t)ttl_ms * 1000000u;
    uint64_t drift = p->drift_ppm > 1000000u ? 1000000u : p->drift_ppm;
    /* ttl * (1 - rho), exact in integers: ttl_ns < 2^42, factor <= 2^20. */
    uint64_t scaled = ttl_ns / 1000000u * (1000000u - drift) +
                      ttl_ns % 1000000u * (1000000u - drift) / 1000000u;
    uint64_t margin_ns = (uint64_t)p->margin_ms * 1000000u;

    if (scaled <= margin_ns) {
        return t_send_ns;
    }
    return t_send_ns + scaled - margin_ns;
}

int64_t leaseRemainingMs(uint64_t deadline_ns, uint64_t now_ns)
{
    if (deadline_ns <= now_ns) {
        return 0;
    }
    return (int64_t)((deadline_ns - now_ns) / 1000000u);
}

void leaseInit(struct lease *l)
{
    l->state = LEASE_NONE;
    l->safe_until_ns = 0;
}

enum lease_event leaseRenewed(struct lease *l,
                              const struct lease_params *p,
                              uint64_t t_send_ns,
                              uint32_t ttl_ms,
                              uint64_t now_ns)
{
    uint64_t until = leaseDeadline(p, t_send_ns, ttl_ms);

    if (l->state == LEASE_LOST) {
        return LEASE_EVENT_NONE;
    }
    if (until > l->safe_until_ns) {
        l->safe_until_ns = until;
    }
    switch (l->state) {
    case LEASE_NONE:
        l->state = LEASE_SAFE;
        /* A grant that is already past its deadline starts in jeopardy,
         * silently: there was never a safe period to lose. */
        if (now_ns >= l->safe_until_ns) {
            l->state = LEASE_JEOPARDY;
        }
        return LEASE_EVENT_NONE;
    case LEASE_JEOPARDY:
        if (now_ns < l->safe_until_ns) {
            l->state = LEASE_SAFE;
            return LEASE_EVENT_SAFE;
        }
        return LEASE_EVENT_NONE;
    default:
        return LEASE_EVENT_NONE;
    }
}

enum lease_event leaseTick(struct lease *l, uint64_t now_ns)
{
    if (l->state == LEASE_SAFE && now_ns >= l->safe_until_ns) {
        l->state = LEASE_JEOPARDY;
        return LEASE_EVENT_JEOPARDY;
    }
    return LEASE_EVENT_NONE;
}

enum lease_event leaseLost(struct lease *l)
{
    if (l->state == LEASE_LOST) {
        return LEASE_EVENT_NONE;
    }
    l->state = LEASE_LOST;
    return LEASE_EVENT_LOST;
}

int64_t leaseValidForMs(const struct lease *l, uint64_t now_ns)
{
    if (l->state != LEASE_SAFE) {
        return 0;
    }
    return leaseRemainingMs(l->safe_until_ns, now_ns);
}
