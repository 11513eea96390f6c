/* Unit tests of the RPC frame codec (proto/frame.c). */
#include "lib/test.h"

#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "tenure.pb-c.h"

struct fixture
{
    struct tn_frame_reader reader;
};

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    tn_frame_reader_init(&f->reader, 1024);
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    tn_frame_reader_close(&f->reader);
    free(f);
    return 0;
}

static void encodeAcquire(const char *resource, uint64_t id, uint8_t **buf,
                          size_t *len)
{
    Tn__Request rq = TN__REQUEST__INIT;
    Tn__Acquire acq = TN__ACQUIRE__INIT;
    acq.resource = (char *)resource;
    rq.id = id;
    rq.body_case = TN__REQUEST__BODY_ACQUIRE;
    rq.acquire = &acq;
    assert_int_equal(tn_frame_encode(&rq.base, 1024, buf, len), 0);
}

/* A frame encodes as a big-endian length plus the message, and decodes back. */
static void test_round_trip(void **state)
{
    struct fixture *f = *state;
    uint8_t *buf;
    size_t len;
    const uint8_t *payload;
    size_t plen;
    Tn__Request *rq;

    encodeAcquire("orders/42", 7, &buf, &len);
    assert_int_equal(((size_t)buf[0] << 24 | (size_t)buf[1] << 16 |
                      (size_t)buf[2] << 8 | buf[3]),
                     len - 4);
    assert_int_equal(tn_frame_reader_feed(&f->reader, buf, len), 0);
    assert_int_equal(tn_frame_reader_next(&f->reader, &payload, &plen), 1);
    rq = tn__request__unpack(NULL, plen, payload);
    assert_non_null(rq);
    assert_int_equal(rq->id, 7);
    assert_string_equal(rq->acquire->resource, "orders/42");
    tn__request__free_unpacked(rq, NULL);
    assert_int_equal(tn_frame_reader_next(&f->reader, &payload, &plen), 0);
    free(buf);
}

/* Frames split at every byte boundary and several frames in one read are
 * reassembled in order. */
static void test_byte_by_byte_and_coalesced(void **state)
{
    struct fixture *f = *state;
    uint8_t *a, *b;
    size_t la, lb;
    const uint8_t *payload;
    size_t plen;
    uint8_t joined[512];
    unsigned got = 0;

    encodeAcquire("a", 1, &a, &la);
    encodeAcquire("bb", 2, &b, &lb);
    memcpy(joined, a, la);
    memcpy(joined + la, b, lb);
    for (size_t i = 0; i < la + lb; i++) {
        assert_int_equal(tn_frame_reader_feed(&f->reader, joined + i, 1), 0);
        while (tn_frame_reader_next(&f->reader, &payload, &plen) == 1) {
            Tn__Request *rq = tn__request__unpack(NULL, plen, payload);
            assert_non_null(rq);
            got++;
            assert_int_equal(rq->id, got);
            tn__request__free_unpacked(rq, NULL);
        }
    }
    assert_int_equal(got, 2);
    /* Both at once. */
    assert_int_equal(tn_frame_reader_feed(&f->reader, joined, la + lb), 0);
    assert_int_equal(tn_frame_reader_next(&f->reader, &payload, &plen), 1);
    assert_int_equal(tn_frame_reader_next(&f->reader, &payload, &plen), 1);
    assert_int_equal(tn_frame_reader_next(&f->reader, &payload, &plen), 0);
    free(a);
    free(b);
}

/* A header that declares more than the maximum is refused as soon as the
 * four header bytes are in, before any payload is buffered. */
static void test_too_big(void **state)
{
    struct fixture *f = *state;
    const uint8_t hdr[4] = { 0x00, 0x00, 0x04, 0x01 }; /* 1025 > 1024 */
    assert_int_equal(tn_frame_reader_feed(&f->reader, hdr, 4),
                     TN_FRAME_TOO_BIG);
}

/* Encoding refuses a message over the maximum. */
static void test_encode_too_big(void **state)
{
    Tn__Request rq = TN__REQUEST__INIT;
    Tn__Acquire acq = TN__ACQUIRE__INIT;
    char big[2048];
    uint8_t *buf = NULL;
    size_t len = 0;
    (void)state;
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    acq.resource = big;
    rq.body_case = TN__REQUEST__BODY_ACQUIRE;
    rq.acquire = &acq;
    assert_int_equal(tn_frame_encode(&rq.base, 1024, &buf, &len),
                     TN_FRAME_TOO_BIG);
    assert_null(buf);
}

/* Garbage payloads are delivered as frames and rejected by the decoder,
 * never crash it. */
static void test_garbage_payload(void **state)
{
    struct fixture *f = *state;
    uint8_t frame[4 + 6] = { 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    const uint8_t *payload;
    size_t plen;
    assert_int_equal(tn_frame_reader_feed(&f->reader, frame, sizeof frame), 0);
    assert_int_equal(tn_frame_reader_next(&f->reader, &payload, &plen), 1);
    assert_null(tn__request__unpack(NULL, plen, payload));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_byte_by_byte_and_coalesced, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_too_big, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_encode_too_big, setUp, tearDown),
        cmocka_unit_test_setup_teardown(test_garbage_payload, setUp, tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
