/* libtenure's lease arithmetic and jeopardy state machine, in virtual time
 * (client/lease.c is compiled into this test). */
#include "lib/test.h"

#include "../../client/lease.c"

#define MS 1000000ULL /* ns */

static const struct lease_params defaults = { LEASE_DRIFT_PPM_DEFAULT,
                                              LEASE_MARGIN_MS_DEFAULT };

/* safe_until = t_send + ttl * (1 - rho) - epsilon, exactly. */
static void test_deadline_formula(void **state)
{
    struct lease_params p = { 10000, 50 }; /* rho 1 %, epsilon 50 ms */
    (void)state;
    /* 10 s TTL: 10000 - 100 - 50 = 9850 ms after the send. */
    assert_int_equal(leaseDeadline(&p, 1000 * MS, 10000), (1000 + 9850) * MS);
    /* 1 s TTL: 1000 - 10 - 50 = 940 ms. */
    assert_int_equal(leaseDeadline(&p, 0, 1000), 940 * MS);
    /* rho 5 %, epsilon 0: 3 s -> 2850 ms. */
    p.drift_ppm = 50000;
    p.margin_ms = 0;
    assert_int_equal(leaseDeadline(&p, 7 * MS, 3000), (7 + 2850) * MS);
    /* Sub-millisecond exactness: 1 ms TTL at rho 1 % is 990 us. */
    p.drift_ppm = 10000;
    assert_int_equal(leaseDeadline(&p, 0, 1), 990000);
}

/* A TTL shorter than the margins gives a lease that is never safe. */
static void test_deadline_margin_exceeds_ttl(void **state)
{
    struct lease_params p = { 10000, 50 };
    (void)state;
    assert_int_equal(leaseDeadline(&p, 123 * MS, 40), 123 * MS);
    assert_int_equal(leaseDeadline(&p, 123 * MS, 0), 123 * MS);
    p.drift_ppm = 1000000; /* rho 100 %: nothing is ever safe */
    p.margin_ms = 0;
    assert_int_equal(leaseDeadline(&p, 5 * MS, 60000), 5 * MS);
}

/* The largest TTL does not overflow. */
static void test_deadline_large_ttl(void **state)
{
    struct lease_params p = { 10000, 0 };
    uint64_t d = leaseDeadline(&p, 0, UINT32_MAX);
    (void)state;
    assert_int_equal(d, (uint64_t)UINT32_MAX * MS / 100 * 99);
}

/* Remaining whole milliseconds, never negative. */
static void test_remaining(void **state)
{
    (void)state;
    assert_int_equal(leaseRemainingMs(100 * MS, 40 * MS), 60);
    assert_int_equal(leaseRemainingMs(100 * MS, 100 * MS - 1), 0);
    assert_int_equal(leaseRemainingMs(100 * MS, 100 * MS), 0);
    assert_int_equal(leaseRemainingMs(100 * MS, 200 * MS), 0);
    assert_int_equal(leaseRemainingMs(100 * MS + 1500000, 100 * MS), 1);
}

/* The first grant makes the lease safe without an event; validity counts
 * down from the send time, not from the answer. */
static void test_grant_counts_from_send(void **state)
{
    struct lease l;
    (void)state;
    leaseInit(&l);
    assert_int_equal(leaseValidForMs(&l, 0), 0);
    /* Sent at 1000 ms, answered at 1400 ms, TTL 10 s: safe until 10850. */
    assert_int_equal(leaseRenewed(&l, &defaults, 1000 * MS, 10000, 1400 * MS),
                     LEASE_EVENT_NONE);
    assert_int_equal(l.state, LEASE_SAFE);
    assert_int_equal(leaseValidForMs(&l, 1400 * MS), 9450);
    assert_int_equal(leaseValidForMs(&l, 10849 * MS), 1);
    assert_int_equal(leaseValidForMs(&l, 10850 * MS), 0);
}

/* Passing the deadline without a renewal is jeopardy, reported once. */
static void test_jeopardy_once(void **state)
{
    struct lease l;
    (void)state;
    leaseInit(&l);
    leaseRenewed(&l, &defaults, 0, 1000, 10 * MS); /* safe until 940 */
    assert_int_equal(leaseTick(&l, 939 * MS), LEASE_EVENT_NONE);
    assert_int_equal(l.state, LEASE_SAFE);
    assert_int_equal(leaseTick(&l, 940 * MS), LEASE_EVENT_JEOPARDY);
    assert_int_equal(l.state, LEASE_JEOPARDY);
    assert_int_equal(leaseTick(&l, 2000 * MS), LEASE_EVENT_NONE);
    assert_int_equal(leaseValidForMs(&l, 500 * MS), 0);
}

/* A renewal moves the deadline forward only; an older renewal arriving
 * late never shortens it. */
static void test_renewal_monotonic(void **state)
{
    struct lease l;
    (void)state;
    leaseInit(&l);
    leaseRenewed(&l, &defaults, 1000 * MS, 1000, 1000 * MS); /* 1940 */
    leaseRenewed(&l, &defaults, 500 * MS, 1000, 1100 * MS);  /* 1440: older */
    assert_int_equal(l.safe_until_ns, 1940 * MS);
    leaseRenewed(&l, &defaults, 1300 * MS, 1000, 1350 * MS); /* 2240 */
    assert_int_equal(l.safe_until_ns, 2240 * MS);
    assert_int_equal(leaseTick(&l, 2000 * MS), LEASE_EVENT_NONE);
}

/* A renewal after jeopardy makes it safe again (one event); a renewal that
 * is itself already past its deadline does not. */
static void test_safe_again(void **state)
{
    struct lease l;
    (void)state;
    leaseInit(&l);
    leaseRenewed(&l, &defaults, 0, 1000, 0);
    assert_int_equal(leaseTick(&l, 1000 * MS), LEASE_EVENT_JEOPARDY);
    /* Sent at 100 ms, answered at 1200 ms: its deadline 1040 has passed. */
    assert_int_equal(leaseRenewed(&l, &defaults, 100 * MS, 1000, 1200 * MS),
                     LEASE_EVENT_NONE);
    assert_int_equal(l.state, LEASE_JEOPARDY);
    /* Sent at 1100 ms, answered at 1300 ms: safe until 2040. */
    assert_int_equal(leaseRenewed(&l, &defaults, 1100 * MS, 1000, 1300 * MS),
                     LEASE_EVENT_SAFE);
    assert_int_equal(l.state, LEASE_SAFE);
    assert_int_equal(leaseValidForMs(&l, 1300 * MS), 740);
    /* And it can fall into jeopardy again. */
    assert_int_equal(leaseTick(&l, 2040 * MS), LEASE_EVENT_JEOPARDY);
}

/* Lost is final: reported once, no renewal revives it, nothing is valid. */
static void test_lost_final(void **state)
{
    struct lease l;
    (void)state;
    leaseInit(&l);
    leaseRenewed(&l, &defaults, 0, 10000, 0);
    assert_int_equal(leaseLost(&l), LEASE_EVENT_LOST);
    assert_int_equal(leaseLost(&l), LEASE_EVENT_NONE);
    assert_int_equal(leaseValidForMs(&l, 1 * MS), 0);
    assert_int_equal(leaseRenewed(&l, &defaults, 2 * MS, 10000, 3 * MS),
                     LEASE_EVENT_NONE);
    assert_int_equal(l.state, LEASE_LOST);
    assert_int_equal(leaseTick(&l, 20000 * MS), LEASE_EVENT_NONE);
    assert_int_equal(leaseValidForMs(&l, 4 * MS), 0);
}

/* A lease lost while in jeopardy reports the loss. */
static void test_lost_from_jeopardy(void **state)
{
    struct lease l;
    (void)state;
    leaseInit(&l);
    leaseRenewed(&l, &defaults, 0, 1000, 0);
    leaseTick(&l, 5000 * MS);
    assert_int_equal(leaseLost(&l), LEASE_EVENT_LOST);
}

/* A first grant that arrives after its own deadline starts in jeopardy
 * without an event, and is never valid. */
static void test_grant_already_late(void **state)
{
    struct lease l;
    (void)state;
    leaseInit(&l);
    assert_int_equal(leaseRenewed(&l, &defaults, 0, 1000, 2000 * MS),
                     LEASE_EVENT_NONE);
    assert_int_equal(l.state, LEASE_JEOPARDY);
    assert_int_equal(leaseValidForMs(&l, 2000 * MS), 0);
    assert_int_equal(leaseTick(&l, 3000 * MS), LEASE_EVENT_NONE);
}

/* The library clock is CLOCK_MONOTONIC and moves forward. */
static void test_clock(void **state)
{
    uint64_t a = leaseNow();
    uint64_t b = leaseNow();
    (void)state;
    assert_true(a > 0);
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_formula),
        cmocka_unit_test(test_deadline_margin_exceeds_ttl),
        cmocka_unit_test(test_deadline_large_ttl),
        cmocka_unit_test(test_remaining),
        cmocka_unit_test(test_grant_counts_from_send),
        cmocka_unit_test(test_jeopardy_once),
        cmocka_unit_test(test_renewal_monotonic),
        cmocka_unit_test(test_safe_again),
        cmocka_unit_test(test_lost_final),
        cmocka_unit_test(test_lost_from_jeopardy),
        cmocka_unit_test(test_grant_already_late),
        cmocka_unit_test(test_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
