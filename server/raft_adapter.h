/* The raft adapter: the only module that calls raft_* functions.
 *
 * It owns the raft instance, its libuv I/O and a TCP transport wrapped to
 * set TCP_NODELAY on every connection, and it feeds committed entries to the
 * pure state machine (fsm.c) through the command codec (command.c).
 *
 * Rules from shared/RAFT-NOTES.md that this module enforces:
 *   - libraft >= 0.22.1, auto-recovery off, pre-vote, 300/30 ms timeouts,
 *     1024 in-flight entries, staggered snapshot thresholds >= 16384;
 *   - one 8-byte-padded raft_malloc buffer per raft_apply;
 *   - on a raft_apply error the buffer is freed only for RAFT_NOTLEADER and
 *     RAFT_NOSPACE; any other error is fatal (fail-stop);
 *   - apply never returns non-zero. */
#ifndef TN_RAFT_ADAPTER_H_
#define TN_RAFT_ADAPTER_H_

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "fsm.h"
#include "tenure.pb-c.h"

struct adapter;

/* Roles as seen by the rest of the daemon. */
enum adapter_role {
    ADAPTER_UNAVAILABLE = 0,
    ADAPTER_FOLLOWER,
    ADAPTER_CANDIDATE,
    ADAPTER_LEADER
};

struct adapter_hooks
{
    void *data;
    /* A batch was applied at @index; @results has one entry per command.
     * Called on every node, from inside the raft apply callback. */
    void (*applied)(void *data,
                    uint64_t index,
                    const Tn__Batch *batch,
                    const struct fsm_result *results);
    /* Role, leader or term changed (polled once per loop iteration). */
    void (*changed)(void *data);
};

struct adapter_config
{
    uint64_t id;
    const char *raft_address;   /* host:port this node listens on */
    const char *dir;            /* data directory (must exist) */
    /* Initial voters, used only on first boot: ids[i] at addresses[i]. */
    unsigned n_initial;
    const uint64_t *initial_ids;
    const char *const *initial_addresses;
    unsigned election_timeout_ms; /* default 300 */
    unsigned heartbeat_ms;        /* default 30 */
    unsigned snapshot_threshold;  /* default 16384 + id * 16384 / 3 */
    unsigned snapshot_trailing;   /* default = threshold */
};

/* Create and start raft on @loop. On error returns non-zero and writes a
 * message into @errmsg. */
int adapterStart(struct adapter **out,
                 uv_loop_t *loop,
                 struct fsm *fsm,
                 const struct adapter_config *config,
                 const struct adapter_hooks *hooks,
                 char *errmsg,
                 size_t errmsg_len);

/* Close raft; @cb fires once every handle is closed and @a is freed. */
void adapterClose(struct adapter *a, void (*cb)(void *data), void *data);

enum adapter_role adapterRole(struct adapter *a);
uint64_t adapterLeader(struct adapter *a, const char **raft_address);
uint64_t adapterTerm(struct adapter *a);
uint64_t adapterCommitIndex(struct adapter *a);
uint64_t adapterAppliedIndex(struct adapter *a);
unsigned adapterElectionTimeout(struct adapter *a);

/* Members of the current configuration. */
struct adapter_member
{
    uint64_t id;
    const char *address;
    const char *role;            /* "voter", "standby", "spare" */
};
/* Fills up to @max members; returns how many there are. */
unsigned adapterMembers(struct adapter *a,
                        struct adapter_member *out,
                        unsigned max);

/* Propose @batch. @cb fires once: status 0 after it was applied (the
 * applied hook has already run for it), TN__STATUS__NOT_LEADER if it was
 * refused before being appended, TN__STATUS__NO_SPACE if the disk is full,
 * or TN__STATUS__COMMIT_UNKNOWN when the outcome is unknown (leadership
 * lost, I/O error: the entry may still commit). Returns non-zero (same
 * codes) if the proposal was refused at once; then cb never fires. */
struct adapter_propose;
typedef void (*adapter_propose_cb)(struct adapter_propose *req, int status);
struct adapter_propose
{
    void *data;
    adapter_propose_cb cb;
    void *priv; /* private */
};
int adapterPropose(struct adapter *a,
                   struct adapter_propose *req,
                   const Tn__Batch *batch,
                   adapter_propose_cb cb);

/* Append a barrier; cb(status) as for adapterPropose. */
int adapterBarrier(struct adapter *a,
                   struct adapter_propose *req,
                   adapter_propose_cb cb);

/* Membership changes, one at a time. @cb fires once with a TN__STATUS__*
 * code and a message for humans. Adding goes spare → voter (libraft runs
 * catch-up rounds before the promotion). Removal is refused when the
 * remaining voters that are caught up would not form a majority, and for
 * the leader itself (transfer leadership first). Returns non-zero (and
 * fills @errmsg) when refused at once; then cb never fires. */
struct adapter_change;
typedef void (*adapter_change_cb)(struct adapter_change *req,
                                  int status,
                                  const char *message);
struct adapter_change
{
    void *data;
    adapter_change_cb cb;
    void *priv; /* private */
};
int adapterAddMember(struct adapter *a,
                     struct adapter_change *req,
                     uint64_t id,
                     const char *address,
                     adapter_change_cb cb,
                     char *errmsg,
                     size_t errmsg_len);
int adapterRemoveMember(struct adapter *a,
                        struct adapter_change *req,
                        uint64_t id,
                        adapter_change_cb cb,
                        char *errmsg,
                        size_t errmsg_len);

/* Hand leadership to @id (0: the best voter) and report the outcome: OK
 * once this node is no longer leader, REFUSED if three attempts did not
 * complete. */
int adapterTransferWait(struct adapter *a,
                        struct adapter_change *req,
                        uint64_t id,
                        adapter_change_cb cb,
                        char *errmsg,
                        size_t errmsg_len);

/* Lost-majority recovery (the node must be stopped): force the voters of
 * @config->initial_* as the new configuration into the log in
 * @config->dir. Run it on ONE surviving node (the one with the highest
 * term and longest log), copy its data dir to the other survivors, start
 * them all. Returns 0 or a raft error with @errmsg set. */
int adapterRecover(uv_loop_t *loop,
                   const struct adapter_config *config,
                   char *errmsg,
                   size_t errmsg_len);

/* The raft_fsm glue: decodes each entry and applies it to the FSM. The
 * daemon uses it through adapterStart; raft_fixture tests use it directly
 * (set @w->raft to the fixture server's raft after it exists). */
struct raft;
struct raft_fsm;
struct adapter_fsm
{
    struct fsm *fsm;
    struct raft *raft;
    struct adapter_hooks hooks;
};
void adapterFsmInit(struct adapter_fsm *w,
                    struct raft_fsm *rf,
                    struct fsm *fsm,
                    const struct adapter_hooks *hooks);

/* Hand leadership to @id (0: the most up-to-date voter). */
int adapterTransfer(struct adapter *a, uint64_t id);

#endif /* TN_RAFT_ADAPTER_H_ */
