/* Unit tests of the daemon's syscall() (server/aio_reap.c): everything
 * passes through to glibc's, results and errno included; io_destroy is
 * handed to the background thread while started, and the context is then
 * really destroyed; once stopped, io_destroy runs in place again. */
#define _GNU_SOURCE
#include "lib/test.h"

#include <errno.h>
#include <linux/aio_abi.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "aio_reap.h"

static aio_context_t newContext(void)
{
    aio_context_t ctx = 0;
    assert_int_equal(syscall(SYS_io_setup, 4, &ctx), 0);
    assert_true(ctx != 0);
    return ctx;
}

/* Whether @ctx still exists: io_getevents on a destroyed one is EINVAL. */
static bool contextAlive(aio_context_t ctx)
{
    struct io_event ev;
    struct timespec zero = {0, 0};
    long rv = syscall(SYS_io_getevents, ctx, 0, 1, &ev, &zero);
    if (rv < 0) {
        assert_int_equal(errno, EINVAL);
        return false;
    }
    return true;
}

static void sleepMs(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_passthrough(void **state)
{
    (void)state;
    assert_int_equal(syscall(SYS_getpid), getpid());
    /* An error comes back as -1 with errno set. */
    errno = 0;
    assert_int_equal(syscall(SYS_close, -1), -1);
    assert_int_equal(errno, EBADF);
    /* The sixth argument reaches the kernel: mmap rejects an offset that
     * is not page-aligned, even for an anonymous mapping. */
    {
        long p;
        errno = 0;
        assert_int_equal(syscall(SYS_mmap, 0, 4096, PROT_READ,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 1),
                         -1);
        assert_int_equal(errno, EINVAL);
        p = syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
        assert_true(p != -1);
        assert_int_equal(munmap((void *)p, 4096), 0);
    }
}

static void test_destroy_in_place_when_stopped(void **state)
{
    struct aio_reap_stats before;
    struct aio_reap_stats after;
    aio_context_t ctx;
    (void)state;

    aioReapStop();
    ctx = newContext();
    assert_true(contextAlive(ctx));
    aioReapStats(&before);
    assert_int_equal(syscall(SYS_io_destroy, ctx), 0);
    aioReapStats(&after);
    assert_int_equal(after.deferred, before.deferred);
    assert_false(contextAlive(ctx)); /* gone when the call returned */
    /* A bad context is the kernel's error, not a silent success. */
    errno = 0;
    assert_int_equal(syscall(SYS_io_destroy, ctx), -1);
    assert_int_equal(errno, EINVAL);
}

static void test_destroy_deferred_when_started(void **state)
{
    struct aio_reap_stats before;
    struct aio_reap_stats after;
    aio_context_t ctx[3];
    (void)state;

    assert_int_equal(aioReapStart(), 0);
    for (int i = 0; i < 3; i++) {
        ctx[i] = newContext();
    }
    aioReapStats(&before);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(syscall(SYS_io_destroy, ctx[i]), 0);
    }
    aioReapStats(&after);
    assert_int_equal(after.deferred, before.deferred + 3);
    /* The thread destroys them: wait for it (up to 10 s). */
    for (int i = 0; i < 1000 && after.destroyed < before.destroyed + 3; i++) {
        sleepMs(10);
        aioReapStats(&after);
    }
    assert_int_equal(after.destroyed, before.destroyed + 3);
    assert_int_equal(after.failed, before.failed);
    for (int i = 0; i < 3; i++) {
        assert_false(contextAlive(ctx[i]));
    }
    /* Other calls still pass through while started. */
    assert_int_equal(syscall(SYS_getpid), getpid());

    /* Stopped again: in place. */
    aioReapStop();
    ctx[0] = newContext();
    aioReapStats(&before);
    assert_int_equal(syscall(SYS_io_destroy, ctx[0]), 0);
    aioReapStats(&after);
    assert_int_equal(after.deferred, before.deferred);
    assert_false(contextAlive(ctx[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passthrough),
        cmocka_unit_test(test_destroy_in_place_when_stopped),
        cmocka_unit_test(test_destroy_deferred_when_started),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
