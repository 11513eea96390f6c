/* Intrusive AVL tree: ordered maps without allocation of their own.
 *
 * Embed a struct tn_avl_node in your record, give the tree a comparison of
 * two nodes (for insertion) and, for lookups, a comparison of a key with a
 * node. Every operation is O(log n); iteration is in key order, so the
 * result never depends on pointer values (the state machine relies on
 * this for determinism). */
#ifndef TN_LIB_AVL_H_
#define TN_LIB_AVL_H_

#include <stddef.h>
#include <stdint.h>

/* 24 bytes: the balance factor (height of the right subtree minus that of
 * the left one: -1, 0 or 1) is kept, plus one, in the two low bits of the
 * parent pointer (nodes are at least 4-byte aligned). Private: use the
 * functions below. */
struct tn_avl_node
{
    struct tn_avl_node *left;
    struct tn_avl_node *right;
    uintptr_t parent_balance;
};

struct tn_avl
{
    struct tn_avl_node *root;
    size_t count;
};

/* <0, 0, >0 as a sorts before, equal to, after b. */
typedef int (*tn_avl_cmp)(const struct tn_avl_node *a,
                          const struct tn_avl_node *b);
/* <0, 0, >0 as @key sorts before, equal to, after node @n. */
typedef int (*tn_avl_key_cmp)(const void *key, const struct tn_avl_node *n);

#define TN_AVL_DATA(n, type, field) \
    ((type *)(void *)((char *)(n)-offsetof(type, field)))

void tn_avl_init(struct tn_avl *t);

/* Insert @n. If an equal node is already in the tree, returns it and leaves
 * the tree unchanged; otherwise returns NULL. */
struct tn_avl_node *tn_avl_insert(struct tn_avl *t,
                                  struct tn_avl_node *n,
                                  tn_avl_cmp cmp);

/* Unlink @n, which must be in @t. */
void tn_avl_remove(struct tn_avl *t, struct tn_avl_node *n);

struct tn_avl_node *tn_avl_find(const struct tn_avl *t,
                                const void *key,
                                tn_avl_key_cmp cmp);

/* First node whose key is >= @key, or NULL. */
struct tn_avl_node *tn_avl_lower_bound(const struct tn_avl *t,
                                       const void *key,
                                       tn_avl_key_cmp cmp);

struct tn_avl_node *tn_avl_first(const struct tn_avl *t);
struct tn_avl_node *tn_avl_last(const struct tn_avl *t);
struct tn_avl_node *tn_avl_next(const struct tn_avl_node *n);
struct tn_avl_node *tn_avl_prev(const struct tn_avl_node *n);

/* Empty the tree in O(n), calling @cb on every node children first (so @cb
 * may free it). */
void tn_avl_clear(struct tn_avl *t,
                  void (*cb)(struct tn_avl_node *n, void *data),
                  void *data);

/* Check the structure (order, parent links, heights, balance, count) for
 * tests. Returns 0 if it is sound. */
int tn_avl_check(const struct tn_avl *t, tn_avl_cmp cmp);

#endif /* TN_LIB_AVL_H_ */
