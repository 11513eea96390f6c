/* Forwarder: relays requests from a follower to the leader over the RPC
 * protocol (one connection, many requests in flight). */
#ifndef TN_FORWARD_H_
#define TN_FORWARD_H_

#include <stdint.h>

#include <uv.h>

#include "lib/queue.h"
#include "tenure.pb-c.h"

struct forwarder;

/* @response is NULL when the relay failed (connection lost, leader
 * unreachable); then @status says how (a TN__STATUS__* code). The response
 * is freed after the callback returns. */
struct forward_req;
typedef void (*forward_cb)(struct forward_req *req,
                           int status,
                           const Tn__Response *response);
struct forward_req
{
    void *data;
    forward_cb cb;
    /* private */
    uint64_t id;
    tn_queue queue;
    struct forwarder *f;
};

int forwarderInit(struct forwarder **out, uv_loop_t *loop, size_t max_frame);

/* Send @request to the RPC endpoint @address (host:port). If the address
 * differs from the current connection's, the old connection is dropped (its
 * pending requests fail with COMMIT_UNKNOWN). The request is encoded at once
 * (it need not stay alive); @req must stay alive until cb. Returns 0 or a
 * TN__STATUS__* code (then cb never fires). */
int forwarderSend(struct forwarder *f,
                  const char *address,
                  const Tn__Request *request,
                  struct forward_req *req,
                  forward_cb cb);

/* Fail every pending request with CANCELED soon, close the connection and
 * free the forwarder once its handles are closed. */
void forwarderClose(struct forwarder *f);

#endif /* TN_FORWARD_H_ */
