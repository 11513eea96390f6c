/* libtenure's pure helpers: the error table, endpoint lists, resource
 * validation (client/errors.c, endpoint.c and check.c are compiled in). */
#include "lib/test.h"

#include <string.h>

#include "../../client/check.c"
#include "../../client/endpoint.c"
#include "../../client/errors.c"
#include "tenure.pb-c.h"

/* Library codes 0..15 are the wire Status numbers, name for name. */
static void test_codes_match_wire(void **state)
{
    (void)state;
    assert_int_equal(TN_OK, TN__STATUS__OK);
    assert_int_equal(TN_HELD, TN__STATUS__HELD);
    assert_int_equal(TN_LOCK_DELAY, TN__STATUS__LOCK_DELAY);
    assert_int_equal(TN_TOKEN_MISMATCH, TN__STATUS__TOKEN_MISMATCH);
    assert_int_equal(TN_LEASE_EXPIRED, TN__STATUS__LEASE_EXPIRED);
    assert_int_equal(TN_SESSION_EXPIRED, TN__STATUS__SESSION_EXPIRED);
    assert_int_equal(TN_NOT_LEADER, TN__STATUS__NOT_LEADER);
    assert_int_equal(TN_NO_QUORUM, TN__STATUS__NO_QUORUM);
    assert_int_equal(TN_COMMIT_UNKNOWN, TN__STATUS__COMMIT_UNKNOWN);
    assert_int_equal(TN_INVALID_ARGUMENT, TN__STATUS__INVALID_ARGUMENT);
    assert_int_equal(TN_RATE_LIMITED, TN__STATUS__RATE_LIMITED);
    assert_int_equal(TN_TIMEOUT, TN__STATUS__TIMEOUT);
    assert_int_equal(TN_CANCELED, TN__STATUS__CANCELED);
    assert_int_equal(TN_NO_SPACE, TN__STATUS__NO_SPACE);
    assert_int_equal(TN_NOT_FOUND, TN__STATUS__NOT_FOUND);
    assert_int_equal(TN_INTERNAL, TN__STATUS__INTERNAL);
    assert_int_equal(TN_REFUSED, TN__STATUS__REFUSED);
    assert_true(TN_NOMEM >= 100);
}

/* Every wire status name of the .proto is a library name too. */
static void test_names_match_wire(void **state)
{
    const ProtobufCEnumDescriptor *d = &tn__status__descriptor;
    (void)state;
    for (unsigned i = 0; i < d->n_values; i++) {
        assert_string_equal(tn_errname(d->values[i].value),
                            d->values[i].name);
    }
}

/* Every code has a distinct, non-empty description; unknown codes say so. */
static void test_strerror_table(void **state)
{
    static const int codes[] = {
#define X(NAME, VALUE, TEXT) VALUE,
        TN_ERRNO_MAP(X)
#undef X
    };
    size_t n = sizeof codes / sizeof codes[0];
    (void)state;
    for (size_t i = 0; i < n; i++) {
        const char *s = tn_strerror(codes[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_string_not_equal(s, "unknown error");
        assert_string_not_equal(tn_errname(codes[i]), "UNKNOWN");
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(codes[i], codes[j]);
            assert_string_not_equal(s, tn_strerror(codes[j]));
        }
    }
    assert_string_equal(tn_strerror(TN_OK), "success");
    assert_string_equal(tn_strerror(TN_UNAVAILABLE), "no endpoint reachable");
    assert_string_equal(tn_strerror(-1), "unknown error");
    assert_string_equal(tn_strerror(99), "unknown error");
    assert_string_equal(tn_errname(99), "UNKNOWN");
    assert_string_equal(tn_errname(TN_HELD), "HELD");
}

/* The version functions agree with the macros. */
static void test_version(void **state)
{
    char buf[32];
    (void)state;
    assert_int_equal(tn_version_number(), TN_VERSION_NUMBER);
    snprintf(buf, sizeof buf, "%d.%d.%d", TN_VERSION_MAJOR, TN_VERSION_MINOR,
             TN_VERSION_PATCH);
    assert_string_equal(tn_version_string(), buf);
    assert_string_equal(tn_mode_name(TN_MODE_SHARED), "shared");
    assert_string_equal(tn_mode_name(7), "unknown");
}

static int parse(const char *s, struct endpoint *ep)
{
    char msg[128];
    return endpointParse(s, strlen(s), ep, msg, sizeof msg);
}

/* host:port, names, IPv6 in brackets, surrounding blanks. */
static void test_endpoint_ok(void **state)
{
    struct endpoint ep;
    (void)state;
    assert_int_equal(parse("127.0.0.1:7101", &ep), 0);
    assert_string_equal(ep.host, "127.0.0.1");
    assert_int_equal(ep.port, 7101);
    assert_string_equal(ep.label, "127.0.0.1:7101");
    assert_int_equal(parse("  node-1.example_x:1 ", &ep), 0);
    assert_string_equal(ep.host, "node-1.example_x");
    assert_int_equal(ep.port, 1);
    assert_int_equal(parse("[::1]:65535", &ep), 0);
    assert_string_equal(ep.host, "::1");
    assert_int_equal(ep.port, 65535);
    assert_string_equal(ep.label, "[::1]:65535");
    assert_int_equal(parse("[fe80::1%eth0]:80", &ep), 0);
    assert_string_equal(ep.host, "fe80::1%eth0");
}

/* Malformed endpoints are rejected with a message. */
static void test_endpoint_bad(void **state)
{
    static const char *bad[] = {
        "",         " ",          "host",       "host:",     ":7101",
        "h:0",      "h:65536",    "h:123456",   "h:-1",      "h:12a",
        "::1:7101", "[::1]",      "[::1]7101",  "[::1:7101", "h o:1",
        "h:1:2",    "h\x01:1",    "[]:1",       "h:+1",
    };
    struct endpoint ep;
    char msg[128];
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        msg[0] = '\0';
        assert_int_equal(
            endpointParse(bad[i], strlen(bad[i]), &ep, msg, sizeof msg), -1);
        assert_true(strlen(msg) > 0);
    }
}

/* Lists: comma-separated, duplicates dropped, any bad entry fails. */
static void test_endpoint_list(void **state)
{
    struct endpoint *eps;
    size_t n;
    char msg[128];
    (void)state;
    assert_int_equal(endpointParseList("127.0.0.1:7101,127.0.0.1:7102, "
                                       "127.0.0.1:7103",
                                       &eps, &n, msg, sizeof msg),
                     0);
    assert_int_equal(n, 3);
    assert_int_equal(eps[2].port, 7103);
    free(eps);
    assert_int_equal(endpointParseList("a:1,a:1,b:2,a:1", &eps, &n, msg,
                                       sizeof msg),
                     0);
    assert_int_equal(n, 2);
    assert_string_equal(eps[1].label, "b:2");
    free(eps);
    assert_int_equal(endpointParseList("a:1,,b:2", &eps, &n, msg, sizeof msg),
                     -1);
    assert_int_equal(endpointParseList("a:1,", &eps, &n, msg, sizeof msg), -1);
    assert_int_equal(endpointParseList("", &eps, &n, msg, sizeof msg), -1);
    assert_int_equal(endpointParseList(NULL, &eps, &n, msg, sizeof msg), -1);
    assert_int_equal(endpointParseList("a:1,b", &eps, &n, msg, sizeof msg),
                     -1);
    assert_non_null(strstr(msg, "\"b\""));
}

/* Resource names: 1..512 bytes of UTF-8 without control characters. */
static void test_resource_check(void **state)
{
    char msg[128];
    char big[600];
    (void)state;
    assert_int_equal(checkResource("orders/42", msg, sizeof msg), 0);
    assert_int_equal(checkResource("r\xc3\xa9sum\xc3\xa9", msg, sizeof msg),
                     0); /* résumé */
    assert_int_equal(checkResource("\xf0\x9f\x94\x92", msg, sizeof msg),
                     0); /* U+1F512 */
    assert_int_equal(checkResource("", msg, sizeof msg), -1);
    assert_int_equal(checkResource(NULL, msg, sizeof msg), -1);
    assert_int_equal(checkResource("a\tb", msg, sizeof msg), -1);
    assert_int_equal(checkResource("a\x7f", msg, sizeof msg), -1);
    assert_int_equal(checkResource("\xc2\x85", msg, sizeof msg), -1); /* C1 */
    assert_int_equal(checkResource("\xc0\xaf", msg, sizeof msg), -1); /* overlong */
    assert_int_equal(checkResource("\xe0\x80\xaf", msg, sizeof msg), -1);
    assert_int_equal(checkResource("\xed\xa0\x80", msg, sizeof msg), -1); /* surrogate */
    assert_int_equal(checkResource("\xf4\x90\x80\x80", msg, sizeof msg), -1);
    assert_int_equal(checkResource("\xe2\x82", msg, sizeof msg), -1); /* cut */
    assert_int_equal(checkResource("\xff", msg, sizeof msg), -1);
    memset(big, 'x', 512);
    big[512] = '\0';
    assert_int_equal(checkResource(big, msg, sizeof msg), 0);
    big[512] = 'x';
    big[513] = '\0';
    assert_int_equal(checkResource(big, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "513"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_match_wire),
        cmocka_unit_test(test_names_match_wire),
        cmocka_unit_test(test_strerror_table),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_endpoint_ok),
        cmocka_unit_test(test_endpoint_bad),
        cmocka_unit_test(test_endpoint_list),
        cmocka_unit_test(test_resource_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
