/* Issue 2's acceptance test, end to end on 3 real tenured processes: a lock
 * taken through libtenure, a 409 over HTTP for a second holder naming the
 * first, kill -9 of the leader with the lock (same token) surviving on the
 * new leader, release, a larger token for the next grant, and every node
 * restarted with the state kept. */
#include "lib/test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/cluster.h"
#include "lib/extents.h"
#include "lib/http.h"
#include "tenure.h"

struct fixture
{
    struct tn_cluster cluster;
    tn_client *client;
    tn_session *session;
};

static uint64_t nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleepMs(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    if (f->session != NULL) {
        tn_session_abandon(f->session);
    }
    if (f->client != NULL) {
        tn_client_close(f->client);
    }
    clusterDestroy(&f->cluster);
    free(f);
    return 0;
}

static void startCluster(struct fixture *f)
{
    struct tn_client_opts o;
    if (clusterStart(&f->cluster, 3) != 0) {
        fail_msg("clusterStart: %s", f->cluster.errmsg);
    }
    if (clusterWaitLeader(&f->cluster, 15000) < 0) {
        fail_msg("no leader: %s", f->cluster.errmsg);
    }
    memset(&o, 0, sizeof o);
    o.timeout_ms = 10000; /* spans a leader election */
    assert_int_equal(
        tn_client_open(clusterRpcEndpoints(&f->cluster), &o, &f->client),
        TN_OK);
}

/* The state of @resource through the library; fails the test on error. */
static void lockStatus(struct fixture *f,
                       const char *resource,
                       struct tn_lock_info *info)
{
    int rc = tn_lock_status(f->client, resource, NULL, info);
    if (rc != TN_OK) {
        fail_msg("tn_lock_status: %s: %s", tn_strerror(rc),
                 tn_client_errmsg(f->client));
    }
}

/* GET /v1/locks/{id} on node @i: the token of the first holder, 0 if free.
 * A 503 (no leader known yet: a node that just restarted may still be
 * catching up) is retried for up to 5 s, as its Retry-After asks. */
static uint64_t httpToken(struct fixture *f, int i, const char *resource)
{
    struct http_response r;
    char path[256];
    json_t *j;
    json_t *t;
    uint64_t token = 0;
    uint64_t end = nowMs() + 5000;
    int status;

    snprintf(path, sizeof path, "/v1/locks/%s", resource);
    for (;;) {
        status = httpRequest(clusterHttpPort(&f->cluster, i), "GET", path,
                             NULL, NULL, &r);
        if (status != 503 || nowMs() >= end) {
            break;
        }
        httpResponseFree(&r);
        sleepMs(100);
    }
    if (status != 200) {
        fail_msg("GET %s on node %d: %d %s %s", path, i, status, r.error,
                 r.body != NULL ? r.body : "");
    }
    j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    t = json_object_get(j, "token");
    if (json_is_integer(t)) {
        token = (uint64_t)json_integer_value(t);
    }
    json_decref(j);
    httpResponseFree(&r);
    return token;
}

/* Wait (bounded) until the session's locks are valid again. */
static bool waitValid(tn_lock *l, unsigned ms)
{
    uint64_t end = nowMs() + ms;
    while (nowMs() < end) {
        if (tn_lock_valid(l)) {
            return true;
        }
        sleepMs(20);
    }
    return tn_lock_valid(l);
}

/* The whole scenario of issue 2. */
static void test_lock_survives_leader_kill_and_restart(void **state)
{
    struct fixture *f = *state;
    const char *resource = "acceptance-orders-42";
    struct http_response r;
    struct tn_lock_info info;
    tn_lock *l1;
    tn_lock *l2;
    tn_lock *l3;
    uint64_t t1;
    uint64_t t2;
    json_t *body;
    int leader;
    int leader2;
    int status;
    char path[256];

    startCluster(f);
    leader = clusterWaitLeader(&f->cluster, 15000);
    assert_true(leader >= 0);

    /* 1. Acquire through the library. */
    assert_int_equal(tn_session_open(f->client, "a", 10000, NULL,
                                     &f->session),
                     TN_OK);
    assert_int_equal(tn_lock_acquire(f->session, resource, NULL, &l1), TN_OK);
    t1 = tn_lock_token(l1);
    assert_true(t1 > 0);
    assert_true(tn_lock_valid(l1));

    /* 2. A second holder over HTTP gets 409 naming the first, on a
     * follower (which forwards) and on the leader. */
    snprintf(path, sizeof path, "/v1/locks/%s", resource);
    for (int k = 0; k < 2; k++) {
        int node = k == 0 ? (leader + 1) % 3 : leader;
        status = httpRequest(clusterHttpPort(&f->cluster, node), "PUT", path,
                             NULL, "{\"holder\":\"b\",\"ttl_ms\":10000}", &r);
        if (status != 409) {
            fail_msg("PUT on node %d: %d %s %s", node, status, r.error,
                     r.body != NULL ? r.body : "");
        }
        assert_non_null(r.content_type);
        assert_non_null(strstr(r.content_type, "application/problem+json"));
        body = json_loads(r.body, 0, NULL);
        assert_non_null(body);
        assert_string_equal(
            json_string_value(json_object_get(body, "holder")), "a");
        assert_int_equal(
            json_integer_value(json_object_get(body, "holder_token")), t1);
        json_decref(body);
        httpResponseFree(&r);
    }

    /* 3. kill -9 of the leader. */
    assert_int_equal(clusterKill(&f->cluster, leader), 0);
    leader2 = clusterWaitLeader(&f->cluster, 15000);
    if (leader2 < 0) {
        fail_msg("no new leader: %s", f->cluster.errmsg);
    }
    assert_int_not_equal(leader2, leader);

    /* 4. Still held, same token, on the new leader: through the library
     * (which found the new leader by itself) and over HTTP. */
    lockStatus(f, resource, &info);
    assert_int_equal(info.state, TN_STATE_HELD);
    assert_int_equal(info.n_holders, 1);
    assert_int_equal(info.holders[0].token, t1);
    assert_string_equal(info.holders[0].holder, "a");
    assert_int_equal(info.holders[0].session, tn_session_id(f->session));
    tn_lock_info_clear(&info);
    assert_int_equal(httpToken(f, leader2, resource), t1);
    /* The keepalives moved to the new leader: the lock is valid. */
    assert_true(waitValid(l1, 5000));

    /* 5. Release; 6. a new grant has a larger token. */
    assert_int_equal(tn_lock_release(l1), TN_OK);
    tn_lock_free(l1);
    lockStatus(f, resource, &info);
    assert_int_equal(info.state, TN_STATE_FREE);
    tn_lock_info_clear(&info);
    assert_int_equal(tn_lock_acquire(f->session, resource, NULL, &l2), TN_OK);
    t2 = tn_lock_token(l2);
    assert_true(t2 > t1);

    /* 7. The old leader comes back; then every node is killed and
     * restarted from its data directory. */
    assert_int_equal(clusterRestart(&f->cluster, leader), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(clusterKill(&f->cluster, i), 0);
    }
    for (int i = 0; i < 3; i++) {
        if (clusterRestart(&f->cluster, i) != 0) {
            fail_msg("restart %d: %s", i, f->cluster.errmsg);
        }
    }
    leader = clusterWaitLeader(&f->cluster, 20000);
    if (leader < 0) {
        fail_msg("no leader after the restart: %s", f->cluster.errmsg);
    }

    /* 8. The state is kept: the same holder and token, tokens keep
     * increasing, and the session is alive (its keepalives work again). */
    lockStatus(f, resource, &info);
    assert_int_equal(info.state, TN_STATE_HELD);
    assert_int_equal(info.n_holders, 1);
    assert_int_equal(info.holders[0].token, t2);
    assert_string_equal(info.holders[0].holder, "a");
    tn_lock_info_clear(&info);
    for (int i = 0; i < 3; i++) {
        /* Every replica has it (a linearizable read on the leader, a
         * forwarded one from the followers). */
        assert_int_equal(httpToken(f, i, resource), t2);
    }
    assert_true(waitValid(l2, 10000));
    assert_int_equal(tn_lock_acquire(f->session, "acceptance-other", NULL, &l3),
                     TN_OK);
    assert_true(tn_lock_token(l3) > t2);
    assert_int_equal(tn_lock_release(l3), TN_OK);
    assert_int_equal(tn_lock_release(l2), TN_OK);
    tn_lock_free(l3);
    tn_lock_free(l2);
    assert_int_equal(tn_session_close(f->session), TN_OK);
    f->session = NULL;
    clusterPassed(&f->cluster);
}

/* fileExtents of the file at @path. */
static int extents(const char *path, int *unwritten)
{
    int fd = open(path, O_RDONLY);
    int n;

    if (fd < 0) {
        fail_msg("open %s: %s", path, strerror(errno));
    }
    n = fileExtents(fd, unwritten);
    close(fd);
    return n;
}

/* One look at @dir's open segments: 1 when every one is written (no
 * unwritten extent, at least one extent), 0 when one is not (yet): @why
 * says which; -1 when the file system cannot tell (no FIEMAP). */
static int segmentsWritten(const char *dir, char *why, size_t why_len)
{
    struct dirent *de;
    DIR *d = opendir(dir);
    int checked = 0;
    int rv = 1;

    if (d == NULL) {
        fail_msg("opendir %s: %s", dir, strerror(errno));
    }
    snprintf(why, why_len, "no open segment in %s", dir);
    while (rv == 1 && (de = readdir(d)) != NULL) {
        char path[512];
        int unwritten;
        int n;
        if (strncmp(de->d_name, "open-", 5) != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        n = extents(path, &unwritten);
        if (n < 0) {
            rv = -1;
        } else if (n == 0 || unwritten > 0) {
            snprintf(why, why_len, "%s: %d extents, %d unwritten", path, n,
                     unwritten);
            rv = 0;
        }
        checked++;
    }
    closedir(d);
    return checked == 0 && rv == 1 ? 0 : rv;
}

/* The daemon's posix_fallocate and syscall are the ones libraft calls
 * (zero-filled segments, closed segments' AIO contexts destroyed off the
 * loop; also said when built against a libraft other than 0.22.1, whose
 * close paths the deferral was checked against): the daemon says so at
 * start when they are not. Then the log
 * segments are written blocks, not fallocated ("unwritten") ones that
 * every synced append would have to convert (server/segment_fill.c): this
 * fails if libraft's posix_fallocate does not bind to the daemon's. A
 * segment libraft is still preparing in the background can be caught
 * half-filled: looked at again for up to 5 s. */
static void test_log_segments_zero_filled(void **state)
{
    struct fixture *f = *state;
    const char *dir;
    char why[600];
    uint64_t end;
    int rv;
    tn_lock *l;

    startCluster(f);
    assert_int_equal(tn_session_open(f->client, "z", 10000, NULL,
                                     &f->session),
                     TN_OK);
    assert_int_equal(tn_lock_acquire(f->session, "zero-filled", NULL, &l),
                     TN_OK);
    assert_int_equal(tn_lock_release(l), TN_OK);
    tn_lock_free(l);
    for (int i = 0; i < 3; i++) {
        const char *log = f->cluster.nodes[i].log_path;
        assert_true(clusterFileContains(log, "node started"));
        assert_false(clusterFileContains(log, "log segments are not zero-filled"));
        assert_false(clusterFileContains(log, "log writers are destroyed on the loop"));
    }
    dir = f->cluster.nodes[0].data_dir;
    end = nowMs() + 5000;
    while ((rv = segmentsWritten(dir, why, sizeof why)) == 0 &&
           nowMs() < end) {
        sleepMs(100);
    }
    if (rv < 0) {
        print_message("no FIEMAP on %s: not checked\n", dir);
        clusterPassed(&f->cluster);
        skip();
    }
    if (rv == 0) {
        fail_msg("%s", why);
    }
    clusterPassed(&f->cluster);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_lock_survives_leader_kill_and_restart, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_log_segments_zero_filled, setUp,
                                        tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
