/* IPv4 "host:port" addresses. */
#include "lib/addr.h"

#include <stdlib.h>
#include <string.h>

int tnParseIpv4(const char *address, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(address, ':');
    size_t n;
    if (colon == NULL) {
        return UV_EINVAL;
    }
    n = (size_t)(colon - address);
    if (n == 0 || n >= sizeof host) {
        return UV_EINVAL;
    }
    memcpy(host, address, n);
    host[n] = '\0';
    return uv_ip4_addr(host, atoi(colon + 1), sa);
}
