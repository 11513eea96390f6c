/* Intrusive AVL tree with parent links (see avl.h).
 *
 * Each node stores its balance factor b = height(right) - height(left) in
 * {-1, 0, 1}, encoded as b + 1 in the low two bits of its parent link.
 * Insertion and removal retrace from the changed leaf towards the root,
 * updating balance factors and rotating where one would reach +-2. */
#include "avl.h"

#include <stdbool.h>

#define AVL_BITS ((uintptr_t)3)

_Static_assert(_Alignof(struct tn_avl_node) >= 4,
               "the balance factor needs two free low bits");

static struct tn_avl_node *avlParent(const struct tn_avl_node *n)
{
    return (struct tn_avl_node *)(n->parent_balance & ~AVL_BITS);
}

static int avlBalance(const struct tn_avl_node *n)
{
    return (int)(n->parent_balance & AVL_BITS) - 1;
}

static void avlSetParent(struct tn_avl_node *n, struct tn_avl_node *parent)
{
    n->parent_balance = (uintptr_t)parent | (n->parent_balance & AVL_BITS);
}

static void avlSetBalance(struct tn_avl_node *n, int balance)
{
    n->parent_balance =
        (n->parent_balance & ~AVL_BITS) | (uintptr_t)(balance + 1);
}

/* Make @parent point at @child where it pointed at @old. */
static void avlReplace(struct tn_avl *t,
                       struct tn_avl_node *parent,
                       struct tn_avl_node *old,
                       struct tn_avl_node *child)
{
    if (parent == NULL) {
        t->root = child;
    } else if (parent->left == old) {
        parent->left = child;
    } else {
        parent->right = child;
    }
    if (child != NULL) {
        avlSetParent(child, parent);
    }
}

/*    x              y
 *   / \            / \
 *  a   y    ->    x   c
 *     / \        / \
 *    b   c      a   b
 * Links only: the callers set the balance factors. */
static void avlRotateLeft(struct tn_avl *t, struct tn_avl_node *x)
{
    struct tn_avl_node *y = x->right;

    x->right = y->left;
    if (y->left != NULL) {
        avlSetParent(y->left, x);
    }
    avlReplace(t, avlParent(x), x, y);
    y->left = x;
    avlSetParent(x, y);
}

static void avlRotateRight(struct tn_avl *t, struct tn_avl_node *x)
{
    struct tn_avl_node *y = x->left;

    x->left = y->right;
    if (y->right != NULL) {
        avlSetParent(y->right, x);
    }
    avlReplace(t, avlParent(x), x, y);
    y->right = x;
    avlSetParent(x, y);
}

/* @p would have balance @b = -2 or +2: rotate it back into balance and
 * return the new root of its subtree. That root has balance 0 if the
 * subtree got one level shorter than it was with @p at -2/+2, else +-1
 * (only after a removal). */
static struct tn_avl_node *avlFix(struct tn_avl *t,
                                  struct tn_avl_node *p,
                                  int b)
{
    struct tn_avl_node *c;
    struct tn_avl_node *g;
    int bc;
    int bg;

    if (b < 0) {
        c = p->left;
        bc = avlBalance(c);
        if (bc <= 0) {
            avlRotateRight(t, p);
            avlSetBalance(p, bc == 0 ? -1 : 0);
            avlSetBalance(c, bc == 0 ? 1 : 0);
            return c;
        }
        g = c->right;
        bg = avlBalance(g);
        avlRotateLeft(t, c);
        avlRotateRight(t, p);
        avlSetBalance(c, bg > 0 ? -1 : 0);
        avlSetBalance(p, bg < 0 ? 1 : 0);
        avlSetBalance(g, 0);
        return g;
    }
    c = p->right;
    bc = avlBalance(c);
    if (bc >= 0) {
        avlRotateLeft(t, p);
        avlSetBalance(p, bc == 0 ? 1 : 0);
        avlSetBalance(c, bc == 0 ? -1 : 0);
        return c;
    }
    g = c->left;
    bg = avlBalance(g);
    avlRotateRight(t, c);
    avlRotateLeft(t, p);
    avlSetBalance(c, bg < 0 ? 1 : 0);
    avlSetBalance(p, bg > 0 ? -1 : 0);
    avlSetBalance(g, 0);
    return g;
}

void tn_avl_init(struct tn_avl *t)
{
    t->root = NULL;
    t->count = 0;
}

struct tn_avl_node *tn_avl_insert(struct tn_avl *t,
                                  struct tn_avl_node *n,
                                  tn_avl_cmp cmp)
{
    struct tn_avl_node *parent = NULL;
    struct tn_avl_node **link = &t->root;
    struct tn_avl_node *c;
    struct tn_avl_node *p;

    while (*link != NULL) {
        int k = cmp(n, *link);
        parent = *link;
        if (k < 0) {
            link = &parent->left;
        } else if (k > 0) {
            link = &parent->right;
        } else {
            return parent;
        }
    }
    n->left = NULL;
    n->right = NULL;
    n->parent_balance = (uintptr_t)parent;
    avlSetBalance(n, 0);
    *link = n;
    t->count++;

    /* The subtree of c grew by one level. */
    for (c = n, p = parent; p != NULL; c = p, p = avlParent(p)) {
        int b = avlBalance(p) + (c == p->left ? -1 : 1);
        if (b == 0) {
            avlSetBalance(p, 0);
            break;
        }
        if (b == -1 || b == 1) {
            avlSetBalance(p, b);
            continue;
        }
        avlFix(t, p, b); /* back to the height before the insertion */
        break;
    }
    return NULL;
}

void tn_avl_remove(struct tn_avl *t, struct tn_avl_node *n)
{
    struct tn_avl_node *p;
    bool left; /* p's left subtree got one level shorter (else its right) */

    if (n->left == NULL || n->right == NULL) {
        struct tn_avl_node *child = n->left != NULL ? n->left : n->right;
        p = avlParent(n);
        left = p != NULL && p->left == n;
        avlReplace(t, p, n, child);
    } else {
        /* Put the in-order successor @s (no left child) in n's place. */
        struct tn_avl_node *s = n->right;
        while (s->left != NULL) {
            s = s->left;
        }
        if (avlParent(s) != n) {
            p = avlParent(s);
            left = true;
            avlReplace(t, p, s, s->right);
            s->right = n->right;
            avlSetParent(s->right, s);
        } else {
            p = s;
            left = false;
        }
        s->left = n->left;
        avlSetParent(s->left, s);
        avlReplace(t, avlParent(n), n, s);
        avlSetBalance(s, avlBalance(n));
    }
    n->left = n->right = NULL;
    n->parent_balance = 0;
    t->count--;

    while (p != NULL) {
        struct tn_avl_node *g = avlParent(p);
        bool g_left = g != NULL && g->left == p;
        int b = avlBalance(p) + (left ? 1 : -1);

        if (b == -1 || b == 1) {
            avlSetBalance(p, b); /* same height as before */
            break;
        }
        if (b == 0) {
            avlSetBalance(p, 0); /* one level shorter */
        } else if (avlBalance(avlFix(t, p, b)) != 0) {
            break; /* the rotation kept the height */
        }
        left = g_left;
        p = g;
    }
}

struct tn_avl_node *tn_avl_find(const struct tn_avl *t,
                                const void *key,
                                tn_avl_key_cmp cmp)
{
    struct tn_avl_node *n = t->root;

    while (n != NULL) {
        int c = cmp(key, n);
        if (c == 0) {
            return n;
        }
        n = c < 0 ? n->left : n->right;
    }
    return NULL;
}

struct tn_avl_node *tn_avl_lower_bound(const struct tn_avl *t,
                                       const void *key,
                                       tn_avl_key_cmp cmp)
{
    struct tn_avl_node *n = t->root;
    struct tn_avl_node *best = NULL;

    while (n != NULL) {
        if (cmp(key, n) <= 0) {
            best = n;
            n = n->left;
        } else {
            n = n->right;
        }
    }
    return best;
}

struct tn_avl_node *tn_avl_first(const struct tn_avl *t)
{
    struct tn_avl_node *n = t->root;

    if (n == NULL) {
        return NULL;
    }
    while (n->left != NULL) {
        n = n->left;
    }
    return n;
}

struct tn_avl_node *tn_avl_last(const struct tn_avl *t)
{
    struct tn_avl_node *n = t->root;

    if (n == NULL) {
        return NULL;
    }
    while (n->right != NULL) {
        n = n->right;
    }
    return n;
}

struct tn_avl_node *tn_avl_next(const struct tn_avl_node *n)
{
    if (n->right != NULL) {
        n = n->right;
        while (n->left != NULL) {
            n = n->left;
        }
        return (struct tn_avl_node *)n;
    }
    while (avlParent(n) != NULL && avlParent(n)->right == n) {
        n = avlParent(n);
    }
    return avlParent(n);
}

struct tn_avl_node *tn_avl_prev(const struct tn_avl_node *n)
{
    if (n->left != NULL) {
        n = n->left;
        while (n->right != NULL) {
            n = n->right;
        }
        return (struct tn_avl_node *)n;
    }
    while (avlParent(n) != NULL && avlParent(n)->left == n) {
        n = avlParent(n);
    }
    return avlParent(n);
}

void tn_avl_clear(struct tn_avl *t,
                  void (*cb)(struct tn_avl_node *n, void *data),
                  void *data)
{
    struct tn_avl_node *n = t->root;

    while (n != NULL) {
        struct tn_avl_node *parent;
        if (n->left != NULL) {
            n = n->left;
            continue;
        }
        if (n->right != NULL) {
            n = n->right;
            continue;
        }
        parent = avlParent(n);
        if (parent != NULL) {
            if (parent->left == n) {
                parent->left = NULL;
            } else {
                parent->right = NULL;
            }
        }
        cb(n, data);
        n = parent;
    }
    t->root = NULL;
    t->count = 0;
}

/* Returns the height of the subtree, or -1 if it is broken (wrong parent
 * link, unbalanced, or a stored balance factor that is not the real one). */
static int avlCheckNode(const struct tn_avl_node *n,
                        const struct tn_avl_node *parent,
                        size_t *count)
{
    int l;
    int r;

    if (n == NULL) {
        return 0;
    }
    if (avlParent(n) != parent || (n->parent_balance & AVL_BITS) > 2) {
        return -1;
    }
    (*count)++;
    l = avlCheckNode(n->left, n, count);
    r = avlCheckNode(n->right, n, count);
    if (l < 0 || r < 0 || r - l != avlBalance(n)) {
        return -1;
    }
    return (l > r ? l : r) + 1;
}

int tn_avl_check(const struct tn_avl *t, tn_avl_cmp cmp)
{
    size_t count = 0;
    const struct tn_avl_node *n;
    const struct tn_avl_node *prev = NULL;

    if (avlCheckNode(t->root, NULL, &count) < 0 || count != t->count) {
        return -1;
    }
    for (n = tn_avl_first(t); n != NULL; n = tn_avl_next(n)) {
        if (prev != NULL && cmp(prev, n) >= 0) {
            return -1;
        }
        prev = n;
    }
    return 0;
}
