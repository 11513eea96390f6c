#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN _Alignof(max_align_t)

struct chunk
{
    struct chunk *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

void tnArenaInit(struct tn_arena *a,
                 void *buf,
                 size_t size,
                 size_t first,
                 size_t max)
{
    memset(a, 0, sizeof *a);
    a->first = first;
    a->max = max;
    if (buf != NULL) {
        uintptr_t p = (uintptr_t)buf;
        uintptr_t q = (p + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1);
        if (size > q - p) {
            a->buf = (char *)q;
            a->cap = size - (q - p);
        }
    }
}

void *tnArenaAlloc(struct tn_arena *a, size_t n)
{
    struct chunk *c = a->chunks;

    n = n == 0 ? ALIGN : (n + ALIGN - 1) & ~(ALIGN - 1);
    if (c == NULL && a->cap - a->used >= n) {
        a->used += n;
        return a->buf + a->used - n;
    }
    if (c == NULL || c->cap - c->used < n) {
        size_t max = a->max != 0 ? a->max : 4000;
        size_t cap = c == NULL         ? (a->first != 0 ? a->first : 448)
                     : c->cap < max / 2 ? c->cap * 2
                                        : max;
        if (cap < n) {
            cap = n;
        }
        c = malloc(sizeof *c + cap);
        if (c == NULL) {
            return NULL;
        }
        c->cap = cap;
        c->used = 0;
        c->next = a->chunks;
        a->chunks = c;
    }
    c->used += n;
    return (char *)c->data + c->used - n;
}

char *tnArenaStrndup(struct tn_arena *a, const char *s, size_t n)
{
    char *p = tnArenaAlloc(a, n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void tnArenaFree(struct tn_arena *a)
{
    struct chunk *c = a->chunks;
    while (c != NULL) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->used = 0;
}
