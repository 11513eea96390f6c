/* Unit tests of the metrics module: histograms, the top-k contention
 * sketch and the Prometheus rendering. */
#include "lib/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "tenure.pb-c.h"

struct fixture
{
    struct metrics m;
    char out[65536];
    size_t len;
};

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    metricsInit(&f->m);
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    free(*state);
    return 0;
}

static void emit(void *ctx, const char *text, size_t len)
{
    struct fixture *f = ctx;
    assert_true(f->len + len < sizeof f->out);
    memcpy(f->out + f->len, text, len);
    f->len += len;
    f->out[f->len] = '\0';
}

/* Quantiles come from the bucket the rank falls in. */
static void test_quantiles(void **state)
{
    struct fixture *f = *state;
    struct metrics_hist h;
    memset(&h, 0, sizeof h);
    assert_int_equal(metricsHistQuantileMs(&h, 0.5), 0);
    for (int i = 0; i < 98; i++) {
        metricsHistObserve(&h, 0.0008); /* bucket le=0.001 */
    }
    metricsHistObserve(&h, 0.2); /* le=0.25 */
    metricsHistObserve(&h, 100); /* above every bound */
    assert_int_equal(h.count, 100);
    assert_int_equal(metricsHistQuantileMs(&h, 0.5), 1);
    assert_int_equal(metricsHistQuantileMs(&h, 0.985), 250);
    assert_int_equal(metricsHistQuantileMs(&h, 0.999), 60000);
    (void)f;
}

/* Uncontended acquires never enter the sketch; contended ones do, and the
 * heaviest comes first. */
static void test_topk_order(void **state)
{
    struct fixture *f = *state;
    const struct metrics_contended *top[4];
    metricsAcquire(&f->m, "quiet", TN__STATUS__OK, 0.001, 0);
    metricsAcquire(&f->m, "warm", TN__STATUS__HELD, 0.001, 0);
    for (int i = 0; i < 5; i++) {
        metricsAcquire(&f->m, "hot", TN__STATUS__HELD, 0.001, 0);
    }
    metricsAcquire(&f->m, "hot", TN__STATUS__OK, 0.3, 1);
    assert_int_equal(metricsTop(&f->m, top, 4), 2);
    assert_string_equal(top[0]->resource, "hot");
    assert_int_equal(top[0]->conflicts, 5);
    assert_int_equal(top[0]->acquires, 6);
    assert_int_equal(metricsHistQuantileMs(&top[0]->wait, 0.5), 500);
    assert_string_equal(top[1]->resource, "warm");
    assert_int_equal(f->m.acquire[TN__STATUS__HELD], 6);
}

/* Memory stays bounded: with more contended resources than slots, the
 * lightest is replaced and a heavy one stays. */
static void test_topk_bounded(void **state)
{
    struct fixture *f = *state;
    const struct metrics_contended *top[METRICS_TOPK];
    char name[32];
    for (int i = 0; i < 50; i++) {
        metricsAcquire(&f->m, "heavy", TN__STATUS__HELD, 0, 0);
    }
    for (int i = 0; i < 10 * METRICS_TOPK; i++) {
        snprintf(name, sizeof name, "r%d", i);
        metricsAcquire(&f->m, name, TN__STATUS__HELD, 0, 0);
    }
    assert_int_equal(metricsTop(&f->m, top, METRICS_TOPK), METRICS_TOPK);
    assert_string_equal(top[0]->resource, "heavy");
    assert_int_equal(top[0]->weight, 50);
}

/* Late renew/release count as safety incidents; the rendering has HELP and
 * TYPE for every family and a cumulative histogram ending in +Inf. */
static void test_render(void **state)
{
    struct fixture *f = *state;
    struct metrics_gauges g;
    memset(&g, 0, sizeof g);
    g.sessions = 3;
    metricsRelease(&f->m, "x", TN__STATUS__LEASE_EXPIRED, -1);
    metricsRenew(&f->m, TN__STATUS__LEASE_EXPIRED);
    metricsRelease(&f->m, "x", TN__STATUS__OK, 1.5);
    assert_int_equal(f->m.incidents, 2);
    metricsRender(&f->m, &g, emit, f);
    assert_non_null(strstr(f->out, "# TYPE tenure_lock_hold_seconds histogram\n"));
    assert_non_null(strstr(f->out, "tenure_lock_hold_seconds_bucket{le=\"2.5\"} 1\n"));
    assert_non_null(strstr(f->out, "tenure_lock_hold_seconds_bucket{le=\"+Inf\"} 1\n"));
    assert_non_null(strstr(f->out, "tenure_safety_incidents_total 2\n"));
    assert_non_null(strstr(f->out, "tenure_release_total{outcome=\"lease_expired\"} 1\n"));
    assert_non_null(strstr(f->out, "tenure_sessions 3\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_quantiles, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_topk_order, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_topk_bounded, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_render, setUp, tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
