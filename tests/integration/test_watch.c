/* Streamed watches (RPC Watch / WatchCancel, tn_watch_*, tenurectl watch)
 * against one cluster of 3 real tenured processes shared by the group:
 *
 *   events          a stream starts with the current state, then shows an
 *                   acquire, a release and an expiry, in index order;
 *   prefix          a prefix stream shows changes to several resources and
 *                   nothing for resources outside the prefix;
 *   cancel          WatchCancel ends the stream with a final CANCELED; an
 *                   unknown watch id gets NOT_FOUND;
 *   followers       a linearizable stream on a follower gets NOT_LEADER
 *                   naming the leader; a stale one is served there;
 *   limits          the 257th watch on one connection is refused;
 *   closing         connections closed with streams active (events pending,
 *                   nothing read) leave the node healthy, and nodes stopped
 *                   afterwards exit 0 (under ASan: no leaks);
 *   library         tn_watch_* sees the states of one resource and of a
 *                   prefix; after a leader kill it resumes on the new leader
 *                   and sees the final state, indexes never going down;
 *   tenurectl       `tenurectl watch` and `watch --prefix` print events;
 *   progress        an idle stream (leader, and stale on a follower) gets
 *                   the same state again every progress interval;
 *   frozen leader   a tn_watch_* stream alone on its connection to a
 *                   SIGSTOPped leader notices the silence and sees a change
 *                   made through the new leader, within a bound.
 *
 * The daemons run with a short progress interval (PROGRESS_MS) to keep
 * this quick; the library is told the same.
 *
 * Raw RPC is spoken with the generated protobuf code (linked in) over
 * blocking sockets with bounded waits. */
#include "lib/test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "lib/cluster.h"
#include "tenure.h"
#include "tenure.pb-c.h"
#include "tenure/uv.h"

#define EVENT_TIMEOUT_MS 5000
#define PROGRESS_MS      1500
#define PROGRESS_MS_ARG  "1500"
/* The library's limit, in progress intervals (client/engine.h). */
#define ENGINE_STREAM_SILENCE 3

struct suite
{
    struct tn_cluster cluster;
    int leader;
    tn_client *client;
    tn_session *session;
    char tenurectl[512];
    pid_t ctl;    /* a running tenurectl, killed in teardown */
    pid_t frozen; /* a SIGSTOPped daemon, continued in teardown */
};

static struct suite *S;

/* ------------------------------------------------------------- helpers */

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

static int rpcConnect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0) {
        fail_msg("socket: %s", strerror(errno));
    }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fail_msg("connect to %d: %s", port, strerror(errno));
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void rpcSend(int fd, const Tn__Request *req)
{
    uint8_t *buf;
    size_t len;
    size_t off = 0;
    assert_int_equal(tn_frame_encode(&req->base, SIZE_MAX, &buf, &len), 0);
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            free(buf);
            fail_msg("write: %s", strerror(errno));
        }
        off += (size_t)n;
    }
    free(buf);
}

/* Read exactly @len bytes before @deadline; false on timeout or EOF. */
static bool readFull(int fd, uint8_t *p, size_t len, uint64_t deadline)
{
    size_t got = 0;
    while (got < len) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        uint64_t now = nowMs();
        ssize_t n;
        if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0) {
            return false;
        }
        n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        got += (size_t)n;
    }
    return true;
}

/* The next Response, or NULL after @timeout_ms. */
static Tn__Response *rpcRecv(int fd, int timeout_ms)
{
    uint64_t deadline = nowMs() + (uint64_t)timeout_ms;
    uint8_t hdr[4];
    uint8_t *payload;
    uint32_t n;
    Tn__Response *r;

    if (!readFull(fd, hdr, 4, deadline)) {
        return NULL;
    }
    n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
        (uint32_t)hdr[2] << 8 | hdr[3];
    payload = malloc(n ? n : 1);
    assert_non_null(payload);
    if (!readFull(fd, payload, n, deadline)) {
        free(payload);
        return NULL;
    }
    r = tn__response__unpack(NULL, n, payload);
    free(payload);
    assert_non_null(r);
    return r;
}

static void sendWatch(int fd,
                      uint64_t id,
                      const char *resource,
                      bool prefix,
                      bool stale,
                      uint64_t index)
{
    Tn__Request req = TN__REQUEST__INIT;
    Tn__Watch w = TN__WATCH__INIT;
    w.resource = (char *)resource;
    w.prefix = prefix;
    w.stale = stale;
    w.index = index;
    req.id = id;
    req.body_case = TN__REQUEST__BODY_WATCH;
    req.watch = &w;
    rpcSend(fd, &req);
}

static void sendCancel(int fd, uint64_t id, uint64_t watch_id)
{
    Tn__Request req = TN__REQUEST__INIT;
    Tn__WatchCancel c = TN__WATCH_CANCEL__INIT;
    c.watch_id = watch_id;
    req.id = id;
    req.body_case = TN__REQUEST__BODY_WATCH_CANCEL;
    req.watch_cancel = &c;
    rpcSend(fd, &req);
}

/* Holders of a single-resource event. */
static size_t holders(const Tn__Response *r)
{
    assert_int_equal(r->body_case, TN__RESPONSE__BODY_LOCK);
    return r->lock->n_holders;
}

/* Read events of stream @id until @pred holds for one (returned; free it
 * with tn__response__free_unpacked). Every event must belong to the stream,
 * go on (more), and have an index no lower than *@index, which follows. */
static Tn__Response *awaitEvent(int fd,
                                uint64_t id,
                                uint64_t *index,
                                bool (*pred)(const Tn__Response *r, void *arg),
                                void *arg,
                                const char *what)
{
    uint64_t deadline = nowMs() + EVENT_TIMEOUT_MS;
    while (nowMs() < deadline) {
        Tn__Response *r = rpcRecv(fd, (int)(deadline - nowMs()) + 1);
        if (r == NULL) {
            break;
        }
        if (r->id != id || r->status != TN__STATUS__OK || !r->more) {
            fail_msg("%s: unexpected response id=%llu status=%d more=%d "
                     "message=%s",
                     what, (unsigned long long)r->id, r->status, r->more,
                     r->message ? r->message : "");
        }
        if (r->index < *index) {
            fail_msg("%s: index went down from %llu to %llu", what,
                     (unsigned long long)*index, (unsigned long long)r->index);
        }
        *index = r->index;
        if (pred(r, arg)) {
            return r;
        }
        tn__response__free_unpacked(r, NULL);
    }
    fail_msg("%s: no such event within %d ms", what, EVENT_TIMEOUT_MS);
    return NULL;
}

static bool isFree(const Tn__Response *r, void *arg)
{
    (void)arg;
    return holders(r) == 0;
}

static bool heldBy(const Tn__Response *r, void *arg)
{
    uint64_t token = *(uint64_t *)arg;
    return holders(r) == 1 && r->lock->holders[0]->token == token;
}

static bool listHas(const Tn__Response *r, void *arg)
{
    const char *const *names = arg;
    size_t n = 0;
    assert_int_equal(r->body_case, TN__RESPONSE__BODY_LIST);
    while (names[n] != NULL) {
        n++;
    }
    if (r->list->n_locks != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(r->list->locks[i]->resource, names[i]) != 0) {
            return false;
        }
    }
    return true;
}

static tn_lock *acquire(tn_session *s, const char *resource)
{
    tn_lock *l = NULL;
    int rc = tn_lock_acquire(s, resource, NULL, &l);
    if (rc != TN_OK) {
        fail_msg("acquire %s: %s", resource,
                 tn_client_errmsg(tn_session_client(s)));
    }
    return l;
}

static void release(tn_lock *l)
{
    int rc = tn_lock_release(l);
    if (rc != TN_OK) {
        fail_msg("release: %s", tn_strerror(rc));
    }
    tn_lock_free(l);
}

static int leaderPort(void)
{
    return clusterRpcPort(&S->cluster, S->leader);
}

static int followerIndex(void)
{
    for (int i = 0; i < S->cluster.n; i++) {
        if (i != S->leader && clusterRunning(&S->cluster, i)) {
            return i;
        }
    }
    fail_msg("no follower running");
    return -1;
}

/* ------------------------------------------------------------- group */

static int groupSetUp(void **state)
{
    static const char *const progress_args[] = { "--watch-progress-ms",
                                                 PROGRESS_MS_ARG, NULL };
    struct tn_client_opts o;
    const char *bin = getenv("TENURE_BIN_DIR");
    (void)state;

    signal(SIGPIPE, SIG_IGN);
    S = calloc(1, sizeof *S);
    if (S == NULL) {
        return -1;
    }
    snprintf(S->tenurectl, sizeof S->tenurectl, "%s/tenurectl",
             bin != NULL ? bin : "build");
    if (clusterStartWith(&S->cluster, 3, progress_args) != 0) {
        fprintf(stderr, "clusterStart: %s\n", S->cluster.errmsg);
        return -1;
    }
    S->leader = clusterWaitLeader(&S->cluster, 15000);
    if (S->leader < 0) {
        fprintf(stderr, "no leader: %s\n", S->cluster.errmsg);
        return -1;
    }
    memset(&o, 0, sizeof o);
    o.timeout_ms = 10000; /* spans a leader election */
    o.watch_progress_ms = PROGRESS_MS;
    if (tn_client_open(clusterRpcEndpoints(&S->cluster), &o, &S->client) !=
            TN_OK ||
        tn_session_open(S->client, "watch-test", 10000, NULL, &S->session) !=
            TN_OK) {
        fprintf(stderr, "client: %s\n",
                S->client ? tn_client_errmsg(S->client) : "open failed");
        return -1;
    }
    return 0;
}

static int groupTearDown(void **state)
{
    (void)state;
    if (S->frozen > 0) {
        kill(S->frozen, SIGCONT);
    }
    if (S->ctl > 0) {
        kill(S->ctl, SIGKILL);
        waitpid(S->ctl, NULL, 0);
    }
    if (S->session != NULL) {
        tn_session_abandon(S->session);
    }
    if (S->client != NULL) {
        tn_client_close(S->client);
    }
    clusterDestroy(&S->cluster);
    free(S);
    return 0;
}

/* ------------------------------------------------------------- tests */

/* The first event is the current state; acquire, release and expiry follow
 * in index order, each with the state right after it. */
static void test_stream_events(void **state)
{
    int fd = rpcConnect(leaderPort());
    uint64_t index = 0;
    uint64_t token;
    uint64_t before;
    Tn__Response *r;
    tn_session *brief = NULL;
    tn_lock *l;
    (void)state;

    sendWatch(fd, 7, "ev/a", false, false, 0);
    r = awaitEvent(fd, 7, &index, isFree, NULL, "initial state");
    assert_string_equal(r->lock->resource, "ev/a");
    tn__response__free_unpacked(r, NULL);

    l = acquire(S->session, "ev/a");
    token = tn_lock_token(l);
    before = index;
    r = awaitEvent(fd, 7, &index, heldBy, &token, "acquire");
    assert_true(r->index > before);
    assert_string_equal(r->lock->holders[0]->holder, "watch-test");
    tn__response__free_unpacked(r, NULL);

    before = index;
    release(l);
    r = awaitEvent(fd, 7, &index, isFree, NULL, "release");
    assert_true(r->index > before);
    tn__response__free_unpacked(r, NULL);

    /* Expiry: a session nobody keeps alive. */
    assert_int_equal(
        tn_session_open(S->client, "brief", 1000, NULL, &brief), TN_OK);
    l = acquire(brief, "ev/a");
    token = tn_lock_token(l);
    r = awaitEvent(fd, 7, &index, heldBy, &token, "acquire by brief");
    tn__response__free_unpacked(r, NULL);
    before = index;
    tn_session_abandon(brief);
    tn_lock_free(l);
    r = awaitEvent(fd, 7, &index, isFree, NULL, "expiry");
    assert_true(r->index > before);
    tn__response__free_unpacked(r, NULL);

    /* Resuming from the last index: nothing changed, so nothing comes. */
    close(fd);
    fd = rpcConnect(leaderPort());
    sendWatch(fd, 8, "ev/a", false, false, index);
    r = rpcRecv(fd, 500);
    assert_null(r);
    /* Resuming from an older index: the latest state at once. */
    sendWatch(fd, 9, "ev/a", false, false, before);
    before = 0;
    r = awaitEvent(fd, 9, &before, isFree, NULL, "resume");
    assert_true(r->index >= index);
    tn__response__free_unpacked(r, NULL);
    close(fd);
}

/* A prefix stream shows changes of every resource under it, nothing of
 * others. */
static void test_prefix_stream(void **state)
{
    int fd = rpcConnect(leaderPort());
    uint64_t index = 0;
    const char *none[] = { NULL };
    const char *both[] = { "pf/1", "pf/2", NULL };
    const char *two[] = { "pf/2", NULL };
    tn_lock *a;
    tn_lock *b;
    tn_lock *other;
    Tn__Response *r;
    (void)state;

    sendWatch(fd, 3, "pf/", true, false, 0);
    r = awaitEvent(fd, 3, &index, listHas, none, "initial list");
    tn__response__free_unpacked(r, NULL);

    a = acquire(S->session, "pf/1");
    b = acquire(S->session, "pf/2");
    r = awaitEvent(fd, 3, &index, listHas, both, "two locks");
    assert_int_equal(r->list->locks[0]->holders[0]->token, tn_lock_token(a));
    tn__response__free_unpacked(r, NULL);

    release(a);
    r = awaitEvent(fd, 3, &index, listHas, two, "one released");
    tn__response__free_unpacked(r, NULL);

    /* Outside the prefix: no event. */
    other = acquire(S->session, "pg/1");
    r = rpcRecv(fd, 500);
    if (r != NULL) {
        fail_msg("event for a resource outside the prefix (index %llu)",
                 (unsigned long long)r->index);
    }
    release(other);
    release(b);
    r = awaitEvent(fd, 3, &index, listHas, none, "all released");
    tn__response__free_unpacked(r, NULL);
    close(fd);
}

/* WatchCancel ends the stream with CANCELED; an unknown id: NOT_FOUND. */
static void test_cancel(void **state)
{
    int fd = rpcConnect(leaderPort());
    uint64_t index = 0;
    bool got_cancel_ok = false;
    bool got_final = false;
    Tn__Response *r;
    (void)state;

    sendWatch(fd, 21, "cx/a", false, false, 0);
    r = awaitEvent(fd, 21, &index, isFree, NULL, "initial");
    tn__response__free_unpacked(r, NULL);

    sendCancel(fd, 22, 21);
    while (!(got_cancel_ok && got_final)) {
        r = rpcRecv(fd, EVENT_TIMEOUT_MS);
        assert_non_null(r);
        if (r->id == 22) {
            assert_int_equal(r->status, TN__STATUS__OK);
            got_cancel_ok = true;
        } else {
            assert_int_equal(r->id, 21);
            assert_false(r->more);
            assert_int_equal(r->status, TN__STATUS__CANCELED);
            got_final = true;
        }
        tn__response__free_unpacked(r, NULL);
    }
    /* Nothing more for the cancelled stream, even after a change. */
    release(acquire(S->session, "cx/a"));
    r = rpcRecv(fd, 500);
    assert_null(r);

    sendCancel(fd, 23, 21);
    r = rpcRecv(fd, EVENT_TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->id, 23);
    assert_int_equal(r->status, TN__STATUS__NOT_FOUND);
    tn__response__free_unpacked(r, NULL);
    close(fd);
}

/* A follower redirects a linearizable stream and serves a stale one. */
static void test_followers(void **state)
{
    int f = followerIndex();
    int fd = rpcConnect(clusterRpcPort(&S->cluster, f));
    char leader_rpc[64];
    uint64_t index = 0;
    uint64_t token;
    Tn__Response *r;
    tn_lock *l;
    (void)state;

    snprintf(leader_rpc, sizeof leader_rpc, "127.0.0.1:%d", leaderPort());
    sendWatch(fd, 1, "fo/a", false, false, 0);
    r = rpcRecv(fd, EVENT_TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->status, TN__STATUS__NOT_LEADER);
    assert_false(r->more);
    assert_string_equal(r->leader_rpc, leader_rpc);
    tn__response__free_unpacked(r, NULL);

    sendWatch(fd, 2, "fo/a", false, true, 0);
    r = awaitEvent(fd, 2, &index, isFree, NULL, "stale initial");
    tn__response__free_unpacked(r, NULL);
    l = acquire(S->session, "fo/a");
    token = tn_lock_token(l);
    r = awaitEvent(fd, 2, &index, heldBy, &token, "stale acquire");
    tn__response__free_unpacked(r, NULL);
    release(l);
    r = awaitEvent(fd, 2, &index, isFree, NULL, "stale release");
    tn__response__free_unpacked(r, NULL);
    close(fd);
}

/* At most 256 watches per connection; bad requests are refused. */
static void test_limits(void **state)
{
    int fd = rpcConnect(leaderPort());
    int events = 0;
    bool refused = false;
    bool invalid = false;
    (void)state;

    for (uint64_t id = 1; id <= 257; id++) {
        char res[32];
        snprintf(res, sizeof res, "lim/%llu", (unsigned long long)id);
        sendWatch(fd, id, res, false, false, 0);
    }
    while (events < 256 || !refused) {
        Tn__Response *r = rpcRecv(fd, EVENT_TIMEOUT_MS);
        if (r == NULL) {
            fail_msg("%d events, refused=%d invalid=%d", events, refused,
                     invalid);
        }
        if (r->id == 257) {
            assert_int_equal(r->status, TN__STATUS__REFUSED);
            assert_false(r->more);
            refused = true;
        } else {
            assert_true(r->more);
            events++;
        }
        tn__response__free_unpacked(r, NULL);
    }
    close(fd);

    fd = rpcConnect(leaderPort());
    sendWatch(fd, 1000, "", false, false, 0);
    sendWatch(fd, 1001, "", true, false, 0); /* "" prefix: everything */
    while (!invalid || events < 257) {
        Tn__Response *r = rpcRecv(fd, EVENT_TIMEOUT_MS);
        assert_non_null(r);
        if (r->id == 1000) {
            assert_int_equal(r->status, TN__STATUS__INVALID_ARGUMENT);
            assert_false(r->more);
            invalid = true;
        } else {
            assert_int_equal(r->id, 1001);
            assert_true(r->more);
            events++;
        }
        tn__response__free_unpacked(r, NULL);
    }
    close(fd);
}

/* A reader that does not read: the node keeps at most one pending event
 * per stream, so it sends far fewer events than there were changes, and
 * the last one shows the final state. */
static void test_slow_reader(void **state)
{
    enum { LOCKS = 500, PAIRS = 100 };
    char holder[251];
    tn_session *s = NULL;
    tn_lock *l;
    uint64_t index = 0;
    uint64_t t0 = nowMs();
    int events = 0;
    bool final = false;
    int fd;
    (void)state;

    memset(holder, 'h', sizeof holder - 1);
    holder[sizeof holder - 1] = '\0';
    assert_int_equal(tn_session_open(S->client, holder, 20000, NULL, &s),
                     TN_OK);
    for (int i = 0; i < LOCKS; i++) {
        char res[32];
        snprintf(res, sizeof res, "sl/%03d", i);
        tn_lock_free(acquire(s, res)); /* held until the session closes */
    }
    fd = rpcConnect(leaderPort());
    sendWatch(fd, 1, "sl/", true, false, 0);
    /* Each event is about 150 KB; nothing is read meanwhile. */
    for (int i = 0; i < PAIRS; i++) {
        l = acquire(s, "sl/zz");
        release(l);
    }
    /* Read until the stream goes quiet; the last event must show the
     * state after the last release. */
    for (;;) {
        Tn__Response *r = rpcRecv(fd, events == 0 ? EVENT_TIMEOUT_MS : 1000);
        if (r == NULL) {
            break;
        }
        assert_int_equal(r->id, 1);
        assert_true(r->more);
        assert_true(r->index >= index);
        index = r->index;
        events++;
        final = r->list->n_locks == LOCKS &&
                strcmp(r->list->locks[LOCKS - 1]->resource, "sl/499") == 0;
        tn__response__free_unpacked(r, NULL);
    }
    assert_true(final);
    print_message("slow reader: %d events for %d changes (%llu ms)\n", events,
                  2 * PAIRS, (unsigned long long)(nowMs() - t0));
    /* Without coalescing about one event per change arrives (a few
     * changes share an entry); with it, the kernel's buffers and one held
     * event. */
    if (events > PAIRS) {
        fail_msg("%d events for %d changes: not coalesced", events,
                 2 * PAIRS);
    }
    close(fd);
    assert_int_equal(tn_session_close(s), TN_OK);
}

/* Connections closed with streams active, events pending and unread: the
 * node stays healthy, and stops cleanly afterwards (no leak under ASan). */
static void test_close_with_streams(void **state)
{
    int nodes[2] = { followerIndex(), S->leader };
    (void)state;

    for (int k = 0; k < 2; k++) {
        int node = nodes[k];
        bool stale = node != S->leader;
        for (int round = 0; round < 3; round++) {
            int fd = rpcConnect(clusterRpcPort(&S->cluster, node));
            tn_lock *l;
            for (uint64_t id = 1; id <= 40; id++) {
                sendWatch(fd, id, id % 2 ? "cl/a" : "cl/", id % 2 == 0, stale,
                          id % 3 == 0 ? 0 : 1);
            }
            l = acquire(S->session, "cl/a");
            if (round == 1) {
                sleepMs(50); /* let some events be written, unread */
            }
            sendCancel(fd, 99, 3);
            close(fd); /* events may be pending right now */
            release(l);
        }
        /* Still serving streams. */
        {
            int fd = rpcConnect(clusterRpcPort(&S->cluster, node));
            uint64_t index = 0;
            Tn__Response *r;
            sendWatch(fd, 5, "cl/a", false, stale, 0);
            r = awaitEvent(fd, 5, &index, isFree, NULL, "after closes");
            tn__response__free_unpacked(r, NULL);
            /* Left open: the node shuts down with a stream active. */
            if (clusterStop(&S->cluster, node) != 0) {
                fail_msg("node %d did not stop cleanly: %s", node,
                         S->cluster.errmsg);
            }
            close(fd);
        }
        if (clusterRestart(&S->cluster, node) != 0) {
            fail_msg("restart: %s", S->cluster.errmsg);
        }
        S->leader = clusterWaitLeader(&S->cluster, 15000);
        assert_true(S->leader >= 0);
        if (k == 0) {
            nodes[1] = S->leader;
        }
    }
}

/* tn_watch_* on one resource and on a prefix. */
static void test_library(void **state)
{
    struct tn_watch_event ev;
    tn_watch *w;
    tn_watch *p;
    tn_lock *l;
    uint64_t last;
    (void)state;

    assert_int_equal(tn_watch_open(S->client, "lib/a", 0, 0, &w), TN_OK);
    assert_int_equal(
        tn_watch_open(S->client, "lib/", TN_WATCH_PREFIX, 0, &p), TN_OK);
    assert_int_equal(tn_watch_next(w, EVENT_TIMEOUT_MS, &ev), TN_OK);
    assert_int_equal(ev.n_locks, 1);
    assert_string_equal(ev.locks[0].resource, "lib/a");
    assert_int_equal(ev.locks[0].state, TN_STATE_FREE);
    last = ev.index;
    tn_watch_event_clear(&ev);
    assert_int_equal(tn_watch_next(p, EVENT_TIMEOUT_MS, &ev), TN_OK);
    assert_int_equal(ev.n_locks, 0);
    tn_watch_event_clear(&ev);

    l = acquire(S->session, "lib/a");
    assert_int_equal(tn_watch_next(w, EVENT_TIMEOUT_MS, &ev), TN_OK);
    assert_int_equal(ev.locks[0].state, TN_STATE_HELD);
    assert_int_equal(ev.locks[0].holders[0].token, tn_lock_token(l));
    assert_true(ev.index > last);
    assert_int_equal(tn_watch_index(w), ev.index);
    tn_watch_event_clear(&ev);
    assert_int_equal(tn_watch_next(p, EVENT_TIMEOUT_MS, &ev), TN_OK);
    assert_int_equal(ev.n_locks, 1);
    assert_string_equal(ev.locks[0].resource, "lib/a");
    tn_watch_event_clear(&ev);
    release(l);
    assert_int_equal(tn_watch_next(w, EVENT_TIMEOUT_MS, &ev), TN_OK);
    assert_int_equal(ev.locks[0].state, TN_STATE_FREE);
    tn_watch_event_clear(&ev);
    /* Nothing more: a timeout, and the watch goes on. */
    assert_int_equal(tn_watch_next(w, 300, &ev), TN_TIMEOUT);
    tn_watch_close(w);
    tn_watch_close(p);

    /* Bad arguments. */
    assert_int_equal(tn_watch_open(S->client, "", 0, 0, &w),
                     TN_INVALID_ARGUMENT);
    assert_int_equal(tn_watch_open(S->client, "a\x01", 0, 0, &w),
                     TN_INVALID_ARGUMENT);
}

struct uvWatch
{
    uv_loop_t loop;
    tn_client *c;
    tn_watch *w;
    int events;
    int states[8];
    uint64_t last_index;
    int ended_rc;
    bool close_in_cb;
    bool closed;
};

static void uvWatchCb(tn_watch *w,
                      int rc,
                      const struct tn_watch_event *ev,
                      void *data)
{
    struct uvWatch *u = data;
    assert_ptr_equal(w, u->w);
    if (rc != TN_OK) {
        assert_null(ev);
        u->ended_rc = rc;
        return;
    }
    assert_int_equal(ev->n_locks, 1);
    assert_true(ev->index >= u->last_index);
    u->last_index = ev->index;
    if (u->events < 8) {
        u->states[u->events] = ev->locks[0].state;
    }
    u->events++;
    if (u->close_in_cb) {
        tn_uv_watch_close(w); /* from inside its own callback */
        u->w = NULL;
    }
}

static void uvClosedCb(void *data)
{
    ((struct uvWatch *)data)->closed = true;
}

/* Run @u's loop until *@flag reaches @want (bounded). */
static bool uvRunUntil(struct uvWatch *u, const int *flag, int want)
{
    uint64_t deadline = nowMs() + EVENT_TIMEOUT_MS;
    while (*flag < want && nowMs() < deadline) {
        uv_run(&u->loop, UV_RUN_ONCE);
    }
    return *flag >= want;
}

/* tn_uv_watch_* on the caller's loop: events, closing from the callback,
 * and a client close ending a watch with TN_CANCELED; the loop closes with
 * nothing left behind. */
static void test_uv_flavour(void **state)
{
    struct uvWatch *u = calloc(1, sizeof *u);
    tn_watch *w2;
    tn_lock *l;
    (void)state;

    assert_non_null(u);
    assert_int_equal(uv_loop_init(&u->loop), 0);
    assert_int_equal(tn_uv_client_open(&u->loop,
                                       clusterRpcEndpoints(&S->cluster), NULL,
                                       &u->c),
                     TN_OK);
    /* The blocking form is refused on such a client, and vice versa. */
    assert_int_equal(tn_watch_open(u->c, "uv/a", 0, 0, &w2), TN_USAGE);
    assert_int_equal(
        tn_uv_watch_open(S->client, "uv/a", 0, 0, uvWatchCb, u, &w2),
        TN_USAGE);
    assert_int_equal(
        tn_uv_watch_open(u->c, "uv/a", 0, 0, uvWatchCb, u, &u->w), TN_OK);
    assert_int_equal(u->events, 0); /* never from inside the call */
    assert_true(uvRunUntil(u, &u->events, 1));
    assert_int_equal(u->states[0], TN_STATE_FREE);

    l = acquire(S->session, "uv/a");
    assert_true(uvRunUntil(u, &u->events, 2));
    assert_int_equal(u->states[1], TN_STATE_HELD);
    u->close_in_cb = true;
    release(l);
    assert_true(uvRunUntil(u, &u->events, 3));
    assert_null(u->w);
    assert_int_equal(u->states[2], TN_STATE_FREE);

    /* A second watch, still open when the client closes. */
    u->close_in_cb = false;
    u->events = 0;
    u->ended_rc = 0;
    assert_int_equal(
        tn_uv_watch_open(u->c, "uv/", TN_WATCH_PREFIX, 0, uvWatchCb, u, &w2),
        TN_OK);
    u->w = w2;
    tn_uv_client_close(u->c, uvClosedCb, u);
    {
        uint64_t deadline = nowMs() + EVENT_TIMEOUT_MS;
        while (!u->closed && nowMs() < deadline) {
            uv_run(&u->loop, UV_RUN_ONCE);
        }
    }
    assert_true(u->closed);
    assert_int_equal(u->ended_rc, TN_CANCELED);
    tn_uv_watch_close(w2);
    uv_run(&u->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&u->loop), 0);
    free(u);
}

/* Start tenurectl with @args (NULL-terminated, after the endpoints); its
 * stdout is the returned fd. */
static int spawnCtl(const char *const *args, pid_t *pid)
{
    const char *argv[16];
    int pipefd[2];
    size_t n = 0;

    argv[n++] = S->tenurectl;
    argv[n++] = "--endpoints";
    argv[n++] = clusterRpcEndpoints(&S->cluster);
    for (size_t i = 0; args[i] != NULL && n < 15; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    assert_int_equal(pipe(pipefd), 0);
    *pid = fork();
    assert_true(*pid >= 0);
    if (*pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(126);
    }
    close(pipefd[1]);
    S->ctl = *pid;
    return pipefd[0];
}

/* Read from @fd into @buf until it holds @needle (true) or the time runs
 * out. */
static bool readUntil(int fd, char *buf, size_t cap, size_t *len,
                      const char *needle)
{
    uint64_t deadline = nowMs() + EVENT_TIMEOUT_MS;
    while (strstr(buf, needle) == NULL) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        uint64_t now = nowMs();
        ssize_t n;
        if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0) {
            return false;
        }
        n = read(fd, buf + *len, cap - 1 - *len);
        if (n <= 0) {
            return strstr(buf, needle) != NULL;
        }
        *len += (size_t)n;
        buf[*len] = '\0';
    }
    return true;
}

static int reap(pid_t pid)
{
    int status = 0;
    uint64_t deadline = nowMs() + EVENT_TIMEOUT_MS;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (nowMs() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        sleepMs(20);
    }
    S->ctl = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* tenurectl watch prints each state; --prefix prints each list. */
static void test_tenurectl_watch(void **state)
{
    char out[8192] = "";
    size_t len = 0;
    pid_t pid;
    int fd;
    tn_lock *l;
    (void)state;

    fd = spawnCtl((const char *const[]){ "watch", "--count", "3", "ctl/a",
                                         NULL },
                  &pid);
    assert_true(readUntil(fd, out, sizeof out, &len, "ctl/a: free"));
    l = acquire(S->session, "ctl/a");
    assert_true(readUntil(fd, out, sizeof out, &len, "ctl/a: held"));
    assert_non_null(strstr(out, "watch-test"));
    release(l);
    /* The third event ends it: read to the end. */
    assert_false(readUntil(fd, out, sizeof out, &len, "(end of output)"));
    assert_int_equal(reap(pid), 0);
    assert_non_null(strstr(strstr(out, "ctl/a: held"), "ctl/a: free"));
    close(fd);

    out[0] = '\0';
    len = 0;
    fd = spawnCtl((const char *const[]){ "--json", "watch", "--prefix",
                                         "ctlp/", "--count", "2", NULL },
                  &pid);
    assert_true(readUntil(fd, out, sizeof out, &len, "\"locks\":[]"));
    l = acquire(S->session, "ctlp/x");
    assert_true(readUntil(fd, out, sizeof out, &len, "ctlp/x"));
    assert_int_equal(reap(pid), 0);
    release(l);
    close(fd);

    /* No cluster: exit 4 (unavailable) after --timeout, not a silent
     * wait. */
    fd = spawnCtl((const char *const[]){ "--endpoints", "127.0.0.1:1",
                                         "--timeout", "1000", "watch", "x",
                                         NULL },
                  &pid);
    assert_int_equal(reap(pid), 4);
    close(fd);
}

/* An idle stream gets the same state again (a progress event, with an
 * index that does not go down) about every progress interval: on the
 * leader, and as a stale stream on a follower. */
static void test_progress(void **state)
{
    int fd = rpcConnect(leaderPort());
    int ff = rpcConnect(clusterRpcPort(&S->cluster, followerIndex()));
    uint64_t index = 0;
    uint64_t stale_index = 0;
    uint64_t first;
    uint64_t at[2];
    Tn__Response *r;
    (void)state;

    sendWatch(fd, 31, "pr/a", false, false, 0);
    r = awaitEvent(fd, 31, &index, isFree, NULL, "initial");
    tn__response__free_unpacked(r, NULL);
    sendWatch(ff, 32, "pr/a", false, true, 0);
    r = awaitEvent(ff, 32, &stale_index, isFree, NULL, "stale initial");
    tn__response__free_unpacked(r, NULL);
    first = index;

    for (int i = 0; i < 2; i++) {
        r = rpcRecv(fd, PROGRESS_MS + 1000);
        if (r == NULL) {
            fail_msg("no progress event within %d ms", PROGRESS_MS + 1000);
        }
        at[i] = nowMs();
        assert_int_equal(r->id, 31);
        assert_int_equal(r->status, TN__STATUS__OK);
        assert_true(r->more);
        assert_int_equal(holders(r), 0);
        assert_string_equal(r->lock->resource, "pr/a");
        assert_true(r->index >= index);
        index = r->index;
        tn__response__free_unpacked(r, NULL);
    }
    /* Not sooner than an interval apart (the node's timer ticks every
     * 10 ms). */
    if (at[1] - at[0] + 50 < PROGRESS_MS) {
        fail_msg("progress events %llu ms apart",
                 (unsigned long long)(at[1] - at[0]));
    }
    assert_true(index >= first);

    r = rpcRecv(ff, 1000);
    if (r == NULL) {
        fail_msg("no progress event on the stale stream");
    }
    assert_int_equal(r->id, 32);
    assert_true(r->more);
    assert_int_equal(holders(r), 0);
    assert_true(r->index >= stale_index);
    tn__response__free_unpacked(r, NULL);
    close(fd);
    close(ff);
}

/* A libtenure stream alone on its connection to a leader that freezes
 * (SIGSTOP: the socket stays open, nothing comes) notices the silence
 * within ENGINE_STREAM_SILENCE progress intervals, resumes on the new
 * leader and sees a change made there. */
static void test_frozen_leader(void **state)
{
    struct tn_client_opts o;
    struct tn_watch_event ev;
    tn_client *wc = NULL;
    tn_watch *w;
    tn_lock *l;
    uint64_t last;
    uint64_t token;
    uint64_t stopped_at;
    uint64_t deadline;
    uint64_t seen_ms = 0;
    int old = S->leader;
    int rc;
    (void)state;

    memset(&o, 0, sizeof o);
    o.watch_progress_ms = PROGRESS_MS;
    assert_int_equal(
        tn_client_open(clusterRpcEndpoints(&S->cluster), &o, &wc), TN_OK);
    assert_int_equal(tn_watch_open(wc, "fz/a", 0, 0, &w), TN_OK);
    assert_int_equal(tn_watch_next(w, EVENT_TIMEOUT_MS, &ev), TN_OK);
    assert_int_equal(ev.locks[0].state, TN_STATE_FREE);
    last = ev.index;
    tn_watch_event_clear(&ev);
    /* The stream runs on the leader (a follower would have redirected
     * it); wc has nothing else on its connection. Freeze that node. */
    S->frozen = S->cluster.nodes[old].pid;
    assert_true(S->frozen > 0);
    assert_int_equal(kill(S->frozen, SIGSTOP), 0);
    stopped_at = nowMs();

    /* A change through the new leader (the session's client leaves the
     * frozen node after connect_timeout_ms without an answer). */
    l = acquire(S->session, "fz/a");
    token = tn_lock_token(l);

    deadline = stopped_at + ENGINE_STREAM_SILENCE * PROGRESS_MS + 3000;
    while (seen_ms == 0 && nowMs() < deadline) {
        rc = tn_watch_next(w, 200, &ev);
        if (rc == TN_TIMEOUT) {
            continue;
        }
        assert_int_equal(rc, TN_OK);
        assert_true(ev.index >= last);
        last = ev.index;
        if (ev.locks[0].state == TN_STATE_HELD &&
            ev.locks[0].holders[0].token == token) {
            seen_ms = nowMs();
        }
        tn_watch_event_clear(&ev);
    }
    if (seen_ms == 0) {
        fail_msg("the watcher did not see the change within %llu ms of the "
                 "freeze",
                 (unsigned long long)(deadline - stopped_at));
    }
    print_message("watcher saw the change %llu ms after the freeze\n",
                  (unsigned long long)(seen_ms - stopped_at));
    tn_watch_close(w);
    tn_client_close(wc);
    release(l);

    assert_int_equal(kill(S->frozen, SIGCONT), 0);
    S->frozen = 0;
    S->leader = clusterWaitLeader(&S->cluster, 15000);
    assert_true(S->leader >= 0);
}

/* A leader kill: the library resumes on the new leader and sees the final
 * state, with indexes never going down. */
static void test_leader_kill(void **state)
{
    struct tn_watch_event ev;
    tn_watch *w;
    tn_lock *l;
    uint64_t held_index;
    uint64_t last;
    uint64_t deadline;
    bool freed = false;
    int rc;
    (void)state;

    l = acquire(S->session, "lk/a");
    assert_int_equal(tn_watch_open(S->client, "lk/a", 0, 0, &w), TN_OK);
    assert_int_equal(tn_watch_next(w, EVENT_TIMEOUT_MS, &ev), TN_OK);
    assert_int_equal(ev.locks[0].state, TN_STATE_HELD);
    held_index = last = ev.index;
    tn_watch_event_clear(&ev);

    assert_int_equal(clusterKill(&S->cluster, S->leader), 0);
    S->leader = clusterWaitLeader(&S->cluster, 15000);
    assert_true(S->leader >= 0);
    rc = tn_lock_release(l);
    if (rc != TN_OK) {
        fail_msg("release on the new leader: %s",
                 tn_client_errmsg(S->client));
    }
    tn_lock_free(l);

    deadline = nowMs() + 15000;
    while (!freed && nowMs() < deadline) {
        rc = tn_watch_next(w, 500, &ev);
        if (rc == TN_TIMEOUT) {
            continue;
        }
        assert_int_equal(rc, TN_OK);
        assert_true(ev.index >= last);
        last = ev.index;
        freed = ev.locks[0].state == TN_STATE_FREE;
        tn_watch_event_clear(&ev);
    }
    assert_true(freed);
    assert_true(last > held_index);
    tn_watch_close(w);
    clusterPassed(&S->cluster);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_events),
        cmocka_unit_test(test_prefix_stream),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_followers),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_library),
        cmocka_unit_test(test_uv_flavour),
        cmocka_unit_test(test_tenurectl_watch),
        cmocka_unit_test(test_slow_reader),
        cmocka_unit_test(test_close_with_streams),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_frozen_leader),
        cmocka_unit_test(test_leader_kill),
    };
    return cmocka_run_group_tests(tests, groupSetUp, groupTearDown);
}
