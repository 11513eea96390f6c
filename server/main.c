/* tenured: arguments, signals, then the node does the rest. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "lib/log.h"
#include "node.h"

static const char usage[] =
    "usage: tenured --id N --data DIR --raft HOST:PORT --rpc HOST:PORT\n"
    "               --http HOST:PORT [--initial-cluster ID=HOST:PORT,...]\n"
    "               [--log-level debug|info|warn|error]\n"
    "               [--election-timeout MS] [--heartbeat MS]\n"
    "               [--min-ttl MS] [--max-ttl MS] [--max-lock-delay MS]\n"
    "               [--snapshot-threshold N] [--max-frame BYTES]\n"
    "\n"
    "  --initial-cluster  Raft addresses of the initial voters; used on the\n"
    "                     first boot only (bootstrap), ignored afterwards.\n"
    "                     Omit it for a single-node cluster of this node.\n";

struct app
{
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    struct node *node;
    bool stopping;
};

static int parseU64(const char *flag, const char *s, uint64_t min,
                    uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min ||
        v > max) {
        fprintf(stderr,
                "tenured: %s: expected a number in [%llu, %llu], got '%s'\n",
                flag, (unsigned long long)min, (unsigned long long)max, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* "1=127.0.0.1:7001,2=127.0.0.1:7002" */
static int parseInitial(char *s, struct node_config *c)
{
    char *save = NULL;
    for (char *item = strtok_r(s, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        uint64_t id;
        if (eq == NULL || eq == item || eq[1] == '\0') {
            fprintf(stderr,
                    "tenured: --initial-cluster: expected ID=HOST:PORT, got "
                    "'%s'\n",
                    item);
            return -1;
        }
        *eq = '\0';
        if (parseU64("--initial-cluster id", item, 1, UINT32_MAX, &id) != 0) {
            return -1;
        }
        if (c->n_initial == NODE_MAX_INITIAL) {
            fprintf(stderr, "tenured: --initial-cluster: at most %d members\n",
                    NODE_MAX_INITIAL);
            return -1;
        }
        for (unsigned i = 0; i < c->n_initial; i++) {
            if (c->initial_ids[i] == id) {
                fprintf(stderr,
                        "tenured: --initial-cluster: id %llu appears twice\n",
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

static void stoppedCb(void *data)
{
    struct app *a = data;
    a->node = NULL;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
}

static void signalCb(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    if (a->stopping) {
        return;
    }
    a->stopping = true;
    tnInfof("\"stopping\" signal=%d", signum);
    nodeStop(a->node, stoppedCb, a);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "id", required_argument, NULL, 'i' },
        { "data", required_argument, NULL, 'd' },
        { "raft", required_argument, NULL, 'r' },
        { "rpc", required_argument, NULL, 'p' },
        { "http", required_argument, NULL, 'h' },
        { "initial-cluster", required_argument, NULL, 'c' },
        { "log-level", required_argument, NULL, 'l' },
        { "election-timeout", required_argument, NULL, 'E' },
        { "heartbeat", required_argument, NULL, 'H' },
        { "min-ttl", required_argument, NULL, 'm' },
        { "max-ttl", required_argument, NULL, 'M' },
        { "max-lock-delay", required_argument, NULL, 'D' },
        { "snapshot-threshold", required_argument, NULL, 'S' },
        { "max-frame", required_argument, NULL, 'F' },
        { "help", no_argument, NULL, '?' },
        { NULL, 0, NULL, 0 },
    };
    struct node_config cfg;
    struct app app;
    char errmsg[512];
    char *initial = NULL;
    uint64_t v;
    int opt;
    int rv;

    nodeConfigDefaults(&cfg);
    memset(&app, 0, sizeof app);
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
            case 'i':
                if (parseU64("--id", optarg, 1, UINT32_MAX, &cfg.id) != 0) {
                    return 2;
                }
                break;
            case 'd':
                cfg.data_dir = optarg;
                break;
            case 'r':
                cfg.raft_address = optarg;
                break;
            case 'p':
                cfg.rpc_address = optarg;
                break;
            case 'h':
                cfg.http_address = optarg;
                break;
            case 'c':
                initial = optarg;
                break;
            case 'l':
                rv = tnLogParseLevel(optarg);
                if (rv < 0) {
                    fprintf(stderr,
                            "tenured: --log-level: expected debug, info, "
                            "warn or error, got '%s'\n",
                            optarg);
                    return 2;
                }
                tnLogSetLevel((enum tn_log_level)rv);
                break;
            case 'E':
                if (parseU64("--election-timeout", optarg, 50, 60000, &v)) {
                    return 2;
                }
                cfg.election_timeout_ms = (unsigned)v;
                break;
            case 'H':
                if (parseU64("--heartbeat", optarg, 5, 10000, &v)) {
                    return 2;
                }
                cfg.heartbeat_ms = (unsigned)v;
                break;
            case 'm':
                if (parseU64("--min-ttl", optarg, 100, 86400000, &v)) {
                    return 2;
                }
                cfg.min_ttl_ms = (uint32_t)v;
                break;
            case 'M':
                if (parseU64("--max-ttl", optarg, 100, 86400000, &v)) {
                    return 2;
                }
                cfg.max_ttl_ms = (uint32_t)v;
                break;
            case 'D':
                if (parseU64("--max-lock-delay", optarg, 0, 86400000, &v)) {
                    return 2;
                }
                cfg.max_lock_delay_ms = (uint32_t)v;
                break;
            case 'S':
                if (parseU64("--snapshot-threshold", optarg, 64, 1U << 30,
                             &v)) {
                    return 2;
                }
                cfg.snapshot_threshold = (unsigned)v;
                break;
            case 'F':
                if (parseU64("--max-frame", optarg, 1024, 64U << 20, &v)) {
                    return 2;
                }
                cfg.max_frame = (size_t)v;
                break;
            default:
                fputs(usage, stderr);
                return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "tenured: unexpected argument '%s'\n%s", argv[optind],
                usage);
        return 2;
    }
    if (cfg.id == 0 || cfg.data_dir == NULL || cfg.raft_address == NULL ||
        cfg.rpc_address == NULL || cfg.http_address == NULL) {
        fprintf(stderr,
                "tenured: --id, --data, --raft, --rpc and --http are "
                "required\n%s",
                usage);
        return 2;
    }
    if (cfg.min_ttl_ms > cfg.max_ttl_ms) {
        fprintf(stderr, "tenured: --min-ttl (%u) is above --max-ttl (%u)\n",
                cfg.min_ttl_ms, cfg.max_ttl_ms);
        return 2;
    }
    if (cfg.min_ttl_ms < 2 * cfg.election_timeout_ms) {
        fprintf(stderr,
                "tenured: --min-ttl (%u ms) must be at least twice the "
                "election timeout (%u ms)\n",
                cfg.min_ttl_ms, cfg.election_timeout_ms);
        return 2;
    }
    if (initial != NULL && parseInitial(initial, &cfg) != 0) {
        return 2;
    }
    if (initial == NULL) {
        /* A cluster of one: this node alone. */
        cfg.n_initial = 1;
        cfg.initial_ids[0] = cfg.id;
        cfg.initial_addresses[0] = cfg.raft_address;
    } else {
        bool self = false;
        for (unsigned i = 0; i < cfg.n_initial; i++) {
            if (cfg.initial_ids[i] == cfg.id) {
                self = true;
            }
        }
        if (!self) {
            fprintf(stderr,
                    "tenured: --initial-cluster does not list this node's id "
                    "%llu\n",
                    (unsigned long long)cfg.id);
            return 2;
        }
    }
    tnLogSetNode(cfg.id);
    signal(SIGPIPE, SIG_IGN);

    uv_loop_init(&app.loop);
    rv = nodeStart(&app.node, &app.loop, &cfg, errmsg, sizeof errmsg);
    if (rv != 0) {
        tnErrorf("\"cannot start\" error=\"%s\"", errmsg);
        fprintf(stderr, "tenured: %s\n", errmsg);
        return 1;
    }
    uv_signal_init(&app.loop, &app.sigterm);
    uv_signal_init(&app.loop, &app.sigint);
    app.sigterm.data = &app;
    app.sigint.data = &app;
    uv_signal_start(&app.sigterm, signalCb, SIGTERM);
    uv_signal_start(&app.sigint, signalCb, SIGINT);

    uv_run(&app.loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&app.loop);
    if (rv != 0) {
        tnWarnf("\"loop not clean at exit\" error=\"%s\"", uv_strerror(rv));
    }
    tnInfof("\"stopped\"");
    return 0;
}
