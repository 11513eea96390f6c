/* Fuzz target: the pure text parsers of the HTTP shim and the three
 * implementations of the resource-id rule.
 *
 * Input: u8 selector, then the text.
 *   httpPercentDecode   never writes past len + 1 bytes, the result is
 *                       NUL-terminated and no longer than the input; a
 *                       text without '%' decodes to itself;
 *   httpParseTokenTag   a token it accepts is non-zero, and formatting it
 *                       back ("%llu", quoted or bare) parses to the same;
 *   httpResourceInvalid, fsmResourceValid (server/fsm.c) and
 *   checkResource (client/check.c) agree on every byte string (all three
 *                       document the same rule: 1..512 bytes of valid
 *                       UTF-8 without C0, DEL or C1 controls); the
 *                       percent-decoded text is checked too, as the shim
 *                       does with a path segment;
 *   httpIdempotencyClientId is never 0. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fsm.h"
#include "fuzz.h"
#include "http.h"

static void checkResourceRules(const char *s, size_t len)
{
    const char *why_fsm = NULL;
    bool http_ok = httpResourceInvalid(s, len) == NULL;
    bool fsm_ok = fsmResourceValid(s, len, &why_fsm);
    char errmsg[256];
    bool client_ok = false;

    /* checkResource takes a C string: only comparable without NULs. */
    if (memchr(s, '\0', len) == NULL) {
        char *z = malloc(len + 1);
        FUZZ_CHECK(z != NULL, "out of memory");
        memcpy(z, s, len);
        z[len] = '\0';
        client_ok = checkResource(z, errmsg, sizeof errmsg) == 0;
        FUZZ_CHECK(client_ok == fsm_ok,
                   "client checkResource says %s, the FSM says %s (%s)",
                   client_ok ? "valid" : "invalid",
                   fsm_ok ? "valid" : "invalid",
                   fsm_ok ? errmsg : why_fsm);
        free(z);
    }
    FUZZ_CHECK(http_ok == fsm_ok,
               "httpResourceInvalid says %s, fsmResourceValid says %s",
               http_ok ? "valid" : "invalid", fsm_ok ? "valid" : "invalid");
    if (!fsm_ok) {
        FUZZ_CHECK(why_fsm != NULL, "no reason given");
    }
}

static void checkPercent(const char *s, size_t len)
{
    /* Exactly len + 1 bytes, so that ASan sees any overrun. */
    char *out = malloc(len + 1);
    long n;

    FUZZ_CHECK(out != NULL, "out of memory");
    n = httpPercentDecode(s, len, out);
    if (n >= 0) {
        FUZZ_CHECK((size_t)n <= len, "decoded %ld bytes from %zu", n, len);
        FUZZ_CHECK(out[n] == '\0', "not NUL-terminated");
        if (memchr(s, '%', len) == NULL) {
            FUZZ_CHECK((size_t)n == len && memcmp(out, s, len) == 0,
                       "text without escapes changed");
        }
        checkResourceRules(out, (size_t)n);
    } else {
        FUZZ_CHECK(n == -1, "returned %ld", n);
        FUZZ_CHECK(memchr(s, '%', len) != NULL, "failed without a '%%'");
    }
    free(out);
}

static void checkTokenTag(const char *s, size_t len)
{
    char *z = malloc(len + 1);
    uint64_t token = 0;
    const char *why = NULL;

    FUZZ_CHECK(z != NULL, "out of memory");
    memcpy(z, s, len);
    z[len] = '\0';
    if (httpParseTokenTag(z, &token, &why) == 0) {
        char quoted[32];
        char bare[32];
        uint64_t t2 = 0;
        uint64_t t3 = 0;
        FUZZ_CHECK(token != 0, "accepted token 0 from \"%s\"", z);
        snprintf(quoted, sizeof quoted, "\"%" PRIu64 "\"", token);
        snprintf(bare, sizeof bare, "%" PRIu64, token);
        FUZZ_CHECK(httpParseTokenTag(quoted, &t2, &why) == 0 && t2 == token,
                   "%s does not parse back", quoted);
        FUZZ_CHECK(httpParseTokenTag(bare, &t3, &why) == 0 && t3 == token,
                   "%s does not parse back", bare);
    } else {
        FUZZ_CHECK(why != NULL, "refused \"%s\" without a reason", z);
    }
    FUZZ_CHECK(httpIdempotencyClientId(z, "acquire", "r") != 0,
               "client id 0");
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size, 0 };
    uint8_t sel = fuzzU8(&in);
    size_t len;
    const char *s = (const char *)fuzzRest(&in, &len);
    char *copy = malloc(len > 0 ? len : 1);

    /* An exact-size copy: reads past the end are caught. */
    FUZZ_CHECK(copy != NULL, "out of memory");
    if (len > 0) {
        memcpy(copy, s, len);
    }
    switch (sel % 3) {
    case 0:
        checkResourceRules(copy, len);
        break;
    case 1:
        checkPercent(copy, len);
        break;
    default:
        checkTokenTag(copy, len);
        break;
    }
    free(copy);
    return 0;
}
