/* tenure fault harness: a tiny blocking HTTP/1.1 client for IPv4. */
#include "fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define H_MAX_RESPONSE (4 * 1024 * 1024)

static int hErr(struct hresp *r, const char *what)
{
    strf(r->error, sizeof r->error, "%s", what);
    r->status = 0;
    return -1;
}

static int hWait(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = (deadline - nowUs()) / 1000;
        if (left <= 0) {
            return -1;
        }
        struct pollfd p = { .fd = fd, .events = events };
        int rv = poll(&p, 1, (int)left);
        if (rv > 0) {
            return 0;
        }
        if (rv < 0 && errno != EINTR) {
            return -1;
        }
    }
}

/* Removes chunked framing in place; returns the new length or -1. */
static long hDechunk(char *body, size_t len)
{
    size_t in = 0;
    size_t out = 0;
    for (;;) {
        char *end;
        if (in >= len) {
            return -1;
        }
        unsigned long n = strtoul(body + in, &end, 16);
        char *crlf = strstr(body + in, "\r\n");
        if (crlf == NULL || end == body + in) {
            return -1;
        }
        in = (size_t)(crlf - body) + 2;
        if (n == 0) {
            break;
        }
        if (in + n > len) {
            return -1;
        }
        memmove(body + out, body + in, n);
        out += n;
        in += n + 2;
    }
    body[out] = '\0';
    return (long)out;
}

int hRequest(const char *ip, int port, const char *method, const char *path,
             const char *headers, const char *body, int timeout_ms,
             struct hresp *r)
{
    memset(r, 0, sizeof *r);
    int64_t deadline = nowUs() + (int64_t)timeout_ms * 1000;
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, ip, &sin.sin_addr) != 1) {
        return hErr(r, "bad address");
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return hErr(r, "socket failed");
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        if (errno != EINPROGRESS) {
            close(fd);
            return hErr(r, "connect refused");
        }
        if (hWait(fd, POLLOUT, deadline) != 0) {
            close(fd);
            return hErr(r, "connect timeout");
        }
        int err = 0;
        socklen_t elen = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        if (err != 0) {
            close(fd);
            return hErr(r, err == ECONNREFUSED ? "connect refused"
                                               : "connect failed");
        }
    }
    size_t blen = body != NULL ? strlen(body) : 0;
    size_t cap = 1024 + strlen(path) + (headers ? strlen(headers) : 0) + blen;
    char *req = malloc(cap);
    if (req == NULL) {
        close(fd);
        return hErr(r, "out of memory");
    }
    int n = snprintf(req, cap,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
                     "%s%s"
                     "Content-Length: %zu\r\n%s\r\n",
                     method, path, ip, port, headers ? headers : "",
                     headers && *headers ? "\r\n" : "", blen,
                     body ? "Content-Type: application/json\r\n" : "");
    if (body != NULL) {
        memcpy(req + n, body, blen);
    }
    size_t total = (size_t)n + blen;
    size_t sent = 0;
    while (sent < total) {
        ssize_t w = send(fd, req + sent, total - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (hWait(fd, POLLOUT, deadline) != 0) {
                free(req);
                close(fd);
                return hErr(r, "send timeout");
            }
            continue;
        }
        free(req);
        close(fd);
        return hErr(r, "send failed");
    }
    free(req);

    size_t rcap = 8192;
    size_t rlen = 0;
    char *resp = malloc(rcap + 1);
    if (resp == NULL) {
        close(fd);
        return hErr(r, "out of memory");
    }
    for (;;) {
        if (rlen == rcap) {
            if (rcap >= H_MAX_RESPONSE) {
                break;
            }
            rcap *= 2;
            char *grown = realloc(resp, rcap + 1);
            if (grown == NULL) {
                free(resp);
                close(fd);
                return hErr(r, "out of memory");
            }
            resp = grown;
        }
        ssize_t got = recv(fd, resp + rlen, rcap - rlen, 0);
        if (got > 0) {
            rlen += (size_t)got;
            continue;
        }
        if (got == 0) {
            break;
        }
        if (errno == EAGAIN || errno == EINTR) {
            if (hWait(fd, POLLIN, deadline) != 0) {
                free(resp);
                close(fd);
                return hErr(r, "read timeout");
            }
            continue;
        }
        free(resp);
        close(fd);
        return hErr(r, rlen == 0 ? "connection reset" : "read failed");
    }
    close(fd);
    resp[rlen] = '\0';
    int status = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1 || status < 100) {
        free(resp);
        return hErr(r, rlen == 0 ? "empty response" : "malformed response");
    }
    char *hend = strstr(resp, "\r\n\r\n");
    if (hend == NULL) {
        free(resp);
        return hErr(r, "truncated response");
    }
    *hend = '\0';
    char *bstart = hend + 4;
    size_t bsize = rlen - (size_t)(bstart - resp);
    bool chunked = false;
    char *save = NULL;
    char *line = strtok_r(resp, "\r\n", &save); /* status line */
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL) {
            continue;
        }
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') {
            v++;
        }
        if (strcasecmp(line, "ETag") == 0) {
            if (*v == '"') {
                v++;
            }
            strf(r->etag, sizeof r->etag, "%s", v);
            char *q = strchr(r->etag, '"');
            if (q != NULL) {
                *q = '\0';
            }
        } else if (strcasecmp(line, "Transfer-Encoding") == 0 &&
                   strstr(v, "chunked") != NULL) {
            chunked = true;
        }
    }
    r->body = malloc(bsize + 1);
    if (r->body == NULL) {
        free(resp);
        return hErr(r, "out of memory");
    }
    memcpy(r->body, bstart, bsize);
    r->body[bsize] = '\0';
    free(resp);
    if (chunked && hDechunk(r->body, bsize) < 0) {
        free(r->body);
        r->body = NULL;
        return hErr(r, "bad chunked body");
    }
    r->status = status;
    return status;
}

void hFree(struct hresp *r)
{
    free(r->body);
    r->body = NULL;
}
