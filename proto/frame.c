/* Framing of the client <-> daemon protocol. */
#include "frame.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

size_t tn_frame_size(const ProtobufCMessage *msg, size_t max)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > max || n > UINT32_MAX) {
        return 0;
    }
    return TN_FRAME_HEADER + n;
}

void tn_frame_write(const ProtobufCMessage *msg, size_t size, uint8_t *dst)
{
    size_t n = size - TN_FRAME_HEADER;
    dst[0] = (uint8_t)(n >> 24);
    dst[1] = (uint8_t)(n >> 16);
    dst[2] = (uint8_t)(n >> 8);
    dst[3] = (uint8_t)n;
    protobuf_c_message_pack(msg, dst + TN_FRAME_HEADER);
}

int tn_frame_encode(const ProtobufCMessage *msg,
                    size_t max,
                    uint8_t **out,
                    size_t *out_len)
{
    size_t size = tn_frame_size(msg, max);
    uint8_t *buf;

    if (size == 0) {
        return TN_FRAME_TOO_BIG;
    }
    buf = malloc(size);
    if (buf == NULL) {
        return TN_FRAME_NOMEM;
    }
    tn_frame_write(msg, size, buf);
    *out = buf;
    *out_len = size;
    return TN_FRAME_OK;
}

void tn_frame_reader_init(struct tn_frame_reader *r, size_t max)
{
    memset(r, 0, sizeof *r);
    r->max = max;
}

void tn_frame_reader_close(struct tn_frame_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof *r);
}

static uint32_t frameLength(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

int tn_frame_reader_feed(struct tn_frame_reader *r,
                         const void *data,
                         size_t len)
{
    size_t live = r->len - r->off;

    /* Compact: move the unconsumed bytes to the front. */
    if (r->off > 0) {
        memmove(r->buf, r->buf + r->off, live);
        r->len = live;
        r->off = 0;
    }
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        uint8_t *b;
        while (cap < r->len + len) {
            cap *= 2;
        }
        b = realloc(r->buf, cap);
        if (b == NULL) {
            return TN_FRAME_NOMEM;
        }
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    if (r->len - r->off >= TN_FRAME_HEADER &&
        frameLength(r->buf + r->off) > r->max) {
        return TN_FRAME_TOO_BIG;
    }
    return TN_FRAME_OK;
}

int tn_frame_reader_next(struct tn_frame_reader *r,
                         const uint8_t **payload,
                         size_t *len)
{
    size_t live = r->len - r->off;
    uint32_t n;

    if (live < TN_FRAME_HEADER) {
        return 0;
    }
    n = frameLength(r->buf + r->off);
    if (n > r->max) {
        return TN_FRAME_TOO_BIG;
    }
    if (live - TN_FRAME_HEADER < n) {
        return 0;
    }
    *payload = r->buf + r->off + TN_FRAME_HEADER;
    *len = n;
    r->off += TN_FRAME_HEADER + n;
    return 1;
}

static void dropUnknown(ProtobufCMessage *m, bool release)
{
    const ProtobufCMessageDescriptor *d;

    if (m == NULL) {
        return;
    }
    if (release) {
        for (unsigned i = 0; i < m->n_unknown_fields; i++) {
            free(m->unknown_fields[i].data);
        }
        free(m->unknown_fields);
    }
    m->unknown_fields = NULL;
    m->n_unknown_fields = 0;
    d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *base = (char *)m;
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which != f->id) {
                continue;
            }
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage **items = *(ProtobufCMessage ***)(base + f->offset);
            for (size_t k = 0; k < n; k++) {
                dropUnknown(items[k], release);
            }
        } else {
            dropUnknown(*(ProtobufCMessage **)(base + f->offset), release);
        }
    }
}

void tn_message_strip_unknown(ProtobufCMessage *m)
{
    dropUnknown(m, true);
}

void tn_message_forget_unknown(ProtobufCMessage *m)
{
    dropUnknown(m, false);
}
