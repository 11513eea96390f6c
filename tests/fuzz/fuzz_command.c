/* Fuzz target: decoding and applying one Raft log entry.
 *
 * Input: the bytes of an entry as raft hands them to the FSM (the layout of
 * server/command.h). commandDecode must reject anything malformed without
 * crashing. A batch it accepts is:
 *   - re-encoded: the encoding must decode to the same bytes again;
 *   - applied at index 1 to two fresh FSMs: their snapshots must be
 *     byte-identical (apply is deterministic), and the snapshot must restore
 *     and re-snapshot to the same bytes;
 *   - applied to a small live table (fsm_util.c) at two successive indexes
 *     (the second as a retried entry meeting the exactly-once table), with
 *     the invariants of the table checked after each and the snapshot round
 *     trip at the end. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "fsm.h"
#include "fsm_util.h"
#include "fuzz.h"

static void reencode(const Tn__Batch *b)
{
    void *enc = NULL;
    size_t len = 0;
    Tn__Batch *again = NULL;
    void *enc2 = NULL;
    size_t len2 = 0;
    int rv = commandEncode(b, malloc, &enc, &len);

    /* A decoded batch fits COMMAND_MAX_PAYLOAD and has a known version. */
    FUZZ_CHECK(rv == 0, "a decoded batch does not encode: %d", rv);
    FUZZ_CHECK(len % 8 == 0 && len >= COMMAND_HEADER_SIZE,
               "encoded length %zu", len);
    FUZZ_CHECK(commandDecode(enc, len, &again) == 0,
               "a re-encoded batch does not decode");
    FUZZ_CHECK(commandEncode(again, malloc, &enc2, &len2) == 0,
               "encode failed");
    FUZZ_CHECK(len == len2 && memcmp(enc, enc2, len) == 0,
               "encode(decode(encode(b))) != encode(b)");
    commandFree(again);
    free(enc);
    free(enc2);
}

static void checkResults(const Tn__Batch *b, const struct fsm_result *res)
{
    for (size_t i = 0; i < b->n_commands; i++) {
        FUZZ_CHECK(res[i].status >= 0 && res[i].status <= TN__STATUS__REFUSED,
                   "command %zu: status %d", i, res[i].status);
        /* A replay answers with what was stored for that (client, seq),
         * whatever command it was (fsm.h): not checked. */
        if (res[i].status == TN__STATUS__OK && !res[i].queued &&
            !res[i].replayed &&
            b->commands[i]->body_case == TN__COMMAND__BODY_ACQUIRE) {
            FUZZ_CHECK(res[i].token != 0, "granted without a token");
        }
    }
}

static void applyFresh(const Tn__Batch *b)
{
    struct fsm_config fc;
    struct fsm f1;
    struct fsm f2;
    struct fsm_result *res = calloc(b->n_commands + 1, sizeof *res);
    void *s1 = NULL;
    void *s2 = NULL;
    size_t l1 = 0;
    size_t l2 = 0;

    FUZZ_CHECK(res != NULL, "out of memory");
    fsmConfigDefaults(&fc);
    FUZZ_CHECK(fsmInit(&f1, &fc) == 0 && fsmInit(&f2, &fc) == 0,
               "fsmInit failed");
    fuzzFsmApply(&f1, 1, b, res);
    checkResults(b, res);
    fuzzFsmApply(&f2, 1, b, NULL);
    fuzzSnapshotRoundTrip(&f1, &s1, &l1);
    FUZZ_CHECK(fsmSnapshot(&f2, &s2, &l2) == 0, "snapshot failed");
    FUZZ_CHECK(l1 == l2 && memcmp(s1, s2, l1) == 0,
               "the same entry applied to two fresh tables differs");
    free(s1);
    free(s2);
    free(res);
    fsmClose(&f1);
    fsmClose(&f2);
}

static void applyLive(const Tn__Batch *b)
{
    struct fsm f;
    struct fuzz_world w;
    struct fsm_result *res = calloc(b->n_commands + 1, sizeof *res);

    FUZZ_CHECK(res != NULL, "out of memory");
    fuzzFsmSetup(&f, &w);
    fuzzFsmApply(&f, w.index + 1, b, res);
    checkResults(b, res);
    fuzzFsmApply(&f, w.index + 2, b, res);
    checkResults(b, res);
    fuzzSnapshotRoundTrip(&f, NULL, NULL);
    free(res);
    fsmClose(&f);
}

/* Decoding into an arena (the apply path) must agree with commandDecode:
 * same verdict, and a batch that encodes to the same bytes. Once with a
 * tiny first buffer (most of the batch in malloc'd chunks), once with a
 * roomy one. */
static void arenaAgrees(const uint8_t *data, size_t size, int rv,
                        const Tn__Batch *b)
{
    static max_align_t roomy[4096 / sizeof(max_align_t)];
    max_align_t tiny[2];
    void *bufs[2] = { tiny, roomy };
    size_t sizes[2] = { sizeof tiny, sizeof roomy };

    for (int i = 0; i < 2; i++) {
        struct command_arena arena;
        Tn__Batch *ab = NULL;
        int arv;
        commandArenaInit(&arena, bufs[i], sizes[i]);
        arv = commandDecodeIn(&arena, data, size, &ab);
        FUZZ_CHECK(arv == rv, "commandDecodeIn %d, commandDecode %d", arv,
                   rv);
        if (arv == 0) {
            void *e1 = NULL;
            void *e2 = NULL;
            size_t l1 = 0;
            size_t l2 = 0;
            FUZZ_CHECK(commandEncode(b, malloc, &e1, &l1) == 0 &&
                           commandEncode(ab, malloc, &e2, &l2) == 0,
                       "encode failed");
            FUZZ_CHECK(l1 == l2 && memcmp(e1, e2, l1) == 0,
                       "the arena decoded another batch");
            free(e1);
            free(e2);
        }
        commandArenaClose(&arena);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Tn__Batch *b = NULL;
    int rv = commandDecode(data, size, &b);

    arenaAgrees(data, size, rv, b);

    if (rv != 0) {
        FUZZ_CHECK(rv == TN__STATUS__INVALID_ARGUMENT ||
                       rv == TN__STATUS__INTERNAL,
                   "commandDecode: %d", rv);
        FUZZ_CHECK(b == NULL, "output set on failure");
        return 0;
    }
    FUZZ_CHECK(b != NULL && b->version <= COMMAND_BATCH_VERSION,
               "decoded a batch of version %u", b ? b->version : 0);
    reencode(b);
    applyFresh(b);
    applyLive(b);
    commandFree(b);
    return 0;
}
