/* Unit tests of the daemon's posix_fallocate (server/segment_fill.c): a
 * new log segment ("open-N") on ext4/xfs is zero-filled into written
 * blocks; existing bytes are kept; any other file is only reserved; errors
 * come back as error numbers with errno untouched. */
#define _GNU_SOURCE
#include "lib/test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "lib/extents.h"
#include "segment_fill.h"

#define SIZE (1 << 20)

struct fixture
{
    char dir[64];
    bool fiemap; /* ext4 or xfs: unwritten extents can be seen */
};

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct statfs fs;
    if (f == NULL) {
        return -1;
    }
    strcpy(f->dir, "/tmp/tn-segfill-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    f->fiemap = statfs(f->dir, &fs) == 0 &&
                (fs.f_type == 0xEF53 || fs.f_type == 0x58465342);
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) {
        return -1;
    }
    free(f);
    return 0;
}

static int openIn(struct fixture *f, const char *name)
{
    char path[128];
    int fd;
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    return fd;
}

/* Unwritten extents of @fd; the number of extents in @n. */
static int unwrittenExtents(int fd, int *n)
{
    int u;
    *n = fileExtents(fd, &u);
    assert_true(*n >= 0);
    return u;
}

static off_t sizeOf(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_size;
}

/* Bytes [from, to) of @fd are all zero. */
static void assertZeros(int fd, off_t from, off_t to)
{
    static char buf[SIZE];
    ssize_t n = pread(fd, buf, (size_t)(to - from), from);
    assert_int_equal(n, to - from);
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != 0) {
            fail_msg("byte %lld is %d", (long long)(from + i), buf[i]);
        }
    }
}

static void test_new_segment_written(void **state)
{
    struct fixture *f = *state;
    int fd = openIn(f, "open-7");
    int n;

    assert_int_equal(posix_fallocate(fd, 0, SIZE), 0);
    assert_int_equal(sizeOf(fd), SIZE);
    assertZeros(fd, 0, SIZE);
    if (f->fiemap) {
        assert_int_equal(unwrittenExtents(fd, &n), 0);
        assert_true(n > 0);
    }
    close(fd);
}

/* posix_fallocate never changes bytes that are there: only the part past
 * the end of the file is zero-filled. */
static void test_existing_bytes_kept(void **state)
{
    struct fixture *f = *state;
    int fd = openIn(f, "open-8");
    char head[6] = {0};
    int n;

    assert_int_equal(pwrite(fd, "hello", 5, 0), 5);
    assert_int_equal(posix_fallocate(fd, 0, SIZE), 0);
    assert_int_equal(sizeOf(fd), SIZE);
    assert_int_equal(pread(fd, head, 5, 0), 5);
    assert_string_equal(head, "hello");
    assertZeros(fd, 5, SIZE);
    if (f->fiemap) {
        assert_int_equal(unwrittenExtents(fd, &n), 0);
    }
    close(fd);
}

/* Anything but a new segment (a snapshot being written, say) is only
 * reserved, as glibc does: on ext4/xfs its blocks stay unwritten. */
static void test_other_file_only_reserved(void **state)
{
    struct fixture *f = *state;
    int fd = openIn(f, "snapshot-1-2-3.tmp");
    int n;

    assert_int_equal(posix_fallocate(fd, 0, SIZE), 0);
    assert_int_equal(sizeOf(fd), SIZE);
    if (f->fiemap) {
        assert_true(unwrittenExtents(fd, &n) > 0);
    }
    close(fd);
}

static void test_errors(void **state)
{
    struct fixture *f = *state;
    int fd = openIn(f, "open-9");

    errno = 1234;
    assert_int_equal(posix_fallocate(fd, 0, 0), EINVAL);
    assert_int_equal(posix_fallocate(fd, -1, 10), EINVAL);
    assert_int_equal(posix_fallocate(-1, 0, 10), EBADF);
    assert_int_equal(errno, 1234);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_segment_written, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_existing_bytes_kept, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_other_file_only_reserved, setUp,
                                        tearDown),
        cmocka_unit_test_setup_teardown(test_errors, setUp, tearDown),
    };
    (void)segmentFillActive; /* links the module */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
