/* Encoding of one Raft log entry (see command.h for the layout). */
#include "command.h"

#include "frame.h"

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

int commandDecode(const void *buf, size_t len, Tn__Batch **out)
{
    const uint8_t *p = buf;
    struct commandAllocState state = { false };
    ProtobufCAllocator allocator = { commandAlloc, commandDealloc, &state };
    Tn__Batch *b;
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
    b = tn__batch__unpack(&allocator, n, p + COMMAND_HEADER_SIZE);
    if (b == NULL) {
        return state.failed ? TN__STATUS__INTERNAL
                            : TN__STATUS__INVALID_ARGUMENT;
    }
    /* Unknown fields (from a newer version) are ignored; dropping them
     * keeps a decoded batch re-encodable (the allocator is malloc/free). */
    tn_message_strip_unknown(&b->base);
    if (b->version > COMMAND_BATCH_VERSION) {
        tn__batch__free_unpacked(b, &allocator);
        return TN__STATUS__INVALID_ARGUMENT;
    }
    *out = b;
    return 0;
}

void commandFree(Tn__Batch *b)
{
    if (b != NULL) {
        /* Allocated with malloc through commandAlloc: the default
         * allocator's free matches. */
        tn__batch__free_unpacked(b, NULL);
    }
}
