/* The lock table: a pure, deterministic state machine (see fsm.h).
 *
 * Structures (all ordered, so that nothing depends on pointer values):
 *   sessions   AVL by id; each session lists its holds (grant order) and
 *              its queued acquires (queue order);
 *   locks      AVL by resource bytes; each lock keeps its holders in an AVL
 *              by token (= grant order) and its waiters in a FIFO list;
 *   timers     AVL by (deadline, kind, tseq): waiter deadlines and ends of
 *              lock-delays; tseq is a counter, so ties are deterministic;
 *   tombstones ring of the most recently ended tokens + AVL by token;
 *   clients    AVL by client id (exactly-once reply windows) + a list in
 *              order of last activity (cluster time) for expiry.
 *
 * Apply order for one batch: advance cluster time and term; fire the timers
 * that are due (in deadline order); drop idle clients; then each command in
 * turn, each followed by the hand-off of every lock it changed.
 *
 * Out of memory while applying is fatal (abort): a replica that skipped part
 * of an entry would silently diverge from the others. fsmInit, fsmSnapshot
 * and fsmRestore report it instead. */
#include "fsm.h"

#include <stdlib.h>
#include <string.h>

#include "lib/avl.h"
#include "lib/queue.h"

/* ---------------------------------------------------------------- types */

enum { TIMER_DELAY = 0, TIMER_WAIT = 1 };
enum { TOMB_RELEASED = 1, TOMB_EXPIRED = 2 };

struct timer
{
    struct tn_avl_node node; /* impl->timers */
    uint64_t deadline;
    uint64_t tseq;
    int kind;
    struct lock *owner; /* TIMER_DELAY: the lock in lock-delay */
};

struct session
{
    struct tn_avl_node node; /* impl->sessions, by id */
    uint64_t id;
    uint64_t epoch;
    uint64_t created_at;
    uint32_t ttl_ms;
    bool ephemeral; /* ends with its last lock / waiter */
    bool ending;
    tn_queue holds; /* struct holder.session_link */
    tn_queue waits; /* struct waiter.session_link */
    uint32_t n_holds;
    uint32_t n_waits;
    char holder[]; /* NUL-terminated, inline */
};

struct holder
{
    struct tn_avl_node node; /* lock->holders, by token */
    tn_queue session_link;
    struct lock *lock;
    struct session *session;
    uint64_t token;
    uint64_t acquired_at;
    uint32_t lock_delay_ms;
};

/* What only some locks need: a queue of waiters, a running lock-delay, a
 * semaphore size. Allocated on first use and freed once idle again, so that
 * a plainly held lock does not carry these fields (see lockExt). */
struct lock_ext
{
    tn_queue waiters;     /* struct waiter.lock_link, FIFO */
    struct timer *delay;  /* owned; armed while a lock-delay runs */
    uint64_t delay_until; /* 0: no lock-delay */
    uint32_t n_waiters;
    uint32_t permits;  /* semaphore size while sem_refs > 0 */
    uint32_t sem_refs; /* semaphore holders + semaphore waiters */
};

/* One allocation per lock: the name is stored inline and so is the first
 * hold (most locks have a single holder); further holders of shared locks
 * and semaphores are allocated on their own. */
struct lock
{
    struct tn_avl_node node; /* impl->locks, by name */
    struct tn_avl holders;   /* struct holder, by token */
    struct lock_ext *ext;    /* owned; NULL while not needed */
    uint64_t generation;
    uint64_t last_token;
    uint64_t modified_index;
    struct holder first; /* in use when first_used */
    uint8_t mode;        /* of the holders; EXCLUSIVE when none */
    bool dirty;          /* in impl->dirty */
    bool first_used;
    uint16_t len;
    char name[]; /* NUL-terminated */
};

struct waiter
{
    struct timer timer; /* impl->timers, kind TIMER_WAIT */
    tn_queue lock_link;
    tn_queue session_link;
    struct lock *lock;
    struct session *session;
    uint64_t client_id;
    uint64_t seq;
    uint32_t permits;
    uint32_t lock_delay_ms;
    uint8_t mode;
    /* Where it was queued, to finalise that result if the waiter ends in
     * the same batch (not part of the snapshot: only used while applying
     * that entry). */
    uint64_t origin_apply; /* impl->applies when queued */
    size_t origin_slot;
};

struct tomb
{
    struct tn_avl_node node; /* impl->tomb_index, by token */
    uint64_t token;
    uint64_t session;
    uint64_t ended_at; /* cluster time the hold ended */
    char *resource; /* owned */
    char *holder;   /* owned: the session's holder name */
    uint16_t len;
    uint8_t kind;
};

/* A remembered reply: enough to answer a retry exactly. */
struct centry
{
    uint64_t seq;
    uint64_t session;
    uint64_t epoch;
    uint64_t token;
    uint64_t generation;
    uint32_t ttl_ms;
    uint8_t status;
    uint8_t mode;
    uint8_t pending; /* queued acquire not completed yet */
    uint8_t kind;    /* Tn__Command body case the reply belongs to */
};

struct client
{
    struct tn_avl_node node; /* impl->clients, by id */
    tn_queue lru;            /* impl->client_lru, by last_active */
    uint64_t id;
    uint64_t last_active;
    uint64_t floor; /* highest seq forgotten from the window */
    uint32_t n;
    uint32_t cap;
    uint32_t pending;
    struct centry *entries; /* owned */
};

struct member
{
    uint64_t id;
    char *raft; /* owned */
    char *rpc;  /* owned */
    char *http; /* owned */
};

struct fsm_impl
{
    uint64_t index;
    uint64_t term;
    uint64_t now;
    uint64_t last_token;
    uint64_t last_session;
    uint64_t next_tseq;
    struct tn_avl sessions;
    struct tn_avl locks;
    struct tn_avl timers;
    struct tn_avl tomb_index;
    struct tn_avl clients;
    tn_queue client_lru;
    struct tomb **ring; /* owned; oldest at ring_head */
    uint32_t ring_cap;
    uint32_t ring_head;
    uint32_t ring_count;
    struct member *members; /* owned; sorted by id */
    size_t n_members;
    uint64_t n_holders;
    uint64_t n_waiters;
    struct fsm_stats stats; /* counters; live counts computed on read */
    /* Apply-time scratch. */
    struct lock **dirty;
    size_t n_dirty;
    size_t cap_dirty;
    void **graveyard; /* blocks results may point to (ended sessions and
                         their holder names), freed at the next apply */
    size_t n_grave;
    size_t cap_grave;
    struct fsm_holder_view *views;
    size_t cap_views;
    bool stale_term; /* the batch being applied has an old term */
    /* The batch being applied: results of commands [0, cur_done) are
     * written; cur_queued of them say queued. */
    uint64_t applies; /* fsmApply calls since init (never 0 inside one) */
    const Tn__Batch *cur_batch;
    struct fsm_result *cur_results;
    size_t cur_slot;
    size_t cur_done;
    size_t cur_queued;
};

/* ------------------------------------------------------------- helpers */

static void *fsmMust(void *p)
{
    if (p == NULL) {
        abort(); /* fail-stop: see the top of this file */
    }
    return p;
}

static void *fsmAlloc(size_t n)
{
    return fsmMust(malloc(n));
}

static void *fsmZalloc(size_t n)
{
    return fsmMust(calloc(1, n));
}

/* Insert a node whose key is unique by construction (ids and tokens come
 * from counters); a duplicate would mean a corrupted state: fail-stop. */
static void fsmInsert(struct tn_avl *t, struct tn_avl_node *n, tn_avl_cmp cmp)
{
    if (tn_avl_insert(t, n, cmp) != NULL) {
        abort();
    }
}

static uint64_t fsmAddSat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t fsmMax(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static uint64_t fsmNextId(uint64_t last, uint64_t index)
{
    uint64_t base = index < (UINT64_C(1) << 48) ? index << 16 : UINT64_MAX;
    return fsmMax(last + 1, base);
}

/* 0: valid; 1: not UTF-8; 2: a control character. */
static int fsmTextCheck(const uint8_t *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t more;
        uint8_t lo = 0x80;
        uint8_t hi = 0xbf;

        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) {
                return 2;
            }
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            cp = c & 0x0f;
            if (c == 0xe0) {
                lo = 0xa0;
            } else if (c == 0xed) {
                hi = 0x9f; /* no surrogates */
            }
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            cp = c & 0x07;
            if (c == 0xf0) {
                lo = 0x90;
            } else if (c == 0xf4) {
                hi = 0x8f;
            }
        } else {
            return 1;
        }
        if (len - i - 1 < more) {
            return 1;
        }
        for (size_t k = 1; k <= more; k++) {
            uint8_t d = s[i + k];
            if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xbf)) {
                return 1;
            }
            cp = cp << 6 | (d & 0x3f);
        }
        if (cp >= 0x80 && cp <= 0x9f) {
            return 2;
        }
        i += more + 1;
    }
    return 0;
}

bool fsmResourceValid(const char *resource, size_t len, const char **message)
{
    const char *m = NULL;

    if (resource == NULL || len == 0) {
        m = "resource: empty (must be 1-512 bytes)";
    } else if (len > FSM_RESOURCE_MAX) {
        m = "resource: longer than 512 bytes";
    } else {
        switch (fsmTextCheck((const uint8_t *)resource, len)) {
        case 1:
            m = "resource: not valid UTF-8";
            break;
        case 2:
            m = "resource: contains a control character";
            break;
        default:
            break;
        }
    }
    if (message != NULL) {
        *message = m;
    }
    return m == NULL;
}

static const char *fsmHolderCheck(const char *s, size_t len)
{
    if (len > FSM_HOLDER_MAX) {
        return "holder: longer than 256 bytes";
    }
    switch (fsmTextCheck((const uint8_t *)s, len)) {
    case 1:
        return "holder: not valid UTF-8";
    case 2:
        return "holder: contains a control character";
    default:
        return NULL;
    }
}

static const char *fsmStr(const char *s)
{
    return s != NULL ? s : "";
}

static char *fsmStrdup(const char *s, size_t len)
{
    char *p = fsmAlloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static uint32_t fsmClampTtl(const struct fsm *f, uint32_t ttl)
{
    if (ttl < f->config.min_ttl_ms) {
        return f->config.min_ttl_ms;
    }
    if (ttl > f->config.max_ttl_ms) {
        return f->config.max_ttl_ms;
    }
    return ttl;
}

/* Keep a block that results may point to (a string, an ended session with
 * its holder name) alive until the next apply. */
static void fsmBury(struct fsm_impl *impl, void *s)
{
    if (impl->n_grave == impl->cap_grave) {
        size_t cap = impl->cap_grave > 0 ? impl->cap_grave * 2 : 16;
        impl->graveyard =
            fsmMust(realloc(impl->graveyard, cap * sizeof *impl->graveyard));
        impl->cap_grave = cap;
    }
    impl->graveyard[impl->n_grave++] = s;
}

static void fsmGraveyardFlush(struct fsm_impl *impl)
{
    for (size_t i = 0; i < impl->n_grave; i++) {
        free(impl->graveyard[i]);
    }
    impl->n_grave = 0;
}

/* ---------------------------------------------------------- comparisons */

static int cmpU64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int sessionCmp(const struct tn_avl_node *a, const struct tn_avl_node *b)
{
    return cmpU64(TN_AVL_DATA(a, struct session, node)->id,
                  TN_AVL_DATA(b, struct session, node)->id);
}

static int sessionKeyCmp(const void *key, const struct tn_avl_node *n)
{
    return cmpU64(*(const uint64_t *)key,
                  TN_AVL_DATA(n, struct session, node)->id);
}

struct nameKey
{
    const char *s;
    size_t len;
};

static int nameCmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = memcmp(a, b, n);

    if (c != 0) {
        return c;
    }
    return cmpU64(alen, blen);
}

static int lockCmp(const struct tn_avl_node *a, const struct tn_avl_node *b)
{
    const struct lock *la = TN_AVL_DATA(a, struct lock, node);
    const struct lock *lb = TN_AVL_DATA(b, struct lock, node);

    return nameCmp(la->name, la->len, lb->name, lb->len);
}

static int lockKeyCmp(const void *key, const struct tn_avl_node *n)
{
    const struct nameKey *k = key;
    const struct lock *l = TN_AVL_DATA(n, struct lock, node);

    return nameCmp(k->s, k->len, l->name, l->len);
}

static int holderCmp(const struct tn_avl_node *a, const struct tn_avl_node *b)
{
    return cmpU64(TN_AVL_DATA(a, struct holder, node)->token,
                  TN_AVL_DATA(b, struct holder, node)->token);
}

static int holderKeyCmp(const void *key, const struct tn_avl_node *n)
{
    return cmpU64(*(const uint64_t *)key,
                  TN_AVL_DATA(n, struct holder, node)->token);
}

static int timerCmp(const struct tn_avl_node *a, const struct tn_avl_node *b)
{
    const struct timer *ta = TN_AVL_DATA(a, struct timer, node);
    const struct timer *tb = TN_AVL_DATA(b, struct timer, node);

    if (ta->deadline != tb->deadline) {
        return cmpU64(ta->deadline, tb->deadline);
    }
    if (ta->kind != tb->kind) {
        return ta->kind < tb->kind ? -1 : 1;
    }
    return cmpU64(ta->tseq, tb->tseq);
}

static int tombCmp(const struct tn_avl_node *a, const struct tn_avl_node *b)
{
    return cmpU64(TN_AVL_DATA(a, struct tomb, node)->token,
                  TN_AVL_DATA(b, struct tomb, node)->token);
}

static int tombKeyCmp(const void *key, const struct tn_avl_node *n)
{
    return cmpU64(*(const uint64_t *)key,
                  TN_AVL_DATA(n, struct tomb, node)->token);
}

static int clientCmp(const struct tn_avl_node *a, const struct tn_avl_node *b)
{
    return cmpU64(TN_AVL_DATA(a, struct client, node)->id,
                  TN_AVL_DATA(b, struct client, node)->id);
}

static int clientKeyCmp(const void *key, const struct tn_avl_node *n)
{
    return cmpU64(*(const uint64_t *)key,
                  TN_AVL_DATA(n, struct client, node)->id);
}

/* --------------------------------------------------------------- events */

static void fsmEmit(struct fsm *f, struct fsm_event *e)
{
    e->index = f->impl->index;
    if (f->event_cb != NULL) {
        f->event_cb(f->data, e);
    }
}

static void fsmEmitSession(struct fsm *f,
                           enum fsm_event_type type,
                           const struct session *s)
{
    struct fsm_event e;

    memset(&e, 0, sizeof e);
    e.type = type;
    e.session = s->id;
    e.epoch = s->epoch;
    e.ttl_ms = s->ttl_ms;
    fsmEmit(f, &e);
}

/* A zeroed session whose holder name is @holder (NULL if out of memory). */
static struct session *sessionNew(const char *holder, size_t len)
{
    struct session *s = calloc(1, offsetof(struct session, holder) + len + 1);

    if (s != NULL) {
        memcpy(s->holder, holder, len);
        s->holder[len] = '\0';
    }
    return s;
}

/* --------------------------------------------------------------- lookup */

static struct session *sessionFind(const struct fsm_impl *impl, uint64_t id)
{
    struct tn_avl_node *n = tn_avl_find(&impl->sessions, &id, sessionKeyCmp);
    return n != NULL ? TN_AVL_DATA(n, struct session, node) : NULL;
}

static struct lock *lockFind(const struct fsm_impl *impl,
                             const char *name,
                             size_t len)
{
    struct nameKey k = { name, len };
    struct tn_avl_node *n = tn_avl_find(&impl->locks, &k, lockKeyCmp);
    return n != NULL ? TN_AVL_DATA(n, struct lock, node) : NULL;
}

static struct holder *holderByToken(const struct lock *l, uint64_t token)
{
    struct tn_avl_node *n = tn_avl_find(&l->holders, &token, holderKeyCmp);
    return n != NULL ? TN_AVL_DATA(n, struct holder, node) : NULL;
}

static struct holder *lockFirstHolder(const struct lock *l)
{
    struct tn_avl_node *n = tn_avl_first(&l->holders);
    return n != NULL ? TN_AVL_DATA(n, struct holder, node) : NULL;
}

/* The hold of @s on @l, if any: walks the shorter of the two lists. */
static struct holder *sessionHolder(const struct session *s,
                                    const struct lock *l)
{
    if (l->holders.count <= s->n_holds) {
        struct tn_avl_node *n;
        for (n = tn_avl_first(&l->holders); n != NULL; n = tn_avl_next(n)) {
            struct holder *h = TN_AVL_DATA(n, struct holder, node);
            if (h->session == s) {
                return h;
            }
        }
    } else {
        tn_queue *q;
        TN_QUEUE_FOREACH (q, &s->holds) {
            struct holder *h = TN_QUEUE_DATA(q, struct holder, session_link);
            if (h->lock == l) {
                return h;
            }
        }
    }
    return NULL;
}

static struct tomb *tombFind(const struct fsm_impl *impl,
                             uint64_t token,
                             const char *resource,
                             size_t len)
{
    struct tn_avl_node *n = tn_avl_find(&impl->tomb_index, &token, tombKeyCmp);
    struct tomb *t;

    if (n == NULL) {
        return NULL;
    }
    t = TN_AVL_DATA(n, struct tomb, node);
    if (nameCmp(t->resource, t->len, resource, len) != 0) {
        return NULL;
    }
    return t;
}

static struct client *clientFind(const struct fsm_impl *impl, uint64_t id)
{
    struct tn_avl_node *n = tn_avl_find(&impl->clients, &id, clientKeyCmp);
    return n != NULL ? TN_AVL_DATA(n, struct client, node) : NULL;
}

static struct centry *clientEntry(const struct client *c, uint64_t seq)
{
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->entries[i].seq == seq) {
            return &c->entries[i];
        }
    }
    return NULL;
}

/* The optional part of a lock, read as zeroes when it is absent. */
static uint64_t lockDelayUntil(const struct lock *l)
{
    return l->ext != NULL ? l->ext->delay_until : 0;
}

static uint32_t lockWaiters(const struct lock *l)
{
    return l->ext != NULL ? l->ext->n_waiters : 0;
}

static uint32_t lockPermits(const struct lock *l)
{
    return l->ext != NULL ? l->ext->permits : 0;
}

static uint32_t lockSemRefs(const struct lock *l)
{
    return l->ext != NULL ? l->ext->sem_refs : 0;
}

static struct waiter *lockFirstWaiter(const struct lock *l)
{
    if (l->ext == NULL || tn_queue_empty(&l->ext->waiters)) {
        return NULL;
    }
    return TN_QUEUE_DATA(tn_queue_head(&l->ext->waiters), struct waiter,
                         lock_link);
}

static bool lockDelayActive(const struct fsm_impl *impl, const struct lock *l)
{
    return lockDelayUntil(l) > impl->now;
}

/* ---------------------------------------------------------------- locks */

static void lockTouch(struct fsm_impl *impl, struct lock *l)
{
    l->modified_index = impl->index;
    if (l->dirty) {
        return;
    }
    if (impl->n_dirty == impl->cap_dirty) {
        size_t cap = impl->cap_dirty > 0 ? impl->cap_dirty * 2 : 16;
        impl->dirty = fsmMust(realloc(impl->dirty, cap * sizeof *impl->dirty));
        impl->cap_dirty = cap;
    }
    impl->dirty[impl->n_dirty++] = l;
    l->dirty = true;
}

/* A lock named @name (not in any tree yet), or NULL if out of memory. */
static struct lock *lockNew(const char *name, size_t len)
{
    struct lock *l = calloc(1, offsetof(struct lock, name) + len + 1);

    if (l == NULL) {
        return NULL;
    }
    memcpy(l->name, name, len);
    l->name[len] = '\0';
    l->len = (uint16_t)len;
    l->mode = TN__LOCK_MODE__EXCLUSIVE;
    tn_avl_init(&l->holders);
    return l;
}

static struct lock *lockCreate(struct fsm_impl *impl,
                               const char *name,
                               size_t len)
{
    struct lock *l = fsmMust(lockNew(name, len));

    fsmInsert(&impl->locks, &l->node, lockCmp);
    return l;
}

/* The optional part of @l, created if missing (NULL if out of memory). */
static struct lock_ext *lockExtNew(struct lock *l)
{
    if (l->ext == NULL) {
        l->ext = calloc(1, sizeof *l->ext);
        if (l->ext == NULL) {
            return NULL;
        }
        tn_queue_init(&l->ext->waiters);
    }
    return l->ext;
}

static struct lock_ext *lockExt(struct lock *l)
{
    return fsmMust(lockExtNew(l));
}

/* Free the optional part once nothing in it is in use. */
static void lockExtTrim(struct lock *l)
{
    struct lock_ext *x = l->ext;

    if (x != NULL && x->n_waiters == 0 && x->delay == NULL &&
        x->delay_until == 0 && x->sem_refs == 0 && x->permits == 0) {
        free(x);
        l->ext = NULL;
    }
}

/* A slot for a new hold of @l: the inline one if free (NULL if out of
 * memory). */
static struct holder *holderAlloc(struct lock *l)
{
    if (!l->first_used) {
        l->first_used = true;
        memset(&l->first, 0, sizeof l->first);
        return &l->first;
    }
    return calloc(1, sizeof(struct holder));
}

static void holderFree(struct holder *h)
{
    struct lock *l = h->lock;

    if (h == &l->first) {
        l->first_used = false;
    } else {
        free(h);
    }
}

static bool lockUnused(const struct fsm_impl *impl, const struct lock *l)
{
    return l->holders.count == 0 && lockWaiters(l) == 0 &&
           !lockDelayActive(impl, l);
}

static void lockDisarmDelay(struct fsm_impl *impl, struct lock *l)
{
    if (l->ext != NULL && l->ext->delay != NULL) {
        tn_avl_remove(&impl->timers, &l->ext->delay->node);
        free(l->ext->delay);
        l->ext->delay = NULL;
    }
}

static void lockFree(struct fsm_impl *impl, struct lock *l)
{
    lockDisarmDelay(impl, l);
    tn_avl_remove(&impl->locks, &l->node);
    free(l->ext);
    free(l);
}

static void lockSemRef(struct lock *l, int mode, uint32_t permits)
{
    if (mode == TN__LOCK_MODE__SEMAPHORE) {
        struct lock_ext *x = lockExt(l);
        if (x->sem_refs++ == 0) {
            x->permits = permits;
        }
    }
}

static void lockSemUnref(struct lock *l, int mode)
{
    if (mode == TN__LOCK_MODE__SEMAPHORE && --l->ext->sem_refs == 0) {
        l->ext->permits = 0;
    }
}

/* Can a request of this mode join the current holders? */
static bool lockCompatible(const struct lock *l, int mode, uint32_t permits)
{
    if (l->holders.count == 0) {
        return true;
    }
    switch (l->mode) {
    case TN__LOCK_MODE__SHARED:
        return mode == TN__LOCK_MODE__SHARED;
    case TN__LOCK_MODE__SEMAPHORE:
        return mode == TN__LOCK_MODE__SEMAPHORE &&
               permits == lockPermits(l) && l->holders.count < lockPermits(l);
    default:
        return false;
    }
}

/* Who is in the way: fill the conflict fields of @r from @l. */
static void lockFillConflict(const struct fsm_impl *impl,
                             const struct lock *l,
                             struct fsm_result *r)
{
    const struct holder *h;

    if (l == NULL) {
        return;
    }
    h = lockFirstHolder(l);
    if (h != NULL) {
        r->holder_session = h->session->id;
        r->holder = h->session->holder;
        r->holder_token = h->token;
        r->acquired_at_ms = h->acquired_at;
        r->holder_ttl_ms = h->session->ttl_ms;
    }
    r->queue_len = lockWaiters(l);
    r->lock_delay_until_ms = lockDelayActive(impl, l) ? lockDelayUntil(l) : 0;
}

static void lockEnsureViews(struct fsm_impl *impl, size_t n)
{
    if (n > impl->cap_views) {
        size_t cap = impl->cap_views > 0 ? impl->cap_views : 8;
        while (cap < n) {
            cap *= 2;
        }
        impl->views = fsmMust(realloc(impl->views, cap * sizeof *impl->views));
        impl->cap_views = cap;
    }
}

/* -------------------------------------------------------------- clients */

static void clientTouch(struct fsm_impl *impl, struct client *c)
{
    c->last_active = impl->now;
    tn_queue_remove(&c->lru);
    tn_queue_insert_tail(&impl->client_lru, &c->lru);
}

static void clientFree(struct client *c)
{
    free(c->entries);
    free(c);
}

static struct client *clientGet(struct fsm *f, uint64_t id)
{
    struct fsm_impl *impl = f->impl;
    struct client *c = clientFind(impl, id);

    if (c == NULL) {
        c = fsmZalloc(sizeof *c);
        c->id = id;
        tn_queue_init(&c->lru);
        fsmInsert(&impl->clients, &c->node, clientCmp);
    }
    clientTouch(impl, c);
    return c;
}

static void clientFillEntry(struct centry *e, const struct fsm_result *r)
{
    e->session = r->session;
    e->epoch = r->epoch;
    e->token = r->token;
    e->generation = r->generation;
    e->ttl_ms = r->ttl_ms;
    e->status = (uint8_t)r->status;
    e->mode = (uint8_t)r->mode;
}

/* Remember the reply to (c, seq); the window keeps the highest seqs. */
static void clientRecord(struct fsm *f,
                         struct client *c,
                         uint64_t seq,
                         int kind,
                         const struct fsm_result *r)
{
    uint32_t window = f->config.client_window;
    struct centry *e;

    if (c->n == window) {
        uint32_t lowest = 0;
        for (uint32_t i = 1; i < c->n; i++) {
            if (c->entries[i].seq < c->entries[lowest].seq) {
                lowest = i;
            }
        }
        if (seq < c->entries[lowest].seq) {
            c->floor = fsmMax(c->floor, seq);
            return;
        }
        e = &c->entries[lowest];
        c->floor = fsmMax(c->floor, e->seq);
        if (e->pending) {
            c->pending--;
        }
    } else {
        if (c->n == c->cap) {
            uint32_t cap = c->cap > 0 ? c->cap * 2 : 4;
            if (cap > window) {
                cap = window;
            }
            c->entries = fsmMust(realloc(c->entries, cap * sizeof *e));
            c->cap = cap;
        }
        e = &c->entries[c->n++];
    }
    memset(e, 0, sizeof *e);
    e->seq = seq;
    clientFillEntry(e, r);
    e->pending = r->queued ? 1 : 0;
    e->kind = (uint8_t)kind;
    if (e->pending) {
        c->pending++;
    }
}

/* A queued acquire finished: fill its remembered reply. */
static void clientComplete(struct fsm *f,
                           uint64_t id,
                           uint64_t seq,
                           const struct fsm_result *r)
{
    struct client *c;
    struct centry *e;

    if (id == 0 || f->config.client_window == 0) {
        return;
    }
    c = clientFind(f->impl, id);
    if (c == NULL) {
        return;
    }
    e = clientEntry(c, seq);
    if (e != NULL && e->pending) {
        clientFillEntry(e, r);
        e->pending = 0;
        c->pending--;
    }
    clientTouch(f->impl, c);
}

/* Drop the clients idle for longer than client_ttl_ms. A client with a
 * queued acquire is kept (touched) until it completes. */
static void clientsExpire(struct fsm *f)
{
    struct fsm_impl *impl = f->impl;

    while (!tn_queue_empty(&impl->client_lru)) {
        struct client *c =
            TN_QUEUE_DATA(tn_queue_head(&impl->client_lru), struct client, lru);
        if (impl->now - c->last_active <= f->config.client_ttl_ms) {
            break;
        }
        if (c->pending > 0) {
            clientTouch(impl, c);
            continue;
        }
        tn_queue_remove(&c->lru);
        tn_avl_remove(&impl->clients, &c->node);
        clientFree(c);
    }
}

/* ----------------------------------------------------------- tombstones */

static void tombFree(struct tomb *t)
{
    free(t->resource);
    free(t->holder);
    free(t);
}

static void tombPush(struct fsm *f,
                     uint64_t token,
                     const struct session *s,
                     const struct lock *l,
                     int kind)
{
    struct fsm_impl *impl = f->impl;
    uint32_t max = f->config.tombstones;
    struct tomb *t;

    if (max == 0) {
        return;
    }
    t = fsmAlloc(sizeof *t);
    t->token = token;
    t->session = s->id;
    t->ended_at = impl->now;
    t->holder = fsmStrdup(s->holder, strlen(s->holder));
    t->resource = fsmStrdup(l->name, l->len);
    t->len = l->len;
    t->kind = (uint8_t)kind;
    if (tn_avl_insert(&impl->tomb_index, &t->node, tombCmp) != NULL) {
        /* Tokens are unique: cannot happen. */
        tombFree(t);
        return;
    }
    if (impl->ring_count == max) {
        struct tomb *old = impl->ring[impl->ring_head];
        tn_avl_remove(&impl->tomb_index, &old->node);
        tombFree(old);
        impl->ring[impl->ring_head] = t;
        impl->ring_head = (impl->ring_head + 1) % max;
        return;
    }
    if (impl->ring_count == impl->ring_cap) {
        uint32_t cap = impl->ring_cap > 0 ? impl->ring_cap * 2 : 64;
        if (cap > max) {
            cap = max;
        }
        impl->ring = fsmMust(realloc(impl->ring, cap * sizeof *impl->ring));
        impl->ring_cap = cap;
    }
    /* Until the ring is full nothing was evicted, so ring_head is 0. */
    impl->ring[impl->ring_count++] = t;
}

/* -------------------------------------------------------------- holders */

static struct holder *holderAdd(struct fsm *f,
                                struct lock *l,
                                struct session *s,
                                int mode,
                                uint32_t permits,
                                uint32_t lock_delay_ms,
                                struct fsm_result *r)
{
    struct fsm_impl *impl = f->impl;
    struct holder *h = fsmMust(holderAlloc(l));

    h->token = fsmNextId(impl->last_token, impl->index);
    impl->last_token = h->token;
    h->lock = l;
    h->session = s;
    h->acquired_at = impl->now;
    h->lock_delay_ms = lock_delay_ms;
    if (l->holders.count == 0) {
        l->mode = (uint8_t)mode;
    }
    lockSemRef(l, mode, permits);
    fsmInsert(&l->holders, &h->node, holderCmp);
    tn_queue_insert_tail(&s->holds, &h->session_link);
    s->n_holds++;
    l->generation++;
    l->last_token = h->token;
    impl->n_holders++;
    impl->stats.grants++;
    lockEnsureViews(impl, l->holders.count);
    lockTouch(impl, l);

    memset(r, 0, sizeof *r);
    r->status = TN__STATUS__OK;
    r->session = s->id;
    r->epoch = s->epoch;
    r->ttl_ms = s->ttl_ms;
    r->token = h->token;
    r->generation = l->generation;
    r->mode = mode;
    return h;
}

/* Free a hold. @kind says how it ended (tombstone); an expiry starts the
 * lock-delay the holder asked for. */
static void holderRemove(struct fsm *f, struct holder *h, int kind)
{
    struct fsm_impl *impl = f->impl;
    struct lock *l = h->lock;
    struct session *s = h->session;

    if (kind == TOMB_EXPIRED && h->lock_delay_ms > 0) {
        uint64_t until = fsmAddSat(impl->now, h->lock_delay_ms);
        if (until > lockDelayUntil(l)) {
            struct lock_ext *x = lockExt(l);
            lockDisarmDelay(impl, l);
            x->delay = fsmZalloc(sizeof *x->delay);
            x->delay->deadline = until;
            x->delay->kind = TIMER_DELAY;
            x->delay->tseq = impl->next_tseq++;
            x->delay->owner = l;
            fsmInsert(&impl->timers, &x->delay->node, timerCmp);
            x->delay_until = until;
        }
    }
    tombPush(f, h->token, s, l, kind);
    tn_avl_remove(&l->holders, &h->node);
    tn_queue_remove(&h->session_link);
    s->n_holds--;
    lockSemUnref(l, l->mode);
    if (l->holders.count == 0) {
        l->mode = TN__LOCK_MODE__EXCLUSIVE;
    }
    impl->n_holders--;
    if (kind == TOMB_RELEASED) {
        impl->stats.releases++;
    }
    lockTouch(impl, l);
    holderFree(h);
}

static void fsmResultHolder(const struct holder *h, struct fsm_result *r)
{
    r->status = TN__STATUS__OK;
    r->session = h->session->id;
    r->epoch = h->session->epoch;
    r->ttl_ms = h->session->ttl_ms;
    r->token = h->token;
    r->generation = h->lock->generation;
    r->mode = h->lock->mode;
    r->acquired_at_ms = h->acquired_at; /* hold-time metrics on release */
}

/* -------------------------------------------------------------- waiters */

/* A result written earlier in this batch that says "queued" for @w gets its
 * final outcome, so that a batch's results are final as of its end (the
 * caller registers waiters only after fsmApply returns and would miss this
 * WAIT_DONE). Both the command that queued it and retries of it (same
 * client_id and seq, answered from the reply table) are rewritten. */
static void waiterFinalizeBatch(struct fsm_impl *impl,
                                const struct waiter *w,
                                const struct fsm_result *r)
{
    for (size_t i = 0; i < impl->cur_done && impl->cur_queued > 0; i++) {
        struct fsm_result *slot = &impl->cur_results[i];
        const Tn__Command *c = impl->cur_batch->commands[i];
        bool mine;

        if (!slot->queued) {
            continue;
        }
        mine = w->origin_apply == impl->applies && w->origin_slot == i;
        if (!mine && w->client_id != 0 && c != NULL) {
            mine = c->client_id == w->client_id && c->seq == w->seq;
        }
        if (mine) {
            bool replayed = slot->replayed;
            *slot = *r;
            slot->queued = false;
            slot->replayed = replayed || r->replayed;
            impl->cur_queued--;
        }
    }
}

/* Take @w out of every structure, record and announce its outcome. */
static void waiterFinish(struct fsm *f,
                         struct waiter *w,
                         const struct fsm_result *r)
{
    struct fsm_impl *impl = f->impl;
    struct lock *l = w->lock;
    struct fsm_event e;

    tn_avl_remove(&impl->timers, &w->timer.node);
    tn_queue_remove(&w->lock_link);
    tn_queue_remove(&w->session_link);
    l->ext->n_waiters--;
    w->session->n_waits--;
    lockSemUnref(l, w->mode);
    impl->n_waiters--;
    lockTouch(impl, l);
    clientComplete(f, w->client_id, w->seq, r);
    if (impl->cur_results != NULL && impl->cur_queued > 0) {
        waiterFinalizeBatch(impl, w, r);
    }

    memset(&e, 0, sizeof e);
    e.type = FSM_EVENT_WAIT_DONE;
    e.session = w->session->id;
    e.epoch = w->session->epoch;
    e.ttl_ms = w->session->ttl_ms;
    e.client_id = w->client_id;
    e.seq = w->seq;
    e.result = r;
    e.resource = l->name;
    e.resource_len = l->len;
    fsmEmit(f, &e);
    free(w);
}

static void sessionEnd(struct fsm *f, struct session *s, bool expired);

static void sessionMaybeEndEphemeral(struct fsm *f, struct session *s)
{
    if (s->ephemeral && !s->ending && s->n_holds == 0 && s->n_waits == 0) {
        sessionEnd(f, s, false);
    }
}

/* The session of @granted just got @l: settle its other waiters on @l. */
static void waiterSettleDuplicates(struct fsm *f,
                                   struct session *s,
                                   struct lock *l,
                                   const struct holder *h)
{
    tn_queue *q = tn_queue_head(&s->waits);

    while (q != &s->waits) {
        struct waiter *w = TN_QUEUE_DATA(q, struct waiter, session_link);
        q = q->next;
        if (w->lock == l) {
            struct fsm_result r;
            memset(&r, 0, sizeof r);
            if (w->mode == l->mode && (w->mode != TN__LOCK_MODE__SEMAPHORE ||
                                       w->permits == lockPermits(l))) {
                fsmResultHolder(h, &r);
                r.replayed = true;
            } else {
                r.status = TN__STATUS__INVALID_ARGUMENT;
                r.session = s->id;
                r.message =
                    "mode: lock already held by this session in "
                    "another mode";
            }
            waiterFinish(f, w, &r);
        }
    }
}

/* Hand @l to the waiters at the head of its queue, in FIFO order, as long
 * as they fit. */
static void lockGrantWaiters(struct fsm *f, struct lock *l)
{
    struct fsm_impl *impl = f->impl;

    if (lockDelayActive(impl, l)) {
        return;
    }
    while (lockFirstWaiter(l) != NULL) {
        struct waiter *w = lockFirstWaiter(l);
        struct session *s = w->session;
        struct holder *h;
        struct fsm_result r;

        if (!lockCompatible(l, w->mode, w->permits)) {
            break;
        }
        h = holderAdd(f, l, s, w->mode, w->permits, w->lock_delay_ms, &r);
        waiterFinish(f, w, &r);
        waiterSettleDuplicates(f, s, l, h);
    }
}

/* Run the hand-offs of every lock changed since the last call, announce the
 * changes and forget locks that became free. */
static void fsmSettle(struct fsm *f)
{
    struct fsm_impl *impl = f->impl;
    size_t i;

    /* Grants only touch the lock being processed, which is already dirty,
     * so the list does not grow while we walk it. */
    for (i = 0; i < impl->n_dirty; i++) {
        lockGrantWaiters(f, impl->dirty[i]);
    }
    for (i = 0; i < impl->n_dirty; i++) {
        struct lock *l = impl->dirty[i];
        struct fsm_event e;

        l->dirty = false;
        memset(&e, 0, sizeof e);
        e.type = FSM_EVENT_LOCK_CHANGE;
        e.resource = l->name;
        e.resource_len = l->len;
        fsmEmit(f, &e);
        if (lockUnused(impl, l)) {
            lockFree(impl, l);
        } else {
            lockExtTrim(l);
        }
    }
    impl->n_dirty = 0;
}

/* ------------------------------------------------------------- sessions */

static struct session *sessionCreate(struct fsm *f,
                                     const char *holder,
                                     size_t len,
                                     uint32_t ttl_ms,
                                     bool ephemeral)
{
    struct fsm_impl *impl = f->impl;
    struct session *s = fsmMust(sessionNew(holder, len));

    s->id = fsmNextId(impl->last_session, impl->index);
    impl->last_session = s->id;
    s->epoch = 1;
    s->created_at = impl->now;
    s->ttl_ms = fsmClampTtl(f, ttl_ms);
    s->ephemeral = ephemeral;
    tn_queue_init(&s->holds);
    tn_queue_init(&s->waits);
    fsmInsert(&impl->sessions, &s->node, sessionCmp);
    fsmEmitSession(f, FSM_EVENT_SESSION_OPEN, s);
    return s;
}

/* End @s: drop its queued acquires, free its locks (by expiry: lock-delay
 * applies, tombstones say "expired"; else a clean release), forget it. */
static void sessionEnd(struct fsm *f, struct session *s, bool expired)
{
    struct fsm_impl *impl = f->impl;

    s->ending = true;
    while (!tn_queue_empty(&s->waits)) {
        struct waiter *w = TN_QUEUE_DATA(tn_queue_head(&s->waits),
                                         struct waiter, session_link);
        struct fsm_result r;
        memset(&r, 0, sizeof r);
        r.status = TN__STATUS__SESSION_EXPIRED;
        r.session = s->id;
        r.epoch = s->epoch;
        r.mode = w->mode;
        r.message = expired ? "session expired while waiting"
                            : "session closed while waiting";
        waiterFinish(f, w, &r);
    }
    while (!tn_queue_empty(&s->holds)) {
        struct holder *h = TN_QUEUE_DATA(tn_queue_head(&s->holds),
                                         struct holder, session_link);
        holderRemove(f, h, expired ? TOMB_EXPIRED : TOMB_RELEASED);
    }
    tn_avl_remove(&impl->sessions, &s->node);
    fsmEmitSession(f, FSM_EVENT_SESSION_END, s);
    /* Results may still point to its holder name: keep it until the next
     * apply. */
    fsmBury(impl, s);
}

static void sessionRenew(struct fsm *f, struct session *s, uint32_t ttl_ms)
{
    if (ttl_ms > 0) {
        s->ttl_ms = fsmClampTtl(f, ttl_ms);
    }
    s->epoch++;
    fsmEmitSession(f, FSM_EVENT_SESSION_RENEW, s);
}

static void fsmResultSession(const struct session *s, struct fsm_result *r)
{
    r->status = TN__STATUS__OK;
    r->session = s->id;
    r->epoch = s->epoch;
    r->ttl_ms = s->ttl_ms;
}

/* --------------------------------------------------------------- timers */

static void fsmRunTimers(struct fsm *f)
{
    struct fsm_impl *impl = f->impl;
    struct tn_avl_node *n;

    while ((n = tn_avl_first(&impl->timers)) != NULL) {
        struct timer *t = TN_AVL_DATA(n, struct timer, node);
        if (t->deadline > impl->now) {
            break;
        }
        if (t->kind == TIMER_DELAY) {
            struct lock *l = t->owner;
            lockDisarmDelay(impl, l);
            l->ext->delay_until = 0;
            lockTouch(impl, l);
        } else {
            struct waiter *w = TN_AVL_DATA(n, struct waiter, timer.node);
            struct lock *l = w->lock;
            struct session *s = w->session;
            struct fsm_result r;

            memset(&r, 0, sizeof r);
            lockFillConflict(impl, l, &r);
            r.queue_len--; /* not counting itself */
            r.session = s->id;
            r.epoch = s->epoch;
            r.ttl_ms = s->ttl_ms;
            r.mode = w->mode;
            if (l->holders.count == 0 && lockDelayActive(impl, l)) {
                r.status = TN__STATUS__LOCK_DELAY;
                r.message = "wait ran out during the lock-delay";
                impl->stats.lock_delay_hits++;
            } else {
                r.status = TN__STATUS__HELD;
                r.message = "wait ran out";
            }
            waiterFinish(f, w, &r);
            sessionMaybeEndEphemeral(f, s);
        }
        fsmSettle(f);
    }
}

/* ------------------------------------------------------------- commands */

static void fsmInvalid(struct fsm_result *r, const char *message)
{
    r->status = TN__STATUS__INVALID_ARGUMENT;
    r->message = message;
}

static void cmdSessionOpen(struct fsm *f,
                           const Tn__SessionOpen *c,
                           struct fsm_result *r)
{
    const char *holder = fsmStr(c->holder);
    size_t len = strlen(holder);
    const char *bad = fsmHolderCheck(holder, len);
    struct session *s;

    if (bad != NULL) {
        fsmInvalid(r, bad);
        return;
    }
    s = sessionCreate(f, holder, len, c->ttl_ms, false);
    fsmResultSession(s, r);
}

static void cmdKeepalive(struct fsm *f,
                         const Tn__SessionKeepalive *c,
                         struct fsm_result *r)
{
    struct session *s = sessionFind(f->impl, c->session);

    if (s == NULL) {
        r->status = TN__STATUS__SESSION_EXPIRED;
        r->session = c->session;
        r->message = "session: not found (expired or closed)";
        return;
    }
    sessionRenew(f, s, 0);
    fsmResultSession(s, r);
}

static void cmdSessionClose(struct fsm *f,
                            const Tn__SessionClose *c,
                            struct fsm_result *r)
{
    struct session *s = sessionFind(f->impl, c->session);

    if (s == NULL) {
        r->status = TN__STATUS__SESSION_EXPIRED;
        r->session = c->session;
        r->message = "session: not found (expired or closed)";
        return;
    }
    fsmResultSession(s, r);
    sessionEnd(f, s, false);
}

/* Expiry decided by a leader. Ignored (INVALID_ARGUMENT, nothing changes)
 * when proposed in a term older than one already applied (a deposed
 * leader) or when the session was renewed since (epoch differs); then the
 * result carries the session's current epoch and TTL so the leader can
 * re-arm its deadline. SESSION_EXPIRED if the session is already gone. */
static void cmdSessionExpire(struct fsm *f,
                             const Tn__SessionExpire *c,
                             struct fsm_result *r)
{
    struct fsm_impl *impl = f->impl;
    struct session *s = sessionFind(impl, c->session);

    if (s == NULL) {
        r->status = TN__STATUS__SESSION_EXPIRED;
        r->session = c->session;
        r->message = "session: not found (expired or closed)";
        return;
    }
    fsmResultSession(s, r);
    if (impl->stale_term) {
        fsmInvalid(r, "term: expiry proposed by a deposed leader; ignored");
        return;
    }
    if (c->epoch != s->epoch) {
        fsmInvalid(r, "epoch: session renewed since; expiry ignored");
        return;
    }
    impl->stats.expiries++;
    sessionEnd(f, s, true);
}

static void cmdAcquire(struct fsm *f,
                       const Tn__Command *cmd,
                       struct fsm_result *r)
{
    const Tn__Acquire *c = cmd->acquire;
    struct fsm_impl *impl = f->impl;
    const char *name = fsmStr(c->resource);
    size_t len = strlen(name);
    const char *bad;
    int mode = (int)c->mode;
    uint32_t permits = 0;
    uint32_t wait_ms;
    uint32_t lock_delay_ms;
    struct session *s = NULL;
    struct lock *l;
    bool grant;

    if (!fsmResourceValid(name, len, &bad)) {
        fsmInvalid(r, bad);
        return;
    }
    if (mode != TN__LOCK_MODE__EXCLUSIVE && mode != TN__LOCK_MODE__SHARED &&
        mode != TN__LOCK_MODE__SEMAPHORE) {
        fsmInvalid(r, "mode: unknown lock mode");
        return;
    }
    if (mode == TN__LOCK_MODE__SEMAPHORE) {
        permits = c->permits;
        if (permits == 0) {
            fsmInvalid(r, "permits: a semaphore needs at least 1 permit");
            return;
        }
    }
    r->mode = mode;
    if (c->session != 0) {
        s = sessionFind(impl, c->session);
        if (s == NULL) {
            r->status = TN__STATUS__SESSION_EXPIRED;
            r->session = c->session;
            r->message = "session: not found (expired or closed)";
            return;
        }
    } else {
        if (c->ttl_ms == 0) {
            fsmInvalid(r,
                       "session: give a session, or ttl_ms (and holder) "
                       "for a session of this lock only");
            return;
        }
        bad = fsmHolderCheck(fsmStr(c->holder), strlen(fsmStr(c->holder)));
        if (bad != NULL) {
            fsmInvalid(r, bad);
            return;
        }
    }

    l = lockFind(impl, name, len);
    if (l != NULL && s != NULL) {
        struct holder *h = sessionHolder(s, l);
        if (h != NULL) {
            if (l->mode != mode ||
                (mode == TN__LOCK_MODE__SEMAPHORE &&
                 permits != lockPermits(l))) {
                fsmInvalid(r,
                           "mode: lock already held by this session in "
                           "another mode");
                r->session = s->id;
                return;
            }
            fsmResultHolder(h, r);
            r->replayed = true;
            return;
        }
    }
    if (l != NULL && mode == TN__LOCK_MODE__SEMAPHORE && lockSemRefs(l) > 0 &&
        permits != lockPermits(l)) {
        fsmInvalid(r, "permits: differs from the semaphore's permits");
        return;
    }

    wait_ms =
        c->wait_ms < f->config.max_wait_ms ? c->wait_ms : f->config.max_wait_ms;
    lock_delay_ms = c->lock_delay_ms < f->config.max_lock_delay_ms
                        ? c->lock_delay_ms
                        : f->config.max_lock_delay_ms;
    if (l != NULL && lockDelayActive(impl, l)) {
        if (wait_ms == 0 || fsmAddSat(impl->now, wait_ms) < lockDelayUntil(l)) {
            r->status = TN__STATUS__LOCK_DELAY;
            r->message = "lock-delay: freed by expiry, not yet available";
            r->session = s != NULL ? s->id : 0;
            lockFillConflict(impl, l, r);
            impl->stats.lock_delay_hits++;
            return;
        }
        grant = false;
    } else {
        grant = l == NULL || (lockFirstWaiter(l) == NULL &&
                              lockCompatible(l, mode, permits));
        if (!grant && wait_ms == 0) {
            r->status = TN__STATUS__HELD;
            r->message = "held";
            r->session = s != NULL ? s->id : 0;
            lockFillConflict(impl, l, r);
            impl->stats.conflicts++;
            return;
        }
    }

    if (s == NULL) {
        const char *holder = fsmStr(c->holder);
        s = sessionCreate(f, holder, strlen(holder), c->ttl_ms, true);
    }
    if (l == NULL) {
        l = lockCreate(impl, name, len);
    }
    if (grant) {
        holderAdd(f, l, s, mode, permits, lock_delay_ms, r);
        return;
    }

    /* Queue it. */
    {
        struct waiter *w = fsmZalloc(sizeof *w);
        w->lock = l;
        w->session = s;
        w->mode = (uint8_t)mode;
        w->permits = permits;
        w->lock_delay_ms = lock_delay_ms;
        w->client_id = cmd->client_id;
        w->seq = cmd->seq;
        w->origin_apply = impl->applies;
        w->origin_slot = impl->cur_slot;
        w->timer.kind = TIMER_WAIT;
        w->timer.deadline = fsmAddSat(impl->now, wait_ms);
        w->timer.tseq = impl->next_tseq++;
        fsmInsert(&impl->timers, &w->timer.node, timerCmp);
        tn_queue_insert_tail(&lockExt(l)->waiters, &w->lock_link);
        tn_queue_insert_tail(&s->waits, &w->session_link);
        l->ext->n_waiters++;
        s->n_waits++;
        lockSemRef(l, mode, permits);
        impl->n_waiters++;
        if (!lockDelayActive(impl, l)) {
            impl->stats.conflicts++;
        }
        lockTouch(impl, l);

        r->status = TN__STATUS__OK;
        r->queued = true;
        r->session = s->id;
        r->epoch = s->epoch;
        r->ttl_ms = s->ttl_ms;
        r->mode = mode;
        lockFillConflict(impl, l, r);
    }
}

/* The outcome for a token that is not (or no longer) held on @l. */
static void fsmTokenGone(struct fsm *f,
                         struct lock *l,
                         const char *name,
                         size_t len,
                         uint64_t token,
                         bool release,
                         struct fsm_result *r)
{
    struct fsm_impl *impl = f->impl;
    struct tomb *t = tombFind(impl, token, name, len);

    r->token = token;
    if (t != NULL) {
        r->session = t->session;
        if (t->kind == TOMB_RELEASED) {
            if (release) {
                r->status = TN__STATUS__OK;
                r->replayed = true;
            } else {
                r->status = TN__STATUS__LEASE_EXPIRED;
                r->message = "token: the lock was released";
            }
        } else {
            r->status = TN__STATUS__LEASE_EXPIRED;
            r->message = "token: the lease expired before this request";
            r->late = true;
            r->ended_at_ms = t->ended_at;
            r->late_holder = t->holder;
            impl->stats.late_requests++;
        }
        return;
    }
    if (l != NULL && l->holders.count > 0) {
        r->status = TN__STATUS__TOKEN_MISMATCH;
        r->message = "token: the lock is held under another token";
        lockFillConflict(impl, l, r);
        return;
    }
    if (token > impl->last_token) {
        fsmInvalid(r, "token: never granted");
        return;
    }
    r->status = TN__STATUS__LEASE_EXPIRED;
    r->message = "token: not held (ended too long ago to say how)";
    if (l != NULL) {
        lockFillConflict(impl, l, r);
    }
}

/* Withdraw a queued acquire whose requester went away: it ends with
 * CANCELED (also in the reply table) and the queue moves on. The waiter is
 * named by (client_id, seq), and by its session unless that is 0. NOT_FOUND
 * if it is no longer queued (granted, timed out, ended). */
static void cmdWithdraw(struct fsm *f,
                        const Tn__Withdraw *c,
                        struct fsm_result *r)
{
    const char *name = fsmStr(c->resource);
    size_t len = strlen(name);
    struct lock *l = fsmResourceValid(name, len, NULL)
                         ? lockFind(f->impl, name, len)
                         : NULL;
    tn_queue *q;

    if (l != NULL && l->ext != NULL) {
        TN_QUEUE_FOREACH (q, &l->ext->waiters) {
            struct waiter *w = TN_QUEUE_DATA(q, struct waiter, lock_link);
            if ((c->session == 0 || w->session->id == c->session) &&
                w->client_id == c->client_id && w->seq == c->seq) {
                struct session *s = w->session;
                struct fsm_result wr;
                memset(&wr, 0, sizeof wr);
                wr.status = TN__STATUS__CANCELED;
                wr.message = "withdrawn: the requester went away";
                wr.session = s->id;
                wr.epoch = s->epoch;
                wr.ttl_ms = s->ttl_ms;
                wr.mode = w->mode;
                waiterFinish(f, w, &wr);
                sessionMaybeEndEphemeral(f, s);
                r->status = TN__STATUS__OK;
                r->session = c->session;
                return;
            }
        }
    }
    r->status = TN__STATUS__NOT_FOUND;
    r->message = "withdraw: not queued (granted, ended or never queued)";
}

/* Release and renew name a hold by (resource, token): check both, then
 * find the lock and the hold (either may be NULL). Returns false, with @r
 * set, for invalid input. */
static bool tokenLookup(struct fsm *f,
                        const char *name,
                        uint64_t token,
                        struct fsm_result *r,
                        struct lock **l,
                        struct holder **h)
{
    size_t len = strlen(name);
    const char *bad;

    if (!fsmResourceValid(name, len, &bad)) {
        fsmInvalid(r, bad);
        return false;
    }
    if (token == 0) {
        fsmInvalid(r, "token: required");
        return false;
    }
    *l = lockFind(f->impl, name, len);
    *h = *l != NULL ? holderByToken(*l, token) : NULL;
    return true;
}

static void cmdRelease(struct fsm *f,
                       const Tn__Release *c,
                       struct fsm_result *r)
{
    const char *name = fsmStr(c->resource);
    struct lock *l;
    struct holder *h;

    if (!tokenLookup(f, name, c->token, r, &l, &h)) {
        return;
    }
    if (h != NULL) {
        struct session *s = h->session;
        fsmResultHolder(h, r);
        holderRemove(f, h, TOMB_RELEASED);
        sessionMaybeEndEphemeral(f, s);
        return;
    }
    fsmTokenGone(f, l, name, strlen(name), c->token, true, r);
}

static void cmdRenew(struct fsm *f, const Tn__Renew *c, struct fsm_result *r)
{
    const char *name = fsmStr(c->resource);
    struct lock *l;
    struct holder *h;

    if (!tokenLookup(f, name, c->token, r, &l, &h)) {
        return;
    }
    if (h != NULL) {
        sessionRenew(f, h->session, c->ttl_ms);
        fsmResultHolder(h, r);
        return;
    }
    fsmTokenGone(f, l, name, strlen(name), c->token, false, r);
}

static void memberSet(char **slot, const char *s)
{
    char *copy = fsmStrdup(s, strlen(s));
    free(*slot);
    *slot = copy;
}

static void cmdMember(struct fsm *f,
                      const Tn__MemberInfo *c,
                      struct fsm_result *r)
{
    struct fsm_impl *impl = f->impl;
    const char *fields[3] = { fsmStr(c->raft_address), fsmStr(c->rpc_address),
                              fsmStr(c->http_address) };
    struct member *m = NULL;
    size_t i;

    if (c->id == 0) {
        fsmInvalid(r, "id: member ids start at 1");
        return;
    }
    for (i = 0; i < 3; i++) {
        size_t len = strlen(fields[i]);
        if (len > FSM_ADDRESS_MAX ||
            fsmTextCheck((const uint8_t *)fields[i], len) != 0) {
            fsmInvalid(r, "address: too long or not printable UTF-8");
            return;
        }
    }
    for (i = 0; i < impl->n_members; i++) {
        if (impl->members[i].id >= c->id) {
            break;
        }
    }
    if (i == impl->n_members || impl->members[i].id != c->id) {
        impl->members = fsmMust(realloc(
            impl->members, (impl->n_members + 1) * sizeof *impl->members));
        memmove(&impl->members[i + 1], &impl->members[i],
                (impl->n_members - i) * sizeof *impl->members);
        impl->n_members++;
        m = &impl->members[i];
        memset(m, 0, sizeof *m);
        m->id = c->id;
    } else {
        m = &impl->members[i];
    }
    memberSet(&m->raft, fields[0]);
    memberSet(&m->rpc, fields[1]);
    memberSet(&m->http, fields[2]);
    r->status = TN__STATUS__OK;
}

static void cmdRestore(struct fsm *f,
                       const Tn__SnapshotRestore *c,
                       struct fsm_result *r);

static const char *cmdResource(const Tn__Command *c)
{
    switch (c->body_case) {
    case TN__COMMAND__BODY_ACQUIRE:
        return c->acquire != NULL ? fsmStr(c->acquire->resource) : "";
    case TN__COMMAND__BODY_RELEASE:
        return c->release != NULL ? fsmStr(c->release->resource) : "";
    case TN__COMMAND__BODY_RENEW:
        return c->renew != NULL ? fsmStr(c->renew->resource) : "";
    default:
        return "";
    }
}

/* Answer a retried command from its remembered reply. */
static void fsmReplay(struct fsm *f,
                      const Tn__Command *c,
                      const struct centry *e,
                      struct fsm_result *r)
{
    const char *name = cmdResource(c);
    struct lock *l;

    r->status = e->status;
    r->replayed = true;
    r->queued = e->pending != 0;
    r->session = e->session;
    r->epoch = e->epoch;
    r->ttl_ms = e->ttl_ms;
    r->token = e->token;
    r->generation = e->generation;
    r->mode = e->mode;
    if (r->queued || r->status == TN__STATUS__HELD ||
        r->status == TN__STATUS__LOCK_DELAY ||
        r->status == TN__STATUS__TOKEN_MISMATCH) {
        /* Who is in the way now. */
        l = name[0] != '\0' ? lockFind(f->impl, name, strlen(name)) : NULL;
        lockFillConflict(f->impl, l, r);
    }
}

static void fsmApplyCommand(struct fsm *f,
                            const Tn__Command *c,
                            struct fsm_result *r)
{
    struct fsm_impl *impl = f->impl;
    bool once = c != NULL && c->client_id != 0 && f->config.client_window > 0;

    memset(r, 0, sizeof *r);
    if (c == NULL) {
        fsmInvalid(r, "command: missing");
        return;
    }
    if (once && c->seq == 0) {
        fsmInvalid(r, "seq: must be at least 1 when client_id is set");
        return;
    }
    if (once) {
        struct client *cl = clientFind(impl, c->client_id);
        if (cl != NULL) {
            struct centry *e = clientEntry(cl, c->seq);
            clientTouch(impl, cl);
            if (e != NULL && e->kind != (uint8_t)c->body_case) {
                fsmInvalid(r, "seq: already used by a different request of "
                              "this client");
                return;
            }
            if (e != NULL) {
                fsmReplay(f, c, e, r);
                return;
            }
            if (c->seq <= cl->floor) {
                fsmInvalid(r,
                           "seq: older than the exactly-once window; "
                           "the outcome is no longer known");
                return;
            }
        }
    }
    switch (c->body_case) {
    case TN__COMMAND__BODY_SESSION_OPEN:
        if (c->session_open == NULL) {
            goto missing;
        }
        cmdSessionOpen(f, c->session_open, r);
        break;
    case TN__COMMAND__BODY_KEEPALIVE:
        if (c->keepalive == NULL) {
            goto missing;
        }
        cmdKeepalive(f, c->keepalive, r);
        break;
    case TN__COMMAND__BODY_SESSION_CLOSE:
        if (c->session_close == NULL) {
            goto missing;
        }
        cmdSessionClose(f, c->session_close, r);
        break;
    case TN__COMMAND__BODY_ACQUIRE:
        if (c->acquire == NULL) {
            goto missing;
        }
        cmdAcquire(f, c, r);
        break;
    case TN__COMMAND__BODY_RELEASE:
        if (c->release == NULL) {
            goto missing;
        }
        cmdRelease(f, c->release, r);
        break;
    case TN__COMMAND__BODY_RENEW:
        if (c->renew == NULL) {
            goto missing;
        }
        cmdRenew(f, c->renew, r);
        break;
    case TN__COMMAND__BODY_SESSION_EXPIRE:
        if (c->session_expire == NULL) {
            goto missing;
        }
        cmdSessionExpire(f, c->session_expire, r);
        break;
    case TN__COMMAND__BODY_TICK:
        r->status = TN__STATUS__OK;
        break;
    case TN__COMMAND__BODY_MEMBER:
        if (c->member == NULL) {
            goto missing;
        }
        cmdMember(f, c->member, r);
        break;
    case TN__COMMAND__BODY_RESTORE:
        if (c->restore == NULL) {
            goto missing;
        }
        cmdRestore(f, c->restore, r);
        break;
    case TN__COMMAND__BODY_WITHDRAW:
        if (c->withdraw == NULL) {
            goto missing;
        }
        cmdWithdraw(f, c->withdraw, r);
        break;
    default:
    missing:
        fsmInvalid(r, "command: no known body");
        break;
    }
    if (once) {
        clientRecord(f, clientGet(f, c->client_id), c->seq, (int)c->body_case,
                     r);
    }
}

void fsmApply(struct fsm *f,
              uint64_t index,
              const Tn__Batch *batch,
              struct fsm_result *results)
{
    struct fsm_impl *impl = f->impl;

    fsmGraveyardFlush(impl);
    impl->index = index;
    impl->stale_term = batch->term < impl->term;
    impl->term = fsmMax(impl->term, batch->term);
    impl->now = fsmMax(impl->now, batch->now_ms);
    fsmRunTimers(f);
    clientsExpire(f);
    impl->applies++;
    impl->cur_batch = batch;
    impl->cur_results = results;
    impl->cur_done = 0;
    impl->cur_queued = 0;
    for (size_t i = 0; i < batch->n_commands; i++) {
        struct fsm_result scratch;
        struct fsm_result *r = results != NULL ? &results[i] : &scratch;
        f->impl->cur_slot = i;
        fsmApplyCommand(f, batch->commands[i], r);
        impl = f->impl; /* a Restore command replaces the state */
        impl->cur_done = i + 1;
        if (r->queued) {
            impl->cur_queued++;
        }
        fsmSettle(f);
    }
    impl->cur_batch = NULL;
    impl->cur_results = NULL;
    impl->cur_done = 0;
    impl->cur_queued = 0;
    impl->stale_term = false;
}

/* ------------------------------------------------------------ lifecycle */

void fsmConfigDefaults(struct fsm_config *c)
{
    c->min_ttl_ms = 1000;
    c->max_ttl_ms = 300000;
    c->max_lock_delay_ms = 60000;
    c->max_wait_ms = 300000;
    c->tombstones = 65536;
    c->client_ttl_ms = 600000;
    c->client_window = 64;
}

static struct fsm_impl *implNew(void)
{
    struct fsm_impl *impl = calloc(1, sizeof *impl);

    if (impl == NULL) {
        return NULL;
    }
    tn_avl_init(&impl->sessions);
    tn_avl_init(&impl->locks);
    tn_avl_init(&impl->timers);
    tn_avl_init(&impl->tomb_index);
    tn_avl_init(&impl->clients);
    tn_queue_init(&impl->client_lru);
    return impl;
}

static void implFreeSession(struct tn_avl_node *n, void *data)
{
    struct session *s = TN_AVL_DATA(n, struct session, node);
    (void)data;
    free(s);
}

static void implFreeHolder(struct tn_avl_node *n, void *data)
{
    (void)data;
    holderFree(TN_AVL_DATA(n, struct holder, node));
}

static void implFreeLock(struct tn_avl_node *n, void *data)
{
    struct lock *l = TN_AVL_DATA(n, struct lock, node);
    (void)data;
    tn_avl_clear(&l->holders, implFreeHolder, NULL);
    if (l->ext != NULL) {
        while (!tn_queue_empty(&l->ext->waiters)) {
            tn_queue *q = tn_queue_head(&l->ext->waiters);
            tn_queue_remove(q);
            free(TN_QUEUE_DATA(q, struct waiter, lock_link));
        }
        free(l->ext->delay);
        free(l->ext);
    }
    free(l);
}

static void implFreeNothing(struct tn_avl_node *n, void *data)
{
    (void)n;
    (void)data;
}

static void implFreeClient(struct tn_avl_node *n, void *data)
{
    (void)data;
    clientFree(TN_AVL_DATA(n, struct client, node));
}

static void implFree(struct fsm_impl *impl)
{
    if (impl == NULL) {
        return;
    }
    /* Timers and the tombstone index are embedded in objects freed below. */
    tn_avl_clear(&impl->timers, implFreeNothing, NULL);
    tn_avl_clear(&impl->tomb_index, implFreeNothing, NULL);
    tn_avl_clear(&impl->locks, implFreeLock, NULL);
    tn_avl_clear(&impl->sessions, implFreeSession, NULL);
    tn_avl_clear(&impl->clients, implFreeClient, NULL);
    for (uint32_t i = 0; i < impl->ring_count; i++) {
        tombFree(impl->ring[(impl->ring_head + i) % impl->ring_count]);
    }
    free(impl->ring);
    for (size_t i = 0; i < impl->n_members; i++) {
        free(impl->members[i].raft);
        free(impl->members[i].rpc);
        free(impl->members[i].http);
    }
    free(impl->members);
    fsmGraveyardFlush(impl);
    free(impl->graveyard);
    free(impl->dirty);
    free(impl->views);
    free(impl);
}

int fsmInit(struct fsm *f, const struct fsm_config *config)
{
    f->config = *config;
    if (f->config.max_ttl_ms < f->config.min_ttl_ms) {
        f->config.max_ttl_ms = f->config.min_ttl_ms;
    }
    f->data = NULL;
    f->event_cb = NULL;
    f->impl = implNew();
    if (f->impl == NULL) {
        return TN__STATUS__INTERNAL;
    }
    return 0;
}

void fsmClose(struct fsm *f)
{
    implFree(f->impl);
    f->impl = NULL;
}

/* ---------------------------------------------------------------- reads */

uint64_t fsmNow(const struct fsm *f)
{
    return f->impl->now;
}

uint64_t fsmTerm(const struct fsm *f)
{
    return f->impl->term;
}

uint64_t fsmIndex(const struct fsm *f)
{
    return f->impl->index;
}

uint64_t fsmNextDeadline(const struct fsm *f)
{
    struct tn_avl_node *n = tn_avl_first(&f->impl->timers);

    return n != NULL ? TN_AVL_DATA(n, struct timer, node)->deadline
                     : UINT64_MAX;
}

static void sessionView(const struct session *s, struct fsm_session_view *v)
{
    v->id = s->id;
    v->epoch = s->epoch;
    v->ttl_ms = s->ttl_ms;
    v->holder = s->holder;
    v->created_at_ms = s->created_at;
    v->n_locks = s->n_holds;
}

bool fsmSessionGet(const struct fsm *f,
                   uint64_t id,
                   struct fsm_session_view *out)
{
    const struct session *s = sessionFind(f->impl, id);

    if (s == NULL) {
        return false;
    }
    sessionView(s, out);
    return true;
}

void fsmSessionForEach(const struct fsm *f,
                       int (*cb)(void *data, const struct fsm_session_view *s),
                       void *data)
{
    struct tn_avl_node *n;

    for (n = tn_avl_first(&f->impl->sessions); n != NULL; n = tn_avl_next(n)) {
        struct fsm_session_view v;
        sessionView(TN_AVL_DATA(n, struct session, node), &v);
        if (cb(data, &v) != 0) {
            break;
        }
    }
}

static void lockView(const struct fsm_impl *impl,
                     const struct lock *l,
                     struct fsm_lock_view *v)
{
    struct tn_avl_node *n;
    uint32_t i = 0;

    memset(v, 0, sizeof *v);
    v->resource = l->name;
    v->resource_len = l->len;
    v->mode = l->mode;
    v->permits = lockPermits(l);
    v->generation = l->generation;
    v->last_token = l->last_token;
    v->queue_len = lockWaiters(l);
    v->lock_delay_until_ms = lockDelayActive(impl, l) ? lockDelayUntil(l) : 0;
    v->modified_index = l->modified_index;
    /* views has room for every holder: it grows when holders are added. */
    for (n = tn_avl_first(&l->holders); n != NULL && i < impl->cap_views;
         n = tn_avl_next(n)) {
        const struct holder *h = TN_AVL_DATA(n, struct holder, node);
        struct fsm_holder_view *hv = &impl->views[i++];
        hv->session = h->session->id;
        hv->holder = h->session->holder;
        hv->token = h->token;
        hv->acquired_at_ms = h->acquired_at;
        hv->ttl_ms = h->session->ttl_ms;
    }
    v->n_holders = i;
    v->holders = i > 0 ? impl->views : NULL;
}

bool fsmLockGet(const struct fsm *f,
                const char *resource,
                size_t len,
                struct fsm_lock_view *out)
{
    const struct lock *l;

    if (resource == NULL || len == 0 || len > FSM_RESOURCE_MAX) {
        return false;
    }
    l = lockFind(f->impl, resource, len);
    if (l == NULL || lockUnused(f->impl, l)) {
        return false;
    }
    lockView(f->impl, l, out);
    return true;
}

void fsmLockForEach(const struct fsm *f,
                    const char *prefix,
                    size_t prefix_len,
                    int (*cb)(void *data, const struct fsm_lock_view *l),
                    void *data)
{
    struct nameKey k = { prefix != NULL ? prefix : "", prefix_len };
    struct tn_avl_node *n;

    if (prefix == NULL) {
        k.len = 0;
    }
    for (n = tn_avl_lower_bound(&f->impl->locks, &k, lockKeyCmp); n != NULL;
         n = tn_avl_next(n)) {
        const struct lock *l = TN_AVL_DATA(n, struct lock, node);
        struct fsm_lock_view v;
        if (l->len < k.len || memcmp(l->name, k.s, k.len) != 0) {
            break;
        }
        if (lockUnused(f->impl, l)) {
            continue;
        }
        lockView(f->impl, l, &v);
        if (cb(data, &v) != 0) {
            break;
        }
    }
}

bool fsmMemberGet(const struct fsm *f,
                  uint64_t id,
                  const char **rpc_address,
                  const char **http_address)
{
    const struct fsm_impl *impl = f->impl;

    for (size_t i = 0; i < impl->n_members; i++) {
        if (impl->members[i].id == id) {
            if (rpc_address != NULL) {
                *rpc_address = impl->members[i].rpc;
            }
            if (http_address != NULL) {
                *http_address = impl->members[i].http;
            }
            return true;
        }
    }
    return false;
}

void fsmMemberForEach(const struct fsm *f,
                      int (*cb)(void *data, const struct fsm_member_view *m),
                      void *data)
{
    const struct fsm_impl *impl = f->impl;

    for (size_t i = 0; i < impl->n_members; i++) {
        struct fsm_member_view v = { impl->members[i].id, impl->members[i].raft,
                                     impl->members[i].rpc,
                                     impl->members[i].http };
        if (cb(data, &v) != 0) {
            break;
        }
    }
}

void fsmStats(const struct fsm *f, struct fsm_stats *out)
{
    const struct fsm_impl *impl = f->impl;

    *out = impl->stats;
    out->sessions = impl->sessions.count;
    out->locks_held = impl->n_holders;
    out->waiters = impl->n_waiters;
}

/* ------------------------------------------------------------- snapshot
 *
 * Format (little-endian), version 1:
 *
 *   u32 magic "TNFS"   u32 version
 *   u64 index term now last_token last_session next_tseq
 *   u64 grants releases expiries lock_delay_hits conflicts late_requests
 *   u32 n, members    (ascending id): u64 id, str raft, str rpc, str http
 *   u32 n, sessions   (ascending id): u64 id epoch created_at, u32 ttl,
 *                                     u8 ephemeral, str holder
 *   u32 n, locks      (ascending name): str name, u8 mode, u32 permits,
 *         u64 generation last_token modified_index delay_until delay_tseq,
 *         u32 n, holders (ascending token): u64 session token acquired_at,
 *                                           u32 lock_delay_ms
 *         u32 n, waiters (queue order): u64 session client_id seq deadline
 *                                       tseq, u8 mode, u32 permits
 *                                       lock_delay_ms
 *   u32 n, tombstones (oldest first): u64 token session ended_at, u8 kind,
 *                                     str name, str holder
 *   u32 n, clients    (ascending id): u64 id last_active floor,
 *         u32 n, entries: u64 seq session epoch token generation,
 *                         u32 ttl, u8 status mode pending kind
 *   u64 FNV-1a 64 of every byte before it
 *
 * str = u32 length + bytes. A session's holds are in token order and its
 * waits in tseq order, so both lists are rebuilt from the locks. */

#define SNAP_MAGIC        0x53464e54u /* "TNFS" read little-endian */
#define SNAP_VERSION      2u
#define FSM_COUNTER_LIMIT (UINT64_C(1) << 63)

struct wbuf
{
    uint8_t *p;
    size_t len;
    size_t cap;
    bool oom;
};

static void wPut(struct wbuf *w, const void *data, size_t n)
{
    if (w->oom) {
        return;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap > 0 ? w->cap : 4096;
        uint8_t *p;
        while (cap < w->len + n) {
            cap *= 2;
        }
        p = realloc(w->p, cap);
        if (p == NULL) {
            w->oom = true;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, data, n);
    w->len += n;
}

static void wU8(struct wbuf *w, uint8_t v)
{
    wPut(w, &v, 1);
}

static void wU32(struct wbuf *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    wPut(w, b, 4);
}

static void wU64(struct wbuf *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    wPut(w, b, 8);
}

static void wStr(struct wbuf *w, const char *s, size_t len)
{
    wU32(w, (uint32_t)len);
    wPut(w, s, len);
}

static uint64_t fsmFnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

int fsmSnapshot(const struct fsm *f, void **buf, size_t *len)
{
    const struct fsm_impl *impl = f->impl;
    struct wbuf w = { NULL, 0, 0, false };
    struct tn_avl_node *n;

    wU32(&w, SNAP_MAGIC);
    wU32(&w, SNAP_VERSION);
    wU64(&w, impl->index);
    wU64(&w, impl->term);
    wU64(&w, impl->now);
    wU64(&w, impl->last_token);
    wU64(&w, impl->last_session);
    wU64(&w, impl->next_tseq);
    wU64(&w, impl->stats.grants);
    wU64(&w, impl->stats.releases);
    wU64(&w, impl->stats.expiries);
    wU64(&w, impl->stats.lock_delay_hits);
    wU64(&w, impl->stats.conflicts);
    wU64(&w, impl->stats.late_requests);

    wU32(&w, (uint32_t)impl->n_members);
    for (size_t i = 0; i < impl->n_members; i++) {
        const struct member *m = &impl->members[i];
        wU64(&w, m->id);
        wStr(&w, m->raft, strlen(m->raft));
        wStr(&w, m->rpc, strlen(m->rpc));
        wStr(&w, m->http, strlen(m->http));
    }

    wU32(&w, (uint32_t)impl->sessions.count);
    for (n = tn_avl_first(&impl->sessions); n != NULL; n = tn_avl_next(n)) {
        const struct session *s = TN_AVL_DATA(n, struct session, node);
        wU64(&w, s->id);
        wU64(&w, s->epoch);
        wU64(&w, s->created_at);
        wU32(&w, s->ttl_ms);
        wU8(&w, s->ephemeral ? 1 : 0);
        wStr(&w, s->holder, strlen(s->holder));
    }

    wU32(&w, (uint32_t)impl->locks.count);
    for (n = tn_avl_first(&impl->locks); n != NULL; n = tn_avl_next(n)) {
        const struct lock *l = TN_AVL_DATA(n, struct lock, node);
        const struct lock_ext *x = l->ext;
        struct tn_avl_node *hn;
        const tn_queue *q;
        wStr(&w, l->name, l->len);
        wU8(&w, l->mode);
        wU32(&w, lockPermits(l));
        wU64(&w, l->generation);
        wU64(&w, l->last_token);
        wU64(&w, l->modified_index);
        wU64(&w, x != NULL && x->delay != NULL ? x->delay_until : 0);
        wU64(&w, x != NULL && x->delay != NULL ? x->delay->tseq : 0);
        wU32(&w, (uint32_t)l->holders.count);
        for (hn = tn_avl_first(&l->holders); hn != NULL; hn = tn_avl_next(hn)) {
            const struct holder *h = TN_AVL_DATA(hn, struct holder, node);
            wU64(&w, h->session->id);
            wU64(&w, h->token);
            wU64(&w, h->acquired_at);
            wU32(&w, h->lock_delay_ms);
        }
        wU32(&w, lockWaiters(l));
        for (q = x != NULL ? tn_queue_head(&x->waiters) : NULL;
             q != NULL && q != &x->waiters; q = q->next) {
            const struct waiter *wt =
                TN_QUEUE_DATA(q, struct waiter, lock_link);
            wU64(&w, wt->session->id);
            wU64(&w, wt->client_id);
            wU64(&w, wt->seq);
            wU64(&w, wt->timer.deadline);
            wU64(&w, wt->timer.tseq);
            wU8(&w, wt->mode);
            wU32(&w, wt->permits);
            wU32(&w, wt->lock_delay_ms);
        }
    }

    wU32(&w, impl->ring_count);
    for (uint32_t i = 0; i < impl->ring_count; i++) {
        const struct tomb *t =
            impl->ring[(impl->ring_head + i) % impl->ring_count];
        wU64(&w, t->token);
        wU64(&w, t->session);
        wU64(&w, t->ended_at);
        wU8(&w, t->kind);
        wStr(&w, t->resource, t->len);
        wStr(&w, t->holder, strlen(t->holder));
    }

    wU32(&w, (uint32_t)impl->clients.count);
    for (n = tn_avl_first(&impl->clients); n != NULL; n = tn_avl_next(n)) {
        const struct client *c = TN_AVL_DATA(n, struct client, node);
        wU64(&w, c->id);
        wU64(&w, c->last_active);
        wU64(&w, c->floor);
        wU32(&w, c->n);
        for (uint32_t i = 0; i < c->n; i++) {
            const struct centry *e = &c->entries[i];
            wU64(&w, e->seq);
            wU64(&w, e->session);
            wU64(&w, e->epoch);
            wU64(&w, e->token);
            wU64(&w, e->generation);
            wU32(&w, e->ttl_ms);
            wU8(&w, e->status);
            wU8(&w, e->mode);
            wU8(&w, e->pending);
            wU8(&w, e->kind);
        }
    }

    if (!w.oom) {
        wU64(&w, fsmFnv1a(w.p, w.len));
    }
    if (w.oom) {
        free(w.p);
        return TN__STATUS__INTERNAL;
    }
    *buf = w.p;
    *len = w.len;
    return 0;
}

/* -------------------------------------------------------------- restore */

struct rbuf
{
    const uint8_t *p;
    size_t len;
    size_t off;
    bool bad;
};

static size_t rLeft(const struct rbuf *r)
{
    return r->len - r->off;
}

static const uint8_t *rTake(struct rbuf *r, size_t n)
{
    const uint8_t *p;

    if (r->bad || rLeft(r) < n) {
        r->bad = true;
        return NULL;
    }
    p = r->p + r->off;
    r->off += n;
    return p;
}

static uint8_t rU8(struct rbuf *r)
{
    const uint8_t *p = rTake(r, 1);
    return p != NULL ? p[0] : 0;
}

static uint32_t rU32(struct rbuf *r)
{
    const uint8_t *p = rTake(r, 4);
    uint32_t v = 0;

    if (p != NULL) {
        for (int i = 3; i >= 0; i--) {
            v = v << 8 | p[i];
        }
    }
    return v;
}

static uint64_t rU64(struct rbuf *r)
{
    const uint8_t *p = rTake(r, 8);
    uint64_t v = 0;

    if (p != NULL) {
        for (int i = 7; i >= 0; i--) {
            v = v << 8 | p[i];
        }
    }
    return v;
}

/* A string of at most @max bytes; returns NULL (and marks @r bad) if
 * malformed. */
static const char *rStr(struct rbuf *r, size_t max, size_t *len)
{
    uint32_t n = rU32(r);
    const uint8_t *p;

    if (r->bad || n > max) {
        r->bad = true;
        return NULL;
    }
    p = rTake(r, n);
    *len = n;
    return (const char *)p;
}

/* A count of elements each at least @size bytes long. */
static uint32_t rCount(struct rbuf *r, size_t size)
{
    uint32_t n = rU32(r);

    if (!r->bad && n > rLeft(r) / size) {
        r->bad = true;
    }
    return r->bad ? 0 : n;
}

static char *rDup(const char *s, size_t len)
{
    char *p = malloc(len + 1);

    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* Growable array of pointers used while restoring. */
struct pvec
{
    void **v;
    size_t n;
    size_t cap;
};

static int pvecPush(struct pvec *a, void *p)
{
    if (a->n == a->cap) {
        size_t cap = a->cap > 0 ? a->cap * 2 : 64;
        void **v = realloc(a->v, cap * sizeof *v);
        if (v == NULL) {
            return -1;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = p;
    return 0;
}

static int holderTokenSort(const void *a, const void *b)
{
    const struct holder *ha = *(const struct holder *const *)a;
    const struct holder *hb = *(const struct holder *const *)b;
    return cmpU64(ha->token, hb->token);
}

static int waiterTseqSort(const void *a, const void *b)
{
    const struct waiter *wa = *(const struct waiter *const *)a;
    const struct waiter *wb = *(const struct waiter *const *)b;
    return cmpU64(wa->timer.tseq, wb->timer.tseq);
}

/* qsort, minus its undefined behaviour on an empty NULL array. */
static void fsmSort(void *base,
                    size_t n,
                    size_t size,
                    int (*cmp)(const void *, const void *))
{
    if (n > 1) {
        qsort(base, n, size, cmp);
    }
}

static int u64Sort(const void *a, const void *b)
{
    return cmpU64(*(const uint64_t *)a, *(const uint64_t *)b);
}

static int clientLruSort(const void *a, const void *b)
{
    const struct client *ca = *(const struct client *const *)a;
    const struct client *cb = *(const struct client *const *)b;
    if (ca->last_active != cb->last_active) {
        return cmpU64(ca->last_active, cb->last_active);
    }
    return cmpU64(ca->id, cb->id);
}

static int centrySeqDesc(const void *a, const void *b)
{
    return cmpU64(((const struct centry *)b)->seq,
                  ((const struct centry *)a)->seq);
}

#define BAD   TN__STATUS__INVALID_ARGUMENT
#define NOMEM TN__STATUS__INTERNAL

struct restore
{
    struct pvec holds; /* every holder */
    struct pvec waits; /* every waiter */
    uint64_t *seq_tmp; /* scratch */
    size_t seq_cap;
};

static int restoreMembers(struct fsm_impl *impl, struct rbuf *r)
{
    uint32_t n = rCount(r, 20);

    if (r->bad) {
        return BAD;
    }
    if (n > 0) {
        impl->members = calloc(n, sizeof *impl->members);
        if (impl->members == NULL) {
            return NOMEM;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        struct member *m = &impl->members[i];
        const char *s[3];
        size_t len[3];
        m->id = rU64(r);
        for (int k = 0; k < 3; k++) {
            s[k] = rStr(r, FSM_ADDRESS_MAX, &len[k]);
            if (r->bad || fsmTextCheck((const uint8_t *)s[k], len[k]) != 0) {
                return BAD;
            }
        }
        if (m->id == 0 || (i > 0 && m->id <= impl->members[i - 1].id)) {
            return BAD;
        }
        impl->n_members = i + 1;
        m->raft = rDup(s[0], len[0]);
        m->rpc = rDup(s[1], len[1]);
        m->http = rDup(s[2], len[2]);
        if (m->raft == NULL || m->rpc == NULL || m->http == NULL) {
            return NOMEM;
        }
    }
    return 0;
}

static int restoreSessions(struct fsm_impl *impl, struct rbuf *r)
{
    uint32_t n = rCount(r, 33);
    uint64_t prev = 0;

    if (r->bad) {
        return BAD;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct session *s;
        uint64_t id = rU64(r);
        uint64_t epoch = rU64(r);
        uint64_t created_at = rU64(r);
        uint32_t ttl = rU32(r);
        uint8_t ephemeral = rU8(r);
        size_t len;
        const char *holder = rStr(r, FSM_HOLDER_MAX, &len);

        if (r->bad || id <= prev || id > impl->last_session || epoch == 0 ||
            ephemeral > 1 || created_at > impl->now ||
            fsmHolderCheck(holder, len) != NULL) {
            return BAD;
        }
        prev = id;
        s = sessionNew(holder, len);
        if (s == NULL) {
            return NOMEM;
        }
        s->id = id;
        s->epoch = epoch;
        s->created_at = created_at;
        s->ttl_ms = ttl;
        s->ephemeral = ephemeral != 0;
        tn_queue_init(&s->holds);
        tn_queue_init(&s->waits);
        tn_avl_insert(&impl->sessions, &s->node, sessionCmp);
    }
    return 0;
}

static int restoreLockBody(struct fsm_impl *impl,
                           struct rbuf *r,
                           struct lock *l,
                           struct restore *st)
{
    uint8_t mode = rU8(r);
    uint32_t permits = rU32(r);
    uint64_t delay_until;
    uint64_t delay_tseq;
    uint32_t n;
    uint64_t prev;
    uint32_t sem_refs = 0;
    struct lock_ext *x;

    l->generation = rU64(r);
    l->last_token = rU64(r);
    l->modified_index = rU64(r);
    delay_until = rU64(r);
    delay_tseq = rU64(r);
    if (r->bad || mode > TN__LOCK_MODE__SEMAPHORE ||
        l->last_token > impl->last_token || l->modified_index > impl->index) {
        return BAD;
    }
    l->mode = mode;
    /* The optional part, trimmed again at the end if nothing needs it. */
    x = lockExtNew(l);
    if (x == NULL) {
        return NOMEM;
    }
    x->permits = permits;
    x->delay_until = delay_until;
    if (delay_until != 0) {
        if (delay_tseq >= impl->next_tseq) {
            return BAD;
        }
        x->delay = calloc(1, sizeof *x->delay);
        if (x->delay == NULL) {
            return NOMEM;
        }
        x->delay->deadline = delay_until;
        x->delay->kind = TIMER_DELAY;
        x->delay->tseq = delay_tseq;
        x->delay->owner = l;
        if (tn_avl_insert(&impl->timers, &x->delay->node, timerCmp) != NULL) {
            free(x->delay);
            x->delay = NULL;
            return BAD;
        }
    } else if (delay_tseq != 0) {
        return BAD;
    }

    /* Holders, in token order. */
    n = rCount(r, 28);
    if (r->bad) {
        return BAD;
    }
    if (n == 0 && mode != TN__LOCK_MODE__EXCLUSIVE) {
        return BAD;
    }
    if (mode == TN__LOCK_MODE__EXCLUSIVE && n > 1) {
        return BAD;
    }
    if (mode == TN__LOCK_MODE__SEMAPHORE && (permits == 0 || n > permits)) {
        return BAD;
    }
    if (n > st->seq_cap) {
        uint64_t *v = realloc(st->seq_tmp, n * sizeof *v);
        if (v == NULL) {
            return NOMEM;
        }
        st->seq_tmp = v;
        st->seq_cap = n;
    }
    prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t sid = rU64(r);
        uint64_t token = rU64(r);
        uint64_t acquired_at = rU64(r);
        uint32_t delay = rU32(r);
        struct session *s = sessionFind(impl, sid);
        struct holder *h;

        if (r->bad || s == NULL || token <= prev || token > l->last_token ||
            acquired_at > impl->now) {
            return BAD;
        }
        prev = token;
        h = holderAlloc(l);
        if (h == NULL) {
            return NOMEM;
        }
        h->lock = l;
        h->session = s;
        h->token = token;
        h->acquired_at = acquired_at;
        h->lock_delay_ms = delay;
        tn_queue_init(&h->session_link);
        tn_avl_insert(&l->holders, &h->node, holderCmp);
        impl->n_holders++;
        if (pvecPush(&st->holds, h) != 0) {
            return NOMEM;
        }
        st->seq_tmp[i] = sid;
    }
    /* One hold per session and lock. */
    fsmSort(st->seq_tmp, n, sizeof *st->seq_tmp, u64Sort);
    for (uint32_t i = 1; i < n; i++) {
        if (st->seq_tmp[i] == st->seq_tmp[i - 1]) {
            return BAD;
        }
    }
    if (mode == TN__LOCK_MODE__SEMAPHORE) {
        sem_refs += n;
    }

    /* Waiters, in queue order (= tseq order). */
    n = rCount(r, 49);
    if (r->bad) {
        return BAD;
    }
    prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct waiter *w;
        uint64_t sid = rU64(r);
        uint64_t client_id = rU64(r);
        uint64_t seq = rU64(r);
        uint64_t deadline = rU64(r);
        uint64_t tseq = rU64(r);
        uint8_t wmode = rU8(r);
        uint32_t wpermits = rU32(r);
        uint32_t delay = rU32(r);
        struct session *s = sessionFind(impl, sid);

        if (r->bad || s == NULL || wmode > TN__LOCK_MODE__SEMAPHORE ||
            tseq >= impl->next_tseq || (i > 0 && tseq <= prev)) {
            return BAD;
        }
        if (wmode == TN__LOCK_MODE__SEMAPHORE ? wpermits == 0 : wpermits != 0) {
            return BAD;
        }
        prev = tseq;
        w = calloc(1, sizeof *w);
        if (w == NULL) {
            return NOMEM;
        }
        w->lock = l;
        w->session = s;
        w->client_id = client_id;
        w->seq = seq;
        w->mode = wmode;
        w->permits = wpermits;
        w->lock_delay_ms = delay;
        w->timer.kind = TIMER_WAIT;
        w->timer.deadline = deadline;
        w->timer.tseq = tseq;
        tn_queue_init(&w->session_link);
        tn_queue_insert_tail(&x->waiters, &w->lock_link);
        x->n_waiters++;
        impl->n_waiters++;
        if (tn_avl_insert(&impl->timers, &w->timer.node, timerCmp) != NULL) {
            /* Not in the timers tree (insert left it untouched); linked
             * into the lock, so it is freed with it. */
            return BAD;
        }
        if (pvecPush(&st->waits, w) != 0) {
            return NOMEM;
        }
        if (wmode == TN__LOCK_MODE__SEMAPHORE) {
            if (wpermits != permits) {
                return BAD; /* every semaphore party agrees on the size */
            }
            sem_refs++;
        }
    }
    if (sem_refs > 0 ? permits == 0 : permits != 0) {
        return BAD;
    }
    x->sem_refs = sem_refs;
    lockExtTrim(l);
    if (lockUnused(impl, l)) {
        return BAD; /* free locks are forgotten, never stored */
    }
    return 0;
}

static int restoreLocks(struct fsm_impl *impl,
                        struct rbuf *r,
                        struct restore *st)
{
    uint32_t n = rCount(r, 58);
    const struct lock *prev = NULL;

    if (r->bad) {
        return BAD;
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t len;
        const char *name = rStr(r, FSM_RESOURCE_MAX, &len);
        struct lock *l;
        int rv;

        if (r->bad || !fsmResourceValid(name, len, NULL)) {
            return BAD;
        }
        if (prev != NULL && nameCmp(prev->name, prev->len, name, len) >= 0) {
            return BAD;
        }
        l = lockNew(name, len);
        if (l == NULL) {
            return NOMEM;
        }
        tn_avl_insert(&impl->locks, &l->node, lockCmp);
        prev = l;
        rv = restoreLockBody(impl, r, l, st);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* Rebuild the per-session lists and check global uniqueness. */
static int restoreLink(struct fsm_impl *impl, struct restore *st)
{
    size_t n_tseq = st->waits.n;
    uint64_t *tseqs;
    struct tn_avl_node *n;
    size_t k = 0;

    fsmSort(st->holds.v, st->holds.n, sizeof *st->holds.v, holderTokenSort);
    for (size_t i = 0; i < st->holds.n; i++) {
        struct holder *h = st->holds.v[i];
        if (i > 0 && h->token == ((struct holder *)st->holds.v[i - 1])->token) {
            return BAD;
        }
        tn_queue_insert_tail(&h->session->holds, &h->session_link);
        h->session->n_holds++;
    }
    fsmSort(st->waits.v, st->waits.n, sizeof *st->waits.v, waiterTseqSort);
    for (size_t i = 0; i < st->waits.n; i++) {
        struct waiter *w = st->waits.v[i];
        tn_queue_insert_tail(&w->session->waits, &w->session_link);
        w->session->n_waits++;
    }
    for (n = tn_avl_first(&impl->locks); n != NULL; n = tn_avl_next(n)) {
        const struct lock_ext *x = TN_AVL_DATA(n, struct lock, node)->ext;
        if (x != NULL && x->delay != NULL) {
            n_tseq++;
        }
    }
    tseqs = malloc((n_tseq > 0 ? n_tseq : 1) * sizeof *tseqs);
    if (tseqs == NULL) {
        return NOMEM;
    }
    for (size_t i = 0; i < st->waits.n; i++) {
        tseqs[k++] = ((struct waiter *)st->waits.v[i])->timer.tseq;
    }
    for (n = tn_avl_first(&impl->locks); n != NULL; n = tn_avl_next(n)) {
        struct lock *l = TN_AVL_DATA(n, struct lock, node);
        if (l->ext != NULL && l->ext->delay != NULL) {
            tseqs[k++] = l->ext->delay->tseq;
        }
    }
    fsmSort(tseqs, k, sizeof *tseqs, u64Sort);
    for (size_t i = 1; i < k; i++) {
        if (tseqs[i] == tseqs[i - 1]) {
            free(tseqs);
            return BAD;
        }
    }
    free(tseqs);
    return 0;
}

static bool restoreTokenHeld(const struct restore *st, uint64_t token)
{
    size_t lo = 0;
    size_t hi = st->holds.n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t t = ((const struct holder *)st->holds.v[mid])->token;
        if (t == token) {
            return true;
        }
        if (t < token) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return false;
}

static int restoreTombs(const struct fsm *f,
                        struct fsm_impl *impl,
                        struct rbuf *r,
                        const struct restore *st)
{
    uint32_t n = rCount(r, 34);
    uint32_t max = f->config.tombstones;
    uint32_t skip = n > max ? n - max : 0;

    if (r->bad) {
        return BAD;
    }
    if (n - skip > 0) {
        impl->ring = calloc(n - skip, sizeof *impl->ring);
        if (impl->ring == NULL) {
            return NOMEM;
        }
        impl->ring_cap = n - skip;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t token = rU64(r);
        uint64_t session = rU64(r);
        uint64_t ended_at = rU64(r);
        uint8_t kind = rU8(r);
        size_t len = 0;
        const char *name = rStr(r, FSM_RESOURCE_MAX, &len);
        size_t hlen = 0;
        const char *holder = rStr(r, FSM_HOLDER_MAX, &hlen);
        struct tomb *t;

        if (r->bad || token == 0 || token > impl->last_token ||
            (kind != TOMB_RELEASED && kind != TOMB_EXPIRED) ||
            !fsmResourceValid(name, len, NULL) || restoreTokenHeld(st, token) ||
            memchr(holder, '\0', hlen) != NULL) {
            return BAD;
        }
        if (i < skip) {
            continue;
        }
        t = calloc(1, sizeof *t);
        if (t == NULL) {
            return NOMEM;
        }
        t->resource = rDup(name, len);
        t->holder = rDup(holder, hlen);
        if (t->resource == NULL || t->holder == NULL) {
            tombFree(t);
            return NOMEM;
        }
        t->token = token;
        t->session = session;
        t->ended_at = ended_at;
        t->kind = kind;
        t->len = (uint16_t)len;
        if (tn_avl_insert(&impl->tomb_index, &t->node, tombCmp) != NULL) {
            tombFree(t);
            return BAD;
        }
        impl->ring[impl->ring_count++] = t;
    }
    return 0;
}

static int restoreClients(const struct fsm *f,
                          struct fsm_impl *impl,
                          struct rbuf *r,
                          struct pvec *all)
{
    uint32_t n = rCount(r, 28);
    uint64_t prev = 0;
    uint32_t window = f->config.client_window;

    if (r->bad) {
        return BAD;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct client *c;
        uint64_t id = rU64(r);
        uint64_t last_active = rU64(r);
        uint64_t floor = rU64(r);
        uint32_t m = rCount(r, 48);

        if (r->bad || id <= prev || last_active > impl->now) {
            return BAD;
        }
        prev = id;
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            return NOMEM;
        }
        c->id = id;
        c->last_active = last_active;
        c->floor = floor;
        tn_queue_init(&c->lru);
        tn_avl_insert(&impl->clients, &c->node, clientCmp);
        if (pvecPush(all, c) != 0) {
            return NOMEM;
        }
        if (m > 0) {
            c->entries = calloc(m, sizeof *c->entries);
            if (c->entries == NULL) {
                return NOMEM;
            }
            c->cap = m;
        }
        for (uint32_t k = 0; k < m; k++) {
            struct centry *e = &c->entries[k];
            e->seq = rU64(r);
            e->session = rU64(r);
            e->epoch = rU64(r);
            e->token = rU64(r);
            e->generation = rU64(r);
            e->ttl_ms = rU32(r);
            e->status = rU8(r);
            e->mode = rU8(r);
            e->pending = rU8(r);
            e->kind = rU8(r);
            if (r->bad || e->status > TN__STATUS__REFUSED ||
                e->mode > TN__LOCK_MODE__SEMAPHORE || e->pending > 1 ||
                e->seq <= floor || clientEntry(c, e->seq) != NULL) {
                return BAD;
            }
            c->n = k + 1;
            c->pending += e->pending;
        }
        if (c->n > window) {
            /* The window shrank since: keep the highest seqs. */
            fsmSort(c->entries, c->n, sizeof *c->entries, centrySeqDesc);
            for (uint32_t k = window; k < c->n; k++) {
                c->floor = fsmMax(c->floor, c->entries[k].seq);
                c->pending -= c->entries[k].pending;
            }
            c->n = window;
        }
    }
    return 0;
}

static int restoreAll(const struct fsm *f,
                      struct fsm_impl *impl,
                      struct rbuf *r,
                      struct restore *st)
{
    struct pvec clients = { NULL, 0, 0 };
    size_t max_holders = 0;
    struct tn_avl_node *n;
    int rv;

    if (rU32(r) != SNAP_MAGIC || rU32(r) != SNAP_VERSION) {
        return BAD;
    }
    impl->index = rU64(r);
    impl->term = rU64(r);
    impl->now = rU64(r);
    impl->last_token = rU64(r);
    impl->last_session = rU64(r);
    impl->next_tseq = rU64(r);
    impl->stats.grants = rU64(r);
    impl->stats.releases = rU64(r);
    impl->stats.expiries = rU64(r);
    impl->stats.lock_delay_hits = rU64(r);
    impl->stats.conflicts = rU64(r);
    impl->stats.late_requests = rU64(r);
    /* Counters that new ids come from must have room to grow (real values
     * are below 2^48 << 16). */
    if (r->bad || impl->last_token >= FSM_COUNTER_LIMIT ||
        impl->last_session >= FSM_COUNTER_LIMIT ||
        impl->next_tseq >= FSM_COUNTER_LIMIT) {
        return BAD;
    }
    if ((rv = restoreMembers(impl, r)) != 0 ||
        (rv = restoreSessions(impl, r)) != 0 ||
        (rv = restoreLocks(impl, r, st)) != 0 ||
        (rv = restoreLink(impl, st)) != 0 ||
        (rv = restoreTombs(f, impl, r, st)) != 0) {
        return rv;
    }
    rv = restoreClients(f, impl, r, &clients);
    if (rv == 0 && rLeft(r) != 0) {
        rv = BAD;
    }
    if (rv == 0) {
        fsmSort(clients.v, clients.n, sizeof *clients.v, clientLruSort);
        for (size_t i = 0; i < clients.n; i++) {
            struct client *c = clients.v[i];
            tn_queue_insert_tail(&impl->client_lru, &c->lru);
        }
        if (f->config.client_window == 0) {
            /* Exactly-once is off: nothing to remember. */
            tn_avl_clear(&impl->clients, implFreeClient, NULL);
            tn_queue_init(&impl->client_lru);
        }
    }
    free(clients.v);
    if (rv != 0) {
        return rv;
    }
    for (n = tn_avl_first(&impl->locks); n != NULL; n = tn_avl_next(n)) {
        size_t c = TN_AVL_DATA(n, struct lock, node)->holders.count;
        if (c > max_holders) {
            max_holders = c;
        }
    }
    if (max_holders > 0) {
        impl->views = malloc(max_holders * sizeof *impl->views);
        if (impl->views == NULL) {
            return NOMEM;
        }
        impl->cap_views = max_holders;
    }
    return 0;
}

/* Parse and validate a snapshot into a new state (nothing else changes).
 * Returns 0, BAD or NOMEM. */
static int snapParse(const struct fsm *f,
                     const void *buf,
                     size_t len,
                     struct fsm_impl **out)
{
    const uint8_t *p = buf;
    struct rbuf r;
    struct restore st;
    struct fsm_impl *impl;
    uint64_t sum = 0;
    int rv;

    if (p == NULL || len < 16) {
        return BAD;
    }
    for (int i = 7; i >= 0; i--) {
        sum = sum << 8 | p[len - 8 + (size_t)i];
    }
    if (sum != fsmFnv1a(p, len - 8)) {
        return BAD;
    }
    impl = implNew();
    if (impl == NULL) {
        return NOMEM;
    }
    memset(&st, 0, sizeof st);
    r.p = p;
    r.len = len - 8;
    r.off = 0;
    r.bad = false;
    rv = restoreAll(f, impl, &r, &st);
    free(st.holds.v);
    free(st.waits.v);
    free(st.seq_tmp);
    if (rv != 0) {
        implFree(impl);
        return rv;
    }
    *out = impl;
    return 0;
}

int fsmRestore(struct fsm *f, const void *buf, size_t len)
{
    struct fsm_impl *impl;
    int rv = snapParse(f, buf, len, &impl);

    if (rv != 0) {
        return rv;
    }
    implFree(f->impl);
    f->impl = impl;
    return 0;
}

/* The Restore command: an operator loads a saved snapshot into a fresh
 * cluster (no sessions, no locks). The saved table replaces this one, but
 * what orders this cluster stays its own and only moves forward: index,
 * term, cluster time, and the counters tokens, session ids and timers come
 * from (max of both, so no token is ever issued twice). Members stay this
 * cluster's. Deadlines are absolute cluster time: waits and lock-delays that
 * ended before now end at once (WAIT_DONE). Every restored session is
 * announced (SESSION_OPEN, so the leader starts its lease) and every lock
 * (LOCK_CHANGE). */
static void cmdRestore(struct fsm *f,
                       const Tn__SnapshotRestore *c,
                       struct fsm_result *r)
{
    struct fsm_impl *old = f->impl;
    struct fsm_impl *impl;
    struct tn_avl_node *n;
    struct member *members;
    size_t n_members;
    int rv;

    if (old->sessions.count > 0 || old->locks.count > 0) {
        r->status = TN__STATUS__REFUSED;
        r->message =
            "restore: the lock table is not empty (a snapshot can "
            "only be restored into a fresh cluster)";
        return;
    }
    rv = snapParse(f, c->snapshot.data, c->snapshot.len, &impl);
    if (rv == NOMEM) {
        abort(); /* fail-stop, as for every allocation while applying */
    }
    if (rv != 0) {
        fsmInvalid(r, "snapshot: malformed or from an incompatible version");
        return;
    }
    impl->index = old->index;
    impl->term = fsmMax(impl->term, old->term);
    impl->now = fsmMax(impl->now, old->now);
    impl->last_token = fsmMax(impl->last_token, old->last_token);
    impl->last_session = fsmMax(impl->last_session, old->last_session);
    impl->next_tseq = fsmMax(impl->next_tseq, old->next_tseq);
    /* Swap the members back: this cluster's addresses. */
    members = impl->members;
    n_members = impl->n_members;
    impl->members = old->members;
    impl->n_members = old->n_members;
    old->members = members;
    old->n_members = n_members;
    /* The batch being applied, and the strings its results point to. */
    impl->stale_term = old->stale_term;
    impl->applies = old->applies;
    impl->cur_batch = old->cur_batch;
    impl->cur_results = old->cur_results;
    impl->cur_slot = old->cur_slot;
    impl->cur_done = old->cur_done;
    impl->cur_queued = old->cur_queued;
    impl->graveyard = old->graveyard;
    impl->n_grave = old->n_grave;
    impl->cap_grave = old->cap_grave;
    old->graveyard = NULL;
    old->n_grave = 0;
    old->cap_grave = 0;
    f->impl = impl;
    implFree(old);

    for (n = tn_avl_first(&impl->sessions); n != NULL; n = tn_avl_next(n)) {
        fsmEmitSession(f, FSM_EVENT_SESSION_OPEN,
                       TN_AVL_DATA(n, struct session, node));
    }
    fsmRunTimers(f);
    for (n = tn_avl_first(&impl->locks); n != NULL; n = tn_avl_next(n)) {
        lockTouch(impl, TN_AVL_DATA(n, struct lock, node));
    }
    r->status = TN__STATUS__OK;
}
