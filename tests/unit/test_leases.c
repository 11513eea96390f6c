/* Unit tests of the leader-side lease keeper (server/leases.c), in virtual
 * time: every call takes `now` explicitly. */
#include "lib/test.h"

#include <stdlib.h>

#include "leases.h"

struct fixture
{
    struct leases l;
};

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    leasesInit(&f->l);
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    leasesClose(&f->l);
    free(f);
    return 0;
}

/* A lease expires exactly when its deadline is reached, not before. */
static void test_expires_at_deadline(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(leasesExtend(&f->l, 7, 1, 1000, 5000), 0);
    assert_null(leasesNextExpired(&f->l, 4999));
    assert_non_null(leasesNextExpired(&f->l, 5000));
    assert_int_equal(leasesNextExpired(&f->l, 5000)->session, 7);
}

/* Extending never shortens a lease: an earlier deadline is ignored. */
static void test_never_shortens(void **state)
{
    struct fixture *f = *state;
    leasesExtend(&f->l, 1, 1, 1000, 9000);
    leasesExtend(&f->l, 1, 2, 1000, 3000);
    assert_int_equal(leasesGet(&f->l, 1)->deadline_ms, 9000);
    assert_int_equal(leasesGet(&f->l, 1)->epoch, 2);
    leasesExtend(&f->l, 1, 2, 1000, 12000);
    assert_int_equal(leasesGet(&f->l, 1)->deadline_ms, 12000);
}

/* The earliest deadline comes out first among many sessions. */
static void test_order_many(void **state)
{
    struct fixture *f = *state;
    uint64_t prev = 0;
    unsigned seen = 0;
    struct lease *e;
    for (uint64_t i = 1; i <= 5000; i++) {
        /* A scrambled but deterministic order of deadlines. */
        uint64_t deadline = (i * 7919) % 10007 + 1;
        assert_int_equal(leasesExtend(&f->l, i, 1, 100, deadline), 0);
    }
    assert_int_equal(leasesCount(&f->l), 5000);
    while ((e = leasesNextExpired(&f->l, UINT64_MAX - 1)) != NULL) {
        assert_true(e->deadline_ms >= prev);
        prev = e->deadline_ms;
        leasesRemove(&f->l, e->session);
        seen++;
    }
    assert_int_equal(seen, 5000);
    assert_int_equal(leasesCount(&f->l), 0);
}

/* An expiring lease is not returned twice; a failed expiry brings it back. */
static void test_expiring(void **state)
{
    struct fixture *f = *state;
    struct lease *e;
    leasesExtend(&f->l, 3, 4, 1000, 100);
    e = leasesNextExpired(&f->l, 200);
    assert_non_null(e);
    leasesSetExpiring(&f->l, e);
    assert_null(leasesNextExpired(&f->l, 10000));
    assert_int_equal(leasesNextDeadline(&f->l), UINT64_MAX);
    leasesUnsetExpiring(&f->l, e, 250);
    assert_int_equal(leasesNextDeadline(&f->l), 250);
    assert_non_null(leasesNextExpired(&f->l, 250));
}

/* A keepalive (extend) while expiring revives the lease. */
static void test_extend_clears_expiring(void **state)
{
    struct fixture *f = *state;
    struct lease *e;
    leasesExtend(&f->l, 3, 1, 1000, 100);
    e = leasesNextExpired(&f->l, 100);
    leasesSetExpiring(&f->l, e);
    leasesExtend(&f->l, 3, 2, 1000, 1100);
    assert_false(leasesGet(&f->l, 3)->expiring);
    assert_int_equal(leasesGet(&f->l, 3)->deadline_ms, 1100);
}

/* Removal keeps the hash index consistent (backward-shift deletion). */
static void test_remove_lookup(void **state)
{
    struct fixture *f = *state;
    for (uint64_t i = 1; i <= 2000; i++) {
        leasesExtend(&f->l, i * 64, 1, 100, i);
    }
    for (uint64_t i = 1; i <= 2000; i += 2) {
        leasesRemove(&f->l, i * 64);
    }
    for (uint64_t i = 1; i <= 2000; i++) {
        if (i % 2 == 1) {
            assert_null(leasesGet(&f->l, i * 64));
        } else {
            assert_non_null(leasesGet(&f->l, i * 64));
            assert_int_equal(leasesGet(&f->l, i * 64)->deadline_ms, i);
        }
    }
    leasesClear(&f->l);
    assert_int_equal(leasesCount(&f->l), 0);
    assert_null(leasesGet(&f->l, 128));
}

/* Leases live in blocks: over several blocks, a lease keeps its address
 * while others come and go, removed slots are reused, and after a clear the
 * set works again from scratch. */
static void test_blocks(void **state)
{
    struct fixture *f = *state;
    enum { N = 3 * LEASES_BLOCK + 17 };
    struct lease *first[N + 1];
    uint64_t prev = 0;

    for (uint64_t i = 1; i <= N; i++) {
        assert_int_equal(leasesExtend(&f->l, i, 1, 100, 1000 + i), 0);
        first[i] = leasesGet(&f->l, i);
        assert_non_null(first[i]);
    }
    for (uint64_t i = 1; i <= N; i += 3) {
        leasesRemove(&f->l, i);
    }
    for (uint64_t i = N + 1; i <= N + N / 3; i++) {
        assert_int_equal(leasesExtend(&f->l, i, 1, 100, 5000 + i), 0);
    }
    for (uint64_t i = 1; i <= N; i++) {
        if (i % 3 == 1) {
            assert_null(leasesGet(&f->l, i));
        } else {
            assert_ptr_equal(leasesGet(&f->l, i), first[i]);
            assert_int_equal(first[i]->session, i);
            assert_int_equal(first[i]->deadline_ms, 1000 + i);
        }
    }
    /* Everything still comes out in deadline order. */
    while (leasesCount(&f->l) > 0) {
        struct lease *e = leasesNextExpired(&f->l, UINT64_MAX - 1);
        assert_non_null(e);
        assert_true(e->deadline_ms >= prev);
        prev = e->deadline_ms;
        leasesRemove(&f->l, e->session);
    }
    leasesClear(&f->l);
    assert_int_equal(leasesExtend(&f->l, 9, 2, 100, 77), 0);
    assert_int_equal(leasesGet(&f->l, 9)->epoch, 2);
    assert_int_equal(leasesNextDeadline(&f->l), 77);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expires_at_deadline, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_never_shortens, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_order_many, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_expiring, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_extend_clears_expiring, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_remove_lookup, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_blocks, setUp, tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
