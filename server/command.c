/* Encoding of one Raft log entry (see command.h for the layout). */
#include "command.h"

#include "frame.h"
#include "lib/arena.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* First three bytes of every entry; the fourth is the format version. */
static const uint8_t commandMagic[3] = { 'T', 'N', 'B' };

static size_t commandPadded(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

size_t commandEncodedSize(const Tn__Batch *b)
{
    size_t n = protobuf_c_message_get_packed_size(&b->base);

    if (n > COMMAND_MAX_PAYLOAD) {
        return 0;
    }
    return commandPadded(COMMAND_HEADER_SIZE + n);
}

int commandEncode(const Tn__Batch *b,
                  void *(*alloc)(size_t),
                  void **buf,
                  size_t *len)
{
    size_t n;
    size_t total;
    size_t packed;
    uint8_t *p;

    if (b->version > COMMAND_BATCH_VERSION) {
        return TN__STATUS__INVALID_ARGUMENT;
    }
    n = protobuf_c_message_get_packed_size(&b->base);
    if (n > COMMAND_MAX_PAYLOAD) {
        return TN__STATUS__INVALID_ARGUMENT;
    }
    total = commandPadded(COMMAND_HEADER_SIZE + n);
    p = alloc(total);
    if (p == NULL) {
        return TN__STATUS__INTERNAL;
    }
    memcpy(p, commandMagic, sizeof commandMagic);
    p[3] = COMMAND_FORMAT_VERSION;
    p[4] = (uint8_t)(n >> 24);
    p[5] = (uint8_t)(n >> 16);
    p[6] = (uint8_t)(n >> 8);
    p[7] = (uint8_t)n;
    packed = protobuf_c_message_pack(&b->base, p + COMMAND_HEADER_SIZE);
    assert(packed == n); /* protobuf-c packs exactly get_packed_size */
    (void)packed;
    memset(p + COMMAND_HEADER_SIZE + n, 0, total - COMMAND_HEADER_SIZE - n);
    *buf = p;
    *len = total;
    return 0;
}

/* Allocator handed to protobuf-c so that out-of-memory can be told apart
 * from malformed input (protobuf-c returns NULL for both). */
struct commandAllocState
{
    bool failed;
};

static void *commandAlloc(void *data, size_t size)
{
    struct commandAllocState *s = data;
    void *p = malloc(size > 0 ? size : 1);

    if (p == NULL) {
        s->failed = true;
    }
    return p;
}

static void commandDealloc(void *data, void *p)
{
    (void)data;
    free(p);
}

/* Check an entry's header and padding; point *@payload / *@n at the packed
 * batch. */
static int commandPayload(const void *buf,
                          size_t len,
                          const uint8_t **payload,
                          uint32_t *n_out)
{
    const uint8_t *p = buf;
    uint32_t n;
    size_t i;

    if (p == NULL || len < COMMAND_HEADER_SIZE || len % 8 != 0) {
        return TN__STATUS__INVALID_ARGUMENT;
    }
    if (memcmp(p, commandMagic, sizeof commandMagic) != 0 ||
        p[3] != COMMAND_FORMAT_VERSION) {
        return TN__STATUS__INVALID_ARGUMENT;
    }
    n = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 |
        (uint32_t)p[7];
    if (n > COMMAND_MAX_PAYLOAD || n > len - COMMAND_HEADER_SIZE ||
        commandPadded(COMMAND_HEADER_SIZE + (size_t)n) != len) {
        return TN__STATUS__INVALID_ARGUMENT;
    }
    for (i = COMMAND_HEADER_SIZE + n; i < len; i++) {
        if (p[i] != 0) {
            return TN__STATUS__INVALID_ARGUMENT;
        }
    }
    *payload = p + COMMAND_HEADER_SIZE;
    *n_out = n;
    return 0;
}

/* Unpack with @allocator; @failed tells out-of-memory from bad input. */
static int commandUnpack(ProtobufCAllocator *allocator,
                         const bool *failed,
                         const uint8_t *payload,
                         uint32_t n,
                         bool arena,
                         Tn__Batch **out)
{
    Tn__Batch *b = tn__batch__unpack(allocator, n, payload);

    if (b == NULL) {
        return *failed ? TN__STATUS__INTERNAL : TN__STATUS__INVALID_ARGUMENT;
    }
    /* Unknown fields (from a newer version) are ignored; dropping them
     * keeps a decoded batch re-encodable. */
    if (arena) {
        tn_message_forget_unknown(&b->base);
    } else {
        tn_message_strip_unknown(&b->base);
    }
    if (b->version > COMMAND_BATCH_VERSION) {
        tn__batch__free_unpacked(b, allocator);
        return TN__STATUS__INVALID_ARGUMENT;
    }
    *out = b;
    return 0;
}

int commandDecode(const void *buf, size_t len, Tn__Batch **out)
{
    struct commandAllocState state = { false };
    ProtobufCAllocator allocator = { commandAlloc, commandDealloc, &state };
    const uint8_t *payload;
    uint32_t n;
    int rv;

    rv = commandPayload(buf, len, &payload, &n);
    if (rv != 0) {
        return rv;
    }
    return commandUnpack(&allocator, &state.failed, payload, n, false, out);
}

/* ------------------------------------------------------------- arena */

void commandArenaInit(struct command_arena *a, void *buf, size_t size)
{
    tnArenaInit(&a->arena, buf, size, 16u * 1024u, 4u * 1024u * 1024u);
    a->failed = false;
}

void commandArenaClose(struct command_arena *a)
{
    tnArenaFree(&a->arena);
}

static void *arenaAlloc(void *data, size_t size)
{
    struct command_arena *a = data;
    void *p = tnArenaAlloc(&a->arena, size);
    if (p == NULL) {
        a->failed = true;
    }
    return p;
}

static void arenaDealloc(void *data, void *p)
{
    (void)data;
    (void)p; /* freed with the arena */
}

int commandDecodeIn(struct command_arena *a,
                    const void *buf,
                    size_t len,
                    Tn__Batch **out)
{
    ProtobufCAllocator allocator = { arenaAlloc, arenaDealloc, a };
    const uint8_t *payload;
    uint32_t n;
    int rv;

    a->failed = false;
    rv = commandPayload(buf, len, &payload, &n);
    if (rv != 0) {
        return rv;
    }
    return commandUnpack(&allocator, &a->failed, payload, n, true, out);
}

void commandFree(Tn__Batch *b)
{
    if (b != NULL) {
        /* Allocated with malloc through commandAlloc: the default
         * allocator's free matches. */
        tn__batch__free_unpacked(b, NULL);
    }
}
