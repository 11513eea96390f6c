/* The raft adapter: every raft_* call of the daemon lives in this file. */
#include "raft_adapter.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <raft/uv.h>

#include "aio_reap.h"
#include "command.h"
#include "lib/log.h"
#include "segment_fill.h"

#if RAFT_VERSION_NUMBER < 2201
#error "tenure needs libraft >= 0.22.1 (bookworm-backports); 0.15.0 loses data"
#endif

struct adapter
{
    uv_loop_t *loop;
    struct fsm *fsm;
    struct adapter_hooks hooks;
    uint64_t id;
    unsigned election_timeout;

    /* Transport: `outer` is what raft sees; it forwards to the stock TCP
     * transport `inner` and sets TCP_NODELAY on every stream. */
    struct raft_uv_transport inner;
    struct raft_uv_transport outer;
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb transport_close_cb;

    struct raft_io io;
    /* The leader's own log writes, held back while raft_apply runs (see
     * ioAppend). */
    int (*io_append)(struct raft_io *io,
                     struct raft_io_append *req,
                     const struct raft_entry entries[],
                     unsigned n,
                     raft_io_append_cb cb);
    int (*io_truncate)(struct raft_io *io, raft_index index);
    bool defer_appends;
    unsigned n_deferred;
    struct adapterAppend
    {
        struct raft_io_append *req;
        const struct raft_entry *entries;
        unsigned n;
        raft_io_append_cb cb;
    } deferred[4];
    struct raft_fsm raft_fsm;
    struct adapter_fsm wrap;
    struct raft raft;

    uv_prepare_t poll; /* notices role/leader/term changes */
    int last_state;
    raft_id last_leader;
    raft_term last_term;

    bool closing;
    struct adapterRemove *removing; /* a removal waiting on its timer */
    void (*close_cb)(void *data);
    void *close_data;
};

/* A raft request plus its owner. */
struct adapterRequest
{
    union {
        struct raft_apply apply;
        struct raft_barrier barrier;
    };
    struct adapter *a;
    struct adapter_propose *owner;
};

/* ------------------------------------------------------------- log writes */

#define ADAPTER_OF_IO(io) \
    ((struct adapter *)(void *)((char *)(io)-offsetof(struct adapter, io)))

/* libraft's legacy layer submits the leader's own log write, then sends
 * the AppendEntries that carry the same entries. The followers' writes are
 * what a commit waits for (the leader's runs alongside them), so while
 * raft_apply or raft_barrier runs the leader's write is held back here and
 * submitted as soon as that call returns, after the messages: every commit
 * starts its follower round trip one io_submit (10-20 us) earlier. Order is
 * kept: a held-back write is submitted before anything else reaches the
 * log (a truncate, or a write past the few held back).
 *
 * raft was told that a held-back write was accepted, so one that cannot
 * even be submitted (out of memory, or the I/O layer already failed) is
 * the same fail-stop as raft_apply failing past its I/O stage: its
 * callback would never come, and the writes after it would leave a gap. */
static void ioFlushAppends(struct adapter *a)
{
    unsigned n = a->n_deferred;

    a->n_deferred = 0;
    for (unsigned i = 0; i < n; i++) {
        struct adapterAppend *d = &a->deferred[i];
        int rv = a->io_append(&a->io, d->req, d->entries, d->n, d->cb);
        if (rv != 0) {
            tnErrorf("\"log write failed; stopping\" error=\"%s\"",
                     raft_strerror(rv));
            abort();
        }
    }
}

static int ioAppend(struct raft_io *io,
                    struct raft_io_append *req,
                    const struct raft_entry entries[],
                    unsigned n,
                    raft_io_append_cb cb)
{
    struct adapter *a = ADAPTER_OF_IO(io);
    if (a->defer_appends &&
        a->n_deferred < sizeof a->deferred / sizeof a->deferred[0]) {
        a->deferred[a->n_deferred++] =
            (struct adapterAppend){req, entries, n, cb};
        return 0;
    }
    ioFlushAppends(a);
    return a->io_append(io, req, entries, n, cb);
}

static int ioTruncate(struct raft_io *io, raft_index index)
{
    struct adapter *a = ADAPTER_OF_IO(io);
    ioFlushAppends(a);
    return a->io_truncate(io, index);
}

/* Ends the held-back window opened around raft_apply / raft_barrier. */
static void ioEndDefer(struct adapter *a)
{
    a->defer_appends = false;
    ioFlushAppends(a);
}

/* ------------------------------------------------------------ transport */

/* raft_uv_init() takes over `data` of the transport it is given, so the
 * adapter is found from the embedded transport's address instead. */
#define OUTER_ADAPTER(t) \
    ((struct adapter *)(void *)((char *)(t)-offsetof(struct adapter, outer)))
#define INNER_ADAPTER(t) \
    ((struct adapter *)(void *)((char *)(t)-offsetof(struct adapter, inner)))

struct adapterConnect
{
    struct raft_uv_connect req; /* handed to the inner transport */
    struct raft_uv_connect *outer_req;
};

static void adapterNoDelay(struct uv_stream_s *stream)
{
    if (stream != NULL && stream->type == UV_TCP) {
        uv_tcp_nodelay((uv_tcp_t *)stream, 1);
    }
}

static int transportInit(struct raft_uv_transport *t,
                         raft_id id,
                         const char *address)
{
    struct adapter *a = OUTER_ADAPTER(t);
    return a->inner.init(&a->inner, id, address);
}

static void transportAcceptCb(struct raft_uv_transport *t,
                              raft_id id,
                              const char *address,
                              struct uv_stream_s *stream)
{
    struct adapter *a = INNER_ADAPTER(t);
    adapterNoDelay(stream);
    a->accept_cb(&a->outer, id, address, stream);
}

static int transportListen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct adapter *a = OUTER_ADAPTER(t);
    a->accept_cb = cb;
    return a->inner.listen(&a->inner, transportAcceptCb);
}

static void transportConnectCb(struct raft_uv_connect *req,
                               struct uv_stream_s *stream,
                               int status)
{
    struct adapterConnect *c = (struct adapterConnect *)(void *)req;
    struct raft_uv_connect *outer_req = c->outer_req;
    free(c);
    if (status == 0) {
        adapterNoDelay(stream);
    }
    outer_req->cb(outer_req, stream, status);
}

static int transportConnect(struct raft_uv_transport *t,
                            struct raft_uv_connect *req,
                            raft_id id,
                            const char *address,
                            raft_uv_connect_cb cb)
{
    struct adapter *a = OUTER_ADAPTER(t);
    struct adapterConnect *c = calloc(1, sizeof *c);
    int rv;

    if (c == NULL) {
        return RAFT_NOMEM;
    }
    req->cb = cb;
    c->outer_req = req;
    c->req.data = c;
    rv = a->inner.connect(&a->inner, &c->req, id, address, transportConnectCb);
    if (rv != 0) {
        free(c);
    }
    return rv;
}

static void transportInnerCloseCb(struct raft_uv_transport *t)
{
    struct adapter *a = INNER_ADAPTER(t);
    if (a->transport_close_cb != NULL) {
        a->transport_close_cb(&a->outer);
    }
}

static void transportClose(struct raft_uv_transport *t,
                           raft_uv_transport_close_cb cb)
{
    struct adapter *a = OUTER_ADAPTER(t);
    a->transport_close_cb = cb;
    a->inner.close(&a->inner, transportInnerCloseCb);
}

/* ------------------------------------------------------------------ fsm */

static int fsmApplyCb(struct raft_fsm *rf,
                      const struct raft_buffer *buf,
                      void **result)
{
    struct adapter_fsm *a = rf->data;
    uint64_t index = raft_last_applied(a->raft) + 1;
    Tn__Batch *batch = NULL;
    Tn__Batch empty = TN__BATCH__INIT;
    struct fsm_result stack_results[64];
    struct fsm_result *results = stack_results;
    /* The decoded batch lives here (and in malloc beyond 16 KiB). */
    max_align_t scratch[16384 / sizeof(max_align_t)];
    struct command_arena arena;
    size_t n;
    int rv;

    *result = NULL;
    commandArenaInit(&arena, scratch, sizeof scratch);
    rv = commandDecodeIn(&arena, buf->base, buf->len, &batch);
    if (rv == TN__STATUS__INTERNAL) {
        /* Out of memory: skipping would make this replica diverge. */
        tnErrorf("\"out of memory decoding entry\" index=%llu",
                 (unsigned long long)index);
        abort();
    }
    if (rv != 0) {
        commandArenaClose(&arena);
        /* Every replica holds the same bytes, so every replica skips the
         * same entry: the state stays identical. */
        tnErrorf("\"undecodable log entry skipped\" index=%llu len=%zu",
                 (unsigned long long)index, buf->len);
        fsmApply(a->fsm, index, &empty, NULL);
        return 0;
    }
    n = batch->n_commands;
    if (n > sizeof stack_results / sizeof stack_results[0]) {
        results = calloc(n, sizeof *results);
        if (results == NULL) {
            /* Out of memory while applying: we must not skip the entry
             * (replicas would diverge) nor return an error (raft would
             * retry forever). Fail-stop. */
            tnErrorf("\"out of memory applying entry\" index=%llu",
                     (unsigned long long)index);
            abort();
        }
    } else {
        memset(results, 0, n * sizeof *results);
    }
    fsmApply(a->fsm, index, batch, results);
    if (a->hooks.applied != NULL) {
        a->hooks.applied(a->hooks.data, index, batch, results);
    }
    if (results != stack_results) {
        free(results);
    }
    commandArenaClose(&arena);
    return 0;
}

static int fsmSnapshotCb(struct raft_fsm *rf,
                         struct raft_buffer *bufs[],
                         unsigned *n_bufs)
{
    struct adapter_fsm *a = rf->data;
    void *data;
    size_t len;
    struct raft_buffer *b;

    if (fsmSnapshot(a->fsm, &data, &len) != 0) {
        return RAFT_NOMEM;
    }
    b = raft_malloc(sizeof *b);
    if (b == NULL) {
        free(data);
        return RAFT_NOMEM;
    }
    b->base = raft_malloc(len > 0 ? len : 1);
    if (b->base == NULL) {
        raft_free(b);
        free(data);
        return RAFT_NOMEM;
    }
    memcpy(b->base, data, len);
    b->len = len;
    free(data);
    *bufs = b;
    *n_bufs = 1;
    tnDebugf("\"snapshot taken\" index=%llu bytes=%zu",
            (unsigned long long)fsmIndex(a->fsm), len);
    return 0;
}

static int fsmRestoreCb(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct adapter_fsm *a = rf->data;
    int rv = fsmRestore(a->fsm, buf->base, buf->len);

    if (rv != 0) {
        tnErrorf("\"snapshot rejected: corrupt or from an incompatible "
                 "version; refusing to continue with lost state\" bytes=%zu",
                 buf->len);
        return RAFT_MALFORMED;
    }
    tnInfof("\"snapshot restored\" index=%llu bytes=%zu",
            (unsigned long long)fsmIndex(a->fsm), buf->len);
    raft_free(buf->base);
    return 0;
}

void adapterFsmInit(struct adapter_fsm *w,
                    struct raft_fsm *rf,
                    struct fsm *fsm,
                    const struct adapter_hooks *hooks)
{
    memset(w, 0, sizeof *w);
    w->fsm = fsm;
    if (hooks != NULL) {
        w->hooks = *hooks;
    }
    memset(rf, 0, sizeof *rf);
    rf->version = 1;
    rf->data = w;
    rf->apply = fsmApplyCb;
    rf->snapshot = fsmSnapshotCb;
    rf->restore = fsmRestoreCb;
}

/* ------------------------------------------------------------ lifecycle */

static void pollCb(uv_prepare_t *handle)
{
    struct adapter *a = handle->data;
    int state;
    raft_id leader;
    const char *address;
    raft_term term;

    if (a->closing) {
        return;
    }
    state = (int)raft_state(&a->raft);
    raft_leader(&a->raft, &leader, &address);
    term = raft_current_term(&a->raft);
    if (state == a->last_state && leader == a->last_leader &&
        term == a->last_term) {
        return;
    }
    if (term != a->last_term) {
        tnLogSetTerm(term);
    }
    if (state != a->last_state) {
        tnInfof("\"role changed\" role=%s leader=%llu",
                raft_state_name(state), (unsigned long long)leader);
    }
    a->last_state = state;
    a->last_leader = leader;
    a->last_term = term;
    if (a->hooks.changed != NULL) {
        a->hooks.changed(a->hooks.data);
    }
}

int adapterStart(struct adapter **out,
                 uv_loop_t *loop,
                 struct fsm *fsm,
                 const struct adapter_config *config,
                 const struct adapter_hooks *hooks,
                 char *errmsg,
                 size_t errmsg_len)
{
    struct adapter *a = calloc(1, sizeof *a);
    unsigned threshold;
    int rv;

    if (a == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return RAFT_NOMEM;
    }
    a->loop = loop;
    a->fsm = fsm;
    a->hooks = *hooks;
    a->id = config->id;
    a->election_timeout =
        config->election_timeout_ms ? config->election_timeout_ms : 300;

    /* 0.22.1 rejects version 0: set it before init, on both transports. */
    a->inner.version = 1;
    rv = raft_uv_tcp_init(&a->inner, loop);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "raft_uv_tcp_init(): %s",
                 raft_strerror(rv));
        goto err;
    }
    a->outer.version = 1;
    a->outer.init = transportInit;
    a->outer.listen = transportListen;
    a->outer.connect = transportConnect;
    a->outer.close = transportClose;

    rv = raft_uv_init(&a->io, loop, config->dir, &a->outer);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "raft_uv_init(%s): %s", config->dir,
                 a->io.errmsg[0] ? a->io.errmsg : raft_strerror(rv));
        goto err_after_tcp;
    }
    /* With auto-recovery on, a corrupt segment is silently renamed away and
     * committed entries can be lost. Off, the node refuses to start. */
    raft_uv_set_auto_recovery(&a->io, false);
    if (!segmentFillActive()) {
        tnWarnf("\"log segments are not zero-filled: libraft's "
                "posix_fallocate is not the daemon's\"");
    }
    a->io_append = a->io.append;
    a->io.append = ioAppend;
    a->io_truncate = a->io.truncate;
    a->io.truncate = ioTruncate;

    adapterFsmInit(&a->wrap, &a->raft_fsm, fsm, hooks);
    a->wrap.raft = &a->raft;

    rv = raft_init(&a->raft, &a->io, &a->raft_fsm, config->id,
                   config->raft_address);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "raft_init(): %s",
                 raft_errmsg(&a->raft));
        goto err_after_io;
    }
    a->raft.tracer = NULL;
    raft_set_pre_vote(&a->raft, true);
    raft_set_election_timeout(&a->raft, a->election_timeout);
    raft_set_heartbeat_timeout(&a->raft,
                               config->heartbeat_ms ? config->heartbeat_ms : 30);
    raft_set_max_inflight_entries(&a->raft, 1024);
    threshold = config->snapshot_threshold;
    if (threshold == 0) {
        /* Staggered per node so that followers rarely snapshot while an
         * InstallSnapshot arrives (a known 0.22.1 crash). */
        threshold = 16384 + (unsigned)(config->id % 8) * 16384 / 3;
    }
    raft_set_snapshot_threshold(&a->raft, threshold);
    raft_set_snapshot_trailing(&a->raft, config->snapshot_trailing
                                             ? config->snapshot_trailing
                                             : threshold);

    if (config->n_initial > 0) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (unsigned i = 0; i < config->n_initial; i++) {
            rv = raft_configuration_add(&conf, config->initial_ids[i],
                                        config->initial_addresses[i],
                                        RAFT_VOTER);
            if (rv != 0) {
                raft_configuration_close(&conf);
                snprintf(errmsg, errmsg_len,
                         "initial cluster member %llu (%s): %s",
                         (unsigned long long)config->initial_ids[i],
                         config->initial_addresses[i], raft_strerror(rv));
                goto err_after_raft;
            }
        }
        rv = raft_bootstrap(&a->raft, &conf);
        raft_configuration_close(&conf);
        if (rv == 0) {
            tnInfof("\"bootstrapped new cluster\" voters=%u",
                    config->n_initial);
        } else if (rv != RAFT_CANTBOOTSTRAP) {
            snprintf(errmsg, errmsg_len, "raft_bootstrap(): %s",
                     raft_errmsg(&a->raft));
            goto err_after_raft;
        }
    }

    rv = raft_start(&a->raft);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "raft_start(): %s (%s)",
                 raft_errmsg(&a->raft), raft_strerror(rv));
        goto err_after_raft;
    }
    /* Closed segments' AIO contexts are destroyed off the loop from now
     * until adapterClose (aio_reap.c), with the libraft whose close paths
     * that was checked against (0.22.1 does not export
     * raft_version_number(): its header, which comes with the library's
     * package, says which one this is). */
    if (RAFT_VERSION_NUMBER != 2201) {
        tnInfof("\"log writers are destroyed on the loop: deferral is for "
                "libraft 0.22.1\" libraft=%d",
                RAFT_VERSION_NUMBER);
    } else if (!aioReapBound()) {
        tnWarnf("\"log writers are destroyed on the loop: libraft's "
                "syscall is not the daemon's\"");
    } else if ((rv = aioReapStart()) != 0) {
        tnWarnf("\"log writers are destroyed on the loop\" error=\"%s\"",
                strerror(rv));
        rv = 0;
    }

    uv_prepare_init(loop, &a->poll);
    a->poll.data = a;
    uv_prepare_start(&a->poll, pollCb);
    a->last_state = -1;
    *out = a;
    return 0;

err_after_raft:
    /* raft_init succeeded: the instance must be closed asynchronously.
     * Startup errors are fatal for the process, so leaking is fine. */
    return rv ? rv : RAFT_INVALID;
err_after_io:
    raft_uv_close(&a->io);
err_after_tcp:
    raft_uv_tcp_close(&a->inner);
err:
    free(a);
    return rv ? rv : RAFT_INVALID;
}

static void adapterPollCloseCb(uv_handle_t *h)
{
    struct adapter *a = h->data;
    void (*cb)(void *) = a->close_cb;
    void *data = a->close_data;
    free(a);
    if (cb != NULL) {
        cb(data);
    }
}

static void raftCloseCb(struct raft *r)
{
    struct adapter *a =
        (struct adapter *)(void *)((char *)r - offsetof(struct adapter, raft));
    raft_uv_close(&a->io);
    raft_uv_tcp_close(&a->inner);
    uv_close((uv_handle_t *)&a->poll, adapterPollCloseCb);
}

static void removeAbort(struct adapter *a);

void adapterClose(struct adapter *a, void (*cb)(void *data), void *data)
{
    a->closing = true;
    a->close_cb = cb;
    a->close_data = data;
    aioReapStop(); /* writes may be in flight from here on */
    removeAbort(a);
    uv_prepare_stop(&a->poll);
    raft_close(&a->raft, raftCloseCb);
}

/* ---------------------------------------------------------------- state */

enum adapter_role adapterRole(struct adapter *a)
{
    switch (raft_state(&a->raft)) {
        case RAFT_FOLLOWER:
            return ADAPTER_FOLLOWER;
        case RAFT_CANDIDATE:
            return ADAPTER_CANDIDATE;
        case RAFT_LEADER:
            return ADAPTER_LEADER;
        default:
            return ADAPTER_UNAVAILABLE;
    }
}

uint64_t adapterLeader(struct adapter *a, const char **raft_address)
{
    raft_id id;
    const char *address;
    raft_leader(&a->raft, &id, &address);
    if (raft_address != NULL) {
        *raft_address = address;
    }
    return id;
}

uint64_t adapterTerm(struct adapter *a)
{
    return raft_current_term(&a->raft);
}

uint64_t adapterCommitIndex(struct adapter *a)
{
    return raft_commit_index(&a->raft);
}

uint64_t adapterAppliedIndex(struct adapter *a)
{
    return raft_last_applied(&a->raft);
}

unsigned adapterElectionTimeout(struct adapter *a)
{
    return a->election_timeout;
}

unsigned adapterMembers(struct adapter *a,
                        struct adapter_member *out,
                        unsigned max)
{
    /* There is no accessor for the configuration in 0.22.1; this module is
     * the one place that may read the struct. */
    const struct raft_configuration *c = &a->raft.configuration;
    for (unsigned i = 0; i < c->n && i < max; i++) {
        out[i].id = c->servers[i].id;
        out[i].address = c->servers[i].address;
        switch (c->servers[i].role) {
            case RAFT_VOTER:
                out[i].role = "voter";
                break;
            case RAFT_STANDBY:
                out[i].role = "standby";
                break;
            default:
                out[i].role = "spare";
                break;
        }
    }
    return c->n;
}

/* ------------------------------------------------------------- proposals */

static int adapterStatus(int rv)
{
    switch (rv) {
        case 0:
            return 0;
        case RAFT_NOTLEADER:
            return TN__STATUS__NOT_LEADER;
        case RAFT_NOSPACE:
            return TN__STATUS__NO_SPACE;
        default:
            return TN__STATUS__COMMIT_UNKNOWN;
    }
}

static void applyCb(struct raft_apply *req, int status, void *result)
{
    struct adapterRequest *r = req->data;
    struct adapter_propose *owner = r->owner;
    (void)result;
    if (status != 0 && status != RAFT_NOTLEADER &&
        status != RAFT_LEADERSHIPLOST && status != RAFT_SHUTDOWN) {
        tnWarnf("\"apply failed\" error=\"%s\"", raft_strerror(status));
    }
    free(r);
    owner->cb(owner, adapterStatus(status));
}

int adapterPropose(struct adapter *a,
                   struct adapter_propose *req,
                   const Tn__Batch *batch,
                   adapter_propose_cb cb)
{
    struct adapterRequest *r;
    struct raft_buffer buf;
    void *base;
    size_t len;
    int rv;

    if (a->closing) {
        return TN__STATUS__NOT_LEADER;
    }
    if (raft_state(&a->raft) != RAFT_LEADER) {
        return TN__STATUS__NOT_LEADER;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        return TN__STATUS__INTERNAL;
    }
    if (commandEncode(batch, raft_malloc, &base, &len) != 0) {
        free(r);
        return TN__STATUS__INTERNAL;
    }
    buf.base = base;
    buf.len = len;
    r->a = a;
    r->owner = req;
    r->apply.data = r;
    req->cb = cb;
    req->priv = r;
    a->defer_appends = true;
    rv = raft_apply(&a->raft, &r->apply, &buf, 1, applyCb);
    ioEndDefer(a);
    if (rv != 0) {
        if (rv == RAFT_NOTLEADER || rv == RAFT_NOSPACE) {
            raft_free(base);
            free(r);
            return adapterStatus(rv);
        }
        /* The I/O stage may own the buffer already: freeing it could
         * double-free, keeping it leaves a phantom entry. Fail-stop. */
        tnErrorf("\"raft_apply failed; stopping\" error=\"%s\"",
                 raft_strerror(rv));
        abort();
    }
    return 0;
}

static void barrierCb(struct raft_barrier *req, int status)
{
    struct adapterRequest *r = req->data;
    struct adapter_propose *owner = r->owner;
    free(r);
    owner->cb(owner, adapterStatus(status));
}

int adapterBarrier(struct adapter *a,
                   struct adapter_propose *req,
                   adapter_propose_cb cb)
{
    struct adapterRequest *r;
    int rv;

    if (a->closing || raft_state(&a->raft) != RAFT_LEADER) {
        return TN__STATUS__NOT_LEADER;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        return TN__STATUS__INTERNAL;
    }
    r->a = a;
    r->owner = req;
    r->barrier.data = r;
    req->cb = cb;
    req->priv = r;
    a->defer_appends = true;
    rv = raft_barrier(&a->raft, &r->barrier, barrierCb);
    ioEndDefer(a);
    if (rv != 0) {
        free(r);
        return adapterStatus(rv);
    }
    return 0;
}

static void transferCb(struct raft_transfer *req)
{
    free(req);
}

int adapterTransfer(struct adapter *a, uint64_t id)
{
    struct raft_transfer *req = calloc(1, sizeof *req);
    int rv;
    if (req == NULL) {
        return TN__STATUS__INTERNAL;
    }
    /* The request is freed when the transfer completes. */
    rv = raft_transfer(&a->raft, req, id, transferCb);
    if (rv != 0) {
        free(req);
        return adapterStatus(rv);
    }
    return 0;
}

/* ------------------------------------------------------------ membership */

struct adapterChange
{
    struct raft_change change;
    struct adapter *a;
    struct adapter_change *owner;
    uint64_t id;
    bool adding; /* add step done, assign (promotion) pending */
};

static int changeStatus(int rv, char *msg, size_t len, uint64_t id)
{
    switch (rv) {
        case RAFT_NOTLEADER:
            snprintf(msg, len, "not the leader");
            return TN__STATUS__NOT_LEADER;
        case RAFT_CANTCHANGE:
            snprintf(msg, len,
                     "another membership change is in progress; retry when "
                     "it is done");
            return TN__STATUS__REFUSED;
        case RAFT_DUPLICATEID:
            snprintf(msg, len, "id %llu is already a member",
                     (unsigned long long)id);
            return TN__STATUS__INVALID_ARGUMENT;
        case RAFT_DUPLICATEADDRESS:
            snprintf(msg, len, "that address is already used by a member");
            return TN__STATUS__INVALID_ARGUMENT;
        case RAFT_BADID:
            snprintf(msg, len, "no member with id %llu",
                     (unsigned long long)id);
            return TN__STATUS__NOT_FOUND;
        case RAFT_LEADERSHIPLOST:
            snprintf(msg, len,
                     "leadership lost during the change; check `cluster "
                     "status` and retry");
            return TN__STATUS__COMMIT_UNKNOWN;
        default:
            snprintf(msg, len, "%s", raft_strerror(rv));
            return TN__STATUS__INTERNAL;
    }
}

static void changeCb(struct raft_change *req, int status)
{
    struct adapterChange *c = req->data;
    struct adapter_change *owner = c->owner;
    char msg[256];
    int rv;

    if (status == 0 && c->adding) {
        /* Added as a spare: promote to voter (catch-up rounds first). */
        c->adding = false;
        c->change.data = c;
        rv = raft_assign(&c->a->raft, &c->change, c->id, RAFT_VOTER, changeCb);
        if (rv == 0) {
            return;
        }
        status = rv;
    }
    if (status == 0) {
        tnInfof("\"membership changed\" member=%llu",
                (unsigned long long)c->id);
        free(c);
        owner->cb(owner, TN__STATUS__OK, "done");
        return;
    }
    rv = changeStatus(status, msg, sizeof msg, c->id);
    tnWarnf("\"membership change failed\" member=%llu error=\"%s\"",
            (unsigned long long)c->id, msg);
    free(c);
    owner->cb(owner, rv, msg);
}

int adapterAddMember(struct adapter *a,
                     struct adapter_change *req,
                     uint64_t id,
                     const char *address,
                     adapter_change_cb cb,
                     char *errmsg,
                     size_t errmsg_len)
{
    struct adapterChange *c;
    int rv;

    if (id == 0 || address == NULL || address[0] == '\0') {
        snprintf(errmsg, errmsg_len, "id and raft address are required");
        return TN__STATUS__INVALID_ARGUMENT;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return TN__STATUS__INTERNAL;
    }
    c->a = a;
    c->owner = req;
    c->id = id;
    c->adding = true;
    c->change.data = c;
    req->cb = cb;
    req->priv = c;
    rv = raft_add(&a->raft, &c->change, id, address, changeCb);
    if (rv != 0) {
        free(c);
        return changeStatus(rv, errmsg, errmsg_len, id);
    }
    return 0;
}

/* Removal: quorum check (synchronous, on what the leader knows), then a
 * barrier, then a short pause, then the check again on the barrier's index:
 * a voter that died recently still has a recent match index, but it cannot
 * acknowledge an entry appended after its death. */
struct adapterRemove
{
    struct raft_barrier barrier;
    struct raft_change change;
    uv_timer_t timer;
    struct adapter *a;
    struct adapter_change *owner;
    uint64_t id;
    raft_index barrier_index;
    int status;
    char msg[256];
};

/* How many voters other than @id have acknowledged @index (the leader
 * counts itself); sets *voters to the number of voters other than @id. */
static unsigned removeCaughtUp(struct adapter *a,
                               uint64_t id,
                               raft_index index,
                               unsigned *voters,
                               bool *found)
{
    const struct raft_configuration *conf = &a->raft.configuration;
    unsigned caught_up = 0;
    *voters = 0;
    *found = false;
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *srv = &conf->servers[i];
        raft_index match = 0;
        if (srv->id == id) {
            *found = true;
            continue;
        }
        if (srv->role != RAFT_VOTER) {
            continue;
        }
        (*voters)++;
        if (srv->id == a->id ||
            (raft_match_index(&a->raft, srv->id, &match) == 0 &&
             match >= index)) {
            caught_up++;
        }
    }
    return caught_up;
}

static void removeFreeCb(uv_handle_t *h)
{
    free(h->data);
}

static void removeCloseCb(uv_handle_t *h)
{
    struct adapterRemove *rm = h->data;
    struct adapter_change *owner = rm->owner;
    int status = rm->status;
    char msg[256];
    memcpy(msg, rm->msg, sizeof msg);
    free(rm);
    owner->cb(owner, status, msg);
}

static void removeFinish(struct adapterRemove *rm, int status)
{
    if (rm->a->removing == rm) {
        rm->a->removing = NULL;
    }
    rm->status = status;
    if (status == TN__STATUS__OK) {
        tnInfof("\"membership changed\" removed=%llu",
                (unsigned long long)rm->id);
        snprintf(rm->msg, sizeof rm->msg, "done");
    } else {
        tnWarnf("\"membership change failed\" member=%llu error=\"%s\"",
                (unsigned long long)rm->id, rm->msg);
    }
    uv_close((uv_handle_t *)&rm->timer, removeCloseCb);
}

static void removeChangeCb(struct raft_change *req, int status)
{
    struct adapterRemove *rm = req->data;
    if (status != 0) {
        removeFinish(rm, changeStatus(status, rm->msg, sizeof rm->msg,
                                      rm->id));
        return;
    }
    removeFinish(rm, TN__STATUS__OK);
}

static void removeTimerCb(uv_timer_t *t)
{
    struct adapterRemove *rm = t->data;
    struct adapter *a = rm->a;
    unsigned voters;
    unsigned caught_up;
    bool found;
    int rv;

    if (a->closing || raft_state(&a->raft) != RAFT_LEADER) {
        removeFinish(rm, changeStatus(RAFT_NOTLEADER, rm->msg, sizeof rm->msg,
                                      rm->id));
        return;
    }
    caught_up = removeCaughtUp(a, rm->id, rm->barrier_index, &voters, &found);
    if (!found) {
        removeFinish(rm, changeStatus(RAFT_BADID, rm->msg, sizeof rm->msg,
                                      rm->id));
        return;
    }
    if (voters == 0 || caught_up < voters / 2 + 1) {
        snprintf(rm->msg, sizeof rm->msg,
                 "removing %llu would lose quorum: only %u of the remaining "
                 "%u voters acknowledged a fresh entry",
                 (unsigned long long)rm->id, caught_up, voters);
        removeFinish(rm, TN__STATUS__REFUSED);
        return;
    }
    rm->change.data = rm;
    rv = raft_remove(&a->raft, &rm->change, rm->id, removeChangeCb);
    if (rv != 0) {
        removeFinish(rm, changeStatus(rv, rm->msg, sizeof rm->msg, rm->id));
    }
}

static void removeBarrierCb(struct raft_barrier *req, int status)
{
    struct adapterRemove *rm = req->data;
    if (status != 0) {
        removeFinish(rm, changeStatus(status, rm->msg, sizeof rm->msg,
                                      rm->id));
        return;
    }
    rm->barrier_index = raft_last_applied(&rm->a->raft);
    rm->a->removing = rm;
    /* Give live followers a few heartbeats to acknowledge it. */
    uv_timer_start(&rm->timer, removeTimerCb,
                   (uint64_t)rm->a->election_timeout / 2 + 50, 0);
}

/* The node closes while a removal waits on its timer: end it now. */
static void removeAbort(struct adapter *a)
{
    struct adapterRemove *rm = a->removing;
    if (rm != NULL) {
        uv_timer_stop(&rm->timer);
        snprintf(rm->msg, sizeof rm->msg, "node shutting down");
        removeFinish(rm, TN__STATUS__CANCELED);
    }
}

int adapterRemoveMember(struct adapter *a,
                        struct adapter_change *req,
                        uint64_t id,
                        adapter_change_cb cb,
                        char *errmsg,
                        size_t errmsg_len)
{
    struct adapterRemove *rm;
    unsigned voters;
    unsigned caught_up;
    bool found;
    int rv;

    if (raft_state(&a->raft) != RAFT_LEADER) {
        return changeStatus(RAFT_NOTLEADER, errmsg, errmsg_len, id);
    }
    if (id == a->id) {
        snprintf(errmsg, errmsg_len,
                 "member %llu is the leader: transfer leadership first "
                 "(`tenurectl cluster transfer`)",
                 (unsigned long long)id);
        return TN__STATUS__REFUSED;
    }
    caught_up = removeCaughtUp(a, id, raft_commit_index(&a->raft) > 64
                                          ? raft_commit_index(&a->raft) - 64
                                          : 0,
                               &voters, &found);
    if (!found) {
        return changeStatus(RAFT_BADID, errmsg, errmsg_len, id);
    }
    if (voters == 0 || caught_up < voters / 2 + 1) {
        snprintf(errmsg, errmsg_len,
                 "removing %llu would lose quorum: only %u of the remaining "
                 "%u voters are caught up",
                 (unsigned long long)id, caught_up, voters);
        return TN__STATUS__REFUSED;
    }
    rm = calloc(1, sizeof *rm);
    if (rm == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return TN__STATUS__INTERNAL;
    }
    rm->a = a;
    rm->owner = req;
    rm->id = id;
    rm->barrier.data = rm;
    uv_timer_init(a->loop, &rm->timer);
    rm->timer.data = rm;
    req->cb = cb;
    req->priv = rm;
    rv = raft_barrier(&a->raft, &rm->barrier, removeBarrierCb);
    if (rv != 0) {
        int status = changeStatus(rv, errmsg, errmsg_len, id);
        /* The timer handle must be closed before the memory goes. */
        uv_close((uv_handle_t *)&rm->timer, removeFreeCb);
        return status;
    }
    return 0;
}

/* Leadership transfer that reports its outcome, retried a few times: under
 * load the target may not catch up within one election timeout. */
struct adapterTransfer
{
    struct raft_transfer transfer;
    struct adapter *a;
    struct adapter_change *owner;
    uint64_t id;
    unsigned attempts;
};

static void transferWaitCb(struct raft_transfer *req)
{
    struct adapterTransfer *t = (struct adapterTransfer *)(void *)req;
    struct adapter *a = t->a;
    struct adapter_change *owner = t->owner;
    char msg[160];
    int rv;

    if (a->closing) {
        free(t);
        owner->cb(owner, TN__STATUS__CANCELED, "node shutting down");
        return;
    }
    if (raft_state(&a->raft) != RAFT_LEADER) {
        tnInfof("\"leadership handed over\" to=%llu attempts=%u",
                (unsigned long long)t->id, t->attempts);
        free(t);
        owner->cb(owner, TN__STATUS__OK, "leadership handed over");
        return;
    }
    if (t->attempts < 3) {
        t->attempts++;
        memset(&t->transfer, 0, sizeof t->transfer);
        rv = raft_transfer(&a->raft, &t->transfer, t->id, transferWaitCb);
        if (rv == 0) {
            tnInfof("\"leadership transfer retried\" to=%llu attempt=%u",
                    (unsigned long long)t->id, t->attempts);
            return;
        }
    }
    snprintf(msg, sizeof msg,
             "leadership transfer to %llu did not complete after %u "
             "attempts (target not caught up or unreachable)",
             (unsigned long long)t->id, t->attempts);
    tnWarnf("\"%s\"", msg);
    free(t);
    owner->cb(owner, TN__STATUS__REFUSED, msg);
}

int adapterTransferWait(struct adapter *a,
                        struct adapter_change *req,
                        uint64_t id,
                        adapter_change_cb cb,
                        char *errmsg,
                        size_t errmsg_len)
{
    struct adapterTransfer *t;
    int rv;

    if (raft_state(&a->raft) != RAFT_LEADER) {
        return changeStatus(RAFT_NOTLEADER, errmsg, errmsg_len, id);
    }
    t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(errmsg, errmsg_len, "out of memory");
        return TN__STATUS__INTERNAL;
    }
    t->a = a;
    t->owner = req;
    t->id = id;
    t->attempts = 1;
    req->cb = cb;
    req->priv = t;
    rv = raft_transfer(&a->raft, &t->transfer, id, transferWaitCb);
    if (rv != 0) {
        free(t);
        if (rv == RAFT_BADID) {
            snprintf(errmsg, errmsg_len,
                     "cannot transfer to %llu: not a voter of this cluster, "
                     "or this node",
                     (unsigned long long)id);
            return TN__STATUS__REFUSED;
        }
        return changeStatus(rv, errmsg, errmsg_len, id);
    }
    return 0;
}

/* -------------------------------------------------------------- recovery */

static void recoverCloseCb(struct raft *r)
{
    bool *closed = r->data;
    *closed = true;
}

int adapterRecover(uv_loop_t *loop,
                   const struct adapter_config *config,
                   char *errmsg,
                   size_t errmsg_len)
{
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm rfsm;
    struct raft raft;
    struct raft_configuration conf;
    bool closed = false;
    int rv;

    memset(&transport, 0, sizeof transport);
    memset(&io, 0, sizeof io);
    memset(&rfsm, 0, sizeof rfsm);
    transport.version = 1;
    rv = raft_uv_tcp_init(&transport, loop);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "raft_uv_tcp_init(): %s",
                 raft_strerror(rv));
        return rv;
    }
    rv = raft_uv_init(&io, loop, config->dir, &transport);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "raft_uv_init(%s): %s", config->dir,
                 io.errmsg[0] ? io.errmsg : raft_strerror(rv));
        raft_uv_tcp_close(&transport);
        return rv;
    }
    raft_uv_set_auto_recovery(&io, false);
    rfsm.version = 1;
    rv = raft_init(&raft, &io, &rfsm, config->id, config->raft_address);
    if (rv != 0) {
        snprintf(errmsg, errmsg_len, "raft_init(): %s", raft_errmsg(&raft));
        raft_uv_close(&io);
        raft_uv_tcp_close(&transport);
        return rv;
    }
    raft_configuration_init(&conf);
    for (unsigned i = 0; i < config->n_initial && rv == 0; i++) {
        rv = raft_configuration_add(&conf, config->initial_ids[i],
                                    config->initial_addresses[i], RAFT_VOTER);
    }
    if (rv == 0) {
        rv = raft_recover(&raft, &conf);
        if (rv != 0) {
            snprintf(errmsg, errmsg_len, "raft_recover(): %s",
                     raft_errmsg(&raft));
        }
    } else {
        snprintf(errmsg, errmsg_len, "configuration: %s", raft_strerror(rv));
    }
    raft_configuration_close(&conf);
    raft.data = &closed;
    raft_close(&raft, recoverCloseCb);
    while (!closed) {
        uv_run(loop, UV_RUN_ONCE);
    }
    raft_uv_close(&io);
    raft_uv_tcp_close(&transport);
    uv_run(loop, UV_RUN_DEFAULT);
    return rv;
}
