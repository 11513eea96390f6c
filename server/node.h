/* A tenure node: the loop, the raft adapter, the state machine, the
 * dispatch and the two front ends (RPC and HTTP). */
#ifndef TN_NODE_H_
#define TN_NODE_H_

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define NODE_MAX_INITIAL 16

struct node_config
{
    uint64_t id;
    const char *data_dir;
    const char *raft_address;
    const char *rpc_address;
    const char *http_address;
    unsigned n_initial;                    /* --initial-cluster */
    uint64_t initial_ids[NODE_MAX_INITIAL];
    const char *initial_addresses[NODE_MAX_INITIAL];
    unsigned election_timeout_ms;
    unsigned heartbeat_ms;
    unsigned snapshot_threshold;           /* 0: staggered default */
    uint32_t min_ttl_ms;
    uint32_t max_ttl_ms;
    uint32_t max_lock_delay_ms;
    size_t max_frame;
    unsigned max_inflight;                 /* Raft entries proposed, not yet
                                            * applied; 0: the default */
    uint64_t min_free_disk;                /* bytes; below: refuse writes */
    unsigned watch_progress_ms;            /* stream silence before a
                                            * progress event; 0: default */
};

void nodeConfigDefaults(struct node_config *c);

struct node;

/* Lost-majority recovery on a stopped node's data dir: writes a new
 * configuration made of config->initial_* (see adapterRecover). */
int nodeRecover(uv_loop_t *loop,
                const struct node_config *config,
                char *errmsg,
                size_t errmsg_len);

/* Create the node on @loop and start everything. Returns 0, or non-zero
 * with a message in @errmsg. */
int nodeStart(struct node **out,
              uv_loop_t *loop,
              const struct node_config *config,
              char *errmsg,
              size_t errmsg_len);

/* Graceful stop: stop accepting, hand leadership to another voter if this
 * node leads, fail or finish in-flight requests, close raft. @cb fires when
 * everything is closed and the node is freed. */
void nodeStop(struct node *n, void (*cb)(void *data), void *data);

#endif /* TN_NODE_H_ */
