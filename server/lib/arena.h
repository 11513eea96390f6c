/* A bump allocator: many small allocations, freed all at once. Memory
 * comes first from an optional caller's buffer (on its stack, say), then
 * from malloc'd chunks: the first of `first` bytes, each next one twice
 * the last, up to `max` (an allocation larger than that gets a chunk of
 * its own size). A zeroed arena is ready: no buffer, chunks of 448 bytes
 * (under 1 KiB, malloc keeps them in its per-thread cache) to 4000. */
#ifndef TN_LIB_ARENA_H_
#define TN_LIB_ARENA_H_

#include <stddef.h>

struct tn_arena
{
    char *buf; /* the caller's buffer, aligned */
    size_t cap;
    size_t used;
    void *chunks; /* newest first */
    size_t first;
    size_t max;
};

/* Use @buf (NULL: none) of @size bytes before malloc; @first and @max size
 * the chunks (0: the defaults). */
void tnArenaInit(struct tn_arena *a,
                 void *buf,
                 size_t size,
                 size_t first,
                 size_t max);

/* @n bytes aligned for any type, or NULL when out of memory. */
void *tnArenaAlloc(struct tn_arena *a, size_t n);

/* A copy of the @n bytes at @s with a NUL after them, or NULL. */
char *tnArenaStrndup(struct tn_arena *a, const char *s, size_t n);

/* Free the chunks: everything allocated is gone; the arena can be used
 * again (its caller's buffer from the start). */
void tnArenaFree(struct tn_arena *a);

#endif /* TN_LIB_ARENA_H_ */
