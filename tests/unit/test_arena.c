/* Unit tests of the bump allocator (server/lib/arena.c) shared by the
 * dispatch's replies and batches and by the decoding of log entries. */
#include "lib/test.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "lib/arena.h"

static bool aligned(const void *p)
{
    return (uintptr_t)p % _Alignof(max_align_t) == 0;
}

static bool inside(const void *p, const void *buf, size_t size)
{
    return (const char *)p >= (const char *)buf &&
           (const char *)p < (const char *)buf + size;
}

/* A zeroed arena works; allocations are aligned, distinct and writable,
 * and tnArenaFree makes it empty and reusable. */
static void test_zeroed(void **state)
{
    struct tn_arena a;
    char *p[64];
    (void)state;

    memset(&a, 0, sizeof a);
    for (int i = 0; i < 64; i++) {
        p[i] = tnArenaAlloc(&a, (size_t)i * 7);
        assert_non_null(p[i]);
        assert_true(aligned(p[i]));
        memset(p[i], i, (size_t)i * 7);
    }
    for (int i = 1; i < 64; i++) {
        for (size_t k = 0; k < (size_t)i * 7; k++) {
            assert_int_equal((unsigned char)p[i][k], i);
        }
    }
    assert_non_null(a.chunks);
    tnArenaFree(&a);
    assert_null(a.chunks);
    assert_non_null(tnArenaAlloc(&a, 10));
    tnArenaFree(&a);
}

/* The caller's buffer is used first, then chunks; an allocation larger
 * than the largest chunk gets one of its own. */
static void test_buffer_first(void **state)
{
    max_align_t buf[8];
    struct tn_arena a;
    void *p;
    void *big;
    (void)state;

    tnArenaInit(&a, buf, sizeof buf, 64, 128);
    p = tnArenaAlloc(&a, sizeof buf / 2);
    assert_true(inside(p, buf, sizeof buf));
    p = tnArenaAlloc(&a, sizeof buf / 2);
    assert_true(inside(p, buf, sizeof buf));
    assert_null(a.chunks);
    p = tnArenaAlloc(&a, 1);
    assert_false(inside(p, buf, sizeof buf));
    assert_non_null(a.chunks);
    big = tnArenaAlloc(&a, 10000);
    assert_non_null(big);
    memset(big, 0xab, 10000);
    tnArenaFree(&a);
    /* Reused from the start of the buffer. */
    p = tnArenaAlloc(&a, 8);
    assert_ptr_equal(p, buf);
    tnArenaFree(&a);
}

/* A misaligned buffer is aligned; one too small for that is not used. */
static void test_misaligned_buffer(void **state)
{
    max_align_t buf[4];
    struct tn_arena a;
    void *p;
    (void)state;

    tnArenaInit(&a, (char *)buf + 1, sizeof buf - 1, 0, 0);
    p = tnArenaAlloc(&a, 8);
    assert_true(aligned(p));
    assert_true(inside(p, buf, sizeof buf));
    tnArenaFree(&a);

    tnArenaInit(&a, (char *)buf + 1, 3, 0, 0);
    p = tnArenaAlloc(&a, 8);
    assert_true(aligned(p));
    assert_false(inside(p, buf, sizeof buf));
    tnArenaFree(&a);
}

static void test_strndup(void **state)
{
    struct tn_arena a;
    char *s;
    (void)state;

    memset(&a, 0, sizeof a);
    s = tnArenaStrndup(&a, "resource/a-long-tail", 8);
    assert_string_equal(s, "resource");
    s = tnArenaStrndup(&a, "", 0);
    assert_string_equal(s, "");
    tnArenaFree(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zeroed),
        cmocka_unit_test(test_buffer_first),
        cmocka_unit_test(test_misaligned_buffer),
        cmocka_unit_test(test_strndup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
