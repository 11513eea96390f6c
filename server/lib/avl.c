/* Intrusive AVL tree with parent links (see avl.h). */
#include "avl.h"

static int avlHeight(const struct tn_avl_node *n)
{
    return n != NULL ? n->height : 0;
}

static void avlUpdate(struct tn_avl_node *n)
{
    int l = avlHeight(n->left);
    int r = avlHeight(n->right);

    n->height = (l > r ? l : r) + 1;
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
        child->parent = parent;
    }
}

/*    x              y
 *   / \            / \
 *  a   y    ->    x   c
 *     / \        / \
 *    b   c      a   b      */
static struct tn_avl_node *avlRotateLeft(struct tn_avl *t,
                                         struct tn_avl_node *x)
{
    struct tn_avl_node *y = x->right;

    x->right = y->left;
    if (y->left != NULL) {
        y->left->parent = x;
    }
    avlReplace(t, x->parent, x, y);
    y->left = x;
    x->parent = y;
    avlUpdate(x);
    avlUpdate(y);
    return y;
}

static struct tn_avl_node *avlRotateRight(struct tn_avl *t,
                                          struct tn_avl_node *x)
{
    struct tn_avl_node *y = x->left;

    x->left = y->right;
    if (y->right != NULL) {
        y->right->parent = x;
    }
    avlReplace(t, x->parent, x, y);
    y->right = x;
    x->parent = y;
    avlUpdate(x);
    avlUpdate(y);
    return y;
}

/* Restore heights and balance from @n up to the root. */
static void avlRebalance(struct tn_avl *t, struct tn_avl_node *n)
{
    while (n != NULL) {
        int balance;

        avlUpdate(n);
        balance = avlHeight(n->left) - avlHeight(n->right);
        if (balance > 1) {
            if (avlHeight(n->left->left) < avlHeight(n->left->right)) {
                avlRotateLeft(t, n->left);
            }
            n = avlRotateRight(t, n);
        } else if (balance < -1) {
            if (avlHeight(n->right->right) < avlHeight(n->right->left)) {
                avlRotateRight(t, n->right);
            }
            n = avlRotateLeft(t, n);
        }
        n = n->parent;
    }
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

    while (*link != NULL) {
        int c = cmp(n, *link);
        parent = *link;
        if (c < 0) {
            link = &parent->left;
        } else if (c > 0) {
            link = &parent->right;
        } else {
            return parent;
        }
    }
    n->left = NULL;
    n->right = NULL;
    n->parent = parent;
    n->height = 1;
    *link = n;
    t->count++;
    avlRebalance(t, parent);
    return NULL;
}

void tn_avl_remove(struct tn_avl *t, struct tn_avl_node *n)
{
    struct tn_avl_node *start;

    if (n->left == NULL || n->right == NULL) {
        struct tn_avl_node *child = n->left != NULL ? n->left : n->right;
        start = n->parent;
        avlReplace(t, n->parent, n, child);
    } else {
        /* Put the in-order successor @s (no left child) in n's place. */
        struct tn_avl_node *s = n->right;
        while (s->left != NULL) {
            s = s->left;
        }
        if (s->parent != n) {
            start = s->parent;
            avlReplace(t, s->parent, s, s->right);
            s->right = n->right;
            s->right->parent = s;
        } else {
            start = s;
        }
        s->left = n->left;
        s->left->parent = s;
        avlReplace(t, n->parent, n, s);
        s->height = n->height;
    }
    n->left = n->right = n->parent = NULL;
    n->height = 0;
    t->count--;
    avlRebalance(t, start);
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
    while (n->parent != NULL && n->parent->right == n) {
        n = n->parent;
    }
    return n->parent;
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
    while (n->parent != NULL && n->parent->left == n) {
        n = n->parent;
    }
    return n->parent;
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
        parent = n->parent;
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

/* Returns the height of the subtree, or -1 if it is broken. */
static int avlCheckNode(const struct tn_avl_node *n,
                        const struct tn_avl_node *parent,
                        size_t *count)
{
    int l;
    int r;

    if (n == NULL) {
        return 0;
    }
    if (n->parent != parent) {
        return -1;
    }
    (*count)++;
    l = avlCheckNode(n->left, n, count);
    r = avlCheckNode(n->right, n, count);
    if (l < 0 || r < 0 || l - r > 1 || r - l > 1) {
        return -1;
    }
    if (n->height != (l > r ? l : r) + 1) {
        return -1;
    }
    return n->height;
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
