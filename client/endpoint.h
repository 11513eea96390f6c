/* Parsing of endpoint lists ("host:port,host:port", IPv6 as "[addr]:port"). */
#ifndef TN_CLIENT_ENDPOINT_H_
#define TN_CLIENT_ENDPOINT_H_

#include <stddef.h>
#include <stdint.h>

#define ENDPOINT_HOST_MAX 255
#define ENDPOINT_MAX      64 /* endpoints in one list */

struct endpoint
{
    char host[ENDPOINT_HOST_MAX + 1]; /* without IPv6 brackets */
    uint16_t port;
    char label[ENDPOINT_HOST_MAX + 9]; /* "host:port" / "[v6]:port" */
};

/* Parse one "host:port" (surrounding spaces ignored; @len bytes of @s).
 * Returns 0, or -1 with a message in @errmsg (@errlen bytes). */
int endpointParse(const char *s,
                  size_t len,
                  struct endpoint *out,
                  char *errmsg,
                  size_t errlen);

/* Parse a comma-separated list into a new array (*@out, free() it) of *@n
 * entries (at least one; duplicates dropped). Returns 0, -1 with a message
 * in @errmsg on a syntax error, -2 when out of memory. */
int endpointParseList(const char *s,
                      struct endpoint **out,
                      size_t *n,
                      char *errmsg,
                      size_t errlen);

#endif /* TN_CLIENT_ENDPOINT_H_ */
