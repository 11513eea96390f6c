/* Minimal blocking HTTP/1.1 client for tests (see http.h). */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A response larger than this is treated as an error (tests never need it). */
#define HTTP_MAX_RESPONSE (64u << 20)

struct http_buf
{
    char *p;
    size_t len;
    size_t cap;
};

static int64_t httpNowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int httpFail(struct http_response *resp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int httpFail(struct http_response *resp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(resp->error, sizeof resp->error, fmt, ap);
    va_end(ap);
    resp->status = 0;
    return -1;
}

/* Appends N bytes and keeps the buffer NUL-terminated. */
static int httpBufAppend(struct http_buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int httpBufPrintf(struct http_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int httpBufPrintf(struct http_buf *b, const char *fmt, ...)
{
    /* Any length: request lines with long targets (limit tests) too. */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -1;
    }
    char *tmp = malloc((size_t)n + 1);
    if (tmp == NULL) {
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(tmp, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rv = httpBufAppend(b, tmp, (size_t)n);
    free(tmp);
    return rv;
}

/* Waits for EVENTS on FD until DEADLINE: 1 ready, 0 timed out, -1 error. */
static int httpWait(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - httpNowMs();
        if (left <= 0) {
            return 0;
        }
        struct pollfd pfd = { .fd = fd, .events = events };
        int rv = poll(&pfd, 1, left > 1000 ? 1000 : (int)left);
        if (rv > 0) {
            return 1;
        }
        if (rv < 0 && errno != EINTR) {
            return -1;
        }
    }
}

static int httpConnect(int port, int64_t deadline, struct http_response *resp)
{
    if (port <= 0 || port > 65535) {
        return httpFail(resp, "bad port %d", port);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return httpFail(resp, "socket(): %s", strerror(errno));
    }
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        if (errno != EINPROGRESS) {
            httpFail(resp, "connect(127.0.0.1:%d): %s", port, strerror(errno));
            close(fd);
            return -1;
        }
        int rv = httpWait(fd, POLLOUT, deadline);
        int err = 0;
        socklen_t len = sizeof err;
        if (rv == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (rv != 1 || err != 0) {
            httpFail(resp, "connect(127.0.0.1:%d): %s", port,
                     rv == 0   ? "timed out"
                     : rv < 0  ? strerror(errno)
                               : strerror(err));
            close(fd);
            return -1;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* True when the comma-separated list VALUE names TOKEN (case-insensitive). */
static bool httpListHas(const char *value, const char *token)
{
    size_t n = strlen(token);
    const char *p = value;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        if (strncasecmp(p, token, n) == 0 &&
            (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == ';')) {
            return true;
        }
        while (*p != '\0' && *p != ',') {
            p++;
        }
    }
    return false;
}

/* True when the extra header lines already contain NAME. */
static bool httpHasHeader(const char *headers, const char *name)
{
    size_t n = strlen(name);
    const char *line = headers;
    while (line != NULL && *line != '\0') {
        while (*line == '\r' || *line == '\n' || *line == ' ') {
            line++;
        }
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            return true;
        }
        line = strchr(line, '\n');
    }
    return false;
}

static int httpBuildRequest(struct http_buf *out,
                            int port,
                            const char *method,
                            const char *path,
                            const char *headers,
                            const char *body)
{
    const char *h = headers ? headers : "";
    int rv = httpBufPrintf(out, "%s %s HTTP/1.1\r\n", method, path);
    if (rv == 0 && !httpHasHeader(h, "Host")) {
        rv = httpBufPrintf(out, "Host: 127.0.0.1:%d\r\n", port);
    }
    if (rv == 0 && !httpHasHeader(h, "Connection")) {
        rv = httpBufPrintf(out, "Connection: close\r\n");
    }
    bool wants_length = body != NULL || strcmp(method, "PUT") == 0 ||
                        strcmp(method, "POST") == 0 ||
                        strcmp(method, "PATCH") == 0;
    if (rv == 0 && wants_length && !httpHasHeader(h, "Content-Length") &&
        !httpHasHeader(h, "Transfer-Encoding")) {
        rv = httpBufPrintf(out, "Content-Length: %zu\r\n",
                           body ? strlen(body) : 0);
    }
    if (rv == 0 && body != NULL && !httpHasHeader(h, "Content-Type")) {
        rv = httpBufPrintf(out, "Content-Type: application/json\r\n");
    }
    /* The caller's lines, each normalised to end in CRLF. */
    const char *line = h;
    while (rv == 0 && *line != '\0') {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        size_t text = len;
        if (text > 0 && line[text - 1] == '\r') {
            text--;
        }
        if (text > 0) {
            rv = httpBufAppend(out, line, text);
            if (rv == 0) {
                rv = httpBufAppend(out, "\r\n", 2);
            }
        }
        line += len + (end ? 1 : 0);
    }
    if (rv == 0) {
        rv = httpBufAppend(out, "\r\n", 2);
    }
    if (rv == 0 && body != NULL) {
        rv = httpBufAppend(out, body, strlen(body));
    }
    return rv;
}

static int httpSendAll(int fd,
                       const char *data,
                       size_t len,
                       int64_t deadline,
                       struct http_response *resp)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rv = httpWait(fd, POLLOUT, deadline);
            if (rv == 1) {
                continue;
            }
            return httpFail(resp, "send: %s",
                            rv == 0 ? "timed out" : strerror(errno));
        }
        return httpFail(resp, "send: %s", strerror(errno));
    }
    return 0;
}

/* Decodes a chunked body of LEN bytes at P into OUT.
 * Returns 1 when complete, 0 when more bytes are needed, -1 when malformed. */
static int httpDechunk(const char *p, size_t len, struct http_buf *out)
{
    size_t off = 0;
    out->len = 0;
    for (;;) {
        const char *eol = memchr(p + off, '\n', len - off);
        if (eol == NULL) {
            return 0;
        }
        char *end;
        errno = 0;
        unsigned long long size = strtoull(p + off, &end, 16);
        if (end == p + off || errno != 0 || size > HTTP_MAX_RESPONSE) {
            return -1;
        }
        off = (size_t)(eol - p) + 1;
        if (size == 0) {
            /* Trailers, then an empty line. */
            for (;;) {
                const char *tl = memchr(p + off, '\n', len - off);
                if (tl == NULL) {
                    return 0;
                }
                size_t tlen = (size_t)(tl - (p + off));
                off = (size_t)(tl - p) + 1;
                if (tlen == 0 || (tlen == 1 && tl[-1] == '\r')) {
                    return 1;
                }
            }
        }
        if (len - off < size + 2) {
            return 0;
        }
        if (httpBufAppend(out, p + off, (size_t)size) != 0) {
            return -1;
        }
        off += (size_t)size;
        if (p[off] == '\r') {
            off++;
        }
        if (p[off] != '\n') {
            return -1;
        }
        off++;
    }
}

static char *httpTrim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
    return s;
}

/* Parses the status line and headers of the LEN bytes at P (the header block
 * without its final empty line) into RESP. */
static int httpParseHead(const char *p, size_t len, struct http_response *resp)
{
    free(resp->storage_);
    resp->storage_ = malloc(len + 1);
    if (resp->storage_ == NULL) {
        return httpFail(resp, "out of memory");
    }
    memcpy(resp->storage_, p, len);
    resp->storage_[len] = '\0';
    resp->n_headers = 0;

    char *save = NULL;
    char *line = strtok_r(resp->storage_, "\n", &save);
    int major, minor, status;
    if (line == NULL ||
        sscanf(line, "HTTP/%d.%d %3d", &major, &minor, &status) != 3 ||
        status < 100 || status > 999) {
        return httpFail(resp, "malformed status line: %.60s",
                        line ? line : "");
    }
    resp->status = status;
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL) {
            continue; /* obsolete folding or garbage: ignored */
        }
        *colon = '\0';
        if (resp->n_headers < HTTP_MAX_HEADERS) {
            struct http_header *h = &resp->headers[resp->n_headers++];
            h->name = httpTrim(line);
            h->value = httpTrim(colon + 1);
        }
    }
    resp->etag = httpHeader(resp, "ETag");
    resp->retry_after = httpHeader(resp, "Retry-After");
    resp->content_type = httpHeader(resp, "Content-Type");
    resp->location = httpHeader(resp, "Location");
    return 0;
}

/* Finds the end of the header block: returns the offset of the first body
 * byte and sets *HEAD_LEN to the header length without the empty line, or
 * returns 0 when the block is not complete yet. */
static size_t httpHeadEnd(const char *p, size_t len, size_t *head_len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] != '\n') {
            continue;
        }
        if (p[i + 1] == '\n') {
            *head_len = i;
            return i + 2;
        }
        if (p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n') {
            *head_len = i;
            return i + 3;
        }
    }
    return 0;
}

enum http_body_mode { HTTP_BODY_NONE, HTTP_BODY_LENGTH, HTTP_BODY_CHUNKED,
                      HTTP_BODY_EOF };

int httpRequestTimeout(int port,
                       const char *method,
                       const char *path,
                       const char *headers,
                       const char *body,
                       int timeout_ms,
                       struct http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    if (method == NULL || path == NULL || *method == '\0' || *path == '\0') {
        return httpFail(resp, "method and path are required");
    }
    int64_t deadline = httpNowMs() + (timeout_ms > 0 ? timeout_ms : 1);
    struct http_buf req = { 0 };
    struct http_buf in = { 0 };
    struct http_buf dechunked = { 0 };
    int rv = -1;
    int fd = -1;

    if (httpBuildRequest(&req, port, method, path, headers, body) != 0) {
        httpFail(resp, "cannot build the request (too long or no memory)");
        goto out;
    }
    fd = httpConnect(port, deadline, resp);
    if (fd < 0) {
        goto out;
    }
    if (httpSendAll(fd, req.p, req.len, deadline, resp) != 0) {
        goto out_close;
    }

    bool head_only = strcmp(method, "HEAD") == 0;
    size_t body_off = 0; /* 0 until the final header block is parsed */
    enum http_body_mode mode = HTTP_BODY_EOF;
    size_t content_length = 0;
    bool eof = false;
    for (;;) {
        /* Parse the head as soon as it is complete (skipping 1xx). */
        while (body_off == 0) {
            size_t head_len;
            size_t end = httpHeadEnd(in.p ? in.p : "", in.len, &head_len);
            if (end == 0) {
                break;
            }
            if (httpParseHead(in.p, head_len, resp) != 0) {
                goto out_close;
            }
            if (resp->status >= 100 && resp->status < 200 &&
                resp->status != 101) {
                memmove(in.p, in.p + end, in.len - end);
                in.len -= end;
                in.p[in.len] = '\0';
                continue;
            }
            body_off = end;
            const char *te = httpHeader(resp, "Transfer-Encoding");
            const char *cl = httpHeader(resp, "Content-Length");
            if (head_only || resp->status == 204 || resp->status == 304 ||
                resp->status < 200) {
                mode = HTTP_BODY_NONE;
            } else if (te != NULL && httpListHas(te, "chunked")) {
                mode = HTTP_BODY_CHUNKED;
            } else if (cl != NULL) {
                char *e;
                errno = 0;
                unsigned long long v = strtoull(cl, &e, 10);
                if (e == cl || *e != '\0' || errno != 0 ||
                    v > HTTP_MAX_RESPONSE) {
                    httpFail(resp, "bad Content-Length: %.40s", cl);
                    goto out_close;
                }
                mode = HTTP_BODY_LENGTH;
                content_length = (size_t)v;
            } else {
                mode = HTTP_BODY_EOF;
            }
        }

        /* Is the body complete? */
        if (body_off != 0) {
            size_t have = in.len - body_off;
            int done = 0;
            switch (mode) {
            case HTTP_BODY_NONE:
                done = 1;
                break;
            case HTTP_BODY_LENGTH:
                done = have >= content_length;
                break;
            case HTTP_BODY_CHUNKED:
                done = httpDechunk(in.p + body_off, have, &dechunked);
                if (done < 0) {
                    httpFail(resp, "malformed chunked body");
                    goto out_close;
                }
                break;
            case HTTP_BODY_EOF:
                done = eof;
                break;
            }
            if (done) {
                break;
            }
        }
        if (eof) {
            httpFail(resp, "connection closed %s (%zu bytes received)",
                     body_off ? "in the middle of the body"
                              : "before a complete response",
                     in.len);
            goto out_close;
        }
        if (in.len > HTTP_MAX_RESPONSE) {
            httpFail(resp, "response larger than %u bytes", HTTP_MAX_RESPONSE);
            goto out_close;
        }

        char chunk[16384];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n > 0) {
            if (httpBufAppend(&in, chunk, (size_t)n) != 0) {
                httpFail(resp, "out of memory");
                goto out_close;
            }
        } else if (n == 0) {
            eof = true;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = httpWait(fd, POLLIN, deadline);
            if (w != 1) {
                httpFail(resp, "no complete response within %d ms%s",
                         timeout_ms, w < 0 ? " (poll failed)" : "");
                goto out_close;
            }
        } else if (errno == ECONNRESET && body_off != 0 &&
                   mode == HTTP_BODY_EOF) {
            eof = true;
        } else if (errno != EINTR) {
            httpFail(resp, "recv: %s", strerror(errno));
            goto out_close;
        }
    }

    /* Hand the body over. */
    const char *src = "";
    size_t len = 0;
    if (mode == HTTP_BODY_CHUNKED) {
        src = dechunked.p ? dechunked.p : "";
        len = dechunked.len;
    } else if (mode != HTTP_BODY_NONE) {
        src = in.p + body_off;
        len = in.len - body_off;
        if (mode == HTTP_BODY_LENGTH) {
            len = content_length;
        }
    }
    resp->body = malloc(len + 1);
    if (resp->body == NULL) {
        httpFail(resp, "out of memory");
        goto out_close;
    }
    memcpy(resp->body, src, len);
    resp->body[len] = '\0';
    resp->body_len = len;
    rv = resp->status;

out_close:
    close(fd);
out:
    free(req.p);
    free(in.p);
    free(dechunked.p);
    if (rv < 0) {
        resp->status = 0;
    }
    return rv;
}

int httpRequest(int port,
                const char *method,
                const char *path,
                const char *headers,
                const char *body,
                struct http_response *resp)
{
    return httpRequestTimeout(port, method, path, headers, body,
                              HTTP_DEFAULT_TIMEOUT_MS, resp);
}

const char *httpHeader(const struct http_response *resp, const char *name)
{
    for (int i = 0; i < resp->n_headers; i++) {
        if (strcasecmp(resp->headers[i].name, name) == 0) {
            return resp->headers[i].value;
        }
    }
    return NULL;
}

int httpETagToken(const struct http_response *resp, uint64_t *token)
{
    const char *p = resp->etag;
    if (p == NULL) {
        return -1;
    }
    if (strncmp(p, "W/", 2) == 0) {
        p += 2;
    }
    bool quoted = *p == '"';
    if (quoted) {
        p++;
    }
    if (*p < '0' || *p > '9') {
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno != 0 || (quoted ? *end != '"' || end[1] != '\0' : *end != '\0')) {
        return -1;
    }
    *token = (uint64_t)v;
    return 0;
}

void httpResponseFree(struct http_response *resp)
{
    free(resp->body);
    free(resp->storage_);
    memset(resp, 0, sizeof *resp);
}
