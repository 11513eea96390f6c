/* tenurectl: command-line client of tenure, built on libtenure. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tenure.h"

#define DEFAULT_ENDPOINTS "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
#define DEFAULT_TTL_MS    10000

/* Exit codes (documented in usage() and docs/client.md). */
enum {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_HELD = 3,
    EXIT_UNAVAILABLE = 4
};

static const char *progname = "tenurectl";

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: tenurectl [OPTIONS] COMMAND [ARGS]\n"
        "\n"
        "commands:\n"
        "  acquire RESOURCE [--ttl MS] [--wait MS] [--holder NAME] [--mode M]\n"
        "          [-n PERMITS] [--lock-delay MS]\n"
        "      open a session with the TTL, take the lock and print its token "
        "and\n"
        "      session; the lock stays held until released or until the TTL "
        "runs\n"
        "      out (nothing keeps it alive after tenurectl exits)\n"
        "  release RESOURCE --token T      release the lock granted with token "
        "T\n"
        "  renew RESOURCE --token T [--ttl MS]\n"
        "      renew the session behind token T (once)\n"
        "  status RESOURCE [--stale]       who holds it, since when, until "
        "when\n"
        "  list [--prefix P] [--limit N] [--stale]\n"
        "  watch RESOURCE [--count N] [--stale]\n"
        "  watch --prefix P [--count N] [--stale]\n"
        "      print the state (of every lock under P) at every change\n"
        "  exec [--mode M] [-n N] [--ttl MS] [--wait MS] [--holder NAME]\n"
        "       [--grace MS] RESOURCE -- CMD [ARGS...]\n"
        "      run CMD while holding the lock (token in TENURE_TOKEN), "
        "renewing in\n"
        "      the background; SIGTERM, then SIGKILL after --grace, reach CMD\n"
        "      before the lease's safe deadline if renewals fail; release when "
        "CMD\n"
        "      exits; exit with CMD's status\n"
        "  cluster status                  leader, term, members\n"
        "  cluster add ID RAFT_HOST:PORT   add a node (spare, catch up, "
        "voter)\n"
        "  cluster remove ID               remove a node\n"
        "  cluster transfer [ID]           hand leadership over (default: best "
        "voter)\n"
        "  snapshot save FILE              the whole lock table, linearizable\n"
        "  snapshot restore FILE           load it into a fresh cluster\n"
        "  version\n"
        "\n"
        "options:\n"
        "  --endpoints H:P,H:P   cluster RPC endpoints (default "
        "$TENURE_ENDPOINTS,\n"
        "                        else " DEFAULT_ENDPOINTS
        ")\n"
        "  --json                machine-readable output on stdout\n"
        "  --timeout MS          deadline of each request (default 5000)\n"
        "  -h, --help\n"
        "\n"
        "modes: exclusive (default), shared, semaphore (with -n PERMITS)\n"
        "\n"
        "exit codes: 0 success, 1 error, 2 usage, 3 held by someone else (or "
        "the\n"
        "wait ran out, or the token is stale), 4 cluster unavailable\n");
}

/* ---------------------------------------------------------- arguments */

struct args
{
    const char *endpoints;
    bool json;
    uint32_t timeout_ms;
    const char *pos[4]; /* positional arguments after the command */
    int n_pos;
    const char *command;
    uint32_t ttl_ms;
    uint32_t wait_ms;
    const char *holder;
    int mode;
    uint32_t permits;
    uint32_t lock_delay_ms;
    uint64_t token;
    bool has_token;
    bool stale;
    const char *prefix;
    uint32_t limit;
    long count;
    uint32_t grace_ms;
    bool has_grace;
    char **cmd; /* exec: after "--" */
};

static void die(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (code == EXIT_USAGE) {
        fprintf(stderr, "try '%s --help'\n", progname);
    }
    exit(code);
}

static uint64_t parseU64(const char *opt, const char *s, uint64_t max)
{
    char *end;
    unsigned long long v;

    if (s == NULL) {
        die(EXIT_USAGE, "%s needs a value", opt);
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max) {
        die(EXIT_USAGE, "%s: not a number in [0, %llu]: '%s'", opt,
            (unsigned long long)max, s);
    }
    return v;
}

static int parseMode(const char *s)
{
    if (s == NULL) {
        die(EXIT_USAGE, "--mode needs a value");
    }
    if (strcmp(s, "exclusive") == 0) {
        return TN_MODE_EXCLUSIVE;
    }
    if (strcmp(s, "shared") == 0) {
        return TN_MODE_SHARED;
    }
    if (strcmp(s, "semaphore") == 0) {
        return TN_MODE_SEMAPHORE;
    }
    die(EXIT_USAGE, "--mode: expected exclusive, shared or semaphore, got '%s'",
        s);
}

static void parseArgs(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof *a);
    a->count = -1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        const char *val = NULL;
        char name[64];

        if (strcmp(arg, "--") == 0) {
            a->cmd = &argv[i + 1];
            if (argv[i + 1] == NULL) {
                die(EXIT_USAGE, "nothing to run after '--'");
            }
            break;
        }
        if (arg[0] != '-' || arg[1] == '\0') {
            if (a->command == NULL) {
                a->command = arg;
            } else if (a->n_pos < 4) {
                a->pos[a->n_pos++] = arg;
            } else {
                die(EXIT_USAGE, "too many arguments");
            }
            continue;
        }
        /* --name=value or --name value */
        snprintf(name, sizeof name, "%s", arg);
        {
            char *eq = strchr(name, '=');
            if (eq != NULL && strncmp(arg, "--", 2) == 0) {
                *eq = '\0';
                val = arg + (eq - name) + 1;
            }
        }
#define TAKE() (val != NULL ? val : (i++, next))
        if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
            usage(stdout);
            exit(EXIT_OK);
        } else if (strcmp(name, "--endpoints") == 0) {
            a->endpoints = TAKE();
            if (a->endpoints == NULL) {
                die(EXIT_USAGE, "--endpoints needs a value");
            }
        } else if (strcmp(name, "--json") == 0) {
            a->json = true;
        } else if (strcmp(name, "--timeout") == 0) {
            a->timeout_ms = (uint32_t)parseU64(name, TAKE(), 3600000);
        } else if (strcmp(name, "--ttl") == 0) {
            a->ttl_ms = (uint32_t)parseU64(name, TAKE(), UINT32_MAX - 1);
        } else if (strcmp(name, "--wait") == 0) {
            a->wait_ms = (uint32_t)parseU64(name, TAKE(), UINT32_MAX / 2);
        } else if (strcmp(name, "--holder") == 0) {
            a->holder = TAKE();
            if (a->holder == NULL) {
                die(EXIT_USAGE, "--holder needs a value");
            }
        } else if (strcmp(name, "--mode") == 0) {
            a->mode = parseMode(TAKE());
        } else if (strcmp(name, "-n") == 0 || strcmp(name, "--permits") == 0) {
            a->permits = (uint32_t)parseU64(name, TAKE(), UINT32_MAX);
        } else if (strcmp(name, "--lock-delay") == 0) {
            a->lock_delay_ms = (uint32_t)parseU64(name, TAKE(), UINT32_MAX);
        } else if (strcmp(name, "--token") == 0) {
            a->token = parseU64(name, TAKE(), UINT64_MAX);
            a->has_token = true;
        } else if (strcmp(name, "--stale") == 0) {
            a->stale = true;
        } else if (strcmp(name, "--prefix") == 0) {
            a->prefix = TAKE();
            if (a->prefix == NULL) {
                die(EXIT_USAGE, "--prefix needs a value");
            }
        } else if (strcmp(name, "--limit") == 0) {
            a->limit = (uint32_t)parseU64(name, TAKE(), UINT32_MAX);
        } else if (strcmp(name, "--count") == 0) {
            a->count = (long)parseU64(name, TAKE(), 1000000000);
        } else if (strcmp(name, "--grace") == 0) {
            a->grace_ms = (uint32_t)parseU64(name, TAKE(), 3600000);
            a->has_grace = true;
        } else {
            die(EXIT_USAGE, "unknown option '%s'", arg);
        }
#undef TAKE
    }
    if (a->endpoints == NULL) {
        a->endpoints = getenv("TENURE_ENDPOINTS");
        if (a->endpoints == NULL || a->endpoints[0] == '\0') {
            a->endpoints = DEFAULT_ENDPOINTS;
        }
    }
}

static void needPositional(const struct args *a, int n, const char *what)
{
    if (a->n_pos < n) {
        die(EXIT_USAGE, "%s: missing %s", a->command, what);
    }
    if (a->n_pos > n) {
        die(EXIT_USAGE, "%s: unexpected argument '%s'", a->command, a->pos[n]);
    }
}

/* ------------------------------------------------------------- output */

static int exitCode(int rc)
{
    switch (rc) {
    case TN_OK:
        return EXIT_OK;
    case TN_HELD:
    case TN_LOCK_DELAY:
    case TN_TOKEN_MISMATCH:
        return EXIT_HELD;
    case TN_UNAVAILABLE:
    case TN_NO_QUORUM:
    case TN_NOT_LEADER:
    case TN_TIMEOUT:
        return EXIT_UNAVAILABLE;
    case TN_INVALID_ARGUMENT:
        return EXIT_USAGE;
    default:
        return EXIT_ERROR;
    }
}

static void printJson(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s != NULL) {
        puts(s);
        free(s);
    }
    json_decref(j);
}

/* jansson integers are signed 64-bit; tokens stay below 2^63 (a Raft
 * index shifted by 16 bits). */
static json_t *jsonU64(uint64_t v)
{
    return json_integer((json_int_t)v);
}

/* Print the failure of a call and return the exit code. */
static int failMsg(const struct args *a,
                   int rc,
                   const char *what,
                   const char *msg)
{
    if (a->json) {
        json_t *j = json_object();
        json_object_set_new(j, "ok", json_false());
        json_object_set_new(j, "error", json_string(tn_errname(rc)));
        json_object_set_new(j, "code", json_integer(rc));
        json_object_set_new(j, "message",
                            json_string(msg[0] ? msg : tn_strerror(rc)));
        printJson(j);
    }
    fprintf(stderr, "%s: %s: %s (%s)\n", progname, what,
            msg[0] ? msg : tn_strerror(rc), tn_errname(rc));
    return exitCode(rc);
}

static int fail(const struct args *a, tn_client *c, int rc, const char *what)
{
    char msg[TN_ERRMSG_BUF_SIZE];

    tn_client_errmsg_copy(c, msg, sizeof msg);
    return failMsg(a, rc, what, msg);
}

static void formatTime(uint64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms == 0 || gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, len, "-");
        return;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)(ms % 1000));
}

static json_t *holderJson(const struct tn_holder_info *h)
{
    char when[64];
    json_t *j = json_object();
    formatTime(h->acquired_at_ms, when, sizeof when);
    json_object_set_new(j, "holder", json_string(h->holder));
    json_object_set_new(j, "session", jsonU64(h->session));
    json_object_set_new(j, "token", jsonU64(h->token));
    json_object_set_new(j, "acquired_at_ms", jsonU64(h->acquired_at_ms));
    json_object_set_new(j, "acquired_at", json_string(when));
    json_object_set_new(j, "ttl_ms", json_integer(h->ttl_ms));
    json_object_set_new(j, "expires_in_ms", json_integer(h->expires_in_ms));
    return j;
}

static void printHolderText(FILE *f, const struct tn_holder_info *h)
{
    char when[64];
    formatTime(h->acquired_at_ms, when, sizeof when);
    fprintf(f, "holder=\"%s\" session=%" PRIu64 " token=%" PRIu64 " since=%s",
            h->holder, h->session, h->token, when);
    if (h->expires_in_ms >= 0) {
        fprintf(f, " expires_in_ms=%" PRId64, h->expires_in_ms);
    }
    fputc('\n', f);
}

static int printConflict(const struct args *a,
                         const char *resource,
                         int rc,
                         const struct tn_conflict *k)
{
    char until[64];
    formatTime(k->lock_delay_until_ms, until, sizeof until);
    if (a->json) {
        json_t *j = json_object();
        json_object_set_new(j, "ok", json_false());
        json_object_set_new(j, "error", json_string(tn_errname(rc)));
        json_object_set_new(j, "code", json_integer(rc));
        json_object_set_new(j, "resource", json_string(resource));
        json_object_set_new(j, "mode", json_string(tn_mode_name(k->mode)));
        json_object_set_new(j, "holders", json_integer(k->n_holders));
        json_object_set_new(j, "queue_len", json_integer(k->queue_len));
        if (k->n_holders > 0) {
            json_object_set_new(j, "holder", holderJson(&k->holder));
        }
        if (k->lock_delay_until_ms != 0) {
            json_object_set_new(j, "lock_delay_until_ms",
                                jsonU64(k->lock_delay_until_ms));
        }
        printJson(j);
    }
    if (rc == TN_LOCK_DELAY) {
        fprintf(stderr, "%s: %s: in lock-delay until %s\n", progname, resource,
                until);
    } else {
        fprintf(stderr, "%s: %s: held", progname, resource);
        if (k->n_holders > 0) {
            fprintf(stderr, " by ");
            printHolderText(stderr, &k->holder);
        } else {
            fputc('\n', stderr);
        }
        if (k->queue_len > 0) {
            fprintf(stderr, "%s: %u waiting\n", progname, k->queue_len);
        }
    }
    return EXIT_HELD;
}

/* ------------------------------------------------------------ commands */

static int openClient(const struct args *a, tn_client **c)
{
    struct tn_client_opts o;
    char msg[TN_ERRMSG_BUF_SIZE];
    int rc;

    memset(&o, 0, sizeof o);
    o.timeout_ms = a->timeout_ms;
    rc = tn_client_open2(a->endpoints, &o, c, msg);
    if (rc != TN_OK) {
        die(rc == TN_INVALID_ARGUMENT ? EXIT_USAGE : EXIT_ERROR,
            "endpoints: %s", msg[0] ? msg : tn_strerror(rc));
    }
    return TN_OK;
}

static struct tn_acquire_opts acquireOpts(const struct args *a,
                                          struct tn_conflict *conflict)
{
    struct tn_acquire_opts o;
    memset(&o, 0, sizeof o);
    o.mode = a->mode;
    o.permits = a->permits;
    o.wait_ms = a->wait_ms;
    o.lock_delay_ms = a->lock_delay_ms;
    o.conflict = conflict;
    if (a->mode == TN_MODE_SEMAPHORE && a->permits == 0) {
        die(EXIT_USAGE, "--mode semaphore needs -n PERMITS");
    }
    return o;
}

static int cmdAcquire(const struct args *a, tn_client *c)
{
    struct tn_conflict conflict;
    struct tn_acquire_opts o = acquireOpts(a, &conflict);
    const char *resource = a->pos[0];
    tn_session *s;
    tn_lock *l;
    int rc;

    rc = tn_session_open(c, a->holder, a->ttl_ms ? a->ttl_ms : DEFAULT_TTL_MS,
                         NULL, &s);
    if (rc != TN_OK) {
        return fail(a, c, rc, "session");
    }
    rc = tn_lock_acquire(s, resource, &o, &l);
    if (rc == TN_HELD || rc == TN_LOCK_DELAY) {
        tn_session_close(s);
        return printConflict(a, resource, rc, &conflict);
    }
    if (rc != TN_OK) {
        int code = fail(a, c, rc, "acquire");
        tn_session_close(s);
        return code;
    }
    if (a->json) {
        json_t *j = json_object();
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "resource", json_string(resource));
        json_object_set_new(j, "token", jsonU64(tn_lock_token(l)));
        json_object_set_new(j, "generation", jsonU64(tn_lock_generation(l)));
        json_object_set_new(j, "session", jsonU64(tn_session_id(s)));
        json_object_set_new(j, "holder", json_string(tn_session_holder(s)));
        json_object_set_new(j, "mode",
                            json_string(tn_mode_name(tn_lock_mode(l))));
        json_object_set_new(j, "ttl_ms", json_integer(tn_session_ttl_ms(s)));
        json_object_set_new(j, "valid_for_ms",
                            json_integer(tn_lock_valid_for_ms(l)));
        printJson(j);
    } else {
        printf("token=%" PRIu64 " generation=%" PRIu64 " session=%" PRIu64
               " ttl_ms=%u resource=%s\n",
               tn_lock_token(l), tn_lock_generation(l), tn_session_id(s),
               tn_session_ttl_ms(s), resource);
    }
    /* One-shot: leave the session (and the lock) to expire after its TTL
     * unless released with `tenurectl release RESOURCE --token T`. */
    tn_lock_free(l);
    tn_session_abandon(s);
    return EXIT_OK;
}

static int printOk(const struct args *a,
                   const char *what,
                   const char *resource,
                   uint64_t token)
{
    if (a->json) {
        json_t *j = json_object();
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "resource", json_string(resource));
        json_object_set_new(j, "token", jsonU64(token));
        printJson(j);
    } else {
        printf("%s resource=%s token=%" PRIu64 "\n", what, resource, token);
    }
    return EXIT_OK;
}

static int cmdRelease(const struct args *a, tn_client *c)
{
    int rc;
    if (!a->has_token) {
        die(EXIT_USAGE, "release: --token T is required");
    }
    rc = tn_release(c, a->pos[0], a->token);
    if (rc != TN_OK) {
        return fail(a, c, rc, "release");
    }
    return printOk(a, "released", a->pos[0], a->token);
}

static int cmdRenew(const struct args *a, tn_client *c)
{
    uint32_t granted = 0;
    int rc;
    if (!a->has_token) {
        die(EXIT_USAGE, "renew: --token T is required");
    }
    rc = tn_renew(c, a->pos[0], a->token, a->ttl_ms, &granted);
    if (rc != TN_OK) {
        return fail(a, c, rc, "renew");
    }
    if (a->json) {
        json_t *j = json_object();
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "resource", json_string(a->pos[0]));
        json_object_set_new(j, "token", jsonU64(a->token));
        json_object_set_new(j, "ttl_ms", json_integer(granted));
        printJson(j);
    } else {
        printf("renewed resource=%s token=%" PRIu64 " ttl_ms=%u\n", a->pos[0],
               a->token, granted);
    }
    return EXIT_OK;
}

static const char *stateName(int state)
{
    switch (state) {
    case TN_STATE_HELD:
        return "held";
    case TN_STATE_LOCK_DELAY:
        return "lock-delay";
    default:
        return "free";
    }
}

static json_t *lockJson(const struct tn_lock_info *info)
{
    json_t *j = json_object();
    json_t *hs = json_array();
    json_object_set_new(j, "resource", json_string(info->resource));
    json_object_set_new(j, "state", json_string(stateName(info->state)));
    json_object_set_new(j, "mode", json_string(tn_mode_name(info->mode)));
    if (info->mode == TN_MODE_SEMAPHORE) {
        json_object_set_new(j, "permits", json_integer(info->permits));
    }
    json_object_set_new(j, "generation", jsonU64(info->generation));
    json_object_set_new(j, "queue_len", json_integer(info->queue_len));
    if (info->lock_delay_until_ms != 0) {
        json_object_set_new(j, "lock_delay_until_ms",
                            jsonU64(info->lock_delay_until_ms));
    }
    json_object_set_new(j, "index", jsonU64(info->index));
    for (size_t i = 0; i < info->n_holders; i++) {
        json_array_append_new(hs, holderJson(&info->holders[i]));
    }
    json_object_set_new(j, "holders", hs);
    return j;
}

static void printLockText(const struct tn_lock_info *info)
{
    printf("%s: %s", info->resource, stateName(info->state));
    if (info->state == TN_STATE_HELD) {
        printf(" mode=%s generation=%" PRIu64, tn_mode_name(info->mode),
               info->generation);
    }
    if (info->queue_len > 0) {
        printf(" waiting=%u", info->queue_len);
    }
    if (info->lock_delay_until_ms != 0) {
        char until[64];
        formatTime(info->lock_delay_until_ms, until, sizeof until);
        printf(" lock_delay_until=%s", until);
    }
    putchar('\n');
    for (size_t i = 0; i < info->n_holders; i++) {
        printf("  ");
        printHolderText(stdout, &info->holders[i]);
    }
}

static int cmdStatus(const struct args *a, tn_client *c)
{
    struct tn_read_opts o;
    struct tn_lock_info info;
    int rc;

    memset(&o, 0, sizeof o);
    o.stale = a->stale;
    rc = tn_lock_status(c, a->pos[0], &o, &info);
    if (rc != TN_OK) {
        return fail(a, c, rc, "status");
    }
    if (a->json) {
        printJson(lockJson(&info));
    } else {
        printLockText(&info);
    }
    tn_lock_info_clear(&info);
    return EXIT_OK;
}

static int cmdList(const struct args *a, tn_client *c)
{
    struct tn_read_opts o;
    struct tn_lock_info *locks;
    size_t n;
    int rc;

    memset(&o, 0, sizeof o);
    o.stale = a->stale;
    rc = tn_lock_list(c, a->prefix, a->limit, &o, &locks, &n);
    if (rc != TN_OK) {
        return fail(a, c, rc, "list");
    }
    if (a->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(arr, lockJson(&locks[i]));
        }
        json_t *j = json_object();
        json_object_set_new(j, "locks", arr);
        printJson(j);
    } else {
        for (size_t i = 0; i < n; i++) {
            printLockText(&locks[i]);
        }
    }
    tn_lock_list_free(locks, n);
    return EXIT_OK;
}

static bool sameLock(const struct tn_lock_info *x, const struct tn_lock_info *y)
{
    if (x->state != y->state || x->generation != y->generation ||
        x->n_holders != y->n_holders || x->queue_len != y->queue_len ||
        x->lock_delay_until_ms != y->lock_delay_until_ms) {
        return false;
    }
    for (size_t i = 0; i < x->n_holders; i++) {
        if (x->holders[i].token != y->holders[i].token) {
            return false;
        }
    }
    return true;
}

static volatile sig_atomic_t got_signal;

static void onSignal(int sig)
{
    got_signal = sig;
}

static void installSignals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = onSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void sleepMs(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static bool sameEvent(const struct tn_watch_event *x,
                      const struct tn_watch_event *y)
{
    if (x->n_locks != y->n_locks) {
        return false;
    }
    for (size_t i = 0; i < x->n_locks; i++) {
        if (strcmp(x->locks[i].resource, y->locks[i].resource) != 0 ||
            !sameLock(&x->locks[i], &y->locks[i])) {
            return false;
        }
    }
    return true;
}

static void printEvent(const struct args *a,
                       bool prefix,
                       const struct tn_watch_event *ev)
{
    if (!prefix && ev->n_locks == 1) {
        if (a->json) {
            printJson(lockJson(&ev->locks[0]));
        } else {
            printLockText(&ev->locks[0]);
        }
    } else if (a->json) {
        json_t *j = json_object();
        json_t *arr = json_array();
        for (size_t i = 0; i < ev->n_locks; i++) {
            json_array_append_new(arr, lockJson(&ev->locks[i]));
        }
        json_object_set_new(j, "prefix", json_string(a->prefix));
        json_object_set_new(j, "index", jsonU64(ev->index));
        json_object_set_new(j, "locks", arr);
        printJson(j);
    } else {
        printf("-- index %" PRIu64 ": %zu lock%s under \"%s\"\n", ev->index,
               ev->n_locks, ev->n_locks == 1 ? "" : "s", a->prefix);
        for (size_t i = 0; i < ev->n_locks; i++) {
            printLockText(&ev->locks[i]);
        }
    }
    fflush(stdout);
}

/* A streamed watch: the cluster pushes the state at every change; the
 * library resumes across reconnects and leader changes. States equal to
 * the previous one (a resumed stream repeats it) are not printed again. */
static int cmdWatch(const struct args *a, tn_client *c)
{
    struct tn_watch_event prev;
    bool have_prev = false;
    bool prefix = a->prefix != NULL;
    long printed = 0;
    tn_watch *w;
    int flags = (prefix ? TN_WATCH_PREFIX : 0) | (a->stale ? TN_WATCH_STALE : 0);
    int rc;

    uint32_t first_ms = a->timeout_ms != 0 ? a->timeout_ms : 5000;
    struct timespec t0;
    struct timespec t1;

    memset(&prev, 0, sizeof prev);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = tn_watch_open(c, prefix ? a->prefix : a->pos[0], flags, 0, &w);
    if (rc != TN_OK) {
        return fail(a, c, rc, "watch");
    }
    installSignals();
    while (!got_signal && (a->count < 0 || printed < a->count)) {
        struct tn_watch_event ev;
        rc = tn_watch_next(w, 250, &ev);
        if (rc == TN_TIMEOUT) {
            /* The first event (the current state) comes at once from a
             * reachable cluster: without it by --timeout, give up. */
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (!have_prev && (t1.tv_sec - t0.tv_sec) * 1000 +
                                      (t1.tv_nsec - t0.tv_nsec) / 1000000 >=
                                  (long)first_ms) {
                char msg[96];
                snprintf(msg, sizeof msg, "no answer from the cluster in %u ms",
                         (unsigned)first_ms);
                tn_watch_close(w);
                return failMsg(a, TN_UNAVAILABLE, "watch", msg);
            }
            continue;
        }
        if (rc != TN_OK) {
            tn_watch_event_clear(&prev);
            tn_watch_close(w);
            return fail(a, c, rc, "watch");
        }
        if (!have_prev || !sameEvent(&prev, &ev)) {
            printEvent(a, prefix, &ev);
            printed++;
        }
        tn_watch_event_clear(&prev);
        prev = ev;
        have_prev = true;
    }
    tn_watch_event_clear(&prev);
    tn_watch_close(w);
    return EXIT_OK;
}

static int printDone(const struct args *a, const char *what)
{
    if (a->json) {
        json_t *j = json_object();
        json_object_set_new(j, "ok", json_true());
        printJson(j);
    } else {
        printf("%s\n", what);
    }
    return EXIT_OK;
}

static int cmdClusterChange(const struct args *a, tn_client *c)
{
    const char *sub = a->pos[0];
    uint64_t id = 0;
    int rc;

    if (strcmp(sub, "add") == 0) {
        needPositional(a, 3, "ID RAFT_HOST:PORT");
        id = parseU64("ID", a->pos[1], UINT64_MAX);
        rc = tn_member_add(c, id, a->pos[2]);
    } else if (strcmp(sub, "remove") == 0) {
        needPositional(a, 2, "ID");
        id = parseU64("ID", a->pos[1], UINT64_MAX);
        rc = tn_member_remove(c, id);
    } else {
        if (a->n_pos > 2) {
            die(EXIT_USAGE, "cluster transfer: unexpected argument '%s'",
                a->pos[2]);
        }
        if (a->n_pos == 2) {
            id = parseU64("ID", a->pos[1], UINT64_MAX);
        }
        rc = tn_leader_transfer(c, id);
    }
    if (rc != TN_OK) {
        return fail(a, c, rc, sub);
    }
    return printDone(
        a, strcmp(sub, "transfer") == 0 ? "transfer started" : "done");
}

static int cmdSnapshot(const struct args *a, tn_client *c)
{
    const char *file;
    void *buf = NULL;
    size_t len = 0;
    FILE *f;
    int rc;

    if (a->n_pos < 1 ||
        (strcmp(a->pos[0], "save") != 0 && strcmp(a->pos[0], "restore") != 0)) {
        die(EXIT_USAGE, "snapshot: expected 'save FILE' or 'restore FILE'");
    }
    needPositional(a, 2, "FILE");
    file = a->pos[1];
    if (strcmp(a->pos[0], "save") == 0) {
        rc = tn_snapshot_save(c, &buf, &len);
        if (rc != TN_OK) {
            return fail(a, c, rc, "snapshot save");
        }
        f = fopen(file, "wb");
        if (f == NULL || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "%s: %s: %s\n", progname, file, strerror(errno));
            tn_free(buf);
            return EXIT_ERROR;
        }
        tn_free(buf);
        if (a->json) {
            json_t *j = json_object();
            json_object_set_new(j, "ok", json_true());
            json_object_set_new(j, "bytes", json_integer((json_int_t)len));
            printJson(j);
        } else {
            printf("saved %zu bytes to %s\n", len, file);
        }
        return EXIT_OK;
    }
    f = fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: %s: %s\n", progname, file, strerror(errno));
        return EXIT_ERROR;
    }
    for (;;) {
        char chunk[65536];
        size_t n = fread(chunk, 1, sizeof chunk, f);
        void *grown;
        if (n == 0) {
            break;
        }
        grown = realloc(buf, len + n);
        if (grown == NULL) {
            free(buf);
            fclose(f);
            fprintf(stderr, "%s: out of memory\n", progname);
            return EXIT_ERROR;
        }
        buf = grown;
        memcpy((char *)buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    rc = tn_snapshot_restore(c, buf, len);
    free(buf);
    if (rc != TN_OK) {
        return fail(a, c, rc, "snapshot restore");
    }
    return printDone(a, "restored");
}

static int cmdCluster(const struct args *a, tn_client *c)
{
    struct tn_cluster_info ci;
    int rc;

    if (a->n_pos >= 1 &&
        (strcmp(a->pos[0], "add") == 0 || strcmp(a->pos[0], "remove") == 0 ||
         strcmp(a->pos[0], "transfer") == 0)) {
        return cmdClusterChange(a, c);
    }
    if (a->n_pos < 1 || strcmp(a->pos[0], "status") != 0) {
        die(EXIT_USAGE,
            "cluster: expected 'status', 'add', 'remove' or 'transfer'");
    }
    needPositional(a, 1, "subcommand");
    rc = tn_cluster_status(c, &ci);
    if (rc != TN_OK) {
        return fail(a, c, rc, "cluster status");
    }
    if (a->json) {
        json_t *j = json_object();
        json_t *ms = json_array();
        json_object_set_new(j, "node_id", jsonU64(ci.node_id));
        json_object_set_new(j, "endpoint", json_string(ci.endpoint));
        json_object_set_new(j, "state", json_string(ci.state));
        json_object_set_new(j, "leader_id", jsonU64(ci.leader_id));
        json_object_set_new(j, "leader_rpc", json_string(ci.leader_rpc));
        json_object_set_new(j, "leader_http", json_string(ci.leader_http));
        json_object_set_new(j, "term", jsonU64(ci.term));
        json_object_set_new(j, "commit_index", jsonU64(ci.commit_index));
        json_object_set_new(j, "applied_index", jsonU64(ci.applied_index));
        for (size_t i = 0; i < ci.n_members; i++) {
            json_t *m = json_object();
            json_object_set_new(m, "id", jsonU64(ci.members[i].id));
            json_object_set_new(m, "raft",
                                json_string(ci.members[i].raft_address));
            json_object_set_new(m, "rpc",
                                json_string(ci.members[i].rpc_address));
            json_object_set_new(m, "http",
                                json_string(ci.members[i].http_address));
            json_object_set_new(m, "role", json_string(ci.members[i].role));
            json_object_set_new(m, "leader",
                                json_boolean(ci.members[i].id == ci.leader_id));
            json_array_append_new(ms, m);
        }
        json_object_set_new(j, "members", ms);
        printJson(j);
    } else {
        printf("answered by node %" PRIu64 " (%s, %s)\n", ci.node_id,
               ci.endpoint, ci.state);
        if (ci.leader_id != 0) {
            printf("leader: node %" PRIu64 " rpc=%s http=%s\n", ci.leader_id,
                   ci.leader_rpc, ci.leader_http);
        } else {
            printf("leader: none known\n");
        }
        printf("term=%" PRIu64 " commit_index=%" PRIu64
               " applied_index=%" PRIu64 "\n",
               ci.term, ci.commit_index, ci.applied_index);
        for (size_t i = 0; i < ci.n_members; i++) {
            const struct tn_member_info *m = &ci.members[i];
            printf("  node %" PRIu64 "%s raft=%s rpc=%s http=%s role=%s\n",
                   m->id, m->id == ci.leader_id ? " (leader)" : "",
                   m->raft_address, m->rpc_address, m->http_address, m->role);
        }
    }
    tn_cluster_info_clear(&ci);
    return EXIT_OK;
}

/* ----------------------------------------------------------------- exec */

struct exec_state
{
    volatile sig_atomic_t lost;
};

static void execOnLost(tn_session *s, int rc, void *data)
{
    struct exec_state *st = data;
    (void)s;
    (void)rc;
    st->lost = 1;
}

static int cmdExec(const struct args *a, tn_client *c)
{
    struct exec_state st = { 0 };
    struct tn_session_opts so;
    struct tn_conflict conflict;
    struct tn_acquire_opts o = acquireOpts(a, &conflict);
    const char *resource = a->pos[0];
    uint32_t ttl = a->ttl_ms ? a->ttl_ms : DEFAULT_TTL_MS;
    uint32_t grace;
    uint32_t margin;
    bool termed = false;
    bool killed = false;
    int status = 0;
    tn_session *s;
    tn_lock *l;
    pid_t pid;
    int rc;

    if (a->cmd == NULL) {
        die(EXIT_USAGE, "exec: missing '-- CMD'");
    }
    memset(&so, 0, sizeof so);
    so.data = &st;
    so.on_lost = execOnLost;
    rc = tn_session_open(c, a->holder, ttl, &so, &s);
    if (rc != TN_OK) {
        return fail(a, c, rc, "session");
    }
    ttl = tn_session_ttl_ms(s);
    /* Kill schedule, measured against the lock's safe deadline: SIGTERM
     * when less than grace + margin is left, SIGKILL when less than margin
     * is left (or the cluster says the lease is gone). The defaults stay
     * well below what a healthy session keeps (keepalive every ttl/3). */
    margin = ttl / 20 < 100 ? ttl / 20 : 100;
    grace = a->has_grace ? a->grace_ms : (ttl / 4 < 1000 ? ttl / 4 : 1000);
    rc = tn_lock_acquire(s, resource, &o, &l);
    if (rc == TN_HELD || rc == TN_LOCK_DELAY) {
        tn_session_close(s);
        return printConflict(a, resource, rc, &conflict);
    }
    if (rc != TN_OK) {
        int code = fail(a, c, rc, "acquire");
        tn_session_close(s);
        return code;
    }
    installSignals();
    /* posix_spawnp, not fork + exec: the library's threads may hold locks
     * (malloc's among them) at the moment of a fork. */
    {
        posix_spawnattr_t attr;
        sigset_t sigs;
        extern char **environ;
        size_t n_env = 0;
        char **envp;
        char token_var[64];
        char session_var[64];
        char *resource_var;

        while (environ[n_env] != NULL) {
            n_env++;
        }
        envp = calloc(n_env + 4, sizeof *envp);
        resource_var = malloc(strlen(resource) + sizeof "TENURE_RESOURCE=");
        if (envp == NULL || resource_var == NULL) {
            die(EXIT_ERROR, "out of memory");
        }
        snprintf(token_var, sizeof token_var, "TENURE_TOKEN=%" PRIu64,
                 tn_lock_token(l));
        snprintf(session_var, sizeof session_var, "TENURE_SESSION=%" PRIu64,
                 tn_session_id(s));
        sprintf(resource_var, "TENURE_RESOURCE=%s", resource);
        n_env = 0;
        for (size_t i = 0; environ[i] != NULL; i++) {
            if (strncmp(environ[i], "TENURE_TOKEN=", 13) != 0 &&
                strncmp(environ[i], "TENURE_SESSION=", 15) != 0 &&
                strncmp(environ[i], "TENURE_RESOURCE=", 16) != 0) {
                envp[n_env++] = environ[i];
            }
        }
        envp[n_env++] = token_var;
        envp[n_env++] = session_var;
        envp[n_env++] = resource_var;
        envp[n_env] = NULL;

        posix_spawnattr_init(&attr);
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGHUP);
        sigaddset(&sigs, SIGPIPE);
        posix_spawnattr_setsigdefault(&attr, &sigs);
        sigemptyset(&sigs);
        posix_spawnattr_setsigmask(&attr, &sigs);
        posix_spawnattr_setflags(
            &attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        rc = posix_spawnp(&pid, a->cmd[0], NULL, &attr, a->cmd, envp);
        posix_spawnattr_destroy(&attr);
        free(envp);
        free(resource_var);
        if (rc != 0) {
            fprintf(stderr, "%s: exec %s: %s\n", progname, a->cmd[0],
                    strerror(rc));
            tn_lock_release(l);
            tn_lock_free(l);
            tn_session_close(s);
            return 127;
        }
    }
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        int64_t left;
        if (w == pid) {
            break;
        }
        if (w < 0 && errno != EINTR) {
            break;
        }
        if (got_signal) {
            kill(pid, got_signal);
            got_signal = 0;
        }
        left = st.lost ? 0 : tn_lock_valid_for_ms(l);
        if (left <= (int64_t)margin && !killed) {
            fprintf(stderr, "%s: lease of %s %s: killing %s (SIGKILL)\n",
                    progname, resource,
                    st.lost ? "lost" : "about to end unrenewed", a->cmd[0]);
            kill(pid, SIGKILL);
            killed = true;
        } else if (left <= (int64_t)(margin + grace) && !termed) {
            fprintf(stderr,
                    "%s: lease of %s in jeopardy (%" PRId64
                    " ms left): stopping %s (SIGTERM)\n",
                    progname, resource, left, a->cmd[0]);
            kill(pid, SIGTERM);
            termed = true;
        }
        sleepMs(10);
    }
    if (!st.lost && !termed && !killed) {
        rc = tn_lock_release(l);
        if (rc != TN_OK && rc != TN_LEASE_EXPIRED) {
            char msg[TN_ERRMSG_BUF_SIZE];
            tn_client_errmsg_copy(c, msg, sizeof msg);
            fprintf(stderr, "%s: release: %s\n", progname, msg);
        }
        tn_lock_free(l);
        tn_session_close(s);
    } else {
        /* The cluster did not renew us in time (or said the session is
         * gone): do not wait for it again; the session expires on its own
         * after its TTL. */
        tn_lock_free(l);
        tn_session_abandon(s);
    }
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return EXIT_ERROR;
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    struct args a;
    tn_client *c;
    int code;

    parseArgs(argc, argv, &a);
    if (a.command == NULL) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(a.command, "version") == 0) {
        printf("tenurectl %s (libtenure %s)\n", tn_version_string(),
               tn_version_string());
        return EXIT_OK;
    }
    if (strcmp(a.command, "acquire") == 0 ||
        strcmp(a.command, "release") == 0 || strcmp(a.command, "renew") == 0 ||
        strcmp(a.command, "status") == 0) {
        needPositional(&a, 1, "RESOURCE");
    } else if (strcmp(a.command, "watch") == 0) {
        needPositional(&a, a.prefix != NULL ? 0 : 1, "RESOURCE");
    } else if (strcmp(a.command, "exec") == 0) {
        needPositional(&a, 1, "RESOURCE");
    } else if (strcmp(a.command, "list") == 0) {
        needPositional(&a, 0, "");
    } else if (strcmp(a.command, "cluster") != 0 &&
               strcmp(a.command, "snapshot") != 0) {
        die(EXIT_USAGE, "unknown command '%s'", a.command);
    }
    if (a.cmd != NULL && strcmp(a.command, "exec") != 0) {
        die(EXIT_USAGE, "'--' is only for exec");
    }
    openClient(&a, &c);
    if (strcmp(a.command, "acquire") == 0) {
        code = cmdAcquire(&a, c);
    } else if (strcmp(a.command, "release") == 0) {
        code = cmdRelease(&a, c);
    } else if (strcmp(a.command, "renew") == 0) {
        code = cmdRenew(&a, c);
    } else if (strcmp(a.command, "status") == 0) {
        code = cmdStatus(&a, c);
    } else if (strcmp(a.command, "list") == 0) {
        code = cmdList(&a, c);
    } else if (strcmp(a.command, "watch") == 0) {
        code = cmdWatch(&a, c);
    } else if (strcmp(a.command, "exec") == 0) {
        code = cmdExec(&a, c);
    } else if (strcmp(a.command, "snapshot") == 0) {
        code = cmdSnapshot(&a, c);
    } else {
        code = cmdCluster(&a, c);
    }
    fflush(stdout);
    tn_client_close(c);
    return code;
}
