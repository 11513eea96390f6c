/* Fuzz target: JSON request bodies of the HTTP shim.
 *
 * Input:
 *   u8   route   (mod 6) which request carries the body:
 *                0 PUT /v1/locks/orders%2F1            acquire
 *                1 PUT /v1/locks/orders/1 + If-Match    renew
 *                2 POST /v1/sessions                    session open
 *                3 PUT /v1/sessions/99                  keepalive
 *                4 PUT /v1/locks/q + Idempotency-Key    acquire, exactly-once
 *                5 PUT /v1/locks/pool, HTTP/1.0         acquire, no keep-alive
 *   u8   status  TN__STATUS__* of the fake dispatch's answers (mod 17);
 *                bit 7: health says this node leads
 *   ...          the body
 * The body goes through the real server (http_harness.c) with a correct
 * Content-Length, so it reaches exchangeBody() and the field readers of
 * server/json.c. The same body is also given to those readers directly,
 * whose documented contracts are checked: a value they accept is the JSON
 * value, within the bounds asked for; a null is absent; jsonSetU64 reads
 * back through jsonGetU64. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "http.h"
#include "http_harness.h"
#include "json.h"

static const char *const keys[] = { "holder", "ttl_ms", "wait_ms", "mode",
                                    "permits", "lock_delay_ms", "session",
                                    NULL };

static void checkU32(const json_t *o, const char *key, uint32_t min,
                     uint32_t max)
{
    const json_t *v = json_object_get(o, key);
    uint32_t x = 0;
    enum json_get rc = jsonGetU32(o, key, min, max, &x);

    if (v == NULL || json_is_null(v)) {
        FUZZ_CHECK(rc == JSON_GET_ABSENT, "%s: absent but %d", key, rc);
    } else if (rc == JSON_GET_OK) {
        FUZZ_CHECK(json_is_integer(v) && json_integer_value(v) == (json_int_t)x &&
                       x >= min && x <= max,
                   "%s: accepted %" PRIu32 " out of [%" PRIu32 ", %" PRIu32
                   "] or not the value",
                   key, x, min, max);
    } else {
        FUZZ_CHECK(rc == JSON_GET_TYPE || rc == JSON_GET_RANGE, "%s: %d",
                   key, rc);
        FUZZ_CHECK((rc == JSON_GET_TYPE) == !json_is_integer(v),
                   "%s: TYPE for an integer or RANGE for a non-integer", key);
    }
}

static void checkU64(const json_t *o, const char *key, uint64_t min,
                     uint64_t max)
{
    const json_t *v = json_object_get(o, key);
    uint64_t x = 0;
    enum json_get rc = jsonGetU64(o, key, min, max, &x);

    if (v == NULL || json_is_null(v)) {
        FUZZ_CHECK(rc == JSON_GET_ABSENT, "%s: absent but %d", key, rc);
        return;
    }
    if (rc != JSON_GET_OK) {
        FUZZ_CHECK(rc == JSON_GET_TYPE || rc == JSON_GET_RANGE, "%s: %d",
                   key, rc);
        return;
    }
    FUZZ_CHECK(x >= min && x <= max, "%s: %" PRIu64 " out of range", key, x);
    if (json_is_integer(v)) {
        FUZZ_CHECK(json_integer_value(v) >= 0 &&
                       (uint64_t)json_integer_value(v) == x,
                   "%s: not the integer", key);
    } else {
        char buf[32];
        FUZZ_CHECK(json_is_string(v), "%s: accepted a non-string", key);
        snprintf(buf, sizeof buf, "%" PRIu64, x);
        /* Leading zeros are allowed: compare without them. */
        {
            const char *s = json_string_value(v);
            while (s[0] == '0' && s[1] != '\0') {
                s++;
            }
            FUZZ_CHECK(strcmp(s, buf) == 0, "%s: \"%s\" read as %s", key,
                       json_string_value(v), buf);
        }
    }
}

static void checkString(const json_t *o, const char *key, size_t min,
                        size_t max)
{
    const json_t *v = json_object_get(o, key);
    const char *s = NULL;
    enum json_get rc = jsonGetString(o, key, min, max, &s);

    if (v == NULL || json_is_null(v)) {
        FUZZ_CHECK(rc == JSON_GET_ABSENT, "%s: absent but %d", key, rc);
    } else if (rc == JSON_GET_OK) {
        FUZZ_CHECK(json_is_string(v) && s == json_string_value(v) &&
                       strlen(s) == json_string_length(v) &&
                       strlen(s) >= min && strlen(s) <= max,
                   "%s: accepted a bad string", key);
    }
}

static void checkHelpers(const uint8_t *body, size_t len)
{
    json_error_t err;
    json_t *o = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES,
                           &err);
    json_t *w;
    uint64_t x = 0;
    uint64_t back = 0;
    char when[40];

    for (size_t i = 0; i < len && i < 8; i++) {
        x = x << 8 | body[i];
    }
    /* Any 64-bit value written is read back. */
    w = json_object();
    FUZZ_CHECK(w != NULL && jsonSetU64(w, "v", x) == 0, "jsonSetU64");
    FUZZ_CHECK(jsonGetU64(w, "v", 0, UINT64_MAX, &back) == JSON_GET_OK &&
                   back == x,
               "jsonSetU64(%" PRIu64 ") read back as %" PRIu64, x, back);
    json_decref(w);
    jsonFormatTimeMs(x, when, 32);
    FUZZ_CHECK(memchr(when, '\0', 32) != NULL, "time not terminated");
    if (o == NULL) {
        return;
    }
    if (json_is_object(o)) {
        const char *unknown = jsonUnknownKey(o, keys);
        if (unknown != NULL) {
            FUZZ_CHECK(json_object_get(o, unknown) != NULL,
                       "unknown key not in the object");
        }
        checkU32(o, "ttl_ms", 1, UINT32_MAX);
        checkU32(o, "wait_ms", 0, 600000);
        checkU32(o, "permits", 1, 1000);
        checkU32(o, "lock_delay_ms", 0, 60000);
        checkU64(o, "session", 1, UINT64_MAX);
        checkU64(o, "mode", 0, 2);
        checkString(o, "holder", 1, 256);
        checkString(o, "mode", 1, 16);
    }
    json_decref(o);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    hhInit();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const heads[] = {
        "PUT /v1/locks/orders%2F1 HTTP/1.1\r\nHost: t\r\n",
        "PUT /v1/locks/orders/1 HTTP/1.1\r\nHost: t\r\nIf-Match: \"4242\"\r\n",
        "POST /v1/sessions HTTP/1.1\r\nHost: t\r\n",
        "PUT /v1/sessions/99 HTTP/1.1\r\nHost: t\r\n",
        "PUT /v1/locks/q HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k-1\r\n",
        "PUT /v1/locks/pool HTTP/1.0\r\n",
    };
    struct fuzz_in in = { data, size, 0 };
    struct hh_options o = { 0 };
    unsigned route = fuzzU8(&in) % 6;
    uint8_t st = fuzzU8(&in);
    size_t blen;
    const uint8_t *body;
    char head[256];
    int hlen;
    uint8_t *req;

    o.status = st & 0x7f;
    o.leader = st & 0x80;
    body = fuzzRest(&in, &blen);
    checkHelpers(body, blen);
    hlen = snprintf(head, sizeof head,
                    "%sContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    heads[route], blen);
    req = malloc((size_t)hlen + blen + 1);
    FUZZ_CHECK(req != NULL, "out of memory");
    memcpy(req, head, (size_t)hlen);
    if (blen > 0) {
        memcpy(req + hlen, body, blen);
    }
    hhRun(req, (size_t)hlen + blen, &o);
    free(req);
    return 0;
}
