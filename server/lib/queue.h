/* Intrusive doubly linked circular queue (the shape of libuv's QUEUE). */
#ifndef TN_LIB_QUEUE_H_
#define TN_LIB_QUEUE_H_

#include <stddef.h>

typedef struct tn_queue
{
    struct tn_queue *next;
    struct tn_queue *prev;
} tn_queue;

#define TN_QUEUE_DATA(e, type, field) \
    ((type *)(void *)((char *)(e)-offsetof(type, field)))

#define TN_QUEUE_FOREACH(q, h) for ((q) = (h)->next; (q) != (h); (q) = (q)->next)

static inline void tn_queue_init(tn_queue *q)
{
    q->next = q;
    q->prev = q;
}

static inline int tn_queue_empty(const tn_queue *q)
{
    return q == q->next;
}

static inline void tn_queue_insert_tail(tn_queue *h, tn_queue *q)
{
    q->next = h;
    q->prev = h->prev;
    q->prev->next = q;
    h->prev = q;
}

static inline void tn_queue_remove(tn_queue *q)
{
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->next = q;
    q->prev = q;
}

static inline tn_queue *tn_queue_head(const tn_queue *h)
{
    return h->next;
}

#endif /* TN_LIB_QUEUE_H_ */
