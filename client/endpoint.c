/* Parsing of endpoint lists. */
#include "endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int isSpace(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static int hostCharOk(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_';
}

int endpointParse(const char *s,
                  size_t len,
                  struct endpoint *out,
                  char *errmsg,
                  size_t errlen)
{
    const char *end = s + len;
    const char *host;
    const char *host_end;
    const char *port;
    unsigned long value = 0;
    size_t i;

    while (s < end && isSpace(*s)) {
        s++;
    }
    while (end > s && isSpace(end[-1])) {
        end--;
    }
    if (s == end) {
        snprintf(errmsg, errlen, "empty endpoint");
        return -1;
    }
    if (*s == '[') {
        host = s + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (host_end == NULL) {
            snprintf(errmsg, errlen, "endpoint \"%.*s\": missing ']'",
                     (int)(end - s), s);
            return -1;
        }
        for (const char *p = host; p < host_end; p++) {
            if (!(hostCharOk(*p) || *p == ':' || *p == '%')) {
                snprintf(errmsg, errlen, "endpoint \"%.*s\": bad IPv6 address",
                         (int)(end - s), s);
                return -1;
            }
        }
        port = host_end + 1;
        if (port >= end || *port != ':') {
            snprintf(errmsg, errlen, "endpoint \"%.*s\": expected host:port",
                     (int)(end - s), s);
            return -1;
        }
        port++;
    } else {
        /* The last ':' separates the port; a host with ':' needs []. */
        host = s;
        host_end = NULL;
        for (const char *p = s; p < end; p++) {
            if (*p == ':') {
                if (host_end != NULL) {
                    snprintf(errmsg, errlen,
                             "endpoint \"%.*s\": write IPv6 as [addr]:port",
                             (int)(end - s), s);
                    return -1;
                }
                host_end = p;
            }
        }
        if (host_end == NULL) {
            snprintf(errmsg, errlen, "endpoint \"%.*s\": expected host:port",
                     (int)(end - s), s);
            return -1;
        }
        for (const char *p = host; p < host_end; p++) {
            if (!hostCharOk(*p)) {
                snprintf(errmsg, errlen, "endpoint \"%.*s\": bad host name",
                         (int)(end - s), s);
                return -1;
            }
        }
        port = host_end + 1;
    }
    if (host_end == host) {
        snprintf(errmsg, errlen, "endpoint \"%.*s\": empty host",
                 (int)(end - s), s);
        return -1;
    }
    if ((size_t)(host_end - host) > ENDPOINT_HOST_MAX) {
        snprintf(errmsg, errlen, "endpoint: host name too long");
        return -1;
    }
    if (port == end || end - port > 5) {
        snprintf(errmsg, errlen, "endpoint \"%.*s\": bad port", (int)(end - s),
                 s);
        return -1;
    }
    for (const char *p = port; p < end; p++) {
        if (*p < '0' || *p > '9') {
            snprintf(errmsg, errlen, "endpoint \"%.*s\": bad port",
                     (int)(end - s), s);
            return -1;
        }
        value = value * 10 + (unsigned long)(*p - '0');
    }
    if (value == 0 || value > 65535) {
        snprintf(errmsg, errlen, "endpoint \"%.*s\": port out of range",
                 (int)(end - s), s);
        return -1;
    }
    i = (size_t)(host_end - host);
    memcpy(out->host, host, i);
    out->host[i] = '\0';
    out->port = (uint16_t)value;
    if (memchr(out->host, ':', i) != NULL) {
        snprintf(out->label, sizeof out->label, "[%s]:%u", out->host,
                 (unsigned)out->port);
    } else {
        snprintf(out->label, sizeof out->label, "%s:%u", out->host,
                 (unsigned)out->port);
    }
    return 0;
}

int endpointParseList(const char *s,
                      struct endpoint **out,
                      size_t *n,
                      char *errmsg,
                      size_t errlen)
{
    struct endpoint *list = NULL;
    size_t count = 0;
    const char *p = s;

    if (s == NULL) {
        snprintf(errmsg, errlen, "no endpoints given");
        return -1;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        struct endpoint ep;
        int dup = 0;

        if (endpointParse(p, len, &ep, errmsg, errlen) != 0) {
            free(list);
            return -1;
        }
        for (size_t i = 0; i < count; i++) {
            if (strcmp(list[i].label, ep.label) == 0) {
                dup = 1;
            }
        }
        if (!dup) {
            struct endpoint *grown;
            if (count == ENDPOINT_MAX) {
                snprintf(errmsg, errlen, "more than %d endpoints",
                         ENDPOINT_MAX);
                free(list);
                return -1;
            }
            grown = realloc(list, (count + 1) * sizeof *list);
            if (grown == NULL) {
                free(list);
                snprintf(errmsg, errlen, "out of memory");
                return -2;
            }
            list = grown;
            list[count++] = ep;
        }
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *out = list;
    *n = count;
    return 0;
}
