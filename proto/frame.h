/* Framing of the client <-> daemon protocol: a 4-byte big-endian length,
 * then one protobuf message. Shared by the daemon and libtenure. */
#ifndef TN_FRAME_H_
#define TN_FRAME_H_

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define TN_FRAME_HEADER 4
#define TN_FRAME_MAX_DEFAULT (1024 * 1024)

enum {
    TN_FRAME_OK = 0,
    TN_FRAME_NOMEM = -1,
    TN_FRAME_TOO_BIG = -2,    /* declared length over the maximum */
    TN_FRAME_BAD_MESSAGE = -3 /* protobuf decoding failed */
};

/* Encode @msg as a frame into a malloc'ed buffer. Returns 0 or
 * TN_FRAME_NOMEM / TN_FRAME_TOO_BIG (message over @max). */
int tn_frame_encode(const ProtobufCMessage *msg,
                    size_t max,
                    uint8_t **out,
                    size_t *out_len);

/* The size of @msg's frame, header included, or 0 when the message is
 * over @max. */
size_t tn_frame_size(const ProtobufCMessage *msg, size_t max);

/* Write @msg's frame, of the @size tn_frame_size() gave, at @dst. */
void tn_frame_write(const ProtobufCMessage *msg, size_t size, uint8_t *dst);

/* Incremental decoder: feed it bytes as they arrive, take frames out. */
struct tn_frame_reader
{
    size_t max;      /* largest accepted payload */
    uint8_t *buf;    /* owned */
    size_t len;      /* bytes held */
    size_t cap;
    size_t off;      /* start of the unconsumed bytes */
};

void tn_frame_reader_init(struct tn_frame_reader *r, size_t max);
void tn_frame_reader_close(struct tn_frame_reader *r);

/* Append bytes. Returns 0, TN_FRAME_NOMEM, or TN_FRAME_TOO_BIG as soon as a
 * header declares a payload over the maximum (the stream is then unusable:
 * close the connection). */
int tn_frame_reader_feed(struct tn_frame_reader *r,
                         const void *data,
                         size_t len);

/* If a whole frame is buffered, point @payload/@len at it (valid until the
 * next feed or next call) and return 1; return 0 if more bytes are needed. */
int tn_frame_reader_next(struct tn_frame_reader *r,
                         const uint8_t **payload,
                         size_t *len);

/* Drop the unknown fields of @m and of every message inside it. The daemon
 * relays and logs what it decoded; protobuf-c keeps unknown fields and packs
 * them again, and some it accepts (an over-long tag 0) it cannot decode once
 * re-packed. Unknown fields are for newer peers: this version ignores them.
 * @m must come from protobuf-c's unpack with the default allocator. */
void tn_message_strip_unknown(ProtobufCMessage *m);

/* The same, for a message whose memory is not malloc's (an arena): the
 * unknown fields are forgotten, not freed. */
void tn_message_forget_unknown(ProtobufCMessage *m);

#endif /* TN_FRAME_H_ */
