/* An in-process HTTP shim (server/http.c) on its own libuv loop, with a
 * fake dispatch behind it, driven by one client connection per input over
 * real TCP on 127.0.0.1. Used by the fuzz_http and fuzz_json targets.
 *
 * Single-threaded: the harness runs the loop (UV_RUN_NOWAIT) itself between
 * writing the input, reading the answers and firing the fake dispatch's
 * callbacks, so one input is one deterministic-enough exchange and nothing
 * outlives it: every connection is closed and freed before hhRun returns.
 *
 * Checks (abort on failure): every byte the server sends parses as HTTP/1.x
 * responses (http_parser); a response whose Content-Type says JSON carries
 * a valid JSON document; a log line never contains a line break (log
 * injection); the connection is closed and freed within a bounded time
 * after the client is done; the dispatch callbacks are each fired exactly
 * once and none is pending at the end. */
#ifndef TN_FUZZ_HTTP_HARNESS_H_
#define TN_FUZZ_HTTP_HARNESS_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hh_options
{
    /* A packed Tn__Response the fake dispatch answers every request with
     * (its id is replaced); NULL or undecodable: an answer is made up from
     * the request with status `status`. */
    const uint8_t *response;
    size_t response_len;
    unsigned status;  /* TN__STATUS__* of made-up answers (taken mod 17) */
    bool refuse;      /* backend submit fails (the dispatch is closing) */
    bool reverse;     /* answer pending requests newest first */
    bool leader;      /* health: this node leads */
    size_t chunk;     /* client sends in pieces of this size (0: at once) */
};

/* Start the loop and the server (once; later calls do nothing). */
void hhInit(void);

/* One connection: send @req, half-close, read until the server closes,
 * check what came back. */
void hhRun(const uint8_t *req, size_t len, const struct hh_options *o);

#endif /* TN_FUZZ_HTTP_HARNESS_H_ */
