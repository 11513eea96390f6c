/* Unit tests of the intrusive AVL tree (server/lib/avl.c), whose nodes keep
 * their balance factor in the low bits of the parent link. */
#include "lib/test.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/avl.h"

#define KEYS 2048

struct item
{
    struct tn_avl_node node;
    uint32_t key;
};

struct fixture
{
    struct tn_avl tree;
    struct item items[KEYS];
    bool in[KEYS];
    size_t n_in;
    uint64_t rng;
};

static int itemCmp(const struct tn_avl_node *a, const struct tn_avl_node *b)
{
    uint32_t ka = TN_AVL_DATA(a, struct item, node)->key;
    uint32_t kb = TN_AVL_DATA(b, struct item, node)->key;
    return ka < kb ? -1 : ka > kb;
}

static int itemKeyCmp(const void *key, const struct tn_avl_node *n)
{
    uint32_t k = *(const uint32_t *)key;
    uint32_t kn = TN_AVL_DATA(n, struct item, node)->key;
    return k < kn ? -1 : k > kn;
}

static int setUp(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    tn_avl_init(&f->tree);
    for (uint32_t i = 0; i < KEYS; i++) {
        f->items[i].key = i;
    }
    f->rng = 88172645463325252ULL;
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    free(*state);
    return 0;
}

static uint32_t rnd(struct fixture *f, uint32_t below)
{
    f->rng ^= f->rng << 13;
    f->rng ^= f->rng >> 7;
    f->rng ^= f->rng << 17;
    return (uint32_t)(f->rng % below);
}

static void put(struct fixture *f, uint32_t k)
{
    assert_false(f->in[k]);
    assert_null(tn_avl_insert(&f->tree, &f->items[k].node, itemCmp));
    f->in[k] = true;
    f->n_in++;
}

static void del(struct fixture *f, uint32_t k)
{
    assert_true(f->in[k]);
    tn_avl_remove(&f->tree, &f->items[k].node);
    f->in[k] = false;
    f->n_in--;
}

/* Structure, balance factors and count are sound, and an in-order walk
 * (both ways) visits exactly the keys that are in, in order. */
static void check(struct fixture *f)
{
    const struct tn_avl_node *n;
    uint32_t k = 0;
    size_t seen = 0;

    assert_int_equal(tn_avl_check(&f->tree, itemCmp), 0);
    assert_int_equal(f->tree.count, f->n_in);
    for (n = tn_avl_first(&f->tree); n != NULL; n = tn_avl_next(n)) {
        uint32_t key = TN_AVL_DATA(n, struct item, node)->key;
        while (k < key) {
            assert_false(f->in[k++]);
        }
        assert_true(f->in[k++]);
        seen++;
    }
    assert_int_equal(seen, f->n_in);
    seen = 0;
    for (n = tn_avl_last(&f->tree); n != NULL; n = tn_avl_prev(n)) {
        seen++;
    }
    assert_int_equal(seen, f->n_in);
}

/* Ascending then descending insertions (the worst case for an unbalanced
 * tree) stay balanced; removals in the same orders too. */
static void test_sequential(void **state)
{
    struct fixture *f = *state;

    for (uint32_t k = 0; k < KEYS / 2; k++) {
        put(f, k);
        check(f);
    }
    for (uint32_t k = KEYS - 1; k >= KEYS / 2; k--) {
        put(f, k);
    }
    check(f);
    for (uint32_t k = 0; k < KEYS; k += 2) {
        del(f, k);
        check(f);
    }
    for (uint32_t k = KEYS - 1; k < KEYS; k -= 2) {
        del(f, k);
    }
    check(f);
    assert_null(f->tree.root);
}

/* Random inserts and removals, checked after every step: every rotation
 * case of insertion and removal is reached many times. */
static void test_random(void **state)
{
    struct fixture *f = *state;

    for (int step = 0; step < 20000; step++) {
        uint32_t k = rnd(f, step < 10000 ? 64 : KEYS);
        if (f->in[k]) {
            del(f, k);
        } else {
            put(f, k);
        }
        if (step < 10000 || step % 16 == 0) {
            check(f);
        }
    }
    check(f);
}

/* Removing the root over and over (two children: the successor takes its
 * place, sometimes as the root's own right child). */
static void test_remove_root(void **state)
{
    struct fixture *f = *state;

    for (uint32_t k = 0; k < 300; k++) {
        put(f, (k * 37) % 300);
    }
    while (f->tree.root != NULL) {
        del(f, TN_AVL_DATA(f->tree.root, struct item, node)->key);
        check(f);
    }
}

/* Duplicates are refused (the tree is unchanged); find and lower_bound
 * agree with the set of keys. */
static void test_lookup(void **state)
{
    struct fixture *f = *state;
    struct item dup;

    for (uint32_t k = 0; k < 200; k += 3) {
        put(f, k);
    }
    dup.key = 99;
    assert_ptr_equal(tn_avl_insert(&f->tree, &dup.node, itemCmp),
                     &f->items[99].node);
    check(f);
    for (uint32_t q = 0; q < 210; q++) {
        const struct tn_avl_node *found = tn_avl_find(&f->tree, &q, itemKeyCmp);
        const struct tn_avl_node *lb =
            tn_avl_lower_bound(&f->tree, &q, itemKeyCmp);
        uint32_t want = (q + 2) / 3 * 3;
        assert_ptr_equal(found, q % 3 == 0 && q < 200 ? &f->items[q].node
                                                      : NULL);
        assert_ptr_equal(lb, want < 200 ? &f->items[want].node : NULL);
    }
}

/* A node is three pointers: the balance factor costs no space. */
static void test_node_size(void **state)
{
    (void)state;
    assert_int_equal(sizeof(struct tn_avl_node), 3 * sizeof(void *));
}

static void itemForget(struct tn_avl_node *n, void *data)
{
    struct fixture *f = data;
    uint32_t k = TN_AVL_DATA(n, struct item, node)->key;

    assert_true(f->in[k]);
    f->in[k] = false;
    f->n_in--;
}

/* Clear visits every node once and empties the tree. */
static void test_clear(void **state)
{
    struct fixture *f = *state;

    for (uint32_t k = 0; k < 500; k++) {
        put(f, rnd(f, 2) == 0 ? k : KEYS - 1 - k);
    }
    tn_avl_clear(&f->tree, itemForget, f);
    assert_int_equal(f->n_in, 0);
    assert_null(f->tree.root);
    assert_int_equal(f->tree.count, 0);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setUp, tearDown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_sequential), T(test_random), T(test_remove_root),
        T(test_lookup),     T(test_node_size), T(test_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
