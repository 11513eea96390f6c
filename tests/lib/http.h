/* A minimal blocking HTTP/1.1 client for tests: one request per connection
 * to 127.0.0.1, every step bounded by a deadline, libc only.
 *
 *   struct http_response r;
 *   int status = httpRequest(port, "PUT", "/v1/locks/demo", NULL,
 *                            "{\"holder\":\"a\",\"ttl_ms\":10000}", &r);
 *   ... r.etag, r.retry_after, r.body ...
 *   httpResponseFree(&r);
 *
 * The library never asserts and never prints: failures come back as -1 with
 * a reason in resp->error. */
#ifndef TN_TEST_HTTP_H_
#define TN_TEST_HTTP_H_

#include <stddef.h>
#include <stdint.h>

#define HTTP_DEFAULT_TIMEOUT_MS 5000
#define HTTP_MAX_HEADERS 64

struct http_header
{
    const char *name;  /* as sent by the server */
    const char *value; /* leading and trailing blanks removed */
};

struct http_response
{
    int status; /* e.g. 201; 0 when the request failed */
    /* Frequently used headers, NULL when absent (point into headers[]). */
    const char *etag;
    const char *retry_after;
    const char *content_type;
    const char *location;
    struct http_header headers[HTTP_MAX_HEADERS];
    int n_headers;
    char *body;       /* owned, NUL-terminated, chunked encoding removed */
    size_t body_len;  /* not counting the NUL */
    char error[192];  /* why the request failed, "" on success */
    char *storage_;   /* private: owns the header strings */
};

/* Sends one request to 127.0.0.1:PORT and reads the whole response within
 * HTTP_DEFAULT_TIMEOUT_MS.
 *
 * HEADERS: NULL or extra request header lines, "Name: value", separated by
 * "\r\n" or "\n" (e.g. "If-Match: \"42\"\r\nIdempotency-Key: k1"). Host,
 * Connection: close, Content-Length (when BODY is given, or for PUT, POST
 * and PATCH) and Content-Type: application/json (when BODY is given) are
 * added unless HEADERS already has them.
 * BODY: NULL for none, else a NUL-terminated string sent as is.
 *
 * RESP need not be initialised; its previous content is NOT freed. On return
 * (success or not) it must be released with httpResponseFree().
 *
 * Returns the HTTP status (>= 100) or -1 (connection refused, timeout,
 * malformed response...) with the reason in resp->error. */
int httpRequest(int port,
                const char *method,
                const char *path,
                const char *headers,
                const char *body,
                struct http_response *resp);

/* Same with an explicit overall timeout (e.g. for long polls). */
int httpRequestTimeout(int port,
                       const char *method,
                       const char *path,
                       const char *headers,
                       const char *body,
                       int timeout_ms,
                       struct http_response *resp);

/* Value of the first header named NAME (case-insensitive) or NULL. */
const char *httpHeader(const struct http_response *resp, const char *name);

/* Parses the ETag ("123", W/"123" or a bare 123) as an unsigned 64-bit
 * token. Returns 0 on success, -1 when absent or not a number. */
int httpETagToken(const struct http_response *resp, uint64_t *token);

/* Frees what RESP owns and zeroes it; safe to call twice. */
void httpResponseFree(struct http_response *resp);

#endif /* TN_TEST_HTTP_H_ */
