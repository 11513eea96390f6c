/* Encoding of one Raft log entry: a batch of commands (Tn__Batch).
 *
 * Layout of an entry (all integers big-endian):
 *
 *   0  4  magic "TNB" + format version byte (COMMAND_FORMAT_VERSION)
 *   4  4  length n of the packed protobuf that follows
 *   8  n  the packed Tn__Batch
 *   ..    zero bytes up to the next multiple of 8 (raft 0.22.1 wants entry
 *         buffers whose length is a multiple of 8)
 *
 * The total length is therefore always a multiple of 8, at least 8, and the
 * padding is at most 7 bytes. The decoder rejects anything else. */
#ifndef TN_COMMAND_H_
#define TN_COMMAND_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/arena.h"
#include "tenure.pb-c.h"

#define COMMAND_FORMAT_VERSION 1
#define COMMAND_HEADER_SIZE    8
/* Largest packed batch accepted (the length field is 32 bits; keep entries
 * well below what raft would want to ship in one message). */
#define COMMAND_MAX_PAYLOAD    (64u * 1024u * 1024u)
/* Highest Tn__Batch.version understood (0, "unset", is read as 1). */
#define COMMAND_BATCH_VERSION  1

/* Size of the encoded entry for @b (header + payload + padding), or 0 if the
 * batch is too large to encode. */
size_t commandEncodedSize(const Tn__Batch *b);

/* Encode @b into a buffer obtained from @alloc (raft_malloc in the daemon,
 * malloc in tests); on success the caller owns *buf, whose length *len is a
 * multiple of 8. Returns 0, TN__STATUS__INTERNAL when @alloc fails, or
 * TN__STATUS__INVALID_ARGUMENT when the batch is over COMMAND_MAX_PAYLOAD or
 * its version is newer than COMMAND_BATCH_VERSION. On error *buf and *len are
 * untouched. */
int commandEncode(const Tn__Batch *b,
                  void *(*alloc)(size_t),
                  void **buf,
                  size_t *len);

/* Decode an entry. Returns 0 and a batch to release with commandFree(), or
 * TN__STATUS__INVALID_ARGUMENT for any malformed input (too short, bad magic
 * or version, bad length, length not a multiple of 8, non-zero padding,
 * protobuf failure, unknown batch version), or TN__STATUS__INTERNAL when out
 * of memory. @buf is only read; *out is set only on success. Never crashes,
 * whatever the bytes. */
int commandDecode(const void *buf, size_t len, Tn__Batch **out);

/* Release a batch returned by commandDecode(). NULL is a no-op. */
void commandFree(Tn__Batch *b);

/* Memory for one decoded batch: the caller's buffer first (on its stack),
 * then chunks from malloc, all given back by commandArenaClose(), so that
 * the many small allocations of an unpacked batch cost no malloc in the
 * usual case. */
struct command_arena
{
    struct tn_arena arena; /* private */
    bool failed;           /* out of memory during the last decode */
};

/* @buf (NULL for none) of @size bytes is used before malloc. */
void commandArenaInit(struct command_arena *a, void *buf, size_t size);

/* Free what the arena took from malloc; batches decoded into it are gone. */
void commandArenaClose(struct command_arena *a);

/* Decode like commandDecode() into @a. *out stays valid until
 * commandArenaClose(); never commandFree() it. */
int commandDecodeIn(struct command_arena *a,
                    const void *buf,
                    size_t len,
                    Tn__Batch **out);

#endif /* TN_COMMAND_H_ */
