/* Zero-filled Raft log segments.
 *
 * libraft creates each log segment ahead of use with posix_fallocate(),
 * which on ext4 and xfs reserves the blocks as "unwritten" extents. Every
 * O_DSYNC append into such a block must then also convert the extent, a
 * metadata change that the sync has to make durable too. Measured on this
 * project's machine (ext4 on virtio): a 4 KiB O_DIRECT|O_DSYNC write takes
 * 111-118 us into fallocated space and 71 us over written blocks. So this
 * definition, which the daemon's executable exports and libraft's call
 * binds to, reserves the space, writes zeros over it and syncs once: the
 * appends then overwrite written blocks. PostgreSQL zero-fills its WAL
 * segments (wal_init_zero) for the same reason. It runs in libraft's
 * thread pool, once per segment (8 MiB), never on the loop. */
#define _GNU_SOURCE
#include "segment_fill.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* 1 MiB of zeros, aligned for a descriptor opened with O_DIRECT. Not
 * const: in .bss it costs no file size, and pages only read map the
 * kernel's zero page. */
static _Alignas(4096) char zeros[1 << 20];

static int fillZeros(int fd, off_t offset, off_t len)
{
    off_t end = offset + len;

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
        offset += w;
    }
    while (fdatasync(fd) != 0) {
        if (errno != EINTR) {
            return errno;
        }
    }
    return 0;
}

/* Same contract as glibc's: 0 or an error number (errno is not the
 * result), ENOSPC before anything is written when the space is not there.
 * Default visibility (the build hides symbols by default): the executable
 * exports it (CMakeLists.txt) so that libraft's call binds here. */
__attribute__((visibility("default"))) int posix_fallocate(int fd,
                                                          off_t offset,
                                                          off_t len)
{
    if (offset < 0 || len <= 0) {
        return EINVAL;
    }
    while (fallocate(fd, 0, offset, len) != 0) {
        if (errno == EINTR) {
            continue;
        }
        if (errno != EOPNOTSUPP) {
            return errno;
        }
        break; /* no fallocate here: the zeros allocate the blocks */
    }
    return fillZeros(fd, offset, len);
}

bool segmentFillActive(void)
{
    return dlsym(RTLD_DEFAULT, "posix_fallocate") == (void *)posix_fallocate;
}
