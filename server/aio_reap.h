/* Off-loop destruction of libraft's AIO contexts (see aio_reap.c). */
#ifndef TN_AIO_REAP_H_
#define TN_AIO_REAP_H_

#include <stdbool.h>
#include <stdint.h>

/* From now on, an io_destroy that libraft asks for returns at once and runs
 * on a background thread. Call once the node's log is open and running; 0,
 * or an error number if the thread cannot be started (io_destroy then
 * stays synchronous). One node per process. */
int aioReapStart(void);

/* From now on io_destroy is synchronous again. Call before closing the
 * node: at shutdown libraft may destroy a context with writes in flight,
 * and it frees their buffers once io_destroy returns. Does not wait for
 * the contexts already handed to the background thread. */
void aioReapStop(void);

/* Whether libraft's syscall() binds to this module's (the daemon exports
 * it), i.e. whether aioReapStart can take effect. */
bool aioReapBound(void);

/* Contexts handed to the background thread, destroyed by it, and the
 * io_destroy calls of it that failed (an error nobody else sees). */
struct aio_reap_stats
{
    uint64_t deferred;
    uint64_t destroyed;
    uint64_t failed;
};
void aioReapStats(struct aio_reap_stats *out);

#endif /* TN_AIO_REAP_H_ */
