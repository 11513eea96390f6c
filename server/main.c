/* tenured: options (flags and config file), signals, then the node. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "lib/log.h"
#include "node.h"

static const char usage[] =
    "usage: tenured [--config FILE] --id N --data DIR --raft HOST:PORT\n"
    "               --rpc HOST:PORT --http HOST:PORT\n"
    "               [--initial-cluster ID=HOST:PORT,... | --join]\n"
    "               [--recover --initial-cluster ID=HOST:PORT,...]\n"
    "               [--log-level debug|info|warn|error] [--log-file FILE]\n"
    "               [--election-timeout MS] [--heartbeat MS]\n"
    "               [--min-ttl MS] [--max-ttl MS] [--max-lock-delay MS]\n"
    "               [--snapshot-threshold N] [--max-frame BYTES]\n"
    "               [--min-free-disk BYTES] [--max-inflight N]\n"
    "\n"
    "  --config           a file of `key = value` lines with the same keys as\n"
    "                     the flags (without the dashes); flags override it.\n"
    "  --initial-cluster  Raft addresses of the initial voters; used on the\n"
    "                     first boot only (bootstrap), ignored afterwards.\n"
    "                     Without it (and without --join) the node is a\n"
    "                     cluster of one.\n"
    "  --join             start empty and wait to be added with\n"
    "                     `tenurectl cluster add ID RAFT_ADDRESS`.\n"
    "  --recover          lost-majority recovery on this STOPPED node's data:\n"
    "                     make --initial-cluster the new set of voters, then\n"
    "                     exit (see docs/operations.md).\n"
    "  --min-free-disk    below this many free bytes in the data dir the\n"
    "                     cluster refuses new writes (default 64 MiB).\n"
    "  --max-inflight     Raft entries the leader keeps proposed but not yet\n"
    "                     applied; what arrives meanwhile waits and shares\n"
    "                     the next entry (default 1).\n";

struct settings
{
    struct node_config cfg;
    char *initial;        /* owned copy of --initial-cluster */
    bool join;
    bool recover;
    const char *log_file;
    char *strings[32];    /* owned copies of string values */
    unsigned n_strings;
};

struct app
{
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup;
    struct node *node;
    const char *log_file;
    bool stopping;
};

static int parseU64(const char *where, const char *key, const char *s,
                    uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min ||
        v > max) {
        fprintf(stderr,
                "tenured: %s%s: expected a number in [%llu, %llu], got '%s'\n",
                where, key, (unsigned long long)min, (unsigned long long)max,
                s);
        return -1;
    }
    *out = v;
    return 0;
}

static const char *keep(struct settings *st, const char *value)
{
    char *copy;
    if (st->n_strings == sizeof st->strings / sizeof st->strings[0]) {
        return NULL;
    }
    copy = strdup(value);
    if (copy != NULL) {
        st->strings[st->n_strings++] = copy;
    }
    return copy;
}

/* Apply one option by name; @where prefixes error messages ("" for flags,
 * "FILE:LINE: " for the config file). Returns 0, or -1 after printing an
 * error that names the key. */
static int applyOption(struct settings *st, const char *where,
                       const char *key, const char *value)
{
    struct node_config *c = &st->cfg;
    uint64_t v;
    int rv;

    if (value == NULL && strcmp(key, "join") != 0 &&
        strcmp(key, "recover") != 0) {
        fprintf(stderr, "tenured: %s%s: a value is required\n", where, key);
        return -1;
    }
    if (strcmp(key, "id") == 0) {
        if (parseU64(where, key, value, 1, UINT32_MAX, &c->id) != 0) {
            return -1;
        }
    } else if (strcmp(key, "data") == 0) {
        c->data_dir = keep(st, value);
    } else if (strcmp(key, "raft") == 0) {
        c->raft_address = keep(st, value);
    } else if (strcmp(key, "rpc") == 0) {
        c->rpc_address = keep(st, value);
    } else if (strcmp(key, "http") == 0) {
        c->http_address = keep(st, value);
    } else if (strcmp(key, "initial-cluster") == 0) {
        free(st->initial);
        st->initial = strdup(value);
    } else if (strcmp(key, "join") == 0) {
        st->join = value == NULL || strcmp(value, "true") == 0 ||
                   strcmp(value, "1") == 0 || strcmp(value, "yes") == 0;
        if (value != NULL && !st->join && strcmp(value, "false") != 0 &&
            strcmp(value, "0") != 0 && strcmp(value, "no") != 0) {
            fprintf(stderr, "tenured: %s%s: expected true or false, got '%s'\n",
                    where, key, value);
            return -1;
        }
    } else if (strcmp(key, "recover") == 0) {
        st->recover = true;
    } else if (strcmp(key, "log-level") == 0) {
        rv = tnLogParseLevel(value);
        if (rv < 0) {
            fprintf(stderr,
                    "tenured: %s%s: expected debug, info, warn or error, got "
                    "'%s'\n",
                    where, key, value);
            return -1;
        }
        tnLogSetLevel((enum tn_log_level)rv);
    } else if (strcmp(key, "log-file") == 0) {
        st->log_file = keep(st, value);
    } else if (strcmp(key, "election-timeout") == 0) {
        if (parseU64(where, key, value, 50, 60000, &v) != 0) {
            return -1;
        }
        c->election_timeout_ms = (unsigned)v;
    } else if (strcmp(key, "heartbeat") == 0) {
        if (parseU64(where, key, value, 5, 10000, &v) != 0) {
            return -1;
        }
        c->heartbeat_ms = (unsigned)v;
    } else if (strcmp(key, "min-ttl") == 0) {
        if (parseU64(where, key, value, 100, 86400000, &v) != 0) {
            return -1;
        }
        c->min_ttl_ms = (uint32_t)v;
    } else if (strcmp(key, "max-ttl") == 0) {
        if (parseU64(where, key, value, 100, 86400000, &v) != 0) {
            return -1;
        }
        c->max_ttl_ms = (uint32_t)v;
    } else if (strcmp(key, "max-lock-delay") == 0) {
        if (parseU64(where, key, value, 0, 86400000, &v) != 0) {
            return -1;
        }
        c->max_lock_delay_ms = (uint32_t)v;
    } else if (strcmp(key, "snapshot-threshold") == 0) {
        if (parseU64(where, key, value, 64, 1U << 30, &v) != 0) {
            return -1;
        }
        c->snapshot_threshold = (unsigned)v;
    } else if (strcmp(key, "max-frame") == 0) {
        if (parseU64(where, key, value, 1024, 64U << 20, &v) != 0) {
            return -1;
        }
        c->max_frame = (size_t)v;
    } else if (strcmp(key, "max-inflight") == 0) {
        if (parseU64(where, key, value, 1, 1024, &v) != 0) {
            return -1;
        }
        c->max_inflight = (unsigned)v;
    } else if (strcmp(key, "watch-progress-ms") == 0) {
        /* Not in the usage text: for tests (docs/operations.md). */
        if (parseU64(where, key, value, 100, 600000, &v) != 0) {
            return -1;
        }
        c->watch_progress_ms = (unsigned)v;
    } else if (strcmp(key, "min-free-disk") == 0) {
        if (parseU64(where, key, value, 0, UINT64_MAX / 2, &v) != 0) {
            return -1;
        }
        c->min_free_disk = v;
    } else {
        fprintf(stderr, "tenured: %sunknown key '%s'\n", where, key);
        return -1;
    }
    if ((strcmp(key, "data") == 0 || strcmp(key, "raft") == 0 ||
         strcmp(key, "rpc") == 0 || strcmp(key, "http") == 0 ||
         strcmp(key, "log-file") == 0) &&
        value[0] == '\0') {
        fprintf(stderr, "tenured: %s%s: must not be empty\n", where, key);
        return -1;
    }
    return 0;
}

static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
                     e[-1] == '\r')) {
        *--e = '\0';
    }
    return s;
}

/* `key = value` lines; `#` starts a comment; blank lines are ignored. */
static int loadConfig(struct settings *st, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    char where[512];
    unsigned lineno = 0;
    int rv = 0;

    if (f == NULL) {
        fprintf(stderr, "tenured: --config %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *hash = strchr(line, '#');
        char *eq;
        char *key;
        char *value;
        lineno++;
        snprintf(where, sizeof where, "%s:%u: ", path, lineno);
        if (strchr(line, '\n') == NULL && !feof(f)) {
            fprintf(stderr, "tenured: %sline too long\n", where);
            rv = -1;
            break;
        }
        if (hash != NULL) {
            *hash = '\0';
        }
        key = trim(line);
        if (key[0] == '\0') {
            continue;
        }
        eq = strchr(key, '=');
        if (eq == NULL) {
            fprintf(stderr, "tenured: %sexpected `key = value`, got '%s'\n",
                    where, key);
            rv = -1;
            break;
        }
        *eq = '\0';
        value = trim(eq + 1);
        key = trim(key);
        if (applyOption(st, where, key, value) != 0) {
            rv = -1;
            break;
        }
    }
    fclose(f);
    return rv;
}

/* "1=127.0.0.1:7001,2=127.0.0.1:7002" */
static int parseInitial(struct settings *st)
{
    struct node_config *c = &st->cfg;
    char *save = NULL;
    for (char *item = strtok_r(st->initial, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        uint64_t id;
        if (eq == NULL || eq == item || eq[1] == '\0') {
            fprintf(stderr,
                    "tenured: initial-cluster: expected ID=HOST:PORT, got "
                    "'%s'\n",
                    item);
            return -1;
        }
        *eq = '\0';
        if (parseU64("", "initial-cluster id", item, 1, UINT32_MAX, &id) !=
            0) {
            return -1;
        }
        if (c->n_initial == NODE_MAX_INITIAL) {
            fprintf(stderr, "tenured: initial-cluster: at most %d members\n",
                    NODE_MAX_INITIAL);
            return -1;
        }
        for (unsigned i = 0; i < c->n_initial; i++) {
            if (c->initial_ids[i] == id) {
                fprintf(stderr,
                        "tenured: initial-cluster: id %llu appears twice\n",
                        (unsigned long long)id);
                return -1;
            }
        }
        c->initial_ids[c->n_initial] = id;
        c->initial_addresses[c->n_initial] = eq + 1;
        c->n_initial++;
    }
    return 0;
}

static int validate(struct settings *st)
{
    struct node_config *c = &st->cfg;

    if (c->id == 0 || c->data_dir == NULL || c->raft_address == NULL ||
        c->rpc_address == NULL || c->http_address == NULL) {
        fprintf(stderr,
                "tenured: id, data, raft, rpc and http are required\n%s",
                usage);
        return -1;
    }
    if (c->min_ttl_ms > c->max_ttl_ms) {
        fprintf(stderr, "tenured: min-ttl (%u) is above max-ttl (%u)\n",
                c->min_ttl_ms, c->max_ttl_ms);
        return -1;
    }
    if (c->min_ttl_ms < 2 * c->election_timeout_ms) {
        fprintf(stderr,
                "tenured: min-ttl (%u ms) must be at least twice the "
                "election-timeout (%u ms)\n",
                c->min_ttl_ms, c->election_timeout_ms);
        return -1;
    }
    if (c->heartbeat_ms >= c->election_timeout_ms) {
        fprintf(stderr,
                "tenured: heartbeat (%u ms) must be below election-timeout "
                "(%u ms)\n",
                c->heartbeat_ms, c->election_timeout_ms);
        return -1;
    }
    if (st->recover && st->initial == NULL) {
        fprintf(stderr,
                "tenured: recover needs initial-cluster: the new set of "
                "voters\n");
        return -1;
    }
    if (st->join && st->initial != NULL) {
        fprintf(stderr,
                "tenured: join and initial-cluster exclude each other\n");
        return -1;
    }
    if (st->initial != NULL) {
        bool self = false;
        if (parseInitial(st) != 0) {
            return -1;
        }
        for (unsigned i = 0; i < c->n_initial; i++) {
            if (c->initial_ids[i] == c->id) {
                self = true;
            }
        }
        if (!self) {
            fprintf(stderr,
                    "tenured: initial-cluster does not list this node's id "
                    "%llu\n",
                    (unsigned long long)c->id);
            return -1;
        }
    } else if (!st->join) {
        /* A cluster of one: this node alone. */
        c->n_initial = 1;
        c->initial_ids[0] = c->id;
        c->initial_addresses[0] = c->raft_address;
    }
    return 0;
}

/* Point stderr at the log file (again: SIGHUP after a rotation). */
static int openLog(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "tenured: log-file %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (dup2(fd, STDERR_FILENO) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static void stoppedCb(void *data)
{
    struct app *a = data;
    a->node = NULL;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sighup, NULL);
}

static void signalCb(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    if (signum == SIGHUP) {
        if (a->log_file != NULL && openLog(a->log_file) == 0) {
            tnInfof("\"log file reopened\" path=\"%s\"", a->log_file);
        }
        return;
    }
    if (a->stopping) {
        return;
    }
    a->stopping = true;
    tnInfof("\"stopping\" signal=%d", signum);
    nodeStop(a->node, stoppedCb, a);
}

static void settingsFree(struct settings *st)
{
    for (unsigned i = 0; i < st->n_strings; i++) {
        free(st->strings[i]);
    }
    free(st->initial);
    memset(st, 0, sizeof *st);
}

static int tenured(int argc, char **argv, struct settings *st);

int main(int argc, char **argv)
{
    struct settings st;
    int rv;

    memset(&st, 0, sizeof st);
    rv = tenured(argc, argv, &st);
    settingsFree(&st);
    return rv;
}

static int tenured(int argc, char **argv, struct settings *stp)
{
    static const struct option options[] = {
        { "config", required_argument, NULL, 0 },
        { "id", required_argument, NULL, 0 },
        { "data", required_argument, NULL, 0 },
        { "raft", required_argument, NULL, 0 },
        { "rpc", required_argument, NULL, 0 },
        { "http", required_argument, NULL, 0 },
        { "initial-cluster", required_argument, NULL, 0 },
        { "join", no_argument, NULL, 0 },
        { "recover", no_argument, NULL, 0 },
        { "log-level", required_argument, NULL, 0 },
        { "log-file", required_argument, NULL, 0 },
        { "election-timeout", required_argument, NULL, 0 },
        { "heartbeat", required_argument, NULL, 0 },
        { "min-ttl", required_argument, NULL, 0 },
        { "max-ttl", required_argument, NULL, 0 },
        { "max-lock-delay", required_argument, NULL, 0 },
        { "snapshot-threshold", required_argument, NULL, 0 },
        { "max-frame", required_argument, NULL, 0 },
        { "max-inflight", required_argument, NULL, 0 },
        { "min-free-disk", required_argument, NULL, 0 },
        { "watch-progress-ms", required_argument, NULL, 0 },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct app app;
    char errmsg[512];
    const char *config = NULL;
    int opt;
    int idx;
    int rv;

    memset(&app, 0, sizeof app);
    nodeConfigDefaults(&stp->cfg);

    /* First pass: find --config, so that flags override the file. */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, &idx)) != -1) {
        if (opt == 0 && strcmp(options[idx].name, "config") == 0) {
            config = optarg;
        }
    }
    if (config != NULL && loadConfig(stp, config) != 0) {
        return 2;
    }
    optind = 1;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "", options, &idx)) != -1) {
        if (opt != 0) {
            fputs(usage, opt == 'h' ? stdout : stderr);
            return opt == 'h' ? 0 : 2;
        }
        if (strcmp(options[idx].name, "config") == 0) {
            continue;
        }
        if (applyOption(stp, "--", options[idx].name, optarg) != 0) {
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "tenured: unexpected argument '%s'\n%s", argv[optind],
                usage);
        return 2;
    }
    if (validate(stp) != 0) {
        return 2;
    }
    if (stp->log_file != NULL && openLog(stp->log_file) != 0) {
        return 2;
    }
    app.log_file = stp->log_file;
    tnLogSetNode(stp->cfg.id);
    signal(SIGPIPE, SIG_IGN);

    uv_loop_init(&app.loop);
    if (stp->recover) {
        rv = nodeRecover(&app.loop, &stp->cfg, errmsg, sizeof errmsg);
        if (rv != 0) {
            fprintf(stderr, "tenured: recover: %s\n", errmsg);
            return 1;
        }
        fprintf(stderr,
                "tenured: recovered: %s now holds a configuration of %u "
                "voter(s); copy it to the other survivors and start them\n",
                stp->cfg.data_dir, stp->cfg.n_initial);
        uv_loop_close(&app.loop);
        return 0;
    }
    rv = nodeStart(&app.node, &app.loop, &stp->cfg, errmsg, sizeof errmsg);
    if (rv != 0) {
        tnErrorf("\"cannot start\" error=\"%s\"", errmsg);
        fprintf(stderr, "tenured: %s\n", errmsg);
        /* A half-started node (raft initialised, its I/O open) can only be
         * closed asynchronously; nothing is pending, so leave at once. */
        fflush(stderr);
        _exit(1);
    }
    uv_signal_init(&app.loop, &app.sigterm);
    uv_signal_init(&app.loop, &app.sigint);
    uv_signal_init(&app.loop, &app.sighup);
    app.sigterm.data = &app;
    app.sigint.data = &app;
    app.sighup.data = &app;
    uv_signal_start(&app.sigterm, signalCb, SIGTERM);
    uv_signal_start(&app.sigint, signalCb, SIGINT);
    uv_signal_start(&app.sighup, signalCb, SIGHUP);

    uv_run(&app.loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&app.loop);
    if (rv != 0) {
        tnWarnf("\"loop not clean at exit\" error=\"%s\"", uv_strerror(rv));
    }
    tnInfof("\"stopped\"");
    return 0;
}
