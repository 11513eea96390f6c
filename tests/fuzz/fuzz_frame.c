/* Fuzz target: the RPC input path of the daemon, short of the network.
 *
 * Input: one control byte, then a byte stream as a client would send it on
 * the RPC port.
 *   control   0: the stream is fed to the frame reader in one piece;
 *             n: in pieces of n bytes (what a slow client does).
 *
 * Per stream: tn_frame_reader (proto/frame.c) with a 64 KiB maximum,
 * checked against an independent walk of the same bytes (every frame it
 * returns is the next length-prefixed piece, TOO_BIG exactly when the next
 * header declares more than the maximum). Per frame: tn__request__unpack,
 * the pack/unpack round trip must be stable, then what the dispatch does
 * with a request on a leader (server/dispatch.c: group 0 only, a known
 * body, mutations become one Tn__Command each in a batch, reads go to the
 * FSM's views), all without a loop: the batch goes through commandEncode /
 * commandDecode and is applied to a small live lock table (fsm_util.c),
 * whose invariants and snapshot round trip are then checked. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "frame.h"
#include "fsm.h"
#include "fsm_util.h"
#include "fuzz.h"
#include "tenure.pb-c.h"

#define MAX_FRAME (64 * 1024)
#define MAX_COMMANDS 64
#define SELF_CLIENT_ID UINT64_C(0x5e1f)

struct run
{
    struct fsm fsm;
    struct fuzz_world w;
    Tn__Request *reqs[MAX_COMMANDS]; /* owned: commands borrow from them */
    Tn__Command cmds[MAX_COMMANDS];
    Tn__Command *cmdp[MAX_COMMANDS];
    size_t n_cmds;
    size_t n_reqs;
    uint64_t self_seq;
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

/* pack(unpack(pack(x))) == pack(x): what the daemon relays or logs is what
 * it decoded. */
static void requestRoundTrip(const Tn__Request *rq)
{
    size_t n = tn__request__get_packed_size(rq);
    uint8_t *a = malloc(n + 1);
    uint8_t *b;
    Tn__Request *again;
    size_t m;

    FUZZ_CHECK(a != NULL, "out of memory");
    FUZZ_CHECK(tn__request__pack(rq, a) == n, "packed size mismatch");
    again = tn__request__unpack(NULL, n, a);
    FUZZ_CHECK(again != NULL, "a re-packed request does not unpack");
    m = tn__request__get_packed_size(again);
    b = malloc(m + 1);
    FUZZ_CHECK(b != NULL, "out of memory");
    tn__request__pack(again, b);
    FUZZ_CHECK(m == n && memcmp(a, b, n) == 0,
               "request pack/unpack round trip not stable");
    FUZZ_CHECK(again->body_case == rq->body_case, "body case changed");
    tn__request__free_unpacked(again, NULL);
    free(a);
    free(b);
}

/* Same checks as validSubmessage() in server/dispatch.c. */
static bool bodyPresent(const Tn__Request *rq)
{
    switch (rq->body_case) {
    case TN__REQUEST__BODY_SESSION_OPEN: return rq->session_open != NULL;
    case TN__REQUEST__BODY_KEEPALIVE: return rq->keepalive != NULL;
    case TN__REQUEST__BODY_SESSION_CLOSE: return rq->session_close != NULL;
    case TN__REQUEST__BODY_ACQUIRE: return rq->acquire != NULL;
    case TN__REQUEST__BODY_RELEASE: return rq->release != NULL;
    case TN__REQUEST__BODY_RENEW: return rq->renew != NULL;
    case TN__REQUEST__BODY_GET_LOCK: return rq->get_lock != NULL;
    case TN__REQUEST__BODY_LIST_LOCKS: return rq->list_locks != NULL;
    case TN__REQUEST__BODY_CLUSTER_STATUS: return rq->cluster_status != NULL;
    case TN__REQUEST__BODY_MEMBER_INFO: return rq->member_info != NULL;
    case TN__REQUEST__BODY_MEMBER_ADD: return rq->member_add != NULL;
    case TN__REQUEST__BODY_MEMBER_REMOVE: return rq->member_remove != NULL;
    case TN__REQUEST__BODY_TRANSFER: return rq->transfer != NULL;
    case TN__REQUEST__BODY_SNAPSHOT_SAVE: return rq->snapshot_save != NULL;
    case TN__REQUEST__BODY_SNAPSHOT_RESTORE:
        return rq->snapshot_restore != NULL;
    case TN__REQUEST__BODY_WATCH: return rq->watch != NULL;
    case TN__REQUEST__BODY_WATCH_CANCEL: return rq->watch_cancel != NULL;
    default: return false;
    }
}

struct listState
{
    uint32_t limit;
    uint32_t seen;
};

static int listCb(void *data, const struct fsm_lock_view *v)
{
    struct listState *st = data;
    FUZZ_CHECK(v->resource != NULL && v->resource[v->resource_len] == '\0',
               "a listed resource is not NUL-terminated");
    st->seen++;
    return st->limit != 0 && st->seen >= st->limit;
}

static int memberCb(void *data, const struct fsm_member_view *m)
{
    (void)data;
    FUZZ_CHECK(m->id != 0, "a member with id 0");
    return 0;
}

/* Reads are answered from the FSM's views (answerRead in dispatch.c). */
static void answerRead(struct run *r, const Tn__Request *rq)
{
    switch (rq->body_case) {
    case TN__REQUEST__BODY_GET_LOCK: {
        const char *res = rq->get_lock->resource ? rq->get_lock->resource : "";
        struct fsm_lock_view v;
        if (fsmLockGet(&r->fsm, res, strlen(res), &v)) {
            FUZZ_CHECK(v.resource_len == strlen(res) &&
                           memcmp(v.resource, res, v.resource_len) == 0,
                       "fsmLockGet answered another resource");
        }
        break;
    }
    case TN__REQUEST__BODY_LIST_LOCKS: {
        const char *p = rq->list_locks->prefix ? rq->list_locks->prefix : "";
        struct listState st = { rq->list_locks->limit, 0 };
        fsmLockForEach(&r->fsm, p, strlen(p), listCb, &st);
        break;
    }
    case TN__REQUEST__BODY_KEEPALIVE: {
        struct fsm_session_view s;
        if (fsmSessionGet(&r->fsm, rq->keepalive->session, &s)) {
            FUZZ_CHECK(s.id == rq->keepalive->session, "wrong session");
        }
        break;
    }
    case TN__REQUEST__BODY_CLUSTER_STATUS:
        fsmMemberForEach(&r->fsm, memberCb, NULL);
        break;
    case TN__REQUEST__BODY_WATCH: {
        /* A stream's events are the reads above, of one resource or of a
         * prefix. */
        const char *k = rq->watch->resource ? rq->watch->resource : "";
        if (rq->watch->prefix) {
            struct listState st = { rq->watch->limit, 0 };
            fsmLockForEach(&r->fsm, k, strlen(k), listCb, &st);
        } else {
            struct fsm_lock_view v;
            if (fsmLockGet(&r->fsm, k, strlen(k), &v)) {
                FUZZ_CHECK(v.resource_len == strlen(k) &&
                               memcmp(v.resource, k, v.resource_len) == 0,
                           "fsmLockGet answered another resource");
            }
        }
        break;
    }
    default:
        break;
    }
}

/* A mutation becomes a command borrowing the request's sub-message, as in
 * submitMutation() (dispatch.c). Returns true if @rq was kept. */
static bool addMutation(struct run *r, Tn__Request *rq)
{
    Tn__Command *c;

    if (r->n_cmds == MAX_COMMANDS) {
        return false;
    }
    c = &r->cmds[r->n_cmds];
    tn__command__init(c);
    c->client_id = rq->client_id;
    c->seq = rq->seq;
    switch (rq->body_case) {
    case TN__REQUEST__BODY_SESSION_OPEN:
        c->body_case = TN__COMMAND__BODY_SESSION_OPEN;
        c->session_open = rq->session_open;
        break;
    case TN__REQUEST__BODY_SESSION_CLOSE:
        c->body_case = TN__COMMAND__BODY_SESSION_CLOSE;
        c->session_close = rq->session_close;
        break;
    case TN__REQUEST__BODY_ACQUIRE:
        if (rq->client_id == 0 && rq->acquire->wait_ms > 0) {
            c->client_id = SELF_CLIENT_ID;
            c->seq = ++r->self_seq;
        }
        c->body_case = TN__COMMAND__BODY_ACQUIRE;
        c->acquire = rq->acquire;
        break;
    case TN__REQUEST__BODY_RELEASE:
        c->body_case = TN__COMMAND__BODY_RELEASE;
        c->release = rq->release;
        break;
    case TN__REQUEST__BODY_RENEW:
        c->body_case = TN__COMMAND__BODY_RENEW;
        c->renew = rq->renew;
        break;
    case TN__REQUEST__BODY_MEMBER_INFO:
        if (rq->member_info->low_disk) {
            return false; /* kept in the dispatch's memory, not logged */
        }
        c->body_case = TN__COMMAND__BODY_MEMBER;
        c->member = rq->member_info;
        break;
    case TN__REQUEST__BODY_SNAPSHOT_RESTORE:
        c->body_case = TN__COMMAND__BODY_RESTORE;
        c->restore = rq->snapshot_restore;
        break;
    default:
        return false;
    }
    r->cmdp[r->n_cmds++] = c;
    return true;
}

/* Returns true if the request was kept (it then lives until the batch is
 * applied). */
static bool handleRequest(struct run *r, Tn__Request *rq)
{
    requestRoundTrip(rq);
    if (rq->group != 0 || !bodyPresent(rq)) {
        return false; /* INVALID_ARGUMENT */
    }
    switch (rq->body_case) {
    case TN__REQUEST__BODY_GET_LOCK:
    case TN__REQUEST__BODY_LIST_LOCKS:
    case TN__REQUEST__BODY_KEEPALIVE:
    case TN__REQUEST__BODY_CLUSTER_STATUS:
    case TN__REQUEST__BODY_WATCH:
        answerRead(r, rq);
        return false;
    case TN__REQUEST__BODY_WATCH_CANCEL:
        return false; /* answered by the RPC front end */
    case TN__REQUEST__BODY_MEMBER_ADD:
    case TN__REQUEST__BODY_MEMBER_REMOVE:
    case TN__REQUEST__BODY_TRANSFER:
    case TN__REQUEST__BODY_SNAPSHOT_SAVE:
        return false; /* raft operations: not reachable without raft */
    default:
        return addMutation(r, rq);
    }
}

static void applyBatch(struct run *r)
{
    Tn__Batch b;
    Tn__Batch *decoded = NULL;
    struct fsm_result *res;
    void *enc = NULL;
    void *enc2 = NULL;
    size_t len = 0;
    size_t len2 = 0;
    int rv;

    if (r->n_cmds == 0) {
        return;
    }
    fuzzBatchInit(&b, r->cmdp, r->n_cmds, r->w.now_ms + 250);
    rv = commandEncode(&b, malloc, &enc, &len);
    if (rv != 0) {
        /* Only a batch over COMMAND_MAX_PAYLOAD is refused; frames are
         * far smaller. */
        FUZZ_CHECK(0, "commandEncode refused a batch of %zu commands: %d",
                   r->n_cmds, rv);
    }
    FUZZ_CHECK(len % 8 == 0 && len == commandEncodedSize(&b),
               "encoded length %zu", len);
    rv = commandDecode(enc, len, &decoded);
    FUZZ_CHECK(rv == 0, "an encoded batch does not decode: %d", rv);
    FUZZ_CHECK(decoded->n_commands == r->n_cmds, "command count changed");
    FUZZ_CHECK(commandEncode(decoded, malloc, &enc2, &len2) == 0,
               "re-encode failed");
    FUZZ_CHECK(len2 == len && memcmp(enc, enc2, len) == 0,
               "entry encode/decode round trip not stable");
    res = calloc(decoded->n_commands, sizeof *res);
    FUZZ_CHECK(res != NULL, "out of memory");
    fuzzFsmApply(&r->fsm, r->w.index + 1, decoded, res);
    for (size_t i = 0; i < decoded->n_commands; i++) {
        FUZZ_CHECK(res[i].status >= 0 && res[i].status <= TN__STATUS__REFUSED,
                   "command %zu: status %d", i, res[i].status);
        if (res[i].status == TN__STATUS__OK &&
            decoded->commands[i]->body_case == TN__COMMAND__BODY_ACQUIRE &&
            !res[i].queued && !res[i].replayed) {
            /* A replay answers with what was stored for that (client,
             * seq), whatever command it was (fsm.h): not checked. */
            FUZZ_CHECK(res[i].token != 0, "granted without a token");
        }
    }
    fuzzSnapshotRoundTrip(&r->fsm, NULL, NULL);
    free(res);
    free(enc);
    free(enc2);
    commandFree(decoded);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size, 0 };
    struct tn_frame_reader reader;
    struct run *r;
    size_t chunk = fuzzU8(&in);
    size_t len;
    const uint8_t *stream = fuzzRest(&in, &len);
    size_t fed = 0;
    size_t ref = 0; /* where the reference walk expects the next frame */
    bool too_big = false;

    r = calloc(1, sizeof *r);
    FUZZ_CHECK(r != NULL, "out of memory");
    fuzzFsmSetup(&r->fsm, &r->w);
    tn_frame_reader_init(&reader, MAX_FRAME);
    if (chunk == 0) {
        chunk = len > 0 ? len : 1;
    }
    while (fed < len && !too_big) {
        size_t n = len - fed < chunk ? len - fed : chunk;
        const uint8_t *payload;
        size_t plen;
        int rv = tn_frame_reader_feed(&reader, stream + fed, n);

        fed += n;
        if (rv == TN_FRAME_TOO_BIG) {
            too_big = true;
        } else {
            FUZZ_CHECK(rv == 0, "feed: %d", rv);
            while ((rv = tn_frame_reader_next(&reader, &payload, &plen)) ==
                   1) {
                Tn__Request *rq;
                FUZZ_CHECK(ref + 4 <= fed && be32(stream + ref) == plen &&
                               ref + 4 + plen <= fed,
                           "frame of %zu bytes where the walk is at %zu",
                           plen, ref);
                FUZZ_CHECK(plen <= MAX_FRAME, "frame over the maximum");
                FUZZ_CHECK(memcmp(payload, stream + ref + 4, plen) == 0,
                           "payload differs from the stream");
                ref += 4 + plen;
                rq = tn__request__unpack(NULL, plen, payload);
                if (rq == NULL) {
                    continue; /* INVALID_ARGUMENT, connection closed */
                }
                tn_message_strip_unknown(&rq->base); /* as server/rpc.c */
                if (handleRequest(r, rq)) {
                    r->reqs[r->n_reqs++] = rq;
                } else {
                    tn__request__free_unpacked(rq, NULL);
                }
            }
            if (rv == TN_FRAME_TOO_BIG) {
                too_big = true;
            } else {
                FUZZ_CHECK(rv == 0, "next: %d", rv);
            }
        }
        if (too_big) {
            FUZZ_CHECK(ref + 4 <= fed && be32(stream + ref) > MAX_FRAME,
                       "TOO_BIG but the next header (at %zu) is fine", ref);
        }
    }
    if (!too_big) {
        /* What is left is an incomplete frame. */
        FUZZ_CHECK(ref + 4 > len || ref + 4 + be32(stream + ref) > len,
                   "a complete frame at %zu was not returned", ref);
    }
    tn_frame_reader_close(&reader);
    applyBatch(r);
    for (size_t i = 0; i < r->n_reqs; i++) {
        tn__request__free_unpacked(r->reqs[i], NULL);
    }
    fsmClose(&r->fsm);
    free(r);
    return 0;
}
