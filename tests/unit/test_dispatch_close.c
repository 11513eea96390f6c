/* The dispatch's shutdown contract (server/dispatch.c, node.c): after
 * dispatchClose's callback the dispatch stays valid until dispatchFree,
 * and a request that a front end still submits in between (its connection
 * is open until its server closes) is answered CANCELED. A fault-harness
 * run under ASan once caught an HTTP request read in that window using the
 * freed dispatch. */
#include "lib/test.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "dispatch_impl.h"
#include "fsm.h"
#include "tenure.pb-c.h"

static int closed;

static void closedCb(void *data)
{
    (void)data;
    closed++;
}

static int answered;

static void answerCb(struct dispatch_req *req, const Tn__Response *resp)
{
    (void)req;
    (void)resp;
    answered++;
}

static void test_submit_after_close_is_canceled(void **state)
{
    uv_loop_t loop;
    struct fsm fsm;
    struct fsm_config fc;
    struct dispatch_config dc;
    struct dispatch *d;
    Tn__Request rq = TN__REQUEST__INIT;
    Tn__ClusterStatus cs = TN__CLUSTER_STATUS__INIT;
    struct dispatch_req req;
    (void)state;

    assert_int_equal(uv_loop_init(&loop), 0);
    fsmConfigDefaults(&fc);
    assert_int_equal(fsmInit(&fsm, &fc), 0);
    memset(&dc, 0, sizeof dc);
    dc.node_id = 1;
    dc.raft_address = "127.0.0.1:1";
    dc.rpc_address = "127.0.0.1:2";
    dc.http_address = "127.0.0.1:3";
    assert_int_equal(dispatchInit(&d, &loop, &fsm, &dc), 0);

    closed = 0;
    dispatchClose(d, closedCb, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);

    /* The close callback has fired: a late submit is refused, not a use of
     * freed memory (ASan builds would stop here before the fix). */
    rq.body_case = TN__REQUEST__BODY_CLUSTER_STATUS;
    rq.cluster_status = &cs;
    memset(&req, 0, sizeof req);
    req.request = &rq;
    req.cb = answerCb;
    answered = 0;
    assert_int_equal(dispatchSubmit(d, &req), TN__STATUS__CANCELED);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(answered, 0); /* refused synchronously, no callback */

    dispatchFree(d);
    fsmClose(&fsm);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_after_close_is_canceled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
