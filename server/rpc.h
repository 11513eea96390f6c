/* The RPC front end: length-prefixed protobuf frames over TCP (DESIGN §5).
 *
 * Each frame is decoded into a Tn__Request and submitted to the dispatch;
 * replies are written as they complete (out of order, matched by id). A
 * frame over the maximum size or an undecodable frame gets one
 * INVALID_ARGUMENT reply (id 0) and the connection is closed. */
#ifndef TN_RPC_H_
#define TN_RPC_H_

#include <stddef.h>

#include <uv.h>

#include "dispatch.h"

struct rpc_server;

/* Listen on @address (host:port, IPv4). Returns 0 or a negative libuv error
 * with a message in @errmsg. */
int rpcServerStart(struct rpc_server **out,
                   uv_loop_t *loop,
                   struct dispatch *d,
                   const char *address,
                   size_t max_frame,
                   char *errmsg,
                   size_t errmsg_len);

/* Stop accepting. */
void rpcServerStopListening(struct rpc_server *s);

/* Close every connection; @cb fires once all are closed and @s is freed.
 * Pending requests are cancelled first (their callbacks still fire). */
void rpcServerClose(struct rpc_server *s, void (*cb)(void *data), void *data);

#endif /* TN_RPC_H_ */
