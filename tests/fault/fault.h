/* tenure fault harness: shared declarations.
 *
 * One binary, tenure-fault, plays three parts:
 *   - the coordinator (default): sets up the network and disks, runs the
 *     tenured nodes, the fenced store and the workers, injects faults from a
 *     seeded schedule, then checks the recorded history;
 *   - a worker (`tenure-fault worker ...`): a separate process running
 *     client actors through libtenure or through the HTTP shim; it is a
 *     separate process so that the nemesis can SIGSTOP a lock holder;
 *   - a sweeper (`tenure-fault --sweep`): removes namespaces, links, mounts
 *     and directories left behind by runs whose process is gone.
 *
 * Every time in this harness is CLOCK_MONOTONIC in microseconds: the
 * coordinator and the workers run on one machine, so their clocks agree. */
#ifndef TN_FAULT_H_
#define TN_FAULT_H_

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FAULT_MAX_NODES 5
#define FAULT_PATH 512

/* ------------------------------------------------------------- util.c */

int64_t nowUs(void);
void sleepUs(int64_t us);
void sleepMs(int ms);

/* splitmix64: small, seedable, good enough for schedules. */
struct rng
{
    uint64_t s;
};
void rngSeed(struct rng *r, uint64_t seed);
uint64_t rngNext(struct rng *r);
/* Uniform in [lo, hi] (inclusive). */
int64_t rngRange(struct rng *r, int64_t lo, int64_t hi);
/* True with probability pct/100. */
bool rngPct(struct rng *r, int pct);

/* Logging of the coordinator: "[fault  12.345s] ..." on stderr. */
void flog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void flogSetStart(int64_t start_us);

/* Runs argv (argv[0] looked up in PATH) with stdin from @input (NULL: none),
 * stdout+stderr captured into @out (may be NULL), bounded by @timeout_ms.
 * Returns the exit status (0..255), or -1 (could not run, killed, timed
 * out). */
int runCmd(const char *const *argv, const char *input, char *out,
           size_t out_len, int timeout_ms);
/* Same with a printf-formatted command split on blanks (no quoting). */
int runCmdf(char *out, size_t out_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* snprintf whose truncation is accepted (paths and messages here are
 * bounded by construction; a truncated diagnostic is harmless). */
void strf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

bool haveProgram(const char *name);
int mkdirP(const char *path, int mode);
void removeTree(const char *path);
int copyTree(const char *from, const char *to);
/* Reads the last @max bytes of @path into a new string ("" if missing). */
char *readTail(const char *path, size_t max);
/* Writes @len bytes; returns 0 or -1. */
int writeAll(int fd, const void *buf, size_t len);

/* ------------------------------------------------------------ hclient.c */

/* A tiny blocking HTTP/1.1 client (one request per connection) for any
 * IPv4 address: the nodes may live in other network namespaces. */
struct hresp
{
    int status;             /* 0 when the request failed */
    char etag[64];          /* without quotes */
    char *body;             /* owned, NUL-terminated ("" if none) */
    char error[128];
};
int hRequest(const char *ip, int port, const char *method, const char *path,
             const char *headers, const char *body, int timeout_ms,
             struct hresp *r);
void hFree(struct hresp *r);

/* -------------------------------------------------------------- store.c */

/* The fenced store: per resource, the highest token seen; a write with a
 * lower token is rejected. Served by a thread of the coordinator on a unix
 * socket; every accepted and rejected write is logged with the store's
 * own receive time. */
#define STORE_RES_MAX 64

struct store_req
{
    char resource[STORE_RES_MAX];
    uint64_t token;
    uint32_t actor;
    uint32_t pad;
};

struct store_rep
{
    int32_t accepted; /* 1 accepted, 0 rejected */
    uint32_t pad;
    uint64_t highest; /* highest token before this write */
};

struct store_entry
{
    int64_t t_recv;
    char resource[STORE_RES_MAX];
    uint64_t token;
    uint64_t highest_before;
    uint32_t actor;
    bool accepted;
};

struct store;
int storeStart(struct store **out, const char *socket_path);
void storeStop(struct store *s);
/* The log (valid after storeStop; owned by the store). */
const struct store_entry *storeLog(struct store *s, size_t *n);
void storeFree(struct store *s);

/* Client side (workers): one connection per actor. */
int storeConnect(const char *socket_path);
int storeWrite(int fd, const char *resource, uint64_t token, uint32_t actor,
               bool *accepted);

/* ------------------------------------------------------------- worker.c */

int workerMain(int argc, char **argv);

/* ------------------------------------------------------------- history */

/* Result codes recorded for HTTP operations, in libtenure's numbering. */
int httpStatusToTn(int status, const char *body);

#endif /* TN_FAULT_H_ */
