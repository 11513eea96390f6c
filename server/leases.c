/* Leader-side lease keeper: a min-heap of deadlines plus a hash index. */
#include "leases.h"

#include <stdlib.h>
#include <string.h>

static size_t leasesHash(uint64_t key, size_t mask)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & mask;
}

/* A block of leases. Free ones form a list (l->spare); blocks go back to
 * the allocator only when the set is cleared, so a set that shrinks keeps
 * its peak size until then. */
union leases_slot
{
    struct lease lease;
    union leases_slot *next;
};

struct leases_block
{
    struct leases_block *next;
    union leases_slot slots[LEASES_BLOCK];
};

static struct lease *leaseAlloc(struct leases *l)
{
    union leases_slot *slot;

    if (l->spare == NULL) {
        struct leases_block *b = malloc(sizeof *b);
        if (b == NULL) {
            return NULL;
        }
        b->next = l->blocks;
        l->blocks = b;
        for (size_t i = 0; i < LEASES_BLOCK; i++) {
            b->slots[i].next =
                i + 1 < LEASES_BLOCK ? &b->slots[i + 1] : NULL;
        }
        l->spare = &b->slots[0];
    }
    slot = l->spare;
    l->spare = slot->next;
    memset(&slot->lease, 0, sizeof slot->lease);
    return &slot->lease;
}

static void leaseFree(struct leases *l, struct lease *e)
{
    union leases_slot *slot = (union leases_slot *)(void *)e;

    slot->next = l->spare;
    l->spare = slot;
}

void leasesInit(struct leases *l)
{
    memset(l, 0, sizeof *l);
}

void leasesClear(struct leases *l)
{
    while (l->blocks != NULL) {
        struct leases_block *b = l->blocks;
        l->blocks = b->next;
        free(b);
    }
    l->spare = NULL;
    l->n = 0;
    if (l->slots != NULL) {
        memset(l->slots, 0, l->n_slots * sizeof *l->slots);
    }
}

void leasesClose(struct leases *l)
{
    leasesClear(l);
    free(l->heap);
    free(l->slots);
    memset(l, 0, sizeof *l);
}

size_t leasesCount(const struct leases *l)
{
    return l->n;
}

struct lease *leasesGet(const struct leases *l, uint64_t session)
{
    size_t mask, i;
    if (l->n_slots == 0) {
        return NULL;
    }
    mask = l->n_slots - 1;
    for (i = leasesHash(session, mask); l->slots[i] != NULL;
         i = (i + 1) & mask) {
        if (l->slots[i]->session == session) {
            return l->slots[i];
        }
    }
    return NULL;
}

static void slotInsert(struct lease **slots, size_t n_slots, struct lease *e)
{
    size_t mask = n_slots - 1;
    size_t i = leasesHash(e->session, mask);
    while (slots[i] != NULL) {
        i = (i + 1) & mask;
    }
    slots[i] = e;
}

static int slotsGrow(struct leases *l)
{
    size_t n = l->n_slots ? l->n_slots * 2 : 64;
    struct lease **slots = calloc(n, sizeof *slots);
    if (slots == NULL) {
        return -1;
    }
    for (size_t i = 0; i < l->n; i++) {
        slotInsert(slots, n, l->heap[i]);
    }
    free(l->slots);
    l->slots = slots;
    l->n_slots = n;
    return 0;
}

/* Delete by backward shift, so that probing never needs tombstones. */
static void slotRemove(struct leases *l, uint64_t session)
{
    size_t mask = l->n_slots - 1;
    size_t i = leasesHash(session, mask);
    size_t j;

    while (l->slots[i] != NULL && l->slots[i]->session != session) {
        i = (i + 1) & mask;
    }
    if (l->slots[i] == NULL) {
        return;
    }
    l->slots[i] = NULL;
    for (j = (i + 1) & mask; l->slots[j] != NULL; j = (j + 1) & mask) {
        size_t home = leasesHash(l->slots[j]->session, mask);
        /* Move slots[j] into the hole if its home is not in (i, j]. */
        bool between = (i <= j) ? (home > i && home <= j)
                                : (home > i || home <= j);
        if (!between) {
            l->slots[i] = l->slots[j];
            l->slots[j] = NULL;
            i = j;
        }
    }
}

static void heapSwap(struct leases *l, size_t a, size_t b)
{
    struct lease *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_pos = (uint32_t)a;
    l->heap[b]->heap_pos = (uint32_t)b;
}

static void heapUp(struct leases *l, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->deadline_ms <= l->heap[i]->deadline_ms) {
            break;
        }
        heapSwap(l, i, p);
        i = p;
    }
}

static void heapDown(struct leases *l, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->n) {
            break;
        }
        if (c + 1 < l->n && l->heap[c + 1]->deadline_ms < l->heap[c]->deadline_ms) {
            c++;
        }
        if (l->heap[i]->deadline_ms <= l->heap[c]->deadline_ms) {
            break;
        }
        heapSwap(l, i, c);
        i = c;
    }
}

static void heapFix(struct leases *l, size_t i)
{
    struct lease *e = l->heap[i];
    heapUp(l, i);
    heapDown(l, e->heap_pos);
}

int leasesExtend(struct leases *l,
                 uint64_t session,
                 uint64_t epoch,
                 uint32_t ttl_ms,
                 uint64_t deadline_ms)
{
    struct lease *e = leasesGet(l, session);

    if (e != NULL) {
        e->epoch = epoch;
        e->ttl_ms = ttl_ms;
        if (e->expiring) {
            e->expiring = false;
            e->deadline_ms = deadline_ms;
        } else if (deadline_ms > e->deadline_ms) {
            e->deadline_ms = deadline_ms;
        }
        heapFix(l, e->heap_pos);
        return 0;
    }
    if (l->n >= UINT32_MAX) {
        return -1; /* heap_pos is 32 bits */
    }
    if ((l->n + 1) * 2 > l->n_slots && slotsGrow(l) != 0) {
        return -1;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct lease **heap = realloc(l->heap, cap * sizeof *heap);
        if (heap == NULL) {
            return -1;
        }
        l->heap = heap;
        l->cap = cap;
    }
    e = leaseAlloc(l);
    if (e == NULL) {
        return -1;
    }
    e->session = session;
    e->epoch = epoch;
    e->ttl_ms = ttl_ms;
    e->deadline_ms = deadline_ms;
    e->heap_pos = (uint32_t)l->n;
    l->heap[l->n++] = e;
    heapUp(l, e->heap_pos);
    slotInsert(l->slots, l->n_slots, e);
    return 0;
}

int leasesRestart(struct leases *l,
                  uint64_t session,
                  uint64_t epoch,
                  uint32_t ttl_ms,
                  uint64_t deadline_ms)
{
    struct lease *e = leasesGet(l, session);
    if (e == NULL) {
        return leasesExtend(l, session, epoch, ttl_ms, deadline_ms);
    }
    e->epoch = epoch;
    e->ttl_ms = ttl_ms;
    e->expiring = false;
    e->deadline_ms = deadline_ms;
    heapFix(l, e->heap_pos);
    return 0;
}

void leasesRemove(struct leases *l, uint64_t session)
{
    struct lease *e = leasesGet(l, session);
    size_t i;

    if (e == NULL) {
        return;
    }
    slotRemove(l, session);
    i = e->heap_pos;
    l->n--;
    if (i != l->n) {
        l->heap[i] = l->heap[l->n];
        l->heap[i]->heap_pos = (uint32_t)i;
        heapFix(l, i);
    }
    leaseFree(l, e);
}

struct lease *leasesNextExpired(struct leases *l, uint64_t now_ms)
{
    if (l->n == 0 || l->heap[0]->expiring ||
        l->heap[0]->deadline_ms > now_ms) {
        return NULL;
    }
    return l->heap[0];
}

void leasesSetExpiring(struct leases *l, struct lease *lease)
{
    lease->expiring = true;
    lease->deadline_ms = UINT64_MAX;
    heapFix(l, lease->heap_pos);
}

void leasesUnsetExpiring(struct leases *l, struct lease *lease,
                         uint64_t retry_ms)
{
    lease->expiring = false;
    lease->deadline_ms = retry_ms;
    heapFix(l, lease->heap_pos);
}

uint64_t leasesNextDeadline(const struct leases *l)
{
    if (l->n == 0 || l->heap[0]->expiring) {
        return UINT64_MAX;
    }
    return l->heap[0]->deadline_ms;
}
