/* Zero-filled Raft log segments.
 *
 * libraft creates each log segment ahead of use with posix_fallocate(),
 * which on ext4 and xfs reserves the blocks as "unwritten" extents. Every
 * O_DSYNC append into such a block must then also convert the extent, a
 * metadata change that the sync has to make durable too. Measured on this
 * project's machine (ext4 on virtio): a 4 KiB O_DIRECT|O_DSYNC write takes
 * 111-118 us into fallocated space and 71 us over written blocks. So this
 * definition, which the daemon's executable exports and libraft's call
 * binds to, reserves the space and, for a new log segment ("open-N") on
 * ext4 or xfs, writes zeros over it and syncs once: the appends then
 * overwrite written blocks. PostgreSQL zero-fills its WAL segments
 * (wal_init_zero) for the same reason. It runs in libraft's thread pool,
 * once per segment (8 MiB), never on the loop. Any other file (a snapshot,
 * say) or file system just gets the space reserved, as with glibc.
 *
 * The zeros reach the disk 256 KiB at a time (each chunk written back and
 * waited for before the next), then one fdatasync: every node starts a new
 * segment at the same entry, and three 8 MiB write-backs at once held the
 * log's appends behind them (the worst acquire of a lockbench run at a
 * segment switch: 18-31 ms with one write-back per segment, 5-13 ms in
 * chunks; 8 MiB and one fdatasync take 15 ms here). */
#define _GNU_SOURCE
#include "segment_fill.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define EXT4_MAGIC 0xEF53
#define XFS_MAGIC 0x58465342

/* One chunk of zeros, aligned for a descriptor opened with O_DIRECT. Not
 * const: in .bss it costs no file size, and pages only read map the
 * kernel's zero page. */
static _Alignas(4096) char zeros[256 * 1024];

/* A libraft segment being prepared ("open-N") on a file system whose
 * preallocation leaves unwritten extents. */
static bool isNewSegment(int fd)
{
    char link[64];
    char path[PATH_MAX];
    const char *base;
    struct statfs fs;
    ssize_t n;

    if (fstatfs(fd, &fs) != 0 ||
        (fs.f_type != EXT4_MAGIC && fs.f_type != XFS_MAGIC)) {
        return false;
    }
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof path - 1);
    if (n <= 0) {
        return false;
    }
    path[n] = '\0';
    base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    return strncmp(base, "open-", 5) == 0;
}

static int fillZeros(int fd, off_t offset, off_t end)
{
    bool pace = true;

    while (offset < end) {
        size_t n = (size_t)(end - offset);
        ssize_t w;
        if (n > sizeof zeros) {
            n = sizeof zeros;
        }
        w = pwrite(fd, zeros, n, offset);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        if (w == 0) {
            return EIO;
        }
        /* Written back before the next chunk: at most one chunk queued
         * ahead of the log's appends. A write-back error is reported to
         * this call, once (the fdatasync below would then succeed), so it
         * is returned; where the call is not supported, the chunks just
         * go unpaced. */
        while (pace && sync_file_range(fd, offset, w,
                                       SYNC_FILE_RANGE_WAIT_BEFORE |
                                           SYNC_FILE_RANGE_WRITE |
                                           SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == ENOSYS || errno == EINVAL || errno == ESPIPE ||
                errno == EOPNOTSUPP) {
                pace = false;
                break;
            }
            return errno;
        }
        offset += w;
    }
    while (fdatasync(fd) != 0) {
        if (errno != EINTR) {
            return errno;
        }
    }
    return 0;
}

/* Same contract as glibc's: 0 or an error number (errno is left as it
 * was), ENOSPC before anything is written when the space is not there,
 * existing contents untouched (only bytes past the end of the file are
 * zero-filled). Default visibility (the build hides symbols by default):
 * the executable exports it (CMakeLists.txt) so that libraft's call binds
 * here. */
__attribute__((visibility("default"))) int posix_fallocate(int fd,
                                                          off_t offset,
                                                          off_t len)
{
    int saved = errno;
    bool fill;
    struct stat st;
    off_t from;
    int rv = 0;

    if (offset < 0 || len <= 0) {
        return EINVAL;
    }
    if (fstat(fd, &st) != 0) {
        rv = errno;
        goto out;
    }
    fill = isNewSegment(fd);
    while (fallocate(fd, 0, offset, len) != 0) {
        if (errno == EINTR) {
            continue;
        }
        if (errno != EOPNOTSUPP) {
            rv = errno;
            goto out;
        }
        fill = true; /* no fallocate here: the zeros allocate the blocks */
        break;
    }
    if (fill) {
        from = st.st_size > offset ? st.st_size : offset;
        if (from < offset + len) {
            rv = fillZeros(fd, from, offset + len);
        }
    }
out:
    errno = saved;
    return rv;
}

bool segmentFillActive(void)
{
    return dlsym(RTLD_DEFAULT, "posix_fallocate") == (void *)posix_fallocate;
}
