/* Off-loop io_destroy for libraft's log writers.
 *
 * libraft 0.22.1 gives each open log segment a kernel AIO context of its
 * own and destroys it on the loop thread when it closes the segment (every
 * 8 MiB of log). io_destroy waits for an RCU grace period: 40-60 ms on this
 * project's machine under load, during which the node's loop stands still.
 * Every node closes a segment at the same entry, so the whole cluster stood
 * still at once: the acquire at a segment switch was the worst of every
 * lockbench run, 35-64 ms (the same with the log on tmpfs, so not the
 * disk; 5-6 ms there with this module).
 *
 * libraft reaches the kernel through glibc's syscall() (its io_* wrappers
 * are internal), so the daemon defines and exports syscall(): every call
 * goes straight to glibc's, except io_destroy while the node runs, which
 * is handed to a background thread and returns 0 at once.
 *
 * That is safe because libraft closes a segment's writer only once its
 * writes are done: nothing in flight refers to the context or to libraft's
 * buffers, and the kernel holds its own references to the file and the
 * eventfd. The exception is shutdown, where writes may be in flight and
 * libraft frees their buffers as soon as io_destroy returns: aioReapStop
 * makes io_destroy synchronous again before the node closes. If the queue
 * is full or the thread is not running, io_destroy runs in place, as
 * before. Same idea as segment_fill.c's posix_fallocate.
 *
 * The safety argument rests on libraft's internals as of 0.22.1, so the
 * deferral is only switched on when built against that version
 * (aioReapStart's caller checks RAFT_VERSION_NUMBER).
 *
 * This file must not include <unistd.h>: it declares syscall() variadic,
 * and the definition here names its seven integer arguments. On x86-64 and
 * arm64 Linux a variadic call passes integer arguments exactly as a call to
 * this prototype expects them (x86-64: six in registers, the seventh on
 * the stack, where glibc's own syscall() reads it too; with fewer
 * arguments that slot is still the caller's mapped frame, and the compiler
 * may store the value it read back into it). */
#define _GNU_SOURCE
#include "aio_reap.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

long syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);

typedef long (*syscall_fn)(long number, ...);

/* Queued contexts still count against fs.aio-max-nr until destroyed; one
 * is queued per closed segment, so a short queue is plenty. */
#define REAP_QUEUE 16

static struct
{
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool thread_started;
    bool enabled;
    unsigned head;
    unsigned n;
    long ctx[REAP_QUEUE];
} reap = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

static _Atomic(syscall_fn) realSyscall;
static _Atomic uint64_t nDeferred;
static _Atomic uint64_t nDestroyed;
static _Atomic uint64_t nFailed;

static syscall_fn nextSyscall(void)
{
    syscall_fn fn = atomic_load_explicit(&realSyscall, memory_order_acquire);
    if (fn == NULL) {
        fn = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
        atomic_store_explicit(&realSyscall, fn, memory_order_release);
    }
    return fn;
}

/* Resolved before main, so that syscall() never calls dlsym later (a
 * signal handler may call it). */
__attribute__((constructor)) static void resolveSyscall(void)
{
    nextSyscall();
}

static long
forward(long number, long a1, long a2, long a3, long a4, long a5, long a6)
{
    syscall_fn fn = nextSyscall();
    if (fn == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return fn(number, a1, a2, a3, a4, a5, a6);
}

static void *reapThread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&reap.mutex);
    for (;;) {
        while (reap.n == 0) {
            pthread_cond_wait(&reap.cond, &reap.mutex);
        }
        long ctx = reap.ctx[reap.head];
        reap.head = (reap.head + 1) % REAP_QUEUE;
        reap.n--;
        pthread_mutex_unlock(&reap.mutex);
        if (forward(SYS_io_destroy, ctx, 0, 0, 0, 0, 0) == 0) {
            atomic_fetch_add_explicit(&nDestroyed, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&nFailed, 1, memory_order_relaxed);
        }
        pthread_mutex_lock(&reap.mutex);
    }
    return NULL;
}

/* Queues @ctx for the thread: true, or false when io_destroy must run
 * here (not running, or the queue is full). */
static bool defer(long ctx)
{
    bool queued = false;
    pthread_mutex_lock(&reap.mutex);
    if (reap.enabled && reap.n < REAP_QUEUE) {
        reap.ctx[(reap.head + reap.n) % REAP_QUEUE] = ctx;
        reap.n++;
        queued = true;
        pthread_cond_signal(&reap.cond);
    }
    pthread_mutex_unlock(&reap.mutex);
    if (queued) {
        atomic_fetch_add_explicit(&nDeferred, 1, memory_order_relaxed);
    }
    return queued;
}

__attribute__((visibility("default"))) long
syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6)
{
    if (number == SYS_io_destroy && defer(a1)) {
        return 0;
    }
    return forward(number, a1, a2, a3, a4, a5, a6);
}

int aioReapStart(void)
{
    int rv = 0;
    pthread_mutex_lock(&reap.mutex);
    if (!reap.thread_started) {
        pthread_t t;
        pthread_attr_t attr;
        rv = pthread_attr_init(&attr);
        if (rv == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            rv = pthread_create(&t, &attr, reapThread, NULL);
            pthread_attr_destroy(&attr);
        }
        reap.thread_started = rv == 0;
    }
    reap.enabled = reap.thread_started;
    pthread_mutex_unlock(&reap.mutex);
    return rv;
}

void aioReapStop(void)
{
    pthread_mutex_lock(&reap.mutex);
    reap.enabled = false;
    pthread_mutex_unlock(&reap.mutex);
}

bool aioReapBound(void)
{
    return dlsym(RTLD_DEFAULT, "syscall") == (void *)syscall;
}

void aioReapStats(struct aio_reap_stats *out)
{
    out->deferred = atomic_load_explicit(&nDeferred, memory_order_relaxed);
    out->destroyed = atomic_load_explicit(&nDestroyed, memory_order_relaxed);
    out->failed = atomic_load_explicit(&nFailed, memory_order_relaxed);
}
