/* Unit tests of the log-entry codec (server/command.c). */
#include "lib/test.h"

#include <stdlib.h>
#include <string.h>

#include "command.h"

struct fixture
{
    Tn__Batch batch;
    Tn__Command cmds[3];
    Tn__Acquire acquire;
    Tn__Release release;
    Tn__SessionOpen open;
    void *buf;
    size_t len;
    Tn__Batch *decoded;
};

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    Tn__Batch batch = TN__BATCH__INIT;
    Tn__Command cmd = TN__COMMAND__INIT;
    Tn__Acquire acquire = TN__ACQUIRE__INIT;
    Tn__Release release = TN__RELEASE__INIT;
    Tn__SessionOpen open = TN__SESSION_OPEN__INIT;

    assert_non_null(f);
    f->batch = batch;
    f->acquire = acquire;
    f->release = release;
    f->open = open;
    for (int i = 0; i < 3; i++) {
        f->cmds[i] = cmd;
    }
    f->batch.version = 1;
    f->batch.term = 7;
    f->batch.now_ms = 1700000000123ull;
    f->batch.proposer = 2;
    f->batch.nonce = 99;

    f->open.holder = "worker-1";
    f->open.ttl_ms = 10000;
    f->cmds[0].client_id = 5;
    f->cmds[0].seq = 1;
    f->cmds[0].body_case = TN__COMMAND__BODY_SESSION_OPEN;
    f->cmds[0].session_open = &f->open;

    f->acquire.session = 1234;
    f->acquire.resource = "orders/42";
    f->acquire.mode = TN__LOCK_MODE__SEMAPHORE;
    f->acquire.permits = 3;
    f->acquire.wait_ms = 500;
    f->cmds[1].client_id = 5;
    f->cmds[1].seq = 2;
    f->cmds[1].body_case = TN__COMMAND__BODY_ACQUIRE;
    f->cmds[1].acquire = &f->acquire;

    f->release.resource = "orders/42";
    f->release.token = 1ull << 40;
    f->cmds[2].body_case = TN__COMMAND__BODY_RELEASE;
    f->cmds[2].release = &f->release;
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;

    free(f->buf);
    commandFree(f->decoded);
    free(f);
    return 0;
}

static Tn__Command *cmdPtrs[3];

static void useCommands(struct fixture *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cmdPtrs[i] = &f->cmds[i];
    }
    f->batch.n_commands = n;
    f->batch.commands = n > 0 ? cmdPtrs : NULL;
}

static void encode(struct fixture *f)
{
    assert_int_equal(commandEncode(&f->batch, malloc, &f->buf, &f->len), 0);
}

static int decode(const void *buf, size_t len)
{
    Tn__Batch *b = NULL;
    int rv = commandDecode(buf, len, &b);

    if (rv == 0) {
        assert_non_null(b);
        commandFree(b);
    } else {
        assert_null(b);
    }
    return rv;
}

/* An encoded batch decodes back to the same header fields and commands. */
static void test_round_trip(void **state)
{
    struct fixture *f = *state;
    Tn__Batch *d;

    useCommands(f, 3);
    encode(f);
    assert_int_equal(f->len % 8, 0);
    assert_int_equal(f->len, commandEncodedSize(&f->batch));
    assert_int_equal(commandDecode(f->buf, f->len, &f->decoded), 0);
    d = f->decoded;
    assert_int_equal(d->version, 1);
    assert_int_equal(d->term, 7);
    assert_int_equal(d->now_ms, 1700000000123ull);
    assert_int_equal(d->proposer, 2);
    assert_int_equal(d->nonce, 99);
    assert_int_equal(d->n_commands, 3);
    assert_int_equal(d->commands[0]->body_case, TN__COMMAND__BODY_SESSION_OPEN);
    assert_string_equal(d->commands[0]->session_open->holder, "worker-1");
    assert_int_equal(d->commands[0]->session_open->ttl_ms, 10000);
    assert_int_equal(d->commands[0]->client_id, 5);
    assert_int_equal(d->commands[0]->seq, 1);
    assert_int_equal(d->commands[1]->body_case, TN__COMMAND__BODY_ACQUIRE);
    assert_int_equal(d->commands[1]->acquire->session, 1234);
    assert_string_equal(d->commands[1]->acquire->resource, "orders/42");
    assert_int_equal(d->commands[1]->acquire->mode, TN__LOCK_MODE__SEMAPHORE);
    assert_int_equal(d->commands[1]->acquire->permits, 3);
    assert_int_equal(d->commands[1]->acquire->wait_ms, 500);
    assert_int_equal(d->commands[2]->body_case, TN__COMMAND__BODY_RELEASE);
    assert_int_equal(d->commands[2]->release->token, 1ull << 40);
}

/* An empty batch (no commands, default fields) still round-trips. */
static void test_round_trip_empty(void **state)
{
    struct fixture *f = *state;
    Tn__Batch empty = TN__BATCH__INIT;

    assert_int_equal(commandEncode(&empty, malloc, &f->buf, &f->len), 0);
    assert_int_equal(f->len, 8);
    assert_int_equal(commandDecode(f->buf, f->len, &f->decoded), 0);
    assert_int_equal(f->decoded->n_commands, 0);
    assert_int_equal(f->decoded->term, 0);
}

/* Every encoded length is a multiple of 8 and the padding is zero. */
static void test_lengths_multiple_of_8(void **state)
{
    struct fixture *f = *state;
    char holder[64];

    useCommands(f, 1);
    for (size_t n = 0; n < sizeof holder; n++) {
        memset(holder, 'h', n);
        holder[n] = '\0';
        f->open.holder = holder;
        encode(f);
        assert_int_equal(f->len % 8, 0);
        assert_true(f->len >= 8 + 1 + n);
        assert_int_equal(decode(f->buf, f->len), 0);
        free(f->buf);
        f->buf = NULL;
    }
}

/* Inputs shorter than the header, or not a multiple of 8, are rejected. */
static void test_short_and_unaligned(void **state)
{
    struct fixture *f = *state;

    useCommands(f, 3);
    encode(f);
    assert_int_equal(decode(NULL, 0), TN__STATUS__INVALID_ARGUMENT);
    for (size_t n = 0; n < f->len; n++) {
        assert_int_equal(decode(f->buf, n), TN__STATUS__INVALID_ARGUMENT);
    }
}

/* A wrong magic or format version byte is rejected. */
static void test_bad_magic(void **state)
{
    struct fixture *f = *state;
    uint8_t *p;

    useCommands(f, 2);
    encode(f);
    p = f->buf;
    for (int i = 0; i < 4; i++) {
        p[i] ^= 0x20;
        assert_int_equal(decode(f->buf, f->len), TN__STATUS__INVALID_ARGUMENT);
        p[i] ^= 0x20;
    }
    assert_int_equal(decode(f->buf, f->len), 0);
}

/* A length field that disagrees with the buffer size is rejected. */
static void test_bad_length(void **state)
{
    struct fixture *f = *state;
    uint8_t *p;
    uint32_t n;

    useCommands(f, 3);
    encode(f);
    p = f->buf;
    n = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 |
        p[7];
    /* Longer than the buffer, absurdly large, or leaving 8+ bytes of
     * padding. */
    uint32_t bad[] = { n + 8, 0xffffffffu, (uint32_t)f->len, n - 8, 0 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p[4] = (uint8_t)(bad[i] >> 24);
        p[5] = (uint8_t)(bad[i] >> 16);
        p[6] = (uint8_t)(bad[i] >> 8);
        p[7] = (uint8_t)bad[i];
        assert_int_equal(decode(f->buf, f->len), TN__STATUS__INVALID_ARGUMENT);
    }
}

/* Extra trailing zero bytes beyond the padding are rejected. */
static void test_extra_padding(void **state)
{
    struct fixture *f = *state;
    uint8_t *big;

    useCommands(f, 3);
    encode(f);
    big = calloc(1, f->len + 8);
    assert_non_null(big);
    memcpy(big, f->buf, f->len);
    assert_int_equal(decode(big, f->len + 8), TN__STATUS__INVALID_ARGUMENT);
    free(big);
}

/* A non-zero byte in the padding is rejected. */
static void test_nonzero_padding(void **state)
{
    struct fixture *f = *state;
    uint8_t *p;
    size_t payload;
    int tried = 0;

    useCommands(f, 3);
    /* Find a holder length that leaves padding. */
    for (int n = 0; n < 8; n++) {
        char holder[16];
        memset(holder, 'x', (size_t)n);
        holder[n] = '\0';
        f->open.holder = holder;
        free(f->buf);
        f->buf = NULL;
        encode(f);
        p = f->buf;
        payload =
            (size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7];
        for (size_t i = 8 + payload; i < f->len; i++) {
            p[i] = 1;
            assert_int_equal(decode(f->buf, f->len),
                             TN__STATUS__INVALID_ARGUMENT);
            p[i] = 0;
            tried++;
        }
        assert_int_equal(decode(f->buf, f->len), 0);
    }
    assert_true(tried > 0);
}

/* A payload that is not a valid protobuf is rejected. */
static void test_bad_protobuf(void **state)
{
    struct fixture *f = *state;
    /* Field 6 (commands), wire type 2, length 100 with nothing behind it. */
    uint8_t bad[16] = { 'T', 'N', 'B', 1, 0, 0, 0, 3, 0x32, 100, 0 };

    (void)f;
    bad[10] = 0;
    assert_int_equal(decode(bad, sizeof bad), TN__STATUS__INVALID_ARGUMENT);
    /* Wire type 7 does not exist. */
    bad[7] = 1;
    bad[8] = 0x0f;
    bad[9] = 0;
    assert_int_equal(decode(bad, 16), TN__STATUS__INVALID_ARGUMENT);
}

/* A batch version newer than this build understands is refused both ways. */
static void test_batch_version(void **state)
{
    struct fixture *f = *state;
    Tn__Batch future = TN__BATCH__INIT;
    uint8_t raw[16] = { 'T', 'N', 'B', 1, 0, 0, 0, 2, 0x08, 2 };

    future.version = 2;
    assert_int_equal(commandEncode(&future, malloc, &f->buf, &f->len),
                     TN__STATUS__INVALID_ARGUMENT);
    assert_null(f->buf);
    assert_int_equal(decode(raw, sizeof raw), TN__STATUS__INVALID_ARGUMENT);
    raw[9] = 1;
    assert_int_equal(decode(raw, sizeof raw), 0);
}

static void *failingAlloc(size_t n)
{
    (void)n;
    return NULL;
}

/* An allocator failure is reported and nothing is returned. */
static void test_encode_nomem(void **state)
{
    struct fixture *f = *state;

    useCommands(f, 3);
    assert_int_equal(commandEncode(&f->batch, failingAlloc, &f->buf, &f->len),
                     TN__STATUS__INTERNAL);
    assert_null(f->buf);
}

/* Flipping any single byte of an entry never crashes the decoder. */
static void test_bit_flips_never_crash(void **state)
{
    struct fixture *f = *state;
    uint8_t *p;

    useCommands(f, 3);
    encode(f);
    p = f->buf;
    for (size_t i = 0; i < f->len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            p[i] ^= (uint8_t)(1u << bit);
            (void)decode(f->buf, f->len);
            p[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(decode(f->buf, f->len), 0);
}

/* Random garbage behind a valid header never crashes the decoder. */
static void test_garbage_never_crashes(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[264];
    uint32_t x = 12345;

    (void)f;
    for (int round = 0; round < 5000; round++) {
        size_t n = (size_t)(round % 32) * 8 + 8;
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (uint8_t)(x >> 16);
        }
        buf[0] = 'T';
        buf[1] = 'N';
        buf[2] = 'B';
        buf[3] = 1;
        buf[4] = buf[5] = 0;
        if (n > 8) {
            size_t payload = n - 8 - (size_t)(round % 8);
            buf[6] = (uint8_t)(payload >> 8);
            buf[7] = (uint8_t)payload;
            memset(buf + 8 + payload, 0, n - 8 - payload);
        }
        (void)decode(buf, n);
    }
}

#define T(name) cmocka_unit_test_setup_teardown(name, setUp, tearDown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_round_trip),
        T(test_round_trip_empty),
        T(test_lengths_multiple_of_8),
        T(test_short_and_unaligned),
        T(test_bad_magic),
        T(test_bad_length),
        T(test_extra_padding),
        T(test_nonzero_padding),
        T(test_bad_protobuf),
        T(test_batch_version),
        T(test_encode_nomem),
        T(test_bit_flips_never_crash),
        T(test_garbage_never_crashes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
