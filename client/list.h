/* Intrusive circular doubly linked list used inside libtenure. */
#ifndef TN_CLIENT_LIST_H_
#define TN_CLIENT_LIST_H_

#include <stdbool.h>
#include <stddef.h>

struct list
{
    struct list *next;
    struct list *prev;
};

#define LIST_ENTRY(e, type, field) \
    ((type *)(void *)((char *)(e)-offsetof(type, field)))

static inline void listInit(struct list *l)
{
    l->next = l;
    l->prev = l;
}

static inline bool listEmpty(const struct list *l)
{
    return l->next == l;
}

/* Append @e at the tail of @head. */
static inline void listPush(struct list *head, struct list *e)
{
    e->prev = head->prev;
    e->next = head;
    head->prev->next = e;
    head->prev = e;
}

/* Unlink @e and make it an empty list (so a second remove is harmless). */
static inline void listRemove(struct list *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->next = e;
    e->prev = e;
}

/* Unlink and return the first element, or NULL if @head is empty. */
static inline struct list *listShift(struct list *head)
{
    struct list *e;
    if (listEmpty(head)) {
        return NULL;
    }
    e = head->next;
    listRemove(e);
    return e;
}

/* Move every element of @from to the tail of @to. */
static inline void listSplice(struct list *to, struct list *from)
{
    struct list *e;
    while ((e = listShift(from)) != NULL) {
        listPush(to, e);
    }
}

#endif /* TN_CLIENT_LIST_H_ */
